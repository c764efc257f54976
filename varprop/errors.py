"""The one exception family of varprop.

Every error a user can provoke with bad input is a :class:`VarpropError`; its message says what was
wrong, the value received and what is accepted. The CLI turns it into one line and exit code 2.
"""

from __future__ import annotations

__all__ = [
    "VarpropError",
    "SpecError",
    "ActivationError",
    "ExpressionError",
    "IntegrabilityError",
    "DerivationError",
    "ResourceError",
    "abbreviate",
]


class VarpropError(ValueError):
    """Base class of every error varprop raises on bad input."""


class SpecError(VarpropError):
    """A network, layer, width, weight law or init scheme that cannot be built."""


class ActivationError(VarpropError):
    """An unknown activation, or a parameter it does not have."""


class ExpressionError(VarpropError):
    """A user expression the whitelist parser rejects."""


class IntegrabilityError(VarpropError):
    """An expression whose Gaussian moment does not exist (not square-integrable)."""


class DerivationError(VarpropError):
    """A derivation that cannot be carried out for the given description."""


class ResourceError(VarpropError):
    """A request whose size or memory exceeds varprop's bounds (refused before any work starts)."""


def abbreviate(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to about ``limit`` characters, so a message never dumps a huge value.

    Integers keep their leading digits and say how many there are: ``1234...(301 digits)``; other
    values keep their first characters and say how long the text was.

    >>> abbreviate(10**300)
    '1000000000000000000000000000000000000000...(301 digits)'
    >>> abbreviate(-3)
    '-3'
    """
    if isinstance(value, int) and not isinstance(value, bool):
        sign = "-" if value < 0 else ""
        magnitude = -value if value < 0 else value
        # Never convert a huge integer to text whole: Python refuses above 4300 digits, and it is slow.
        digits = _digit_count(magnitude) if magnitude else 1
        if digits <= limit:
            return f"{sign}{magnitude}"
        return f"{sign}{_leading_digits(magnitude, digits, max(1, limit - 20))}...({digits} digits)"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a value whose repr fails is still named by its type
        return f"<{type(value).__name__}>"
    if len(text) <= limit:
        return text
    return f"{text[: max(1, limit - 20)]}...({len(text)} characters)"


def _digit_count(magnitude: int) -> int:
    """The number of decimal digits of a positive integer, without converting it to text."""
    estimate = int(magnitude.bit_length() * 0.30102999566398120)  # log10(2)
    while 10 ** estimate <= magnitude:
        estimate += 1
    while estimate > 1 and 10 ** (estimate - 1) > magnitude:
        estimate -= 1
    return max(1, estimate)


def _leading_digits(magnitude: int, digits: int, keep: int) -> str:
    return str(magnitude // 10 ** (digits - keep)) if digits > keep else str(magnitude)
