r"""Sample independent random networks and record per-network averages of every observable.

Notation (He et al. 2015): dense layer :math:`l = 1, \dots, L` maps its input
:math:`x_l \in \mathbb R^{n_l}` to :math:`y_l = W_l x_l + b_l \in \mathbb R^{\hat n_l}`, and the next
dense layer's input is :math:`x_{l+1} = \phi(y_l)` (whatever :class:`~varprop.network.Nonlinearity`
layers stand between them). Each sampled network gets

* its own weights and biases, drawn with each layer's ``law.sample(shape, rng=...)``;
* its input: the :class:`~varprop.network.FixedInput` vector, or a fresh iid
  :math:`\mathcal N(0, v)` vector for :class:`~varprop.network.GaussianInput`;
* with ``correlation=True`` (or a ``partner``), a *partner* input :math:`x_1'` fed through the
  same weights, used only for the correlation of two inputs: the ``partner`` vector if given, else
  fresh iid :math:`\mathcal N(0, s)` entries with :math:`s` the input's mean square
  (``network.inputs.second_moment``), so that for ``GaussianInput`` the pair is two independent
  draws of the input law. Without it the forward pass carries one input, which is cheaper;
* a loss :math:`\mathcal L = \langle g, \text{out} \rangle` with :math:`g \sim \mathcal N(0, I)`,
  where out is the last layer's output (:math:`y_L`, or :math:`\phi(y_L)` when the network ends with
  a nonlinearity), so that :math:`\partial\mathcal L/\partial y_L = g` (times :math:`\phi'(y_L)`).

For every network and dense layer the sampler stores *per-network averages over units* (the
``per_network`` arrays of :class:`Samples`, shape ``(T, L)``):

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
(inputs, partner if paired, each layer's weights and biases in order, then :math:`g`) from its own generator
``PCG64(SeedSequence(entropy, spawn_key=(..., k)))``. A *chunk* (the unit of vectorised work,
bounding memory) is a whole number of blocks, and every per-network statistic is computed row by
row with a summation order that does not depend on how many rows a chunk holds. Hence the result
is bit-identical whatever ``chunk_size``; and since the last block is always drawn whole and
truncated, the first :math:`T` networks of a larger sample are the same networks.

Non-finite values
-----------------
Overflow and NaN are not averaged: for each layer, :class:`Samples` counts the networks whose
recorded values at that layer contain ``inf`` (``overflow``) or NaN (``nan``), and every network
with any non-finite value is excluded from estimates (``Samples.finite``). Networks whose layer
input or pre-activation is identically zero (a dead rectifier layer, or underflow) are finite
samples and stay in the estimates; they are counted in ``zero_x`` and ``zero_y``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import singledispatch
from types import MappingProxyType
from typing import Protocol

import numpy as np

from ..errors import VarpropError
from ..network import Dense, FixedInput, GaussianInput, Network, Nonlinearity
from ..weights import Normal
from . import limits
from .errors import MonteCarloError

__all__ = ["Samples", "sample", "layer_step", "LayerStep", "PER_NETWORK", "default_sizes"]

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

# Rows of the raw per-network sums computed inside a chunk; the first seven are the rows of the
# forward stack built by _forward_sums (_Y_PARTNER_SUM is a by-product that is not reported).
_Y_SUM, _Y_PARTNER_SUM, _Y_SQ, _Y_PSQ, _Y_CROSS, _X_SUM, _X_SQ, _DY_SQ, _DX_SQ = range(9)
_N_FORWARD = 7
_N_SUMS = 9
#: Arrays present only when the networks were sampled with a partner input.
_PAIRED_ONLY = ("y_cross", "y_partner_second_moment")

# Parameter floats drawn per block (amortises generator creation and each law.sample call), and
# working-memory floats per chunk; both chosen from benchmarks/bench_sampler.py.
_BLOCK_FLOATS = 2**20
_CHUNK_FLOATS = 2**20
# Layers of at most this many units are summed unit by unit over a units-first copy (fast for narrow
# layers); wider layers by numpy's pairwise reduction along the contiguous unit axis.
_NARROW = 8


class LayerStep(Protocol):
    """What the sampler needs from one layer kind: draw its parameters, apply it, back-propagate.

    Arrays carry a leading network axis; activations have shape ``(networks, 2, width)`` (the
    network's input and the partner input), gradients ``(networks, 1, width)``.
    """

    #: True for the layers whose inputs and outputs are the x_l, y_l of the observables.
    observed: bool

    def draw(
        self, count: int, rng: np.random.Generator, reuse: tuple[np.ndarray, ...] | None = None
    ) -> tuple[np.ndarray, ...]:
        """Parameters of ``count`` networks, each array with a leading axis of length ``count``.

        ``reuse``, when given, is this layer's previous return value: its arrays may be refilled in
        place (the draws are the same; only the allocation, and its page faults, is saved).
        """
        ...

    def forward(self, params: tuple[np.ndarray, ...], h: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The layer output, and what ``backward`` needs (kept small: it lives until the backward pass)."""
        ...

    def backward(self, params: tuple[np.ndarray, ...], cache: np.ndarray | None, grad: np.ndarray) -> np.ndarray:
        """The gradient with respect to the layer input, given the one with respect to its output."""
        ...


@singledispatch
def layer_step(layer: object) -> LayerStep:
    """The numpy reader of one layer description (a registry keyed on layer classes).

    Register a new layer kind with ``@layer_step.register(MyLayer)``, returning a
    :class:`LayerStep`.
    """
    known = ", ".join(sorted(cls.__name__ for cls in layer_step.registry if cls is not object))
    raise MonteCarloError(f"no Monte Carlo reader for layer {layer!r}; layers the sampler reads: {known}")


@dataclass(frozen=True)
class _DenseStep:
    r""":math:`y = W x + b`, :math:`\partial\mathcal L/\partial x = W^\top \partial\mathcal L/\partial y`."""

    layer: Dense
    observed: bool = True

    def draw(
        self, count: int, rng: np.random.Generator, reuse: tuple[np.ndarray, ...] | None = None
    ) -> tuple[np.ndarray, ...]:
        layer = self.layer
        buffers = reuse if reuse is not None and reuse[0].shape[0] == count else (None, None)
        weights = _as_draw(layer.weights.sample((count, layer.fan_out, layer.fan_in), rng=rng, out=buffers[0]))
        if layer.bias is None:
            return (weights,)
        bias_buffer = buffers[1] if len(buffers) > 1 else None
        return weights, _as_draw(layer.bias.sample((count, layer.fan_out), rng=rng, out=bias_buffer))

    def forward(self, params: tuple[np.ndarray, ...], h: np.ndarray) -> tuple[np.ndarray, None]:
        out = np.matmul(h, params[0].transpose(0, 2, 1))
        if len(params) > 1:
            out += params[1][:, None, :]
        return out, None

    def backward(self, params: tuple[np.ndarray, ...], cache: None, grad: np.ndarray) -> np.ndarray:
        return np.matmul(grad, params[0])


@dataclass(frozen=True)
class _NonlinearityStep:
    r""":math:`x = \phi(y)`, :math:`\partial\mathcal L/\partial y = \phi'(y)\,\partial\mathcal L/\partial x`."""

    layer: Nonlinearity
    observed: bool = False

    def draw(
        self, count: int, rng: np.random.Generator, reuse: tuple[np.ndarray, ...] | None = None
    ) -> tuple[np.ndarray, ...]:
        return ()

    def forward(self, params: tuple[np.ndarray, ...], h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        activation = self.layer.activation
        return activation.numpy(h), activation.numpy_derivative(h[:, :1, :])

    def backward(self, params: tuple[np.ndarray, ...], cache: np.ndarray, grad: np.ndarray) -> np.ndarray:
        return grad * cache


@layer_step.register
def _(layer: Dense) -> LayerStep:
    return _DenseStep(layer)


@layer_step.register
def _(layer: Nonlinearity) -> LayerStep:
    return _NonlinearityStep(layer)


def _as_draw(array: object) -> np.ndarray:
    return np.asarray(array, dtype=np.float64)


@dataclass(frozen=True, eq=False, repr=False)
class Samples:
    """Per-network averages of the observables of ``count`` sampled networks.

    Attributes
    ----------
    network
        The sampled network description.
    per_network
        Read-only arrays of shape ``(count, depth)``, one per name in :data:`PER_NETWORK`; column
        ``l - 1`` is dense layer ``l``.
    finite
        ``(count,)`` booleans: the networks with every recorded value finite; only these enter
        estimates.
    overflow, nan
        ``(depth,)`` counts of networks whose values at that layer contain ``inf`` (and no NaN), or
        NaN.
    zero_x, zero_y
        ``(depth,)`` counts of finite networks whose layer input :math:`x_l`, or pre-activation
        :math:`y_l`, is identically zero.
    seed
        The :class:`numpy.random.SeedSequence` everything was drawn from.
    block_size, chunk_size
        Networks per generator block (part of what the draws depend on) and per chunk (memory only).
    partner
        The fixed partner input, or ``None`` for fresh Gaussian partners.
    """

    network: Network
    per_network: Mapping[str, np.ndarray]
    finite: np.ndarray
    overflow: np.ndarray
    nan: np.ndarray
    zero_x: np.ndarray
    zero_y: np.ndarray
    seed: np.random.SeedSequence
    block_size: int
    chunk_size: int
    partner: tuple[float, ...] | None = None

    @property
    def count(self) -> int:
        """The number T of sampled networks (finite or not)."""
        return int(self.finite.shape[0])

    @property
    def depth(self) -> int:
        """The number L of dense layers."""
        return self.network.depth

    @property
    def excluded(self) -> int:
        """Networks left out of every estimate because some recorded value is not finite."""
        return int(self.count - np.count_nonzero(self.finite))

    def __repr__(self) -> str:
        return (
            f"Samples(count={self.count}, depth={self.depth}, excluded={self.excluded}, "
            f"overflow={self.overflow.tolist()}, nan={self.nan.tolist()}, zero_x={self.zero_x.tolist()}, "
            f"zero_y={self.zero_y.tolist()})"
        )


@dataclass(frozen=True)
class _Plan:
    network: Network
    steps: tuple[LayerStep, ...]
    input_law: Normal | None
    fixed_input: np.ndarray | None
    partner_law: Normal | None
    partner: np.ndarray | None
    paired: bool
    widths_in: np.ndarray
    widths_out: np.ndarray


def default_sizes(network: Network) -> tuple[int, int]:
    """The default ``(block_size, chunk_size)`` for ``network``, in networks.

    A block draws about :math:`2^{20}` parameters (a power-of-two number of networks, at least
    one); a chunk holds about :math:`2^{20}` floats of parameters and activations (a whole number of
    blocks, at least one). Both figures come from ``benchmarks/bench_sampler.py`` (see
    ``benchmarks/RESULTS-sampler.md``).
    """
    _check_network(network)
    parameters, working = _floats_per_network(network)
    block = 1 << max(0, int(math.floor(math.log2(max(1, _BLOCK_FLOATS // parameters)))))
    chunk = max(block, (_CHUNK_FLOATS // working) // block * block)
    return block, chunk


def _floats_per_network(network: Network) -> tuple[int, int]:
    """Parameters drawn, and working floats (parameters, both inputs' activations, temporaries)."""
    width = network.widths[0]
    parameters = 0
    activations = 8 * width
    for layer in network.layers:
        if isinstance(layer, Dense):
            parameters += layer.fan_in * layer.fan_out + (layer.fan_out if layer.bias is not None else 0)
            width = layer.fan_out
        activations += 8 * width
    return max(1, parameters), parameters + activations


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


def _plan(network: Network, partner: Sequence[float] | None, correlation: bool = False) -> _Plan:
    network = _check_network(network)
    probe = np.random.default_rng(0)
    steps = []
    for index, layer in enumerate(network.layers):
        step = layer_step(layer)
        try:
            if isinstance(layer, Nonlinearity):
                layer.activation.numpy(np.zeros(1))
                layer.activation.numpy_derivative(np.zeros(1))
            params = step.draw(1, probe)
        except VarpropError as exc:
            raise MonteCarloError(f"cannot sample layer {index} ({layer!r}): {exc}") from None
        for array in params:
            if array.shape[0] != 1:
                raise MonteCarloError(f"layer {index} drew parameters of shape {array.shape} for one network")
        steps.append(step)
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
    if partner is None:
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
        steps=tuple(steps),
        input_law=input_law,
        fixed_input=fixed,
        partner_law=partner_law,
        partner=partner_array,
        paired=correlation or partner is not None,
        widths_in=np.array([layer.fan_in for layer in dense], dtype=np.float64),
        widths_out=np.array([layer.fan_out for layer in dense], dtype=np.float64),
    )


def sample(
    network: Network,
    samples: int,
    *,
    seed: int | np.random.SeedSequence,
    chunk_size: int | None = None,
    block_size: int | None = None,
    partner: Sequence[float] | None = None,
    correlation: bool = False,
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
        from :func:`default_sizes`, depends only on the network's shape.
    partner
        A fixed second input for the correlation observable (implies ``correlation``).
    correlation
        Also feed a partner input through every network, for ``y_correlation``: the ``partner``
        vector, or fresh iid :math:`\mathcal N(0, s)` entries, :math:`s` the input's mean square.
        Off by default: the forward pass then carries one input and is cheaper.

    Returns
    -------
    Samples
        Per-network, per-layer averages and the counts of overflow, NaN and all-zero layers.

    Raises
    ------
    MonteCarloError
        For symbolic widths or parameters, a non-positive ``samples``, ``chunk_size`` or
        ``block_size``, a bad seed or partner; and (a :class:`~varprop.montecarlo.limits.LimitError`)
        before anything is allocated, for a request beyond the memory or draw bounds of
        :mod:`varprop.montecarlo.limits`.
    """
    limits.check_sample(network, samples, block_size=block_size, chunk_size=chunk_size)  # before any allocation
    plan = _plan(network, partner, bool(correlation))
    count = _positive_int(samples, "samples (the number of networks)")
    seed_seq = _seed_sequence(seed)
    default_block, default_chunk = default_sizes(network)
    block = default_block if block_size is None else _positive_int(block_size, "block_size")
    if chunk_size is None:
        chunk = max(block, default_chunk // block * block)
    else:
        chunk = -(-_positive_int(chunk_size, "chunk_size") // block) * block
    depth = network.depth
    sums = np.empty((_N_SUMS, count, depth), dtype=np.float64)
    blocks = -(-count // block)
    blocks_per_chunk = chunk // block
    workspace: dict[int, tuple[np.ndarray, ...]] = {}
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for first in range(0, blocks, blocks_per_chunk):
            indices = range(first, min(blocks, first + blocks_per_chunk))
            start = first * block
            stop = min(count, (indices[-1] + 1) * block)
            children = [
                np.random.SeedSequence(seed_seq.entropy, spawn_key=(*seed_seq.spawn_key, k), pool_size=seed_seq.pool_size)
                for k in indices
            ]
            _run_chunk(plan, children, block, stop - start, sums[:, start:stop], workspace)
        per_network = _per_network(plan, sums)
        finite, overflow, nan, zero_x, zero_y = _health(per_network)
    return Samples(
        network=network,
        per_network=MappingProxyType(per_network),
        finite=_read_only(finite),
        overflow=_read_only(overflow),
        nan=_read_only(nan),
        zero_x=_read_only(zero_x),
        zero_y=_read_only(zero_y),
        seed=seed_seq,
        block_size=block,
        chunk_size=chunk,
        partner=None if plan.partner is None else tuple(float(v) for v in plan.partner),
    )


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _run_chunk(
    plan: _Plan,
    children: list[np.random.SeedSequence],
    block: int,
    used: int,
    out: np.ndarray,
    workspace: dict[int, tuple[np.ndarray, ...]],
) -> None:
    """Draw, run forward and backward, and write the raw per-network sums of one chunk into ``out``.

    ``out`` has shape ``(9, used, depth)``. Every block is drawn whole from its own generator (in
    the order: input, partner, each layer's parameters, g) and truncated to the networks used.
    """
    n_in = int(plan.widths_in[0])
    n_out = int(plan.widths_out[-1])
    columns: list[list[np.ndarray]] = [[], []]
    drawn: list[list[tuple[np.ndarray, ...]]] = [[] for _ in plan.steps]
    losses = []
    for position, child in enumerate(children):
        rng = np.random.Generator(np.random.PCG64(child))
        take = min(block, used - position * block)
        if plan.input_law is not None:
            columns[0].append(_as_draw(plan.input_law.sample((block, n_in), rng=rng))[:take])
        if plan.partner_law is not None:
            columns[1].append(_as_draw(plan.partner_law.sample((block, n_in), rng=rng))[:take])
        for index, step in enumerate(plan.steps):
            # A chunk of one block refills the previous chunk's parameter arrays in place.
            arrays = step.draw(block, rng, workspace.get(index) if len(children) == 1 else None)
            if len(children) == 1:
                workspace[index] = arrays
            drawn[index].append(tuple(array[:take] for array in arrays))
        losses.append(rng.standard_normal((block, n_out))[:take])
    first = _join(columns[0]) if plan.input_law is not None else np.broadcast_to(plan.fixed_input, (used, n_in))
    if plan.paired:
        second = _join(columns[1]) if plan.partner_law is not None else np.broadcast_to(plan.partner, (used, n_in))
        h = np.stack((first, second), axis=1)
    else:
        h = np.array(first)[:, None, :]
    params = [tuple(_join(list(arrays)) for arrays in zip(*per_block)) for per_block in drawn]
    g = _join(losses)

    caches = []
    dense = 0
    for step, p in zip(plan.steps, params):
        y, cache = step.forward(p, h)
        if step.observed:
            out[:_N_FORWARD, :, dense] = _forward_sums(h, y)
            dense += 1
        caches.append(cache)
        h = y
    grad = g[:, None, :]
    for step, p, cache in zip(reversed(plan.steps), reversed(params), reversed(caches)):
        grad_in = step.backward(p, cache, grad)
        if step.observed:
            dense -= 1
            dy, dx = grad[:, 0, :], grad_in[:, 0, :]
            out[_DY_SQ, :, dense] = _square_sum(dy)
            out[_DX_SQ, :, dense] = _square_sum(dx)
        grad = grad_in


def _join(arrays: list[np.ndarray]) -> np.ndarray:
    """The blocks of one chunk as one array (no copy for a single block)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _forward_sums(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r"""Per-network sums over units, shape ``(7, networks)``, in the order ``_Y_SUM .. _X_SQ``.

    For the layer output ``y`` (network input and partner, ``(networks, 2, width)``):
    :math:`\sum y, \sum y', \sum y^2, \sum y'^2, \sum y y'`; for the layer input ``x``:
    :math:`\sum x, \sum x^2` (the network's own input only).
    """
    sums = np.zeros((_N_FORWARD, y.shape[0]))
    if y.shape[1] == 1:  # unpaired: the network's own input only
        y0 = y[:, 0]
        if y0.shape[1] <= _NARROW:
            units = np.ascontiguousarray(y0.T)
            sums[_Y_SUM] = _sum_units_first(units)
            sums[_Y_SQ] = _sum_units_first(units * units)
        else:
            sums[_Y_SUM] = np.add.reduce(y0, axis=-1)
            sums[_Y_SQ] = np.add.reduce(y0 * y0, axis=-1)
    elif y.shape[2] <= _NARROW:
        units = np.ascontiguousarray(y.transpose(2, 1, 0))
        sums[_Y_SUM : _Y_PARTNER_SUM + 1] = _sum_units_first(units)
        sums[_Y_SQ : _Y_PSQ + 1] = _sum_units_first(units * units)
        sums[_Y_CROSS] = _sum_units_first(units[:, 0] * units[:, 1])
    else:
        sums[_Y_SUM : _Y_PARTNER_SUM + 1] = np.add.reduce(y, axis=-1).T
        sums[_Y_SQ : _Y_PSQ + 1] = np.add.reduce(y * y, axis=-1).T
        sums[_Y_CROSS] = np.add.reduce(y[:, 0] * y[:, 1], axis=-1)
    x0 = x[:, 0]
    if x0.shape[1] <= _NARROW:
        units = np.ascontiguousarray(x0.T)
        sums[_X_SUM] = _sum_units_first(units)
        sums[_X_SQ] = _sum_units_first(units * units)
    else:
        sums[_X_SUM] = np.add.reduce(x0, axis=-1)
        sums[_X_SQ] = np.add.reduce(x0 * x0, axis=-1)
    return sums


def _square_sum(a: np.ndarray) -> np.ndarray:
    """Per-network sum of squares of ``a``, shape ``(networks, width)``."""
    if a.shape[1] <= _NARROW:
        units = np.ascontiguousarray(a.T)
        return _sum_units_first(units * units)
    return np.add.reduce(a * a, axis=-1)


def _sum_units_first(units: np.ndarray) -> np.ndarray:
    r"""Sum over the first (unit) axis, one unit after the other.

    Each network's sum is then :math:`((a_1 + a_2) + a_3) + \dots` whatever the number of networks
    (numpy's own reduction may switch to pairwise summation when a chunk holds a single network).
    Wider layers use numpy's pairwise reduction along the contiguous unit axis instead, which is
    also computed row by row. Either way a network's statistics do not depend on its chunk.
    """
    total = units[0].copy()
    for row in units[1:]:
        total += row
    return total


def _per_network(plan: _Plan, sums: np.ndarray) -> dict[str, np.ndarray]:
    """Turn the raw sums, shape ``(8, T, L)``, into the per-network averages, in place."""
    n_in, n_out = plan.widths_in, plan.widths_out
    for column in (_Y_SUM, _Y_SQ, _Y_CROSS, _Y_PSQ, _DY_SQ):
        sums[column] /= n_out
    squares = sums[_X_SQ]
    ratio = squares / squares[:, :1]
    for column in (_X_SUM, _X_SQ, _DX_SQ):
        sums[column] /= n_in
    values = {
        "y_mean": sums[_Y_SUM],
        "y_second_moment": sums[_Y_SQ],
        "y_cross": sums[_Y_CROSS],
        "y_partner_second_moment": sums[_Y_PSQ],
        "x_mean": sums[_X_SUM],
        "x_second_moment": sums[_X_SQ],
        "dy_second_moment": sums[_DY_SQ],
        "dx_second_moment": sums[_DX_SQ],
        "x_norm_ratio": ratio,
    }
    names = PER_NETWORK if plan.paired else tuple(n for n in PER_NETWORK if n not in _PAIRED_ONLY)
    return {name: _read_only(values[name]) for name in names}


def _health(
    per_network: Mapping[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    depth = per_network["y_mean"].shape[1]
    is_nan = np.zeros(per_network["y_mean"].shape, dtype=bool)
    is_inf = np.zeros_like(is_nan)
    for name in per_network:
        is_nan |= np.isnan(per_network[name])
        is_inf |= np.isinf(per_network[name])
    is_inf &= ~is_nan
    layer_finite = ~(is_nan | is_inf)
    finite = layer_finite.all(axis=1) if depth else np.ones(is_nan.shape[0], dtype=bool)
    zero_x = np.count_nonzero((per_network["x_second_moment"] == 0) & layer_finite, axis=0)
    zero_y = np.count_nonzero((per_network["y_second_moment"] == 0) & layer_finite, axis=0)
    return finite, np.count_nonzero(is_inf, axis=0), np.count_nonzero(is_nan, axis=0), zero_x, zero_y
