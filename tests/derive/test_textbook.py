"""The derivations: results against independent algebra, every step checked, wrong steps refused."""

from fractions import Fraction

import re

import pytest
import sympy as sp

from tests.conftest import close, gaussian_quad
from varprop.activations import BUILTIN_ACTIVATIONS, activation
from varprop.derive import (
    DEPTH,
    DERIVATIONS,
    LAYER,
    Q_STAR,
    Rule,
    backward,
    condition,
    derivative_symmetry_lemma,
    forward,
    glorot,
    ratio,
    symmetry_lemma,
    weight_gradient,
)
from varprop.derive.derivation import Expect, Variance, _Builder
from varprop.errors import DerivationError
from varprop.weights import N_IN, N_OUT

l, L = LAYER, DEPTH
n, nhat, w, y = (sp.IndexedBase(s) for s in ("n", "nhat", "w", "y"))
a_sym = sp.Symbol("a", real=True)


def test_symmetry_lemma_constants():
    assert symmetry_lemma(activation("relu")).constant == 1
    assert sp.simplify(symmetry_lemma(activation("leaky_relu", a=a_sym)).constant - (1 + a_sym**2)) == 0
    assert symmetry_lemma(activation("abs")).constant == 2
    assert derivative_symmetry_lemma(activation("relu")).constant == 1
    for name in ("tanh", "shifted_relu", "elu", "gelu"):
        assert not symmetry_lemma(activation(name)).holds


def test_he_forward_relu():
    d = forward(activation("relu"))
    expected = Variance(y[1]) * sp.Product(sp.Rational(1, 2) * n[l] * Variance(w[l]), (l, 2, L))
    assert sp.simplify(d.result - expected) == 0
    sources = " ".join(step.source for step in d.steps)
    for eq in ("eq. (6)", "eq. (7)", "eq. (8)", "eq. (9)"):
        assert eq in sources
    assert d.extras["recursion"] == sp.Rational(1, 2) * n[l] * Variance(w[l]) * Variance(y[l - 1])


def test_he_forward_product_against_exact_rational_arithmetic():
    # Independent route: multiply the per-layer factors 1/2 n_l Var[w_l] with Fractions.
    d = forward(activation("relu"))
    widths = {2: 3, 3: 7, 4: 5, 5: 2}
    variances = {2: Fraction(1, 3), 3: Fraction(2, 9), 4: Fraction(3, 10), 5: Fraction(1, 1)}
    expected = Fraction(1)
    for k in range(2, 6):
        expected *= Fraction(1, 2) * widths[k] * variances[k]
    value = d.result.subs(L, 5).doit().subs({n[k]: widths[k] for k in widths})
    value = value.subs({Variance(w[k]): sp.Rational(v.numerator, v.denominator) for k, v in variances.items()})
    assert value == sp.Rational(expected.numerator, expected.denominator) * Variance(y[1])


def test_forward_with_weight_mean_shows_the_extra_term():
    d = forward(activation("relu"), weight_mean=True)
    q = Variance(y[l - 1])
    Ew, Vw = Expect(w[l]), Variance(w[l])
    expected = n[l] * (Vw * q / 2 + Ew**2 * (q / 2 - q / (2 * sp.pi)))
    assert sp.simplify(d.result - expected) == 0
    assert sp.simplify(d.extras["extra_term"] - n[l] * Ew**2 * q * (1 - 1 / sp.pi) / 2) == 0
    assert any(step.rule == Rule.VARIANCE_DEFINITION and "E[w]^2 Var[x]" in step.justification for step in d.steps)


def test_backward_and_conditions():
    d = backward(activation("relu"))
    factor = sp.Rational(1, 2) * nhat[l] * Variance(w[l])
    assert sp.simplify(d.extras["factor"] - factor) == 0
    relu = activation("relu")
    assert condition(relu).result == 2 / N_IN
    assert condition(relu, mode="fan_out").result == 2 / N_OUT
    assert sp.simplify(condition(activation("leaky_relu", a=a_sym)).result - 2 / ((1 + a_sym**2) * N_IN)) == 0
    assert condition(relu, weights="uniform").extras["law_parameter"] == sp.sqrt(6 / N_IN)
    tn = condition(relu, weights="truncated_normal").extras["law_parameter"]
    assert close(float(tn.subs(N_IN, 100)), (2 / 100) ** 0.5 / 0.87962566103423978, 1e-14)


def test_wrong_conditions_are_not_what_is_derived():
    relu = activation("relu")
    assert sp.simplify(condition(relu).result - 1 / N_IN) != 0  # missing 1/2
    assert sp.simplify(condition(relu).result - 2 / N_OUT) != 0  # fan_out for fan_in


def test_shifted_relu_fixed_point_against_quadrature():
    act = activation("shifted_relu")  # c = 1/2
    d = condition(act)
    assert d.result.has(Q_STAR)
    # At q* = 1: Var[w] n = 1 / E[(relu(z) - 1/2)^2], z ~ N(0, 1), computed by quadrature.
    second = gaussian_quad(lambda z: act.numpy(z) ** 2, 1.0)
    assert close(float(d.result.subs({Q_STAR: 1, N_IN: 1})), 1 / second)
    assert "fixed_point_equation" in d.extras


def test_ratio_telescopes():
    d = ratio(activation("relu"))
    assert d.result == n[L + 1] / n[2]
    assert d.extras["fan_out_forward_product"] == n[2] / n[L + 1]
    with pytest.raises(DerivationError, match="homogeneous"):
        ratio(activation("tanh"))


def test_weight_gradient():
    d = weight_gradient(activation("relu"))
    dx = sp.IndexedBase("Delta_x")
    assert sp.simplify(d.extras["general"] - Variance(dx[l + 1]) * Variance(y[l - 1]) / 4) == 0
    # The result is the last step: the general product under He's fan-in condition.
    k = sp.Symbol("k", integer=True, positive=True)
    expected = Variance(y[1]) * Variance(dx[L + 1]) * sp.Product(nhat[k] / n[k], (k, l + 1, L)) / 4
    assert sp.simplify(d.result - expected) == 0 and d.result_step == len(d.steps)
    assert "Result (step 13)" in d.text() and len(d.steps) == 13


@pytest.mark.parametrize("kind", sorted(DERIVATIONS))
def test_the_result_is_the_last_step(kind):
    """"Result (step k)" names the last step, never one that later steps go beyond."""
    for name in BUILTIN_ACTIVATIONS:
        try:
            d = DERIVATIONS[kind](activation(name))
        except DerivationError:
            continue
        assert d.result_step in (None, len(d.steps)), (kind, name, d.result_step, len(d.steps))


def test_glorot():
    d = glorot(activation("linear"))
    assert d.result == 2 / (N_IN + N_OUT)
    assert d.extras["law_parameter"] == sp.sqrt(6 / (N_IN + N_OUT))
    tanh = glorot(activation("tanh"))
    assert tanh.result == 2 / (N_IN + N_OUT)
    assert any("linear regime" in a for a in tanh.assumptions)
    with pytest.raises(DerivationError, match="phi'\\(0\\) = 0"):
        glorot(activation("relu"))


@pytest.mark.parametrize("name", BUILTIN_ACTIVATIONS)
@pytest.mark.parametrize("kind", sorted(DERIVATIONS))
def test_every_derivation_renders_and_its_checks_hold(name, kind):
    try:
        d = DERIVATIONS[kind](activation(name))
    except DerivationError:
        assert kind in ("ratio", "glorot")  # not applicable to this activation: a clear error
        return
    assert d.steps and isinstance(d.result, sp.Basic)
    for step in d.steps:
        assert step.check in ("identity", "definition", "lemma", "integral", "unrolled", "solve", "modelling")
    assert "\\begin{align}" in d.latex() and "\\tag{1}" in d.latex()
    assert d.text().startswith(d.title) and re.search(r"^Result( \(step \d+\))?: ", d.text(), re.M)
    if d.result_step is not None:  # the step the result is read from states it
        assert sp.simplify(d.steps[d.result_step - 1].rhs - d.result) == 0
        assert f"Result (step {d.result_step}): " in d.text() and f"(step {d.result_step}; " in d.latex()
    assert d.markdown().startswith("### ")
    assert d.to_dict()["steps"][0]["rule"]


def test_builder_refuses_a_wrong_step():
    b = _Builder("test")
    x = sp.IndexedBase("x")
    first = b.model(Variance(y[l]), n[l] * Variance(w[l] * x[l]), Rule.INDEPENDENCE)
    wrong_fact = b.model(Variance(w[l] * x[l]), Variance(w[l]) * Expect(x[l] ** 2), Rule.ZERO_MEAN)
    with pytest.raises(DerivationError, match="does not follow"):
        b.then(n[l] * Variance(w[l]) * Variance(x[l]), Rule.ZERO_MEAN, uses=(wrong_fact,))
    with pytest.raises(DerivationError, match="does not hold"):
        b.identity(Variance(y[l]), 2 * Variance(y[l]), Rule.ALGEBRA)
    # A fact that is the step itself checks nothing: it is refused, not recorded as an identity.
    with pytest.raises(DerivationError, match="the step itself"):
        b.identity(Variance(y[l]), n[l] * Variance(w[l] * x[l]), Rule.ALGEBRA, uses=(first,))
    assert len(b.steps) == 2
