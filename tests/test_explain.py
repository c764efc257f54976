"""The explain topics: each answer's key numbers, asserted through the checker's own verdicts.

A wrong formula fed through the same networks FAILs, so the PASSes below are not vacuous.
"""

import dataclasses
import math

import pytest
import scipy.optimize
import sympy as sp

from varprop.claims import ClaimError
from varprop.cli import main
from varprop.explain import TOPICS, answer, reason
from varprop.montecarlo import FAIL, MEASURED, PASS, check_all
from varprop.plot import LINESTYLES


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
    mean = _by_name(result, "relu mean E[x_2]")
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


# --- the figure draws the predictions the table checks -------------------------------------------


def _disagreements(result, data):
    """Every check whose claim the figure shows (same network and observable) but with another prediction
    or another exactness class; and a problem when the figure shows none of the checks."""
    problems, compared = [], 0
    for check in result.checks:
        claim = check.claim
        shown = [d for s, d in zip(_flat_series(result), data)
                 if s.network == claim.network and d.observable == claim.observable_name]
        for d in shown:
            compared += 1
            value = d.predicted[d.layers.index(claim.layer)]
            if value != pytest.approx(claim.value, rel=1e-12, abs=1e-300):
                problems.append(f"{check.name}: figure draws {value}, the table checks {claim.value}")
            if d.exactness != check.exactness:
                problems.append(f"{check.name}: figure says {d.exactness}, the table {check.exactness}")
    return problems if compared else ["the figure shows none of the checked claims"]


def _flat_series(result):
    return [s for s in result.series for _ in s.observables]


@pytest.fixture(scope="module")
def figure_data(answers):
    # The theory does not depend on the sample count: a small one keeps the test fast.
    return {name: result.figure_data(samples=50) for name, result in answers.items()}


@pytest.mark.parametrize("name", ["why-not-zero-mean", "glorot-vs-he", "why-half", "pytorch-default"])
def test_every_figure_draws_the_prediction_its_table_checks(answers, figure_data, name):
    result = answers[name]
    assert _disagreements(result, figure_data[name]) == []
    figure = result.figure(figure_data[name])
    for d in figure_data[name]:
        (line,) = [l for ax in figure.axes for l in ax.lines if l.get_gid() == f"theory:{d.network_label}"
                   and ax.get_gid() == d.observable]
        assert line.get_linestyle() == LINESTYLES[d.exactness]  # dashed for asymptotic, dotted for approximation
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert {f"theory: {d.exactness}" in " ".join(legend).replace("exact for Gaussian inputs", "gaussian-exact")
            .replace("asymptotic (infinite width)", "asymptotic") for d in figure_data[name]} == {True}


def test_the_tanh_line_is_the_linear_regime_and_the_shifted_line_the_infinite_width_limit(figure_data):
    exactness = {d.network_label: d.exactness for d in figure_data["glorot-vs-he"]}
    assert exactness["tanh, Glorot (linear regime)"] == "approximation"
    assert {d.network_label: d.exactness for d in figure_data["why-not-zero-mean"]}["relu - 1/2, He"] == "asymptotic"


def test_a_figure_of_another_prediction_is_caught(answers):
    # The tanh series drawn without the linear regime: not the prediction the table checks.
    result = answers["glorot-vs-he"]
    wrong = dataclasses.replace(result, series=tuple(dataclasses.replace(s, linear_regime=False) for s in result.series))
    assert any("tanh" in p for p in _disagreements(wrong, wrong.figure_data(samples=50)))


# --- tables carry their reasons and tolerance; the user's network size -----------------------------


def test_every_verdict_has_its_reason_and_every_table_its_tolerance(answers):
    for result in answers.values():
        markdown = result.markdown()
        assert "| reason |" in markdown and "5%" in result.tolerance and "| n |" not in markdown
        for check in result.checks:
            assert reason(check) and reason(check).replace("|", "\\|") in markdown
    shifted = answers["why-not-zero-mean"].checks[3]
    assert shifted.outcome == PASS and "1/width" in reason(shifted)  # a +x% PASS says it is an asymptotic sweep
    assert "no verdict" in reason(answers["glorot-vs-he"].checks[2])


def test_tolerance_follows_rtol():
    result = answer("why-half", rtol=0.1, width=8, depth=3)
    assert "relative error of 10%" in result.tolerance and "error of 5%" not in result.tolerance
    assert all(m.width == 8 for r in result.checks for m in r.measurements)
    assert {s.network.widths for s in result.series} == {(8, 8, 8, 8)}
    assert "width-8" in str(result.paragraphs[1])


def test_width_and_depth_are_the_users(capsys):
    result = answer("glorot-vs-he", width=8, depth=4)
    assert [r.claim.layer for r in result.checks] == [4, 4, 4]
    assert all(s.network.widths == (8,) * 5 for s in result.series)
    for bad in (["--width", "1"], ["--depth", "99"], ["--width", "100000"]):
        assert main(["explain", "why-half", *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("varprop: topic 'why-half':") and "got" in err


def test_prose_has_no_ascii_math(answers):
    for result in answers.values():
        for paragraph in (*result.paragraphs, result.headline):
            words = "".join(p for p in paragraph.parts if isinstance(p, str))
            for ascii_math in ("^", "**", "sqrt(", "Var[", "E[", "_{", "q_star", "*"):
                assert ascii_math not in words, (result.topic.name, ascii_math, words)


# --- does width matter: the finite-width laws ------------------------------------------------------


def test_does_width_matter_checks_and_wrong_siblings(answers):
    from varprop.derive import finite
    from varprop.montecarlo.verdict import judge

    result = answers["does-width-matter"]
    assert all(r.outcome == PASS for r in result.checks)
    second = _by_name(result, "E[M_L^2], width 4, depth 2")
    assert second.claim.value == pytest.approx((1 + 5 / 4) ** 2, rel=1e-15)
    assert check_all([second.claim.with_prediction(sp.Integer(4), name="prod(1 + 4/n)")])[0].outcome == FAIL
    log = _by_name(result, "E[log M_L], width 8, depth 4")
    assert log.claim.value == pytest.approx(float(finite.expected_log([8] * 5)), abs=1e-12)
    assert check_all([log.claim.with_prediction(sp.Rational(-5, 4), name="large-width form")])[0].outcome == FAIL
    dead = _by_name(result, "dead layer, width 3, depth 3")
    assert dead.claim.value == pytest.approx(1 - (7 / 8) ** 3, rel=1e-15)
    assert check_all([dead.claim.with_prediction(1 - sp.Rational(7, 8) ** 4, name="input counted")])[0].outcome == FAIL
    # the Rao-Blackwellised estimate of E[M_L^2] = 1.5^10 quoted in the text, judged by the checker's verdict
    numbers = result.numbers
    assert judge(1.5**10, numbers["rao_blackwell"], numbers["rao_blackwell_se"], 20_000, rtol=0.1).outcome == PASS
    assert judge(1.4**10, numbers["rao_blackwell"], numbers["rao_blackwell_se"], 20_000, rtol=0.1).outcome == FAIL
    assert numbers["deep_skewness"] > 1e5
    assert "INCONCLUSIVE" in result.text(data=()) and "PASS" in result.paragraphs[-1]


def test_does_width_matter_figure_draws_the_exact_density(answers):
    import numpy as np

    from varprop.montecarlo.laws import ExactLaw

    result = answers["does-width-matter"]
    data = result.figure_data(samples=300)
    assert {sum(1 / w for w in d.widths[1:]) for d in data} == {0.5}   # equal sum of reciprocal widths
    figure = result.figure(data)
    for d in data:
        (line,) = [l for ax in figure.axes for l in ax.lines if l.get_gid() == f"exact:{d.network_label}"]
        assert np.allclose(line.get_ydata(), ExactLaw(d.widths).pdf_log(d.grid))
        assert abs(np.trapezoid(d.density, d.grid) - 1) < 1e-3
