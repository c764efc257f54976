"""The audit of a real PyTorch CNN (Conv2d, relu, flatten, Linear): verdicts, an independent recursion and loop, a wrong sibling."""

from __future__ import annotations

import math
import pathlib
import sys
from fractions import Fraction

import numpy as np
import pytest
import sympy as sp

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from varprop.network import Conv, Dense  # noqa: E402
from varprop.torch import audit, instance_seeds  # noqa: E402
from varprop.weights import Uniform  # noqa: E402

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))
from cnn_pytorch_default import CHANNELS, SIZE, make_cnn, make_strided_cnn  # noqa: E402

SHAPE = (CHANNELS[0], SIZE, SIZE)


@pytest.fixture(scope="module")
def cnn_audit():
    return audit(make_cnn, SHAPE, networks=3000, seed=1, pilot=30)


def _exact_gradients_pass(result):
    for p in result.gradient:
        assert p.outcome == ("PASS" if p.result.exactness == "exact" else "INCONCLUSIVE"), p.result.message


def test_cnn_translation(cnn_audit):
    layers = cnn_audit.network.layers
    assert [type(layer).__name__ for layer in layers] == ["Conv", "Nonlinearity", "Conv", "Nonlinearity", "Dense"]
    first = layers[0]
    assert isinstance(first, Conv) and first.input_size == (SIZE, SIZE) and first.padding == (1, 1)
    assert first.fan_in == CHANNELS[0] * 9 and first.weights == Uniform(1 / sp.sqrt(CHANNELS[0] * 9))
    assert isinstance(layers[-1], Dense) and layers[-1].fan_in == CHANNELS[-1] * SIZE * SIZE  # flatten: no layer
    assert all("nn.Conv2d default" in law.name or "nn.Linear default" in law.name for law in cnn_audit.laws)


def test_cnn_every_forward_place_passes(cnn_audit):
    assert [p.outcome for p in cnn_audit.signal] == ["PASS"] * 5
    assert all(p.result.exactness == "exact" for p in cnn_audit.signal)
    _exact_gradients_pass(cnn_audit)


def _taps(size: int, kernel: int, stride: int, padding: int) -> list[list[int]]:
    """For each output position of a 1-D convolution, the input positions its taps read (inside the input)."""
    out = (size + 2 * padding - kernel) // stride + 1
    return [[stride * p + t - padding for t in range(kernel) if 0 <= stride * p + t - padding < size]
            for p in range(out)]


def _conv_second_moments(q: list[list[Fraction]], c_in: int, kernel: int, stride: int, padding: int,
                         var_w: Fraction, var_b: Fraction) -> list[list[Fraction]]:
    """E[y_p^2] per 2-D output position: c_in Var[w] sum over the taps inside of E[x^2] (all channels alike) + Var[b]."""
    taps = _taps(len(q), kernel, stride, padding)
    return [[c_in * var_w * sum(q[i][j] for i in rows for j in cols) + var_b for cols in taps] for rows in taps]


def _default_var(fan_in: int) -> Fraction:
    return Fraction(1, 3 * fan_in)  # U(+-1/sqrt(fan_in)): bound^2 / 3


def _pytorch_cnn_recursion(convs: list[tuple[int, int, int, int]], size: int) -> list[Fraction]:
    """Layer averages of E[h^2] at conv, relu, ..., dense, by exact rationals (no sympy, no varprop)."""
    q = [[Fraction(1)] * size for _ in range(size)]
    out = []
    for c_in, kernel, stride, padding in convs:
        fan_in = c_in * kernel * kernel
        q = _conv_second_moments(q, c_in, kernel, stride, padding, _default_var(fan_in), _default_var(fan_in))
        out.append(sum(map(sum, q)) / (len(q) ** 2))
        q = [[v / 2 for v in row] for row in q]
        out.append(out[-1] / 2)
    channels = CHANNELS[-1]
    fan_in = channels * len(q) ** 2
    out.append(_default_var(fan_in) * channels * sum(map(sum, q)) + _default_var(fan_in))
    return out


@pytest.mark.parametrize("factory, convs", [
    (make_cnn, [(CHANNELS[0], 3, 1, 1), (CHANNELS[1], 3, 1, 1)]),
    (make_strided_cnn, [(3, 3, 2, 0), (8, 2, 1, 0)]),
])
def test_prediction_matches_independent_recursion(factory, convs, cnn_audit):
    result = cnn_audit if factory is make_cnn else audit(factory, SHAPE, networks=20, pilot=30, seed=1)
    expected = _pytorch_cnn_recursion(convs, SIZE)
    assert [sp.Rational(p.result.claim.prediction) for p in result.signal] == [
        sp.Rational(q.numerator, q.denominator) for q in expected]


def test_strided_cnn_passes():
    result = audit(make_strided_cnn, SHAPE, networks=2500, seed=1, pilot=30)
    assert [type(layer).__name__ for layer in result.network.layers] == ["Conv", "Nonlinearity", "Conv",
                                                                        "Nonlinearity", "Dense"]
    assert [p.outcome for p in result.signal] == ["PASS"] * 5
    _exact_gradients_pass(result)


def test_measurement_matches_a_plain_torch_loop():
    """The same instances, built by the documented seeding, measured by a plain loop over the Sequential."""
    networks, batch = 20, 8
    small = audit(make_cnn, SHAPE, networks=networks, batch=batch, seed=3, pilot=10)
    signal = np.zeros((networks, 5))
    gradient = np.zeros((networks, 6))
    torch.set_num_threads(1)
    for i in range(networks):
        model_seed, data_seed = instance_seeds(3, 0, i)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(model_seed)
            model = make_cnn().double()
        generator = torch.Generator().manual_seed(data_seed)
        x = torch.randn((batch, *SHAPE), generator=generator, dtype=torch.float64, requires_grad=True)
        h, kept = x, [x]
        for layer in model:
            h = layer(h)
            if not isinstance(layer, nn.Flatten):
                kept.append(h)
        g = torch.randn(h.shape, generator=generator, dtype=torch.float64)
        grads = torch.autograd.grad((h * g).sum(), kept)
        signal[i] = [float((t * t).mean().detach()) for t in kept[1:]]
        gradient[i] = [float((d * d).mean()) for d in grads]
    np.testing.assert_allclose([p.estimate for p in small.signal], signal.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose([p.estimate for p in small.gradient], gradient.mean(axis=0), rtol=1e-12)


def _conv_at_twice_the_variance():
    model = make_cnn()
    with torch.no_grad():
        for module in model:
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * math.prod(module.kernel_size)
                bound = math.sqrt(2 / fan_in)  # U(+-sqrt(2/fan_in)): variance 2/(3 fan_in), twice the default
                nn.init.uniform_(module.weight, -bound, bound)
    return model


def test_wrong_sibling_conv_at_twice_the_variance_fails():
    """Convolutions re-initialised at twice the variance, the prediction told to assume PyTorch's default: FAIL."""
    assume = {f"{i}.weight": Uniform(1 / sp.sqrt(c * 9)) for i, c in ((0, CHANNELS[0]), (2, CHANNELS[1]))}
    result = audit(_conv_at_twice_the_variance, SHAPE, networks=400, seed=2, pilot=10, assume=assume)
    assert [p.outcome for p in result.signal] == ["FAIL"] * 5


def test_depth_profile_and_fixes_cover_convolutions(cnn_audit):
    assert [row["place"] for row in cnn_audit.depth_profile()] == ["conv1", "conv2", "dense1"]
    fixes = {fix.place: fix for fix in cnn_audit.fixes()}
    # He et al. 2015, eq. 10 at PyTorch's conv fan-in C_in * k * k: Var[w] = 2 / fan_in after relu, 1 / fan_in first
    assert fixes["conv1"].variance == sp.Rational(1, CHANNELS[0] * 9)
    assert fixes["conv2"].variance == sp.Rational(2, CHANNELS[1] * 9)
    assert "kaiming_normal_(weight, nonlinearity='relu')" in fixes["conv2"].torch_call


def _grouped_conv1d():
    return nn.Sequential(nn.Conv1d(2, 4, 3, padding="same", groups=2), nn.ReLU(inplace=True),
                         nn.Conv1d(4, 4, 2, stride=2), nn.Flatten(), nn.Linear(4 * 5, 3))


def _conv1d(q: list[Fraction], per_group: int, kernel: int, stride: int, padding: int, var: Fraction) -> list[Fraction]:
    return [per_group * var * sum(q[j] for j in taps) + var for taps in _taps(len(q), kernel, stride, padding)]


def test_grouped_same_padded_conv1d_translates_and_passes():
    """Groups, padding='same', an in-place relu and a stride; judged at rtol 0.1 (the small fans make it noisy)."""
    result = audit(_grouped_conv1d, (2, 10), networks=1500, seed=4, pilot=30, rtol=0.1)
    first, _, second, dense = result.network.layers
    assert (first.input_size, first.padding, first.groups, first.fan_in) == ((10,), (1,), 2, 3)
    assert (second.input_size, second.stride, second.output_size) == ((10,), (2,), (5,))
    assert dense.fan_in == 20
    assert first.weights == Uniform(1 / sp.sqrt(3))  # PyTorch's fan-in in_channels / groups * K = 1 * 3
    assert [p.outcome for p in result.signal] == ["PASS"] * 4
    q1 = _conv1d([Fraction(1)] * 10, 1, 3, 1, 1, _default_var(3))  # each output channel reads 2 / groups = 1 channel
    q2 = _conv1d([v / 2 for v in q1], 4, 2, 2, 0, _default_var(8))
    expected = [sum(q1) / 10, sum(q1) / 20, sum(q2) / 5, _default_var(20) * 4 * sum(q2) + _default_var(20)]  # no relu after conv2
    assert [sp.Rational(p.result.claim.prediction) for p in result.signal] == [
        sp.Rational(q.numerator, q.denominator) for q in expected]
    assert [p.outcome for p in result.signal] == ["PASS"] * 4
