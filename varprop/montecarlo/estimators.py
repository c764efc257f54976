r"""Estimates of observables at network positions, with standard errors across networks.

The independent unit is the network. Units inside one network are exchangeable but dependent
(they share the network's weights upstream, hence its activation scale), so an observable is first
averaged over the units of each network (:class:`~varprop.montecarlo.sampler.Samples` holds these
per-network averages :math:`a_t`), and then

.. math:: \hat\mu = \frac1T \sum_{t=1}^T a_t, \qquad
          \operatorname{SE} = \frac{s_a}{\sqrt T}, \quad s_a^2 = \frac{1}{T-1}\sum_t (a_t - \hat\mu)^2.

Treating all :math:`T n` units as independent would understate the SE by up to a factor
:math:`\sqrt{1 + (n-1)\rho}`, :math:`\rho` the correlation of two units of one network.

An observable is a :class:`~varprop.observables.Observable` (a statistic of a signal, gradient or
weight gradient at a position; :func:`estimate` ``(samples, observable)``), or, in the claim-file
vocabulary, a name at dense layer :math:`l = 1 .. L` (:func:`estimate` ``(samples, name, l)``). Each
statistic class of :data:`varprop.observables.OBSERVABLES` has one rule in the registry
:func:`network_values` (the per-network values whose mean is the estimate); :class:`Variance` also
has its own combination (the delta method below). The names, and what they estimate:

==================================  ===========================================================
observable                          estimates
==================================  ===========================================================
``y_mean``                          :math:`E[y_l]` (one unit)
``y_second_moment``                 :math:`E[y_l^2]` (= :math:`E[\|y_l\|^2/\hat n_l]`)
``y_variance``                      :math:`\operatorname{Var}[y_l] = E[y_l^2] - E[y_l]^2`
``x_mean``                          :math:`E[x_l]`
``x_second_moment``                 :math:`E[x_l^2]`
``x_variance``                      :math:`\operatorname{Var}[x_l]`
``dx_second_moment``                :math:`E[(\partial\mathcal L/\partial x_l)^2]`
``dy_second_moment``                :math:`E[(\partial\mathcal L/\partial y_l)^2]`
``dw_second_moment``                :math:`E[(\partial\mathcal L/\partial W_l)^2]` (one entry)
``x_norm_ratio``                    :math:`E[\|x_l\|^2 / \|x_1\|^2]`
``x_norm_ratio_second_moment``      :math:`E[(\|x_l\|^2 / \|x_1\|^2)^2]`
``y_mean_square_second_moment``     :math:`E[(\|y_l\|^2/\hat n_l)^2]`, the spread of a layer's
                                    mean square across networks (its mean is ``y_second_moment``)
``y_correlation``                   :math:`E[y_l y_l'] / \sqrt{E[y_l^2]\,E[{y_l'}^2]}` for the
                                    network's input and its partner input (see ``sample``)
==================================  ===========================================================

Observables of a pair of inputs (:class:`~varprop.observables.CrossMoment`,
:class:`~varprop.observables.Correlation`, at any signal position :math:`p`; the network's input
description holds the pair) read the per-network averages :math:`a_t = \frac1{n}\langle h, h'\rangle`,
:math:`b_t = \frac1{n}\|h\|^2`, :math:`b'_t = \frac1{n}\|h'\|^2` of network :math:`t`. The cross
moment is the mean of :math:`a_t`. The correlation is estimated by :func:`ratio_correlation`, the
*ratio of the means*

.. math:: \hat\rho = \frac{\bar a}{\sqrt{\bar b\, \bar b'}}
          \;\to\; \rho = \frac{E[\langle h, h'\rangle]}{\sqrt{E[\|h\|^2]\,E[\|h'\|^2]}},

the mean-field correlation :math:`q_{12}/\sqrt{q_{11} q_{22}}` (Schoenholz et al. 2017, eq. 3), and
not the mean of the per-network cosines :math:`a_t/\sqrt{b_t b'_t}` (a different quantity at finite
width). Its SE is the delta method over networks, the independent draw: with the influence values

.. math:: d_t = \frac{a_t}{\sqrt{\bar b \bar b'}} - \frac{\hat\rho}{2}\Big(\frac{b_t}{\bar b}
          + \frac{b'_t}{\bar b'}\Big), \qquad \operatorname{SE} = s_d/\sqrt T,

the linearisation of :math:`\hat\rho` about the three means (its bias is :math:`O(1/T)`, below the
SE by a factor :math:`\sqrt T`).

Per network, :math:`\frac{1}{\hat n n}\sum_{ij} (\partial\mathcal L/\partial W_{ij})^2 =
\big(\frac1{\hat n}\sum_i (\partial\mathcal L/\partial y_i)^2\big)\big(\frac1n\sum_j x_j^2\big)`
and :math:`\frac{1}{\hat n n}\sum_{ij} \partial\mathcal L/\partial W_{ij} =
\big(\frac1{\hat n}\sum_i \partial\mathcal L/\partial y_i\big)\big(\frac1n\sum_j x_j\big)`
exactly, since :math:`\partial\mathcal L/\partial W = (\partial\mathcal L/\partial y)\, x^\top`: a
:class:`~varprop.observables.WeightGradient` at position :math:`p` is read off the gradient at
:math:`p` and the signal at :math:`p - 1`.

The two variances and the correlation are smooth functions of means; their SE comes from the
delta method on the per-network values (the influence values :math:`d_t` below, SE
:math:`= s_d/\sqrt T`). The variance uses the unbiased :math:`\hat\mu_2 - \hat\mu_1^2 +
s_{a}^2/T`; the correlation is a ratio estimator, with a bias of order :math:`1/T`.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from functools import singledispatch
from numbers import Integral

import numpy as np

from ..errors import VarpropError
from ..observables import (
    LEGACY_NAMES,
    OBSERVABLES as OBSERVABLE_CLASSES,
    Correlation,
    CrossMoment,
    Gradient,
    Mean,
    DeadFraction,
    LogNormRatioMoment,
    LogNormRatioVariance,
    NormRatio,
    NormRatioMoment,
    Observable,
    SecondMoment,
    Signal,
    Tensor,
    Variance,
    WeightGradient,
    from_name,
    resolve,
)
from .errors import MonteCarloError
from .sampler import Samples

__all__ = ["OBSERVABLES", "Estimate", "estimate", "network_values", "per_network_values", "health", "ratio_correlation",
           "correlation_influence"]

#: Observable names accepted by :func:`estimate` with a dense layer (see the module docstring).
OBSERVABLES: tuple[str, ...] = LEGACY_NAMES + (
    "x_norm_ratio_second_moment",
    "y_mean_square_second_moment",
    "y_correlation",
)
#: The names that are not observables of :mod:`varprop.observables` (Monte Carlo only).
_EXTRA = OBSERVABLES[len(LEGACY_NAMES) :]


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate with its standard error.

    Attributes
    ----------
    value
        The estimate.
    se
        Its standard error, from the spread across networks.
    n
        The number of (finite) networks it is computed from.
    excluded
        Networks left out because some recorded value was not finite.
    """

    value: float
    se: float
    n: int
    excluded: int = 0


# --- per-network values of each tensor ---------------------------------------------------------


def _tensor_values(samples: Samples, tensor: Tensor, statistic: str) -> np.ndarray:
    r"""Per-network mean (``statistic="mean"``) or mean square (``"second_moment"``) over a tensor's units.

    All ``count`` networks, finite or not. The weight gradient of the dense layer at :math:`p` is
    the outer product of the gradient at :math:`p` and the signal at :math:`p - 1`, so both its
    per-network statistics are products.
    """
    column = samples.require(tensor)
    if isinstance(tensor, Signal):
        return samples.per_position[f"signal_{statistic}"][:, column]
    gradient = samples.per_position[f"gradient_{statistic}"][:, column]
    if isinstance(tensor, Gradient):
        return gradient
    return gradient * samples.per_position[f"signal_{statistic}"][:, column - 1]


def _positions(tensor: Tensor) -> tuple[int, ...]:
    """The positions whose recorded values a tensor is computed from."""
    if isinstance(tensor, WeightGradient):
        return (tensor.position - 1, tensor.position)
    return (tensor.position,)


@singledispatch
def network_values(observable: object, samples: Samples) -> np.ndarray:
    """The per-network values whose mean estimates ``observable`` (a registry keyed on observable classes).

    Returns shape ``(samples.count,)``, every network (finite or not). For a :class:`Variance`, its
    second-moment part (the variance itself is not a mean of per-network values; see
    :func:`estimate`). Register a new statistic class with ``@network_values.register(MyStatistic)``.
    """
    known = ", ".join(cls.__name__ for cls in OBSERVABLE_CLASSES)
    raise MonteCarloError(f"no Monte Carlo estimator for {observable!r}; observables the estimators know: {known}")


@network_values.register
def _(observable: Mean, samples: Samples) -> np.ndarray:
    return _tensor_values(samples, observable.tensor, "mean")


@network_values.register
def _(observable: SecondMoment, samples: Samples) -> np.ndarray:
    return _tensor_values(samples, observable.tensor, "second_moment")


@network_values.register
def _(observable: Variance, samples: Samples) -> np.ndarray:
    return _tensor_values(samples, observable.tensor, "second_moment")


@network_values.register
def _(observable: NormRatio, samples: Samples) -> np.ndarray:
    return samples.per_position["norm_ratio"][:, samples.require(observable.tensor)]


@network_values.register
def _(observable: CrossMoment, samples: Samples) -> np.ndarray:
    return _pair_values(samples, observable.tensor.position)[0]


@network_values.register
def _(observable: Correlation, samples: Samples) -> np.ndarray:
    # The correlation is a ratio of means, not a mean: its per-network values are the estimate plus the
    # influence values of the delta method (their mean is the estimate; their spread and skewness are
    # the estimator's, which is what sample sizing reads).
    cross, own, partner = _pair_values(samples, observable.tensor.position)
    finite = samples.finite
    value, _ = ratio_correlation(cross[finite], own[finite], partner[finite])
    return value + correlation_influence(cross, own, partner, means=_pair_means(cross, own, partner, finite))


def _pair_values(samples: Samples, position: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Per-network :math:`\langle h, h'\rangle/n`, :math:`\|h\|^2/n`, :math:`\|h'\|^2/n` at ``position``."""
    if not samples.paired:
        raise MonteCarloError(
            "cross moments and correlations need paired inputs: describe a pair in the network's inputs "
            "(GaussianInput(correlation=c0) or FixedInput.pair(width, c0)), or sample with correlation=True"
        )
    column = samples.require(Signal(position))
    return tuple(samples.per_position[key][:, column]
                 for key in ("signal_cross", "signal_second_moment", "signal_partner_second_moment"))


def _pair_means(cross: np.ndarray, own: np.ndarray, partner: np.ndarray, finite: np.ndarray) -> tuple[float, float, float]:
    return float(np.mean(cross[finite])), float(np.mean(own[finite])), float(np.mean(partner[finite]))


def correlation_influence(cross: np.ndarray, own: np.ndarray, partner: np.ndarray, *,
                          means: tuple[float, float, float] | None = None) -> np.ndarray:
    r"""The delta-method influence values :math:`d_t` of :func:`ratio_correlation` (centred: mean 0).

    .. math:: d_t = \frac{a_t - \bar a}{\sqrt{\bar b \bar b'}}
              - \frac{\hat\rho}{2}\Big(\frac{b_t - \bar b}{\bar b} + \frac{b'_t - \bar b'}{\bar b'}\Big)

    ``means`` are :math:`(\bar a, \bar b, \bar b')` (default: the means of the arrays given).
    """
    a, b, bp = means if means is not None else (float(np.mean(cross)), float(np.mean(own)), float(np.mean(partner)))
    if not (b > 0 and bp > 0):
        raise MonteCarloError(
            f"the correlation is undefined: the mean squares of the two signals are estimated as {b} and {bp}; "
            "both must be positive"
        )
    scale = np.sqrt(b * bp)
    rho = a / scale
    return (cross - a) / scale - 0.5 * rho * ((own - b) / b + (partner - bp) / bp)


def ratio_correlation(cross: np.ndarray, own: np.ndarray, partner: np.ndarray) -> tuple[float, float]:
    r"""The correlation of a pair of signals as a ratio of means over networks, and its delta-method SE.

    Parameters
    ----------
    cross, own, partner
        Per-network averages :math:`a_t = \frac1n\langle h, h'\rangle`, :math:`b_t = \frac1n\|h\|^2`,
        :math:`b'_t = \frac1n\|h'\|^2` of :math:`T \ge 2` independent networks.

    Returns
    -------
    value, se
        :math:`\hat\rho = \bar a/\sqrt{\bar b\,\bar b'}`, the estimator of
        :math:`\rho = E[\langle h, h'\rangle]/\sqrt{E[\|h\|^2] E[\|h'\|^2]}` (Schoenholz et al.
        2017, eq. 3), and :math:`s_d/\sqrt T` with :math:`d_t` from :func:`correlation_influence`
        (the delta method: the first-order Taylor expansion of :math:`\hat\rho` about the three
        population means; van der Vaart 1998, *Asymptotic Statistics*, Thm. 3.1).

    Raises
    ------
    MonteCarloError
        When a mean square is estimated as zero (the correlation is undefined).
    """
    cross, own, partner = (np.asarray(v, dtype=np.float64) for v in (cross, own, partner))
    influence = correlation_influence(cross, own, partner)
    value = float(np.mean(cross)) / float(np.sqrt(np.mean(own) * np.mean(partner)))
    return value, float(np.std(influence, ddof=1) / np.sqrt(cross.shape[0]))


@network_values.register
def _(observable: NormRatioMoment, samples: Samples) -> np.ndarray:
    return network_values(NormRatio(observable.tensor), samples) ** observable.order


def _log_ratio(observable: Observable, samples: Samples) -> np.ndarray:
    """The log of each network's norm ratio; NaN where the signal is identically zero (log 0)."""
    ratio = network_values(NormRatio(observable.tensor), samples)
    with np.errstate(divide="ignore"):
        return np.where(ratio > 0, np.log(np.where(ratio > 0, ratio, 1.0)), np.nan)


@network_values.register
def _(observable: LogNormRatioMoment, samples: Samples) -> np.ndarray:
    """The power ``order`` of the log of each network's norm ratio; NaN where the signal is identically zero."""
    return _log_ratio(observable, samples) ** observable.order


@network_values.register
def _(observable: LogNormRatioVariance, samples: Samples) -> np.ndarray:
    """The square of the log norm ratio (the variance's second-moment part); NaN where the signal is zero."""
    return _log_ratio(observable, samples) ** 2


@network_values.register
def _(observable: DeadFraction, samples: Samples) -> np.ndarray:
    return (network_values(NormRatio(observable.tensor), samples) == 0).astype(np.float64)


@singledispatch
def _combine(observable: Observable, samples: Samples, finite: np.ndarray) -> tuple[float, float]:
    """Value and SE from the finite networks: by default the mean of :func:`network_values` and its SE."""
    return _mean_and_se(network_values(observable, samples)[finite])


@_combine.register
def _(observable: Correlation, samples: Samples, finite: np.ndarray) -> tuple[float, float]:
    cross, own, partner = _pair_values(samples, observable.tensor.position)
    return ratio_correlation(cross[finite], own[finite], partner[finite])


@_combine.register
def _(observable: Variance, samples: Samples, finite: np.ndarray) -> tuple[float, float]:
    first = _tensor_values(samples, observable.tensor, "mean")[finite]
    second = _tensor_values(samples, observable.tensor, "second_moment")[finite]
    return _variance(first, second)


def _live_logs(observable: Observable, samples: Samples, finite: np.ndarray) -> np.ndarray:
    logs = _log_ratio(observable, samples)[finite]
    live = logs[~np.isnan(logs)]
    if live.size < 2:
        raise MonteCarloError(f"the {observable.statistic} needs at least two networks whose signal is not identically "
                              f"zero, got {live.size}")
    return live


@_combine.register
def _(observable: LogNormRatioMoment, samples: Samples, finite: np.ndarray) -> tuple[float, float]:
    return _mean_and_se(_live_logs(observable, samples, finite) ** observable.order)


@_combine.register
def _(observable: LogNormRatioVariance, samples: Samples, finite: np.ndarray) -> tuple[float, float]:
    live = _live_logs(observable, samples, finite)
    return _variance(live, live**2)


def _variance(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    r"""Unbiased :math:`\hat\mu_2 - \hat\mu_1^2 + s_1^2/T` and its delta-method SE."""
    n = first.shape[0]
    mean1 = float(np.mean(first))
    var1 = float(np.var(first, ddof=1))
    value = float(np.mean(second)) - mean1 * mean1 + var1 / n
    influence = second - 2.0 * mean1 * first
    return value, float(np.std(influence, ddof=1) / np.sqrt(n))


# --- checking the arguments ---------------------------------------------------------------------


def _check_samples(samples: object) -> Samples:
    if not isinstance(samples, Samples):
        raise MonteCarloError(f"expected Samples from varprop.montecarlo.sample, got {samples!r}")
    return samples


def _check_observable(observable: object) -> str:
    if observable not in OBSERVABLES:
        raise MonteCarloError(
            f"unknown observable {observable!r}; accepted: an Observable of varprop.observables "
            f"({', '.join(cls.__name__ for cls in OBSERVABLE_CLASSES)}) or a name with a dense layer "
            f"({', '.join(OBSERVABLES)})"
        )
    return str(observable)


def _check_layer(layer: object, depth: int) -> int:
    if isinstance(layer, bool) or not isinstance(layer, Integral) or not 1 <= int(layer) <= depth:
        raise MonteCarloError(
            f"layer must be a dense-layer index from 1 to {depth} (the network has {depth} dense layers), "
            f"got {layer!r}"
        )
    return int(layer)


def _resolve(samples: Samples, observable: object) -> Observable:
    """``observable`` checked against the sampled network (a :class:`MonteCarloError` if it is not in it)."""
    try:
        return resolve(observable, samples.network)
    except VarpropError as exc:
        raise MonteCarloError(str(exc)) from None


def _as_observable(samples: Samples, observable: object, layer: object) -> Observable | tuple[str, int]:
    """An :class:`Observable`, or ``(name, layer)`` for the Monte Carlo-only names."""
    if isinstance(observable, Observable):
        if layer is not None:
            raise MonteCarloError(
                f"an Observable carries its own position; give no layer (got layer={layer!r} with {observable!r})"
            )
        return _resolve(samples, observable)
    name = _check_observable(observable)
    column = _check_layer(layer, samples.depth)
    if name in _EXTRA:
        return name, column
    return from_name(name, column, samples.network)


def _finite(samples: Samples) -> tuple[np.ndarray, int]:
    finite = samples.finite
    n = int(np.count_nonzero(finite))
    if n < 2:
        raise MonteCarloError(
            f"an estimate needs at least 2 finite networks, got {n} of {samples.count} "
            f"(overflow per layer: {samples.overflow.tolist()}, NaN per layer: {samples.nan.tolist()})"
        )
    return finite, n


def _mean_and_se(values: np.ndarray) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1) / np.sqrt(values.shape[0]))


# --- public -------------------------------------------------------------------------------------


def estimate(samples: Samples, observable: Observable | str, layer: int | None = None) -> Estimate:
    r"""Estimate ``observable`` from ``samples``.

    Parameters
    ----------
    samples
        The output of :func:`~varprop.montecarlo.sample`.
    observable
        An :class:`~varprop.observables.Observable` (say ``SecondMoment(Signal(3))``, or
        ``Mean(Gradient(-1))``), or one of the names :data:`OBSERVABLES`.
    layer
        With a name: the dense layer :math:`l`, from 1 to ``samples.depth``. With an
        :class:`~varprop.observables.Observable`: omitted (the observable holds its position).

    Returns
    -------
    Estimate
        Value, standard error (across networks) and the number of finite networks used.

    Raises
    ------
    MonteCarloError
        For an unknown observable or one not in the sampled network, a layer out of range, fewer
        than two finite networks, or a correlation whose denominator is estimated as zero.
    """
    samples = _check_samples(samples)
    target = _as_observable(samples, observable, layer)
    finite, n = _finite(samples)
    if isinstance(target, Observable):
        value, se = _combine(target, samples, finite)
    else:
        value, se = _extra(samples, *target, finite)
    return Estimate(value=float(value), se=max(se, rounding_error(samples.network, value, n)), n=n,
                    excluded=samples.count - n)


def rounding_error(network: object, value: float, count: int) -> float:
    r"""A bound on the float64 rounding error of an estimate: :math:`\gamma_K |\hat\mu|`, :math:`\gamma_K = Ku/(1 - Ku)`.

    Higham (2002), *Accuracy and Stability of Numerical Algorithms*, Lemma 3.1 and Sec. 3.1: a value
    computed with K roundings of unit roundoff :math:`u = 2^{-53}` is within :math:`\gamma_K` of the
    exact one, relatively, when the terms do not cancel. K counts two roundings per multiply-add of
    every dense layer's rows (its fan-in and fan-out), the norms and ratios, and the
    :math:`\lceil\log_2 T\rceil` levels of numpy's pairwise sum over T networks. The SE of an
    estimate is never reported below this bound: an observable that is the same constant in every
    network (the norm ratio through orthogonal layers) then has an SE at the rounding level instead
    of 0, so it is judged equal to its prediction up to floating point, and a formula that is off
    by more than the rounding still FAILs.
    """
    if not math.isfinite(value) or value == 0.0:
        return 0.0
    widths = sum(int(w) for layer in network.dense_layers for w in (layer.fan_in, layer.fan_out))
    k = 2 * widths + 8 + math.ceil(math.log2(max(count, 2)))
    u = 2.0**-53
    return k * u / (1.0 - k * u) * abs(value)


def _extra(samples: Samples, name: str, layer: int, finite: np.ndarray) -> tuple[float, float]:
    """The Monte Carlo-only names: spreads of per-network values, and the correlation of two inputs."""
    position = samples.network.dense_positions[layer - 1]
    if name == "x_norm_ratio_second_moment":
        return _mean_and_se(network_values(NormRatio(Signal(position - 1)), samples)[finite] ** 2)
    if name == "y_mean_square_second_moment":
        return _mean_and_se(network_values(SecondMoment(Signal(position)), samples)[finite] ** 2)
    if not samples.paired:
        raise MonteCarloError(
            "y_correlation needs paired inputs: sample the networks with correlation=True (or a partner)"
        )
    cross, own, partner = (array[finite] for array in _pair_values(samples, position))
    if not (np.mean(own) > 0 and np.mean(partner) > 0):
        raise MonteCarloError(
            f"the correlation of y at layer {layer} is undefined: E[y^2] is estimated as {np.mean(own)} and "
            f"E[y'^2] as {np.mean(partner)}; both must be positive"
        )
    return ratio_correlation(cross, own, partner)


def per_network_values(samples: Samples, observable: Observable) -> np.ndarray:
    """The per-network values of the finite networks whose mean estimates ``observable``.

    For a :class:`~varprop.observables.Variance`, its second-moment part (what sizes a sample by its
    skewness). Shape ``(n,)``, ``n`` the number of finite networks (for a
    :class:`~varprop.observables.LogNormRatioMoment` or
    :class:`~varprop.observables.LogNormRatioVariance`, of those whose signal is not identically zero).

    Raises
    ------
    MonteCarloError
        For something that is not an :class:`~varprop.observables.Observable` of the sampled network.
    """
    samples = _check_samples(samples)
    observable = _resolve(samples, observable)
    values = network_values(observable, samples)[samples.finite]
    return values[~np.isnan(values)] if isinstance(observable, LogNormRatioMoment | LogNormRatioVariance) else values


def health(samples: Samples, observable: Observable) -> dict[str, int]:
    """Counts of the networks that trouble ``observable``, at the positions it is computed from.

    Returns
    -------
    dict
        ``excluded``: networks with any non-finite value (left out of every estimate);
        ``overflow``, ``nan``: networks whose values at the observable's positions (for a weight
        gradient, its layer's input and output) contain ``inf`` and no NaN, or NaN;
        ``zero_networks``: finite networks whose observed tensor is identically zero (a dead
        rectifier layer upstream, or underflow).
    """
    samples = _check_samples(samples)
    observable = _resolve(samples, observable)
    nan = np.zeros(samples.count, dtype=bool)
    inf = np.zeros(samples.count, dtype=bool)
    for position in _positions(observable.tensor):
        column = samples.column(position)
        if not (samples.position_nan[column] or samples.position_overflow[column]):
            continue  # every recorded value there is finite
        for name, array in samples.per_position.items():
            if not samples.records(name, position):
                continue
            nan |= np.isnan(array[:, column])
            inf |= np.isinf(array[:, column])
    inf &= ~nan
    square = _tensor_values(samples, observable.tensor, "second_moment")
    return {
        "excluded": samples.excluded,
        "overflow": int(np.count_nonzero(inf)),
        "nan": int(np.count_nonzero(nan)),
        "zero_networks": int(np.count_nonzero((square == 0) & samples.finite)),
    }
