r"""Numbers from the engine's expressions: closed forms at raised precision, integrals by quadrature.

Closed forms are evaluated in mpmath at 30, 60, 120, ... 960 significant digits until two successive
precisions agree to float64 accuracy (:math:`2^{-55}` relative), so a cancelling closed form (elu's
:math:`e^{2q}\operatorname{erfc}\sqrt{2q}` at large q, a variance :math:`E[\phi^2] - E[\phi]^2`)
is either correct to the last bit or refused with a :class:`~varprop.errors.DerivationError`; its
``error_estimate`` is 0. ``erfc`` at arguments beyond :math:`10^6` uses the asymptotic series
(Abramowitz & Stegun 7.1.23), so :math:`e^{c^2}\operatorname{erfc}(c)` stays finite at any c.

Unevaluated integrals (the quadrature route) are computed by QUADPACK in the standardised variable,
split at 0, at the kinks of Piecewise integrands and at integrable singularities. Its
``error_estimate`` is QUADPACK's estimate times the sensitivity of the expression to the integral. It
is an **estimate**, not a bound: QUADPACK's error is heuristic, and the tails beyond the cut-off
(where the integrand is below :math:`10^{-250}`) are dropped, not bounded.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import mpmath
import numpy as np
import sympy as sp

from ..._validate import as_sympy_number
from ...errors import DerivationError, IntegrabilityError
from .integrability import _short, mp_value, nonintegrable_reason, singular_points

_PRECISIONS = (30, 60, 120, 240, 480, 960)
_AGREE = 2.0**-55
_ASYMPTOTIC = 10**6
_MAX_CALLS = 30_000
_MAX_CUTS = 12
_MAX_SLOW_CALLS = 300  # mpmath evaluations (overflowing points) per integral
_Q = sp.Symbol("q", positive=True)  # the engine's variance symbol (engine.Q)


class _Budget(Exception):
    """The quadrature spent its evaluation budget."""


@dataclass(frozen=True)
class NumericValue:
    """A number and an estimate of its numerical error.

    Attributes
    ----------
    value
        The float64 value.
    error_estimate
        0 for a closed form (evaluated until correct to float64 accuracy); for an expression with
        integrals, QUADPACK's error estimate times the expression's sensitivity to each integral. An
        estimate, not a guaranteed bound.
    quadrature
        True when numeric quadrature was used.
    """

    value: float
    error_estimate: float
    quadrature: bool = False

    @property
    def error_bound(self) -> float:
        """Deprecated alias of :attr:`error_estimate` (it never was a guaranteed bound)."""
        return self.error_estimate


def as_expr(value: object, what: str) -> sp.Expr:
    """A sympy expression or a Python number; text is refused (it would go through sympify)."""
    if isinstance(value, sp.Basic):
        return value
    if isinstance(value, str):
        raise DerivationError(
            f"the {what} must be a sympy expression or a number, got the text {_short(repr(value), 60)}; "
            "parse text with varprop.activations.parse_expression"
        )
    return as_sympy_number(value, f"the {what}", error=DerivationError)


def evaluate(expr: sp.Expr, values: Mapping[sp.Symbol, object] | None = None) -> NumericValue:
    r"""Evaluate ``expr`` at ``values``; each unevaluated integral is computed by quadrature.

    The closed-form part is evaluated at raised precision until correct to float64 accuracy. The
    error estimate adds, for each integral :math:`I`, QUADPACK's estimate times the sensitivity
    :math:`|\partial\,\mathrm{expr} / \partial I|`.

    Raises
    ------
    DerivationError
        When a symbol has no value, or the value is outside the float64 range.
    IntegrabilityError
        When an integral does not exist or does not converge, or the value is not a finite real number.
    """
    numbers = {}
    for symbol, value in (values or {}).items():
        value = as_expr(value, f"value of {symbol}")
        if value.free_symbols:
            raise DerivationError(f"the value of {symbol} must be a number, got {_short(value, 60)}")
        numbers[symbol] = value
    expr = as_expr(expr, "expression")
    integrals = sorted(expr.atoms(sp.Integral), key=sp.default_sort_key)
    stand_ins = sp.symbols(f"_I0:{len(integrals)}")
    reduced = expr.xreplace(dict(zip(integrals, stand_ins)))
    free = reduced.free_symbols - set(stand_ins) - set(numbers)
    if free:
        names = ", ".join(sorted(str(s) for s in free))
        raise DerivationError(f"cannot evaluate {_short(expr)} numerically: give values for {names}")
    errors = {}
    for integral, stand_in in zip(integrals, stand_ins):
        (variable, _, _), = integral.limits
        value, error = _quad(integral.function, variable, numbers)
        numbers[stand_in] = sp.Float(value)
        errors[stand_in] = error
    value = precise_value(reduced, numbers, expr)
    estimate = 0.0
    for stand_in, error in errors.items():
        if error:
            sensitivity = abs(precise_value(sp.diff(reduced, stand_in), numbers, expr))
            estimate += sensitivity * error
    return NumericValue(value, estimate, bool(integrals))


# --- closed forms at raised precision -------------------------------------------------------------


def _erfc(z):
    if isinstance(z, mpmath.mpf) or isinstance(z, int | float):
        z = mpmath.mpf(z)
        if z > _ASYMPTOTIC:
            # A&S 7.1.23: erfc z = e^{-z^2}/(z sqrt(pi)) sum_k (-1)^k (2k-1)!! / (2z^2)^k
            term, total, k = mpmath.mpf(1), mpmath.mpf(1), 0
            eps = mpmath.mpf(2) ** (-mpmath.mp.prec - 10)
            while abs(term) > eps and k < 200:
                k += 1
                term *= -(2 * k - 1) / (2 * z * z)
                total += term
            return mpmath.exp(-z * z) / (z * mpmath.sqrt(mpmath.pi)) * total
        if z < -_ASYMPTOTIC:
            return 2 - _erfc(-z)
    return mpmath.erfc(z)


def _erf(z):
    if isinstance(z, mpmath.mpf | int | float) and abs(z) > _ASYMPTOTIC:
        return mpmath.sign(z) * (1 - _erfc(abs(z)))
    return mpmath.erf(z)


_MP_MODULES = [{"erfc": _erfc, "erf": _erf}, "mpmath"]


@lru_cache(maxsize=1024)
def _mp_function(expr: sp.Expr, symbols: tuple[sp.Symbol, ...]):
    return sp.lambdify(symbols, expr, modules=_MP_MODULES)


def _mp_number(value: sp.Expr, dps: int) -> mpmath.mpf:
    if isinstance(value, sp.Float):
        return mpmath.mpf(value._mpf_)
    number = sp.N(value, dps + 10)
    if not number.is_real:
        raise DerivationError(f"the value {_short(value, 60)} is not a real number")
    return mpmath.mpf(number._mpf_) if isinstance(number, sp.Float) else mpmath.mpf(int(number))


def precise_value(expr: sp.Expr, numbers: Mapping[sp.Symbol, sp.Expr], context: sp.Expr) -> float:
    """``expr`` at ``numbers`` as a float64 correct to the last bits, or an error saying why not."""
    symbols = tuple(sorted(expr.free_symbols, key=sp.default_sort_key))
    try:
        function = _mp_function(expr, symbols)
    except Exception as exc:  # noqa: BLE001 - sympy's printers raise their own types
        raise DerivationError(f"cannot evaluate {_short(context)} numerically ({type(exc).__name__})") from None
    previous = None
    for dps in _PRECISIONS:
        with mpmath.workdps(dps):
            try:
                value = function(*(_mp_number(numbers[s], dps) for s in symbols))
            except (ValueError, ZeroDivisionError, OverflowError, TypeError, ArithmeticError) as exc:
                raise IntegrabilityError(
                    f"{_short(context)} does not evaluate to a finite real number ({type(exc).__name__})"
                ) from None
            value = mpmath.mpmathify(value)
            if not mpmath.isfinite(value):
                raise IntegrabilityError(f"{_short(context)} does not evaluate to a finite real number (got {value})")
            if previous is not None and _agree(previous, value, dps):
                return _to_float(value, context)
            previous = value
    raise DerivationError(
        f"cannot evaluate {_short(context)} to float64 accuracy: it cancels beyond {_PRECISIONS[-1]} digits "
        f"at {', '.join(f'{s} = {_short(v, 30)}' for s, v in numbers.items())}"
    )


def _agree(a, b, dps: int) -> bool:
    difference = abs(a - b)
    if difference <= _AGREE * abs(b):
        return True
    # A value that is 0 up to the working precision (e.g. an odd moment written as a sum).
    return difference <= mpmath.mpf(10) ** (-dps // 2) and abs(b) <= mpmath.mpf(10) ** (-dps // 2)


def _to_float(value, context: sp.Expr) -> float:
    real, imag = mpmath.re(value), mpmath.im(value)
    if abs(imag) > 1e-12 * max(1, abs(real)):
        raise IntegrabilityError(f"{_short(context)} does not evaluate to a real number (got {mpmath.nstr(value, 8)})")
    number = float(real)
    if not math.isfinite(number):
        magnitude = mpmath.nstr(mpmath.log10(abs(real)), 4)
        raise DerivationError(
            f"{_short(context)} is about 10^{magnitude} in size, outside the float64 range (about 1.8e308)"
        )
    return number


# --- quadrature -------------------------------------------------------------------------------------


def _kinks(function: sp.Expr, variable: sp.Symbol, numbers: Mapping[sp.Symbol, sp.Expr]) -> list[float]:
    """Real points where a Piecewise condition linear in the variable switches."""
    points = []
    for relation in function.atoms(sp.Rel):
        difference = (relation.lhs - relation.rhs).xreplace(dict(numbers))
        if difference.free_symbols != {variable}:
            continue
        try:
            poly = sp.Poly(difference, variable)
        except sp.PolynomialError:
            continue
        if poly.degree() == 1:
            a, b = poly.all_coeffs()
            try:
                points.append(float(-b / a))
            except (TypeError, ValueError, ZeroDivisionError):
                continue
    return points


def _quad(function: sp.Expr, variable: sp.Symbol, numbers: Mapping[sp.Symbol, sp.Expr]) -> tuple[float, float]:
    r"""QUADPACK on ``[-T, T]`` in the standardised variable, with T grown until the tails vanish.

    Beyond :math:`|t| = 40` the Gaussian weight is below :math:`10^{-347}`, so the cut-off only matters
    for integrands that grow faster than the weight decays; T doubles until the integrand at
    :math:`\pm T` is below :math:`10^{-250}`. Points where float64 overflows (``inf * 0``) are
    recomputed in mpmath. The dropped tails are not bounded: the error is an estimate. At most
    ``_MAX_CALLS`` integrand evaluations are spent (a wildly oscillating integrand is refused).
    ``numbers`` gives the values of the other symbols; they are passed as arguments, never
    substituted into the integrand (sympy can recurse without end re-evaluating nested Piecewise).
    """
    from scipy import integrate  # imported here: only the quadrature route needs scipy

    symbols = tuple(sorted(function.free_symbols - {variable}, key=sp.default_sort_key))
    absent = [s for s in symbols if s not in numbers]
    if absent:
        names = ", ".join(str(s) for s in absent)
        raise DerivationError(f"cannot evaluate the integral of {_short(function)} numerically: give values for {names}")
    floats = [float(_mp_number(numbers[s], 20)) for s in symbols]
    env = {s: mpmath.mpf(v) for s, v in zip(symbols, floats)}
    unweighted = function.xreplace({sp.exp(-(variable**2) / 2): sp.Integer(1)})
    if set(symbols) - {_Q}:  # symbolic parameters: existence was not decided when deriving
        try:
            substituted = unweighted.xreplace(dict(numbers))
        except RecursionError:
            substituted = None
        reason = None if substituted is None else nonintegrable_reason(substituted, variable)
        if reason is not None:
            raise IntegrabilityError(f"the Gaussian integral does not exist: {reason}")
    try:
        fast = sp.lambdify((variable, *symbols), function, modules=["math"])
    except Exception as exc:  # noqa: BLE001 - sympy's printers raise their own types
        raise DerivationError(f"cannot evaluate the integral of {_short(function)} numerically ({type(exc).__name__})") from None
    wide_cache: list = []

    def wide(*args):
        # Built on first use only: sympy's numpy printer simplifies every Piecewise condition (slow),
        # so integrands with Piecewise skip this complex-number tier.
        if not wide_cache:
            function_ = None
            if not function.has(sp.Piecewise):
                try:
                    from scipy import special

                    function_ = sp.lambdify((variable, *symbols), function,
                                            modules=[{"erf": special.erf, "erfc": special.erfc}, "numpy"])
                except Exception:  # noqa: BLE001 - sympy's printers raise their own types
                    function_ = None
            wide_cache.append(function_)
        if wide_cache[0] is None:
            raise TypeError("no complex tier")
        return wide_cache[0](*args)

    calls = [0, 0]

    def integrand(t: float) -> float:
        calls[0] += 1
        if calls[0] > _MAX_CALLS:
            raise _Budget
        try:
            value = float(fast(t, *floats))
        except (ValueError, TypeError, ZeroDivisionError, OverflowError, ArithmeticError):
            value = math.nan
        if math.isfinite(value):
            return value
        if True:  # e.g. sqrt of a negative inside tanh(sqrt(x))**2: real through complex numbers
            try:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    number = complex(wide(complex(t), *floats))
                if math.isfinite(number.real) and abs(number.imag) <= 1e-9 * max(1.0, abs(number.real)):
                    return number.real
            except (ValueError, TypeError, ZeroDivisionError, OverflowError, ArithmeticError):
                pass
        calls[1] += 1
        if calls[1] > _MAX_SLOW_CALLS:
            raise _Budget
        with mpmath.workdps(20):  # overflow or inf * 0 in float64: recompute with an unbounded exponent
            exact = mp_value(function, variable, mpmath.mpf(t), env)
            if exact is None:
                return math.nan
            return float(mpmath.re(exact))

    def fail(reason: str) -> IntegrabilityError:
        return IntegrabilityError(
            f"the Gaussian integral of {_short(function)} {reason}; "
            "the expression may not be integrable under a Gaussian"
        )

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
    inner = {0.0, *_kinks(function, variable, numbers), *singular_points(unweighted, variable, dict(numbers))}
    inner = sorted((p for p in inner if -limit < p < limit), key=abs)[:_MAX_CUTS]
    cuts = sorted({-limit, limit, *inner})
    value, error = 0.0, 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", integrate.IntegrationWarning)
        for a, b in zip(cuts[:-1], cuts[1:]):
            try:
                part, part_error = integrate.quad(integrand, a, b, epsabs=1e-13, epsrel=1e-12, limit=400)
            except (integrate.IntegrationWarning, OverflowError, ZeroDivisionError, ValueError):
                raise fail("does not converge numerically") from None
            except _Budget:
                raise fail(f"does not converge within {_MAX_CALLS} evaluations (it oscillates or varies too fast)") from None
            value += part
            error += part_error
    if not (math.isfinite(value) and math.isfinite(error)):
        raise fail("is not finite")
    return value, error
