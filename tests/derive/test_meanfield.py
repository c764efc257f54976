"""Mean-field maps against independent computations.

References: the published relu c-map (Cho & Saul 2009; Schoenholz et al. 2017), exact algebra, scipy
QUADPACK of the activations' numpy functions with scipy's brentq (independent of the Gauss-Legendre
route of the module), mpmath on erf's closed forms (Williams 1997), and the exact relu c-map iterated
far out in depth. Each comparison is shown to reject a wrong sibling.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import sympy as sp

from varprop.activations import activation
from varprop.derive.derivation import Expect, Phi
from varprop.derive.meanfield import (
    C,
    c_map,
    edge_of_chaos,
    iterate_c_map,
    mean_field,
    q_map,
    relu_power_law,
)
from varprop.derive.propagate import LAYER
from varprop.errors import VarpropError

pytestmark = pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
_SQ = 1.0 / math.sqrt(2.0 * math.pi)
_c = sp.IndexedBase("c")


def gauss(function, q: float) -> float:
    """E[f(sqrt(q) z)] by QUADPACK, split at 0."""
    def integrand(z):
        return function(math.sqrt(q) * z) * math.exp(-z * z / 2) * _SQ

    return sum(scipy.integrate.quad(integrand, a, b, epsabs=1e-14, epsrel=1e-13, limit=200)[0] for a, b in ((-12, 0), (0, 12)))


def cross(function, q: float, c: float) -> float:
    """E[f(u) f(v)], variances q and correlation c, by nested QUADPACK."""
    s = math.sqrt(1 - c * c)

    def inner(z1):
        return scipy.integrate.quad(lambda z2: function(math.sqrt(q) * (c * z1 + s * z2)) * math.exp(-z2 * z2 / 2) * _SQ,
                                    -12, 12, epsabs=1e-14, epsrel=1e-13, limit=200)[0]

    return scipy.integrate.quad(lambda z1: function(math.sqrt(q) * z1) * inner(z1) * math.exp(-z1 * z1 / 2) * _SQ,
                                -12, 12, epsabs=1e-14, epsrel=1e-13, limit=200)[0]


def tanh_prime(x: float) -> float:
    return 1.0 / math.cosh(x) ** 2


# --- relu: He's condition and the published c-map ---------------------------------------------


def test_relu_c_map_under_he_is_the_published_form():
    result = mean_field("relu", 2, 0)
    assert result.phase == "critical" and result.scale_free
    c_map_derivation = result.derivations[-1]
    c = _c[LAYER - 1]
    published = (sp.sqrt(1 - c**2) + (sp.pi - sp.acos(c)) * c) / sp.pi
    assert sp.simplify(c_map_derivation.result - published) == 0
    wrong = (sp.sqrt(1 - c**2) / 2 + (sp.pi - sp.acos(c)) * c) / sp.pi  # 1/2 in front of the sine term
    assert sp.simplify(c_map_derivation.result - wrong) != 0
    # two orthogonal inputs come out of one relu layer with correlation 1/pi
    assert sp.simplify(c_map_derivation.result.subs(c, 0) - 1 / sp.pi) == 0


def test_he_condition_is_exactly_chi_1_equal_to_one():
    chi = mean_field("relu", 2, 0).derivations[1]
    assert chi.result == 1
    a = sp.Rational(1, 5)
    leaky = mean_field(activation("leaky_relu", a=0.2), float(2 / (1 + a**2)), 0)
    assert sp.simplify(leaky.derivations[1].result - 1) == 0 and leaky.phase == "critical"
    assert mean_field("relu", 1.9, 0).phase == "ordered" and mean_field("relu", 2.1, 0).phase == "chaotic"


def test_every_derivation_step_checks():
    for args in [("relu", 2, 0), ("relu", 1.5, 0.1), ("tanh", 1.5, 0.05), ("erf", 1.5, 0.05), ("shifted_relu", 1.5, 0.1)]:
        for derivation in mean_field(*args).derivations:
            reports = derivation.verify()
            assert all(r.ok is not False for r in reports), (args, derivation.title, reports)
            assert any(r.ok for r in reports)


def test_relu_with_bias_fixed_point_is_exact():
    result = mean_field("relu", 1.5, 0.1)
    fixed = result.derivations[1]
    assert fixed.result == sp.Rational(2, 5)
    # independent: iterate the q-map with QUADPACK moments until it stops moving
    q = 1.0
    for _ in range(200):
        q = 1.5 * gauss(lambda x: max(x, 0.0) ** 2, q) + 0.1
    assert abs(q - 0.4) < 1e-12
    assert abs(result.xi_q + 1 / math.log(0.75)) < 1e-12  # the q-map's slope is sigma_w^2 / 2


# --- tanh and erf against QUADPACK and closed forms ------------------------------------------


def test_tanh_fixed_point_chi_1_and_correlation_fixed_point():
    sw2, sb2 = 4.0, 0.05
    result = mean_field("tanh", sw2, sb2)
    q_star = scipy.optimize.brentq(lambda q: sw2 * gauss(lambda x: math.tanh(x) ** 2, q) + sb2 - q, 1e-3, 10, xtol=1e-15)
    assert abs(result.q_star.value - q_star) <= 1e-11
    chi_1 = sw2 * gauss(lambda x: tanh_prime(x) ** 2, q_star)
    assert abs(result.chi_1.value - chi_1) <= 1e-11 and result.phase == "chaotic"
    (one, other) = result.correlation_fixed_points
    assert one.value == 1.0 and not one.stable
    # c* < 1 maps to itself under the c-map computed by nested QUADPACK, and its slope is chi_c
    image = (sw2 * cross(math.tanh, q_star, other.value) + sb2) / q_star
    assert abs(image - other.value) <= 1e-9
    chi_c = sw2 * cross(tanh_prime, q_star, other.value)
    assert abs(other.slope - chi_c) <= 1e-9 and other.stable
    assert abs(result.xi_c + 1 / math.log(chi_c)) <= 1e-6


def _erf_moments(q):
    second = 2 / mpmath.pi * mpmath.asin(2 * q / (1 + 2 * q))  # Williams 1997 at c = 1
    derivative = 4 / mpmath.pi / mpmath.sqrt(1 + 4 * q)
    return second, derivative


def test_erf_edge_of_chaos_matches_the_closed_forms():
    targets = [0.0, 0.05, 0.3, 1.0]
    line = edge_of_chaos("erf", targets)
    with mpmath.workdps(40):
        for target, point in zip(targets, line):
            if target == 0:
                assert abs(point.weight_variance - math.pi / 4) < 1e-14
                continue
            q = mpmath.findroot(lambda q, target=target: q - _erf_moments(q)[0] / _erf_moments(q)[1] - target, 0.5)
            weight_variance = 1 / _erf_moments(q)[1]
            assert abs(point.weight_variance - float(weight_variance)) <= 1e-11, target
            assert abs(point.q_star - float(q)) <= 1e-10
            # and a wrong sibling (Williams' arcsin without its factor 2 in the numerator) gives another curve
            wrong = mpmath.findroot(lambda q, target=target: q - (2 / mpmath.pi * mpmath.asin(q / (1 + 2 * q))) / _erf_moments(q)[1] - target, 0.5)
            assert abs(point.weight_variance - float(1 / _erf_moments(wrong)[1])) > 1e-3
    for point in line:
        assert mean_field("erf", point.weight_variance, point.bias_variance).phase == "critical"


def test_tanh_edge_of_chaos_against_quadpack():
    for point in edge_of_chaos("tanh", [0.05, 0.5]):
        q = point.q_star
        assert abs(point.weight_variance * gauss(lambda x: tanh_prime(x) ** 2, q) - 1) < 1e-11
        assert abs(point.weight_variance * gauss(lambda x: math.tanh(x) ** 2, q) + point.bias_variance - q) < 1e-11


def test_ordered_depth_scale_is_the_decay_rate_of_the_c_map():
    """In the ordered phase 1 - c_l decays like exp(-l / xi_c): measured on erf's closed-form c-map in mpmath."""
    sw2, sb2 = 1.2, 0.2
    result = mean_field("erf", sw2, sb2)
    assert result.phase == "ordered"
    with mpmath.workdps(60):
        q = mpmath.findroot(lambda q: sw2 * _erf_moments(q)[0] + sb2 - q, 0.5)  # q* of the closed-form q-map
        assert abs(result.q_star.value - float(q)) <= 1e-14

        def cmap(c):
            return (sw2 * 2 / mpmath.pi * mpmath.asin(2 * c * q / (1 + 2 * q)) + sb2) / q
        c, gaps = mpmath.mpf(0), []
        for _ in range(200):  # 1 - c reaches ~1e-20: the O(1 - c) corrections to the rate are far below 1e-6
            c = cmap(c)
            gaps.append(1 - c)
        rate = float(mpmath.log(gaps[-2] / gaps[-1]))
    assert abs(1 / rate - result.xi_c) <= 1e-6 * result.xi_c
    assert abs(1 / rate - 2 * result.xi_c) > 0.1  # a wrong sibling: xi_c defined with chi_c^2


# --- the relu power law at criticality ---------------------------------------------------------


def _relu_gap_map():
    """epsilon -> 1 - c_{l+1} for the exact relu c-map: the closed form, and below 1e-4 (where the closed
    form loses digits to cancellation) its series in t = sqrt(epsilon) from sympy to t^14, whose remainder
    is below 1e-16 of the decrement."""
    t = sp.Symbol("t", positive=True)
    c = 1 - t**2
    gap = 1 - (sp.sqrt(1 - c**2) + (sp.pi - sp.acos(c)) * c) / sp.pi
    coefficients = [float(x) for x in sp.Poly(sp.series(gap, t, 0, 15).removeO(), t).all_coeffs()]

    def step(eps: float) -> float:
        if eps < 1e-4:
            r, total = math.sqrt(eps), 0.0
            for coefficient in coefficients:  # Horner
                total = total * r + coefficient
            return total
        c = 1 - eps
        return 1 - (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi

    return step


def test_relu_power_law_coefficient_far_out_in_depth():
    derivation = relu_power_law()
    k = derivation.result
    assert k == 9 * sp.pi**2 / 2
    assert all(r.ok is not False for r in derivation.verify())
    a = float(derivation.extras["a"])
    step = _relu_gap_map()
    eps, depth, w = 1.0, 50_000, {}
    for l in range(1, 2 * depth + 1):
        eps = step(eps)
        if l in (depth, 2 * depth):
            w[l] = eps**-0.5
    # w_l = (a/2) l + (3a/4) log l + O(1): over [L, 2L] it grows by (a/2) L + (3a/4) log 2 + O(log L / L)
    growth = w[2 * depth] - w[depth]
    predicted = a / 2 * depth + 3 * a / 4 * math.log(2)
    assert abs(growth - predicted) < 1e-3
    assert abs(growth - a / 2 * depth) > 0.1  # without the derived logarithm the growth is off
    assert abs(eps * (2 * depth) ** 2 / float(k) - 1) < 5 * 3 * math.log(2 * depth) / (2 * depth)  # k/l^2 (1 - 3 log l / l)
    wrong_k = 9 * math.pi**2 / 4
    assert abs(eps * (2 * depth) ** 2 / wrong_k - 1) > 0.5


def test_iterate_c_map_matches_the_closed_form():
    result = mean_field("relu", 2, 0)
    values = iterate_c_map(result, 0.0, 3)
    expected = [0.0]
    for _ in range(3):
        c = expected[-1]
        expected.append((math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi)
    assert np.allclose(values, expected, rtol=0, atol=1e-15)


# --- derivations with symbols, and errors ---------------------------------------------------------


def test_symbolic_q_map_and_c_map():
    derivation = q_map("erf")
    q = sp.IndexedBase("q")[LAYER - 1]
    sw, sb = sp.Symbol("sigma_w", positive=True), sp.Symbol("sigma_b", nonnegative=True)
    assert sp.simplify(derivation.result - (sw**2 * 2 / sp.pi * sp.asin(2 * q / (2 * q + 1)) + sb**2)) == 0
    assert derivation.steps[0].lhs.has(sp.IndexedBase("q")) and derivation.steps[0].rhs.has(Expect(Phi(sp.IndexedBase("h")[LAYER - 1]) ** 2))
    cm = c_map("relu", 2, 0, 1)
    assert cm.result.has(_c[LAYER - 1]) and not cm.result.has(C)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mean_field("tanh", -1, 0), "weight variance must be positive, got -1"),
        (lambda: mean_field("tanh", 1, -0.5), r"bias variance must be non-negative, got -0\.5"),
        (lambda: mean_field("tanh", sp.Symbol("s"), 0), "must be a number"),
        (lambda: edge_of_chaos("relu", [0.1]), "no edge of chaos at sigma_b\\^2 = 0.1"),
        (lambda: iterate_c_map(mean_field("relu", 2, 0), 1.5, 3), r"initial correlation must be in \[-1, 1\], got 1\.5"),
    ],
)
def test_bad_input_is_named(call, message):
    with pytest.raises(VarpropError, match=message):
        call()


# --- figures draw the numbers ---------------------------------------------------------------------


def test_c_map_figure_draws_the_map_and_its_fixed_points():
    from varprop.plot import c_map_data, c_map_figure

    chaotic = mean_field("tanh", 4.0, 0.05)
    data = c_map_data(chaotic, points=21, label="tanh chaotic")
    figure = c_map_figure([data, c_map_data(mean_field("relu", 2, 0), points=21, label="relu He")])
    lines = {line.get_gid(): line for line in figure.axes[0].get_lines()}
    curve = lines["c-map:tanh chaotic"]
    # the plotted curve is the c-map, spot-checked against nested QUADPACK at three correlations
    for index in (0, 7, 15):
        c = curve.get_xdata()[index]
        expected = (4.0 * cross(math.tanh, chaotic.q_star.value, c) + 0.05) / chaotic.q_star.value if abs(c) < 1 else None
        if expected is not None:
            assert abs(curve.get_ydata()[index] - expected) < 1e-9
    stable = next(p for p in chaotic.correlation_fixed_points if p.stable)
    marker = lines[f"fixed:tanh chaotic:{stable.value:.12g}"]
    assert marker.get_markerfacecolor() != "white" and lines["identity"].get_xdata()[0] == -1
    assert lines["fixed:tanh chaotic:1"].get_markerfacecolor() == "white"  # c* = 1 repels in chaos
    assert np.allclose(lines["c-map:relu He"].get_ydata()[10], 1 / math.pi, atol=1e-15)  # c = 0 -> 1/pi


def test_phase_figure_draws_the_edge_of_chaos():
    from varprop.plot import phase_data, phase_figure

    data = phase_data("tanh", bias_variances=[0.02, 0.2], weight_variances=[1.0, 3.0], edge_points=5)
    figure = phase_figure(data)
    ax = figure.axes[0]
    edge = next(line for line in ax.get_lines() if line.get_gid() == "edge-of-chaos")
    line = edge_of_chaos("tanh", edge.get_xdata())
    assert np.allclose(edge.get_ydata(), [p.weight_variance for p in line], rtol=0, atol=0)
    scales = np.array(data.depth_scales)
    # rows are weight variances: sigma_w^2 = 1 is ordered (xi_c = -1/log chi_1), 3 is chaotic at both biases
    for j, sb2 in enumerate(data.bias_variances):
        ordered = mean_field("tanh", 1.0, sb2)
        assert ordered.phase == "ordered" and abs(scales[0, j] - ordered.xi_c) <= 1e-9 * ordered.xi_c
        assert mean_field("tanh", 3.0, sb2).phase == "chaotic"
