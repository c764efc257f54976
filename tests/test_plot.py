"""Propagation figures: the picture shows exactly the numbers, and the scale follows the numbers.

The comparison helper reads the plotted data back from the artists (theory Line2D, Monte Carlo
ErrorbarContainer) and lists every disagreement with the PropagationData; it is shown to catch
altered data, so a passing comparison means the figure draws what the numbers say.
"""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer

from varprop import montecarlo
from varprop.errors import VarpropError
from varprop.network import mlp
from varprop.derive import EXACTNESS
from varprop.plot import LINESTYLES, PANELS, THEORY_WORDS, PlotError, PropagationData, propagation_data, propagation_figure, save_figure
from varprop.weights import he, torch_linear_default

WIDTHS = [64] * 7  # depth 6
SAMPLES = 1000
PANEL_OBSERVABLES = [observable for observable, _ in PANELS.values()]


def _series(init, label):
    network = mlp(WIDTHS, "relu", init)
    return [propagation_data(network, o, samples=SAMPLES, seed=1, label=label) for o in PANEL_OBSERVABLES]


@pytest.fixture(scope="module")
def he_series():
    return _series(he(), "He (kaiming normal)")


@pytest.fixture(scope="module")
def torch_series():
    return _series(torch_linear_default(bias=False), "PyTorch nn.Linear default")


def _plotted(figure):
    """{(observable, label): arrays read back from the artists of the figure}."""
    found = {}
    for ax in figure.axes:
        observable = ax.get_gid()
        theory = {
            line.get_gid().removeprefix("theory:"): line
            for line in ax.lines
            if (line.get_gid() or "").startswith("theory:")
        }
        for container in ax.containers:
            assert isinstance(container, ErrorbarContainer)
            label = container.get_label()
            data_line, _caps, (bars,) = container.lines
            segments = np.asarray(bars.get_segments())  # one [[x, low], [x, high]] per layer
            found[(observable, label)] = {
                "theory_x": np.asarray(theory[label].get_xdata(), dtype=float),
                "theory_y": np.asarray(theory[label].get_ydata(), dtype=float),
                "x": np.asarray(data_line.get_xdata(), dtype=float),
                "y": np.asarray(data_line.get_ydata(), dtype=float),
                "low": segments[:, 0, 1],
                "high": segments[:, 1, 1],
            }
    return found


def _mismatches(figure, series):
    """Every way in which ``figure`` does not draw exactly ``series`` (empty when it does)."""
    plotted = _plotted(figure)
    problems = []
    if len(plotted) != len(series):
        problems.append(f"{len(plotted)} series plotted, {len(series)} given")
    for data in series:
        key = (data.observable, data.network_label)
        if key not in plotted:
            problems.append(f"{key} not plotted")
            continue
        got = plotted[key]
        layers = np.asarray(data.layers, dtype=float)
        est, se = np.asarray(data.estimated), np.asarray(data.se)
        expected = {
            "theory_x": layers,
            "theory_y": np.asarray(data.predicted),
            "x": layers,
            "y": est,
            "low": est - 2 * se,
            "high": est + 2 * se,
        }
        for name, want in expected.items():
            if got[name].shape != want.shape or not np.allclose(got[name], want, rtol=1e-12, atol=0):
                problems.append(f"{key} {name}: plotted {got[name]}, data {want}")
    return problems


def _axes(figure, observable):
    (ax,) = [ax for ax in figure.axes if ax.get_gid() == observable]
    return ax


# --- the figure draws the numbers ------------------------------------------------------------


def test_plotted_data_equal_the_numbers(he_series, torch_series):
    series = he_series + torch_series
    figure = propagation_figure(series, title="relu MLP, depth 6")
    assert _mismatches(figure, series) == []
    assert [ax.get_gid() for ax in figure.axes] == PANEL_OBSERVABLES
    labels = [he_series[0].network_label, torch_series[0].network_label]
    # One legend for the figure: the series, then what each line style means.
    classes = sorted({d.exactness for d in series}, key=EXACTNESS.index)
    assert [t.get_text() for t in figure.legends[0].get_texts()] == labels + [THEORY_WORDS[c] for c in classes]
    for ax in figure.axes:
        assert ax.get_xlabel() == "layer $l$"
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 6]
        assert ticks == [1, 2, 3, 4, 5, 6]
    # One colour per network, the same for its line and its points, in every panel.
    for label in labels:
        colours = set()
        for ax in figure.axes:
            (line,) = [l for l in ax.lines if l.get_gid() == f"theory:{label}"]
            (points,) = [c for c in ax.containers if c.get_label() == label]
            colours |= {line.get_color(), points.lines[0].get_color()}
        assert len(colours) == 1


@pytest.mark.parametrize(
    "alter",
    [
        lambda d: {"estimated": d.estimated[:2] + (d.estimated[2] * 1.1,) + d.estimated[3:]},
        lambda d: {"predicted": tuple(p * 2 for p in d.predicted)},
        lambda d: {"se": tuple(s * 1.5 for s in d.se)},
        lambda d: {"layers": tuple(l + 1 for l in d.layers)},
        lambda d: {"network_label": "someone else"},
    ],
    ids=["estimate", "prediction", "se", "layers", "label"],
)
def test_comparison_detects_a_figure_of_other_numbers(he_series, alter):
    altered = [dataclasses.replace(d, **alter(d)) for d in he_series]
    assert _mismatches(propagation_figure(altered), he_series) != []


def test_comparison_detects_a_missing_series(he_series, torch_series):
    assert _mismatches(propagation_figure(he_series), he_series + torch_series) != []


def test_data_are_the_engines_numbers(torch_series):
    forward = torch_series[0]
    assert forward.observable == "y_second_moment" and forward.layers == (1, 2, 3, 4, 5, 6)
    # PyTorch's default has Var[w] = 1/(3 n): E[y^2] = n/(3n) * E[x^2] shrinks by 1/6 per relu layer.
    assert forward.predicted == pytest.approx([sp.Rational(1, 3) / 6**k for k in range(6)], rel=1e-15)
    network = mlp(WIDTHS, "relu", torch_linear_default(bias=False))
    drawn = montecarlo.sample(network, SAMPLES, seed=1)
    estimates = [montecarlo.estimate(drawn, "y_second_moment", l) for l in range(1, 7)]
    assert forward.estimated == tuple(e.value for e in estimates)
    assert forward.se == tuple(e.se for e in estimates)
    assert forward.samples == SAMPLES


# --- scale --------------------------------------------------------------------------------------


def test_scale_follows_the_spread_of_the_values(he_series, torch_series):
    torch_figure = propagation_figure(torch_series)
    assert _axes(torch_figure, "y_second_moment").get_yscale() == "log"  # spans 1/3 .. 1/3 * 6^-5
    assert _axes(torch_figure, "dx_second_moment").get_yscale() == "log"
    assert _axes(torch_figure, "dw_second_moment").get_yscale() == "linear"  # flat across layers
    he_figure = propagation_figure(he_series)
    assert {ax.get_yscale() for ax in he_figure.axes} == {"linear"}
    assert all(ax.get_ylim()[0] == 0 for ax in he_figure.axes)  # a flat line is shown from zero
    assert {ax.get_yscale() for ax in propagation_figure(he_series, log=True).axes} == {"log"}
    assert {ax.get_yscale() for ax in propagation_figure(torch_series, log=False).axes} == {"linear"}


def _signed(values, observable="x_mean"):
    n = len(values)
    return PropagationData("signed", observable, tuple(range(1, n + 1)), values, values, (0.01,) * n, 10)


def test_non_positive_values_fall_back_to_linear():
    data = _signed((-50.0, 1.0, 100.0))  # spread > 10 but cannot go on a log axis
    assert propagation_figure([data]).axes[0].get_yscale() == "linear"
    with pytest.warns(UserWarning, match="linear"):
        figure = propagation_figure([data], log=True)
    assert figure.axes[0].get_yscale() == "linear"
    assert _mismatches(figure, [data]) == []


# --- files ----------------------------------------------------------------------------------------


def test_save_writes_valid_png_and_svg(he_series, torch_series, tmp_path):
    for name, series in [("he", he_series), ("torch", torch_series)]:
        png, svg = save_figure(propagation_figure(series, title=name), tmp_path / "out" / name)
        assert png == tmp_path / "out" / f"{name}.png" and svg == tmp_path / "out" / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        text = svg.read_text()
        assert "<svg" in text and text.rstrip().endswith("</svg>")


def test_svg_is_reproducible(he_series, tmp_path):
    _, first = save_figure(propagation_figure(he_series[:1]), tmp_path / "a")
    _, second = save_figure(propagation_figure(he_series[:1]), tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()


def test_no_pyplot_and_an_agg_canvas(he_series):
    assert isinstance(propagation_figure(he_series).canvas, FigureCanvasAgg)
    code = (
        "import sys; from varprop.plot import *; from varprop.network import mlp\n"
        "d = propagation_data(mlp([8, 8, 8]), 'forward', samples=20)\n"
        "propagation_figure([d]).canvas.draw()\n"
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- errors ---------------------------------------------------------------------------------------


def test_bad_observable_names_the_value_and_the_accepted_ones():
    with pytest.raises(PlotError, match=r"'y_squared'.*accepted: .*y_second_moment.*dw_second_moment") as info:
        propagation_data(mlp([8, 8]), "y_squared", samples=10)
    assert isinstance(info.value, VarpropError)
    # the correlation of a pair is drawable, but only for a network whose inputs describe a pair
    with pytest.raises(PlotError, match="y_correlation.*needs a pair of inputs"):
        propagation_data(mlp([8, 8, 8]), "y_correlation", samples=10)


def test_panel_names_stand_for_their_observables():
    data = propagation_data(mlp([8, 8, 8]), "backward", samples=20)
    assert data.observable == "dx_second_moment"
    assert "relu" in data.network_label  # default label: activation, widths, weight law


def test_empty_or_inconsistent_input_is_refused(he_series):
    with pytest.raises(PlotError, match="at least one"):
        propagation_figure([])
    with pytest.raises(PlotError, match="PropagationData"):
        propagation_figure([1.0])
    with pytest.raises(PlotError, match="labels must differ"):
        propagation_figure([he_series[0], he_series[0]])
    with pytest.raises(PlotError, match="2 values but there are 3 layers"):
        PropagationData("x", "x_mean", (1, 2, 3), (1.0, 2.0), (1.0, 2.0, 3.0), (0.1,) * 3, 10)
    with pytest.raises(PlotError, match="finite"):
        _signed((1.0, float("nan")))
    with pytest.raises(PlotError, match="integer widths"):
        propagation_data(mlp([sp.Symbol("n"), 8]), "forward")
    with pytest.raises(PlotError, match="Figure"):
        save_figure("not a figure", "out")


# --- layout and line styles ---------------------------------------------------------------------


def test_figures_fit_an_a4_text_width_and_panels_stay_readable(he_series):
    figure = propagation_figure(he_series)
    width, height = figure.get_size_inches()
    assert width <= 6.7 + 1e-9  # A4 less 2 cm margins: printed at its own size, 8.5 pt text
    panel_widths = [ax.get_position().width * width for ax in figure.axes]
    assert min(panel_widths) > 2.2  # three panels in one row of 6.7 in would leave under 2 in each
    assert len({round(ax.get_position().y0, 3) for ax in figure.axes}) == 2  # two rows: 2 + 1


def test_each_exactness_class_has_its_line_style(he_series):
    # He's forward and backward moments are exact; the weight gradient is asymptotic (gradient independence).
    figure = propagation_figure(he_series)
    for data in he_series:
        (ax,) = [ax for ax in figure.axes if ax.get_gid() == data.observable]
        (line,) = [l for l in ax.lines if l.get_gid() == f"theory:{data.network_label}"]
        assert line.get_linestyle() == LINESTYLES[data.exactness]
    assert {d.exactness for d in he_series} >= {"exact", "asymptotic"}
    assert len(set(LINESTYLES[c] for c in ("exact", "asymptotic", "approximation"))) == 3
    with pytest.raises(PlotError, match="exactness must be one of"):
        dataclasses.replace(he_series[0], exactness="roughly")


def test_the_correlation_of_a_pair_is_drawn_with_its_exactness():
    from varprop.network import FixedInput

    net = mlp([8, 8, 8, 8], "relu", inputs=FixedInput.pair(8, 0))
    data = propagation_data(net, "y_correlation", samples=50, label="relu, He")
    # y_1 keeps the inputs' correlation 0 (exact), y_2 has relu's c-map at 0, 1/pi (exact for Gaussian weights),
    # y_3 the c-map iterated (infinite width): the line is labelled with the weakest class
    assert data.predicted[:2] == (0.0, pytest.approx(1 / np.pi, rel=1e-15)) and data.exactness == "asymptotic"
    figure = propagation_figure([data])
    assert figure.axes[0].get_gid() == "y_correlation"
