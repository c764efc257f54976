"""A sympy number as a float64, or one clear error: never an OverflowError, a complex or a silent inf."""

from __future__ import annotations

import math
import sys

import sympy as sp

from .errors import VarpropError, abbreviate

__all__ = ["finite_float"]


def finite_float(expr: sp.Expr, what: str, *, error: type[VarpropError] = VarpropError) -> float:
    """``expr`` evaluated to 17 digits as a finite, normal float64 (or zero).

    Refused, with ``error`` naming ``what`` and the expression (abbreviated): a value that is not
    real, one beyond the float64 range (``exp(exp(exp(exp(9))))`` overflows mpmath itself), and a
    non-zero value below the smallest normal float64 (it would read as 0 or lose its digits, and
    relative deviations from it overflow).
    """
    shown = abbreviate(str(expr), 60).strip("'")
    try:
        number = sp.N(expr, 17)
        value = float(number)
    except OverflowError:
        raise error(f"{what} {shown} overflows float64 (beyond +-{sys.float_info.max:.3g})") from None
    except (ValueError, TypeError, ZeroDivisionError, ArithmeticError, RecursionError):
        raise error(f"{what} {shown} is not a real number") from None
    if not math.isfinite(value):
        raise error(f"{what} {shown} is not finite in float64 (beyond +-{sys.float_info.max:.3g})")
    if value == 0.0 and expr.is_zero is False or 0.0 < abs(value) < sys.float_info.min:
        raise error(f"{what} {shown} is not zero but smaller than float64 represents "
                    f"(the smallest is {sys.float_info.min:.3g})")
    return value
