r"""Translate a PyTorch model into a :class:`~varprop.network.Network`: one registry entry per torch class.

The model is traced with ``torch.fx.symbolic_trace`` (an ``nn.Sequential`` or a user ``nn.Module``
whose ``forward`` has no data-dependent control flow). Every node of the traced graph between the
input and the output becomes one layer of the network, looked up in a registry:

* :data:`MODULE_TRANSLATIONS`, keyed on torch module classes (``nn.Linear`` -> :class:`Dense` and
  ``nn.Conv1d``/``nn.Conv2d`` -> :class:`Conv` with the laws :mod:`varprop.torch.laws` identified for
  their weight and bias; ``nn.Dropout(p)`` -> ``Dropout(keep=1-p)``; ``nn.LayerNorm`` and
  ``nn.RMSNorm`` -> :class:`LayerNorm` / :class:`RMSNorm`; ``nn.BatchNorm1d`` on a ``(batch, features)``
  tensor -> :class:`BatchNorm` over the measured batch (training mode), and ``nn.BatchNorm2d`` (or
  ``nn.BatchNorm1d`` on a convolution's ``(batch, C, L)`` output) -> :class:`BatchNorm` over each
  channel's batch and positions (``channels=C``); ``nn.ReLU`` and the other activation
  modules -> :class:`Nonlinearity`), searched along the class's MRO so a user subclass of
  ``nn.Linear`` is a ``Linear``;
* :data:`FUNCTION_TRANSLATIONS`, keyed on the functions an fx graph calls (``F.relu``,
  ``torch.tanh``, ..., ``operator.add``, the residual addition ``x + f(x)``, ``torch.flatten``);
* :data:`METHOD_TRANSLATIONS`, keyed on tensor method names (``x.relu()``).

Adding a layer kind is one :func:`register_module` (or :func:`register_function`) entry. A few
entries are :class:`GraphRule` s, rules on the graph's structure rather than layers: the residual
addition ``x + alpha * f(x)`` (``operator.add``, ``torch.add``, ``Tensor.add``; the layers
translated since ``x`` become the branch of a :class:`~varprop.network.Residual`), the branch scale
(a multiplication or division by a number before that addition), and a reshape that keeps the
batch dimension (``nn.Flatten``, ``torch.flatten``, ``.view``, ``.reshape``), the identity on
varprop's signals, which are flattened channels first and then positions, in C order, as torch's.
The graph runs once on a small batch to know each tensor's shape (a convolution's input size).

Position :math:`p` of the network is the output of the :math:`p`-th translated node; position
``-1`` is the model's input (the fx placeholder), as in :mod:`varprop.observables`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import sympy as sp
import torch
import torch.nn.functional as F
from torch import fx, nn

from ..activations import activation, expression
from ..errors import SpecError, VarpropError
from ..network import (FLOAT64_EPS, BatchNorm, Conv, Dense, Dropout, GaussianInput, Layer, LayerNorm, Network,
                       Nonlinearity, Residual, RMSNorm)
from ..weights import Normal, Uniform, WeightLaw

__all__ = [
    "Translation",
    "TranslationError",
    "ModuleTranslation",
    "GraphRule",
    "Shapes",
    "MODULE_TRANSLATIONS",
    "FUNCTION_TRANSLATIONS",
    "METHOD_TRANSLATIONS",
    "register_module",
    "register_function",
    "register_method",
    "translate",
    "trace",
    "first_weighted",
    "WEIGHTED_MODULES",
]


class TranslationError(VarpropError):
    """A model varprop cannot translate: an unsupported module or call, or a graph that is not a chain."""


#: ``laws(path, parameter)`` -> the law of that parameter's entries (``None``: the parameter is zero / absent).
LawLookup = Callable[[str, str], WeightLaw | None]


@dataclass(frozen=True)
class Shapes:
    """The shapes (batch dimension first) of a node's input and output tensors in the traced run, and their dtype.

    Before any convolution, a tensor with more than two dimensions (an input of shape (T, F)) is a
    batch of rows that ``nn.Linear`` and the normalisers treat one by one, as varprop's layers
    treat one input: every row is an input of width F.
    """

    input: tuple[int, ...]
    output: tuple[int, ...]
    dtype: torch.dtype
    after_conv: bool = False  # a convolution comes before the node (its tensor's last dimension is positions)
    batch: int | None = None  # the inputs measured together, which a BatchNorm normalises over (None: not given)


@dataclass(frozen=True)
class GraphRule:
    """A registry entry that is no layer of its own but a rule on the graph's structure.

    ``"residual"``: an addition ``x + f(x)`` of a tensor ``x`` of the chain and the output of the
    layers translated since ``x`` (they become the branch of one :class:`~varprop.network.Residual`);
    ``"scale"``: a multiplication (``"divide"``: a division) by a number of that branch's output,
    which sets the residual's ``alpha``; ``"reshape"``: a flatten or reshape that keeps the batch
    dimension, which is the identity on varprop's signals (flattened channels first, then positions,
    in C order, as ``torch.flatten`` orders them).
    """

    kind: str
#: ``candidates(module)`` -> for each parameter name, the named initialisers torch may have used: (name, law).
Candidates = Callable[[nn.Module], Mapping[str, Sequence[tuple[str, WeightLaw | None]]]]


@dataclass(frozen=True)
class ModuleTranslation:
    """How one torch module class becomes a varprop layer.

    ``build(module, path, laws, shapes)`` returns the layer (``shapes``: :class:`Shapes` of the
    traced run), or is a :class:`GraphRule` (``nn.Flatten``); ``candidates(module)`` (modules with
    parameters) lists, per parameter, the named initialisers whose laws :mod:`varprop.torch.laws`
    tests against the parameter's values over many instances.
    """

    build: Callable[[nn.Module, str, LawLookup, Shapes], Layer] | GraphRule
    candidates: Candidates | None = None


#: Torch module class -> its translation.
MODULE_TRANSLATIONS: dict[type, ModuleTranslation] = {}
#: Function called by an fx ``call_function`` node -> ``build(args, kwargs) -> Layer`` or a :class:`GraphRule`.
FUNCTION_TRANSLATIONS: dict[object, Callable[[tuple, dict], Layer] | GraphRule] = {}
#: Tensor method name of an fx ``call_method`` node -> ``build(args, kwargs) -> Layer`` or a :class:`GraphRule`.
METHOD_TRANSLATIONS: dict[str, Callable[[tuple, dict], Layer] | GraphRule] = {}


def register_module(cls: type, build: Callable[[nn.Module, str, LawLookup, Shapes], Layer] | GraphRule,
                    candidates: Candidates | None = None) -> None:
    """Register the translation of torch module class ``cls`` (see :class:`ModuleTranslation`)."""
    MODULE_TRANSLATIONS[cls] = ModuleTranslation(build, candidates)


def register_function(function: object, build: Callable[[tuple, dict], Layer] | GraphRule) -> None:
    """Register the translation of an fx ``call_function`` target (``F.relu``, ``torch.tanh``, ...)."""
    FUNCTION_TRANSLATIONS[function] = build


def register_method(name: str, build: Callable[[tuple, dict], Layer] | GraphRule) -> None:
    """Register the translation of an fx ``call_method`` target (``"relu"`` for ``x.relu()``)."""
    METHOD_TRANSLATIONS[name] = build


# --- the registry's entries ----------------------------------------------------------------------


def _number(value: object, what: str) -> sp.Expr:
    """A torch hyper-parameter (a Python float such as 0.01) as the exact decimal it was written as."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TranslationError(f"{what} must be a number, got {value!r}")
    return sp.Rational(repr(float(value))) if isinstance(value, float) else sp.Integer(value)


def _fans(module: nn.Module) -> tuple[int, int]:
    """PyTorch's fans of ``module.weight``: ``in_features``/``out_features`` for nn.Linear, ``in_channels/groups * K``
    and ``out_channels * K`` for a convolution (``torch.nn.init._calculate_fan_in_and_fan_out``)."""
    if isinstance(module, nn.Linear):
        return int(module.in_features), int(module.out_features)
    taps = math.prod(module.kernel_size)
    return int(module.in_channels) // int(module.groups) * taps, int(module.out_channels) * taps


def _linear_candidates(module: nn.Module) -> dict[str, list[tuple[str, WeightLaw | None]]]:
    r"""The initialisers an ``nn.Linear`` or ``nn.Conv1d``/``nn.Conv2d`` may carry, per parameter.

    PyTorch's ``reset_parameters`` of both: ``kaiming_uniform_(weight, a=sqrt(5))``, i.e. gain
    :math:`\sqrt{2/(1+5)}` and bound :math:`\text{gain}\sqrt{3/n_{in}} = 1/\sqrt{n_{in}}`; the bias
    :math:`U(\pm 1/\sqrt{n_{in}})`, with the fans of ``_calculate_fan_in_and_fan_out``
    (:math:`n_{in} = C_\text{in} K / g` for a convolution). The others are the ``torch.nn.init``
    calls users make (He et al. 2015, eq. 10 and 14; Glorot & Bengio 2010, eq. 16; LeCun et al. 1998).
    """
    fan_in, fan_out = _fans(module)
    n_in, n_out = sp.Integer(fan_in), sp.Integer(fan_out)
    cls = "nn.Linear" if isinstance(module, nn.Linear) else f"nn.{type(module).__name__}"
    for base in type(module).__mro__:
        if base in (nn.Linear, nn.Conv1d, nn.Conv2d):
            cls = f"nn.{base.__name__}"
            break
    weight = [
        (f"{cls} default: kaiming_uniform_(a=sqrt(5)), U(+-1/sqrt(fan_in))", Uniform(1 / sp.sqrt(n_in))),
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
        out["bias"] = [(f"{cls} default: U(+-1/sqrt(fan_in))", Uniform(1 / sp.sqrt(n_in))), ("zeros_", None)]
    return out


def _linear(module: nn.Module, path: str, laws: LawLookup, shape: Shapes) -> Layer:
    if len(shape.input) != 2 and shape.after_conv:
        raise TranslationError(f"nn.Linear {path!r} receives a tensor of shape {tuple(shape.input)} after a "
                               "convolution; the audit translates a Linear applied to (batch, features) there "
                               "(flatten the convolution's output first: nn.Flatten(), torch.flatten(x, 1) or "
                               "x.view(x.size(0), -1))")
    bias = laws(path, "bias") if module.bias is not None else None
    weights = laws(path, "weight")
    if weights is None:
        weights = Normal(0)
    return Dense(int(module.in_features), int(module.out_features), weights, bias)


def _conv(module: nn.Module, path: str, laws: LawLookup, shape: Shapes) -> Layer:
    dims = len(module.kernel_size)
    name = f"nn.Conv{dims}d {path!r}"
    if any(d != 1 for d in module.dilation):
        raise TranslationError(f"{name} has dilation {tuple(module.dilation)}; varprop's Conv has no dilation (1 only)")
    if module.padding_mode != "zeros":
        raise TranslationError(f"{name} has padding_mode={module.padding_mode!r}; only 'zeros' is supported")
    padding = module.padding
    if padding == "valid":
        padding = (0,) * dims
    elif padding == "same":
        if any(k % 2 == 0 for k in module.kernel_size):
            raise TranslationError(f"{name} has padding='same' with an even kernel {tuple(module.kernel_size)}: "
                                   "torch pads it unevenly, which varprop's Conv (the same padding on both sides) "
                                   "cannot express")
        padding = tuple((k - 1) // 2 for k in module.kernel_size)
    if len(shape.input) != dims + 2:
        raise TranslationError(f"{name} receives a tensor of shape {tuple(shape.input)}; the audit translates a "
                               f"convolution applied to a batch (batch, channels, {dims} spatial size"
                               f"{'s' if dims > 1 else ''})")
    size = tuple(int(n) for n in shape.input[2:])
    bias = laws(path, "bias") if module.bias is not None else None
    weights = laws(path, "weight")
    if weights is None:
        weights = Normal(0)
    return Conv(int(module.in_channels), int(module.out_channels), tuple(module.kernel_size),
                size if dims > 1 else size[0], tuple(module.stride), tuple(padding), int(module.groups),
                weights=weights, bias=bias)


def _dropout(module: nn.Module, path: str, laws: LawLookup, shape: Shapes) -> Layer:
    keep = 1 - _number(module.p, f"nn.Dropout {path!r} p")
    if keep <= 0:
        raise TranslationError(f"nn.Dropout {path!r} has p={module.p!r}: every unit is dropped (p must be below 1)")
    return Dropout(keep)


def _affine_at_init(module: nn.Module, path: str) -> None:
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    if weight is not None and not bool((weight == 1).all()):
        raise TranslationError(f"{type(module).__name__} {path!r} has a weight that is not all ones: varprop's "
                               "normalisers have their affine gain at PyTorch's initial value 1")
    if bias is not None and not bool((bias == 0).all()):
        raise TranslationError(f"{type(module).__name__} {path!r} has a bias that is not all zeros: varprop's "
                               "normalisers have their affine bias at PyTorch's initial value 0")


def _normaliser(module: nn.Module, path: str, shape: Shapes) -> tuple[int, bool]:
    kind = type(module).__name__
    normalized = tuple(module.normalized_shape)
    if (len(shape.input) != 2 and shape.after_conv) or len(normalized) != 1 or normalized[0] != shape.input[-1]:
        raise TranslationError(f"{kind} {path!r} normalises over {normalized} of a tensor of shape "
                               f"{tuple(shape.input)}; the audit translates a normaliser over the last dimension, "
                               "all the features of a (batch, features) tensor after a convolution")
    _affine_at_init(module, path)
    return int(normalized[0]), bool(module.elementwise_affine)


def _layer_norm(module: nn.Module, path: str, laws: LawLookup, shape: Shapes) -> Layer:
    width, affine = _normaliser(module, path, shape)
    return LayerNorm(width, _number(module.eps, f"LayerNorm {path!r} eps"), affine)


def _rms_norm(module: nn.Module, path: str, laws: LawLookup, shape: Shapes) -> Layer:
    width, affine = _normaliser(module, path, shape)
    if module.eps is None:
        if shape.dtype != torch.float64:
            raise TranslationError(f"RMSNorm {path!r} has eps=None (the machine epsilon of the tensor's dtype, "
                                   f"{shape.dtype}); the audit runs in float64, whose epsilon is 2**-52")
        eps = FLOAT64_EPS
    else:
        eps = _number(module.eps, f"RMSNorm {path!r} eps")
    return RMSNorm(width, eps, affine)


def _batch_norm(module: nn.Module, path: str, laws: LawLookup, shape: Shapes) -> Layer:
    """``nn.BatchNorm1d`` / ``nn.BatchNorm2d`` in training mode over the measured batch: on a ``(batch, features)``
    tensor each feature over the batch; on ``(batch, C, L)`` (after a convolution) or ``(batch, C, H, W)`` each
    channel over the batch and its positions (:class:`BatchNorm` with ``channels=C``)."""
    kind = type(module).__name__
    features = int(module.num_features)
    dims = len(shape.input)
    two_d = isinstance(module, nn.BatchNorm2d)
    if two_d and dims != 4:
        raise TranslationError(f"{kind} {path!r} normalises a tensor of shape {tuple(shape.input)}; the audit "
                               "translates it on a (batch, channels, height, width) tensor")
    if not two_d and not (dims == 2 or dims == 3 and shape.after_conv):
        raise TranslationError(f"{kind} {path!r} normalises a tensor of shape {tuple(shape.input)}; the audit "
                               f"translates it on a (batch, features) tensor of {features} features, or per channel "
                               "over a convolution's positions on its (batch, channels, length) output")
    if shape.input[1] != features:
        raise TranslationError(f"{kind} {path!r} has {features} features but its input has {shape.input[1]} along "
                               f"dimension 1 (shape {tuple(shape.input)})")
    if shape.batch is None:
        raise TranslationError(f"{kind} {path!r} normalises over the batch: give translate(..., batch=B), the "
                               "number of inputs the model runs on together")
    if shape.batch < 2:
        raise TranslationError(f"{kind} {path!r} normalises over the batch, which must hold at least 2 inputs "
                               f"in training mode, got batch {shape.batch}")
    _affine_at_init(module, path)
    eps = _number(module.eps, f"{kind} {path!r} eps")
    if dims == 2:
        return BatchNorm(features, shape.batch, eps, bool(module.affine))
    return BatchNorm(math.prod(shape.input[1:]), shape.batch, eps, bool(module.affine), channels=features)


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


RESIDUAL = GraphRule("residual")
SCALE = GraphRule("scale")
DIVIDE = GraphRule("divide")
RESHAPE = GraphRule("reshape")


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
register_module(nn.Conv1d, _conv, _linear_candidates)
register_module(nn.Conv2d, _conv, _linear_candidates)
register_module(nn.Dropout, _dropout)
register_module(nn.LayerNorm, _layer_norm)
register_module(nn.RMSNorm, _rms_norm)
register_module(nn.BatchNorm1d, _batch_norm)
register_module(nn.BatchNorm2d, _batch_norm)
register_module(nn.Flatten, RESHAPE)
register_module(nn.Unflatten, RESHAPE)
for _cls, _build in _ACTIVATION_MODULES.items():
    register_module(_cls, lambda module, path, laws, shapes, _build=_build: _build(module))

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
    operator.add: RESIDUAL,
    operator.iadd: RESIDUAL,
    torch.add: RESIDUAL,
    operator.mul: SCALE,
    operator.imul: SCALE,
    torch.mul: SCALE,
    operator.truediv: DIVIDE,
    torch.flatten: RESHAPE,
    torch.reshape: RESHAPE,
}
for _function, _build in _ACTIVATION_FUNCTIONS.items():
    register_function(_function, _build)
for _name, _build in (("relu", lambda a, k: _act("relu")), ("tanh", lambda a, k: _act("tanh")),
                      ("sigmoid", lambda a, k: _act("sigmoid")), ("add", RESIDUAL), ("mul", SCALE),
                      ("div", DIVIDE), ("flatten", RESHAPE), ("view", RESHAPE), ("reshape", RESHAPE)):
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


class _Tracer(fx.Tracer):
    """torch.fx's tracer, which also keeps a user subclass of a translated torch module as one call.

    fx traces into every module outside ``torch.nn`` (``nn.Sequential`` and a user's own modules,
    however deeply nested, become the calls inside them), so a user's ``class MyLinear(nn.Linear)``
    would be traced into ``F.linear`` on its parameters. A subclass that keeps its registered base's
    ``forward`` computes what the base computes and is kept whole, as the base is; one that overrides
    ``forward`` is traced into, so what it does is translated (or named as unsupported).
    """

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        base = next((cls for cls in type(m).__mro__ if cls in MODULE_TRANSLATIONS), None)
        if base is not None and type(m).forward is base.forward:
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace(model)`` (with subclasses of translated modules kept whole: :class:`_Tracer`),
    a tracing failure turned into a :class:`TranslationError`."""
    if not isinstance(model, nn.Module):
        raise TranslationError(f"the factory must return a torch.nn.Module, got {type(model).__name__}: {model!r:.80}")
    try:
        tracer = _Tracer()
        graph = tracer.trace(model)
        return fx.GraphModule(tracer.root, graph, type(model).__name__)
    except Exception as exc:  # torch.fx raises TraceError, TypeError, NotImplementedError, ... on untraceable code
        raise TranslationError(
            f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "varprop.torch audits models whose forward is a chain of supported modules and functions without "
            "data-dependent control flow"
        ) from None


def _supported() -> str:
    modules = ", ".join(sorted({cls.__name__ for cls in MODULE_TRANSLATIONS}))
    functions = ", ".join(sorted({_function_name(f) for f in FUNCTION_TRANSLATIONS}))
    methods = ", ".join(sorted(METHOD_TRANSLATIONS))
    return (f"supported modules: {modules}; functions: {functions}; tensor methods: {methods} (an addition only as a "
            "residual x + f(x), a multiplication or division by a number only as its branch scale, a reshape only "
            "keeping the batch dimension)")


def _module_entry(module: nn.Module) -> ModuleTranslation | None:
    for cls in type(module).__mro__:
        if cls in MODULE_TRANSLATIONS:
            return MODULE_TRANSLATIONS[cls]
    return None


def _function_name(target: object) -> str:
    module = getattr(target, "__module__", None) or ""
    module = "operator" if module == "_operator" else module
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


def run_out_of_place(interpreter: fx.Interpreter, n: fx.Node) -> object:
    """Run node ``n`` as ``interpreter`` would, but a function called with ``inplace=True`` out of place.

    An in-place activation would overwrite a tensor the audit keeps (a pre-activation). (``h += f(h)``
    needs nothing: torch.fx traces it as ``operator.add``.)
    """
    if n.op == "call_function" and n.kwargs.get("inplace"):
        args, kwargs = interpreter.fetch_args_kwargs_from_env(n)
        return n.target(*args, **{**kwargs, "inplace": False})
    return fx.Interpreter.run_node(interpreter, n)


class _ShapeRecorder(fx.Interpreter):
    """Runs the traced graph once and keeps the shape of every tensor a node gives."""

    def __init__(self, module: nn.Module, graph: fx.Graph):
        super().__init__(module, graph=graph)
        self.shapes: dict[str, tuple[int, ...]] = {}

    def run_node(self, n: fx.Node) -> object:
        out = run_out_of_place(self, n)
        if isinstance(out, torch.Tensor):
            self.shapes[n.name] = tuple(int(d) for d in out.shape)
        return out


#: The batch of the shape run: an odd size, so that a reshape that hard-codes another batch is caught.
SHAPE_BATCH = 3


def _dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float64)


#: The torch module classes that translate to a layer with weights (their subclasses too).
WEIGHTED_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def first_weighted(model: nn.Module, graph: fx.Graph) -> tuple[str | None, nn.Module | None, str]:
    """The first ``nn.Linear`` or convolution of the traced graph, if every node before it keeps the input's shape.

    Returns ``(path, module, "")``, or ``(None, None, why)`` when no weighted module is reached: the
    first node that may change the shape (a reshape, an unsupported call), or "no weighted layer".
    Where the module sits in the model does not matter: fx inlines ``nn.Sequential``, ``nn.ModuleList``
    loops and the user's own modules, so a Linear nested three modules deep is a node like any other.
    Before it, activations, dropout, normalisers and the residual rules keep the shape.
    """
    for node in graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if node.op == "call_module":
            module = model.get_submodule(node.target)
            if isinstance(module, WEIGHTED_MODULES):
                return node.target, module, ""
            entry = _module_entry(module)
            rule = None if entry is None else entry.build
            label = f"module {node.target!r} ({type(module).__name__})"
        elif node.op == "call_function":
            rule = FUNCTION_TRANSLATIONS.get(node.target)
            label = f"call {node.name!r} ({_function_name(node.target)})"
        elif node.op == "call_method":
            rule = METHOD_TRANSLATIONS.get(node.target)
            label = f"method call {node.name!r} (Tensor.{node.target})"
        else:
            rule, label = None, f"node {node.name!r} ({node.op})"
        if rule is None or rule is RESHAPE:
            what = "a reshape" if rule is RESHAPE else "a call the audit does not translate"
            return None, None, f"{label}, {what}, comes before the first nn.Linear or convolution"
    return None, None, "the model has no nn.Linear or convolution"


def _trace_shapes(model: nn.Module, graph: fx.Graph, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Every tensor node's shape on a batch of :data:`SHAPE_BATCH` inputs of ``shape`` (the caller's RNG untouched)."""
    _, first, _ = first_weighted(model, graph)
    if isinstance(first, nn.Linear) and shape[-1] != first.in_features:
        raise TranslationError(f"input shape {shape} does not fit the first Linear layer, which takes "
                               f"{first.in_features} features (the last entry of the input shape must be "
                               f"{first.in_features})")
    if isinstance(first, nn.Conv1d | nn.Conv2d):
        dims = len(first.kernel_size)
        if len(shape) != dims + 1 or shape[0] != first.in_channels:
            raise TranslationError(f"input shape {shape} does not fit the first convolution, nn.Conv{dims}d with "
                                   f"{first.in_channels} input channels: give (channels, {dims} spatial size"
                                   f"{'s' if dims > 1 else ''}), e.g. --input-shape {first.in_channels}"
                                   f"{' 8' * dims}")
    recorder = _ShapeRecorder(model, graph)
    x = torch.randn((SHAPE_BATCH, *shape), generator=torch.Generator().manual_seed(0), dtype=_dtype(model))
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            recorder.run(x)
    except VarpropError:
        raise
    except Exception as exc:  # torch raises RuntimeError, ValueError, ... on a shape mismatch
        raise TranslationError(f"the model does not run on a batch of inputs of shape {shape} "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    return recorder.shapes


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def translate(model: nn.Module, input_shape: Sequence[int], laws: LawLookup, *,
              graph: fx.Graph | None = None, batch: int | None = None) -> Translation:
    """The network of ``model`` (traced by fx unless ``graph`` is given) for inputs of ``input_shape``.

    ``batch`` is the number of inputs the model is measured on together: an ``nn.BatchNorm1d`` (in
    training mode) normalises over them and becomes ``BatchNorm(features, batch)``, an ``nn.BatchNorm2d``
    over them and each channel's positions, ``BatchNorm(C * H * W, batch, channels=C)``; without it such
    a module is refused.

    ``laws(path, parameter)`` gives each parameter's law (see :func:`varprop.torch.laws.identify_laws`).
    The graph runs once on a batch of inputs of ``input_shape`` to know every tensor's shape (a
    convolution's spatial size, a flatten's). Every unsupported node is named in one
    :class:`TranslationError` with the list of what is supported.

    The walk keeps the chain's current tensor and, for every tensor the chain passed through, how
    many layers were translated when it was current: an addition of such a tensor :math:`x` and the
    current tensor (possibly times a number :math:`\alpha`) turns the layers translated since
    :math:`x` into the branch of ``Residual(branch, alpha)``, which is exact: those layers compute
    the current tensor from :math:`x`.
    """
    graph = trace(model).graph if graph is None else graph
    shape = tuple(input_shape)
    shapes = _trace_shapes(model, graph, shape)
    dtype = _dtype(model)
    layers: list[Layer] = []
    nodes: list[str] = []
    paths: list[str] = []
    kinds: list[str] = []
    parameters: list[tuple[str, str]] = []
    problems: list[str] = []
    current: fx.Node | None = None
    input_node = None
    marks: dict[fx.Node, int] = {}  # tensor of the chain -> the number of layers translated when it was current
    scaled: dict[fx.Node, tuple[fx.Node, sp.Expr]] = {}  # a multiplication node -> (the tensor it scales, the factor)
    applied: set[str] = set()  # the weighted modules translated so far (a second call shares their weights)

    def advance(node: fx.Node) -> None:
        nonlocal current
        current = node
        marks[node] = len(layers)

    for node in graph.nodes:
        if node.op == "placeholder":
            if input_node is not None:
                problems.append(f"a second input {node.name!r} (the audit feeds one input tensor)")
                continue
            input_node = node
            advance(node)
            continue
        if node.op == "output":
            result = node.args[0]
            if result in scaled:
                problems.append(f"the model returns {result!r}, a multiplication by a number outside a residual "
                                "addition (only x + alpha * f(x) is supported)")
            elif result is not current:
                problems.append(f"the model returns {result!r}, not the last translated tensor (a chain is required)")
            continue
        if node.name not in shapes and node.op in ("call_method", "call_function") \
                and node.target in ("size", getattr, operator.getitem):
            continue  # a size computed from a tensor (x.size(0), x.shape[0]) for a reshape: no tensor of the chain
        where, kind, build = _lookup(model, node, laws, shapes, dtype,
                                     lambda: any(isinstance(layer, Conv) for layer in _all_layers(layers)), batch)
        if build is None:
            problems.append(f"{where} ({kind}) is not supported")
            advance(node)
            continue
        if isinstance(build, GraphRule):
            problem = _graph_rule(build, node, current, marks, scaled, shapes)
            if isinstance(problem, str):
                problems.append(f"{where} ({kind}): {problem}")
                advance(node)
            elif build.kind == "reshape":
                advance(node)
            elif build.kind == "residual":
                skip, alpha = problem
                k = marks[skip]
                branch = tuple(layers[k:])
                try:
                    block = Residual(branch, alpha)
                except SpecError as exc:
                    problems.append(f"{where} ({kind}): the residual branch does not form a varprop Residual: {exc}")
                    advance(node)
                    continue
                del layers[k:], nodes[k:], paths[k:], kinds[k:]
                for tensor in [t for t, count in marks.items() if count > k]:
                    del marks[tensor]  # inside the branch: no longer a tensor of the chain
                layers.append(block)
                nodes.append(node.name)
                paths.append(node.name)
                kinds.append(f"{kind} (residual)")
                advance(node)
            continue
        others = [a for a in (*node.args[1:], *node.kwargs.values()) if isinstance(a, fx.Node)]
        if node.args[:1] != (current,) or others:
            scale = next((a for a in node.args if a in scaled), None)
            reason = (f"a multiplication by a number ({scale.name!r}) is supported only as the scale of a residual "
                      "branch (x + alpha * f(x))" if scale is not None else
                      "only a chain (each node fed by the previous one alone) or a residual addition can be translated")
            problems.append(f"{where} ({kind}) takes {node.args!r}: {reason}")
            advance(node)
            continue
        try:
            layer = build(node)
        except SpecError as exc:
            problems.append(f"{where} ({kind}): {exc}")
            advance(node)
            continue
        layers.append(layer)
        nodes.append(node.name)
        paths.append(where)
        kinds.append(kind)
        if node.op == "call_module" and isinstance(layer, Dense | Conv):
            if node.target in applied:
                problems.append(f"module {node.target!r} ({kind}) is applied more than once (a loop over the same "
                                "module): its weights are shared, and varprop's layers have independent weights; "
                                "give each application its own module (an nn.ModuleList of copies)")
            applied.add(node.target)
            module = model.get_submodule(node.target)
            parameters += [(node.target, name) for name, p in module.named_parameters(recurse=False) if p is not None]
        advance(node)
    if input_node is None:
        problems.append("the model has no input")
    if problems:
        raise TranslationError("cannot translate the model: " + "; ".join(problems) + ". " + _supported())
    if not any(isinstance(layer, Dense | Conv) for layer in _all_layers(layers)):
        found = ", ".join(dict.fromkeys(kinds)) or "nothing"
        raise TranslationError(f"the model has no layer with weights for the audit to derive (it translates to: "
                               f"{found}); the weighted layers it translates are nn.Linear, nn.Conv1d and nn.Conv2d "
                               "(and subclasses keeping their forward), at any depth of nesting")
    try:
        network = Network(tuple(layers), GaussianInput())
    except SpecError as exc:
        raise TranslationError(f"the translated layers do not form a varprop network: {exc}") from None
    return Translation(network, graph, input_node.name, tuple(nodes), tuple(paths), tuple(kinds), tuple(parameters))


def _all_layers(layers: Sequence[Layer]) -> list[Layer]:
    out: list[Layer] = []
    for layer in layers:
        out.append(layer)
        if isinstance(layer, Residual):
            out += _all_layers(layer.branch)
    return out


def _graph_rule(rule: GraphRule, node: fx.Node, current: fx.Node | None, marks: Mapping[fx.Node, int],
                scaled: dict[fx.Node, tuple[fx.Node, sp.Expr]], shapes: Mapping[str, tuple[int, ...]],
                ) -> str | tuple[fx.Node, sp.Expr] | None:
    """Apply a :class:`GraphRule` at ``node``: a problem (str), the residual's (skip tensor, alpha), or None."""
    tensors = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node) and a.name in shapes]
    if rule.kind == "reshape":
        if node.args[:1] != (current,) or len(tensors) != 1:
            return "a reshape must act on the chain's current tensor alone"
        before, after = shapes[current.name], shapes[node.name]
        if before[0] != SHAPE_BATCH or after[0] != SHAPE_BATCH:
            return (f"it reshapes {before} to {after} (shown for a batch of {SHAPE_BATCH}); only a reshape that keeps "
                    "the batch dimension first is supported")
        return None
    if rule.kind in ("scale", "divide"):
        args = node.args
        if len(args) != 2 or node.kwargs:
            return f"takes {args!r} {dict(node.kwargs)!r}; a multiplication of the current tensor by a number is expected"
        if rule.kind == "divide":
            base, factor = args
            if base is not current or not _is_number(factor) or factor == 0:
                return "only the current tensor divided by a non-zero number is supported (a residual branch's scale)"
            scaled[node] = (current, 1 / _number(factor, "divisor"))
            return None
        base, factor = args if isinstance(args[0], fx.Node) else args[::-1]
        if base is not current or not _is_number(factor):
            return "only the current tensor times a number is supported (a residual branch's scale x + alpha * f(x))"
        scaled[node] = (current, _number(factor, "residual scale"))
        return None
    # the residual addition x + alpha f(x)
    first = node.args[0] if node.args else node.kwargs.get("input")
    second = node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
    weight = node.kwargs.get("alpha", 1)
    if not _is_number(weight):
        return f"alpha={weight!r} must be a number"
    for end, skip, factor in ((second, first, _number(weight, "alpha")), (first, second, None)):
        if not isinstance(end, fx.Node) or not isinstance(skip, fx.Node):
            continue
        tip, scale = scaled.get(end, (end, sp.Integer(1)))
        if tip is current and skip in marks and skip is not current:
            if factor is None:
                if weight != 1:
                    return "torch.add(f(x), x, alpha=...) scales the skip connection, not the branch; not supported"
                factor = sp.Integer(1)
            return skip, scale * factor
    return ("an addition is translated only as a residual x + alpha * f(x): one term a tensor the chain passed "
            "through, the other the chain's current tensor (or it times a number)")


def _lookup(model: nn.Module, node: fx.Node, laws: LawLookup, shapes: Mapping[str, tuple[int, ...]],
            dtype: torch.dtype, after_conv: Callable[[], bool], batch: int | None = None) -> tuple[str, str, Callable[[fx.Node], Layer] | GraphRule | None]:
    """(where in the model, which torch class or function, the builder, a graph rule or None) for one fx node."""
    if node.op == "call_module":
        module = model.get_submodule(node.target)
        entry = _module_entry(module)
        kind = type(module).__name__
        if entry is None:
            return f"module {node.target!r}", f"{type(module).__module__}.{kind}", None
        if isinstance(entry.build, GraphRule):
            return node.target, kind, entry.build

        def build(n: fx.Node, m: nn.Module = module, e: ModuleTranslation = entry) -> Layer:
            source = n.args[0] if n.args and isinstance(n.args[0], fx.Node) else None
            before = shapes.get(source.name, ()) if source is not None else ()
            return e.build(m, n.target, laws, Shapes(before, shapes.get(n.name, ()), dtype, after_conv(), batch))

        return node.target, kind, build
    if node.op == "call_function":
        entry = FUNCTION_TRANSLATIONS.get(node.target)
        kind = _function_name(node.target)
        where = f"call {node.name!r}"
    elif node.op == "call_method":
        entry = METHOD_TRANSLATIONS.get(node.target)
        kind = f"Tensor.{node.target}"
        where = f"method call {node.name!r}"
    else:
        return f"node {node.name!r}", node.op, None
    if entry is None:
        return where, kind, None
    if isinstance(entry, GraphRule):
        return where, kind, entry
    return node.name, kind, (lambda n, b=entry: b(n.args, dict(n.kwargs)))
