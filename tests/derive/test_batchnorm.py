"""Derive rules of BatchNorm in training mode: every step checks, the closed forms against quadrature of the
chi-square densities (independent of the incomplete-gamma closed forms), the mean-field gradient growth against
Yang et al.'s (B-2)/(B-3), and bad input gives one clear error."""

from __future__ import annotations

import pytest
import sympy as sp
from scipy import integrate, stats

from varprop.activations import activation
from varprop.derive import derive
from varprop.errors import DerivationError, SpecError
from varprop.network import BatchNorm, Dense, FixedInput, GaussianInput, Network, Nonlinearity
from varprop.observables import Gradient, Mean, SecondMoment, Signal
from varprop.weights import Normal


def _chi2_mean(g, k: int) -> float:
    """E[g(X)], X chi-square with k degrees of freedom, by scipy quadrature of the density."""
    return integrate.quad(lambda x: g(x) * stats.chi2.pdf(x, k), 0, float("inf"), limit=200, epsabs=0, epsrel=1e-11)[0]


def _verified(derivation):
    assert all(report.ok is not False for report in derivation.verify())
    return derivation


@pytest.mark.parametrize("batch", [3, 4, 9])
def test_forward_eps_zero_is_one_and_the_mean_zero_exactly(batch):
    relu = Nonlinearity(activation("relu"))
    net = Network((Dense(5, 5, Normal(sp.Rational(2, 5))), BatchNorm(5, batch, eps=0), relu, Dense(5, 5, Normal(1)),
                   BatchNorm(5, batch, eps=0)))
    second = _verified(derive(net, SecondMoment(Signal(4))))
    assert second.result == 1 and second.exactness == "exact"
    assert derive(net, Mean(Signal(4))).result == 0


@pytest.mark.parametrize("batch, eps, variance", [(4, sp.Rational(1, 2), 1), (7, sp.Rational(1, 10), 3)])
def test_forward_on_the_gaussian_input_against_quadrature(batch, eps, variance):
    net = Network((BatchNorm(4, batch, eps=eps), Dense(4, 4, Normal(1))), GaussianInput(variance))
    d = _verified(derive(net, SecondMoment(Signal(0))))
    c = batch * float(eps) / variance  # V = (v/B) X: E[V/(V + eps)] = E[X/(X + c)]
    assert float(d.result) == pytest.approx(_chi2_mean(lambda x: x / (x + c), batch - 1), rel=1e-9)
    assert d.exactness == "exact"


@pytest.mark.parametrize("batch, eps", [(4, sp.Rational(1, 2)), (6, sp.Integer(0))])
def test_backward_on_the_gaussian_input_against_quadrature(batch, eps):
    net = Network((BatchNorm(4, batch, eps=eps), Dense(4, 4, Normal(1))))
    d = _verified(derive(net, SecondMoment(Gradient(-1))))
    # E[dL/dx^2] = (d/B) E[(B-2)/(V+eps) + eps^2/(V+eps)^3], V = X/B, d = n Var[w] = 4 (the loss through the dense layer)
    e = float(eps)
    g = lambda x: ((batch - 2) / (x / batch + e) + e**2 / (x / batch + e) ** 3) / batch  # noqa: E731
    assert float(d.result) == pytest.approx(4 * _chi2_mean(g, batch - 1), rel=1e-9)


@pytest.mark.parametrize("n, batch, s", [(5, 4, sp.Rational(2, 5)), (12, 8, sp.Rational(1, 3))])
def test_backward_after_a_first_dense_layer_is_exact_at_every_width(n, batch, s):
    net = Network((Dense(n, n, Normal(s), bias=Normal(1)), BatchNorm(n, batch, eps=0)))
    d = _verified(derive(net, SecondMoment(Gradient(0))))
    expected = (batch - 2) * _chi2_mean(lambda x: 1 / x, batch - 1) * _chi2_mean(lambda y: 1 / y, n) / float(s)
    assert float(d.result) == pytest.approx(expected, rel=1e-9) and d.exactness == "exact"


@pytest.mark.parametrize("batch", [4, 6, 10])
@pytest.mark.parametrize("variance", [sp.Rational(1, 16), sp.Rational(5, 16)])
def test_mean_field_growth_per_layer_is_yang_et_al_s_value_in_a_linear_chain(batch, variance):
    """Yang et al. (2019): in a deep linear BatchNorm network each layer multiplies the gradient's second moment by
    (B-2)/(B-3), whatever the (common) weight variance; asymptotic (a width sweep measures it, see the docs)."""
    n = 16
    net = Network(tuple(layer for _ in range(4) for layer in (Dense(n, n, Normal(variance)), BatchNorm(n, batch, eps=0))))
    values = [derive(net, SecondMoment(Gradient(p))) for p in (6, 4, 2)]
    assert all(v.exactness == "asymptotic" for v in values)
    assert values[1].result / values[0].result == sp.Rational(batch - 2, batch - 3)
    assert values[2].result / values[1].result == sp.Rational(batch - 2, batch - 3)
    # the top layer: the loss gradient is isotropic, not centred, and a = n Var[w] B/(B-1) after a BatchNorm
    assert values[0].result == sp.Rational((batch - 2) * (batch - 1), (batch - 3) * batch) / (n * variance)


def test_bad_input_gives_one_clear_error():
    with pytest.raises(SpecError, match="batch must be an integer from 2.*got 1"):
        BatchNorm(4, 1)
    with pytest.raises(SpecError, match="eps must be non-negative, got -1"):
        BatchNorm(4, 4, eps=-1)
    with pytest.raises(SpecError, match="same batch, got batch sizes \\[4, 8\\]"):
        Network((Dense(4, 4, Normal(1)), BatchNorm(4, 4), Dense(4, 4, Normal(1)), BatchNorm(4, 8)))
    with pytest.raises(SpecError, match="single GaussianInput"):
        Network((Dense(2, 2, Normal(1)), BatchNorm(2, 4)), FixedInput((1.0, 2.0)))
    with pytest.raises(DerivationError, match="B <= 3"):
        derive(Network((BatchNorm(4, 3, eps=0), Dense(4, 4, Normal(1)))), SecondMoment(Gradient(-1)))
    relu = Nonlinearity(activation("relu"))
    after_relu = Network((Dense(4, 4, Normal(1)), relu, BatchNorm(4, 6, eps=sp.Rational(1, 10))))
    with pytest.raises(DerivationError, match="Yang et al.'s \\(2019\\) integral transforms"):
        derive(after_relu, SecondMoment(Signal(2)))


def test_mean_field_after_a_relu_on_a_batchnorm_against_quadrature():
    """a = n Var[w] E[y^2] (1/2 - kappa), kappa = E[relu(u) relu(v)] at correlation -1/(B-1) (the BatchNorm output's
    direction is uniform on the centred sphere), then E[y^2] = E[X/(X + B eps/a)], X chi-square with B - 1."""
    import math

    batch, eps, n = 4, 0.5, 12
    relu = Nonlinearity(activation("relu"))
    net = Network((Dense(n, n, Normal(sp.Rational(1, n))), BatchNorm(n, batch, eps=0), relu,
                   Dense(n, n, Normal(sp.Rational(2, n))), BatchNorm(n, batch, eps=sp.Rational(1, 2))))
    d = _verified(derive(net, SecondMoment(Signal(4))))
    rho = -1 / (batch - 1)
    kappa = integrate.dblquad(
        lambda v, u: u * v * math.exp(-(u * u - 2 * rho * u * v + v * v) / (2 * (1 - rho * rho)))
        / (2 * math.pi * math.sqrt(1 - rho * rho)), 0, 12, 0, 12, epsabs=1e-13)[0]
    a = 2 * (0.5 - kappa)  # n Var[w] = 2, E[y^2] = 1 after the first BatchNorm
    c = batch * eps / a
    assert float(d.result) == pytest.approx(_chi2_mean(lambda x: x / (x + c), batch - 1), rel=1e-8)
    assert d.exactness == "asymptotic"


def test_a_relu_between_batchnorms_stops_the_backward_walk_with_the_reason():
    relu = Nonlinearity(activation("relu"))
    net = Network((Dense(6, 6, Normal(sp.Rational(1, 3))), BatchNorm(6, 5, eps=0), relu, Dense(6, 6, Normal(1)),
                   BatchNorm(6, 5, eps=0)))
    assert derive(net, SecondMoment(Gradient(3))).exactness == "asymptotic"  # the top BatchNorm's input: derived
    assert derive(net, SecondMoment(Gradient(2))).result == derive(net, SecondMoment(Gradient(3))).result * 6
    with pytest.raises(DerivationError, match="its mask and that BatchNorm's Jacobian depend on the same output"):
        derive(net, SecondMoment(Gradient(0)))
    assert derive(net, SecondMoment(Signal(4))).result == 1  # the forward places are unaffected
