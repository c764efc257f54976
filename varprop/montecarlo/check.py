r"""Check claims against sampled networks: one verdict per claim, with a known error rate.

A claim (:class:`~varprop.claims.Claim`) or a claim family (:class:`~varprop.claims.ClaimFamily`) is
checked according to its exactness class:

``exact`` and ``gaussian-exact``
    a z-test of the prediction at the family's width *and* at the small widths of its sweep
    (n = 2..8): an exact claim must hold at every width, so any test that fails fails the claim.
    The claim passes when it is resolved (resolution :math:`\le` ``rtol``) at its own width; at the
    narrow widths, where per-network values are heavy-tailed and millions of networks would be needed
    to resolve 1 %, it must not be contradicted, and the resolution reached is reported.
``asymptotic``
    the relative deviation :math:`d(n) = (\hat\mu_n - \mu_0)/|\mu_0|` is measured at every width of
    the sweep; the claim fails when the deviation does not shrink at least like :math:`1/n`: with
    :math:`n_1` the smallest and :math:`n_k` the largest width, the one-sided test of
    :math:`|d(n_k)| \le (n_1/n_k)\,|d(n_1)|` rejects. It passes when that holds and the deviation is
    resolved at :math:`n_k` (resolution :math:`\le` ``rtol``).
``approximation``
    no verdict: the deviation at each width is reported (outcome ``MEASURED``).

All tests of the claims checked together form one family: Holm's step-down procedure holds the
family-wise false-alarm rate at ``alpha``. Resolutions use the Bonferroni critical value, so a PASS
always means a prediction off by more than ``rtol`` would have been caught.

When ``samples`` is not given, a pilot of 2,000 networks (from its own seed stream, then discarded)
estimates the per-network spread and the main sample is sized to resolve ``rtol`` (twice ``rtol``
at an exact claim's narrow widths), up to ``max_samples`` networks and ``max_floats`` drawn weights
per claim and width; if the main sample shows a larger spread than the pilot, it is enlarged once.
The sample size depends only on spreads, never on how far the estimate is from the prediction.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.special import ndtr

from ..claims import Claim, ClaimFamily
from ..errors import VarpropError, abbreviate
from ..network import Network
from ..observables import Observable, from_name
from . import limits
from .engines import Engine, check_engine, select_engine
from .errors import MonteCarloError
from .estimators import Estimate, estimate, health, per_network_values
from .executors import Executor, executor_from
from .sampler import sample
from . import laws
from .verdict import FAIL, INCONCLUSIVE, PASS, Verdict, format_z, holm, holm_critical_values, judge

__all__ = ["MEASURED", "Measurement", "ShrinkTest", "CheckResult", "check", "check_all", "format_results", "DEFAULT_RTOL"]

MEASURED = "MEASURED"
DEFAULT_RTOL = 0.01
_PILOT = 2_000
_SAFETY = 1.15


@dataclass(frozen=True)
class Measurement:
    """One claim at one width: the estimate, the relative deviation and (if tested) the verdict."""

    width: int
    claim: Claim
    estimate: Estimate
    deviation: float
    deviation_se: float
    verdict: Verdict | None
    health: Mapping[str, int]
    engine: str = "full"  # the sampling engine that drew the networks of this estimate

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "width": self.width,
            "prediction": self.claim.value,
            "estimate": self.estimate.value,
            "se": self.estimate.se,
            "n": self.estimate.n,
            "networks": self.estimate.n,  # the same count, in the report's vocabulary ("n" is kept for old readers)
            "deviation": self.deviation,
            "deviation_se": self.deviation_se,
            "engine": self.engine,
            **dict(self.health),
        }
        if self.verdict is not None:
            v = self.verdict
            out.update(z=v.z, p_value=v.p_value, z_crit=v.z_crit, resolution=v.resolution, outcome=v.outcome,
                       samples_needed=v.samples_needed)
        return out


@dataclass(frozen=True)
class ShrinkTest:
    r"""Does the deviation shrink at least like :math:`1/n` between the smallest and largest width?"""

    small_width: int
    large_width: int
    statistic: float  # |d(n_k)| - (n_1/n_k) |d(n_1)|
    se: float
    p_value: float  # one-sided
    rejected: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "small_width": self.small_width,
            "large_width": self.large_width,
            "statistic": self.statistic,
            "se": self.se,
            "p_value": self.p_value,
            "rejected": self.rejected,
        }


@dataclass(frozen=True)
class CheckResult:
    """The outcome of checking one claim (over one or several widths)."""

    name: str
    exactness: str
    outcome: str
    measurements: tuple[Measurement, ...]
    message: str
    shrink: ShrinkTest | None = None
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
            "source": claim.source,
            "assumptions": list(claim.assumptions),
            "outcome": self.outcome,
            "message": self.message,
            "measurements": [m.to_dict() for m in self.measurements],
            "shrink": None if self.shrink is None else self.shrink.to_dict(),
            **({"derivation": claim.derivation.to_dict()} if claim.derivation is not None else {}),
        }


# --- planning ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    index: int  # which target
    family: ClaimFamily | None
    claim: Claim
    widths: tuple[int, ...]  # widths[0] is the primary width


def _plan(target: Claim | ClaimFamily, index: int, width: int | None) -> _Job:
    if isinstance(target, ClaimFamily):
        if width is not None:
            return _Job(index, target, target.at(width), (width,))
        claim = target.at()
        if claim.exactness in ("asymptotic", "approximation"):
            widths = tuple(sorted(set(target.sweep) | {target.width}, reverse=True))
        else:
            widths = (target.width, *[n for n in target.sweep if n != target.width])
        return _Job(index, target, claim, widths)
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
    return engine.cost(network, False)[0]


@dataclass(frozen=True)
class _Item:
    """One (claim, width) to estimate, with the tolerance its sample is sized for."""

    job: int
    position: int
    width: int
    claim: Claim
    rtol: float


def _measure(
    network: Network,
    items: Sequence[_Item],
    *,
    samples: int | None,
    seed: int,
    z_plan: float,
    max_samples: int,
    max_floats: float,
    engine: Engine | str = "auto",
    executor: Executor | None = None,
) -> list[tuple[Estimate, Mapping[str, int]]]:
    """Sample ``network`` once (pilot, main, at most one enlargement) and estimate every item's claim."""
    engine = _engine_for(network, items, engine)
    cap = max(_PILOT, min(max_samples, int(max_floats // max(1, _draws_per_network(network, engine)))))
    cap = limits.affordable(network, cap, engine)  # never more networks than fit in memory

    def needed(item: _Item, est: Estimate) -> int:
        scale = _scale(item.claim)
        spread = est.se * math.sqrt(est.n)
        return limits.networks_needed(_SAFETY, z_plan * spread / (item.rtol * scale)) if spread > 0 else _PILOT

    observables = [_observable(item.claim, network) for item in items]

    def measure_all(drawn) -> list[tuple[Estimate, int]]:
        out = []
        for item, observable in zip(items, observables):
            est = limits.quiet(estimate, drawn, observable)
            limits.require_finite([item], [est], drawn)  # overflowed networks: an error, never a biased verdict
            out.append((est, max(_skew_minimum(per_network_values(drawn, observable), z_plan),
                                 laws.exact_skew_minimum(observable, network, z_plan))))
        return out

    main_seed = _seed(seed, network, 1)
    if samples is None:
        pilot = sample(network, _PILOT, seed=_seed(seed, network, 0), engine=engine, executor=executor)
        pilot_estimates = [limits.quiet(estimate, pilot, observable) for observable in observables]
        limits.require_finite(items, pilot_estimates, pilot)
        count = int(min(cap, max(_PILOT, *(needed(item, est) for item, est in zip(items, pilot_estimates)))))
    else:
        count = samples
    drawn = sample(network, count, seed=main_seed, engine=engine, executor=executor)
    results = measure_all(drawn)
    wanted = max(max(needed(item, est), minimum) for item, (est, minimum) in zip(items, results))
    if samples is None and count < cap and wanted > count:
        # The pilot underestimated a heavy-tailed spread or skew: enlarge the sample once. The first
        # networks of a larger sample are the same networks, and the size depends on spreads and
        # skewness, never on the means.
        drawn = sample(network, int(min(cap, wanted)), seed=main_seed, engine=engine, executor=executor)
        results = measure_all(drawn)
    # Health at the observable's own position(s): excluded (any non-finite value), overflow and NaN
    # there, and the finite networks whose observed tensor is identically zero.
    # "zero_input_networks" is the key's name since the first version (JSON output): kept beside "zero_networks".
    return [(est, {**(state := health(drawn, observable)), "zero_input_networks": state["zero_networks"],
                   "skew_minimum": minimum})
            for observable, (est, minimum) in zip(observables, results)]


def _engine_for(network: Network, items: Sequence[_Item], engine: Engine | str) -> Engine:
    """The engine that samples ``network`` for ``items`` (an explicit engine it cannot serve: an error naming the claim)."""
    if not network.is_numeric:
        raise MonteCarloError(f"claim {items[0].claim.name!r}: its network has symbolic widths; give integers to check it")
    try:
        return select_engine(engine, network)
    except MonteCarloError as exc:
        raise MonteCarloError(f"claim {items[0].claim.name!r}: {exc}") from None


def _observable(claim: Claim, network: Network) -> Observable:
    """The claim's observable: an :class:`Observable`, or a claim-file name at ``claim.layer`` turned into one."""
    observable = claim.observable
    if isinstance(observable, Observable):
        return observable
    try:
        return from_name(observable, claim.layer, network)
    except VarpropError as exc:
        raise MonteCarloError(f"claim {claim.name!r}: {exc}") from None


def _skew_minimum(values: np.ndarray, z: float) -> int:
    r"""Networks needed before the z-test's tail probability at ``z`` can be trusted despite skew.

    The one-term Edgeworth expansion of the studentized mean (Hall 1992, *The Bootstrap and
    Edgeworth Expansion*, Sec. 2.6) shifts the tail probability beyond :math:`z` by about
    :math:`\varphi(z)\,\gamma\,(2z^2 + 1)/(6\sqrt T)`, :math:`\gamma` the skewness of the
    per-network values; relative to the tail itself that is about :math:`z\gamma(2z^2+1)/(6\sqrt T)`.
    Keeping it under one half (so a nominal level alpha is at most 1.5 alpha) needs
    :math:`T \ge (z \gamma (2z^2+1)/3)^2`. At :math:`z = 1.96` this is about :math:`32\gamma^2`,
    Cochran's rule :math:`25\gamma^2`; it grows with the extreme critical values of a Holm family. Per-network second moments of narrow
    networks are strongly right-skewed (a product of layer factors), so this is what sizes them.
    """
    if values.size < 3:
        return 0
    values = values / max(float(np.max(np.abs(values))), np.finfo(float).tiny)  # scale-free; no overflow in the cube
    centred = values - values.mean()
    variance = float(np.mean(centred**2))
    if variance <= 0:
        return 0
    skewness = float(np.mean(centred**3)) / variance**1.5
    return math.ceil((z * abs(skewness) * (2 * z * z + 1) / 3) ** 2)


def _scale(claim: Claim) -> float:
    """What deviations are relative to: |prediction|, or 1 (absolute) for a zero prediction."""
    return abs(claim.value) if claim.value != 0 else 1.0


def _deviation(claim: Claim, est: Estimate) -> tuple[float, float]:
    scale = _scale(claim)
    return (est.value - claim.value) / scale, est.se / scale


# --- the checker -------------------------------------------------------------------------------


def check(
    target: Claim | ClaimFamily,
    *,
    samples: int | None = None,
    seed: int = 0,
    rtol: float = DEFAULT_RTOL,
    alpha: float = 0.05,
    width: int | None = None,
    max_samples: int = 2_000_000,
    max_floats: float = 4e8,
    engine: Engine | str = "auto",
    executor: Executor | str | None = None,
) -> CheckResult:
    """Check one claim or claim family (see the module docstring); equivalent to ``check_all([target])[0]``."""
    return check_all([target], samples=samples, seed=seed, rtol=rtol, alpha=alpha, width=width,
                     max_samples=max_samples, max_floats=max_floats, engine=engine, executor=executor)[0]


def check_all(
    targets: Sequence[Claim | ClaimFamily],
    *,
    samples: int | None = None,
    seed: int = 0,
    rtol: float = DEFAULT_RTOL,
    alpha: float = 0.05,
    width: int | None = None,
    max_samples: int = 2_000_000,
    max_floats: float = 4e8,
    progress: Callable[[str, int, int], None] | None = None,
    engine: Engine | str = "auto",
    executor: Executor | str | None = None,
) -> list[CheckResult]:
    """Check several claims together: Holm's procedure over all their tests holds the false-alarm rate at ``alpha``.

    Claims about the same network (at the same width) are estimated from the same sampled networks.
    ``progress(name, done, total)`` is called after each network is sampled.

    ``engine`` samples the networks: ``"auto"`` (the default: the exact conditional-Gaussian engine
    wherever it is valid, full weight matrices elsewhere), ``"full"`` or ``"conditional"`` (refused,
    with the reason, for a network it cannot serve); every measurement records the engine used.
    ``executor`` runs the blocks of networks: ``None``/``"serial"``, ``"processes[=N]"``,
    ``"dask[=ADDRESS]"`` or an :class:`~varprop.montecarlo.executors.Executor`; the verdicts do not
    depend on it (the samples are bit-identical).
    """
    if not (isinstance(rtol, float | int) and rtol > 0 and math.isfinite(rtol)):
        raise MonteCarloError(f"rtol must be a positive number, got {rtol!r}")
    if not (isinstance(alpha, float | int) and 0 < alpha < 1):
        raise MonteCarloError(f"alpha must be in (0, 1), got {alpha!r}")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 2):
        raise MonteCarloError(f"samples must be an integer of at least 2, got {abbreviate(samples)}")
    seed = limits.check_seed(seed)
    engine = check_engine(engine)
    limits.check_width(width, engine)  # before any claim is derived at that width
    jobs = [_plan(t, i, width) for i, t in enumerate(targets)]
    if not jobs:
        raise MonteCarloError("nothing to check: give at least one claim")
    tests = sum(_test_count(job) for job in jobs)
    z_plan = holm_critical_values(alpha, max(tests, 1))[0]
    # Every (claim, width) to estimate; an exact claim is resolved at its own width, while at its narrow
    # widths it must not be contradicted and the sample is sized for twice rtol (heavy tails there make
    # 1 % cost millions of networks).
    items = [
        _Item(j, position, n, _claim_at(job, n),
              2 * rtol if position > 0 and job.claim.exactness in ("exact", "gaussian-exact") else rtol)
        for j, job in enumerate(jobs)
        for position, n in enumerate(job.widths)
    ]
    limits.check_claims([item.claim for item in items], samples, _PILOT, engine)  # refuse what cannot fit, before sampling
    groups: dict[Network, list[_Item]] = {}
    for item in items:
        groups.setdefault(item.claim.network, []).append(item)
    measured: dict[tuple[int, int], tuple[Estimate, Mapping[str, int]]] = {}
    engines: dict[tuple[int, int], str] = {}
    with executor_from(executor) as runner:
        for done, (network, members) in enumerate(groups.items(), 1):
            chosen = _engine_for(network, members, engine)
            results = _measure(network, members, samples=samples, seed=seed, z_plan=z_plan,
                               max_samples=max_samples, max_floats=max_floats, engine=chosen, executor=runner)
            for item, result in zip(members, results):
                measured[item.job, item.position] = result
                engines[item.job, item.position] = chosen.name
            if progress is not None:
                progress(members[0].claim.name, done, len(groups))
    claims = {(item.job, item.position): item.claim for item in items}
    raw = [
        [(n, claims[j, position], *measured[j, position]) for position, n in enumerate(job.widths)]
        for j, job in enumerate(jobs)
    ]
    results = [laws.annotate(result) for result in _judge(jobs, raw, rtol=rtol, alpha=alpha, tests=tests)]
    return [replace(result, measurements=tuple(replace(m, engine=engines[j, r]) for r, m in enumerate(result.measurements)))
            for j, result in enumerate(results)]


def _test_count(job: _Job) -> int:
    if job.claim.exactness == "approximation":
        return 0
    if job.claim.exactness == "asymptotic" and len(job.widths) > 1:
        return 1
    return len(job.widths)


def _judge(jobs: list[_Job], raw: list[list[tuple]], *, rtol: float, alpha: float, tests: int) -> list[CheckResult]:
    # Gather every test's p-value; Holm decides which are rejected.
    p_values: list[float] = []
    owners: list[tuple[int, int | None]] = []  # (job index, width row or None for the shrink test)
    shrinks: dict[int, ShrinkTest] = {}
    for j, (job, rows) in enumerate(zip(jobs, raw)):
        kind = job.claim.exactness
        if kind == "approximation":
            continue
        if kind == "asymptotic" and len(rows) > 1:
            shrink = _shrink_test(rows)
            shrinks[j] = shrink
            p_values.append(shrink.p_value)
            owners.append((j, None))
            continue
        for r, (_, claim, est, _) in enumerate(rows):
            z = (est.value - claim.value) / est.se if est.se > 0 else (0.0 if est.value == claim.value else math.inf)
            p_values.append(float(2 * ndtr(-abs(z))))
            owners.append((j, r))
    rejected = holm(p_values, alpha) if p_values else []
    rejected_rows = {owner for owner, flag in zip(owners, rejected) if flag}
    m = max(tests, 1)

    results = []
    for j, (job, rows) in enumerate(zip(jobs, raw)):
        measurements = []
        for r, (n, claim, est, state) in enumerate(rows):
            deviation, deviation_se = _deviation(claim, est)
            verdict = None
            if job.claim.exactness != "approximation":
                verdict = judge(claim.value, est.value, est.se, est.n, rtol=rtol, alpha=alpha, m=m)
                if (j, r) in rejected_rows and verdict.outcome != FAIL:
                    verdict = replace(verdict, outcome=FAIL,
                                      message=f"rejected by Holm's procedure over {m} tests (z = {format_z(verdict.z)})")
            measurements.append(Measurement(n, claim, est, deviation, deviation_se, verdict, state))
        shrink = shrinks.get(j)
        if shrink is not None:
            shrink = replace(shrink, rejected=(j, None) in rejected_rows)
        outcome, message = _outcome(job.claim, measurements, shrink)
        results.append(CheckResult(job.claim.name, job.claim.exactness, outcome, tuple(measurements), message,
                                   shrink, job.claim))
    return results


def _shrink_test(rows: list[tuple]) -> ShrinkTest:
    by_width = sorted(rows, key=lambda row: row[0])
    (small, claim_s, est_s, _), (large, claim_l, est_l, _) = by_width[0], by_width[-1]
    d_s, se_s = _deviation(claim_s, est_s)
    d_l, se_l = _deviation(claim_l, est_l)
    ratio = small / large
    statistic = abs(d_l) - ratio * abs(d_s)
    se = math.hypot(se_l, ratio * se_s)
    p = float(ndtr(-statistic / se)) if se > 0 else (0.0 if statistic > 0 else 1.0)
    return ShrinkTest(small, large, statistic, se, p)


def _outcome(claim: Claim, measurements: list[Measurement], shrink: ShrinkTest | None) -> tuple[str, str]:
    primary = measurements[0]
    if claim.exactness == "approximation":
        parts = ", ".join(f"n={m.width}: {100 * m.deviation:+.2f}% (SE {100 * m.deviation_se:.2f}%)" for m in measurements)
        return MEASURED, f"approximation, not expected to hold; measured deviation {parts}"
    if shrink is not None:
        deviations = ", ".join(f"n={m.width}: {100 * m.deviation:+.2f}%" for m in sorted(measurements, key=lambda m: m.width))
        if shrink.rejected:
            return FAIL, (f"the deviation does not shrink like O(1/n) ({deviations}; one-sided p = {shrink.p_value:.2g})")
        if primary.verdict is not None and primary.verdict.resolution > primary.verdict.rtol:
            return INCONCLUSIVE, (f"deviation {deviations}; not resolved at n={primary.width}: about "
                                  f"{primary.verdict.samples_needed} networks would resolve rtol")
        settled = "" if primary.verdict is None or abs(primary.verdict.z) <= primary.verdict.z_crit else (
            f"; a finite-width deviation remains measurable at n={primary.width}")
        return PASS, f"deviation shrinks at least like O(1/n) ({deviations}){settled}"
    skewed = [m for m in measurements if m.verdict is not None and m.estimate.n < m.health.get("skew_minimum", 0)]
    if skewed:
        worst = max(skewed, key=lambda m: m.health["skew_minimum"] / m.estimate.n)
        return INCONCLUSIVE, (f"too skewed at n={worst.width} for the normal approximation behind z "
                              f"({worst.health['skew_minimum']} networks needed by the Edgeworth bound, "
                              f"{worst.estimate.n} drawn): no verdict either way")
    failed = [m for m in measurements if m.verdict is not None and m.verdict.outcome == FAIL]
    if failed:
        worst = max(failed, key=lambda m: abs(m.verdict.z))
        return FAIL, (f"contradicted at n={worst.width}: estimate {worst.estimate.value:.6g} +- {worst.estimate.se:.2g}, "
                      f"prediction {claim.value:.6g}, z = {format_z(worst.verdict.z)}")
    if primary.verdict is not None and primary.verdict.outcome == INCONCLUSIVE:
        return INCONCLUSIVE, (f"agrees but too noisy at n={primary.width} to resolve rtol: about "
                              f"{primary.verdict.samples_needed} networks would")
    others = [m for m in measurements[1:] if m.verdict is not None]
    text = (f"agrees at n={primary.width} (z = {format_z(primary.verdict.z)}, resolution "
            f"{100 * primary.verdict.resolution:.2f}%)")
    if others:
        text += "; not contradicted at n = " + ", ".join(
            f"{m.width} (z = {format_z(m.verdict.z)}, resolution {100 * m.verdict.resolution:.2f}%)" for m in others
        )
    return PASS, text


def format_results(results: Sequence[CheckResult]) -> str:
    """A plain-text table of results (one line per claim, then its message), readable in a terminal."""
    header = (f"{'claim':<38} {'exactness':<14} {'width':>5} {'networks':>8} {'prediction':>12} {'estimate +- SE':>24} "
              f"{'z':>7}  outcome")
    lines = [header, "-" * len(header)]
    for result in results:
        m = result.primary
        z = "" if m.verdict is None else format_z(m.verdict.z, 7)
        estimate_text = f"{m.estimate.value:.6g} +- {m.estimate.se:.2g}"
        lines.append(f"{result.name:<38} {result.exactness:<14} {m.width:>5} {m.estimate.n:>8} {m.claim.value:>12.6g} "
                     f"{estimate_text:>24} {z:>7}  {result.outcome}")
        lines.append(f"    {result.message}")
        used = sorted({m.engine for m in result.measurements})
        lines.append(f"    sampled by the {' and '.join(used)} engine{'s' if len(used) > 1 else ''}")
    counts = {}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    lines.append("")
    lines.append(", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items())))
    return "\n".join(lines)
