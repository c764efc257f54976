"""The checker on the catalogue: every correct claim passes, every deliberately wrong one fails.

These run at the default settings (pilot-sized samples, rtol = 0.01, alpha = 0.05): the verdicts
asserted here are the checker's own, with no tolerance chosen for the test.
"""

import json

import pytest
import sympy as sp

from varprop.activations import activation
from varprop.catalogue import CATALOGUE, claim_from_derivation, family
from varprop.claims import Claim, ClaimError, ClaimFamily
from varprop.cli import main
from varprop.montecarlo import FAIL, INCONCLUSIVE, MEASURED, PASS, MonteCarloError, check, check_all, fit_limit
from varprop.network import mlp
from varprop.observables import NormRatio, Signal
from varprop.testing import assert_claim
from varprop.weights import glorot, he


@pytest.fixture(scope="module")
def catalogue_results(catalogue_verdicts):
    """The catalogue's verdicts, checked together with its mutation siblings (conftest.py)."""
    return {name: catalogue_verdicts[1][name] for name in CATALOGUE}


def test_every_correct_catalogue_claim_passes(catalogue_results):
    for name, result in catalogue_results.items():
        expected = MEASURED if CATALOGUE[name].at().exactness == "approximation" else PASS
        assert result.outcome == expected, (name, result.message)


def test_glorot_linear_regime_for_tanh_is_measured_not_judged(catalogue_results):
    result = catalogue_results["glorot-tanh-linear-regime"]
    assert result.outcome == MEASURED and all(m.verdict is None for m in result.measurements)
    # The measured deviation is reported with its SE: tanh loses most of the linear prediction.
    assert all(m.deviation < -0.5 and m.deviation_se < 0.01 for m in result.measurements)


def test_finite_width_shortfall_is_exposed(catalogue_results):
    # He's backward value is off by several percent at n = 4 (a relu layer is all zero with
    # probability 2^-4), and the deviation shrinks with the width: asymptotic, so it passes.
    result = catalogue_results["he-backward-fan-in-equal"]
    narrow = next(m for m in result.measurements if m.width == 8)
    assert narrow.deviation + 3 * narrow.deviation_se < 0
    assert result.limit is not None and result.limit.slope < 0 and abs(result.limit.limit) <= 0.01
    # The same gradient at width 4 judged as exact fails: the tool does not hide the effect.
    at_four = family("he-backward-fan-in-equal").at(4)
    assert check(at_four.with_prediction(at_four.prediction, exactness="exact")).outcome == FAIL
    # ...and the derived finite-width factor makes an exact claim that passes at n = 2 and 4.
    assert catalogue_results["he-backward-last-layers-finite-width"].outcome == PASS


def _wrong(name, prediction, width=None, exactness=None):
    claim = family(name).at(width)
    return claim.with_prediction(sp.sympify(prediction), name=f"{name} (wrong)", exactness=exactness)


def test_mutations_fail_at_default_settings():
    relu = activation("relu")
    unequal = mlp([8, 16, 8, 4], relu, he())
    glorot_relu = mlp([16, 16, 16, 16], relu, glorot())
    mutants = [
        # no 1/2 for relu: E[y_L^2] = n Var[w] E[y_{L-1}^2] = 4 instead of 2
        _wrong("he-forward-relu-normal", 4),
        # Var[x] where E[x^2] belongs: 2 (1 - 1/pi) instead of 2
        _wrong("he-forward-relu-uniform", 2 * (1 - 1 / sp.pi)),
        # fan_out where fan_in belongs, unequal widths: nhat_3 Var[w_3] E[x_3^2] = 4 * 2/8 * 1
        claim_from_derivation("fan-out-for-fan-in", unequal, "y_second_moment", 3).with_prediction(sp.Integer(1)),
        # Glorot's (linear) variance argument for a relu network: it predicts E[y_3^2] = 1, relu halves it twice
        claim_from_derivation("glorot-for-relu", glorot_relu, "y_second_moment", 3).with_prediction(sp.Integer(1)),
        # the Gaussian mean formula for uniform weights at width 2, claimed exact
        _wrong("relu-mean-uniform", family("relu-mean-uniform").at(2).prediction, width=2, exactness="exact"),
    ]
    results = check_all(mutants)
    for mutant, result in zip(mutants, results):
        assert result.outcome == FAIL, (mutant.name, result.message)


def test_correct_siblings_of_the_mutants_pass():
    relu = activation("relu")
    siblings = [
        claim_from_derivation("fan-in", mlp([8, 16, 8, 4], relu, he()), "y_second_moment", 3),
        claim_from_derivation("glorot-relu", mlp([16, 16, 16, 16], relu, glorot()), "y_second_moment", 3),
    ]
    assert siblings[0].value == 2 and siblings[1].value == 0.25
    assert [r.outcome for r in check_all(siblings)] == [PASS, PASS]


def _scaled(entry, factor):
    """A copy of a catalogue family (or a family) whose prediction is multiplied by ``factor`` at every width."""
    name = f"{entry.name} x{factor}"
    return ClaimFamily(name, entry.description,
                       lambda n: entry.at(n).with_prediction(entry.at(n).prediction * sp.nsimplify(factor), name=name),
                       entry.width, entry.sweep)


def test_asymptotic_limits_off_by_a_few_percent_fail():
    # The issue's case: x1.03 on he-backward-fan-in-equal passed the old shrink test ("deviation
    # shrinks at least like O(1/n)"); judged on the fitted limit it fails, with c and a reported.
    entry = family("he-backward-fan-in-equal")
    results = check_all([_scaled(entry, 1.03), _scaled(family("relu-mean-uniform"), 1.05)])
    for result in results:
        assert result.outcome == FAIL, result.message
        assert result.limit.rejected and abs(result.limit.limit) > 0.01
        assert "fitted limit c = " in result.message and "1/n coefficient a = " in result.message
        assert result.to_dict()["limit"]["limit_se"] == result.limit.limit_se


def _deep_relu_dx(factor):
    # dL/dx at the last hidden layer of a depth-8 relu net with He init: asymptotic (a dead relu layer,
    # probability 2^-n, passes no gradient); widths from 16 up, where 2^-n is below the 1/n terms.
    relu = activation("relu")
    name = f"depth-8 relu dL/dx_7 x{factor}"

    def build(n):
        claim = claim_from_derivation(name, mlp([n] * 9, relu, he()), "dx_second_moment", 7)
        return claim.with_prediction(claim.prediction * sp.nsimplify(factor), name=name)

    return ClaimFamily(name, "", build, 64, (16, 32, 64))


def test_deep_relu_gradient_limits_off_by_5_to_8_percent_fail():
    # The case: copies x1.05, x0.95, x1.08 passed although 9 to 15 SE away at n = 16.
    results = check_all([_deep_relu_dx(f) for f in (1, 1.05, 0.95, 1.08)])
    assert results[0].exactness == "asymptotic" and results[0].outcome == PASS, results[0].message
    assert [r.outcome for r in results[1:]] == [FAIL, FAIL, FAIL], [r.message for r in results]


def test_limit_fit_against_exact_algebra():
    # d(n) = 0.02 - 0.5/n exactly (zero noise up to tiny SEs): the fit recovers c and a; with four
    # widths the 1/n^2 term enters and the limit stays exact.
    widths = [8, 16, 32]
    fit = fit_limit(widths, [0.02 - 0.5 / n for n in widths], [1e-3] * 3)
    assert fit.limit == pytest.approx(0.02) and fit.slope == pytest.approx(-0.5) and fit.curvature is None
    # SE of c from (X^T W X)^{-1}, W = I / 1e-6, computed by hand with sympy's exact inverse
    X = sp.Matrix([[1, sp.Rational(1, n)] for n in widths])
    exact = (X.T * X).inv()[0, 0] * sp.Rational(1, 10**6)
    assert fit.limit_se == pytest.approx(float(sp.sqrt(exact)))
    four = fit_limit([8, 16, 32, 64], [0.01 + 0.3 / n - 2 / n**2 for n in (8, 16, 32, 64)], [1e-3] * 4)
    assert four.limit == pytest.approx(0.01) and four.curvature == pytest.approx(-2.0) and four.dof == 1


def test_asymptotic_claim_in_a_file_is_checked_over_a_sweep(tmp_path, capsys):
    # The documented worked example: the asymptotic claim is judged on its fitted limit over n = 8, 16, 32,
    # and --width sets the largest width of the sweep.
    code = main(["check", "docs/examples/my-claims.toml", "--quiet", "--json"])
    data = json.loads(capsys.readouterr().out)
    mean = next(r for r in data["results"] if r["name"] == "relu-mean-uniform")
    assert code == 0 and mean["outcome"] == PASS and sorted(mean["limit"]["widths"]) == [8, 16, 32]
    assert main(["check", "relu-mean-uniform", "--width", "64", "--quiet", "--json"]) in (0, 3)
    data = json.loads(capsys.readouterr().out)
    assert sorted(data["results"][0]["limit"]["widths"]) == [16, 32, 64]


def test_assert_claim_refuses_measured():
    with pytest.raises(AssertionError, match="MEASURED, not a pass"):
        assert_claim(family("glorot-tanh-linear-regime"))


def test_approximation_with_a_tolerance_is_judged():
    tanh = family("glorot-tanh-linear-regime").at(8)
    loose = Claim("tanh within 90%", tanh.network, tanh.observable, None, tanh.prediction, "approximation",
                  tolerance=0.9)
    tight = Claim("tanh within 10%", tanh.network, tanh.observable, None, tanh.prediction, "approximation",
                  tolerance=0.1)
    assert [r.outcome for r in check_all([loose, tight])] == [PASS, FAIL]


def test_too_few_samples_is_inconclusive_with_the_number_needed():
    result = check(family("relu-mean-fixed-input").at(8), samples=50)
    assert result.outcome == INCONCLUSIVE
    assert result.primary.verdict.samples_needed > 50


def test_results_are_reproducible_and_seeded():
    claim = family("relu-mean-fixed-input").at(4)
    a, b = check(claim, samples=3000, seed=7), check(claim, samples=3000, seed=7)
    assert a.primary.estimate == b.primary.estimate
    assert check(claim, samples=3000, seed=8).primary.estimate != a.primary.estimate


def test_assert_claim_message():
    assert assert_claim(family("relu-mean-fixed-input"), width=8).outcome == PASS
    wrong = _wrong("relu-mean-fixed-input", sp.sqrt(2 / sp.pi), width=8)
    with pytest.raises(AssertionError, match=r"prediction 0.797885, estimate 0.5\d+ \+- .*t = -\d+") as info:
        assert_claim(wrong)
    # One vocabulary: "width" is a layer's size, "networks" the sample count.
    message = str(info.value)
    lines = message.splitlines()[1:]  # the first line is the checker's own message
    assert "  width 8: prediction" in message and " networks)" in message and not any("n=" in line for line in lines)


def test_bad_input():
    claim = family("relu-mean-fixed-input").at(4)
    for kwargs, fragment in [({"rtol": 0}, "rtol"), ({"alpha": 1.5}, "alpha"), ({"samples": 1}, "samples"),
                             ({"seed": -1}, "seed")]:
        with pytest.raises(MonteCarloError, match=fragment):
            check(claim, **kwargs)
    with pytest.raises(ClaimError, match="unknown claim 'nope'; known: he-forward"):
        family("nope")
    with pytest.raises(ClaimError, match="unknown observable"):
        Claim("c", claim.network, "z_mean", 1, sp.Integer(0), "exact")
    with pytest.raises(ClaimError, match="layer must be an integer from 1 to"):
        Claim("c", claim.network, "y_mean", 9, sp.Integer(0), "exact")
    with pytest.raises(ClaimError, match="unknown exactness"):
        Claim("c", claim.network, "y_mean", 1, sp.Integer(0), "roughly")


CLAIM_FILE = """
[[claim]]
name = "my-he"
activation = "relu"
widths = [16, 16, 16, 16]
init = "he"
observable = "y_second_moment"
layer = 3
prediction = "2"
exactness = "exact"

[[claim]]
name = "my-wrong-he"
activation = "max(x, 0)"
widths = [16, 16, 16, 16]
weight_variance = "2/n_in"
distribution = "uniform"
observable = "y_second_moment"
layer = 3
prediction = "4"
"""


def test_claim_file_and_exit_codes(tmp_path, capsys):
    path = tmp_path / "claims.toml"
    path.write_text(CLAIM_FILE)
    code = main(["check", str(path), "--quiet", "--json"])
    data = json.loads(capsys.readouterr().out)
    outcomes = {r["name"]: r["outcome"] for r in data["results"]}
    assert outcomes == {"my-he": PASS, "my-wrong-he": FAIL} and code == 1
    notes = {r["name"]: r["derivation"] for r in data["results"]}
    assert notes["my-he"].startswith("matches the derivation") and notes["my-wrong-he"].startswith("differs")
    path.write_text(CLAIM_FILE.split("[[claim]]")[0] + "[[claim]]" + CLAIM_FILE.split("[[claim]]")[1])
    assert main(["check", str(path), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["check", "relu-mean-fixed-input", "--samples", "50", "--quiet"]) == 3


@pytest.mark.parametrize("text, fragment", [
    ("[[claim]]\nname = 'x'", "missing key 'activation'"),
    (CLAIM_FILE.replace('layer = 3\nprediction = "2"', 'layer = 3\nprediction = "__import__(1)"', 1), "not accepted"),
    (CLAIM_FILE.replace('observable = "y_second_moment"', 'observable = "y_mean_square"', 1), "unknown observable"),
    (CLAIM_FILE.replace("init = \"he\"", "init = \"orthogonal\"", 1), "unknown init"),
    (CLAIM_FILE.replace("widths = [16, 16, 16, 16]", "widths = [16, -1, 16]", 1), "positive integer"),
    (CLAIM_FILE.replace('prediction = "2"', 'prediction = "2 * n"', 1), "not accepted"),
    (CLAIM_FILE + "\ncolour = 1\n", "unknown key 'colour'"),
    ("not toml [", "not valid TOML"),
    ("", "no [[claim]] table"),
])
def test_bad_claim_files(tmp_path, capsys, text, fragment):
    path = tmp_path / "claims.toml"
    path.write_text(text)
    assert main(["check", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.startswith("varprop: ") and err.count("\n") == 1


def test_cli_check_usage(capsys):
    assert main(["check"]) == 2
    assert main(["check", "--all", "relu-mean-uniform"]) == 2
    assert main(["check", "missing.toml"]) == 2
    assert main(["check", "relu-mean-uniform", "--width", "0"]) == 2
    capsys.readouterr()
    assert main(["check", "--list"]) == 0
    assert "he-forward-relu-normal" in capsys.readouterr().out


def test_skew_guard_is_one_sided():
    # The norm ratio M_L = |x_L|^2/|x_1|^2 of a width-10, depth-10 relu net is a product of layer
    # factors: per-network values with skewness near 40, so 20,000 networks are far fewer than the
    # Edgeworth bound asks for. A right-skewed sample makes spuriously LOW estimates (negative t)
    # likely, high ones rarer: a contradiction with positive t FAILs, one with negative t gets no
    # verdict, and the correct claim never FAILs.
    net = mlp([10] * 11, activation("relu"), he())
    correct = claim_from_derivation("E[M_L]", net, NormRatio(Signal(len(net.layers) - 1)))
    low = correct.with_prediction(correct.prediction * sp.Rational(8, 10), name="E[M_L] x0.8")
    high = correct.with_prediction(correct.prediction * sp.Rational(12, 10), name="E[M_L] x1.2")
    for seed in range(4):
        results = check_all([correct, low, high], samples=20_000, seed=seed)
        assert results[0].outcome != FAIL, results[0].message
        assert results[0].primary.health["skewness"] > 5
        assert results[1].outcome == FAIL and results[1].primary.verdict.z > 0, results[1].message
        assert results[2].outcome == INCONCLUSIVE and "direction" in results[2].message, results[2].message


def test_too_few_samples_says_what_it_would_take_including_the_cap():
    result = check(family("he-forward-relu-normal").at(8), samples=50, max_samples=3000)
    assert result.outcome == INCONCLUSIVE
    assert "90% power" in result.message
    assert "beyond the cap of 3000 networks" in result.message and "random draws with the conditional engine" in result.message


def test_the_advised_sample_size_resolves_the_claim():
    # "Samples needed" includes the power margin and the sizing's 15 % margin: re-running with it resolves rtol.
    claim = family("he-forward-relu-normal").at(8)
    advised = check(claim, samples=5000)
    assert advised.outcome == INCONCLUSIVE
    count = int(advised.message.split("; about ")[-1].split(" networks")[0])
    assert check(claim, samples=count, seed=1).outcome == PASS


def test_a_zero_prediction_is_judged_on_a_stated_absolute_tolerance():
    # E[y_1] = 0 for zero-mean weights: a relative tolerance means nothing; the claim's atol (in the
    # observable's units) is the tolerance, and the output says so.
    net = mlp([8, 8, 8], activation("relu"), he())
    zero = Claim("E[y_1] = 0", net, "y_mean", 1, sp.Integer(0), "exact", atol=0.02)
    result = check(zero, samples=20_000)
    assert result.outcome == PASS and "atol 0.02" in result.message and "observable's units" in result.message
    assert result.to_dict()["atol"] == 0.02
    # the checker's atol when the claim has none; too tight a one is not resolved
    tight = check(Claim("E[y_1] = 0", net, "y_mean", 1, sp.Integer(0), "exact"), samples=20_000, atol=1e-4)
    assert tight.outcome == INCONCLUSIVE and "atol 0.0001" in tight.message
    with pytest.raises(ClaimError, match="atol must be a positive number"):
        Claim("bad", net, "y_mean", 1, sp.Integer(0), "exact", atol=-1.0)
