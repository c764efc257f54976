r"""The one network description that both engines read.

A :class:`Network` is an ordered tuple of frozen layer descriptions plus an input description. It
holds data only: ``varprop.derive`` turns it into sympy, ``varprop.montecarlo`` into samples, and
neither engine imports the other.

Notation follows He et al. (2015): dense layer :math:`l` (counted from 1) maps its input
:math:`x_l \in \mathbb R^{n_l}` to the pre-activation :math:`y_l = W_l x_l + b_l`, and the next
layer's input is :math:`x_{l+1} = \phi(y_l)`. :math:`n_l` is the fan-in of layer :math:`l` and
:math:`\hat n_l` its fan-out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import sympy as sp

from ._validate import Width, as_sympy_number, check_nonnegative, check_width
from .activations import Activation, activation
from .errors import SpecError, abbreviate
from .weights import InitScheme, Normal, WeightLaw, he

__all__ = [
    "Dense",
    "Nonlinearity",
    "Layer",
    "LAYER_CLASSES",
    "GaussianInput",
    "FixedInput",
    "InputSpec",
    "Network",
    "mlp",
]


def _check_law(law: object, what: str) -> WeightLaw:
    if not isinstance(law, WeightLaw):
        raise SpecError(f"{what} must be a weight law (Normal, Uniform, TruncatedNormal, AbsoluteTruncatedNormal, "
                        f"Orthogonal), got {law!r}")
    return law


@dataclass(frozen=True)
class Dense:
    r"""A fully connected layer :math:`y = W x + b` with iid weights and biases.

    Parameters
    ----------
    fan_in, fan_out
        Widths: positive integers, or sympy symbols for derivations.
    weights
        Law of every entry of :math:`W` (shape ``fan_out x fan_in``), or of the whole matrix
        (:class:`~varprop.weights.Orthogonal`, bound to this shape here).
    bias
        Law of every entry of :math:`b`, or ``None`` for no bias.
    """

    fan_in: Width
    fan_out: Width
    weights: WeightLaw
    bias: WeightLaw | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "fan_in", check_width(self.fan_in, "fan_in"))
        object.__setattr__(self, "fan_out", check_width(self.fan_out, "fan_out"))
        # A law whose entries depend on the matrix shape (Orthogonal) is bound to this layer's shape.
        object.__setattr__(self, "weights", _check_law(self.weights, "weights").for_shape(self.fan_out, self.fan_in))
        if self.bias is not None and not _check_law(self.bias, "bias").iid:
            raise SpecError(f"a bias needs a law with independent entries, got {self.bias}")


@dataclass(frozen=True)
class Nonlinearity:
    """An elementwise activation :math:`x_{l+1} = \\phi(y_l)`."""

    activation: Activation

    def __post_init__(self) -> None:
        if not isinstance(self.activation, Activation):
            raise SpecError(f"Nonlinearity needs an Activation, got {self.activation!r}")


Layer = Dense | Nonlinearity
#: The layer classes, one entry per kind: each engine registers a reader for every one (a test checks).
LAYER_CLASSES: tuple[type, ...] = (Dense, Nonlinearity)


def _check_correlation(value: object) -> sp.Expr:
    """An input correlation: a number in [-1, 1], or a sympy expression not provably outside it."""
    expr = as_sympy_number(value, "input correlation")
    if expr.is_extended_real is False or (expr - 1).is_positive or (expr + 1).is_negative:
        raise SpecError(f"input correlation must be a number in [-1, 1], got {abbreviate(value)}")
    return sp.nsimplify(expr, rational=True) if isinstance(expr, sp.Float) else expr


@dataclass(frozen=True)
class GaussianInput:
    r"""Fresh iid inputs :math:`x_{1,j} \sim \mathcal N(0, v)` for every sampled network.

    With ``correlation`` :math:`c_0` set, every network also gets a *partner* input
    :math:`x'_1 = c_0 x_1 + \sqrt{1 - c_0^2}\, z`, :math:`z` a fresh iid :math:`\mathcal N(0, v)`
    vector: per coordinate :math:`(x_{1,j}, x'_{1,j})` is a centred Gaussian pair with variances
    :math:`v` and correlation :math:`c_0`, so :math:`E[x_1 x'_1] = c_0 v`. Both inputs go through the
    same weights (the cross moment and correlation observables of :mod:`varprop.observables`).
    ``None`` (the default): a single input.
    """

    variance: sp.Expr = sp.Integer(1)
    correlation: sp.Expr | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "variance", check_nonnegative(self.variance, "input variance"))
        if self.correlation is not None:
            object.__setattr__(self, "correlation", _check_correlation(self.correlation))

    def __repr__(self) -> str:
        # Without a pair, the repr of a single input is unchanged (the checker seeds its draws from it).
        pair = "" if self.correlation is None else f", correlation={self.correlation!r}"
        return f"GaussianInput(variance={self.variance!r}{pair})"

    @property
    def second_moment(self) -> sp.Expr:
        r""":math:`E[x_{1,j}^2]`."""
        return self.variance

    @property
    def paired(self) -> bool:
        """True when a partner input goes through every network with the input."""
        return self.correlation is not None

    @property
    def partner_second_moment(self) -> sp.Expr:
        r""":math:`E[{x'_{1,j}}^2] = v` (paired inputs only)."""
        _require_pair(self)
        return self.variance

    @property
    def cross_moment(self) -> sp.Expr:
        r""":math:`E[x_{1,j} x'_{1,j}] = c_0 v` (paired inputs only)."""
        _require_pair(self)
        return self.correlation * self.variance


def _require_pair(inputs: object) -> None:
    if not inputs.paired:
        raise SpecError(f"{inputs!r} has no partner input: give a correlation (or a partner vector)")


def _as_vector(values: object, what: str) -> tuple[float, ...]:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise SpecError(f"{what} must be a sequence of real numbers, got {abbreviate(values)}") from None
    if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)):
        raise SpecError(f"{what} must be a non-empty 1-d sequence of finite numbers, got {abbreviate(values)}")
    return tuple(float(v) for v in array)


def _mean_of(values: Iterable[float]) -> sp.Expr:
    values = tuple(values)
    return sp.nsimplify(sum(values) / len(values), rational=True)


@dataclass(frozen=True)
class FixedInput:
    r"""One fixed input vector, fed to every sampled network; optionally a fixed partner vector.

    With ``partner`` :math:`x'` given, both vectors go through the same weights of every network; the
    pair's correlation is :math:`c_0 = \langle x, x'\rangle / (|x|\,|x'|)`
    (:attr:`correlation`). :meth:`pair` builds a pair with a prescribed :math:`c_0`.
    """

    values: tuple[float, ...]
    partner: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _as_vector(self.values, "fixed input"))
        if self.partner is not None:
            partner = _as_vector(self.partner, "partner input")
            if len(partner) != len(self.values):
                raise SpecError(
                    f"the partner input has {len(partner)} entries but the input has {len(self.values)}; "
                    "they must have the same length"
                )
            if not any(partner) or not any(self.values):
                raise SpecError("a pair of inputs needs two non-zero vectors (their correlation is undefined otherwise)")
            object.__setattr__(self, "partner", partner)

    @classmethod
    def pair(cls, width: int, correlation: float | sp.Expr) -> FixedInput:
        r"""Two fixed inputs of ``width`` entries, both of mean square 1, with correlation ``correlation``.

        :math:`x` alternates :math:`+1, -1`; :math:`x' = c_0 x + \sqrt{1 - c_0^2}\, u` with :math:`u`
        orthogonal to :math:`x` and of mean square 1 (the pattern :math:`+1, +1, -1, -1` when the
        width is a multiple of 4, so an orthogonal pair is exactly :math:`\pm 1` vectors). A width
        of 1 admits only :math:`c_0 = \pm 1`.
        """
        n = check_width(width, "width of the input pair")
        if not isinstance(n, int):
            raise SpecError(f"a fixed input pair needs an integer width, got {n}")
        c0 = _check_correlation(correlation)
        if c0.free_symbols:
            raise SpecError(f"a fixed input pair needs a numeric correlation, got {c0}")
        c = float(c0)
        first = np.array([1.0 if j % 2 == 0 else -1.0 for j in range(n)])
        if abs(c) == 1.0:
            return cls(tuple(first), tuple(c * first))
        if n == 1:
            raise SpecError(f"a pair of 1-entry inputs has correlation +1 or -1 only, got {c0}")
        other = np.array([1.0 if j % 4 < 2 else -1.0 for j in range(n)])
        other -= (other @ first) / n * first  # zero already when n is a multiple of 4
        other *= np.sqrt(n / (other @ other))
        second = other if c == 0 else c * first + np.sqrt(1.0 - c * c) * other
        return cls(tuple(first), tuple(second))

    def __repr__(self) -> str:
        # Without a partner, the repr of a single input is unchanged (the checker seeds its draws from it).
        pair = "" if self.partner is None else f", partner={self.partner!r}"
        return f"FixedInput(values={self.values!r}{pair})"

    @property
    def second_moment(self) -> sp.Expr:
        r"""The mean square :math:`\frac1n \sum_j x_{1,j}^2` of the input, as an exact rational."""
        return _mean_of(v * v for v in self.values)

    @property
    def paired(self) -> bool:
        """True when a partner vector goes through every network with the input."""
        return self.partner is not None

    @property
    def partner_second_moment(self) -> sp.Expr:
        r"""The partner's mean square :math:`\frac1n \sum_j {x'_{1,j}}^2` (an exact rational)."""
        _require_pair(self)
        return _mean_of(v * v for v in self.partner)

    @property
    def cross_moment(self) -> sp.Expr:
        r""":math:`\frac1n \sum_j x_{1,j} x'_{1,j}` (an exact rational)."""
        _require_pair(self)
        return _mean_of(a * b for a, b in zip(self.values, self.partner))

    @property
    def correlation(self) -> sp.Expr:
        r"""The pair's correlation :math:`\langle x, x'\rangle / (|x|\,|x'|)`."""
        return self.cross_moment / sp.sqrt(self.second_moment * self.partner_second_moment)


InputSpec = GaussianInput | FixedInput

_PLACE_PREFIX = {Dense: "dense", Nonlinearity: "act"}


@dataclass(frozen=True)
class Network:
    """An ordered tuple of layers and a description of the inputs.

    Consecutive dense layers must agree on widths (``fan_out`` of one equals ``fan_in`` of the next),
    and a fixed input must have the first layer's fan-in.
    """

    layers: tuple[Layer, ...]
    inputs: InputSpec = GaussianInput()

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        object.__setattr__(self, "layers", layers)
        if not any(isinstance(layer, Dense) for layer in layers):
            raise SpecError("a network needs at least one Dense layer")
        previous = None
        for index, layer in enumerate(layers):
            if not isinstance(layer, Dense | Nonlinearity):
                raise SpecError(f"layer {index} is {layer!r}; accepted layers: Dense, Nonlinearity")
            if isinstance(layer, Dense):
                if previous is not None and sp.simplify(previous.fan_out - layer.fan_in) != 0:
                    raise SpecError(
                        f"layer {index} has fan_in {layer.fan_in} but the previous dense layer has fan_out "
                        f"{previous.fan_out}"
                    )
                previous = layer
        if not isinstance(self.inputs, GaussianInput | FixedInput):
            raise SpecError(f"inputs must be GaussianInput or FixedInput, got {self.inputs!r}")
        first = self.dense_layers[0]
        if isinstance(self.inputs, FixedInput) and len(self.inputs.values) != first.fan_in:
            raise SpecError(
                f"fixed input has {len(self.inputs.values)} entries but the first layer has fan_in {first.fan_in}"
            )

    @property
    def dense_layers(self) -> tuple[Dense, ...]:
        """The dense layers, in order (layer l of He's notation is ``dense_layers[l - 1]``)."""
        return tuple(layer for layer in self.layers if isinstance(layer, Dense))

    @property
    def depth(self) -> int:
        """The number of dense layers L."""
        return len(self.dense_layers)

    @property
    def widths(self) -> tuple[Width, ...]:
        """``(n_1, ..., n_L, n_out)``: every dense layer's fan-in, then the last fan-out."""
        dense = self.dense_layers
        return tuple(layer.fan_in for layer in dense) + (dense[-1].fan_out,)

    @property
    def is_numeric(self) -> bool:
        """True when every width is an integer (needed to sample)."""
        return all(isinstance(width, int) for width in self.widths)

    @property
    def dense_positions(self) -> tuple[int, ...]:
        """Positions (indices into :attr:`layers`) of the dense layers, in order."""
        return tuple(index for index, layer in enumerate(self.layers) if isinstance(layer, Dense))

    def place_name(self, position: int) -> str:
        """The name of position ``position``: ``input`` (-1), ``dense3`` (the third dense layer), ``act2``, ..."""
        if position == -1:
            return "input"
        if not 0 <= position < len(self.layers):
            raise SpecError(
                f"position {position!r} is not in the network: positions run from -1 (the input) to "
                f"{len(self.layers) - 1}"
            )
        kind = type(self.layers[position])
        ordinal = sum(1 for layer in self.layers[: position + 1] if type(layer) is kind)
        return f"{_PLACE_PREFIX.get(kind, kind.__name__.lower())}{ordinal}"

    def position(self, place: int | str) -> int:
        """The position of ``place``: an integer position (-1 to len(layers) - 1) or a name from :meth:`place_name`."""
        if isinstance(place, str):
            for position in range(-1, len(self.layers)):
                if self.place_name(position) == place:
                    return position
            names = ", ".join(self.place_name(p) for p in range(-1, len(self.layers)))
            raise SpecError(f"no place named {place!r} in the network; its places: {names}")
        if isinstance(place, bool) or not isinstance(place, int) or not -1 <= place < len(self.layers):
            raise SpecError(
                f"position must be an integer from -1 (the input) to {len(self.layers) - 1}, got {place!r}"
            )
        return place

    def width(self, position: int) -> int | sp.Symbol:
        """The width of the signal at ``position`` (-1: the input)."""
        width = self.dense_layers[0].fan_in
        for layer in self.layers[: position + 1]:
            if isinstance(layer, Dense):
                width = layer.fan_out
        return width


def mlp(
    widths: Sequence[Width],
    activation_: Activation | str = "relu",
    init: InitScheme | WeightLaw | None = None,
    *,
    bias_variance: object | None = None,
    inputs: InputSpec | None = None,
    output_activation: bool = False,
) -> Network:
    r"""A multilayer perceptron ``Dense, Nonlinearity, ..., Dense``.

    Parameters
    ----------
    widths
        ``(n_1, ..., n_L, n_out)``: the input width, the hidden widths, and the output width; L dense
        layers. Integers or sympy symbols.
    activation_
        An :class:`~varprop.activations.Activation` or the name of a built-in.
    init
        An :class:`~varprop.weights.InitScheme` (default: He fan-in, normal) applied to every layer, or
        one weight law used as it is for every layer.
    bias_variance
        Variance of a Gaussian bias in every layer; ``None`` keeps the scheme's bias (usually none).
    inputs
        :class:`GaussianInput` (default, unit variance) or :class:`FixedInput`.
    output_activation
        Apply the activation after the last dense layer too.
    """
    if isinstance(widths, str | bytes | Mapping) or not isinstance(widths, Iterable):
        raise SpecError(
            f"widths must be a sequence of at least two widths (input and output), such as [64, 64, 10], "
            f"got {abbreviate(widths)}"
        )
    widths = [check_width(w, f"widths[{i}]") for i, w in enumerate(widths)]
    if len(widths) < 2:
        raise SpecError(f"an MLP needs at least two widths (input and output), got {len(widths)}")
    act = activation(activation_) if isinstance(activation_, str) else activation_
    scheme = he() if init is None else init
    if not isinstance(scheme, InitScheme):
        _check_law(scheme, "init")
    bias_law = None if bias_variance is None else Normal(check_nonnegative(bias_variance, "bias variance"))
    layers: list[Layer] = []
    for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        if index > 0:
            layers.append(Nonlinearity(act))
        if isinstance(scheme, InitScheme):
            law, bias = scheme.law(fan_in, fan_out), scheme.bias_law(fan_in, fan_out)
        else:
            law, bias = scheme, None
        layers.append(Dense(fan_in, fan_out, law, bias_law if bias_law is not None else bias))
    if output_activation:
        layers.append(Nonlinearity(act))
    return Network(tuple(layers), inputs if inputs is not None else GaussianInput())
