r"""Does :math:`E[g(z)]`, :math:`z \sim \mathcal N(\mu, q)`, exist? Checked before any route.

The expectation exists for every variance when :math:`\int |g(x)|\, e^{-x^2/(2q)}\,dx < \infty`, which
fails in two ways, both decided here from the expression itself:

* **growth at infinity**: a factor :math:`e^{u(x)}` (or :math:`\cosh u`, :math:`\sinh u`, or
  :math:`b^{u}`) whose exponent grows like :math:`c\,x^2` (c > 0) or faster. A polynomial exponent is
  decided by its degree and leading coefficient; any other exponent by its size at
  :math:`|x| = 40` and :math:`80`: :math:`u(x)/x^2` not decaying (ratio at 80 over 40 at least 0.9)
  and above :math:`10^{-3}` means growth like :math:`e^{c x^2}`. Exponentials inside bounded functions
  (tanh, erf, sin, ...), denominators and logarithms cannot make ``g`` grow and are not inspected.
* **a singularity on the real line**: at each real zero ``c`` of a denominator (a negative power) or
  of a logarithm's argument, the local exponent :math:`p` of :math:`|g(x)| \sim C|x - c|^p` is measured
  on each side from two evaluations at 50 digits (:math:`h = 10^{-10}, 10^{-20}` when the root is
  polished, else :math:`10^{-4}, 10^{-7}`); :math:`p \le -1 + 10^{-3}` is not integrable. Logarithmic
  singularities give :math:`p \to 0` and are integrable. Zeros of polynomial bases are all found
  (``numpy.roots``); zeros of other bases are searched on :math:`[-50, 50]`.

Expressions with symbolic parameters are checked when the parameters get values (the quadrature
route checks its integrand again at evaluation).
"""

from __future__ import annotations

import math
from functools import lru_cache

import mpmath
import numpy as np
import sympy as sp

from ...activations import X

_HUGE = mpmath.mpf(10) ** 600  # |exponent| beyond which exp() is treated as infinite / zero (cost grows with its digits)
_GRID = 50.0
_THRESHOLD = -1.0 + 1e-3


def _short(expr: sp.Expr, width: int = 120) -> str:
    text = str(expr)
    return text if len(text) <= width else text[: width - 20] + " ... " + text[-12:]


@lru_cache(maxsize=1024)
def nonintegrable_reason(g: sp.Expr, var: sp.Symbol = X) -> str | None:
    """Why :math:`E[g]` does not exist under a Gaussian (for every variance), or None."""
    if var not in g.free_symbols or g.free_symbols - {var}:
        return None
    reason = _growth_reason(g, var)
    if reason is None:
        reason = _singularity_reason(g, var)
    return reason


# --- growth at infinity ---------------------------------------------------------------------------


_BOUNDED = (sp.tanh, sp.erf, sp.erfc, sp.atan, sp.sin, sp.cos, sp.asin, sp.acos, sp.sign, sp.Heaviside)


def _exponents(g: sp.Expr, var: sp.Symbol) -> list[tuple[sp.Expr, bool]]:
    """Exponents ``u`` of the factors e^u that can make ``g`` large (``True``: |u| counts, cosh/sinh)."""
    out: list[tuple[sp.Expr, bool]] = []

    def walk(e: sp.Basic) -> None:
        if var not in e.free_symbols or isinstance(e, (*_BOUNDED, sp.log)):
            return
        if isinstance(e, sp.exp):
            out.append((e.args[0], False))
            return
        if isinstance(e, sp.cosh | sp.sinh):
            out.append((e.args[0], True))
            return
        if isinstance(e, sp.Pow):
            if var in e.exp.free_symbols:
                out.append((e.exp * sp.log(e.base), False))
                return
            if e.exp.is_number and e.exp.is_negative:
                return  # a denominator: large values make g small (poles are checked separately)
            walk(e.base)
            return
        if isinstance(e, sp.Piecewise):
            for expr, _ in e.args:
                walk(expr)
            return
        for arg in e.args:
            walk(arg)

    walk(g)
    return out


def _growth_reason(g: sp.Expr, var: sp.Symbol) -> str | None:
    for u, absolute in _exponents(g, var):
        too_fast = _polynomial_too_fast(u, var, absolute)
        if too_fast is None:
            too_fast = _numeric_too_fast(u, var, absolute)
        if too_fast and _confirmed(g, var):
            return (
                f"{_short(g)} grows like exp({_short(u, 60)}), as fast as exp(c x^2) or faster, and is not "
                "integrable under a Gaussian of every variance; accepted: expressions growing more slowly "
                "than exp(c x^2) for every c > 0"
            )
    return None


def _confirmed(g: sp.Expr, var: sp.Symbol) -> bool:
    r"""Whether ``g`` itself is as large as :math:`e^{10^{-5} x^2 + 100}` at :math:`|x| = 10^3` or :math:`10^4`.

    A factor :math:`e^{2x^2}` over :math:`(1 + e^{x^2})^4` is not growth: the denominator wins. When
    ``g`` cannot be evaluated the symbolic finding stands.
    """
    with mpmath.workdps(30):
        for side in (1, -1):
            for x in (10**3, 10**4):
                value = mp_value(g, var, mpmath.mpf(side * x))
                if value is None or mpmath.isnan(value):
                    return True
                size = abs(value)
                if size != 0 and (mpmath.isinf(size) or mpmath.log(size) > 1e-5 * x * x + 100):
                    return True
    return False


def _polynomial_too_fast(u: sp.Expr, var: sp.Symbol, absolute: bool) -> bool | None:
    try:
        poly = sp.Poly(sp.expand(u), var)
    except sp.PolynomialError:
        return None
    if poly.degree() < 2:
        return False
    leading = poly.LC()
    if absolute:
        leading = abs(leading)
    if poly.degree() > 2 and (poly.degree() % 2 == 1 or absolute):
        return True
    return bool(leading.is_positive)


def _numeric_too_fast(u: sp.Expr, var: sp.Symbol, absolute: bool) -> bool:
    with mpmath.workdps(30):
        for side in (1, -1):
            values = []
            for x in (40, 80):
                v = mp_value(u, var, mpmath.mpf(side * x))
                if v is None:
                    return False  # cannot tell; the quadrature's tail check decides
                v = mpmath.re(v)
                values.append(abs(v) if absolute else v)
            near, far = values[0] / 1600, values[1] / 6400
            if mpmath.isinf(far) and far > 0:
                return True
            if far > 1e-3 and far >= 0.9 * near:
                return True
    return False


# --- singularities on the real line ---------------------------------------------------------------


def _singular_bases(g: sp.Expr, var: sp.Symbol) -> list[sp.Expr]:
    bases = []
    for e in sp.preorder_traversal(g):
        if isinstance(e, sp.Pow) and var in e.base.free_symbols and e.exp.is_number and e.exp.is_negative:
            bases.append(e.base)
        elif isinstance(e, sp.log) and var in e.args[0].free_symbols:
            bases.append(e.args[0])
    return list(dict.fromkeys(bases))


def singular_points(g: sp.Expr, var: sp.Symbol = X, numbers: dict | None = None) -> list[float]:
    """Real points where a denominator or a logarithm's argument of ``g`` vanishes (sorted, at most 32).

    ``numbers`` gives values to the other symbols (substituted into each base only).
    """
    points: set[float] = set()
    for base in _singular_bases(g, var):
        if numbers:
            base = base.xreplace(numbers)
        if base.free_symbols - {var}:
            continue
        points.update(_real_zeros(base, var))
    return sorted(points, key=abs)[:32]


def _real_zeros(base: sp.Expr, var: sp.Symbol) -> list[float]:
    parts = [expr for expr, _ in base.args] if isinstance(base, sp.Piecewise) else [base]
    zeros: list[float] = []
    for part in parts:
        if var not in part.free_symbols:
            if part.is_zero:
                return [0.0]
            continue
        try:
            poly = sp.Poly(part, var)
            coefficients = [complex(c) for c in poly.all_coeffs()]
        except (sp.PolynomialError, TypeError):
            zeros.extend(_grid_zeros(part, var))
            continue
        if len(coefficients) <= 1:
            continue
        for root in np.roots(coefficients):
            if abs(root.imag) <= 1e-6 * (1 + abs(root.real)):
                zeros.append(float(root.real))
    return zeros


def _grid_zeros(part: sp.Expr, var: sp.Symbol) -> list[float]:
    from scipy import optimize, special

    try:
        function = sp.lambdify(var, part, modules=[{"erf": special.erf, "erfc": special.erfc}, "numpy"])
        grid = np.linspace(-_GRID, _GRID, 20001)
        with np.errstate(all="ignore"):
            values = np.real(np.broadcast_to(np.asarray(function(grid), dtype=complex), grid.shape))
    except Exception:  # noqa: BLE001 - sympy's printers raise their own types for what they cannot translate
        return []
    zeros = list(grid[values == 0])
    finite = np.isfinite(values)
    change = np.nonzero(finite[:-1] & finite[1:] & (np.sign(values[:-1]) * np.sign(values[1:]) < 0))[0]
    for i in change[:64]:
        try:
            zeros.append(optimize.brentq(lambda t: float(np.real(function(t))), grid[i], grid[i + 1]))
        except (ValueError, RuntimeError, TypeError):
            zeros.append(float(grid[i]))
    magnitude = np.abs(values)
    minima = np.nonzero(finite[1:-1] & (magnitude[1:-1] < 1e-6) & (magnitude[1:-1] <= magnitude[:-2])
                        & (magnitude[1:-1] <= magnitude[2:]))[0]
    zeros.extend(float(grid[i + 1]) for i in minima[:64])
    return zeros


def _singularity_reason(g: sp.Expr, var: sp.Symbol) -> str | None:
    bases = _singular_bases(g, var)
    if not bases:
        return None
    for c in singular_points(g, var):
        p = local_exponent(g, var, c, bases)
        if p is not None and p <= _THRESHOLD:
            shown = "-infinity" if p == -math.inf else f"{p:.3g}"
            return (
                f"{_short(g)} behaves like |x - c|^p with p = {shown} near the singular point c = {c:.6g}, "
                "which is not integrable (integrable singularities have p > -1)"
            )
    return None


def local_exponent(g: sp.Expr, var: sp.Symbol, c: float, bases: list[sp.Expr] | None = None) -> float | None:
    """The smallest one-sided exponent p of :math:`|g(x)| \\sim C|x - c|^p` at c (None: cannot tell)."""
    with mpmath.workdps(50):
        centre, polished = mpmath.mpf(c), False
        for base in bases or _singular_bases(g, var):
            try:
                value = mp_value(base, var, centre)
                if value is not None and abs(value) < 1e-3:
                    root = mpmath.findroot(lambda t: mp_value(base, var, t), centre, tol=mpmath.mpf(10) ** -45)
                    if abs(root - centre) < 1e-5 and mpmath.im(root) == 0:
                        centre, polished = mpmath.re(root), True
                        break
            except (ValueError, ZeroDivisionError, TypeError, OverflowError):
                continue
        steps = (mpmath.mpf(10) ** -10, mpmath.mpf(10) ** -20) if polished else (mpmath.mpf(10) ** -4, mpmath.mpf(10) ** -7)
        worst: float | None = None
        for side in (1, -1):
            near, nearer = (mp_value(g, var, centre + side * h) for h in steps)
            if near is None or nearer is None:
                continue
            a, b = abs(near), abs(nearer)
            if mpmath.isnan(a) or mpmath.isnan(b):
                continue
            if mpmath.isinf(b):
                return -math.inf
            if a == 0 or b == 0:
                continue
            p = float(mpmath.log(b / a) / mpmath.log(steps[1] / steps[0]))
            worst = p if worst is None else min(worst, p)
        return worst


# --- a guarded evaluator -------------------------------------------------------------------------

_UNARY = {
    sp.sin: mpmath.sin,
    sp.cos: mpmath.cos,
    sp.tanh: mpmath.tanh,
    sp.atan: mpmath.atan,
    sp.asin: mpmath.asin,
    sp.acos: mpmath.acos,
    sp.erf: mpmath.erf,
    sp.erfc: mpmath.erfc,
}


def mp_value(expr: sp.Expr, var: sp.Symbol, point: mpmath.mpf, env: dict | None = None) -> mpmath.mpf | mpmath.mpc | None:
    """``expr`` at ``var = point`` in mpmath at the working precision, with exponentials guarded.

    An exponent beyond ``1e600`` in size gives ``inf`` (or 0) instead of a number with a billion-bit
    exponent, so no input makes this hang (the cost of exp(u) grows with the digits of u). None when the expression holds something it cannot
    evaluate.
    """
    try:
        return _mp(expr, var, point, env or {})
    except (ValueError, ZeroDivisionError, TypeError, OverflowError, ArithmeticError, RecursionError, _Unknown):
        return None


class _Unknown(Exception):
    pass


def _mp(e: sp.Basic, var: sp.Symbol, x: mpmath.mpf, env: dict):
    if e == var:
        return x
    if e in env:
        return env[e]
    if e.is_Number or e.is_NumberSymbol:
        return _constant(e, mpmath.mp.dps)
    if e is sp.I:
        return mpmath.mpc(0, 1)
    if e.is_Add:
        return mpmath.fsum(_mp(a, var, x, env) for a in e.args)
    if e.is_Mul:
        return mpmath.fprod(_mp(a, var, x, env) for a in e.args)
    if isinstance(e, sp.exp):
        return _exp(_mp(e.args[0], var, x, env))
    if e.is_Pow:
        base, exponent = _mp(e.base, var, x, env), _mp(e.exp, var, x, env)
        if exponent == int(mpmath.re(exponent)) and mpmath.im(exponent) == 0 and abs(exponent) <= 64:
            if base == 0 and exponent < 0:
                return mpmath.inf
            return base ** int(exponent)
        if base == 0:
            return mpmath.inf if mpmath.re(exponent) < 0 else mpmath.mpf(0)
        return _exp(exponent * mpmath.log(base))
    if isinstance(e, sp.log):
        value = _mp(e.args[0], var, x, env)
        return -mpmath.inf if value == 0 else mpmath.log(value)
    if isinstance(e, sp.sinh | sp.cosh):
        u = _mp(e.args[0], var, x, env)
        sign = -1 if isinstance(e, sp.sinh) else 1
        return (_exp(u) + sign * _exp(-u)) / 2
    if isinstance(e, sp.Abs):
        return abs(_mp(e.args[0], var, x, env))
    if isinstance(e, sp.Piecewise):
        for expr, cond in e.args:
            if _truth(cond, var, x, env):
                return _mp(expr, var, x, env)
        return mpmath.nan
    function = _UNARY.get(type(e))
    if function is not None:
        argument = _mp(e.args[0], var, x, env)
        if isinstance(e, sp.sin | sp.cos) and abs(argument) > mpmath.mpf(10) ** mpmath.mp.dps:
            raise _Unknown  # the phase is lost at this precision (and reducing it is slow)
        return function(argument)
    raise _Unknown


@lru_cache(maxsize=4096)
def _constant(e: sp.Expr, dps: int):
    return mpmath.mpf(int(e)) if e.is_Integer else mpmath.mpf(e.evalf(dps + 5))


def _exp(u):
    real = mpmath.re(u)
    if real > _HUGE:
        return mpmath.inf
    if real < -_HUGE:
        return mpmath.mpf(0)
    return mpmath.exp(u)


def _truth(cond: sp.Basic, var: sp.Symbol, x, env: dict) -> bool:
    if cond is sp.true:
        return True
    if cond is sp.false:
        return False
    if isinstance(cond, sp.And):
        return all(_truth(a, var, x, env) for a in cond.args)
    if isinstance(cond, sp.Or):
        return any(_truth(a, var, x, env) for a in cond.args)
    if isinstance(cond, sp.Not):
        return not _truth(cond.args[0], var, x, env)
    if isinstance(cond, sp.Rel):
        left, right = mpmath.re(_mp(cond.lhs, var, x, env)), mpmath.re(_mp(cond.rhs, var, x, env))
        return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right,
                "==": left == right, "!=": left != right}[cond.rel_op]
    raise _Unknown
