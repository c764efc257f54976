r"""Verdicts: does a Monte Carlo estimate agree with a prediction, to a given tolerance, with stated power?

For an estimate :math:`\hat\mu` with standard error :math:`\operatorname{SE}` from :math:`n`
networks and a prediction :math:`\mu_0`,

.. math:: t = \frac{\hat\mu - \mu_0}{\operatorname{SE}}, \qquad p = 2\,F_{n-1}(-|t|), \qquad
          \text{resolution} = \frac{(t_\text{crit} + z_{\text{power}})\,\operatorname{SE}}{|\mu_0|},

with :math:`F_{n-1}` Student's t distribution with :math:`n - 1` degrees of freedom (the reference
for a studentized mean of :math:`n` values; indistinguishable from the normal beyond a few hundred
networks, and the honest one for ``samples = 20``) and :math:`z_\text{power} = \Phi^{-1}(0.9)`. The
outcome is

* ``FAIL`` if :math:`|t| > t_\text{crit}`: the estimate contradicts the prediction;
* ``PASS`` if :math:`|t| \le t_\text{crit}` and resolution :math:`\le` ``rtol``: the estimate agrees,
  and a prediction off by ``rtol`` would have been contradicted with probability at least
  ``power`` (90 %): the power of the two-sided test against an error of ``rtol`` is
  :math:`\Phi(\text{rtol}\,|\mu_0|/\operatorname{SE} - t_\text{crit}) \ge \Phi(z_\text{power})`;
* ``INCONCLUSIVE`` otherwise: the estimate agrees but is too noisy; since SE shrinks as
  :math:`1/\sqrt n`, about :math:`\lceil n\,(\text{resolution}/\text{rtol})^2 \rceil` networks
  would resolve ``rtol`` with that power (``samples_needed``).

When :math:`\mu_0 = 0` a relative tolerance means nothing: the resolution is then the absolute
:math:`(t_\text{crit} + z_\text{power})\operatorname{SE}` and the tolerance is the absolute ``atol``
(in the observable's units; ``rtol`` read as an absolute number when no ``atol`` is given), stated
in the message.

:math:`t_\text{crit} = F_{n-1}^{-1}(1 - \alpha'/2)` for a two-sided test at level :math:`\alpha'`.
With :math:`m` claims checked together the family-wise error rate is held at :math:`\alpha` by
Holm's step-down procedure (Holm 1979): sort the p-values
:math:`p_{(1)} \le \dots \le p_{(m)}`, reject :math:`H_{(k)}` while
:math:`p_{(k)} \le \alpha/(m - k + 1)`, and stop at the first that is not rejected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real

from scipy.special import ndtri, stdtr, stdtrit

from .errors import MonteCarloError
from .estimators import Estimate
from .limits import networks_needed

__all__ = [
    "PASS",
    "FAIL",
    "INCONCLUSIVE",
    "Verdict",
    "judge",
    "judge_all",
    "holm",
    "holm_critical_values",
    "POWER",
    "z_power",
    "t_p_value",
]

PASS = "PASS"
FAIL = "FAIL"
INCONCLUSIVE = "INCONCLUSIVE"
#: The power a PASS guarantees against an error of exactly the tolerance.
POWER = 0.9


@dataclass(frozen=True)
class Verdict:
    """The outcome of comparing one estimate with one prediction.

    Attributes
    ----------
    estimate, se, n
        The Monte Carlo estimate, its standard error and the number of networks.
    prediction
        The predicted value.
    z, p_value
        The studentized deviation of the estimate from the prediction and its two-sided p-value
        (Student's t with ``n - 1`` degrees of freedom).
    z_crit
        The critical value used (after the Holm-Bonferroni correction; a t quantile).
    resolution
        :math:`(t_\\text{crit} + z_\\text{power})\\,SE/|\\text{prediction}|` (absolute when the
        prediction is 0): the smallest relative error caught with probability ``power``.
    rtol
        The tolerance asked for (the absolute ``atol`` when the prediction is 0).
    power
        The power a PASS guarantees against an error of ``rtol``.
    outcome
        ``"PASS"``, ``"FAIL"`` or ``"INCONCLUSIVE"``.
    samples_needed
        For ``INCONCLUSIVE``: about how many networks would resolve ``rtol``; else ``None``.
    message
        One readable sentence saying why.
    """

    estimate: float
    se: float
    n: int
    prediction: float
    z: float
    p_value: float
    z_crit: float
    resolution: float
    rtol: float
    outcome: str
    samples_needed: int | None
    message: str
    power: float = POWER

    @property
    def passed(self) -> bool:
        """True for ``PASS``."""
        return self.outcome == PASS


def format_z(z: float, width: int = 0) -> str:
    """``z`` with two decimals, in exponent form beyond 1e6 (a prediction of 1e300 gives z near
    -1e301, which fixed-point notation would print as 300 digits)."""
    return f"{z:+{width}.2f}" if not abs(z) >= 1e6 or math.isinf(z) else f"{z:+{width}.2e}"


def _finite(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise MonteCarloError(f"{what} must be a finite real number, got {value!r}")
    return float(value)


def _check_alpha(alpha: object) -> float:
    value = _finite(alpha, "alpha")
    if not 0.0 < value < 1.0:
        raise MonteCarloError(f"alpha must be strictly between 0 and 1, got {alpha!r}")
    return value


def _check_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < 1:
        raise MonteCarloError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _z_crit(level: float, df: float | None = None) -> float:
    """Two-sided critical value at level ``level``: :math:`\\Phi^{-1}(1 - level/2)`, or the t quantile with ``df``."""
    if df is None or not math.isfinite(df):
        return float(-ndtri(level / 2.0))
    return float(-stdtrit(df, level / 2.0))


def z_power(power: float = POWER) -> float:
    r""":math:`\Phi^{-1}(\text{power})`: the margin added to the critical value so an error of the tolerance is
    caught with probability ``power`` (1.2816 for 90 %)."""
    value = _finite(power, "power")
    if not 0.5 <= value < 1.0:
        raise MonteCarloError(f"power must be in [0.5, 1), got {power!r}")
    return float(ndtri(value))


def t_p_value(z: float, n: int | None) -> float:
    r"""Two-sided p-value of a studentized mean ``z`` of ``n`` values: Student's t with ``n - 1`` degrees of
    freedom (the normal when ``n`` is ``None``)."""
    if math.isinf(z):
        return 0.0
    if n is None:
        return math.erfc(abs(z) / math.sqrt(2.0))
    return float(2.0 * stdtr(max(n - 1, 1), -abs(z)))


def holm_critical_values(alpha: float, m: int, df: float | None = None) -> tuple[float, ...]:
    r"""The critical values of Holm's steps: :math:`\Phi^{-1}(1 - \alpha / (2 (m - k + 1)))`, k = 1..m
    (Student's t quantiles with ``df`` degrees of freedom when given).

    The first is the Bonferroni value :math:`\Phi^{-1}(1 - \alpha/(2m))`, the last the uncorrected
    :math:`\Phi^{-1}(1 - \alpha/2)`.
    """
    alpha = _check_alpha(alpha)
    m = _check_count(m, "m (the number of claims)")
    return tuple(_z_crit(alpha / (m - k), df) for k in range(m))


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    r"""Holm's step-down procedure: which hypotheses are rejected at family-wise level ``alpha``.

    Sort the p-values ascending; reject the k-th smallest (k = 1..m) while
    :math:`p_{(k)} \le \alpha/(m - k + 1)`; stop at the first that is not. Ties keep input order.

    Returns
    -------
    list of bool
        ``True`` where the hypothesis is rejected, in the order of ``p_values``.
    """
    alpha = _check_alpha(alpha)
    p = [_finite(value, f"p_values[{i}]") for i, value in enumerate(p_values)]
    for i, value in enumerate(p):
        if not 0.0 <= value <= 1.0:
            raise MonteCarloError(f"p_values[{i}] must be in [0, 1], got {value!r}")
    rejected = [False] * len(p)
    m = len(p)
    for k, index in enumerate(sorted(range(m), key=lambda i: p[i])):
        if p[index] > alpha / (m - k):
            break
        rejected[index] = True
    return rejected


#: Relative difference below which an estimate equals its prediction to float64 rounding (``2**-40``,
#: about 1e-12: the rounding of a per-network average over thousands of units, and of the mean of
#: those over millions of networks, stays far below it).
ROUNDING = 2.0**-40


def _z_and_p(estimate: float, se: float, prediction: float, n: int | None = None) -> tuple[float, float]:
    r"""The studentized deviation and its p-value.

    An observable can have no spread at all across networks (the mean square after an RMSNorm with
    :math:`\epsilon = 0` is 1 for every network): then SE is 0, or rounding noise, and the estimate
    equals the prediction up to rounding. A deviation within :data:`ROUNDING` of the values' size is
    no deviation (t = 0); a larger one with SE = 0 is an infinite t (a contradiction), never a
    division by zero.
    """
    difference = estimate - prediction
    if abs(difference) <= ROUNDING * max(abs(estimate), abs(prediction)):
        z = 0.0
    elif se == 0.0:
        z = math.copysign(math.inf, difference)
    else:
        z = difference / se
    return z, t_p_value(z, n)


def tolerance_text(prediction: float, rtol: float, atol: float | None) -> str:
    """How the tolerance reads in a message: ``rtol 1%``, or the absolute ``atol`` for a zero prediction."""
    if prediction != 0.0:
        return f"rtol {rtol:.3g}"
    if atol is None:
        return f"atol {rtol:.3g} (prediction 0: rtol read as an absolute tolerance in the observable's units)"
    return f"atol {atol:.3g} (prediction 0: an absolute tolerance in the observable's units)"


def _verdict(
    estimate: float, se: float, n: int, prediction: float, rtol: float, z_crit: float, rejected: bool,
    power: float = POWER, atol: float | None = None,
) -> Verdict:
    z, p_value = _z_and_p(estimate, se, prediction, n)
    absolute = prediction == 0.0
    margin = z_crit + z_power(power)
    tolerance = (atol if atol is not None else rtol) if absolute else rtol
    resolution = margin * se if absolute else margin * se / abs(prediction)
    described = tolerance_text(prediction, rtol, atol)
    shown = f"{resolution:.3g}" if absolute else f"{resolution:.3%}"
    head = f"estimate {estimate:.6g} ± {se:.3g} (n={n}) vs prediction {prediction:.6g}: t = {z:.3g}"
    needed = None
    if rejected:
        outcome = FAIL
        message = f"{head}, |t| > t_crit = {z_crit:.3g} (p = {p_value:.3g}): the prediction is contradicted"
    elif resolution <= tolerance:
        outcome = PASS
        message = (f"{head}, |t| <= t_crit = {z_crit:.3g}, and the resolution {shown} is within {described}: an error "
                   f"of the tolerance would have been caught with at least {power:.0%} power")
    else:
        outcome = INCONCLUSIVE
        needed = networks_needed(n, resolution / tolerance)  # saturates instead of overflowing
        message = (
            f"{head}, |t| <= t_crit = {z_crit:.3g}, but the resolution {shown} exceeds {described}: "
            f"about {needed} networks are needed to resolve it with {power:.0%} power"
        )
    return Verdict(
        estimate=estimate,
        se=se,
        n=n,
        prediction=prediction,
        z=z,
        p_value=p_value,
        z_crit=z_crit,
        resolution=resolution,
        rtol=tolerance,
        outcome=outcome,
        samples_needed=needed,
        message=message,
        power=power,
    )


def _check_inputs(prediction: object, estimate: object, se: object, n: object, rtol: object) -> tuple:
    prediction = _finite(prediction, "prediction")
    estimate = _finite(estimate, "estimate")
    se = _finite(se, "standard error")
    if se < 0:
        raise MonteCarloError(f"standard error must be non-negative, got {se!r}")
    n = _check_count(n, "n (the number of networks)")
    rtol = _finite(rtol, "rtol")
    if rtol <= 0:
        raise MonteCarloError(f"rtol must be positive, got {rtol!r}")
    return prediction, estimate, se, n, rtol


def _check_atol(atol: object) -> float | None:
    if atol is None:
        return None
    value = _finite(atol, "atol")
    if value <= 0:
        raise MonteCarloError(f"atol must be positive, got {atol!r}")
    return value


def judge(
    prediction: float, estimate: float, se: float, n: int, *, rtol: float, alpha: float = 0.05, m: int = 1,
    power: float = POWER, atol: float | None = None,
) -> Verdict:
    r"""The verdict on one prediction, as one of ``m`` claims checked together.

    A claim judged on its own against ``m`` uses the Bonferroni critical value
    :math:`F_{n-1}^{-1}(1 - \alpha/(2m))` (Holm's first, most conservative step); to judge ``m``
    claims together with Holm's step-down, use :func:`judge_all`.

    Parameters
    ----------
    prediction
        The predicted value of the observable.
    estimate, se, n
        The estimate, its standard error and the number of networks.
    rtol
        Relative tolerance to resolve.
    alpha
        Family-wise significance level.
    m
        Number of claims checked together.
    power
        The probability with which an error of ``rtol`` must be caught for a PASS (default 0.9).
    atol
        Absolute tolerance (in the observable's units) used when ``prediction == 0``; ``rtol`` is read as
        one when it is not given.
    """
    prediction, estimate, se, n, rtol = _check_inputs(prediction, estimate, se, n, rtol)
    atol = _check_atol(atol)
    z_crit = holm_critical_values(alpha, m, n - 1)[0]
    z, _ = _z_and_p(estimate, se, prediction, n)
    return _verdict(estimate, se, n, prediction, rtol, z_crit, abs(z) > z_crit, power, atol)


def judge_all(
    predictions: Sequence[float], estimates: Sequence[Estimate], *, rtol: float, alpha: float = 0.05,
    power: float = POWER, atol: float | None = None,
) -> list[Verdict]:
    r"""Verdicts on several predictions checked together, with Holm's step-down procedure.

    Claims rejected by :func:`holm` at family-wise level ``alpha`` ``FAIL``; each carries the
    critical value of its own Holm step. The others carry the critical value of the step where
    the procedure stopped (so :math:`|t| \le t_\text{crit}` holds for them) and ``PASS`` or are
    ``INCONCLUSIVE`` by their resolution.

    Parameters
    ----------
    predictions
        One predicted value per claim.
    estimates
        One :class:`~varprop.montecarlo.estimators.Estimate` per claim, in the same order.
    rtol
        Relative tolerance, the same for every claim.
    alpha
        Family-wise significance level.
    power, atol
        As for :func:`judge`.
    """
    if len(predictions) != len(estimates):
        raise MonteCarloError(
            f"got {len(predictions)} predictions but {len(estimates)} estimates; give one estimate per prediction"
        )
    if not predictions:
        raise MonteCarloError("judge_all needs at least one prediction")
    atol = _check_atol(atol)
    checked = []
    for index, (prediction, est) in enumerate(zip(predictions, estimates)):
        if not isinstance(est, Estimate):
            raise MonteCarloError(f"estimates[{index}] must be an Estimate, got {est!r}")
        checked.append(_check_inputs(prediction, est.value, est.se, est.n, rtol))
    m = len(checked)
    p_values = [_z_and_p(e, s, p, n)[1] for p, e, s, n, _ in checked]
    rejected = holm(p_values, alpha)
    order = sorted(range(m), key=lambda i: p_values[i])
    stop = sum(rejected)
    verdicts: list[Verdict | None] = [None] * m
    for rank, index in enumerate(order):
        prediction, estimate, se, n, tol = checked[index]
        criticals = holm_critical_values(alpha, m, n - 1)
        z_crit = criticals[rank] if rejected[index] else criticals[min(stop, m - 1)]
        verdicts[index] = _verdict(estimate, se, n, prediction, tol, z_crit, rejected[index], power, atol)
    return [v for v in verdicts if v is not None]
