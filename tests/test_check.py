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
from varprop.montecarlo import FAIL, INCONCLUSIVE, MEASURED, PASS, MonteCarloError, check, check_all
from varprop.network import mlp
from varprop.testing import assert_claim
from varprop.weights import glorot, he


@pytest.fixture(scope="module")
def catalogue_results():
    return {r.name: r for r in check_all(list(CATALOGUE.values()))}


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
    narrow = next(m for m in result.measurements if m.width == 4)
    assert narrow.deviation + 4 * narrow.deviation_se < 0
    assert result.shrink is not None and not result.shrink.rejected
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


def test_asymptotic_claim_with_a_constant_error_fails_the_shrink_test():
    # A formula off by a constant 5 % does not shrink like O(1/n).
    entry = family("relu-mean-uniform")
    wrong = ClaimFamily("relu-mean-uniform (x1.05)", entry.description,
                        lambda n: entry.at(n).with_prediction(entry.at(n).prediction * sp.Rational(105, 100)),
                        entry.width, entry.sweep)
    result = check(wrong)
    assert result.outcome == FAIL and result.shrink.rejected


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
    with pytest.raises(AssertionError, match=r"prediction 0.797885, estimate 0.5\d+ \+- .*z = -\d+") as info:
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
