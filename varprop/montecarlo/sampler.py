r"""Sample independent random networks and record per-network averages of every observable.

Notation (He et al. 2015): dense layer :math:`l = 1, \dots, L` maps its input
:math:`x_l \in \mathbb R^{n_l}` to :math:`y_l = W_l x_l + b_l \in \mathbb R^{\hat n_l}`, and the next
dense layer's input is :math:`x_{l+1} = \phi(y_l)` (whatever :class:`~varprop.network.Nonlinearity`
layers stand between them). Each sampled network gets

* its own weights and biases, drawn with each layer's ``law.sample(shape, rng=...)``;
* its input: the :class:`~varprop.network.FixedInput` vector, or a fresh iid
  :math:`\mathcal N(0, v)` vector for :class:`~varprop.network.GaussianInput`;
* when the network's inputs describe a pair (``GaussianInput(correlation=c0)``, or a
  ``FixedInput`` with a ``partner``), or with ``correlation=True`` (or a ``partner``), a *partner*
  input :math:`x_1'` fed through the same weights, used only for cross moments and the correlation
  of two inputs: the fixed partner vector if given; for ``GaussianInput(correlation=c0)``,
  :math:`x'_1 = c_0 x_1 + \sqrt{1-c_0^2}\, z` with :math:`z` fresh iid :math:`\mathcal N(0, v)`
  (drawn where an independent partner would be); else fresh iid :math:`\mathcal N(0, s)` entries
  with :math:`s` the input's mean square (``network.inputs.second_moment``), so that for
  ``GaussianInput`` the pair is two independent draws of the input law. Without it the forward
  pass carries one input, which is cheaper;
* a loss :math:`\mathcal L = \langle g, \text{out} \rangle` with :math:`g \sim \mathcal N(0, I)`,
  where out is the last layer's output (:math:`y_L`, or :math:`\phi(y_L)` when the network ends with
  a nonlinearity), so that :math:`\partial\mathcal L/\partial y_L = g` (times :math:`\phi'(y_L)`).

For every network and every *position* :math:`p` of the network (``-1``, the input, then
:math:`h_p`, the output of ``network.layers[p]``; see :mod:`varprop.observables`) the sampler stores
*per-network averages over units* (the ``per_position`` arrays of :class:`Samples`, shape
``(T, len(layers) + 1)``, column :math:`p + 1` for position :math:`p`), with :math:`n_p` the width at
:math:`p`, :math:`h'_p` the partner's signal and :math:`\delta_p = \partial\mathcal L/\partial h_p`:

================================  ==============================================================
name                              per-network value at position :math:`p`
================================  ==============================================================
``signal_mean``                   :math:`\frac{1}{n_p}\sum_i h_{p,i}`
``signal_second_moment``          :math:`\frac{1}{n_p}\sum_i h_{p,i}^2 = \|h_p\|^2/n_p`
``gradient_mean``                 :math:`\frac{1}{n_p}\sum_i \delta_{p,i}`
``gradient_second_moment``        :math:`\frac{1}{n_p}\sum_i \delta_{p,i}^2`
``norm_ratio``                    :math:`\|h_p\|^2 / \|h_{-1}\|^2`
``signal_partner_second_moment``  :math:`\frac{1}{n_p}\sum_i {h'_{p,i}}^2` (paired samples only)
``signal_cross``                  :math:`\frac{1}{n_p}\sum_i h_{p,i}\, h'_{p,i}` (paired samples only)
================================  ==============================================================

Every layer is thus observable at its output, whatever its kind (a trailing nonlinearity
included); the weight gradient of the dense layer at :math:`p` needs nothing more, since per network
its mean and mean square are the products of those of :math:`\delta_p` and :math:`h_{p-1}`
(:math:`\partial\mathcal L/\partial W = \delta_p h_{p-1}^\top`).

The claim-file vocabulary of dense layer :math:`l` at position :math:`q` (``x_l`` its input
:math:`h_{q-1}`, ``y_l`` its output :math:`h_q`) is kept in the ``per_network`` arrays of shape
``(T, L)``, selections of the per-position ones (views for evenly spaced dense layers):

=============================  ================================================================
name                           per-network value for layer :math:`l`
=============================  ================================================================
``y_mean``                     :math:`\frac{1}{\hat n_l}\sum_i y_{l,i}`
``y_second_moment``            :math:`\frac{1}{\hat n_l}\sum_i y_{l,i}^2 = \|y_l\|^2/\hat n_l`
``y_cross``                    :math:`\frac{1}{\hat n_l}\sum_i y_{l,i}\, y'_{l,i}` (paired samples only)
``y_partner_second_moment``    :math:`\frac{1}{\hat n_l}\sum_i {y'_{l,i}}^2` (paired samples only)
``x_mean``                     :math:`\frac{1}{n_l}\sum_j x_{l,j}`
``x_second_moment``            :math:`\frac{1}{n_l}\sum_j x_{l,j}^2`
``x_norm_ratio``               :math:`\|x_l\|^2 / \|x_1\|^2`
``dy_second_moment``           :math:`\frac{1}{\hat n_l}\sum_i (\partial\mathcal L/\partial y_{l,i})^2`
``dx_second_moment``           :math:`\frac{1}{n_l}\sum_j (\partial\mathcal L/\partial x_{l,j})^2`
=============================  ================================================================

The network, not the unit, is the independent draw: :mod:`varprop.montecarlo.estimators` turns
these arrays into estimates with standard errors across networks.

Randomness and chunking
-----------------------
All randomness flows from one ``seed`` through :class:`numpy.random.SeedSequence`. Networks are
grouped into *blocks* of ``block_size`` consecutive networks; block :math:`k` draws everything
(inputs, partner if paired, each layer's forward draws in order, then :math:`g`, then each layer's
backward draws in reverse order; see :mod:`varprop.montecarlo.engines`) from its own generator
``PCG64(SeedSequence(entropy, spawn_key=(..., k)))``. A *chunk* (the unit of vectorised work,
bounding memory) is a whole number of blocks, and every per-network statistic is computed row by
row with a summation order that does not depend on how many rows a chunk holds
(:mod:`varprop.montecarlo.statistics`). Hence the result is bit-identical whatever
``chunk_size`` and whatever the executor that runs ranges of blocks (:mod:`varprop.montecarlo.executors`:
this process, local processes, a Dask cluster); and since the last block is always drawn whole
and truncated, the first :math:`T` networks of a larger sample are the same networks. The engine
(``engine=``: full weight matrices, or the conditional-Gaussian engine) is the one choice that
changes the draws: both sample the same law from different random numbers.

Non-finite values
-----------------
Overflow and NaN are not averaged: for each position, :class:`Samples` counts the networks whose
recorded values there contain ``inf`` (``position_overflow``) or NaN (``position_nan``), and for
each dense layer those whose values at its input or output position do (``overflow``, ``nan``).
Every network with any non-finite recorded value is excluded from estimates (``Samples.finite``); a
sample drawn for some observables records only what they read (:attr:`Samples.extent`), so an overflow
in layers a claim does not read excludes no network from it. Networks
whose signal is identically zero somewhere (a dead rectifier layer, or underflow) are finite samples
and stay in the estimates; they are counted per position in ``position_zero`` and per dense layer
in ``zero_x`` (its input) and ``zero_y`` (its output).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from numbers import Integral
from types import MappingProxyType

import numpy as np

from ..network import FixedInput, GaussianInput, Network
from ..observables import Gradient, Observable, ObservableError, Signal, WeightGradient, resolve
from ..weights import Normal
from . import limits
from .engines import FULL, Engine, LayerStep, layer_step, run_chunk, select_engine
from .errors import MonteCarloError
from .executors import Executor, executor_from
from .statistics import GRAD_SQ, GRAD_SUM, NORM, ROWS_PAIRED, ROWS_UNPAIRED, SIG_CROSS, SIG_PSQ, SIG_SQ, SIG_SUM

__all__ = ["Samples", "sample", "sample_each", "SampleRequest", "layer_step", "LayerStep", "PER_NETWORK", "PER_POSITION", "default_sizes"]

#: Names of the per-network arrays held by :class:`Samples` (see the module docstring).
PER_NETWORK: tuple[str, ...] = (
    "y_mean",
    "y_second_moment",
    "y_cross",
    "y_partner_second_moment",
    "x_mean",
    "x_second_moment",
    "dy_second_moment",
    "dx_second_moment",
    "x_norm_ratio",
)

#: Names of the per-position arrays held by :class:`Samples` (see the module docstring).
PER_POSITION: tuple[str, ...] = (
    "signal_mean",
    "signal_second_moment",
    "gradient_mean",
    "gradient_second_moment",
    "norm_ratio",
    "signal_partner_second_moment",
    "signal_cross",
)

#: Arrays present only when the networks were sampled with a partner input.
_PAIRED_ONLY = ("y_cross", "y_partner_second_moment", "signal_partner_second_moment", "signal_cross")
#: Legacy per-dense-layer arrays: name -> (per-position array, offset of its position from the
#: dense layer's position q: 0 for y_l and dy_l at q, -1 for x_l and dx_l at q - 1).
_LEGACY: dict[str, tuple[str, int]] = {
    "y_mean": ("signal_mean", 0),
    "y_second_moment": ("signal_second_moment", 0),
    "y_cross": ("signal_cross", 0),
    "y_partner_second_moment": ("signal_partner_second_moment", 0),
    "x_mean": ("signal_mean", -1),
    "x_second_moment": ("signal_second_moment", -1),
    "dy_second_moment": ("gradient_second_moment", 0),
    "dx_second_moment": ("gradient_second_moment", -1),
    "x_norm_ratio": ("norm_ratio", -1),
}

# Random numbers drawn per block (amortises generator creation and each law.sample call), and
# working-memory floats per chunk; both chosen from benchmarks/bench_sampler.py.
_BLOCK_FLOATS = 2**20
_CHUNK_FLOATS = 2**20


def _unpickle_samples(values: dict) -> Samples:
    """A :class:`Samples` from its pickled fields (the mappings read-only again)."""
    for name in ("per_position", "per_network"):
        values[name] = MappingProxyType(values[name])
    return Samples(**values)


@dataclass(frozen=True, eq=False, repr=False)
class Samples:
    """Per-network averages of the observables of ``count`` sampled networks.

    Attributes
    ----------
    network
        The sampled network description.
    per_position
        Read-only arrays of shape ``(count, len(network.layers) + 1)``, one per name in
        :data:`PER_POSITION`; column ``p + 1`` is position ``p`` (-1: the input; see
        :meth:`column`).
    per_network
        Read-only arrays of shape ``(count, depth)``, one per name in :data:`PER_NETWORK`; column
        ``l - 1`` is dense layer ``l``. They are selections of the ``per_position`` arrays (views
        when the dense layers are evenly spaced, as in an MLP).
    finite
        ``(count,)`` booleans: the networks with every recorded value finite; only these enter
        estimates.
    overflow, nan
        ``(depth,)`` counts of networks whose values at dense layer ``l`` (its input or output
        position) contain ``inf`` (and no NaN), or NaN.
    zero_x, zero_y
        ``(depth,)`` counts of finite networks whose layer input :math:`x_l`, or pre-activation
        :math:`y_l`, is identically zero.
    position_overflow, position_nan, position_zero
        The same per position, shape ``(len(network.layers) + 1,)``: networks whose values at that
        position contain ``inf`` (and no NaN) or NaN, and finite networks whose signal there is
        identically zero.
    seed
        The :class:`numpy.random.SeedSequence` everything was drawn from.
    block_size, chunk_size
        Networks per generator block (part of what the draws depend on) and per chunk (memory only).
    partner
        The fixed partner input, or ``None`` for fresh Gaussian partners.
    engine
        The engine that drew the networks: ``"full"`` or ``"conditional"``
        (:mod:`varprop.montecarlo.engines`).
    extent
        ``None`` when every position's signal and gradient was recorded; else ``(top, bottom)`` for a
        sample drawn for some observables only (``sample(..., observables=...)``): signals at positions
        -1 to ``top``, gradients at positions ``bottom`` to the last (``bottom`` ``None``: no gradient).
        The values not recorded are NaN and take no part in ``finite`` and the counts;
        :meth:`require` refuses to read them.
    """

    network: Network
    per_position: Mapping[str, np.ndarray]
    per_network: Mapping[str, np.ndarray]
    finite: np.ndarray
    overflow: np.ndarray
    nan: np.ndarray
    zero_x: np.ndarray
    zero_y: np.ndarray
    position_overflow: np.ndarray
    position_nan: np.ndarray
    position_zero: np.ndarray
    seed: np.random.SeedSequence
    block_size: int
    chunk_size: int
    partner: tuple[float, ...] | None = None
    engine: str = "full"
    extent: tuple[int, int | None] | None = None

    def __reduce__(self) -> tuple:
        # The read-only mappings are mappingproxies, which do not pickle: send plain dicts, rebuild the proxies.
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["per_position"] = dict(self.per_position)
        values["per_network"] = dict(self.per_network)
        return (_unpickle_samples, (values,))

    @property
    def count(self) -> int:
        """The number T of sampled networks (finite or not)."""
        return int(self.finite.shape[0])

    @property
    def depth(self) -> int:
        """The number L of dense layers."""
        return self.network.depth

    @property
    def paired(self) -> bool:
        """True when a partner input was fed through every network (cross moments are recorded)."""
        return "signal_cross" in self.per_position

    @property
    def excluded(self) -> int:
        """Networks left out of every estimate because some recorded value is not finite."""
        return int(self.count - np.count_nonzero(self.finite))

    def column(self, position: int) -> int:
        """The column of the ``per_position`` arrays that holds ``position`` (-1, the input, is column 0)."""
        last = len(self.network.layers) - 1
        if isinstance(position, bool) or not isinstance(position, Integral) or not -1 <= int(position) <= last:
            raise MonteCarloError(
                f"position must be an integer from -1 (the input) to {last}, got {position!r}"
            )
        return int(position) + 1

    def records(self, name: str, position: int) -> bool:
        """True when the ``per_position`` array ``name`` holds recorded values at ``position`` (see :attr:`extent`)."""
        if self.extent is None:
            return True
        top, bottom = self.extent
        if name.startswith("gradient"):
            return bottom is not None and position >= bottom
        return position <= top

    def require(self, tensor: Signal | Gradient | WeightGradient) -> int:
        """The column of ``tensor``'s position, after checking that this sample recorded that tensor there."""
        column = self.column(tensor.position)
        if isinstance(tensor, WeightGradient):  # the gradient at p and the signal at p - 1
            recorded = self.records("gradient", tensor.position) and self.records("signal", tensor.position - 1)
        else:
            recorded = self.records("gradient" if isinstance(tensor, Gradient) else "signal", tensor.position)
        if not recorded:
            top, bottom = self.extent
            gradients = "no gradient" if bottom is None else f"gradients at positions {bottom} and above"
            raise MonteCarloError(
                f"this sample did not record the {tensor.kind} at position {tensor.position}: it was drawn for "
                f"some observables only (signals at positions -1 to {top}, {gradients}); sample again with "
                "that observable among observables=, or without observables="
            )
        return column

    def __repr__(self) -> str:
        return (
            f"Samples(count={self.count}, depth={self.depth}, excluded={self.excluded}, "
            f"overflow={self.overflow.tolist()}, nan={self.nan.tolist()}, zero_x={self.zero_x.tolist()}, "
            f"zero_y={self.zero_y.tolist()})"
        )


@dataclass(frozen=True)
class _Plan:
    network: Network
    engine: Engine
    steps: tuple[LayerStep, ...]
    input_law: Normal | None
    fixed_input: np.ndarray | None
    partner_law: Normal | None
    partner: np.ndarray | None
    paired: bool
    widths_in: np.ndarray
    widths_out: np.ndarray
    widths: np.ndarray
    mixing: tuple[float, float] | None = None  # (c0, sqrt(1 - c0^2)): partner = c0 x + sqrt(1 - c0^2) z


def default_sizes(network: Network, engine: Engine | str = FULL, *, paired: bool = False) -> tuple[int, int]:
    """The default ``(block_size, chunk_size)`` for ``network`` sampled by ``engine``, in networks.

    A block draws about :math:`2^{20}` random numbers (a power-of-two number of networks, at least
    one); a chunk holds about :math:`2^{20}` working floats (a whole number of blocks, at least
    one), both from the engine's cost per network. Both figures come from
    ``benchmarks/bench_sampler.py`` (see ``benchmarks/RESULTS-sampler.md``).
    """
    _check_network(network)
    engine = select_engine(engine, network, paired=paired)
    drawn, working = engine.cost(network, paired)
    block = 1 << max(0, int(math.floor(math.log2(max(1, _BLOCK_FLOATS // drawn)))))
    chunk = max(block, (_CHUNK_FLOATS // working) // block * block)
    return block, chunk


def _positive_int(value: object, what: str, *, minimum: int = 1) -> int:
    return limits.check_count(value, what, minimum=minimum)


def _seed_sequence(seed: object) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    return np.random.SeedSequence(limits.check_seed(seed, "seed (or a numpy SeedSequence)"))


def _check_network(network: object) -> Network:
    if not isinstance(network, Network):
        raise MonteCarloError(f"expected a varprop.network.Network, got {network!r}")
    if not network.is_numeric:
        symbolic = ", ".join(
            f"widths[{i}] = {w}" for i, w in enumerate(network.widths) if not isinstance(w, int)
        )
        raise MonteCarloError(
            f"cannot sample a network with symbolic widths ({symbolic}); give integer widths to sample"
        )
    return network


def _plan(network: Network, partner: Sequence[float] | None, correlation: bool = False,
          engine: Engine = FULL) -> _Plan:
    network = _check_network(network)
    paired = bool(correlation) or partner is not None or bool(getattr(network.inputs, "paired", False))
    steps = engine.steps(network, paired)
    n_in = network.widths[0]
    inputs = network.inputs
    try:
        mean_square = float(inputs.second_moment)
    except TypeError:
        raise MonteCarloError(
            f"cannot sample inputs with a symbolic variance ({inputs.second_moment}); give a number"
        ) from None
    input_law = Normal(inputs.variance) if isinstance(inputs, GaussianInput) else None
    fixed = np.asarray(inputs.values, dtype=np.float64) if isinstance(inputs, FixedInput) else None
    partner_array = None
    partner_law = None
    mixing = None
    if partner is None and inputs.paired:  # the pair described by the network's inputs
        if isinstance(inputs, FixedInput):
            partner = inputs.partner
        else:
            try:
                c0 = float(inputs.correlation)
            except TypeError:
                raise MonteCarloError(
                    f"cannot sample inputs with a symbolic correlation ({inputs.correlation}); give a number"
                ) from None
            partner_law, mixing = Normal(inputs.variance), (c0, math.sqrt(max(0.0, 1.0 - c0 * c0)))
    if partner is None:
        if partner_law is None:
            partner_law = Normal(mean_square) if correlation else None
    else:
        try:
            partner_array = np.asarray(partner, dtype=np.float64)
        except (TypeError, ValueError):
            raise MonteCarloError(f"partner must be a sequence of {n_in} real numbers, got {partner!r}") from None
        if partner_array.shape != (n_in,) or not np.all(np.isfinite(partner_array)):
            raise MonteCarloError(
                f"partner must be {n_in} finite real numbers (the first layer's fan_in), got {partner!r}"
            )
    dense = network.dense_layers
    return _Plan(
        network=network,
        engine=engine,
        steps=tuple(steps),
        input_law=input_law,
        fixed_input=fixed,
        partner_law=partner_law,
        partner=partner_array,
        paired=paired,
        mixing=mixing,
        widths_in=np.array([layer.fan_in for layer in dense], dtype=np.float64),
        widths_out=np.array([layer.fan_out for layer in dense], dtype=np.float64),
        widths=np.array([network.width(p) for p in range(-1, len(network.layers))], dtype=np.float64),
    )


@dataclass(frozen=True)
class SampleJob:
    """Everything a worker needs to sample any range of blocks of one request (plain data; it pickles).

    Blocks are numbered from 0; block :math:`k` holds networks :math:`kB .. (k+1)B - 1`
    (:math:`B` = ``block``) and draws from ``SeedSequence(entropy, spawn_key=(*spawn_key, k))``.
    """

    network: Network
    engine: Engine
    partner: tuple[float, ...] | None
    correlation: bool
    entropy: object
    spawn_key: tuple[int, ...]
    pool_size: int
    block: int
    chunk: int
    count: int
    extent: tuple[int, int | None] | None = None

    @property
    def blocks(self) -> int:
        return -(-self.count // self.block)

    @property
    def rows(self) -> int:
        paired = self.correlation or self.partner is not None or bool(getattr(self.network.inputs, "paired", False))
        return ROWS_PAIRED if paired else ROWS_UNPAIRED

    def networks(self, first: int, stop: int) -> tuple[int, int]:
        """The networks ``(start, stop)`` of blocks ``first .. stop - 1``."""
        return first * self.block, min(self.count, stop * self.block)

    def children(self, first: int, stop: int) -> list[np.random.SeedSequence]:
        return [np.random.SeedSequence(self.entropy, spawn_key=(*self.spawn_key, k), pool_size=self.pool_size)
                for k in range(first, stop)]


_PLANS: dict[SampleJob, _Plan] = {}


def _job_plan(job: SampleJob) -> _Plan:
    """The plan of ``job``, built once per process (workers receive jobs, not plans)."""
    plan = _PLANS.get(job)
    if plan is None:
        _PLANS.clear()
        plan = _PLANS[job] = _plan(job.network, job.partner, job.correlation, job.engine)
    return plan


def compute_range(job: SampleJob, first: int, stop: int, sums: np.ndarray | None = None,
                  flags: np.ndarray | None = None, workspace: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-network averages and flags of blocks ``first .. stop - 1``, chunk by chunk.

    Returns ``(sums, flags)`` of shapes ``(rows, positions + 1, networks)`` and ``(3, positions + 1,
    networks)`` (written into the given arrays when passed; networks last, so that a value of every
    network at one position is one contiguous row). Every network's values depend only
    on its block, never on the range or the chunk it was computed in.
    """
    plan = _job_plan(job)
    start, end = job.networks(first, stop)
    columns = len(job.network.layers) + 1
    if sums is None:
        sums = np.empty((job.rows, columns, end - start), dtype=np.float64)
    if flags is None:
        flags = np.zeros((3, columns, end - start), dtype=bool)
    workspace = {} if workspace is None else workspace
    per_chunk = job.chunk // job.block
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for chunk_first in range(first, stop, per_chunk):
            chunk_stop = min(stop, chunk_first + per_chunk)
            lo, hi = (k - start for k in job.networks(chunk_first, chunk_stop))
            run_chunk(plan, job.children(chunk_first, chunk_stop), job.block, hi - lo, sums[..., lo:hi], workspace,
                      job.extent)
            _finish_chunk(plan, sums[..., lo:hi], flags[..., lo:hi], job.extent)
    return sums, flags


def _sample_range(job: SampleJob, first: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    return compute_range(job, first, stop)


def _sample_into(job: SampleJob, first: int, stop: int, path: str) -> None:
    """Compute blocks ``first .. stop - 1`` straight into the shared file-backed arrays at ``path`` (local workers).

    The flags array of a new file is all False, as :func:`compute_range` needs it.
    """
    sums = np.load(path + _SUMS, mmap_mode="r+")
    flags = np.load(path + _FLAGS, mmap_mode="r+")
    lo, hi = job.networks(first, stop)
    compute_range(job, first, stop, sums[..., lo:hi], flags[..., lo:hi])
    del sums, flags


def recorded_extent(network: Network, observables: Sequence[Observable]) -> tuple[int, int | None] | None:
    """What sampling ``network`` for ``observables`` must record: ``(top, bottom)`` as in :attr:`Samples.extent`.

    Signals are needed up to the highest position an observable reads; a gradient anywhere needs the
    whole forward pass (the loss sits at the output) and the backward pass down to the lowest gradient
    read. ``None`` when that is everything.
    """
    if isinstance(observables, Observable | str) or not isinstance(observables, Sequence | set | frozenset):
        raise MonteCarloError(f"observables must be a sequence of observables, got {observables!r}")
    if not observables:
        raise MonteCarloError("observables is empty: give the observables the sample is for, or leave it out")
    last = len(network.layers) - 1
    top, bottom = -1, None
    for observable in observables:
        try:
            tensor = resolve(observable, network).tensor
        except ObservableError as exc:
            raise MonteCarloError(f"cannot sample for {observable!r}: {exc}") from None
        if isinstance(tensor, Signal):
            top = max(top, tensor.position)
        else:
            top = last
            bottom = tensor.position if bottom is None else min(bottom, tensor.position)
    return None if (top, bottom) == (last, -1) else (top, bottom)


def make_job(
    network: Network,
    samples: int,
    *,
    seed: int | np.random.SeedSequence,
    chunk_size: int | None = None,
    block_size: int | None = None,
    partner: Sequence[float] | None = None,
    correlation: bool = False,
    engine: Engine | str = "full",
    observables: Sequence[Observable] | None = None,
) -> SampleJob:
    """Check a sampling request and turn it into a :class:`SampleJob` (before anything is allocated)."""
    network = _check_network(network)
    extent = None if observables is None else recorded_extent(network, observables)
    paired = bool(correlation) or partner is not None or bool(getattr(getattr(network, "inputs", None), "paired", False))
    chosen = select_engine(engine, network, paired=paired)
    limits.check_sample(network, samples, block_size=block_size, chunk_size=chunk_size, engine=chosen, paired=paired)
    plan = _plan(network, partner, bool(correlation), chosen)
    count = _positive_int(samples, "samples (the number of networks)")
    seed_seq = _seed_sequence(seed)
    default_block, default_chunk = default_sizes(network, chosen, paired=paired)
    block = default_block if block_size is None else _positive_int(block_size, "block_size")
    if chunk_size is None:
        chunk = max(block, default_chunk // block * block)
    else:
        chunk = -(-_positive_int(chunk_size, "chunk_size") // block) * block
    job = SampleJob(network, chosen, None if plan.partner is None else tuple(float(v) for v in plan.partner),
                    bool(correlation), seed_seq.entropy, tuple(seed_seq.spawn_key), seed_seq.pool_size,
                    block, chunk, count, extent)
    _PLANS.clear()
    _PLANS[job] = plan
    return job


def _ranges(job: SampleJob, workers: int, *, result_bytes: int = 0, align: int | None = None) -> list[tuple[int, int]]:
    """Block ranges ``(first, stop)`` covering ``job``: whole multiples of ``align`` blocks (default: a chunk),
    about four per worker (load balance), each returning at most about 64 MB (``result_bytes`` per network)."""
    step = job.chunk // job.block if align is None else align
    steps = -(-job.blocks // step)
    per_task = max(1, -(-steps // (4 * max(1, workers))))
    if result_bytes:
        per_task = max(1, min(per_task, (64 << 20) // max(1, result_bytes * step * job.block)))
    return [(first, min(job.blocks, first + per_task * step)) for first in range(0, job.blocks, per_task * step)]


def map_blocks(job: SampleJob, function: Callable, executor: Executor, *args: object,
               result_bytes: int = 0, align: int | None = None) -> Iterator[tuple[int, int, object]]:
    """``(first, stop, function(job, first, stop, *args))`` over block ranges that cover the job, in order.

    Ranges are whole multiples of ``align`` blocks (default: a chunk); there are several per worker
    (load balance), each returning at most about 64 MB (``result_bytes`` per network), and the
    executor keeps only a bounded number in flight.
    """
    ranges = _ranges(job, executor.workers, result_bytes=result_bytes, align=align)
    results = executor.map(function, [(job, first, stop, *args) for first, stop in ranges])
    for (first, stop), result in zip(ranges, results):
        yield first, stop, result


def sample(
    network: Network,
    samples: int,
    *,
    seed: int | np.random.SeedSequence,
    chunk_size: int | None = None,
    block_size: int | None = None,
    partner: Sequence[float] | None = None,
    correlation: bool = False,
    engine: Engine | str = "full",
    executor: Executor | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    observables: Sequence[Observable] | None = None,
) -> Samples:
    r"""Draw ``samples`` independent networks and record per-network averages of the observables.

    Parameters
    ----------
    network
        A network with integer widths and numeric activation and weight-law parameters.
    samples
        The number T of independent networks, at least 1.
    seed
        A non-negative integer or a :class:`numpy.random.SeedSequence`; all randomness comes from it.
    chunk_size
        Networks processed together (bounds memory); rounded up to a whole number of blocks. The
        result does not depend on it. Default: :func:`default_sizes`.
    block_size
        Networks drawn from one generator. The draws depend on it (with the seed); the default,
        from :func:`default_sizes`, depends only on the network's shape and the engine.
    partner
        A fixed second input for the correlation observable (implies ``correlation``).
    correlation
        Also feed a partner input through every network, for ``y_correlation``: the ``partner``
        vector, or fresh iid :math:`\mathcal N(0, s)` entries, :math:`s` the input's mean square.
        Off by default: the forward pass then carries one input and is cheaper.
    engine
        ``"full"`` (every weight matrix drawn, the default here), ``"conditional"`` (Gaussian dense
        networks, :math:`O(n)` per layer; see :mod:`varprop.montecarlo.engines`), ``"auto"`` (the
        conditional engine where it is valid) or an :class:`~varprop.montecarlo.engines.Engine`.
        The two engines sample the same law from different random numbers.
    executor
        Where the blocks run: ``None`` or ``"serial"`` (this process), ``"processes[=N]"``,
        ``"dask[=ADDRESS]"`` or an :class:`~varprop.montecarlo.executors.Executor`. The result is
        bit-identical whatever the executor and its number of workers.
    progress
        Called as ``progress(networks_done, networks_total)`` as blocks finish.
    observables
        When given, only what these observables read is computed
        (:attr:`Samples.extent`): the forward pass up to the highest signal they read, and the backward
        pass only when they read a gradient, down to the lowest one. What is computed is bit-identical to
        the whole sample's (the draws it makes come first in every block); the rest is not recorded.

    Returns
    -------
    Samples
        Per-network averages at every position (and per dense layer), the counts of overflow,
        NaN and all-zero signals, and the engine that drew them.

    Raises
    ------
    MonteCarloError
        For symbolic widths or parameters, a non-positive ``samples``, ``chunk_size`` or
        ``block_size``, a bad seed, partner, engine or executor, an engine that cannot serve the
        network (with the reason); and (a :class:`~varprop.montecarlo.limits.LimitError`) before
        anything is allocated, for a request beyond the memory or draw bounds of
        :mod:`varprop.montecarlo.limits`.
    """
    job = make_job(network, samples, seed=seed, chunk_size=chunk_size, block_size=block_size, partner=partner,
                   correlation=correlation, engine=engine, observables=observables)
    with executor_from(executor) as runner:
        return _run_job(job, runner, progress)


def _run_job(job: SampleJob, runner: Executor, progress: Callable[[int, int], None] | None) -> Samples:
    """The :class:`Samples` of one job, its ranges spread over ``runner``'s workers (or run here)."""
    plan = _job_plan(job)
    columns = len(job.network.layers) + 1
    if runner.workers <= 1 or job.blocks * job.block <= job.chunk or not runner.local:
        sums = np.empty((job.rows, columns, job.count), dtype=np.float64)
        flags = np.zeros((3, columns, job.count), dtype=bool)  # NaN, inf, zero signal
    if runner.workers <= 1 or job.blocks * job.block <= job.chunk:
        workspace: dict[int, tuple[np.ndarray, ...]] = {}
        per_chunk = job.chunk // job.block
        for first in range(0, job.blocks, per_chunk):
            stop = min(job.blocks, first + per_chunk)
            lo, hi = job.networks(first, stop)
            compute_range(job, first, stop, sums[..., lo:hi], flags[..., lo:hi], workspace)
            if progress is not None:
                progress(hi, job.count)
    elif runner.local:
        # Local workers write their rows straight into a file-backed array in shared memory
        # (no result is pickled back); this process then uses that memory as its own (a plain array
        # view of the mapping, which outlives the file's name), with no copy.
        with tempfile.TemporaryDirectory(dir=_SHARED_MEMORY, ignore_cleanup_errors=True) as folder:
            path = _shared_array(job, folder, 0)
            for _, stop, _ in map_blocks(job, _sample_into, runner, path):
                if progress is not None:
                    progress(job.networks(0, stop)[1], job.count)
            sums, flags = _take_shared(job, path)
    else:
        for first, stop, (part, part_flags) in map_blocks(job, _sample_range, runner,
                                                          result_bytes=8 * job.rows * columns):
            lo, hi = job.networks(first, stop)
            sums[..., lo:hi] = part
            flags[..., lo:hi] = part_flags
            if progress is not None:
                progress(hi, job.count)
    return samples_from(plan, job, sums, flags)


_SHARED_MEMORY = "/dev/shm" if os.path.isdir("/dev/shm") else None


_SUMS, _FLAGS = ".sums.npy", ".flags.npy"


def _shared_array(job: SampleJob, folder: str, index: int) -> str:
    """New file-backed arrays for ``job``'s sums (float64) and flags (bool, all False) in ``folder``; their path prefix."""
    path = os.path.join(folder, f"samples-{index}")
    shape = (len(job.network.layers) + 1, job.count)
    for suffix, dtype, rows in ((_SUMS, np.float64, job.rows), (_FLAGS, np.bool_, 3)):
        shared = np.lib.format.open_memmap(path + suffix, mode="w+", dtype=dtype, shape=(rows, *shape))
        del shared
    return path


def _take_shared(job: SampleJob, path: str) -> tuple[np.ndarray, np.ndarray]:
    """The sums and flags of finished shared arrays (views of the mappings, no copy); their files are removed."""
    arrays = []
    for suffix in (_SUMS, _FLAGS):
        shared = np.load(path + suffix, mmap_mode="r+")
        arrays.append(shared.view(np.ndarray))
        del shared
        os.unlink(path + suffix)  # the mapping stays valid
    return arrays[0], arrays[1]


@dataclass(frozen=True)
class SampleRequest:
    """One sample of :func:`sample_each`: the arguments of :func:`sample` but the executor.

    Attributes
    ----------
    network, samples, seed, engine, observables
        As for :func:`sample` (``samples`` networks drawn from ``seed``; ``observables``: compute only
        what they read, ``None``: everything).
    progress
        Called as ``progress(networks_done, samples)`` as this request's ranges finish.
    """

    network: Network
    samples: int
    seed: int | np.random.SeedSequence
    engine: Engine | str = "full"
    observables: tuple[Observable, ...] | None = None
    progress: Callable[[int, int], None] | None = field(default=None, compare=False)


def sample_each(requests: Sequence[SampleRequest], *, executor: Executor | str | None = None) -> Iterator[Samples]:
    """The :class:`Samples` of each request, in order, with the requests sampled concurrently.

    Every request is checked before any is sampled. With one worker this is :func:`sample` in turn.
    With local workers, the block ranges of all the requests form one queue (a request's first range is
    started while the previous request is still running), so many small samples keep every core busy
    and this process reads a finished sample while the workers go on. Each request's result is
    bit-identical to :func:`sample`'s, whatever the executor (its blocks and their draws are the same).
    At most ``2 * workers`` ranges are in flight, so at most that many requests hold memory at once
    besides the one being read.
    """
    jobs = [make_job(r.network, r.samples, seed=r.seed, engine=r.engine,
                     observables=None if r.observables is None else list(r.observables)) for r in requests]
    with executor_from(executor) as runner:
        if runner.workers <= 1 or not runner.local:
            for job, request in zip(jobs, requests):
                yield _run_job(job, runner, request.progress)
            return
        with tempfile.TemporaryDirectory(dir=_SHARED_MEMORY, ignore_cleanup_errors=True) as folder:
            paths: dict[int, str] = {}

            def tasks() -> Iterator[tuple]:
                for index, job in enumerate(jobs):
                    paths[index] = _shared_array(job, folder, index)  # made when its first range is queued
                    for first, stop in _ranges(job, runner.workers):
                        yield (job, first, stop, paths[index], index)

            for index, stop in runner.map(_sample_into_indexed, tasks()):  # in task order
                job, request = jobs[index], requests[index]
                if request.progress is not None:
                    request.progress(job.networks(0, stop)[1], job.count)
                if stop == job.blocks:  # the request's last range: it is complete
                    sums, flags = _take_shared(job, paths.pop(index))
                    yield samples_from(_job_plan(job), job, sums, flags)


def _sample_into_indexed(job: SampleJob, first: int, stop: int, path: str, index: int) -> tuple[int, int]:
    _sample_into(job, first, stop, path)
    return index, stop


def samples_from(plan: _Plan, job: SampleJob, sums: np.ndarray, flags: np.ndarray) -> Samples:
    """The :class:`Samples` of finished per-network averages ``sums`` and ``flags`` (taken over, not copied;
    shapes ``(rows, positions + 1, networks)`` and ``(3, positions + 1, networks)``)."""
    network = plan.network
    per_position = _per_position(plan, sums, job.extent)
    health = _health(network, flags.transpose(0, 2, 1))
    return Samples(
        network=network,
        per_position=MappingProxyType(per_position),
        per_network=MappingProxyType(_per_network(network, per_position)),
        **{name: _read_only(array) for name, array in health.items()},
        seed=np.random.SeedSequence(job.entropy, spawn_key=job.spawn_key, pool_size=job.pool_size),
        block_size=job.block,
        chunk_size=job.chunk,
        partner=job.partner,
        engine=job.engine.name,
        extent=job.extent,
    )


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _finish_chunk(plan: _Plan, sums: np.ndarray, flags: np.ndarray,
                  extent: tuple[int, int | None] | None = None) -> None:
    """Turn one chunk's raw sums into per-network averages in place, and flag its NaN, inf and zeros.

    ``sums`` has shape ``(rows, positions + 1, networks)``; ``flags`` (all False on entry) gets, per
    network and position, whether any recorded value is NaN, is ``inf`` (and none NaN), and whether
    the signal is identically zero. Done chunk by chunk while the data are in cache; every operation
    is elementwise, so the result does not depend on the chunk. Values outside ``extent``
    (:func:`~varprop.montecarlo.engines.run_chunk` leaves them unwritten) are flagged nowhere and set to NaN,
    but for the gradient rows of a sample that records no gradient, which are not touched at all
    (:func:`_written_rows`).
    """
    unrecorded = _unrecorded(extent, plan.paired)
    for cells in unrecorded:
        sums[cells] = 0.0  # neutral for the checks below, which must see only recorded values
    squares = sums[SIG_SQ]
    np.divide(squares, squares[:1], out=sums[NORM])
    widths = plan.widths[:, None]
    sums[SIG_SUM : SIG_SQ + 1] /= widths
    if _records_gradients(extent):
        sums[GRAD_SUM : GRAD_SQ + 1] /= widths
    if plan.paired:
        sums[SIG_PSQ:] /= widths
    np.equal(squares, 0, out=flags[2])
    parts = [sums[rows] for rows in _written_rows(extent)]
    if not all(np.isfinite(part).all() for part in parts):  # classify only the networks with some non-finite value
        bad = np.flatnonzero(~np.logical_and.reduce([np.isfinite(part).all(axis=(0, 1)) for part in parts]))
        nan = np.logical_or.reduce([np.isnan(part[..., bad]).any(axis=0) for part in parts])
        inf = np.logical_or.reduce([np.isinf(part[..., bad]).any(axis=0) for part in parts])
        flags[0][:, bad] = nan
        flags[1][:, bad] = inf & ~nan
    for cells in unrecorded:
        sums[cells] = np.nan
    if extent is not None:
        flags[:, extent[0] + 2:] = False  # nothing recorded above the top signal


def _records_gradients(extent: tuple[int, int | None] | None) -> bool:
    """Whether a sample of this extent records any gradient (else its gradient rows are never written)."""
    return extent is None or extent[1] is not None


def _written_rows(extent: tuple[int, int | None] | None) -> list[slice]:
    """The rows of a chunk's sums that are written: all of them, or all but the gradient rows of a sample
    that records no gradient. Those are never touched, not even to be marked NaN: their memory (a shared
    file's pages in a worker) is never faulted in, and :func:`_per_position` reads them as NaN."""
    return [slice(None)] if _records_gradients(extent) else [slice(SIG_SUM, SIG_SQ + 1), slice(NORM, None)]


def _unrecorded(extent: tuple[int, int | None] | None, paired: bool) -> list[tuple]:
    """Index expressions into a chunk's sums, shape ``(rows, positions + 1, networks)``, of the written values
    ``extent`` leaves out: the signal statistics above position ``top``, the gradient ones below ``bottom``."""
    if extent is None:
        return []
    top, bottom = extent
    signals = [SIG_SUM, SIG_SQ, NORM] + ([SIG_PSQ, SIG_CROSS] if paired else [])
    cells = [(signals, slice(top + 2, None))]
    if bottom is not None:
        cells.append((slice(GRAD_SUM, GRAD_SQ + 1), slice(bottom + 1)))
    return cells


def _per_position(plan: _Plan, sums: np.ndarray, extent: tuple[int, int | None] | None = None
                  ) -> dict[str, np.ndarray]:
    """The per-position arrays, shape ``(T, positions + 1)``, read-only: the rows of ``sums`` (shape ``(rows,
    positions + 1, T)``) transposed, so that one position's values are contiguous; the gradient rows of a
    sample that records no gradient (never written) read as NaN, from a constant that takes no memory."""
    names = PER_POSITION if plan.paired else tuple(n for n in PER_POSITION if n not in _PAIRED_ONLY)
    unwritten = () if _records_gradients(extent) else (GRAD_SUM, GRAD_SQ)
    return {name: _read_only(np.broadcast_to(np.nan, sums[row].T.shape) if row in unwritten else sums[row].T)
            for row, name in enumerate(names)}


def _columns(network: Network, offset: int) -> slice | list[int]:
    """Columns of the per-position arrays at each dense layer's position plus ``offset``."""
    columns = [q + 1 + offset for q in network.dense_positions]
    steps = {b - a for a, b in zip(columns, columns[1:])}
    if len(columns) == 1 or (len(steps) == 1 and min(steps) > 0):
        step = steps.pop() if steps else 1
        return slice(columns[0], columns[-1] + 1, step)
    return columns


def _per_network(network: Network, per_position: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The legacy per-dense-layer arrays, selected (as views where possible) from the per-position ones."""
    out = {}
    for name, (source, offset) in _LEGACY.items():
        if source in per_position:
            out[name] = _read_only(per_position[source][:, _columns(network, offset)])
    return out


def _health(network: Network, flags: np.ndarray) -> dict[str, np.ndarray]:
    """Finite networks, and overflow, NaN and all-zero counts per position and per dense layer (``flags``:
    NaN, inf, zero signal, shape ``(3, networks, positions + 1)``)."""
    is_nan, is_inf, zero = flags
    below, above = _columns(network, -1), _columns(network, 0)
    if not (is_nan.any() or is_inf.any()):  # the usual case: every network finite, only the zeros to count
        none = np.zeros(len(network.dense_positions), dtype=np.int64)
        zeros = _column_counts(zero)
        return {
            "finite": np.ones(is_nan.shape[0], dtype=bool),
            "overflow": none,
            "nan": none.copy(),
            "zero_x": zeros[below],
            "zero_y": zeros[above],
            "position_overflow": np.zeros(is_nan.shape[1], dtype=np.int64),
            "position_nan": np.zeros(is_nan.shape[1], dtype=np.int64),
            "position_zero": zeros,
        }
    column_finite = ~(is_nan | is_inf)
    finite = column_finite.all(axis=1)
    layer_nan = is_nan[:, below] | is_nan[:, above]
    layer_inf = (is_inf[:, below] | is_inf[:, above]) & ~layer_nan
    layer_finite = ~(layer_nan | layer_inf)
    return {
        "finite": finite,
        "overflow": _column_counts(layer_inf),
        "nan": _column_counts(layer_nan),
        "zero_x": _column_counts(zero[:, below] & layer_finite),
        "zero_y": _column_counts(zero[:, above] & layer_finite),
        "position_overflow": _column_counts(is_inf),
        "position_nan": _column_counts(is_nan),
        "position_zero": _column_counts(zero & column_finite),
    }


def _column_counts(mask: np.ndarray) -> np.ndarray:
    """The number of True values in each column of ``mask`` (a column at a time: ten times numpy's ``axis=0``)."""
    return np.array([np.count_nonzero(mask[:, j]) for j in range(mask.shape[1])], dtype=np.int64)
