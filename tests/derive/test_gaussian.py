"""The expectation engine against scipy quadrature of the numpy activations (an independent route)."""

import math

import pytest
import sympy as sp

from tests.conftest import close, gaussian_quad
from varprop.activations import BUILTIN_ACTIVATIONS, X, activation, expression
from varprop.derive.gaussian import Q, evaluate, gaussian_expectation, moments
from varprop.errors import DerivationError, IntegrabilityError

EXACT = {"linear", "relu", "leaky_relu", "abs", "shifted_relu", "erf", "gelu", "selu", "elu"}
NUMERIC = {"tanh", "sigmoid", "silu", "softplus"}
RECTIFIERS = {"relu", "leaky_relu", "abs", "shifted_relu"}


def references(act, q):
    mean = gaussian_quad(act.numpy, q)
    second = gaussian_quad(lambda z: act.numpy(z) ** 2, q)
    return {
        "mean": mean,
        "second_moment": second,
        "variance": second - mean**2,
        "derivative_second_moment": gaussian_quad(lambda z: act.numpy_derivative(z) ** 2, q),
    }


@pytest.mark.parametrize("name", BUILTIN_ACTIVATIONS)
@pytest.mark.parametrize("q", [0.3, 1.0, 2.7])
def test_moments_match_quadrature(name, q):
    act = activation(name)
    result = moments(act).as_dict()
    for key, expected in references(act, q).items():
        value = result[key].evaluate({Q: q})
        assert close(value.value, expected), (name, key, q, value, expected)
        assert value.error_bound < 1e-9


def test_quadrature_comparison_catches_a_wrong_formula():
    # The same comparison rejects He's 1/2 dropped, and the variance used where E[x^2] belongs.
    act = activation("relu")
    ref = references(act, 2.0)
    assert not close(float(Q.subs(Q, 2.0)), ref["second_moment"])
    assert not close(float((Q / 2 * (1 - 1 / sp.pi)).subs(Q, 2.0)), ref["second_moment"])


@pytest.mark.parametrize("name", BUILTIN_ACTIVATIONS)
def test_exactness_and_route(name):
    result = moments(activation(name))
    if name in EXACT:
        assert result.exact and result.variance.exact
        assert all(e.route != "quadrature" for e in result.as_dict().values())
    else:
        assert name in NUMERIC
        assert not result.second_moment.exact and result.second_moment.route == "quadrature"
        assert result.second_moment.evaluate({Q: 1}).error_bound > 0
    if name in RECTIFIERS:
        assert {result.mean.route, result.second_moment.route} <= {"truncated-gaussian", "polynomial"}


def test_closed_forms():
    q = Q
    relu = moments(activation("relu"))
    assert sp.simplify(relu.mean.expr - sp.sqrt(q / (2 * sp.pi))) == 0
    assert relu.second_moment.expr == q / 2
    assert relu.derivative_second_moment.expr == sp.Rational(1, 2)
    a = sp.Symbol("a", real=True)
    leaky = moments(activation("leaky_relu", a=a))
    assert sp.simplify(leaky.second_moment.expr - (1 + a**2) * q / 2) == 0
    assert sp.simplify(leaky.derivative_second_moment.expr - (1 + a**2) / 2) == 0
    erf = moments(activation("erf"))
    # Williams (1997): E[erf(z)^2] = (2/pi) arcsin(2q / (1 + 2q)).
    assert sp.simplify(erf.second_moment.expr - 2 / sp.pi * sp.asin(2 * q / (1 + 2 * q))) == 0
    assert moments(activation("sigmoid")).mean.expr == sp.Rational(1, 2)
    assert moments(activation("tanh")).mean.expr == 0
    c = sp.Symbol("c", real=True)
    shifted = moments(activation("shifted_relu", c=c))
    expected = q / 2 - 2 * c * sp.sqrt(q / (2 * sp.pi)) + c**2
    assert sp.simplify(shifted.second_moment.expr - expected) == 0


def test_gelu_second_moment_closed_form_in_arcsin_and_square_roots():
    second = moments(activation("gelu")).second_moment.expr
    assert second.has(sp.asin) and not second.has(sp.Integral, sp.erf)
    # An independent closed form: E[z^2 Phi(z)^2] = q/4 + q/(2 pi) [asin(q/(1+q)) + 2q/((1+q) sqrt(1+2q))].
    q = Q
    reference = q / 4 + q / (2 * sp.pi) * (sp.asin(q / (1 + q)) + 2 * q / ((1 + q) * sp.sqrt(1 + 2 * q)))
    for value in (0.2, 1, 5):
        assert close(float(second.subs(q, value)), float(reference.subs(q, value)), 1e-13)


def test_non_centred_and_user_expressions():
    relu = activation("relu")
    for mu, q in ((0.7, 1.3), (-1.1, 0.4)):
        value = gaussian_expectation(relu.expr**2, sp.Float(q), sp.Float(mu))
        assert value.exact
        assert close(float(value.expr), gaussian_quad(lambda z: relu.numpy(z) ** 2, q, mu))
    act = expression("max(x, 0) - 0.5")
    assert moments(act).exact
    assert close(moments(act).second_moment.evaluate({Q: 2}).value, gaussian_quad(lambda z: act.numpy(z) ** 2, 2))
    poly = expression("x**3 - x")
    assert sp.expand(moments(poly).second_moment.expr - (15 * Q**3 - 6 * Q**2 + Q)) == 0


def test_not_square_integrable():
    for text in ("exp(x**2)", "cosh(x**2)", "exp(x**3)"):
        with pytest.raises(IntegrabilityError, match="not square-integrable"):
            moments(expression(text))
    with pytest.raises(IntegrabilityError):
        moments(expression("exp(exp(x))")).second_moment.evaluate({Q: 1})


def test_evaluate_needs_values():
    with pytest.raises(DerivationError, match="give values for q"):
        evaluate(moments(activation("relu")).mean.expr)
    assert evaluate(sp.Integer(3)).value == 3.0


def test_rectifier_moments_are_fast_rules_not_integrate(monkeypatch):
    # Guard that the rectifier family never reaches sympy's integrate().
    def forbidden(*args, **kwargs):
        raise AssertionError("sympy.integrate called")

    monkeypatch.setattr(sp, "integrate", forbidden)
    monkeypatch.setattr(sp.Integral, "doit", forbidden)
    from varprop.derive import gaussian

    gaussian._moments.cache_clear()
    gaussian._expectation.cache_clear()
    for name in sorted(RECTIFIERS | {"elu", "selu", "erf", "gelu"}):
        assert moments(activation(name)).exact
    assert math.isfinite(moments(activation("elu")).second_moment.evaluate({Q: 40}).value)


def test_text_is_never_sympified():
    for call in (lambda: gaussian_expectation("exp(x)"), lambda: evaluate("1 + 1"),
                 lambda: gaussian_expectation(X, variance="q")):
        with pytest.raises(DerivationError, match="parse text with varprop.activations.parse_expression"):
            call()
