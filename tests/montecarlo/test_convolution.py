"""The sampler's convolution step against a direct loop and PyTorch, and conv claims through the checker.

Every PASS has a wrong sibling that FAILs: the fan-in without the kernel size, the border ignored,
fan-out mode without the stride's tap count.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp

from varprop.activations import activation
from varprop.catalogue import claim_from_derivation
from varprop.montecarlo import check, select_engine
from varprop.montecarlo.convolution import ConvStep
from varprop.montecarlo.errors import MonteCarloError
from varprop.network import Conv, Network, Nonlinearity, cnn, conv
from varprop.observables import Gradient, SecondMoment, Signal
from varprop.weights import Normal, he

LAYERS = [
    Conv(3, 4, 3, 7, weights=Normal(1), bias=Normal(1)),
    Conv(4, 6, 2, 9, stride=3, padding=2, groups=2, weights=Normal(1)),
    Conv(2, 4, (3, 2), (5, 4), stride=(2, 1), padding=(1, 1), groups=2, weights=Normal(1), bias=Normal(1)),
]


def _reference(layer: Conv, weights: np.ndarray, bias: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """One network, one input, by loops over channels, output positions and taps (flattened C order)."""
    x = x.reshape(layer.in_channels, *layer.input_size)
    per_in, per_out = layer.in_channels // layer.groups, layer.out_channels // layer.groups
    out = np.zeros((layer.out_channels, *layer.output_size))
    for c in range(layer.out_channels):
        group = c // per_out
        for p in itertools.product(*map(range, layer.output_size)):
            total = 0.0 if bias is None else bias[c]
            for i in range(per_in):
                for t in itertools.product(*map(range, layer.kernel_size)):
                    j = tuple(pp * s + tt - pad for pp, s, tt, pad in zip(p, layer.stride, t, layer.padding))
                    if all(0 <= jj < n for jj, n in zip(j, layer.input_size)):
                        total += weights[(c, i, *t)] * x[(group * per_in + i, *j)]
            out[(c, *p)] = total
    return out.ravel()


@pytest.mark.parametrize("layer", LAYERS, ids=["1d-bias", "1d-stride-groups", "2d"])
def test_forward_and_backward_match_a_direct_loop(layer):
    rng = np.random.default_rng(3)
    step = ConvStep(layer)
    params = step.draw(2, rng)
    bias = params[1] if len(params) > 1 else None
    h = rng.standard_normal((2, 2, layer.in_width))
    out, cache = step.forward(params, h)
    g = rng.standard_normal((2, 1, layer.out_width))
    back = step.backward(params, (), cache, g)
    for n in range(2):
        for k in range(2):
            assert np.allclose(out[n, k], _reference(layer, params[0][n], None if bias is None else bias[n], h[n, k]))
        # The backward pass is the transpose: column j of the layer's matrix, built by the reference.
        matrix = np.stack([_reference(layer, params[0][n], None, e) for e in np.eye(layer.in_width)], axis=1)
        assert np.allclose(back[n, 0], matrix.T @ g[n, 0])


@pytest.mark.parametrize("layer", LAYERS, ids=["1d-bias", "1d-stride-groups", "2d"])
def test_forward_and_backward_match_torch(layer):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    step = ConvStep(layer)
    params = step.draw(3, rng)
    h = rng.standard_normal((3, 1, layer.in_width))
    g = rng.standard_normal((3, 1, layer.out_width))
    out, cache = step.forward(params, h)
    back = step.backward(params, (), cache, g)
    functional = torch.nn.functional.conv1d if layer.dims == 1 else torch.nn.functional.conv2d
    for n in range(3):
        x = torch.tensor(h[n].reshape(1, layer.in_channels, *layer.input_size), requires_grad=True)
        bias = torch.tensor(params[1][n]) if len(params) > 1 else None
        y = functional(x, torch.tensor(params[0][n]), bias, stride=layer.stride, padding=layer.padding,
                       groups=layer.groups)
        assert np.allclose(y.detach().numpy().ravel(), out[n, 0])
        (y.reshape(-1) @ torch.tensor(g[n, 0])).backward()
        assert np.allclose(x.grad.numpy().ravel(), back[n, 0])


def test_the_conditional_engine_refuses_a_conv_with_the_reason():
    net = cnn([2, 3], 3, 8)
    with pytest.raises(MonteCarloError, match="share their weights"):
        select_engine("conditional", net)
    assert select_engine("auto", net).name == "full"


# The checker's resolution for these tests: every wrong sibling below is off by more than 10 %, and a
# 5 % resolution keeps each check to a few thousand networks.
RTOL = 0.05


def _valid_net(channels: int = 4) -> Network:
    """He fan-in through a 1-D conv relu net without padding: every position is interior."""
    return cnn([2, channels, channels, channels], 3, 16, "relu", he())


def test_he_through_a_valid_conv_net_and_the_fan_in_without_the_kernel():
    net = _valid_net()
    claim = claim_from_derivation("he-conv", net, SecondMoment(Signal(4)))
    assert claim.exactness == "exact" and claim.prediction == 2
    assert check(claim, seed=11, rtol=RTOL).outcome == "PASS"
    # Wrong: the fan-in taken as in_channels alone, so each conv's n Var[w] would be 2 / K = 2/3 per layer.
    layers = [layer for layer in net.layers if isinstance(layer, Conv)]
    wrong = 2 * sp.Mul(*(layer.in_channels * layer.weights.variance for layer in layers)) / 2 ** len(layers)
    assert check(claim.with_prediction(wrong), seed=11, rtol=RTOL).outcome == "FAIL"


def test_a_padded_border_lowers_the_layer_average_and_ignoring_it_fails():
    net = cnn([2, 4, 4], 3, 6, "relu", he(), padding=1)
    claim = claim_from_derivation("padded", net, SecondMoment(Signal(2)))
    assert claim.exactness == "exact" and claim.prediction < 2
    assert check(claim, seed=12, rtol=RTOL).outcome == "PASS"
    # Wrong: the interior (dense) value, as if no unit saw the zero padding.
    assert check(claim.with_prediction(sp.Integer(2)), seed=12, rtol=RTOL).outcome == "FAIL"


def test_strided_2d_backward_counts_and_fan_out_mode_ignoring_them_fails():
    net = Network((conv(3, 4, 3, (8, 8), he("fan_out"), stride=2, padding=1),))
    claim = claim_from_derivation("strided", net, SecondMoment(Gradient(-1)))
    assert claim.exactness == "exact"
    assert check(claim, seed=13, rtol=RTOL).outcome == "PASS"
    # Wrong: fan-out mode's promise, fan_out Var[w] E[g^2] = 2 at every input position.
    assert check(claim.with_prediction(sp.Integer(2)), seed=13, rtol=RTOL).outcome == "FAIL"


def test_per_position_profiles_through_tanh_agree_with_the_sampler():
    tanh = Nonlinearity(activation("tanh"))
    net = Network((conv(2, 4, 3, 8, padding=1), tanh, conv(4, 4, 3, 8, he("fan_out"), padding=2, stride=2)))
    # The tanh layers' Gaussian integrals are asymptotic in the fan-in; with the gradient below the
    # last conv (one tanh slope) measured, the derivation's own exactness decides how it is judged.
    claim = claim_from_derivation("tanh-conv", net, SecondMoment(Gradient(1)))
    assert claim.exactness == "exact"
    assert check(claim, seed=14, rtol=RTOL).outcome == "PASS"
    assert check(claim.with_prediction(claim.prediction * sp.Rational(6, 5)), seed=14, rtol=RTOL).outcome == "FAIL"


def test_grouped_conv_backward_has_the_groups_that_pytorchs_fan_out_leaves_out():
    layer = conv(4, 6, 3, 8, he("fan_out"), groups=2)
    net = Network((layer,))
    claim = claim_from_derivation("grouped", net, SecondMoment(Gradient(-1)))
    assert claim.exactness == "exact"
    assert check(claim, seed=15, rtol=RTOL).outcome == "PASS"
    # Wrong: PyTorch's fan-out (out_channels * K, not / groups) taken as the number of terms.
    assert check(claim.with_prediction(claim.prediction * layer.groups), seed=15, rtol=RTOL).outcome == "FAIL"
