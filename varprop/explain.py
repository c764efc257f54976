r"""Answers to the questions people ask about initialisation: derivation, measured evidence, a plot.

Each topic builds its answer from computed results only: the derivations come from
:mod:`varprop.derive`, the table from :mod:`varprop.montecarlo` checks of claims built from those
derivations, and every number in the text is read from one of the two. Nothing here is retyped from
a paper.

>>> from varprop.explain import answer
>>> print(answer("why-half").text())          # doctest: +SKIP
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sympy as sp

from .activations import activation
from .catalogue import claim_from_derivation
from .claims import Claim, ClaimError, ClaimFamily
from .derive import Derivation, Q, backward, condition, forward, glorot, moments, ratio, weight_gradient
from .derive.derivation import latex_text
from .derive.gaussian import evaluate
from .errors import DerivationError
from .montecarlo import CheckResult, check_all, format_results
from .montecarlo.verdict import format_z
from .network import FixedInput, GaussianInput, Network, mlp
from .plot import PropagationData, propagation_data, propagation_figure
from .weights import glorot as glorot_init
from .weights import N_IN, he, lecun, torch_linear_default

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Topic", "Answer", "Series", "TOPICS", "answer"]


@dataclass(frozen=True)
class Topic:
    """A question and the function that answers it."""

    name: str
    title: str
    question: str
    build: Callable[[int, float], Answer] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Series:
    """One network whose per-layer propagation the answer's figure shows."""

    label: str
    network: Network
    observables: tuple[str, ...] = ("y_second_moment",)


@dataclass(frozen=True)
class Answer:
    """A topic's answer: plain-words paragraphs, derivations, a table of checks and the plotted series."""

    topic: Topic
    paragraphs: tuple[str, ...]
    derivations: tuple[Derivation, ...]
    checks: tuple[CheckResult, ...]
    series: tuple[Series, ...]
    numbers: Mapping[str, float]

    def figure_data(self, *, samples: int = 2000, seed: int = 0) -> tuple[PropagationData, ...]:
        """The numbers behind the answer's figure: theory and Monte Carlo per layer, for every series."""
        return tuple(
            propagation_data(series.network, observable, samples=samples, seed=seed, label=series.label)
            for series in self.series
            for observable in series.observables
        )

    def figure(self, data: Sequence[PropagationData] | None = None, **kwargs: int) -> Figure:
        """The answer's figure (matplotlib), from ``data`` or freshly sampled."""
        return propagation_figure(data if data is not None else self.figure_data(**kwargs), title=self.topic.title)

    def text(self, width: int = 100, data: Sequence[PropagationData] | None = None) -> str:
        """Plain text for a terminal: answer, derivations, table of checks and the figure's numbers."""
        out = [self.topic.title, "=" * len(self.topic.title), "", textwrap.fill(self.topic.question, width), ""]
        for paragraph in self.paragraphs:
            out += [textwrap.fill(paragraph, width), ""]
        out += ["Derivations", "-----------", ""]
        for derivation in self.derivations:
            out += [derivation.text()]
        out += ["Monte Carlo checks", "------------------", format_results(self.checks), ""]
        out += ["Figure (numbers)", "----------------", _series_table(data if data is not None else self.figure_data()),
                "", "varprop explain --plot DIR (or varprop report) draws this as PNG and SVG."]
        return "\n".join(out) + "\n"

    def markdown(self, figure: str | None = None) -> str:
        """Markdown: the answer, the derivations (LaTeX math), the table and (if given) the figure."""
        out = [f"## {self.topic.title}", "", f"*{self.topic.question}*", ""]
        for paragraph in self.paragraphs:
            out += [paragraph, ""]
        for derivation in self.derivations:
            out += [derivation.markdown()]
        out += ["#### Monte Carlo checks", "", _markdown_table(self.checks), ""]
        if figure:
            out += [f"![{self.topic.title}]({figure})", ""]
        return "\n".join(out)

    def latex(self, figure: str | None = None) -> str:
        """A LaTeX section (amsmath, graphicx) for the report."""
        out = [f"\\section{{{latex_text(self.topic.title)}}}", f"\\emph{{{latex_text(self.topic.question)}}}", ""]
        out += [latex_text(p) + "\n" for p in self.paragraphs]
        for derivation in self.derivations:
            out += [f"\\subsection*{{{latex_text(derivation.title)}}}", derivation.latex()]
        out += ["\\subsection*{Monte Carlo checks}", _latex_table(self.checks)]
        if figure:
            out += ["\\begin{center}", f"\\includegraphics[width=\\linewidth]{{{figure}}}", "\\end{center}"]
        return "\n".join(out) + "\n"


# --- rendering helpers ---------------------------------------------------------------------------


def _series_table(data: Sequence[PropagationData]) -> str:
    """The plotted numbers as text: per series, layer by layer, theory against estimate +- SE."""
    lines = []
    for d in data:
        lines.append(f"{d.network_label}: {d.observable} ({d.samples} networks)")
        lines.append(f"  {'layer':>5}  {'theory':>12}  {'Monte Carlo +- SE':>26}")
        for layer, predicted, estimated, se in zip(d.layers, d.predicted, d.estimated, d.se):
            lines.append(f"  {layer:>5}  {predicted:>12.5g}  {estimated:>14.5g} +- {se:<9.2g}")
    return "\n".join(lines)


def _markdown_table(results: Sequence[CheckResult]) -> str:
    rows = ["| claim | exactness | n | prediction | estimate ± SE | z | verdict |", "|---|---|---|---|---|---|---|"]
    for r in results:
        m = r.primary
        z = "" if m.verdict is None else format_z(m.verdict.z)
        rows.append(f"| {r.name} | {r.exactness} | {m.width} | {m.claim.value:.6g} | "
                    f"{m.estimate.value:.6g} ± {m.estimate.se:.2g} | {z} | {r.outcome} |")
    return "\n".join(rows)


def _latex_table(results: Sequence[CheckResult]) -> str:
    rows = ["\\begin{tabular}{llrrrrl}", "claim & exactness & $n$ & prediction & estimate $\\pm$ SE & $z$ & verdict \\\\",
            "\\hline"]
    for r in results:
        m = r.primary
        z = "" if m.verdict is None else format_z(m.verdict.z)
        rows.append(f"{latex_text(r.name)} & {r.exactness} & {m.width} & {m.claim.value:.6g} & "
                    f"{m.estimate.value:.6g} $\\pm$ {m.estimate.se:.2g} & {z} & {r.outcome} \\\\")
    rows.append("\\end{tabular}")
    return "{\\small\n" + "\n".join(rows) + "\n}\n"


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _measured(result: CheckResult) -> str:
    """'0.5613 ± 0.0016 (prediction 0.5642, PASS)' for a check's primary width."""
    m = result.primary
    return (f"{m.estimate.value:.4g} ± {m.estimate.se:.2g} (prediction {m.claim.value:.4g}, "
            f"n = {m.width}, {result.outcome})")


def _claim(name: str, network: Network, observable: str, layer: int, **kwargs: object) -> Claim:
    return claim_from_derivation(name, network, observable, layer, **kwargs)


def _check(claims: Sequence[Claim | ClaimFamily], seed: int, rtol: float) -> tuple[CheckResult, ...]:
    return tuple(check_all(list(claims), seed=seed, rtol=rtol))


# --- topics --------------------------------------------------------------------------------------

_RELU = activation("relu")
_N = 32  # width of the networks the topics measure (the catalogue resolves 1 %; answers resolve rtol = 5 %)


def _why_half(seed: int, rtol: float) -> Answer:
    relu_moment = moments(_RELU).second_moment.expr
    a = sp.Symbol("a", real=True)
    leaky = activation("leaky_relu", a=sp.Rational(1, 5))
    normal = mlp([_N] * 4, _RELU, he())
    uniform = mlp([_N] * 4, _RELU, he(distribution="uniform"))
    leaky_net = mlp([_N] * 4, leaky, he(a=sp.Rational(1, 5)))
    claims = [
        _claim("relu keeps half (normal)", normal, "x_second_moment", 2),
        _claim("relu keeps half (uniform)", uniform, "x_second_moment", 2),
        _claim("leaky relu keeps (1+a^2)/2, a=0.2", leaky_net, "x_second_moment", 2),
        _claim("He normal: E[y_3^2] stays 2", normal, "y_second_moment", 3),
        _claim("He uniform: E[y_3^2] stays 2", uniform, "y_second_moment", 3),
    ]
    checks = _check(claims, seed, rtol)
    leaky_condition = condition(activation("leaky_relu", a=None))
    ratio_normal = checks[0].primary.estimate.value / evaluate(normal.dense_layers[0].fan_in * normal.dense_layers[0].weights.variance).value
    paragraphs = (
        "The 1/2 is the fraction of a pre-activation's second moment that relu keeps. Pointwise, "
        "relu(y)^2 + relu(-y)^2 = y^2, so for any y whose law is symmetric about zero the two halves carry "
        f"equal mass: E[relu(y)^2] = {sp.sstr(relu_moment.subs(Q, sp.Symbol('Var[y]')))}. Nothing else is used.",
        "Symmetry of y comes from zero-mean, symmetric weights (y = sum of w x with each w symmetric and "
        "independent of x). Gaussianity is not needed: uniform weights give the same 1/2, exactly and at "
        "every width. Measured at the second layer of a width-32 He network, E[x_2^2] = "
        f"{_measured(checks[0])} with normal weights and {_measured(checks[1])} with uniform weights.",
        "For leaky relu with slope a the identity becomes (1 + a^2) y^2, so the fraction kept is (1 + a^2)/2 "
        f"and the condition is (1 + a^2)/2 n Var[w] = 1, i.e. Var[w] = {sp.sstr(leaky_condition.result)} "
        f"(He et al. 2015, eq. 15). For a = 0.2: {_measured(checks[2])}.",
    )
    numbers = {
        "relu_fraction_normal": checks[0].primary.estimate.value / 2.0,
        "relu_fraction_uniform": checks[1].primary.estimate.value / 2.0,
        "ratio_normal": ratio_normal,
    }
    return Answer(TOPICS["why-half"], paragraphs, (forward(_RELU), leaky_condition), checks,
                  (Series("relu, He normal", normal), Series("relu, He uniform", uniform),
                   Series("leaky relu a=0.2, He", leaky_net)), numbers)


def _why_not_zero_mean(seed: int, rtol: float) -> Answer:
    fixed = FixedInput(tuple(1.0 if j % 2 == 0 else -1.0 for j in range(_N)))
    net = mlp([_N] * 4, _RELU, he(), inputs=fixed)
    shifted = activation("shifted_relu")  # relu - 1/2
    shifted_net = mlp([_N] * 6, shifted, he())
    shifted_family = ClaimFamily(
        "relu - 1/2, He init: E[y_5^2]", "infinite-width recursion for the shifted relu",
        lambda n: _claim("relu - 1/2, He init: E[y_5^2]", mlp([n] * 6, shifted, he()), "y_second_moment", 5),
        width=128, sweep=(8, 32, 128))
    claims = [
        _claim("E[y_1] = 0 (zero-mean weights)", net, "y_mean", 1),
        _claim("E[x_2] = sqrt(Var[y_1]/(2 pi))", net, "x_mean", 2),
        _claim("E[x_2^2] = Var[y_1]/2", net, "x_second_moment", 2),
        shifted_family,
    ]
    checks = _check(claims, seed, rtol)
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
    paragraphs = (
        "He et al. never ask for zero-mean activations. Their target is Var[y_l], the variance of the "
        "pre-activations, and those are zero-mean because the weights are: E[y_l] = n E[w] E[x] = 0. "
        f"Measured: E[y_1] = {_measured(checks[0])}.",
        "The activations x_l = relu(y_(l-1)) are not zero-mean: E[relu(y)] = "
        f"{sp.sstr(mean_formula.subs(Q, sp.Symbol('Var[y]')))}, which is {sp.sstr(mean_at_he)} = "
        f"{_fmt(float(mean_at_he))} when Var[y] = {sp.sstr(he_q)}, as under He's init. Measured: E[x_2] = "
        f"{_measured(checks[1])}. That is why the recursion uses E[x^2] and not Var[x]: Var[w x] = Var[w] E[x^2] "
        "needs only E[w] = 0, not E[x] = 0 (He et al. make this remark after eq. 7). With a non-zero weight mean "
        "the variance gains n E[w]^2 Var[x] and y itself stops being centred (second derivation below).",
        "Subtracting 1/2 from relu does not give a cleaner recursion: E[(relu(y) - 1/2)^2] = "
        f"{sp.sstr(second)} is no longer a fixed fraction of Var[y], so no scale-free condition exists. "
        f"Keeping Var[y] = 1 needs n Var[w] = {_fmt(float(needed))} (instead of He's {sp.sstr(he_scale)}); with "
        f"He's {sp.sstr(condition(_RELU).result.subs(N_IN, sp.Symbol('n')))} the variance "
        f"is driven towards the fixed point q* = {sp.sstr(fixed_point)} = {_fmt(float(fixed_point))}. This recursion "
        "assumes Gaussian pre-activations, i.e. infinitely wide layers: at layer 5 the measured E[y_5^2] exceeds "
        "it by "
        + ", ".join(f"{100 * m.deviation:+.1f}% at n = {m.width}" for m in sorted(checks[3].measurements, key=lambda m: m.width))
        + f" ({checks[3].outcome}: {checks[3].message.split(' (')[0]}).",
    )
    numbers = {
        "relu_mean": checks[1].primary.estimate.value,
        "relu_mean_se": checks[1].primary.estimate.se,
        "relu_mean_prediction": float(mean_at_he),
        "shifted_fixed_point": float(fixed_point),
        "shifted_weight_scale_for_unit_variance": float(needed),
    }
    return Answer(TOPICS["why-not-zero-mean"], paragraphs,
                  (forward(_RELU), forward(_RELU, weight_mean=True), condition(shifted)), checks,
                  (Series("relu, He", mlp([_N] * 6, _RELU, he())), Series("relu - 1/2, He", shifted_net)), numbers)


def _pre_vs_post(seed: int, rtol: float) -> Answer:
    depth = 6
    net = mlp([_N] * (depth + 1), _RELU, he())
    claims = []
    for layer in (2, 5):
        claims.append(_claim(f"forward E[y_{layer}^2]", net, "y_second_moment", layer))
        claims.append(_claim(f"activations E[x_{layer}^2]", net, "x_second_moment", layer))
        claims.append(_claim(f"activation grad E[(dL/dx_{layer})^2]", net, "dx_second_moment", layer))
        claims.append(_claim(f"weight grad E[(dL/dW_{layer})^2]", net, "dw_second_moment", layer))
    checks = _check(claims, seed, rtol)
    weight_grads = [r for r in checks if r.claim.observable_name == "dw_second_moment"]
    spread = max(r.primary.estimate.value for r in weight_grads) / min(r.primary.estimate.value for r in weight_grads)
    paragraphs = (
        "Controlling the pre-activation variance Var[y_l] controls everything downstream of it. The "
        "activations' second moment is E[x_(l+1)^2] = Var[y_l]/2 (the symmetry lemma), the activation "
        "gradients follow He's backward recursion, and the weight gradient of layer l factorises as "
        "E[(dL/dW_l)^2] = E[(dL/dy_l)^2] E[x_l^2]: a backward factor times a forward one, both held constant "
        "by the He conditions (derivation below).",
        "Xavier's argument needs zero-mean activations only because it measures size by the variance; the "
        "recursion that matters uses E[x^2], so relu's non-zero mean changes nothing. Measured on a width-32, "
        f"depth-6 He network: the weight-gradient second moment at layers 2 and 5 is "
        + ", ".join(_measured(r) for r in weight_grads)
        + f"; the largest is {_fmt(spread)} times the smallest.",
    )
    numbers = {"weight_gradient_spread": spread,
               **{f"dw_{r.claim.layer}": r.primary.estimate.value for r in weight_grads}}
    return Answer(TOPICS["pre-vs-post-activation"], paragraphs, (weight_gradient(_RELU), backward(_RELU)), checks,
                  (Series("relu, He (fan-in)", net, ("y_second_moment", "dx_second_moment", "dw_second_moment")),),
                  numbers)


def _fan_in_vs_fan_out(seed: int, rtol: float) -> Answer:
    widths = [32, 64, 128, 64, 32, 16]
    fan_in = mlp(widths, _RELU, he("fan_in"))
    fan_out = mlp(widths, _RELU, he("fan_out"))
    depth = fan_in.depth
    claims = [
        _claim("fan-in: forward E[y_L^2]", fan_in, "y_second_moment", depth),
        _claim("fan-in: backward E[(dL/dx_2)^2]", fan_in, "dx_second_moment", 2),
        _claim("fan-out: forward E[y_L^2]", fan_out, "y_second_moment", depth),
        _claim("fan-out: backward E[(dL/dx_2)^2]", fan_out, "dx_second_moment", 2),
    ]
    checks = _check(claims, seed, rtol)
    telescoped = ratio(_RELU)
    n = sp.IndexedBase("n")
    ratio_value = telescoped.result.subs({n[sp.Symbol("L", integer=True, positive=True) + 1]: widths[-1]})
    paragraphs = (
        "The fan-in condition n_l Var[w_l] / 2 = 1 keeps the forward signal's variance; the fan-out condition "
        "nhat_l Var[w_l] / 2 = 1 keeps the gradient's. With unequal widths only one can hold, but the other "
        "direction's product telescopes to a ratio of two widths, n_(L+1)/n_2 or its inverse (He's c_2/d_L), "
        "whatever the depth: it cannot explode or vanish exponentially.",
        f"Measured on widths {widths}: with fan-in init the forward E[y_L^2] is {_measured(checks[0])} while "
        f"the backward E[(dL/dx_2)^2] is {_measured(checks[1])}; with fan-out init the forward value is "
        f"{_measured(checks[2])} and the backward {_measured(checks[3])}.",
    )
    numbers = {r.name: r.primary.estimate.value for r in checks}
    return Answer(TOPICS["fan-in-vs-fan-out"], paragraphs,
                  (condition(_RELU), condition(_RELU, mode="fan_out"), telescoped), checks,
                  (Series("He fan-in", fan_in, ("y_second_moment", "dx_second_moment")),
                   Series("He fan-out", fan_out, ("y_second_moment", "dx_second_moment"))), numbers)


def _glorot_vs_he(seed: int, rtol: float) -> Answer:
    depth = 8
    he_net = mlp([_N] * (depth + 1), _RELU, he())
    glorot_net = mlp([_N] * (depth + 1), _RELU, glorot_init())
    tanh_net = mlp([_N] * (depth + 1), "tanh", glorot_init())
    tanh_claim = claim_from_derivation(f"tanh, Glorot: linear-regime E[y_{depth}^2]", tanh_net, "y_second_moment",
                                       depth, source="Glorot & Bengio 2010, eq. 12", linear_regime=True)
    claims = [
        _claim("relu, He: E[y_8^2]", he_net, "y_second_moment", depth),
        _claim("relu, Glorot: E[y_8^2]", glorot_net, "y_second_moment", depth),
        tanh_claim,
    ]
    checks = _check(claims, seed, rtol)
    halving = forward(_RELU, scheme=glorot_init())
    l_index = sp.Symbol("l", integer=True, positive=True)
    equal_widths = {sp.IndexedBase("nhat")[l_index]: sp.IndexedBase("n")[l_index]}
    glorot_factor = sp.simplify(halving.extras["factor"].subs(equal_widths))
    he_factor = sp.simplify(forward(_RELU, scheme=he()).extras["factor"].subs(equal_widths))
    he_variance = sp.sstr(condition(_RELU).result.subs(N_IN, sp.Symbol("n")))
    paragraphs = (
        "Glorot and Bengio derive Var[w] = 2/(n_in + n_out) for a network in its linear regime, where "
        "phi(z) ~ z keeps the whole second moment. Relu keeps half of it, so with equal widths Glorot's "
        f"variance {sp.sstr(glorot_init().variance(sp.Symbol('n'), sp.Symbol('n')))} makes each layer multiply Var[y] by "
        f"{sp.sstr(glorot_factor)}: after {depth} layers E[y^2] is {sp.sstr(glorot_factor ** (depth - 1))} of the first "
        f"layer's. He's {he_variance} restores the factor {sp.sstr(he_factor)}.",
        f"Measured at layer {depth}: He {_measured(checks[0])}; Glorot {_measured(checks[1])}. For tanh the "
        "linear regime is an approximation, not a theorem: the measured deviation from the linear prediction "
        f"is {100 * checks[2].primary.deviation:+.1f}% (SE {100 * checks[2].primary.deviation_se:.1f}%), "
        "reported as a measurement, not a failure.",
    )
    numbers = {"he": checks[0].primary.estimate.value, "glorot": checks[1].primary.estimate.value,
               "tanh_deviation": checks[2].primary.deviation}
    return Answer(TOPICS["glorot-vs-he"], paragraphs, (glorot(activation("linear")), halving, condition(_RELU)),
                  checks, (Series("relu, He", he_net), Series("relu, Glorot", glorot_net),
                           Series("tanh, Glorot", tanh_net)), numbers)


def _pytorch_default(seed: int, rtol: float) -> Answer:
    depth = 20
    scheme = torch_linear_default(bias=False)
    net = mlp([32] * (depth + 1), _RELU, scheme)
    claims = [_claim(f"PyTorch default: E[y_{layer}^2]", net, "y_second_moment", layer) for layer in (1, 5, 10, 15)]
    checks = _check(claims, seed, rtol)
    derivation = forward(_RELU, scheme=scheme)
    factor = derivation.extras["factor"]
    measured = {r.claim.layer: r.primary.estimate.value for r in checks}
    first, last = min(measured), max(measured)
    per_layer = (measured[last] / measured[first]) ** (1 / (last - first))
    # kaiming_uniform_(a): gain sqrt(2 / (1 + a^2)), bound gain * sqrt(3 / n_in) (PyTorch torch/nn/init.py).
    slope = sp.sqrt(5)
    gain = sp.sqrt(2 / (1 + slope**2))
    bound = sp.simplify(gain * sp.sqrt(3 / N_IN))
    variance = scheme.variance_expr
    if sp.simplify(bound**2 / 3 - variance) != 0:
        raise DerivationError(f"{scheme}: Var[w] = {variance} is not bound^2/3 = {bound**2 / 3}")
    total = factor ** (depth - 1)
    bias_floor = torch_linear_default(bias=True).bias_variance_expr
    paragraphs = (
        f"PyTorch's nn.Linear initialises its weights with kaiming_uniform_(a={sp.sstr(slope)}): the gain is "
        f"sqrt(2/(1 + a^2)) = {sp.sstr(gain)}, the bound gain * sqrt(3/n_in) = {sp.sstr(bound)}, so Var[w] = "
        f"{sp.sstr(variance)}, {sp.sstr(sp.simplify(variance / lecun().variance_expr))} of LeCun's and "
        f"{sp.sstr(sp.simplify(variance / he().variance_expr))} of He's. In a relu network each layer then multiplies "
        f"the second moment by n Var[w] / 2 = {sp.sstr(factor)}.",
        f"Over {depth} layers that is ({sp.sstr(factor)})^{depth - 1} = {_fmt(float(total))} of the first layer's second "
        f"moment. Measured on a width-{net.dense_layers[0].fan_in} network (no bias): E[y_{first}^2] = "
        f"{_measured(checks[0])}, E[y_{last}^2] = {_measured(checks[-1])}; the measured factor per layer from layer "
        f"{first} to {last} is {_fmt(per_layer)} (the figure follows all {depth} layers). (The default bias adds a "
        f"floor of {sp.sstr(bias_floor)} to each layer's variance, which hides the decay in the biases rather than "
        "curing it.)",
    )
    numbers = {"factor": float(factor), "measured_factor": per_layer, "y15": measured[last]}
    return Answer(TOPICS["pytorch-default"], paragraphs, (derivation,), checks,
                  (Series("relu, PyTorch nn.Linear default", net), Series("relu, He", mlp([32] * (depth + 1), _RELU, he()))),
                  numbers)


TOPICS: dict[str, Topic] = {
    t.name: t
    for t in (
        Topic("why-half", "Why the 1/2 in Kaiming init?",
              "Where does the 1/2 in Var[w] = 2/n come from, and does it need Gaussian weights?", _why_half),
        Topic("why-not-zero-mean", "Why nobody cares that relu outputs are not zero-mean",
              "The lesson says Kaiming init keeps mean 0 and std 1 after linear+relu, but the mean after relu comes "
              "out near 0.5. Is zero mean important, and how?", _why_not_zero_mean),
        Topic("pre-vs-post-activation", "Stable pre-activations, stable weight gradients",
              "He's paper keeps the pre-activations stable, and relu outputs are not zero-mean. Why should stable "
              "pre-activations give stable gradients with respect to the weights?", _pre_vs_post),
        Topic("fan-in-vs-fan-out", "Fan-in or fan-out?",
              "He's forward condition uses the fan-in, the backward one the fan-out. What happens to the other "
              "direction when widths differ?", _fan_in_vs_fan_out),
        Topic("glorot-vs-he", "Glorot versus He", "Why does Glorot's variance not suit relu networks?", _glorot_vs_he),
        Topic("pytorch-default", "What PyTorch's default init does to a deep relu net",
              "nn.Linear uses kaiming_uniform_(a=sqrt(5)). What does that do to a 20-layer relu network?",
              _pytorch_default),
    )
}


def answer(name: str, *, seed: int = 0, rtol: float = 0.05) -> Answer:
    """Build the answer to topic ``name``: derivations, Monte Carlo checks (at ``rtol``) and plotted series."""
    topic = TOPICS.get(name)
    if topic is None:
        raise ClaimError(f"unknown topic {name!r}; known: {', '.join(TOPICS)}")
    return topic.build(seed, rtol)
