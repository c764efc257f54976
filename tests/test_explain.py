"""The explain topics: each answer's key numbers, asserted through the checker's own verdicts.

A wrong formula fed through the same networks FAILs, so the PASSes below are not vacuous.
"""

import math

import pytest
import scipy.optimize
import sympy as sp

from varprop.claims import ClaimError
from varprop.explain import TOPICS, answer
from varprop.montecarlo import FAIL, MEASURED, PASS, check_all


@pytest.fixture(scope="module")
def answers():
    return {name: answer(name) for name in TOPICS}


def _by_name(result, name):
    return next(r for r in result.checks if r.name == name)


def test_every_topic_answers_with_derivation_checks_and_figure(answers):
    for name, result in answers.items():
        assert result.paragraphs and result.derivations and result.checks and result.series
        assert all(r.outcome in (PASS, MEASURED) for r in result.checks), name
        text = result.text(data=result.figure_data(samples=200))
        assert result.topic.title in text and "Monte Carlo checks" in text and "Figure (numbers)" in text
        assert result.markdown().startswith("## ") and "\\section{" in result.latex()


def test_why_half(answers):
    result = answers["why-half"]
    for claim_name in ("relu keeps half (normal)", "relu keeps half (uniform)"):
        check = _by_name(result, claim_name)
        assert check.outcome == PASS and check.claim.value == 1.0  # E[x_2^2] = Var[y_1]/2 = 2/2
        wrong = check.claim.with_prediction(sp.Integer(2), name=claim_name + " without the 1/2")
        assert check_all([wrong])[0].outcome == FAIL
    assert _by_name(result, "leaky relu keeps (1+a^2)/2, a=0.2").claim.value == pytest.approx(
        (1 + 0.04) / 2 * 2 / (1 + 0.04), rel=1e-15)


def test_why_not_zero_mean(answers):
    result = answers["why-not-zero-mean"]
    mean = _by_name(result, "E[x_2] = sqrt(Var[y_1]/(2 pi))")
    # Var[y_1] = 2 under He init, so the prediction is sqrt(1/pi): within the checker's verdict.
    assert mean.claim.value == pytest.approx(math.sqrt(1 / math.pi), rel=1e-15) and mean.outcome == PASS
    assert check_all([mean.claim.with_prediction(sp.Integer(0), name="zero mean")])[0].outcome == FAIL
    assert _by_name(result, "E[y_1] = 0 (zero-mean weights)").outcome == PASS
    # The shifted relu's fixed point under He init, by independent root finding of q = 2 E[(relu(z)-1/2)^2].
    def excess(q):
        return 2 * (q / 2 - math.sqrt(q / (2 * math.pi)) + 0.25) - q
    assert result.numbers["shifted_fixed_point"] == pytest.approx(scipy.optimize.brentq(excess, 0.01, 1.0), rel=1e-12)
    assert result.numbers["shifted_weight_scale_for_unit_variance"] == pytest.approx(
        1 / (0.75 - 1 / math.sqrt(2 * math.pi)), rel=1e-12)


def test_pre_vs_post_activation(answers):
    result = answers["pre-vs-post-activation"]
    weight = [r for r in result.checks if r.claim.observable_name == "dw_second_moment"]
    assert weight and all(r.outcome == PASS and r.claim.value == 1.0 for r in weight)
    wrong = weight[0].claim.with_prediction(sp.Integer(2), name="Var[x] for E[x^2] in dL/dW")
    assert check_all([wrong])[0].outcome == FAIL


def test_fan_in_vs_fan_out(answers):
    result = answers["fan-in-vs-fan-out"]
    widths = [32, 64, 128, 64, 32, 16]
    values = {r.name: r.claim.value for r in result.checks}
    assert values["fan-in: forward E[y_L^2]"] == 2.0
    assert values["fan-out: backward E[(dL/dx_2)^2]"] == 2.0
    # The other direction is off by a ratio of widths, not by a power of the depth.
    assert values["fan-out: forward E[y_L^2]"] / values["fan-in: forward E[y_L^2]"] == pytest.approx(
        widths[1] / widths[-2] * 1.0, rel=1e-12)
    assert all(r.outcome == PASS for r in result.checks)


def test_glorot_vs_he(answers):
    result = answers["glorot-vs-he"]
    glorot = _by_name(result, "relu, Glorot: E[y_8^2]")
    assert glorot.claim.value == pytest.approx(2 ** -7, rel=1e-15) and glorot.outcome == PASS
    tanh = _by_name(result, "tanh, Glorot: linear-regime E[y_8^2]")
    assert tanh.outcome == MEASURED and tanh.primary.deviation < -0.5


def test_pytorch_default(answers):
    result = answers["pytorch-default"]
    gain = math.sqrt(2 / (1 + 5))  # PyTorch's calculate_gain('leaky_relu', sqrt(5))
    n = 32
    variance = (gain * math.sqrt(3 / n)) ** 2 / 3  # U(-b, b) with b = gain * sqrt(3 / fan_in)
    assert result.numbers["factor"] == pytest.approx(n * variance / 2, rel=1e-12) == pytest.approx(1 / 6)
    first = _by_name(result, "PyTorch default: E[y_1^2]")
    assert first.outcome == PASS and first.claim.value == pytest.approx(1 / 3)
    assert _by_name(result, "PyTorch default: E[y_15^2]").claim.value == pytest.approx(6.0**-14 / 3, rel=1e-12)


def test_unknown_topic():
    with pytest.raises(ClaimError, match="unknown topic 'why'; known: why-half"):
        answer("why")
