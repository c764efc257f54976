r"""Users' own claims, read from a TOML file.

Each ``[[claim]]`` table describes one network, one observable at one layer, and the predicted
value::

    [[claim]]
    name = "relu-he-forward"
    activation = "relu"            # a built-in, or an expression in x such as "max(x, 0) - 0.5"
    params = { a = 0.2 }           # activation parameters (optional)
    widths = [32, 32, 32, 32]      # input width, hidden widths, output width
    init = "he"                    # he | kaiming | glorot | xavier | lecun | torch_default | keras_default
    mode = "fan_in"                # he / kaiming only: fan_in | fan_out
    slope = 0.0                    # he / kaiming only: the leaky slope a
    distribution = "normal"        # normal | uniform | truncated_normal
    # weight_variance = "2/n_in"   # instead of init: a variance in n_in and n_out
    bias_variance = 0.0            # optional Gaussian bias
    input = "gaussian"             # "gaussian" (iid N(0, 1)) or a list of numbers (a fixed input)
    observable = "y_second_moment" # see varprop.claims.OBSERVABLES
    layer = 3                      # dense layer, 1-based
    # or, by place (works for any layer kind):
    # observable = "second_moment" # mean | second_moment | variance | norm_ratio
    # tensor = "gradient"          # signal (default) | gradient | weight_gradient
    # place = "act2"               # input, dense1, act1, dense2, ... or an integer position (-1: the input)
    prediction = "2"               # numbers, pi, e, + - * / ** and sqrt, exp, log, ...
    exactness = "exact"            # exact | gaussian-exact | asymptotic | approximation
    source = "He et al. 2015, eq. (10)"

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
from dataclasses import dataclass
from pathlib import Path

import sympy as sp

from .activations import BUILTIN_ACTIVATIONS, Activation, activation, expression, parse_expression
from .claims import EXACTNESS, OBSERVABLES, Claim, ClaimError
from .derive.derivation import Derivation
from .derive.gaussian import evaluate
from .derive.propagate import derive
from .errors import VarpropError
from .montecarlo.limits import check_network
from .network import FixedInput, GaussianInput, Network, mlp
from .observables import STATISTICS, TENSORS, Observable, ObservableError, at_place
from .weights import DISTRIBUTIONS, INIT_SCHEMES, N_IN, N_OUT, explicit, init_scheme

__all__ = ["FileClaim", "load_claims", "load_laws"]

_REQUIRED = ("name", "activation", "widths", "observable", "prediction")
_OPTIONAL = ("layer", "place", "tensor", "params", "init", "mode", "slope", "distribution", "weight_variance",
             "bias_variance", "input", "exactness", "source", "description")


@dataclass(frozen=True)
class FileClaim:
    """A claim read from a file, and how it compares with what :mod:`varprop.derive` derives."""

    claim: Claim
    derived: sp.Expr | None
    derived_exactness: str | None
    agreement: str  # "matches the derivation", "differs from the derivation", or why none was derived
    derivation: Derivation | None = None  # varprop's own derivation of the same observable


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
    try:
        network = _network(table, where)
        check_network(network)  # a claim is checked by sampling: refuse what cannot be, before deriving
        exactness = _choice(table, "exactness", EXACTNESS, where, default="exact")
        if "place" in table:
            if "layer" in table:
                raise ClaimError(f"{where}: give either layer (with an observable name such as y_second_moment) or "
                                 "place (with a statistic such as second_moment), not both")
            observable = _at_place(table, network, where)
            layer = None
        else:
            if "layer" not in table:
                raise ClaimError(f"{where}: missing key 'layer' (or 'place'); required: {', '.join(_REQUIRED)}")
            if "tensor" in table:
                raise ClaimError(f"{where}: tensor goes with place, not with layer")
            observable = _choice(table, "observable", OBSERVABLES, where)
            layer = table["layer"]
            if isinstance(layer, bool) or not isinstance(layer, int):
                raise ClaimError(f"{where}: layer must be an integer, got {layer!r}")
        prediction = _number(table["prediction"], "prediction", where)
        claim = Claim(name, network, observable, layer, prediction, exactness,
                      source=str(table.get("source", "")), description=str(table.get("description", "")))
    except ClaimError:
        raise
    except VarpropError as exc:
        raise ClaimError(f"{where}: {exc}") from None
    return _compare(claim)


def _at_place(table: Mapping[str, object], network: Network, where: str) -> Observable:
    """``observable = "second_moment"``, ``tensor = "gradient"``, ``place = "act2"`` (or a position)."""
    statistic = _choice(table, "observable", tuple(STATISTICS), where)
    tensor = _choice(table, "tensor", tuple(TENSORS), where, default="signal")
    place = table["place"]
    if isinstance(place, bool) or not isinstance(place, int | str):
        raise ClaimError(f"{where}: place must be a place name such as 'act2' or an integer position, got {place!r}")
    try:
        return at_place(statistic, tensor, place, network)
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


def _network(table: Mapping[str, object], where: str) -> Network:
    widths = table["widths"]
    if not isinstance(widths, list) or len(widths) < 2:
        raise ClaimError(f"{where}: widths must be a list of at least two positive integers, got {widths!r}")
    distribution = _choice(table, "distribution", DISTRIBUTIONS, where, default="normal")
    if "weight_variance" in table:
        if "init" in table:
            raise ClaimError(f"{where}: give either init or weight_variance, not both")
        variance = _number(table["weight_variance"], "weight_variance", where, {"n_in": N_IN, "n_out": N_OUT})
        scheme = explicit(variance, distribution)
    else:
        name = _choice(table, "init", INIT_SCHEMES, where, default="he")
        slope = _number(table.get("slope", 0), "slope", where)
        scheme = init_scheme(name, mode=str(table.get("mode", "fan_in")), a=slope, distribution=distribution)
    bias = table.get("bias_variance")
    bias_variance = None if bias is None else _number(bias, "bias_variance", where)
    raw_input = table.get("input", "gaussian")
    if raw_input == "gaussian":
        inputs = GaussianInput()
    elif isinstance(raw_input, list):
        inputs = FixedInput(tuple(raw_input))
    else:
        raise ClaimError(f"{where}: input must be \"gaussian\" or a list of numbers, got {raw_input!r}")
    return mlp(widths, _activation(table, where), scheme, bias_variance=bias_variance, inputs=inputs)


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
    word = "matches" if same else "differs from"
    return FileClaim(claim, value, derivation.exactness,
                     f"{word} the derivation ({value}, {derivation.exactness})", derivation)
