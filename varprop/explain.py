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

import math
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import sympy as sp

from .activations import activation
from .catalogue import claim_from_derivation
from .claims import Claim, ClaimError, ClaimFamily
from .derive import Derivation, Expect, derive, Q, Variance, symmetry_lemma, backward, condition, forward, glorot, moments, ratio, weight_gradient
from .derive.derivation import BinomialLaw, Code, Prose, latex_text, prose, prose_latex, prose_markdown, to_latex
from .derive.gaussian import evaluate
from .derive.meanfield import mean_field
from .derive.propagate import derive as derive_observable
from .errors import DerivationError
from .montecarlo import MEASURED, CheckResult, check_all
from .montecarlo.verdict import FAIL, INCONCLUSIVE, PASS, POWER, format_z
from .network import FixedInput, GaussianInput, Network, mlp
from .observables import Correlation, SecondMoment, Signal, describe
from .lawplot import LawData, law_data, law_figure
from .plot import PropagationData, propagation_data, propagation_figure
from .weights import glorot as glorot_init
from .weights import N_IN, he, lecun, torch_linear_default

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .montecarlo.executors import Executor

__all__ = ["Topic", "Answer", "Series", "Settings", "TOPICS", "answer", "DEFAULT_RTOL", "DEFAULT_ALPHA",
           "DEFAULT_WIDTH", "MAX_WIDTH", "MAX_DEPTH", "reason", "settings_for", "tolerance_sentence",
           "observable_formula", "checks_on"]

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


_FIGURE_DATA: dict[tuple, tuple] = {}


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
        key = (self.topic.name, self.settings, self.series, self.laws, samples, seed)  # what the data depend on
        try:
            cached = self.settings is not None and key in _FIGURE_DATA  # sampled from the seed: the same every time
        except TypeError:  # a series holding something unhashable: not cached
            cached, key = False, None
        if cached:
            return _FIGURE_DATA[key]
        data = self._figure_data(samples, seed)
        if self.settings is not None and key is not None:
            if len(_FIGURE_DATA) >= 64:
                _FIGURE_DATA.pop(next(iter(_FIGURE_DATA)))
            _FIGURE_DATA[key] = data
        return data

    def _figure_data(self, samples: int, seed: int) -> tuple[PropagationData | LawData, ...]:
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
        out += ["#### Monte Carlo checks", "", prose_markdown(self.tolerance), "", _markdown_table(self.checks), ""]
        for derivation in self.derivations:
            out += [derivation.markdown()]
        return "\n".join(out)

    def latex(self, figure: str | None = None) -> str:
        """A LaTeX section (amsmath, graphicx, booktabs, longtable) for the report."""
        out = [f"\\section{{{latex_text(self.topic.title)}}}\\label{{topic:{self.topic.name}}}",
               f"\\emph{{{prose_latex(self.topic.question)}}}", ""]
        out += [prose_latex(p) + "\n" for p in self.paragraphs]
        if figure:
            out += ["\\begin{center}", f"\\includegraphics{{{figure}}}", "\\end{center}"]
        out += ["\\subsection*{Monte Carlo checks}", prose_latex(self.tolerance), "", _latex_table(self.checks)]
        out += [f"\\subsection*{{Derivations}}\\label{{derivation:{self.topic.name}}}"]
        for derivation in self.derivations:
            out += [f"\\subsubsection*{{{prose_latex(derivation.title)}}}", prose_latex(derivation.summary), "",
                    derivation.latex()]
        return "\n".join(out) + "\n"


# --- rendering helpers ---------------------------------------------------------------------------


def tolerance_sentence(rtol: float, alpha: float, count: int) -> str:
    """``PASS means ...``: how to read a table of verdicts checked at ``rtol`` with false-alarm rate ``alpha``."""
    return prose(f"Tolerance: PASS means the estimate agrees with the prediction and the check resolves a relative "
                 f"error of {_percent(rtol)} (resolution ≤ {_percent(rtol)}: an error of {_percent(rtol)} would have been "
                 f"caught with at least {POWER:.0%} power); the {count} checks of this table hold "
                 f"their family-wise false-alarm rate at {_percent(alpha)} (Holm). Asymptotic claims are judged on the "
                 "limit of their deviation fitted over a width sweep; approximations are MEASURED, never failed.")


def _percent(value: float) -> str:
    return f"{100 * value:g}%"


_T_SCORE = sp.Abs(sp.Symbol("t"))


def reason(result: CheckResult) -> str:
    """The one-line reason for a verdict, read from the measurements (not retyped); :math:`|z|` is typeset."""
    m = result.primary
    if result.outcome == MEASURED:
        spread = ", ".join(f"{100 * x.deviation:+.1f}% at width {x.width}" for x in sorted(result.measurements, key=lambda x: x.width))
        return f"approximation, no verdict: deviation {spread}"
    if result.limit is not None:
        fit = result.limit
        widths = sorted(fit.widths)
        limit = (f"deviation fitted in 1/width over widths {widths[0]} to {widths[-1]}, limit "
                 f"{100 * fit.limit:+.2f}% ± {100 * fit.limit_se:.2f}%")
        if result.outcome == PASS:
            return f"asymptotic: {limit}, within rtol"
        if result.outcome == FAIL:
            return f"asymptotic: {limit}, beyond rtol"
        return f"asymptotic: {limit}, not resolved"
    v = m.verdict
    if v is None:
        return result.message
    if result.outcome == PASS:
        return prose("agrees (", _T_SCORE, f" ≤ {v.z_crit:.2f}), resolution {100 * v.resolution:.2g}%")
    if result.outcome == FAIL:
        return prose("contradicted: ", _T_SCORE, f" = {abs(v.z):.2f} > {v.z_crit:.2f}")
    if result.outcome == INCONCLUSIVE:
        return result.message
    return result.message


def observable_formula(result: CheckResult) -> sp.Basic | str:
    """What a check measures, as the formula its derivation states (``E[y_3^2]``), or in words.

    A claim built from a derivation predicts the left side of the derivation's last step; a claim
    without one (a claim file's) is described in words (:func:`varprop.observables.describe`).
    """
    claim = result.claim
    if claim.derivation is not None and claim.derivation.steps:
        return claim.derivation.steps[-1].lhs
    return describe(claim.observable, claim.network)


def _row(r: CheckResult) -> tuple[str, ...]:
    """The table cells of a check; the observable is a sympy formula, each format typesets it."""
    m = r.primary
    z = "" if m.verdict is None else format_z(m.verdict.z)
    return (r.name, observable_formula(r), r.exactness, str(m.width), str(m.estimate.n), f"{m.claim.value:.4g}",
            estimate_text(m.estimate.value, m.estimate.se), z, r.outcome, reason(r))


_HEADER = ("claim", "observable", "exactness", "width", "networks", "prediction", "estimate ± SE", "t", "verdict",
           "reason")


def _cells(r: CheckResult, formula: Callable[[sp.Basic], str], words: Callable[[str], str] = str,
           sentence: Callable[[str], str] = str) -> list[str]:
    """The cells of a check's row: formulas through ``formula``, sentences with formulas through ``sentence``."""
    return [formula(c) if isinstance(c, sp.Basic) else sentence(c) if isinstance(c, Prose) else words(c)
            for c in _row(r)]


def _text_table(results: Sequence[CheckResult]) -> str:
    rows = [_HEADER, *(_cells(r, lambda e: str(prose(e))) for r in results)]
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
    rows += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r, lambda e: f"${to_latex(e)}$", str, prose_markdown))
             + " |"
             for r in results]
    return "\n".join(rows)


def _latex_table(results: Sequence[CheckResult]) -> str:
    """A full-width table that breaks across pages: one row per claim, its exactness and reason on a line below it."""
    header = [h for h in _HEADER[:-1] if h != "exactness"]
    exactness = _HEADER.index("exactness")
    rows = ["{\\small\\setlength{\\tabcolsep}{3pt}\\setlength{\\LTleft}{0pt}\\setlength{\\LTright}{0pt}",
            "\\begin{longtable}{@{\\extracolsep{\\fill}}p{0.22\\textwidth}lrrrrrl@{}}", "\\toprule",
            " & ".join(header).replace("±", "$\\pm$") + " \\\\", "\\midrule", "\\endhead", "\\bottomrule", "\\endfoot"]
    for r in results:
        cells = _cells(r, lambda e: f"${to_latex(e)}$", latex_text, prose_latex)
        why = cells[-1] if str(reason(r)).startswith(r.exactness) else f"{cells[exactness]}; {cells[-1]}"
        rows.append(" & ".join(c for i, c in enumerate(cells[:-1]) if i != exactness) + " \\\\*")
        rows.append(f"\\multicolumn{{{len(header)}}}{{@{{\\quad}}p{{0.95\\textwidth}}@{{}}}}{{\\emph{{{why}}}}} \\\\[2pt]")
    rows += ["\\end{longtable}", "}"]
    return "\n".join(rows) + "\n"


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def estimate_text(value: float, se: float) -> str:
    """``2.5 ± 0.0043``: the estimate to four significant digits, or fewer when its SE makes the rest noise
    (``-1.6e-18 ± 1.1e-18``, not ``-1.594e-18``: two digits past the SE's leading one at most)."""
    digits = 4
    if value != 0 and se > 0 and math.isfinite(value) and math.isfinite(se):
        digits = max(1, min(4, math.floor(math.log10(abs(value))) - math.floor(math.log10(se)) + 2))
    return f"{value:.{digits}g} ± {se:.2g}"


def _measured(result: CheckResult) -> str:
    """'0.5613 ± 0.0016 (prediction 0.5642, width 32, PASS)' for a check's primary width."""
    m = result.primary
    return (f"{m.estimate.value:.4g} ± {m.estimate.se:.2g} (prediction {m.claim.value:.4g}, "
            f"width {m.width}, {result.outcome})")


def _claim(name: str, network: Network, observable: str, layer: int, *,
           network_at: Callable[[int], Network] | None = None, **kwargs: object) -> Claim | ClaimFamily:
    """The claim derived for ``network``; an asymptotic one becomes a family over widths w/4, w/2, w
    (``network_at(n)`` builds the network at width n), since its limit is judged over a sweep."""
    claim = claim_from_derivation(name, network, observable, layer, **kwargs)
    if claim.exactness != "asymptotic" or network_at is None:
        return claim
    width = claim.width
    sweep = tuple(sorted({max(2, width // 4), max(2, width // 2), width}))
    return ClaimFamily(name, claim.description,
                       lambda n: claim if n == width else claim_from_derivation(name, network_at(n), observable, layer,
                                                                                 **kwargs),
                       width, sweep)


_CHECK_EXECUTOR: ContextVar[Executor | str] = ContextVar("varprop_explain_check_executor", default="auto")


@contextmanager
def checks_on(executor: Executor | str) -> Iterator[None]:
    """Run the topics' Monte Carlo checks on ``executor`` inside the block (a name such as ``"serial"`` or an
    :class:`~varprop.montecarlo.executors.Executor`, left open); ``"auto"`` outside any block.

    The answers do not depend on it (the samples are bit-identical whatever the executor): ``varprop report``
    answers its topics in worker processes of its own and has their checks sample there, one at a time.
    """
    token = _CHECK_EXECUTOR.set(executor)
    try:
        yield
    finally:
        _CHECK_EXECUTOR.reset(token)


def _check(claims: Sequence[Claim | ClaimFamily], settings: Settings) -> tuple[CheckResult, ...]:
    return tuple(check_all(list(claims), seed=settings.seed, rtol=settings.rtol, alpha=settings.alpha,
                           executor=_CHECK_EXECUTOR.get()))


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
_SLOPE = sp.Symbol("a", positive=True)  # the negative slope PyTorch's kaiming_uniform_ takes


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
        _claim(f"leaky relu keeps its fraction (slope {float(slope):g})", leaky_net, "x_second_moment", 2),
        _claim("He normal, last layer", normal, "y_second_moment", depth),
        _claim("He uniform, last layer", uniform, "y_second_moment", depth),
    ]
    checks = _check(claims, settings)
    leaky_condition = condition(activation("leaky_relu", a=None))
    leaky_constant = symmetry_lemma(activation("leaky_relu", a=a)).constant  # phi(y)^2 + phi(-y)^2 = c y^2
    ratio_normal = checks[0].primary.estimate.value / evaluate(normal.dense_layers[0].fan_in * normal.dense_layers[0].weights.variance).value
    kept = sp.simplify(relu_moment / Q)
    n_var = sp.Symbol("n") * _V(sp.Symbol("w"))
    w, x = sp.Symbol("w"), sp.Symbol("x")
    paragraphs = (
        prose("The ", kept, " is the fraction of a pre-activation's second moment that relu keeps. Pointwise, ",
              sp.Eq(_relu_of(_Y) ** 2 + _relu_of(-_Y) ** 2, _Y**2), ", so for any ", _Y, " whose law is symmetric about "
              "zero the two halves carry equal mass: ", sp.Eq(_E(_relu_of(_Y) ** 2), relu_moment.subs(Q, _V(_Y))),
              ". Nothing else is used."),
        prose("Symmetry of ", _Y, " comes from zero-mean, symmetric weights (", _Y, " is a sum of terms ", w * x,
              ", each ", w, " symmetric and independent of ", x, f"). Gaussianity is not needed: uniform weights give the same fraction, exactly and "
              f"at every width. Measured at the second layer of a width-{width} He network, ",
              _E(_x(2) ** 2), f" = {_measured(checks[0])} with normal weights and {_measured(checks[1])} with "
              "uniform weights."),
        prose("For leaky relu with slope ", a, " the pointwise identity becomes ",
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
                   Series(f"leaky relu (slope {float(slope):g}), He", leaky_net)), numbers, headline, 1, settings)


def _why_not_zero_mean(settings: Settings) -> Answer:
    width, depth = settings.width, settings.depth
    fixed = FixedInput(tuple(1.0 if j % 2 == 0 else -1.0 for j in range(width)))
    net = mlp([width] * (min(depth, 3) + 1), _RELU, he(), inputs=fixed)
    shifted = activation("shifted_relu")  # relu - 1/2
    deep = max(depth, 3)
    family_width = 4 * width
    sweep = tuple(sorted({max(2, width // 4), width, family_width}))
    shifted_name = "shifted relu, He init, last layer"
    shifted_family = ClaimFamily(
        shifted_name, "infinite-width recursion for the shifted relu",
        lambda n: _claim(shifted_name, mlp([n] * (deep + 1), shifted, he()), "y_second_moment", deep),
        width=family_width, sweep=sweep)
    claims = [
        _claim("pre-activations centred (zero-mean weights)", net, "y_mean", 1),
        _claim("relu's mean", net, "x_mean", 2),
        _claim("relu keeps half", net, "x_second_moment", 2),
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
              sp.Symbol("n") * _E(w) ** 2 * _V(x), " and ", _Y, " itself stops being centred (second derivation below)."),
        prose("Subtracting ", -shift, " from relu does not give a cleaner recursion: ",
              sp.Eq(_E(shifted_sym ** 2), second.subs(q, _V(_Y))), " is no longer a fixed fraction of ", _V(_Y),
              ", so no scale-free condition exists. Keeping ", sp.Eq(_V(_Y), 1), " needs ",
              sp.Eq(sp.Symbol("n") * _V(w), sp.Float(float(needed), 4)), " (instead of He's ", he_scale, "); with He's ",
              sp.Eq(_V(w), condition(_RELU).result.subs(N_IN, sp.Symbol("n"))),
              " the variance is driven towards the fixed point ", sp.Eq(sp.Symbol("q_star"), fixed_point),
              f" = {_fmt(float(fixed_point))}. This recursion assumes Gaussian pre-activations, i.e. infinitely "
              f"wide layers (the dashed line of the figure): at layer {deep} the measured ", _E(_y(deep) ** 2),
              " exceeds it by " + ", ".join(f"{100 * m.deviation:+.1f}% at width {m.width}" for m in ordered)
              + f" ({checks[3].outcome}; ", reason(checks[3]), ")."),
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
                   Series("shifted relu, He", mlp([family_width] * (deep + 1), shifted, he()))),
                  numbers, headline, 1, settings)


def _pre_vs_post(settings: Settings) -> Answer:
    width, depth = settings.width, settings.depth
    net = mlp([width] * (depth + 1), _RELU, he())

    def net_at(n: int) -> Network:
        return mlp([n] * (depth + 1), _RELU, he())

    layers = tuple(sorted({2, depth - 1}))
    claims = []
    for layer in layers:
        claims.append(_claim(f"pre-activations, layer {layer}", net, "y_second_moment", layer, network_at=net_at))
        claims.append(_claim(f"activations, layer {layer}", net, "x_second_moment", layer, network_at=net_at))
        claims.append(_claim(f"activation gradients, layer {layer}", net, "dx_second_moment", layer, network_at=net_at))
        claims.append(_claim(f"weight gradients, layer {layer}", net, "dw_second_moment", layer, network_at=net_at))
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
    layers = depth

    def at(n: int, mode: str) -> Network:
        return mlp([max(1, int(n * profile[i % len(profile)])) for i in range(layers + 1)], _RELU, he(mode))

    fan_in, fan_out = at(width, "fan_in"), at(width, "fan_out")
    widths = [int(w) for w in fan_in.widths]
    depth = fan_in.depth
    claims = [
        _claim("fan-in init, forward", fan_in, "y_second_moment", depth, network_at=lambda n: at(n, "fan_in")),
        _claim("fan-in init, backward", fan_in, "dx_second_moment", 2, network_at=lambda n: at(n, "fan_in")),
        _claim("fan-out init, forward", fan_out, "y_second_moment", depth, network_at=lambda n: at(n, "fan_out")),
        _claim("fan-out init, backward", fan_out, "dx_second_moment", 2, network_at=lambda n: at(n, "fan_out")),
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
              "telescopes to a ratio of two widths, ", n[L + 1] / n[2], " or its inverse (He's ", sp.Symbol("c_2") / sp.Symbol("d_L"), "), whatever the "
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
    tanh_claim = claim_from_derivation("tanh, Glorot (linear regime)", tanh_net, "y_second_moment",
                                       depth, source="Glorot & Bengio 2010, eq. 12", linear_regime=True)
    claims = [
        _claim("relu, He", he_net, "y_second_moment", depth),
        _claim("relu, Glorot", glorot_net, "y_second_moment", depth),
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
    claims = [_claim(f"PyTorch default, layer {layer}", net, "y_second_moment", layer) for layer in layers]
    # The same network with nn.Linear's default bias, measured at its last layer: the bias floor.
    biased = mlp([width] * (depth + 1), _RELU, torch_linear_default(bias=True))
    floor_claim = _claim(f"PyTorch default with bias, layer {depth}", biased, "y_second_moment", depth)
    all_checks = _check([*claims, floor_claim], settings)  # one Holm family
    checks, floor_check = all_checks[:-1], all_checks[-1]
    recursion, fixed_point, first_settled = _bias_floor(biased)
    derivation = forward(_RELU, scheme=scheme)
    factor = derivation.extras["factor"]
    measured = {r.claim.layer: r.primary.estimate.value for r in checks}
    first, last = min(measured), max(measured)
    per_layer = (measured[last] / measured[first]) ** (1 / (last - first))
    # kaiming_uniform_(a): gain sqrt(2 / (1 + a^2)), bound gain * sqrt(3 / n_in) (PyTorch torch/nn/init.py).
    a = _SLOPE
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
        prose("PyTorch's ", Code("nn.Linear"), " initialises its weights with ", Code("kaiming_uniform_"), " at ",
              sp.Eq(a, slope), ": the gain is ",
              sp.Eq(gain_formula, gain), ", the bound ", sp.Eq(bound_formula, bound), ", so ", sp.Eq(_V(w), variance),
              ", ", sp.simplify(variance / lecun().variance_expr), " of LeCun's and ",
              sp.simplify(variance / he().variance_expr), " of He's. In a relu network each layer then multiplies "
              "the second moment by ", sp.Eq(sp.Symbol("n") * _V(w) / 2, factor), "."),
        prose(f"Over {depth} layers that is ", sp.Eq(sp.Pow(factor, depth - 1, evaluate=False), sp.Float(float(total), 4), evaluate=False),
              f" of the first layer's second moment. Measured on a width-{net.dense_layers[0].fan_in} network (no bias): ",
              _E(_y(first) ** 2), f" = {_measured(checks[0])}, ", _E(_y(last) ** 2), f" = {_measured(checks[-1])}; the "
              f"measured factor per layer from layer {first} to {last} is {_fmt(per_layer)} (the figure follows all "
              f"{depth} layers)."),
        prose("With its default bias, ", Code("nn.Linear"), " adds ", sp.Eq(_V(sp.Symbol("b")), bias_floor),
              " to every pre-activation, and the derived recursion from one layer to the next becomes ",
              sp.Eq(_E(_y("{l+1}") ** 2), recursion.subs(_FLOOR_S, _E(_y("l") ** 2))),
              ". Its fixed point, solved by sympy from that recursion, is ",
              fixed_point, ", that is ",
              sp.simplify(fixed_point / bias_floor.subs(N_IN, _N_SYM)),
              " times the bias variance: the signal does not vanish, it settles at a floor set by the biases alone "
              "and forgets the input, which hides the decay rather than curing it. At width ",
              f"{width} the floor is ", fixed_point.subs(_N_SYM, width), " = ", sp.Float(float(fixed_point.subs(_N_SYM, width)), 4),
              f"; measured at layer {depth} of the network with biases: ", _E(_y(depth) ** 2),
              f" = {_measured(floor_check)}. The derived second moment is within 1% of the floor from layer "
              f"{first_settled} on. ", Code("varprop audit examples/mlp_pytorch_default.py:make_mlp"),
              " shows the same floor on a real PyTorch model: the dense rows of its table, "
              "derived and measured, approach it layer by layer."),
    )
    numbers = {"factor": float(factor), "measured_factor": per_layer, f"y{last}": measured[last],
               "bias_floor": float(fixed_point.subs(_N_SYM, width)), "bias_floor_measured": floor_check.primary.estimate.value}
    headline = prose("It shrinks the signal: ", sp.Eq(_V(w), variance), " makes each relu layer multiply ", _E(_Y**2),
                     " by ", factor, f"; measured factor per layer {_fmt(per_layer)}, ", _E(_y(last) ** 2),
                     f" = {_measured(checks[-1])}.")
    return Answer(TOPICS["pytorch-default"], paragraphs, (derivation,), all_checks,
                  (Series("relu, PyTorch nn.Linear default", net),
                   Series("relu, PyTorch nn.Linear default with its bias", biased),
                   Series("relu, He", mlp([width] * (depth + 1), _RELU, he()))),
                  numbers, headline, len(checks) - 1, settings)


_FLOOR_S = sp.Symbol("s", positive=True)


def _bias_floor(biased: Network) -> tuple[sp.Expr, sp.Expr, int]:
    r"""The layer-to-layer recursion of a relu net with nn.Linear's default bias, its fixed point, and where it settles.

    The recursion :math:`s \mapsto E[y_{l+1}^2]` as a function of :math:`s = E[y_l^2]` is read off two
    derivations of a generic network (width :math:`n`, input variance :math:`q`): :math:`E[y_1^2](q)`
    is solved for :math:`q` and substituted into :math:`E[y_2^2](q)`. The fixed point solves
    :math:`s = f(s)`. Returns the recursion in :data:`_FLOOR_S` and :data:`_N_SYM`, the fixed point
    in :data:`_N_SYM`, and the first layer of ``biased`` whose derived :math:`E[y_l^2]` is within
    1 % of the fixed point.
    """
    q = sp.Symbol("q", positive=True)
    generic = mlp([_N_SYM] * 3, _RELU, torch_linear_default(bias=True), inputs=GaussianInput(variance=q))
    first = derive_observable(generic, SecondMoment(Signal(generic.dense_positions[0]))).result
    second = derive_observable(generic, SecondMoment(Signal(generic.dense_positions[1]))).result
    (inverse,) = sp.solve(sp.Eq(first, _FLOOR_S), q)
    recursion = sp.expand(second.subs(q, inverse))
    (fixed_point,) = sp.solve(sp.Eq(recursion, _FLOOR_S), _FLOOR_S)
    width = biased.dense_layers[0].fan_out
    floor = fixed_point.subs(_N_SYM, width)
    for layer, position in enumerate(biased.dense_positions, 1):
        value = derive_observable(biased, SecondMoment(Signal(position))).result
        if abs(value / floor - 1) < sp.Rational(1, 100):
            return recursion, fixed_point, layer
    return recursion, fixed_point, biased.depth + 1





def _pair_correlation(network: Network, position: int) -> Derivation:
    return derive_observable(network, Correlation(Signal(position)))


def _c_map(act, q: sp.Expr, scale: sp.Expr) -> sp.Expr:
    r"""The c-map :math:`c \mapsto \sigma_w^2 E[\phi(u)\phi(v)]/q^*` of ``act`` at :math:`q_1 = q_2 = q`, no bias.

    ``scale`` is :math:`\sigma_w^2 = n \operatorname{Var}[w]`; at the fixed point :math:`q^*` of the
    q-map it maps the correlation of one layer's pre-activations to the next one's.
    """
    from .derive.gaussian.bivariate import cross_expectation

    kernel = cross_expectation(act, q, q, _C)
    return scale * kernel.value / q


_C = sp.Symbol("c", real=True)


def _does_the_mean_matter(settings: Settings) -> Answer:
    width, depth = settings.width, settings.depth
    shifted, tanh = activation("shifted_relu"), activation("tanh")
    pair = FixedInput.pair(width, 0)
    relu_net = mlp([width] * (depth + 1), _RELU, he(), inputs=pair)
    shifted_net = mlp([width] * (depth + 1), shifted, he(), inputs=pair)
    tanh_net = mlp([width] * (depth + 1), tanh, lecun(), inputs=pair)
    # Correlations of y_l (dense layer l's output, position 2(l - 1)), as the figure draws them: y_2 is after
    # one nonlinearity, y_L after L - 1.
    # The check at depth: y_4 (three relu layers), over widths where the O(1/n) term dominates (at narrower
    # widths an O(1/n^2) term of the other sign makes |d(n)| shrink slower than 1/n, which the sweep test
    # would take for a failure).
    checked = min(depth, 4)
    family_width = 4 * width
    sweep = (width, 2 * width, family_width)
    deep_name = f"relu, He, after {checked - 1} relu layers"
    deep_family = ClaimFamily(
        deep_name, "the relu c-map iterated from 0 (infinite width)",
        lambda n: claim_from_derivation(deep_name, mlp([n] * (checked + 1), _RELU, he(), inputs=FixedInput.pair(n, 0)),
                                        Correlation(Signal(2 * (checked - 1)))),
        width=family_width, sweep=sweep)
    claims = [
        claim_from_derivation("relu, He, after one relu layer", relu_net, Correlation(Signal(2))),
        deep_family,
        claim_from_derivation("tanh, LeCun, after one tanh layer", tanh_net, Correlation(Signal(2))),
    ]
    checks = _check(claims, settings)
    q = sp.Symbol("q", positive=True)
    u, v, z = sp.symbols("u v z")
    phi = sp.Function("phi")
    n_var_w = sp.Symbol("n") * _V(sp.Symbol("w"))
    x = sp.Symbol("x")
    # The variance recursion: E[y^2] = n Var[w] E[x^2], and E[x^2] = Var[x] + E[x]^2.
    forward_derivation = forward(_RELU)
    # The correlation recursion at c = 0: u, v independent, E[phi(u) phi(v)] = E[phi]^2.
    he_scale = condition(_RELU).result * N_IN  # n Var[w] = 2
    he_q = he_scale * GaussianInput().second_moment
    relu_map = sp.simplify(_c_map(_RELU, q, he_scale).subs(q, he_q))
    relu_mean = moments(_RELU).mean.expr.subs(Q, he_q)
    relu_second = moments(_RELU).second_moment.expr.subs(Q, he_q)
    relu_at_zero = sp.simplify(relu_map.subs(_C, 0))
    if sp.simplify(relu_at_zero - relu_mean**2 / relu_second) != 0:
        raise DerivationError(f"the relu c-map at 0, {relu_at_zero}, is not E[phi]^2/E[phi^2]")
    # relu - 1/2 under He: q* of the q-map, the c-map there and its fixed points.
    shifted_second = moments(shifted).second_moment.expr.subs(Q, q)
    q_star = [s for s in sp.solve(sp.Eq(q, he_scale * shifted_second), q) if s.is_positive][0]
    shifted_mean = sp.simplify(moments(shifted).mean.expr.subs(Q, q_star))
    first_shifted_mean = sp.simplify(moments(shifted).mean.expr.subs(Q, he_q))
    shifted_map = _c_map(shifted, q_star, he_scale)
    shifted_at_zero = sp.simplify(shifted_map.subs(_C, 0))
    first_shifted = _pair_correlation(shifted_net, 2).result  # E[phi]^2 / E[phi^2] at E[y^2] = 2, as derived
    # The mean-field analysis (q-map fixed point, c-map fixed points and their slopes chi_c) of relu - 1/2
    analysis = mean_field(shifted, float(he_scale), 0)
    if analysis.q_star is None or abs(analysis.q_star.value - float(q_star)) > 1e-9 + 10 * analysis.q_star.error_estimate:
        raise DerivationError(f"q* of {shifted}: the q-map's fixed point {analysis.q_star} is not {q_star}")
    shifted_fixed = analysis.correlation_fixed_points
    tanh_mean = moments(tanh).mean.expr
    relu_deep = checks[1]
    ordered = sorted(relu_deep.measurements, key=lambda m: m.width)
    c_sym = sp.Symbol("c")
    c_map_sym = sp.Function("C")
    paragraphs = (
        prose("For the variance, no. The recursion is ", sp.Eq(_E(_Y**2), n_var_w * _E(x**2)),
              " (He et al. 2015, eq. 7), and ", sp.Eq(_E(x**2), _V(x) + _E(x) ** 2), ": the mean of the layer input "
              "enters only as part of its second moment, so a non-zero mean is neither a problem nor needed; what "
              "has to stay constant is ", _E(x**2), ". The derivation below shows it for relu."),
        prose("For how two different inputs propagate, yes. Feed two inputs through the same network and let c be "
              "the correlation of their pre-activations, a ratio of expectations ",
              sp.Eq(c_sym, _E(u * v) / sp.sqrt(_E(u**2) * _E(v**2))),
              ". After the nonlinearity the pair has the cross moment ", _E(phi(u) * phi(v)),
              " (Poole et al. 2016; Schoenholz et al. 2017, eq. 5). At ", sp.Eq(c_sym, 0),
              " the Gaussian pair (u, v) is independent, so ", sp.Eq(_E(phi(u) * phi(v)), _E(phi(z)) ** 2),
              ": the mean of the activation is a component both inputs share, and it alone correlates them. For "
              "relu under He's init (", sp.Eq(_E(_Y**2), he_q), ") the c-map is ",
              sp.Eq(c_map_sym(c_sym), relu_map.subs(_C, c_sym)), ", so ",
              sp.Eq(c_map_sym(0), relu_at_zero), f" = {_fmt(float(relu_at_zero))}: two orthogonal inputs come out of "
              "one relu layer with that correlation. Measured on a fixed orthogonal pair: ",
              f"{_measured(checks[0])} (exact for Gaussian weights: the pre-activations of a fixed pair are exactly "
              "jointly Gaussian)."),
        prose(f"With depth every pair drifts towards correlation 1: after {checked - 1} relu layers the theory gives ",
              sp.Float(relu_deep.primary.claim.value, 4), " and the measurement " + ", ".join(
                  f"{m.estimate.value:.4g} ± {m.estimate.se:.2g} at width {m.width}" for m in ordered)
              + f" ({relu_deep.outcome}; {reason(relu_deep)}). Deeper than one layer the theory is the infinite-width "
              "limit: the kernel is applied to the random empirical covariance of the layer below."),
        prose("Subtracting ", sp.Rational(1, 2), " from relu (the lesson's fix) removes the shared component only "
              "where ", sp.Eq(_E(_relu_of(z)), sp.Rational(1, 2)), ". At ", sp.Eq(_E(_Y**2), he_q),
              " (the first layer, unit-variance inputs, He's init) ", sp.Eq(_E(phi(z)), first_shifted_mean),
              f" = {_fmt(float(first_shifted_mean))}, and two orthogonal inputs come out with correlation ",
              first_shifted, f" = {_fmt(float(first_shifted))}. But He's init does not keep this variance for ",
              _relu_of(_Y) - sp.Rational(1, 2), ": it goes to the fixed point ", sp.Eq(sp.Symbol("q_star"), q_star),
              f" = {_fmt(float(q_star))} of the q-map, where ", sp.Eq(_E(phi(z)), shifted_mean),
              ": the mean is back, with the other sign, and the c-map there gives ",
              sp.Eq(c_map_sym(0), shifted_at_zero), f" = {_fmt(float(shifted_at_zero))}, ",
              "as large as relu's. The mean-field analysis at ", sp.Eq(sp.Symbol("sigma_w") ** 2, he_scale),
              f" finds the correlation fixed point{'s' if len(shifted_fixed) > 1 else ''} ",
              ", ".join(f"{_fmt(p.value)} (slope {_fmt(p.slope)}, {'stable' if p.stable else 'not stable'})"
                        for p in shifted_fixed),
              f" in [-1, 1] ({analysis.phase} phase, ", sp.Eq(sp.Symbol("chi_1"), sp.Float(analysis.chi_1.value, 6)),
              "): every pair drifts towards correlation 1, slowly, as with relu. The figure shows the first "
              "layers' small correlation growing as the variance settles."),
        prose("For tanh ", sp.Eq(_E(sp.tanh(z)), tanh_mean), " (tanh is odd), so ", sp.Eq(c_map_sym(0), 0),
              ": orthogonal inputs stay orthogonal. Measured after one tanh layer (LeCun's ",
              sp.Eq(_V(sp.Symbol("w")), lecun().variance_expr), f"): {_measured(checks[2])}. The figure follows "
              "the correlation of ", _y("l"), f" for the three networks over {depth} layers."),
    )
    numbers = {
        "relu_c_map_at_zero": float(relu_at_zero),
        "relu_correlation_measured": checks[0].primary.estimate.value,
        "relu_correlation_se": checks[0].primary.estimate.se,
        "shifted_q_star": float(q_star),
        "shifted_mean_at_q_star": float(shifted_mean),
        "shifted_c_map_at_zero": float(shifted_at_zero),
        "shifted_correlation_fixed_point": max(p.value for p in shifted_fixed),
        "shifted_chi_c_at_one": next(p.slope for p in shifted_fixed if p.value == max(q.value for q in shifted_fixed)),
        "tanh_c_map_at_zero": 0.0,
    }
    headline = prose("Not for the variance (", sp.Eq(_E(x**2), _V(x) + _E(x) ** 2), " is what the recursion keeps), "
                     "but for how inputs stay apart: the shared mean correlates them, ",
                     sp.Eq(c_map_sym(0), _E(phi(z)) ** 2 / _E(phi(z) ** 2)), " = ", relu_at_zero,
                     f" for relu under He; measured {_measured(checks[0])}.")
    derivations = (forward_derivation, _pair_correlation(relu_net, 2), _pair_correlation(shifted_net, 2))
    series = (Series("relu, He", relu_net, ("y_correlation",)),
              Series("relu - 1/2, He", shifted_net, ("y_correlation",)),
              Series("tanh, LeCun", tanh_net, ("y_correlation",)))
    return Answer(TOPICS["does-the-mean-matter"], paragraphs, derivations, checks, series, numbers, headline, 0,
                  settings)


#: The bias variance and the two off-critical weight variances of the edge-of-chaos topic's tanh networks.
_EDGE_BIAS = sp.Rational(1, 20)
_EDGE_ORDERED = sp.Rational(6, 5)
_EDGE_CHAOTIC = sp.Integer(3)


def _edge_of_chaos(settings: Settings) -> Answer:
    from .derive.derivation import DPhi as phi_prime
    from .derive.meanfield import SIGMA_B, SIGMA_W, edge_of_chaos, mean_field, relu_power_law
    from .weights import explicit

    width, depth = settings.width, settings.depth
    sb2 = float(_EDGE_BIAS)
    critical = edge_of_chaos("tanh", [sb2])[0]
    # asymptotic claims: judged on the limit fitted over a sweep of a quarter, a half and all of the width
    sweep = tuple(sorted({max(2, width // 4), max(2, width // 2), width}))
    phases, families = {}, []
    for label, sw2 in (("ordered", float(_EDGE_ORDERED)), ("critical", critical.weight_variance),
                       ("chaotic", float(_EDGE_CHAOTIC))):
        analysis = mean_field("tanh", sw2, sb2)
        # the raw input's variance v puts the first pre-activation at q*: sigma_w^2 v + sigma_b^2 = q*
        inputs = GaussianInput(sp.Float((analysis.q_star.value - sb2) / sw2, 17))
        scheme = explicit(sp.Float(sw2, 17) / N_IN)

        def network_at(n: int, scheme: object = scheme, inputs: GaussianInput = inputs) -> Network:
            return mlp([n] * (depth + 1), "tanh", scheme, bias_variance=_EDGE_BIAS, inputs=inputs)

        name = f"tanh, {label}: gradient at layer 2"
        families.append(ClaimFamily(
            name, f"the gradient's second moment at layer 2 of a tanh network in the {label} phase",
            lambda n, name=name, network_at=network_at: _claim(name, network_at(n), "dx_second_moment", 2),
            width=sweep[-1], sweep=sweep[:-1]))
        phases[label] = (analysis, network_at(width))
        if label == "critical":  # the length stays at its fixed point: E[y_L^2] = q* at the last layer
            length_name = f"tanh, critical: length at layer {depth}"
            length = ClaimFamily(
                length_name, "the pre-activation length stays at the fixed point of the q-map",
                lambda n, network_at=network_at, length_name=length_name: _claim(length_name, network_at(n), "y_second_moment", depth),
                width=sweep[-1], sweep=sweep[:-1])
    he_net = mlp([width] * (depth + 1), _RELU, he())
    claims = [*families, _claim("relu, He: gradient at layer 2", he_net, "dx_second_moment", 2,
                     network_at=lambda n: mlp([n] * (depth + 1), _RELU, he())), length]
    checks = _check(claims, settings)
    # the measured per-layer factor at the widest width: E[(dL/dx_2)^2] against the top layer's sigma_w^2
    factors = {}
    for (label, (analysis, _)), result in zip(phases.items(), checks):
        widest = max(result.measurements, key=lambda m: m.width)
        factors[label] = (widest.estimate.value / analysis.weight_variance) ** (1 / (depth - 2))
    widest_width = max(sweep)
    relu_he = mean_field("relu", 2, 0)
    chi_relu, c_map_relu = relu_he.derivations[1], relu_he.derivations[-1]
    power = relu_power_law()
    chi, z, q = sp.Symbol("chi_1"), sp.Symbol("z"), sp.Symbol("q_star", positive=True)
    l = sp.Symbol("l", integer=True, positive=True)
    c_prev = sp.IndexedBase("c")[l - 1]
    chi_definition = sp.Eq(chi, SIGMA_W**2 * _E(phi_prime(sp.sqrt(q) * z) ** 2))
    line = edge_of_chaos("tanh", [0.0, 0.1, 0.3])
    k = power.result
    gradient = sp.IndexedBase("Delta_x")
    paragraphs = (
        prose("In a wide network with weights of variance ", SIGMA_W**2 / sp.Symbol("n"), " and biases of variance ",
              SIGMA_B**2,
              ", the squared length of a pre-activation settles at a fixed point ", q, " of the q-map, and one "
              "number decides how the network treats two different inputs and how gradients travel: ",
              chi_definition, " (Schoenholz et al. 2017, eq. 5). It is the slope of the correlation map at ",
              sp.Eq(sp.Symbol("c"), 1) , " and the factor by which each layer multiplies the gradient's second moment. "
              "Below 1 (ordered) correlations run to 1 and gradients vanish; above 1 (chaotic) nearby inputs "
              "decorrelate and gradients explode; at 1 both happen only polynomially: the edge of chaos."),
        prose("For tanh with ", sp.Eq(SIGMA_B**2, _EDGE_BIAS), " the edge lies at ",
              sp.Eq(SIGMA_W**2, sp.Float(critical.weight_variance, 5)), " with ", sp.Eq(q, sp.Float(critical.q_star, 5)),
              f". Measured on width-{widest_width}, depth-{depth} networks whose inputs start at ", q,
              ": the per-layer factor of the gradient's second moment (from ", _E(gradient[2] ** 2),
              f" against the top layer's) is {_fmt(factors['ordered'])} at ", sp.Eq(SIGMA_W**2, _EDGE_ORDERED),
              f" (theory {_fmt(phases['ordered'][0].chi_1.value)}), {_fmt(factors['critical'])} on the edge "
              f"(theory 1) and {_fmt(factors['chaotic'])} at ", sp.Eq(SIGMA_W**2, _EDGE_CHAOTIC),
              f" (theory {_fmt(phases['chaotic'][0].chi_1.value)}). The table checks each layer-2 value against "
              "the derivation over a width sweep (the mean-field recursion is the infinite-width limit, and at "
              "the edge its finite-width corrections grow with the depth), and that the critical network's "
              f"last pre-activation keeps the length {_measured(checks[-1])}."),
        prose("How deep information travels is the depth scale ", sp.Eq(sp.Symbol("xi_c"), -1 / sp.log(sp.Symbol("chi_c"))),
              " (eq. 9): ", sp.Float(phases["ordered"][0].xi_c, 3), f" layers in the ordered network, "
              f"{_fmt(phases['chaotic'][0].xi_c)} in the chaotic one (where correlations settle at ",
              sp.Eq(sp.Symbol("c^*"), sp.Float(phases["chaotic"][0].correlation_fixed_points[-1].value, 4)),
              "), and infinite on the edge. Along the edge the critical weight variance grows with the bias: ",
              ", ".join(f"{p.weight_variance:.4g} at {p.bias_variance:g}" for p in line),
              " (", SIGMA_W**2, " at ", SIGMA_B**2, "); ", "varprop meanfield tanh --edge-of-chaos prints the curve."),
        prose("Relu with He's init sits exactly on the edge: ", sp.Eq(_E(phi_prime(z) ** 2), sp.Rational(1, 2)),
              " at every variance (the derivative is a step, on for half of a symmetric input), so ",
              sp.Eq(chi, chi_relu.steps[2].rhs), " and He's ", sp.Eq(SIGMA_W**2, 2), " gives ",
              sp.Eq(chi, chi_relu.result), " exactly. Without bias the relu c-map does not depend on the length: ",
              sp.Eq(sp.IndexedBase("c")[l], c_map_relu.result), " (Cho & Saul 2009), so two orthogonal inputs leave "
              "one layer with correlation ", c_map_relu.result.subs(c_prev, 0), ". The fixed point ",
              sp.Eq(sp.Symbol("c^*"), 1), " is approached as a power law, ",
              sp.Eq(1 - sp.IndexedBase("c")[l], sp.Symbol("k") / l**2), " with ", sp.Eq(sp.Symbol("k"), k), " (derived below), not exponentially: deep relu nets under He "
              "keep inputs apart for hundreds of layers but eventually merge them."),
    )
    numbers = {"critical_weight_variance": critical.weight_variance, "critical_q_star": critical.q_star,
               **{f"factor_{label}": value for label, value in factors.items()},
               **{f"chi_1_{label}": analysis.chi_1.value for label, (analysis, _) in phases.items()},
               "relu_power_law_k": float(k)}
    headline = prose("At ", sp.Eq(chi, 1), " gradients neither vanish nor explode and correlations travel "
                     "arbitrarily deep; for tanh at ", sp.Eq(SIGMA_B**2, _EDGE_BIAS), " that is ",
                     sp.Eq(SIGMA_W**2, sp.Float(critical.weight_variance, 5)), f"; measured per-layer gradient factor "
                     f"{_fmt(factors['critical'])}. Relu with He's init has ", sp.Eq(chi, 1), " exactly.")
    critical_chi = phases["critical"][0].derivations[2]
    return Answer(TOPICS["edge-of-chaos"], paragraphs, (chi_relu, critical_chi, c_map_relu, power), checks,
                  tuple(Series(f"tanh, {label}", network, ("dx_second_moment", "y_second_moment") if label == "critical"
                               else ("dx_second_moment",)) for label, (_, network) in phases.items())
                  + (Series("relu, He", he_net, ("dx_second_moment",)),), numbers, headline, 1, settings)


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
    claims = [_finite_claim(f"log length ratio, width {n}, depth {L}", nets[(n, L)], LogNormRatio(last[(n, L)]))
              for n, L in pairs]
    claims += [
        _finite_claim(f"mean length ratio, width {first[0]}, depth {first[1]}", nets[first], NormRatio(last[first])),
        _finite_claim("second moment, width 4, depth 2", short, NormRatioSecondMoment(Signal(len(short.layers) - 1))),
        _finite_claim("dead layer, width 3, depth 3", narrow, DeadFraction(Signal(len(narrow.layers) - 1))),
    ]
    checks = _check(claims, settings)
    n, L = sp.Symbol("n", positive=True, integer=True), sp.Symbol("L", positive=True, integer=True)
    M = sp.Symbol("M_L")
    reciprocal = sp.Rational(first[1], first[0])
    seconds = {pair: finite.mean_square([pair[0]] * (pair[1] + 1)) for pair in pairs}
    logs = {pair: float(finite.expected_log([pair[0]] * (pair[1] + 1))) for pair in pairs}
    spreads = {pair: float(finite.log_moments([pair[0]] * (pair[1] + 1), 2)[1]) for pair in pairs}
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
              2 / n * chi, " with ", BinomialLaw(K, n, sp.Rational(1, 2)), " active units, independently from layer to layer, so ",
              sp.Eq(Expect(M**2), sp.Product(1 + 5 / sp.Indexed("n", sp.Symbol("j")), (sp.Symbol("j"), 1, L))),
              f" (exact, Hanin & Rolnick 2018). For width {first[0]} and depth {first[1]} that is "
              f"{float(seconds[first]):.4g}; keeping the sum of reciprocal widths at ", reciprocal,
              " while widening and deepening gives " + ", ".join(f"{float(seconds[p]):.4g} (width {p[0]}, depth {p[1]})"
                                                                  for p in pairs[1:]),
              ", towards ", sp.Eq(sp.exp(5 * sp.Symbol("S")), limit), f" = {float(limit):.4g} where ", sp.Symbol("S"),
              " is that sum."),
        prose("The typical network shrinks: given no dead layer, ", Expect(sp.log(M)), " is a finite sum of digamma values "
              "over the binomial law, about ", -sp.Rational(5, 2) * sp.Symbol("S"), " at large widths. Exact values: "
              + "; ".join(f"{logs[p]:.4f} at width {p[0]}, depth {p[1]} (measured {_measured(c)})"
                          for p, c in zip(pairs, checks)) + ". Its spread from network to network, ",
              Variance(sp.log(M)), " given no dead layer, is a finite sum of polygamma values too, about ",
              5 * sp.Symbol("S"), " at large widths (Hanin & Rolnick 2018), here ", 5 * reciprocal,
              "; at equal ", sp.Symbol("S"), " the exact values approach it from above as the layers widen, "
              + ", ".join(f"{spreads[p]:.4f} at width {p[0]}, depth {p[1]}" for p in pairs)
              + ": narrow layers spread the networks more than the sum of reciprocal widths says."),
        prose("Whole layers die: a layer of width ", n, " with a live input is entirely inactive with probability ",
              2**-n, ", for any symmetric weight law, and then every later layer is zero and so "
              "is every gradient below it (the relu derivative is 0 at 0). At width 3 and depth 3 the exact fraction of dead networks is ",
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
               **{f"log_moment_{p[0]}_{p[1]}": logs[p] for p in pairs},
               **{f"log_variance_{p[0]}_{p[1]}": spreads[p] for p in pairs}}
    total = sp.Sum(1 / sp.Indexed("n", sp.Symbol("j")), (sp.Symbol("j"), 1, L))
    headline = prose("He's condition fixes the mean, ", sp.Eq(Expect(M), 1), ", not one network: ", Expect(M**2),
                     " grows like ", sp.exp(5 * total), " and a layer of width ", n, " dies with probability ", 2**-n,
                     ". Measured ", Expect(sp.log(M)), f" = {_measured(checks[0])}.")
    derivations = (finite.product_law(), finite.log_moment(), finite.log_power_moment(2), finite.dead_layer(),
                   finite.backward())
    series = tuple(Series(f"width {p[0]}, depth {p[1]}", nets[p], ("x_norm_ratio",)) for p in pairs)
    laws = tuple((f"width {p[0]}, depth {p[1]}", tuple([p[0]] * (p[1] + 1))) for p in pairs)
    return Answer(TOPICS["does-width-matter"], paragraphs, derivations, checks, series, numbers, headline, 0, settings,
                  laws)


def _fixup_network(width: int, blocks: int) -> Network:
    """Dense, then residual blocks of Dense, relu, Dense under He with each branch layer's weights scaled by
    :math:`L^{-1/(2m-2)}` (Fixup, m = 2 layers per branch: the variance by :math:`1/L`), and alpha = 1."""
    from .network import Dense, Nonlinearity, Residual
    from .weights import Normal

    scaled = Normal(he().law(width, width).variance / blocks)
    block = Residual((Dense(width, width, scaled), Nonlinearity(_RELU), Dense(width, width, scaled)), 1)
    return Network((Dense(width, width, he().law(width, width)),) + (block,) * blocks)


def _residual_scaling(settings: Settings) -> Answer:
    from .catalogue import residual_network
    from .derive.residual import GAIN, depth_scaling, fixup_alpha
    from .observables import NormRatio, NormRatioSecondMoment, SecondMoment

    width, blocks = settings.width, settings.depth
    depth = sp.Symbol("L", positive=True, integer=True)
    alpha, c, v = sp.Symbol("alpha"), GAIN, sp.IndexedBase("v")
    scaled_alpha, small = 1 / sp.sqrt(blocks), sp.Rational(1, 10)
    scaled, unscaled = residual_network(width, blocks, scaled_alpha), residual_network(width, blocks, 1)
    tenth, fixup = residual_network(width, blocks, small), _fixup_network(width, blocks)
    last = SecondMoment(Signal(blocks))
    claims = [
        _claim("branches scaled by one over root depth", scaled, last, None),
        _claim("unscaled branches", unscaled, last, None),
        _claim("branches scaled by a tenth", tenth, last, None),
        _claim("Fixup-scaled branches", fixup, last, None),
        _claim("spread of the squared length, scaled branches", scaled, NormRatioSecondMoment(Signal(blocks)), None),
    ]
    checks = _check(claims, settings)
    derivations = (depth_scaling(1 / sp.sqrt(depth), title="branches scaled by one over the square root of the depth"),
                   depth_scaling(sp.Integer(1), title="unscaled branches"),
                   depth_scaling(fixup_alpha(2), title="Fixup's scaling, two layers per branch"))
    gain = sp.Integer(2)  # dense, relu, dense under He: E[f^2] = 2 E[x^2] (the derivation's branch steps)
    branch_gain = derive_observable(residual_network(width, 1, 1), SecondMoment(Signal(1))).result / 2 - 1
    if branch_gain != gain:
        raise DerivationError(f"the He branch's gain is {branch_gain}, not {gain}")
    limit = derivations[0].result.subs(c, gain)
    ratio_scaled = derivations[0].extras["ratio"].subs({c: gain, depth: blocks})
    ratio_unscaled = derivations[1].extras["ratio"].subs({c: gain, depth: blocks})
    ratio_fixup = derivations[2].extras["ratio"].subs({c: gain, depth: blocks})
    spread = {}
    for label, net in (("scaled", scaled), ("unscaled", unscaled)):
        second = derive_observable(net, NormRatioSecondMoment(Signal(blocks))).result
        mean = derive_observable(net, NormRatio(Signal(blocks))).result
        spread[label] = float(second / mean**2)
    first_spread = float(derive_observable(scaled, NormRatioSecondMoment(Signal(0))).result
                         / derive_observable(scaled, NormRatio(Signal(0))).result ** 2)
    f, x = sp.Symbol("f"), sp.Symbol("x")
    paragraphs = (
        prose("A residual block adds a scaled branch to its input, ", sp.Eq(sp.Symbol("h"), x + alpha * sp.Function("f")(x)),
              ". When the branch ends with a dense layer of zero-mean weights independent of its input, ",
              sp.Eq(_E(x * f), 0), " at every width (a checked step of every residual derivation), so ",
              sp.Eq(v[sp.Symbol("l") + 1], v[sp.Symbol("l")] + alpha**2 * _E(f**2)),
              ". A branch of gain ", c, ", ", sp.Eq(_E(f**2), c * v[sp.Symbol("l")]), ", multiplies the second moment "
              "by ", 1 + c * alpha**2, " per block; dense, relu, dense under He has ", sp.Eq(c, gain),
              " (the first dense layer doubles the second moment, the relu halves it, the second dense layer doubles "
              "it again)."),
        prose("Over ", depth, " blocks that multiplies the second moment ", sp.Eq(v[0], 2), " after the first dense "
              "layer by ", (1 + c * alpha**2) ** depth, ". With ", sp.Eq(alpha, 1 / sp.sqrt(depth)), " it is ",
              derivations[0].extras["ratio"], ", which tends to ", sp.exp(c), " however deep the network: ",
              sp.Eq(sp.exp(gain), sp.Float(float(limit), 4), evaluate=False), " for this branch, ",
              sp.Float(float(ratio_scaled), 4), f" at {blocks} blocks. Unscaled, ", sp.Eq(alpha, 1),
              ", it is ", (1 + c) ** depth, " (", 2**depth, " for a branch of gain 1), ",
              sp.Float(float(ratio_unscaled), 4), f" at {blocks} blocks: the residual connection alone does not stop "
              "the growth. Measured on networks of hidden width ", sp.Integer(width), ": scaled, ",
              f"{_measured(checks[0])}; unscaled, {_measured(checks[1])}; scaled by a tenth, {_measured(checks[2])}."),
        prose("Fixup (Zhang, Dauphin and Ma 2019) scales each of the ", sp.Symbol("m"), " weight layers of a branch by ",
              depth ** (-1 / (2 * sp.Symbol("m") - 2)), " and starts the last one at zero, so every block is the identity "
              "at initialisation and the second moment is kept exactly. The scaling alone makes the branch's gain ",
              c * depth ** (-sp.Symbol("m") / (sp.Symbol("m") - 1)), " and the growth over the depth ",
              derivations[2].extras["ratio"], " for two layers per branch, which tends to 1: ",
              sp.Float(float(ratio_fixup), 4), f" at {blocks} blocks, measured {_measured(checks[3])}."),
        prose("One network is not the average. Hanin and Rolnick (2018) show that the squared length of a residual "
              "network's signal does not spread out with the depth when the sum of the ", alpha**2,
              " is bounded. varprop derives its second moment exactly for Gaussian weights: each block multiplies the "
              "squared length by a factor independent of it and of the blocks below, so the relative spread ",
              _E(sp.Symbol("R") ** 2) / _E(sp.Symbol("R")) ** 2, f" is {_fmt(first_spread)} after the first layer and "
              f"{_fmt(spread['scaled'])} after {blocks} scaled blocks, against {_fmt(spread['unscaled'])} unscaled. "
              f"Measured (scaled): {_measured(checks[4])}."),
    )
    numbers = {"limit": float(limit), "scaled": float(ratio_scaled), "unscaled": float(ratio_unscaled),
               "fixup": float(ratio_fixup), "spread_scaled": spread["scaled"], "spread_unscaled": spread["unscaled"]}
    headline = prose("Scale each branch by ", 1 / sp.sqrt(depth), ": the second moment then grows by ",
                     (1 + c / depth) ** depth, " (at most ", sp.exp(c), "), not ", (1 + c) ** depth,
                     f"; measured at {blocks} blocks: {_measured(checks[0])}.")
    series = (Series("α = 1", unscaled), Series(f"α = 1/√{blocks}", scaled), Series("α = 0.1", tenth))
    return Answer(TOPICS["residual-scaling"], paragraphs, derivations, checks, series, numbers, headline, 0, settings)


def _above(percent: float) -> str:
    """``4.65% above`` / ``13.58% below``: a signed difference in words."""
    return f"{abs(percent):.2f}% {'above' if percent > 0 else 'below'}"


def _number(value: float) -> sp.Expr:
    """An integer-valued float as an Integer (the edge of chaos of tanh: 1 and 0), else 4 digits."""
    return sp.Integer(int(value)) if float(value).is_integer() else sp.Float(value, 4)


def _five_thirds(settings: Settings) -> Answer:
    from .derive.meanfield import SIGMA_W, edge_of_chaos, q_fixed_point
    from .gains import gain_row
    from .weights import explicit, torch_gain

    width, depth = settings.width, settings.depth
    row = gain_row("tanh")
    five_thirds = torch_gain("tanh")
    gains = {"five thirds": five_thirds, "exact forward gain": sp.Float(row.forward.value, 17),
             "exact backward gain": sp.Float(row.backward.value, 17)}
    networks, fixed, claims = {}, {}, []
    for label, gain in gains.items():
        scheme = explicit(gain**2 / N_IN)
        # the raw input at variance 1/gain^2 puts the first pre-activation at unit second moment
        inputs = GaussianInput(1 / gain**2)

        def network_at(n: int, scheme: object = scheme, inputs: GaussianInput = inputs) -> Network:
            return mlp([n] * (depth + 1), "tanh", scheme, inputs=inputs)

        networks[label] = network_at(width)
        fixed[label] = q_fixed_point("tanh", float(gain) ** 2)
        claims.append(_claim(f"tanh, {label}: length at the last layer", networks[label], "y_second_moment", depth,
                             network_at=network_at))
        if label != "exact backward gain":
            claims.append(_claim(f"tanh, {label}: gradient at layer 2", networks[label], "dx_second_moment", 2,
                                 network_at=network_at))
    checks = _check(claims, settings)
    by_name = {r.name: r for r in checks}
    length = {label: by_name[f"tanh, {label}: length at the last layer"] for label in gains}
    gradient = {label: by_name[f"tanh, {label}: gradient at layer 2"] for label in ("five thirds", "exact forward gain")}
    analysis = fixed["five thirds"]
    q_star, chi_1 = analysis.point.value, float(five_thirds) ** 2 * analysis.derivative_second.value
    chi_forward = float(gains["exact forward gain"]) ** 2 * row.backward.value ** -2
    backward_q = fixed["exact backward gain"].point.value
    edge = edge_of_chaos("tanh", [0.0])[0]
    z, q, g = sp.Symbol("z"), sp.Symbol("q", positive=True), sp.Symbol("g", positive=True)
    tanh_z = sp.tanh(z)
    second = _E(tanh_z**2)
    slope = _E((1 - tanh_z**2) ** 2)  # tanh' = 1 - tanh^2
    chi = sp.Symbol("chi_1")
    q_star_symbol = sp.Symbol("q_star", positive=True)
    gradient_symbol = sp.IndexedBase("Delta_x")
    per_layer = {label: (gradient[label].primary.estimate.value / float(gains[label]) ** 2) ** (1 / (depth - 2))
                 for label in gradient}
    paragraphs = (
        prose("PyTorch's table gives ", Code("calculate_gain('tanh')"), " the constant ", five_thirds, ". Neither "
              "exact condition gives that number. The gain that keeps a unit second moment through a layer solves ",
              sp.Eq(g**2 * second, 1), " with ", z, " standard normal: ",
              sp.Eq(g, sp.Float(row.forward.value, 6), evaluate=False),
              f" (by quadrature), so PyTorch's gain is {_above(row.torch_vs_forward)} it. The gain that keeps the "
              "gradient's second moment solves ", sp.Eq(g**2 * slope, 1), ": ",
              sp.Eq(g, sp.Float(row.backward.value, 6), evaluate=False),
              f", and PyTorch's is {_above(row.torch_vs_backward)} that. For relu the two conditions give the same ", sp.sqrt(2),
              " because relu is homogeneous; tanh is not, and no single gain keeps both."),
        prose("What the gain does to a deep net is decided by the q-map ", sp.Eq(q, g**2 * _E(sp.tanh(sp.sqrt(q) * z) ** 2)),
              " (Schoenholz et al. 2017, eq. 3). With ", sp.Eq(g, five_thirds), " its stable fixed point is ",
              sp.Eq(q_star_symbol, sp.Float(q_star, 5), evaluate=False), ", not 1: the second moment of the "
              "pre-activations settles there within a few layers whatever it starts at, and there ",
              sp.Eq(chi, sp.Float(chi_1, 4), evaluate=False), f" (eq. 5), so each layer multiplies the gradient's "
              "second moment by that factor: the net is in the chaotic phase, mildly. Measured on width-"
              f"{width}, depth-{depth} networks started at unit second moment: ", _E(_y(depth) ** 2),
              f" = {_measured(length['five thirds'])}, and the gradient at the second layer ",
              _E(gradient_symbol[2] ** 2), f" = {_measured(gradient['five thirds'])}, a measured factor of "
              f"{_fmt(per_layer['five thirds'])} per layer."),
        prose("With the exact forward gain the second moment stays at 1 (", _E(_y(depth) ** 2),
              f" = {_measured(length['exact forward gain'])}), and the gradient grows by ",
              sp.Eq(chi, sp.Float(chi_forward, 4), evaluate=False), f" per layer (measured "
              f"{_fmt(per_layer['exact forward gain'])}). With the exact backward gain the gradient is kept only "
              "while the length stays at 1, which it does not: its q-map settles at ",
              sp.Eq(q_star_symbol, sp.Float(backward_q, 4), evaluate=False), " (",
              _E(_y(depth) ** 2), f" = {_measured(length['exact backward gain'])}). The only gain at which tanh "
              "keeps gradients exactly through any depth is the edge of chaos, ", sp.Eq(SIGMA_W**2, _number(edge.weight_variance), evaluate=False),
              " without bias, where the fixed point is ", sp.Eq(q_star_symbol, _number(edge.q_star), evaluate=False),
              ": the signal itself fades. So ", five_thirds, " is a compromise: a little more than the forward gain, "
              f"which keeps the signal up, at the price of gradients that grow by {100 * (chi_1 - 1):.0f}% per layer."),
    )
    numbers = {"torch_gain": float(five_thirds), "forward_gain": row.forward.value, "backward_gain": row.backward.value,
               "q_star": q_star, "chi_1": chi_1, "chi_1_forward_gain": chi_forward, "q_star_backward_gain": backward_q,
               **{f"gradient_factor_{label.replace(' ', '_')}": value for label, value in per_layer.items()}}
    headline = prose(five_thirds, " is neither exact gain (forward ", sp.Float(row.forward.value, 5), ", backward ",
                     sp.Float(row.backward.value, 5), "); under it a deep tanh net settles at ",
                     sp.Eq(q_star_symbol, sp.Float(q_star, 4), evaluate=False), " and gradients grow by ",
                     sp.Float(chi_1, 3), " per layer; measured ", _E(_y(depth) ** 2),
                     f" = {_measured(length['five thirds'])}.")
    from .derive.meanfield import mean_field

    derivations = mean_field("tanh", float(five_thirds) ** 2).derivations[:3]
    series = (Series("tanh, gain five thirds", networks["five thirds"], ("y_second_moment", "dx_second_moment")),
              Series("tanh, exact forward gain", networks["exact forward gain"], ("y_second_moment", "dx_second_moment")),
              Series("tanh, exact backward gain", networks["exact backward gain"], ("y_second_moment",)))
    return Answer(TOPICS["where-does-5-3-come-from"], paragraphs, derivations, checks, series, numbers, headline,
                  0, settings)


TOPICS: dict[str, Topic] = {
    t.name: t
    for t in (
        Topic("why-half", "Why the ½ in Kaiming init?",
              prose("Where does the ", sp.Rational(1, 2), " in Kaiming's weight variance come from, and does it need "
                    "Gaussian weights?"), _why_half, 3),
        Topic("why-not-zero-mean", "Why nobody cares that relu outputs are not zero-mean",
              "The lesson says Kaiming init keeps mean 0 and standard deviation 1 after a linear layer and relu, but the "
              "mean after relu comes out near 0.5. Is zero mean important, and how?", _why_not_zero_mean, 5, 3),
        Topic("pre-vs-post-activation", "Stable pre-activations, stable weight gradients",
              "He's paper keeps the pre-activations stable, and relu outputs are not zero-mean. Why should stable "
              "pre-activations give stable gradients with respect to the weights?", _pre_vs_post, 6, 3),
        Topic("fan-in-vs-fan-out", "Fan-in or fan-out?",
              "He's forward condition uses the fan-in, the backward one the fan-out. What happens to the other "
              "direction when widths differ?", _fan_in_vs_fan_out, 5, 3),
        Topic("glorot-vs-he", "Glorot versus He", "Why does Glorot's variance not suit relu networks?", _glorot_vs_he, 8),
        Topic("does-the-mean-matter", "Does the mean matter?",
              "Kaiming init keeps the variance, but relu outputs have mean near 0.5. Does a non-zero mean matter, and "
              "for what?", _does_the_mean_matter, 6, 3),
        Topic("pytorch-default", "What PyTorch's default init does to a deep relu net",
              prose(Code("nn.Linear"), " initialises its weights with ", Code("kaiming_uniform_"), " at ", sp.Eq(_SLOPE, sp.sqrt(5)),
                    ". What does that do to a 20-layer relu network?"),
              _pytorch_default, 20),
        Topic("edge-of-chaos", "The edge of chaos",
              "What is the edge of chaos of a tanh network, how deep do signals travel near it, and why does relu "
              "with He's init sit exactly on it?", _edge_of_chaos, 6, 4),
        Topic("does-width-matter", "Does width matter? One network is not the average",
              "He's initialisation keeps the mean squared length of a relu network's signal at 1 at every width. "
              "Why is that not enough for deep, narrow networks?", _does_width_matter, 4, 2),
        Topic("residual-scaling", "Scaling residual branches",
              prose("Why scale each residual branch by ", 1 / sp.sqrt(sp.Symbol("L")), " over ", sp.Symbol("L"),
                    " blocks, what happens without it, and what does Fixup's scaling do at initialisation?"),
              _residual_scaling, 8, 2),
        Topic("where-does-5-3-come-from", "Where tanh's five-thirds comes from",
              prose("PyTorch's ", Code("calculate_gain('tanh')"), " is ", sp.Rational(5, 3), ". What is it, what are the "
                    "exact gains, and what does it do to a deep tanh network?"), _five_thirds, 6, 4),
    )
}


def answer(name: str, *, seed: int = 0, rtol: float = DEFAULT_RTOL, width: int | None = None,
           depth: int | None = None) -> Answer:
    """Build the answer to topic ``name``: derivations, Monte Carlo checks (at ``rtol``) and plotted series.

    ``width`` is the hidden width of the networks measured (default :data:`DEFAULT_WIDTH`) and
    ``depth`` their number of dense layers (default: the topic's own, ``TOPICS[name].depth``).
    """
    settings = settings_for(name, seed=seed, rtol=rtol, width=width, depth=depth)
    return _answer(name, settings)


@lru_cache(maxsize=64)
def _answer(name: str, settings: Settings) -> Answer:
    """An answer is a function of its settings (every sample comes from the seed): built once per process, so
    ``varprop report`` and a caller asking again share it."""
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
