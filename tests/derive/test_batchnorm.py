"""Derive rules of BatchNorm in training mode: every step checks, the closed forms against quadrature of the
chi-square densities (independent of the incomplete-gamma closed forms), the mean-field gradient growth against
Yang et al.'s (B-2)/(B-3), and bad input gives one clear error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from scipy import integrate, stats

from varprop.activations import activation
from varprop.derive import derive
from varprop.derive.batchnorm import relu_block_factor
from varprop.errors import DerivationError, SpecError
from varprop.montecarlo import FAIL, PASS
from varprop.montecarlo.verdict import judge
from varprop.network import (
    BatchNorm,
    Dense,
    FixedInput,
    GaussianInput,
    Network,
    Nonlinearity,
)
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
    between = Network((Dense(4, 4, Normal(1)), BatchNorm(4, 3, eps=0), relu, Dense(4, 4, Normal(1)),
                       BatchNorm(4, 3, eps=sp.Rational(1, 2))))
    assert derive(between, SecondMoment(Gradient(3))).exactness == "asymptotic"
    with pytest.raises(DerivationError, match="B - 1 = 2 degrees of freedom, which diverges for B <= 3"):
        derive(between, SecondMoment(Gradient(0)))  # below the relu between the BatchNorms
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


def test_what_stays_underived_between_batchnorms_is_refused_with_the_reason():
    """A tanh between BatchNorms, or a relu on a dense layer's output: the upper BatchNorm's batch variance behind it
    needs Yang et al.'s integral transforms, so the gradients from there down are refused with the reason; the
    forward places and the gradients above are derived."""
    relu, tanh = Nonlinearity(activation("relu")), Nonlinearity(activation("tanh"))
    dense = lambda: Dense(6, 6, Normal(sp.Rational(1, 3)))  # noqa: E731
    for net in (Network((dense(), BatchNorm(6, 5, eps=0), tanh, dense(), BatchNorm(6, 5, eps=0), relu)),
                Network((dense(), BatchNorm(6, 5, eps=0), dense(), relu, dense(), BatchNorm(6, 5, eps=0), relu))):
        top = len(net.layers) - 2
        assert derive(net, SecondMoment(Gradient(top))).result == sp.Rational(1, 2)  # the relu on the output
        for below in (top - 1, 0):
            with pytest.raises(DerivationError, match="Yang et al.'s \\(2019\\) integral transforms"):
                derive(net, SecondMoment(Gradient(below)))
        assert derive(net, SecondMoment(Signal(top))).result == 1


# --- a relu between two BatchNorms (mean-field, Yang et al. 2019) ---------------------------------


def _relu_pair(batch: int, eps) -> Network:
    """dense (a = 6/3 = 2 on the unit Gaussian input), BatchNorm(eps), relu, dense, BatchNorm: the lower BatchNorm's
    gradient comes through the relu on its output from the BatchNorm above."""
    relu = Nonlinearity(activation("relu"))
    return Network((Dense(6, 6, Normal(sp.Rational(1, 3))), BatchNorm(6, batch, eps=eps), relu, Dense(6, 6, Normal(1)),
                    BatchNorm(6, batch, eps=0)))


def _mean_field_sample(batch: int, a: float, eps: float, d: float, size: int, seed: int):
    """The mean-field model simulated with matrices, independently of the derivation's decomposition: the lower
    BatchNorm's output sqrt(B V/(V + eps)) u, u uniform on the centred unit sphere, V = (a/B) chi^2_{B-1} independent
    of u, the relu mask from the output's signs, the gradient at the relu's output delta ~ N(0, d B/(B-1) C)
    independent of both; per sample, the mean over the batch of (J M delta)^2."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((size, batch))
    g -= g.mean(axis=1, keepdims=True)
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    V = a / batch * rng.chisquare(batch - 1, size)
    y = np.sqrt(batch * V / (V + eps))[:, None] * u
    delta = rng.standard_normal((size, batch))
    delta = (delta - delta.mean(axis=1, keepdims=True)) * np.sqrt(d * batch / (batch - 1))
    masked = (y > 0) * delta
    dx = (masked - masked.mean(axis=1, keepdims=True) - y * (y * masked).mean(axis=1, keepdims=True))
    return ((dx / np.sqrt(V + eps)[:, None]) ** 2).mean(axis=1)


def _pair_moments(batch: int) -> tuple[float, float]:
    """(p, kappa): the orthant probability and E[relu(u) relu(v)] for unit Gaussians of correlation -1/(B-1), by
    two-dimensional quadrature (scipy), independent of the closed forms."""
    rho = -1 / (batch - 1)

    def density(v, u):
        return math.exp(-(u * u - 2 * rho * u * v + v * v) / (2 * (1 - rho * rho))) / (2 * math.pi * math.sqrt(1 - rho * rho))

    p = integrate.dblquad(density, 0, 12, 0, 12, epsabs=1e-13)[0]
    kappa = integrate.dblquad(lambda v, u: u * v * density(v, u), 0, 12, 0, 12, epsabs=1e-13)[0]
    return p, kappa


@pytest.mark.parametrize("batch, eps, seed", [(6, 0, 1), (6, sp.Rational(1, 3), 2), (32, 0, 3)])
def test_relu_between_batchnorms_against_a_simulation_of_the_mean_field_model(batch, eps, seed):
    net = _relu_pair(batch, eps)
    d = _verified(derive(net, SecondMoment(Gradient(0))))
    assert d.exactness == "asymptotic"
    above = float(derive(net, SecondMoment(Gradient(2))).result)  # the gradient at the relu's output
    values = _mean_field_sample(batch, 2.0, float(eps), above, 2_400_000 // batch, seed)
    estimate, se = values.mean(), values.std(ddof=1) / math.sqrt(values.size)
    assert judge(float(d.result), estimate, se, values.size, rtol=0.02).outcome == PASS
    # the wrong sibling: the mask taken independent of the Jacobian, E[M C M] = (1/2 - 1/(2B)) I - (p/B) off the
    # diagonal (what the old refusal named: E[1_b 1_c P_bc] is not p E[P_bc]), at eps = 0
    if eps == 0:
        p, kappa = _pair_moments(batch)
        right = ((batch - 2) / 2 + p + kappa) / (batch - 3)
        factored = (batch - 2) * ((batch - 1) / 2 + p) / ((batch - 3) * (batch - 1))
        assert float(d.result) == pytest.approx(above * right / 2.0, rel=1e-9)  # a = 2: the closed form
        wrong = float(d.result) * factored / right
        assert judge(wrong, estimate, se, values.size, rtol=0.02).outcome == FAIL


def test_every_batchnorm_input_of_a_deep_relu_stack_is_derived_at_yang_et_al_s_rate():
    """(dense, BatchNorm, relu) x 4: each block below a BatchNorm multiplies the gradient's second moment by
    ((B-2)/2 + p + kappa)/((1/2 - kappa)(B-3)), whatever the weight variance; p and kappa by quadrature."""
    batch, n = 6, 16
    relu = Nonlinearity(activation("relu"))
    net = Network(tuple(layer for _ in range(4) for layer in
                        (Dense(n, n, Normal(sp.Rational(3, n))), BatchNorm(n, batch, eps=0), relu)))
    values = [derive(net, SecondMoment(Gradient(p))) for p in (9, 6, 3, 0)]
    assert all(v.exactness == "asymptotic" for v in values)
    p, kappa = _pair_moments(batch)
    rate = ((batch - 2) / 2 + p + kappa) / ((0.5 - kappa) * (batch - 3))
    assert float(values[1].result / values[0].result) == pytest.approx(rate, rel=1e-9)
    assert float(values[2].result / values[1].result) == pytest.approx(rate, rel=1e-9)
    assert float(relu_block_factor(batch)) == pytest.approx(rate, rel=1e-12)
    # the lowest: its BatchNorm's input is the dense layer on the Gaussian input, a = n Var[w] = 3, not 3 (1/2 - kappa)
    assert float(values[3].result / values[2].result) == pytest.approx(rate * (0.5 - kappa), rel=1e-9)


def test_the_relu_block_factor_tends_to_pi_over_pi_minus_one():
    """Yang et al. (2019): a relu BatchNorm network's gradient explodes by pi/(pi - 1) per layer as the batch grows;
    the linear network's (B-2)/(B-3) tends to 1."""
    B = sp.Symbol("B", positive=True)
    assert sp.simplify(sp.limit(relu_block_factor(B), B, sp.oo) - sp.pi / (sp.pi - 1)) == 0
    assert sp.limit((B - 2) / (B - 3), B, sp.oo) == 1


def test_the_relu_steps_checks_refuse_a_wrong_statement():
    """The trace identity and the exchangeable-moment algebra are checked, not assumed: a wrong factor fails."""
    from varprop.derive.batchnorm import (
        _B,
        _DIR,
        _EPS,
        _EX,
        _V,
        ExchangeableMoments,
        MaskedTrace,
    )
    from varprop.derive.derivation import Expect, Rule, _Builder

    B, V, eps = _B[0], _V[0], _EPS[0]
    y_b = sp.IndexedBase("h")[0, sp.Symbol("i", integer=True), _EX]
    count = sp.Sum(sp.Heaviside(y_b), (_EX, 1, B))
    spread = sp.Sum(sp.Max(y_b, 0) ** 2, (_EX, 1, B)) - sp.Sum(sp.Max(y_b, 0), (_EX, 1, B)) ** 2 / B
    r = V / (V + eps)
    for factor, holds in ((2 - r, True), (1 - r, False), (2 - r**2, False)):
        integrand = (count - 2 * count / B + count**2 / B**2 - factor * spread / B) / (V + eps)
        proof = MaskedTrace(integrand, sp.Integer(1), y_b, V, eps, B)
        if holds:
            _Builder("test").add(sp.Symbol("G"), Expect(integrand), Rule.INDEPENDENCE, proof=proof)
        else:
            with pytest.raises(DerivationError, match="tr\\(J M C M J\\)"):
                _Builder("test").add(sp.Symbol("G"), Expect(integrand), Rule.INDEPENDENCE, proof=proof)
    u_b, u1, u2 = _DIR[0, _EX], _DIR[0, 1], _DIR[0, 2]
    squared = Expect(sp.Sum(sp.Heaviside(u_b), (_EX, 1, B)) ** 2)
    h1, h11 = Expect(sp.Heaviside(u1)), Expect(sp.Heaviside(u1) * sp.Heaviside(u2))
    builder = _Builder("test")
    builder.add(squared, B * h1 + B * (B - 1) * h11, Rule.ALGEBRA, proof=ExchangeableMoments(u_b, B))
    with pytest.raises(DerivationError, match="at a batch of 2"):
        builder.add(squared, B * h1 + B**2 * h11, Rule.ALGEBRA, proof=ExchangeableMoments(u_b, B))


def test_the_relu_block_factor_refuses_text():
    """A string is never handed to sympify (it would be parsed as code): one clear error instead."""
    with pytest.raises(DerivationError, match="batch must be an integer or a sympy expression"):
        relu_block_factor("6")
