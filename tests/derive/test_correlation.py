"""Cross moments and correlations of a pair of inputs, derived step by step.

Independent references: the arc-cosine kernel of degree 1 (Cho & Saul 2009) for relu, computed here
with mpmath from its own formula; exact rational algebra for the dense steps; two-dimensional
quadrature (scipy dblquad, written here) for the shifted relu and tanh.
"""

import math

import mpmath
import pytest
import sympy as sp
from scipy import integrate

from varprop.activations import activation
from varprop.derive import derive
from varprop.derive.derivation import U, V, BivariateIntegral, Phi, Rule, _Builder
from varprop.errors import DerivationError
from varprop.network import Dense, FixedInput, GaussianInput, Network, mlp
from varprop.observables import Correlation, CrossMoment, Signal
from varprop.weights import Normal, he, lecun


def _relu_cmap(c: float) -> float:
    """Cho & Saul's J_1 / pi: the correlation after a relu layer under He, from correlation c."""
    c = mpmath.mpf(c)
    return float((mpmath.sqrt(1 - c * c) + (mpmath.pi - mpmath.acos(c)) * c) / mpmath.pi)


def _dblquad(f, q1: float, q2: float, q12: float) -> float:
    a = q12 / math.sqrt(q1)
    b = math.sqrt(q2 - a * a)
    density = lambda z1, z2: math.exp(-(z1 * z1 + z2 * z2) / 2) / (2 * math.pi)
    value, _ = integrate.dblquad(lambda z2, z1: density(z1, z2) * f(math.sqrt(q1) * z1) * f(a * z1 + b * z2),
                                 -10, 10, -10, 10, epsabs=1e-11, epsrel=1e-11)
    return value


def _pair_net(act, init, c0, *, width=8, depth=2, inputs=None):
    return mlp([width] * (depth + 1), act, init, inputs=inputs if inputs is not None else FixedInput.pair(width, c0))


def test_orthogonal_inputs_after_one_relu_layer_have_correlation_one_over_pi():
    net = _pair_net("relu", he(), 0)
    d = derive(net, Correlation(Signal(1)))
    assert sp.simplify(d.result - 1 / sp.pi) == 0
    assert d.exactness == "gaussian-exact"
    assert all(report.ok is not False for report in d.verify())
    # the cross moment itself: E[relu(u) relu(v)] at c = 0 is E[relu]^2 = q/(2 pi) with q = 2
    assert sp.simplify(derive(net, CrossMoment(Signal(1))).result - 1 / sp.pi) == 0


@pytest.mark.parametrize("c0", [sp.Rational(1, 2), sp.Rational(-3, 4), sp.Rational(9, 10)])
def test_relu_correlation_map_is_the_arc_cosine_kernel(c0):
    net = _pair_net("relu", he(), c0, width=4)
    d = derive(net, Correlation(Signal(1)))
    inputs = net.inputs
    assert float(d.result) == pytest.approx(_relu_cmap(float(inputs.correlation)), rel=1e-13)


def test_relu_correlation_at_depth_iterates_the_map_and_is_asymptotic():
    net = _pair_net("relu", he(), 0, depth=4)
    c = 0.0
    for k in range(1, 4):
        c = _relu_cmap(c)
        d = derive(net, Correlation(Signal(2 * k - 1)))
        assert float(d.result) == pytest.approx(c, rel=1e-12)
        assert d.exactness == ("gaussian-exact" if k == 1 else "asymptotic")


def test_exactness_of_each_step():
    net = _pair_net("relu", he(), 0, depth=3)
    # dense cross moments are exact given the layer below; the dense2 correlation equals act1's (no bias)
    d = derive(net, CrossMoment(Signal(2)))
    # the kernel step (at c = 0: independence of an uncorrelated Gaussian pair, E[phi]^2) is gaussian-exact
    kernel_steps = [s for s in d.steps if s.lhs.has(Phi) and s.lhs.args[0].is_Mul]
    assert [(s.rule, s.exactness) for s in kernel_steps] == [(Rule.INDEPENDENCE, "gaussian-exact")]
    dense_steps = [s for s in d.steps if "double sum" in s.justification]
    assert dense_steps and all(s.exactness == "exact" for s in dense_steps)
    assert derive(net, Correlation(Signal(2))).exactness == "gaussian-exact"
    assert derive(net, Correlation(Signal(3))).exactness == "asymptotic"


def test_random_gaussian_pairs_make_the_first_kernel_step_asymptotic():
    # x, x' random: y given the inputs is Gaussian with a random covariance, so E[phi(y) phi(y')] is the
    # kernel at the expected covariance only as the width grows.
    net = mlp([8, 8, 8], "relu", he(), inputs=GaussianInput(correlation=sp.Rational(1, 2)))
    assert derive(net, Correlation(Signal(1))).exactness == "asymptotic"
    # ... while the dense cross moment stays exact: E[y y'] = n Var[w] E[x x'] = 2 * 1/2
    assert derive(net, CrossMoment(Signal(0))).result == 1
    assert derive(net, CrossMoment(Signal(0))).exactness == "exact"


def test_dense_cross_moment_with_bias_by_exact_algebra():
    net = Network((Dense(4, 3, Normal(sp.Rational(1, 2)), Normal(sp.Rational(1, 10))),),
                  FixedInput((1.0, 2.0, 0.0, -1.0), partner=(0.5, 1.0, 1.0, 1.0)))
    # (1/4) <x, x'> = (0.5 + 2 + 0 - 1)/4 = 3/8; E[y y'] = 4 * 1/2 * 3/8 + 1/10
    assert derive(net, CrossMoment(Signal(0))).result == 4 * sp.Rational(1, 2) * sp.Rational(3, 8) + sp.Rational(1, 10)
    expected = (sp.Rational(3, 4) + sp.Rational(1, 10)) / sp.sqrt(
        (2 * sp.Rational(6, 4) + sp.Rational(1, 10)) * (2 * sp.Rational(13, 16) + sp.Rational(1, 10)))
    assert sp.simplify(derive(net, Correlation(Signal(0))).result - expected) == 0


@pytest.mark.parametrize("name, init, f", [
    ("shifted_relu", he(), lambda z: max(z, 0.0) - 0.5),
    ("tanh", lecun(), math.tanh),
])
def test_other_kernels_against_independent_quadrature(name, init, f):
    c0 = 0.5
    net = _pair_net(name, init, c0, width=4)
    q = float(init.law(4, 4).variance) * 4  # E[y^2] = n Var[w] for unit-mean-square inputs
    cross = float(derive(net, CrossMoment(Signal(1))).result)
    assert cross == pytest.approx(_dblquad(f, q, q, c0 * q), abs=1e-8)


def test_the_bivariate_check_refuses_a_wrong_kernel():
    # The sibling of every kernel step: 1/2 instead of 1/pi for relu at c = 0 fails the 2-D quadrature.
    q = sp.Symbol("q", positive=True)
    builder = _Builder("wrong")
    relu = activation("relu").expr
    x = [s for s in relu.free_symbols][0]
    integrand = relu.subs(x, U) * relu.subs(x, V)
    with pytest.raises(DerivationError, match="two-dimensional quadrature gives"):
        builder.add(sp.Symbol("K"), sp.Rational(1, 2), Rule.GAUSSIAN_INTEGRAL, "wrong",
                    proof=BivariateIntegral(integrand, sp.Integer(2), sp.Integer(2), sp.Integer(0)))
    # ... and the covariance term without the mean (the covariance of relu(u), relu(v) at c = 0 is 0)
    with pytest.raises(DerivationError, match="two-dimensional quadrature gives"):
        builder.add(sp.Symbol("K"), sp.Integer(0), Rule.GAUSSIAN_INTEGRAL, "no mean term",
                    proof=BivariateIntegral(integrand, sp.Integer(2), sp.Integer(2), sp.Integer(0)))
    builder.add(sp.Symbol("K"), 1 / sp.pi, Rule.GAUSSIAN_INTEGRAL, "right",
                proof=BivariateIntegral(integrand, sp.Integer(2), sp.Integer(2), sp.Integer(0)))


def test_correlation_needs_a_pair():
    with pytest.raises(Exception, match="needs a pair of inputs"):
        derive(mlp([4, 4, 4]), Correlation(Signal(1)))
