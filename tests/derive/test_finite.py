"""Finite-width laws: each result against an independent computation (exact enumeration over the
binomial or over Rademacher weights, quadrature, Monte Carlo of real networks judged by the checker's
verdict), and each with a wrong sibling that fails."""

import functools
import itertools
import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import sympy as sp
from scipy import integrate, stats

from varprop.derive import finite
from varprop.derive.derivation import Expect, _Builder
from varprop.errors import DerivationError
from varprop.montecarlo.verdict import FAIL, PASS, judge

n, s, t, K = sp.Symbol("n", positive=True, integer=True), sp.Symbol("s", positive=True), sp.Symbol("t"), finite._K


@pytest.mark.parametrize("name", sorted(finite.FINITE_DERIVATIONS))
def test_every_step_is_checked_or_marked(name):
    d = finite.FINITE_DERIVATIONS[name]()
    reports = d.verify()
    assert all(r.ok is not False for r in reports), [r for r in reports if r.ok is False]
    assert any(r.ok for r in reports)
    assert d.text() and d.latex() and d.markdown()


# --- one layer -----------------------------------------------------------------------------------


def _binomial_average(width, f):
    return sum(Fraction(math.comb(width, k), 2**width) * f(k) for k in range(width + 1))


@pytest.mark.parametrize("width", [1, 2, 5, 8])
def test_one_layer_moments_by_enumeration(width):
    d = finite.one_layer()
    mean = _binomial_average(width, lambda k: Fraction(k))               # E[chi2_k] = k
    second = _binomial_average(width, lambda k: Fraction(k * k + 2 * k))  # E[chi2_k^2] = k^2 + 2k
    assert d.extras["mean"].subs({n: width, s: 1}) == sp.Rational(mean.numerator, mean.denominator)
    assert d.result.subs({n: width, s: 1}) == sp.Rational(second.numerator, second.denominator)
    assert d.exactness == "gaussian-exact"


def test_one_layer_second_moment_by_quadrature_at_width_two():
    """E[(relu(y1)^2 + relu(y2)^2)^2], y iid N(0, 1), by 2-d quadrature: n(n+5)/4 = 7/2 at n = 2."""
    def f(a, b):
        return (max(a, 0) ** 2 + max(b, 0) ** 2) ** 2 * stats.norm.pdf(a) * stats.norm.pdf(b)

    quadrants = [integrate.dblquad(f, x0, x1, y0, y1) for x0, x1 in ((-12, 0), (0, 12)) for y0, y1 in ((-12, 0), (0, 12))]
    total = sum(value for value, _ in quadrants)
    assert abs(total - 3.5) < 1e-6 + 10 * sum(error for _, error in quadrants)
    assert abs(total - 3.0) > 0.4   # the wrong sibling n(n+4)/4 = 3


def test_wrong_moment_is_refused():
    b = _Builder("wrong")
    with pytest.raises(DerivationError, match="does not hold"):
        b.add(Expect(K**2), n**2 / 4, finite.Rule.DEFINITION, proof=finite.MomentFromMGF(((1 + sp.exp(t)) / 2) ** n, t, 2))


# --- the product law ---------------------------------------------------------------------------


def _enumerate_second_moment(widths, variances):
    """E[M_L^2] by summing prod_j c_j^2 (k_j^2 + 2 k_j) over every vector of counts, with its probability."""
    total = Fraction(0)
    layers = list(zip(widths[:-1], widths[1:], variances))
    for counts in itertools.product(*(range(b + 1) for _, b, _ in layers)):
        p, value = Fraction(1), Fraction(1)
        for (a, b, v), k in zip(layers, counts):
            p *= Fraction(math.comb(b, k), 2**b)
            value *= (v * a / b) ** 2 * (k * k + 2 * k)
        total += p * value
    return total


@pytest.mark.parametrize("widths", [(3, 2, 5), (2, 2, 2, 2), (4, 1, 3), (5, 8)])
def test_second_moment_by_enumeration(widths):
    he = [Fraction(2, a) for a in widths[:-1]]
    assert finite.mean_square(widths) == _enumerate_second_moment(widths, he)
    odd = [Fraction(1, 3)] * (len(widths) - 1)
    assert finite.mean_square(widths, odd) == _enumerate_second_moment(widths, odd)


def test_second_moment_equal_widths_is_the_issue_product():
    assert finite.mean_square([10] * 11) == sp.Rational(3, 2) ** 10
    assert finite.mean_square([4] * 4) == sp.Rational(9, 4) ** 3
    assert finite.mean_square([4] * 4) != sp.Rational(8, 4) ** 3     # prod(1 + 4/n): wrong


def test_mean_is_one_for_unequal_widths_at_he():
    d = finite.product_law()
    L, nw, sw = finite._L, finite._nw, finite._sw
    mean = d.extras["mean"].subs(L, 3).doit().xreplace({nw[0]: 7, nw[1]: 2, nw[2]: 9, sw[1]: sp.Rational(2, 7),
                                                       sw[2]: 1, sw[3]: sp.Rational(2, 9)})
    assert mean == 1


# --- non-Gaussian weights ------------------------------------------------------------------------


def _rademacher_second_moment(widths, x0):
    """E[M_L^2] with weights +-sqrt(s_j), s_j = 2/n_(j-1), by enumerating every sign pattern."""
    shapes = [(b, a) for a, b in zip(widths[:-1], widths[1:])]
    scale = Fraction(1)
    for a in widths[:-1]:
        scale *= Fraction(2, a)          # ||x_L||^2 = prod s_j * (the same with +-1 weights)
    patterns = [list(itertools.product((-1, 1), repeat=b * a)) for b, a in shapes]
    norm0 = sum(Fraction(v) ** 2 for v in x0)
    total, count = Fraction(0), 0
    for choice in itertools.product(*patterns):
        x = [Fraction(v) for v in x0]
        for (b, a), flat in zip(shapes, choice):
            # with weights +-1 the scale is dropped, and restored at the end (relu is homogeneous)
            x = [max(sum(flat[r * a + c] * x[c] for c in range(a)), Fraction(0)) for r in range(b)]
        m = scale * sum(v * v for v in x) / widths[-1] / (norm0 / widths[0])
        total += m * m
        count += 1
    return total / count


@pytest.mark.parametrize("widths, x0", [((2, 2, 2), (1, 2)), ((2, 3, 2), (3, -1)), ((3, 2), (1, 0, 2))])
def test_fourth_moment_recursion_by_rademacher_enumeration(widths, x0):
    exact = _rademacher_second_moment(widths, x0)
    variances = [Fraction(2, a) for a in widths[:-1]]
    m4 = [v * v for v in variances]   # a +-sqrt(s) weight has E[w^4] = s^2
    assert finite.fourth_moment(widths, x0, m4) == sp.Rational(exact.numerator, exact.denominator)
    assert finite.mean_square(widths) != sp.Rational(exact.numerator, exact.denominator)  # the Gaussian law is wrong here


def test_fourth_moment_reduces_to_gaussian_and_depends_on_input():
    widths = (3, 4, 2)
    gauss = [3 * Fraction(2, a) ** 2 for a in widths[:-1]]
    assert finite.fourth_moment(widths, (1, 5, -2), gauss) == finite.mean_square(widths)
    uniform = [Fraction(9, 5) * Fraction(2, a) ** 2 for a in widths[:-1]]   # E[w^4] = 9 s^2 / 5
    assert finite.fourth_moment(widths, (1, 0, 0), uniform) != finite.fourth_moment(widths, (1, 1, 1), uniform)


def test_kurtosis_free_expansion_is_refused():
    b = _Builder("wrong")
    with pytest.raises(DerivationError):
        b.add(finite.Given(finite._y**4, finite._x), 3 * s**2 * finite._Q**2, finite.Rule.INDEPENDENCE,
              proof=finite.ExpandedMoment(4))


# --- Monte Carlo of real networks ----------------------------------------------------------------


def _networks(widths, count, rng, law="normal"):
    """Forward and backward passes of ``count`` zero-bias relu networks at He's variance, x_0 = (1, ..., 1)."""
    x = np.ones((count, widths[0]))
    xs, masks, ws = [x], [], []
    for a, b in zip(widths[:-1], widths[1:]):
        std = math.sqrt(2 / a)
        w = rng.standard_normal((count, b, a)) * std if law == "normal" else rng.uniform(-1, 1, (count, b, a)) * std * math.sqrt(3)
        y = np.einsum("nij,nj->ni", w, x)
        masks.append(y > 0)
        x = np.where(y > 0, y, 0.0)
        xs.append(x)
        ws.append(w)
    g = rng.standard_normal((count, widths[-1]))
    grads, wgrads = [g], []
    for w, mask, x_in in zip(reversed(ws), reversed(masks), reversed(xs[:-1])):
        delta = np.where(mask, g, 0.0)
        wgrads.append((delta**2).sum(1) * (x_in**2).sum(1))
        g = np.einsum("nij,ni->nj", w, delta)
        grads.append(g)
    m = (xs[-1] ** 2).sum(1) / widths[-1] / ((xs[0] ** 2).sum(1) / widths[0])
    return m, [(q**2).sum(1) for q in reversed(grads)], list(reversed(wgrads))


def _verdict(prediction, values, rtol=0.1):
    return judge(float(prediction), float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size)),
                 values.size, rtol=rtol).outcome


def test_dead_layer_probability_monte_carlo():
    widths = (2, 2, 3, 2)
    m, _, _ = _networks(widths, 100_000, np.random.default_rng(10))
    dead = (m == 0).astype(float)
    assert _verdict(finite.dead_probability(widths), dead) == PASS
    assert float(finite.dead_probability(widths)) == pytest.approx(1 - 0.75 * 0.875 * 0.75)
    wrong = 1 - sp.prod([1 - sp.Rational(1, 2**w) for w in widths])   # counting the input layer too
    assert _verdict(wrong, dead) == FAIL


def test_log_moment_against_quadrature_and_monte_carlo():
    widths = (3, 2, 3)
    exact = finite.expected_log(widths)
    by_quad = 0.0
    for w in widths[1:]:
        for k in range(1, w + 1):
            mean_log = integrate.quad(lambda u, k=k: math.log(u) * stats.chi2.pdf(u, k), 0, np.inf, limit=200)[0]
            by_quad += math.comb(w, k) / (2**w - 1) * (math.log(2 / w) + mean_log)
    assert float(exact) == pytest.approx(by_quad, abs=1e-7)
    m, _, _ = _networks(widths, 100_000, np.random.default_rng(11))
    logs = np.log(m[m > 0])
    assert _verdict(exact, logs, rtol=0.05) == PASS
    assert _verdict(float(finite.expected_log_asymptotic(widths).subs({})), logs, rtol=0.05) == FAIL  # large-width form at width 2


def test_log_expansion_is_minus_five_halves_per_width():
    expansion = finite.log_moment().extras["expansion"]
    assert sp.limit(expansion * n, n, sp.oo) == sp.Rational(-5, 2)
    with mpmath.workdps(30):
        gap = abs(finite.expected_log([400, 400]) - mpmath.mpf(str(sp.N(expansion.subs(n, 400), 30))))
    assert gap < 400.0**-2   # the kept orders are right: what remains is O(n^-3)


def test_gradients_monte_carlo_with_the_dead_layer_factor():
    widths = (2, 2, 2, 2)
    _, grads, wgrads = _networks(widths, 200_000, np.random.default_rng(12))
    dx, dw = finite.gradient_moments(widths, input_norm=2)
    for predicted, values in zip(dx, grads):
        assert _verdict(predicted, values) == PASS
    for predicted, values in zip(dw, wgrads):
        assert _verdict(predicted, values) == PASS
    assert dx[-1] == widths[-1] and dx[2] == sp.Rational(9, 16) * widths[-1]
    assert _verdict(widths[-1], grads[2]) == FAIL      # the infinite-width value, without P(x_2 != 0)
    assert _verdict(dx[2], grads[3]) == FAIL           # the dead-layer factor applied at the output, where it does not act


def test_gradient_formula_holds_for_uniform_weights():
    widths = (2, 3, 2)
    _, grads, wgrads = _networks(widths, 200_000, np.random.default_rng(13), law="uniform")
    dx, dw = finite.gradient_moments(widths, input_norm=2)
    assert all(_verdict(p, v) == PASS for p, v in zip(dx, grads))
    assert all(_verdict(p, v) == PASS for p, v in zip(dw, wgrads))


def test_bad_widths_are_refused():
    with pytest.raises(DerivationError, match="widths"):
        finite.mean_square([3])
    with pytest.raises(DerivationError, match="variances"):
        finite.mean_square([3, 3], [-1])


def test_the_catalogue_last_layers_claim_is_a_special_case():
    """He's backward claim at narrow width (catalogue 'he-backward-last-layers-finite-width') is the finite-width
    backward law with the last, linear layer's g' = W_L^T g as the loss gradient: per unit of y_(L-1),
    E[(dL/dy)^2] = (n_L s_L / 2) P(no dead layer among 1..L-2), the dead-layer derivation's product."""
    from varprop.catalogue import family

    for width in (2, 4):
        claim = family("he-backward-last-layers-finite-width").at(width)
        widths = [layer.fan_in for layer in claim.network.dense_layers] + [claim.network.dense_layers[-1].fan_out]
        last = claim.network.dense_layers[-1]
        alive = 1 - finite.dead_probability(widths[:-2]) if len(widths) > 3 else 1
        special = last.fan_out * last.weights.variance / 2 * alive
        assert sp.simplify(claim.prediction - special) == 0
        assert sp.simplify(claim.prediction - last.fan_out * last.weights.variance / 2) != 0   # the factor matters


# --- moments of every order ----------------------------------------------------------------------


def _enumerate_power_moment(widths, order, variances=None, active=Fraction(1, 2)):
    """E[(||x_L||^2/||x_0||^2 * n_0/n_L)^k] by summing prod_j c_j^k k_j(k_j+2)...(k_j+2k-2) over every vector of
    counts, with its binomial probability (``active``: the probability that a unit is active)."""
    variances = variances or [Fraction(2, a) for a in widths[:-1]]
    layers = list(zip(widths[:-1], widths[1:], variances))
    total = Fraction(0)
    for counts in itertools.product(*(range(b + 1) for _, b, _ in layers)):
        p, value = Fraction(1), Fraction(1)
        for (a, b, v), k in zip(layers, counts):
            p *= math.comb(b, k) * active**k * (1 - active) ** (b - k)
            value *= (v * a / b) ** order * math.prod(k + 2 * i for i in range(order))
        total += p * value
    return total


@pytest.mark.parametrize("widths, order", [((3, 2, 5), 3), ((2, 2, 2, 2), 4), ((4, 1, 3), 5), ((5, 8), 8), ((2, 3), 1),
                                           ((3, 3, 3), 2)])
def test_power_moment_by_enumeration(widths, order):
    exact = _enumerate_power_moment(widths, order)
    assert finite.power_moment_value(widths, order) == sp.Rational(exact.numerator, exact.denominator)
    odd = [Fraction(1, 3)] * (len(widths) - 1)
    exact = _enumerate_power_moment(widths, order, odd)
    assert finite.power_moment_value(widths, order, odd) == sp.Rational(exact.numerator, exact.denominator)
    wrong = _enumerate_power_moment(widths, order, active=Fraction(45, 100))   # the binomial's 1/2 replaced by 0.45
    assert finite.power_moment_value(widths, order) != sp.Rational(wrong.numerator, wrong.denominator)


def test_power_moment_orders_one_and_two_are_the_product_law():
    for widths in ((3, 2, 5), (10,) * 11):
        assert finite.power_moment_value(widths, 2) == finite.mean_square(widths)
        assert finite.power_moment_value(widths, 1) == 1


@pytest.mark.parametrize("order", [3, 5])
def test_chi_square_moment_by_quadrature(order):
    """E[(chi^2_k)^p] = k(k+2)...(k+2p-2), the conditional step of power_moment, by scipy quadrature."""
    d = finite.power_moment(order)
    given = next(step for step in d.steps if step.lhs == finite.Given(finite._R**order, K))
    for k in (1, 2, 5):
        value = integrate.quad(lambda u, k=k: u**order * stats.chi2.pdf(u, k), 0, np.inf, limit=200)[0]
        assert float(given.rhs.subs({s: 1, K: k})) == pytest.approx(value, rel=1e-8)
    assert given.rhs.subs({s: 1, K: 3}) != 3 ** order   # not the k-th power of the mean


def _log_moments_by_quadrature(widths, orders=4, active=0.5):
    """Raw moments E[(log R)^r | no dead layer], r = 0..orders, R = ||x_L||^2/||x_0||^2 at He's variance:
    each layer's moments by scipy quadrature of log(s u)^r against the chi-square density (v = log u), mixed over
    the binomial conditioned on K >= 1, and the layers combined by the binomial theorem."""
    total = [1.0] + [0.0] * orders
    for a, n in zip(widths[:-1], widths[1:]):
        s_ = 2 / a
        weights = [stats.binom.pmf(k, n, active) / (1 - (1 - active) ** n) for k in range(1, n + 1)]
        layer = [0.0] * (orders + 1)
        for k, w in zip(range(1, n + 1), weights):
            for r in range(orders + 1):
                f = lambda v, r=r, k=k, s_=s_: (math.log(s_) + v) ** r * math.exp(stats.chi2.logpdf(math.exp(v), k) + v)
                layer[r] += w * integrate.quad(f, -80, 8, limit=400, points=[-2, 0, 2])[0]
        total = [sum(math.comb(r, i) * total[r - i] * layer[i] for i in range(r + 1)) for r in range(orders + 1)]
    return total


@pytest.mark.parametrize("widths", [(3, 2, 3), (4, 4, 4, 4), (2, 5)])
def test_log_moments_by_quadrature(widths):
    raw = _log_moments_by_quadrature(widths)
    for order in (1, 2, 3, 4):
        moment, variance = finite.log_moments(widths, order)
        assert float(moment) == pytest.approx(raw[order], rel=1e-7, abs=1e-9)
        assert float(variance) == pytest.approx(raw[2] - raw[1] ** 2, rel=1e-7)
    assert float(finite.log_moments(widths, 1)[0]) == pytest.approx(float(finite.expected_log(widths))
                                                                    + math.log(widths[-1] / widths[0]), abs=1e-20)
    wrong = _log_moments_by_quadrature(widths, 2, active=0.45)
    assert abs(float(finite.log_moments(widths, 2)[0]) - wrong[2]) > 1e-3


@pytest.mark.parametrize("order", [1, 2, 3])
def test_log_power_moment_steps_are_checked(order):
    d = finite.log_power_moment(order)
    reports = d.verify()
    assert all(r.ok is not False for r in reports) and sum(1 for r in reports if r.ok) >= 2 * order + 1
    assert d.exactness == "gaussian-exact"


def test_wrong_log_chi_moment_is_refused():
    """The Mellin-transform check refuses the second moment of log chi^2_k without its trigamma term."""
    b = _Builder("wrong")
    chi, theta, k, c = sp.Symbol("chi^2_k"), finite._theta, finite._kk, finite._c
    mellin = 2**theta * sp.gamma(k / 2 + theta) / sp.gamma(k / 2)
    with pytest.raises(DerivationError, match="does not hold"):
        b.add(Expect(sp.log(c * chi) ** 2), (sp.log(2 * c) + sp.polygamma(0, k / 2)) ** 2, finite.Rule.ALGEBRA,
              proof=finite.MomentFromMGF(c**theta * mellin, theta, 2))
    with pytest.raises(DerivationError, match="does not hold"):
        b.add(Expect(chi**theta), 2**theta * sp.gamma(k / 2 + theta) / sp.gamma(k / 2 + 1), finite.Rule.ALGEBRA,
              proof=finite.MellinQuadrature(k))


@pytest.mark.parametrize("bad", [0, 9, 2.0, True, "3"])
def test_orders_out_of_range_are_refused(bad):
    from varprop.errors import VarpropError
    from varprop.observables import LogNormRatioMoment, NormRatioMoment, ObservableError, Signal

    for function in (finite.power_moment, finite.log_power_moment):
        with pytest.raises(DerivationError, match=r"order must be an integer from 1 to 8, got " + repr(bad).replace("(", r"\(")):
            function(bad)
    for cls in (NormRatioMoment, LogNormRatioMoment):
        with pytest.raises(ObservableError, match=r"from 1 to 8, got") as info:
            cls(Signal(1), bad)
        assert isinstance(info.value, VarpropError)


def test_derived_observables_agree_with_the_numeric_companions():
    from varprop.derive import derive
    from varprop.network import mlp
    from varprop.observables import LogNormRatio, LogNormRatioMoment, LogNormRatioVariance, NormRatioMoment, Signal
    from varprop.weights import he

    widths = [3, 4, 2]
    net = mlp(widths, "relu", he(), output_activation=True)
    last = Signal(len(net.layers) - 1)
    third = derive(net, NormRatioMoment(last, 3))
    assert third.result == finite.power_moment_value(widths, 3) * sp.Rational(widths[-1], widths[0]) ** 3
    assert third.exactness == "gaussian-exact" and all(r.ok is not False for r in third.verify())
    log2 = derive(net, LogNormRatioMoment(last, 2))
    moment, variance = finite.log_moments(widths, 2)
    assert abs(float(log2.result) - float(moment)) < 1e-20 and all(r.ok is not False for r in log2.verify())
    assert abs(float(derive(net, LogNormRatioVariance(last)).result) - float(variance)) < 1e-20
    assert abs(float(derive(net, LogNormRatioMoment(last, 1)).result) - float(derive(net, LogNormRatio(last)).result)) < 1e-25
    with pytest.raises(DerivationError, match="relu chain"):
        derive(mlp(widths, "tanh", he(), output_activation=True), NormRatioMoment(last, 3))
    with pytest.raises(DerivationError, match="Gaussian"):
        derive(mlp(widths, "relu", he(distribution="uniform"), output_activation=True), LogNormRatioMoment(last, 2))


def test_wrong_log_moment_number_is_refused():
    b = _Builder("wrong")
    widths, variances = (3, 4, 2), (sp.Rational(2, 3), sp.Rational(1, 2))
    value = sp.Float(float(finite.log_moments(widths, 2)[0]) * 1.0001, 30)
    with pytest.raises(DerivationError, match="does not hold"):
        b.add(Expect(sp.Symbol("X")), value, finite.Rule.SUBSTITUTION,
              proof=finite._LogMomentRecursion(widths, variances, 2, False))


def test_log_variance_is_about_five_over_the_width():
    """Var[log M_L | no dead layer] ~ sum_j 5/n_j (Hanin & Rolnick 2018's exp(5 sum 1/n_j) spread): n Var - 5 at
    widths 50, 100, 200 shrinks like 1/n (halves per doubling), so the limit is 5 and not, say, 4 (E[psi'(K/2)] alone)."""
    gaps = [float(finite.log_moments([n, n], 2)[1]) * n - 5 for n in (50, 100, 200)]
    assert all(0 < g < 0.5 for g in gaps)
    assert all(1.8 < a / b < 2.2 for a, b in zip(gaps, gaps[1:]))


@functools.cache
def _log_chi_moments_by_quadrature(m):
    """E[y^j], j = 0..24, for y = log chi^2_m: Gauss-Legendre quadrature (numpy, 200 nodes on each of eight pieces
    of [-400, 6]) of y^j exp(m y/2 - e^y/2) / (2^(m/2) Gamma(m/2)), the chi-square density at u = e^y times e^y
    (beyond [-400, 6] the integrand of order 24 is below 1e-30 of the integral)."""
    nodes, weights = np.polynomial.legendre.leggauss(200)
    total = np.zeros(25)
    cuts = [-400, -150, -60, -20, -5, 0, 2, 4, 6]
    for lo, hi in itertools.pairwise(cuts):
        y = (hi - lo) / 2 * nodes + (hi + lo) / 2
        density = np.exp(m * y / 2 - np.exp(y) / 2 - (m / 2) * math.log(2) - math.lgamma(m / 2))
        total += (hi - lo) / 2 * (y[None, :] ** np.arange(25)[:, None] * (weights * density)[None, :]).sum(axis=1)
    return tuple(float(v) for v in total)


def _log_raw_moments_by_quadrature(widths, count, active=0.5):
    """E[(log R)^r | no dead layer], r = 0..count, R = ||x_L||^2/||x_0||^2 at He's variance, with no cumulant and no
    polygamma: per number m of active units the quadrature moments of log chi^2_m, the layer's scale by the binomial
    theorem, the binomial conditioned on K >= 1 mixes, and the layers combine by the binomial theorem (floats)."""
    total = [1.0] + [0.0] * count
    for a, n in itertools.pairwise(widths):
        log_c = math.log(2 / a)
        layer = [0.0] * (count + 1)
        for m in range(1, n + 1):
            chi = _log_chi_moments_by_quadrature(m)
            weight = math.comb(n, m) * active**m * (1 - active) ** (n - m) / (1 - (1 - active) ** n)
            for r in range(count + 1):
                layer[r] += weight * math.fsum(math.comb(r, j) * log_c ** (r - j) * chi[j] for j in range(r + 1))
        total = [math.fsum(math.comb(r, i) * total[r - i] * layer[i] for i in range(r + 1)) for r in range(count + 1)]
    return total


def _skewness(m1, m2, m3):
    return (m3 - 3 * m1 * m2 + 2 * m1**3) / (m2 - m1**2) ** 1.5


def test_log_moments_of_order_up_to_24_by_quadrature():
    """The guard's route (polygamma cumulants mixed over the binomial, layers' cumulants added, moments by the
    recursion; orders up to 24 = 3 * MAX_ORDER) against quadrature with no cumulant at all, and against
    log_moments (symbolic Bell polynomials) to 25 digits for orders 1..4; a wrong binomial (0.45) is refused."""
    widths = (2, 3, 2)
    raw = _log_raw_moments_by_quadrature(widths, finite._SKEW_ORDER)
    with mpmath.workdps(30):
        guard = finite._moments_from_cumulants(list(finite._log_cumulants_to(widths, finite._SKEW_ORDER)))
        for order in range(1, 5):   # (orders 5..8 build their symbolic derivations for a minute)
            assert abs(guard[order] - finite.log_moments(widths, order, dps=30)[0]) <= mpmath.mpf(10) ** -25 * abs(guard[order])
    for r in range(1, finite._SKEW_ORDER + 1):
        assert float(guard[r]) == pytest.approx(raw[r], rel=1e-10), r
    wrong = _log_raw_moments_by_quadrature(widths, 3, active=0.45)
    assert abs(float(guard[3]) - wrong[3]) > 1e-3 * abs(wrong[3])


@pytest.mark.parametrize("widths", [(2, 3, 2), (3, 3, 3, 3, 3)])
def test_log_skewness_of_the_per_network_values_by_quadrature(widths):
    """The exact skewness of (log R)^k (k = 1, 3, 8: moments up to 24) and of the variance's influence value
    (log R - mu)^2, given no dead layer, against the quadrature moments; a wrong binomial gives another number."""
    raw = _log_raw_moments_by_quadrature(widths, 24)
    for k in (1, 3, 8):
        assert finite.log_skewness(widths, k) == pytest.approx(_skewness(raw[k], raw[2 * k], raw[3 * k]), rel=1e-8), k
    mu = raw[1]
    central = [math.fsum(math.comb(j, i) * raw[i] * (-mu) ** (j - i) for i in range(j + 1)) for j in range(7)]
    assert finite.log_skewness(widths, None) == pytest.approx(_skewness(central[2], central[4], central[6]), rel=1e-8)
    wrong = _log_raw_moments_by_quadrature(widths, 9, active=0.45)
    assert abs(finite.log_skewness(widths, 3) - _skewness(wrong[3], wrong[6], wrong[9])) > 1e-2


def test_log_skewness_keeps_its_digits_far_from_the_origin():
    """A large weight variance moves log R far from 0 (about 3.9 per layer at s = 100/n, spread about 0.4 over two
    layers): the raw moments of (log R)^8 then cancel in its central moments (the sum of the terms' sizes is
    about 1e13 times the third central moment), and the working precision grows to keep 25 digits. Pinned
    against the same computation at 120 digits throughout, and against the delta method's
    skew(X^k) ~ skew(X) + 3 (k - 1) sigma / mu to the next order in sigma / mu."""
    widths = (64, 64, 64)
    variances = (sp.Rational(100, 64), sp.Rational(100, 64))
    skew_8 = finite.log_skewness(widths, 8, variances)
    with mpmath.workdps(120):
        kappas = finite._log_cumulants_to(widths, 24, variances, dps=120)
        raw = finite._moments_from_cumulants(list(kappas))
        third = raw[24] - 3 * raw[8] * raw[16] + 2 * raw[8] ** 3
        assert skew_8 == pytest.approx(float(third / (raw[16] - raw[8] ** 2) ** mpmath.mpf(1.5)), rel=1e-12)
        ratio = float(mpmath.sqrt(kappas[1]) / kappas[0])
    delta = finite.log_skewness(widths, 1, variances) + 3 * 7 * ratio
    assert abs(skew_8 - delta) < 10 * ratio**2 * 7**2
    with pytest.raises(DerivationError, match="at most 100 layers of width at most 4096"):
        finite._log_cumulants_to((8192, 8192), 3)
    with pytest.raises(DerivationError, match="from 1 to 24, got 25"):
        finite._log_cumulants_to((2, 2), 25)


def test_log_values_keep_the_digits_asked_for():
    import mpmath

    from varprop.derive.finite import expected_log, log_moments

    with mpmath.workdps(15):  # the caller's precision is the default 15 digits
        mean = expected_log([4, 4, 4], dps=40)
        moment, variance = log_moments([4, 4, 4], 2, dps=40)
    with mpmath.workdps(60):
        reference, _ = log_moments([4, 4, 4], 1, dps=55)
        assert abs(mean - reference) < mpmath.mpf(10) ** -35
        assert abs(moment - (variance + reference**2)) < mpmath.mpf(10) ** -35
