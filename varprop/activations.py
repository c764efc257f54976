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
