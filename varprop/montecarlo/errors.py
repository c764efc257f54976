"""The Monte Carlo engine's member of the :class:`~varprop.errors.VarpropError` family."""

from __future__ import annotations

from ..errors import VarpropError

__all__ = ["MonteCarloError"]


class MonteCarloError(VarpropError):
    """A network, sample request, observable or verdict input the Monte Carlo engine cannot use.

    The message names the offending value and what is accepted, e.g. a symbolic width, a
    non-positive number of networks, an unknown observable or a layer index out of range.
    """
