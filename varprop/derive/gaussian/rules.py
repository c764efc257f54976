r"""Exact rules of the Gaussian expectation engine (sympy only, no numerics).

Each rule integrates :math:`g(z)\,\varphi(z; \mu, q)` over the real line in closed form, or raises
:class:`NotInClass` so that the engine falls through to the next route. Sizes are bounded before any
expansion (:func:`term_estimate`), so a large integrand falls through instead of expanding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import sympy as sp

from ...activations import X

#: Expansions estimated to produce more terms than this are not attempted (quadrature instead).
MAX_TERMS = 400
#: Piecewise factors folded together at most; more would multiply the pieces beyond use.
MAX_PIECEWISE = 6


class NotInClass(Exception):
    """The integrand is outside the exact rules' class; fall through to the next route."""


def term_estimate(expr: sp.Expr, cap: int = 10**6) -> int:
    """An upper bound (capped) on the number of terms ``sympy.expand(expr)`` produces."""
    if expr.is_Add:
        return min(cap, sum(term_estimate(a, cap) for a in expr.args))
    if expr.is_Mul:
        total = 1
        for a in expr.args:
            total = min(cap, total * term_estimate(a, cap))
        return total
    if expr.is_Pow and expr.exp.is_Integer and expr.exp > 0:
        t = term_estimate(expr.base, cap)
        if t == 1:
            return 1
        n = int(expr.exp)
        return min(cap, math.comb(n + t - 1, t - 1)) if t < cap else cap
    return 1


def prepare(g: sp.Expr) -> sp.Expr:
    """Rewrite max/min/abs/sign as Piecewise and fold, when the number of pieces stays small."""
    if g.has(sp.Max, sp.Min, sp.Abs, sp.Heaviside, sp.sign):
        g = g.rewrite(sp.Piecewise)
    if g.has(sp.Piecewise):
        atoms = g.atoms(sp.Piecewise)
        if len(atoms) > MAX_PIECEWISE or term_estimate(g) > MAX_TERMS:
            raise NotInClass
        # Folding simplifies the conditions (simplify_logic): seconds for a condition like
        # sigmoid(x) > min(x, 18). Only conditions the truncated rule can use are folded.
        if not all(_is_linear_condition(cond) for p in atoms for _, cond in p.args):
            raise NotInClass
        g = sp.piecewise_fold(g)
    return g


def pieces(g: sp.Expr) -> list[tuple[sp.Expr, tuple[sp.Expr, sp.Expr]]]:
    """Split ``g`` into (expression, interval) pairs covering the real line (up to null sets)."""
    if not isinstance(g, sp.Piecewise):
        if g.has(sp.Piecewise):
            raise NotInClass
        return [(g, (-sp.oo, sp.oo))]
    remaining: sp.Set = sp.S.Reals
    out = []
    for expr, cond in g.args:
        if expr.has(sp.Piecewise):
            raise NotInClass
        if cond is not sp.true and not _is_linear_condition(cond):
            raise NotInClass
        try:
            where = _as_set(cond)
        except Exception:  # noqa: BLE001 - as_set can fail inside sympy/mpmath (e.g. NoConvergence in nroots)
            raise NotInClass from None
        where = sp.Intersection(where, remaining)
        remaining = sp.Complement(remaining, where)
        for interval in _intervals(where):
            out.append((expr, interval))
    if not out:
        raise NotInClass
    return out


def _as_set(cond: sp.Basic) -> sp.Set:
    """The set of real x where ``cond`` holds; relations linear in x directly (sympy's ``as_set``
    takes seconds on nested conditions: it tries periodicity and simplification), others by ``as_set``."""
    if cond is sp.true:
        return sp.S.Reals
    if cond is sp.false:
        return sp.S.EmptySet
    if isinstance(cond, sp.And):
        return sp.Intersection(*(_as_set(a) for a in cond.args))
    if isinstance(cond, sp.Or):
        return sp.Union(*(_as_set(a) for a in cond.args))
    if isinstance(cond, sp.Not):
        return sp.Complement(sp.S.Reals, _as_set(cond.args[0]))
    if isinstance(cond, sp.ITE):  # ITE(a, b, c) = (a and b) or (not a and c)
        a, b, c = (_as_set(arg) for arg in cond.args)
        return sp.Union(sp.Intersection(a, b), sp.Complement(c, a))
    if isinstance(cond, sp.Rel) and cond.has(sp.Piecewise):
        # rel(Piecewise((e1, c1), (e2, True)), r) holds where c1 and rel(e1, r), or not c1 and rel(e2, r)
        inner = next(iter(cond.atoms(sp.Piecewise)))
        parts, earlier = [], sp.S.EmptySet
        for branch, branch_cond in inner.args:
            where = sp.Complement(_as_set(branch_cond), earlier)
            parts.append(sp.Intersection(where, _as_set(cond.xreplace({inner: branch}))))
            earlier = sp.Union(earlier, where)
        return sp.Union(*parts)
    if isinstance(cond, sp.Rel) and cond.rel_op in ("<", "<=", ">", ">="):
        difference = cond.lhs - cond.rhs
        try:
            poly = sp.Poly(difference, X)
        except sp.PolynomialError:
            poly = None
        if poly is not None and poly.degree() == 1:
            a, b = poly.all_coeffs()
            if a.is_positive or a.is_negative:
                root = -b / a
                op = cond.rel_op
                if a.is_negative:
                    op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}[op]
                return {
                    ">": sp.Interval.open(root, sp.oo),
                    ">=": sp.Interval(root, sp.oo),
                    "<": sp.Interval.open(-sp.oo, root),
                    "<=": sp.Interval(-sp.oo, root),
                }[op]
    return cond.as_set()


def _is_linear_condition(cond: sp.Basic) -> bool:
    """Conditions built from relations polynomial of degree at most 2 in x (cheap for ``as_set``).

    A relation may hold a Piecewise (``min(max(x, -1), 1)``) whose branches and conditions are such.
    """
    if isinstance(cond, sp.Rel):
        difference = cond.lhs - cond.rhs
        if X not in difference.free_symbols:
            return True
        for inner in difference.atoms(sp.Piecewise):
            if not all(_is_low_polynomial(b) and _is_linear_condition(c) for b, c in inner.args):
                return False
        if difference.has(sp.Piecewise):
            return True
        return _is_low_polynomial(difference)
    if isinstance(cond, sp.And | sp.Or | sp.Not | sp.ITE):
        return all(_is_linear_condition(a) for a in cond.args)
    return cond in (sp.true, sp.false)


def _is_low_polynomial(expr: sp.Expr) -> bool:
    if X not in expr.free_symbols:
        return True
    if expr.has(sp.Piecewise):
        return all(_is_low_polynomial(b) and _is_linear_condition(c) for p in expr.atoms(sp.Piecewise) for b, c in p.args)
    try:
        return sp.Poly(expr, X).degree() <= 2
    except sp.PolynomialError:
        return False


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
    raise NotInClass


# --- terms c x^k exp(lam x - beta x^2) prod erf(a x) -------------------------------------------


@dataclass(frozen=True)
class Term:
    """coeff * x**k * exp(lam x - beta x**2) * prod(erf(a x) for a in erfs); ``lam`` may be imaginary."""

    coeff: sp.Expr
    k: int
    lam: sp.Expr
    beta: sp.Expr
    erfs: tuple[sp.Expr, ...]


def _is_linear_in_x(arg: sp.Expr) -> bool:
    if X not in arg.free_symbols:
        return False
    try:
        return sp.Poly(arg, X).degree() == 1
    except sp.PolynomialError:
        return False


def to_exponentials(expr: sp.Expr) -> tuple[sp.Expr, bool]:
    r"""Write sin, cos, sinh, cosh of linear arguments as exponentials.

    :math:`\cos u = (e^{iu} + e^{-iu})/2`, :math:`\sin u = (e^{iu} - e^{-iu})/(2i)`, and the same with
    real exponents for sinh and cosh. Returns the rewritten expression and whether an imaginary
    exponent (a trigonometric factor) appeared.
    """
    trig = [a for a in expr.atoms(sp.sin, sp.cos) if _is_linear_in_x(a.args[0])]
    hyperbolic = [a for a in expr.atoms(sp.sinh, sp.cosh) if _is_linear_in_x(a.args[0])]
    if not trig and not hyperbolic:
        return expr, False
    replacements = {a: a.rewrite(sp.exp) for a in trig + hyperbolic}
    return expr.xreplace(replacements), bool(trig)


def terms(expr: sp.Expr) -> list[Term]:
    if term_estimate(expr) > MAX_TERMS:
        raise NotInClass
    expanded = sp.expand(expr, power_base=False, log=False)
    out = []
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
                raise NotInClass
        c0, c1, c2 = _quadratic(exponent)
        coeff *= sp.exp(c0)
        if len(erfs) > 2:
            raise NotInClass
        out.append(Term(coeff, k, c1, -c2, tuple(erfs)))
    return out


def _erf_slope(factor: sp.Expr) -> sp.Expr:
    slope = sp.expand(factor.args[0] / X)
    if X in slope.free_symbols:
        raise NotInClass
    return slope


def _quadratic(exponent: sp.Expr) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    if exponent == 0:
        return sp.Integer(0), sp.Integer(0), sp.Integer(0)
    try:
        poly = sp.Poly(sp.expand(exponent), X)
    except sp.PolynomialError:
        raise NotInClass from None
    if poly.degree() > 2:
        raise NotInClass
    c0, c1, c2 = (poly.coeff_monomial(X**j) for j in range(3))
    return c0, c1, c2


def integrate_piece(expr: sp.Expr, lo: sp.Expr, hi: sp.Expr, variance: sp.Expr, mean: sp.Expr) -> tuple[sp.Expr, str]:
    r""":math:`\int_{lo}^{hi} g(x)\,\varphi(x; \mu, q)\,dx` for ``g`` a sum of :class:`Term`.

    The exponential tilts the Gaussian (complete the square):
    :math:`e^{\lambda x - \beta x^2}\varphi(x; \mu, q) = s\,\varphi(x; \mu', q')` with
    :math:`q' = q/(1 + 2\beta q)`, :math:`\mu' = q'(\mu/q + \lambda)`. An imaginary :math:`\lambda`
    (a sine or cosine) is the characteristic function, :math:`E[e^{i a z}] = e^{i a\mu - a^2 q/2}`,
    on the whole line only.
    """
    total = sp.Integer(0)
    route = "polynomial"
    whole = (lo, hi) == (-sp.oo, sp.oo)
    for term in terms(expr):
        complex_tilt = term.lam.has(sp.I) or term.beta.has(sp.I)
        if complex_tilt and (not whole or term.erfs or term.beta != 0):
            raise NotInClass
        if term.beta.is_negative or (term.beta.is_zero is False and term.beta.is_real is None):
            raise NotInClass  # exp(+c x^2): refused by the integrability check; never integrated here
        denominator = 1 + 2 * term.beta * variance
        tilted_var = variance / denominator
        tilted_mean = tilted_var * (mean / variance + term.lam)
        scale = sp.sqrt(tilted_var / variance) * sp.exp(tilted_mean**2 / (2 * tilted_var) - mean**2 / (2 * variance))
        if term.erfs:
            if not whole or sp.expand(tilted_mean) != 0:
                raise NotInClass
            route = "stein-erf"
            value = stein(term.k, term.erfs, tilted_var)
        else:
            value = polynomial_on_interval(term.k, lo, hi, tilted_mean, tilted_var)
            if complex_tilt:
                route = "trigonometric"
            elif not whole:
                route = "truncated-gaussian" if route in ("polynomial", "tilted-gaussian") else route
            elif route == "polynomial" and (term.beta != 0 or term.lam != 0):
                route = "tilted-gaussian"
        total += term.coeff * scale * value
    return total, route


def polynomial_on_interval(k: int, lo: sp.Expr, hi: sp.Expr, mean: sp.Expr, variance: sp.Expr) -> sp.Expr:
    r""":math:`\int_{lo}^{hi} x^k \varphi(x; \mu, s)\,dx` through the centred truncated moments."""
    a = lo if lo in (-sp.oo, sp.oo) else lo - mean
    b = hi if hi in (-sp.oo, sp.oo) else hi - mean
    moments = truncated_moments(k, a, b, variance)
    return sum(sp.binomial(k, j) * mean ** (k - j) * moments[j] for j in range(k + 1))


def truncated_moments(k: int, a: sp.Expr, b: sp.Expr, s: sp.Expr) -> list[sp.Expr]:
    r"""``T_j`` = :math:`\int_a^b u^j \varphi(u; 0, s)\,du` for j = 0..k.

    :math:`T_0 = \Phi(b/\sqrt s) - \Phi(a/\sqrt s)`, written with ``erfc`` for a half-line
    (:math:`\int_a^\infty \varphi = \tfrac12\operatorname{erfc}(a/\sqrt{2s})`), so that the products
    :math:`e^{c^2}\operatorname{erfc}(c)` the tilt creates stay free of cancellation; then
    :math:`T_j = (j-1)\,s\,T_{j-2} + s\,(a^{j-1}\varphi_s(a) - b^{j-1}\varphi_s(b))`
    (integration by parts; e.g. Johnson, Kotz & Balakrishnan, *Continuous Univariate
    Distributions* 1, sec. 10.1).
    """

    def density(u: sp.Expr) -> sp.Expr:
        return sp.exp(-(u**2) / (2 * s)) / sp.sqrt(2 * sp.pi * s)

    def boundary(u: sp.Expr, power: int) -> sp.Expr:
        # u^power * density(u), which vanishes at +-infinity.
        if u in (sp.oo, -sp.oo):
            return sp.Integer(0)
        return u**power * density(u)

    root = sp.sqrt(2 * s)
    if a == -sp.oo and b == sp.oo:
        mass = sp.Integer(1)
    elif b == sp.oo:
        mass = sp.erfc(a / root) / 2
    elif a == -sp.oo:
        mass = sp.erfc(-b / root) / 2
    else:
        mass = (sp.erf(b / root) - sp.erf(a / root)) / 2
    moments = [mass]
    if k >= 1:
        moments.append(s * (boundary(a, 0) - boundary(b, 0)))
    for j in range(2, k + 1):
        moments.append((j - 1) * s * moments[j - 2] + s * (boundary(a, j - 1) - boundary(b, j - 1)))
    return moments


def stein(k: int, erfs: tuple[sp.Expr, ...], s: sp.Expr) -> sp.Expr:
    r""":math:`E_s[x^k \prod_i \operatorname{erf}(a_i x)]` for :math:`x \sim \mathcal N(0, s)` by Stein's lemma.

    :math:`E[z f(z)] = s\,E[f'(z)]` reduces the power; two erf factors end in Williams (1997), eq. 11:
    :math:`E[\operatorname{erf}(az)\operatorname{erf}(bz)] = \tfrac{2}{\pi}\arcsin\frac{2abs}{\sqrt{(1+2a^2s)(1+2b^2s)}}`.
    """
    if (k + len(erfs)) % 2:
        return sp.Integer(0)
    if not erfs:
        return s ** sp.Rational(k, 2) * sp.factorial2(k - 1)
    if k == 0:  # two erf factors
        a, b = erfs
        return 2 / sp.pi * sp.asin(2 * a * b * s / sp.sqrt((1 + 2 * a**2 * s) * (1 + 2 * b**2 * s)))
    total = (k - 1) * stein(k - 2, erfs, s) if k >= 2 else sp.Integer(0)
    for i, a in enumerate(erfs):
        rest = erfs[:i] + erfs[i + 1 :]
        tilted = s / (1 + 2 * a**2 * s)
        total += 2 * a / sp.sqrt(sp.pi) * sp.sqrt(tilted / s) * stein(k - 1, rest, tilted)
    return s * total


def symmetry_constant(g: sp.Expr) -> sp.Expr | None:
    """c when g(x) + g(-x) = 2c identically, else None (only small expressions are tried)."""
    both = g + g.subs(X, -X)
    if X not in both.free_symbols:
        return both / 2
    if sp.count_ops(both) > 60 or both.has(sp.Piecewise):
        return None
    candidate = sp.cancel(sp.together(both.rewrite(sp.exp)))
    if X not in candidate.free_symbols:
        return candidate / 2
    return None


def real_form(expr: sp.Expr) -> sp.Expr:
    """A trigonometric result written without ``I`` (it is real for real parameters)."""
    if not expr.has(sp.I):
        return expr
    rewritten = sp.expand(sp.expand_complex(expr))
    if rewritten.has(sp.I):
        rewritten = sp.re(rewritten)
    return rewritten
