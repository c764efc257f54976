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
