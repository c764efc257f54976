r"""Law claims: "the sampled quantity follows this distribution", judged by a goodness-of-fit test.

A law claim names the exact law of the normalised squared length :math:`M_L` of a zero-bias relu
network (:mod:`varprop.derive.finite`): an atom at 0 of mass :math:`1 - \prod_j (1 - 2^{-n_j})` (some
layer dead) and, given no dead layer, :math:`\log M_L = \sum_j \log(c_j \chi^2_{K_j})` with
independent :math:`K_j \sim \mathrm{Binomial}(n_j, 1/2)` conditioned on :math:`K_j \ge 1`. It is
tested on sampled networks by two tests in the claims' Holm family:

* a Kolmogorov-Smirnov test of the sampled :math:`\log M_L` of the live networks against the exact
  CDF (:func:`scipy.stats.kstest`), and
* an exact binomial test of the number of networks with :math:`M_L = 0`.

The CDF is exact for one layer (a finite mixture of chi-square CDFs); for several layers it is the
numerical convolution of the per-layer densities on a grid, and :attr:`ExactLaw.accuracy` is the
sup-distance between the grid at spacing h and at 2h (the trapezoid error is :math:`O(h^2)`, so
this bounds the error at h). It enters the power statement below.

Verdicts. ``FAIL`` when Holm's procedure rejects either test. Otherwise ``PASS`` only when the test
would have detected the smallest departure the claim asks to resolve (``tolerance``, a sup-distance
between CDFs) with probability at least 90%: by the Dvoretzky-Kiefer-Wolfowitz inequality
(Massart 1990) the empirical CDF of N draws lies within :math:`\varepsilon_{90} = \sqrt{\ln 20/(2N)}`
of the true one with probability 0.9, so a law at sup-distance
:math:`\Delta \ge d_{90} = c_{\alpha'}(N) + \varepsilon_{90} + \text{accuracy}` from the claimed one is
rejected with probability at least 0.9 (:math:`c_{\alpha'}(N)`: the KS critical value at the Holm
level). ``INCONCLUSIVE`` when :math:`d_{90} >` ``tolerance``, with the number of networks that would
resolve it.

Heavy tails (:func:`moment_tails`, :func:`rao_blackwell`): at width 10 and depth 10,
:math:`E[M_L^2] = 1.5^{10}` but the per-network :math:`M_L^2` has an enormous skewness (computed
exactly from the law), so the plain mean's standard error is itself unreliable at any practical
number of networks. Conditioning on the counts :math:`K_j` of active units, which the sampled
networks report, :math:`E[M_L^2 \mid K] = \prod_j c_j^2 (K_j^2 + 2K_j)` is known in closed form; its
average over sampled networks is a Rao-Blackwellised estimator of :math:`E[M_L^2]` whose variance is
far smaller and whose per-network values have moderate skewness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import ModuleType

import numpy as np

from .errors import MonteCarloError
from .verdict import FAIL, INCONCLUSIVE, PASS, holm


def _stats() -> ModuleType:
    """``scipy.stats``, imported on first use: it costs 0.5 s (scipy.signal with it), and every command would pay it."""
    import scipy.stats

    return scipy.stats


__all__ = [
    "ExactLaw",
    "LawTest",
    "LawVerdict",
    "law_test",
    "judge_laws",
    "law_p_values",
    "verdicts_from_holm",
    "law_tests",
    "checked_law_claims",
    "detectable_departure",
    "networks_needed",
    "sample_norms",
    "MomentTails",
    "moment_tails",
    "exact_power_moment",
    "exact_log_skewness",
    "planned_skew_networks",
    "rao_blackwell",
    "sample_counts",
    "LawClaim",
    "check_laws",
    "format_laws",
]

#: The power the law tests are required to have against a departure of ``tolerance``.
POWER = 0.9


def _check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    values = tuple(widths)
    if len(values) < 2 or any(not isinstance(w, int | np.integer) or isinstance(w, bool) or w < 1 for w in values):
        raise MonteCarloError(f"widths must be at least two positive integers n_0..n_L, got {values!r}")
    if len(values) > 41 or max(values) > 4096:
        raise MonteCarloError(f"law claims take at most 40 layers of width at most 4096, got {values!r}")
    return tuple(int(w) for w in values)


@dataclass(frozen=True)
class ExactLaw:
    r"""The law of :math:`M_L` for a zero-bias relu network with Gaussian weights of variance
    :math:`s_j` (default He's, :math:`2/n_{j-1}`): an atom at 0 and the law of :math:`\log M_L` given
    no dead layer.

    ``active`` is the probability that a unit is active (1/2 for every symmetric law; another value
    gives a *wrong* law, used to show the test's power).
    """

    widths: tuple[int, ...]
    variances: tuple[float, ...] | None = None
    active: float = 0.5
    spacing: float = 0.004

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", _check_widths(self.widths))
        if self.variances is not None:
            values = tuple(float(v) for v in self.variances)
            if len(values) != len(self.widths) - 1 or not all(math.isfinite(v) and v > 0 for v in values):
                raise MonteCarloError(f"variances must be {len(self.widths) - 1} positive numbers, got {self.variances!r}")
            object.__setattr__(self, "variances", values)
        if not 0 < self.active < 1:
            raise MonteCarloError(f"active must be a probability in (0, 1), got {self.active!r}")

    @property
    def scales(self) -> np.ndarray:
        r""":math:`c_j = s_j n_{j-1}/n_j`: :math:`F_j = c_j \chi^2_{K_j}`."""
        s = [2 / a for a in self.widths[:-1]] if self.variances is None else self.variances
        return np.array([v * a / b for v, a, b in zip(s, self.widths[:-1], self.widths[1:])])

    def _weights(self, n: int) -> np.ndarray:
        k = np.arange(1, n + 1)
        w = _stats().binom.pmf(k, n, self.active)
        return w / w.sum()

    @property
    def dead(self) -> float:
        r""":math:`P(M_L = 0) = 1 - \prod_j (1 - (1-p)^{n_j})`."""
        return float(1 - np.prod([1 - (1 - self.active) ** n for n in self.widths[1:]]))

    def _layer_density(self, n: int, c: float, grid: np.ndarray) -> np.ndarray:
        v = np.exp(grid - math.log(c))
        return sum(w * np.exp(_stats().chi2.logpdf(v, k)) * v for k, w in zip(range(1, n + 1), self._weights(n)))

    def _grid_cdf(self, spacing: float) -> tuple[np.ndarray, np.ndarray]:
        from scipy.signal import fftconvolve  # imported here: scipy.signal costs every command 0.3 s at start-up

        lows = [math.log(c) - 70 for c in self.scales]
        highs = [math.log(c) + math.log(n) + 6 + 4 * math.sqrt(1 / n) * 6 for c, n in zip(self.scales, self.widths[1:])]
        density, start = None, 0.0
        for n, c, lo, hi in zip(self.widths[1:], self.scales, lows, highs):
            grid = lo + spacing * np.arange(int(math.ceil((hi - lo) / spacing)) + 1)
            layer = self._layer_density(n, c, grid)
            if density is None:
                density, start = layer, lo
            else:
                density = fftconvolve(density, layer) * spacing
                start += lo
        grid = start + spacing * np.arange(density.size)
        cdf = np.concatenate(([0.0], np.cumsum((density[1:] + density[:-1]) / 2) * spacing))
        return grid, np.clip(cdf, 0.0, 1.0)

    @cached_property
    def _table(self) -> tuple[np.ndarray, np.ndarray, float]:
        if len(self.widths) == 2:
            return np.empty(0), np.empty(0), 1e-12
        grid, cdf = self._grid_cdf(self.spacing)
        coarse_grid, coarse = self._grid_cdf(2 * self.spacing)
        accuracy = float(np.max(np.abs(np.interp(grid, coarse_grid, coarse) - cdf)))
        return grid, cdf, max(accuracy, 1e-12)

    @property
    def accuracy(self) -> float:
        """A bound on the sup-error of :meth:`cdf_log` (exact mixture for one layer: rounding only)."""
        return self._table[2]

    def cdf_log(self, u: object) -> np.ndarray:
        r""":math:`P(\log M_L \le u \mid \text{no dead layer})`."""
        u = np.asarray(u, dtype=np.float64)
        if len(self.widths) == 2:
            n, c = self.widths[1], self.scales[0]
            v = np.exp(u - math.log(c))
            return sum(w * _stats().chi2.cdf(v, k) for k, w in zip(range(1, n + 1), self._weights(n)))
        grid, cdf, _ = self._table
        return np.interp(u, grid, cdf, left=0.0, right=1.0)

    def pdf_log(self, u: object) -> np.ndarray:
        r"""The density of :math:`\log M_L` given no dead layer (for plots)."""
        u = np.asarray(u, dtype=np.float64)
        grid, cdf = self._grid_cdf(self.spacing) if len(self.widths) > 2 else (None, None)
        if grid is None:
            return self._layer_density(self.widths[1], float(self.scales[0]), u)
        return np.interp(u, grid[1:], np.diff(cdf) / self.spacing, left=0.0, right=0.0)


def detectable_departure(networks: int, alpha: float, accuracy: float = 0.0) -> float:
    r""":math:`d_{90} = c_\alpha(N) + \sqrt{\ln 20/(2N)} + \text{accuracy}`: a law at this sup-distance
    or more is rejected by the KS test at level :math:`\alpha` with probability at least 0.9 (DKW)."""
    if networks < 1:
        return math.inf
    critical = float(_stats().kstwo.ppf(1 - alpha, networks))
    return critical + math.sqrt(math.log(2 / (1 - POWER)) / (2 * networks)) + accuracy


def networks_needed(tolerance: float, alpha: float, accuracy: float = 0.0) -> int | None:
    """The least N (to 1%) with :func:`detectable_departure` at most ``tolerance``; ``None`` when the CDF's
    own accuracy leaves no room."""
    room = tolerance - accuracy
    if room <= 0:
        return None
    guess = (math.sqrt(-math.log(alpha / 2) / 2) + math.sqrt(math.log(2 / (1 - POWER)) / 2)) ** 2 / room**2
    n = max(int(guess), 1)
    while detectable_departure(n, alpha, accuracy) > tolerance:
        n = int(n * 1.01) + 1
    return n


@dataclass(frozen=True)
class LawTest:
    """The two tests of one law claim on one sample, before the family's Holm step."""

    name: str
    statistic: float
    p_value: float
    networks: int
    dead_count: int
    dead_expected: float
    dead_p_value: float
    accuracy: float
    tolerance: float


@dataclass(frozen=True)
class LawVerdict:
    """A law claim's outcome: ``PASS``, ``FAIL`` or ``INCONCLUSIVE``, with the smallest detectable departure."""

    test: LawTest
    outcome: str
    detectable: float
    networks_needed: int | None
    message: str
    rejected: tuple[bool, bool] = field(default=(False, False))

    @property
    def passed(self) -> bool:
        return self.outcome == PASS


def sample_norms(widths: Sequence[int], networks: int, *, seed: int, distribution: str = "normal",
                 engine: str = "full") -> np.ndarray:
    r"""Per-network :math:`M_L` of ``networks`` sampled zero-bias relu networks at He's variance
    (the sampler's mean squares at the output over those at the input)."""
    from ..network import mlp
    from ..weights import he
    from .sampler import sample

    network = mlp(list(_check_widths(widths)), "relu", he(distribution=distribution), output_activation=True)
    samples = sample(network, networks, seed=seed, engine=engine)
    second = samples.per_position["signal_second_moment"]
    return second[:, -1] / second[:, 0]


def law_test(law: ExactLaw, values: object, *, tolerance: float = 0.02, name: str = "") -> LawTest:
    r"""The KS test of :math:`\log M_L` over the live networks and the exact binomial test of the dead count."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size < 2 or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise MonteCarloError("a law test needs at least two finite, non-negative sampled values of the normalised squared length")
    if not 0 < tolerance < 1:
        raise MonteCarloError(f"tolerance (a sup-distance between CDFs) must be in (0, 1), got {tolerance!r}")
    live = values[values > 0]
    dead = int(values.size - live.size)
    if live.size:
        ks = _stats().kstest(np.log(live), law.cdf_log)
        statistic, p_value = float(ks.statistic), float(ks.pvalue)
    else:
        statistic, p_value = 1.0, 0.0
    dead_p = float(_stats().binomtest(dead, values.size, law.dead).pvalue) if law.dead > 0 else float(dead == 0)
    return LawTest(name or f"law of the squared length at widths {law.widths}", statistic, p_value, int(live.size), dead,
                   law.dead * values.size, dead_p, law.accuracy, tolerance)


def judge_laws(tests: Sequence[LawTest], *, alpha: float = 0.05, other_p_values: Sequence[float] = ()) -> list[LawVerdict]:
    """Verdicts on law claims checked together (and with ``other_p_values`` of the family's other
    claims): Holm over every p-value, then the power requirement on the ones not rejected."""
    p_values = [p for t in tests for p in (t.p_value, t.dead_p_value)] + list(other_p_values)
    if not p_values:
        raise MonteCarloError("judge_laws needs at least one law test")
    rejected = holm(p_values, alpha)
    return verdicts_from_holm(tests, rejected[: 2 * len(tests)], family=len(p_values), alpha=alpha)


def law_p_values(tests: Sequence[LawTest]) -> list[float]:
    """The family's p-values of ``tests``, two per law claim: its KS test, then its dead count."""
    return [p for t in tests for p in (t.p_value, t.dead_p_value)]


def verdicts_from_holm(tests: Sequence[LawTest], rejected: Sequence[bool], *, family: int,
                       alpha: float = 0.05) -> list[LawVerdict]:
    """Verdicts on law claims whose :func:`law_p_values` Holm's procedure has already decided (``rejected``, in the
    same order) within a family of ``family`` tests: FAIL where a test is rejected, else PASS when the power
    requirement holds at Holm's most demanding level, else INCONCLUSIVE."""
    if len(rejected) != 2 * len(tests) or family < len(rejected):
        raise MonteCarloError(f"expected two Holm decisions per law test ({2 * len(tests)}) within a family of at least "
                              f"that many tests, got {len(rejected)} in a family of {family}")
    verdicts = []
    for index, test in enumerate(tests):
        ks_rejected, dead_rejected = bool(rejected[2 * index]), bool(rejected[2 * index + 1])
        level = alpha / family                  # Holm's first (most demanding) step bounds the power statement
        detectable = detectable_departure(test.networks, level, test.accuracy)
        needed = networks_needed(test.tolerance, level, test.accuracy)
        if ks_rejected or dead_rejected:
            which = " and ".join(w for w, r in (("the KS test", ks_rejected), ("the dead-network count", dead_rejected)) if r)
            outcome = FAIL
            verb = "reject" if ks_rejected and dead_rejected else "rejects"
            message = (f"{which} {verb} the law (KS D = {test.statistic:.4f}, p = {test.p_value:.2g}; "
                       f"{test.dead_count} dead networks, {test.dead_expected:.1f} expected, p = {test.dead_p_value:.2g}; "
                       f"Holm over {family} tests)")
        elif detectable <= test.tolerance:
            outcome = PASS
            message = (f"consistent with the law (KS D = {test.statistic:.4f}, p = {test.p_value:.2g}; Holm over "
                       f"{family} tests); a law at sup-distance {detectable:.4f} or more would have been rejected with "
                       "probability 0.9")
        else:
            outcome = INCONCLUSIVE
            message = (f"not rejected, but {test.networks} live networks only detect a sup-distance of "
                       f"{detectable:.4f} with probability 0.9, more than the tolerance {test.tolerance}"
                       + (f"; about {needed} live networks would resolve it" if needed else
                          "; the CDF's own accuracy is coarser than the tolerance"))
        verdicts.append(LawVerdict(test, outcome, detectable, needed, message, (ks_rejected, dead_rejected)))
    return verdicts


# --- heavy tails -------------------------------------------------------------------------------


def _chi2_power(k: np.ndarray, p: int) -> np.ndarray:
    r""":math:`E[(\chi^2_k)^p] = \prod_{i<p} (k + 2i)` (0 for k = 0)."""
    out = np.ones_like(k, dtype=np.float64)
    for i in range(p):
        out = out * (k + 2 * i)
    return out


def exact_power_moment(widths: Sequence[int], p: int) -> float:
    r""":math:`E[M_L^p] = \prod_j c_j^p\, E[\prod_{i<p}(K_j + 2i)]` at He's variance, by enumeration over each binomial."""
    widths = _check_widths(widths)
    total = 1.0
    for a, n in zip(widths[:-1], widths[1:]):
        k = np.arange(n + 1, dtype=np.float64)
        total *= (2 / n) ** p * float(np.sum(_stats().binom.pmf(k, n, 0.5) * _chi2_power(k, p)))
    return total


@dataclass(frozen=True)
class MomentTails:
    """How far a plain Monte Carlo mean of the per-network :math:`M_L^p` can be trusted (exact, from the law)."""

    widths: tuple[int, ...]
    order: int
    value: float
    relative_sd: float
    skewness: float
    networks_for_normality: float

    def trusted(self, networks: int) -> bool:
        """Cochran's rule :math:`N \\ge 25\\gamma^2` for the normal approximation of a skewed mean."""
        return networks >= self.networks_for_normality

    def message(self, networks: int) -> str:
        """Why a plain mean over ``networks`` networks cannot be trusted, and what can be checked instead (words and
        sympy formulas: :func:`~varprop.derive.derivation.prose`)."""
        import sympy as sp

        from ..derive.derivation import Code, Expect, prose

        m = sp.Symbol("M_L")
        power = m**self.order
        lower = ()
        if self.order > 1:
            first = moment_tails(self.widths, 1)
            lower = (", the lower moments, such as ", sp.Eq(Expect(m), sp.Float(first.value, 6)),
                     f" (about {first.networks_for_normality:.2g} networks by Cochran's rule)")
        return prose("the per-network ", power, f" has skewness {self.skewness:.3g} (exact, from the law), so a plain "
                     f"mean over {networks} networks is not approximately normal (Cochran's rule asks for "
                     f"{self.networks_for_normality:.3g}); its standard error understates the error. Checkable instead: "
                     "the law of ", m, " (a law claim), ", Expect(sp.log(m)), *lower,
                     ", and the Rao-Blackwellised estimate of ", Expect(power), " given the active counts (",
                     Code("varprop.montecarlo.laws.rao_blackwell"), ")")


def moment_tails(widths: Sequence[int], order: int = 2) -> MomentTails:
    r"""The exact spread and skewness of the per-network :math:`M_L^p` (from :math:`E[M_L^{kp}]`, k = 1..3)."""
    widths = _check_widths(widths)
    m1, m2, m3 = (exact_power_moment(widths, k * order) for k in (1, 2, 3))
    var = m2 - m1**2
    skew = (m3 - 3 * m1 * var - m1**3) / var**1.5
    return MomentTails(widths, order, m1, math.sqrt(var) / m1, skew, 25 * skew**2)


def rao_blackwell(counts: object, widths: Sequence[int], order: int = 2) -> np.ndarray:
    r"""Per-network :math:`E[M_L^p \mid K_1..K_L] = \prod_j c_j^p \prod_{i<p}(K_j + 2i)` at He's variance,
    for the active counts ``counts`` (shape ``(networks, L)``) of sampled networks."""
    widths = _check_widths(widths)
    k = np.asarray(counts, dtype=np.float64)
    if k.ndim != 2 or k.shape[1] != len(widths) - 1:
        raise MonteCarloError(f"counts must have shape (networks, {len(widths) - 1}), got {k.shape}")
    c = np.array([2 / n for n in widths[1:]])
    return np.prod(c**order * _chi2_power(k, order), axis=1)


def sample_counts(widths: Sequence[int], networks: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    r"""``(M_L, K)`` of ``networks`` sampled zero-bias relu networks with Gaussian weights at He's variance:
    per-network :math:`M_L` and the number of active units :math:`K_j` of every layer, shape ``(networks, L)``.

    The engines record per-position sums, not active counts, so the Rao-Blackwellised estimator draws its
    own full weight matrices here (``networks * sum_j n_j n_(j-1)`` normal numbers, in blocks of 4096 networks)."""
    widths = _check_widths(widths)
    if not isinstance(networks, int) or networks < 1:
        raise MonteCarloError(f"networks must be a positive integer, got {networks!r}")
    if networks * sum(a * b for a, b in zip(widths[:-1], widths[1:])) > 5 * 10**9:
        raise MonteCarloError(f"{networks} networks at widths {widths} draw too many weights (limit 5e9)")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    m, counts = np.empty(networks), np.empty((networks, len(widths) - 1), dtype=np.int64)
    for start in range(0, networks, 4096):
        stop = min(start + 4096, networks)
        x = rng.standard_normal((stop - start, widths[0]))
        first = (x**2).mean(axis=1)
        for j, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            y = np.einsum("nij,nj->ni", rng.standard_normal((stop - start, b, a)) * math.sqrt(2 / a), x)
            counts[start:stop, j] = np.count_nonzero(y > 0, axis=1)
            x = np.maximum(y, 0.0)
        m[start:stop] = (x**2).mean(axis=1) / first
    return m, counts


# --- hooks for the checker ---------------------------------------------------------------------


def _tail_order(observable: object) -> int | None:
    """The power of the norm ratio whose mean ``observable`` is (1 for the ratio, k for its moment of order k)."""
    from ..observables import NormRatio, NormRatioMoment

    if isinstance(observable, NormRatioMoment):
        return observable.order
    return 1 if type(observable) is NormRatio else None


def _chain_widths(observable: object, network: object) -> tuple[int, ...] | None:
    from ..derive.finite import relu_chain
    from ..errors import DerivationError

    try:
        widths, variances = relu_chain(network, observable.tensor.position, gaussian=True)
    except DerivationError:
        return None
    if any(abs(float(v) - 2 / a) > 1e-12 * (2 / a) for v, a in zip(variances, widths[:-1])):
        return None
    return widths


def _log_chain(observable: object, network: object) -> tuple[tuple[int, ...], tuple[object, ...], int | None] | None:
    """``(widths, variances, order)`` of a log-moment observable on a zero-bias relu chain with Gaussian weights (order
    None for the variance), else None; also None beyond the widths the exact skewness is computed for."""
    from ..derive.finite import _SKEW_MAX_WIDTH, relu_chain
    from ..errors import DerivationError
    from ..observables import LogNormRatioMoment, LogNormRatioVariance

    if not isinstance(observable, LogNormRatioMoment | LogNormRatioVariance):
        return None
    try:
        widths, variances = relu_chain(network, observable.tensor.position, gaussian=True)
    except DerivationError:
        return None
    if len(widths) > 101 or max(widths) > _SKEW_MAX_WIDTH:
        return None
    return widths, variances, None if isinstance(observable, LogNormRatioVariance) else observable.order


def _edgeworth_minimum(skew: float, z: float) -> int:
    if not math.isfinite(skew):
        return 0
    return int(min(math.ceil((z * abs(skew) * (2 * z * z + 1) / 3) ** 2), 10**18))


def exact_log_skewness(observable: object, network: object) -> float | None:
    r"""The exact skewness of the per-network value whose mean estimates a log-moment observable
    (:class:`~varprop.observables.LogNormRatioMoment`: :math:`(\log R)^k`;
    :class:`~varprop.observables.LogNormRatioVariance`: the influence value :math:`(\log R - \mu)^2`), over the
    networks without a dead layer, as the observable averages them; None where the finite-width law does not
    give it (not a zero-bias relu chain with Gaussian weights, or wider than the computation takes).
    From :func:`varprop.derive.finite.log_skewness`."""
    from ..derive.finite import log_skewness as exact

    chain = _log_chain(observable, network)
    if chain is None:
        return None
    widths, variances, order = chain
    return exact(widths, order, variances)


def exact_skew_minimum(observable: object, network: object, z: float) -> int:
    r"""Networks needed before a z-test of ``observable`` can be trusted, from the *exact* skewness of its
    per-network values where the finite-width law gives it, else 0. Same Edgeworth bound as the checker's
    sample-based one, :math:`T \ge (z\gamma(2z^2+1)/3)^2`; the sample skewness of a heavy-tailed value is biased
    low and scatters widely from sample to sample, the exact one does neither.

    Covered: the norm ratio and its moments :math:`E[R^k]` on a zero-bias relu chain with Gaussian weights at
    He's variance (:func:`moment_tails`), and the log moments :math:`E[(\log R)^k]` and :math:`\operatorname{Var}[\log
    R]` on such a chain at any weight variances (:func:`exact_log_skewness`), both given no dead layer, as the
    observables average over the networks whose signal is not identically zero."""
    log_skew = exact_log_skewness(observable, network)
    if log_skew is not None:
        return _edgeworth_minimum(log_skew, z)
    order = _tail_order(observable)
    widths = None if order is None else _chain_widths(observable, network)
    if widths is None:
        return 0
    return _edgeworth_minimum(moment_tails(widths, order).skewness, z)


def planned_skew_networks(observable: object, network: object, z: float) -> int:
    r"""Networks to *draw* so that :func:`exact_skew_minimum` is met by the networks the estimate averages: for a
    log-moment observable only the networks without a dead layer count, a fraction
    :math:`\prod_j (1 - 2^{-n_j})` of those drawn (:func:`varprop.derive.finite.dead_probability`), so the
    minimum is divided by it; the other observables average every network."""
    minimum = exact_skew_minimum(observable, network, z)
    chain = _log_chain(observable, network) if minimum else None
    if chain is None:
        return minimum
    alive = math.prod(1 - 2.0**-n for n in chain[0][1:])
    return int(min(math.ceil(minimum / alive), 10**18))


def _log_message(observable: object, network: object, networks: int, skew: float, minimum: int, z: float) -> object:
    """Why a log-moment claim with ``networks`` networks is left without a verdict, and what can be checked instead:
    the law of :math:`M_L` and the lower orders whose exact skewness the sample already meets."""
    import sympy as sp

    from ..derive.derivation import Expect, prose
    from ..observables import LogNormRatioMoment, LogNormRatioVariance

    log_r = sp.log(sp.Symbol("R"))
    if isinstance(observable, LogNormRatioVariance):
        value, lower = (log_r - sp.Symbol("mu")) ** 2, [1]
    else:
        value, lower = log_r**observable.order, list(range(1, observable.order))
    instead: list[object] = []
    for order in lower:
        needed = exact_skew_minimum(LogNormRatioMoment(observable.tensor, order), network, z)
        if needed <= networks:
            instead += [", ", Expect(log_r**order), f" (its exact skewness asks for {needed} networks)"]
    return prose("the per-network ", value, f" has skewness {skew:+.3g} (exact, from the law given no dead layer): "
                 f"with the exact skewness the Edgeworth bound asks for {minimum} networks, not {networks}. "
                 "Checkable instead: the law of ", sp.Symbol("M_L"), " (a law claim)", *instead)


def annotate(result: object) -> object:
    """A check result on a heavy-tailed moment that is ``INCONCLUSIVE`` gets a pointer to what can be checked
    instead (the law, E[log M_L], lower moments, the Rao-Blackwellised estimate; for a log moment, the law and the
    lower orders the sample suffices for); other results are returned as they are."""
    from dataclasses import replace

    from ..derive.derivation import prose

    claim = getattr(result, "claim", None)
    if claim is None or result.outcome != INCONCLUSIVE:
        return result
    networks = result.primary.estimate.n
    skew = exact_log_skewness(claim.observable, claim.network)
    if skew is not None:
        z = _test_level(result)
        minimum = _edgeworth_minimum(skew, z)
        if networks >= minimum:
            return result
        return replace(result, message=prose(result.message, "; ", _log_message(claim.observable, claim.network,
                                                                                networks, skew, minimum, z)))
    order = _tail_order(claim.observable)
    widths = None if order is None else _chain_widths(claim.observable, claim.network)
    if widths is None:
        return result
    tails = moment_tails(widths, order)
    if tails.trusted(networks):
        return result
    return replace(result, message=prose(result.message, "; ", tails.message(networks)))


def _test_level(result: object) -> float:
    """The normal critical value the checker's skew guard used for ``result``'s primary test (Holm's first step:
    the level of its t quantile), or 1.96 when the measurement has no verdict."""
    verdict = result.primary.verdict
    if verdict is None or not math.isfinite(verdict.z_crit) or verdict.n < 2:
        return 1.96
    return float(_stats().norm.isf(_stats().t.sf(verdict.z_crit, verdict.n - 1)))


# --- law claims --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LawClaim:
    r"""A claim that :math:`M_L` of a zero-bias relu network at He's variance follows the exact law.

    ``widths`` are :math:`n_0..n_L`; ``distribution`` the weight law the networks are *sampled* with
    (``normal``, ``uniform`` or ``truncated_normal``); ``active`` the claimed probability that a unit is
    active (1/2 is the derived law); ``tolerance`` the sup-distance between CDFs the test must resolve
    with 90% power; ``networks`` how many networks are sampled.
    """

    name: str
    widths: tuple[int, ...]
    distribution: str = "normal"
    active: float = 0.5
    tolerance: float = 0.02
    networks: int = 50_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", _check_widths(self.widths))
        if self.distribution not in ("normal", "uniform", "truncated_normal"):
            raise MonteCarloError(f"law claim {self.name!r}: distribution must be normal, uniform or truncated_normal, "
                                  f"got {self.distribution!r}")
        if not 0 < self.tolerance < 1:
            raise MonteCarloError(f"law claim {self.name!r}: tolerance must be in (0, 1), got {self.tolerance!r}")
        if isinstance(self.networks, bool) or not isinstance(self.networks, int) or not 2 <= self.networks <= 10**7:
            raise MonteCarloError(f"law claim {self.name!r}: networks must be an integer from 2 to 10^7, got {self.networks!r}")
        ExactLaw(self.widths, active=self.active)  # validates active


def checked_law_claims(claims: Sequence[LawClaim]) -> list[LawClaim]:
    """``claims`` as a list, refused (before anything is sampled) unless every one is a :class:`LawClaim`."""
    for claim in claims:
        if not isinstance(claim, LawClaim):
            raise MonteCarloError(f"expected a LawClaim, got {claim!r}")
    return list(claims)


def law_tests(claims: Sequence[LawClaim], *, seed: int = 0) -> list[LawTest]:
    """Sample each law claim's networks (its own seed stream) and run its two tests, before any Holm step."""
    tests = []
    for index, claim in enumerate(checked_law_claims(claims)):
        values = sample_norms(claim.widths, claim.networks, seed=seed + 1000 * (index + 1),
                              distribution=claim.distribution)
        tests.append(law_test(ExactLaw(claim.widths, active=claim.active), values, tolerance=claim.tolerance,
                              name=claim.name))
    return tests


def check_laws(claims: Sequence[LawClaim], *, seed: int = 0, alpha: float = 0.05,
               other_p_values: Sequence[float] = ()) -> list[LawVerdict]:
    """Sample each law claim's networks and judge all of them together (Holm, with ``other_p_values`` of the
    family's other claims). :func:`varprop.montecarlo.check.check_family` judges law claims and moment claims in
    one Holm family."""
    tests = law_tests(claims, seed=seed)
    return judge_laws(tests, alpha=alpha, other_p_values=other_p_values) if tests else []


def format_laws(verdicts: Sequence[LawVerdict]) -> str:
    """One block per law claim: name, networks, KS statistic and p-value, outcome, and the reason."""
    lines = [f"{'law claim':<38} {'networks':>9} {'KS D':>8} {'p':>9} {'dead':>7} {'expected':>9}  outcome",
             "-" * 95]
    for v in verdicts:
        t = v.test
        lines.append(f"{t.name:<38} {t.networks + t.dead_count:>9} {t.statistic:>8.4f} {t.p_value:>9.2g} "
                     f"{t.dead_count:>7} {t.dead_expected:>9.1f}  {v.outcome}")
        lines.append(f"    {v.message}")
    return "\n".join(lines)
