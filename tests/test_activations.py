import dataclasses

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from varprop import activations
from varprop.activations import BUILTIN_ACTIVATIONS, X, Activation, activation, expression, parse_expression
from varprop.errors import ActivationError, ExpressionError, VarpropError

GRID = np.linspace(-4.0, 4.0, 81) + 1e-3  # avoid the kink at exactly 0


@pytest.mark.parametrize("name", BUILTIN_ACTIVATIONS)
def test_numpy_matches_sympy_expression(name):
    act = activation(name)
    reference = sp.lambdify(X, act.expr, modules=["mpmath"])
    expected = np.array([float(reference(z)) for z in GRID])
    assert np.allclose(act.numpy(GRID), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", BUILTIN_ACTIVATIONS)
def test_numpy_derivative_matches_central_difference(name):
    act = activation(name)
    h = 1e-6
    finite = (act.numpy(GRID + h) - act.numpy(GRID - h)) / (2 * h)
    assert np.allclose(act.numpy_derivative(GRID), finite, rtol=1e-6, atol=1e-6)
    reference = sp.lambdify(X, act.derivative, modules=["mpmath"])
    assert np.allclose(act.numpy_derivative(GRID), [float(reference(z)) for z in GRID], rtol=1e-12, atol=1e-14)


def test_numpy_is_stable_in_the_tails():
    z = np.array([-800.0, 800.0])
    for name in BUILTIN_ACTIVATIONS:
        act = activation(name)
        with np.errstate(over="raise", invalid="raise"):
            try:
                out = act.numpy(z)
            except FloatingPointError:
                pytest.fail(f"{name} overflows at |z| = 800")
        assert np.all(np.isfinite(out)) or name in ("linear", "abs", "relu", "leaky_relu", "shifted_relu")


def test_parameters_default_value_and_symbolic():
    assert activation("leaky_relu").params == (("a", sp.Rational(1, 100)),)
    a = activation("leaky_relu", a=None)
    assert a.params[0][1] == sp.Symbol("a", real=True) and not a.is_numeric
    with pytest.raises(ActivationError, match="symbolic parameters"):
        a.numpy(GRID)
    assert activation("leaky_relu", a=0.2).numpy(np.array([-1.0]))[0] == pytest.approx(-0.2)


def test_unknown_activation_and_parameter_messages():
    with pytest.raises(ActivationError, match=r"unknown activation 'rleu'; known: abs, elu"):
        activation("rleu")
    with pytest.raises(ActivationError, match=r"no parameter 'a'; its parameters: none"):
        activation("relu", a=1)
    with pytest.raises(ActivationError, match="non-negative"):
        activation("elu", alpha=-1)
    with pytest.raises(VarpropError):
        activation("leaky_relu", a="0.2")  # text is never parsed here


def test_user_expression_max_shift():
    act = expression("max(x, 0) - 0.5")
    z = np.array([-1.0, 0.25, 3.0])
    assert np.allclose(act.numpy(z), np.maximum(z, 0) - 0.5)
    assert np.allclose(act.numpy_derivative(z), [0.0, 1.0, 1.0])
    assert expression("x ^ 2").expr == X**2
    assert expression("max(x, c)", c=None).expr.has(sp.Symbol("c", real=True))


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("__import__('os').system('id')", "not accepted"),
        ("x.real", "Attribute"),
        ("(lambda: 1)()", "not accepted"),
        ("'x'", "constant"),
        ("y + 1", "name 'y'"),
        ("exp(x, 2)", "takes 1 argument"),
        ("max(x)", "takes 2 argument"),
        ("exp(x=1)", "keyword"),
        ("x[0]", "Subscript"),
        ("x if x > 0 else 0", "IfExp"),
        ("x > 0", "Compare"),
        ("x ** 100", "exponent"),
        ("9 ** 9 ** 9", "exponent"),
        ("", "empty"),
        ("x +", "malformed"),
        ("(" * 300 + "x" + ")" * 300, "at most"),
        ("sqrt(x)", "not a finite real number"),
        ("1/0", "division by zero"),
        ("2", "does not depend on x"),
    ],
)
def test_rejected_expressions(text, fragment):
    with pytest.raises(ExpressionError, match=fragment):
        expression(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("x()+-*/^.,_ 0123456789eaxpmlogsqrtinhbcd'\"[]:=<>")), max_size=40))
def test_any_text_parses_or_raises_one_error(text):
    try:
        expr = parse_expression(text)
    except ExpressionError:
        return
    assert isinstance(expr, sp.Expr)
    assert expr.free_symbols <= {X}


# --- one source of truth: name, expression and numpy kernels agree ----------------------------


def test_builtin_name_must_match_its_expression():
    relu = activation("relu")
    assert Activation("relu", sp.Piecewise((X, X > 0), (0, True))) == relu  # the template: accepted
    with pytest.raises(ActivationError, match=r"activation name 'relu' does not match its expression tanh\(x\)"):
        Activation("relu", sp.tanh(X))
    leaky = activation("leaky_relu", a=sp.Rational(1, 5))
    assert Activation("leaky_relu", leaky.expr, (("a", sp.Rational(1, 5)),)) == leaky
    with pytest.raises(ActivationError, match="does not match"):  # params and expression disagree
        Activation("leaky_relu", leaky.expr, (("a", sp.Rational(1, 4)),))
    with pytest.raises(ActivationError, match=r"takes the parameters \(a\)"):
        Activation("leaky_relu", leaky.expr)
    with pytest.raises(ActivationError, match="unknown activation name 'my_relu'; accepted: abs, elu"):
        Activation("my_relu", relu.expr)
    with pytest.raises(ActivationError, match="sympy expression"):
        Activation("expression", "tanh(x)")
    assert Activation("expression", sp.tanh(X)).numpy(np.array([0.5]))[0] == pytest.approx(np.tanh(0.5), rel=1e-15)


@pytest.mark.parametrize("name", BUILTIN_ACTIVATIONS)
def test_derivative_kernel_matches_the_piecewise_at_zero(name):
    act = activation(name)
    exact = float(act.derivative.subs(X, 0))
    assert act.numpy_derivative(np.zeros(1))[0] == pytest.approx(exact, rel=1e-15, abs=0)
    assert act.numpy(np.zeros(1))[0] == pytest.approx(float(act.expr.subs(X, 0)), rel=1e-15, abs=0)


def _with_kernels(monkeypatch, name, **kernels):
    """Replace a built-in's kernels for one test, with the kernel-check cache emptied around it."""
    monkeypatch.setitem(activations._BUILTINS, name, dataclasses.replace(activations._BUILTINS[name], **kernels))
    activations._checked_kernels.cache_clear()


@pytest.fixture
def fresh_kernel_cache():
    activations._checked_kernels.cache_clear()
    activations._compiled.cache_clear()
    yield
    activations._checked_kernels.cache_clear()
    activations._compiled.cache_clear()


def test_a_wrong_kernel_cannot_be_built(fresh_kernel_cache, monkeypatch):
    _with_kernels(monkeypatch, "tanh", numpy=np.sin)
    with pytest.raises(ActivationError, match=r"numpy function of activation 'tanh' disagrees with its expression tanh\(x\)"):
        activation("tanh")
    with pytest.raises(ActivationError, match="disagrees"):  # a user expression that is the built-in uses its kernel
        expression("tanh(x)").numpy(GRID)


def test_a_kernel_wrong_only_in_the_tail_is_caught(fresh_kernel_cache, monkeypatch):
    # 1 - tanh(x)^2 is exact near 0 and 0 instead of 4 exp(-2|x|) once tanh(x) rounds to 1.
    naive = lambda z: 1.0 - np.tanh(z) ** 2  # noqa: E731
    assert np.allclose(naive(GRID), activation("tanh").numpy_derivative(GRID), rtol=1e-12)
    _with_kernels(monkeypatch, "tanh", numpy_derivative=naive)
    with pytest.raises(ActivationError, match=r"numpy derivative of activation 'tanh' disagrees .* at x = -20\.0"):
        activation("tanh")


def test_user_expressions_are_compiled_from_their_expression():
    act = expression("tanh(x) + 0.1 * max(x, 0)")
    z = np.array([-800.0, -1.0, 0.0, 0.5, 800.0])
    assert np.allclose(act.numpy(z), np.tanh(z) + 0.1 * np.maximum(z, 0), rtol=1e-15)
    with np.errstate(over="ignore"):
        assert np.allclose(act.numpy_derivative(z), 1 / np.cosh(z) ** 2 + 0.1 * (z > 0), rtol=1e-15)
    # A user expression equal to a built-in runs the built-in's checked kernel (stable in the tails).
    softplus = expression("log(1 + exp(x))")
    assert softplus.expr == activation("softplus").expr
    assert np.isfinite(softplus.numpy(np.array([800.0])))[0]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("(((x**16)**16)**16)", "degree 256"),
        ("((((x**16)**16)**16)**16)", "degree 256"),
        ("x*((((10**16)**16)**16)**16)", "larger than 1e\\+308"),
        ("x*" + "9" * 400, "400 digits"),
        ("max(log(-1), x)", "log of the non-positive number -1"),
        ("x*exp(exp(exp(exp(10))))", "constant exp\\(exp\\(10\\)\\)"),
        ("exp(exp(exp(x)))", "3 deep"),
        ("abs(x)*relu(x)*max(x, 1)*min(x, 2)*step(x)", "5 calls"),
        ("(-8)**(1/3)*x", "not a real number"),
        ("1e-320*x", "between 1e-308"),
        ("tanh(x)**16*x**16*x", "degree 33"),
    ],
)
def test_sizes_are_bounded_while_converting(text, fragment):
    import time

    start = time.perf_counter()
    with pytest.raises(ExpressionError, match=fragment) as info:
        expression(text)
    assert time.perf_counter() - start < 1.0
    assert "9" * 100 not in str(info.value)  # huge numbers are abbreviated in messages


def test_limits_still_accept_ordinary_expressions():
    assert expression("x**16 * tanh(x)**16").expr == X**16 * sp.tanh(X) ** 16
    assert expression("1e308 * x").expr == sp.Float(1e308) * X
    assert expression("min(max(x, -1), 1)").expr.has(sp.Piecewise)
    assert expression("exp(exp(x))").expr == sp.exp(sp.exp(X))
    # the constant check computes values while converting: 10**16**... is never built by sympy
    assert parse_expression("(10**2)**3") == 10**6


def test_min_of_non_real_is_one_error():
    with pytest.raises(ExpressionError, match="not a finite real number"):
        expression("min(log(x), 1/x)")


def test_exact_rational_powers_are_never_computed():
    # (20**16) ** ((5/2)**16) computed exactly would hang; the check evaluates at float points.
    import time

    start = time.perf_counter()
    with pytest.raises(ExpressionError, match="negative number"):
        expression("(-((20)**16)) ^ (-((x)**16))")
    assert expression("((20)**16) ^ (-((x)**16))").expr.has(X)
    assert time.perf_counter() - start < 1.0


def test_piecewise_exponents_are_refused():
    for text in ("-((min(10**16, 10**16)) ** (min(10**16, x)))", "-((min(10**16, x)) ** (min(10**16, x)))"):
        with pytest.raises(ExpressionError, match="in an exponent"):
            expression(text)
    assert expression("exp(min(x, 1))").expr.has(sp.exp)
