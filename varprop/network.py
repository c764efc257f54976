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

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral

import numpy as np
import sympy as sp

from ._validate import Width, as_sympy_number, check_nonnegative, check_width
from .activations import Activation, activation
from .errors import SpecError, abbreviate
from .weights import InitScheme, Normal, WeightLaw, he, init_scheme

__all__ = [
    "Dense",
    "Conv",
    "conv",
    "Nonlinearity",
    "Residual",
    "Dropout",
    "LayerNorm",
    "RMSNorm",
    "BatchNorm",
    "NORMALISERS",
    "Layer",
    "LAYER_CLASSES",
    "GaussianInput",
    "FixedInput",
    "InputSpec",
    "Network",
    "mlp",
    "cnn",
    "WEIGHTED_LAYERS",
    "layer_widths",
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


#: Bounds on a convolution's sizes, checked before any work starts (the derivation walks every position).
MAX_CONV_POSITIONS = 4096
MAX_CONV_CHANNELS = 4096
MAX_CONV_KERNEL = 64


def _int_tuple(value: object, dims: int, what: str, *, minimum: int, maximum: int) -> tuple[int, ...]:
    """``value`` (an int, or a tuple of ``dims`` ints) as a tuple of ``dims`` ints in [minimum, maximum]."""
    items = (value,) * dims if isinstance(value, Integral) and not isinstance(value, bool) else value
    if not isinstance(items, tuple | list) or len(items) != dims:
        raise SpecError(f"{what} must be an integer or a tuple of {dims} integers (one per spatial dimension), "
                        f"got {abbreviate(value)}")
    out = []
    for item in items:
        if isinstance(item, sp.Integer):
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, Integral) or not minimum <= int(item) <= maximum:
            raise SpecError(f"{what} must hold integers from {minimum} to {maximum}, got {abbreviate(value)}")
        out.append(int(item))
    return tuple(out)


@dataclass(frozen=True)
class Conv:
    r"""A 1-D or 2-D convolution (PyTorch's ``nn.Conv1d`` / ``nn.Conv2d``, no dilation) with iid weights.

    .. math:: y_{c, p} = \sum_{c' \in G(c)} \sum_{t} w_{c, c', t}\, x_{c', s p + t - \text{pad}} + b_c

    over the taps :math:`t` of the kernel whose input position :math:`s p + t - \text{pad}` lies inside
    the input (the others read the zero padding). One class serves both dimensions: ``input_size``
    an integer (or a 1-tuple) is a 1-D convolution, a pair a 2-D one; ``kernel_size``, ``stride``
    and ``padding`` are an integer (the same in every dimension) or a tuple of that length.

    A signal is flattened channels first, then positions (C order, as ``tensor.reshape(N, -1)`` of a
    PyTorch ``(N, C, L)`` or ``(N, C, H, W)`` tensor): its width is
    ``channels * prod(spatial size)``. The output size per dimension is PyTorch's
    :math:`\lfloor (L + 2\,\text{pad} - k)/s \rfloor + 1`.

    :attr:`fan_in` and :attr:`fan_out` are the fans of ``torch.nn.init._calculate_fan_in_and_fan_out``
    for a weight of shape ``(out_channels, in_channels / groups, *kernel_size)``:
    :math:`n = C_\text{in} K / g` and :math:`\hat n = C_\text{out} K`, :math:`K` the kernel's
    number of taps. PyTorch's fan-out is *not* divided by the groups (it is ``weight.size(0)``
    times the kernel), although an input unit reaches only the :math:`C_\text{out}/g` output
    channels of its group: the backward rule (:mod:`varprop.derive.convolution`) has the
    :math:`1/g`. The fans are *not* the layer's widths (:attr:`in_width`, :attr:`out_width`).

    Parameters
    ----------
    in_channels, out_channels
        Channel counts, each divisible by ``groups``.
    kernel_size, input_size
        Kernel and input spatial size (integers).
    stride, padding
        Stride (at least 1) and zero padding on each side (at least 0).
    groups
        Grouped convolution: each output channel reads ``in_channels / groups`` input channels.
    weights
        Law of every entry of the weight tensor (keyword only).
    bias
        Law of every entry of the bias (one per output channel, shared by its positions), or ``None``.
    """

    in_channels: int
    out_channels: int
    kernel_size: int | tuple[int, ...]
    input_size: int | tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: int | tuple[int, ...] = 0
    groups: int = 1
    weights: WeightLaw = field(default=None, kw_only=True)
    bias: WeightLaw | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        size = self.input_size
        if isinstance(size, Integral) and not isinstance(size, bool):
            size = (size,)
        if not isinstance(size, tuple | list) or len(size) not in (1, 2):
            raise SpecError(f"input_size must be an integer (1-D) or a pair of integers (2-D), got {abbreviate(self.input_size)}")
        dims = len(size)
        size = _int_tuple(tuple(size), dims, "input_size", minimum=1, maximum=MAX_CONV_POSITIONS)
        kernel = _int_tuple(self.kernel_size, dims, "kernel_size", minimum=1, maximum=MAX_CONV_KERNEL)
        stride = _int_tuple(self.stride, dims, "stride", minimum=1, maximum=MAX_CONV_POSITIONS)
        padding = _int_tuple(self.padding, dims, "padding", minimum=0, maximum=MAX_CONV_KERNEL)
        for what, value in (("in_channels", self.in_channels), ("out_channels", self.out_channels),
                            ("groups", self.groups)):
            if isinstance(value, bool) or not isinstance(value, Integral) or not 1 <= int(value) <= MAX_CONV_CHANNELS:
                raise SpecError(f"{what} must be an integer from 1 to {MAX_CONV_CHANNELS}, got {abbreviate(value)}")
        groups = int(self.groups)
        if self.in_channels % groups or self.out_channels % groups:
            raise SpecError(f"in_channels ({self.in_channels}) and out_channels ({self.out_channels}) must both be "
                            f"divisible by groups ({groups})")
        for d in range(dims):
            if kernel[d] > size[d] + 2 * padding[d]:
                raise SpecError(f"kernel_size {kernel[d]} is larger than the padded input "
                                f"({size[d]} + 2 * {padding[d]} = {size[d] + 2 * padding[d]}) in dimension {d}")
        positions = math.prod((n + 2 * p - k) // s + 1 for n, p, k, s in zip(size, padding, kernel, stride))
        if math.prod(size) > MAX_CONV_POSITIONS or positions > MAX_CONV_POSITIONS:
            raise SpecError(f"a convolution may have at most {MAX_CONV_POSITIONS} input and output positions, got "
                            f"{math.prod(size)} input and {positions} output positions")
        for name, value in (("in_channels", int(self.in_channels)), ("out_channels", int(self.out_channels)),
                            ("input_size", size), ("kernel_size", kernel), ("stride", stride),
                            ("padding", padding), ("groups", groups)):
            object.__setattr__(self, name, value)
        if self.weights is None:
            raise SpecError("Conv needs weights=<a weight law>; use varprop.network.conv(...) to build one from an "
                            "init scheme")
        _check_law(self.weights, "weights")
        if self.bias is not None:
            _check_law(self.bias, "bias")

    @property
    def dims(self) -> int:
        """1 or 2: the number of spatial dimensions."""
        return len(self.input_size)

    @property
    def output_size(self) -> tuple[int, ...]:
        r"""PyTorch's :math:`\lfloor (L + 2\,\text{pad} - k)/s \rfloor + 1` per dimension."""
        return tuple((n + 2 * p - k) // s + 1
                     for n, p, k, s in zip(self.input_size, self.padding, self.kernel_size, self.stride))

    @property
    def taps(self) -> int:
        """:math:`K`, the number of taps of the kernel (the product of ``kernel_size``)."""
        return math.prod(self.kernel_size)

    @property
    def fan_in(self) -> int:
        r"""PyTorch's fan-in :math:`C_\text{in} K / g` (``_calculate_fan_in_and_fan_out``)."""
        return self.in_channels // self.groups * self.taps

    @property
    def fan_out(self) -> int:
        r"""PyTorch's fan-out :math:`C_\text{out} K`, not divided by the groups (``_calculate_fan_in_and_fan_out``)."""
        return self.out_channels * self.taps

    @property
    def in_width(self) -> int:
        """Width of the flattened input: ``in_channels * prod(input_size)``."""
        return self.in_channels * math.prod(self.input_size)

    @property
    def out_width(self) -> int:
        """Width of the flattened output: ``out_channels * prod(output_size)``."""
        return self.out_channels * math.prod(self.output_size)


def conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, ...],
    input_size: int | tuple[int, ...],
    init: InitScheme | WeightLaw | str | None = None,
    *,
    stride: int | tuple[int, ...] = 1,
    padding: int | tuple[int, ...] = 0,
    groups: int = 1,
) -> Conv:
    """A :class:`Conv` whose weight (and bias) law comes from an init scheme at PyTorch's fans.

    ``init`` is an :class:`~varprop.weights.InitScheme` (default: He fan-in, normal) or its name
    (``"torch.nn.Conv2d"``: :func:`~varprop.weights.init_scheme` with its defaults), evaluated at
    :attr:`Conv.fan_in` and :attr:`Conv.fan_out` (``in_channels * K / groups`` and
    ``out_channels * K``, as ``torch.nn.init`` computes them), or a weight law used as it is.
    """
    scheme = he() if init is None else init_scheme(init) if isinstance(init, str) else init
    probe = Conv(in_channels, out_channels, kernel_size, input_size, stride, padding, groups, weights=Normal(1))
    if isinstance(scheme, InitScheme):
        law, bias = scheme.law(probe.fan_in, probe.fan_out), scheme.bias_law(probe.fan_in, probe.fan_out)
    else:
        law, bias = _check_law(scheme, "init"), None
    return Conv(in_channels, out_channels, kernel_size, input_size, stride, padding, groups, weights=law, bias=bias)




def _check_chain(layers: Sequence[object], where: str) -> tuple[Width | None, Width | None]:
    """Check that consecutive layers with weights of ``layers`` agree on widths (two consecutive
    convolutions also on channels and spatial size) and that every residual block keeps the width it
    receives; return the width the layers take and the width they give (``None``: no layer with weights)."""
    first = current = None
    previous = None
    for index, layer in enumerate(layers):
        if not isinstance(layer, LAYER_CLASSES):
            accepted = ", ".join(cls.__name__ for cls in LAYER_CLASSES)
            raise SpecError(f"{where} {index} is {abbreviate(layer)}; accepted layers: {accepted}")
        if isinstance(layer, WEIGHTED_LAYERS):
            fan_in, fan_out = layer_widths(layer)
            if current is not None and sp.simplify(current - fan_in) != 0:
                what = "fan_in" if isinstance(layer, Dense) else "input width (in_channels * prod(input_size))"
                before = ("the previous layer gives a signal of width" if previous is None else
                          "the previous dense layer has fan_out" if isinstance(previous, Dense) else
                          "the previous convolution has output width (out_channels * prod(output_size))")
                raise SpecError(f"{where} {index} has {what} {fan_in} but {before} {current}")
            if isinstance(previous, Conv) and isinstance(layer, Conv) and (
                    previous.out_channels, previous.output_size) != (layer.in_channels, layer.input_size):
                raise SpecError(
                    f"{where} {index} reads {layer.in_channels} channels of size {layer.input_size} but the "
                    f"previous convolution puts out {previous.out_channels} channels of size {previous.output_size}"
                )
            first = fan_in if first is None else first
            current, previous = fan_out, layer
        elif isinstance(layer, (*NORMALISERS, BatchNorm)):
            width = current if current is not None else next(
                (layer_widths(later)[0] for later in layers[index + 1:] if isinstance(later, WEIGHTED_LAYERS)), None)
            if width is not None and sp.simplify(sp.sympify(width) - layer.width) != 0:
                raise SpecError(f"{where} {index} is a {type(layer).__name__} of width {layer.width} but the signal "
                                f"there has width {width}")
            if isinstance(layer, BatchNorm) and layer.channels is not None:
                later = next((later for later in layers[index + 1:] if isinstance(later, WEIGHTED_LAYERS)), None)
                if isinstance(previous, Conv) or isinstance(later, Conv) and previous is None:
                    channels = previous.out_channels if isinstance(previous, Conv) else later.in_channels
                    if layer.channels != channels:
                        raise SpecError(f"{where} {index} is a BatchNorm over {layer.channels} channels but the "
                                        f"convolution next to it has {channels} channels")
        elif isinstance(layer, Residual) and layer.width is not None:
            if current is not None and sp.simplify(current - layer.width) != 0:
                raise SpecError(
                    f"{where} {index} is a residual block of width {layer.width} but it receives a signal of "
                    f"width {current}"
                )
            first = layer.width if first is None else first
            current, previous = layer.width, None
    return first, current


@dataclass(frozen=True)
class Residual:
    r"""A residual block :math:`x \mapsto x + \alpha f(x)`, the branch :math:`f` a sub-network.

    The block is one position of the network (its output :math:`x + \alpha f(x)` and the gradient
    there are observable, named ``res1``, ``res2``, ...); the branch's own signals are walked by both
    engines but are not places of the network.

    Parameters
    ----------
    branch
        The layers of :math:`f`, in order (any layer kinds; a residual block may hold another). Dense
        widths must chain, and the branch must give back the width it takes (the skip connection adds
        its output to its input).
    alpha
        The branch scale :math:`\alpha`: a finite real number or a sympy expression
        (:math:`1/\sqrt L` over L blocks; Fixup's :math:`L^{-1/(2m-2)}`, Zhang, Dauphin & Ma 2019).
    """

    branch: tuple[Layer, ...]
    alpha: sp.Expr = sp.Integer(1)

    def __post_init__(self) -> None:
        branch = self.branch
        if isinstance(branch, LAYER_CLASSES):
            branch = (branch,)
        if isinstance(branch, str | bytes | Mapping) or not isinstance(branch, Iterable):
            raise SpecError(f"a residual branch must be a sequence of layers, got {abbreviate(branch)}")
        branch = tuple(branch)
        if not branch:
            raise SpecError("a residual branch needs at least one layer (an empty branch is the identity)")
        object.__setattr__(self, "branch", branch)
        first, last = _check_chain(branch, "branch layer")
        if first is not None and sp.simplify(first - last) != 0:
            raise SpecError(
                f"a residual branch must give back the width it takes: it takes {first} and gives {last} "
                "(x + alpha f(x) adds vectors of the same width)"
            )
        alpha = as_sympy_number(self.alpha, "residual alpha")
        if alpha.is_extended_real is False:
            raise SpecError(f"residual alpha must be real, got {alpha}")
        object.__setattr__(self, "alpha", sp.nsimplify(alpha, rational=True) if isinstance(alpha, sp.Float) else alpha)

    @property
    def width(self) -> Width | None:
        """The width the block takes and gives (``None`` when its branch has no dense layer)."""
        return _check_chain(self.branch, "branch layer")[0]


@dataclass(frozen=True)
class Dropout:
    r"""Inverted dropout at initialisation, in training mode: :math:`y = m \odot x / p`.

    ``keep`` is the keep probability :math:`p \in (0, 1]`; every unit of every network (and of each
    input of a pair) gets its own mask entry :math:`m \sim \mathrm{Bernoulli}(p)`, independent of
    everything else, so :math:`E[y] = E[x]` and :math:`E[y^2] = E[x^2]/p`. PyTorch's
    ``nn.Dropout(p)`` takes the *drop* probability: ``nn.Dropout(0.1)`` is ``Dropout(keep=0.9)``.
    ``keep = 1`` is the identity.
    """

    keep: sp.Expr

    def __post_init__(self) -> None:
        keep = as_sympy_number(self.keep, "dropout keep probability")
        if isinstance(keep, sp.Float):
            keep = sp.nsimplify(keep, rational=True)
        if keep.is_extended_real is False or keep.is_nonpositive or (keep - 1).is_positive:
            raise SpecError(
                f"dropout keep probability must be in (0, 1], got {abbreviate(self.keep)} (PyTorch's nn.Dropout(p) "
                "takes the drop probability: keep = 1 - p)"
            )
        object.__setattr__(self, "keep", keep)


def _check_eps(value: object, what: str) -> sp.Expr:
    """A normaliser's epsilon: a non-negative number or a sympy expression.

    A float becomes the shortest rational that rounds to it (``1e-5`` -> 1/100000), or its exact binary
    value when there is none nearby (``numpy.finfo(float).eps`` -> 2**-52): the sampler then uses
    the very float given.
    """
    expr = check_nonnegative(value, what)
    if not isinstance(expr, sp.Float):
        return expr
    simple = sp.nsimplify(expr, rational=True)
    return simple if float(simple) == float(expr) else sp.Rational(float(expr))


def _check_affine(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{what} must be True or False, got {abbreviate(value)}")
    return value


#: float64 machine epsilon, :math:`2^{-52}`: ``torch.nn.RMSNorm``'s ``eps=None`` for float64 tensors.
FLOAT64_EPS = sp.Rational(1, 2**52)


@dataclass(frozen=True)
class LayerNorm:
    r"""Layer normalisation over the units of one example (Ba et al. 2016, eq. 4), at initialisation.

    .. math:: y_i = \gamma_i \frac{x_i - \bar x}{\sqrt{\sigma^2 + \epsilon}} + \beta_i, \qquad
              \bar x = \frac1n \sum_j x_j, \quad \sigma^2 = \frac1n \sum_j (x_j - \bar x)^2

    (the biased variance, as ``torch.nn.LayerNorm`` computes it). With ``affine=True`` the gain
    :math:`\gamma` and bias :math:`\beta` are at PyTorch's initial values, 1 and 0
    (``elementwise_affine=True``), so at initialisation the layer computes the same as without them;
    the flag records that the layer has them. ``eps`` defaults to PyTorch's ``1e-5`` (kept as the
    exact rational 1/100000).
    """

    width: Width
    eps: sp.Expr = sp.Rational(1, 100000)
    affine: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", check_width(self.width, "LayerNorm width"))
        object.__setattr__(self, "eps", _check_eps(self.eps, "LayerNorm eps"))
        _check_affine(self.affine, "LayerNorm affine")


@dataclass(frozen=True)
class RMSNorm:
    r"""Root-mean-square normalisation over the units of one example (Zhang & Sennrich 2019, eq. 4), at init.

    .. math:: y_i = \gamma_i \frac{x_i}{\sqrt{\frac1n \sum_j x_j^2 + \epsilon}}

    as ``torch.nn.RMSNorm`` computes it (no centring, no bias). ``eps=None``, PyTorch's default,
    means the machine epsilon of the tensor's dtype; varprop computes in float64, so ``None`` is
    :data:`FLOAT64_EPS` :math:`= 2^{-52}` (stored as that number). With ``affine=True`` the gain
    :math:`\gamma` is at its initial value 1 (``elementwise_affine=True``).
    """

    width: Width
    eps: sp.Expr | None = None
    affine: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", check_width(self.width, "RMSNorm width"))
        eps = FLOAT64_EPS if self.eps is None else self.eps
        object.__setattr__(self, "eps", _check_eps(eps, "RMSNorm eps"))
        _check_affine(self.affine, "RMSNorm affine")


@dataclass(frozen=True)
class BatchNorm:
    r"""Batch normalisation in training mode (Ioffe & Szegedy 2015, Algorithm 1), at initialisation.

    Each network carries a *batch* of :math:`B` inputs through the same weights, and each unit is
    normalised over the batch with the biased batch variance, as ``torch.nn.BatchNorm1d`` does in
    ``train()`` mode:

    .. math:: y_{b,i} = \gamma_i \frac{x_{b,i} - \bar x_i}{\sqrt{V_i + \epsilon}} + \beta_i, \qquad
              \bar x_i = \frac1B \sum_c x_{c,i}, \quad V_i = \frac1B \sum_c (x_{c,i} - \bar x_i)^2.

    (The unbiased :math:`\frac{B}{B-1} V_i` only enters the running variance, which training mode does
    not use for its output.) ``batch`` is :math:`B \ge 2`; every BatchNorm of a network must have the
    same, and the network's inputs must be a single :class:`GaussianInput` (the batch is :math:`B` iid
    draws of it). With ``affine=True`` the gain and bias are at PyTorch's initial values 1 and 0.
    ``eps`` defaults to PyTorch's ``1e-5`` (kept as the exact rational 1/100000).

    ``channels`` :math:`C` (a divisor of the width; ``None``: every unit is its own channel, as above)
    says the signal is :math:`C` channels of :math:`P = \text{width}/C` positions, flattened channels
    first (a convolution's output, :class:`Conv`), and each channel is normalised over the batch *and*
    its positions, :math:`BP` values, as ``torch.nn.BatchNorm2d`` on ``(B, C, H, W)`` (and
    ``nn.BatchNorm1d`` on ``(B, C, L)``) does:

    .. math:: y_{b,c,p} = \frac{x_{b,c,p} - \bar x_c}{\sqrt{V_c + \epsilon}}, \qquad
              \bar x_c = \frac{1}{BP} \sum_{b', p'} x_{b',c,p'}, \quad
              V_c = \frac{1}{BP} \sum_{b', p'} (x_{b',c,p'} - \bar x_c)^2.
    """

    width: Width
    batch: int
    eps: sp.Expr = sp.Rational(1, 100000)
    affine: bool = True
    channels: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", check_width(self.width, "BatchNorm width"))
        if isinstance(self.batch, bool) or not isinstance(self.batch, Integral) or not 2 <= int(self.batch) <= MAX_BATCH:
            raise SpecError(f"BatchNorm batch must be an integer from 2 to {MAX_BATCH} (the number of inputs "
                            f"normalised together), got {abbreviate(self.batch)}")
        object.__setattr__(self, "batch", int(self.batch))
        object.__setattr__(self, "eps", _check_eps(self.eps, "BatchNorm eps"))
        _check_affine(self.affine, "BatchNorm affine")
        if self.channels is not None:
            channels = self.channels
            if isinstance(channels, sp.Integer):
                channels = int(channels)
            if isinstance(channels, bool) or not isinstance(channels, Integral) or not 1 <= int(channels) <= MAX_CONV_CHANNELS:
                raise SpecError(f"BatchNorm channels must be None (every unit its own channel) or an integer from 1 to "
                                f"{MAX_CONV_CHANNELS}, got {abbreviate(self.channels)}")
            if not isinstance(self.width, int) or self.width % int(channels):
                raise SpecError(f"BatchNorm channels ({int(channels)}) must divide the width ({self.width}): the signal "
                                "is channels x positions, flattened channels first")
            object.__setattr__(self, "channels", int(channels))

    def __repr__(self) -> str:
        # Without channels the repr is unchanged (the checker seeds its draws from the network's repr).
        channels = "" if self.channels is None else f", channels={self.channels!r}"
        return (f"BatchNorm(width={self.width!r}, batch={self.batch!r}, eps={self.eps!r}, "
                f"affine={self.affine!r}{channels})")

    @property
    def positions(self) -> int | sp.Expr:
        """:math:`P`, the positions of a channel (1 when every unit is its own channel)."""
        return 1 if self.channels is None else self.width // self.channels

    @property
    def group(self) -> int:
        """:math:`BP`, the number of values each channel is normalised over."""
        return self.batch * self.positions


#: The largest batch a :class:`BatchNorm` accepts (the sampler carries the whole batch per network).
MAX_BATCH = 4096

#: Layers that normalise each example over its units (no weights; the signal width is unchanged).
NORMALISERS: tuple[type, ...] = (LayerNorm, RMSNorm)
#: Layers a network with a :class:`BatchNorm` may hold (those whose sampler steps carry a whole batch).
BATCH_LAYERS: tuple[type, ...] = (Dense, Conv, Nonlinearity, LayerNorm, RMSNorm, BatchNorm)

Layer = Dense | Conv | Nonlinearity | Residual | Dropout | LayerNorm | RMSNorm | BatchNorm
#: The layer classes, one entry per kind: each engine registers a reader for every one (a test checks).
LAYER_CLASSES: tuple[type, ...] = (Dense, Conv, Nonlinearity, Residual, Dropout, LayerNorm, RMSNorm, BatchNorm)
#: Layers with weights, which set the width of the signal: (layer) -> (input width, output width).
WEIGHTED_LAYERS: tuple[type, ...] = (Dense, Conv)


def layer_widths(layer: Dense | Conv) -> tuple[Width, Width]:
    """The input and output widths of a layer with weights (a dense layer's fans; a convolution's flattened sizes)."""
    if isinstance(layer, Conv):
        return layer.in_width, layer.out_width
    return layer.fan_in, layer.fan_out



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


def _nested_dense(layers: Sequence[Layer]) -> Iterable[Dense]:
    """Every dense layer of ``layers``, those inside residual branches included, in order."""
    for layer in layers:
        if isinstance(layer, Dense):
            yield layer
        elif isinstance(layer, Residual):
            yield from _nested_dense(layer.branch)


def _check_batch(layers: tuple[Layer, ...], inputs: InputSpec) -> None:
    """A network with a BatchNorm: one batch size, a single Gaussian input, only layers that carry a batch."""
    norms = [(index, layer) for index, layer in enumerate(layers) if isinstance(layer, BatchNorm)]
    for index, layer in enumerate(layers):
        if isinstance(layer, Residual) and any(isinstance(inner, BatchNorm) for inner in _all_layers(layer.branch)):
            raise SpecError(f"layer {index} is a residual block with a BatchNorm in its branch; varprop reads "
                            "BatchNorm only outside residual blocks")
    if not norms:
        return
    sizes = sorted({layer.batch for _, layer in norms})
    if len(sizes) > 1:
        raise SpecError(f"every BatchNorm of a network normalises the same batch, got batch sizes {sizes}")
    if not isinstance(inputs, GaussianInput) or inputs.paired:
        raise SpecError(f"a network with a BatchNorm needs a single GaussianInput (its batch is {sizes[0]} iid draws "
                        f"of it), got {inputs!r}")
    for index, layer in enumerate(layers):
        if not isinstance(layer, BATCH_LAYERS):
            accepted = ", ".join(cls.__name__ for cls in BATCH_LAYERS)
            raise SpecError(f"layer {index} is a {type(layer).__name__}, which varprop does not yet carry through a "
                            f"batch; a network with a BatchNorm may hold: {accepted}")


def _all_layers(layers: Sequence[Layer]) -> Iterable[Layer]:
    for layer in layers:
        yield layer
        if isinstance(layer, Residual):
            yield from _all_layers(layer.branch)


_PLACE_PREFIX = {Dense: "dense", Conv: "conv", Nonlinearity: "act", Residual: "res", Dropout: "drop",
                 LayerNorm: "layernorm", RMSNorm: "rmsnorm", BatchNorm: "batchnorm"}


@dataclass(frozen=True)
class Network:
    """An ordered tuple of layers and a description of the inputs.

    Consecutive layers with weights must agree on widths (``fan_out`` of one dense layer equals
    ``fan_in`` of the next; a convolution counts with its flattened widths, and two consecutive
    convolutions must also agree on channels and spatial size), and a fixed input must have the first
    layer's input width.
    """

    layers: tuple[Layer, ...]
    inputs: InputSpec = GaussianInput()

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        object.__setattr__(self, "layers", layers)
        if not any(isinstance(layer, WEIGHTED_LAYERS) for layer in layers):
            raise SpecError("a network needs at least one Dense or Conv layer")
        _check_chain(layers, "layer")
        if not isinstance(self.inputs, GaussianInput | FixedInput):
            raise SpecError(f"inputs must be GaussianInput or FixedInput, got {self.inputs!r}")
        if isinstance(self.inputs, FixedInput) and len(self.inputs.values) != self.widths[0]:
            raise SpecError(
                f"fixed input has {len(self.inputs.values)} entries but the first layer has fan_in {self.widths[0]}"
            )
        _check_batch(layers, self.inputs)

    @property
    def batch(self) -> int:
        """The number of inputs each network carries through the same weights: its BatchNorm's batch, else 1."""
        return next((layer.batch for layer in self.layers if isinstance(layer, BatchNorm)), 1)

    @property
    def weighted_layers(self) -> tuple[Dense | Conv, ...]:
        """The layers with weights (dense and convolution layers), in order."""
        return tuple(layer for layer in self.layers if isinstance(layer, WEIGHTED_LAYERS))

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
        """``(n_1, ..., n_L, n_out)``: every dense layer's fan-in, then the last fan-out.

        A convolution counts with its flattened input and output widths (:func:`layer_widths`).
        """
        weighted = self.weighted_layers
        return tuple(layer_widths(layer)[0] for layer in weighted) + (layer_widths(weighted[-1])[1],)

    @property
    def is_numeric(self) -> bool:
        """True when every width, residual branches' included, is an integer (needed to sample)."""
        return all(isinstance(width, int) for width in self.widths) and all(
            isinstance(layer.fan_in, int) and isinstance(layer.fan_out, int) for layer in _nested_dense(self.layers))

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
        width = self.widths[0]
        for layer in self.layers[: position + 1]:
            if isinstance(layer, WEIGHTED_LAYERS):
                width = layer_widths(layer)[1]
        return width


def mlp(
    widths: Sequence[Width],
    activation_: Activation | str = "relu",
    init: InitScheme | WeightLaw | str | None = None,
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
        An :class:`~varprop.weights.InitScheme` (default: He fan-in, normal) applied to every layer, a
        name :func:`~varprop.weights.init_scheme` knows (``"torch.nn.Linear"``, ``"keras.he_normal"``)
        with its defaults, or one weight law used as it is for every layer.
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
    scheme = he() if init is None else init_scheme(init) if isinstance(init, str) else init
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


def cnn(
    channels: Sequence[int],
    kernel_size: int | tuple[int, ...],
    input_size: int | tuple[int, ...],
    activation_: Activation | str = "relu",
    init: InitScheme | WeightLaw | str | None = None,
    *,
    stride: int | tuple[int, ...] = 1,
    padding: int | tuple[int, ...] = 0,
    groups: int = 1,
    bias_variance: object | None = None,
    inputs: InputSpec | None = None,
    output_activation: bool = False,
) -> Network:
    r"""A convolutional network ``Conv, Nonlinearity, ..., Conv`` (1-D or 2-D), the analogue of :func:`mlp`.

    ``channels`` is ``(C_0, C_1, ..., C_L)``: the input channels, then each convolution's output
    channels. Every convolution has the same ``kernel_size``, ``stride``, ``padding`` and
    ``groups``; the first reads ``input_size`` (an integer: 1-D, a pair: 2-D) and each next one the
    previous output size. ``init`` is evaluated at PyTorch's fans (:func:`conv`).
    """
    if isinstance(channels, str | bytes | Mapping) or not isinstance(channels, Iterable):
        raise SpecError(f"channels must be a sequence of at least two channel counts, such as [3, 16, 16], "
                        f"got {abbreviate(channels)}")
    channels = list(channels)
    if len(channels) < 2:
        raise SpecError(f"a convolutional network needs at least two channel counts (input and output), got {len(channels)}")
    act = activation(activation_) if isinstance(activation_, str) else activation_
    bias_law = None if bias_variance is None else Normal(check_nonnegative(bias_variance, "bias variance"))
    layers: list[Layer] = []
    size = input_size
    for index, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        if index > 0:
            layers.append(Nonlinearity(act))
        layer = conv(c_in, c_out, kernel_size, size, init, stride=stride, padding=padding, groups=groups)
        if bias_law is not None:
            layer = Conv(c_in, c_out, layer.kernel_size, layer.input_size, layer.stride, layer.padding, groups,
                         weights=layer.weights, bias=bias_law)
        layers.append(layer)
        size = layer.output_size
    if output_activation:
        layers.append(Nonlinearity(act))
    return Network(tuple(layers), inputs if inputs is not None else GaussianInput())
