"""The explain topics: each answer's key numbers, asserted through the checker's own verdicts.

A wrong formula fed through the same networks FAILs, so the PASSes below are not vacuous.
"""

import dataclasses
import math

import pytest
import scipy.optimize
import sympy as sp

from varprop.catalogue import claim_from_derivation
from varprop.claims import ClaimError, ClaimFamily
from varprop.cli import main
from varprop.derive import Expect
from varprop.derive.derivation import weakest, Prose, citation, prose_markdown, to_latex
from varprop.explain import TOPICS, answer, observable_formula, reason
from varprop.montecarlo import FAIL, MEASURED, PASS, check_all
from varprop.observables import legacy_name
from varprop.network import Residual, mlp
from varprop.observables import SecondMoment, Signal
from varprop.plot import LINESTYLES
from varprop.weights import he

from tests.prose_words import ASCII_MATH as _ASCII_MATH, words as _words


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
    assert _by_name(result, "leaky relu keeps its fraction (slope 0.2)").claim.value == pytest.approx(
        (1 + 0.04) / 2 * 2 / (1 + 0.04), rel=1e-15)


def test_why_not_zero_mean(answers):
    result = answers["why-not-zero-mean"]
    mean = _by_name(result, "relu's mean")
    # Var[y_1] = 2 under He init, so the prediction is sqrt(1/pi): within the checker's verdict.
    assert mean.claim.value == pytest.approx(math.sqrt(1 / math.pi), rel=1e-15) and mean.outcome == PASS
    assert check_all([mean.claim.with_prediction(sp.Integer(0), name="zero mean")])[0].outcome == FAIL
    assert _by_name(result, "pre-activations centred (zero-mean weights)").outcome == PASS
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
    # The asymptotic claims are checked over a width sweep; so is the wrong sibling (Var[x] for E[x^2]).
    assert all(r.limit is not None and len(r.limit.widths) == 3 for r in weight)
    claim = weight[0].claim
    depth, layer = claim.network.depth, claim.layer

    def wrong_at(n):
        right = claim_from_derivation("dW", mlp([n] * (depth + 1), "relu", he()), "dw_second_moment", layer)
        return right.with_prediction(sp.Integer(2), name="Var[x] for E[x^2] in dL/dW")

    wrong = ClaimFamily("Var[x] for E[x^2] in dL/dW", "", wrong_at, claim.width, weight[0].limit.widths)
    assert check_all([wrong])[0].outcome == FAIL


def test_fan_in_vs_fan_out(answers):
    result = answers["fan-in-vs-fan-out"]
    widths = [32, 64, 128, 64, 32, 16]
    values = {r.name: r.claim.value for r in result.checks}
    assert values["fan-in init, forward"] == 2.0
    assert values["fan-out init, backward"] == 2.0
    # The other direction is off by a ratio of widths, not by a power of the depth.
    assert values["fan-out init, forward"] / values["fan-in init, forward"] == pytest.approx(
        widths[1] / widths[-2] * 1.0, rel=1e-12)
    assert all(r.outcome == PASS for r in result.checks)


def test_glorot_vs_he(answers):
    result = answers["glorot-vs-he"]
    glorot = _by_name(result, "relu, Glorot")
    assert glorot.claim.value == pytest.approx(2 ** -7, rel=1e-15) and glorot.outcome == PASS
    assert observable_formula(glorot) == Expect(sp.IndexedBase("y")[8] ** 2)  # the table's observable column
    tanh = _by_name(result, "tanh, Glorot (linear regime)")
    assert tanh.outcome == MEASURED and tanh.primary.deviation < -0.5


def test_pytorch_default(answers):
    result = answers["pytorch-default"]
    gain = math.sqrt(2 / (1 + 5))  # PyTorch's calculate_gain('leaky_relu', sqrt(5))
    n = 32
    variance = (gain * math.sqrt(3 / n)) ** 2 / 3  # U(-b, b) with b = gain * sqrt(3 / fan_in)
    assert result.numbers["factor"] == pytest.approx(n * variance / 2, rel=1e-12) == pytest.approx(1 / 6)
    first = _by_name(result, "PyTorch default, layer 1")
    assert first.outcome == PASS and first.claim.value == pytest.approx(1 / 3)
    assert _by_name(result, "PyTorch default, layer 15").claim.value == pytest.approx(6.0**-14 / 3, rel=1e-12)


def test_pytorch_default_bias_floor(answers):
    """The floor 6/5 * 1/(3n): the fixed point of q -> q/6 + 1/(3n) by exact rational arithmetic, and checked by MC."""
    from fractions import Fraction

    result = answers["pytorch-default"]
    n = 32
    bias_variance = Fraction(1, 3 * n)  # U(+-1/sqrt(n)): bound^2 / 3
    floor = bias_variance / (1 - Fraction(1, 6))  # q = q/6 + Var[b]
    assert floor == Fraction(6, 5) * bias_variance
    q = Fraction(1, 3) + bias_variance  # E[y_1^2] = n Var[w] E[x^2] + Var[b], E[x^2] = 1
    for _ in range(19):
        q = q / 6 + bias_variance
    assert abs(q / floor - 1) < Fraction(1, 10**12)
    assert result.numbers["bias_floor"] == float(floor)
    check = _by_name(result, "PyTorch default with bias, layer 20")
    assert check.outcome == PASS and check.claim.value == pytest.approx(float(q), rel=1e-12)
    # A wrong floor (the bias variance alone, as if the weights contributed nothing) fails the same networks.
    wrong = check.claim.with_prediction(sp.Rational(1, 3 * n), name="floor without the weights")
    assert check_all([wrong], rtol=0.05)[0].outcome == FAIL


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
        named = legacy_name(claim.observable, claim.network) if claim.layer is None else (claim.observable_name, claim.layer)
        blocks = [p for p, layer in enumerate(claim.network.layers) if isinstance(layer, Residual)]
        if named is None and type(claim.observable) is SecondMoment and claim.observable.tensor.position in blocks:
            # a residual network's figure follows its block outputs (block l is layer l of the series)
            kind = "y_second_moment" if isinstance(claim.observable.tensor, Signal) else "dy_second_moment"
            named = kind, blocks.index(claim.observable.tensor.position) + 1
        if named is None:  # an observable with no per-layer series (a law, E[log M_L]): not drawn as a line
            continue
        name, layer = named
        shown = [d for s, d in zip(_flat_series(result), data) if s.network == claim.network and d.observable == name]
        for d in shown:
            compared += 1
            value = d.predicted[d.layers.index(layer)]
            if value != pytest.approx(claim.value, rel=1e-12, abs=1e-300):
                problems.append(f"{check.name}: figure draws {value}, the table checks {claim.value}")
            # A line is as exact as its weakest point: it may be weaker than one point's claim, never stronger.
            if weakest(d.exactness, check.exactness) != d.exactness:
                problems.append(f"{check.name}: figure says {d.exactness}, the table {check.exactness}")
    if not compared and getattr(result, "laws", ()):
        # A law figure draws exact densities, not the table's moments; it is held to the law by
        # test_does_width_matter_figure_draws_the_exact_density.
        return problems
    return problems if compared else ["the figure shows none of the checked claims"]


def _flat_series(result):
    return [s for s in result.series for _ in s.observables]


@pytest.fixture(scope="module")
def figure_data(answers):
    # The theory does not depend on the sample count: a small one keeps the test fast.
    return {name: result.figure_data(samples=50) for name, result in answers.items()}


@pytest.mark.parametrize("name", TOPICS)  # every topic, so a new one is held to it too
def test_every_figure_draws_the_prediction_its_table_checks(answers, figure_data, name):
    result = answers[name]
    assert _disagreements(result, figure_data[name]) == []
    if result.laws:  # a law figure: exact densities against sampled values, tested in test_does_width_matter_*
        return
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
    assert {d.network_label: d.exactness for d in figure_data["why-not-zero-mean"]}["shifted relu, He"] == "asymptotic"


def test_a_figure_of_another_prediction_is_caught(answers):
    # The tanh series drawn without the linear regime: not the prediction the table checks.
    result = answers["glorot-vs-he"]
    wrong = dataclasses.replace(result, series=tuple(dataclasses.replace(s, linear_regime=False) for s in result.series))
    assert any("tanh" in p for p in _disagreements(wrong, wrong.figure_data(samples=50)))


# --- edge of chaos ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edge(answers):
    return answers["edge-of-chaos"]  # shared with the other tests: the topic is answered once per run


def test_edge_of_chaos_checks_and_numbers(edge):
    from varprop.derive.meanfield import edge_of_chaos, mean_field

    assert [r.outcome for r in edge.checks] == [PASS] * 5
    critical = edge_of_chaos("tanh", [0.05])[0]
    # the q-map's fixed point from the mean-field module is the propagation engine's E[y_L^2] on that network
    assert _by_name(edge, "tanh, critical: length at layer 6").claim.value == pytest.approx(critical.q_star, rel=1e-9)
    # the propagation engine's prediction on the critical network is sigma_w^2 at every layer: chi_1 = 1 there
    assert _by_name(edge, "tanh, critical: gradient at layer 2").claim.value == pytest.approx(critical.weight_variance, rel=1e-9)
    assert _by_name(edge, "relu, He: gradient at layer 2").claim.value == 2
    for label in ("ordered", "chaotic"):
        check = _by_name(edge, f"tanh, {label}: gradient at layer 2")
        analysis = mean_field("tanh", check.claim.network.dense_layers[0].fan_in
                              * float(check.claim.network.dense_layers[0].weights.variance), 0.05)
        # the engine's layer-by-layer recursion at q* is sigma_w^2 chi_1^(L - 2), L = 6 (the two engines agree)
        assert check.claim.value == pytest.approx(analysis.weight_variance * analysis.chi_1.value ** 4, rel=1e-9)
    assert edge.numbers["relu_power_law_k"] == pytest.approx(9 * math.pi**2 / 2, rel=1e-15)
    assert edge.derivations[0].title == "The slope of the c-map of relu at c = 1" and edge.derivations[0].result == 1


def test_edge_of_chaos_wrong_sibling_fails(edge):
    """The critical network's gradient predicted with the ordered network's chi_1 (a wrong phase) FAILs."""
    from varprop.claims import ClaimFamily
    from varprop.derive.meanfield import mean_field

    def wrong_family(check, value):
        """The check's own sweep (an asymptotic claim is judged on its limit), every width predicting ``value(claim)``."""
        at = {m.width: dataclasses.replace(m.claim, value=value(m.claim)) for m in check.measurements}
        widest = max(at)
        return ClaimFamily(f"{check.name} (wrong)", "", lambda n: at[n], widest, tuple(n for n in at if n != widest))

    check = _by_name(edge, "tanh, critical: gradient at layer 2")
    wrong = wrong_family(check, lambda c: c.value * edge.numbers["chi_1_ordered"] ** 4)
    # and the length predicted with the ordered network's fixed point
    length = _by_name(edge, "tanh, critical: length at layer 6")
    wrong_length = wrong_family(length, lambda c: mean_field("tanh", 1.2, 0.05).q_star.value)
    assert [r.outcome for r in check_all([wrong, wrong_length], seed=1, rtol=0.05)] == [FAIL, FAIL]


def _edge_words(text) -> str:

    parts = text.parts if isinstance(text, Prose) else (text,)
    return "".join(p for p in parts if isinstance(p, str))


def test_edge_of_chaos_prose_and_formats(edge):
    import re

    # ASCII math in words (powers, products, roots, moments, subscripts, Gaussian laws, fractions, layer
    # arithmetic, lone formula letters), as the report's prose rules define it
    ascii_math = re.compile(r"\^|\*|sqrt\(|\b(?:E|Var)\[|_|~|\bN\(|\d/\d|\b[lL][+-]\d|(?<![\w'’-])[wxyzqnlLk](?![\w'’-])")
    texts = [edge.topic.title, edge.topic.question, *edge.paragraphs, edge.headline, *(r.name for r in edge.checks)]
    for derivation in edge.derivations:
        texts += [derivation.title, derivation.summary, *derivation.assumptions, *(s.justification for s in derivation.steps)]
    for text in texts:
        found = ascii_math.search(_edge_words(text))
        assert found is None, (found, _edge_words(text))
    assert ascii_math.search("E[x_2^2]") and ascii_math.search("z ~ N(0, q)")  # the pattern sees ASCII math
    assert "\\section{The edge of chaos}" in edge.latex() and edge.markdown().startswith("## The edge of chaos")
    assert "edge-of-chaos" in TOPICS


# --- tables carry their reasons and tolerance; the user's network size -----------------------------


def test_every_verdict_has_its_reason_and_every_table_its_tolerance(answers):
    for result in answers.values():
        markdown = result.markdown()
        assert "| reason |" in markdown and "5%" in result.tolerance and "| n |" not in markdown
        for check in result.checks:
            assert reason(check) and prose_markdown(reason(check)).replace("|", "\\|") in markdown
    shifted = answers["why-not-zero-mean"].checks[3]
    # a +x% PASS says it is an asymptotic sweep, the rate typeset
    assert shifted.outcome == PASS and reason(shifted).startswith("asymptotic: deviation fitted in 1/width over widths")
    assert reason(shifted).endswith("within rtol") and "limit" in reason(shifted)
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


def _texts(result):
    """Every sentence of an answer: question, paragraphs, headline, and its derivations' words."""
    yield result.topic.title
    yield result.topic.question
    yield from result.paragraphs
    yield result.headline
    for derivation in result.derivations:
        yield derivation.title
        yield derivation.summary
        yield from derivation.assumptions
        for step in derivation.steps:
            yield step.justification
            yield citation(step.source)


@pytest.mark.parametrize("name", TOPICS)
def test_prose_has_no_ascii_math(answers, name):
    for text in _texts(answers[name]):
        found = _ASCII_MATH.search(_words(text))
        assert found is None, (name, found, _words(text))


def test_the_ascii_math_check_sees_ascii_math():
    for bad in ("E[x_2^2]", "the 1/2", "z ~ N(0, q)", "for any y whose", "terms w x", "layer l+1", "kaiming_uniform_",
                "2*sqrt(pi)"):
        assert _ASCII_MATH.search(bad), bad
    for fine in ("He's paper", "a width-32 network", "eq. (8)", "x-axis", "PASS, resolution 4.1% at width 8"):
        assert _ASCII_MATH.search(fine) is None, fine


@pytest.mark.parametrize("name", TOPICS)
def test_claim_names_are_words_and_the_observable_is_typeset(answers, name):
    """A claim is named in words ("He normal, last layer"); what it measures is its own typeset column."""
    result = answers[name]
    names = [r.name for r in result.checks]
    assert len(set(names)) == len(names), names
    for check in result.checks:
        assert _ASCII_MATH.search(check.name) is None and "[" not in check.name and "=" not in check.name, check.name
        formula = observable_formula(check)
        assert isinstance(formula, sp.Basic) and formula == check.claim.derivation.steps[-1].lhs
        assert f"${to_latex(formula)}$" in result.latex() and f"${to_latex(formula)}$" in result.markdown()


# --- does the mean matter: the correlation of a pair -------------------------------------------------


@pytest.fixture(scope="module")
def mean_matters():
    return answer("does-the-mean-matter", width=16)


def test_does_the_mean_matter_numbers(mean_matters):
    result = mean_matters
    # relu under He: C(0) = E[relu]^2 / E[relu^2] = (q/(2 pi)) / (q/2) = 1/pi (Cho & Saul's J_1(pi/2)/pi)
    assert result.numbers["relu_c_map_at_zero"] == pytest.approx(1 / math.pi, rel=1e-15)
    first = result.checks[0]
    assert first.outcome == PASS and first.exactness == "gaussian-exact" and first.claim.value == pytest.approx(1 / math.pi)
    # relu - 1/2 under He: q* solves q = 2 E[(relu(z) - 1/2)^2] = q - sqrt(2 q / pi) + 1/2 (independent root finding),
    # where E[phi] = sqrt(q/(2 pi)) - 1/2 and C(0) = 2 E[phi]^2 / q*
    q_star = scipy.optimize.brentq(lambda q: math.sqrt(2 * q / math.pi) - 0.5, 0.01, 2.0)
    assert result.numbers["shifted_q_star"] == pytest.approx(q_star, rel=1e-12)
    mean = math.sqrt(q_star / (2 * math.pi)) - 0.5
    assert result.numbers["shifted_mean_at_q_star"] == pytest.approx(mean, rel=1e-12)
    assert result.numbers["shifted_c_map_at_zero"] == pytest.approx(2 * mean**2 / q_star, rel=1e-12)
    assert result.numbers["shifted_correlation_fixed_point"] == 1.0
    assert result.numbers["shifted_chi_c_at_one"] == pytest.approx(1.0, abs=1e-12)  # 2 E[step(z)^2] = 1: critical
    assert all(check.outcome == PASS for check in result.checks)
    assert result.checks[1].exactness == "asymptotic" and result.checks[1].limit is not None


def test_does_the_mean_matter_wrong_siblings_fail(mean_matters):
    first = mean_matters.checks[0].claim
    wrong = [first.with_prediction(sp.Integer(0), name="c-map without the mean term"),
             first.with_prediction(sp.Rational(1, 2), name="1/2 for 1/pi")]
    assert [r.outcome for r in check_all(wrong)] == [FAIL, FAIL]


def test_does_the_mean_matter_figure_draws_what_the_table_checks(mean_matters):
    data = mean_matters.figure_data(samples=50)
    by_label = {d.network_label: d for d in data}
    assert set(by_label) == {"relu, He", "relu - 1/2, He", "tanh, LeCun"}
    for check in (mean_matters.checks[0], mean_matters.checks[2]):
        network = check.claim.network
        (shown,) = [d for s, d in zip(mean_matters.series, data) if s.network == network]
        layer = network.dense_positions.index(check.claim.observable.tensor.position) + 1
        assert shown.predicted[layer - 1] == pytest.approx(check.claim.value, rel=1e-12, abs=1e-300)
    assert by_label["relu, He"].exactness == "asymptotic"  # deeper than one layer: the infinite-width c-map
    figure = mean_matters.figure(data)
    (line,) = [l for ax in figure.axes for l in ax.lines if l.get_gid() == "theory:relu, He"]
    assert line.get_linestyle() == LINESTYLES["asymptotic"]
    text = mean_matters.text(data=data)
    assert "y_correlation" in text and "Does the mean matter?" in text


def test_does_the_mean_matter_prose_has_no_ascii_math(mean_matters):
    for paragraph in (*mean_matters.paragraphs, mean_matters.headline):
        words = "".join(p for p in paragraph.parts if isinstance(p, str))
        for ascii_math in ("^", "**", "sqrt(", "Var[", "E[", "_{", "q_star", "*"):
            assert ascii_math not in words, (ascii_math, words)


# --- does width matter: the finite-width laws ------------------------------------------------------


def test_does_width_matter_checks_and_wrong_siblings(answers):
    from varprop.derive import finite
    from varprop.montecarlo.verdict import judge

    result = answers["does-width-matter"]
    assert all(r.outcome == PASS for r in result.checks)
    second = _by_name(result, "second moment, width 4, depth 2")
    assert second.claim.value == pytest.approx((1 + 5 / 4) ** 2, rel=1e-15)
    assert check_all([second.claim.with_prediction(sp.Integer(4), name="prod(1 + 4/n)")])[0].outcome == FAIL
    log = _by_name(result, "log length ratio, width 8, depth 4")
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
    # Var[log M_L] at equal sum of reciprocal widths S: the exact values (pinned by quadrature in
    # tests/derive/test_finite.py) decrease towards 5 S as the layers widen
    spreads = [numbers[f"log_variance_{d.widths[1]}_{len(d.widths) - 1}"] for d in result.figure_data(samples=50)]
    pairs = [(d.widths[1], len(d.widths) - 1) for d in result.figure_data(samples=50)]
    for (w, depth), spread in zip(pairs, spreads):
        assert spread == pytest.approx(float(finite.log_moments([w] * (depth + 1), 2)[1]), rel=1e-12)
    assert all(a > b > 5 * depth / w for a, b, (w, depth) in zip(spreads, spreads[1:], pairs))
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


# --- residual scaling --------------------------------------------------------------------------------


def test_residual_scaling_numbers_checks_and_a_wrong_sibling(answers):
    from varprop.montecarlo import check

    result = answers["residual-scaling"]
    depth = result.settings.depth
    assert all(r.outcome == PASS for r in result.checks)
    # the numbers of the text against exact arithmetic: (1 + 2/L)^L, 3^L, (1 + 2/L^2)^L, e^2
    assert result.numbers["scaled"] == pytest.approx((1 + 2 / depth) ** depth, rel=1e-12)
    assert result.numbers["unscaled"] == pytest.approx(3.0**depth, rel=1e-12)
    assert result.numbers["fixup"] == pytest.approx((1 + 2 / depth**2) ** depth, rel=1e-12)
    assert result.numbers["limit"] == pytest.approx(math.e**2, rel=1e-12)
    assert result.numbers["spread_scaled"] < result.numbers["spread_unscaled"]
    # the scaled claim with the alpha^2 of the recursion dropped (alpha in its place) fails
    scaled = result.checks[0].claim
    wrong = scaled.with_prediction(sp.Integer(2) * (1 + 2 / sp.sqrt(depth)) ** depth, name="alpha for alpha squared")
    assert check(wrong, rtol=result.settings.rtol).outcome == FAIL


# --- where does 5/3 come from ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def five_thirds():
    return answer("where-does-5-3-come-from")


def test_5_3_checks_and_numbers(five_thirds):
    from varprop.gains import gain_row

    result = five_thirds
    assert [r.outcome for r in result.checks] == [PASS] * 5
    row = gain_row("tanh")
    assert result.numbers["torch_gain"] == 5 / 3
    assert result.numbers["forward_gain"] == row.forward.value and result.numbers["backward_gain"] == row.backward.value
    q_star = 1.0
    for _ in range(60):  # the map contracts with slope 0.43 at its fixed point
        q_star = 25 / 9 * _tanh_second(q_star)
    assert result.numbers["q_star"] == pytest.approx(q_star, rel=1e-12)
    assert result.numbers["chi_1"] == pytest.approx(25 / 9 * _tanh_second(q_star, derivative=True), rel=1e-12)
    # the propagation engine's E[y_L^2] under 5/3 is the q-map iterated from q = 1 (two engines agree)
    length = _by_name(result, "tanh, five thirds: length at the last layer")
    q = 1.0
    for _ in range(result.settings.depth - 1):
        q = 25 / 9 * _tanh_second(q)
    assert length.claim.value == pytest.approx(q, rel=1e-9)


def _tanh_second(q, derivative=False):
    """E[tanh(sqrt(q) z)^2] (or E[tanh'(sqrt(q) z)^2]) by scipy quadrature, independent of varprop's Gauss-Legendre."""
    from scipy.integrate import quad

    def f(t):
        value = math.tanh(math.sqrt(q) * t)
        return (1 - value * value) ** 2 if derivative else value * value

    value, _ = quad(lambda t: f(t) * math.exp(-t * t / 2) / math.sqrt(2 * math.pi), -math.inf, math.inf,
                    epsabs=1e-15, epsrel=1e-13)
    return value


def test_5_3_wrong_siblings_fail(five_thirds):
    """The belief that 5/3 keeps the unit second moment, and a gradient that does not grow, both FAIL."""

    def wrong_family(check, value):
        at = {m.width: dataclasses.replace(m.claim, value=value(m.claim)) for m in check.measurements}
        widest = max(at)
        return ClaimFamily(f"{check.name} (wrong)", "", lambda n: at[n], widest, tuple(n for n in at if n != widest))

    length = _by_name(five_thirds, "tanh, five thirds: length at the last layer")
    gradient = _by_name(five_thirds, "tanh, five thirds: gradient at layer 2")
    no_growth = wrong_family(gradient, lambda c: 25 / 9)  # chi_1 = 1: the top layer's value all the way down
    assert [r.outcome for r in check_all([wrong_family(length, lambda c: 1.0), no_growth], seed=1, rtol=0.05)] == [FAIL, FAIL]


def test_5_3_prose_formats_and_report(five_thirds, capsys):
    for text in _texts(five_thirds):
        found = _ASCII_MATH.search(_words(text))
        assert found is None, (found, _words(text))
    assert "\\section{Where tanh's five-thirds comes from}" in five_thirds.latex()
    assert five_thirds.markdown().startswith("## Where tanh's five-thirds comes from")
    assert _disagreements(five_thirds, five_thirds.figure_data(samples=50)) == []
    assert main(["explain", "--list"]) == 0 and "where-does-5-3-come-from" in capsys.readouterr().out
    from varprop import report

    assert "where-does-5-3-come-from" in report.TOPICS  # the report answers every topic of TOPICS


def test_an_estimate_is_written_to_the_precision_its_se_allows():
    from varprop.explain import estimate_text

    assert estimate_text(2.50036, 0.0043) == "2.5 ± 0.0043"  # four significant digits at most
    assert estimate_text(161.704, 0.46) == "161.7 ± 0.46"
    assert estimate_text(-1.594e-18, 1.1e-18) == "-1.6e-18 ± 1.1e-18"  # rounding noise is not written out
    assert estimate_text(0.0, 0.1) == "0 ± 0.1"
