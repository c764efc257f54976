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
    for point in (sp.Rational(-5, 2), sp.Rational(-1, 3), sp.Rational(1, 3), sp.Rational(5, 2)):
        value = sp.N(expr.subs(X, point), 15)
        if not value.is_real or not value.is_finite:
            raise ExpressionError(
                f"expression {text!r} is not a finite real number at x = {point} (got {value}); "
                "an activation must be real-valued on the whole real line"
            )


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


def parse_expression(text: str, params: Mapping[str, sp.Expr] | None = None) -> sp.Expr:
    """Parse ``text`` into a sympy expression in :data:`X` through a whitelist grammar.

    Accepted: numbers, the variable ``x``, the constants ``pi`` and ``e``, names given in ``params``,
    ``+ - * / **`` (``^`` is read as a power), unary minus, and the functions
    ``abs, atan, cos, cosh, erf, erfc, exp, log, max, min, relu, sigmoid, sin, sinh, softplus, sqrt,
    step, tanh``. Anything else (attributes, subscripts, keywords, lambdas, strings, other names)
    raises :class:`~varprop.errors.ExpressionError`; nothing in the text is ever evaluated.
    """
    params = dict(params or {})
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be text, got {text!r}")
    if len(text) > _MAX_TEXT:
        raise ExpressionError(f"expression is {len(text)} characters long; at most {_MAX_TEXT} are accepted")
    if not text.strip():
        raise ExpressionError("expression is empty; write it in x, e.g. 'max(x, 0) - 0.5'")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"malformed expression {text!r}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError):
        raise ExpressionError(f"malformed expression {text!r}: it cannot be parsed") from None
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > _MAX_NODES:
        raise ExpressionError(f"expression {text!r} has {nodes} syntax nodes; at most {_MAX_NODES} are accepted")
    converter = _Converter(text, params)
    expr = converter.convert(tree.body)
    if not isinstance(expr, sp.Expr) or expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise ExpressionError(f"expression {text!r} is not a finite real function of x (got {expr})")
    return expr


class _Converter:
    def __init__(self, text: str, params: Mapping[str, sp.Expr]) -> None:
        self.text = text
        self.params = params

    def fail(self, what: str) -> ExpressionError:
        accepted = "numbers, x, pi, e, + - * / ** ^, and " + ", ".join(sorted(_FUNCTIONS))
        if self.params:
            accepted += "; parameters " + ", ".join(sorted(self.params))
        return ExpressionError(f"in expression {self.text!r}: {what} is not accepted; accepted: {accepted}")

    def convert(self, node: ast.AST) -> sp.Expr:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise self.fail(f"the constant {node.value!r}")
            if isinstance(node.value, float):
                if not math.isfinite(node.value):
                    raise self.fail(f"the constant {node.value!r}")
                return sp.Float(node.value)
            return sp.Integer(node.value)
        if isinstance(node, ast.Name):
            if node.id == "x":
                return X
            if node.id in self.params:
                return self.params[node.id]
            if node.id in _CONSTANTS:
                return _CONSTANTS[node.id]
            raise self.fail(f"the name {node.id!r}")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            operand = self.convert(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.fail(f"the construct {type(node).__name__} ({ast.get_source_segment(self.text, node) or '?'})")

    def binary(self, node: ast.BinOp) -> sp.Expr:
        left, right = self.convert(node.left), self.convert(node.right)
        op = node.op
        if isinstance(op, ast.Add):
            return left + right
        if isinstance(op, ast.Sub):
            return left - right
        if isinstance(op, ast.Mult):
            return left * right
        if isinstance(op, ast.Div):
            if right == 0:
                raise ExpressionError(f"in expression {self.text!r}: division by zero")
            return left / right
        if isinstance(op, ast.Pow | ast.BitXor):
            if right.is_number and (not right.is_real or abs(float(right)) > _MAX_INTEGER_POWER):
                raise ExpressionError(
                    f"in expression {self.text!r}: the exponent {right} is not accepted; "
                    f"exponents must be real numbers of size at most {_MAX_INTEGER_POWER}"
                )
            if left == 0 and right.is_number and right.is_negative:
                raise ExpressionError(f"in expression {self.text!r}: division by zero")
            return left**right
        raise self.fail(f"the operator {type(op).__name__}")

    def call(self, node: ast.Call) -> sp.Expr:
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.get_source_segment(self.text, node.func)
            raise self.fail(f"the function {name!r}")
        if node.keywords:
            raise self.fail("a keyword argument")
        arity = _ARITY.get(node.func.id, 1)
        if len(node.args) != arity:
            raise ExpressionError(
                f"in expression {self.text!r}: {node.func.id} takes {arity} argument(s), got {len(node.args)}"
            )
        args = [self.convert(a) for a in node.args]
        return _FUNCTIONS[node.func.id](*args)
