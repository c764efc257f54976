"""The expectation engine against independent computations.

References: mpmath quadrature at 30 digits of the activation's own sympy expression (split at the kink
and at multiples of the standard deviation), scipy quadrature of the numpy activations, and exact
algebra. Each comparison is also shown to reject a wrong formula.
"""

import json
import math

import mpmath
import pytest
import sympy as sp

from tests.conftest import close, gaussian_quad
from varprop.activations import BUILTIN_ACTIVATIONS, X, activation, expression
from varprop.derive.gaussian import Expectation, NumericValue, Q, evaluate, gaussian_expectation, moments
from varprop.errors import DerivationError, IntegrabilityError, VarpropError

EXACT = {"linear", "relu", "leaky_relu", "abs", "shifted_relu", "erf", "gelu", "selu", "elu"}
NUMERIC = {"tanh", "sigmoid", "silu", "softplus"}
RECTIFIERS = {"relu", "leaky_relu", "abs", "shifted_relu"}
Q_GRID = [1e-3, 0.1, 1, 7, 20, 100, 250, 1000, 7.0, 20.0, 100.0, 250.0, 1000.0]
# User expressions with closed forms through each rule (trigonometric, tilted, truncated, polynomial).
# (text, kinks): the reference quadrature is split at every kink.
CLOSED_EXPRESSIONS = [("sin(x)", ()), ("cos(2*x + 1)*x", ()), ("sin(x)*cos(x) + x**2*sin(x)**2", ()),
                      ("x*exp(-x**2)", ()), ("max(x, 1) - 0.5", (1,)), ("min(max(x, -1), 1)", (-1, 1)),
                      ("x**3 - x", ()), ("cosh(x/4)", ()), ("abs(x)*exp(x/8)", ())]
RELATIVE = 1e-12  # two evaluations each correct to ~1e-16: far looser than either, far tighter than any bug


def mp_gaussian(expr, q, mean=0, kinks=()):
    """E[expr(z)], z ~ N(mean, q), by mpmath.quad at 45 digits, split at 0, the kinks and +-2, +-8 sd."""
    function = sp.lambdify(X, expr, "mpmath")
    with mpmath.workdps(45):
        q, mean = mpmath.mpf(q), mpmath.mpf(mean)
        sd = mpmath.sqrt(q)

        def integrand(x):
            return function(x) * mpmath.exp(-((x - mean) ** 2) / (2 * q)) / mpmath.sqrt(2 * mpmath.pi * q)

        cuts = sorted({mpmath.mpf(0), *map(mpmath.mpf, kinks), *(mean + k * sd for k in (-8, -2, 2, 8))})
        return mpmath.quad(integrand, [-mpmath.inf, *cuts, mpmath.inf])


def mp_references(act, q, kinks=()):
    mean = mp_gaussian(act.expr, q, kinks=kinks)
    second = mp_gaussian(act.expr**2, q, kinks=kinks)
    with mpmath.workdps(45):
        variance = second - mean**2
    return {"mean": mean, "second_moment": second, "variance": variance,
            "derivative_second_moment": mp_gaussian(act.derivative**2, q, kinks=kinks)}


def agree(value, reference, tol=RELATIVE, scale=0.0):
    """Relative agreement; ``scale`` (the size of the moments involved) sets a 1e-20 floor for exact zeros."""
    return abs(value - reference) <= max(tol * abs(reference), 1e-20 * scale)


def scale_of(references):
    second = abs(references["second_moment"])
    return max(1.0, float(second), float(mpmath.sqrt(second)), float(abs(references["derivative_second_moment"])))


@pytest.mark.parametrize("name", sorted(EXACT))
@pytest.mark.parametrize("q", Q_GRID, ids=repr)
def test_every_builtin_closed_form_matches_mpmath_at_every_q(name, q):
    act = activation(name)
    result = moments(act).as_dict()
    references = mp_references(act, q)
    for key, reference in references.items():
        assert result[key].exact
        value = result[key].evaluate({Q: q})
        assert value.error_estimate == 0
        assert agree(value.value, reference, scale=scale_of(references)), (name, key, q, value.value, reference)


@pytest.mark.parametrize("text, kinks", CLOSED_EXPRESSIONS)
@pytest.mark.parametrize("q", [1e-3, 1, 20.0, 1000])
def test_user_closed_forms_match_mpmath(text, kinks, q):
    act = expression(text)
    result = moments(act).as_dict()
    references = mp_references(act, q, kinks)
    for key, reference in references.items():
        assert result[key].exact, (text, key, result[key].route)
        value = result[key].evaluate({Q: q}).value
        assert agree(value, reference, 1e-11, scale_of(references)), (text, key, q, value, reference)


def test_the_mpmath_comparison_rejects_the_cancelling_form():
    # The erf form elu had, exp(2q) (1 - erf(sqrt(2q)))/2 + 1/2, evaluated in float64 at q = 20.
    q = 20.0
    cancelling = math.exp(2 * q) * (1 - math.erf(math.sqrt(2 * q))) / 2 + 0.5
    reference = mp_gaussian(activation("elu").derivative ** 2, q)
    assert not agree(cancelling, reference, 1e-3)
    assert agree(moments(activation("elu")).derivative_second_moment.evaluate({Q: q}).value, reference)
    # and a right formula with a wrong constant (He's 1/2 dropped) is rejected as well
    assert not agree(float(reference) * 2, reference)


def test_issue_values_elu():
    elu = moments(activation("elu"))
    assert agree(elu.derivative_second_moment.evaluate({Q: 20.0}).value, mp_gaussian(activation("elu").derivative ** 2, 20))
    assert abs(elu.derivative_second_moment.evaluate({Q: 20.0}).value - 0.544) < 1e-3
    assert abs(elu.variance.evaluate({Q: 250}).value - 91.44) < 1e-2
    assert elu.second_moment.evaluate({Q: 100.0}).value < 100


def test_elu_and_gelu_at_the_largest_float_q():
    q = 1e308
    for name in ("elu", "selu", "gelu", "relu"):
        m = moments(activation(name))
        mean = m.mean.evaluate({Q: q}).value
        second = m.second_moment.evaluate({Q: q}).value
        scale = float(sp.Float("1.0507009873554804934193349852946", 30)) if name == "selu" else 1.0
        # For q -> infinity the negative part is negligible: E[phi] ~ s sqrt(q/2pi), E[phi^2] ~ s^2 q/2.
        assert mean == pytest.approx(scale * math.sqrt(q / (2 * math.pi)), rel=1e-14), name
        assert second == pytest.approx(scale**2 * q / 2, rel=1e-14), name


@pytest.mark.parametrize("name", sorted(NUMERIC))
@pytest.mark.parametrize("q", [1e-3, 1.0, 80.0, 400.0, 1000.0])
def test_quadrature_builtins_at_large_q(name, q):
    act = activation(name)
    result = moments(act).as_dict()
    for key, reference in mp_references(act, q).items():
        value = result[key].evaluate({Q: q})
        assert close(value.value, float(reference)), (name, key, q, value, reference)


@pytest.mark.parametrize("name", BUILTIN_ACTIVATIONS)
@pytest.mark.parametrize("q", [0.3, 2.7])
def test_moments_match_scipy_quadrature_of_numpy(name, q):
    act = activation(name)
    result = moments(act).as_dict()
    mean = gaussian_quad(act.numpy, q)
    second = gaussian_quad(lambda z: act.numpy(z) ** 2, q)
    references = {"mean": mean, "second_moment": second, "variance": second - mean**2,
                  "derivative_second_moment": gaussian_quad(lambda z: act.numpy_derivative(z) ** 2, q)}
    for key, expected in references.items():
        value = result[key].evaluate({Q: q})
        assert close(value.value, expected), (name, key, q, value, expected)
        assert value.error_estimate < 1e-9


@pytest.mark.parametrize("name", BUILTIN_ACTIVATIONS)
def test_exactness_and_route(name):
    result = moments(activation(name))
    if name in EXACT:
        assert result.exact and result.variance.exact
        assert all(e.route != "quadrature" for e in result.as_dict().values())
    else:
        assert name in NUMERIC
        assert not result.second_moment.exact and result.second_moment.route == "quadrature"
        value = result.second_moment.evaluate({Q: 1})
        assert value.error_estimate > 0 and value.quadrature
    if name in RECTIFIERS:
        assert {result.mean.route, result.second_moment.route} <= {"truncated-gaussian", "polynomial"}


def test_closed_forms():
    q = Q
    relu = moments(activation("relu"))
    assert sp.simplify(relu.mean.expr - sp.sqrt(q / (2 * sp.pi))) == 0
    assert relu.second_moment.expr == q / 2
    assert relu.derivative_second_moment.expr == sp.Rational(1, 2)
    a = sp.Symbol("a", real=True)
    leaky = moments(activation("leaky_relu", a=a))
    assert sp.simplify(leaky.second_moment.expr - (1 + a**2) * q / 2) == 0
    assert sp.simplify(leaky.derivative_second_moment.expr - (1 + a**2) / 2) == 0
    erf = moments(activation("erf"))
    # Williams (1997): E[erf(z)^2] = (2/pi) arcsin(2q / (1 + 2q)).
    assert sp.simplify(erf.second_moment.expr - 2 / sp.pi * sp.asin(2 * q / (1 + 2 * q))) == 0
    assert moments(activation("sigmoid")).mean.expr == sp.Rational(1, 2)
    assert moments(activation("tanh")).mean.expr == 0
    c = sp.Symbol("c", real=True)
    shifted = moments(activation("shifted_relu", c=c))
    expected = q / 2 - 2 * c * sp.sqrt(q / (2 * sp.pi)) + c**2
    assert sp.simplify(shifted.second_moment.expr - expected) == 0


def test_trigonometric_rule():
    sine = moments(expression("sin(x)"))
    assert sine.second_moment.route == "trigonometric"
    assert sp.simplify(sine.second_moment.expr - (1 - sp.exp(-2 * Q)) / 2) == 0
    assert sp.simplify(sine.derivative_second_moment.expr - (1 + sp.exp(-2 * Q)) / 2) == 0
    assert sine.mean.expr == 0
    # Non-centred: E[cos(z)] = exp(-q/2) cos(mu), the characteristic function; a wrong sign in the
    # exponent would give exp(+q/2) cos(mu).
    mu, s = sp.Rational(7, 10), sp.Rational(13, 10)
    value = gaussian_expectation(sp.cos(X), s, mu)
    assert value.route == "trigonometric"
    assert sp.simplify(value.expr - sp.exp(-s / 2) * sp.cos(mu)) == 0
    assert sp.simplify(value.expr - sp.exp(s / 2) * sp.cos(mu)) != 0
    assert agree(float(value.expr), mp_gaussian(sp.cos(X), s, mu))


def test_gelu_second_moment_closed_form_in_arcsin_and_square_roots():
    second = moments(activation("gelu")).second_moment.expr
    assert second.has(sp.asin) and not second.has(sp.Integral, sp.erf)
    q = Q
    reference = q / 4 + q / (2 * sp.pi) * (sp.asin(q / (1 + q)) + 2 * q / ((1 + q) * sp.sqrt(1 + 2 * q)))
    for value in (0.2, 1, 5):
        assert close(float(second.subs(q, value)), float(reference.subs(q, value)), 1e-13)


def test_non_centred_and_user_expressions():
    relu = activation("relu")
    for mu, q in ((0.7, 1.3), (-1.1, 0.4)):
        value = gaussian_expectation(relu.expr**2, sp.Float(q), sp.Float(mu))
        assert value.exact
        assert close(float(value.expr), gaussian_quad(lambda z: relu.numpy(z) ** 2, q, mu))
    act = expression("max(x, 0) - 0.5")
    assert moments(act).exact
    assert close(moments(act).second_moment.evaluate({Q: 2}).value, gaussian_quad(lambda z: act.numpy(z) ** 2, 2))
    poly = expression("x**3 - x")
    assert sp.expand(moments(poly).second_moment.expr - (15 * Q**3 - 6 * Q**2 + Q)) == 0


# --- existence ---------------------------------------------------------------------------------


def abs_power(p, q):
    """E|z|^p = (2q)^{p/2} Gamma((p+1)/2) / sqrt(pi), z ~ N(0, q) (exact)."""
    return float((2 * mpmath.mpf(q)) ** (p / 2) * mpmath.gamma((p + 1) / 2) / mpmath.sqrt(mpmath.pi))


def log_abs(q):
    """E[log|z|] and E[log^2|z|]: with u = log(2q) + psi(1/2), they are u/2 and (u^2 + psi'(1/2))/4."""
    u = mpmath.log(2 * mpmath.mpf(q)) + mpmath.digamma(0.5)
    return float(u / 2), float((u**2 + mpmath.psi(1, 0.5)) / 4)


@pytest.mark.parametrize(
    "text, exact",
    [("abs(x)**0.5", lambda q: (abs_power(0.5, q), abs_power(1, q))),
     ("log(abs(x))", log_abs),
     ("abs(x)**(-0.4)", lambda q: (abs_power(-0.4, q), abs_power(-0.8, q)))],
)
def test_moments_that_exist_are_given_and_the_others_say_why(text, exact):
    act = expression(text)
    result = moments(act)  # does not raise although E[phi'^2] diverges
    assert not result.derivative_second_moment.exists
    assert result.derivative_second_moment.route == "does-not-exist"
    assert "not integrable" in result.derivative_second_moment.reason
    assert set(result.missing) == {"derivative_second_moment"}
    with pytest.raises(IntegrabilityError, match=r"E\[phi'\(z\)\^2\] does not exist"):
        result.derivative_second_moment.evaluate({Q: 1})
    with pytest.raises(IntegrabilityError, match="does not exist"):
        _ = result.derivative_second_moment.expr
    for q in (0.1, 2.0, 300.0):
        mean, second = exact(q)
        assert close(result.mean.evaluate({Q: q}).value, mean), (text, q)
        assert close(result.second_moment.evaluate({Q: q}).value, second), (text, q)
        assert not close(result.second_moment.evaluate({Q: q}).value, second * 1.000001)


def test_borderline_exponents_decide_existence():
    # |x|^-0.5 is integrable, its square |x|^-1 is not; |x|^-0.4 squared is |x|^-0.8, integrable.
    half = moments(expression("abs(x)**(-0.5)"))
    assert half.mean.exists and not half.second_moment.exists and not half.variance.exists
    assert moments(expression("abs(x)**(-0.4)")).second_moment.exists


@pytest.mark.parametrize("text", ["1/x", "1/(x - 3)", "1/sin(x)", "x/(exp(x) - 1) + 1/x", "exp(1/x)"])
def test_poles_are_refused_before_any_route(text):
    act = expression(text)
    result = moments(act)
    assert not result.mean.exists and not result.second_moment.exists
    with pytest.raises(IntegrabilityError, match="does not exist"):
        gaussian_expectation(act.expr)


def test_the_symmetry_route_no_longer_integrates_one_over_x():
    # 1/x is odd, so the symmetry lemma would say E = 0; the integral diverges.
    assert moments(expression("1/x")).mean.route == "does-not-exist"
    assert moments(expression("x/(1 + x**2)")).mean.expr == 0  # odd and integrable: still 0


def test_not_square_integrable_growth():
    for text in ("exp(x**2)", "cosh(x**2)", "exp(x**3)", "exp(exp(x))", "exp(x**2*sigmoid(x))"):
        result = moments(expression(text))
        assert not result.second_moment.exists, text
        with pytest.raises(IntegrabilityError, match="grows like"):
            result.second_moment.evaluate({Q: 1})
    # bounded although an exp(x^2) appears: the denominator wins
    assert moments(expression("1/(1 + exp(x**2))")).derivative_second_moment.exists
    assert moments(expression("tanh(exp(x**2))")).second_moment.exists


def test_evaluate_needs_values_and_reports_overflow():
    with pytest.raises(DerivationError, match="give values for q"):
        evaluate(moments(activation("relu")).mean.expr)
    assert evaluate(sp.Integer(3)).value == 3.0
    with pytest.raises(DerivationError, match="outside the float64 range"):
        moments(expression("exp(x)")).second_moment.evaluate({Q: 1e308})


def test_error_estimate_and_its_deprecated_alias():
    value = moments(activation("tanh")).second_moment.evaluate({Q: 1})
    assert isinstance(value, NumericValue)
    assert value.error_bound == value.error_estimate > 0


def test_moments_refuses_text():
    with pytest.raises(DerivationError, match=r"pass varprop.activation\('relu'\)"):
        moments("relu")
    with pytest.raises(DerivationError, match="expects an Activation"):
        moments(3)


def test_expectation_objects():
    missing = Expectation.missing("diverges", "E[phi(z)]")
    assert not missing.exists and not missing.exact and missing == Expectation.missing("diverges", "E[phi(z)]")
    assert "does not exist" in repr(missing)


def test_rectifier_moments_are_fast_rules_not_integrate(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("sympy.integrate called")

    monkeypatch.setattr(sp, "integrate", forbidden)
    monkeypatch.setattr(sp.Integral, "doit", forbidden)
    from varprop.derive.gaussian import engine

    engine._moments.cache_clear()
    engine._expectation.cache_clear()
    for name in sorted(RECTIFIERS | {"elu", "selu", "erf", "gelu"}):
        assert moments(activation(name)).exact
    assert math.isfinite(moments(activation("elu")).second_moment.evaluate({Q: 40}).value)


def test_text_is_never_sympified():
    for call in (lambda: gaussian_expectation("exp(x)"), lambda: evaluate("1 + 1"),
                 lambda: gaussian_expectation(X, variance="q")):
        with pytest.raises(DerivationError, match="parse text with varprop.activations.parse_expression"):
            call()


# --- the command line ------------------------------------------------------------------------------


def run_cli(capsys, *argv):
    from varprop.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_does_not_exist_and_json_null(capsys):
    code, out, err = run_cli(capsys, "moments", "abs(x)**0.5")
    assert code == 0 and err == ""
    assert "E[phi'(z)^2]  does not exist" in out and "error estimate" in out and "error bound" not in out
    code, out, _ = run_cli(capsys, "moments", "abs(x)**0.5", "--json")
    report = json.loads(out)
    assert report["derivative_second_moment"] is None and "derivative_second_moment" in report["does_not_exist"]
    assert report["error_bound"] == report["error_estimate"] > 0
    assert close(report["mean"], abs_power(0.5, 1))


@pytest.mark.parametrize(
    "argv",
    [
        ["moments", "(((x**16)**16)**16)"],
        ["moments", "((((x**16)**16)**16)**16)"],
        ["moments", "x*((((10**16)**16)**16)**16)"],
        ["moments", "max(log(-1), x)"],
        ["moments", "min(log(x), 1/x)"],
        ["moments", "x*exp(exp(exp(exp(10))))"],
        ["moments", "exp(x)", "--q", "1e308"],
        ["moments", "x*" + "9" * 400],
        ["derive", "forward", "--activation", "1/x"],
    ],
)
def test_cli_bad_input_is_one_line(capsys, argv):
    import time

    start = time.perf_counter()
    code, out, err = run_cli(capsys, *argv)
    assert time.perf_counter() - start < 5
    assert code == 2, (argv, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("varprop: "), err
    assert "9" * 100 not in err


def test_cli_large_q_gives_numbers(capsys):
    code, out, err = run_cli(capsys, "moments", "elu", "--q", "1e308", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["second_moment"] == pytest.approx(0.5e308, rel=1e-14)
    for name, q in (("sigmoid", "80"), ("softplus", "80"), ("silu", "400")):
        code, out, err = run_cli(capsys, "moments", name, "--q", q)
        assert code == 0, (name, err)


def test_vararg_error_type_is_the_family():
    assert issubclass(IntegrabilityError, VarpropError)


def test_symbolic_parameters_are_checked_when_they_get_values():
    a, c = sp.Symbol("a", real=True), sp.Symbol("c", real=True)
    power = moments(expression("abs(x)**a", a=None))
    assert close(power.second_moment.evaluate({Q: 1, a: 0.3}).value, abs_power(0.6, 1))
    with pytest.raises(IntegrabilityError, match="p = -1.2"):
        power.second_moment.evaluate({Q: 1, a: -0.6})
    with pytest.raises(IntegrabilityError, match="singular point c = 0.5"):
        moments(expression("1/(x - c)", c=None)).mean.evaluate({Q: 1, c: 0.5})
