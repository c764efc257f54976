r"""Activation functions: one sympy expression and one vectorised numpy function per activation.

An :class:`Activation` is plain data: its name, its parameters and its sympy expression in the real
variable :data:`X`. The rectifier family is written as ``Piecewise`` so that the Gaussian expectation
engine can integrate it piece by piece with exact truncated-moment rules. The numpy side (used by the
Monte Carlo engine) is a hand-written function for built-ins and ``sympy.lambdify`` of the parsed tree
for user expressions.

User expressions are parsed by :func:`parse_expression`, a whitelist grammar over Python's ``ast``:
the text is never evaluated, and never handed to ``eval`` or ``sympify``.
"""

from __future__ import annotations

import ast
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import scipy.special as sps
import sympy as sp

from ._validate import as_sympy_number
from .errors import ActivationError, ExpressionError

__all__ = [
    "X",
    "Activation",
    "activation",
    "expression",
    "parse_expression",
    "BUILTIN_ACTIVATIONS",
    "SELU_ALPHA",
    "SELU_SCALE",
]

#: The real variable every activation expression is written in.
X = sp.Symbol("x", real=True)

#: SELU constants, Klambauer et al. (2017), eq. (14) (to 30 digits, as published).
SELU_ALPHA = sp.Float("1.6732632423543772848170429916717", 30)
SELU_SCALE = sp.Float("1.0507009873554804934193349852946", 30)

_NumpyFn = Callable[..., np.ndarray]


def _relu_expr(x: sp.Expr) -> sp.Expr:
    return sp.Piecewise((x, x > 0), (0, True))


@dataclass(frozen=True)
class _Builtin:
    name: str
    defaults: tuple[tuple[str, sp.Expr], ...]
    template: Callable[..., sp.Expr]
    numpy: _NumpyFn
    numpy_derivative: _NumpyFn
    summary: str


def _np_relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0)


def _np_step(z: np.ndarray) -> np.ndarray:
    return (z > 0).astype(np.float64)


def _np_elu(z: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0)))


def _np_elu_derivative(z: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(z > 0, 1.0, alpha * np.exp(np.minimum(z, 0.0)))


_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


_BUILTINS: dict[str, _Builtin] = {
    b.name: b
    for b in (
        _Builtin("linear", (), lambda x: x, lambda z: z * 1.0, lambda z: np.ones_like(z), "identity"),
        _Builtin("relu", (), _relu_expr, _np_relu, _np_step, "max(x, 0)"),
        _Builtin(
            "leaky_relu",
            (("a", sp.Rational(1, 100)),),
            lambda x, a: sp.Piecewise((x, x > 0), (a * x, True)),
            lambda z, a: np.where(z > 0, z, a * z),
            lambda z, a: np.where(z > 0, 1.0, a),
            "x for x > 0, a x otherwise (PReLU when a is learnt)",
        ),
        _Builtin(
            "abs",
            (),
            lambda x: sp.Piecewise((x, x > 0), (-x, True)),
            np.abs,
            np.sign,
            "|x|",
        ),
        _Builtin(
            "shifted_relu",
            (("c", sp.Rational(1, 2)),),
            lambda x, c: _relu_expr(x) - c,
            lambda z, c: np.maximum(z, 0.0) - c,
            lambda z, c: _np_step(z),
            "max(x, 0) - c",
        ),
        _Builtin("tanh", (), sp.tanh, np.tanh, lambda z: 1.0 / np.cosh(z) ** 2, "tanh(x)"),
        _Builtin(
            "erf",
            (),
            sp.erf,
            sps.erf,
            lambda z: 2.0 / math.sqrt(math.pi) * np.exp(-z * z),
            "erf(x)",
        ),
        _Builtin(
            "sigmoid",
            (),
            lambda x: 1 / (1 + sp.exp(-x)),
            sps.expit,
            lambda z: sps.expit(z) * sps.expit(-z),
            "1 / (1 + exp(-x))",
        ),
        _Builtin(
            "gelu",
            (),
            lambda x: x / 2 * (1 + sp.erf(x / sp.sqrt(2))),
            lambda z: 0.5 * z * (1.0 + sps.erf(z / _SQRT2)),
            lambda z: 0.5 * (1.0 + sps.erf(z / _SQRT2)) + z * _INV_SQRT_2PI * np.exp(-0.5 * z * z),
            "x Phi(x), the exact erf form",
        ),
        _Builtin(
            "silu",
            (),
            lambda x: x / (1 + sp.exp(-x)),
            lambda z: z * sps.expit(z),
            lambda z: sps.expit(z) * (1.0 + z * sps.expit(-z)),
            "x sigmoid(x) (swish-1)",
        ),
        _Builtin(
            "selu",
            (),
            lambda x: SELU_SCALE * sp.Piecewise((x, x > 0), (SELU_ALPHA * (sp.exp(x) - 1), True)),
            lambda z: float(SELU_SCALE) * _np_elu(z, float(SELU_ALPHA)),
            lambda z: float(SELU_SCALE) * _np_elu_derivative(z, float(SELU_ALPHA)),
            "scale * elu(x, alpha) with Klambauer et al.'s constants",
        ),
        _Builtin(
            "elu",
            (("alpha", sp.Integer(1)),),
            lambda x, alpha: sp.Piecewise((x, x > 0), (alpha * (sp.exp(x) - 1), True)),
            _np_elu,
            _np_elu_derivative,
            "x for x > 0, alpha (exp(x) - 1) otherwise",
        ),
        _Builtin(
            "softplus",
            (),
            lambda x: sp.log(1 + sp.exp(x)),
            lambda z: np.logaddexp(0.0, z),
            sps.expit,
            "log(1 + exp(x))",
        ),
    )
}

#: Names of the built-in activations, in the order they are documented.
BUILTIN_ACTIVATIONS: tuple[str, ...] = tuple(_BUILTINS)

_EXPRESSION = "expression"


@dataclass(frozen=True)
class Activation:
    r"""An activation function :math:`\phi` as plain data.

    Parameters
    ----------
    name
        A built-in name (see :data:`BUILTIN_ACTIVATIONS`) or ``"expression"`` for user text.
    expr
        The sympy expression of :math:`\phi(x)` in the real symbol :data:`X`.
    params
        ``(name, value)`` pairs; a value is a number or a sympy symbol left free.
    source
        The text the user gave, for expressions; empty for built-ins.
    """

    name: str
    expr: sp.Expr
    params: tuple[tuple[str, sp.Expr], ...] = ()
    source: str = ""

    @property
    def derivative(self) -> sp.Expr:
        r"""The sympy expression of :math:`\phi'(x)` (a ``Piecewise`` for the rectifier family)."""
        return _derivative(self.expr)

    @property
    def is_numeric(self) -> bool:
        """True when every parameter has a numeric value (needed to sample)."""
        return not (self.expr.free_symbols - {X})

    def numpy(self, z: np.ndarray) -> np.ndarray:
        r"""Vectorised :math:`\phi(z)` in float64."""
        return self._numpy_pair[0](np.asarray(z, dtype=np.float64))

    def numpy_derivative(self, z: np.ndarray) -> np.ndarray:
        r"""Vectorised :math:`\phi'(z)` in float64."""
        return self._numpy_pair[1](np.asarray(z, dtype=np.float64))

    @cached_property
    def _numpy_pair(self) -> tuple[_NumpyFn, _NumpyFn]:
        if not self.is_numeric:
            free = ", ".join(sorted(str(s) for s in self.expr.free_symbols - {X}))
            raise ActivationError(
                f"activation {self} has symbolic parameters ({free}); give them numeric values to sample it"
            )
        builtin = _BUILTINS.get(self.name)
        if builtin is not None:
            values = {k: float(v) for k, v in self.params}
            return (
                lambda z: builtin.numpy(z, **values),
                lambda z: builtin.numpy_derivative(z, **values),
            )
        return _lambdify(self.expr), _lambdify(self.derivative)

    def __str__(self) -> str:
        if self.name == _EXPRESSION:
            return self.source or str(self.expr)
        if not self.params:
            return self.name
        return f"{self.name}(" + ", ".join(f"{k}={v}" for k, v in self.params) + ")"


def _derivative(expr: sp.Expr) -> sp.Expr:
    derivative = sp.diff(expr, X)
    if derivative.has(sp.Piecewise):
        derivative = sp.piecewise_fold(derivative)
    return derivative


@lru_cache(maxsize=256)
def _lambdify(expr: sp.Expr) -> _NumpyFn:
    function = sp.lambdify(X, expr, modules=[{"erf": sps.erf, "erfc": sps.erfc}, "numpy"])

    def vectorised(z: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            out = function(z)
        return np.broadcast_to(np.asarray(out, dtype=np.float64), np.shape(z)).copy()

    return vectorised


def activation(name: str, **params: object) -> Activation:
    """Build a built-in activation by name, with optional parameter values.

    A parameter given as a sympy symbol (or as ``None``) stays symbolic, named after the parameter.

    Examples
    --------
    >>> activation("leaky_relu", a=0.2)
    >>> activation("shifted_relu", c=None)   # c stays a free symbol
    """
    builtin = _BUILTINS.get(name)
    if builtin is None:
        known = ", ".join(sorted(_BUILTINS))
        raise ActivationError(f"unknown activation {name!r}; known: {known} (or a user expression)")
    defaults = dict(builtin.defaults)
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        accepted = ", ".join(defaults) if defaults else "none"
        raise ActivationError(
            f"activation {name!r} has no parameter {unknown[0]!r}; its parameters: {accepted}"
        )
    values = {}
    for key, default in defaults.items():
        given = params.get(key, default)
        if given is None:
            given = sp.Symbol(key, real=True)
        values[key] = as_sympy_number(given, f"parameter {key} of {name}", error=ActivationError)
        if values[key].is_extended_real is False:
            raise ActivationError(f"parameter {key} of {name} must be real, got {values[key]}")
    if name == "elu" and values["alpha"].is_negative:
        raise ActivationError(f"parameter alpha of elu must be non-negative, got {values['alpha']}")
    return Activation(name, builtin.template(X, **values), tuple(values.items()))


def expression(text: str, **params: object) -> Activation:
    """Build an activation from user text such as ``"max(x, 0) - 0.5"``.

    The text is parsed by :func:`parse_expression`; names other than ``x`` must be given in ``params``
    (a value, or ``None`` to keep the name symbolic).
    """
    values = {}
    for key, value in params.items():
        values[key] = (
            sp.Symbol(key, real=True)
            if value is None
            else as_sympy_number(value, f"parameter {key}", error=ExpressionError)
        )
    expr = parse_expression(text, values)
    if X not in expr.free_symbols:
        raise ExpressionError(f"expression {text!r} does not depend on x; write the activation in x, e.g. 'max(x, 0) - 0.5'")
    _check_real(expr, text)
    return Activation(_EXPRESSION, expr, tuple(values.items()), source=text.strip())


def _check_real(expr: sp.Expr, text: str) -> None:
    """Refuse expressions that are not real-valued on the real line (``sqrt(x)``, ``log(x)``)."""
    if expr.free_symbols - {X}:
        return  # symbolic parameters: checked when they get values
    # Float points: an exact rational point makes sympy compute e.g. (20**16)**((5/2)**16) exactly.
    for point in (sp.Float(-2.5), sp.Float(-1 / 3), sp.Float(1 / 3), sp.Float(2.5)):
        argument = _negative_argument(expr, point)
        if argument is not None:  # tanh(sqrt(x))**2 is real, but only through tan(sqrt(-x)) and its poles
            raise ExpressionError(
                f"expression {text!r} is not a finite real number at x = {float(point):g}: it takes a fractional power or "
                f"log of {argument} < 0; an activation must be real-valued on the whole real line, "
                "without complex intermediate values"
            )
        try:
            value = sp.N(expr.subs(X, point), 15)
        except (TypeError, ValueError, ArithmeticError):  # e.g. max(log(x), ...) compares a non-real
            value = sp.nan
        if not value.is_real or not value.is_finite:
            raise ExpressionError(
                f"expression {text!r} is not a finite real number at x = {float(point):g} (got {value}); "
                "an activation must be real-valued on the whole real line"
            )


def _negative_argument(expr: sp.Expr, point: sp.Expr) -> sp.Expr | None:
    """A fractional power's base or a log's argument that is negative at ``point`` (active branches only)."""
    if isinstance(expr, sp.Piecewise):
        for branch, cond in expr.args:
            try:
                holds = bool(cond.subs(X, point)) if cond is not sp.true else True
            except (TypeError, ValueError, ArithmeticError):
                return None
            if holds:
                return _negative_argument(branch, point)
        return None
    inner = None
    if isinstance(expr, sp.log):
        inner = expr.args[0]
    elif isinstance(expr, sp.Pow) and expr.exp.is_number and not expr.exp.is_integer:
        inner = expr.base
    if inner is not None and X in inner.free_symbols:
        try:
            if bool(sp.N(inner.subs(X, point), 15) < 0):
                return inner
        except (TypeError, ValueError, ArithmeticError):
            return None
    for arg in expr.args:
        found = _negative_argument(arg, point) if isinstance(arg, sp.Expr) else None
        if found is not None:
            return found
    return None


def builtin_summary() -> dict[str, str]:
    """One-line description of each built-in, with its parameters and defaults."""
    out = {}
    for name, b in _BUILTINS.items():
        params = ", ".join(f"{k}={v}" for k, v in b.defaults)
        out[name] = b.summary + (f"  [{params}]" if params else "")
    return out


# --- the whitelist parser -------------------------------------------------------------------

_MAX_TEXT = 500
_MAX_NODES = 200
_MAX_INTEGER_POWER = 16
#: Upper bound on the polynomial degree of the whole expression, counting every function of x as
#: degree 1 (``tanh(x)**3 * x`` has degree 4): it bounds the size of every expansion downstream.
_MAX_DEGREE = 32
#: Nonzero constants (literals and every constant subexpression) must lie in this range of size.
_MAX_CONSTANT = 1e308
_MIN_CONSTANT = 1e-308
#: Piecewise-linear calls (abs, max, min, relu, step) of x: the pieces multiply when folded.
_MAX_PIECEWISE = 4
#: Depth of nested exponentials of x (exp, sinh, cosh, sigmoid, softplus, a power with x in the exponent).
_MAX_EXP_DEPTH = 2

_FUNCTIONS: Mapping[str, Callable[..., sp.Expr]] = {
    "exp": sp.exp,
    "log": sp.log,
    "sqrt": sp.sqrt,
    "tanh": sp.tanh,
    "sinh": sp.sinh,
    "cosh": sp.cosh,
    "sin": sp.sin,
    "cos": sp.cos,
    "atan": sp.atan,
    "erf": sp.erf,
    "erfc": sp.erfc,
    "abs": lambda a: sp.Piecewise((a, a > 0), (-a, True)),
    "max": lambda a, b: sp.Piecewise((a, a > b), (b, True)),
    "min": lambda a, b: sp.Piecewise((a, a < b), (b, True)),
    "relu": _relu_expr,
    "step": lambda a: sp.Piecewise((1, a > 0), (0, True)),
    "sigmoid": lambda a: 1 / (1 + sp.exp(-a)),
    "softplus": lambda a: sp.log(1 + sp.exp(a)),
}
_ARITY = {"max": 2, "min": 2}
_CONSTANTS = {"pi": sp.pi, "e": sp.E}
_PIECEWISE_FUNCTIONS = frozenset({"abs", "max", "min", "relu", "step"})
_EXPONENTIAL_FUNCTIONS = frozenset({"exp", "sinh", "cosh", "sigmoid", "softplus"})


def _float_function(name: str, *args: float) -> float:
    """The float value of a whitelisted function at constant arguments (raises ValueError/OverflowError)."""
    a = args[0]
    table: dict[str, Callable[..., float]] = {
        "exp": math.exp,
        "log": math.log,
        "sqrt": math.sqrt,
        "tanh": math.tanh,
        "sinh": math.sinh,
        "cosh": math.cosh,
        "sin": math.sin,
        "cos": math.cos,
        "atan": math.atan,
        "erf": math.erf,
        "erfc": math.erfc,
        "abs": abs,
        "max": max,
        "min": min,
        "relu": lambda v: max(v, 0.0),
        "step": lambda v: 1.0 if v > 0 else 0.0,
        "sigmoid": lambda v: 1.0 / (1.0 + math.exp(-v)) if v > -700 else 0.0,
        "softplus": lambda v: v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v)),
    }
    if name in ("log", "sqrt") and a <= 0 and not (name == "sqrt" and a == 0):
        raise ValueError(f"{name} of the non-positive number {_abbreviate(a)} is not a finite real number")
    return table[name](*args)


def _abbreviate(value: object, width: int = 40) -> str:
    """``value`` as text, shortened in the middle when long (a 300-digit integer is never printed whole)."""
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    if len(text) <= width:
        return text
    digits = sum(ch.isdigit() for ch in text)
    return f"{text[: width // 2]}...{text[-8:]} ({digits} digits)"


@dataclass(frozen=True)
class _Node:
    """A converted subexpression with the sizes the limits are checked on.

    ``value`` is the float value of a constant subexpression (``None`` when it depends on x or on a
    symbolic parameter), ``degree`` a bound on its polynomial degree (functions of x count 1),
    ``pieces`` the number of piecewise-linear calls of x and ``depth`` the nesting of exponentials of x.
    """

    expr: sp.Expr
    value: float | None = None
    degree: int = 0
    pieces: int = 0
    depth: int = 0


def parse_expression(text: str, params: Mapping[str, sp.Expr] | None = None) -> sp.Expr:
    """Parse ``text`` into a sympy expression in :data:`X` through a whitelist grammar.

    Accepted: numbers, the variable ``x``, the constants ``pi`` and ``e``, names given in ``params``,
    ``+ - * / **`` (``^`` is read as a power), unary minus, and the functions
    ``abs, atan, cos, cosh, erf, erfc, exp, log, max, min, relu, sigmoid, sin, sinh, softplus, sqrt,
    step, tanh``. Anything else (attributes, subscripts, keywords, lambdas, strings, other names)
    raises :class:`~varprop.errors.ExpressionError`; nothing in the text is ever evaluated.

    Sizes are bounded while converting, before any expensive object is built: the text
    (``_MAX_TEXT`` characters, ``_MAX_NODES`` syntax nodes), every numeric exponent (at most
    ``_MAX_INTEGER_POWER`` in size), the total degree (``_MAX_DEGREE``, a function of x counting as
    degree 1), every nonzero constant subexpression (between ``_MIN_CONSTANT`` and ``_MAX_CONSTANT`` in
    size, and real), the number of piecewise calls of x (``_MAX_PIECEWISE``) and the nesting of
    exponentials of x (``_MAX_EXP_DEPTH``).
    """
    params = dict(params or {})
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be text, got {_abbreviate(repr(text))}")
    if len(text) > _MAX_TEXT:
        raise ExpressionError(f"expression is {len(text)} characters long; at most {_MAX_TEXT} are accepted")
    if not text.strip():
        raise ExpressionError("expression is empty; write it in x, e.g. 'max(x, 0) - 0.5'")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"malformed expression {_abbreviate(text, 80)!r}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError):
        raise ExpressionError(f"malformed expression {_abbreviate(text, 80)!r}: it cannot be parsed") from None
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > _MAX_NODES:
        raise ExpressionError(f"expression {_abbreviate(text, 80)!r} has {nodes} syntax nodes; at most {_MAX_NODES} are accepted")
    converter = _Converter(text, params)
    try:
        expr = converter.convert(tree.body)
    except RecursionError:
        raise ExpressionError(f"expression {_abbreviate(text, 80)!r} is nested too deeply") from None
    if not isinstance(expr, sp.Expr) or expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo, sp.I):
        raise ExpressionError(f"expression {_abbreviate(text, 80)!r} is not a finite real function of x (got {_abbreviate(expr)})")
    return expr


class _Converter:
    def __init__(self, text: str, params: Mapping[str, sp.Expr]) -> None:
        self.text = text
        self.quoted = repr(_abbreviate(text, 80))
        self.params = params

    def fail(self, what: str) -> ExpressionError:
        accepted = "numbers, x, pi, e, + - * / ** ^, and " + ", ".join(sorted(_FUNCTIONS))
        if self.params:
            accepted += "; parameters " + ", ".join(sorted(self.params))
        return ExpressionError(f"in expression {self.quoted}: {what} is not accepted; accepted: {accepted}")

    def convert(self, node: ast.AST) -> sp.Expr:
        return self.node(node).expr

    def segment(self, node: ast.AST) -> str:
        return _abbreviate(ast.get_source_segment(self.text, node) or "?", 60)

    def constant(self, expr: sp.Expr, value: float, node: ast.AST) -> _Node:
        """A constant subexpression, refused when it is not a real number of accepted size."""
        if not math.isfinite(value) or abs(value) > _MAX_CONSTANT or (value != 0 and abs(value) < _MIN_CONSTANT):
            size = f"larger than {_MAX_CONSTANT:g}" if not math.isfinite(value) else f"about {_abbreviate(value)}"
            raise ExpressionError(
                f"in expression {self.quoted}: the constant {self.segment(node)} is {size}; "
                f"nonzero constants must lie between {_MIN_CONSTANT:g} and {_MAX_CONSTANT:g} in size"
            )
        return _Node(expr, value)

    def limited(self, result: _Node, node: ast.AST) -> _Node:
        if result.degree > _MAX_DEGREE:
            raise ExpressionError(
                f"in expression {self.quoted}: {self.segment(node)} has degree {result.degree} in x; "
                f"at most {_MAX_DEGREE} is accepted (a function of x counts as degree 1)"
            )
        if result.pieces > _MAX_PIECEWISE:
            raise ExpressionError(
                f"in expression {self.quoted}: {result.pieces} calls of abs/max/min/relu/step on x; "
                f"at most {_MAX_PIECEWISE} are accepted"
            )
        if result.depth > _MAX_EXP_DEPTH:
            raise ExpressionError(
                f"in expression {self.quoted}: {self.segment(node)} nests exponentials of x {result.depth} deep; "
                f"at most {_MAX_EXP_DEPTH} are accepted"
            )
        return result

    def node(self, node: ast.AST) -> _Node:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise self.fail(f"the constant {_abbreviate(repr(node.value))}")
            if isinstance(node.value, float):
                if not math.isfinite(node.value):
                    raise self.fail(f"the constant {node.value!r}")
                return self.constant(sp.Float(node.value), node.value, node)
            if node.value.bit_length() > 1000:  # float() would overflow; refuse without printing it
                return self.constant(sp.Integer(0), math.inf, node)
            return self.constant(sp.Integer(node.value), float(node.value), node)
        if isinstance(node, ast.Name):
            if node.id == "x":
                return _Node(X, None, 1)
            if node.id in self.params:
                param = self.params[node.id]
                value = float(param) if param.is_number and param.is_real else None
                return _Node(param, value)
            if node.id in _CONSTANTS:
                return _Node(_CONSTANTS[node.id], float(_CONSTANTS[node.id]))
            raise self.fail(f"the name {node.id!r}")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            operand = self.node(node.operand)
            if isinstance(node.op, ast.UAdd):
                return operand
            value = None if operand.value is None else -operand.value
            return _Node(-operand.expr, value, operand.degree, operand.pieces, operand.depth)
        if isinstance(node, ast.BinOp):
            return self.limited(self.binary(node), node)
        if isinstance(node, ast.Call):
            return self.limited(self.call(node), node)
        raise self.fail(f"the construct {type(node).__name__} ({self.segment(node)})")

    def binary(self, node: ast.BinOp) -> _Node:
        left, right = self.node(node.left), self.node(node.right)
        op = node.op
        pieces = left.pieces + right.pieces
        depth = max(left.depth, right.depth)
        both = left.value is not None and right.value is not None
        if isinstance(op, ast.Add | ast.Sub):
            expr = left.expr + right.expr if isinstance(op, ast.Add) else left.expr - right.expr
            if both:
                return self.constant(expr, left.value + right.value if isinstance(op, ast.Add) else left.value - right.value, node)
            return _Node(expr, None, max(left.degree, right.degree), pieces, depth)
        if isinstance(op, ast.Mult):
            if both:
                return self.constant(left.expr * right.expr, left.value * right.value, node)
            return _Node(left.expr * right.expr, None, left.degree + right.degree, pieces, depth)
        if isinstance(op, ast.Div):
            if right.expr == 0 or right.value == 0:
                raise ExpressionError(f"in expression {self.quoted}: division by zero in {self.segment(node)}")
            if both:
                return self.constant(left.expr / right.expr, left.value / right.value, node)
            return _Node(left.expr / right.expr, None, left.degree + right.degree, pieces, depth)
        if isinstance(op, ast.Pow | ast.BitXor):
            return self.power(node, left, right, pieces, depth)
        raise self.fail(f"the operator {type(op).__name__}")

    def power(self, node: ast.BinOp, left: _Node, right: _Node, pieces: int, depth: int) -> _Node:
        if right.value is not None:
            exponent = right.value
            if abs(exponent) > _MAX_INTEGER_POWER:
                raise ExpressionError(
                    f"in expression {self.quoted}: the exponent {_abbreviate(exponent)} is not accepted; "
                    f"exponents must be real numbers of size at most {_MAX_INTEGER_POWER}"
                )
            if left.value is not None:
                base = left.value
                if base == 0 and exponent < 0:
                    raise ExpressionError(f"in expression {self.quoted}: division by zero in {self.segment(node)}")
                if base < 0 and not float(exponent).is_integer():
                    raise ExpressionError(
                        f"in expression {self.quoted}: {self.segment(node)} is not a real number "
                        "(a negative number to a fractional power)"
                    )
                # The size is checked from logarithms before sympy computes the power.
                if base != 0 and abs(exponent * math.log10(abs(base))) > 308.5:
                    return self.constant(sp.Integer(0), math.inf, node)
                return self.constant(left.expr**right.expr, math.copysign(abs(base) ** exponent, base if float(exponent) % 2 else 1.0), node)
            if left.expr == 0 and exponent < 0:
                raise ExpressionError(f"in expression {self.quoted}: division by zero in {self.segment(node)}")
            degree = math.ceil(left.degree * abs(exponent))
            self.limited(_Node(left.expr, None, degree, pieces, depth), node)
            return _Node(left.expr**right.expr, None, degree, pieces * max(1, math.ceil(abs(exponent))), depth)
        # A power with x (or a symbolic parameter) in the exponent: an exponential of x.
        if right.pieces:  # folding 10**16 ** min(10**16, x) would compute 10**16 ** 10**16 exactly
            raise ExpressionError(
                f"in expression {self.quoted}: {self.segment(node)} has abs/max/min/relu/step in an exponent, "
                "which is not accepted; write the exponential with exp(...)"
            )
        if left.value is not None and left.value < 0:
            raise ExpressionError(
                f"in expression {self.quoted}: {self.segment(node)} raises the negative number "
                f"{_abbreviate(left.value)} to a power that depends on x, which is not real; bases of such "
                "powers must be positive"
            )
        if not right.expr.is_real and right.expr.is_real is not None:
            raise ExpressionError(f"in expression {self.quoted}: the exponent in {self.segment(node)} is not real")
        grows = X in right.expr.free_symbols
        return _Node(left.expr**right.expr, None, left.degree + right.degree + 1, pieces,
                     max(left.depth, right.depth + 1 if grows else right.depth))

    def call(self, node: ast.Call) -> _Node:
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.get_source_segment(self.text, node.func)
            raise self.fail(f"the function {_abbreviate(repr(name))}")
        if node.keywords:
            raise self.fail("a keyword argument")
        name = node.func.id
        arity = _ARITY.get(name, 1)
        if len(node.args) != arity:
            raise ExpressionError(
                f"in expression {self.quoted}: {name} takes {arity} argument(s), got {len(node.args)}"
            )
        args = [self.node(a) for a in node.args]
        exprs = [a.expr for a in args]
        if all(a.value is not None for a in args):
            try:
                value = _float_function(name, *(a.value for a in args))
            except (ValueError, OverflowError) as exc:
                reason = str(exc) if "finite real" in str(exc) else "it is too large or not a real number"
                raise ExpressionError(
                    f"in expression {self.quoted}: the constant {self.segment(node)} is not accepted: {reason}; "
                    f"constants must be real numbers between {_MIN_CONSTANT:g} and {_MAX_CONSTANT:g} in size"
                ) from None
            return self.constant(self.apply(name, exprs, node), value, node)
        pieces = sum(a.pieces for a in args)
        depth = max(a.depth for a in args)
        degree = max(a.degree for a in args)
        if name in _PIECEWISE_FUNCTIONS:
            pieces += 1
            if name == "step":
                degree = 0
        elif name == "sqrt":
            degree = math.ceil(degree / 2)
        else:
            degree = 1
        if name in _EXPONENTIAL_FUNCTIONS:
            depth += 1
        return _Node(self.apply(name, exprs, node), None, degree, pieces, depth)

    def apply(self, name: str, exprs: list[sp.Expr], node: ast.AST) -> sp.Expr:
        try:
            return _FUNCTIONS[name](*exprs)
        except (TypeError, ValueError, ArithmeticError) as exc:  # e.g. comparing a non-real in max/min
            raise ExpressionError(
                f"in expression {self.quoted}: {self.segment(node)} is not a real function of x ({type(exc).__name__}); "
                "arguments of max and min must be real"
            ) from None
