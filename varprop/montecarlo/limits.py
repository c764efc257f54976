r"""Size, memory and seed bounds of the Monte Carlo engine, checked before any work starts.

Every request is sized from the network description alone, before a single array is allocated,
and refused with the figure when it cannot fit:

Memory
    One call of :func:`~varprop.montecarlo.sample` holds the per-network results (nine float64 sums
    per network and dense layer, plus the derived arrays: about :math:`96\,T L` bytes for
    :math:`T` networks of :math:`L` dense layers) and one chunk of networks being computed (its
    weights, drawn and in use, and its activations). The total must stay within
    :func:`max_memory`: the environment variable ``VARPROP_MAX_MEMORY`` (bytes, or a number with
    a unit such as ``8GB``, ``512MiB``), by default half of the machine's physical memory (4 GB
    when it cannot be read).
Engines
    The memory and work bounds use the sampling engine's cost per network
    (:class:`~varprop.montecarlo.engines.Engine` ``cost``): every weight for the full engine,
    :math:`O(\text{width})` random numbers per layer for the conditional one, which therefore
    checks widths whose weight matrices could never be held (:func:`check_width`).
Work
    A call draws at most :func:`max_draws` random numbers (``VARPROP_MAX_DRAWS``, default
    :math:`10^{10}`, some minutes at the sampler's :math:`10^8` weights per second), so a request
    that would run for hours is refused rather than left to look like a hang.
Seeds
    A seed is an integer from 0 to :math:`2^{128} - 1`, the entropy a
    :class:`numpy.random.SeedSequence` pool holds (:func:`check_seed`).

Every message names the value received (abbreviated when huge, see
:func:`varprop.errors.abbreviate`), the figure it needs and what is allowed.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from numbers import Integral
from typing import TypeVar

import numpy as np

from ..errors import ResourceError, _digit_count, abbreviate
from ..network import Network
from .engines import FULL, Engine, select_engine
from .errors import MonteCarloError

__all__ = [
    "LimitError",
    "MEMORY_FRACTION",
    "DEFAULT_MAX_DRAWS",
    "MAX_SEED",
    "max_memory",
    "max_draws",
    "check_seed",
    "check_count",
    "sample_bytes",
    "check_sample",
    "check_network",
    "check_width",
    "check_claims",
    "affordable",
    "networks_needed",
    "quiet",
    "format_bytes",
]

class LimitError(MonteCarloError, ResourceError):
    """A sample, width or check too large for the memory or draw bounds (raised before any work)."""


T = TypeVar("T")

#: Fraction of the physical memory one request may use when ``VARPROP_MAX_MEMORY`` is not set.
MEMORY_FRACTION = 0.5
#: Weights one call of the sampler may draw when ``VARPROP_MAX_DRAWS`` is not set.
DEFAULT_MAX_DRAWS = 10**10
#: The largest seed: a SeedSequence pool holds 128 bits of entropy.
MAX_SEED = 2**128 - 1
#: The largest count reported as "networks needed" (beyond it a tolerance cannot be resolved anyway).
MAX_NEEDED = 10**18

_FALLBACK_MEMORY = 4 * 2**30
# float64 values kept per network and dense layer: 9 sums, the norm ratio, flags and temporaries.
_RESULT_FLOATS = 12
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_AMOUNT = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*$")


def _limit_from_env(name: str, default: int, *, units: bool) -> int:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    match = _AMOUNT.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or (unit and not units) or unit not in _UNITS:
        accepted = "a number of bytes, or a number with a unit such as 8GB or 512MiB" if units else "a positive number"
        raise ResourceError(f"environment variable {name}={abbreviate(text)} is not {accepted}")
    value = float(match.group(1)) * _UNITS[unit]
    if not math.isfinite(value) or value < 1:
        raise ResourceError(f"environment variable {name}={abbreviate(text)} must be a positive amount")
    return int(min(value, 2**62))


def _physical_memory() -> int | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * size if pages > 0 and size > 0 else None


def max_memory() -> int:
    """Bytes one request may use: ``VARPROP_MAX_MEMORY``, or :data:`MEMORY_FRACTION` of the physical memory."""
    physical = _physical_memory()
    default = int(MEMORY_FRACTION * physical) if physical else _FALLBACK_MEMORY
    return _limit_from_env("VARPROP_MAX_MEMORY", default, units=True)


def max_draws() -> int:
    """Weights one call of the sampler may draw: ``VARPROP_MAX_DRAWS``, default :data:`DEFAULT_MAX_DRAWS`."""
    return _limit_from_env("VARPROP_MAX_DRAWS", DEFAULT_MAX_DRAWS, units=False)


def _figure(value: float) -> str:
    """A count in three significant figures, however large (``1e+300``, never 300 digits)."""
    try:
        return f"{float(value):.3g}"
    except OverflowError:
        return f"1e+{_digit_count(int(value)) - 1}"


def format_bytes(count: float) -> str:
    """``3.2 GB``, ``512 MB``: decimal units, three significant figures."""
    if count >= 1e15:
        return f"{_figure(count)} bytes"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{int(count)} bytes"


def _memory_note() -> str:
    return ("VARPROP_MAX_MEMORY" if os.environ.get("VARPROP_MAX_MEMORY", "").strip()
            else f"set VARPROP_MAX_MEMORY to change it; the default is {MEMORY_FRACTION:.0%} of the physical memory")


def _draws_note() -> str:
    return ("VARPROP_MAX_DRAWS" if os.environ.get("VARPROP_MAX_DRAWS", "").strip()
            else "set VARPROP_MAX_DRAWS to change it")


def check_seed(seed: object, what: str = "seed") -> int:
    """``seed`` as an int from 0 to :data:`MAX_SEED`, or a :class:`MonteCarloError` naming it."""
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= int(seed) <= MAX_SEED:
        raise MonteCarloError(f"{what} must be an integer from 0 to 2**128 - 1, got {abbreviate(seed)}")
    return int(seed)


def check_count(value: object, what: str, *, minimum: int = 1) -> int:
    """``value`` as an int of at least ``minimum``; the message abbreviates a huge value."""
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < minimum:
        raise MonteCarloError(f"{what} must be an integer >= {minimum}, got {abbreviate(value)}")
    return int(value)


def _shape(network: Network) -> str:
    widths = [abbreviate(int(w), 24) for w in network.widths]
    if len(widths) <= 8:
        return "widths " + ", ".join(widths)
    return f"widths {widths[0]}, {widths[1]}, ..., {widths[-1]} ({len(widths)} widths)"


def _floats(network: Network, engine: Engine | str = FULL, paired: bool = False) -> tuple[int, int]:
    """(random numbers drawn per network, working floats per network) of a numeric network.

    The draws count twice in memory: as drawn (law samplers use temporaries) and as in use.
    """
    drawn, working = select_engine(engine, network, paired=paired).cost(network, paired)
    return drawn, drawn + working


def sample_bytes(network: Network, count: int, chunk: int, engine: Engine | str = FULL, paired: bool = False) -> int:
    """Bytes one call of the sampler needs: the per-network results and one chunk of networks."""
    _, working = _floats(network, engine, paired)
    return 8 * (_RESULT_FLOATS * count * max(network.depth, 1) + min(chunk, count) * working)


def _default_sizes(network: Network, engine: Engine | str = FULL, paired: bool = False) -> tuple[int, int]:
    from .sampler import default_sizes  # the sampler imports this module

    return default_sizes(network, engine, paired=paired)


def check_sample(
    network: object, samples: object, *, block_size: object = None, chunk_size: object = None,
    engine: Engine | str = FULL, paired: bool = False,
) -> None:
    """Refuse a call of :func:`~varprop.montecarlo.sample` that cannot fit, before it allocates anything.

    Arguments that are not valid at all are left to the sampler's own checks.
    """
    if not isinstance(network, Network) or not network.is_numeric:
        return
    if isinstance(samples, bool) or not isinstance(samples, Integral) or samples < 1:
        return
    count = int(samples)
    block, chunk = _default_sizes(network, engine, paired)
    if isinstance(block_size, Integral) and not isinstance(block_size, bool) and block_size >= 1:
        block = int(block_size)
        chunk = max(block, chunk // block * block)
    if isinstance(chunk_size, Integral) and not isinstance(chunk_size, bool) and chunk_size >= 1:
        chunk = -(-int(chunk_size) // block) * block
    chunk = min(chunk, -(-count // block) * block)
    _refuse(network, count, chunk, -(-count // block) * block, what=f"sampling {abbreviate(count)} networks",
            engine=engine, paired=paired)


def _refuse(network: Network, count: int, chunk: int, drawn: int, *, what: str, engine: Engine | str = FULL,
            paired: bool = False) -> None:
    parameters, working = _floats(network, engine, paired)
    needed = sample_bytes(network, count, chunk, engine, paired)
    allowed = max_memory()
    if needed > allowed:
        results = 8 * _RESULT_FLOATS * count * max(network.depth, 1)
        raise LimitError(
            f"{what} of {_shape(network)} needs about {format_bytes(needed)} (results "
            f"{format_bytes(results)}, one chunk of {chunk} network{'s' if chunk != 1 else ''} "
            f"{format_bytes(8 * chunk * working)}, {abbreviate(parameters, 24)} random numbers per network, "
            f"{select_engine(engine, network, paired=paired).name} engine); at most "
            f"{format_bytes(allowed)} is allowed ({_memory_note()})"
        )
    draws = drawn * parameters
    if draws > max_draws():
        raise LimitError(
            f"{what} of {_shape(network)} would draw {_figure(draws)} random numbers ({abbreviate(parameters, 24)} per "
            f"network, {select_engine(engine, network, paired=paired).name} engine); at most "
            f"{_figure(max_draws())} are drawn in one go ({_draws_note()})"
        )


def check_network(network: object, engine: Engine | str = "auto") -> None:
    """Refuse a network of which not even one instance can be sampled (memory or draws), e.g. when a
    claim file is read: the claim could never be checked, and deriving at such widths is slow."""
    if isinstance(network, Network) and network.is_numeric:
        _refuse(network, 1, 1, 1, what="sampling one network", engine=engine)


def check_width(width: object, engine: Engine | str = FULL) -> None:
    """Refuse a checker ``width`` whose smallest sample cannot fit in memory.

    With the full engine, one ``width x width`` weight matrix must fit; with ``"auto"`` or the
    conditional engine, which never hold a matrix, one layer's vectors (a network the conditional
    engine cannot serve is still refused, with its real figure, before it is sampled). Refusing
    here keeps an absurd width from reaching the derivation (sympy with 300-digit widths) at all.
    """
    if width is None or isinstance(width, bool) or not isinstance(width, Integral) or width < 1:
        return
    full = engine is FULL or engine == "full"
    needed = 8 * int(width) ** 2 if full else 8 * 64 * int(width)
    allowed = max_memory()
    if needed > allowed:
        what = "one width x width weight matrix" if full else "the vectors of one layer"
        raise LimitError(
            f"width {abbreviate(int(width))} needs {format_bytes(needed)} for {what} "
            f"of one network; at most {format_bytes(allowed)} is allowed ({_memory_note()})"
        )


def check_claims(claims: Iterable[object], samples: int | None, minimum: int, engine: Engine | str = FULL) -> None:
    """Refuse, before any sampling, a check whose networks cannot be sampled ``samples`` (or ``minimum``) times."""
    seen: set[int] = set()
    for claim in claims:
        network = getattr(claim, "network", None)
        if not isinstance(network, Network) or not network.is_numeric or id(network) in seen:
            continue
        seen.add(id(network))
        count = samples if samples is not None else minimum
        try:
            engine_ = select_engine(engine, network)
        except MonteCarloError as exc:  # an explicit engine that cannot serve this claim's network
            raise MonteCarloError(f"claim {getattr(claim, 'name', '?')!r}: {exc}") from None
        block, chunk = _default_sizes(network, engine_)
        drawn = -(-count // block) * block
        _refuse(network, count, min(chunk, drawn), drawn,
                what=f"claim {getattr(claim, 'name', '?')!r}: sampling {abbreviate(count)} networks", engine=engine_)


def affordable(network: Network, cap: int, engine: Engine | str = FULL) -> int:
    """The largest count up to ``cap`` whose sample fits in memory and in the draw budget (at least 1)."""
    parameters, working = _floats(network, engine)
    block, chunk = _default_sizes(network, engine)
    room = max_memory() - 8 * chunk * working
    by_memory = room // (8 * _RESULT_FLOATS * max(network.depth, 1)) if room > 0 else 1
    by_draws = max_draws() // parameters
    return int(max(1, min(cap, by_memory, by_draws)))


def networks_needed(factor: float, ratio: float) -> int:
    """``ceil(factor * ratio**2)`` as a count of networks, saturating at :data:`MAX_NEEDED`.

    ``ratio`` is a spread over a tolerance; for a prediction of 1e-200 it is about 1e200, and its
    square overflows float64: the count then saturates instead of raising.
    """
    ratio, factor = abs(float(ratio)), float(factor)
    if not (math.isfinite(ratio) and math.isfinite(factor)) or ratio > 1e18:
        return MAX_NEEDED
    return int(min(float(MAX_NEEDED), math.ceil(factor * ratio * ratio)))


def quiet(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` with numpy's floating-point warnings off: overflow shows in the result
    (inf or NaN), which the checker reports with its counts (an INCONCLUSIVE claim), never as a stray warning."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return function(*args)
