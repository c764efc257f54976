r"""Signal-propagation plots: the derived per-layer moments against Monte Carlo estimates.

A figure has one panel per observable (forward :math:`E[y_l^2]`, backward
:math:`E[(\partial\mathcal L/\partial x_l)^2]`, weight gradient
:math:`E[(\partial\mathcal L/\partial W_l)^2]`, ... side by side). Each network is one *series*,
drawn in one colour in every panel: the theory of :func:`varprop.derive.derive` as a marker-less
line (solid when exact, dashed when asymptotic, i.e. the infinite-width limit, dotted when an
approximation; the legend names the class), and the Monte Carlo estimate of
:mod:`varprop.montecarlo` as points with error bars of :math:`\pm 2` standard errors (the SE across
independent networks). Figures are laid out for an A4 page at 10 pt: 6.7 inches wide (the text
width at 2 cm margins), at most two panels a row, one legend under the panels.

The numbers behind a figure are kept apart from the drawing, in :class:`PropagationData`, so tests
and reports can use them and check that the picture shows what the numbers say.

Figures are built on :class:`matplotlib.figure.Figure` with the non-interactive Agg canvas, never
through :mod:`matplotlib.pyplot`: nothing needs a display and no global state is touched.

>>> from varprop.network import mlp
>>> from varprop.plot import propagation_data, propagation_figure
>>> net = mlp([32] * 5, "relu")                      # He init: E[y_l^2] = 2 at every layer
>>> data = propagation_data(net, "y_second_moment", samples=200, label="He")
>>> data.predicted
(2.0, 2.0, 2.0, 2.0)
>>> figure = propagation_figure([data])
>>> figure.axes[0].get_yscale()
'linear'
"""

from __future__ import annotations

import math
import pathlib
import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import montecarlo
from .observables import LEGACY_NAMES as OBSERVABLES
from .derive import EXACTNESS, derive, evaluate, weakest
from .observables import Correlation, CrossMoment, Gradient, Observable, SecondMoment, Signal, from_name
from .errors import VarpropError
from .network import Network, Nonlinearity, Residual

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn: importing it costs 0.3 s
    from matplotlib.figure import Figure

__all__ = ["PANELS", "PAIR_PANELS", "LINESTYLES", "THEORY_WORDS", "PlotError", "PropagationData", "propagation_data", "propagation_figure", "save_figure"]


class PlotError(VarpropError):
    """A plot that cannot be made: unknown observable, empty series, inconsistent or non-finite data."""


#: The three standard panels: name -> (observable, axis label). Panels appear in this order.
PANELS: dict[str, tuple[str, str]] = {
    "forward": ("y_second_moment", r"$E[y_l^2]$"),
    "backward": ("dx_second_moment", r"$E[(\partial L/\partial x_l)^2]$"),
    "weight": ("dw_second_moment", r"$E[(\partial L/\partial W_l)^2]$"),
}

# Axis labels of every plottable observable (both engines know it: varprop.claims.OBSERVABLES).
_LABELS: dict[str, str] = {
    "y_mean": r"$E[y_l]$",
    "y_second_moment": PANELS["forward"][1],
    "y_variance": r"$\mathrm{Var}[y_l]$",
    "x_mean": r"$E[x_l]$",
    "x_second_moment": r"$E[x_l^2]$",
    "x_variance": r"$\mathrm{Var}[x_l]$",
    "dx_second_moment": PANELS["backward"][1],
    "dy_second_moment": r"$E[(\partial L/\partial y_l)^2]$",
    "dw_second_moment": PANELS["weight"][1],
    "x_norm_ratio": r"$E[\|x_l\|^2 / \|x_1\|^2]$",
    # a pair of inputs (the network's inputs hold the pair): statistics of y_l and y'_l
    "y_cross_moment": r"$E[y_l\, y'_l]$",
    "y_correlation": r"correlation of $y_l, y'_l$",
}
#: The pair observables a figure can show per dense layer (the network must describe a pair of inputs).
PAIR_PANELS: dict[str, type] = {"y_cross_moment": CrossMoment, "y_correlation": Correlation}

_PANEL_OF = {observable: name for name, (observable, _) in PANELS.items()}
_ORDER = tuple(observable for observable, _ in PANELS.values()) + tuple(
    o for o in (*OBSERVABLES, *PAIR_PANELS) if o not in _PANEL_OF
)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
_LOG_SPAN = 10.0  # a panel goes to log scale when max/min of its plotted values exceeds this


def _check_observable(observable: object) -> str:
    """An observable name, or a :data:`PANELS` key standing for its observable."""
    if isinstance(observable, str) and observable in PANELS:
        return PANELS[observable][0]
    if observable not in _LABELS:
        accepted = ", ".join((*OBSERVABLES, *PAIR_PANELS))
        panels = ", ".join(f"{name} ({obs})" for name, (obs, _) in PANELS.items())
        raise PlotError(f"unknown observable {observable!r}; accepted: {accepted}; or a panel name: {panels}")
    return str(observable)


def _floats(values: object, what: str) -> tuple[float, ...]:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise PlotError(f"{what} must be a sequence of real numbers, got {values!r}") from None
    if array.ndim != 1:
        raise PlotError(f"{what} must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise PlotError(f"{what} must be finite, got {tuple(array.tolist())}")
    return tuple(float(v) for v in array)


@dataclass(frozen=True)
class PropagationData:
    """The numbers behind one series of a propagation figure.

    Attributes
    ----------
    network_label
        The legend entry of the series.
    observable
        One of :data:`varprop.claims.OBSERVABLES`, e.g. ``"y_second_moment"``.
    layers
        The dense layers :math:`l = 1, \\dots, L`.
    predicted
        The theory, per layer.
    estimated
        The Monte Carlo estimate, per layer.
    se
        Its standard error (across networks), per layer.
    samples
        The number T of independent networks sampled.
    exactness
        The weakest exactness class of the per-layer predictions (:data:`varprop.derive.EXACTNESS`);
        it sets how the theory line is drawn and labelled.

    Raises
    ------
    PlotError
        For an unknown observable, sequences of different lengths or none, non-finite numbers, a
        negative SE or a non-positive sample count.
    """

    network_label: str
    observable: str
    layers: tuple[int, ...]
    predicted: tuple[float, ...]
    estimated: tuple[float, ...]
    se: tuple[float, ...]
    samples: int
    exactness: str = "exact"

    def __post_init__(self) -> None:
        if self.exactness not in EXACTNESS:
            raise PlotError(f"exactness must be one of {', '.join(EXACTNESS)}, got {self.exactness!r}")
        object.__setattr__(self, "network_label", str(self.network_label))
        object.__setattr__(self, "observable", _check_observable(self.observable))
        layers = tuple(self.layers)
        if not layers or not all(isinstance(l, int | np.integer) and not isinstance(l, bool) for l in layers):
            raise PlotError(f"layers must be a non-empty sequence of integers, got {self.layers!r}")
        object.__setattr__(self, "layers", tuple(int(l) for l in layers))
        for name in ("predicted", "estimated", "se"):
            values = _floats(getattr(self, name), name)
            if len(values) != len(layers):
                raise PlotError(f"{name} has {len(values)} values but there are {len(layers)} layers")
            object.__setattr__(self, name, values)
        if any(s < 0 for s in self.se):
            raise PlotError(f"standard errors must be non-negative, got {self.se}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int | np.integer) or self.samples < 1:
            raise PlotError(f"samples must be a positive integer, got {self.samples!r}")
        object.__setattr__(self, "samples", int(self.samples))


def _default_label(network: Network) -> str:
    """``relu MLP 64-64-64, W ~ Normal(var=1/32)``: activation, widths and weight law."""
    acts = {layer.activation.name for layer in network.layers if isinstance(layer, Nonlinearity)}
    laws = {str(layer.weights) for layer in network.dense_layers}
    act = "linear" if not acts else ", ".join(sorted(acts))
    law = laws.pop() if len(laws) == 1 else "per-layer laws"
    widths = "-".join(str(w) for w in network.widths)
    return f"{act} MLP {widths}, W ~ {law}"


def propagation_data(
    network: Network, observable: str, *, samples: int = 2000, seed: int = 0, label: str = "",
    linear_regime: bool = False,
) -> PropagationData:
    r"""Theory and Monte Carlo estimate of ``observable`` at every dense layer of ``network`` (at every residual
    block's output, for a network that has residual blocks: :math:`l` counts the blocks).

    The theory is :func:`varprop.derive.derive` at every layer (the same derivation a claim built by
    :func:`varprop.catalogue.claim_from_derivation` checks: textbook, infinite-width values where no
    exact finite-width form is known) evaluated to floats, with the weakest exactness class of the
    layers; the estimate is
    :func:`varprop.montecarlo.estimate` on ``samples`` independent networks drawn from ``seed``.

    Parameters
    ----------
    network
        A network with integer widths.
    observable
        One of :data:`varprop.claims.OBSERVABLES`, a :data:`PANELS` key (``"forward"``,
        ``"backward"``, ``"weight"``) standing for its observable, or, for a network whose inputs
        describe a pair, a :data:`PAIR_PANELS` key (``"y_correlation"``: the correlation of
        :math:`y_l` and :math:`y'_l`, the ratio of expectations of
        :class:`~varprop.observables.Correlation`).
    samples
        The number T of independent networks.
    seed
        The seed of all randomness.
    label
        The legend entry; by default the activation, widths and weight law.
    linear_regime
        Draw Glorot's linear-regime prediction :math:`\\phi(z) \\approx z` (class ``approximation``),
        as a claim built with ``linear_regime=True`` predicts.

    Returns
    -------
    PropagationData

    Raises
    ------
    PlotError
        For an unknown observable, a network that cannot be derived or sampled (the cause is in the
        message), or an estimate that is not finite (every sampled network overflowed).
    """
    observable = _check_observable(observable)
    if not isinstance(network, Network):
        raise PlotError(f"propagation_data needs a Network, got {network!r}")
    if not network.is_numeric:
        raise PlotError(f"propagation_data needs integer widths to sample, got widths {network.widths}")
    label = str(label) or _default_label(network)
    try:
        targets = _targets(observable, network, label)
        derivations = [derive(network, target, linear_regime=bool(linear_regime)) for target in targets]
        predicted = tuple(evaluate(d.result).value for d in derivations)
        drawn = montecarlo.sample(network, samples, seed=seed)
        estimates = tuple(montecarlo.estimate(drawn, target) for target in targets)
    except VarpropError as error:
        raise PlotError(f"cannot compute {observable} for {label!r}: {error}") from None
    for layer, est in enumerate(estimates, start=1):
        if not (math.isfinite(est.value) and math.isfinite(est.se)):
            raise PlotError(
                f"the Monte Carlo estimate of {observable} at layer {layer} of {label!r} is not finite "
                f"({est.value} +- {est.se}, {est.excluded} of {samples} networks excluded)"
            )
    return PropagationData(
        network_label=label,
        observable=observable,
        layers=tuple(range(1, len(targets) + 1)),
        predicted=predicted,
        estimated=tuple(e.value for e in estimates),
        se=tuple(e.se for e in estimates),
        samples=int(samples),
        exactness=weakest(*(d.exactness for d in derivations)),
    )


#: What a figure follows over the residual blocks of a network that has them: the block output's second moment,
#: or that of the gradient there.
_BLOCK_PANELS = {"y_second_moment": Signal, "dy_second_moment": Gradient}


def _targets(observable: str, network: Network, label: str) -> list[Observable]:
    """The observable at every dense layer, or, in a network with residual blocks, at every block's output."""
    blocks = [p for p, layer in enumerate(network.layers) if isinstance(layer, Residual)]
    if not blocks:
        return [_observable_at(observable, layer, network) for layer in range(1, network.depth + 1)]
    if observable not in _BLOCK_PANELS:
        raise PlotError(f"{label!r} has residual blocks: its figure follows the block outputs, with "
                        f"{' or '.join(_BLOCK_PANELS)}; got {observable}")
    return [SecondMoment(_BLOCK_PANELS[observable](p)) for p in blocks]


def _observable_at(observable: str, layer: int, network: Network) -> Observable:
    """The observable a per-layer name means at dense layer ``layer`` (a pair statistic: of ``y_l``)."""
    if observable in PAIR_PANELS:
        return PAIR_PANELS[observable](Signal(network.dense_positions[layer - 1]))
    return from_name(observable, layer, network)


def _use_log(values: np.ndarray, log: bool | None, observable: str) -> bool:
    """Whether a panel is drawn on a log scale (see :func:`propagation_figure`)."""
    if log is False:
        return False
    positive = bool(np.all(values > 0))
    if log is True:
        if not positive:
            warnings.warn(
                f"log scale requested but {observable} has non-positive values "
                f"(min {values.min():.3g}); drawing that panel on a linear scale",
                stacklevel=3,
            )
        return positive
    return positive and values.max() / values.min() > _LOG_SPAN


#: How a theory line is drawn, by exactness class: solid when it holds at every width, dashed for an
#: infinite-width limit, dotted for an approximation.
LINESTYLES: dict[str, str] = {"exact": "-", "gaussian-exact": "-", "asymptotic": "--", "approximation": ":"}

#: What the legend says a theory line is, by exactness class.
THEORY_WORDS: dict[str, str] = {
    "exact": "theory: exact",
    "gaussian-exact": "theory: exact for Gaussian inputs",
    "asymptotic": "theory: asymptotic (infinite width)",
    "approximation": "theory: approximation",
}

_PAGE_WIDTH = 6.7  # inches: A4 (8.27 in) less two 2 cm margins
_PANEL_HEIGHT = 2.5  # inches per row of panels
_FONT = 8.5  # points, at print size


def _caption(series: Sequence[PropagationData], title: str, width: float = _PAGE_WIDTH) -> str:
    """The title, then how to read the marks."""
    counts = sorted({s.samples for s in series})
    networks = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    key = f"lines: theory; points: Monte Carlo mean \u00b1 2 SE over {networks} random networks"
    lines = [title or "Signal propagation by layer", key]
    columns = int(width * 14)  # characters of 9 pt text per inch
    return "\n".join(textwrap.fill(line, columns) for line in lines)


def propagation_figure(
    series: Sequence[PropagationData], *, title: str = "", log: bool | None = None
) -> Figure:
    r"""Draw theory against Monte Carlo for each series, one panel per observable.

    Panels follow the order of :data:`PANELS` (forward, backward, weight gradient), then any other
    observable, at most two a row. In each panel every series is a marker-less theory line, drawn
    as :data:`LINESTYLES` says for its exactness class, and Monte Carlo points with
    :math:`\pm 2\,\mathrm{SE}` error bars in the same colour; a series keeps its colour and marker in
    every panel. One legend under the panels names each series (its colour and marker) and each
    exactness class drawn (its line style, :data:`THEORY_WORDS`): every theory line says whether it
    is exact, the infinite-width limit or an approximation. When several series share a panel their points are shifted sideways by
    a few points on screen (a display offset: the plotted data stay at the integer layers).

    Parameters
    ----------
    series
        One :class:`PropagationData` per (network, observable).
    title
        First line of the caption-like title; the second line says how to read the marks.
    log
        ``None`` (default): a panel uses a log y scale when max/min of its plotted values
        (predictions and estimates) exceeds 10, linear otherwise. ``True``: log scale for every
        panel; ``False``: linear everywhere. A panel with a value :math:`\le 0` is always drawn on
        a linear scale (a log axis cannot show it); when ``log=True`` asked otherwise, a
        :class:`UserWarning` says so. Linear panels whose values share one sign include zero, so a
        flat line is not magnified into noise.

    Returns
    -------
    matplotlib.figure.Figure
        6.7 inches wide (an A4 text width), with an Agg canvas attached, ready for
        :func:`save_figure` or ``savefig``. Each panel's ``get_gid()`` is its observable; each
        theory line's gid is ``"theory:<label>"`` and each Monte Carlo
        :class:`~matplotlib.container.ErrorbarContainer` is labelled ``<label>``.

    Raises
    ------
    PlotError
        For no series, an item that is not :class:`PropagationData`, or two series with the same
        label and observable (they could not be told apart).
    """
    series = list(series) if not isinstance(series, PropagationData) else [series]
    if not series:
        raise PlotError("propagation_figure needs at least one PropagationData series, got none")
    for item in series:
        if not isinstance(item, PropagationData):
            raise PlotError(f"series must hold PropagationData, got {item!r}")
    if log is not None and not isinstance(log, bool):
        raise PlotError(f"log must be None, True or False, got {log!r}")
    seen = set()
    for item in series:
        key = (item.network_label, item.observable)
        if key in seen:
            raise PlotError(f"two series have label {item.network_label!r} for {item.observable}; labels must differ")
        seen.add(key)

    observables = sorted({s.observable for s in series}, key=_ORDER.index)
    labels = list(dict.fromkeys(s.network_label for s in series))
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    colours = tuple(matplotlib.colormaps["tab10"].colors)
    style = {label: (colours[i % len(colours)], _MARKERS[i % len(_MARKERS)]) for i, label in enumerate(labels)}

    columns = 1 if len(observables) == 1 else 2
    rows = math.ceil(len(observables) / columns)
    width = _PAGE_WIDTH if columns == 2 else _PAGE_WIDTH * 0.62
    legend_rows = math.ceil((len(labels) + len({s.exactness for s in series})) / 2)
    height = _PANEL_HEIGHT * rows + 0.55 + 0.2 * legend_rows
    with matplotlib.rc_context({"font.size": _FONT, "axes.titlesize": _FONT + 0.5, "axes.labelsize": _FONT,
                                "xtick.labelsize": _FONT - 1, "ytick.labelsize": _FONT - 1,
                                "legend.fontsize": _FONT - 0.5}):
        figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
        FigureCanvasAgg(figure)
        grid = figure.subplots(rows, columns, squeeze=False).ravel()
        for ax, observable in zip(grid, observables):
            _draw_panel(ax, observable, [s for s in series if s.observable == observable], style, log)
        for ax in grid[len(observables):]:
            ax.remove()
        entries = [(Line2D([], [], color=style[label][0], marker=style[label][1], markerfacecolor="white",
                           markersize=5, linestyle="none"), label) for label in labels]
        for exactness in sorted({s.exactness for s in series}, key=EXACTNESS.index):
            key = Line2D([], [], color="0.3", linewidth=1.5, linestyle=LINESTYLES[exactness], gid=f"key:{exactness}")
            entries.append((key, THEORY_WORDS[exactness]))
        figure.legend([h for h, _ in entries], [text for _, text in entries], handlelength=3.2, loc="outside lower center",
                      ncols=2, frameon=False)
        figure.suptitle(_caption(series, title, width), fontsize=_FONT + 0.5)
    return figure


def _draw_panel(ax, observable: str, group: list[PropagationData], style: dict, log: bool | None) -> None:
    from matplotlib.ticker import MaxNLocator
    from matplotlib.transforms import ScaledTranslation

    ax.set_gid(observable)
    values = np.concatenate([np.r_[s.predicted, s.estimated] for s in group])
    use_log = _use_log(values, log, observable)
    for index, data in enumerate(group):
        colour, marker = style[data.network_label]
        layers = np.asarray(data.layers, dtype=np.float64)
        (theory,) = ax.plot(
            layers, data.predicted, color=colour, linewidth=1.5, alpha=0.9, linestyle=LINESTYLES[data.exactness],
            gid=f"theory:{data.network_label}",
        )
        shift = (index - (len(group) - 1) / 2) * 3 / 72  # inches: 3 points between neighbours
        offset = ax.transData + ScaledTranslation(shift, 0, ax.figure.dpi_scale_trans)
        ax.errorbar(
            layers,
            data.estimated,
            yerr=2 * np.asarray(data.se),
            fmt=marker,
            color=colour,
            markersize=4,
            markerfacecolor="white",
            markeredgewidth=1.1,
            elinewidth=1.1,
            capsize=2.5,
            label=data.network_label,
            transform=offset,
        )
    # The points are drawn through an offset transform, which matplotlib's autoscaling ignores: set
    # the limits from the data, error bars included, so no point or bar is cut off.
    low = np.concatenate([np.r_[s.predicted, np.asarray(s.estimated) - 2 * np.asarray(s.se)] for s in group])
    high = np.concatenate([np.r_[s.predicted, np.asarray(s.estimated) + 2 * np.asarray(s.se)] for s in group])
    if use_log:
        ax.set_yscale("log")
        positive = low[low > 0]
        bottom = positive.min() if positive.size else values[values > 0].min()
        ax.set_ylim(bottom / 2.0, high.max() * 2.0)
    else:
        span = max(high.max() - low.min(), 1e-300)
        bottom, top = low.min() - 0.05 * span, high.max() + 0.05 * span
        if np.all(values >= 0):
            bottom = 0.0
        elif np.all(values <= 0):
            top = 0.0
        ax.set_ylim(bottom, top)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    first = min(min(s.layers) for s in group)
    last = max(max(s.layers) for s in group)
    ax.set_xlim(first - 0.5, last + 0.5)
    ax.set_xlabel("layer $l$")
    ax.set_ylabel(_LABELS[observable])
    panel = _PANEL_OF.get(observable, observable.replace("_", " "))
    ax.set_title(f"{panel}: {_LABELS[observable]}")
    ax.grid(True, which="major", alpha=0.3)


def save_figure(figure: Figure, stem: str | pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``figure`` to ``<stem>.png`` (150 dpi) and ``<stem>.svg``.

    The suffixes are appended to ``stem`` (``out/fig`` gives ``out/fig.png``); missing parent
    directories are created. The SVG carries no date and fixed element ids, so the same figure
    gives the same file.

    Returns
    -------
    tuple of pathlib.Path
        The PNG and SVG paths.

    Raises
    ------
    PlotError
        For something that is not a :class:`~matplotlib.figure.Figure`, or a file that cannot be
        written (the cause is in the message).
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(figure, Figure):
        raise PlotError(f"save_figure needs a matplotlib Figure, got {figure!r}")
    stem = pathlib.Path(stem)
    png = stem.with_name(stem.name + ".png")
    svg = stem.with_name(stem.name + ".svg")
    if not isinstance(figure.canvas, FigureCanvasAgg):
        FigureCanvasAgg(figure)
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        with matplotlib.rc_context({"svg.hashsalt": "varprop"}):
            figure.savefig(png, dpi=150, format="png")
            figure.savefig(svg, format="svg", metadata={"Date": None})
    except OSError as error:
        raise PlotError(f"cannot write {png} and {svg}: {error}") from None
    return png, svg


# --- mean-field figures: the c-map and the phase diagram ------------------------------------------


@dataclass(frozen=True)
class CMapData:
    r"""The c-map of one mean-field analysis on a grid of :math:`c`, and its fixed points.

    ``correlations`` and ``images`` are the curve :math:`c \mapsto c^{l+1}`; ``fixed_points`` holds
    :math:`(c^*, \chi_c, \text{stable})`.
    """

    label: str
    correlations: tuple[float, ...]
    images: tuple[float, ...]
    fixed_points: tuple[tuple[float, float, bool], ...]


def c_map_data(result: object, *, points: int = 101, label: str = "") -> CMapData:
    """The c-map of a :class:`~varprop.derive.meanfield.MeanField` result at ``points`` correlations in [-1, 1]."""
    from .derive.meanfield import MeanField, c_map_values

    if not isinstance(result, MeanField):
        raise PlotError(f"c_map_data needs a MeanField result (varprop.derive.meanfield.mean_field), got {result!r}")
    if isinstance(points, bool) or not isinstance(points, int) or not 3 <= points <= 2001:
        raise PlotError(f"points must be an integer in [3, 2001], got {points!r}")
    grid = np.linspace(-1.0, 1.0, points)
    images = c_map_values(result, grid).tolist()
    fixed = tuple((p.value, p.slope, p.stable) for p in result.correlation_fixed_points)
    name = label or (f"{result.activation}, $\\sigma_w^2$ = {result.weight_variance:.3g}, "
                     f"$\\sigma_b^2$ = {result.bias_variance:.3g} ({result.phase})")
    return CMapData(name, tuple(grid.tolist()), tuple(images), fixed)


def c_map_figure(series: Sequence[CMapData], *, title: str = "") -> Figure:
    r"""The c-maps against the identity line, fixed points marked (filled: stable, open: unstable).

    Each curve's gid is ``"c-map:<label>"``, the identity's ``"identity"``, each fixed point's
    ``"fixed:<label>:<c*>"``.
    """
    series = [series] if isinstance(series, CMapData) else list(series)
    if not series or not all(isinstance(s, CMapData) for s in series):
        raise PlotError("c_map_figure needs one or more CMapData (varprop.plot.c_map_data)")
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    colours = tuple(matplotlib.colormaps["tab10"].colors)
    with matplotlib.rc_context({"font.size": _FONT, "legend.fontsize": _FONT - 1}):
        figure = Figure(figsize=(_PAGE_WIDTH * 0.62, _PAGE_WIDTH * 0.62), dpi=100, layout="constrained")
        FigureCanvasAgg(figure)
        ax = figure.subplots()
        ax.plot([-1, 1], [-1, 1], color="0.5", linestyle="--", linewidth=1.0, gid="identity", label="identity $c^{l+1} = c^l$")
        for index, data in enumerate(series):
            colour = colours[index % len(colours)]
            ax.plot(data.correlations, data.images, color=colour, linewidth=1.5, gid=f"c-map:{data.label}", label=data.label)
            for c_star, _, stable in data.fixed_points:
                ax.plot([c_star], [c_star], marker="o", markersize=6, color=colour,
                        markerfacecolor=colour if stable else "white", linestyle="none", gid=f"fixed:{data.label}:{c_star:.12g}")
        ax.set_xlim(-1.02, 1.02)
        ax.set_ylim(-1.02, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("correlation entering the layer $c^{l}$")
        ax.set_ylabel("correlation leaving it $c^{l+1}$")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", frameon=False)
        text = title or "c-maps (Schoenholz et al. 2017, eq. 4); filled: stable fixed point, open: unstable"
        figure.suptitle(textwrap.fill(text, int(_PAGE_WIDTH * 0.62 * 14)), fontsize=_FONT)
    return figure


@dataclass(frozen=True)
class PhaseData:
    r"""The phase diagram of one activation: :math:`\xi_c` on a grid of :math:`(\sigma_b^2, \sigma_w^2)`
    (rows: weight variances) and the edge of chaos :math:`\sigma_w^2(\sigma_b^2)`."""

    activation: str
    bias_variances: tuple[float, ...]
    weight_variances: tuple[float, ...]
    depth_scales: tuple[tuple[float, ...], ...]
    edge_bias_variances: tuple[float, ...]
    edge_weight_variances: tuple[float, ...]


def phase_data(activation: object = "tanh", *, bias_variances: Sequence[float] | None = None,
               weight_variances: Sequence[float] | None = None, edge_points: int = 50) -> PhaseData:
    r"""Depth scales and the critical line, by :func:`~varprop.derive.meanfield.depth_scale_grid` and
    :func:`~varprop.derive.meanfield.edge_of_chaos` (default grid: :math:`\sigma_b^2 \in [0.01, 0.3]`,
    :math:`\sigma_w^2 \in [0.5, 4]`, 16 x 16, as in Schoenholz et al. 2017, Fig. 2)."""
    from .derive.meanfield import _as_activation, depth_scale_grid, edge_of_chaos

    act = _as_activation(activation)
    biases = np.linspace(0.01, 0.3, 16) if bias_variances is None else np.asarray(bias_variances, dtype=float)
    weights = np.linspace(0.5, 4.0, 16) if weight_variances is None else np.asarray(weight_variances, dtype=float)
    if biases.ndim != 1 or weights.ndim != 1 or biases.size < 2 or weights.size < 2:
        raise PlotError("the phase diagram needs at least two bias variances and two weight variances")
    grid = depth_scale_grid(act, biases.tolist(), weights.tolist())
    edge_biases = np.linspace(0.0, float(biases.max()), edge_points)
    line = edge_of_chaos(act, edge_biases.tolist())
    return PhaseData(str(act), tuple(biases.tolist()), tuple(weights.tolist()), tuple(map(tuple, grid.tolist())),
                     tuple(p.bias_variance for p in line), tuple(p.weight_variance for p in line))


def phase_figure(data: PhaseData, *, title: str = "") -> Figure:
    r"""Contours of :math:`\xi_c` (log-spaced levels) in :math:`(\sigma_b^2, \sigma_w^2)` with the edge of
    chaos drawn on top (gid ``"edge-of-chaos"``); ordered below the line, chaotic above."""
    if not isinstance(data, PhaseData):
        raise PlotError(f"phase_figure needs PhaseData (varprop.plot.phase_data), got {data!r}")
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    scales = np.array(data.depth_scales, dtype=float)
    finite = scales[np.isfinite(scales) & (scales > 0)]
    if finite.size == 0:
        raise PlotError("the phase diagram has no finite depth scale to draw")
    shown = np.clip(np.where(np.isfinite(scales), scales, finite.max()), finite.min(), None)
    low, high = math.floor(math.log10(finite.min())), math.ceil(math.log10(finite.max()))
    levels = np.logspace(low, high, 4 * (high - low) + 1)
    with matplotlib.rc_context({"font.size": _FONT, "legend.fontsize": _FONT - 1}):
        figure = Figure(figsize=(_PAGE_WIDTH * 0.75, _PAGE_WIDTH * 0.6), dpi=100, layout="constrained")
        FigureCanvasAgg(figure)
        ax = figure.subplots()
        filled = ax.contourf(data.bias_variances, data.weight_variances, shown, levels=levels, norm=LogNorm(),
                             cmap="viridis")
        filled.set_gid("depth-scale")
        figure.colorbar(filled, ax=ax, label=r"depth scale $\xi_c$ (layers)")
        ax.plot(data.edge_bias_variances, data.edge_weight_variances, color="white", linewidth=2.0, gid="edge-of-chaos",
                label=r"edge of chaos $\chi_1 = 1$")
        ax.set_xlim(min(data.bias_variances), max(data.bias_variances))
        ax.set_ylim(min(data.weight_variances), max(data.weight_variances))
        ax.text(0.97, 0.95, "chaotic", transform=ax.transAxes, ha="right", va="top", color="white")
        ax.text(0.97, 0.05, "ordered", transform=ax.transAxes, ha="right", va="bottom", color="white")
        ax.set_xlabel(r"$\sigma_b^2$")
        ax.set_ylabel(r"$\sigma_w^2$")
        ax.legend(loc="upper left", frameon=False, labelcolor="white")
        text = title or (f"{data.activation}: depth scale of correlations and the edge of chaos "
                         "(Schoenholz et al. 2017, Figs. 1-2)")
        figure.suptitle(textwrap.fill(text, int(_PAGE_WIDTH * 0.75 * 14)), fontsize=_FONT)
    return figure


__all__ += ["CMapData", "PhaseData", "c_map_data", "c_map_figure", "phase_data", "phase_figure"]
