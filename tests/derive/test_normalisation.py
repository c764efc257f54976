"""Derive rules of LayerNorm and RMSNorm: exact values against independent quadrature and algebra."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from scipy import integrate, stats

from varprop.activations import activation
from varprop.derive import derive
from varprop.derive.derivation import Expect, Rule, _Builder
from varprop.derive.normalisation import CHI, ChiSquare, TraceCheck, chi_square_inverse
from varprop.errors import DerivationError
from varprop.network import Dense, FixedInput, LayerNorm, Network, Nonlinearity, RMSNorm
from varprop.observables import Gradient, Mean, SecondMoment, Signal
from varprop.weights import Normal, Uniform


def _chi2_expect(g, k: float) -> float:
    """E[g(X)], X ~ chi-square(k), by scipy quadrature of the density (independent of the closed forms)."""
    return integrate.quad(lambda x: g(x) * stats.chi2.pdf(x, k), 0, np.inf, epsabs=0, epsrel=1e-11, limit=400)[0]


def _ok(derivation) -> None:
    assert all(report.ok is not False for report in derivation.verify())


@pytest.mark.parametrize("k", [1, 2, 3, 8, 15])
@pytest.mark.parametrize("c", [0.25, 1.0, 6.0])
def test_incomplete_gamma_closed_form_against_quadrature(k, c):
    s = sp.Symbol("c", positive=True)
    closed = chi_square_inverse(sp.Integer(k), s)
    assert float(closed.subs(s, c)) == pytest.approx(_chi2_expect(lambda x: 1 / (x + c), k), rel=1e-9)
    third = float((sp.diff(closed, s, 2) / 2).subs(s, c))  # E[(X + c)^-3] = F''(c)/2
    assert third == pytest.approx(_chi2_expect(lambda x: (x + c) ** -3, k), rel=1e-8)


def _dense(n: int) -> Dense:
    return Dense(n, n, Normal(sp.Rational(2, n)))


def test_eps_zero_gives_unit_mean_square_for_every_network():
    n = 6
    for norm in (RMSNorm(n, eps=0), LayerNorm(n, eps=0)):
        network = Network((_dense(n), norm, Nonlinearity(activation("relu")), _dense(n)))
        d = derive(network, SecondMoment(Signal(1)))
        assert d.result == 1 and d.exactness == "exact"
        _ok(d)
    d = derive(Network((_dense(n), LayerNorm(n), _dense(n))), Mean(Signal(1)))
    assert d.result == 0 and d.exactness == "exact"  # centred whatever eps


@pytest.mark.parametrize("norm, dof", [(RMSNorm, 8), (LayerNorm, 7)])
def test_gaussian_input_forward_is_a_chi_square_expectation(norm, dof):
    n, eps = 8, sp.Rational(3, 4)
    d = derive(Network((norm(n, eps=eps), _dense(n))), SecondMoment(Signal(0)))
    assert d.exactness == "exact"
    _ok(d)
    # m = X / n with X ~ chi-square(dof): E[m/(m + eps)] by quadrature
    expected = _chi2_expect(lambda x: (x / n) / (x / n + 0.75), dof)
    assert float(sp.N(d.result)) == pytest.approx(expected, rel=1e-9)
    assert abs(float(sp.N(d.result)) - 1 / (1 + 0.75)) > 0.01  # not the mean-field value


@pytest.mark.parametrize("norm, dof", [(RMSNorm, 8), (LayerNorm, 7)])
@pytest.mark.parametrize("eps", [0, sp.Rational(1, 2)])
def test_gaussian_input_backward_through_the_jacobian(norm, dof, eps):
    n = 8
    d = derive(Network((norm(n, eps=eps), _dense(n))), SecondMoment(Gradient(-1)))
    assert d.exactness == "exact"
    _ok(d)
    e, upstream = float(eps), 2.0  # E[(dL/dy)^2] = n Var[w] = 2 at the normaliser's output
    expected = upstream / n * _chi2_expect(
        lambda x: ((dof - 1) / (x / n + e) + e**2 / (x / n + e) ** 3), dof)
    assert float(sp.N(d.result)) == pytest.approx(expected, rel=1e-8)


def test_eps_zero_backward_closed_form():
    d = derive(Network((LayerNorm(8, eps=0), _dense(8))), SecondMoment(Gradient(-1)))
    assert d.result == sp.Rational(12, 5)  # d (n - 2) / (q (n - 3)) with d = 2, q = 1


def test_infinite_gradient_moment_is_refused():
    with pytest.raises(DerivationError, match="infinite"):
        derive(Network((LayerNorm(3, eps=0), _dense(3))), SecondMoment(Gradient(-1)))


def test_exactness_classes():
    n = 8
    fixed = FixedInput(tuple(1.0 if j % 2 else -1.0 for j in range(n)))
    behind_gaussian = Network((_dense(n), RMSNorm(n, eps=1), _dense(n)), fixed)
    assert derive(behind_gaussian, SecondMoment(Signal(1))).exactness == "gaussian-exact"
    # uniform weights: the pre-activation is not Gaussian, m is not chi-square: the mean-field value
    uniform = Network((Dense(n, n, Uniform(1)), RMSNorm(n, eps=1), _dense(n)), fixed)
    d = derive(uniform, SecondMoment(Signal(1)))
    q = n * sp.Rational(1, 3)  # E[y^2] = n Var[w] E[x^2]
    assert d.exactness == "asymptotic" and d.result == q / (q + 1)
    on_fixed = Network((RMSNorm(n, eps=1), _dense(n)), fixed)
    assert derive(on_fixed, SecondMoment(Signal(0))).result == sp.Rational(1, 2)  # m = 1 exactly


def test_symbolic_width():
    n = sp.Symbol("n", integer=True, positive=True)
    network = Network((Dense(n, n, Normal(2 / n)), RMSNorm(n, eps=0), Dense(n, n, Normal(2 / n))))
    assert derive(network, SecondMoment(Signal(1))).result == 1
    d = derive(Network((RMSNorm(n, eps=1), Dense(n, n, Normal(2 / n)))), SecondMoment(Signal(0)))
    at_8 = derive(Network((RMSNorm(8, eps=1), _dense(8))), SecondMoment(Signal(0))).result
    assert float(sp.N(d.result.subs(n, 8))) == pytest.approx(float(sp.N(at_8)), rel=1e-12)


def test_chi_square_check_refuses_a_wrong_value():
    builder = _Builder("test")
    k = sp.Integer(5)
    right = 1 - 2 * chi_square_inverse(k, sp.Integer(2))
    builder.add(Expect(CHI / (CHI + 2)), right, Rule.GAUSSIAN_INTEGRAL, proof=ChiSquare(CHI / (CHI + 2), k))
    with pytest.raises(DerivationError, match="quadrature"):
        builder.add(Expect(CHI / (CHI + 2)), right * sp.Rational(101, 100), Rule.GAUSSIAN_INTEGRAL,
                    proof=ChiSquare(CHI / (CHI + 2), k))


@pytest.mark.parametrize("centred", [True, False])
def test_trace_check_holds_and_fails_on_the_other_layer(centred):
    step = type("S", (), {})()
    assert TraceCheck(centred).run(step, [])[0] is True
    # the trace formula of one layer is wrong for the other: check it with the wrong degrees of freedom
    from varprop.derive import normalisation

    wrong = normalisation._jacobian_trace(4, centred, sp.Rational(1, 3), [1, -2, 0, 3])
    other = normalisation._jacobian_trace(4, not centred, sp.Rational(1, 3), [1, -2, 0, 3])
    assert sp.simplify(wrong[0] - wrong[1]) == 0 and sp.simplify(wrong[0] - other[1]) != 0


def test_pair_of_inputs_through_a_normaliser():
    n = 8
    network = Network((_dense(n), LayerNorm(n, eps=0), _dense(n)), FixedInput.pair(n, 0.5))
    from varprop.observables import CrossMoment

    d = derive(network, CrossMoment(Signal(1)))
    assert d.exactness == "asymptotic"
    assert float(d.result) == pytest.approx(0.5)  # centred Gaussian pair with correlation 1/2, unit variances
    assert math.isfinite(float(derive(network, SecondMoment(Signal(2))).result))


@pytest.mark.parametrize("factor", [1, sp.Rational(101, 100)])
def test_sum_identity_proves_the_mean_square_and_refuses_a_wrong_one(factor):
    from types import SimpleNamespace

    from varprop.derive.normalisation import SumIdentity

    i, n = sp.Symbol("i", integer=True), sp.Symbol("N", positive=True, integer=True)
    x, y, m, eps = sp.IndexedBase("x"), sp.IndexedBase("y"), sp.Symbol("m", positive=True), sp.Symbol("epsilon", positive=True)
    facts = [SimpleNamespace(lhs=y[i], rhs=x[i] / sp.sqrt(m + eps)),
             SimpleNamespace(lhs=m, rhs=sp.Sum(x[i] ** 2, (i, 1, n)) / n)]
    step = SimpleNamespace(lhs=sp.Sum(y[i] ** 2, (i, 1, n)) / n,
                           rhs=factor * sp.Sum(x[i] ** 2, (i, 1, n)) / (sp.Sum(x[i] ** 2, (i, 1, n)) + n * eps), uses=(0, 1))
    holds, detail = SumIdentity().run(step, facts)
    assert holds is (factor == 1), detail
