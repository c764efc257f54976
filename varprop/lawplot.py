r"""Figures of a sampled distribution against its exact law: :math:`\log M_L` of relu networks.

:func:`law_data` samples networks (:func:`varprop.montecarlo.laws.sample_norms`) and evaluates the
exact density of :math:`\log M_L` given no dead layer (:class:`varprop.montecarlo.laws.ExactLaw`);
:func:`law_figure` draws a histogram of the sampled values with the exact density over it, one
colour per network, and says in the legend how many networks had a dead layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .montecarlo.laws import ExactLaw, sample_norms
from .plot import _PAGE_WIDTH

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["LawData", "law_data", "law_figure"]


@dataclass(frozen=True)
class LawData:
    r"""The numbers behind one series of a law figure.

    Attributes
    ----------
    network_label
        The legend entry.
    widths
        :math:`n_0, \dots, n_L`.
    samples
        Networks sampled.
    logs
        :math:`\log M_L` of the networks without a dead layer.
    dead
        How many networks had a dead layer (:math:`M_L = 0`), and the exact expected fraction.
    grid, density
        The exact density of :math:`\log M_L` given no dead layer, on a grid.
    """

    network_label: str
    widths: tuple[int, ...]
    samples: int
    logs: np.ndarray
    dead: int
    dead_expected: float
    grid: np.ndarray
    density: np.ndarray

    def quantiles(self, levels: Sequence[float] = (0.1, 0.5, 0.9)) -> list[tuple[float, float, float]]:
        """(level, exact quantile, sampled quantile) of :math:`\\log M_L` given no dead layer."""
        cdf = np.cumsum(self.density) * (self.grid[1] - self.grid[0])
        cdf /= cdf[-1]
        return [(q, float(np.interp(q, cdf, self.grid)), float(np.quantile(self.logs, q)) if self.logs.size else np.nan)
                for q in levels]


def law_data(label: str, widths: Sequence[int], *, samples: int, seed: int) -> LawData:
    """Sample ``samples`` He-initialised zero-bias relu networks of ``widths`` and the exact law of their :math:`\\log M_L`."""
    widths = tuple(widths)
    law = ExactLaw(widths)
    values = sample_norms(widths, samples, seed=seed)
    live = values[values > 0]
    logs = np.log(live)
    low = min(-12.0, float(logs.min()) - 1 if logs.size else -12.0)
    high = max(4.0, float(logs.max()) + 1 if logs.size else 4.0)
    grid = np.linspace(low, high, 1201)
    return LawData(label, widths, samples, logs, int(values.size - live.size), law.dead, grid, law.pdf_log(grid))


def law_figure(series: Sequence[LawData], *, title: str = "") -> Figure:
    r"""Histograms of the sampled :math:`\log M_L` (given no dead layer) with the exact density drawn over each."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(_PAGE_WIDTH, 3.8), dpi=100, layout="constrained")  # the report's text width
    ax = figure.add_subplot()
    ax.set_gid("log_norm_ratio_law")
    colours = ("C0", "C1", "C2", "C3", "C4", "C5")
    for index, data in enumerate(series):
        colour = colours[index % len(colours)]
        ax.hist(data.logs, bins=60, density=True, histtype="stepfilled", alpha=0.25, color=colour,
                label=f"{data.network_label}: {data.logs.size} networks ({data.dead} dead, "
                      f"{data.dead_expected * data.samples:.1f} expected)", gid=f"sampled:{data.network_label}")
        ax.plot(data.grid, data.density, color=colour, linewidth=1.6, gid=f"exact:{data.network_label}",
                label=f"{data.network_label}: exact density")
    ax.set_xlabel(r"$\log M_L$, networks without a dead layer")
    ax.set_ylabel("density")
    ax.set_xlim(max(min(float(d.grid[0]) for d in series), -8.0), min(max(float(d.grid[-1]) for d in series), 4.0))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure
