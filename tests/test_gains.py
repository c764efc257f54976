"""varprop.gains: PyTorch's and NFNets' published constants beside exact gains, each against an independent route."""

import math

import mpmath
import pytest

from varprop.gains import GAIN_ACTIVATIONS, NFNETS_GAMMA, gain_row, gains_table

mpmath.mp.dps = 30


def _sigmoid(x):
    return 1 / (1 + mpmath.exp(-x))


def _softplus(x):
    return mpmath.log1p(mpmath.exp(x)) if x < 30 else x + mpmath.log1p(mpmath.exp(-x))


_SELU_ALPHA = mpmath.mpf("1.6732632423543772848170429916717")
_SELU_SCALE = mpmath.mpf("1.0507009873554804934193349852946")

# Hand-written (phi, phi') pairs: an independent route to the Gaussian expectations.
REFERENCE = {
    "relu": (lambda x: max(x, 0), lambda x: 1 if x > 0 else 0),
    "leaky_relu(0.2)": (lambda x: x if x > 0 else x / 5, lambda x: 1 if x > 0 else mpmath.mpf(1) / 5),
    "leaky_relu(sqrt(5))": (lambda x: x if x > 0 else mpmath.sqrt(5) * x, lambda x: 1 if x > 0 else mpmath.sqrt(5)),
    "tanh": (mpmath.tanh, lambda x: 1 - mpmath.tanh(x) ** 2),
    "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * (1 - _sigmoid(x))),
    "selu": (lambda x: _SELU_SCALE * (x if x > 0 else _SELU_ALPHA * (mpmath.exp(x) - 1)),
             lambda x: _SELU_SCALE * (1 if x > 0 else _SELU_ALPHA * mpmath.exp(x))),
    "elu": (lambda x: x if x > 0 else mpmath.exp(x) - 1, lambda x: 1 if x > 0 else mpmath.exp(x)),
    "gelu": (lambda x: x * mpmath.ncdf(x), lambda x: mpmath.ncdf(x) + x * mpmath.npdf(x)),
    "silu": (lambda x: x * _sigmoid(x), lambda x: _sigmoid(x) * (1 + x * (1 - _sigmoid(x)))),
    "mish": (lambda x: x * mpmath.tanh(_softplus(x)),
             lambda x: mpmath.tanh(_softplus(x)) + x * (1 - mpmath.tanh(_softplus(x)) ** 2) * _sigmoid(x)),
    "softplus": (_softplus, _sigmoid),
    "gelu_tanh": (lambda x: x * (1 + mpmath.tanh(mpmath.sqrt(2 / mpmath.pi) * (x + mpmath.mpf("0.044715") * x**3))) / 2,
                  lambda x: mpmath.diff(lambda t: t * (1 + mpmath.tanh(mpmath.sqrt(2 / mpmath.pi)
                                                                        * (t + mpmath.mpf("0.044715") * t**3))) / 2, x)),
}


def _gauss(f, q=1):
    s = mpmath.sqrt(q)
    return mpmath.quad(lambda t: f(s * t) * mpmath.npdf(t), [-mpmath.inf, -1, 0, 1, mpmath.inf])


@pytest.mark.parametrize("label", sorted(REFERENCE))
def test_exact_gains_against_mpmath_quadrature(label):
    phi, dphi = REFERENCE[label]
    row = gain_row(label)
    second = _gauss(lambda x: phi(x) ** 2)
    mean = _gauss(phi)
    assert row.forward.value == pytest.approx(float(1 / mpmath.sqrt(second)), rel=1e-9)
    assert row.backward.value == pytest.approx(float(1 / mpmath.sqrt(_gauss(lambda x: dphi(x) ** 2))), rel=1e-9)
    assert row.variance_gain.value == pytest.approx(float(1 / mpmath.sqrt(second - mean**2)), rel=1e-9)


def test_closed_forms_where_there_is_one():
    relu = gain_row("relu")
    assert relu.forward.expr == "sqrt(2)" and relu.forward.error_estimate == 0
    # NFNets' relu gamma is 1/sqrt(Var[relu(z)]) = 1/sqrt(1/2 - 1/(2 pi))
    assert relu.variance_gain.value == pytest.approx(1 / math.sqrt(0.5 - 1 / (2 * math.pi)), rel=1e-15)
    # selu is built so that E[selu(z)^2] = 1: PyTorch's 3/4 is a quarter below the exact gain 1
    selu = gain_row("selu")
    assert selu.forward.value == pytest.approx(1, rel=1e-9) and selu.torch_vs_forward == pytest.approx(-25, rel=1e-8)


def _scipy_gauss(f, q):
    from scipy.integrate import quad

    value, _ = quad(lambda t: f(math.sqrt(q) * t) * math.exp(-t * t / 2) / math.sqrt(2 * math.pi), -math.inf, math.inf,
                    epsabs=1e-15, epsrel=1e-13)
    return value


@pytest.mark.parametrize("label, phi, dphi", [
    ("tanh", math.tanh, lambda x: 1 - math.tanh(x) ** 2),
    ("sigmoid", lambda x: 0.5 * (1 + math.tanh(x / 2)), lambda x: 0.25 * (1 - math.tanh(x / 2) ** 2)),
])
def test_fixed_point_by_iterating_the_q_map(label, phi, dphi):
    row = gain_row(label)
    g2 = row.torch**2
    q = 1.0
    for _ in range(60):  # both maps contract at q* (slopes 0.43 and 0.05): 60 steps reach float64
        q = g2 * _scipy_gauss(lambda x: phi(x) ** 2, q)
    assert row.q_star == pytest.approx(q, rel=1e-10)
    assert row.chi_1 == pytest.approx(g2 * _scipy_gauss(lambda x: dphi(x) ** 2, q), rel=1e-10)
    assert row.forward_at_q_star == pytest.approx(row.torch, rel=1e-10)  # the definition of q*


def test_homogeneous_rows_have_every_q_as_a_fixed_point():
    for label in ("relu", "leaky_relu(0.01)", "leaky_relu(sqrt(5))", "linear"):
        row = gain_row(label)
        assert row.q_star is None and row.chi_1 == pytest.approx(1, rel=1e-14)
        assert row.torch_vs_forward == pytest.approx(0, abs=1e-12)  # PyTorch's rectifier gains are exact


def test_torch_column_is_calculate_gain():
    torch = pytest.importorskip("torch")
    for entry in GAIN_ACTIVATIONS:
        row = gain_row(entry.label)
        if entry.torch is None:
            assert row.torch is None
            with pytest.raises(ValueError):
                torch.nn.init.calculate_gain(entry.label)  # PyTorch has no gain for these either
            continue
        name, param = entry.torch
        assert row.torch == pytest.approx(torch.nn.init.calculate_gain(name, None if param is None else float(param)),
                                          rel=1e-15)


def test_nfnets_column_and_differences():
    rows = {row.label: row for row in gains_table()}
    assert rows["tanh"].nfnets == NFNETS_GAMMA["tanh"] == 1.5939117670059204
    for row in rows.values():
        if row.nfnets is not None:
            assert row.nfnets_vs_exact == pytest.approx(100 * (row.nfnets / row.variance_gain.value - 1), rel=1e-12)
    assert rows["mish"].nfnets is None and rows["gelu"].nfnets is None  # NFNets' gelu is the tanh approximation
    assert rows["gelu_tanh"].nfnets == NFNETS_GAMMA["gelu"]
