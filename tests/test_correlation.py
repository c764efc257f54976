"""The correlation claims of the catalogue: every wrong sibling FAILs on the same sampled networks.

The correct claims PASS in tests/test_check.py (the whole catalogue, checked together); here each is
fed a formula that is wrong in the way a reader might get it wrong, through the same checker.
"""

import pytest
import sympy as sp

from varprop.catalogue import CATALOGUE, claim_from_derivation
from varprop.claimfile import load_claims
from varprop.claims import ClaimError, ClaimFamily
from varprop.montecarlo import FAIL, PASS, check, check_all
from varprop.network import FixedInput, GaussianInput, mlp
from varprop.observables import Correlation, Signal

# name -> (wrong prediction, why a reader might believe it)
SIBLINGS = {
    "relu-correlation-orthogonal": [
        (sp.Integer(0), "the c-map without the mean term: Cov[relu(u), relu(v)] = 0 at c = 0, so 'orthogonal stays orthogonal'"),
        (sp.Rational(1, 2), "1/2 for 1/pi"),
    ],
    "shifted-relu-correlation": [(sp.Rational(1, 2), "the correlation of the inputs kept, as a linear layer would")],
    "tanh-correlation": [(sp.Rational(1, 2), "tanh in its linear regime keeps the correlation")],
}


@pytest.mark.parametrize("name, wrong, why", [(n, w, y) for n, pairs in SIBLINGS.items() for w, y in pairs],
                         ids=lambda v: str(v)[:20])
def test_wrong_siblings_fail(name, wrong, why):
    claim = CATALOGUE[name].at()
    assert claim.exactness == "gaussian-exact"
    result = check(claim.with_prediction(wrong, name=f"{name}: {why}"))
    assert result.outcome == FAIL, result.message


def test_the_depth_claim_fails_without_the_drift():
    # After three relu layers the correlation is not the first layer's 1/pi: the c-map keeps pushing it
    # towards 1. The deviation from 1/pi does not shrink with the width, so the sweep rejects it.
    right = CATALOGUE["relu-correlation-depth"]
    assert right.at().exactness == "asymptotic"
    wrong = ClaimFamily("relu-correlation-depth: frozen at 1/pi", right.description,
                        lambda n: right.at(n).with_prediction(1 / sp.pi), right.width, right.sweep)
    result, control = check_all([wrong, right])
    assert result.outcome == FAIL and control.outcome == PASS


PAIR_FILE = """
[[claim]]
name = "relu-orthogonal-pair"
activation = "relu"
widths = [16, 16, 16]
input = "fixed-pair"
correlation = 0
observable = "correlation"
place = "act1"
prediction = "1/pi"
exactness = "gaussian-exact"

[[claim]]
name = "gaussian-pairs-cross-moment"
activation = "relu"
widths = [8, 8, 8]
input = "gaussian"
correlation = 0.5
observable = "cross_moment"
place = "dense1"
prediction = "1"

[[claim]]
name = "explicit-partner"
activation = "relu"
widths = [4, 4, 4]
input = [1, -1, 1, -1]
partner = [1, 1, 1, 1]
observable = "correlation"
place = "input"
prediction = "0"
"""


def test_claim_files_describe_pairs(tmp_path):
    path = tmp_path / "pairs.toml"
    path.write_text(PAIR_FILE)
    orthogonal, gaussian, explicit = load_claims(path)
    assert orthogonal.claim.observable == Correlation(Signal(1))
    assert orthogonal.claim.network.inputs == FixedInput.pair(16, 0)
    assert orthogonal.agreement.startswith("matches the derivation") and orthogonal.derived_exactness == "gaussian-exact"
    assert gaussian.claim.network.inputs == GaussianInput(correlation=sp.Rational(1, 2))
    assert gaussian.agreement.startswith("matches") and gaussian.derived_exactness == "exact"  # E[y y'] = 2 * 1/2
    assert explicit.claim.network.inputs.partner == (1.0, 1.0, 1.0, 1.0) and explicit.agreement.startswith("matches")
    assert check(orthogonal.claim).outcome == PASS


@pytest.mark.parametrize("change, fragment", [
    ('correlation = 0\n', 'correlation = 1.5\n', ),
    ('input = "fixed-pair"\ncorrelation = 0\n', 'input = "fixed-pair"\n'),
    ('correlation = 0\n', 'correlation = 0\npartner = [1, 2]\n'),
    ('input = "fixed-pair"\ncorrelation = 0\n', ''),
])
def test_bad_pair_descriptions_are_refused(tmp_path, change, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(PAIR_FILE.split("[[claim]]")[1].join(["[[claim]]", ""]).replace(change, fragment, 1))
    with pytest.raises(ClaimError) as info:
        load_claims(path)
    message = str(info.value)
    assert any(word in message for word in ("[-1, 1]", "needs correlation", "partner", "needs a pair of inputs")), message


def test_a_gaussian_pair_has_the_stated_correlation():
    # x' = c0 x + sqrt(1 - c0^2) z per coordinate: the input's correlation is c0 exactly (a ratio of
    # expectations), and a dense layer keeps it (no bias). The sibling: an independent partner (c0 = 0).
    network = mlp([8, 8, 8], "relu", inputs=GaussianInput(variance=2, correlation=sp.Rational(-1, 2)))
    claims = [claim_from_derivation(f"gaussian pair at {place}", network, Correlation(Signal(place)))
              for place in (-1, 0)]
    assert [c.value for c in claims] == [-0.5, -0.5] and {c.exactness for c in claims} == {"exact"}
    results = check_all([*claims, claims[0].with_prediction(sp.Integer(0), name="independent partner")])
    assert [r.outcome for r in results] == [PASS, PASS, FAIL]
