r"""Users' own claims, read from a TOML file.

Each ``[[claim]]`` table describes one network, one observable at one layer, and the predicted
value::

    [[claim]]
    name = "relu-he-forward"
    activation = "relu"            # a built-in, or an expression in x such as "max(x, 0) - 0.5"
    params = { a = 0.2 }           # activation parameters (optional)
    widths = [32, 32, 32, 32]      # input width, hidden widths, output width; or in n: ["n", "n", "2*n", "n"]
    sweep = [8, 16, 32]            # the values of n an asymptotic claim's limit is fitted over
    init = "he"                    # he | kaiming | glorot | xavier | lecun | torch_default | keras_default, or a
    #                              # framework initialiser: "torch.nn.Linear", "keras.he_normal", "flax.lecun_normal",
    #                              # ... (varprop initialisers lists them); with arguments, a table:
    #                              # init = { name = "torch.kaiming_uniform_", a = "sqrt(5)", mode = "fan_out" }
    mode = "fan_in"                # init = "he" / "kaiming" only: fan_in | fan_out
    slope = 0.0                    # init = "he" / "kaiming" only: the leaky slope a
    distribution = "normal"        # normal | uniform | truncated_normal (a built-in init, or weight_variance)
    # weight_variance = "2/n_in"   # instead of init: a variance in n_in and n_out
    bias_variance = 0.0            # optional Gaussian bias
    # norm = "layernorm"           # layernorm | rmsnorm: a normaliser after every dense layer but the last
    # norm_eps = 0                 # its epsilon (default PyTorch's: 1e-5 for layernorm, 2^-52 for rmsnorm);
    #                              # places: layernorm1, layernorm2, ... (dense1, layernorm1, act1, dense2, ...)
    input = "gaussian"             # "gaussian" (iid N(0, 1)), "fixed-pair", or a list of numbers (a fixed input)
    # correlation = 0.5            # a pair of inputs with this correlation c0 in [-1, 1], through the same
    #                              # weights: with "gaussian", fresh Gaussian pairs (x' = c0 x + sqrt(1 - c0^2) z);
    #                              # with "fixed-pair", FixedInput.pair(width, c0) (two fixed vectors)
    # partner = [1, 1, -1, -1]     # with a list input: the fixed partner vector (instead of correlation)
    observable = "y_second_moment" # see varprop.claims.OBSERVABLES
    layer = 3                      # dense layer, 1-based
    # or, by place (works for any layer kind):
    # observable = "second_moment" # mean | second_moment | variance | norm_ratio | cross_moment | correlation
    #                              # (cross_moment and correlation: of the pair of inputs; need correlation/partner)
    #                              # zero-bias relu chains (finite width): norm_ratio_moment | log_norm_ratio_moment
    #                              # (with order), norm_ratio_second_moment | log_norm_ratio | log_norm_ratio_variance
    #                              # | dead_fraction
    # order = 3                    # the order k = 1..8 of norm_ratio_moment / log_norm_ratio_moment (default 2)
    # tensor = "gradient"          # signal (default) | gradient | weight_gradient
    # place = "act2"               # input, dense1, act1, dense2, ... or an integer position (-1: the input)
    # residual = { blocks = 4, alpha = "1/sqrt(L)", layers = 2 }
    #                              # after the MLP: blocks x + alpha f(x), f = dense, activation, dense (layers
    #                              # dense layers of the last width, the init's weights); alpha may use L, the
    #                              # number of blocks; address them by place: res1, res2, ...
    # dropout_keep = 0.9           # inverted dropout after every activation of the MLP, keep probability p
    #                              # (PyTorch's nn.Dropout(0.1)); places drop1, drop2, ...
    prediction = "2"               # numbers, pi, e, + - * / ** and sqrt, exp, log, ...
    exactness = "exact"            # exact | gaussian-exact | asymptotic | approximation
    tolerance = 0.05               # approximation only: the relative deviation promised (else MEASURED)
    atol = 0.01                    # a prediction of 0: the absolute tolerance, in the observable's units
    source = "He et al. 2015, eq. (10)"

A convolutional network (:func:`varprop.network.cnn`) is written with a ``conv`` table; ``widths``
are then channel counts (the input's, then each convolution's output channels), the init scheme
is evaluated at PyTorch's convolution fans, and the observable is addressed by ``place``
(``conv1``, ``act1``, ``conv2``, ...)::

    [[claim]]
    name = "conv-he-padded"
    activation = "relu"
    widths = [2, 8, 8]             # channels: input, then each convolution's output
    conv = { kernel_size = 3, input_size = 16, padding = 1 }   # also stride, groups; 2-D: [8, 8]
    observable = "second_moment"
    place = "conv2"
    prediction = "..."

An asymptotic claim is always checked over a sweep of at least three widths: write its widths in
``n`` together with ``sweep``, or give numbers and it is checked at them and at 1/2 and 1/4 of them
(rounded), so the given widths are the largest of its sweep.

Text values (activation, prediction, weight variance) go through the whitelist parser of
:mod:`varprop.activations`, never through ``eval`` or ``sympify``.

A ``[[law]]`` table is a law claim (:class:`varprop.montecarlo.laws.LawClaim`): the normalised squared
length :math:`M_L` of a zero-bias relu network at He's variance follows the exact finite-width law::

    [[law]]
    name = "M_L at width 4"
    widths = [4, 4, 4]             # n_0..n_L: relu after every dense layer, no bias
    distribution = "normal"        # the weights the networks are sampled with
    active = 0.5                   # the claimed probability that a unit is active (0.5: the derived law)
    tolerance = 0.02               # the sup-distance between CDFs to resolve with 90% power
    networks = 50000
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import sympy as sp

from .activations import BUILTIN_ACTIVATIONS, Activation, activation, expression, parse_expression
from .claims import EXACTNESS, OBSERVABLES, Claim, ClaimError, ClaimFamily
from .derive.derivation import Derivation
from .derive.gaussian import evaluate
from .derive.propagate import derive
from .errors import SpecError, VarpropError
from .montecarlo.limits import check_network
from .network import (Conv, Dense, Dropout, FixedInput, GaussianInput, LayerNorm, Network, Nonlinearity, Residual, RMSNorm,
                      cnn, mlp)
from .observables import STATISTICS, TENSORS, Observable, ObservableError, at_place
from .weights import (DISTRIBUTIONS, INIT_SCHEMES, N_IN, N_OUT, InitScheme, Normal, explicit,
                      init_parameters, init_scheme)

__all__ = ["FileClaim", "load_claims", "load_laws"]

_REQUIRED = ("name", "activation", "widths", "observable", "prediction")
_OPTIONAL = ("layer", "place", "tensor", "params", "init", "mode", "slope", "distribution", "weight_variance",
             "bias_variance", "input", "correlation", "partner", "exactness", "source", "description", "sweep", "tolerance", "atol",
             "residual", "dropout_keep", "conv", "norm", "norm_eps", "order")
#: The keys of a ``residual = { ... }`` table, and the largest number of blocks a claim may ask for.
_RESIDUAL_KEYS = ("blocks", "alpha", "layers")
MAX_BLOCKS = 200
_CONV_KEYS = ("kernel_size", "input_size", "stride", "padding", "groups")
_N = sp.Symbol("n", positive=True, integer=True)
#: An asymptotic claim with numeric widths is checked at them and at these fractions of them.
DEFAULT_SWEEP_FRACTIONS = (sp.Rational(1, 4), sp.Rational(1, 2), sp.Integer(1))


@dataclass(frozen=True)
class FileClaim:
    """A claim read from a file, and how it compares with what :mod:`varprop.derive` derives."""

    claim: Claim
    derived: sp.Expr | None
    derived_exactness: str | None
    agreement: str  # "matches the derivation", "differs from the derivation", or why none was derived
    derivation: Derivation | None = None  # varprop's own derivation of the same observable
    family: ClaimFamily | None = None  # an asymptotic claim: the claim at every width of its sweep

    @property
    def target(self) -> Claim | ClaimFamily:
        """What the checker checks: the family (a sweep) for an asymptotic claim, else the claim."""
        return self.family if self.family is not None else self.claim


def load_claims(path: str | Path) -> list[FileClaim]:
    """Read every ``[[claim]]`` of a TOML file (see the module docstring for the format)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClaimError(f"claim file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ClaimError(f"cannot read claim file {str(path)!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ClaimError(f"claim file {str(path)!r} is not valid TOML: {exc}") from None
    tables = data.get("claim")
    unknown = sorted(set(data) - {"claim", "law"})
    if unknown:
        raise ClaimError(f"claim file {str(path)!r}: unknown top-level key {unknown[0]!r}; write [[claim]] or [[law]] tables")
    if tables is None and isinstance(data.get("law"), list) and data["law"]:
        return []  # a file of law claims only (load_laws reads them)
    if not isinstance(tables, list) or not tables:
        raise ClaimError(f"claim file {str(path)!r} has no [[claim]] table")
    return [_read(table, f"{path.name}, claim {index + 1}") for index, table in enumerate(tables)]


_LAW_KEYS = ("name", "widths", "distribution", "active", "tolerance", "networks")


def load_laws(path: str | Path) -> list[object]:
    """Read every ``[[law]]`` table of a TOML file as a :class:`~varprop.montecarlo.laws.LawClaim`."""
    from .montecarlo.laws import LawClaim

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ClaimError(f"cannot read claim file {str(path)!r}: {exc}") from None
    tables = data.get("law", [])
    if not isinstance(tables, list):
        raise ClaimError(f"claim file {str(path)!r}: law must be [[law]] tables")
    laws = []
    for index, table in enumerate(tables):
        where = f"{path.name}, law {index + 1}"
        extra = sorted(set(table) - set(_LAW_KEYS))
        if extra or "name" not in table or "widths" not in table:
            what = f"unknown key {extra[0]!r}" if extra else "missing key 'name' or 'widths'"
            raise ClaimError(f"{where}: {what}; accepted: {', '.join(_LAW_KEYS)}")
        widths = table["widths"]
        if not isinstance(widths, list) or not all(isinstance(w, int) and not isinstance(w, bool) for w in widths):
            raise ClaimError(f"{where}: widths must be a list of integers, got {widths!r}")
        numbers = {key: table[key] for key in ("active", "tolerance", "networks") if key in table}
        for key, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ClaimError(f"{where}: {key} must be a number, got {value!r}")
        try:
            laws.append(LawClaim(_text(table, "name", where), tuple(widths), str(table.get("distribution", "normal")),
                                 float(numbers.get("active", 0.5)), float(numbers.get("tolerance", 0.02)),
                                 numbers.get("networks", 50_000)))
        except VarpropError as exc:
            raise ClaimError(f"{where}: {exc}") from None
    return laws


def _read(table: Mapping[str, object], where: str) -> FileClaim:
    missing = [key for key in _REQUIRED if key not in table]
    if missing:
        raise ClaimError(f"{where}: missing key {missing[0]!r}; required: {', '.join(_REQUIRED)}")
    extra = sorted(set(table) - set(_REQUIRED) - set(_OPTIONAL))
    if extra:
        raise ClaimError(f"{where}: unknown key {extra[0]!r}; accepted: {', '.join(_REQUIRED + _OPTIONAL)}")
    name = _text(table, "name", where)
    where = f"{where} ({name})"
    exactness = _choice(table, "exactness", EXACTNESS, where, default="exact")
    widths, sweep = _widths_and_sweep(table, exactness, where)
    tolerance = _bound(table, "tolerance", where)
    if tolerance is not None and exactness != "approximation":
        raise ClaimError(f"{where}: tolerance goes with exactness = \"approximation\" (got {exactness!r}; exact and "
                         "asymptotic claims are judged at the checker's --rtol)")
    atol = _bound(table, "atol", where)

    def build(n: int | None) -> Claim:
        at = [int(w.subs(_N, n)) if isinstance(w, sp.Expr) else w for w in widths] if n is not None else widths
        try:
            network = _network(table, at, where)
            check_network(network)  # a claim is checked by sampling: refuse what cannot be, before deriving
            if "place" in table:
                if "layer" in table:
                    raise ClaimError(f"{where}: give either layer (with an observable name such as y_second_moment) "
                                     "or place (with a statistic such as second_moment), not both")
                observable = _at_place(table, network, where)
                layer = None
            else:
                if "layer" not in table:
                    raise ClaimError(f"{where}: missing key 'layer' (or 'place'); required: {', '.join(_REQUIRED)}")
                if "tensor" in table or "order" in table:
                    which = "tensor" if "tensor" in table else "order"
                    raise ClaimError(f"{where}: {which} goes with place, not with layer")
                observable = _choice(table, "observable", OBSERVABLES, where)
                layer = table["layer"]
                if isinstance(layer, bool) or not isinstance(layer, int):
                    raise ClaimError(f"{where}: layer must be an integer, got {layer!r}")
            prediction = _number(table["prediction"], "prediction", where)
            return Claim(name, network, observable, layer, prediction, exactness,
                         source=str(table.get("source", "")), description=str(table.get("description", "")),
                         tolerance=tolerance, atol=atol)
        except ClaimError:
            raise
        except VarpropError as exc:
            raise ClaimError(f"{where}: {exc}") from None

    if sweep is None:
        return _compare(build(None))
    largest = max(sweep)
    family = ClaimFamily(name, str(table.get("description", "")), build, largest, tuple(sweep))
    return replace(_compare(family.at(largest)), family=family)


def _widths_and_sweep(table: Mapping[str, object], exactness: str, where: str) -> tuple[list, list[int] | None]:
    """The widths (numbers, or expressions in n) and the sweep of n, if the claim is checked over one."""
    widths = table["widths"]
    if not isinstance(widths, list) or len(widths) < 2:
        raise ClaimError(f"{where}: widths must be a list of at least two positive integers (or expressions in n), "
                         f"got {widths!r}")
    symbolic = any(isinstance(w, str) for w in widths)
    sweep = table.get("sweep")
    if sweep is not None:
        if not symbolic:
            raise ClaimError(f"{where}: sweep gives values of n; write the widths in n, e.g. [\"n\", \"n\", \"n\"]")
        valid = isinstance(sweep, list) and bool(sweep) and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sweep)
        if not valid or exactness == "asymptotic" and len(set(sweep)) < 3:
            raise ClaimError(f"{where}: sweep must be a list of positive integers (at least three distinct for an "
                             f"asymptotic claim), got {sweep!r}")
    elif symbolic:
        raise ClaimError(f"{where}: widths written in n need sweep = [...], the values of n to check at")
    if symbolic:
        parsed = [_number(w, "width", where, {"n": _N}) if isinstance(w, str) else w for w in widths]
        for w in parsed:
            if isinstance(w, sp.Expr) and not (w.free_symbols <= {_N}):
                raise ClaimError(f"{where}: widths may use only n, got {w}")
        return parsed, list(sweep)
    if exactness == "asymptotic":
        # Numbers: the given widths are the largest of a sweep at 1/4, 1/2 and 1 of them.
        top = min(w for w in widths if isinstance(w, int) and not isinstance(w, bool) and w > 0) if all(
            isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths) else None
        if top is None:
            raise ClaimError(f"{where}: widths must be positive integers, got {widths!r}")
        scaled = [sp.Max(1, sp.floor(w * _N / top + sp.Rational(1, 2))) for w in widths]
        sweep_values = sorted({max(1, int(f * top)) for f in DEFAULT_SWEEP_FRACTIONS})
        if len(sweep_values) < 3:
            raise ClaimError(f"{where}: an asymptotic claim is checked over a sweep at 1/4, 1/2 and 1 of its widths; "
                             f"width {top} is too narrow for three distinct widths: give wider widths or a sweep")
        return scaled, sweep_values
    return widths, None


def _bound(table: Mapping[str, object], key: str, where: str) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        raise ClaimError(f"{where}: {key} must be a positive number, got {value!r}")
    return float(value)


def _at_place(table: Mapping[str, object], network: Network, where: str) -> Observable:
    """``observable = "second_moment"``, ``tensor = "gradient"``, ``place = "act2"`` (or a position)."""
    statistic = _choice(table, "observable", tuple(STATISTICS), where)
    tensor = _choice(table, "tensor", tuple(TENSORS), where, default="signal")
    place = table["place"]
    if isinstance(place, bool) or not isinstance(place, int | str):
        raise ClaimError(f"{where}: place must be a place name such as 'act2' or an integer position, got {place!r}")
    order = table.get("order")
    try:
        return at_place(statistic, tensor, place, network, order)
    except ObservableError as exc:
        raise ClaimError(f"{where}: {exc}") from None


def _text(table: Mapping[str, object], key: str, where: str) -> str:
    value = table[key]
    if not isinstance(value, str) or not value.strip():
        raise ClaimError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return value.strip()


def _choice(table: Mapping[str, object], key: str, accepted: tuple[str, ...], where: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if value not in accepted:
        raise ClaimError(f"{where}: unknown {key} {value!r}; accepted: {', '.join(accepted)}")
    return value  # type: ignore[return-value]


def _number(value: object, what: str, where: str, symbols: Mapping[str, sp.Expr] | None = None) -> sp.Expr:
    if isinstance(value, bool):
        raise ClaimError(f"{where}: {what} must be a number or an expression, got {value!r}")
    if isinstance(value, int | float):
        return sp.nsimplify(value, rational=True) if isinstance(value, float) else sp.Integer(value)
    if not isinstance(value, str):
        raise ClaimError(f"{where}: {what} must be a number or an expression, got {value!r}")
    expr = parse_expression(value, symbols)
    stray = expr.free_symbols - set((symbols or {}).values())
    if stray:
        raise ClaimError(f"{where}: {what} {value!r} must be a number; it uses {', '.join(sorted(map(str, stray)))}")
    return expr


def _activation(table: Mapping[str, object], where: str) -> Activation:
    spec = _text(table, "activation", where)
    params = table.get("params", {})
    if not isinstance(params, dict):
        raise ClaimError(f"{where}: params must be a table such as {{ a = 0.2 }}, got {params!r}")
    values = {key: _number(value, f"parameter {key}", where) for key, value in params.items()}
    if spec in BUILTIN_ACTIVATIONS or spec.isidentifier() and spec != "x":
        return activation(spec, **values)
    return expression(spec, **values)


def _network(table: Mapping[str, object], widths: list, where: str) -> Network:
    distribution = _choice(table, "distribution", DISTRIBUTIONS, where, default="normal")
    if "weight_variance" in table:
        if "init" in table:
            raise ClaimError(f"{where}: give either init or weight_variance, not both")
        variance = _number(table["weight_variance"], "weight_variance", where, {"n_in": N_IN, "n_out": N_OUT})
        scheme = explicit(variance, distribution)
    else:
        scheme = _init(table, distribution, where)
    bias = table.get("bias_variance")
    bias_variance = None if bias is None else _number(bias, "bias_variance", where)
    if "conv" in table:
        return _conv_network(table, widths, scheme, bias_variance, where)
    inputs = _inputs(table, widths[0], where)
    act = _activation(table, where)
    network = _normalised(table, mlp(widths, act, scheme, bias_variance=bias_variance, inputs=inputs), where)
    layers = list(network.layers)
    if "dropout_keep" in table:
        dropout = Dropout(_number(table["dropout_keep"], "dropout_keep", where))
        if not any(isinstance(layer, Nonlinearity) for layer in layers):
            raise ClaimError(f"{where}: dropout_keep puts a dropout layer after every activation of the MLP, and "
                             f"widths {widths} give none (give at least one hidden width)")
        layers = [item for layer in layers
                  for item in ((layer, dropout) if isinstance(layer, Nonlinearity) else (layer,))]
    if "residual" in table:
        bias_law = None if bias_variance is None else Normal(bias_variance)
        layers += _residual_blocks(table["residual"], widths[-1], act, scheme, bias_law, where)
    return Network(tuple(layers), network.inputs) if len(layers) != len(network.layers) else network


#: The keys beside ``init = "he"`` (the built-in schemes' arguments), and :func:`init_scheme`'s keyword for each.
_SCHEME_KEYS = {"mode": "mode", "slope": "a", "distribution": "distribution"}


def _init(table: Mapping[str, object], distribution: str, where: str) -> InitScheme:
    """``init = "NAME"`` or ``init = { name = "NAME", ARGUMENT = VALUE, ... }``: any of :data:`INIT_NAMES`.

    A built-in scheme named as text takes its arguments from the keys ``mode``, ``slope`` and
    ``distribution`` beside it; otherwise the arguments are those of :func:`init_parameters` (the
    framework function's own, e.g. ``a``, ``mode`` and ``nonlinearity`` of ``torch.kaiming_uniform_``),
    written in the ``init`` table: a name-valued argument as text, a number as a number or an
    expression (``a = "sqrt(5)"``).
    """
    spec = table.get("init", "he")
    beside = [key for key in _SCHEME_KEYS if key in table]
    if isinstance(spec, dict):
        arguments = dict(spec)
        name = arguments.pop("name", None)
        if not isinstance(name, str):
            raise ClaimError(f"{where}: an init table needs name = \"...\", the initialiser (such as "
                             f"\"torch.kaiming_uniform_\"; varprop initialisers lists them), got {spec!r}")
        if beside:
            raise ClaimError(f"{where}: with an init table, write {beside[0]} inside it "
                             f"(init = {{ name = \"{name}\", ... }}), not beside it")
    elif isinstance(spec, str):
        name, arguments = spec, {}
    else:
        raise ClaimError(f"{where}: init must be a name such as \"he\" or \"torch.nn.Linear\", or a table such as "
                         f"{{ name = \"torch.kaiming_uniform_\", a = \"sqrt(5)\" }}, got {spec!r}")
    try:
        accepted = init_parameters(name)
    except SpecError as exc:
        raise ClaimError(f"{where}: {exc}") from None
    if isinstance(spec, str) and name in INIT_SCHEMES:
        stray = [key for key in beside if _SCHEME_KEYS[key] not in accepted]
        if stray:
            raise ClaimError(f"{where}: init {name} takes no {stray[0]}; it takes: {_arguments(accepted)}")
        arguments = {argument: distribution if key == "distribution" else table[key]
                     for key, argument in _SCHEME_KEYS.items() if argument in accepted and key in table}
    elif isinstance(spec, str) and beside:
        raise ClaimError(f"{where}: {beside[0]} goes with a built-in init ({', '.join(INIT_SCHEMES)}); {name} takes "
                         f"its own arguments in an init table, init = {{ name = \"{name}\", ... }}: "
                         f"{_arguments(accepted)}")
    extra = sorted(set(arguments) - set(accepted))
    if extra:
        raise ClaimError(f"{where}: init {name} has no argument {extra[0]!r}; it takes: {_arguments(accepted)}")
    values: dict[str, object] = {}
    for key, value in arguments.items():
        if isinstance(accepted[key], str):
            if not isinstance(value, str):
                raise ClaimError(f"{where}: init {name}: {key} must be a name in quotes such as "
                                 f"{accepted[key]!r}, got {value!r}")
            values[key] = value
        else:
            what = "slope" if isinstance(spec, str) and key == "a" else f"init {name}: {key}"
            try:
                values[key] = _number(value, what, where)
            except ClaimError:
                raise
            except VarpropError as exc:
                raise ClaimError(f"{where}: {what}: {exc}") from None
    try:
        return init_scheme(name, **values)
    except SpecError as exc:
        raise ClaimError(f"{where}: init {name}: {exc}") from None


def _arguments(accepted: Mapping[str, object]) -> str:
    """``a (default 0), mode (default 'fan_in')``: an initialiser's arguments, for an error message."""
    return ", ".join(f"{key} (default {value!r})" if isinstance(value, str) else f"{key} (default {value})"
                     for key, value in accepted.items()) or "no arguments"


def _residual_blocks(spec: object, width: int, act: Activation, scheme: object, bias_law: object,
                     where: str) -> list[Residual]:
    """``residual = { blocks = 4, alpha = "1/sqrt(L)", layers = 2 }``: blocks x + alpha f(x) after the MLP, each
    branch ``layers`` dense layers of the last width with the activation between them (the init scheme's weights);
    ``alpha`` may use ``L``, the number of blocks."""
    if not isinstance(spec, dict):
        raise ClaimError(f"{where}: residual must be a table such as {{ blocks = 4, alpha = \"1/sqrt(L)\" }}, "
                         f"got {spec!r}")
    extra = sorted(set(spec) - set(_RESIDUAL_KEYS))
    if extra or "blocks" not in spec:
        what = f"unknown key {extra[0]!r}" if extra else "missing key 'blocks'"
        raise ClaimError(f"{where}: residual: {what}; accepted: {', '.join(_RESIDUAL_KEYS)}")
    counts = {}
    for key, default, top in (("blocks", None, MAX_BLOCKS), ("layers", 2, 20)):
        value = spec.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise ClaimError(f"{where}: residual {key} must be an integer from 1 to {top}, got {value!r}")
        counts[key] = value
    depth = sp.Symbol("L", positive=True, integer=True)
    alpha = _number(spec.get("alpha", 1), "residual alpha", where, {"L": depth}).subs(depth, counts["blocks"])
    law = scheme.law(width, width) if hasattr(scheme, "law") else scheme
    bias = bias_law if bias_law is not None else scheme.bias_law(width, width) if hasattr(scheme, "bias_law") else None
    branch: list = []
    for index in range(counts["layers"]):
        if index:
            branch.append(Nonlinearity(act))
        branch.append(Dense(width, width, law, bias))
    return [Residual(tuple(branch), alpha)] * counts["blocks"]


def _conv_network(table: Mapping[str, object], channels: list, scheme: object, bias_variance: object,
                  where: str) -> Network:
    """The ``conv`` table: a :func:`~varprop.network.cnn` with ``widths`` as its channel counts."""
    spec = table["conv"]
    if not isinstance(spec, dict) or "kernel_size" not in spec or "input_size" not in spec:
        raise ClaimError(f"{where}: conv must be a table with kernel_size and input_size (and optionally stride, "
                         f"padding, groups), got {spec!r}")
    extra = sorted(set(spec) - set(_CONV_KEYS))
    if extra:
        raise ClaimError(f"{where}: unknown key {extra[0]!r} in conv; accepted: {', '.join(_CONV_KEYS)}")
    sizes = {key: tuple(value) if isinstance(value, list) else value for key, value in spec.items()}
    if "layer" in table:
        raise ClaimError(f"{where}: a convolutional network's observables are addressed by place (conv1, act1, ...), "
                         "not by dense layer")
    first = Conv(channels[0], channels[1], sizes["kernel_size"], sizes["input_size"], sizes.get("stride", 1),
                 sizes.get("padding", 0), sizes.get("groups", 1), weights=Normal(1))
    inputs = _inputs(table, first.in_width, where)
    return cnn(channels, sizes["kernel_size"], sizes["input_size"], _activation(table, where), scheme,
               stride=sizes.get("stride", 1), padding=sizes.get("padding", 0), groups=sizes.get("groups", 1),
               bias_variance=bias_variance, inputs=inputs)


#: The normalisers a claim file can put after its dense layers (``norm = "..."``).
NORMS = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}


def _normalised(table: Mapping[str, object], network: Network, where: str) -> Network:
    """``network`` with the ``norm`` layer (``norm_eps``) after every dense layer but the last (Linear, Norm, act)."""
    if "norm" not in table:
        if "norm_eps" in table:
            raise ClaimError(f"{where}: norm_eps goes with norm = \"layernorm\" or \"rmsnorm\"")
        return network
    kind = NORMS[_choice(table, "norm", tuple(NORMS), where)]
    options = {} if "norm_eps" not in table else {"eps": _number(table["norm_eps"], "norm_eps", where)}
    last = network.dense_positions[-1]
    layers = []
    for position, layer in enumerate(network.layers):
        layers.append(layer)
        if isinstance(layer, Dense) and position != last:
            layers.append(kind(layer.fan_out, **options))
    return Network(tuple(layers), network.inputs)


def _inputs(table: Mapping[str, object], width: object, where: str) -> GaussianInput | FixedInput:
    """``input`` with the optional pair keys ``correlation`` (c0) and ``partner`` (a fixed vector)."""
    raw_input = table.get("input", "gaussian")
    correlation = None if "correlation" not in table else _number(table["correlation"], "correlation", where)
    partner = table.get("partner")
    if partner is not None and not isinstance(partner, list):
        raise ClaimError(f"{where}: partner must be a list of numbers, got {partner!r}")
    if partner is not None and (correlation is not None or not isinstance(raw_input, list)):
        raise ClaimError(f"{where}: partner (a fixed partner vector) goes with a list input and without correlation")
    if raw_input == "gaussian":
        return GaussianInput(correlation=correlation)
    if raw_input == "fixed-pair":
        if correlation is None:
            raise ClaimError(f"{where}: input \"fixed-pair\" needs correlation = c0 (a number in [-1, 1])")
        return FixedInput.pair(width, correlation)
    if isinstance(raw_input, list):
        if correlation is not None:
            raise ClaimError(f"{where}: a list input takes its pair as partner = [...], not correlation")
        return FixedInput(tuple(raw_input), None if partner is None else tuple(partner))
    raise ClaimError(f"{where}: input must be \"gaussian\", \"fixed-pair\" or a list of numbers, got {raw_input!r}")


def _compare(claim: Claim) -> FileClaim:
    """Compare the user's prediction with varprop's derived one for the same observable, if any."""
    try:
        derivation = derive(claim.network, claim.observable)
    except VarpropError as exc:
        return FileClaim(claim, None, None, f"varprop derives no prediction here ({exc})")
    value = derivation.result
    if not value.has(sp.Integral):
        same = sp.simplify(value - claim.prediction) == 0
    else:
        number = evaluate(value)
        same = abs(number.value - claim.value) <= max(number.error_estimate, 1e-12 * abs(number.value))
    if same and derivation.exactness != claim.exactness:
        note = (f"has the value of the derivation ({value}) but not its exactness: varprop derives it as "
                f"{derivation.exactness}, the file says {claim.exactness}")
    else:
        note = f"{'matches' if same else 'differs from'} the derivation ({value}, {derivation.exactness})"
    return FileClaim(claim, value, derivation.exactness, note, derivation)
