r"""Per-network sums over the units of a layer, in an order that does not depend on the chunk.

Both sampling engines (:mod:`varprop.montecarlo.engines`) write their per-network raw sums with
these functions, so a statistic means the same thing, in the same floating-point order, whichever
engine produced it. Every sum is computed network by network: for layers of at most
:data:`NARROW` units one unit after the other over a units-first copy, for wider layers by numpy's
pairwise reduction along the contiguous unit axis. A network's statistics therefore do not depend
on how many networks share its chunk, which is what makes samples bit-identical whatever the
chunking and the executor.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SIG_SUM", "SIG_SQ", "GRAD_SUM", "GRAD_SQ", "NORM", "SIG_PSQ", "SIG_CROSS", "ROWS_UNPAIRED", "ROWS_PAIRED",
    "NARROW", "join", "signal_sums", "gradient_sums", "row_sums", "sum_units_first",
]

# Rows of the raw per-network sums computed inside a chunk, one column per position (column p + 1
# is position p). The last two rows exist only for paired samples.
SIG_SUM, SIG_SQ, GRAD_SUM, GRAD_SQ, NORM, SIG_PSQ, SIG_CROSS = range(7)
ROWS_UNPAIRED = 5
ROWS_PAIRED = 7
#: Layers of at most this many units are summed unit by unit over a units-first copy (fast for
#: narrow layers); wider layers by numpy's pairwise reduction along the contiguous unit axis.
NARROW = 8


def row_sums(a: np.ndarray) -> np.ndarray:
    """Per-network sums over the last (unit) axis of ``a``, shape ``(networks, width)``, chunk-independent."""
    if a.shape[-1] <= NARROW:
        return sum_units_first(np.ascontiguousarray(a.T))
    return np.add.reduce(a, axis=-1)


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
    if h0.shape[1] <= NARROW:
        if h.shape[1] == 1:
            units = np.ascontiguousarray(h0.T)
            out[SIG_SUM] = sum_units_first(units)
            out[SIG_SQ] = sum_units_first(units * units)
        else:
            units = np.ascontiguousarray(h.transpose(2, 1, 0))
            out[SIG_SUM] = sum_units_first(units[:, 0])
            squares = sum_units_first(units * units)
            out[SIG_SQ], out[SIG_PSQ] = squares[0], squares[1]
            out[SIG_CROSS] = sum_units_first(units[:, 0] * units[:, 1])
    elif h.shape[1] == 1:
        out[SIG_SUM] = np.add.reduce(h0, axis=-1)
        out[SIG_SQ] = np.add.reduce(h0 * h0, axis=-1)
    else:
        out[SIG_SUM] = np.add.reduce(h0, axis=-1)
        squares = np.add.reduce(h * h, axis=-1)
        out[SIG_SQ], out[SIG_PSQ] = squares[:, 0], squares[:, 1]
        out[SIG_CROSS] = np.add.reduce(h0 * h[:, 1], axis=-1)


def gradient_sums(a: np.ndarray, out: np.ndarray) -> None:
    """Per-network sum and sum of squares of a gradient ``a``, shape ``(networks, width)``, into ``out``."""
    if a.shape[1] <= NARROW:
        units = np.ascontiguousarray(a.T)
        out[GRAD_SUM] = sum_units_first(units)
        out[GRAD_SQ] = sum_units_first(units * units)
    else:
        out[GRAD_SUM] = np.add.reduce(a, axis=-1)
        out[GRAD_SQ] = np.add.reduce(a * a, axis=-1)


def sum_units_first(units: np.ndarray) -> np.ndarray:
    r"""Sum over the first (unit) axis, one unit after the other.

    Each network's sum is then :math:`((a_1 + a_2) + a_3) + \dots` whatever the number of networks
    (numpy's own reduction may switch to pairwise summation when a chunk holds a single network).
    Wider layers use numpy's pairwise reduction along the contiguous unit axis instead, which is
    also computed row by row. Either way a network's statistics do not depend on its chunk.
    """
    total = units[0].copy()
    for row in units[1:]:
        total += row
    return total
