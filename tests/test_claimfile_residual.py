"""Residual blocks and dropout in claim files: the keys build the network the derivation and the checker read."""

from __future__ import annotations

import pytest
import sympy as sp

from varprop.claims import ClaimError
from varprop.claimfile import load_claims
from varprop.network import Dropout
from varprop.observables import Gradient, SecondMoment, Signal

CLAIMS = '''
[[claim]]
name = "scaled residual blocks"
activation = "relu"
widths = [8, 8]
residual = { blocks = 4, alpha = "1/sqrt(L)" }
observable = "second_moment"
place = "res4"
prediction = "2 * (1 + 2/4)**4"
exactness = "exact"

[[claim]]
name = "dropout after relu"
activation = "relu"
widths = [8, 8, 8]
dropout_keep = 0.8
observable = "second_moment"
tensor = "gradient"
place = "act1"
prediction = "2/0.8"
'''


def _write(tmp_path, text):
    path = tmp_path / "claims.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_residual_blocks_and_dropout_from_a_claim_file(tmp_path):
    residual, dropout = load_claims(_write(tmp_path, CLAIMS))
    layers = residual.claim.network.layers
    assert [type(layer).__name__ for layer in layers] == ["Dense"] + ["Residual"] * 4
    assert layers[1].alpha == sp.Rational(1, 2) and len(layers[1].branch) == 3
    assert residual.claim.observable == SecondMoment(Signal(4))
    assert residual.agreement.startswith("matches the derivation") and residual.derived_exactness == "exact"
    assert [type(layer).__name__ for layer in dropout.claim.network.layers] == ["Dense", "Nonlinearity", "Dropout", "Dense"]
    assert dropout.claim.network.layers[2] == Dropout(sp.Rational(4, 5))
    assert dropout.claim.observable == SecondMoment(Gradient(1))
    assert dropout.agreement.startswith("matches the derivation")


def test_a_wrong_prediction_is_reported_as_differing(tmp_path):
    (claim,) = load_claims(_write(tmp_path, CLAIMS.split("[[claim]]")[1].join(["[[claim]]", ""]).replace(
        '"2 * (1 + 2/4)**4"', '"2 * (1 + 1/4)**4"')))
    assert claim.agreement.startswith("differs from the derivation")


@pytest.mark.parametrize("bad, message", [
    ('residual = { blocks = 0 }', "residual blocks must be an integer from 1 to 200, got 0"),
    ('residual = { blocks = 2, depth = 3 }', "residual: unknown key 'depth'; accepted: blocks, alpha, layers"),
    ('residual = 3', "residual must be a table"),
    ('residual = { blocks = 2, alpha = "import os" }', "malformed expression 'import os'"),
    ('dropout_keep = 1.5', "keep probability must be in \\(0, 1\\], got 3/2"),
])
def test_bad_residual_or_dropout_keys_are_one_clear_error(tmp_path, bad, message):
    text = f'''
[[claim]]
name = "bad"
activation = "relu"
widths = [4, 4]
{bad}
observable = "y_second_moment"
layer = 1
prediction = "2"
'''
    with pytest.raises(ClaimError, match=message):
        load_claims(_write(tmp_path, text))


def test_dropout_needs_an_activation_to_follow(tmp_path):
    text = CLAIMS.split("[[claim]]")[2].replace("widths = [8, 8, 8]", "widths = [8, 8]").replace('place = "act1"', "place = 0")
    with pytest.raises(ClaimError, match="dropout_keep puts a dropout layer after every activation.*give none"):
        load_claims(_write(tmp_path, "[[claim]]" + text))
