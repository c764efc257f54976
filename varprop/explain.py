r"""Answers to the questions people ask about initialisation: derivation, measured evidence, a plot.

Each topic builds its answer from computed results only: the derivations come from
:mod:`varprop.derive`, the table from :mod:`varprop.montecarlo` checks of claims built from those
derivations, and every number in the text is read from one of the two. Nothing here is retyped from
a paper. Formulas in the text are sympy objects (:func:`varprop.derive.derivation.prose`), typeset by
the printers: LaTeX in ``.tex``, LaTeX math in Markdown, Unicode in a terminal.

Every topic can be asked about another network size: :func:`answer` takes the ``width`` of the hidden
layers and the ``depth`` (number of dense layers) of the networks it measures.

>>> from varprop.explain import answer
>>> print(answer("why-half", width=16).text())          # doctest: +SKIP
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sympy as sp

from .activations import activation
from .catalogue import claim_from_derivation
from .claims import Claim, ClaimError, ClaimFamily
from .derive import Derivation, Expect, derive, Q, Variance, symmetry_lemma, backward, condition, forward, glorot, moments, ratio, weight_gradient
from .derive.derivation import latex_text, prose, prose_latex, prose_markdown
from .derive.gaussian import evaluate
from .errors import DerivationError
from .montecarlo import MEASURED, CheckResult, check_all
from .montecarlo.verdict import FAIL, INCONCLUSIVE, PASS, format_z
from .network import FixedInput, GaussianInput, Network, mlp
from .lawplot import LawData, law_data, law_figure
from .plot import PropagationData, propagation_data, propagation_figure
from .weights import glorot as glorot_init
from .weights import N_IN, he, lecun, torch_linear_default

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Topic", "Answer", "Series", "Settings", "TOPICS", "answer", "DEFAULT_RTOL", "DEFAULT_ALPHA",
           "DEFAULT_WIDTH", "MAX_WIDTH", "MAX_DEPTH", "reason", "settings_for", "tolerance_sentence"]

#: The relative tolerance the topics' checks resolve (the catalogue resolves 1 %: see the report).
DEFAULT_RTOL = 0.05
#: The family-wise false-alarm rate of each topic's checks (Holm).
DEFAULT_ALPHA = 0.05
#: The hidden width of the networks the topics measure, unless asked otherwise.
DEFAULT_WIDTH = 32
#: Bounds on what a user may ask for, so a request cannot run for hours.
MAX_WIDTH = 1024
MAX_DEPTH = 40
#: Networks per series in a figure.
FIGURE_SAMPLES = 2000


@dataclass(frozen=True)
class Settings:
    """What an answer was computed with: hidden width, depth, seed and tolerance (``None``: the topic's own)."""

    width: int
    depth: int
    seed: int
    rtol: float
    alpha: float = DEFAULT_ALPHA


@dataclass(frozen=True)
class Topic:
    """A question, the function that answers it, and the depth it measures unless asked otherwise."""

    name: str
    title: str
    question: str
    build: Callable[[Settings], Answer] = field(repr=False, compare=False)
    depth: int = 3
    min_depth: int = 2


@dataclass(frozen=True)
class Series:
    """One network whose per-layer propagation the answer's figure shows.

    ``linear_regime`` draws Glorot's linear-regime prediction, as the claim about it does.
    """

    label: str
    network: Network
    observables: tuple[str, ...] = ("y_second_moment",)
    linear_regime: bool = False


@dataclass(frozen=True)
class Answer:
    """A topic's answer: plain-words paragraphs, derivations, a table of checks and the plotted series.

    ``headline`` is the two-line answer of the report's summary page and ``key`` the index of the
    check whose number and verdict it quotes.
    """

    topic: Topic
    paragraphs: tuple[str, ...]
    derivations: tuple[Derivation, ...]
    checks: tuple[CheckResult, ...]
    series: tuple[Series, ...]
    numbers: Mapping[str, float]
    headline: str = ""
    key: int = 0
    settings: Settings | None = None
    laws: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (label, widths): the figure shows these laws instead

    def figure_data(self, *, samples: int = FIGURE_SAMPLES, seed: int | None = None) -> tuple[PropagationData | LawData, ...]:
        """The numbers behind the answer's figure: theory and Monte Carlo per layer for every series, or,
        for an answer about laws, the sampled values and the exact density of each law."""
        seed = (self.settings.seed if self.settings else 0) if seed is None else seed
        if self.laws:
            return tuple(law_data(label, widths, samples=samples, seed=seed + index)
                         for index, (label, widths) in enumerate(self.laws))
        return tuple(
            propagation_data(series.network, observable, samples=samples, seed=seed, label=series.label,
                             linear_regime=series.linear_regime)
            for series in self.series
            for observable in series.observables
        )

    def figure(self, data: Sequence[PropagationData] | None = None, **kwargs: int) -> Figure:
        """The answer's figure (matplotlib), from ``data`` or freshly sampled."""
        data = data if data is not None else self.figure_data(**kwargs)
        if data and isinstance(data[0], LawData):
            return law_figure(data, title=self.topic.title)
        return propagation_figure(data if data is not None else self.figure_data(**kwargs), title=self.topic.title)

    @property
    def tolerance(self) -> str:
        """One sentence: the tolerance and false-alarm rate the table's verdicts use."""
        rtol, alpha = (self.settings.rtol, self.settings.alpha) if self.settings else (DEFAULT_RTOL, DEFAULT_ALPHA)
        return tolerance_sentence(rtol, alpha, len(self.checks))

    def text(self, width: int = 100, data: Sequence[PropagationData] | None = None) -> str:
        """Plain text for a terminal: answer, derivations, table of checks and the figure's numbers."""
        out = [self.topic.title, "=" * len(self.topic.title), "", textwrap.fill(self.topic.question, width), ""]
        for paragraph in self.paragraphs:
            out += [textwrap.fill(paragraph, width), ""]
        out += ["Derivations", "-----------", ""]
        for derivation in self.derivations:
            out += [derivation.text()]
        out += ["Monte Carlo checks", "------------------", textwrap.fill(self.tolerance, width), "",
                _text_table(self.checks), ""]
        out += ["Figure (numbers)", "----------------", _series_table(data if data is not None else self.figure_data()),
                "", "varprop explain --plot DIR (or varprop report) draws this as PNG and SVG."]
        return "\n".join(out) + "\n"

    def markdown(self, figure: str | None = None) -> str:
        """Markdown: the answer, the derivations (LaTeX math), the table and (if given) the figure."""
        out = [f"## {self.topic.title}", "", f"*{prose_markdown(self.topic.question)}*", ""]
        for paragraph in self.paragraphs:
            out += [prose_markdown(paragraph), ""]
        if figure:
            out += [f"![{self.topic.title}: theory against Monte Carlo, per layer]({figure})", ""]
        out += ["#### Monte Carlo checks", "", self.tolerance, "", _markdown_table(self.checks), ""]
        for derivation in self.derivations:
            out += [derivation.markdown()]
        return "\n".join(out)

    def latex(self, figure: str | None = None) -> str:
        """A LaTeX section (amsmath, graphicx, booktabs, tabularx) for the report."""
        out = [f"\\section{{{latex_text(self.topic.title)}}}\\label{{topic:{self.topic.name}}}",
               f"\\emph{{{prose_latex(self.topic.question)}}}", ""]
        out += [prose_latex(p) + "\n" for p in self.paragraphs]
        if figure:
            out += ["\\begin{center}", f"\\includegraphics{{{figure}}}", "\\end{center}"]
        out += ["\\subsection*{Monte Carlo checks}", latex_text(self.tolerance), "", _latex_table(self.checks)]
        out += [f"\\subsection*{{Derivations}}\\label{{derivation:{self.topic.name}}}"]
        for derivation in self.derivations:
            out += [f"\\subsubsection*{{{latex_text(derivation.title)}}}", prose_latex(derivation.summary), "",
                    derivation.latex()]
        return "\n".join(out) + "\n"


# --- rendering helpers ---------------------------------------------------------------------------


def tolerance_sentence(rtol: float, alpha: float, count: int) -> str:
    """``PASS means ...``: how to read a table of verdicts checked at ``rtol`` with false-alarm rate ``alpha``."""
    return (f"Tolerance: PASS means the estimate agrees with the prediction and the check resolves a relative "
            f"error of {_percent(rtol)} (resolution ≤ {_percent(rtol)}); the {count} checks of this table hold "
            f"their family-wise false-alarm rate at {_percent(alpha)} (Holm). Asymptotic claims pass when the "
            "deviation shrinks at least like 1/width; approximations are MEASURED, never failed.")


def _percent(value: float) -> str:
    return f"{100 * value:g}%"


def reason(result: CheckResult) -> str:
    """The one-line reason for a verdict, read from the measurements (not retyped)."""
    m = result.primary
    if result.outcome == MEASURED or m.verdict is None and result.shrink is None:
        spread = ", ".join(f"{100 * x.deviation:+.1f}% at width {x.width}" for x in sorted(result.measurements, key=lambda x: x.width))
        return f"approximation, no verdict: deviation {spread}"
    if result.shrink is not None:
        ordered = sorted(result.measurements, key=lambda x: x.width)
        trend = f"{100 * ordered[0].deviation:+.1f}% at width {ordered[0].width} to {100 * ordered[-1].deviation:+.1f}% at {ordered[-1].width}"
        if result.outcome == PASS:
            return f"asymptotic: deviation shrinks like 1/width ({trend})"
        if result.shrink.rejected:
            return f"asymptotic: deviation does not shrink like 1/width ({trend})"
    v = m.verdict
    if v is None:
        return result.message
    if result.outcome == PASS:
        return f"agrees (|z| ≤ {v.z_crit:.2f}), resolution {100 * v.resolution:.2g}%"
    if result.outcome == FAIL:
        return f"contradicted: |z| = {abs(v.z):.2f} > {v.z_crit:.2f}"
    if result.outcome == INCONCLUSIVE:
        return f"too noisy: resolution {100 * v.resolution:.2g}%; about {v.samples_needed} networks would resolve it"
    return result.message


def _row(r: CheckResult) -> tuple[str, ...]:
    m = r.primary
    z = "" if m.verdict is None else format_z(m.verdict.z)
    return (r.name, r.exactness, str(m.width), str(m.estimate.n), f"{m.claim.value:.4g}",
            f"{m.estimate.value:.4g} ± {m.estimate.se:.2g}", z, r.outcome, reason(r))


_HEADER = ("claim", "exactness", "width", "networks", "prediction", "estimate ± SE", "z", "verdict", "reason")


def _text_table(results: Sequence[CheckResult]) -> str:
    rows = [_HEADER, *(_row(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER) - 1)]
    lines = []
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        lines.append(f"    {row[-1]}" if row is not rows[0] else "-" * len(lines[-1]))
    return "\n".join(lines)


def _series_table(data: Sequence[PropagationData]) -> str:
    """The plotted numbers as text: per series, layer by layer, theory against estimate +- SE."""
    lines = []
    for d in data:
        if isinstance(d, LawData):
            lines.append(f"{d.network_label}: log M_L of {d.logs.size} live networks ({d.dead} of {d.samples} had a dead "
                         f"layer, {d.dead_expected * d.samples:.1f} expected)")
            lines.append(f"  {'quantile':>8}  {'exact':>10}  {'sampled':>10}")
            lines += [f"  {q:>8.2f}  {exact:>10.4f}  {sampled:>10.4f}" for q, exact, sampled in d.quantiles()]
            continue
        lines.append(f"{d.network_label}: {d.observable} ({d.samples} networks; theory {d.exactness})")
        lines.append(f"  {'layer':>5}  {'theory':>12}  {'Monte Carlo ± SE':>26}")
        for layer, predicted, estimated, se in zip(d.layers, d.predicted, d.estimated, d.se):
            lines.append(f"  {layer:>5}  {predicted:>12.5g}  {estimated:>14.5g} ± {se:<9.2g}")
    return "\n".join(lines)


def _markdown_table(results: Sequence[CheckResult]) -> str:
    rows = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    rows += ["| " + " | ".join(cell.replace("|", "\\|") for cell in _row(r)) + " |" for r in results]
    return "\n".join(rows)


def _latex_table(results: Sequence[CheckResult]) -> str:
    """A full-width table: one row per claim, its reason on a line of its own below it."""
    rows = ["\\noindent\\begin{tabularx}{\\linewidth}{@{}Xlrrrrrl@{}}", "\\toprule",
            " & ".join(_HEADER[:-1]).replace("±", "$\\pm$") + " \\\\", "\\midrule"]
    for r in results:
        cells = [latex_text(c) for c in _row(r)]
        rows.append(" & ".join(cells[:-1]) + " \\\\*")
        rows.append(f"\\multicolumn{{8}}{{@{{\\quad}}p{{0.9\\textwidth}}@{{}}}}{{\\emph{{{cells[-1]}}}}} \\\\[2pt]")
    rows += ["\\bottomrule", "\\end{tabularx}"]
    return "{\\small\\setlength{\\tabcolsep}{3.5pt}\n" + "\n".join(rows) + "\n}\n"


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _measured(result: CheckResult) -> str:
    """'0.5613 ± 0.0016 (prediction 0.5642, width 32, PASS)' for a check's primary width."""
    m = result.primary
    return (f"{m.estimate.value:.4g} ± {m.estimate.se:.2g} (prediction {m.claim.value:.4g}, "
            f"width {m.width}, {result.outcome})")


def _claim(name: str, network: Network, observable: str, layer: int, **kwargs: object) -> Claim:
    return claim_from_derivation(name, network, observable, layer, **kwargs)


def _check(claims: Sequence[Claim | ClaimFamily], settings: Settings) -> tuple[CheckResult, ...]:
    return tuple(check_all(list(claims), seed=settings.seed, rtol=settings.rtol, alpha=settings.alpha))


def _sym(name: str) -> sp.Symbol:
    return sp.Symbol(name)


def _E(expr: sp.Expr) -> Expect:
    return Expect(expr)


def _V(expr: sp.Expr) -> Variance:
    return Variance(expr)


# --- topics --------------------------------------------------------------------------------------

_RELU = activation("relu")
_Y = sp.Symbol("y")
_N_SYM = sp.Symbol("n", positive=True)


def _relu_of(expr: sp.Expr) -> sp.Expr:
    return sp.Function("relu")(expr)


class _LeakyRelu(sp.Function):
    """leaky relu applied to a quantity, printed as a word (``leaky_relu(y)``, :math:`\\operatorname{leaky\\ relu}(y)`)."""

    nargs = 1

    def _latex(self, printer: object, exp: object = None) -> str:
        head = r"\operatorname{leaky\ relu}" + ("" if exp is None else f"^{{{exp}}}")
        return f"{head}\\left({printer._print(self.args[0])}\\right)"

    def _sympystr(self, printer: object) -> str:
        return f"leaky_relu({printer._print(self.args[0])})"


def _leaky(expr: sp.Expr) -> sp.Expr:
    return _LeakyRelu(expr)


def _grad(name: str) -> sp.Expr:
    """He et al.'s gradient notation: ``Delta_W`` is the gradient with respect to W_l."""
    return sp.IndexedBase(f"Delta_{name}")[sp.Symbol("l")]


def _x(layer: int) -> sp.Symbol:
    return sp.Symbol(f"x_{layer}")


def _y(layer: int | str) -> sp.Symbol:
    return sp.Symbol(f"y_{layer}")


def _why_half(settings: Settings) -> Answer:
    width, depth = settings.width, settings.depth
    relu_moment = moments(_RELU).second_moment.expr
    a = sp.Symbol("a", real=True)
    slope = sp.Rational(1, 5)
    leaky = activation("leaky_relu", a=slope)
    normal = mlp([width] * (depth + 1), _RELU, he())
    uniform = mlp([width] * (depth + 1), _RELU, he(distribution="uniform"))
    leaky_net = mlp([width] * (depth + 1), leaky, he(a=slope))
    claims = [
        _claim("relu keeps half (normal)", normal, "x_second_moment", 2),
        _claim("relu keeps half (uniform)", uniform, "x_second_moment", 2),
        _claim(f"leaky relu keeps (1+a^2)/2, a={float(slope):g}", leaky_net, "x_second_moment", 2),
        _claim(f"He normal: E[y_{depth}^2]", normal, "y_second_moment", depth),
        _claim(f"He uniform: E[y_{depth}^2]", uniform, "y_second_moment", depth),
    ]
    checks = _check(claims, settings)
    leaky_condition = condition(activation("leaky_relu", a=None))
    leaky_constant = symmetry_lemma(activation("leaky_relu", a=a)).constant  # phi(y)^2 + phi(-y)^2 = c y^2
    ratio_normal = checks[0].primary.estimate.value / evaluate(normal.dense_layers[0].fan_in * normal.dense_layers[0].weights.variance).value
    kept = sp.simplify(relu_moment / Q)
    n_var = sp.Symbol("n") * _V(sp.Symbol("w"))
    paragraphs = (
        prose("The ", kept, " is the fraction of a pre-activation's second moment that relu keeps. Pointwise, ",
              sp.Eq(_relu_of(_Y) ** 2 + _relu_of(-_Y) ** 2, _Y**2), ", so for any y whose law is symmetric about "
              "zero the two halves carry equal mass: ", sp.Eq(_E(_relu_of(_Y) ** 2), relu_moment.subs(Q, _V(_Y))),
              ". Nothing else is used."),
        prose("Symmetry of y comes from zero-mean, symmetric weights (y is a sum of terms w x, each w symmetric and "
              f"independent of x). Gaussianity is not needed: uniform weights give the same fraction, exactly and "
              f"at every width. Measured at the second layer of a width-{width} He network, ",
              _E(_x(2) ** 2), f" = {_measured(checks[0])} with normal weights and {_measured(checks[1])} with "
              "uniform weights."),
        prose("For leaky relu with slope a the pointwise identity becomes ",
              sp.Eq(_leaky(_Y) ** 2 + _leaky(-_Y) ** 2, leaky_constant * _Y**2),
              ", so the fraction kept is ", leaky_constant * kept,
              " and the condition is ", sp.Eq(leaky_constant * kept * n_var, 1),
              ", i.e. ", sp.Eq(_V(sp.Symbol("w")), leaky_condition.result), " (He et al. 2015, eq. 15). For ",
              sp.Eq(a, slope), f": {_measured(checks[2])}."),
    )
    numbers = {
        "relu_fraction_normal": checks[0].primary.estimate.value / 2.0,
        "relu_fraction_uniform": checks[1].primary.estimate.value / 2.0,
        "ratio_normal": ratio_normal,
    }
    headline = prose("Relu keeps ", kept, " of a symmetric pre-activation's second moment, because ",
                     sp.Eq(_relu_of(_Y) ** 2 + _relu_of(-_Y) ** 2, _Y**2), "; the weights need to be symmetric, "
                     "not Gaussian. Measured ", _E(_x(2) ** 2), f" = {_measured(checks[1])} with uniform weights.")
    return Answer(TOPICS["why-half"], paragraphs, (forward(_RELU), leaky_condition), checks,
                  (Series("relu, He normal", normal), Series("relu, He uniform", uniform),
                   Series(f"leaky relu a={float(slope):g}, He", leaky_net)), numbers, headline, 1, settings)


def _why_not_zero_mean(settings: Settings) -> Answer:
    width, depth = settings.width, settings.depth
    fixed = FixedInput(tuple(1.0 if j % 2 == 0 else -1.0 for j in range(width)))
    net = mlp([width] * (min(depth, 3) + 1), _RELU, he(), inputs=fixed)
    shifted = activation("shifted_relu")  # relu - 1/2
    deep = max(depth, 3)
    family_width = 4 * width
    sweep = tuple(sorted({max(2, width // 4), width, family_width}))
    shifted_name = f"relu - 1/2, He init: E[y_{deep}^2]"
    shifted_family = ClaimFamily(
        shifted_name, "infinite-width recursion for the shifted relu",
        lambda n: _claim(shifted_name, mlp([n] * (deep + 1), shifted, he()), "y_second_moment", deep),
        width=family_width, sweep=sweep)
    claims = [
        _claim("E[y_1] = 0 (zero-mean weights)", net, "y_mean", 1),
        _claim("relu mean E[x_2]", net, "x_mean", 2),
        _claim("E[x_2^2] = Var[y_1]/2", net, "x_second_moment", 2),
        shifted_family,
    ]
    checks = _check(claims, settings)
    mean_formula = moments(_RELU).mean.expr
    q = sp.Symbol("q", positive=True)
    # Fixed point of the shifted-relu variance map under He init: q = 2 E[(relu(z) - 1/2)^2], z ~ N(0, q).
    second = moments(shifted).second_moment.expr.subs(Q, q)
    fixed_points = [s for s in sp.solve(sp.Eq(q, 2 * second), q) if s.is_positive]
    fixed_point = fixed_points[0]
    needed = condition(shifted).result.subs({sp.Symbol("q_star", positive=True): 1, N_IN: 1})  # n Var[w]
    he_scale = condition(_RELU).result * N_IN  # He's n Var[w] (2)
    he_q = he_scale * GaussianInput().second_moment  # Var[y] under He's init with unit-variance inputs
    mean_at_he = sp.simplify(mean_formula.subs(Q, he_q))
    w, x = sp.Symbol("w"), sp.Symbol("x")
    shift = sp.simplify(shifted.expr.subs(sp.Symbol("x", real=True), 0) if False else -sp.Rational(1, 2))
    shifted_sym = _relu_of(_Y) + shift
    ordered = sorted(checks[3].measurements, key=lambda m: m.width)
    paragraphs = (
        prose("He et al. never ask for zero-mean activations. Their target is ", _V(sp.Symbol("y_l")),
              ", the variance of the pre-activations, and those are zero-mean because the weights are: ",
              sp.Eq(_E(sp.Symbol("y_l")), sp.Symbol("n") * _E(w) * _E(x)), " = 0. Measured: ", _E(_y(1)),
              f" = {_measured(checks[0])}."),
        prose("The activations ", sp.Eq(sp.Symbol("x_l"), _relu_of(sp.Symbol("y_{l-1}"))), " are not zero-mean: ",
              sp.Eq(_E(_relu_of(_Y)), mean_formula.subs(Q, _V(_Y))), ", which is ", mean_at_he,
              f" = {_fmt(float(mean_at_he))} when ", sp.Eq(_V(_Y), he_q), ", as under He's init. Measured: ",
              _E(_x(2)), f" = {_measured(checks[1])}. That is why the recursion uses ", _E(x**2), " and not ", _V(x),
              ": ", sp.Eq(_V(w * x), _V(w) * _E(x**2)), " needs only ", sp.Eq(_E(w), 0), ", not ", sp.Eq(_E(x), 0),
              " (He et al. make this remark after eq. 7). With a non-zero weight mean the variance gains ",
              sp.Symbol("n") * _E(w) ** 2 * _V(x), " and y itself stops being centred (second derivation below)."),
        prose("Subtracting ", -shift, " from relu does not give a cleaner recursion: ",
              sp.Eq(_E(shifted_sym ** 2), second.subs(q, _V(_Y))), " is no longer a fixed fraction of ", _V(_Y),
              ", so no scale-free condition exists. Keeping ", sp.Eq(_V(_Y), 1), " needs ",
              sp.Eq(sp.Symbol("n") * _V(w), sp.Float(float(needed), 4)), " (instead of He's ", he_scale, "); with He's ",
              sp.Eq(_V(w), condition(_RELU).result.subs(N_IN, sp.Symbol("n"))),
              " the variance is driven towards the fixed point ", sp.Eq(sp.Symbol("q_star"), fixed_point),
              f" = {_fmt(float(fixed_point))}. This recursion assumes Gaussian pre-activations, i.e. infinitely "
              f"wide layers (the dashed line of the figure): at layer {deep} the measured ", _E(_y(deep) ** 2),
              " exceeds it by " + ", ".join(f"{100 * m.deviation:+.1f}% at width {m.width}" for m in ordered)
              + f" ({checks[3].outcome}; {reason(checks[3])})."),
    )
    numbers = {
        "relu_mean": checks[1].primary.estimate.value,
        "relu_mean_se": checks[1].primary.estimate.se,
        "relu_mean_prediction": float(mean_at_he),
        "shifted_fixed_point": float(fixed_point),
        "shifted_weight_scale_for_unit_variance": float(needed),
    }
    headline = prose("It is not: He's condition controls ", _V(sp.Symbol("y_l")), ", and ",
                     sp.Eq(_V(w * x), _V(w) * _E(x**2)), " needs only zero-mean weights. Relu's mean is ",
                     sp.Eq(_E(_relu_of(_Y)), mean_formula.subs(Q, _V(_Y))), f"; measured {_measured(checks[1])}.")
    return Answer(TOPICS["why-not-zero-mean"], paragraphs,
                  (forward(_RELU), forward(_RELU, weight_mean=True), condition(shifted)), checks,
                  (Series("relu, He", mlp([family_width] * (deep + 1), _RELU, he())),
                   Series("relu - 1/2, He", mlp([family_width] * (deep + 1), shifted, he()))),
                  numbers, headline, 1, settings)


def _pre_vs_post(settings: Settings) -> Answer:
    width, depth = settings.width, settings.depth
    net = mlp([width] * (depth + 1), _RELU, he())
    layers = tuple(sorted({2, depth - 1}))
    claims = []
    for layer in layers:
        claims.append(_claim(f"forward E[y_{layer}^2]", net, "y_second_moment", layer))
        claims.append(_claim(f"activations E[x_{layer}^2]", net, "x_second_moment", layer))
        claims.append(_claim(f"activation grad E[(dL/dx_{layer})^2]", net, "dx_second_moment", layer))
        claims.append(_claim(f"weight grad E[(dL/dW_{layer})^2]", net, "dw_second_moment", layer))
    checks = _check(claims, settings)
    weight_grads = [r for r in checks if r.claim.observable_name == "dw_second_moment"]
    spread = max(r.primary.estimate.value for r in weight_grads) / min(r.primary.estimate.value for r in weight_grads)
    l_ = sp.Symbol("l")
    dW, dy = _grad("W"), _grad("y")
    paragraphs = (
        prose("Controlling the pre-activation variance ", _V(sp.Symbol("y_l")), " controls everything downstream "
              "of it. The activations' second moment is ", sp.Eq(_E(sp.Symbol("x_{l+1}") ** 2),
                                                                    moments(_RELU).second_moment.expr.subs(Q, _V(sp.Symbol("y_l")))),
              " (the symmetry lemma), the activation gradients follow He's backward recursion, and the weight "
              "gradient of layer ", l_, " factorises as ", sp.Eq(_E(dW**2), _E(dy**2) * _E(sp.Symbol("x_l") ** 2)),
              ": a backward factor times a forward one, both held constant by the He conditions (derivation below)."),
        prose("Xavier's argument needs zero-mean activations only because it measures size by the variance; the "
              "recursion that matters uses ", _E(sp.Symbol("x") ** 2), ", so relu's non-zero mean changes nothing. "
              f"Measured on a width-{width}, depth-{depth} He network: the weight-gradient second moment at layers "
              + " and ".join(map(str, layers)) + " is "
              + ", ".join(_measured(r) for r in weight_grads)
              + f"; the largest is {_fmt(spread)} times the smallest."),
    )
    numbers = {"weight_gradient_spread": spread,
               **{f"dw_{r.claim.layer}": r.primary.estimate.value for r in weight_grads}}
    headline = prose("Because the weight gradient factorises, ", sp.Eq(_E(dW**2), _E(dy**2) * _E(sp.Symbol("x_l") ** 2)),
                     ": a backward factor times a forward one, both held by He's conditions. Measured "
                     f"{_measured(weight_grads[-1])} at layer {weight_grads[-1].claim.layer}.")
    return Answer(TOPICS["pre-vs-post-activation"], paragraphs, (weight_gradient(_RELU), backward(_RELU)), checks,
                  (Series("relu, He (fan-in)", net, ("y_second_moment", "dx_second_moment", "dw_second_moment")),),
                  numbers, headline, len(checks) - 1, settings)


def _fan_in_vs_fan_out(settings: Settings) -> Answer:
    width, depth = settings.width, settings.depth
    profile = (1, 2, 4, 2, 1, sp.Rational(1, 2))  # widths rise then fall: the two fans differ at every layer
    widths = [max(1, int(width * profile[i % len(profile)])) for i in range(depth + 1)]
    fan_in = mlp(widths, _RELU, he("fan_in"))
    fan_out = mlp(widths, _RELU, he("fan_out"))
    depth = fan_in.depth
    claims = [
        _claim("fan-in: forward E[y_L^2]", fan_in, "y_second_moment", depth),
        _claim("fan-in: backward E[(dL/dx_2)^2]", fan_in, "dx_second_moment", 2),
        _claim("fan-out: forward E[y_L^2]", fan_out, "y_second_moment", depth),
        _claim("fan-out: backward E[(dL/dx_2)^2]", fan_out, "dx_second_moment", 2),
    ]
    checks = _check(claims, settings)
    telescoped = ratio(_RELU)
    n, nhat = sp.IndexedBase("n"), sp.IndexedBase("nhat")
    l_, L = sp.Symbol("l"), sp.Symbol("L")
    kept = sp.simplify(moments(_RELU).second_moment.expr / Q)
    paragraphs = (
        prose("The fan-in condition ", sp.Eq(kept * n[l_] * _V(sp.Symbol("w_l")), 1),
              " keeps the forward signal's variance; the fan-out condition ", sp.Eq(kept * nhat[l_] * _V(sp.Symbol("w_l")), 1),
              " keeps the gradient's. With unequal widths only one can hold, but the other direction's product "
              "telescopes to a ratio of two widths, ", n[L + 1] / n[2], " or its inverse (He's c_2/d_L), whatever the "
              "depth: it cannot explode or vanish exponentially."),
        prose(f"Measured on widths {widths}: with fan-in init the forward ", _E(_y("L") ** 2), f" is {_measured(checks[0])} "
              "while the backward gradient at layer 2 is " f"{_measured(checks[1])}; with fan-out init the forward value is "
              f"{_measured(checks[2])} and the backward {_measured(checks[3])}."),
    )
    numbers = {r.name: r.primary.estimate.value for r in checks}
    headline = prose("Only one direction is held exactly; the other is off by a ratio of two widths, ", n[L + 1] / n[2],
                     f", never a power of the depth. Fan-out init, forward: {_measured(checks[2])}.")
    return Answer(TOPICS["fan-in-vs-fan-out"], paragraphs,
                  (condition(_RELU), condition(_RELU, mode="fan_out"), telescoped), checks,
                  (Series("He fan-in", fan_in, ("y_second_moment", "dx_second_moment")),
                   Series("He fan-out", fan_out, ("y_second_moment", "dx_second_moment"))), numbers, headline, 2,
                  settings)


def _glorot_vs_he(settings: Settings) -> Answer:
    width, depth = settings.width, settings.depth
    he_net = mlp([width] * (depth + 1), _RELU, he())
    glorot_net = mlp([width] * (depth + 1), _RELU, glorot_init())
    tanh_net = mlp([width] * (depth + 1), "tanh", glorot_init())
    tanh_claim = claim_from_derivation(f"tanh, Glorot: linear-regime E[y_{depth}^2]", tanh_net, "y_second_moment",
                                       depth, source="Glorot & Bengio 2010, eq. 12", linear_regime=True)
    claims = [
        _claim(f"relu, He: E[y_{depth}^2]", he_net, "y_second_moment", depth),
        _claim(f"relu, Glorot: E[y_{depth}^2]", glorot_net, "y_second_moment", depth),
        tanh_claim,
    ]
    checks = _check(claims, settings)
    halving = forward(_RELU, scheme=glorot_init())
    l_index = sp.Symbol("l", integer=True, positive=True)
    equal_widths = {sp.IndexedBase("nhat")[l_index]: sp.IndexedBase("n")[l_index]}
    glorot_factor = sp.simplify(halving.extras["factor"].subs(equal_widths))
    he_factor = sp.simplify(forward(_RELU, scheme=he()).extras["factor"].subs(equal_widths))
    n_in, n_out, w = sp.Symbol("n_in"), sp.Symbol("n_out"), sp.Symbol("w")
    z = sp.Symbol("z")
    paragraphs = (
        prose("Glorot and Bengio derive ", sp.Eq(_V(w), glorot_init().variance(n_in, n_out)),
              " for a network in its linear regime, where ", sp.Function("phi")(z), " ≈ ", z,
              " keeps the whole second moment. Relu keeps half of it, so with equal widths Glorot's variance ",
              glorot_init().variance(sp.Symbol("n"), sp.Symbol("n")), " makes each layer multiply ", _V(_Y), " by ",
              glorot_factor, f": after {depth} layers ", _E(_Y**2), " is ", glorot_factor ** (depth - 1),
              " of the first layer's. He's ", condition(_RELU).result.subs(N_IN, sp.Symbol("n")),
              " restores the factor ", he_factor, "."),
        prose(f"Measured at layer {depth}: He {_measured(checks[0])}; Glorot {_measured(checks[1])}. For tanh the "
              "linear regime is an approximation, not a theorem (the dotted line of the figure is that linear-regime "
              "prediction, the one the table measures against): the measured deviation from it is "
              f"{100 * checks[2].primary.deviation:+.1f}% (SE {100 * checks[2].primary.deviation_se:.1f}%), "
              "reported as a measurement, not a failure."),
    )
    numbers = {"he": checks[0].primary.estimate.value, "glorot": checks[1].primary.estimate.value,
               "tanh_deviation": checks[2].primary.deviation}
    headline = prose("Glorot assumes the linear regime; relu halves the signal at each layer, so Glorot's variance "
                     "multiplies ", _E(_Y**2), " by ", glorot_factor, f" per layer. At layer {depth}: Glorot "
                     f"{_measured(checks[1])}, He {_measured(checks[0])}.")
    return Answer(TOPICS["glorot-vs-he"], paragraphs, (glorot(activation("linear")), halving, condition(_RELU)),
                  checks, (Series("relu, He", he_net), Series("relu, Glorot", glorot_net),
                           Series("tanh, Glorot (linear regime)", tanh_net, linear_regime=True)), numbers, headline, 1,
                  settings)


def _pytorch_default(settings: Settings) -> Answer:
    width, depth = settings.width, settings.depth
    scheme = torch_linear_default(bias=False)
    net = mlp([width] * (depth + 1), _RELU, scheme)
    layers = sorted({1, *(max(1, round(depth * k / 4)) for k in (1, 2, 3))})
    claims = [_claim(f"PyTorch default: E[y_{layer}^2]", net, "y_second_moment", layer) for layer in layers]
    checks = _check(claims, settings)
    derivation = forward(_RELU, scheme=scheme)
    factor = derivation.extras["factor"]
    measured = {r.claim.layer: r.primary.estimate.value for r in checks}
    first, last = min(measured), max(measured)
    per_layer = (measured[last] / measured[first]) ** (1 / (last - first))
    # kaiming_uniform_(a): gain sqrt(2 / (1 + a^2)), bound gain * sqrt(3 / n_in) (PyTorch torch/nn/init.py).
    a = sp.Symbol("a", positive=True)
    slope = sp.sqrt(5)
    gain_formula = sp.sqrt(2 / (1 + a**2))
    gain = gain_formula.subs(a, slope)
    bound_formula = sp.Symbol("gain") * sp.sqrt(3 / sp.Symbol("n_in"))
    bound = sp.simplify(gain * sp.sqrt(3 / N_IN))
    variance = scheme.variance_expr
    if sp.simplify(bound**2 / 3 - variance) != 0:
        raise DerivationError(f"{scheme}: Var[w] = {variance} is not bound^2/3 = {bound**2 / 3}")
    total = factor ** (depth - 1)
    bias_floor = torch_linear_default(bias=True).bias_variance_expr
    w = sp.Symbol("w")
    paragraphs = (
        prose("PyTorch's nn.Linear initialises its weights with kaiming_uniform_(a = ", slope, "): the gain is ",
              sp.Eq(gain_formula, gain), ", the bound ", sp.Eq(bound_formula, bound), ", so ", sp.Eq(_V(w), variance),
              ", ", sp.simplify(variance / lecun().variance_expr), " of LeCun's and ",
              sp.simplify(variance / he().variance_expr), " of He's. In a relu network each layer then multiplies "
              "the second moment by ", sp.Eq(sp.Symbol("n") * _V(w) / 2, factor), "."),
        prose(f"Over {depth} layers that is ", sp.Eq(sp.Pow(factor, depth - 1, evaluate=False), sp.Float(float(total), 4)),
              f" of the first layer's second moment. Measured on a width-{net.dense_layers[0].fan_in} network (no bias): ",
              _E(_y(first) ** 2), f" = {_measured(checks[0])}, ", _E(_y(last) ** 2), f" = {_measured(checks[-1])}; the "
              f"measured factor per layer from layer {first} to {last} is {_fmt(per_layer)} (the figure follows all "
              f"{depth} layers). (The default bias adds a floor of ", bias_floor, " to each layer's variance, which "
              "hides the decay in the biases rather than curing it.)"),
    )
    numbers = {"factor": float(factor), "measured_factor": per_layer, f"y{last}": measured[last]}
    headline = prose("It shrinks the signal: ", sp.Eq(_V(w), variance), " makes each relu layer multiply ", _E(_Y**2),
                     " by ", factor, f"; measured factor per layer {_fmt(per_layer)}, ", _E(_y(last) ** 2),
                     f" = {_measured(checks[-1])}.")
    return Answer(TOPICS["pytorch-default"], paragraphs, (derivation,), checks,
                  (Series("relu, PyTorch nn.Linear default", net),
                   Series("relu, He", mlp([width] * (depth + 1), _RELU, he()))),
                  numbers, headline, len(checks) - 1, settings)


def _finite_claim(name: str, network: Network, observable: object) -> Claim:
    d = derive(network, observable)
    return Claim(name, network, observable, prediction=d.result, exactness=d.exactness, assumptions=d.assumptions,
                 source=d.sources[0] if d.sources else "", derivation=d)


def _law_pairs(settings: Settings) -> tuple[tuple[int, int], ...]:
    """(width, depth) pairs with the same sum of reciprocal widths: (n, L), (2n, 2L), (4n, 4L) within the bounds."""
    n, depth = max(2, settings.width // 4), settings.depth
    return tuple((k * n, k * depth) for k in (1, 2, 4) if k * depth <= MAX_DEPTH and k * n <= MAX_WIDTH)


def _does_width_matter(settings: Settings) -> Answer:
    import math

    from .derive import finite
    from .montecarlo.laws import ExactLaw, judge_laws, law_test, moment_tails, rao_blackwell, sample_counts, sample_norms
    from .observables import DeadFraction, LogNormRatio, NormRatio, NormRatioSecondMoment, Signal

    pairs = _law_pairs(settings)
    nets = {pair: mlp([pair[0]] * (pair[1] + 1), _RELU, he(), output_activation=True) for pair in pairs}
    last = {pair: Signal(len(net.layers) - 1) for pair, net in nets.items()}
    narrow = mlp([3] * 4, _RELU, he(), output_activation=True)
    short = mlp([4] * 3, _RELU, he(), output_activation=True)
    first = pairs[0]
    claims = [_finite_claim(f"E[log M_L], width {n}, depth {L}", nets[(n, L)], LogNormRatio(last[(n, L)]))
              for n, L in pairs]
    claims += [
        _finite_claim(f"E[M_L] = 1, width {first[0]}, depth {first[1]}", nets[first], NormRatio(last[first])),
        _finite_claim("E[M_L^2], width 4, depth 2", short, NormRatioSecondMoment(Signal(len(short.layers) - 1))),
        _finite_claim("dead layer, width 3, depth 3", narrow, DeadFraction(Signal(len(narrow.layers) - 1))),
    ]
    checks = _check(claims, settings)
    n, L = sp.Symbol("n", positive=True, integer=True), sp.Symbol("L", positive=True, integer=True)
    M = sp.Symbol("M_L")
    reciprocal = sp.Rational(first[1], first[0])
    seconds = {pair: finite.mean_square([pair[0]] * (pair[1] + 1)) for pair in pairs}
    logs = {pair: float(finite.expected_log([pair[0]] * (pair[1] + 1))) for pair in pairs}
    limit = sp.exp(5 * reciprocal)
    # the law itself, by a KS test per pair at the figure's sample size
    law_verdicts = judge_laws([law_test(ExactLaw(tuple([n_] * (L_ + 1))),
                                        sample_norms([n_] * (L_ + 1), 4 * FIGURE_SAMPLES, seed=settings.seed + 100 + i),
                                        tolerance=0.05, name=f"width {n_}, depth {L_}")
                               for i, (n_, L_) in enumerate(pairs)], alpha=settings.alpha,
                              other_p_values=[c.primary.verdict.p_value for c in checks if c.primary.verdict])
    # heavy tails at n = L = 10: the exact skewness and the Rao-Blackwellised estimate
    deep = (10,) * 11
    tails = moment_tails(deep, 2)
    values, counts = sample_counts(deep, 10 * FIGURE_SAMPLES, seed=settings.seed + 11)
    rb = rao_blackwell(counts, deep)
    rb_mean, rb_se = float(rb.mean()), float(rb.std(ddof=1) / math.sqrt(rb.size))
    plain, plain_se = float((values**2).mean()), float((values**2).std(ddof=1) / math.sqrt(values.size))
    chi, K = sp.Symbol("chi^2_K"), sp.Symbol("K")
    paragraphs = (
        prose("He's variance keeps the mean squared length of the signal: for ",
              sp.Eq(M, (sp.Abs(sp.Symbol("x_L")) ** 2 / sp.Symbol("n_L")) / (sp.Abs(sp.Symbol("x_0")) ** 2 / sp.Symbol("n_0")),
                    evaluate=False),
              ", ", sp.Eq(Expect(M), 1), f" at every width (measured {_measured(checks[len(pairs)])}). One network is "
              "another matter. Given its input, a relu layer of width ", n, " multiplies the squared length by ",
              2 / n * chi, " with ", K, " ~ Binomial(", n, ", 1/2) active units, independently from layer to layer, so ",
              sp.Eq(Expect(M**2), sp.Product(1 + 5 / sp.Indexed("n", sp.Symbol("j")), (sp.Symbol("j"), 1, L))),
              f" (exact, Hanin & Rolnick 2018). For width {first[0]} and depth {first[1]} that is "
              f"{float(seconds[first]):.4g}; keeping the sum of reciprocal widths at ", reciprocal,
              " while widening and deepening gives " + ", ".join(f"{float(seconds[p]):.4g} (width {p[0]}, depth {p[1]})"
                                                                  for p in pairs[1:]),
              ", towards ", sp.Eq(sp.exp(5 * sp.Symbol("S")), limit), f" = {float(limit):.4g} where S is that sum."),
        prose("The typical network shrinks: given no dead layer, ", Expect(sp.log(M)), " is a finite sum of digamma values "
              "over the binomial law, about ", -sp.Rational(5, 2) * sp.Symbol("S"), " at large widths. Exact values: "
              + "; ".join(f"{logs[p]:.4f} at width {p[0]}, depth {p[1]} (measured {_measured(c)})"
                          for p, c in zip(pairs, checks)) + "."),
        prose("Whole layers die: a layer of width ", n, " with a live input is entirely inactive with probability ",
              2**-n, ", for any symmetric weight law, and then every later layer is zero and, because relu'(0) = 0, so "
              "is every gradient below it. At width 3 and depth 3 the exact fraction of dead networks is ",
              finite.dead_probability([3] * 4), f"; measured {_measured(checks[-1])}."),
        prose("Second moments of one network's length are heavy-tailed. At width 10 and depth 10, ",
              sp.Eq(Expect(M**2), sp.Rational(3, 2) ** 10), f" = {float(finite.mean_square(list(deep))):.5g}, but the "
              f"per-network value has skewness {tails.skewness:.3g} (exact, from the law), so a plain mean over "
              f"{values.size} networks, here {plain:.4g} ± {plain_se:.2g}, has an untrustworthy standard error; the "
              f"checker calls such a claim INCONCLUSIVE and never FAILs it. Conditioning on the active counts gives "
              f"the Rao-Blackwellised estimate {rb_mean:.4g} ± {rb_se:.2g}, whose error is honest."),
        prose("The law itself is checkable: the sampled ", sp.log(M), " against the exact law (Kolmogorov-Smirnov, with the "
              "dead count tested exactly, in one Holm family with the table's checks): "
              + "; ".join(f"{v.test.name}: {v.outcome} (KS D = {v.test.statistic:.3f} over {v.test.networks} networks; "
                          f"a sup-distance of {v.detectable:.3f} would be detected with probability 0.9)"
                          for v in law_verdicts) + "."),
    )
    numbers = {"second_moment_first": float(seconds[first]), "second_moment_limit": float(limit),
               "rao_blackwell": rb_mean, "rao_blackwell_se": rb_se, "plain_second_moment": plain,
               "plain_second_moment_se": plain_se, "deep_skewness": tails.skewness,
               **{f"log_moment_{p[0]}_{p[1]}": logs[p] for p in pairs}}
    total = sp.Sum(1 / sp.Indexed("n", sp.Symbol("j")), (sp.Symbol("j"), 1, L))
    headline = prose("He's condition fixes the mean, ", sp.Eq(Expect(M), 1), ", not one network: ", Expect(M**2),
                     " grows like ", sp.exp(5 * total), " and a layer of width ", n, " dies with probability ", 2**-n,
                     ". Measured ", Expect(sp.log(M)), f" = {_measured(checks[0])}.")
    derivations = (finite.product_law(), finite.log_moment(), finite.dead_layer(), finite.backward())
    series = tuple(Series(f"width {p[0]}, depth {p[1]}", nets[p], ("x_norm_ratio",)) for p in pairs)
    laws = tuple((f"width {p[0]}, depth {p[1]}", tuple([p[0]] * (p[1] + 1))) for p in pairs)
    return Answer(TOPICS["does-width-matter"], paragraphs, derivations, checks, series, numbers, headline, 0, settings,
                  laws)


TOPICS: dict[str, Topic] = {
    t.name: t
    for t in (
        Topic("why-half", "Why the 1/2 in Kaiming init?",
              "Where does the 1/2 in Kaiming's weight variance come from, and does it need Gaussian weights?", _why_half, 3),
        Topic("why-not-zero-mean", "Why nobody cares that relu outputs are not zero-mean",
              "The lesson says Kaiming init keeps mean 0 and std 1 after linear+relu, but the mean after relu comes "
              "out near 0.5. Is zero mean important, and how?", _why_not_zero_mean, 5, 3),
        Topic("pre-vs-post-activation", "Stable pre-activations, stable weight gradients",
              "He's paper keeps the pre-activations stable, and relu outputs are not zero-mean. Why should stable "
              "pre-activations give stable gradients with respect to the weights?", _pre_vs_post, 6, 3),
        Topic("fan-in-vs-fan-out", "Fan-in or fan-out?",
              "He's forward condition uses the fan-in, the backward one the fan-out. What happens to the other "
              "direction when widths differ?", _fan_in_vs_fan_out, 5, 3),
        Topic("glorot-vs-he", "Glorot versus He", "Why does Glorot's variance not suit relu networks?", _glorot_vs_he, 8),
        Topic("pytorch-default", "What PyTorch's default init does to a deep relu net",
              prose("nn.Linear uses kaiming_uniform_(a = ", sp.sqrt(5), "). What does that do to a 20-layer relu network?"),
              _pytorch_default, 20),
        Topic("does-width-matter", "Does width matter? One network is not the average",
              "He's initialisation keeps the mean squared length of a relu network's signal at 1 at every width. "
              "Why is that not enough for deep, narrow networks?", _does_width_matter, 4, 2),
    )
}


def answer(name: str, *, seed: int = 0, rtol: float = DEFAULT_RTOL, width: int | None = None,
           depth: int | None = None) -> Answer:
    """Build the answer to topic ``name``: derivations, Monte Carlo checks (at ``rtol``) and plotted series.

    ``width`` is the hidden width of the networks measured (default :data:`DEFAULT_WIDTH`) and
    ``depth`` their number of dense layers (default: the topic's own, ``TOPICS[name].depth``).
    """
    settings = settings_for(name, seed=seed, rtol=rtol, width=width, depth=depth)
    return TOPICS[name].build(settings)


def settings_for(name: str, *, seed: int = 0, rtol: float = DEFAULT_RTOL, width: int | None = None,
                 depth: int | None = None) -> Settings:
    """The settings topic ``name`` runs with, checked before any work starts (see :func:`answer`)."""
    topic = TOPICS.get(name)
    if topic is None:
        raise ClaimError(f"unknown topic {name!r}; known: {', '.join(TOPICS)}")
    width = DEFAULT_WIDTH if width is None else width
    depth = topic.depth if depth is None else depth
    for what, value, low, high in (("width", width, 2, MAX_WIDTH), ("depth", depth, topic.min_depth, MAX_DEPTH)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ClaimError(f"topic {name!r}: {what} must be an integer from {low} to {high}, got {value!r}")
    if isinstance(rtol, bool) or not isinstance(rtol, int | float) or not 0 < rtol < 1:
        raise ClaimError(f"rtol must be a number between 0 and 1, got {rtol!r}")
    return Settings(width, depth, seed, float(rtol))
