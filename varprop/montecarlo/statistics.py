r"""Per-network sums over the units of a layer, in an order that does not depend on the chunk.

Both sampling engines (:mod:`varprop.montecarlo.engines`) write their per-network raw sums with
these functions, so a statistic means the same thing, in the same floating-point order, whichever
engine produced it. Every sum is computed network by network, by :func:`numpy.einsum` over the unit
axis: its inner loop sums one network's units in an order fixed by the width alone (never by how
many networks share the chunk, nor by where the chunk starts in memory), which is what makes samples
bit-identical whatever the chunking and the executor (``tests/montecarlo/test_executors.py``,
``test_sampler.py``). It is also three to five times faster than ``np.add.reduce`` along a short
unit axis, and needs no temporary for a sum of products.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SIG_SUM", "SIG_SQ", "GRAD_SUM", "GRAD_SQ", "NORM", "SIG_PSQ", "SIG_CROSS", "ROWS_UNPAIRED", "ROWS_PAIRED",
    "join", "signal_sums", "gradient_sums", "row_sums", "row_dots", "sum_units_first",
]

# Rows of the raw per-network sums computed inside a chunk, one column per position (column p + 1
# is position p). The last two rows exist only for paired samples.
SIG_SUM, SIG_SQ, GRAD_SUM, GRAD_SQ, NORM, SIG_PSQ, SIG_CROSS = range(7)
ROWS_UNPAIRED = 5
ROWS_PAIRED = 7


def row_sums(a: np.ndarray) -> np.ndarray:
    """Per-network sums over the last (unit) axis of ``a``, shape ``(networks, width)``, chunk-independent."""
    return np.einsum("ij->i", a)


def row_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    r"""Per-network :math:`\sum_i a_i b_i` over the last (unit) axis, shape ``(networks, width)``, chunk-independent."""
    return np.einsum("ij,ij->i", a, b)


def join(arrays: list[np.ndarray]) -> np.ndarray:
    """The blocks of one chunk as one array (no copy for a single block)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def signal_sums(h: np.ndarray, out: np.ndarray) -> None:
    r"""Per-network sums over the units of a signal ``h``, shape ``(networks, 1 or 2, width)``.

    Writes :math:`\sum h, \sum h^2` into rows ``SIG_SUM, SIG_SQ`` of ``out`` (shape
    ``(rows, networks)``), and for a pair :math:`\sum {h'}^2, \sum h h'` into ``SIG_PSQ,
    SIG_CROSS``.
    """
    h0 = h[:, 0]
    out[SIG_SUM] = row_sums(h0)
    out[SIG_SQ] = row_dots(h0, h0)
    if h.shape[1] == 2:
        h1 = h[:, 1]
        out[SIG_PSQ] = row_dots(h1, h1)
        out[SIG_CROSS] = row_dots(h0, h1)


def gradient_sums(a: np.ndarray, out: np.ndarray) -> None:
    """Per-network sum and sum of squares of a gradient ``a``, shape ``(networks, width)``, into ``out``."""
    out[GRAD_SUM] = row_sums(a)
    out[GRAD_SQ] = row_dots(a, a)


def sum_units_first(units: np.ndarray) -> np.ndarray:
    r"""Sum over the first axis, one slice after the other: :math:`((a_1 + a_2) + a_3) + \dots`.

    For sums over an axis other than the last (a BatchNorm's batch), in an order that does not depend on
    how many networks the slices hold.
    """
    total = units[0].copy()
    for row in units[1:]:
        total += row
    return total
