r"""Audit a PyTorch model: derive every layer's second moments, measure them on real instances, judge.

:func:`audit` runs these steps:

1. **Instances.** Network :math:`i` of phase :math:`k` (0: the measured sample, 1: the pilot that
   identifies the laws) is built by ``factory()`` under ``torch.manual_seed(s0)`` inside
   ``torch.random.fork_rng`` (the caller's RNG state is left alone), where
   ``(s0, s1) = SeedSequence(seed, spawn_key=(k, i)).generate_state(2, numpy.uint64)``
   (:func:`instance_seeds`). The model runs in training mode (``model.train()``, whatever the
   factory left): dropout is active, as :class:`~varprop.network.Dropout` is derived; its masks
   come from torch's global generator seeded, for the forward pass of network :math:`i` only, with
   ``SeedSequence(seed, spawn_key=(2, i))`` (:func:`random_seed`). The model keeps the initialisers of its own code; it is only cast to
   float64 (exactly: every float32 is a float64: the audit computes in float64, so an
   ``nn.RMSNorm(eps=None)`` uses float64's machine epsilon :math:`2^{-52}`, varprop's
   :data:`~varprop.network.FLOAT64_EPS`) and in-place activations are run out of place.
2. **Laws.** :func:`varprop.torch.laws.identify_laws` reads every parameter's law from the pilot.
3. **Translation and derivation.** :func:`varprop.torch.translate.translate` turns the traced model
   into a :class:`~varprop.network.Network` with those laws and a unit-variance Gaussian input;
   :func:`varprop.derive.derive` gives, at every position :math:`p`, :math:`E[h_p^2]` and
   :math:`E[\delta_p^2]`, :math:`\delta_p = \partial\mathcal L/\partial h_p`.
4. **Measurement.** Each instance gets ``batch`` inputs :math:`x \sim \mathcal N(0, I)` and the
   loss :math:`\mathcal L = \sum_b \langle g_b, \text{out}_b\rangle` with :math:`g \sim \mathcal N(0, I)`
   drawn from ``torch.Generator().manual_seed(s1)`` — the convention of varprop's sampler
   (:mod:`varprop.montecarlo.sampler`), so :math:`\partial\mathcal L/\partial \text{out} = g`. The
   traced graph runs through a ``torch.fx.Interpreter`` that keeps every place's tensor and its
   autograd gradient. Per network, the value of a place is the mean of :math:`h^2` (or
   :math:`\delta^2`) over its units and the batch: its expectation is the derived second moment,
   and the network stays the independent draw.
5. **Verdicts.** :func:`varprop.montecarlo.check.judge_values`: the checker's own tests, Holm over
   all the places together.

Then, along the depth, the ratio of each layer with weights' (dense, convolution) and each residual
block's :math:`E[y_l^2]` to the input's
:math:`E[x_1^2]` (and of each gradient to the output's) and the first layer where it crosses
:data:`EXPLODE` or :data:`VANISH`, with the weight variance that would keep it constant.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import sympy as sp
import torch
from torch import fx, nn

from ..catalogue import claim_from_derivation
from ..derive import evaluate, moments
from ..errors import DerivationError, VarpropError, abbreviate
from ..montecarlo.check import CheckResult, judge_values
from ..montecarlo.limits import check_seed
from ..network import Conv, Dense, Nonlinearity, Residual
from ..observables import Gradient, SecondMoment, Signal
from ..weights import WeightLaw
from .laws import IdentifiedLaw, identify_laws
from .translate import Translation, first_weighted, module_candidates, run_out_of_place, trace, translate

__all__ = ["audit", "AuditResult", "PlaceAudit", "LayerFix", "instance_seeds", "random_seed", "audit_figure", "EXPLODE", "VANISH",
           "MAX_NETWORKS", "MAX_BATCH"]

#: A second moment this many times the reference's has exploded; one this fraction of it has vanished.
EXPLODE = 10.0
VANISH = 0.1
#: Bounds on the work one audit may ask for.
MAX_NETWORKS = 1_000_000
#: The relative error a PASS resolves by default (as in varprop explain: a diagnostic, not a calibration).
DEFAULT_RTOL = 0.05
MAX_BATCH = 4096
_MAX_ELEMENTS = 2**27  # elements of one input batch


class AuditError(VarpropError):
    """Bad arguments to an audit, or a factory that does not build the same model every time."""


def instance_seeds(seed: int, phase: int, index: int) -> tuple[int, int]:
    """``(model seed, data seed)`` of network ``index`` in ``phase`` (0: measured sample, 1: the law pilot)."""
    state = np.random.SeedSequence(seed, spawn_key=(phase, index)).generate_state(2, dtype=np.uint64)
    return int(state[0]), int(state[1])


def random_seed(seed: int, index: int) -> int:
    """The seed of torch's global generator while network ``index`` runs forward (its dropout masks)."""
    return int(np.random.SeedSequence(seed, spawn_key=(2, index)).generate_state(1, dtype=np.uint64)[0])


def _build(factory: Callable[[], nn.Module], model_seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_seed)
        try:
            model = factory()
        except VarpropError:
            raise
        except Exception as exc:
            raise AuditError(f"the factory raised {type(exc).__name__}: {str(exc)[:300]}") from None
    if not isinstance(model, nn.Module):
        raise AuditError(f"the factory must return a torch.nn.Module, got {type(model).__name__}: "
                         f"{abbreviate(repr(model))}")
    model.train()  # the audit measures training mode: dropout active, as varprop's Dropout is derived
    for module in model.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False  # a recorded pre-activation must not be overwritten by its activation
    return model.to(torch.float64)


def _structure(model: nn.Module) -> tuple:
    return tuple((name, type(module).__name__) for name, module in model.named_modules())


class _Recorder(fx.Interpreter):
    """Runs the traced graph on one instance and keeps the tensors of the wanted nodes, with their gradients."""

    def __init__(self, module: nn.Module, graph: fx.Graph, wanted: frozenset[str]):
        super().__init__(module, garbage_collect_values=False, graph=graph)
        self.wanted = wanted
        self.kept: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node) -> object:
        out = run_out_of_place(self, n)
        if n.name in self.wanted and isinstance(out, torch.Tensor):
            if out.requires_grad and not out.is_leaf:
                out.retain_grad()
            self.kept[n.name] = out
        return out


#: The outcome of a place whose second moment varprop cannot derive: measured and reported, not judged.
NOT_DERIVED = "NOT DERIVED"


@dataclass(frozen=True)
class PlaceAudit:
    """One place of the model: the derived second moment of a tensor, its measurement and the verdict.

    ``result`` is the checker's verdict; a place whose derivation is refused (``result`` ``None``) keeps its
    measurement (``measured``: estimate, SE, networks) and the derivation's ``reason``, outcome
    :data:`NOT_DERIVED`, outside the Holm family of the judged places.
    """

    position: int
    place: str  # varprop's name: dense3, act2, input
    where: str  # the torch module path and class, or the function
    tensor: str  # "signal" or "gradient"
    result: CheckResult | None = field(repr=False)
    measured: tuple[float, float, int] | None = None
    reason: str = ""

    @property
    def prediction(self) -> float:
        return math.nan if self.result is None else self.result.claim.value

    @property
    def estimate(self) -> float:
        return self.measured[0] if self.result is None else self.result.primary.estimate.value

    @property
    def se(self) -> float:
        return self.measured[1] if self.result is None else self.result.primary.estimate.se

    @property
    def outcome(self) -> str:
        return NOT_DERIVED if self.result is None else self.result.outcome

    @property
    def exactness(self) -> str:
        return "-" if self.result is None else self.result.exactness

    @property
    def message(self) -> str:
        return self.reason if self.result is None else self.result.message

    def to_dict(self) -> dict[str, object]:
        return {"position": self.position, "place": self.place, "torch": self.where, "tensor": self.tensor,
                "prediction": None if self.result is None else self.prediction,
                "prediction_expr": None if self.result is None else str(self.result.claim.prediction),
                "exactness": None if self.result is None else self.exactness, "estimate": self.estimate, "se": self.se,
                "networks": self.measured[2] if self.result is None else self.result.primary.estimate.n,
                "outcome": self.outcome, "message": self.message}


@dataclass(frozen=True)
class LayerFix:
    r"""The weight variance that keeps a dense (or convolution) layer's :math:`E[y^2]` equal to its input pre-activation's.

    With :math:`c = E[\phi(z)^2]` for :math:`z \sim \mathcal N(0, 1)` (:math:`\phi` the activation in
    front of the layer, the identity for the first), :math:`\operatorname{Var}[w] = \text{gain}^2/n_{in}`,
    :math:`\text{gain} = 1/\sqrt c` (He et al. 2015, eq. 10 for relu: gain :math:`\sqrt 2`), and zero
    biases. Exact for the rectifier family at every :math:`q`; for other activations at :math:`q = 1`.
    """

    place: str
    fan_in: int
    activation: str
    gain: sp.Expr
    variance: sp.Expr
    torch_call: str

    def describe(self) -> str:
        return (f"{self.place}: Var[w] = {self.variance} (gain {self.gain} = {float(self.gain):.4g} after "
                f"{self.activation}, fan_in {self.fan_in}): {self.torch_call}")

    def to_dict(self) -> dict[str, object]:
        return {"place": self.place, "fan_in": self.fan_in, "activation": self.activation, "gain": str(self.gain),
                "gain_value": float(self.gain), "variance": str(self.variance), "variance_value": float(self.variance),
                "torch": self.torch_call}


_TORCH_GAIN_NAMES = {"relu": "relu", "leaky_relu": "leaky_relu", "linear": "linear", "tanh": "tanh",
                     "sigmoid": "sigmoid", "selu": "selu"}


def _fix(place: str, layer: Dense | Conv, act: Nonlinearity | None) -> LayerFix:
    if act is None:
        name, second = "the input", sp.Integer(1)
    else:
        name = act.activation.name
        second = moments(act.activation, sp.Integer(1)).second_moment.expr
        if second.has(sp.Integral):  # no closed form: quadrature (error estimate below 1e-10)
            second = sp.Float(evaluate(second).value, 12)
    gain = sp.simplify(1 / sp.sqrt(second))
    variance = sp.simplify(gain**2 / layer.fan_in)
    torch_name = "linear" if act is None else _TORCH_GAIN_NAMES.get(name)
    call = f"torch.nn.init.normal_(weight, std={float(sp.sqrt(variance)):.6g})"
    if torch_name is not None:
        params = dict(act.activation.params) if act is not None else {}
        slope = params.get("a")
        torch_gain = nn.init.calculate_gain(torch_name, None if slope is None else float(slope))
        if math.isclose(torch_gain, float(gain), rel_tol=1e-12):
            extra = "" if slope is None else f"a={float(slope):g}, "
            call = f"torch.nn.init.kaiming_normal_(weight, {extra}nonlinearity='{torch_name}')"
    if layer.bias is not None:
        call += " and torch.nn.init.zeros_(bias)"
    return LayerFix(place, int(layer.fan_in), name, gain, variance, call)


@dataclass(frozen=True)
class AuditResult:
    """What :func:`audit` found: the translation, the laws, every place's verdict and the depth profile."""

    model: str
    input_shape: tuple[int, ...]
    networks: int
    batch: int
    seed: int
    rtol: float
    translation: Translation = field(repr=False)
    laws: tuple[IdentifiedLaw, ...]
    places: tuple[PlaceAudit, ...]
    seconds: float

    @property
    def network(self):
        return self.translation.network

    @property
    def signal(self) -> tuple[PlaceAudit, ...]:
        return tuple(p for p in self.places if p.tensor == "signal")

    @property
    def gradient(self) -> tuple[PlaceAudit, ...]:
        return tuple(p for p in self.places if p.tensor == "gradient")

    @property
    def failures(self) -> tuple[PlaceAudit, ...]:
        return tuple(p for p in self.places if p.outcome == "FAIL")

    def depth_profile(self) -> list[dict[str, object]]:
        """Per dense or convolution layer and residual block (top level): E[y_l^2] and the input's gradient second
        moment, relative to the references, predicted and measured."""
        net = self.network
        signal = {p.position: p for p in self.signal}
        gradient = {p.position: p for p in self.gradient}
        output = gradient[len(net.layers) - 1]
        rows = []
        positions = [p for p, layer in enumerate(net.layers) if isinstance(layer, Dense | Conv | Residual)]
        for ordinal, position in enumerate(positions, 1):
            s, g = signal[position], gradient[position - 1]
            rows.append({"layer": ordinal, "place": s.place,
                         "signal_predicted": s.prediction, "signal_measured": s.estimate,
                         "gradient_predicted": g.prediction / output.prediction,
                         "gradient_measured": g.estimate / output.estimate})
        return rows

    def crossings(self) -> dict[str, object]:
        """Where the ratios of :meth:`depth_profile` first leave [VANISH, EXPLODE].

        The signal from the input up (E[y_l^2] / E[x_1^2]); the gradient from the output down (the
        second moment of the gradient at layer l's input over the output gradient's).
        """
        out: dict[str, object] = {}
        profile = self.depth_profile()
        for kind in ("signal", "gradient"):
            rows = profile if kind == "signal" else profile[::-1]  # the gradient travels from the output down
            for source in ("predicted", "measured"):
                hit = None
                for row in rows:
                    ratio = row[f"{kind}_{source}"]
                    if ratio > EXPLODE or ratio < VANISH:
                        hit = {"layer": row["layer"], "place": row["place"], "ratio": ratio,
                               "direction": "explodes" if ratio > EXPLODE else "vanishes"}
                        break
                out[f"{kind}_{source}"] = hit
        return out

    def fixes(self) -> tuple[LayerFix, ...]:
        """For every dense and convolution layer (top level), the weight variance that keeps the second moment
        constant (see :class:`LayerFix`; for a padded convolution, at its interior positions)."""
        net = self.network
        out, act = [], None
        for position, layer in enumerate(net.layers):
            if isinstance(layer, Dense | Conv):
                out.append(_fix(net.place_name(position), layer, act))
                act = None
            elif isinstance(layer, Nonlinearity):
                act = layer
            elif isinstance(layer, Residual):
                act = None  # the next layer reads the block's output, not an activation's
        return tuple(out)

    def summary(self) -> str:
        """Where the signal and the gradient explode or vanish, and what would fix it."""
        crossing = self.crossings()
        profile = self.depth_profile()
        lines = []
        for kind, reference in (("signal", "E[x_1^2] of the input"), ("gradient", "the output gradient's")):
            predicted, measured = crossing[f"{kind}_predicted"], crossing[f"{kind}_measured"]
            derived = sum(1 for row in profile if not math.isnan(row[f"{kind}_predicted"]))
            if predicted is None and measured is None:
                sources = ("predicted and measured" if derived == len(profile) else
                           f"measured; predicted at the {derived} of {len(profile)} layers derived")
                lines.append(f"The {kind} second moment stays within {VANISH:g}x-{EXPLODE:g}x of {reference} at every "
                             f"layer ({sources}).")
                continue
            parts = []
            for source, hit in (("predicted", predicted), ("measured", measured)):
                if hit is not None:
                    parts.append(f"{source}: it {hit['direction']} at layer {hit['layer']} ({hit['place']}, "
                                 f"{hit['ratio']:.3g}x {reference})")
                else:
                    parts.append(f"{source}: within {VANISH:g}x-{EXPLODE:g}x")
            lines.append(f"The {kind} second moment leaves {VANISH:g}x-{EXPLODE:g}x: " + "; ".join(parts) + ".")
        if any(crossing.values()):
            lines.append("An init that keeps it constant (per dense or convolution layer, zero biases):")
            lines += [f"  {fix.describe()}" for fix in self.fixes()]
        return "\n".join(lines)

    def table(self) -> str:
        header = ("place", "torch", "tensor", "exactness", "prediction", "measured +- SE", "ratio", "verdict")
        rows = [header]
        previous: dict[str, float] = {}
        for p in self.places:
            ratio = ""
            if p.tensor in previous and previous[p.tensor] > 0:
                ratio = f"{p.estimate / previous[p.tensor]:.3g}"
            previous[p.tensor] = p.estimate
            rows.append((p.place, p.where, p.tensor, p.exactness, "-" if p.result is None else f"{p.prediction:.5g}",
                         f"{p.estimate:.5g} +- {p.se:.2g}", ratio, p.outcome))
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
        return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)

    def text(self) -> str:
        """The audit as readable text: laws, the per-place table, depth crossings and fixes."""
        counts = {o: sum(1 for p in self.places if p.outcome == o) for o in ("PASS", "FAIL", "INCONCLUSIVE", NOT_DERIVED)}
        out = [f"varprop audit of {self.model} (input shape {self.input_shape}, {self.networks} networks x "
               f"{self.batch} inputs, seed {self.seed}, rtol {self.rtol:g}, {self.seconds:.1f} s)", "",
               "Parameter laws (read from the instances torch initialised):"]
        out += [f"  {law.describe()}" for law in self.laws]
        out += ["", "Second moments per place (signal h_p forward; gradient dL/dh_p backward, dL/d(out) = g ~ N(0, I)); "
                "ratio = measured / previous place's:", self.table(), "",
                f"Verdicts: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['INCONCLUSIVE']} INCONCLUSIVE "
                "(Holm over all judged places; an asymptotic claim needs a width sweep for a verdict, so at the model's "
                "one width it is INCONCLUSIVE with its deviation shown)"
                + (f"; {counts[NOT_DERIVED]} places measured but not derived (the reason below)" if counts[NOT_DERIVED]
                   else "") + ".", ""]
        first_with: dict[str, str] = {}  # a refusal's reason, written once: the first place it stopped
        for p in self.places:
            if p.outcome == NOT_DERIVED and p.reason in first_with:
                out.append(f"  {p.place} {p.tensor}: {p.outcome} (the reason given for {first_with[p.reason]})")
            elif p.outcome != "PASS":
                out.append(f"  {p.place} {p.tensor}: {p.outcome}: {p.message}")
                if p.outcome == NOT_DERIVED:
                    first_with[p.reason] = f"{p.place} {p.tensor}"
        out += ["", self.summary()]
        return "\n".join(out).rstrip() + "\n"

    def to_dict(self) -> dict[str, object]:
        return {"model": self.model, "input_shape": list(self.input_shape), "networks": self.networks,
                "batch": self.batch, "seed": self.seed, "rtol": self.rtol, "seconds": self.seconds,
                "laws": [law.to_dict() for law in self.laws], "places": [p.to_dict() for p in self.places],
                "depth_profile": self.depth_profile(), "crossings": self.crossings(),
                "fixes": [fix.to_dict() for fix in self.fixes()]}

    def figure(self):
        """Predicted against measured second moment per place (log scale, +-2 SE bars), signal and gradient."""
        return audit_figure(self)


def audit_figure(result: AuditResult):
    """The audit's figure (a matplotlib :class:`~matplotlib.figure.Figure`, Agg canvas, no pyplot)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 7), layout="constrained")
    axes = figure.subplots(2, 1)
    for ax, (kind, places) in zip(axes, (("signal E[h_p^2]", result.signal), ("gradient E[(dL/dh_p)^2]", result.gradient))):
        xs = np.arange(len(places))
        predicted = np.array([p.prediction for p in places])
        measured = np.array([p.estimate for p in places])
        se = np.array([p.se for p in places])
        ax.plot(xs, predicted, "-", color="0.3", label="derived (varprop)")
        colours = {"PASS": "tab:green", "FAIL": "tab:red", "INCONCLUSIVE": "tab:orange"}
        for outcome, colour in colours.items():
            mask = np.array([p.outcome == outcome for p in places])
            if mask.any():
                lower = np.minimum(2 * se[mask], measured[mask] * (1 - 1e-9))  # bars stay positive on a log axis
                ax.errorbar(xs[mask], measured[mask], yerr=[lower, 2 * se[mask]], fmt="o", color=colour, capsize=3,
                            label=f"measured +-2 SE ({outcome})")
        ax.set_yscale("log")
        ax.set_xticks(xs, [p.place for p in places], rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(kind)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(f"varprop audit: {result.model} ({result.networks} networks)")
    return figure


def _check_shape(input_shape: object) -> tuple[int, ...]:
    if isinstance(input_shape, int) and not isinstance(input_shape, bool):
        input_shape = (input_shape,)
    try:
        shape = tuple(input_shape)  # type: ignore[arg-type]
    except TypeError:
        raise AuditError(f"input_shape must be a tuple of positive integers such as (64,), got "
                         f"{abbreviate(input_shape)}") from None
    if not shape or any(isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 1 for s in shape):
        raise AuditError(f"input_shape must be a non-empty tuple of positive integers such as (64,), got "
                         f"{abbreviate(input_shape)}")
    return tuple(int(s) for s in shape)


def _positive(value: object, what: str, maximum: int, minimum: int = 2) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not minimum <= value <= maximum:
        raise AuditError(f"{what} must be an integer from {minimum} to {maximum}, got {abbreviate(value)}")
    return int(value)


def _input_width(model: nn.Module, graph: fx.Graph) -> int:
    """The input width when it is known without ``input_shape``: the first Linear's ``in_features``, when every node
    before it (activations, dropout, normalisers) keeps the shape, however deeply the Linear is nested."""
    path, first, why = first_weighted(model, graph)
    if isinstance(first, nn.Linear):
        return int(first.in_features)
    if first is None and why == "the model has no nn.Linear or convolution":
        raise AuditError("the model has no nn.Linear or convolution (nor a subclass keeping their forward) at any "
                         "depth of nesting: nothing with weights for the audit to derive")
    reason = (f"its first weighted layer {path!r} is a convolution, whose input shape is (channels, length) or "
              "(channels, height, width)" if first is not None else f"{why}, so the input width is unknown")
    raise AuditError(f"give input_shape: {reason} (e.g. --input-shape 3 8 8 for a convolution, --input-shape 4 4 "
                     "before a flatten)")


def audit(factory: Callable[[], nn.Module], input_shape: Sequence[int] | int | None = None, *, networks: int = 2000,
          batch: int = 8, seed: int = 0, rtol: float = DEFAULT_RTOL, alpha: float = 0.05, pilot: int = 100,
          assume: Mapping[str, WeightLaw | None] | None = None, name: str | None = None,
          progress: Callable[[str, int, int], None] | None = None) -> AuditResult:
    r"""Audit the initialisation of the model ``factory()`` builds (see the module docstring).

    Parameters
    ----------
    factory
        A callable with no arguments returning a fresh ``torch.nn.Module`` initialised by its own code.
    input_shape
        The shape of one input (without the batch dimension), e.g. ``(64,)``; default: the first
        ``nn.Linear``'s ``in_features``.
    networks
        Independently initialised instances measured (the sample size of every verdict).
    batch
        Gaussian inputs per instance (averaged within the instance).
    seed
        Everything random flows from it (:func:`instance_seeds`).
    rtol, alpha
        The checker's relative tolerance (resolved with 90 % power for a PASS) and family-wise
        false-alarm rate.
    pilot
        Instances (from their own seed stream) whose parameters identify the laws.
    assume
        ``{"path.parameter": law}``: laws asserted by the caller instead of identified (``None``: zero).
    progress
        ``progress(label, done, total)`` after each instance.
    """
    if not callable(factory):
        raise AuditError(f"factory must be a callable returning a torch.nn.Module, got {abbreviate(factory)}")
    seed = check_seed(seed, "seed")
    networks = _positive(networks, "networks", MAX_NETWORKS)
    batch = _positive(batch, "batch", MAX_BATCH, minimum=1)
    pilot = _positive(pilot, "pilot", MAX_NETWORKS)
    if not (isinstance(rtol, float | int) and 0 < rtol < 1):
        raise AuditError(f"rtol must be a number between 0 and 1, got {rtol!r}")
    with _one_thread():
        return _audit(factory, input_shape, networks=networks, batch=batch, seed=seed, rtol=rtol, alpha=alpha,
                      pilot=pilot, assume=assume, name=name, progress=progress)


@contextmanager
def _one_thread():
    """Torch's intra-op threads off for the audit's tiny per-instance tensors (restored after).

    Measured on the 2-core machine: a (8 x 64) @ (64 x 64) float64 product took 57 ms with torch's
    default 2 threads while other jobs shared the cores, 5 us with one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _audit(factory, input_shape, *, networks, batch, seed, rtol, alpha, pilot, assume, name, progress) -> AuditResult:
    start = time.perf_counter()
    first = _build(factory, instance_seeds(seed, 1, 0)[0])
    graph = trace(first).graph
    shape = _check_shape(input_shape if input_shape is not None else (_input_width(first, graph),))
    if batch * math.prod(shape) > _MAX_ELEMENTS:
        raise AuditError(f"batch x input shape is {batch} x {shape}: more than {_MAX_ELEMENTS} numbers per input batch")
    structure = _structure(first)
    candidates = module_candidates(first, graph)
    pilots = [first] + [_build(factory, instance_seeds(seed, 1, i)[0]) for i in range(1, pilot)]
    for model in pilots:
        if _structure(model) != structure:
            raise AuditError("the factory builds models of different structure from one call to the next; the audit "
                             "needs the same architecture every time")
    identified = identify_laws(pilots, candidates, assume)
    del pilots

    def laws(path: str, parameter: str) -> WeightLaw | None:
        return identified[path, parameter].law

    translation = translate(first, shape, laws, graph=graph, batch=batch)
    net = translation.network
    label = name or getattr(factory, "__qualname__", None) or type(first).__name__
    claims, places = [], []
    refused: dict[int, str] = {}  # places varprop cannot derive (a BatchNorm's law): measured only
    for position in range(len(net.layers)):
        where = f"{translation.paths[position]}: {translation.kinds[position]}"
        try:
            claim = claim_from_derivation(f"{net.place_name(position)} E[h^2]", net, SecondMoment(Signal(position)))
        except DerivationError as exc:
            refused[len(places)] = str(exc)
            claim = None
        claims.append(claim)
        places.append((position, net.place_name(position), where, "signal"))
    for position in range(-1, len(net.layers)):
        where = "model input" if position == -1 else f"{translation.paths[position]}: {translation.kinds[position]}"
        try:
            claim = claim_from_derivation(f"{net.place_name(position)} E[(dL/dh)^2]", net,
                                          SecondMoment(Gradient(position)))
        except DerivationError as exc:
            refused[len(places)] = str(exc)
            claim = None
        claims.append(claim)
        places.append((position, net.place_name(position), where, "gradient"))
    values = _measure(factory, translation, shape, networks=networks, batch=batch, seed=seed, structure=structure,
                      progress=progress)
    columns = [values["signal"][:, position + 1] if kind == "signal" else values["gradient"][:, position + 1]
               for position, _, _, kind in places]
    judged = [i for i in range(len(places)) if i not in refused]
    verdicts = dict(zip(judged, judge_values([claims[i] for i in judged], [columns[i] for i in judged], rtol=rtol,
                                             alpha=alpha, engine="torch")))
    audits = tuple(PlaceAudit(position, place, where, kind, verdicts[i]) if i in verdicts else
                   PlaceAudit(position, place, where, kind, None, _measured(columns[i]), refused[i])
                   for i, (position, place, where, kind) in enumerate(places))
    return AuditResult(label, shape, networks, batch, seed, float(rtol), translation, tuple(identified.values()), audits,
                       time.perf_counter() - start)


def _measured(values: np.ndarray) -> tuple[float, float, int]:
    """(mean, SE, networks) of the finite per-network values of a place that is measured but not judged."""
    kept = values[np.isfinite(values)]
    if kept.size < 2:
        return math.nan, math.nan, int(kept.size)
    return float(kept.mean()), float(kept.std(ddof=1) / math.sqrt(kept.size)), int(kept.size)


def _measure(factory: Callable[[], nn.Module], translation: Translation, shape: tuple[int, ...], *, networks: int,
             batch: int, seed: int, structure: tuple, progress: Callable[[str, int, int], None] | None,
             ) -> dict[str, np.ndarray]:
    """Per network and position (column p + 1; column 0 the input): mean of h^2 and of (dL/dh)^2."""
    count = len(translation.nodes) + 1
    signal = np.empty((networks, count))
    gradient = np.empty((networks, count))
    wanted = frozenset(translation.nodes)
    step = max(1, networks // 100)
    for i in range(networks):
        model_seed, data_seed = instance_seeds(seed, 0, i)
        model = _build(factory, model_seed)
        if _structure(model) != structure:
            raise AuditError("the factory builds models of different structure from one call to the next; the audit "
                             "needs the same architecture every time")
        generator = torch.Generator().manual_seed(data_seed)
        x = torch.randn((batch, *shape), generator=generator, dtype=torch.float64, requires_grad=True)
        recorder = _Recorder(model, translation.graph, wanted)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(random_seed(seed, i))  # dropout masks: torch's global generator, seeded per network
            out = recorder.run(x)
        if not isinstance(out, torch.Tensor):
            raise AuditError(f"the model returns {type(out).__name__}, not a tensor")
        g = torch.randn(out.shape, generator=generator, dtype=torch.float64)
        (out * g).sum().backward()
        signal[i, 0] = float(x.detach().square().mean())
        gradient[i, 0] = float(x.grad.square().mean())
        for column, node in enumerate(translation.nodes, 1):
            tensor = recorder.kept[node]
            signal[i, column] = float(tensor.detach().square().mean())
            gradient[i, column] = float(tensor.grad.square().mean()) if tensor.grad is not None else math.nan
        if progress is not None and ((i + 1) % step == 0 or i + 1 == networks):
            progress("instances", i + 1, networks)
    return {"signal": signal, "gradient": gradient}
