"""Law claims and heavy tails: the exact law of M_L against sampled networks (KS + dead count, Holm, power),
wrong laws FAIL, and the heavy-tailed moment is never FAILed while its Rao-Blackwellised estimate has an honest SE."""

import math

import mpmath
import numpy as np
import pytest
import sympy as sp
from scipy import integrate, stats

from varprop.claims import Claim
from varprop.derive import derive, finite
from varprop.derive.derivation import Expect
from varprop.montecarlo.check import check
from varprop.montecarlo.errors import MonteCarloError
from varprop.montecarlo.laws import (
    ExactLaw,
    detectable_departure,
    exact_power_moment,
    judge_laws,
    law_test,
    moment_tails,
    networks_needed,
    rao_blackwell,
    sample_counts,
    sample_norms,
)
from varprop.montecarlo.verdict import FAIL, INCONCLUSIVE, PASS, judge
from varprop.network import mlp
from varprop.observables import (
    DeadFraction,
    LogNormRatio,
    NormRatioSecondMoment,
    Signal,
)
from varprop.weights import he

from tests.prose_words import ASCII_MATH, words

NETWORKS = 20_000


def test_one_layer_cdf_is_the_chi_square_binomial_mixture():
    law = ExactLaw((3, 4))
    u = np.linspace(-6, 3, 7)
    c = 2 / 4
    by_hand = sum(math.comb(4, k) / 15 * stats.chi2.cdf(np.exp(u) / c, k) for k in range(1, 5))
    assert np.allclose(law.cdf_log(u), by_hand, atol=1e-14)
    assert law.dead == pytest.approx(1 / 16)


def test_two_layer_cdf_by_quadrature():
    """P(log F1 + log F2 <= u) = E[P(log F2 <= u - log F1)], a 1-d quadrature over F1's mixture."""
    law = ExactLaw((2, 3, 2))
    one, two = ExactLaw((2, 3)), ExactLaw((3, 2))
    for u in (-3.0, -0.5, 1.0):
        value = integrate.quad(lambda a, u=u: one.pdf_log(a) * two.cdf_log(u - a), -60, 12, limit=400, points=[-1, 0, 1])[0]
        assert abs(law.cdf_log(u) - value) < 5 * law.accuracy + 1e-7
    assert law.accuracy < 1e-4


def test_exact_power_moments_match_the_derivation():
    widths = (4, 3, 5, 2)
    assert exact_power_moment(widths, 2) == pytest.approx(float(finite.mean_square(widths)), rel=1e-13)
    assert exact_power_moment(widths, 1) == pytest.approx(1.0, rel=1e-13)


@pytest.mark.parametrize("widths", [(2, 2, 2), (3, 3, 3, 3), (4, 6), (8, 8, 8)])
def test_correct_law_passes_and_wrong_binomial_fails(widths):
    values = sample_norms(widths, NETWORKS, seed=sum(widths))
    right, wrong = judge_laws([law_test(ExactLaw(widths), values, tolerance=0.04),
                               law_test(ExactLaw(widths, active=0.45), values, tolerance=0.04)])
    assert right.outcome == PASS, right.message
    assert wrong.outcome == FAIL, wrong.message


def test_gaussian_law_fails_for_uniform_weights_at_width_two():
    values = sample_norms((2, 2), NETWORKS, seed=3, distribution="uniform")
    verdict, = judge_laws([law_test(ExactLaw((2, 2)), values, tolerance=0.04)])
    assert verdict.outcome == FAIL and verdict.rejected[0]          # the KS test, not the dead count, rejects
    assert not verdict.rejected[1]                                  # dead layers: 2^-n for any symmetric law


def test_too_few_networks_is_inconclusive_with_the_number_needed():
    values = sample_norms((3, 3), 500, seed=4)
    verdict, = judge_laws([law_test(ExactLaw((3, 3)), values, tolerance=0.02)])
    assert verdict.outcome == INCONCLUSIVE and verdict.networks_needed > 500
    assert detectable_departure(verdict.networks_needed, 0.025) <= 0.02 < detectable_departure(verdict.networks_needed // 2, 0.025)


def test_detectable_departure_has_ninety_percent_power():
    """Simulate KS tests against a law shifted to sup-distance d_90: at least 90% are rejected."""
    rng = np.random.default_rng(5)
    n, alpha = 400, 0.05
    d90 = detectable_departure(n, alpha)
    shift = stats.norm.ppf(0.5 + d90) - stats.norm.ppf(0.5)      # N(shift, 1) is at sup-distance d90 from N(0, 1)
    rejected = sum(stats.kstest(rng.standard_normal(n) + shift, "norm").pvalue < alpha for _ in range(300))
    assert rejected / 300 >= 0.9
    assert networks_needed(0.05, alpha) < networks_needed(0.02, alpha)


def test_holm_with_other_claims_makes_the_law_test_stricter():
    values = sample_norms((3, 3, 3), 3000, seed=6)
    alone, = judge_laws([law_test(ExactLaw((3, 3, 3)), values, tolerance=0.1)])
    family, = judge_laws([law_test(ExactLaw((3, 3, 3)), values, tolerance=0.1)], other_p_values=[0.5] * 20)
    assert family.detectable > alone.detectable


def test_bad_input():
    with pytest.raises(MonteCarloError, match="widths"):
        ExactLaw((3,))
    with pytest.raises(MonteCarloError, match="tolerance"):
        law_test(ExactLaw((3, 3)), np.ones(10), tolerance=2)
    with pytest.raises(MonteCarloError, match="non-negative"):
        law_test(ExactLaw((3, 3)), np.array([1.0, -1.0]))


# --- heavy tails -------------------------------------------------------------------------------

DEEP = (10,) * 11


def test_exact_tails_at_width_and_depth_ten():
    tails = moment_tails(DEEP, 2)
    assert tails.value == pytest.approx(1.5**10, rel=1e-12)
    assert tails.skewness > 1e5 and not tails.trusted(10**9)
    assert moment_tails(DEEP, 1).value == pytest.approx(1.0, rel=1e-12)


def test_rao_blackwell_se_is_honest_over_seeds():
    """z-scores of the Rao-Blackwellised estimate over 8 seeds: each within 4 SE and their squares sum like a
    chi-square(8) (inside its 0.1%..99.9% range); the plain mean's z-scores are not (the SE understates)."""
    exact = float(finite.mean_square(list(DEEP)))
    z_rb, z_plain = [], []
    for seed in range(8):
        m, counts = sample_counts(DEEP, 10_000, seed=seed)
        rb = rao_blackwell(counts, DEEP)
        z_rb.append((rb.mean() - exact) / (rb.std(ddof=1) / math.sqrt(rb.size)))
        z_plain.append(((m**2).mean() - exact) / ((m**2).std(ddof=1) / math.sqrt(m.size)))
    total = float(np.sum(np.square(z_rb)))
    assert stats.chi2.ppf(0.001, 8) < total < stats.chi2.ppf(0.999, 8), z_rb
    assert max(abs(z) for z in z_rb) < 4
    assert float(np.sum(np.square(z_plain))) > stats.chi2.ppf(0.999, 8), z_plain   # not honest


def test_rao_blackwell_judged_pass_and_wrong_value_fails():
    exact = float(finite.mean_square(list(DEEP)))
    _, counts = sample_counts(DEEP, 20_000, seed=11)
    rb = rao_blackwell(counts, DEEP)
    se = rb.std(ddof=1) / math.sqrt(rb.size)
    assert judge(exact, rb.mean(), se, rb.size, rtol=0.1).outcome == PASS
    assert judge(1.4**10, rb.mean(), se, rb.size, rtol=0.1).outcome == FAIL   # prod(1 + 4/n): wrong


@pytest.mark.parametrize("seed", [0, 1])
def test_checker_never_fails_the_heavy_tailed_moment_and_says_why(seed):
    net = mlp(list(DEEP), "relu", he(), output_activation=True)
    observable = NormRatioSecondMoment(Signal(len(net.layers) - 1))
    d = derive(net, observable)
    assert float(d.result) == pytest.approx(1.5**10)
    result = check(Claim("m2", net, observable, prediction=d.result, exactness=d.exactness, derivation=d),
                   samples=20_000, seed=seed)
    assert result.outcome == INCONCLUSIVE
    m = sp.Symbol("M_L")
    assert "exact, from the law" in result.message
    assert Expect(sp.log(m)) in result.message.parts and Expect(m**2) in result.message.parts   # formulas, typeset
    own = moment_tails(DEEP, 2).message(20_000)      # the heavy-tail part of the message: words and formulas
    assert own in result.message and ASCII_MATH.search(words(own)) is None, words(own)


def test_checker_passes_the_log_moment_and_fails_a_wrong_one():
    net = mlp([4, 4, 4, 4], "relu", he(), output_activation=True)
    observable = LogNormRatio(Signal(len(net.layers) - 1))
    d = derive(net, observable)
    with mpmath.workdps(30):
        assert float(d.result) == pytest.approx(float(finite.expected_log([4, 4, 4, 4])), abs=1e-14)
    # 100000 networks resolve 2%, not 1%, with the checker's 90% power: checked at rtol 2%
    right = check(Claim("log", net, observable, prediction=d.result, exactness=d.exactness), samples=100_000, seed=2,
                  rtol=0.02)
    wrong = check(Claim("log", net, observable, prediction=sp.Rational(-5, 2) * 3 / 4, exactness=d.exactness),
                  samples=100_000, seed=2, rtol=0.02)
    assert right.outcome == PASS, right.message
    assert wrong.outcome == FAIL, wrong.message


def test_checker_on_the_dead_fraction():
    net = mlp([3, 2, 2], "relu", he(distribution="uniform"), output_activation=True)
    observable = DeadFraction(Signal(len(net.layers) - 1))
    d = derive(net, observable)
    assert d.result == 1 - (1 - sp.Rational(1, 4)) ** 2
    # 100000 networks resolve a few percent of 7/16 with the checker's 90% power: checked at rtol 2%
    right = check(Claim("dead", net, observable, prediction=d.result, exactness=d.exactness), samples=100_000, seed=3,
                  rtol=0.02)
    assert right.outcome == PASS, right.message
    assert check(Claim("dead", net, observable, prediction=sp.Rational(1, 4), exactness="exact"), samples=100_000,
                 seed=3, rtol=0.02).outcome == FAIL


def test_law_claims_from_a_claim_file_through_the_cli(tmp_path, capsys):
    from varprop.cli import main

    path = tmp_path / "laws.toml"
    path.write_text('[[claim]]\nname = "dead"\nactivation = "relu"\nwidths = [3, 3, 3]\nplace = "act1"\n'
                    'observable = "dead_fraction"\nprediction = "1/8"\n\n'
                    '[[law]]\nname = "M_L at width 3"\nwidths = [3, 3, 3]\ntolerance = 0.05\nnetworks = 20000\n\n'
                    '[[law]]\nname = "wrong law"\nwidths = [3, 3, 3]\nactive = 0.45\ntolerance = 0.05\nnetworks = 20000\n')
    code = main(["check", str(path), "--quiet"])
    out = capsys.readouterr().out
    assert code == 1   # the wrong law FAILs
    lines = [line for line in out.splitlines() if line.startswith(("M_L at width 3", "wrong law"))]
    assert lines[0].endswith("PASS") and lines[1].endswith("FAIL"), out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[law]]\nname = "x"\nwidths = [3, 3]\ntolerance = 3\n')
    assert main(["check", str(bad)]) == 2
    assert "tolerance" in capsys.readouterr().err


# --- law claims in the claims' Holm family -----------------------------------------------------


def _cheap_claim():
    """One exact claim at one width: the dead fraction of a width-3 relu network (two tests in the family)."""
    from varprop.catalogue import claim_from_derivation

    net = mlp([3, 3, 3], "relu", he(), output_activation=True)
    return claim_from_derivation("dead", net, DeadFraction(Signal(len(net.layers) - 1)))


def test_law_claims_join_the_claims_holm_family():
    from varprop.catalogue import law_claims
    from varprop.montecarlo.check import check_all, check_family
    from varprop.montecarlo.laws import LawClaim, law_p_values, law_tests
    from varprop.montecarlo.verdict import holm

    catalogue = law_claims()
    wrong = LawClaim("wrong binomial", (4, 4, 4), active=0.45)
    laws = [*catalogue, wrong]
    claim = _cheap_claim()
    family = check_family([claim], laws, samples=50_000, seed=7, rtol=0.05)
    assert family.tests == 1 + 2 * len(laws)          # the claim's t-test and two tests per law claim
    assert [v.outcome for v in family.laws] == [PASS, PASS, FAIL], [v.message for v in family.laws]
    assert all(f"Holm over {family.tests} tests" in v.message for v in family.laws)
    # one Holm step over every p-value: the claims' first, then the laws' (KS, dead count), in order
    claim_p = [m.verdict.p_value for r in family.results for m in r.measurements]
    decided = holm(claim_p + law_p_values(law_tests(laws, seed=7)), 0.05)
    assert [flag for v in family.laws for flag in v.rejected] == decided[len(claim_p):]
    # a law claim in the family makes the moment claim's test stricter (Holm's critical value over more tests)
    alone = check_all([claim], samples=50_000, seed=7, rtol=0.05)[0]
    assert family.results[0].primary.verdict.z_crit > alone.primary.verdict.z_crit
    assert family.outcomes == {family.results[0].outcome, PASS, FAIL}


def test_catalogue_law_claims_are_exact_laws():
    from varprop.catalogue import law_claims

    claims = law_claims()
    assert [c.widths for c in claims] == [(4, 4), (4, 4, 4)] and all(c.active == 0.5 for c in claims)
    assert ExactLaw((4, 4)).dead == pytest.approx(1 / 16)   # one layer: the chi-square-binomial mixture's atom


def test_a_file_of_law_claims_only_is_judged_alone(tmp_path, capsys):
    from varprop.cli import main
    import json

    path = tmp_path / "laws.toml"
    path.write_text('[[law]]\nname = "M_L at width 3"\nwidths = [3, 3]\ntolerance = 0.05\nnetworks = 20000\n')
    assert main(["check", str(path), "--quiet", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["family_size"] == 2 and payload["laws"][0]["outcome"] == PASS and payload["results"] == []


def test_exact_skew_minimum_covers_the_log_moments_and_the_log_variance():
    """The guard's network count for the log observables is the Edgeworth bound at the exact skewness of the value
    the checker averages ((log R)^k, or (log R - mu)^2 for the variance), at the chain's own weight variances; a
    chain the law does not cover (tanh) gets 0, as before."""
    from varprop.montecarlo import laws
    from varprop.observables import LogNormRatioMoment, LogNormRatioVariance, NormRatioMoment
    from varprop.weights import lecun

    z = 2.5
    for weights, variances in ((he(), None), (lecun(), (sp.Rational(1, 3), sp.Rational(1, 4)))):
        net = mlp([3, 4, 2], "relu", weights, output_activation=True)
        last = Signal(len(net.layers) - 1)
        for observable, order in ((LogNormRatioMoment(last, 3), 3), (LogNormRatioVariance(last), None)):
            skew = finite.log_skewness((3, 4, 2), order, variances)
            assert laws.exact_log_skewness(observable, net) == skew
            assert laws.exact_skew_minimum(observable, net, z) == math.ceil((z * abs(skew) * (2 * z * z + 1) / 3) ** 2)
    assert finite.log_skewness((3, 4, 2), 3) != finite.log_skewness((3, 4, 2), 3, (sp.Rational(1, 3), sp.Rational(1, 4)))
    tanh = mlp([3, 4, 2], "tanh", he(), output_activation=True)
    assert laws.exact_skew_minimum(LogNormRatioMoment(Signal(3), 3), tanh, z) == 0
    # the plan draws enough networks for the live ones to meet the minimum (only they enter a log moment's mean);
    # a power moment averages every network, dead ones included
    net = mlp([3, 2, 2, 2], "relu", he(), output_activation=True)
    last = Signal(len(net.layers) - 1)
    minimum = laws.exact_skew_minimum(LogNormRatioMoment(last, 3), net, z)
    alive = 1 - finite.dead_probability([3, 2, 2, 2])
    assert laws.planned_skew_networks(LogNormRatioMoment(last, 3), net, z) == math.ceil(minimum / float(alive))
    assert float(alive) == pytest.approx((3 / 4) ** 3)
    third = NormRatioMoment(last, 3)
    assert laws.planned_skew_networks(third, net, z) == laws.exact_skew_minimum(third, net, z) > 0
