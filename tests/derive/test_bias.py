"""Biases with a mean: the dense layer's mean and second moment, and a nonlinearity after a non-centred Gaussian."""

import math

import pytest
import scipy.integrate
import sympy as sp

from varprop.activations import activation
from varprop.derive import derive
from varprop.derive.gaussian import evaluate
from varprop.errors import DerivationError
from varprop.network import Dense, Network, Nonlinearity
from varprop.observables import Mean, SecondMoment, Signal
from varprop.weights import Normal, Uniform

N = sp.Symbol("n", positive=True, integer=True)
S, MU, TAU = sp.symbols("s mu tau", positive=True)


def test_dense_layer_with_a_bias_mean_exactly():
    net = Network((Dense(N, N, Normal(S / N), bias=Normal(TAU, MU)),))
    mean, second = derive(net, Mean(Signal(0))), derive(net, SecondMoment(Signal(0)))
    assert mean.result == MU and mean.exactness == "exact"
    # E[y^2] = n Var[w] E[x^2] + E[b^2], E[b^2] = tau + mu^2 (unit input variance)
    assert sp.simplify(second.result - (S + TAU + MU**2)) == 0 and second.exactness == "exact"
    assert all(report.ok is not False for report in second.verify())


def _gaussian(f, mu, variance):
    sd = math.sqrt(variance)
    value, _ = scipy.integrate.quad(lambda t: f(mu + sd * t) * math.exp(-t * t / 2) / math.sqrt(2 * math.pi),
                                    -math.inf, math.inf, epsabs=1e-13, epsrel=1e-12)
    return value


@pytest.mark.parametrize("act, f", [("relu", lambda x: max(x, 0.0)), ("tanh", math.tanh),
                                    ("elu", lambda x: x if x > 0 else math.expm1(x))])
def test_nonlinearity_after_a_constant_bias(act, f):
    # a constant bias 0.1 (a point mass: variance 0, mean 1/10), He weights, unit Gaussian input
    net = Network((Dense(8, 8, Normal(sp.Rational(1, 4)), bias=Normal(0, sp.Rational(1, 10))),
                   Nonlinearity(activation(act))))
    mu, q = 0.1, 8 * 0.25 + 0.01  # E[y] = 1/10, E[y^2] = 2 + 1/100
    mean, second = derive(net, Mean(Signal(1))), derive(net, SecondMoment(Signal(1)))
    # evaluate: closed forms at raised precision, quadratures by QUADPACK (sympy's own evalf of an Integral is slow)
    assert evaluate(mean.result).value == pytest.approx(_gaussian(f, mu, q - mu * mu), rel=1e-9)
    assert evaluate(second.result).value == pytest.approx(_gaussian(lambda x: f(x) ** 2, mu, q - mu * mu), rel=1e-9)
    assert mean.exactness == "asymptotic"  # a random input through 8 units: Gaussian only as widths grow
    assert all(report.ok is not False for report in second.verify())


def test_the_rectifier_closed_form_is_the_truncated_normal_moment():
    net = Network((Dense(N, N, Normal(S / N), bias=Normal(TAU, MU)), Nonlinearity(activation("relu"))))
    closed = derive(net, Mean(Signal(1))).result
    assert not closed.has(sp.Integral)
    sigma = sp.sqrt(S + TAU)  # the variance of y: E[y^2] - E[y]^2
    truncated = MU * (1 + sp.erf(MU / (sigma * sp.sqrt(2)))) / 2 + sigma * sp.exp(-MU**2 / (2 * sigma**2)) / sp.sqrt(2 * sp.pi)
    for values in ({S: 2, MU: sp.Rational(3, 10), TAU: sp.Rational(1, 5)}, {S: 1, MU: 2, TAU: 0}):
        assert float(closed.subs(values)) == pytest.approx(float(truncated.subs(values)), rel=1e-13)


def test_what_stays_underivable_is_refused():
    with pytest.raises(DerivationError, match="zero-mean weights"):
        derive(Network((Dense(4, 4, Normal(1, sp.Rational(1, 2))),)), SecondMoment(Signal(0)))
    # relu after relu after a biased layer: the second relu's input is not a pre-activation
    act = Nonlinearity(activation("relu"))
    net = Network((Dense(4, 4, Uniform(1), bias=Normal(0, 1)), act, act))
    with pytest.raises(DerivationError, match="not a pre-activation|is not one"):
        derive(net, SecondMoment(Signal(2)))


def test_a_pair_through_a_biased_layer():
    from varprop.network import GaussianInput
    from varprop.observables import Correlation, CrossMoment

    net = Network((Dense(N, N, Normal(S / N), bias=Normal(TAU, MU)), Nonlinearity(activation("relu"))),
                  GaussianInput(1, sp.Rational(1, 2)))
    # both inputs share W and b: E[y y'] = n Var[w] E[x x'] + E[b^2]
    cross = derive(net, CrossMoment(Signal(0)))
    assert sp.simplify(cross.result - (S / 2 + TAU + MU**2)) == 0
    with pytest.raises(DerivationError, match="bias with a mean"):
        derive(net, Correlation(Signal(1)))
