r"""Activation functions: one sympy expression per activation, and numpy functions that agree with it.

An :class:`Activation` is plain data: its name, its parameters and its sympy expression in the real
variable :data:`X`. The expression is the one source of truth. The rectifier family is written as
``Piecewise`` so that the Gaussian expectation engine can integrate it piece by piece with exact
truncated-moment rules.

The numpy side (used by the Monte Carlo engine) comes from the expression:

* a built-in's name must match its template with its parameters (``Activation("relu", tanh(x))`` is
  refused), and its hand-written vectorised kernel (fast, and stable in the tails) is checked against
  the expression, evaluated by mpmath at 400 digits, on a grid of negative, zero-adjacent and large
  :math:`|x|` when the activation is first built in a process;
* a user expression is compiled with ``sympy.lambdify`` (``Piecewise`` becomes ``numpy.select``).

Compiled functions live in module-level caches keyed on the activation, never in the instance, so
every activation pickles and equal activations share one compiled function.

User expressions are parsed by :func:`parse_expression`, a whitelist grammar over Python's ``ast``:
the text is never evaluated, and never handed to ``eval`` or ``sympify``.
"""

from __future__ import annotations

import ast
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from types import ModuleType

import numpy as np
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


def _special() -> ModuleType:
    """``scipy.special``, imported on first use: it costs 0.2 s, and ``import varprop`` must not pay it."""
    import scipy.special

    return scipy.special


def _relu_expr(x: sp.Expr) -> sp.Expr:
    return sp.Piecewise((x, x > 0), (0, True))


# --- built-ins: sympy templates and hand-written numpy kernels --------------------------------
#
# Each kernel takes float64 arrays and the parameters as floats. At the kink x = 0 every
# derivative kernel returns the value of the Piecewise derivative there (the branch with
# ``True``), so kernel and expression agree everywhere, 0 included.


def _linear_expr(x: sp.Expr) -> sp.Expr:
    return x


def _linear(z: np.ndarray) -> np.ndarray:
    return z * 1.0


def _linear_derivative(z: np.ndarray) -> np.ndarray:
    return np.ones_like(z)


def _relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0)


def _step(z: np.ndarray) -> np.ndarray:
    return (z > 0).astype(np.float64)


def _leaky_relu_expr(x: sp.Expr, a: sp.Expr) -> sp.Expr:
    return sp.Piecewise((x, x > 0), (a * x, True))


def _leaky_relu(z: np.ndarray, a: float) -> np.ndarray:
    return np.where(z > 0, z, a * z)


def _leaky_relu_derivative(z: np.ndarray, a: float) -> np.ndarray:
    return np.where(z > 0, 1.0, a)


def _abs_expr(x: sp.Expr) -> sp.Expr:
    return sp.Piecewise((x, x > 0), (-x, True))


def _abs_derivative(z: np.ndarray) -> np.ndarray:
    return np.where(z > 0, 1.0, -1.0)


def _shifted_relu_expr(x: sp.Expr, c: sp.Expr) -> sp.Expr:
    return _relu_expr(x) - c


def _shifted_relu(z: np.ndarray, c: float) -> np.ndarray:
    out = np.maximum(z, 0.0)
    out -= c
    return out


def _shifted_relu_derivative(z: np.ndarray, c: float) -> np.ndarray:
    return _step(z)


def _tanh_derivative(z: np.ndarray) -> np.ndarray:
    return 1.0 / np.cosh(z) ** 2


def _erf(z: np.ndarray) -> np.ndarray:
    return _special().erf(z)


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _erf_derivative(z: np.ndarray) -> np.ndarray:
    return _TWO_OVER_SQRT_PI * np.exp(-z * z)


def _sigmoid_expr(x: sp.Expr) -> sp.Expr:
    return 1 / (1 + sp.exp(-x))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return _special().expit(z)


def _sigmoid_derivative(z: np.ndarray) -> np.ndarray:
    expit = _special().expit
    return expit(z) * expit(-z)


def _gelu_expr(x: sp.Expr) -> sp.Expr:
    return x / 2 * (1 + sp.erf(x / sp.sqrt(2)))


def _gelu(z: np.ndarray) -> np.ndarray:
    # x Phi(x) with Phi = ndtr: accurate in the left tail, where 1 + erf(x / sqrt 2) cancels.
    return z * _special().ndtr(z)


def _gelu_derivative(z: np.ndarray) -> np.ndarray:
    return _special().ndtr(z) + z * _INV_SQRT_2PI * np.exp(-0.5 * z * z)


def _silu_expr(x: sp.Expr) -> sp.Expr:
    return x / (1 + sp.exp(-x))


def _silu(z: np.ndarray) -> np.ndarray:
    return z * _special().expit(z)


def _silu_derivative(z: np.ndarray) -> np.ndarray:
    expit = _special().expit
    return expit(z) * (1.0 + z * expit(-z))


def _elu_expr(x: sp.Expr, alpha: sp.Expr) -> sp.Expr:
    return sp.Piecewise((x, x > 0), (alpha * (sp.exp(x) - 1), True))


def _elu(z: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0)))


def _elu_derivative(z: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(z > 0, 1.0, alpha * np.exp(np.minimum(z, 0.0)))


def _selu_expr(x: sp.Expr) -> sp.Expr:
    return SELU_SCALE * _elu_expr(x, SELU_ALPHA)


_SELU_ALPHA_FLOAT = float(SELU_ALPHA)
_SELU_SCALE_FLOAT = float(SELU_SCALE)


def _selu(z: np.ndarray) -> np.ndarray:
    return _SELU_SCALE_FLOAT * _elu(z, _SELU_ALPHA_FLOAT)


def _selu_derivative(z: np.ndarray) -> np.ndarray:
    return _SELU_SCALE_FLOAT * _elu_derivative(z, _SELU_ALPHA_FLOAT)


def _softplus_expr(x: sp.Expr) -> sp.Expr:
    return sp.log(1 + sp.exp(x))


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


@dataclass(frozen=True)
class _Builtin:
    """A built-in activation: its sympy template, its numpy kernels and a one-line summary."""

    name: str
    defaults: tuple[tuple[str, sp.Expr], ...]
    template: Callable[..., sp.Expr]
    numpy: _NumpyFn
    numpy_derivative: _NumpyFn
    summary: str


_BUILTINS: dict[str, _Builtin] = {
    b.name: b
    for b in (
        _Builtin("linear", (), _linear_expr, _linear, _linear_derivative, "identity"),
        _Builtin("relu", (), _relu_expr, _relu, _step, "max(x, 0)"),
        _Builtin(
            "leaky_relu",
            (("a", sp.Rational(1, 100)),),
            _leaky_relu_expr,
            _leaky_relu,
            _leaky_relu_derivative,
            "x for x > 0, a x otherwise (PReLU when a is learnt)",
        ),
        _Builtin("abs", (), _abs_expr, np.abs, _abs_derivative, "|x|"),
        _Builtin(
            "shifted_relu",
            (("c", sp.Rational(1, 2)),),
            _shifted_relu_expr,
            _shifted_relu,
            _shifted_relu_derivative,
            "max(x, 0) - c",
        ),
        _Builtin("tanh", (), sp.tanh, np.tanh, _tanh_derivative, "tanh(x)"),
        _Builtin("erf", (), sp.erf, _erf, _erf_derivative, "erf(x)"),
        _Builtin("sigmoid", (), _sigmoid_expr, _sigmoid, _sigmoid_derivative, "1 / (1 + exp(-x))"),
        _Builtin("gelu", (), _gelu_expr, _gelu, _gelu_derivative, "x Phi(x), the exact erf form"),
        _Builtin("silu", (), _silu_expr, _silu, _silu_derivative, "x sigmoid(x) (swish-1)"),
        _Builtin("selu", (), _selu_expr, _selu, _selu_derivative, "scale * elu(x, alpha) with Klambauer et al.'s constants"),
        _Builtin(
            "elu",
            (("alpha", sp.Integer(1)),),
            _elu_expr,
            _elu,
            _elu_derivative,
            "x for x > 0, alpha (exp(x) - 1) otherwise",
        ),
        _Builtin("softplus", (), _softplus_expr, _softplus, _sigmoid, "log(1 + exp(x))"),
    )
}

#: Names of the built-in activations, in the order they are documented.
BUILTIN_ACTIVATIONS: tuple[str, ...] = tuple(_BUILTINS)

_EXPRESSION = "expression"

#: Where a built-in kernel is checked against its expression: negative, zero and zero-adjacent,
#: moderate, and large |x| (where exp overflows and naive forms cancel).
_CHECK_POINTS: tuple[float, ...] = tuple(
    sign * value
    for value in (1e-300, 1e-8, 1e-3, 0.3, 1.0, 2.5, 7.0, 20.0, 60.0, 700.0)
    for sign in (-1.0, 1.0)
) + (0.0,)
#: A kernel agrees with its expression when |kernel - exact| <= _CHECK_RTOL |exact| + _CHECK_ATOL;
#: the absolute part only forgives results below the float64 normal range (underflow).
_CHECK_RTOL = 1e-9
_CHECK_ATOL = 1e-300
#: mpmath digits for the reference. A built-in's terms are at most ~1 where its value is tiny (as in
#: 1 - tanh(x)^2), so 400 digits leave any value above the float64 normal range exact to far better
#: than _CHECK_RTOL, and any value below it within _CHECK_ATOL.
_CHECK_DIGITS = 400


@dataclass(frozen=True)
class Activation:
    r"""An activation function :math:`\phi` as plain data.

    The expression is the one source of truth: a built-in's name must match its template with its
    parameters, and the numpy functions (:meth:`numpy`, :meth:`numpy_derivative`) agree with the
    expression (see the module docstring).

    Parameters
    ----------
    name
        A built-in name (see :data:`BUILTIN_ACTIVATIONS`) or ``"expression"`` for any other function.
    expr
        The sympy expression of :math:`\phi(x)` in the real symbol :data:`X`.
    params
        ``(name, value)`` pairs; a value is a number or a sympy symbol left free. For a built-in,
        exactly its parameters (see :func:`activation`).
    source
        The text the user gave, for expressions; empty for built-ins.

    Raises
    ------
    ActivationError
        For an unknown name, a built-in name whose template with ``params`` is not ``expr``, or a
        built-in kernel that disagrees with the expression.

    Examples
    --------
    >>> Activation("relu", sp.Piecewise((X, X > 0), (0, True)))   # what activation("relu") builds
    >>> Activation("relu", sp.tanh(X))                             # ActivationError: name and expression disagree
    """

    name: str
    expr: sp.Expr
    params: tuple[tuple[str, sp.Expr], ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or (self.name != _EXPRESSION and self.name not in _BUILTINS):
            known = ", ".join(sorted(_BUILTINS))
            raise ActivationError(
                f"unknown activation name {self.name!r}; accepted: {known}, or {_EXPRESSION!r} for any other function"
            )
        if not isinstance(self.expr, sp.Expr):
            raise ActivationError(f"activation {self.name!r} needs a sympy expression in x, got {self.expr!r}")
        if not isinstance(self.source, str):
            raise ActivationError(f"activation source must be text, got {self.source!r}")
        try:
            pairs = tuple((key, value) for key, value in self.params)
        except (TypeError, ValueError):
            raise ActivationError(f"activation params must be (name, value) pairs, got {self.params!r}") from None
        params = []
        for key, value in pairs:
            if not isinstance(key, str):
                raise ActivationError(f"activation parameter names must be text, got {key!r}")
            params.append((key, as_sympy_number(value, f"parameter {key} of {self.name}", error=ActivationError)))
        object.__setattr__(self, "params", tuple(params))
        if self.name in _BUILTINS:
            _check_builtin(self.name, self.expr, self.params)
            if self.is_numeric:
                _checked_kernels(self.name, self.expr, self.params)

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
        return _kernels(self)[0](np.asarray(z, dtype=np.float64))

    def numpy_derivative(self, z: np.ndarray) -> np.ndarray:
        r"""Vectorised :math:`\phi'(z)` in float64."""
        return _kernels(self)[1](np.asarray(z, dtype=np.float64))

    def __str__(self) -> str:
        if self.name == _EXPRESSION:
            return self.source or str(self.expr)
        if not self.params:
            return self.name
        return f"{self.name}(" + ", ".join(f"{k}={v}" for k, v in self.params) + ")"


@lru_cache(maxsize=1024)
def _derivative(expr: sp.Expr) -> sp.Expr:
    derivative = sp.diff(expr, X)
    if derivative.has(sp.Piecewise):
        derivative = sp.piecewise_fold(derivative)
    return derivative


def _check_builtin(name: str, expr: sp.Expr, params: tuple[tuple[str, sp.Expr], ...]) -> None:
    """Refuse a built-in name whose parameters or expression are not the built-in's."""
    builtin = _BUILTINS[name]
    expected_keys = tuple(key for key, _ in builtin.defaults)
    given_keys = tuple(key for key, _ in params)
    if given_keys != expected_keys:
        accepted = ", ".join(expected_keys) if expected_keys else "none"
        raise ActivationError(
            f"activation {name!r} takes the parameters ({accepted}) in that order, got ({', '.join(given_keys)}); "
            f"build it with activation({name!r}, ...)"
        )
    expected = builtin.template(X, **dict(params))
    if expr != expected:
        raise ActivationError(
            f"activation name {name!r} does not match its expression {expr}: the built-in {name!r} "
            f"with these parameters is {expected}; use activation({name!r}, ...) for the built-in, or "
            f"expression(...) / Activation({_EXPRESSION!r}, expr) for another function"
        )


@lru_cache(maxsize=1024)
def _kernels(act: Activation) -> tuple[_NumpyFn, _NumpyFn]:
    """The numpy function and derivative of ``act``, from module-level caches (never the instance).

    Cached on the activation itself, so a call to :meth:`Activation.numpy` costs one hash of it.
    """
    if not act.is_numeric:
        free = ", ".join(sorted(str(s) for s in act.expr.free_symbols - {X}))
        raise ActivationError(
            f"activation {act} has symbolic parameters ({free}); give them numeric values to sample it"
        )
    if act.name in _BUILTINS:
        return _checked_kernels(act.name, act.expr, act.params)
    return _compiled(act.expr)


@lru_cache(maxsize=1024)
def _checked_kernels(
    name: str, expr: sp.Expr, params: tuple[tuple[str, sp.Expr], ...]
) -> tuple[_NumpyFn, _NumpyFn]:
    """A built-in's kernels with its parameter values bound, once checked against ``expr``.

    Raises :class:`ActivationError` when a kernel differs from the expression (evaluated by mpmath at
    :data:`_CHECK_DIGITS` digits) at a point of :data:`_CHECK_POINTS` by more than the tolerance.
    """
    builtin = _BUILTINS[name]
    values = {key: float(value) for key, value in params}
    pair = (partial(builtin.numpy, **values), partial(builtin.numpy_derivative, **values))
    _check_kernel(name, pair[0], expr, "function")
    _check_kernel(name, pair[1], _derivative(expr), "derivative")
    return pair


def _check_kernel(name: str, kernel: _NumpyFn, expr: sp.Expr, what: str) -> None:
    import mpmath

    points = np.array(_CHECK_POINTS)
    with np.errstate(all="ignore"):
        got = np.asarray(kernel(points), dtype=np.float64)
    exact = sp.lambdify(X, expr, modules="mpmath")
    with mpmath.workdps(_CHECK_DIGITS):
        for point, value in zip(_CHECK_POINTS, got):
            reference = float(exact(mpmath.mpf(point)))
            if not abs(value - reference) <= _CHECK_RTOL * abs(reference) + _CHECK_ATOL:
                raise ActivationError(
                    f"the numpy {what} of activation {name!r} disagrees with its expression {expr} at "
                    f"x = {point!r}: the kernel gives {value!r}, the expression {reference!r}"
                )


#: Built-in expressions with default parameters, so that a user expression equal to one (such as
#: ``expression("relu(x)")``) runs the built-in's checked kernel.
@lru_cache(maxsize=1)
def _default_builtins() -> dict[sp.Expr, str]:
    out = {}
    for name, builtin in _BUILTINS.items():
        defaults = dict(builtin.defaults)
        out.setdefault(builtin.template(X, **defaults), name)
    return out


@lru_cache(maxsize=1024)
def _compiled(expr: sp.Expr) -> tuple[_NumpyFn, _NumpyFn]:
    """numpy functions for a user expression: a built-in's kernel if it is one, else ``lambdify``."""
    name = _default_builtins().get(expr)
    if name is not None:
        return _checked_kernels(name, expr, _BUILTINS[name].defaults)
    return _lambdify(expr), _lambdify(_derivative(expr))


def _lambdify(expr: sp.Expr) -> _NumpyFn:
    special = _special()
    function = sp.lambdify(X, expr, modules=[{"erf": special.erf, "erfc": special.erfc}, "numpy"])
    return partial(_vectorised, function)


def _vectorised(function: _NumpyFn, z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        out = function(z)
    return np.broadcast_to(np.asarray(out, dtype=np.float64), np.shape(z)).copy()


def activation(name: str, **params: object) -> Activation:
    """Build a built-in activation by name, with optional parameter values.

    A parameter given as a sympy symbol (or as ``None``) stays symbolic, named after the parameter.

    Examples
    --------
    >>> activation("leaky_relu", a=0.2)
    >>> activation("shifted_relu", c=None)   # c stays a free symbol
    """
    builtin = _BUILTINS.get(name) if isinstance(name, str) else None
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
