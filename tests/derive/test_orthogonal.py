"""Orthogonal weights in the propagation engine: what the uncorrelated entries give, and what becomes exact."""

import pytest
import sympy as sp

from varprop.activations import activation
from varprop.derive import derive
from varprop.errors import DerivationError
from varprop.network import Dense, GaussianInput, Network, Nonlinearity, mlp
from varprop.observables import (
    Gradient,
    NormRatio,
    NormRatioSecondMoment,
    SecondMoment,
    Signal,
)
from varprop.weights import Normal, Orthogonal


def test_dense_rule_gives_gain_squared_times_fan_in_over_the_larger_fan():
    n_in, n_out, g, v = sp.symbols("n_in n_out g v", positive=True, integer=False)
    n_in, n_out = sp.Symbol("n_in", positive=True, integer=True), sp.Symbol("n_out", positive=True, integer=True)
    net = Network((Dense(n_in, n_out, Orthogonal(g)),), GaussianInput(v))
    d = derive(net, SecondMoment(Signal(0)))
    assert sp.simplify(d.result - g**2 * n_in / sp.Max(n_in, n_out) * v) == 0
    assert d.exactness == "exact"
    assert d.verify()
    words = " ".join(str(a) for step in d.steps for a in step.assumptions)
    assert "uncorrelated" in words and "iid" not in words
    # backward: the gradient at the input of the only (last) layer, g ~ N(0, I) independent of W
    back = derive(net, SecondMoment(Gradient(-1)))
    assert sp.simplify(back.result - g**2 * n_out / sp.Max(n_in, n_out)) == 0 and back.exactness == "exact"


@pytest.mark.parametrize("widths, act, exact", [((8, 8, 16, 16), "linear", True), ((8, 16, 16), "abs", True),
                                                ((16, 8, 8), "linear", False), ((8, 8, 8), "relu", False)])
def test_norm_ratio_is_a_constant_only_through_tall_orthogonal_layers(widths, act, exact):
    net = mlp(widths, act, Orthogonal(sp.Rational(3, 2)))
    last = len(net.layers) - 1
    d = derive(net, NormRatio(Signal(last)))
    says = "zero variance" in " ".join(str(step.justification) for step in d.steps)
    assert says is exact
    if exact:
        assert d.result == sp.Rational(9, 4) ** net.depth and d.exactness == "exact"


def test_iid_laws_are_not_isometric():
    net = mlp((8, 8, 8), "linear", Normal(sp.Rational(1, 8)))
    d = derive(net, NormRatio(Signal(2)))
    assert "zero variance" not in " ".join(str(step.justification) for step in d.steps)


def test_finite_width_laws_refuse_orthogonal_weights():
    net = Network((Dense(4, 4, Orthogonal(sp.sqrt(2))), Nonlinearity(activation("relu"))))
    with pytest.raises(DerivationError, match="iid weights; got Orthogonal"):
        derive(net, NormRatioSecondMoment(Signal(1)))
