"""Sampler steps of LayerNorm and RMSNorm: the layer as PyTorch computes it, its Jacobian, exclusions, and
claims checked by Monte Carlo with wrong siblings that FAIL."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from varprop.catalogue import CATALOGUE, claim_from_derivation
from varprop.claims import Claim
from varprop.montecarlo import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    MonteCarloError,
    check,
    sample,
    select_engine,
)
from varprop.montecarlo.engines import layer_step
from varprop.network import Dense, LayerNorm, Network, RMSNorm
from varprop.observables import Gradient, Mean, SecondMoment, Signal
from varprop.weights import Normal


def _reference(x: np.ndarray, centred: bool, eps: float) -> np.ndarray:
    """torch.nn.LayerNorm / RMSNorm in float64 at initialisation, written out (biased variance)."""
    c = x - x.mean(axis=-1, keepdims=True) if centred else x
    return c / np.sqrt((c * c).mean(axis=-1, keepdims=True) + eps)


@pytest.mark.parametrize("layer", [LayerNorm(5, eps=0.3), RMSNorm(5, eps=0.3), LayerNorm(5, eps=0), RMSNorm(5)])
def test_forward_and_jacobian(layer):
    rng = np.random.default_rng(7)
    step = layer_step(layer)
    x = rng.standard_normal((3, 2, 5))
    y, cache = step.forward((), x)
    assert np.allclose(y, _reference(x, isinstance(layer, LayerNorm), float(layer.eps)), rtol=1e-13, atol=1e-13)
    # backward = J^T g, against central finite differences of the forward pass
    g = rng.standard_normal((3, 1, 5))
    back = step.backward((), (), cache, g)
    h = 1e-6
    numeric = np.empty((3, 5))
    for j in range(5):
        up, down = x[:, :1].copy(), x[:, :1].copy()
        up[..., j] += h
        down[..., j] -= h
        numeric[:, j] = ((step.forward((), up)[0] - step.forward((), down)[0]) * g).sum(axis=(1, 2)) / (2 * h)
    assert np.allclose(back[:, 0], numeric, rtol=1e-6, atol=1e-7)


def test_zero_input_with_eps_zero_is_excluded_not_averaged():
    network = Network((Dense(4, 4, Normal(0)), RMSNorm(4, eps=0), Dense(4, 4, Normal(sp.Rational(1, 2)))))
    drawn = sample(network, 16, seed=1)
    assert drawn.excluded == 16 and drawn.position_nan[2] == 16  # 0/0 at the normaliser, counted
    # (no derivation: the gradient's second moment below the layer is infinite there, 1/0)
    claim = Claim("zero", network, SecondMoment(Signal(1)), None, sp.Integer(1), "exact")
    result = check(claim, seed=1, samples=50)
    assert result.outcome == INCONCLUSIVE and "excluded" in result.message
    with_eps = Network((Dense(4, 4, Normal(0)), RMSNorm(4, eps=1), Dense(4, 4, Normal(1))))
    assert sample(with_eps, 16, seed=1).excluded == 0  # eps > 0: the zero vector maps to 0


def test_symbolic_eps_is_refused_by_the_sampler():
    eps = sp.Symbol("epsilon", positive=True)
    with pytest.raises(MonteCarloError, match="eps is symbolic"):
        sample(Network((LayerNorm(4, eps=eps), Dense(4, 4, Normal(1)))), 4, seed=0)


def test_both_engines_serve_normalisers_and_agree_on_an_exact_claim():
    network = Network((Dense(8, 8, Normal(sp.Rational(1, 4))), LayerNorm(8, eps=sp.Rational(1, 2)),
                       Dense(8, 8, Normal(sp.Rational(1, 4)))))
    assert select_engine("auto", network).name == "conditional"
    on_input = Network((LayerNorm(8, eps=sp.Rational(1, 2)), Dense(8, 8, Normal(sp.Rational(1, 4)))))
    claim = claim_from_derivation("backward", on_input, SecondMoment(Gradient(-1)))
    for engine in ("full", "conditional"):
        assert check(claim, seed=3, engine=engine).outcome == PASS
        wrong = claim.with_prediction(sp.Float(claim.value * 1.03))
        assert check(wrong, seed=3, engine=engine).outcome == FAIL


def _dense(n: int) -> Dense:
    return Dense(n, n, Normal(sp.Rational(2, n)))


NORMALISED = {  # the catalogue's networks (varprop.catalogue._normaliser_entries) at width 4
    "rmsnorm-unit-mean-square": (Network((_dense(4), RMSNorm(4, eps=0), _dense(4))), SecondMoment(Signal(1))),
    "layernorm-zero-mean": (Network((_dense(4), LayerNorm(4, eps=0), _dense(4))), Mean(Signal(1))),
    "rmsnorm-eps-gaussian-input": (Network((RMSNorm(4, eps=1), _dense(4))), SecondMoment(Signal(0))),
}


def test_the_catalogue_lists_the_normaliser_claims():
    names = [name for name in CATALOGUE if "layernorm" in name or "rmsnorm" in name]
    assert len(names) == 5 and all(CATALOGUE[name].at(2).exactness == "exact" for name in names)


@pytest.mark.parametrize("name", NORMALISED)
def test_catalogue_claims_pass_and_wrong_siblings_fail(name):
    claim = claim_from_derivation(name, *NORMALISED[name])
    assert check(claim, seed=5).outcome == PASS
    # an exact zero-variance claim is contradicted by any visible error; a chi-square one by a 3 % error
    shift = sp.Float(0.01) if claim.value == 0 else sp.Float(claim.value * 0.97)
    assert check(claim.with_prediction(shift), seed=5).outcome == FAIL


def test_the_mean_field_value_fails_where_the_chi_square_value_passes():
    n = 4
    network = Network((RMSNorm(n, eps=1), Dense(n, n, Normal(sp.Rational(1, 2)))))
    claim = claim_from_derivation("chi-square", network, SecondMoment(Signal(0)))
    assert check(claim, seed=2).outcome == PASS
    mean_field = claim.with_prediction(sp.Rational(1, 2))  # q/(q + eps): ignores the spread of m
    assert check(mean_field, seed=2).outcome == FAIL


def test_rmsnorm_mean_is_zero_on_a_symmetric_input():
    network = Network((Dense(6, 6, Normal(1)), RMSNorm(6, eps=0), Dense(6, 6, Normal(1))))
    claim = claim_from_derivation("mean", network, Mean(Signal(1)))
    assert claim.value == 0 and check(claim, seed=4).outcome == PASS
