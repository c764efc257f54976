r"""Verdicts: does a Monte Carlo estimate agree with a prediction, to a given tolerance?

For an estimate :math:`\hat\mu` with standard error :math:`\operatorname{SE}` from :math:`n`
networks and a prediction :math:`\mu_0`,

.. math:: z = \frac{\hat\mu - \mu_0}{\operatorname{SE}}, \qquad p = 2\,(1 - \Phi(|z|)), \qquad
          \text{resolution} = \frac{z_\text{crit}\,\operatorname{SE}}{|\mu_0|},

and the outcome is

* ``FAIL`` if :math:`|z| > z_\text{crit}`: the estimate contradicts the prediction;
* ``PASS`` if :math:`|z| \le z_\text{crit}` and resolution :math:`\le` ``rtol``: the estimate agrees,
  and was precise enough that a prediction off by more than ``rtol`` would have been caught;
* ``INCONCLUSIVE`` otherwise: the estimate agrees but is too noisy; since SE shrinks as
  :math:`1/\sqrt n`, about :math:`\lceil n\,(\text{resolution}/\text{rtol})^2 \rceil` networks
  would resolve ``rtol`` (``samples_needed``).

When :math:`\mu_0 = 0` a relative tolerance means nothing: the resolution is then the absolute
:math:`z_\text{crit}\operatorname{SE}` and ``rtol`` is read as an absolute tolerance.

:math:`z_\text{crit} = \Phi^{-1}(1 - \alpha'/2)` for a two-sided test at level :math:`\alpha'`.
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

from scipy.special import ndtri

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
]

PASS = "PASS"
FAIL = "FAIL"
INCONCLUSIVE = "INCONCLUSIVE"


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
        The z-score of the estimate under the prediction and its two-sided normal p-value.
    z_crit
        The critical value used (after the Holm-Bonferroni correction).
    resolution
        :math:`z_\\text{crit}\\,SE/|\\text{prediction}|` (absolute :math:`z_\\text{crit} SE` when the
        prediction is 0).
    rtol
        The tolerance asked for (absolute when the prediction is 0).
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


def _z_crit(level: float) -> float:
    """Two-sided critical value at level ``level``: :math:`\\Phi^{-1}(1 - level/2)`."""
    return float(-ndtri(level / 2.0))


def holm_critical_values(alpha: float, m: int) -> tuple[float, ...]:
    r"""The z critical values of Holm's steps: :math:`\Phi^{-1}(1 - \alpha / (2 (m - k + 1)))`, k = 1..m.

    The first is the Bonferroni value :math:`\Phi^{-1}(1 - \alpha/(2m))`, the last the uncorrected
    :math:`\Phi^{-1}(1 - \alpha/2)`.
    """
    alpha = _check_alpha(alpha)
    m = _check_count(m, "m (the number of claims)")
    return tuple(_z_crit(alpha / (m - k)) for k in range(m))


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


def _z_and_p(estimate: float, se: float, prediction: float) -> tuple[float, float]:
    if se == 0.0:
        z = 0.0 if estimate == prediction else math.copysign(math.inf, estimate - prediction)
    else:
        z = (estimate - prediction) / se
    return z, math.erfc(abs(z) / math.sqrt(2.0))


def _verdict(
    estimate: float, se: float, n: int, prediction: float, rtol: float, z_crit: float, rejected: bool
) -> Verdict:
    z, p_value = _z_and_p(estimate, se, prediction)
    absolute = prediction == 0.0
    resolution = z_crit * se if absolute else z_crit * se / abs(prediction)
    tolerance = f"atol {rtol:.3g} (prediction 0)" if absolute else f"rtol {rtol:.3g}"
    shown = f"{resolution:.3g}" if absolute else f"{resolution:.3%}"
    head = f"estimate {estimate:.6g} ± {se:.3g} (n={n}) vs prediction {prediction:.6g}: z = {z:.3g}"
    needed = None
    if rejected:
        outcome = FAIL
        message = f"{head}, |z| > z_crit = {z_crit:.3g} (p = {p_value:.3g}): the prediction is contradicted"
    elif resolution <= rtol:
        outcome = PASS
        message = f"{head}, |z| <= z_crit = {z_crit:.3g}, and the resolution {shown} is within {tolerance}"
    else:
        outcome = INCONCLUSIVE
        needed = networks_needed(n, resolution / rtol)  # saturates instead of overflowing
        message = (
            f"{head}, |z| <= z_crit = {z_crit:.3g}, but the resolution {shown} exceeds {tolerance}: "
            f"about {needed} networks are needed to resolve it"
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
        rtol=rtol,
        outcome=outcome,
        samples_needed=needed,
        message=message,
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


def judge(
    prediction: float, estimate: float, se: float, n: int, *, rtol: float, alpha: float = 0.05, m: int = 1
) -> Verdict:
    r"""The verdict on one prediction, as one of ``m`` claims checked together.

    A claim judged on its own against ``m`` uses the Bonferroni critical value
    :math:`\Phi^{-1}(1 - \alpha/(2m))` (Holm's first, most conservative step); to judge ``m``
    claims together with Holm's step-down, use :func:`judge_all`.

    Parameters
    ----------
    prediction
        The predicted value of the observable.
    estimate, se, n
        The estimate, its standard error and the number of networks.
    rtol
        Relative tolerance to resolve (absolute when ``prediction == 0``).
    alpha
        Family-wise significance level.
    m
        Number of claims checked together.
    """
    prediction, estimate, se, n, rtol = _check_inputs(prediction, estimate, se, n, rtol)
    z_crit = holm_critical_values(alpha, m)[0]
    z, _ = _z_and_p(estimate, se, prediction)
    return _verdict(estimate, se, n, prediction, rtol, z_crit, abs(z) > z_crit)


def judge_all(
    predictions: Sequence[float], estimates: Sequence[Estimate], *, rtol: float, alpha: float = 0.05
) -> list[Verdict]:
    r"""Verdicts on several predictions checked together, with Holm's step-down procedure.

    Claims rejected by :func:`holm` at family-wise level ``alpha`` ``FAIL``; each carries the
    critical value of its own Holm step. The others carry the critical value of the step where
    the procedure stopped (so :math:`|z| \le z_\text{crit}` holds for them) and ``PASS`` or are
    ``INCONCLUSIVE`` by their resolution.

    Parameters
    ----------
    predictions
        One predicted value per claim.
    estimates
        One :class:`~varprop.montecarlo.estimators.Estimate` per claim, in the same order.
    rtol
        Relative tolerance (absolute for a zero prediction), the same for every claim.
    alpha
        Family-wise significance level.
    """
    if len(predictions) != len(estimates):
        raise MonteCarloError(
            f"got {len(predictions)} predictions but {len(estimates)} estimates; give one estimate per prediction"
        )
    if not predictions:
        raise MonteCarloError("judge_all needs at least one prediction")
    checked = []
    for index, (prediction, est) in enumerate(zip(predictions, estimates)):
        if not isinstance(est, Estimate):
            raise MonteCarloError(f"estimates[{index}] must be an Estimate, got {est!r}")
        checked.append(_check_inputs(prediction, est.value, est.se, est.n, rtol))
    m = len(checked)
    criticals = holm_critical_values(alpha, m)
    p_values = [_z_and_p(e, s, p)[1] for p, e, s, _, _ in checked]
    rejected = holm(p_values, alpha)
    order = sorted(range(m), key=lambda i: p_values[i])
    stop = sum(rejected)
    verdicts: list[Verdict | None] = [None] * m
    for rank, index in enumerate(order):
        z_crit = criticals[rank] if rejected[index] else criticals[min(stop, m - 1)]
        prediction, estimate, se, n, tol = checked[index]
        verdicts[index] = _verdict(estimate, se, n, prediction, tol, z_crit, rejected[index])
    return [v for v in verdicts if v is not None]
