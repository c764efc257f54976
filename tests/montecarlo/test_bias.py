"""Biases with a mean, checked by Monte Carlo; each PASS has a wrong sibling (the centred formula) that FAILs."""

import sympy as sp

from varprop.activations import activation
from varprop.catalogue import claim_from_derivation
from varprop.claims import ClaimFamily
from varprop.montecarlo import check, check_all
from varprop.network import Dense, Network, Nonlinearity
from varprop.observables import Mean, SecondMoment, Signal
from varprop.weights import Normal, Uniform


def _net(n: int, act: str = "relu", bias_mean: object = sp.Rational(1, 2)) -> Network:
    # He-uniform weights, a bias N(mean, 1/100) in every layer
    bias = Normal(sp.Rational(1, 100), bias_mean)
    dense = lambda: Dense(n, n, Uniform(sp.sqrt(sp.Rational(6, n))), bias=bias)  # noqa: E731
    return Network((dense(), Nonlinearity(activation(act)), dense(), Nonlinearity(activation(act))))


def test_dense_layer_with_a_bias_mean_is_exact():
    claim = claim_from_derivation("biased dense", _net(16), SecondMoment(Signal(0)))
    assert claim.exactness == "exact" and claim.value == float(2 + sp.Rational(1, 100) + sp.Rational(1, 4))
    assert check(claim, seed=4).outcome == "PASS"
    # the wrong sibling: Var[b] where E[b^2] belongs
    assert check(claim.with_prediction(sp.Integer(2) + sp.Rational(1, 100)), seed=4).outcome == "FAIL"


def _family(name, act, observable, prediction=None):
    def at(n):
        claim = claim_from_derivation(name, _net(n, act), observable)
        return claim if prediction is None else claim.with_prediction(sp.Float(prediction(n), 17))
    return ClaimFamily(name, "", at, 64, (16, 32))


def test_nonlinearities_after_biased_layers_asymptotically():
    centred = {act: (lambda n, act=act: claim_from_derivation("c", _net(n, act, 0), Mean(Signal(3))).value)
               for act in ("relu", "tanh")}
    families = [
        _family("relu mean", "relu", Mean(Signal(3))),
        _family("tanh mean", "tanh", Mean(Signal(3))),
        _family("relu second moment", "relu", SecondMoment(Signal(3))),
        # wrong siblings: the mean derived as if the biases were centred
        _family("relu mean, centred formula", "relu", Mean(Signal(3)), centred["relu"]),
        _family("tanh mean, centred formula", "tanh", Mean(Signal(3)), centred["tanh"]),
    ]
    outcomes = [r.outcome for r in check_all(families, seed=5, rtol=0.05)]
    assert outcomes == ["PASS", "PASS", "PASS", "FAIL", "FAIL"]
