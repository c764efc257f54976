"""Bivariate Gaussian expectations E[f(u) f(v)] against independent computations.

References: nested scipy quadrature of the activations' *numpy* functions in the rotated frame, split
at the kinks (independent of the sympy closed forms and of the Gauss-Legendre route), and
neural-tangents' analytic kernels transcribed from its published source
(``neural_tangents/_src/stax/elementwise.py``: ``ABRelu``, ``Erf``, ``Gelu``; Apache-2.0, Novak et al.
2020). Each comparison is also shown to reject a wrong sibling formula.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import scipy.integrate
import sympy as sp

from varprop.activations import activation, expression
from varprop.derive.gaussian.bivariate import (
    ROUTES,
    BivariateExpectation,
    cross_expectation,
)
from varprop.errors import VarpropError

# QUADPACK warns of roundoff when asked for 1e-14 on integrands that are exactly 0 on half the line.
pytestmark = pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")

_SQ = 1.0 / math.sqrt(2.0 * math.pi)
POINTS = [(1.0, 2.0, 0.3), (0.7, 1.3, -0.8), (1.5, 1.5, 1.0), (2.0, 0.5, -1.0), (1.0, 1.0, 0.0)]
QUADRATURE_TOL = 1e-9  # nested QUADPACK at epsabs 1e-14: agreement to ~1e-13 observed; a bug is >> 1e-9
# Plain-Python references for user expressions (their lambdified numpy functions are slow on scalars):
# (value, derivative).
_PYTHON = {
    "step(x)": (lambda x: 1.0 if x > 0 else 0.0, lambda x: 0.0),
    "2*step(x) - 1 + x**2": (lambda x: (1.0 if x > 0 else -1.0) + x * x, lambda x: 2 * x),
    "x**3 - x": (lambda x: x**3 - x, lambda x: 3 * x * x - 1),
    "2*erf(x/3) + 1": (lambda x: 2 * math.erf(x / 3) + 1, lambda x: 4 / (3 * math.sqrt(math.pi)) * math.exp(-x * x / 9)),
    "x*exp(-x**2/3) + sin(x)/2": (
        lambda x: x * math.exp(-x * x / 3) + math.sin(x) / 2,
        lambda x: (1 - 2 * x * x / 3) * math.exp(-x * x / 3) + math.cos(x) / 2,
    ),
}
CLOSED = [
    (activation("relu"), "arc-cosine kernel (degree 1)", "arc-cosine kernel (degree 0)"),
    (activation("abs"), "arc-cosine kernel (degree 1)", "arc-cosine kernel (degree 0)"),
    (activation("leaky_relu", a=0.2), "arc-cosine kernel (degree 1)", "arc-cosine kernel (degree 0)"),
    (activation("shifted_relu", c=0.5), "arc-cosine kernel (degree 1)", "arc-cosine kernel (degree 0)"),
    (expression("step(x)"), "arc-cosine kernel (degree 0)", "polynomial (Isserlis)"),
    (expression("2*step(x) - 1 + x**2"), "arc-cosine kernel (degree 0)", "polynomial (Isserlis)"),
    (activation("linear"), "polynomial (Isserlis)", "polynomial (Isserlis)"),
    (expression("x**3 - x"), "polynomial (Isserlis)", "polynomial (Isserlis)"),
    (activation("erf"), "arcsin (erf)", "Gaussian integral"),
    (expression("2*erf(x/3) + 1"), "arcsin (erf)", "Gaussian integral"),
    (activation("gelu"), "gelu kernel (Tsuchida et al. 2020)", "gelu kernel (Tsuchida et al. 2020)"),
]


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


# Plain-Python references of the built-ins (value, derivative), written from their definitions: fast on
# scalars and independent of varprop's numpy kernels.
_BUILTIN_PYTHON = {
    "relu": (lambda x: max(x, 0.0), lambda x: 1.0 if x > 0 else 0.0),
    "abs": (abs, lambda x: 1.0 if x > 0 else -1.0),
    "leaky_relu(a=0.200000000000000)": (lambda x: x if x > 0 else 0.2 * x, lambda x: 1.0 if x > 0 else 0.2),
    "shifted_relu(c=0.500000000000000)": (lambda x: max(x, 0.0) - 0.5, lambda x: 1.0 if x > 0 else 0.0),
    "linear": (lambda x: x, lambda x: 1.0),
    "erf": (math.erf, lambda x: 2 / math.sqrt(math.pi) * math.exp(-x * x)),
    "gelu": (lambda x: x * _phi(x), lambda x: _phi(x) + x * math.exp(-x * x / 2) / math.sqrt(2 * math.pi)),
    "tanh": (math.tanh, lambda x: 1 / math.cosh(x) ** 2),
    "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * _sigmoid(-x)),
    "silu": (lambda x: x * _sigmoid(x), lambda x: _sigmoid(x) * (1 + x * _sigmoid(-x))),
    "softplus": (lambda x: max(x, 0.0) + math.log1p(math.exp(-abs(x))), _sigmoid),
}


def reference_function(act, derivative: bool):
    """A scalar function: the plain-Python reference of a built-in or of an expression used here."""
    table = _PYTHON.get(act.source) or _BUILTIN_PYTHON[str(act)]
    return table[derivative]


def nested_quad(f, q1: float, q2: float, c: float) -> float:
    """E[f(u) f(v)] by nested QUADPACK in the frame u = sqrt(q1) z1, v = sqrt(q2)(c z1 + s z2), split at the kinks."""

    if abs(c) == 1.0:
        return scipy.integrate.quad(lambda z: f(math.sqrt(q1) * z) * f(c * math.sqrt(q2) * z) * math.exp(-z * z / 2) * _SQ,
                                    -12, 12, points=[0.0], epsabs=1e-14, epsrel=1e-13, limit=200)[0]
    s = math.sqrt(1.0 - c * c)

    def inner(z1: float) -> float:
        return scipy.integrate.quad(lambda z2: f(math.sqrt(q2) * (c * z1 + s * z2)) * math.exp(-z2 * z2 / 2) * _SQ,
                                    -12, 12, points=[-c * z1 / s], epsabs=1e-14, epsrel=1e-13, limit=200)[0]

    return scipy.integrate.quad(lambda z1: f(math.sqrt(q1) * z1) * inner(z1) * math.exp(-z1 * z1 / 2) * _SQ,
                                -12, 12, points=[0.0], epsabs=1e-14, epsrel=1e-13, limit=200)[0]


def agrees(value: float, reference: float, tol: float) -> bool:
    return abs(value - reference) <= tol * max(1.0, abs(reference))


@pytest.mark.parametrize("derivative", [False, True], ids=["phi", "phi_prime"])
@pytest.mark.parametrize(("act", "route", "derivative_route"), CLOSED, ids=[str(a) for a, _, _ in CLOSED])
def test_closed_forms_match_nested_quadrature(act, route, derivative_route, derivative):
    function = reference_function(act, derivative)
    for q1, q2, c in POINTS:
        result = cross_expectation(act, q1, q2, c, derivative=derivative)
        assert result.exact and result.error_estimate is None
        assert result.route == (derivative_route if derivative else route)
        value = result.evaluate().value
        assert agrees(value, nested_quad(function, q1, q2, c), QUADRATURE_TOL), (q1, q2, c)


def test_wrong_sibling_fails_the_quadrature_comparison():
    """The relu kernel with 1/2 where Cho & Saul have 1/pi (in front of sin theta) is rejected."""
    q1, q2, c = 1.0, 2.0, 0.3
    theta = math.acos(c)
    wrong = math.sqrt(q1 * q2) / (2 * math.pi) * (math.pi / 2 * math.sin(theta) + (math.pi - theta) * c)
    reference = nested_quad(reference_function(activation("relu"), False), q1, q2, c)
    assert not agrees(wrong, reference, QUADRATURE_TOL)
    # and the c-map without the mean term (the correlation of centred relu outputs) is rejected too
    mean_square = math.sqrt(q1 / (2 * math.pi)) * math.sqrt(q2 / (2 * math.pi))
    right = cross_expectation("relu", q1, q2, c).evaluate().value
    assert not agrees(right - mean_square, reference, QUADRATURE_TOL)


# --- neural-tangents' analytic kernels (transcribed from stax/elementwise.py) --------------------


def nt_abrelu(a: float, b: float, q1: float, q2: float, c: float) -> tuple[float, float]:
    """neural-tangents ABRelu.kernel_fn: (nngp, dot_sigma) for a min(x, 0) + b max(x, 0)."""
    nngp, prod = c * math.sqrt(q1 * q2), q1 * q2
    square_root = math.sqrt(max(prod - nngp**2, 0.0))
    angles = math.atan2(square_root, nngp)
    factor = (a - b) ** 2 / (2 * math.pi)
    dot_sigma = (a**2 + b**2) / 2 - factor * angles
    return factor * square_root + dot_sigma * nngp, dot_sigma


def nt_erf(q1: float, q2: float, c: float) -> tuple[float, float]:
    """neural-tangents Erf(a=1, b=1, c=0).kernel_fn: (nngp, dot_sigma)."""
    nngp = c * math.sqrt(q1 * q2)
    prod = (1 + 2 * q1) * (1 + 2 * q2)
    square_root = math.sqrt(prod - 4 * nngp**2)
    factor = 2 / math.pi
    return factor * math.atan2(2 * nngp, square_root), 2 * factor / square_root


def nt_gelu(q1: float, q2: float, c: float) -> tuple[float, float]:
    """neural-tangents Gelu.kernel_fn (NNGP from arXiv:2002.08517): (nngp, dot_sigma)."""
    nngp, prod, prod_plus_1 = c * math.sqrt(q1 * q2), q1 * q2, (q1 + 1) * (q2 + 1)
    delta_squared = prod_plus_1 - nngp**2
    delta = math.sqrt(delta_squared)
    angles = math.atan2(nngp, delta)
    new = ((nngp**2 + prod * delta_squared) / (prod_plus_1 * delta) + nngp * angles) / (2 * math.pi) + 0.25 * nngp
    second_term = 0.25 + angles / (2 * math.pi)
    first_term = (1 / delta_squared + (1 - prod) / prod_plus_1 + 1) * nngp / delta / (2 * math.pi)
    return new, first_term + second_term


NT_TOL = 1e-14
NT_CASES = [
    ("relu", lambda q1, q2, c: nt_abrelu(0.0, 1.0, q1, q2, c)),
    ("abs", lambda q1, q2, c: nt_abrelu(-1.0, 1.0, q1, q2, c)),
    ("erf", nt_erf),
    ("gelu", nt_gelu),
]


@pytest.mark.parametrize(("name", "reference"), NT_CASES, ids=[n for n, _ in NT_CASES])
def test_closed_forms_match_neural_tangents(name, reference):
    for q1, q2, c in POINTS + [(0.3, 4.0, 0.99), (10.0, 10.0, -0.5)]:
        nngp, dot_sigma = reference(q1, q2, c)
        value = cross_expectation(name, q1, q2, c).evaluate().value
        derivative = cross_expectation(name, q1, q2, c, derivative=True).evaluate().value
        assert agrees(value, nngp, NT_TOL), (q1, q2, c, value - nngp)
        assert agrees(derivative, dot_sigma, NT_TOL), (q1, q2, c, derivative - dot_sigma)


def test_neural_tangents_comparison_rejects_a_wrong_sibling():
    """A gelu kernel with the arcsin term's 1/(2 pi) replaced by 1/pi differs from neural-tangents."""
    q1, q2, c = 1.0, 2.0, 0.3
    s = c * math.sqrt(q1 * q2)
    right = cross_expectation("gelu", q1, q2, c).evaluate().value
    wrong = right + s * math.asin(s / math.sqrt((1 + q1) * (1 + q2))) / (2 * math.pi)
    assert not agrees(wrong, nt_gelu(q1, q2, c)[0], NT_TOL)


def test_relu_cmap_under_he_is_the_published_form():
    """2 E[relu(u) relu(v)] / q at q1 = q2 = q is (sqrt(1 - c^2) + (pi - arccos c) c) / pi (Cho & Saul 2009)."""
    q, c = sp.Symbol("q", positive=True), sp.Symbol("c", real=True)
    value = cross_expectation("relu", q, q, c).value
    published = (sp.sqrt(1 - c**2) + (sp.pi - sp.acos(c)) * c) / sp.pi
    assert sp.simplify(2 * value / q - published) == 0
    assert sp.simplify(2 * value / q - (sp.sqrt(1 - c**2) + (sp.pi - sp.acos(c)) * c) / 2) != 0


def test_symbolic_parameters_stay_in_closed_forms():
    a, q, c = sp.Symbol("a", real=True), sp.Symbol("q", positive=True), sp.Symbol("c", real=True)
    value = cross_expectation(activation("leaky_relu", a=None), q, q, c).value
    assert value.free_symbols == {a, q, c}
    at = value.subs({a: sp.Rational(1, 5), q: 1, c: sp.Rational(3, 10)})
    numeric = cross_expectation(activation("leaky_relu", a=0.2), 1, 1, 0.3).evaluate().value
    assert agrees(float(at), numeric, 1e-14)


# --- quadrature route --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "silu", "softplus", "expression"])
def test_quadrature_route_matches_nested_quadrature(name):
    act = expression("x*exp(-x**2/3) + sin(x)/2") if name == "expression" else activation(name)
    for derivative in (False, True):
        function = reference_function(act, derivative)
        for q1, q2, c in [(1.0, 2.0, 0.3), (3.0, 0.5, -1.0)]:
            result = cross_expectation(act, q1, q2, c, derivative=derivative)
            assert result.route == "quadrature" and not result.exact
            assert result.error_estimate <= 1e-10 * max(1.0, abs(float(result.value)))
            assert agrees(float(result.value), nested_quad(function, q1, q2, c), QUADRATURE_TOL)


def test_quadrature_that_cannot_reach_the_tolerance_says_so():
    """A kink away from 0 converges algebraically: the error names the tolerance and the last change."""
    with pytest.raises(VarpropError, match="did not reach the tolerance 1e-10"):
        cross_expectation(expression("max(x, 1)"), 1.0, 1.0, 0.9)


def test_degenerate_variance():
    result = cross_expectation("shifted_relu", 0, 2.0, 0.5)
    assert result.route == "degenerate (q = 0)"
    # u = 0: f(0) E[f(v)] = -1/2 (sqrt(2/(2 pi)) - 1/2)
    assert agrees(result.evaluate().value, -0.5 * (math.sqrt(2.0) * _SQ - 0.5), 1e-15)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1, 1, 1.5), r"correlation c must be in \[-1, 1\], got 1\.5"),
        ((1, 1, -2), r"correlation c must be in \[-1, 1\], got -2"),
        ((-1, 1, 0), "variance q1 must be non-negative, got -1"),
        ((1, -0.5, 0), r"variance q2 must be non-negative, got -0\.5"),
        ((1, 1, "0.5"), "number or a sympy expression"),
    ],
)
def test_bad_input_is_named(args, message):
    with pytest.raises(VarpropError, match=message):
        cross_expectation("relu", *args)


def test_quadrature_needs_numbers():
    with pytest.raises(VarpropError, match="needs numbers for quadrature; c is symbolic"):
        cross_expectation("tanh", 1, 1, sp.Symbol("c"))


def test_api_shape():
    result = cross_expectation("relu", 1, 1, 0)
    assert isinstance(result, BivariateExpectation) and result.route in ROUTES
    assert result.value == 1 / (2 * sp.pi)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.route = "x"


def test_gelu_derivative_kernel_is_the_price_derivative():
    """E[gelu'(u) gelu'(v)] = d E[gelu(u) gelu(v)] / d Sigma_12 (Price's theorem), re-derived by sympy."""
    q1, q2 = sp.Symbol("q_1", positive=True), sp.Symbol("q_2", positive=True)
    c = sp.Symbol("c", real=True)
    value = cross_expectation("gelu", q1, q2, c).value
    derivative = cross_expectation("gelu", q1, q2, c, derivative=True).value
    price = sp.diff(value, c) / (sp.sqrt(q1) * sp.sqrt(q2))
    assert sp.simplify(price - derivative) == 0
    assert sp.simplify(price - derivative + sp.Rational(1, 4)) != 0


def test_divergent_expectation_is_refused():
    from varprop.errors import IntegrabilityError

    with pytest.raises(IntegrabilityError, match="does not exist"):
        cross_expectation(expression("exp(x**2)"), 1.0, 1.0, 0.5)
    with pytest.raises(IntegrabilityError, match="does not exist"):
        cross_expectation(expression("abs(x)**(-0.6)"), 1.0, 1.0, 0.5)
