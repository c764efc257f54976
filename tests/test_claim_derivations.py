"""Claims carry the derivation they come from; claim files address observables by place too."""

import json

import pytest
import sympy as sp

from varprop.catalogue import CATALOGUE, claim_from_derivation, family
from varprop.claimfile import load_claims
from varprop.claims import ClaimError
from varprop.cli import main
from varprop.errors import VarpropError
from varprop.network import mlp
from varprop.observables import Gradient, SecondMoment, Signal, at_place
from varprop.weights import he

PLACE_FILE = """
[[claim]]
name = "by-place"
activation = "relu"
widths = [16, 16, 16, 16]
observable = "second_moment"
tensor = "gradient"
place = "act1"
prediction = "2"
exactness = "asymptotic"

[[claim]]
name = "by-name"
activation = "relu"
widths = [16, 16, 16, 16]
observable = "dx_second_moment"
layer = 2
prediction = "2"
exactness = "asymptotic"

[[claim]]
name = "trailing-output"
activation = "relu"
widths = [8, 8, 8]
observable = "second_moment"
place = 1
prediction = "1"
"""


def test_a_place_and_a_layer_name_the_same_observable(tmp_path):
    path = tmp_path / "claims.toml"
    path.write_text(PLACE_FILE)
    by_place, by_name, trailing = load_claims(path)
    assert by_place.claim.observable == by_name.claim.observable == SecondMoment(Gradient(1))
    assert by_place.claim.layer == 2  # the legacy name is filled in when one exists
    assert by_place.agreement.startswith("matches the derivation")
    assert trailing.claim.observable == SecondMoment(Signal(1)) and trailing.agreement.startswith("matches")
    assert by_place.derivation is not None and by_place.derivation.result == 2


@pytest.mark.parametrize("replace, fragment", [
    ('place = "act1"', 'place = "act9"'),
    ('tensor = "gradient"', 'tensor = "gradient"\nlayer = 2'),
    ('observable = "second_moment"', 'observable = "y_second_moment"'),
    ('tensor = "gradient"', 'tensor = "grad"'),
])
def test_bad_places_are_refused(tmp_path, capsys, replace, fragment):
    text = PLACE_FILE.split("[[claim]]")[1]
    path = tmp_path / "claims.toml"
    path.write_text("[[claim]]" + text.replace(replace, fragment, 1))
    assert main(["check", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("varprop: ") and err.count("\n") == 1


def test_at_place_names_what_is_accepted():
    net = mlp([4, 4, 4], "relu", he())
    assert at_place("mean", "weight_gradient", "dense2", net).tensor.position == 2
    with pytest.raises(VarpropError, match="known: mean, second_moment"):
        at_place("median", "signal", 0, net)
    with pytest.raises(VarpropError, match="its places: input, dense1, act1, dense2"):
        at_place("mean", "signal", "relu1", net)
    with pytest.raises(VarpropError, match="needs a dense layer"):
        at_place("mean", "weight_gradient", "act1", net)


def test_claim_prediction_and_exactness_come_from_the_derivation():
    claim = family("relu-mean-uniform").at(8)
    assert claim.prediction == claim.derivation.result and claim.exactness == claim.derivation.exactness
    assert claim.assumptions == claim.derivation.assumptions
    mutant = claim.with_prediction(claim.prediction * 2)
    assert mutant.derivation is None  # a hypothesis, not something varprop derived
    with pytest.raises(ClaimError, match="unknown observable"):
        claim_from_derivation("c", claim.network, "z_mean", 1)


def test_check_json_carries_the_derivation(capsys):
    assert main(["check", "relu-mean-fixed-input", "--samples", "50", "--quiet", "--json"]) == 3
    result = json.loads(capsys.readouterr().out)["results"][0]
    derivation = result["derivation"]
    assert derivation["exactness"] == result["exactness"]
    assert sp.sympify(derivation["result"]) == sp.sympify(result["prediction_expr"])  # our own output, not user text
    step = derivation["steps"][-1]
    assert {"lhs", "rhs", "rule", "check", "uses", "exactness", "assumptions", "source"} <= set(step)
    assert result["place"] == "act1" and result["tensor"] == "signal"


def test_derive_claim_verify(capsys):
    assert main(["derive", "claim", "--claim", "he-backward-last-layers-finite-width", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "Result (step 9): 15/16  (exact)" in out and "lemma      ok" in out and "FAILED" not in out
    assert main(["derive", "claim"]) == 2
    assert main(["derive", "forward", "--claim", "x"]) == 2


def test_every_catalogue_entry_is_built_lazily():
    import subprocess
    import sys

    code = "import varprop.catalogue as c, sys; print(c.CATALOGUE._entries is None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
    assert len(CATALOGUE) == len(list(CATALOGUE))


NORM_FILE = """
[[claim]]
name = "rmsnorm-in-a-file"
activation = "relu"
widths = [8, 8, 8]
norm = "rmsnorm"
norm_eps = 0
observable = "second_moment"
place = "rmsnorm1"
prediction = "1"
exactness = "exact"

[[claim]]
name = "layernorm-in-a-file"
activation = "relu"
widths = [8, 8, 8]
norm = "layernorm"
observable = "mean"
place = "layernorm1"
prediction = "0"
"""


def test_a_claim_file_writes_normalisers(tmp_path):
    from varprop.montecarlo import check
    from varprop.network import LayerNorm, RMSNorm

    path = tmp_path / "claims.toml"
    path.write_text(NORM_FILE)
    rms, layer = load_claims(path)
    kinds = [type(lay).__name__ for lay in rms.claim.network.layers]
    assert kinds == ["Dense", "RMSNorm", "Nonlinearity", "Dense"]  # Linear, Norm, act; none after the last
    assert rms.claim.network.layers[1] == RMSNorm(8, eps=0)
    assert layer.claim.network.layers[1] == LayerNorm(8)  # PyTorch's eps 1e-5 by default
    assert rms.agreement.startswith("matches") and layer.agreement.startswith("matches")
    assert check(rms.claim, seed=1, samples=200).outcome == "PASS"
    wrong = rms.claim.with_prediction(sp.Rational(99, 100))
    assert check(wrong, seed=1, samples=200).outcome == "FAIL"
    path.write_text(NORM_FILE.replace('norm = "rmsnorm"', 'norm = "batchnorm"'))
    with pytest.raises(ClaimError, match="accepted: layernorm, rmsnorm"):
        load_claims(path)
    path.write_text(NORM_FILE.replace('norm = "rmsnorm"\n', ''))
    with pytest.raises(ClaimError, match="norm_eps goes with norm"):
        load_claims(path)


ORDER_FILE = """
[[claim]]
name = "third moment"
activation = "relu"
widths = [4, 4, 4, 4]
place = "act2"
observable = "norm_ratio_moment"
order = 3
prediction = "(15/2)**2"
exactness = "gaussian-exact"

[[claim]]
name = "log second moment"
activation = "relu"
widths = [4, 4, 4, 4]
place = "act2"
observable = "log_norm_ratio_moment"
prediction = "6"
exactness = "gaussian-exact"
"""


def test_claim_files_name_moments_with_an_order(tmp_path):
    """A relu layer of width 4 at He's variance multiplies the squared length by (1/2) chi^2_K: E[R^3] = (1/8) *
    E[K(K+2)(K+4)] = (1/8) * 60 = 15/2 per layer (an exact binomial sum), two layers up to act2."""
    from varprop.derive import finite
    from varprop.observables import LogNormRatioMoment, NormRatioMoment

    path = tmp_path / "claims.toml"
    path.write_text(ORDER_FILE)
    third, log2 = load_claims(path)
    assert third.claim.observable == NormRatioMoment(Signal(3), 3)
    assert sum(sp.binomial(4, k) * k * (k + 2) * (k + 4) for k in range(5)) / sp.Integer(16) == 60
    assert third.agreement.startswith("matches the derivation") and third.derivation.result == sp.Rational(15, 2) ** 2
    assert log2.claim.observable == LogNormRatioMoment(Signal(3), 2)   # the default order
    assert log2.agreement.startswith("differs") and float(log2.derivation.result) == pytest.approx(
        float(finite.log_moments([4, 4, 4], 2)[0]), abs=1e-20)


@pytest.mark.parametrize("fragment, message", [
    ("order = 3", "order = 9"),
    ("order = 3", 'order = "3"'),
    ('observable = "norm_ratio_moment"\norder = 3', 'observable = "second_moment"\norder = 3'),
    ('place = "act2"', 'layer = 2'),
])
def test_bad_orders_are_refused(tmp_path, capsys, fragment, message):
    path = tmp_path / "claims.toml"
    path.write_text(ORDER_FILE.split("\n\n[[claim]]")[0].replace(fragment, message, 1))
    assert main(["check", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("varprop: ") and err.count("\n") == 1 and "order" in err


def test_at_place_takes_an_order_for_moments_only():
    net = mlp([4, 4, 4], "relu", he(), output_activation=True)
    assert at_place("norm_ratio_moment", "signal", "act2", net, 5).order == 5
    with pytest.raises(VarpropError, match="order goes with a moment statistic"):
        at_place("norm_ratio", "signal", "act2", net, 2)
    with pytest.raises(VarpropError, match="from 1 to 8, got 0"):
        at_place("log_norm_ratio_moment", "signal", "act2", net, 0)
