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
(inputs, partner if paired, each layer's weights and biases in order, then :math:`g`) from its own generator
``PCG64(SeedSequence(entropy, spawn_key=(..., k)))``. A *chunk* (the unit of vectorised work,
bounding memory) is a whole number of blocks, and every per-network statistic is computed row by
row with a summation order that does not depend on how many rows a chunk holds. Hence the result
is bit-identical whatever ``chunk_size``; and since the last block is always drawn whole and
truncated, the first :math:`T` networks of a larger sample are the same networks.

Non-finite values
-----------------
Overflow and NaN are not averaged: for each position, :class:`Samples` counts the networks whose
recorded values there contain ``inf`` (``position_overflow``) or NaN (``position_nan``), and for
each dense layer those whose values at its input or output position do (``overflow``, ``nan``).
Every network with any non-finite value is excluded from estimates (``Samples.finite``). Networks
whose signal is identically zero somewhere (a dead rectifier layer, or underflow) are finite samples
and stay in the estimates; they are counted per position in ``position_zero`` and per dense layer
in ``zero_x`` (its input) and ``zero_y`` (its output).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import singledispatch
from numbers import Integral
from types import MappingProxyType
from typing import Protocol

import numpy as np

from ..errors import VarpropError
from ..network import Dense, FixedInput, GaussianInput, Network, Nonlinearity
from ..weights import Normal
from . import limits
from .errors import MonteCarloError

__all__ = ["Samples", "sample", "layer_step", "LayerStep", "PER_NETWORK", "PER_POSITION", "default_sizes"]

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

# Rows of the raw per-network sums computed inside a chunk, one column per position (column p + 1
# is position p). The last two rows exist only for paired samples.
_SIG_SUM, _SIG_SQ, _GRAD_SUM, _GRAD_SQ, _NORM, _SIG_PSQ, _SIG_CROSS = range(7)
_N_UNPAIRED = 5
_N_PAIRED = 7
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
    widths: np.ndarray
    mixing: tuple[float, float] | None = None  # (c0, sqrt(1 - c0^2)): partner = c0 x + sqrt(1 - c0^2) z


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
        steps=tuple(steps),
        input_law=input_law,
        fixed_input=fixed,
        partner_law=partner_law,
        partner=partner_array,
        paired=correlation or partner is not None or inputs.paired,
        mixing=mixing,
        widths_in=np.array([layer.fan_in for layer in dense], dtype=np.float64),
        widths_out=np.array([layer.fan_out for layer in dense], dtype=np.float64),
        widths=np.array([network.width(p) for p in range(-1, len(network.layers))], dtype=np.float64),
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
        Per-network averages at every position (and per dense layer), and the counts of overflow,
        NaN and all-zero signals.

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
    rows = _N_PAIRED if plan.paired else _N_UNPAIRED
    sums = np.empty((rows, count, len(network.layers) + 1), dtype=np.float64)
    flags = np.zeros((3, count, len(network.layers) + 1), dtype=bool)  # NaN, inf, zero signal
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
            _finish_chunk(plan, sums[:, start:stop], flags[:, start:stop])
        per_position = _per_position(plan, sums)
        health = _health(network, flags)
    return Samples(
        network=network,
        per_position=MappingProxyType(per_position),
        per_network=MappingProxyType(_per_network(network, per_position)),
        **{name: _read_only(array) for name, array in health.items()},
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

    ``out`` has shape ``(rows, used, positions + 1)`` (rows ``_SIG_SUM`` ..; column ``p + 1`` is
    position ``p``). Every block is drawn whole from its own generator (in the order: input,
    partner, each layer's parameters, g) and truncated to the networks used.
    """
    n_in = int(plan.widths_in[0])
    n_out = int(plan.widths[-1])
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
        if plan.mixing is not None:  # a Gaussian pair with correlation c0 per coordinate
            second = plan.mixing[0] * first + plan.mixing[1] * second
        h = np.stack((first, second), axis=1)
    else:
        h = np.array(first)[:, None, :]
    params = [tuple(_join(list(arrays)) for arrays in zip(*per_block)) for per_block in drawn]
    g = _join(losses)

    _signal_sums(h, out[:, :, 0])
    caches = []
    for column, (step, p) in enumerate(zip(plan.steps, params), 1):
        h, cache = step.forward(p, h)
        _signal_sums(h, out[:, :, column])
        caches.append(cache)
    grad = g[:, None, :]
    column = len(plan.steps)
    _gradient_sums(g, out[:, :, column])
    for step, p, cache in zip(reversed(plan.steps), reversed(params), reversed(caches)):
        grad = step.backward(p, cache, grad)
        column -= 1
        _gradient_sums(grad[:, 0, :], out[:, :, column])


def _join(arrays: list[np.ndarray]) -> np.ndarray:
    """The blocks of one chunk as one array (no copy for a single block)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _signal_sums(h: np.ndarray, out: np.ndarray) -> None:
    r"""Per-network sums over the units of a signal ``h``, shape ``(networks, 1 or 2, width)``.

    Writes :math:`\sum h, \sum h^2` into rows ``_SIG_SUM, _SIG_SQ`` of ``out`` (shape
    ``(rows, networks)``), and for a pair :math:`\sum {h'}^2, \sum h h'` into ``_SIG_PSQ,
    _SIG_CROSS``.
    """
    h0 = h[:, 0]
    if h0.shape[1] <= _NARROW:
        if h.shape[1] == 1:
            units = np.ascontiguousarray(h0.T)
            out[_SIG_SUM] = _sum_units_first(units)
            out[_SIG_SQ] = _sum_units_first(units * units)
        else:
            units = np.ascontiguousarray(h.transpose(2, 1, 0))
            out[_SIG_SUM] = _sum_units_first(units[:, 0])
            squares = _sum_units_first(units * units)
            out[_SIG_SQ], out[_SIG_PSQ] = squares[0], squares[1]
            out[_SIG_CROSS] = _sum_units_first(units[:, 0] * units[:, 1])
    elif h.shape[1] == 1:
        out[_SIG_SUM] = np.add.reduce(h0, axis=-1)
        out[_SIG_SQ] = np.add.reduce(h0 * h0, axis=-1)
    else:
        out[_SIG_SUM] = np.add.reduce(h0, axis=-1)
        squares = np.add.reduce(h * h, axis=-1)
        out[_SIG_SQ], out[_SIG_PSQ] = squares[:, 0], squares[:, 1]
        out[_SIG_CROSS] = np.add.reduce(h0 * h[:, 1], axis=-1)


def _gradient_sums(a: np.ndarray, out: np.ndarray) -> None:
    """Per-network sum and sum of squares of a gradient ``a``, shape ``(networks, width)``, into ``out``."""
    if a.shape[1] <= _NARROW:
        units = np.ascontiguousarray(a.T)
        out[_GRAD_SUM] = _sum_units_first(units)
        out[_GRAD_SQ] = _sum_units_first(units * units)
    else:
        out[_GRAD_SUM] = np.add.reduce(a, axis=-1)
        out[_GRAD_SQ] = np.add.reduce(a * a, axis=-1)


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


def _finish_chunk(plan: _Plan, sums: np.ndarray, flags: np.ndarray) -> None:
    """Turn one chunk's raw sums into per-network averages in place, and flag its NaN, inf and zeros.

    ``sums`` has shape ``(rows, networks, positions + 1)``; ``flags`` (all False on entry) gets, per
    network and position, whether any recorded value is NaN, is ``inf`` (and none NaN), and whether
    the signal is identically zero. Done chunk by chunk while the data are in cache; every operation
    is elementwise, so the result does not depend on the chunk.
    """
    squares = sums[_SIG_SQ]
    np.divide(squares, squares[:, :1], out=sums[_NORM])
    sums[_SIG_SUM : _GRAD_SQ + 1] /= plan.widths
    if plan.paired:
        sums[_SIG_PSQ:] /= plan.widths
    np.equal(squares, 0, out=flags[2])
    if not np.isfinite(sums).all():  # classify only the networks with some non-finite value
        bad = np.flatnonzero(~np.isfinite(sums).all(axis=(0, 2)))
        values = sums[:, bad]
        nan = np.isnan(values).any(axis=0)
        flags[0, bad] = nan
        flags[1, bad] = np.isinf(values).any(axis=0) & ~nan


def _per_position(plan: _Plan, sums: np.ndarray) -> dict[str, np.ndarray]:
    """The per-position arrays: the rows of ``sums``, shape ``(rows, T, positions + 1)``, read-only."""
    names = PER_POSITION if plan.paired else tuple(n for n in PER_POSITION if n not in _PAIRED_ONLY)
    return {name: _read_only(sums[row]) for row, name in enumerate(names)}


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
    """Finite networks, and overflow, NaN and all-zero counts per position and per dense layer."""
    is_nan, is_inf, zero = flags
    column_finite = ~(is_nan | is_inf)
    finite = column_finite.all(axis=1)
    below, above = _columns(network, -1), _columns(network, 0)
    layer_nan = is_nan[:, below] | is_nan[:, above]
    layer_inf = (is_inf[:, below] | is_inf[:, above]) & ~layer_nan
    layer_finite = ~(layer_nan | layer_inf)
    return {
        "finite": finite,
        "overflow": np.count_nonzero(layer_inf, axis=0),
        "nan": np.count_nonzero(layer_nan, axis=0),
        "zero_x": np.count_nonzero(zero[:, below] & layer_finite, axis=0),
        "zero_y": np.count_nonzero(zero[:, above] & layer_finite, axis=0),
        "position_overflow": np.count_nonzero(is_inf, axis=0),
        "position_nan": np.count_nonzero(is_nan, axis=0),
        "position_zero": np.count_nonzero(zero & column_finite, axis=0),
    }
