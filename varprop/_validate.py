"""Validation of user-supplied numbers in the manner of sympy's ``_value_check``.

A value is refused only when it is provably wrong: ``-3`` is not a width, but a bare sympy symbol
``n_l`` is accepted, since it may stand for any admissible value.
"""

from __future__ import annotations

import math
from fractions import Fraction
from numbers import Integral, Real

import sympy as sp

from .errors import SpecError, abbreviate

Width = int | sp.Symbol


def as_sympy_number(value: object, what: str, *, error: type[Exception] = SpecError) -> sp.Expr:
    """Convert a Python number or a sympy expression to sympy; never parse text."""
    if isinstance(value, bool):
        raise error(f"{what} must be a number or a sympy expression, got {value!r}")
    if isinstance(value, sp.Basic):
        if not isinstance(value, sp.Expr):
            raise error(f"{what} must be a number or a sympy expression, got {value!r}")
        if value.has(sp.nan, sp.zoo) or value in (sp.oo, -sp.oo):
            raise error(f"{what} must be finite, got {value}")
        return value
    if isinstance(value, Integral):
        return sp.Integer(int(value))
    if isinstance(value, Fraction):
        return sp.Rational(value.numerator, value.denominator)
    if isinstance(value, Real):
        number = float(value)
        if not math.isfinite(number):
            raise error(f"{what} must be finite, got {value!r}")
        return sp.Float(number)
    raise error(f"{what} must be a number or a sympy expression, got {value!r} ({type(value).__name__})")


def check_width(value: object, what: str) -> Width:
    """Return a width: a positive Python ``int`` or a sympy ``Symbol`` not known to be non-positive."""
    if isinstance(value, sp.Symbol):
        if value.is_positive is False or value.is_integer is False:
            raise SpecError(f"width must be a positive integer or a sympy Symbol, got {value} ({what})")
        return value
    if isinstance(value, sp.Integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) <= 0:
        raise SpecError(f"width must be a positive integer or a sympy Symbol, got {abbreviate(value)} ({what})")
    return int(value)


def check_nonnegative(value: object, what: str) -> sp.Expr:
    """Return ``value`` as sympy, refusing it when it is provably negative."""
    expr = as_sympy_number(value, what)
    if expr.is_extended_real is False or expr.is_negative:
        raise SpecError(f"{what} must be non-negative, got {expr}")
    return expr


def check_positive(value: object, what: str) -> sp.Expr:
    """Return ``value`` as sympy, refusing it when it is provably zero or negative."""
    expr = as_sympy_number(value, what)
    if expr.is_extended_real is False or expr.is_nonpositive:
        raise SpecError(f"{what} must be positive, got {expr}")
    return expr


def is_numeric(expr: sp.Expr) -> bool:
    """True when ``expr`` has no free symbols, so it evaluates to a number."""
    return not expr.free_symbols
