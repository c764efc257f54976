"""Derive rules of BatchNorm over channels (nn.BatchNorm2d): every step checks, the closed forms against quadrature of
the chi-square density with B*P - 1 degrees of freedom, and what is not derived is refused with the reason."""

from __future__ import annotations

import pytest
import sympy as sp
from scipy import integrate, stats

from varprop.activations import activation
from varprop.derive import derive
from varprop.errors import DerivationError, SpecError
from varprop.network import BatchNorm, Conv, Dense, Network, Nonlinearity, conv
from varprop.observables import Gradient, Mean, SecondMoment, Signal
from varprop.weights import Normal

RELU = Nonlinearity(activation("relu"))


def _chi2_mean(g, k: int) -> float:
    """E[g(X)], X chi-square with k degrees of freedom, by scipy quadrature of the density."""
    return integrate.quad(lambda x: g(x) * stats.chi2.pdf(x, k), 0, float("inf"), limit=200, epsabs=0, epsrel=1e-11)[0]


def _verified(derivation):
    assert all(report.ok is not False for report in derivation.verify())
    return derivation


def _conv_net(eps, padding=1, after=None):
    first = conv(2, 3, 3, (4, 4), padding=padding)
    layers = (first, BatchNorm(first.out_width, 4, eps=eps, channels=3), RELU)
    return Network(layers + ((after,) if after is not None else ()))


def test_the_spec_says_channels_by_positions_and_names_bad_values():
    norm = BatchNorm(48, 4, eps=0, channels=3)
    assert (norm.positions, norm.group) == (16, 64)
    assert BatchNorm(48, 4).positions == 1 and repr(BatchNorm(6, 4)) == "BatchNorm(width=6, batch=4, eps=1/100000, affine=True)"
    with pytest.raises(SpecError, match=r"channels \(5\) must divide the width \(48\)"):
        BatchNorm(48, 4, channels=5)
    with pytest.raises(SpecError, match="got 'three'"):
        BatchNorm(48, 4, channels="three")
    with pytest.raises(SpecError, match="BatchNorm over 4 channels but the convolution next to it has 3 channels"):
        Network((conv(2, 3, 3, (4, 4), padding=1), BatchNorm(48, 4, channels=4)))


@pytest.mark.parametrize("padding", [0, 1])
def test_forward_eps_zero_averages_to_one_behind_a_convolution_and_the_mean_is_zero(padding):
    net = _conv_net(0, padding)
    d = _verified(derive(net, SecondMoment(Signal(1))))
    assert d.result == 1 and d.exactness == "exact"
    assert derive(net, Mean(Signal(1))).result == 0
    # relu halves it exactly: the output is symmetric per position (flip the channel's filter)
    assert _verified(derive(net, SecondMoment(Signal(2)))).result == sp.Rational(1, 2)


@pytest.mark.parametrize("batch, eps, positions", [(4, sp.Rational(1, 2), 16), (2, sp.Rational(1, 10), 3)])
def test_forward_on_the_gaussian_input_is_chi_square_with_b_p_minus_one_degrees(batch, eps, positions):
    width = 2 * positions
    size = (4, 4) if positions == 16 else 3
    net = Network((BatchNorm(width, batch, eps=eps, channels=2), conv(2, 2, 1, size)))
    d = _verified(derive(net, SecondMoment(Signal(0))))
    group = batch * positions  # V = (v / BP) X, X ~ chi^2_{BP - 1}
    c = group * float(eps)
    assert float(d.result) == pytest.approx(_chi2_mean(lambda x: x / (x + c), group - 1), rel=1e-9)
    assert d.exactness == "exact"
    # the per-unit BatchNorm's B - 1 degrees of freedom give another number
    assert float(d.result) != pytest.approx(_chi2_mean(lambda x: x / (x + batch * float(eps)), batch - 1), rel=1e-3)


@pytest.mark.parametrize("eps", [sp.Integer(0), sp.Rational(1, 2)])
def test_backward_on_the_gaussian_input_against_quadrature(eps):
    batch, positions = 3, 4
    net = Network((BatchNorm(2 * positions, batch, eps=eps, channels=2), conv(2, 2, 1, (2, 2), init=Normal(1))))
    d = _verified(derive(net, SecondMoment(Gradient(-1))))
    # E[dL/dx^2] = (d/BP) E[(BP-2)/(V+eps) + eps^2/(V+eps)^3], V = X/(BP); d = C_out Var[w] = 2 (the 1x1 conv)
    e, n = float(eps), batch * positions
    g = lambda x: ((n - 2) / (x / n + e) + e**2 / (x / n + e) ** 3) / n  # noqa: E731
    assert float(d.result) == pytest.approx(2 * _chi2_mean(g, n - 1), rel=1e-9) and d.exactness == "exact"


def test_eps_behind_a_convolution_is_refused_naming_what_is_derived_and_the_places_below_stay_derived():
    net = _conv_net(sp.Rational(1, 100000))
    with pytest.raises(DerivationError, match="correlated across positions.*derived: eps = 0"):
        derive(net, SecondMoment(Signal(1)))
    assert derive(net, SecondMoment(Signal(0))).exactness == "exact"  # conv1 below it is still derived


def test_a_padded_convolution_after_it_is_refused_a_1x1_one_is_derived():
    padded = _conv_net(0, 1, conv(3, 2, 3, (4, 4), padding=1))
    with pytest.raises(DerivationError, match="second moment per position is not derived"):
        derive(padded, SecondMoment(Signal(3)))
    pointwise = _conv_net(0, 1, conv(3, 2, 1, (4, 4), init=Normal(sp.Rational(1, 3))))
    d = _verified(derive(pointwise, SecondMoment(Signal(3))))
    assert d.result == sp.Rational(1, 2) and d.exactness == "exact"  # 3 channels x 1/3 x E[relu(y)^2] = 1/2


def test_the_gradient_behind_a_convolution_is_refused_with_the_reason():
    with pytest.raises(DerivationError, match="over channels is not derived: it sits behind a layer with weights"):
        derive(_conv_net(0), SecondMoment(Gradient(0)))


def test_the_per_position_profile_after_it_is_refused_behind_a_convolution_and_uniform_on_the_input():
    from varprop.derive.convolution import position_profile

    with pytest.raises(DerivationError, match="per position at batchnorm1 is not derived"):
        position_profile(_conv_net(0), 1)
    on_input = Network((BatchNorm(32, 4, eps=0, channels=2), conv(2, 2, 3, (4, 4), padding=1)))
    assert position_profile(on_input, 0) == (1,) * 16  # a channel's values are iid: every position alike


def test_after_a_padded_conv_only_what_is_proportional_to_the_average_second_moment_is_derived():
    """Behind a padded conv the BatchNorm's per-position second moments differ (only their average is 1), so a
    Gaussian integral at the average would be wrong: tanh's moments and relu's mean are refused, relu's second
    moment (proportional to the input's at every position) stays exact."""
    tanh = Network((conv(2, 3, 3, (4, 4), padding=1), BatchNorm(48, 4, eps=0, channels=3),
                    Nonlinearity(activation("tanh"))))
    with pytest.raises(DerivationError, match="needs the second moment at each position"):
        derive(tanh, SecondMoment(Signal(2)))
    relu = _conv_net(0)
    assert _verified(derive(relu, SecondMoment(Signal(2)))).result == sp.Rational(1, 2)
    with pytest.raises(DerivationError, match=r"E\[phi\(z\)\] at .* needs the second moment at each position"):
        derive(relu, Mean(Signal(2)))
    # without padding too: a border position overlaps fewer others, so it correlates differently with the
    # channel's variance, and the positions after the BatchNorm are not exactly alike
    unpadded = _conv_net(0, padding=0)
    with pytest.raises(DerivationError, match="needs the second moment at each position"):
        derive(unpadded, Mean(Signal(2)))
