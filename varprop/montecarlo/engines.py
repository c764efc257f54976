r"""Sampling engines: how one chunk of random networks is drawn and run forward and backward.

An :class:`Engine` turns a network description into one :class:`LayerStep` per layer (a registry
keyed on layer classes, one per engine), says when it cannot serve a network (and why), and what a
network costs in random numbers and working memory. The sampler (:func:`~varprop.montecarlo.sample`)
drives the steps of either engine through the same loop (:func:`run_chunk`) and writes the same
per-network statistics (:mod:`varprop.montecarlo.statistics`), so every estimator serves both.

``full`` (:data:`FULL`)
    Draws every weight matrix :math:`W_l` (:math:`n_{l+1} \times n_l` numbers per layer and
    network, any weight law) and multiplies: :math:`y = W x + b`,
    :math:`\partial\mathcal L/\partial x = W^\top \partial\mathcal L/\partial y`. Serves every network.
``conditional`` (:data:`CONDITIONAL`)
    For dense layers whose weights are iid Gaussian :math:`\mathcal N(\mu, s)` (any bias law), draws
    only what one network's forward and backward pass can see of :math:`W`, :math:`O(n)` numbers
    per layer instead of :math:`O(n^2)`. With :math:`e_1, \dots, e_k` an orthonormal basis of the
    span of the :math:`k \le 2` inputs fed through the layer (Gram-Schmidt), :math:`Z = W - \mu
    \mathbf 1 \mathbf 1^\top` and :math:`P = \sum_i e_i e_i^\top`:

    .. math::
        Z e_i = \sqrt s\, u_i, \quad u_i \sim \mathcal N(0, I) \text{ iid}, \qquad
        y = \textstyle\sum_i (x \cdot e_i)\, Z e_i + \mu (\mathbf 1 \cdot x) \mathbf 1 + b,

    .. math::
        W^\top d = \textstyle\sum_i e_i\, (Z e_i \cdot d) + (I - P)\, g + \mu (\mathbf 1 \cdot d)
        \mathbf 1, \qquad g \sim \mathcal N(0, s \|d\|^2 I) \text{ drawn fresh}.

    The joint law of every per-layer quantity (signals, gradients, hence every observable) is
    exactly that of the full engine; the proof is in ``docs/engines.rst``. Served: networks of
    :class:`~varprop.network.Dense` layers with :class:`~varprop.weights.Normal` weights,
    :class:`~varprop.network.Nonlinearity` and :class:`~varprop.network.Dropout` layers, the normalisers
    :class:`~varprop.network.LayerNorm` and :class:`~varprop.network.RMSNorm` (deterministic
    functions of their layer's input, :mod:`varprop.montecarlo.normalisation`) and
    :class:`~varprop.network.Residual` blocks of those, one input or an input pair.

:func:`select_engine` picks the conditional engine wherever it is valid (``"auto"``), and refuses
an explicit ``"conditional"`` for a network it cannot serve, saying why.

Randomness: every block of networks draws from its own generator in a fixed order: input, partner,
each layer's forward draws (in layer order), the loss weights :math:`g_{\text{out}}`, then each
layer's backward draws (in reverse layer order; the full engine has none). The two engines thus
draw different numbers from the same seed (the same law, not the same networks).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import singledispatch
from typing import Any, Protocol

import numpy as np

from ..errors import VarpropError
from ..network import WEIGHTED_LAYERS, Dense, Network, Nonlinearity, layer_widths
from ..weights import Normal
from .errors import MonteCarloError
from .statistics import gradient_sums, join, row_dots, row_sums, signal_sums

__all__ = [
    "Engine",
    "LayerStep",
    "FULL",
    "CONDITIONAL",
    "ENGINES",
    "ENGINE_NAMES",
    "layer_step",
    "layer_cost",
    "conditional_step",
    "select_engine",
    "check_engine",
    "run_chunk",
]

#: What ``engine=`` accepts besides an :class:`Engine`: ``"auto"`` picks the conditional engine where valid.
ENGINE_NAMES: tuple[str, ...] = ("auto", "full", "conditional")


class LayerStep(Protocol):
    """What the sampler needs from one layer kind: draw its random numbers, apply it, back-propagate.

    Arrays carry a leading network axis; activations have shape ``(networks, k, width)`` (the
    network's input and, when paired, the partner input), gradients ``(networks, 1, width)``.
    """

    def draw(
        self, count: int, rng: np.random.Generator, reuse: tuple[np.ndarray, ...] | None = None
    ) -> tuple[np.ndarray, ...]:
        """The forward draws of ``count`` networks, each array with a leading axis of length ``count``.

        ``reuse``, when given, is this layer's previous return value: its arrays may be refilled in
        place (the draws are the same; only the allocation, and its page faults, is saved).
        """
        ...

    def draw_backward(
        self, count: int, rng: np.random.Generator, reuse: tuple[np.ndarray, ...] | None = None
    ) -> tuple[np.ndarray, ...]:
        """The backward draws of ``count`` networks (drawn after every forward draw and the loss);
        ``reuse`` as for :meth:`draw`."""
        ...

    def forward(self, params: tuple[np.ndarray, ...], h: np.ndarray) -> tuple[np.ndarray, Any]:
        """The layer output, and what ``backward`` needs (kept small: it lives until the backward pass)."""
        ...

    def backward(
        self, params: tuple[np.ndarray, ...], noise: tuple[np.ndarray, ...], cache: Any, grad: np.ndarray
    ) -> np.ndarray:
        """The gradient with respect to the layer input, given the one with respect to its output."""
        ...


def _as_draw(array: object) -> np.ndarray:
    return np.asarray(array, dtype=np.float64)


# --- the full-matrix engine ----------------------------------------------------------------------


@singledispatch
def layer_step(layer: object, inputs: int = 1) -> LayerStep:
    """The full-matrix engine's reader of one layer description (a registry keyed on layer classes).

    Register a new layer kind with ``@layer_step.register(MyLayer)``, returning a
    :class:`LayerStep`; ``inputs`` is the number of inputs fed through each network (1 or 2).
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

    def draw_backward(
        self, count: int, rng: np.random.Generator, reuse: tuple[np.ndarray, ...] | None = None
    ) -> tuple[np.ndarray, ...]:
        return ()

    def forward(self, params: tuple[np.ndarray, ...], h: np.ndarray) -> tuple[np.ndarray, None]:
        out = np.matmul(h, params[0].transpose(0, 2, 1))
        if len(params) > 1:
            out += params[1][:, None, :]
        return out, None

    def backward(self, params: tuple[np.ndarray, ...], noise: tuple[np.ndarray, ...], cache: None,
                 grad: np.ndarray) -> np.ndarray:
        return np.matmul(grad, params[0])

    def batched(self, rows: int) -> _DenseStep:
        return self  # y = W x + b and W^T d act on every example alike


class DrawsNothing:
    """The draws of a step without random parameters (an activation, a normaliser): none, forward or backward."""

    def draw(self, count: int, rng: np.random.Generator,
             reuse: tuple[np.ndarray, ...] | None = None) -> tuple[np.ndarray, ...]:
        return ()

    def draw_backward(self, count: int, rng: np.random.Generator,
                      reuse: tuple[np.ndarray, ...] | None = None) -> tuple[np.ndarray, ...]:
        return ()


@dataclass(frozen=True)
class _NonlinearityStep(DrawsNothing):
    r""":math:`x = \phi(y)`, :math:`\partial\mathcal L/\partial y = \phi'(y)\,\partial\mathcal L/\partial x` (both engines)."""

    layer: Nonlinearity
    rows: int = 1  # the examples whose gradient goes back (the whole batch in a network with a BatchNorm)

    def batched(self, rows: int) -> _NonlinearityStep:
        return _NonlinearityStep(self.layer, rows)

    def forward(self, params: tuple[np.ndarray, ...], h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        activation = self.layer.activation
        return activation.numpy(h), activation.numpy_derivative(h[:, :self.rows, :])

    def backward(self, params: tuple[np.ndarray, ...], noise: tuple[np.ndarray, ...], cache: np.ndarray,
                 grad: np.ndarray) -> np.ndarray:
        return grad * cache


@layer_step.register
def _(layer: Dense, inputs: int = 1) -> LayerStep:
    return _DenseStep(layer)


@layer_step.register
def _(layer: Nonlinearity, inputs: int = 1) -> LayerStep:
    return _NonlinearityStep(layer)


# --- the conditional-Gaussian engine ---------------------------------------------------------------


@singledispatch
def conditional_step(layer: object, inputs: int = 1) -> LayerStep:
    """The conditional-Gaussian engine's reader of one layer description (a registry keyed on layer classes)."""
    known = ", ".join(sorted(cls.__name__ for cls in conditional_step.registry if cls is not object))
    raise MonteCarloError(
        f"the conditional engine has no reader for layer {layer!r}; layers it reads: {known}"
    )


def _unit(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``v`` (shape ``(networks, width)``) scaled to unit length, and their norms; a zero row stays zero."""
    norm = np.sqrt(row_dots(v, v))
    scale = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
    return v * scale[:, None], norm


@dataclass(frozen=True)
class ConditionalDenseStep:
    r"""A dense layer with iid :math:`\mathcal N(\mu, s)` weights, drawn conditionally on its inputs.

    Forward draws: :math:`u \sim \mathcal N(0, I)` of shape ``(networks, k, fan_out)`` (then the
    bias, if any); :math:`Z e_i = \sqrt s\, u_i` for the Gram-Schmidt basis :math:`e_1, \dots, e_k`
    of the :math:`k` inputs. Backward draw: :math:`\gamma \sim \mathcal N(0, I)` of shape
    ``(networks, fan_in)``, :math:`g = \sqrt s\,\|d\|\,\gamma`. See the module docstring and
    ``docs/engines.rst`` for the rule and its proof.
    """

    layer: Dense
    inputs: int = 1
    std: float = field(init=False)
    mean: float = field(init=False)

    def __post_init__(self) -> None:
        law = self.layer.weights
        if not isinstance(law, Normal):
            raise MonteCarloError(f"the conditional engine needs Normal weights, got {law}")
        try:
            std, mean = math.sqrt(float(law.variance)), float(law.mean)
        except TypeError:
            raise MonteCarloError(f"cannot sample weights with symbolic parameters ({law}); give numbers") from None
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "mean", mean)

    def draw(
        self, count: int, rng: np.random.Generator, reuse: tuple[np.ndarray, ...] | None = None
    ) -> tuple[np.ndarray, ...]:
        layer = self.layer
        shape = (count, self.inputs, layer.fan_out)
        if reuse is not None and reuse[0].shape == shape:
            u = rng.standard_normal(out=reuse[0])
        else:
            u = rng.standard_normal(shape)
        if layer.bias is None:
            return (u,)
        return u, _as_draw(layer.bias.sample((count, layer.fan_out), rng=rng))

    def draw_backward(
        self, count: int, rng: np.random.Generator, reuse: tuple[np.ndarray, ...] | None = None
    ) -> tuple[np.ndarray, ...]:
        shape = (count, self.layer.fan_in)
        if reuse is not None and reuse[0].shape == shape:
            return (rng.standard_normal(out=reuse[0]),)
        return (rng.standard_normal(shape),)

    def forward(self, params: tuple[np.ndarray, ...], h: np.ndarray) -> tuple[np.ndarray, list]:
        # The basis is kept as (v_i, 1/||v_i||, u_i) with e_i = v_i / ||v_i|| and Z e_i = sqrt(s) u_i,
        # so a single input's e_1 = x/||x|| is never materialised (one pass over x fewer).
        u = params[0]
        x = h[:, 0]
        norm = np.sqrt(row_dots(x, x))
        inverse = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
        basis = [(x, inverse, u[:, 0])]
        out = np.empty((h.shape[0], h.shape[1], self.layer.fan_out))
        np.multiply(u[:, 0], (self.std * norm)[:, None], out=out[:, 0])
        if h.shape[1] == 2:
            e1 = x * inverse[:, None]
            partner = h[:, 1]
            along = row_dots(partner, e1)
            residual = partner - along[:, None] * e1
            # Gram-Schmidt twice: e_2 is then orthogonal to e_1 to rounding even when the partner is
            # parallel to the input (relu zeroes the same coordinates of both) and the residual is
            # rounding noise; once is not enough there (the law tests at width 2 found it).
            again = row_dots(residual, e1)
            residual -= again[:, None] * e1
            along += again
            e2, rest = _unit(residual)
            basis.append((e2, np.ones_like(rest), u[:, 1]))
            out[:, 1] = self.std * (along[:, None] * u[:, 0] + rest[:, None] * u[:, 1])
        if self.mean:
            out += self.mean * row_sums(h.reshape(-1, h.shape[-1])).reshape(h.shape[0], h.shape[1], 1)
        if len(params) > 1:
            out += params[1][:, None, :]
        return out, basis

    def backward(self, params: tuple[np.ndarray, ...], noise: tuple[np.ndarray, ...], cache: list,
                 grad: np.ndarray) -> np.ndarray:
        d = grad[:, 0]
        gamma = noise[0]
        scale = self.std * np.sqrt(row_dots(d, d))  # g = sqrt(s) ||d|| gamma
        # (I - P) g, the part of W^T d the forward pass did not fix, plus P W^T d = sum_i e_i (Z e_i . d),
        # which it did: W^T d = scale gamma + sum_i e_i (sqrt(s) u_i . d - scale (e_i . gamma)).
        coefficients = [(self.std * row_dots(u, d) - scale * inverse * row_dots(v, gamma)) * inverse
                        for v, inverse, u in cache]
        result = np.multiply(gamma, scale[:, None], out=gamma)  # gamma is this layer's own draw, used once
        for (v, _, _), along in zip(cache, coefficients):
            result += v * along[:, None]
        if self.mean:
            result += self.mean * row_sums(d)[:, None]
        return result[:, None, :]


@conditional_step.register
def _(layer: Dense, inputs: int = 1) -> LayerStep:
    return ConditionalDenseStep(layer, inputs)


@conditional_step.register
def _(layer: Nonlinearity, inputs: int = 1) -> LayerStep:
    return _NonlinearityStep(layer)


# --- engines ---------------------------------------------------------------------------------------


def _flat(layers: tuple) -> list:
    """The layers in the order the sampler runs them, residual branches expanded (their widths chain)."""
    out = []
    for layer in layers:
        branch = getattr(layer, "branch", None)
        out.extend(_flat(branch) if branch is not None else [layer])
    return out


def sized(step: LayerStep, width: int) -> LayerStep:
    """``step`` told the width of its input, for steps that draw per unit but whose layer does not know its
    width (dropout): such a step has a ``sized(width)`` method returning the sized step."""
    bind = getattr(step, "sized", None)
    return step if bind is None else bind(width)


def batched(step: LayerStep, rows: int) -> LayerStep:
    """``step`` made to carry ``rows`` examples back (a network with a BatchNorm: the batch's gradients all flow).

    A step that keeps per-example state for its backward pass has a ``batched(rows)`` method returning
    the step that keeps it for ``rows`` examples; a step without one cannot serve such a network.
    """
    if rows == 1:
        return step
    bind = getattr(step, "batched", None)
    if bind is None:
        raise MonteCarloError(f"the step {type(step).__name__} cannot carry a batch of {rows} examples back")
    return bind(rows)


@singledispatch
def layer_cost(layer: object) -> tuple[int, int]:
    """(random numbers drawn, extra working floats) per network for one layer in the full engine (0, 0 by default)."""
    return 0, 0


@layer_cost.register
def _(layer: Dense) -> tuple[int, int]:
    return int(layer.fan_in) * int(layer.fan_out) + (int(layer.fan_out) if layer.bias is not None else 0), 0


def _full_unsupported(network: Network, paired: bool) -> str | None:
    for index, layer in enumerate(network.layers):
        if layer_step.dispatch(type(layer)) is layer_step.registry[object]:
            return f"layer {index} ({type(layer).__name__}) has no full-matrix reader"
    return None


def _conditional_unsupported(network: Network, paired: bool) -> str | None:
    if network.batch > 1:
        return (f"the network normalises over a batch of {network.batch} inputs (BatchNorm), and the conditional "
                "engine draws only what one input (or a pair) sees of each weight matrix")
    for index, layer in enumerate(network.layers):
        place = network.place_name(index)
        if conditional_step.dispatch(type(layer)) is conditional_step.registry[object]:
            return f"layer {index} ({place}) is a {type(layer).__name__}, which the conditional engine does not read"
        for inner in _flat((layer,)):
            if isinstance(inner, Dense) and not isinstance(inner.weights, Normal):
                where = "has" if inner is layer else "has a dense layer in its branch with"
                why = "" if inner.weights.iid else " (its entries are not independent)"
                return (f"layer {index} ({place}) {where} {inner.weights} weights{why}; the conditional engine needs iid "
                        f"Gaussian (Normal) weights, for which the part of W a network sees is Gaussian given its input")
        try:
            conditional_step(layer, 2 if paired else 1)
        except MonteCarloError as exc:  # a reader that refuses the layer says why
            return f"layer {index} ({place}): {exc}"
    return None


def _full_cost(network: Network, paired: bool) -> tuple[int, int]:
    """(numbers drawn, working floats) per network of the full engine: every weight, drawn and in use."""
    width = int(network.widths[0])
    drawn = 0
    activations = 8 * width
    for layer in _flat(network.layers):
        numbers, working = layer_cost(layer)
        drawn += numbers
        activations += working
        if isinstance(layer, WEIGHTED_LAYERS):
            width = int(layer_widths(layer)[1])
        activations += 8 * width
    return max(1, drawn), drawn + activations * network.batch  # every example of a batch is carried


def _conditional_cost(network: Network, paired: bool) -> tuple[int, int]:
    """(numbers drawn, working floats) per network of the conditional engine: O(width) per layer."""
    k = 2 if paired else 1
    width = int(network.widths[0])
    drawn = 0
    working = 8 * width
    for layer in _flat(network.layers):
        if isinstance(layer, Dense):
            n_in, n_out = int(layer.fan_in), int(layer.fan_out)
            drawn += k * n_out + n_in + (n_out if layer.bias is not None else 0)
            width = n_out
            working += (3 * k + 2) * (n_in + n_out)  # draws, basis, Z e_i, temporaries
        working += 8 * width
    return max(1, drawn), drawn + working


@dataclass(frozen=True)
class Engine:
    """A sampling engine: a step registry, when it applies, and what a network costs.

    Attributes
    ----------
    name
        ``"full"`` or ``"conditional"`` (recorded in :class:`~varprop.montecarlo.Samples` and in
        every check result).
    step
        The layer-step registry: ``step(layer, inputs)`` returns a :class:`LayerStep`.
    unsupported
        ``unsupported(network, paired)``: ``None`` when the engine serves the network, else why not.
    cost
        ``cost(network, paired)``: (random numbers drawn, working floats) per network, which size
        the blocks, the chunks and the memory and draw bounds of :mod:`varprop.montecarlo.limits`.
    """

    name: str
    step: Callable[..., LayerStep] = field(repr=False)
    unsupported: Callable[[Network, bool], str | None] = field(repr=False)
    cost: Callable[[Network, bool], tuple[int, int]] = field(repr=False)

    def steps(self, network: Network, paired: bool) -> tuple[LayerStep, ...]:
        """One step per layer of ``network``, checked on one network (a bad law fails here, not mid-sample)."""
        why = self.unsupported(network, paired)
        if why is not None:
            raise MonteCarloError(f"the {self.name} engine cannot sample this network: {why}")
        inputs = 2 if paired else 1
        probe = np.random.default_rng(0)
        steps = []
        for index, layer in enumerate(network.layers):
            try:
                step = batched(sized(self.step(layer, inputs), int(network.width(index - 1))), network.batch)
                if isinstance(layer, Nonlinearity):
                    layer.activation.numpy(np.zeros(1))
                    layer.activation.numpy_derivative(np.zeros(1))
                params = step.draw(1, probe)  # the law's sampler works with these parameters
                if any(array.shape[0] != 1 for array in params):
                    raise MonteCarloError(f"layer {index} drew parameters of shape {params[0].shape} for one network")
            except VarpropError as exc:
                raise MonteCarloError(f"cannot sample layer {index} ({layer!r}): {exc}") from None
            steps.append(step)
        return tuple(steps)

    def __reduce__(self) -> tuple:
        # The registered engines pickle by name (the same objects in every worker process).
        if ENGINES.get(self.name) is self:
            return (_engine_by_name, (self.name,))
        return super().__reduce__()


def _engine_by_name(name: str) -> Engine:
    return ENGINES[name]


#: The full-matrix engine: every weight drawn; serves every network.
FULL = Engine("full", layer_step, _full_unsupported, _full_cost)
#: The conditional-Gaussian engine: O(width) draws per layer, for Gaussian dense networks.
CONDITIONAL = Engine("conditional", conditional_step, _conditional_unsupported, _conditional_cost)
#: The registered engines by name.
ENGINES: dict[str, Engine] = {"full": FULL, "conditional": CONDITIONAL}


def check_engine(requested: object) -> Engine | str:
    """``requested`` if it names an engine (:data:`ENGINE_NAMES`) or is one, else a :class:`MonteCarloError`."""
    if isinstance(requested, Engine) or (isinstance(requested, str) and requested in ENGINE_NAMES):
        return requested
    raise MonteCarloError(f"unknown engine {requested!r}; accepted: {', '.join(ENGINE_NAMES)} (or an Engine)")


def select_engine(requested: object, network: Network, *, paired: bool = False) -> Engine:
    """The engine that samples ``network``.

    ``requested`` is ``"auto"`` (the conditional engine where it is valid, else the full one),
    ``"full"``, ``"conditional"`` or an :class:`Engine`. An explicit engine that cannot serve the
    network is refused with the reason (a :class:`MonteCarloError`), never silently replaced.
    """
    requested = check_engine(requested)
    if requested == "auto":
        return CONDITIONAL if CONDITIONAL.unsupported(network, paired) is None else FULL
    engine = requested if isinstance(requested, Engine) else ENGINES[requested]
    why = engine.unsupported(network, paired)
    if why is not None:
        raise MonteCarloError(f"the {engine.name} engine cannot sample this network: {why}; use engine 'full' (or 'auto')")
    return engine


def run_chunk(
    plan: Any,
    children: list[np.random.SeedSequence],
    block: int,
    used: int,
    out: np.ndarray,
    workspace: dict[int, tuple[np.ndarray, ...]],
    extent: tuple[int, int | None] | None = None,
) -> None:
    """Draw, run forward and backward, and write the raw per-network sums of one chunk into ``out``.

    ``plan`` is the sampler's plan (its ``steps`` from one engine); ``out`` has shape ``(rows,
    positions + 1, used)`` (rows of :mod:`~varprop.montecarlo.statistics`; column ``p + 1`` is position
    ``p``). Every block is drawn whole from its own generator (in the order of the module
    docstring) and truncated to the networks used.

    ``extent`` ``(top, bottom)`` limits the work to what some observables read: the forward pass
    stops after position ``top`` and the backward pass after position ``bottom`` (``None``: no backward
    pass, no loss drawn). Since forward draws come first in layer order and backward draws in reverse
    layer order, the draws that are made are those of the whole pass, bit for bit; the values not
    computed are left unwritten in ``out`` (the sampler marks them as not recorded). ``None``: everything.
    """
    n_in = int(plan.widths[0])
    n_out = int(plan.widths[-1])
    batch = plan.network.batch  # inputs carried through the same weights (BatchNorm); 1 otherwise
    shape_in, shape_out = ((block, n_in), (block, n_out)) if batch == 1 else ((block, batch, n_in), (block, batch, n_out))
    layers = len(plan.steps)
    top, bottom = (layers - 1, -1) if extent is None else extent
    forward_steps = plan.steps[:top + 1]
    # the steps back-propagated: the gradient at position p is the one below step p + 1
    backward_from = None if bottom is None else bottom + 1
    columns: list[list[np.ndarray]] = [[], []]
    drawn: list[list[tuple[np.ndarray, ...]]] = [[] for _ in forward_steps]
    noises: list[list[tuple[np.ndarray, ...]]] = [[] for _ in plan.steps]
    losses = []
    for position, child in enumerate(children):
        rng = np.random.Generator(np.random.PCG64(child))
        take = min(block, used - position * block)
        if plan.input_law is not None:
            columns[0].append(_as_draw(plan.input_law.sample(shape_in, rng=rng))[:take])
        if plan.partner_law is not None:
            columns[1].append(_as_draw(plan.partner_law.sample((block, n_in), rng=rng))[:take])
        for index, step in enumerate(forward_steps):
            # A chunk of one block refills the previous chunk's parameter arrays in place.
            arrays = step.draw(block, rng, workspace.get(index) if len(children) == 1 else None)
            if len(children) == 1:
                workspace[index] = arrays
            drawn[index].append(tuple(array[:take] for array in arrays))
        if backward_from is None:
            continue
        losses.append(rng.standard_normal(shape_out)[:take])
        for index in range(layers - 1, backward_from - 1, -1):
            key = -1 - index  # the backward draws' workspace entries
            arrays = plan.steps[index].draw_backward(block, rng, workspace.get(key) if len(children) == 1 else None)
            if len(children) == 1:
                workspace[key] = arrays
            noises[index].append(tuple(array[:take] for array in arrays))
    first = join(columns[0]) if plan.input_law is not None else np.broadcast_to(plan.fixed_input, (used, n_in))
    if plan.paired:
        second = join(columns[1]) if plan.partner_law is not None else np.broadcast_to(plan.partner, (used, n_in))
        if plan.mixing is not None:  # a Gaussian pair with correlation c0 per coordinate
            second = plan.mixing[0] * first + plan.mixing[1] * second
        h = np.stack((first, second), axis=1)
    elif batch > 1:
        h = np.array(first)
    else:
        h = np.array(first)[:, None, :]
    params = [tuple(join(list(arrays)) for arrays in zip(*per_block)) for per_block in drawn]

    # In a batch, every statistic is taken at example 0 (the examples are exchangeable).
    signal_sums(h[:, :1] if batch > 1 else h, out[:, 0])
    caches = []
    for column, (step, p) in enumerate(zip(forward_steps, params), 1):
        h, cache = step.forward(p, h)
        signal_sums(h[:, :1] if batch > 1 else h, out[:, column])
        caches.append(cache)
    if backward_from is None:
        return
    noise = [tuple(join(list(arrays)) for arrays in zip(*per_block)) for per_block in noises]
    g = join(losses)
    grad = g if batch > 1 else g[:, None, :]  # the loss sums <g_b, out_b> over the batch
    column = layers
    gradient_sums(grad[:, 0, :], out[:, column])
    for index in range(layers - 1, backward_from - 1, -1):
        grad = plan.steps[index].backward(params[index], noise[index], caches[index], grad)
        column -= 1
        gradient_sums(grad[:, 0, :], out[:, column])
