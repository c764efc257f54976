r"""Check claims against sampled networks: one verdict per claim, with a known error rate and stated power.

A claim (:class:`~varprop.claims.Claim`) or a claim family (:class:`~varprop.claims.ClaimFamily`) is
checked according to its exactness class:

``exact`` and ``gaussian-exact``
    a t-test of the prediction at the family's width *and* at the small widths of its sweep
    (n = 2..8): an exact claim must hold at every width, so any test that fails fails the claim.
    The claim passes when it is resolved (resolution :math:`\le` ``rtol``, see
    :mod:`varprop.montecarlo.verdict`: an error of ``rtol`` is caught with 90 % power) at its own
    width; at the narrow widths, where per-network values are heavy-tailed and millions of networks
    would be needed to resolve 1 %, it must not be contradicted, and the resolution reached is reported.
``asymptotic``
    judged on its limit, always over a sweep of at least three widths. The relative deviation
    :math:`d(n) = (\hat\mu_n - \mu_0(n))/|\mu_0(n)|` measured at every width is fitted by weighted
    least squares (weights :math:`1/\operatorname{SE}(d(n))^2`) with

    .. math:: d(n) = c + \frac{a}{n} \quad\Bigl(+ \frac{b}{n^2} \text{ with four or more widths}\Bigr),

    the standard errors of :math:`c, a, b` from the per-width SEs, :math:`(X^\top W X)^{-1}`; the
    fit's :math:`\chi^2` on its :math:`\nu` degrees of freedom is reported. The claim FAILs when the limit :math:`c` is significantly different from 0
    (the test of :math:`c = 0` is rejected within the Holm family) *and* :math:`|\hat c| >`
    ``rtol``; it PASSes when :math:`|\hat c| \le` ``rtol`` and the limit is resolved,
    :math:`(z_\text{crit} + z_{0.9})\operatorname{SE}(c) \le` ``rtol`` (a limit off by ``rtol``
    is caught with 90 % power); it is INCONCLUSIVE otherwise. The samples are allocated over the
    widths to reach that resolution at the least cost (below).
``approximation``
    with a ``tolerance`` on the claim: at every width, FAIL when :math:`|d|` is significantly beyond
    the tolerance (the test of :math:`|d| \le` tolerance rejects within the Holm family), PASS when
    :math:`|d| + z_\text{crit}\operatorname{SE}(d) \le` tolerance at every width; without one, no
    verdict: the deviation at each width is reported (outcome ``MEASURED``).

All tests of the claims checked together form one family: Holm's step-down procedure holds the
family-wise false-alarm rate at ``alpha``. Resolutions use the Bonferroni critical value. Law claims
(:class:`~varprop.montecarlo.laws.LawClaim`) checked with :func:`check_family` join the same family
with two tests each (the Kolmogorov-Smirnov test and the exact test of the dead count); ``varprop
check --all`` checks the catalogue's law claims (:func:`varprop.catalogue.law_claims`) this way.

**Guards.** A claim with excluded networks (overflow to inf, NaN) at any width is ``INCONCLUSIVE``,
with the counts: a verdict never rests on a silently filtered sample. Per-network values of narrow
networks are skewed; for a right-skewed sample the studentized mean has a heavy *left* tail, so a
contradiction in that direction with fewer networks than the Edgeworth bound asks for (see
:func:`_skew_minimum`) is ``INCONCLUSIVE``; a contradiction in the direction skewness makes rarer
stands (the normal test is conservative there).

**Sample sizes.** When ``samples`` is not given, a pilot of 2,000 networks per network (from its own
seed stream, then discarded) estimates each observable's per-network spread and skewness; the main
sample is sized from the pilot alone, never from the main sample (a size chosen from the sample's
own spread would correlate with its mean when the values are skewed). A claim at one width needs
:math:`T = 1.15\,((z_\text{crit} + z_{0.9})\,\sigma/(\text{rtol}\,|\mu_0|))^2` networks (twice
``rtol`` at an exact claim's narrow widths), at least the Edgeworth skew minimum, up to
``max_samples`` networks and ``max_floats`` drawn weights per network and width. An asymptotic sweep
needs :math:`\operatorname{SE}(c) \le \text{rtol}/(z_\text{crit} + z_{0.9})`: with :math:`c = \sum_i
\lambda_i d_i` the fitted limit, :math:`\sigma_i` the per-network spread at width :math:`n_i` and
:math:`\kappa_i` the weights drawn per network there, the cheapest allocation is
:math:`T_i \propto |\lambda_i|\sigma_i/\sqrt{\kappa_i}`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.special import ndtr

from ..claims import Claim, ClaimFamily, derive_families
from ..errors import VarpropError, abbreviate
from ..network import Network
from ..observables import Observable, from_name
from . import limits
from .engines import Engine, check_engine, select_engine
from .errors import MonteCarloError
from .estimators import Estimate, estimate, health, per_network_values
from .executors import Executor, executor_from
from .sampler import SampleRequest, sample_each
from . import laws
from .verdict import (
    FAIL, INCONCLUSIVE, PASS, POWER, Verdict, _z_and_p, format_z, holm, holm_critical_values, judge, t_p_value,
    tolerance_text, z_power,
)

__all__ = ["MEASURED", "Measurement", "LimitFit", "fit_limit", "CheckResult", "check", "check_all", "check_family",
           "FamilyResult", "judge_values", "format_results", "DEFAULT_RTOL", "MIN_SWEEP"]

MEASURED = "MEASURED"
DEFAULT_RTOL = 0.01
#: The fewest widths an asymptotic claim is checked over (two parameters, c and a, and one degree of freedom).
MIN_SWEEP = 3
_PILOT = 2_000
_SAFETY = 1.15


@dataclass(frozen=True)
class Measurement:
    """One claim at one width: the estimate, the relative deviation and (if tested alone) the verdict."""

    width: int
    claim: Claim
    estimate: Estimate
    deviation: float
    deviation_se: float
    verdict: Verdict | None
    health: Mapping[str, float]
    note: str = ""  # why the networks here cannot be judged (exclusions), empty when they can
    engine: str = "full"  # the sampling engine that drew the networks of this estimate

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "width": self.width,
            "prediction": self.claim.value,
            "estimate": _json_number(self.estimate.value),
            "se": _json_number(self.estimate.se),
            "n": self.estimate.n,
            "networks": self.estimate.n,  # the same count, in the report's vocabulary ("n" is kept for old readers)
            "deviation": _json_number(self.deviation),
            "deviation_se": _json_number(self.deviation_se),
            "engine": self.engine,
            **{key: _json_number(value) for key, value in self.health.items()},
        }
        if self.note:
            out["note"] = self.note
        if self.verdict is not None:
            v = self.verdict
            out.update(z=v.z, p_value=v.p_value, z_crit=v.z_crit, resolution=v.resolution, outcome=v.outcome,
                       samples_needed=v.samples_needed, power=v.power)
        return out


def _json_number(value: object) -> object:
    return None if isinstance(value, float) and not math.isfinite(value) else value


@dataclass(frozen=True)
class LimitFit:
    r"""The relative deviation fitted over a width sweep, :math:`d(n) = c + a/n\ (+\,b/n^2)`, weighted by the SEs."""

    widths: tuple[int, ...]
    limit: float  # c
    limit_se: float
    slope: float  # a, the 1/n coefficient
    slope_se: float
    curvature: float | None  # b, the 1/n^2 coefficient (four or more widths)
    chi2: float
    dof: int
    p_value: float  # two-sided, H0: c = 0
    rejected: bool = False

    @property
    def z(self) -> float:
        """The limit in units of its SE."""
        return self.limit / self.limit_se if self.limit_se > 0 else (0.0 if self.limit == 0 else math.inf)

    def describe(self) -> str:
        """``limit c = +0.03% ± 0.21%, 1/n coefficient a = -0.41 ± 0.05 (fit over n = 8, 16, 32)``."""
        widths = ", ".join(map(str, sorted(self.widths)))
        text = (f"fitted limit c = {100 * self.limit:+.2f}% ± {100 * self.limit_se:.2f}%, 1/n coefficient "
                f"a = {self.slope:+.3g} ± {self.slope_se:.2g}")
        if self.curvature is not None:
            text += f", 1/n^2 coefficient b = {self.curvature:+.3g}"
        return text + f" (weighted fit over n = {widths}; chi2 = {self.chi2:.2g} on {self.dof} dof)"

    def to_dict(self) -> dict[str, object]:
        return {
            "widths": list(self.widths),
            "limit": self.limit,
            "limit_se": self.limit_se,
            "slope": self.slope,
            "slope_se": self.slope_se,
            "curvature": self.curvature,
            "chi2": self.chi2,
            "dof": self.dof,
            "p_value": self.p_value,
            "rejected": self.rejected,
        }


def _design(widths: Sequence[int]) -> np.ndarray:
    x = 1.0 / np.asarray(widths, dtype=float)
    return np.vander(x, 3 if len(widths) >= 4 else 2, increasing=True)


def fit_limit(widths: Sequence[int], deviations: Sequence[float], ses: Sequence[float]) -> LimitFit:
    r"""Weighted least squares of :math:`d(n) = c + a/n` (:math:`+\,b/n^2` with four or more widths).

    Parameters
    ----------
    widths
        At least :data:`MIN_SWEEP` distinct widths.
    deviations, ses
        The relative deviation at each width and its standard error.

    Returns
    -------
    LimitFit
        :math:`\hat c` and its SE from :math:`(X^\top W X)^{-1}`, :math:`W = \operatorname{diag}(1/\operatorname{SE}^2)`;
        the p-value of :math:`c = 0` (normal reference: each deviation is a mean over thousands of networks).
    """
    n = np.asarray(widths, dtype=float)
    d = np.asarray(deviations, dtype=float)
    s = np.asarray(ses, dtype=float)
    if len(set(widths)) < MIN_SWEEP or not (len(n) == len(d) == len(s)):
        raise MonteCarloError(f"a limit is fitted over at least {MIN_SWEEP} distinct widths, got {list(widths)}")
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(s)) and np.all(s >= 0)):
        raise MonteCarloError(f"deviations and SEs must be finite (SEs non-negative), got {d.tolist()}, {s.tolist()}")
    s = np.maximum(s, 1e-15 * max(1.0, float(np.max(np.abs(d)))))
    X = _design(widths)
    w = 1.0 / s**2
    cov = np.linalg.inv(X.T @ (w[:, None] * X))
    beta = cov @ (X.T @ (w * d))
    chi2 = float(np.sum(w * (d - X @ beta) ** 2))
    dof = len(d) - X.shape[1]
    se = np.sqrt(np.diag(cov))
    limit, limit_se = float(beta[0]), float(se[0])
    z = limit / limit_se if limit_se > 0 else (0.0 if limit == 0 else math.inf)
    return LimitFit(tuple(int(w_) for w_ in widths), limit, limit_se, float(beta[1]), float(se[1]),
                    float(beta[2]) if X.shape[1] == 3 else None, chi2, dof, t_p_value(z, None))


def _limit_coefficients(widths: Sequence[int], sigmas: Sequence[float]) -> np.ndarray:
    r""":math:`\lambda` with :math:`\hat c = \sum_i \lambda_i d_i` for the fit weighted by :math:`1/\sigma_i^2`."""
    X = _design(widths)
    w = 1.0 / np.maximum(np.asarray(sigmas, dtype=float), 1e-12) ** 2
    return (np.linalg.inv(X.T @ (w[:, None] * X)) @ (X.T * w))[0]


def _sweep_counts(widths: Sequence[int], sigmas: Sequence[float], costs: Sequence[float], target: float,
                  caps: Sequence[int] | None = None) -> list[int]:
    r"""Networks per width so that :math:`\operatorname{SE}(\hat c) \le` ``target`` at the least drawn weights.

    Minimising :math:`\sum_i \kappa_i T_i` subject to :math:`\sum_i \lambda_i^2\sigma_i^2/T_i = V` (Lagrange)
    gives :math:`T_i = S\,|\lambda_i|\sigma_i/(\sqrt{\kappa_i}\,V)` with
    :math:`S = \sum_j |\lambda_j|\sigma_j\sqrt{\kappa_j}`. A width whose count exceeds its cap is held at the
    cap and the rest of the variance budget is spread over the others the same way. The weighted fit
    is the best linear unbiased estimator of :math:`c`, so its SE is at most that of this combination.
    """
    lam = np.abs(_limit_coefficients(widths, sigmas))
    sig = np.asarray(sigmas, dtype=float)
    kappa = np.asarray(costs, dtype=float)
    cap = np.full(len(sig), np.inf) if caps is None else np.asarray(caps, dtype=float)
    fixed = np.zeros(len(sig), dtype=bool)
    counts = np.zeros(len(sig))
    for _ in range(len(sig)):
        budget = target * target / _SAFETY - float(np.sum(lam[fixed] ** 2 * sig[fixed] ** 2 / cap[fixed]))
        free = ~fixed & (lam * sig > 0)
        if budget <= 0 or not np.any(free):
            counts[free] = cap[free]
            break
        total = float(np.sum((lam * sig * np.sqrt(kappa))[free]))
        counts[free] = total * (lam * sig)[free] / (np.sqrt(kappa[free]) * budget)
        over = free & (counts > cap)
        if not np.any(over):
            break
        fixed |= over
        counts[over] = cap[over]
    return [int(min(limits.MAX_NEEDED, math.ceil(c))) if math.isfinite(c) else limits.MAX_NEEDED for c in counts]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of checking one claim (over one or several widths)."""

    name: str
    exactness: str
    outcome: str
    measurements: tuple[Measurement, ...]
    message: str
    limit: LimitFit | None = None
    claim: Claim = field(repr=False, default=None)  # type: ignore[assignment]

    @property
    def primary(self) -> Measurement:
        """The measurement at the claim's own width (the largest width for a sweep)."""
        return self.measurements[0]

    def to_dict(self) -> dict[str, object]:
        claim = self.claim
        return {
            "name": self.name,
            "description": claim.description,
            "observable": claim.observable_name or type(claim.observable).__name__,
            "layer": claim.layer,
            "place": claim.network.place_name(claim.observable.tensor.position),
            "tensor": claim.observable.tensor.kind,
            "statistic": claim.observable.statistic,
            "prediction_expr": str(claim.prediction),
            "prediction": claim.value,
            "exactness": self.exactness,
            "tolerance": claim.tolerance,
            "atol": claim.atol,
            "source": claim.source,
            "assumptions": list(claim.assumptions),
            "outcome": self.outcome,
            "message": self.message,
            "measurements": [m.to_dict() for m in self.measurements],
            "limit": None if self.limit is None else self.limit.to_dict(),
            **({"derivation": claim.derivation.to_dict()} if claim.derivation is not None else {}),
        }


# --- planning ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    index: int  # which target
    family: ClaimFamily | None
    claim: Claim
    widths: tuple[int, ...]  # widths[0] is the primary width (the largest for a sweep)

    @property
    def is_sweep(self) -> bool:
        return self.claim.exactness == "asymptotic" and len(self.widths) >= MIN_SWEEP


def scaled_sweep(widths: Sequence[int], largest: int, name: str = "") -> tuple[int, ...]:
    """``widths`` scaled so the largest becomes ``largest`` (rounded, distinct, largest first)."""
    top = max(widths)
    scaled = tuple(sorted({max(1, round(n * largest / top)) for n in widths}, reverse=True))
    if len(scaled) < MIN_SWEEP:
        raise MonteCarloError(
            f"claim {name!r}: width {largest} is too small for a sweep of {MIN_SWEEP} distinct widths scaled from "
            f"{sorted(widths)} (it gives {sorted(scaled)}); an asymptotic claim is judged on its limit over a sweep"
        )
    return scaled


def _plan(target: Claim | ClaimFamily, index: int, width: int | None) -> _Job:
    if isinstance(target, ClaimFamily):
        default = target.at()
        widths_all = tuple(sorted(set(target.sweep) | {target.width}, reverse=True))
        if default.exactness in ("asymptotic", "approximation"):
            widths = widths_all if width is None else scaled_sweep(widths_all, width, target.name)
            return _Job(index, target, target.at(widths[0]), widths)
        if width is not None:
            return _Job(index, target, target.at(width), (width,))
        return _Job(index, target, default, (target.width, *[n for n in target.sweep if n != target.width]))
    if isinstance(target, Claim):
        return _Job(index, None, target, (target.width,))
    raise MonteCarloError(f"check needs a Claim or a ClaimFamily, got {target!r}")


def _claim_at(job: _Job, width: int) -> Claim:
    return job.claim if job.family is None else job.family.at(width)


def _seed(seed: int, network: Network, phase: int) -> np.random.SeedSequence:
    """One stream per (network, pilot/main): claims about the same network share its sampled networks."""
    return np.random.SeedSequence(entropy=seed, spawn_key=(zlib.crc32(repr(network).encode()), phase))


def _draws_per_network(network: Network, engine: Engine) -> int:
    """Random numbers one network costs the engine (all its weights for the full engine, O(n) per layer otherwise)."""
    return max(1, engine.cost(network, bool(getattr(network.inputs, "paired", False)))[0])


def _engine_for(network: Network, claims: Sequence[Claim], engine: Engine | str) -> Engine:
    """The engine that samples ``network`` for ``claims`` (an explicit engine it cannot serve: an error naming the claim)."""
    if not network.is_numeric:
        raise MonteCarloError(f"claim {claims[0].name!r}: its network has symbolic widths; give integers to check it")
    try:
        return select_engine(engine, network, paired=bool(getattr(network.inputs, "paired", False)))
    except MonteCarloError as exc:
        raise MonteCarloError(f"claim {claims[0].name!r}: {exc}") from None


@dataclass(frozen=True)
class _Item:
    """One (claim, width) to estimate, with the tolerance its sample is sized for."""

    job: int
    position: int
    width: int
    claim: Claim
    rtol: float


def _cap(network: Network, max_samples: int, max_floats: float, engine: Engine) -> int:
    cap = max(_PILOT, min(max_samples, int(max_floats // _draws_per_network(network, engine))))
    return limits.affordable(network, cap, engine)  # never more networks than fit in memory


def _spread(drawn, observable: Observable) -> tuple[float, float]:
    r"""(per-network SD, signed skewness) of an observable in a pilot; NaN if networks were excluded.

    The SD is an upper 95 % bound, not the point estimate: the sample variance of :math:`T` values
    with kurtosis :math:`\kappa` has relative SE :math:`\sqrt{(\kappa - 1)/T}`, and heavy-tailed
    per-network values (narrow relu networks) make a pilot's variance low more often than not.
    """
    if drawn.excluded:
        return math.nan, 0.0
    values = per_network_values(drawn, observable)
    est = limits.quiet(estimate, drawn, observable)
    if not (math.isfinite(est.value) and math.isfinite(est.se)):
        return math.nan, 0.0
    inflation = math.sqrt(1.0 + 1.645 * math.sqrt(max(_kurtosis(values) - 1.0, 0.0) / max(values.size, 1)))
    return inflation * est.se * math.sqrt(est.n), _skewness(values)


def _measure_one(drawn, observable: Observable, z_plan: float) -> tuple[Estimate, dict[str, float], str]:
    """The estimate from one sample, its health and, when networks were excluded, why no verdict can rest on it."""
    finite = drawn.count - drawn.excluded
    if finite >= 2:
        est = limits.quiet(estimate, drawn, observable)
    else:
        est = Estimate(math.nan, math.nan, finite, drawn.excluded)
    state: dict[str, float] = dict(health(drawn, observable))
    state["zero_input_networks"] = state["zero_networks"]  # the key's name since the first version (JSON output)
    note = ""
    if drawn.excluded:
        note = _exclusion_text(drawn)
    elif not (math.isfinite(est.value) and math.isfinite(est.se)):
        note = (f"the per-network values are too large for float64 statistics (estimate {est.value:.3g}, "
                f"SE {est.se:.3g})")
    if note:
        state.update(skewness=0.0, skew_minimum=0)
    else:
        gamma = _skewness(per_network_values(drawn, observable))
        # The exact skewness where the finite-width law gives it: a heavy tail's sample skewness is biased low.
        minimum = max(_skew_minimum(gamma, z_plan), laws.exact_skew_minimum(observable, drawn.network, z_plan))
        state.update(skewness=gamma, skew_minimum=minimum)
    return est, state, note


def _exclusion_text(drawn) -> str:
    overflow, nan = np.asarray(drawn.overflow), np.asarray(drawn.nan)
    layers = [i + 1 for i in range(len(overflow)) if overflow[i] or nan[i]]
    shown = ", ".join(map(str, layers[:5])) + (", ..." if len(layers) > 5 else "")
    kinds = [f"{int(np.max(overflow))} overflowed (inf)"] if np.any(overflow) else []
    kinds += [f"{int(np.max(nan))} became NaN"] if np.any(nan) else []
    return (f"{drawn.excluded} of {drawn.count} networks excluded ({' and '.join(kinds) or 'not finite'} in float64, "
            f"dense layer{'s' if len(layers) != 1 else ''} {shown}); the estimate would rest on the "
            f"{drawn.count - drawn.excluded} survivors, a biased sample, so no verdict (use a smaller weight variance, "
            f"fewer layers or a smaller input)")


def _observable(claim: Claim, network: Network) -> Observable:
    """The claim's observable: an :class:`Observable`, or a claim-file name at ``claim.layer`` turned into one."""
    observable = claim.observable
    if isinstance(observable, Observable):
        return observable
    try:
        return from_name(observable, claim.layer, network)
    except VarpropError as exc:
        raise MonteCarloError(f"claim {claim.name!r}: {exc}") from None


def _observables(members: Sequence[_Item], network: Network) -> tuple[Observable, ...]:
    """The observables the claims on one network read (the sampler computes only what they need)."""
    return tuple(dict.fromkeys(_observable(item.claim, network) for item in members))


def _skewness(values: np.ndarray) -> float:
    """The sample skewness of ``values`` (scale-free; 0 for fewer than 3 values or no spread)."""
    if values.size < 3:
        return 0.0
    values = values / max(float(np.max(np.abs(values))), np.finfo(float).tiny)  # scale-free; no overflow in the cube
    centred = values - values.mean()
    squares = centred * centred  # products, not the generic **3 power (several times slower on millions of values)
    variance = float(np.mean(squares))
    if variance <= 0:
        return 0.0
    # einsum, not np.dot: BLAS splits a long dot product over its threads, so its last bit would depend on
    # how many the process has (workers have one), and the sample sizes read the skewness
    return float(np.einsum("i,i->", squares, centred)) / values.size / variance**1.5


def _kurtosis(values: np.ndarray) -> float:
    """The sample kurtosis m4 / m2^2 of ``values`` (3 for a normal sample; 3 when undefined)."""
    if values.size < 4:
        return 3.0
    values = values / max(float(np.max(np.abs(values))), np.finfo(float).tiny)
    centred = values - values.mean()
    squares = centred * centred
    variance = float(np.mean(squares))
    return float(np.einsum("i,i->", squares, squares)) / values.size / variance**2 if variance > 0 else 3.0


def _skew_minimum(skewness: float, z: float) -> int:
    r"""Networks needed before the t-test's tail probability at ``z`` can be trusted despite skew.

    The one-term Edgeworth expansion of the studentized mean (Hall 1992, *The Bootstrap and
    Edgeworth Expansion*, Sec. 2.6) moves the tail probability beyond :math:`z` by about
    :math:`\varphi(z)\,\gamma\,(2z^2 + 1)/(6\sqrt T)`, :math:`\gamma` the skewness of the
    per-network values: up in the tail opposite to the skew (the left tail for right-skewed values)
    and down in the other. Relative to the tail itself that is about
    :math:`z\gamma(2z^2+1)/(6\sqrt T)`; keeping it under one half (a nominal level alpha is at most
    1.5 alpha on the heavy side) needs :math:`T \ge (z \gamma (2z^2+1)/3)^2`. At :math:`z = 1.96`
    this is about :math:`32\gamma^2`, Cochran's rule :math:`25\gamma^2`.
    """
    if not math.isfinite(skewness):
        return 0
    return math.ceil((z * abs(skewness) * (2 * z * z + 1) / 3) ** 2)


def _scale(claim: Claim) -> float:
    """What deviations are relative to: |prediction|, or 1 (absolute) for a zero prediction."""
    return abs(claim.value) if claim.value != 0 else 1.0


def _deviation(claim: Claim, est: Estimate) -> tuple[float, float]:
    scale = _scale(claim)
    return (est.value - claim.value) / scale, est.se / scale


def _tolerance(claim: Claim, rtol: float, atol: float | None) -> float:
    """The tolerance on the (relative, or absolute for a zero prediction) deviation."""
    if claim.value != 0:
        return rtol
    own = claim.atol if claim.atol is not None else atol
    return own if own is not None else rtol


# --- the checker -------------------------------------------------------------------------------


def check(
    target: Claim | ClaimFamily,
    *,
    samples: int | None = None,
    seed: int = 0,
    rtol: float = DEFAULT_RTOL,
    alpha: float = 0.05,
    width: int | None = None,
    atol: float | None = None,
    power: float = POWER,
    max_samples: int = 2_000_000,
    max_floats: float = 1e9,
    engine: Engine | str = "auto",
    executor: Executor | str | None = None,
) -> CheckResult:
    """Check one claim or claim family (see the module docstring); equivalent to ``check_all([target])[0]``."""
    return check_all([target], samples=samples, seed=seed, rtol=rtol, alpha=alpha, width=width, atol=atol,
                     power=power, max_samples=max_samples, max_floats=max_floats, engine=engine,
                     executor=executor)[0]


def check_all(
    targets: Sequence[Claim | ClaimFamily],
    *,
    samples: int | None = None,
    seed: int = 0,
    rtol: float = DEFAULT_RTOL,
    alpha: float = 0.05,
    width: int | None = None,
    atol: float | None = None,
    power: float = POWER,
    max_samples: int = 2_000_000,
    max_floats: float = 1e9,
    progress: Callable[[str, int, int], None] | None = None,
    engine: Engine | str = "auto",
    executor: Executor | str | None = None,
) -> list[CheckResult]:
    """Check several claims together: Holm's procedure over all their tests holds the false-alarm rate at ``alpha``.

    Claims about the same network (at the same width) are estimated from the same sampled networks.
    ``width`` checks an exact claim at that width only, and sets the largest width of an asymptotic
    claim's sweep (the others scaled with it). ``atol`` is the absolute tolerance, in the
    observable's units, for claims that predict 0 (a claim's own ``atol`` comes first; ``rtol`` read
    as an absolute number when neither is given). ``power`` is what a PASS guarantees against an
    error of the tolerance. ``progress(label, done, total)`` is called as blocks of networks finish:
    ``done`` and ``total`` count networks over every sample of the run (the pilots first, then the
    main samples they size).

    ``engine`` samples the networks: ``"auto"`` (the default: the exact conditional-Gaussian engine
    wherever it is valid, full weight matrices elsewhere), ``"full"`` or ``"conditional"`` (refused,
    with the reason, for a network it cannot serve); every measurement records the engine used.
    ``executor`` runs the blocks of networks: ``None``/``"serial"``, ``"processes[=N]"``,
    ``"dask[=ADDRESS]"`` or an :class:`~varprop.montecarlo.executors.Executor`; the verdicts do not
    depend on it (the samples are bit-identical).
    """
    return check_family(targets, samples=samples, seed=seed, rtol=rtol, alpha=alpha, width=width, atol=atol,
                        power=power, max_samples=max_samples, max_floats=max_floats, progress=progress, engine=engine,
                        executor=executor).results


@dataclass(frozen=True)
class FamilyResult:
    """Moment claims and law claims checked in one Holm family: a result per claim, a verdict per law claim."""

    results: list[CheckResult]
    laws: list[laws.LawVerdict]
    tests: int  # the family's size: every test of the claims and two per law claim (KS, dead count)

    @property
    def outcomes(self) -> set[str]:
        return {r.outcome for r in self.results} | {v.outcome for v in self.laws}


def check_family(
    targets: Sequence[Claim | ClaimFamily],
    law_claims: Sequence[laws.LawClaim] = (),
    *,
    samples: int | None = None,
    seed: int = 0,
    rtol: float = DEFAULT_RTOL,
    alpha: float = 0.05,
    width: int | None = None,
    atol: float | None = None,
    power: float = POWER,
    max_samples: int = 2_000_000,
    max_floats: float = 1e9,
    progress: Callable[[str, int, int], None] | None = None,
    engine: Engine | str = "auto",
    executor: Executor | str | None = None,
) -> FamilyResult:
    """Check claims (as :func:`check_all`) and law claims (:class:`~varprop.montecarlo.laws.LawClaim`) together.

    Every test is one member of one family: the claims' t-tests and fitted limits, and each law claim's KS
    test and dead-count test (:func:`~varprop.montecarlo.laws.law_tests`). Holm's step-down procedure runs
    once over all of them, so the family-wise false-alarm rate is ``alpha`` for the claims and the laws
    together; the samples of the claims are sized for the family's size, and a law claim's power statement
    uses Holm's most demanding level in it.
    """
    if not (isinstance(rtol, float | int) and rtol > 0 and math.isfinite(rtol)):
        raise MonteCarloError(f"rtol must be a positive number, got {rtol!r}")
    if not (isinstance(alpha, float | int) and 0 < alpha < 1):
        raise MonteCarloError(f"alpha must be in (0, 1), got {alpha!r}")
    if atol is not None and not (isinstance(atol, float | int) and atol > 0 and math.isfinite(atol)):
        raise MonteCarloError(f"atol must be a positive number, got {atol!r}")
    margin_power = z_power(power)
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 2):
        raise MonteCarloError(f"samples must be an integer of at least 2, got {abbreviate(samples)}")
    seed = limits.check_seed(seed)
    engine = check_engine(engine)
    limits.check_width(width, engine)  # before any claim is derived at that width
    jobs = [_plan(t, i, width) for i, t in enumerate(targets)]
    if not jobs and not law_claims:
        raise MonteCarloError("nothing to check: give at least one claim")
    # Every claim at every width of its sweep, derived at once on the CPUs the sampling will use next.
    derive_families((job.family, n) for job in jobs if job.family is not None for n in job.widths)
    law_claims = laws.checked_law_claims(law_claims)
    tests = sum(_test_count(job) for job in jobs) + 2 * len(law_claims)
    if not jobs:
        law_tests = laws.law_tests(law_claims, seed=seed)
        rejected = holm(laws.law_p_values(law_tests), alpha)
        return FamilyResult([], laws.verdicts_from_holm(law_tests, rejected, family=tests, alpha=alpha), tests)
    z_plan = holm_critical_values(alpha, max(tests, 1))[0]
    margin = z_plan + margin_power
    # Every (claim, width) to estimate; an exact claim is resolved at its own width, while at its narrow
    # widths it must not be contradicted and the sample is sized for twice rtol (heavy tails there make
    # 1 % cost millions of networks). An approximation with a tolerance is sized for that tolerance.
    items = []
    for j, job in enumerate(jobs):
        for position, n in enumerate(job.widths):
            claim = _claim_at(job, n)
            tol = _tolerance(claim, rtol, atol)
            if job.claim.exactness == "approximation" and claim.tolerance is not None:
                tol = claim.tolerance
            elif position > 0 and job.claim.exactness in ("exact", "gaussian-exact"):
                tol = 2 * tol
            items.append(_Item(j, position, n, claim, tol))
    limits.check_claims([item.claim for item in items], samples, _PILOT, engine)  # refuse what cannot fit, before sampling
    groups: dict[Network, list[_Item]] = {}
    for item in items:
        groups.setdefault(item.claim.network, []).append(item)
    engines = {network: _engine_for(network, [i.claim for i in members], engine) for network, members in groups.items()}
    caps = {network: _cap(network, max_samples, max_floats, engines[network]) for network in groups}
    with executor_from(executor) as runner:
        results, law_tests, law_rejected = _sample_and_judge(
            jobs, items, groups, engines, caps, runner, samples=samples, seed=seed, margin=margin, z_plan=z_plan,
            rtol=rtol, alpha=alpha, atol=atol, tests=tests, power=power, progress=progress, law_claims=law_claims)
    return FamilyResult(results, laws.verdicts_from_holm(law_tests, law_rejected, family=tests, alpha=alpha), tests)


def judge_values(claims: Sequence[Claim], values: Sequence[np.ndarray], *, rtol: float = DEFAULT_RTOL,
                 alpha: float = 0.05, atol: float | None = None, power: float = POWER,
                 engine: str = "external") -> list[CheckResult]:
    """Verdicts for claims whose per-network values were measured elsewhere (the PyTorch audit's hooks).

    ``values[i]`` holds one value per independently drawn network for ``claims[i]`` (each claim at
    its network's own width). The judging is the checker's own (:func:`check_all` after sampling):
    the t-test of each exact claim, Holm over all the claims together, resolution at ``power``, the
    skew guard, and ``INCONCLUSIVE`` with the counts when some values are not finite. An asymptotic
    claim at one width has no limit to judge and is ``INCONCLUSIVE`` with its measured deviation.
    ``engine`` names what drew the networks (every measurement records it).
    """
    if len(claims) != len(values):
        raise MonteCarloError(f"judge_values needs one array of values per claim, got {len(claims)} claims and "
                              f"{len(values)} arrays")
    if not claims:
        raise MonteCarloError("nothing to judge: give at least one claim")
    margin_power = z_power(power)  # validates power
    del margin_power
    jobs = [_plan(claim, i, None) for i, claim in enumerate(claims)]
    tests = sum(_test_count(job) for job in jobs)
    z_plan = holm_critical_values(alpha, max(tests, 1))[0]
    raw = []
    for job, array in zip(jobs, values):
        array = np.asarray(array, dtype=np.float64).ravel()
        finite = np.isfinite(array)
        kept = array[finite]
        excluded = int(array.size - kept.size)
        if kept.size >= 2:
            est = Estimate(float(kept.mean()), float(kept.std(ddof=1) / math.sqrt(kept.size)), int(kept.size), excluded)
        else:
            est = Estimate(math.nan, math.nan, int(kept.size), excluded)
        state: dict[str, float] = {"excluded": excluded, "overflow": int(np.count_nonzero(np.isinf(array))),
                                   "nan": int(np.count_nonzero(np.isnan(array))),
                                   "zero_networks": int(np.count_nonzero(kept == 0))}
        note = ""
        if excluded:
            note = (f"{excluded} of {array.size} networks excluded (not finite in float64); the estimate would rest on "
                    f"the survivors, a biased sample, so no verdict")
        elif not (math.isfinite(est.value) and math.isfinite(est.se)):
            note = f"the per-network values are too large for float64 statistics (estimate {est.value:.3g})"
        if note:
            state.update(skewness=0.0, skew_minimum=0)
        else:
            gamma = _skewness(kept)
            state.update(skewness=gamma, skew_minimum=_skew_minimum(gamma, z_plan))
        state.update(cap=0, planned=array.size)  # no cap: the caller chose the sample
        raw.append([(job.widths[0], job.claim, est, state, note)])
    results, _ = _judge(jobs, raw, rtol=rtol, alpha=alpha, atol=atol, tests=tests, power=power)
    return [replace(r, measurements=tuple(replace(m, engine=engine) for m in r.measurements)) for r in results]


def _sample_and_judge(jobs: list[_Job], items: list[_Item], groups: Mapping[Network, list[_Item]],
                      engines: Mapping[Network, Engine], caps: Mapping[Network, int], runner: Executor, *,
                      samples: int | None, seed: int, margin: float, z_plan: float, rtol: float, alpha: float,
                      atol: float | None, tests: int, power: float,
                      progress: Callable[[str, int, int], None] | None,
                      law_claims: Sequence[laws.LawClaim] = ()
                      ) -> tuple[list[CheckResult], list[laws.LawTest], list[bool]]:
    """Pilots (for the sizes), the main samples of every network, and the verdicts.

    The law claims' tests (:func:`~varprop.montecarlo.laws.law_tests`) run on a thread of this process while
    the workers sample (this process mostly waits for them meanwhile); their p-values join the Holm family,
    and the tests and their decisions are returned with the results. The thread starts once the workers
    exist (after the pilots, or with the first sample), so no worker is forked from a process running it.
    """
    with ThreadPoolExecutor(max_workers=1) as background:
        law_work: list[Future] = []

        def start_law_tests() -> None:
            if not law_work:
                law_work.append(background.submit(laws.law_tests, law_claims, seed=seed))

        wanted: dict[tuple[int, int], int] = {}
        piloted = 0
        if samples is None:
            wanted = _plan_counts(jobs, items, groups, seed=seed, margin=margin, z_plan=z_plan, caps=caps,
                                  engines=engines, runner=runner, progress=progress)
            start_law_tests()
            counts = {network: int(min(caps[network], max(_PILOT, *(wanted[i.job, i.position] for i in members))))
                      for network, members in groups.items()}
            piloted = _PILOT * len(groups)
        else:
            counts = {network: samples for network in groups}
        total = piloted + sum(counts.values())
        measured: dict[tuple[int, int], tuple[Estimate, dict[str, float], str]] = {}
        requests = []
        for network, members in groups.items():
            requests.append(SampleRequest(network, counts[network], _seed(seed, network, 1), engines[network],
                                          _observables(members, network),
                                          _networks_progress(progress, members[0].claim.name, piloted, total)))
            piloted += counts[network]
        for (network, members), drawn in zip(groups.items(), sample_each(requests, executor=runner)):
            start_law_tests()
            # claims about one tensor share its measurement
            by_observable: dict[Observable, tuple[Estimate, dict[str, float], str]] = {}
            for item in members:
                observable = _observable(item.claim, network)
                if observable not in by_observable:
                    by_observable[observable] = _measure_one(drawn, observable, z_plan)
                est, shared, note = by_observable[observable]
                state = dict(shared)
                state["cap"] = caps[network]
                state["planned"] = wanted.get((item.job, item.position), counts[network])
                measured[item.job, item.position] = (est, state, note)
        claims = {(item.job, item.position): item.claim for item in items}
        raw = [
            [(n, claims[j, position], *measured[j, position]) for position, n in enumerate(job.widths)]
            for j, job in enumerate(jobs)
        ]
        start_law_tests()  # (if nothing was sampled)
        law_tests = law_work[0].result()
        results, extra_rejected = _judge(jobs, raw, rtol=rtol, alpha=alpha, atol=atol, tests=tests, power=power,
                                         engines=engines, extra_p_values=laws.law_p_values(law_tests))
        return [laws.annotate(result)  # a heavy-tailed moment left INCONCLUSIVE: what can be checked instead
                for result in results], law_tests, extra_rejected


def _plan_counts(jobs: list[_Job], items: list[_Item], groups: Mapping[Network, list[_Item]], *, seed: int,
                 margin: float, z_plan: float, caps: Mapping[Network, int], engines: Mapping[Network, Engine],
                 runner: Executor, progress: Callable[[str, int, int], None] | None = None
                 ) -> dict[tuple[int, int], int]:
    """Networks each (claim, width) needs, from pilots of independent seed streams (never from the main sample)."""
    pilot: dict[tuple[int, int], tuple[float, float]] = {}
    requests = [SampleRequest(network, _PILOT, _seed(seed, network, 0), engines[network], _observables(members, network),
                              _networks_progress(progress, f"pilot: {members[0].claim.name}", done * _PILOT,
                                                 _PILOT * len(groups)))
                for done, (network, members) in enumerate(groups.items())]
    for (network, members), drawn in zip(groups.items(), sample_each(requests, executor=runner)):
        spreads: dict[Observable, tuple[float, float]] = {}
        for item in members:
            observable = _observable(item.claim, network)
            if observable not in spreads:
                spreads[observable] = _spread(drawn, observable)
            sigma, gamma = spreads[observable]
            pilot[item.job, item.position] = (sigma / _scale(item.claim), gamma)
    wanted: dict[tuple[int, int], int] = {}
    for item in items:
        sigma, gamma = pilot[item.job, item.position]
        if not math.isfinite(sigma):  # networks overflowed in the pilot: no verdict will rest on them anyway
            wanted[item.job, item.position] = _PILOT
            continue
        # An exact claim's narrow widths must not be contradicted; the power statement is about its own width.
        narrow = item.position > 0 and jobs[item.job].claim.exactness in ("exact", "gaussian-exact")
        count = limits.networks_needed(_SAFETY, (z_plan if narrow else margin) * sigma / item.rtol) if sigma > 0 else _PILOT
        exact_minimum = laws.planned_skew_networks(_observable(item.claim, item.claim.network), item.claim.network, z_plan)
        wanted[item.job, item.position] = max(count, _planned_skew_minimum(gamma, z_plan), exact_minimum)
    for j, job in enumerate(jobs):
        if not job.is_sweep:
            continue
        sigmas = [pilot[j, p][0] for p in range(len(job.widths))]
        if not all(math.isfinite(s) for s in sigmas):
            continue
        costs = [_draws_per_network(_claim_at(job, n).network, engines[_claim_at(job, n).network]) for n in job.widths]
        target = _primary_tolerance(items, j) / margin
        network_caps = [caps[_claim_at(job, n).network] for n in job.widths]
        for p, count in enumerate(_sweep_counts(job.widths, sigmas, costs, target, network_caps)):
            wanted[j, p] = max(count, _planned_skew_minimum(pilot[j, p][1], z_plan))
    return wanted


def _networks_progress(progress: Callable[[str, int, int], None] | None, label: str, before: int,
                       total: int) -> Callable[[int, int], None] | None:
    """The sampler's ``progress(done, count)`` for one network, as ``progress(label, networks so far, total)``.

    The bar counts networks over every sample of the run (pilots first, whose total is known before
    the main samples are sized), so it moves inside one large sample as its blocks finish.
    """
    if progress is None:
        return None
    return lambda done, count: progress(label, before + done, total)


def _primary_tolerance(items: Sequence[_Item], job: int) -> float:
    """The tolerance a job's primary item is sized for."""
    return next(item.rtol for item in items if item.job == job and item.position == 0)


def _test_count(job: _Job) -> int:
    if job.claim.exactness == "approximation":
        return len(job.widths) if job.claim.tolerance is not None else 0
    if job.claim.exactness == "asymptotic":
        return 1 if job.is_sweep else 0
    return len(job.widths)


def _t(est: Estimate, value: float) -> float:
    return _z_and_p(est.value, est.se, value)[0]  # SE = 0 and rounding-level deviations as the verdict treats them


def _judge(jobs: list[_Job], raw: list[list[tuple]], *, rtol: float, alpha: float, atol: float | None, tests: int,
           power: float, engines: Mapping[Network, Engine] | None = None,
           extra_p_values: Sequence[float] = ()) -> tuple[list[CheckResult], list[bool]]:
    # Gather every test's p-value; Holm decides which are rejected.
    p_values: list[float] = []
    owners: list[tuple[int, int | None]] = []  # (job index, width row or None for the fitted limit)
    fits: dict[int, LimitFit] = {}
    for j, (job, rows) in enumerate(zip(jobs, raw)):
        if any(note for *_, note in rows):
            continue  # excluded networks: no test rests on them
        kind = job.claim.exactness
        if kind == "asymptotic":
            if job.is_sweep:
                deviations = [_deviation(claim, est) for _, claim, est, _, _ in rows]
                fit = fit_limit([row[0] for row in rows], [d for d, _ in deviations], [s for _, s in deviations])
                fits[j] = fit
                p_values.append(fit.p_value)
                owners.append((j, None))
            continue
        for r, (_, claim, est, _, _) in enumerate(rows):
            if kind == "approximation":
                if claim.tolerance is None:
                    continue
                d, s = _deviation(claim, est)
                beyond = (abs(d) - claim.tolerance) / s if s > 0 else (math.inf if abs(d) > claim.tolerance else -math.inf)
                p_values.append(float(ndtr(-beyond)))
            else:
                p_values.append(t_p_value(_t(est, claim.value), est.n))
            owners.append((j, r))
    claims_count = len(p_values)
    p_values += list(extra_p_values)  # the law claims' tests, in the same family
    rejected = holm(p_values, alpha) if p_values else []
    extra_rejected = list(rejected[claims_count:])
    rejected_rows = {owner for owner, flag in zip(owners, rejected[:claims_count]) if flag}
    m = max(tests, 1)
    z_bonferroni = holm_critical_values(alpha, m)[0]

    results = []
    for j, (job, rows) in enumerate(zip(jobs, raw)):
        measurements = []
        for r, (n, claim, est, state, note) in enumerate(rows):
            deviation, deviation_se = _deviation(claim, est)
            verdict = None
            if job.claim.exactness in ("exact", "gaussian-exact") and not note:
                verdict = judge(claim.value, est.value, est.se, est.n, rtol=rtol, alpha=alpha, m=m, power=power,
                                atol=_tolerance(claim, rtol, atol) if claim.value == 0 else None)
                if (j, r) in rejected_rows and verdict.outcome != FAIL:
                    verdict = replace(verdict, outcome=FAIL, samples_needed=None,
                                      message=f"rejected by Holm's procedure over {m} tests (t = {format_z(verdict.z)})")
                if verdict.samples_needed is not None:
                    verdict = replace(verdict, samples_needed=max(verdict.samples_needed, int(state["skew_minimum"])))
            engine_name = engines[claim.network].name if engines and claim.network in engines else "full"
            measurements.append(Measurement(n, claim, est, deviation, deviation_se, verdict, state, note, engine_name))
        fit = fits.get(j)
        if fit is not None:
            fit = replace(fit, rejected=(j, None) in rejected_rows)
        outcome, message = _outcome(job, measurements, fit, rejected_rows, j, rtol=rtol, atol=atol,
                                    z_crit=z_bonferroni, power=power)
        results.append(CheckResult(job.claim.name, job.claim.exactness, outcome, tuple(measurements), message,
                                   fit, job.claim))
    return results, extra_rejected


def _needed_text(count: int, m: Measurement) -> str:
    """``about N networks at width W`` and, beyond the cap, that the cap is reached and what it would take."""
    cap = int(m.health.get("cap", 0))
    text = f"about {count} networks at width {m.width}"
    if cap and count > cap:
        draws = count * _draws_per_network(m.claim.network, select_engine(m.engine, m.claim.network,
                                                                            paired=bool(getattr(m.claim.network.inputs, "paired", False))))
        text += (f" (beyond the cap of {cap} networks there, set by max_samples / max_floats and memory: it would "
                 f"take {draws:.2g} random draws with the {m.engine} engine)")
    return text


def _outcome(job: _Job, measurements: list[Measurement], fit: LimitFit | None, rejected_rows: set, j: int, *,
             rtol: float, atol: float | None, z_crit: float, power: float) -> tuple[str, str]:
    claim = job.claim
    primary = measurements[0]
    excluded = [m for m in measurements if m.note]
    if excluded:
        return INCONCLUSIVE, f"at width {excluded[0].width}: {excluded[0].note}"
    if claim.exactness == "approximation":
        return _approximation_outcome(claim, measurements, rejected_rows, j, z_crit)
    if claim.exactness == "asymptotic":
        return _limit_outcome(job, measurements, fit, rtol=rtol, z_crit=z_crit, power=power)
    guarded, failed = [], []
    for r, m in enumerate(measurements):
        if (j, r) not in rejected_rows:
            continue
        gamma = float(m.health.get("skewness", 0.0))
        if m.estimate.n < m.health.get("skew_minimum", 0) and m.verdict.z * gamma < 0 and not _beyond_skew(
                m.verdict.z, m, z_crit):
            guarded.append(m)
        else:
            failed.append(m)
    if failed:
        worst = max(failed, key=lambda m: abs(m.verdict.z))
        return FAIL, (f"contradicted at width {worst.width}: estimate {worst.estimate.value:.6g} +- {worst.estimate.se:.2g}, "
                      f"prediction {worst.claim.value:.6g}, t = {format_z(worst.verdict.z)}")
    if guarded:
        worst = max(guarded, key=lambda m: abs(m.verdict.z))
        return INCONCLUSIVE, (f"contradicted at width {worst.width} (t = {format_z(worst.verdict.z)}), but in the direction "
                              f"the skewness {worst.health['skewness']:+.2g} of the per-network values produces, with "
                              f"{worst.estimate.n} networks where the Edgeworth bound asks for "
                              f"{int(worst.health['skew_minimum'])}: no verdict either way")
    v = primary.verdict
    tolerance = tolerance_text(claim.value, rtol, v.rtol if claim.value == 0 else None)
    skew_minimum = int(primary.health.get("skew_minimum", 0))
    if v.outcome == INCONCLUSIVE or primary.estimate.n < skew_minimum:
        # What a PASS would take: the power margin (in the resolution) and the skew minimum, against the cap.
        # The count that resolves rtol in expectation, with the sizing's 15 % margin for the noise of the SE itself.
        by_power = limits.networks_needed(_SAFETY * v.samples_needed, 1.0) if v.samples_needed else primary.estimate.n
        reasons = []
        if v.outcome == INCONCLUSIVE:
            reasons.append(f"too noisy to resolve {tolerance} with {power:.0%} power (resolution "
                           f"{_shown(v.resolution, claim)}; {by_power} networks would resolve it)")
        if primary.estimate.n < skew_minimum:
            reasons.append(f"too skewed for the normal approximation behind a PASS (skewness "
                           f"{primary.health['skewness']:+.2g}: the Edgeworth bound asks for {skew_minimum} networks)")
        return INCONCLUSIVE, (f"agrees at width {primary.width} (t = {format_z(v.z)}) but " + " and ".join(reasons)
                              + f"; {_needed_text(max(by_power, skew_minimum), primary)} would give a verdict "
                              f"({primary.estimate.n} drawn)")
    others = [m for m in measurements[1:] if m.verdict is not None]
    text = (f"agrees at width {primary.width} (t = {format_z(v.z)}, resolution {_shown(v.resolution, claim)}: an error of "
            f"{tolerance} would have been caught with at least {power:.0%} power)")
    if others:
        text += "; not contradicted at widths " + ", ".join(
            f"{m.width} (t = {format_z(m.verdict.z)}, resolution {_shown(m.verdict.resolution, m.claim)})" for m in others
        )
    return PASS, text


def _shown(resolution: float, claim: Claim) -> str:
    return f"{resolution:.3g} (absolute)" if claim.value == 0 else f"{100 * resolution:.2f}%"


#: The pilot's skewness is biased low for heavy-tailed values (and the main sample's estimate varies
#: about the truth): the plan asks for this multiple of the pilot's Edgeworth minimum, so that the main
#: sample usually meets the bound it is judged by.
_SKEW_PLAN_FACTOR = 2


def _planned_skew_minimum(gamma: float, z: float) -> int:
    """Networks to plan for the skew guard: :data:`_SKEW_PLAN_FACTOR` times the pilot's Edgeworth minimum."""
    return _SKEW_PLAN_FACTOR * _skew_minimum(gamma, z)


def _beyond_skew(t: float, m: Measurement, z_crit: float) -> bool:
    r"""True when a contradiction ``t`` is beyond anything the skewness of ``m``'s per-network values can explain.

    The skew guard withholds a FAIL when the sample is smaller than the Edgeworth bound asks for
    (the normal reference is then unreliable at :math:`z_\text{crit}`). A contradiction still FAILs
    when it exceeds Chebyshev's bound, which holds for any law with a finite variance,
    :math:`P(|\bar X - \mu| \ge k\,\sigma/\sqrt T) \le 1/k^2` with
    :math:`1/k^2` the test's two-sided level, and the sample is at least a quarter of the Edgeworth
    bound (so that its SE, which a heavy tail makes low, is still within a factor of about two of the
    truth; a sample far below the bound, as for the moments of narrow deep relu networks, stays
    INCONCLUSIVE however large ``t``).
    """
    minimum = float(m.health.get("skew_minimum", 0))
    if minimum <= 0 or m.estimate.n * 4 < minimum:
        return False
    level = 2.0 * float(ndtr(-abs(z_crit)))
    return level > 0 and abs(t) >= 1.0 / math.sqrt(level)


def _limit_outcome(job: _Job, measurements: list[Measurement], fit: LimitFit | None, *, rtol: float, z_crit: float,
                   power: float) -> tuple[str, str]:
    deviations = ", ".join(f"width {m.width}: {100 * m.deviation:+.2f}% ± {100 * m.deviation_se:.2f}%"
                           for m in sorted(measurements, key=lambda m: m.width))
    if fit is None:
        return INCONCLUSIVE, (f"an asymptotic claim is judged on its limit over a sweep of at least {MIN_SWEEP} widths; "
                              f"one network at one width gives none (check its ClaimFamily, or give a sweep); "
                              f"deviation {deviations}")
    resolution = (z_crit + z_power(power)) * fit.limit_se
    head = f"{fit.describe()}; deviations {deviations}"
    if fit.rejected and abs(fit.limit) > rtol:
        skewed = [m for m in measurements if m.estimate.n < m.health.get("skew_minimum", 0)
                  and not _beyond_skew(fit.limit / fit.limit_se, m, z_crit)]
        if skewed:
            worst = skewed[0]
            return INCONCLUSIVE, (f"{head}: the limit is off, but at width {worst.width} the per-network values are too "
                                  f"skewed ({worst.estimate.n} networks, the Edgeworth bound asks for "
                                  f"{int(worst.health['skew_minimum'])}): no verdict either way")
        return FAIL, f"{head}: the limit differs from the prediction beyond rtol {rtol:.3g} (p = {fit.p_value:.2g})"
    if resolution <= rtol and abs(fit.limit) <= rtol:
        note = "" if not fit.rejected else "; the limit differs measurably from the prediction, but within rtol"
        return PASS, (f"{head}: the limit is resolved within rtol {rtol:.3g} (resolution {100 * resolution:.2f}%: a limit "
                      f"off by rtol would have been caught with at least {power:.0%} power){note}")
    factor = (resolution / rtol) ** 2
    needed = ", ".join(_needed_text(limits.networks_needed(factor, math.sqrt(m.estimate.n)), m)
                       for m in sorted(measurements, key=lambda m: m.width))
    return INCONCLUSIVE, (f"{head}: the limit is not resolved (resolution {100 * resolution:.2f}% > rtol {rtol:.3g} at "
                          f"{power:.0%} power); {needed} would resolve it")


def _approximation_outcome(claim: Claim, measurements: list[Measurement], rejected_rows: set, j: int,
                           z_crit: float) -> tuple[str, str]:
    parts = ", ".join(f"width {m.width}: {100 * m.deviation:+.2f}% (SE {100 * m.deviation_se:.2f}%)" for m in measurements)
    if claim.tolerance is None:
        return MEASURED, f"approximation with no tolerance, so no verdict; measured deviation {parts}"
    tol = claim.tolerance
    failed = [m for r, m in enumerate(measurements) if (j, r) in rejected_rows]
    if failed:
        worst = max(failed, key=lambda m: abs(m.deviation) / max(m.deviation_se, 1e-300))
        return FAIL, (f"the deviation at width {worst.width}, {100 * worst.deviation:+.2f}% ± {100 * worst.deviation_se:.2f}%, "
                      f"is significantly beyond the tolerance {100 * tol:.3g}%; measured {parts}")
    if all(abs(m.deviation) + z_crit * m.deviation_se <= tol for m in measurements):
        return PASS, f"the deviation is within the tolerance {100 * tol:.3g}% at every width (at level alpha); {parts}"
    return INCONCLUSIVE, f"not resolved within the tolerance {100 * tol:.3g}%; measured {parts}"


def format_results(results: Sequence[CheckResult]) -> str:
    """A plain-text table of results (one line per claim, then its message), readable in a terminal.

    For an asymptotic claim the t column is the fitted limit over its SE. Excluded networks
    (overflow, NaN) and networks whose tensor is identically zero (a dead layer, or underflow) are
    shown under the claim whenever there are any.
    """
    header = (f"{'claim':<38} {'exactness':<14} {'width':>5} {'networks':>8} {'prediction':>12} {'estimate +- SE':>24} "
              f"{'t':>7}  outcome")
    lines = [header, "-" * len(header)]
    for result in results:
        m = result.primary
        if result.limit is not None:
            z = format_z(result.limit.z, 7)
        else:
            z = "" if m.verdict is None else format_z(m.verdict.z, 7)
        estimate_text = f"{m.estimate.value:.6g} +- {m.estimate.se:.2g}"
        lines.append(f"{result.name:<38} {result.exactness:<14} {m.width:>5} {m.estimate.n:>8} {m.claim.value:>12.6g} "
                     f"{estimate_text:>24} {z:>7}  {result.outcome}")
        lines.append(f"    {result.message}")
        for x in result.measurements:
            counts = [f"{int(x.health.get(key, 0))} {label}" for key, label in
                      (("excluded", "excluded"), ("overflow", "overflowed (inf)"), ("nan", "NaN"),
                       ("zero_networks", "identically zero (a dead layer, or underflow)")) if x.health.get(key, 0)]
            if counts:
                lines.append(f"    width {x.width}: of {x.estimate.n + int(x.health.get('excluded', 0))} networks, "
                             + ", ".join(counts))
        used = sorted({m.engine for m in result.measurements})
        lines.append(f"    sampled by the {' and '.join(used)} engine{'s' if len(used) > 1 else ''}")
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    lines.append("")
    lines.append(", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items())))
    return "\n".join(lines)
