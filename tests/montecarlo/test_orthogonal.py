"""Orthogonal weights checked by Monte Carlo, each PASS with a wrong sibling that FAILs."""

import pytest
import sympy as sp

from varprop.catalogue import claim_from_derivation
from varprop.montecarlo import MonteCarloError, check, sample
from varprop.network import mlp
from varprop.observables import Gradient, NormRatio, SecondMoment, Signal
from varprop.weights import Orthogonal, init_scheme

# PyTorch's orthogonal_(gain=calculate_gain('relu')) in a relu net with a wide middle.
RELU = mlp([16, 32, 32, 16], "relu", init_scheme("torch.orthogonal_", gain=sp.sqrt(2)))


@pytest.mark.parametrize("observable", [SecondMoment(Signal(4)), SecondMoment(Gradient(3))],
                         ids=["forward output", "backward into the last layer"])
def test_relu_net_with_orthogonal_weights(observable):
    claim = claim_from_derivation("orthogonal relu", RELU, observable)
    assert claim.exactness == "exact"
    # resolving 5% keeps the test fast; the wrong sibling is 10% off
    assert check(claim, seed=1, rtol=0.05).outcome == "PASS"
    assert check(claim.with_prediction(sp.Float(claim.value) * sp.Float("1.1")), seed=1, rtol=0.05).outcome == "FAIL"


def test_zero_variance_norm_ratio_is_judged_up_to_floating_point():
    net = mlp([16, 16, 32, 32], "linear", Orthogonal(sp.Rational(3, 2)))
    claim = claim_from_derivation("isometry", net, NormRatio(Signal(4)))
    assert claim.value == pytest.approx(float(sp.Rational(3, 2) ** 6))
    result = check(claim, seed=2)
    assert result.outcome == "PASS"
    se = result.measurements[0].estimate.se
    assert 0 < se < 1e-12 * claim.value  # the rounding bound, not a spread (and never a division by zero)
    # off by one part in a billion: far beyond the rounding, so contradicted
    assert check(claim.with_prediction(sp.Float(claim.value) * (1 + sp.Float("1e-9"))), seed=2).outcome == "FAIL"


def test_conditional_engine_refuses_orthogonal_weights():
    with pytest.raises(MonteCarloError, match="not independent"):
        sample(RELU, 4, seed=0, engine="conditional")
