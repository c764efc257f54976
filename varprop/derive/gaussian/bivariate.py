r"""Bivariate Gaussian expectations :math:`E[f(u)\,f(v)]`: the kernels of mean-field theory.

For :math:`(u, v)` centred and jointly Gaussian with variances :math:`q_1, q_2` and correlation
:math:`c`,

.. math::

    \begin{pmatrix} u \\ v \end{pmatrix} \sim \mathcal N\!\left(0,
    \begin{pmatrix} q_1 & c\sqrt{q_1 q_2} \\ c\sqrt{q_1 q_2} & q_2 \end{pmatrix}\right),

:func:`cross_expectation` gives :math:`E[\phi(u)\phi(v)]` (or :math:`E[\phi'(u)\phi'(v)]`) and says
which route produced it:

``polynomial (Isserlis)``
    :math:`\phi` a polynomial: :math:`E[u^j v^k]` by Isserlis' (Wick's) theorem, counting the
    :math:`m` pairings that join a :math:`u` to a :math:`v`.
``arc-cosine kernel (degree 0)`` / ``arc-cosine kernel (degree 1)``
    :math:`\phi = p(x) + \alpha\,\Theta(x) + \beta\,\mathrm{relu}(x)` with a polynomial :math:`p`
    (relu, leaky relu, abs, shifted relu, step, sign, and their derivatives). The
    rectifier-rectifier terms are Cho & Saul's (2009, eq. 6) arc-cosine kernels with
    :math:`\theta = \arccos c`,

    .. math::

        E[\Theta(u)\Theta(v)] = \frac{\pi - \theta}{2\pi}, \qquad
        E[\mathrm{relu}(u)\,\mathrm{relu}(v)] = \frac{\sqrt{q_1 q_2}}{2\pi}
        \bigl(\sin\theta + (\pi - \theta)\cos\theta\bigr),

    the mixed term is :math:`E[\Theta(u)\,\mathrm{relu}(v)] = \sqrt{q_2}\,(1 + c)/(2\sqrt{2\pi})`,
    and the terms with the polynomial part are Gaussian moments in the rotated frame
    :math:`u = \sqrt{q_1}(c z_2 + \sqrt{1 - c^2} z_1)`, :math:`v = \sqrt{q_2} z_2`, with the
    half-line moments :math:`E[z^m \Theta(z)] = 2^{m/2}\Gamma(\tfrac{m+1}{2}) / (2\sqrt\pi)`.
``arcsin (erf)``
    :math:`\phi = A \operatorname{erf}(b x) + B`: Williams (1997, eq. 11),
    :math:`E[\operatorname{erf}(bu)\operatorname{erf}(bv)] = \frac{2}{\pi}\arcsin
    \frac{2 b^2 c \sqrt{q_1 q_2}}{\sqrt{(1 + 2b^2 q_1)(1 + 2b^2 q_2)}}`.
``Gaussian integral``
    :math:`\phi = A e^{-k x^2}` (the derivative of erf):
    :math:`E[e^{-k u^2} e^{-k v^2}] = \det(I + 2k\Sigma)^{-1/2}`.
``gelu kernel (Tsuchida et al. 2020)``
    :math:`\phi(x) = x\Phi(x)` and its derivative: Tsuchida, Pearce, van der Heide, Roosta &
    Gallagher (2020, arXiv:2002.08517), the form neural-tangents' ``stax.Gelu`` implements.
``quadrature``
    Everything else (tanh, sigmoid, silu, softplus, user expressions): tensor-product composite
    Gauss-Legendre quadrature of :math:`\varphi(z_1)\varphi(z_2)\,\phi(u)\phi(v)` in the rotated
    frame on :math:`[-L, L]^2`, panels doubled until two successive rules agree to the tolerance. The
    error estimate is the difference of the last two rules (an *estimate*, not a bound, as for
    QUADPACK; it overestimates the error of the finer rule when the integrand is smooth).
``degenerate (q = 0)``
    A variance is 0: :math:`E[\phi(0)\phi(v)] = \phi(0) E[\phi(v)]` by the one-dimensional engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import sympy as sp

from ..._validate import as_sympy_number
from ...activations import Activation, X
from ...activations import activation as _builtin
from ...errors import DerivationError, IntegrabilityError, VarpropError
from . import rules
from .engine import gaussian_expectation
from .integrability import _short, nonintegrable_reason
from .numeric import NumericValue, evaluate

__all__ = ["ROUTES", "BivariateExpectation", "cross_expectation"]

ROUTES = (
    "polynomial (Isserlis)",
    "arc-cosine kernel (degree 0)",
    "arc-cosine kernel (degree 1)",
    "arcsin (erf)",
    "Gaussian integral",
    "gelu kernel (Tsuchida et al. 2020)",
    "degenerate (q = 0)",
    "quadrature",
)

_Z1 = sp.Dummy("z1", real=True)
_Z2 = sp.Dummy("z2", real=True)

#: Half-width of the quadrature box in standard units: the Gaussian mass outside [-L, L] is
#: 2 Phi(-9) ~ 2e-19 per axis, below any tolerance the caller can ask for in float64.
_BOX = 9.0
_GAUSS_ORDER = 16  # Gauss-Legendre nodes per panel
_FIRST_PANELS = 8
_MAX_PANELS = 256  # 4096 nodes per axis: 16.8 M evaluations at the finest rule
_CHUNK = 1 << 20  # evaluations per block (bounds memory to ~8 MB per array)


@dataclass(frozen=True)
class BivariateExpectation:
    r""":math:`E[f(u) f(v)]` for a jointly Gaussian pair, with the route that produced it.

    Attributes
    ----------
    value
        A closed form (it may hold the symbols that were passed for :math:`q_1, q_2, c` or for the
        activation's parameters), or a sympy ``Float`` from quadrature.
    route
        One of :data:`ROUTES`, e.g. ``"arc-cosine kernel (degree 1)"`` or ``"quadrature"``.
    error_estimate
        None for a closed form; for quadrature, the difference of the last two rules (an estimate of
        the absolute error, not a guaranteed bound).
    """

    value: sp.Expr
    route: str
    error_estimate: float | None

    @property
    def exact(self) -> bool:
        """True for a closed form (no quadrature)."""
        return self.error_estimate is None

    def evaluate(self, values: dict | None = None) -> NumericValue:
        """The value as a float (closed forms correct to float64 accuracy), with its error estimate."""
        if not self.exact:
            return NumericValue(float(self.value), float(self.error_estimate), True)
        return evaluate(self.value, values)


def cross_expectation(
    activation: Activation | str,
    q1: object,
    q2: object,
    c: object,
    *,
    derivative: bool = False,
    tolerance: float = 1e-10,
) -> BivariateExpectation:
    r""":math:`E[f(u) f(v)]`, :math:`f = \phi` (or :math:`\phi'` when ``derivative``), for centred
    jointly Gaussian :math:`(u, v)` with variances ``q1``, ``q2`` and correlation ``c``.

    Parameters
    ----------
    activation
        A :class:`~varprop.activations.Activation`, or the name of a built-in one.
    q1, q2
        Variances: non-negative numbers or sympy expressions (symbols are kept in closed forms).
    c
        Correlation in :math:`[-1, 1]`, a number or a sympy expression.
    derivative
        Use :math:`\phi'` instead of :math:`\phi` (the :math:`\dot\Sigma` kernel, as in
        Schoenholz et al. 2017, eq. 7 / the NTK).
    tolerance
        Target accuracy of the quadrature route:
        :math:`|\text{error estimate}| \le \text{tolerance}\cdot\max(1, |\text{value}|)`.

    Returns
    -------
    BivariateExpectation

    Raises
    ------
    VarpropError
        A variance that is negative, a correlation outside :math:`[-1, 1]`, a non-positive
        tolerance, or symbols where only quadrature applies (it needs numbers); a quadrature that
        does not reach the tolerance within its node budget.

    Examples
    --------
    >>> cross_expectation("relu", 1, 1, 0).value      # 1/(2 pi)
    >>> cross_expectation("tanh", 1, 2, 0.5).route    # 'quadrature'
    """
    act = _as_activation(activation)
    q1 = _variance(q1, "q1")
    q2 = _variance(q2, "q2")
    c = _correlation(c)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not (0 < tolerance < 1):
        raise VarpropError(f"tolerance must be a number in (0, 1), got {tolerance!r}")
    return _cross(act, q1, q2, c, bool(derivative), float(tolerance))


# --- validation -----------------------------------------------------------------------------


def _as_activation(act: object) -> Activation:
    if isinstance(act, str):
        return _builtin(act)
    if not isinstance(act, Activation):
        raise VarpropError(
            f"cross_expectation expects an Activation or a built-in name, got {type(act).__name__}"
        )
    return act


def _variance(value: object, name: str) -> sp.Expr:
    expr = as_sympy_number(value, f"the variance {name}", error=VarpropError)
    if expr.is_extended_real is False or expr.is_negative:
        raise VarpropError(f"the variance {name} must be non-negative, got {_short(expr, 60)}")
    return expr


def _correlation(value: object) -> sp.Expr:
    expr = as_sympy_number(value, "the correlation c", error=VarpropError)
    if expr.is_extended_real is False or (expr - 1).is_positive or (expr + 1).is_negative:
        raise VarpropError(f"the correlation c must be in [-1, 1], got {_short(expr, 60)}")
    return expr


# --- routing --------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _cross(act: Activation, q1: sp.Expr, q2: sp.Expr, c: sp.Expr, derivative: bool, tolerance: float) -> BivariateExpectation:
    f = act.derivative if derivative else act.expr
    if q1.is_zero or q2.is_zero:
        return _degenerate(f, q1, q2, tolerance)
    for route in (_polynomial, _rectifier, _erf, _gaussian_bump, _gelu):
        found = route(f, q1, q2, c)
        if found is not None:
            value, name = found
            return BivariateExpectation(value if name == _GELU_ROUTE else _tidy(value), name, None)
    return _quadrature(act, f, q1, q2, c, derivative, tolerance)


def _tidy(expr: sp.Expr) -> sp.Expr:
    return sp.factor_terms(sp.expand(expr))


# --- Isserlis -------------------------------------------------------------------------------


def _double_factorial_odd(n: int) -> int:
    """(n - 1)!! for even n >= 0: the n-th moment of a standard Gaussian."""
    return math.prod(range(n - 1, 0, -2)) if n > 0 else 1


def _isserlis(j: int, k: int, q1: sp.Expr, q2: sp.Expr, c: sp.Expr) -> sp.Expr:
    r""":math:`E[u^j v^k]` by Isserlis' theorem: m pairings join a u to a v, the rest pair within."""
    if (j + k) % 2:
        return sp.Integer(0)
    total = sp.Integer(0)
    cross = c * sp.sqrt(q1) * sp.sqrt(q2)
    for m in range(j % 2, min(j, k) + 1, 2):
        ways = math.comb(j, m) * math.comb(k, m) * math.factorial(m)
        ways *= _double_factorial_odd(j - m) * _double_factorial_odd(k - m)
        total += ways * q1 ** sp.Rational(j - m, 2) * q2 ** sp.Rational(k - m, 2) * cross**m
    return total


def _polynomial_coefficients(f: sp.Expr) -> list[sp.Expr] | None:
    if f.has(sp.Piecewise) or not f.is_polynomial(X):
        return None
    poly = sp.Poly(f, X)
    if poly.degree() > 32:
        return None
    return list(reversed(poly.all_coeffs()))  # coefficient of x^j at index j


def _polynomial(f: sp.Expr, q1: sp.Expr, q2: sp.Expr, c: sp.Expr):
    coefficients = _polynomial_coefficients(f)
    if coefficients is None:
        return None
    total = sum(
        (a * b * _isserlis(j, k, q1, q2, c) for j, a in enumerate(coefficients) for k, b in enumerate(coefficients) if a != 0 and b != 0),
        sp.Integer(0),
    )
    return total, "polynomial (Isserlis)"


# --- the rectifier family -------------------------------------------------------------------


def _half_line_moment(m: int) -> sp.Expr:
    r""":math:`E[z^m \Theta(z)] = 2^{m/2}\Gamma((m+1)/2) / (2\sqrt\pi)` for standard normal z."""
    return sp.simplify(2 ** sp.Rational(m, 2) * sp.gamma(sp.Rational(m + 1, 2)) / (2 * sp.sqrt(sp.pi)))


def _polynomial_times_rectifier(j: int, m: int, q1: sp.Expr, q2: sp.Expr, c: sp.Expr) -> sp.Expr:
    r""":math:`E[u^j\, v^m \Theta(v)]` in the rotated frame :math:`u = \sqrt{q_1}(c z_2 + s z_1)`."""
    s = sp.sqrt(1 - c**2)
    total = sp.Integer(0)
    for i in range(0, j + 1, 2):  # i = power of z1 (odd powers vanish)
        total += math.comb(j, i) * s**i * _double_factorial_odd(i) * c ** (j - i) * _half_line_moment(j - i + m)
    return sp.sqrt(q1) ** j * sp.sqrt(q2) ** m * total


def _rectifier_decomposition(f: sp.Expr):
    r"""``(p, alpha, beta)`` with :math:`f = p(x) + \alpha\Theta(x) + \beta\,\mathrm{relu}(x)`, or None."""
    if not f.has(sp.Piecewise, sp.Max, sp.Min, sp.Abs, sp.Heaviside, sp.sign):
        return None
    try:
        parts = rules.pieces(rules.prepare(f))
    except rules.NotInClass:
        return None
    by_side = {}
    for expr, (lo, hi) in parts:
        if (lo, hi) == (0, sp.oo):
            by_side["+"] = expr
        elif (lo, hi) == (-sp.oo, 0):
            by_side["-"] = expr
        else:
            return None
    if set(by_side) != {"+", "-"}:
        return None
    p = _polynomial_coefficients(by_side["-"])
    jump = _polynomial_coefficients(sp.expand(by_side["+"] - by_side["-"]))
    if p is None or jump is None or len(jump) > 2:
        return None
    jump = jump + [sp.Integer(0)] * (2 - len(jump))
    return p, jump[0], jump[1]


def _rectifier(f: sp.Expr, q1: sp.Expr, q2: sp.Expr, c: sp.Expr):
    found = _rectifier_decomposition(f)
    if found is None:
        return None
    p, alpha, beta = found
    theta = sp.acos(c)
    # rectifier parts as (coefficient, degree m): alpha Theta(x) = alpha x^0 Theta, beta relu = beta x^1 Theta
    rect = [(coef, m) for coef, m in ((alpha, 0), (beta, 1)) if coef != 0]
    total = sp.Integer(0)
    for j, a in enumerate(p):
        if a == 0:
            continue
        for k, b in enumerate(p):
            if b != 0:
                total += a * b * _isserlis(j, k, q1, q2, c)
        for coef, m in rect:  # p(u) rect(v) + rect(u) p(v): the second by the u <-> v symmetry
            total += a * coef * (
                _polynomial_times_rectifier(j, m, q1, q2, c) + _polynomial_times_rectifier(j, m, q2, q1, c)
            )
    kernels = {
        (0, 0): (sp.pi - theta) / (2 * sp.pi),
        (1, 1): sp.sqrt(q1) * sp.sqrt(q2) / (2 * sp.pi) * (sp.sqrt(1 - c**2) + (sp.pi - theta) * c),
        (0, 1): sp.sqrt(q2) * (1 + c) / (2 * sp.sqrt(2 * sp.pi)),  # E[Theta(u) relu(v)]
        (1, 0): sp.sqrt(q1) * (1 + c) / (2 * sp.sqrt(2 * sp.pi)),  # E[relu(u) Theta(v)]
    }
    for coef1, m1 in rect:
        for coef2, m2 in rect:
            total += coef1 * coef2 * kernels[(m1, m2)]
    degree = 1 if beta != 0 else 0
    return total, f"arc-cosine kernel (degree {degree})"


# --- erf, its derivative, gelu --------------------------------------------------------------

_A, _B, _K = sp.Wild("A", exclude=[X]), sp.Wild("B", exclude=[X]), sp.Wild("K", exclude=[X])


def _erf(f: sp.Expr, q1: sp.Expr, q2: sp.Expr, c: sp.Expr):
    erfs = f.atoms(sp.erf)
    if len(erfs) != 1:
        return None
    (atom,) = erfs
    slope = sp.expand(atom.args[0] / X)
    if slope.has(X) or slope == 0:
        return None
    a_coef = sp.expand(f).coeff(atom)
    offset = sp.expand(f - a_coef * atom)
    if a_coef.has(X) or offset.has(X):
        return None
    b2 = slope**2
    kernel = 2 / sp.pi * sp.asin(2 * b2 * c * sp.sqrt(q1) * sp.sqrt(q2) / sp.sqrt((1 + 2 * b2 * q1) * (1 + 2 * b2 * q2)))
    return a_coef**2 * kernel + offset**2, "arcsin (erf)"


def _gaussian_bump(f: sp.Expr, q1: sp.Expr, q2: sp.Expr, c: sp.Expr):
    match = f.match(_A * sp.exp(_K * X**2))
    if not match or match[_A] == 0:
        return None
    k = -match[_K]
    if not k.is_positive and not (k.is_extended_real and k.is_nonnegative is not False):
        return None
    determinant = (1 + 2 * k * q1) * (1 + 2 * k * q2) - 4 * k**2 * c**2 * q1 * q2
    return match[_A] ** 2 / sp.sqrt(determinant), "Gaussian integral"


@lru_cache(maxsize=1)
def _gelu_forms() -> tuple[sp.Expr, sp.Expr]:
    gelu = _builtin("gelu")
    return gelu.expr, gelu.derivative


def _gelu(f: sp.Expr, q1: sp.Expr, q2: sp.Expr, c: sp.Expr):
    value, derivative = _gelu_forms()
    if f not in (value, derivative) and sp.expand(f - value) != 0 and sp.expand(f - derivative) != 0:
        return None
    # Tsuchida et al. (2020), arXiv:2002.08517, with Sigma_12 = c sqrt(q1 q2):
    # E[gelu(u) gelu(v)] = S/4 + (S^2 + q1 q2 D^2)/(2 pi P D) + S/(2 pi) arcsin(S/sqrt(P)),
    # P = (1 + q1)(1 + q2), D^2 = P - S^2.
    covariance = sp.Dummy("S", real=True)
    p = (1 + q1) * (1 + q2)
    d2 = p - covariance**2
    kernel = (
        covariance / 4
        + (covariance**2 + q1 * q2 * d2) / (2 * sp.pi * p * sp.sqrt(d2))
        + covariance * sp.asin(covariance / sp.sqrt(p)) / (2 * sp.pi)
    )
    if sp.expand(f - value) != 0:
        # E[gelu'(u) gelu'(v)] = dE[gelu(u) gelu(v)]/dSigma_12 at fixed variances (Price's theorem), simplified
        # (tests re-derive it with sympy.diff; it is also the form of neural-tangents' Gelu dot_sigma)
        kernel = (sp.Rational(1, 4) + sp.asin(covariance / sp.sqrt(p)) / (2 * sp.pi)
                  + covariance / (2 * sp.pi * sp.sqrt(d2)) * (1 + 1 / d2 + (1 - q1 * q2) / p))
    return kernel.subs(covariance, c * sp.sqrt(q1) * sp.sqrt(q2)), _GELU_ROUTE


_GELU_ROUTE = "gelu kernel (Tsuchida et al. 2020)"


# --- degenerate variances -------------------------------------------------------------------


def _degenerate(f: sp.Expr, q1: sp.Expr, q2: sp.Expr, tolerance: float) -> BivariateExpectation:
    at_zero = _at_zero(f)
    other = q2 if q1.is_zero else q1
    one_d = gaussian_expectation(f, other)
    if one_d.exact:
        return BivariateExpectation(_tidy(at_zero * one_d.expr), "degenerate (q = 0)", None)
    number = one_d.evaluate()
    if number.error_estimate > tolerance * max(1.0, abs(number.value)):
        raise DerivationError(
            f"the one-dimensional quadrature reached only {number.error_estimate:.1e}, above the tolerance {tolerance:g}"
        )
    return BivariateExpectation(sp.Float(float(at_zero) * number.value), "quadrature", abs(float(at_zero)) * number.error_estimate)


def _at_zero(f: sp.Expr) -> sp.Expr:
    value = f.subs(X, 0)
    if value.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
        raise DerivationError(f"{_short(f, 60)} is not finite at x = 0, where a zero-variance input sits")
    return value


# --- quadrature -----------------------------------------------------------------------------


def _quadrature(act: Activation, f: sp.Expr, q1: sp.Expr, q2: sp.Expr, c: sp.Expr, derivative: bool, tolerance: float) -> BivariateExpectation:
    given = {"q1": q1, "q2": q2, "c": c}
    symbolic = sorted(name for name, value in given.items() if value.free_symbols)
    if symbolic or not act.is_numeric:
        what = ", ".join(symbolic) if symbolic else f"the parameters of {act}"
        raise VarpropError(
            f"E[{'phi_prime' if derivative else 'phi'}(u) {'phi_prime' if derivative else 'phi'}(v)] for {act} has no closed form "
            f"here and needs numbers for quadrature; {what} {'is' if len(symbolic) == 1 else 'are'} symbolic"
        )
    # E[f(u) f(v)] exists when E[f^2] does under both marginals (Cauchy-Schwarz); refuse it otherwise, since
    # a quadrature on a finite box would return a finite number for a divergent integral
    reason = nonintegrable_reason(sp.expand(f**2))
    if reason is not None:
        raise IntegrabilityError(f"E[f(u) f(v)] for {act} does not exist: E[f^2] diverges ({reason})")
    function = act.numpy_derivative if derivative else act.numpy
    values = {name: float(value) for name, value in given.items()}
    value, estimate = _gauss_legendre(function, values["q1"], values["q2"], min(1.0, max(-1.0, values["c"])), tolerance)
    return BivariateExpectation(sp.Float(value), "quadrature", estimate)


@lru_cache(maxsize=16)
def _panel_rule(panels: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre nodes on [-L, L] times the standard normal density."""
    nodes, weights = np.polynomial.legendre.leggauss(_GAUSS_ORDER)
    edges = np.linspace(-_BOX, _BOX, panels + 1)
    half = np.diff(edges) / 2
    mid = (edges[:-1] + edges[1:]) / 2
    z = (mid[:, None] + half[:, None] * nodes[None, :]).ravel()
    w = (half[:, None] * weights[None, :]).ravel() * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    return z, w


def _rule(function, q1: float, q2: float, c: float, panels: int) -> float:
    z, w = _panel_rule(panels)
    s = math.sqrt(max(0.0, 1.0 - c * c))
    outer = w * function(math.sqrt(q1) * z)  # phi(u) at u = sqrt(q1) z1 (weights of z1 included)
    rows = max(1, _CHUNK // z.size)
    total = 0.0
    for start in range(0, z.size, rows):
        block = slice(start, start + rows)
        v = math.sqrt(q2) * (c * z[block, None] + s * z[None, :])  # v = sqrt(q2)(c z1 + s z2)
        total += float(outer[block] @ (function(v) @ w))
    return total


def _gauss_legendre(function, q1: float, q2: float, c: float, tolerance: float) -> tuple[float, float]:
    with np.errstate(over="ignore", invalid="ignore"):
        previous = _rule(function, q1, q2, c, _FIRST_PANELS)
        panels = _FIRST_PANELS
        while panels < _MAX_PANELS:
            panels *= 2
            value = _rule(function, q1, q2, c, panels)
            if not (math.isfinite(value) and math.isfinite(previous)):
                raise DerivationError(
                    f"the quadrature of E[f(u) f(v)] at q1 = {q1:g}, q2 = {q2:g}, c = {c:g} is not finite"
                )
            # the difference of the last two rules, never below the rounding of the sum
            estimate = max(abs(value - previous), 8 * np.finfo(float).eps * abs(value))
            if estimate <= tolerance * max(1.0, abs(value)):
                return value, estimate
            previous = value
    raise DerivationError(
        f"the quadrature of E[f(u) f(v)] at q1 = {q1:g}, q2 = {q2:g}, c = {c:g} did not reach the tolerance "
        f"{tolerance:g} with {_MAX_PANELS * _GAUSS_ORDER} nodes per axis (last change {estimate:.1e}); "
        "pass a larger tolerance"
    )
