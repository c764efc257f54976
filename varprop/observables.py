r"""What is measured: typed observables at places of a network, one registry for both engines.

A network (:class:`~varprop.network.Network`) is an ordered tuple of layers. Its tensors are
addressed by *position*: the signal at position :math:`p` is the output of ``network.layers[p]``, and
position ``-1`` is the network input. Every place also has a name (``input``, ``dense1``, ``act1``,
... see :meth:`~varprop.network.Network.place_name`), so a residual block or a convolution can be
addressed the same way as a dense layer.

An observable is a *statistic* of a *tensor*:

=========================  ==================================================================
tensor                     what it is
=========================  ==================================================================
:class:`Signal`            the forward signal at a position (``y_l`` after a dense layer,
                           ``x_l`` after a nonlinearity or at the input)
:class:`Gradient`          :math:`\partial\mathcal L/\partial h_p`, the gradient of the loss with
                           respect to that signal
:class:`WeightGradient`    :math:`\partial\mathcal L/\partial W` of the dense layer at a position
=========================  ==================================================================

=================================  ==================================================================
statistic                          per unit, in expectation over random networks
=================================  ==================================================================
:class:`Mean`                      :math:`E[t]` (one unit)
:class:`SecondMoment`              :math:`E[t^2]`
:class:`Variance`                  :math:`\operatorname{Var}[t] = E[t^2] - E[t]^2`
:class:`NormRatio`                 :math:`E[\|h_p\|^2 / \|h_{\text{input}}\|^2]` (signals only)
:class:`NormRatioMoment`           :math:`E[(\|h_p\|^2 / \|h_{\text{input}}\|^2)^k]`, order :math:`k \le 8`
                                   (signals only)
:class:`NormRatioSecondMoment`     :math:`E[(\|h_p\|^2 / \|h_{\text{input}}\|^2)^2]` (signals only)
:class:`LogNormRatio`              :math:`E[\log(\|h_p\|^2 / \|h_{\text{input}}\|^2) \mid h_p \ne 0]`
:class:`LogNormRatioMoment`        :math:`E[(\log(\|h_p\|^2 / \|h_{\text{input}}\|^2))^k \mid h_p \ne 0]`,
                                   order :math:`k \le 8`
:class:`LogNormRatioVariance`      :math:`\operatorname{Var}[\log(\|h_p\|^2 / \|h_{\text{input}}\|^2) \mid h_p \ne 0]`
:class:`DeadFraction`              :math:`P(h_p = 0)`, the fraction of networks with a dead layer
:class:`CrossMoment`               :math:`E[\tfrac1{n_p}\langle h_p, h'_p\rangle]` for a pair of inputs
                                   (signals only)
:class:`Correlation`               :math:`E[\langle h_p, h'_p\rangle] / \sqrt{E[\|h_p\|^2]\,
                                   E[\|h'_p\|^2]}`, a ratio of expectations (signals only)
=================================  ==================================================================

:math:`h'_p` is the signal of the *partner* input at the same place of the same network: the
network's input description holds the pair (``GaussianInput(correlation=c0)`` or a
``FixedInput`` with a ``partner``), and :class:`CrossMoment` and :class:`Correlation` exist only
in such networks.

:data:`OBSERVABLES` is the one registry of statistic classes: ``varprop.derive`` registers a rule
for each (the derivation whose result is the prediction), ``varprop.montecarlo`` an estimator, and a
test fails if either lacks one. Adding an observable is one class here plus its rule in each engine.

The names used by claim files and the JSON output since the first version (``y_second_moment`` at
dense layer ``l``, ...) are kept: :func:`from_name` turns ``(name, l)`` into an observable and
:func:`legacy_name` goes back. In He et al.'s notation dense layer :math:`l` maps its input
:math:`x_l` to :math:`y_l = W_l x_l + b_l`, and :math:`\Delta x_l, \Delta y_l` are the gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral
from typing import TYPE_CHECKING

from .errors import SpecError

if TYPE_CHECKING:  # pragma: no cover
    from .network import Network

__all__ = [
    "Signal",
    "Gradient",
    "WeightGradient",
    "Tensor",
    "Observable",
    "Mean",
    "SecondMoment",
    "Variance",
    "NormRatio",
    "CrossMoment",
    "Correlation",
    "PAIR_OBSERVABLES",
    "NormRatioMoment",
    "NormRatioSecondMoment",
    "LogNormRatioMoment",
    "LogNormRatio",
    "LogNormRatioVariance",
    "MAX_ORDER",
    "DeadFraction",
    "OBSERVABLES",
    "LEGACY_NAMES",
    "ObservableError",
    "from_name",
    "legacy_name",
    "resolve",
    "describe",
    "STATISTICS",
    "TENSORS",
    "at_place",
    "ORDERED",
]


class ObservableError(SpecError):
    """An observable that does not exist in a network: unknown name, position out of range."""


@dataclass(frozen=True)
class Signal:
    """The forward signal at ``position`` (the output of ``network.layers[position]``; -1: the input)."""

    position: int
    kind = "signal"


@dataclass(frozen=True)
class Gradient:
    r""":math:`\partial\mathcal L/\partial h_p`: the gradient with respect to the signal at ``position``."""

    position: int
    kind = "gradient"


@dataclass(frozen=True)
class WeightGradient:
    r""":math:`\partial\mathcal L/\partial W` of the dense layer at ``position``."""

    position: int
    kind = "weight gradient"


Tensor = Signal | Gradient | WeightGradient


@dataclass(frozen=True)
class Observable:
    """A statistic of one tensor. Subclasses name the statistic."""

    tensor: Tensor
    statistic = ""

    def __post_init__(self) -> None:
        if not isinstance(self.tensor, Signal | Gradient | WeightGradient):
            raise ObservableError(
                f"{type(self).__name__} needs a Signal, Gradient or WeightGradient, got {self.tensor!r}"
            )
        position = self.tensor.position
        if isinstance(position, bool) or not isinstance(position, Integral):
            raise ObservableError(f"a position must be an integer (-1 for the input), got {position!r}")


@dataclass(frozen=True)
class Mean(Observable):
    """:math:`E[t]`, one unit of the tensor."""

    statistic = "mean"


@dataclass(frozen=True)
class SecondMoment(Observable):
    """:math:`E[t^2]`, one unit of the tensor."""

    statistic = "second moment"


@dataclass(frozen=True)
class Variance(Observable):
    r""":math:`\operatorname{Var}[t] = E[t^2] - E[t]^2`, one unit of the tensor."""

    statistic = "variance"


@dataclass(frozen=True)
class NormRatio(Observable):
    r""":math:`E[\|h_p\|^2 / \|h_{\text{input}}\|^2]` for a signal."""

    statistic = "norm ratio"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.tensor, Signal):
            raise ObservableError(f"NormRatio is defined for signals only, got {self.tensor!r}")


@dataclass(frozen=True)
class CrossMoment(Observable):
    r""":math:`E\big[\tfrac1{n_p}\sum_i h_{p,i} h'_{p,i}\big]`: the cross moment of a pair of inputs' signals.

    :math:`h'` is the partner input's signal through the same network (see the module docstring).
    """

    statistic = "cross moment"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.tensor, Signal):
            raise ObservableError(f"CrossMoment is defined for signals only, got {self.tensor!r}")


@dataclass(frozen=True)
class Correlation(Observable):
    r"""The correlation of a pair of inputs' signals, a ratio of expectations over networks.

    .. math:: \rho_p = \frac{E[\langle h_p, h'_p\rangle]}{\sqrt{E[\|h_p\|^2]\, E[\|h'_p\|^2]}}

    (Poole et al. 2016, eq. 4; Schoenholz et al. 2017, eq. 3: :math:`c = q_{12}/\sqrt{q_{11} q_{22}}`).
    Not the mean of the per-network cosine: the two agree as the width grows.
    """

    statistic = "correlation"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.tensor, Signal):
            raise ObservableError(f"Correlation is defined for signals only, got {self.tensor!r}")


#: The statistic classes; each engine registers one rule per class.
#: The statistics of a pair of inputs: they need a network whose input description holds a pair.
PAIR_OBSERVABLES: tuple[type[Observable], ...] = (CrossMoment, Correlation)


class _SignalOnly(Observable):
    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.tensor, Signal):
            raise ObservableError(f"{type(self).__name__} is defined for signals only, got {self.tensor!r}")


#: The highest order of a moment observable (:class:`NormRatioMoment`, :class:`LogNormRatioMoment`): the
#: moment of order k of a narrow network's norm ratio needs its law's moments up to 3k to size a sample.
MAX_ORDER = 8


def _check_order(observable: Observable) -> None:
    order = observable.order
    if isinstance(order, bool) or not isinstance(order, Integral) or not 1 <= int(order) <= MAX_ORDER:
        raise ObservableError(f"{type(observable).__name__}: order must be an integer from 1 to {MAX_ORDER}, "
                              f"got {order!r}")


@dataclass(frozen=True)
class NormRatioMoment(_SignalOnly):
    r""":math:`E[(\|h_p\|^2 / \|h_{\text{input}}\|^2)^k]`, ``order`` :math:`k = 1..8`: the moments of one network's
    squared length (finite-width law, :func:`varprop.derive.finite.power_moment`)."""

    order: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_order(self)

    @property
    def statistic(self) -> str:  # type: ignore[override]
        return f"norm ratio moment of order {self.order}"


@dataclass(frozen=True)
class NormRatioSecondMoment(NormRatioMoment):
    r""":math:`E[(\|h_p\|^2 / \|h_{\text{input}}\|^2)^2]`: the spread of one network's squared length
    (finite-width law, :func:`varprop.derive.finite.product_law`); :class:`NormRatioMoment` of order 2."""

    order: int = field(default=2, init=False)

    @property
    def statistic(self) -> str:  # type: ignore[override]
        return "norm ratio second moment"


@dataclass(frozen=True)
class LogNormRatioMoment(_SignalOnly):
    r""":math:`E[(\log(\|h_p\|^2 / \|h_{\text{input}}\|^2))^k \mid h_p \ne 0]`, ``order`` :math:`k = 1..8`, over
    the networks whose signal at ``p`` is not identically zero (finite-width law,
    :func:`varprop.derive.finite.log_power_moment`)."""

    order: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_order(self)

    @property
    def statistic(self) -> str:  # type: ignore[override]
        return f"log norm ratio moment of order {self.order}"


@dataclass(frozen=True)
class LogNormRatio(LogNormRatioMoment):
    r""":math:`E[\log(\|h_p\|^2 / \|h_{\text{input}}\|^2) \mid h_p \ne 0]`: the typical network's squared
    length, over the networks whose signal at ``p`` is not identically zero (the others have
    :math:`\log 0 = -\infty`; :class:`DeadFraction` counts them); :class:`LogNormRatioMoment` of order 1."""

    order: int = field(default=1, init=False)

    @property
    def statistic(self) -> str:  # type: ignore[override]
        return "log norm ratio"


@dataclass(frozen=True)
class LogNormRatioVariance(_SignalOnly):
    r""":math:`\operatorname{Var}[\log(\|h_p\|^2 / \|h_{\text{input}}\|^2) \mid h_p \ne 0]`: the spread of the
    log squared length over the networks whose signal at ``p`` is not identically zero."""

    statistic = "log norm ratio variance"


@dataclass(frozen=True)
class DeadFraction(_SignalOnly):
    r""":math:`P(h_p = 0)`: the fraction of networks whose signal at ``p`` is identically zero (a dead layer)."""

    statistic = "dead fraction"


#: The statistic classes; each engine registers one rule per class.
OBSERVABLES: tuple[type[Observable], ...] = (Mean, SecondMoment, Variance, NormRatio, CrossMoment, Correlation,
                                             NormRatioMoment, NormRatioSecondMoment, LogNormRatioMoment, LogNormRatio,
                                             LogNormRatioVariance, DeadFraction)

#: Claim-file names: name -> (statistic class, tensor letter) at dense layer l.
_LEGACY: dict[str, tuple[type[Observable], str]] = {
    "y_mean": (Mean, "y"),
    "y_second_moment": (SecondMoment, "y"),
    "y_variance": (Variance, "y"),
    "x_mean": (Mean, "x"),
    "x_second_moment": (SecondMoment, "x"),
    "x_variance": (Variance, "x"),
    "dx_second_moment": (SecondMoment, "dx"),
    "dy_second_moment": (SecondMoment, "dy"),
    "dw_second_moment": (SecondMoment, "dw"),
    "x_norm_ratio": (NormRatio, "x"),
    "y_cross_moment": (CrossMoment, "y"),
    "y_correlation": (Correlation, "y"),
}
#: The names claim files may use for an observable at a dense layer (``layer = l``).
LEGACY_NAMES: tuple[str, ...] = tuple(_LEGACY)


def _dense_positions(network: Network) -> tuple[int, ...]:
    return network.dense_positions


def _tensor_at_dense(letter: str, position: int) -> Tensor:
    if letter == "y":
        return Signal(position)
    if letter == "x":
        return Signal(position - 1)
    if letter == "dy":
        return Gradient(position)
    if letter == "dx":
        return Gradient(position - 1)
    return WeightGradient(position)


def from_name(name: str, layer: int, network: Network) -> Observable:
    """The observable a claim file means by ``name`` at dense layer ``layer`` (1-based).

    ``x_l`` is the input of dense layer l, ``y_l`` its output; ``dx_l``, ``dy_l`` their gradients and
    ``dw_l`` the gradient of its weights.
    """
    if name not in _LEGACY:
        raise ObservableError(f"unknown observable {name!r}; known: {', '.join(LEGACY_NAMES)}")
    dense = _dense_positions(network)
    if isinstance(layer, bool) or not isinstance(layer, Integral) or not 1 <= int(layer) <= len(dense):
        raise ObservableError(
            f"layer must be a dense-layer index from 1 to {len(dense)} (the network has {len(dense)} dense "
            f"layers), got {layer!r}"
        )
    cls, letter = _LEGACY[name]
    return cls(_tensor_at_dense(letter, dense[int(layer) - 1]))


def legacy_name(observable: Observable, network: Network) -> tuple[str, int] | None:
    """``(name, dense layer)`` of ``observable`` in the claim-file vocabulary, or ``None``."""
    dense = _dense_positions(network)
    for name, (cls, letter) in _LEGACY.items():
        if type(observable) is not cls:
            continue
        for layer, position in enumerate(dense, 1):
            if _tensor_at_dense(letter, position) == observable.tensor:
                return name, layer
    return None


def resolve(observable: Observable, network: Network) -> Observable:
    """Check that ``observable`` exists in ``network`` and return it (an :class:`ObservableError` if not)."""
    if not isinstance(observable, Observable) or type(observable) not in OBSERVABLES:
        known = ", ".join(cls.__name__ for cls in OBSERVABLES)
        raise ObservableError(f"expected an observable ({known}), got {observable!r}")
    tensor = observable.tensor
    last = len(network.layers) - 1
    if not -1 <= tensor.position <= last:
        raise ObservableError(
            f"position {tensor.position} is not in the network: positions run from -1 (the input) to {last}"
        )
    if isinstance(observable, PAIR_OBSERVABLES) and not getattr(network.inputs, "paired", False):
        raise ObservableError(
            f"{type(observable).__name__} needs a pair of inputs; describe one in the network's inputs "
            "(GaussianInput(correlation=c0), FixedInput(values, partner=...) or FixedInput.pair(width, c0))"
        )
    if isinstance(tensor, WeightGradient) and tensor.position not in network.dense_positions:
        raise ObservableError(
            f"a weight gradient needs a dense layer; position {tensor.position} is "
            f"{network.place_name(tensor.position)}"
        )
    return observable


def describe(observable: Observable, network: Network) -> str:
    """Plain words for ``observable`` in ``network``, e.g. ``second moment of the signal at dense3 (y_3)``."""
    tensor = observable.tensor
    legacy = legacy_name(observable, network)
    where = network.place_name(tensor.position)
    text = f"{observable.statistic} of the {tensor.kind} at {where}"
    return text + (f" ({legacy[0]}, layer {legacy[1]})" if legacy else "")


#: Statistic names for an observable addressed by place (claim files: ``observable = "second_moment"``).
STATISTICS: dict[str, type[Observable]] = {
    "mean": Mean,
    "second_moment": SecondMoment,
    "variance": Variance,
    "norm_ratio": NormRatio,
    "cross_moment": CrossMoment,
    "correlation": Correlation,
    "norm_ratio_second_moment": NormRatioSecondMoment,
    "norm_ratio_moment": NormRatioMoment,
    "log_norm_ratio": LogNormRatio,
    "log_norm_ratio_moment": LogNormRatioMoment,
    "log_norm_ratio_variance": LogNormRatioVariance,
    "dead_fraction": DeadFraction,
}
#: Tensor names for an observable addressed by place (claim files: ``tensor = "gradient"``).
TENSORS: dict[str, type] = {"signal": Signal, "gradient": Gradient, "weight_gradient": WeightGradient}


#: The statistics that take an ``order`` (claim files: ``order = 3``).
ORDERED: tuple[type[Observable], ...] = (NormRatioMoment, LogNormRatioMoment)


def at_place(statistic: str, tensor: str, place: int | str, network: Network, order: int | None = None) -> Observable:
    """The observable ``statistic`` of ``tensor`` at ``place`` (a position or a name such as ``act2``).

    ``order`` is the order of a moment statistic (``norm_ratio_moment``, ``log_norm_ratio_moment``: 1 to
    :data:`MAX_ORDER`, default 2); the other statistics take none.

    >>> at_place("second_moment", "gradient", "act1", network)  # doctest: +SKIP
    SecondMoment(tensor=Gradient(position=1))
    """
    if statistic not in STATISTICS:
        raise ObservableError(f"unknown statistic {statistic!r}; known: {', '.join(STATISTICS)}")
    if tensor not in TENSORS:
        raise ObservableError(f"unknown tensor {tensor!r}; known: {', '.join(TENSORS)}")
    try:
        position = network.position(place)
    except SpecError as exc:
        raise ObservableError(str(exc)) from None
    cls = STATISTICS[statistic]
    if order is not None and cls not in ORDERED:
        names = ", ".join(name for name, c in STATISTICS.items() if c in ORDERED)
        raise ObservableError(f"order goes with a moment statistic ({names}), not with {statistic!r}")
    made = cls(TENSORS[tensor](position)) if order is None else cls(TENSORS[tensor](position), order)
    return resolve(made, network)
