"""Verdicts and Holm's step-down procedure against hand-worked numbers (scipy's t and normal quantiles)."""

from __future__ import annotations

import math

import pytest
from scipy.stats import norm, t

from varprop.montecarlo import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    Estimate,
    MonteCarloError,
    holm,
    holm_critical_values,
    judge,
    judge_all,
)


def test_pass_fail_inconclusive():
    # t_crit for alpha = 0.05, one claim, 1000 networks: the t quantile with 999 degrees of freedom;
    # the resolution adds the 90 % power margin Phi^-1(0.9).
    crit, margin = t.ppf(0.975, 999), norm.ppf(0.9)
    passed = judge(1.0, 1.01, 0.01, 1000, rtol=0.05)
    assert passed.outcome == PASS and passed.z == pytest.approx(1.0)
    assert passed.z_crit == pytest.approx(crit)
    assert passed.resolution == pytest.approx((crit + margin) * 0.01)
    assert passed.p_value == pytest.approx(2 * t.sf(1.0, 999))
    assert passed.samples_needed is None and "90% power" in passed.message

    failed = judge(2.0, 1.01, 0.01, 1000, rtol=0.05)  # missing factor 1/2
    assert failed.outcome == FAIL and failed.z == pytest.approx(-99.0)
    assert "contradicted" in failed.message

    # agrees, but resolution (1.96 + 1.28) * 0.1 / 1 = 32% > 5%: 1000 * (0.32 / 0.05)^2 networks
    unsure = judge(1.0, 1.05, 0.1, 1000, rtol=0.05)
    assert unsure.outcome == INCONCLUSIVE
    assert unsure.samples_needed == math.ceil(1000 * ((crit + margin) * 0.1 / 0.05) ** 2)
    assert str(unsure.samples_needed) in unsure.message


def test_zero_prediction_uses_an_absolute_tolerance():
    # z = 1; resolution (t_crit + z_0.9) * SE = 0.0032 (absolute) against atol 0.01, then 0.001
    span = t.ppf(0.975, 499) + norm.ppf(0.9)
    verdict = judge(0.0, 0.001, 0.001, 500, rtol=0.01)
    assert verdict.outcome == PASS
    assert verdict.resolution == pytest.approx(span * 0.001)
    assert "atol" in verdict.message and "observable's units" in verdict.message
    unsure = judge(0.0, 0.001, 0.001, 500, rtol=0.001)
    assert unsure.outcome == INCONCLUSIVE
    assert unsure.samples_needed == math.ceil(500 * (span * 0.001 / 0.001) ** 2)
    assert judge(0.0, 0.003, 0.001, 500, rtol=0.01).outcome == FAIL
    # an explicit atol is the tolerance, whatever rtol is
    stated = judge(0.0, 0.001, 0.001, 500, rtol=1e-9, atol=0.01)
    assert stated.outcome == PASS and stated.rtol == 0.01 and "atol 0.01" in stated.message


def test_zero_standard_error():
    assert judge(1.0, 1.0, 0.0, 10, rtol=1e-9).outcome == PASS
    exact_but_wrong = judge(1.0, 1.5, 0.0, 10, rtol=0.1)
    assert exact_but_wrong.outcome == FAIL and exact_but_wrong.p_value == 0.0


def test_bonferroni_for_one_of_m_claims():
    assert judge(1.0, 1.0, 0.01, 10, rtol=0.1, m=5).z_crit == pytest.approx(t.isf(0.05 / 10, 9))


def test_small_samples_use_the_t_reference():
    # 20 networks: |t| = 2.05 is within t_crit(19) = 2.093 (the normal's 1.96 would reject).
    verdict = judge(1.0, 1.0205, 0.01, 20, rtol=0.2)
    assert verdict.z_crit == pytest.approx(t.ppf(0.975, 19)) and verdict.outcome == PASS
    assert verdict.p_value == pytest.approx(2 * t.sf(2.05, 19))


def test_holm_critical_values():
    values = holm_critical_values(0.05, 3)
    assert values == pytest.approx([norm.isf(0.05 / 6), norm.isf(0.05 / 4), norm.isf(0.05 / 2)])


def test_holm_hand_worked():
    # alpha = 0.05, m = 4. Sorted: 0.005 <= 0.05/4 = 0.0125 reject; 0.01 <= 0.05/3 = 0.0167 reject;
    # 0.03 > 0.05/2 = 0.025 stop: 0.03 and 0.04 are not rejected (although 0.04 <= 0.05).
    assert holm([0.01, 0.04, 0.03, 0.005], 0.05) == [True, False, False, True]
    # m = 2: 0.012 <= 0.025 reject, then 0.04 <= 0.05 reject; Bonferroni (0.025 each) keeps 0.04.
    assert holm([0.04, 0.012], 0.05) == [True, True]
    assert holm([0.5], 0.05) == [False] and holm([], 0.05) == []


def test_judge_all_uses_the_step_down():
    # t = 3.0 (p = 0.0034 with 99 df), 2.3 (p = 0.0235), 0.5: with m = 3, Holm rejects the first
    # (0.0034 <= 0.0167) and the second (0.0235 <= 0.025), not the third.
    predictions = [1.0, 1.0, 1.0]
    estimates = [Estimate(1.03, 0.01, 100), Estimate(1.023, 0.01, 100), Estimate(1.005, 0.01, 100)]
    verdicts = judge_all(predictions, estimates, rtol=0.1)
    assert [v.outcome for v in verdicts] == [FAIL, FAIL, PASS]
    assert verdicts[0].z_crit == pytest.approx(t.isf(0.05 / 6, 99))
    assert verdicts[1].z_crit == pytest.approx(t.isf(0.05 / 4, 99))
    assert verdicts[2].z_crit == pytest.approx(t.isf(0.05 / 2, 99))
    for v in verdicts:
        assert (v.outcome == FAIL) == (abs(v.z) > v.z_crit)
    # Bonferroni alone (t_crit 2.43) would have passed the second claim
    assert judge(1.0, 1.023, 0.01, 100, rtol=0.1, m=3).outcome == PASS


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rtol": 0.0}, "rtol"),
        ({"rtol": 0.1, "alpha": 1.0}, "alpha"),
        ({"rtol": 0.1, "m": 0}, "m"),
    ],
)
def test_bad_verdict_options(kwargs, match):
    with pytest.raises(MonteCarloError, match=match):
        judge(1.0, 1.0, 0.1, 10, **kwargs)


def test_bad_verdict_values():
    with pytest.raises(MonteCarloError, match="estimate"):
        judge(1.0, float("nan"), 0.1, 10, rtol=0.1)
    with pytest.raises(MonteCarloError, match="standard error"):
        judge(1.0, 1.0, -0.1, 10, rtol=0.1)
    with pytest.raises(MonteCarloError, match="p_values"):
        holm([0.1, 1.5], 0.05)
    with pytest.raises(MonteCarloError, match="2 predictions but 1 estimates"):
        judge_all([1.0, 2.0], [Estimate(1.0, 0.1, 10)], rtol=0.1)


def test_a_rounding_level_deviation_is_no_contradiction():
    # A zero-variance observable (the mean square after RMSNorm with eps = 0): SE is rounding noise
    # (1e-18) and the estimate differs from the prediction by one ulp; t would be about -100.
    rounded = judge(1.0, 1.0 - 2.0**-52, 1e-18, 5000, rtol=0.01)
    assert rounded.outcome == PASS and rounded.z == 0.0
    # beyond rounding, the same tiny SE contradicts the prediction, and SE = 0 gives an infinite t, not a ZeroDivision
    assert judge(1.0, 1.0 - 1e-9, 1e-18, 5000, rtol=0.01).outcome == FAIL
    zero = judge(1.0, 1.0 - 1e-9, 0.0, 5000, rtol=0.01)
    assert zero.outcome == FAIL and math.isinf(zero.z)
