r"""The Gaussian expectation engine: :math:`E[g(z)]` for :math:`z \sim \mathcal N(\mu, q)`.

Exact rules are tried first, and the result says which route produced it:

``polynomial``
    :math:`E[z^k]` from the Gaussian moments :math:`q^{k/2}(k-1)!!` (after centring).
``tilted-gaussian``
    Terms :math:`c\,z^k e^{\lambda z - \beta z^2}` on the whole line: the exponential tilts the Gaussian
    (complete the square) and the polynomial is integrated by its moments.
``truncated-gaussian``
    Piecewise integrands (the rectifier family, elu, selu, user ``max``/``abs``) integrated piece by
    piece: each piece is a sum of terms :math:`c\,z^k e^{\lambda z - \beta z^2}`; the exponential tilts the
    Gaussian (complete the square), and the polynomial is integrated over the interval with the
    truncated-moment recursion
    :math:`T_j = (j-1)\,q\,T_{j-2} + q\,(a^{j-1}\varphi_q(a) - b^{j-1}\varphi_q(b))`.
``stein-erf``
    Terms :math:`z^k e^{-\beta z^2} \prod_i \operatorname{erf}(a_i z)` with at most two erf factors
    (erf, the exact gelu and its derivative), reduced by Stein's lemma
    :math:`E[z f(z)] = q\,E[f'(z)]` down to :math:`E[1] = 1`, odd terms vanishing, and
    :math:`E[\operatorname{erf}(az)\operatorname{erf}(bz)] =
    \tfrac{2}{\pi}\arcsin\frac{2abq}{\sqrt{(1+2a^2q)(1+2b^2q)}}` (Williams 1997, eq. 11).
``symmetry``
    :math:`g(z) + g(-z) = 2c` for a constant c and a centred Gaussian gives :math:`E[g] = c`
    (tanh and sigmoid means).
``quadrature``
    No closed form is known: the result is an unevaluated ``sympy.Integral`` in the standardised
    variable, evaluated numerically by :func:`evaluate` with scipy's QUADPACK and its error estimate.

sympy's generic ``integrate`` and ``sympy.stats`` are never called: they take most of a second for
the rectifier family and do not return for :math:`\operatorname{erf}^2`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.special
import sympy as sp

from ..activations import X, Activation
from .._validate import as_sympy_number
from ..errors import DerivationError, IntegrabilityError

__all__ = [
    "Q",
    "Expectation",
    "NumericValue",
    "Moments",
    "gaussian_expectation",
    "moments",
    "evaluate",
]

#: The variance of the Gaussian argument, :math:`z \sim \mathcal N(0, q)`.
Q = sp.Symbol("q", positive=True)

_T = sp.Symbol("t", real=True)  # standardised integration variable of the quadrature route


@dataclass(frozen=True)
class Expectation:
    r"""The result of one Gaussian expectation.

    Attributes
    ----------
    expr
        A closed form (``exact``), or an expression holding unevaluated ``Integral`` objects.
    route
        One of ``polynomial``, ``truncated-gaussian``, ``stein-erf``, ``symmetry``, ``quadrature``.
    """

    expr: sp.Expr
    route: str

    @property
    def exact(self) -> bool:
        """True when :attr:`expr` is a closed form (no unevaluated integral)."""
        return not self.expr.has(sp.Integral)

    def evaluate(self, values: Mapping[sp.Symbol, object] | None = None) -> NumericValue:
        """The number at ``values`` (e.g. ``{Q: 2}``), with its error bound (0 when exact)."""
        return evaluate(self.expr, values)


@dataclass(frozen=True)
class NumericValue:
    """A number and the bound on its numerical error (0 for a closed form)."""

    value: float
    error_bound: float


class _NotInClass(Exception):
    """The integrand is outside the exact rules' class; fall through to the next route."""


# --- public entry points -------------------------------------------------------------------


def gaussian_expectation(g: sp.Expr, variance: sp.Expr = Q, mean: sp.Expr = sp.Integer(0)) -> Expectation:
    r""":math:`E[g(z)]` for :math:`z \sim \mathcal N(\mu, q)`, with ``g`` a sympy expression in :data:`~varprop.activations.X`.

    Raises
    ------
    IntegrabilityError
        When ``g`` grows like :math:`e^{c z^2}` (c > 0) or faster, so the expectation does not exist
        for every variance.
    """
    return _expectation(_as_expr(g, "integrand"), _as_expr(variance, "variance"), _as_expr(mean, "mean"))


def _as_expr(value: object, what: str) -> sp.Expr:
    """A sympy expression or a Python number; text is refused (it would go through sympify)."""
    if isinstance(value, sp.Basic):
        return value
    if isinstance(value, str):
        raise DerivationError(
            f"the {what} must be a sympy expression or a number, got the text {value!r}; "
            "parse text with varprop.activations.parse_expression"
        )
    return as_sympy_number(value, f"the {what}", error=DerivationError)


@dataclass(frozen=True)
class Moments:
    r"""Gaussian moments of an activation :math:`\phi` at :math:`z \sim \mathcal N(0, q)`.

    ``mean`` is :math:`E[\phi(z)]`, ``second_moment`` :math:`E[\phi(z)^2]`, ``variance``
    :math:`E[\phi^2] - E[\phi]^2` and ``derivative_second_moment`` :math:`E[\phi'(z)^2]`.
    """

    activation: Activation
    variance_symbol: sp.Symbol
    mean: Expectation
    second_moment: Expectation
    derivative_second_moment: Expectation

    @property
    def variance(self) -> Expectation:
        expr = _tidy(self.second_moment.expr - self.mean.expr**2)
        routes = {self.second_moment.route, self.mean.route}
        route = "quadrature" if "quadrature" in routes else self.second_moment.route
        return Expectation(expr, route)

    @property
    def exact(self) -> bool:
        return all(e.exact for e in (self.mean, self.second_moment, self.derivative_second_moment))

    def as_dict(self) -> dict[str, Expectation]:
        """The four moments by name."""
        return {
            "mean": self.mean,
            "second_moment": self.second_moment,
            "variance": self.variance,
            "derivative_second_moment": self.derivative_second_moment,
        }


def moments(act: Activation, variance: sp.Expr = Q) -> Moments:
    r"""Mean, second moment, variance and derivative second moment of ``act`` under :math:`\mathcal N(0, q)`."""
    return _moments(act, variance)


@lru_cache(maxsize=512)
def _moments(act: Activation, variance: sp.Expr) -> Moments:
    _check_square_integrable(act.expr)
    return Moments(
        act,
        variance,
        _expectation(act.expr, variance, sp.Integer(0)),
        _expectation(act.expr**2, variance, sp.Integer(0)),
        _expectation(act.derivative**2, variance, sp.Integer(0)),
    )


# --- routing --------------------------------------------------------------------------------


@lru_cache(maxsize=2048)
def _expectation(g: sp.Expr, variance: sp.Expr, mean: sp.Expr) -> Expectation:
    if variance.is_negative:
        raise DerivationError(f"a Gaussian variance must be non-negative, got {variance}")
    _check_square_integrable(g)
    if X not in g.free_symbols:
        return Expectation(g, "polynomial")
    if variance == 0:
        return Expectation(_tidy(g.subs(X, mean)), "polynomial")
    prepared = _prepare(g)
    try:
        pieces = _pieces(prepared)
        route = "truncated-gaussian" if len(pieces) > 1 or pieces[0][1] != (-sp.oo, sp.oo) else None
        total = sp.Integer(0)
        for expr, (lo, hi) in pieces:
            value, piece_route = _integrate_piece(expr, lo, hi, variance, mean)
            total += value
            route = route or piece_route
        return Expectation(_tidy(total), route or "polynomial")
    except _NotInClass:
        pass
    symmetric = _symmetry_constant(prepared) if mean == 0 else None
    if symmetric is not None:
        return Expectation(symmetric, "symmetry")
    return Expectation(_quadrature_integral(g, variance, mean), "quadrature")


def _prepare(g: sp.Expr) -> sp.Expr:
    if g.has(sp.Max, sp.Min, sp.Abs, sp.Heaviside, sp.sign):
        g = g.rewrite(sp.Piecewise)
    if g.has(sp.Piecewise):
        g = sp.piecewise_fold(g)
    return g


def _pieces(g: sp.Expr) -> list[tuple[sp.Expr, tuple[sp.Expr, sp.Expr]]]:
    """Split ``g`` into (expression, interval) pairs covering the real line (up to null sets)."""
    if not isinstance(g, sp.Piecewise):
        if g.has(sp.Piecewise):
            raise _NotInClass
        return [(g, (-sp.oo, sp.oo))]
    remaining: sp.Set = sp.S.Reals
    out = []
    for expr, cond in g.args:
        if expr.has(sp.Piecewise):
            raise _NotInClass
        try:
            where = sp.S.Reals if cond is sp.true else cond.as_set()
        except (NotImplementedError, TypeError, ValueError):
            raise _NotInClass from None
        where = sp.Intersection(where, remaining)
        remaining = sp.Complement(remaining, where)
        for interval in _intervals(where):
            out.append((expr, interval))
    if not out:
        raise _NotInClass
    return out


def _intervals(where: sp.Set) -> list[tuple[sp.Expr, sp.Expr]]:
    if where is sp.S.EmptySet or isinstance(where, sp.FiniteSet):
        return []
    if isinstance(where, sp.Interval):
        if (where.end - where.start).is_zero:
            return []
        return [(where.start, where.end)]
    if where is sp.S.Reals:
        return [(-sp.oo, sp.oo)]
    if isinstance(where, sp.Union):
        return [iv for part in where.args for iv in _intervals(part)]
    if isinstance(where, sp.Complement) and isinstance(where.args[1], sp.FiniteSet):
        return _intervals(where.args[0])
    raise _NotInClass


# --- exact rules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Term:
    """coeff * x**k * exp(lam x - beta x**2) * prod(erf(a x) for a in erfs)."""

    coeff: sp.Expr
    k: int
    lam: sp.Expr
    beta: sp.Expr
    erfs: tuple[sp.Expr, ...]


def _terms(expr: sp.Expr) -> list[_Term]:
    expanded = sp.expand(expr, power_base=False, log=False)
    terms = []
    for term in sp.Add.make_args(expanded):
        coeff, k, exponent, erfs = sp.Integer(1), 0, sp.Integer(0), []
        for factor in sp.Mul.make_args(term):
            base, power = factor.as_base_exp()
            if X not in factor.free_symbols:
                coeff *= factor
            elif base == X and power.is_Integer and power >= 0:
                k += int(power)
            elif isinstance(factor, sp.exp):
                exponent += factor.args[0]
            elif isinstance(base, sp.erf) and power.is_Integer and power > 0:
                erfs.extend([_erf_slope(base)] * int(power))
            else:
                raise _NotInClass
        poly = _quadratic(exponent)
        coeff *= sp.exp(poly[0])
        if len(erfs) > 2:
            raise _NotInClass
        terms.append(_Term(coeff, k, poly[1], -poly[2], tuple(erfs)))
    return terms


def _erf_slope(factor: sp.Expr) -> sp.Expr:
    slope = sp.simplify(factor.args[0] / X)
    if X in slope.free_symbols:
        raise _NotInClass
    return slope


def _quadratic(exponent: sp.Expr) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    if exponent == 0:
        return sp.Integer(0), sp.Integer(0), sp.Integer(0)
    try:
        poly = sp.Poly(sp.expand(exponent), X)
    except sp.PolynomialError:
        raise _NotInClass from None
    if poly.degree() > 2:
        raise _NotInClass
    c0, c1, c2 = (poly.coeff_monomial(X**j) for j in range(3))
    return c0, c1, c2


def _integrate_piece(
    expr: sp.Expr, lo: sp.Expr, hi: sp.Expr, variance: sp.Expr, mean: sp.Expr
) -> tuple[sp.Expr, str]:
    total = sp.Integer(0)
    route = "polynomial"
    for term in _terms(expr):
        # Tilt: exp(lam x - beta x^2) N(x; mean, q) = scale * N(x; mean', q').
        denominator = 1 + 2 * term.beta * variance
        tilted_var = variance / denominator
        tilted_mean = tilted_var * (mean / variance + term.lam)
        scale = sp.sqrt(tilted_var / variance) * sp.exp(tilted_mean**2 / (2 * tilted_var) - mean**2 / (2 * variance))
        if term.erfs:
            if (lo, hi) != (-sp.oo, sp.oo) or sp.simplify(tilted_mean) != 0:
                raise _NotInClass
            route = "stein-erf"
            value = _stein(term.k, term.erfs, tilted_var)
        else:
            value = _polynomial_on_interval(term.k, lo, hi, tilted_mean, tilted_var)
            if (lo, hi) != (-sp.oo, sp.oo):
                route = "truncated-gaussian"
            elif route == "polynomial" and (term.beta != 0 or term.lam != 0):
                route = "tilted-gaussian"
        total += term.coeff * scale * value
    return total, route


def _polynomial_on_interval(k: int, lo: sp.Expr, hi: sp.Expr, mean: sp.Expr, variance: sp.Expr) -> sp.Expr:
    r""":math:`\int_{lo}^{hi} x^k \varphi(x; \mu, s)\,dx` through the centred truncated moments."""
    a, b = lo - mean, hi - mean
    moments = _truncated_moments(k, a, b, variance)
    return sum(sp.binomial(k, j) * mean ** (k - j) * moments[j] for j in range(k + 1))


def _truncated_moments(k: int, a: sp.Expr, b: sp.Expr, s: sp.Expr) -> list[sp.Expr]:
    r"""``T_j`` = :math:`\int_a^b u^j \varphi(u; 0, s)\,du` for j = 0..k."""

    def density(u: sp.Expr) -> sp.Expr:
        return sp.exp(-(u**2) / (2 * s)) / sp.sqrt(2 * sp.pi * s)

    def cdf(u: sp.Expr) -> sp.Expr:
        if u == sp.oo:
            return sp.Integer(1)
        if u == -sp.oo:
            return sp.Integer(0)
        return (1 + sp.erf(u / sp.sqrt(2 * s))) / 2

    def boundary(u: sp.Expr, power: int) -> sp.Expr:
        # u^power * density(u), which vanishes at +-infinity.
        if u in (sp.oo, -sp.oo):
            return sp.Integer(0)
        return u**power * density(u)

    moments = [cdf(b) - cdf(a)]
    if k >= 1:
        moments.append(s * (boundary(a, 0) - boundary(b, 0)))
    for j in range(2, k + 1):
        moments.append((j - 1) * s * moments[j - 2] + s * (boundary(a, j - 1) - boundary(b, j - 1)))
    return moments


def _stein(k: int, erfs: tuple[sp.Expr, ...], s: sp.Expr) -> sp.Expr:
    r""":math:`E_s[x^k \prod_i \operatorname{erf}(a_i x)]` for :math:`x \sim \mathcal N(0, s)` by Stein's lemma."""
    if (k + len(erfs)) % 2:
        return sp.Integer(0)
    if not erfs:
        return s ** sp.Rational(k, 2) * sp.factorial2(k - 1)
    if k == 0:  # two erf factors
        a, b = erfs
        return 2 / sp.pi * sp.asin(2 * a * b * s / sp.sqrt((1 + 2 * a**2 * s) * (1 + 2 * b**2 * s)))
    # E[x * x^(k-1) F] = s E[(k-1) x^(k-2) F + x^(k-1) F'],  F' = sum_i (2 a_i/sqrt(pi)) e^{-a_i^2 x^2} prod_{j!=i}
    total = (k - 1) * _stein(k - 2, erfs, s) if k >= 2 else sp.Integer(0)
    for i, a in enumerate(erfs):
        rest = erfs[:i] + erfs[i + 1 :]
        tilted = s / (1 + 2 * a**2 * s)
        total += 2 * a / sp.sqrt(sp.pi) * sp.sqrt(tilted / s) * _stein(k - 1, rest, tilted)
    return s * total


def _symmetry_constant(g: sp.Expr) -> sp.Expr | None:
    """c when g(x) + g(-x) = 2c identically, else None."""
    both = g + g.subs(X, -X)
    for candidate in (both, sp.cancel(sp.together(both.rewrite(sp.exp)))):
        if X not in candidate.free_symbols:
            return candidate / 2
    return None


def _quadrature_integral(g: sp.Expr, variance: sp.Expr, mean: sp.Expr) -> sp.Expr:
    r""":math:`\int g(\mu + \sqrt q\, t)\, e^{-t^2/2}/\sqrt{2\pi}\, dt`, left unevaluated."""
    integrand = g.subs(X, mean + sp.sqrt(variance) * _T) * sp.exp(-(_T**2) / 2) / sp.sqrt(2 * sp.pi)
    return sp.Integral(integrand, (_T, -sp.oo, sp.oo))


def _tidy(expr: sp.Expr) -> sp.Expr:
    """Light simplification that keeps the closed forms readable without paying for ``simplify``."""
    if expr.has(sp.Integral):
        return expr
    return sp.powsimp(sp.factor_terms(sp.expand(expr, log=False)))


# --- integrability ----------------------------------------------------------------------------


def _check_square_integrable(g: sp.Expr) -> None:
    """Refuse integrands growing like exp(c x^2), c > 0, or faster: no Gaussian moment exists."""
    growth = g.atoms(sp.exp, sp.cosh, sp.sinh)  # cosh(u), sinh(u) grow like exp(|u|)
    for atom in growth:
        argument = atom.args[0]
        if X not in argument.free_symbols:
            continue
        try:
            poly = sp.Poly(sp.expand(argument), X)
        except sp.PolynomialError:
            continue  # e.g. exp(exp(x)): caught when the quadrature evaluates
        degree, leading = poly.degree(), poly.LC()
        if not isinstance(atom, sp.exp):
            leading = abs(leading)
        if degree > 2 and (degree % 2 == 1 or leading.is_positive) or degree == 2 and leading.is_positive:
            raise IntegrabilityError(
                f"{g} grows like exp({argument}) and is not square-integrable under a Gaussian; "
                "accepted: expressions growing more slowly than exp(c x^2) for every c > 0"
            )


# --- numeric evaluation -----------------------------------------------------------------------


def evaluate(expr: sp.Expr, values: Mapping[sp.Symbol, object] | None = None) -> NumericValue:
    """Evaluate ``expr`` at ``values``; each unevaluated integral is computed by quadrature.

    The error bound adds, for each integral, the QUADPACK error estimate times the sensitivity
    :math:`|\\partial expr / \\partial I|` of the whole expression to that integral.
    """
    subs = {sym: _as_expr(val, f"value of {sym}") for sym, val in (values or {}).items()}
    expr = _as_expr(expr, "expression").subs(subs)
    integrals = sorted(expr.atoms(sp.Integral), key=sp.default_sort_key)
    stand_ins = sp.symbols(f"_I0:{len(integrals)}")
    numbers, errors = {}, []
    for integral, stand_in in zip(integrals, stand_ins):
        value, error = _quad(integral)
        numbers[stand_in] = value
        errors.append((stand_in, error))
    reduced = expr.xreplace(dict(zip(integrals, stand_ins)))
    free = reduced.free_symbols - set(stand_ins)
    if free:
        names = ", ".join(sorted(str(s) for s in free))
        raise DerivationError(f"cannot evaluate {expr} numerically: give values for {names}")
    value = _to_float(reduced.subs(numbers), expr)
    bound = 0.0
    for stand_in, error in errors:
        sensitivity = abs(_to_float(sp.diff(reduced, stand_in).subs(numbers), expr))
        bound += sensitivity * error
    return NumericValue(value, bound)


def _to_float(number: sp.Expr, context: sp.Expr) -> float:
    try:
        value = complex(sp.N(number, 17))
    except (TypeError, ValueError):
        raise DerivationError(f"{context} does not evaluate to a number") from None
    if abs(value.imag) > 1e-12 * max(1.0, abs(value.real)) or not math.isfinite(value.real):
        raise IntegrabilityError(f"{context} does not evaluate to a finite real number (got {value})")
    return value.real


def _quad(integral: sp.Integral) -> tuple[float, float]:
    r"""QUADPACK on ``[-T, T]`` in the standardised variable, with T grown until the tails vanish.

    Beyond :math:`|t| = 40` the Gaussian weight is below :math:`10^{-347}` and underflows, so the
    truncation only matters for integrands that grow faster than it decays; T doubles until the
    integrand at :math:`\pm T` is below :math:`10^{-250}`.
    """
    (variable, _, _), = integral.limits
    try:
        function = sp.lambdify(variable, integral.function, modules=[{"erf": scipy.special.erf}, "numpy"])
    except Exception as exc:  # sympy's printers raise their own types for what they cannot translate
        raise DerivationError(f"cannot evaluate the integral of {integral.function} numerically: {exc}") from None

    def integrand(t: float) -> float:
        with np.errstate(all="ignore"):
            return float(np.real(function(t)))

    def fail(reason: str) -> IntegrabilityError:
        return IntegrabilityError(
            f"the Gaussian integral of {integral.function} {reason}; "
            "the expression may not be square-integrable under a Gaussian"
        )

    from scipy import integrate  # imported here: only the quadrature route needs it

    limit = 40.0
    while True:
        edges = (integrand(-limit), integrand(limit))
        if not all(math.isfinite(e) for e in edges):
            raise fail(f"is not finite at t = +-{limit:g}")
        if max(abs(e) for e in edges) <= 1e-250:
            break
        if limit >= 2560.0:
            raise fail("does not decay in the tails")
        limit *= 2.0
    value, error = 0.0, 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", integrate.IntegrationWarning)
        for a, b in ((-limit, 0.0), (0.0, limit)):
            try:
                part, part_error = integrate.quad(integrand, a, b, epsabs=1e-13, epsrel=1e-12, limit=400)
            except (integrate.IntegrationWarning, OverflowError, ZeroDivisionError):
                raise fail("does not converge numerically") from None
            value += part
            error += part_error
    if not (math.isfinite(value) and math.isfinite(error)):
        raise fail("is not finite")
    return value, error
