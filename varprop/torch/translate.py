r"""Translate a PyTorch model into a :class:`~varprop.network.Network`: one registry entry per torch class.

The model is traced with ``torch.fx.symbolic_trace`` (an ``nn.Sequential`` or a user ``nn.Module``
whose ``forward`` has no data-dependent control flow). Every node of the traced graph between the
input and the output becomes one layer of the network, looked up in a registry:

* :data:`MODULE_TRANSLATIONS`, keyed on torch module classes (``nn.Linear`` -> :class:`Dense` with
  the laws :mod:`varprop.torch.laws` identified for its weight and bias; ``nn.ReLU`` and the other
  activation modules -> :class:`Nonlinearity`), searched along the class's MRO so a user subclass of
  ``nn.Linear`` is a ``Linear``;
* :data:`FUNCTION_TRANSLATIONS`, keyed on the functions an fx graph calls (``F.relu``,
  ``torch.tanh``, ..., and ``operator.add``, the residual addition ``x + f(x)``);
* :data:`METHOD_TRANSLATIONS`, keyed on tensor method names (``x.relu()``).

Adding a layer kind is one :func:`register_module` (or :func:`register_function`) entry. The
residual addition is registered and refused with its reason: the residual block is not a layer of
this branch's :mod:`varprop.network`.

Position :math:`p` of the network is the output of the :math:`p`-th translated node; position
``-1`` is the model's input (the fx placeholder), as in :mod:`varprop.observables`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import sympy as sp
import torch
import torch.nn.functional as F
from torch import fx, nn

from ..activations import activation, expression
from ..errors import SpecError, VarpropError
from ..network import Dense, GaussianInput, Layer, Network, Nonlinearity
from ..weights import Normal, Uniform, WeightLaw

__all__ = [
    "Translation",
    "TranslationError",
    "ModuleTranslation",
    "MODULE_TRANSLATIONS",
    "FUNCTION_TRANSLATIONS",
    "METHOD_TRANSLATIONS",
    "register_module",
    "register_function",
    "register_method",
    "translate",
    "trace",
]


class TranslationError(VarpropError):
    """A model varprop cannot translate: an unsupported module or call, or a graph that is not a chain."""


#: ``laws(path, parameter)`` -> the law of that parameter's entries (``None``: the parameter is zero / absent).
LawLookup = Callable[[str, str], WeightLaw | None]
#: ``candidates(module)`` -> for each parameter name, the named initialisers torch may have used: (name, law).
Candidates = Callable[[nn.Module], Mapping[str, Sequence[tuple[str, WeightLaw | None]]]]


@dataclass(frozen=True)
class ModuleTranslation:
    """How one torch module class becomes a varprop layer.

    ``build(module, path, laws)`` returns the layer; ``candidates(module)`` (modules with
    parameters) lists, per parameter, the named initialisers whose laws :mod:`varprop.torch.laws`
    tests against the parameter's values over many instances.
    """

    build: Callable[[nn.Module, str, LawLookup], Layer]
    candidates: Candidates | None = None


#: Torch module class -> its translation.
MODULE_TRANSLATIONS: dict[type, ModuleTranslation] = {}
#: Function called by an fx ``call_function`` node -> ``build(args, kwargs) -> Layer``.
FUNCTION_TRANSLATIONS: dict[object, Callable[[tuple, dict], Layer]] = {}
#: Tensor method name of an fx ``call_method`` node -> ``build(args, kwargs) -> Layer``.
METHOD_TRANSLATIONS: dict[str, Callable[[tuple, dict], Layer]] = {}


def register_module(cls: type, build: Callable[[nn.Module, str, LawLookup], Layer], candidates: Candidates | None = None,
                    ) -> None:
    """Register the translation of torch module class ``cls`` (see :class:`ModuleTranslation`)."""
    MODULE_TRANSLATIONS[cls] = ModuleTranslation(build, candidates)


def register_function(function: object, build: Callable[[tuple, dict], Layer]) -> None:
    """Register the translation of an fx ``call_function`` target (``F.relu``, ``torch.tanh``, ...)."""
    FUNCTION_TRANSLATIONS[function] = build


def register_method(name: str, build: Callable[[tuple, dict], Layer]) -> None:
    """Register the translation of an fx ``call_method`` target (``"relu"`` for ``x.relu()``)."""
    METHOD_TRANSLATIONS[name] = build


# --- the registry's entries ----------------------------------------------------------------------


def _number(value: object, what: str) -> sp.Expr:
    """A torch hyper-parameter (a Python float such as 0.01) as the exact decimal it was written as."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TranslationError(f"{what} must be a number, got {value!r}")
    return sp.Rational(repr(float(value))) if isinstance(value, float) else sp.Integer(value)


def _linear_candidates(module: nn.Module) -> dict[str, list[tuple[str, WeightLaw | None]]]:
    r"""The initialisers an ``nn.Linear`` may carry, per parameter.

    PyTorch's ``nn.Linear.reset_parameters``: ``kaiming_uniform_(weight, a=sqrt(5))``, i.e. gain
    :math:`\sqrt{2/(1+5)}` and bound :math:`\text{gain}\sqrt{3/n_{in}} = 1/\sqrt{n_{in}}`; the bias
    :math:`U(\pm 1/\sqrt{n_{in}})`. The others are the ``torch.nn.init`` calls users make
    (He et al. 2015, eq. 10 and 14; Glorot & Bengio 2010, eq. 16; LeCun et al. 1998).
    """
    n_in, n_out = sp.Integer(module.in_features), sp.Integer(module.out_features)
    weight = [
        ("nn.Linear default: kaiming_uniform_(a=sqrt(5)), U(+-1/sqrt(fan_in))", Uniform(1 / sp.sqrt(n_in))),
        ("kaiming_uniform_(nonlinearity='relu'), U(+-sqrt(6/fan_in))", Uniform(sp.sqrt(6 / n_in))),
        ("kaiming_normal_(nonlinearity='relu'), N(0, 2/fan_in)", Normal(2 / n_in)),
        ("kaiming_uniform_(mode='fan_out', nonlinearity='relu'), U(+-sqrt(6/fan_out))", Uniform(sp.sqrt(6 / n_out))),
        ("kaiming_normal_(mode='fan_out', nonlinearity='relu'), N(0, 2/fan_out)", Normal(2 / n_out)),
        ("xavier_uniform_, U(+-sqrt(6/(fan_in+fan_out)))", Uniform(sp.sqrt(6 / (n_in + n_out)))),
        ("xavier_normal_, N(0, 2/(fan_in+fan_out))", Normal(2 / (n_in + n_out))),
        ("kaiming_normal_(nonlinearity='linear') (LeCun), N(0, 1/fan_in)", Normal(1 / n_in)),
        ("kaiming_uniform_(nonlinearity='linear') (LeCun), U(+-sqrt(3/fan_in))", Uniform(sp.sqrt(3 / n_in))),
    ]
    out: dict[str, list[tuple[str, WeightLaw | None]]] = {"weight": weight}
    if module.bias is not None:
        out["bias"] = [("nn.Linear default: U(+-1/sqrt(fan_in))", Uniform(1 / sp.sqrt(n_in))), ("zeros_", None)]
    return out


def _linear(module: nn.Module, path: str, laws: LawLookup) -> Layer:
    bias = laws(path, "bias") if module.bias is not None else None
    weights = laws(path, "weight")
    if weights is None:
        weights = Normal(0)
    return Dense(int(module.in_features), int(module.out_features), weights, bias)


def _act(name: str, **params: object) -> Nonlinearity:
    return Nonlinearity(activation(name, **params))


_MISH = "x*tanh(softplus(x))"


def _mish() -> Nonlinearity:
    return Nonlinearity(expression(_MISH))


def _softplus(beta: object, threshold: object) -> Nonlinearity:
    # torch returns x where beta * x > threshold (20 by default): log(1 + e^x) - x < e^-20 there, below float32's resolution.
    if _number(beta, "Softplus beta") != 1:
        raise TranslationError(f"Softplus with beta={beta!r} is not supported (varprop's softplus has beta = 1)")
    return _act("softplus")


def _gelu(approximate: object) -> Nonlinearity:
    if approximate != "none":
        raise TranslationError(f"GELU(approximate={approximate!r}) is not supported: varprop's gelu is the exact erf "
                               "form (approximate='none')")
    return _act("gelu")


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: object) -> object:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _residual(args: tuple, kwargs: dict) -> Layer:
    raise TranslationError(
        "a residual addition (x + f(x)) is not yet supported: varprop's Residual layer comes with the residual "
        "branch of issue 11; the audit translates it once that layer is merged"
    )


_ACTIVATION_MODULES: dict[type, Callable[[nn.Module], Layer]] = {
    nn.ReLU: lambda m: _act("relu"),
    nn.LeakyReLU: lambda m: _act("leaky_relu", a=_number(m.negative_slope, "LeakyReLU negative_slope")),
    nn.Tanh: lambda m: _act("tanh"),
    nn.Sigmoid: lambda m: _act("sigmoid"),
    nn.GELU: lambda m: _gelu(m.approximate),
    nn.SiLU: lambda m: _act("silu"),
    nn.ELU: lambda m: _act("elu", alpha=_number(m.alpha, "ELU alpha")),
    nn.SELU: lambda m: _act("selu"),
    nn.Softplus: lambda m: _softplus(m.beta, m.threshold),
    nn.Mish: lambda m: _mish(),
    nn.Identity: lambda m: _act("linear"),
}

register_module(nn.Linear, _linear, _linear_candidates)
for _cls, _build in _ACTIVATION_MODULES.items():
    register_module(_cls, lambda module, path, laws, _build=_build: _build(module))

_ACTIVATION_FUNCTIONS: dict[object, Callable[[tuple, dict], Layer]] = {
    F.relu: lambda a, k: _act("relu"),
    torch.relu: lambda a, k: _act("relu"),
    F.leaky_relu: lambda a, k: _act("leaky_relu", a=_number(_arg(a, k, 1, "negative_slope", 0.01), "negative_slope")),
    F.tanh: lambda a, k: _act("tanh"),
    torch.tanh: lambda a, k: _act("tanh"),
    F.sigmoid: lambda a, k: _act("sigmoid"),
    torch.sigmoid: lambda a, k: _act("sigmoid"),
    F.gelu: lambda a, k: _gelu(_arg(a, k, 1, "approximate", "none")),
    F.silu: lambda a, k: _act("silu"),
    F.elu: lambda a, k: _act("elu", alpha=_number(_arg(a, k, 1, "alpha", 1.0), "alpha")),
    F.selu: lambda a, k: _act("selu"),
    torch.selu: lambda a, k: _act("selu"),
    F.softplus: lambda a, k: _softplus(_arg(a, k, 1, "beta", 1.0), _arg(a, k, 2, "threshold", 20.0)),
    F.mish: lambda a, k: _mish(),
    operator.add: _residual,
    operator.iadd: _residual,
    torch.add: _residual,
}
for _function, _build in _ACTIVATION_FUNCTIONS.items():
    register_function(_function, _build)
for _name, _build in (("relu", lambda a, k: _act("relu")), ("tanh", lambda a, k: _act("tanh")),
                      ("sigmoid", lambda a, k: _act("sigmoid")), ("add", _residual)):
    register_method(_name, _build)


# --- tracing and translating ---------------------------------------------------------------------


@dataclass(frozen=True)
class Translation:
    """A traced model and the network it translates to.

    ``nodes[p]``, ``paths[p]`` and ``kinds[p]`` are the fx node, the module path (or function name)
    and the torch class (or function) behind position ``p`` of ``network``.
    """

    network: Network
    graph: fx.Graph = field(repr=False, compare=False)
    input_node: str
    nodes: tuple[str, ...]
    paths: tuple[str, ...]
    kinds: tuple[str, ...]
    parameters: tuple[tuple[str, str], ...]  # (module path, parameter name) whose law the network uses

    def place(self, position: int) -> str:
        """``dense3 (layers.4: Linear)``: a position's varprop name and where it is in the torch model."""
        name = self.network.place_name(position)
        if position == -1:
            return name
        return f"{name} ({self.paths[position]}: {self.kinds[position]})"


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace(model)``, with a tracing failure turned into a :class:`TranslationError`."""
    if not isinstance(model, nn.Module):
        raise TranslationError(f"the factory must return a torch.nn.Module, got {type(model).__name__}: {model!r:.80}")
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # torch.fx raises TraceError, TypeError, NotImplementedError, ... on untraceable code
        raise TranslationError(
            f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "varprop.torch audits models whose forward is a chain of supported modules and functions without "
            "data-dependent control flow"
        ) from None


def _supported() -> str:
    modules = ", ".join(sorted({cls.__name__ for cls in MODULE_TRANSLATIONS}))
    functions = ", ".join(sorted({f"{getattr(f, '__module__', '') or ''}.{getattr(f, '__name__', f)}".lstrip(".")
                                  for f, build in FUNCTION_TRANSLATIONS.items() if build is not _residual}))
    methods = ", ".join(sorted(name for name, build in METHOD_TRANSLATIONS.items() if build is not _residual))
    return f"supported modules: {modules}; functions: {functions}; tensor methods: {methods}"


def _module_entry(module: nn.Module) -> ModuleTranslation | None:
    for cls in type(module).__mro__:
        if cls in MODULE_TRANSLATIONS:
            return MODULE_TRANSLATIONS[cls]
    return None


def _function_name(target: object) -> str:
    module = getattr(target, "__module__", None) or ""
    return f"{module}.{getattr(target, '__name__', repr(target))}".lstrip(".")


def module_candidates(model: nn.Module, graph: fx.Graph) -> dict[str, Mapping[str, Sequence[tuple[str, WeightLaw | None]]]]:
    """For every module of the graph with parameters: its path and the candidate laws of each parameter."""
    out = {}
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        module = model.get_submodule(node.target)
        entry = _module_entry(module)
        if entry is not None and entry.candidates is not None:
            out[node.target] = entry.candidates(module)
    return out


def translate(model: nn.Module, input_shape: Sequence[int], laws: LawLookup, *,
              graph: fx.Graph | None = None) -> Translation:
    """The network of ``model`` (traced by fx unless ``graph`` is given) for inputs of ``input_shape``.

    ``laws(path, parameter)`` gives each parameter's law (see :func:`varprop.torch.laws.identify_laws`).
    Every unsupported node is named in one :class:`TranslationError` with the list of what is supported.
    """
    graph = trace(model).graph if graph is None else graph
    layers: list[Layer] = []
    nodes: list[str] = []
    paths: list[str] = []
    kinds: list[str] = []
    parameters: list[tuple[str, str]] = []
    problems: list[str] = []
    current: fx.Node | None = None
    input_node = None
    for node in graph.nodes:
        if node.op == "placeholder":
            if input_node is not None:
                problems.append(f"a second input {node.name!r} (the audit feeds one input tensor)")
                continue
            input_node = current = node
            continue
        if node.op == "output":
            result = node.args[0]
            if result is not current:
                problems.append(f"the model returns {result!r}, not the last translated tensor (a chain is required)")
            continue
        where, kind, build = _lookup(model, node, laws)
        if build is None:
            problems.append(f"{where} ({kind}) is not supported")
            current = node
            continue
        if build is _residual:
            problems.append(f"{where} ({kind}): {_message(_residual)}")
            current = node
            continue
        others = [a for a in (*node.args[1:], *node.kwargs.values()) if isinstance(a, fx.Node)]
        if node.args[:1] != (current,) or others:
            problems.append(f"{where} ({kind}) takes {node.args!r}: only a chain (each node fed by the previous "
                            "one alone) can be translated")
            current = node
            continue
        try:
            layer = build(node)
        except SpecError as exc:
            problems.append(f"{where} ({kind}): {exc}")
            current = node
            continue
        layers.append(layer)
        nodes.append(node.name)
        paths.append(where)
        kinds.append(kind)
        if node.op == "call_module" and isinstance(layer, Dense):
            module = model.get_submodule(node.target)
            parameters += [(node.target, name) for name, p in module.named_parameters(recurse=False) if p is not None]
        current = node
    if input_node is None:
        problems.append("the model has no input")
    if problems:
        raise TranslationError("cannot translate the model: " + "; ".join(problems) + ". " + _supported())
    shape = tuple(input_shape)
    try:
        network = Network(tuple(layers), GaussianInput())
    except SpecError as exc:
        raise TranslationError(f"the translated layers do not form a varprop network: {exc}") from None
    first = network.dense_layers[0].fan_in
    if shape[-1] != first:
        raise TranslationError(f"input shape {shape} does not fit the first Linear layer, which takes {first} features "
                               f"(the last entry of the input shape must be {first})")
    return Translation(network, graph, input_node.name, tuple(nodes), tuple(paths), tuple(kinds), tuple(parameters))


def _message(build: Callable) -> str:
    try:
        build((), {})
    except TranslationError as exc:
        return str(exc)
    return "not supported"  # pragma: no cover


def _lookup(model: nn.Module, node: fx.Node, laws: LawLookup) -> tuple[str, str, Callable[[fx.Node], Layer] | None]:
    """(where in the model, which torch class or function, the builder or None) for one fx node."""
    if node.op == "call_module":
        module = model.get_submodule(node.target)
        entry = _module_entry(module)
        kind = type(module).__name__
        if entry is None:
            return f"module {node.target!r}", f"{type(module).__module__}.{kind}", None
        return node.target, kind, (lambda n, m=module, e=entry: e.build(m, n.target, laws))
    if node.op == "call_function":
        build = FUNCTION_TRANSLATIONS.get(node.target)
        kind = _function_name(node.target)
        if build is None:
            return f"call {node.name!r}", kind, None
        if build is _residual:
            return f"call {node.name!r}", kind, _residual
        return node.name, kind, (lambda n, b=build: b(n.args, dict(n.kwargs)))
    if node.op == "call_method":
        build = METHOD_TRANSLATIONS.get(node.target)
        kind = f"Tensor.{node.target}"
        if build is None:
            return f"method call {node.name!r}", kind, None
        if build is _residual:
            return f"method call {node.name!r}", kind, _residual
        return node.name, kind, (lambda n, b=build: b(n.args, dict(n.kwargs)))
    return f"node {node.name!r}", node.op, None
