"""Convolution layers: the spec (fans, sizes, validation), the index map, and the derive rules.

Independent routes: PyTorch's own fan and size computations and convolutions of ones (tap counts,
and their transposes by autograd); a closed form of the 1-D tap count in sympy; and, for the
per-position recursion, the exact expectation of the squared output of a tiny linear convolution
network expanded as a polynomial in its weights and inputs (sympy), moment by moment.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import sympy as sp

from varprop.activations import activation
from varprop.derive import derive
from varprop.derive.convolution import (
    index_map,
    input_multiplicity,
    position_profile,
    tap_counts,
)
from varprop.errors import DerivationError, SpecError
from varprop.network import (
    Conv,
    Dense,
    FixedInput,
    GaussianInput,
    Network,
    Nonlinearity,
    cnn,
    conv,
    layer_widths,
)
from varprop.observables import CrossMoment, Gradient, SecondMoment, Signal
from varprop.weights import Normal, Uniform, he

CASES = [
    {"in_channels": 3, "out_channels": 6, "kernel_size": 3, "input_size": 10},
    {"in_channels": 4, "out_channels": 6, "kernel_size": 4, "input_size": 11, "stride": 3, "padding": 2, "groups": 2},
    {"in_channels": 2, "out_channels": 4, "kernel_size": (3, 2), "input_size": (7, 6), "stride": (2, 1), "padding": (1, 1)},
    {"in_channels": 6, "out_channels": 3, "kernel_size": 3, "input_size": (5, 5), "stride": 2, "padding": 1, "groups": 3},
]


def _layer(case: dict) -> Conv:
    return Conv(**case, weights=Normal(1))


@pytest.mark.parametrize("case", CASES)
def test_fans_and_output_size_are_pytorchs(case):
    torch = pytest.importorskip("torch")
    layer = _layer(case)
    weight = torch.empty(layer.out_channels, layer.in_channels // layer.groups, *layer.kernel_size)
    assert (layer.fan_in, layer.fan_out) == torch.nn.init._calculate_fan_in_and_fan_out(weight)
    module = (torch.nn.Conv1d if layer.dims == 1 else torch.nn.Conv2d)(
        layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding, groups=layer.groups)
    out = module(torch.zeros(1, layer.in_channels, *layer.input_size))
    assert tuple(out.shape[2:]) == layer.output_size
    assert layer_widths(layer) == (layer.in_channels * math.prod(layer.input_size), out[0].numel())


@pytest.mark.parametrize("case", CASES)
def test_tap_counts_and_multiplicities_are_convolutions_of_ones(case):
    torch = pytest.importorskip("torch")
    layer = _layer(case)
    functional = torch.nn.functional.conv1d if layer.dims == 1 else torch.nn.functional.conv2d
    ones = torch.ones(1, 1, *layer.input_size, dtype=torch.float64, requires_grad=True)
    counts = functional(ones, torch.ones(1, 1, *layer.kernel_size, dtype=torch.float64), stride=layer.stride,
                        padding=layer.padding)
    assert np.array_equal(tap_counts(layer), counts.detach().numpy()[0, 0])
    counts.sum().backward()  # the transposed convolution of ones: how many (position, tap) pairs read each input
    assert np.array_equal(input_multiplicity(layer), ones.grad.numpy()[0, 0])


@pytest.mark.parametrize("n,k,s,pad", [(10, 3, 1, 1), (11, 4, 3, 2), (7, 5, 2, 3), (6, 6, 1, 0)])
def test_tap_count_matches_its_closed_form(n, k, s, pad):
    p = sp.Symbol("p", integer=True, nonnegative=True)
    closed = sp.Max(0, sp.Min(k, n + pad - p * s) - sp.Max(0, pad - p * s))
    layer = Conv(1, 1, k, n, s, pad, weights=Normal(1))
    assert [int(closed.subs(p, q)) for q in range(layer.output_size[0])] == tap_counts(layer).tolist()
    # Averaged over positions: the fraction tau of in-range taps in the derivation.
    total = sp.summation(closed, (p, 0, layer.output_size[0] - 1))
    assert total == int(tap_counts(layer).sum()) == int(input_multiplicity(layer).sum())


def test_index_map_reads_the_receptive_field_in_c_order():
    layer = Conv(1, 1, (2, 3), (3, 4), stride=(1, 2), padding=(0, 1), weights=Normal(1))
    rows = index_map(layer)
    for (r, c), row in zip(itertools.product(*map(range, layer.output_size)), rows):
        expected = [(r + a) * 4 + (2 * c + b - 1) if 0 <= 2 * c + b - 1 < 4 else -1
                    for a, b in itertools.product(range(2), range(3))]
        assert row.tolist() == expected


@pytest.mark.parametrize("bad, match", [
    ({"in_channels": 3, "groups": 2}, "divisible by groups"),
    ({"kernel_size": 9, "padding": 0}, "larger than the padded input"),
    ({"input_size": (4, 4, 4)}, "1-D.*2-D"),
    ({"stride": 0}, "stride"),
    ({"kernel_size": (3, 3)}, "tuple of 1 integers"),
    ({"padding": -1}, "padding"),
    ({"in_channels": 0}, "in_channels"),
    ({"input_size": (100, 100)}, "at most 4096"),
    ({"out_channels": 2.5}, "out_channels"),
])
def test_bad_convolutions_are_refused_with_the_value(bad, match):
    spec = {"in_channels": 4, "out_channels": 4, "kernel_size": 3, "input_size": 8} | bad
    with pytest.raises(SpecError, match=match):
        Conv(**spec, weights=Normal(1))


def test_a_conv_needs_a_weight_law_and_matching_neighbours():
    with pytest.raises(SpecError, match="needs weights"):
        Conv(2, 2, 3, 8)
    with pytest.raises(SpecError, match="weight law"):
        Conv(2, 2, 3, 8, weights="normal")
    # Same width (4 x 8 = 8 x 4) but not the same channels and positions.
    with pytest.raises(SpecError, match="previous convolution puts out"):
        Network((Conv(1, 4, 1, 8, weights=Normal(1)), Conv(8, 8, 1, 4, weights=Normal(1))))
    with pytest.raises(SpecError, match="input width .* but the previous convolution has output width"):
        Network((Conv(1, 4, 1, 8, weights=Normal(1)), Conv(4, 4, 1, 9, weights=Normal(1))))
    # A dense layer flattens the channels and positions of the convolution before it.
    net = Network((Conv(1, 4, 3, 8, weights=Normal(1)), Dense(24, 5, Normal(1))))
    assert net.widths == (8, 24, 5) and [net.place_name(p) for p in range(2)] == ["conv1", "dense1"]


def test_conv_from_a_scheme_uses_pytorchs_fans():
    layer = conv(4, 8, (3, 3), (6, 6), he("fan_out"), groups=2)
    assert layer.fan_out == 8 * 9 and layer.weights.variance == sp.Rational(2, layer.fan_out)  # not / groups
    layer = conv(4, 8, 3, 6, he())
    assert layer.weights.variance == sp.Rational(2, 4 * 3)


# --- the per-position recursion against an exact polynomial expectation ---------------------------


def _direct_conv(layer: Conv, weights, x):
    """A direct loop over output channels, positions and taps (1-D; x: channels x positions), any objects."""
    (n,), (k,), (s,), (pad,) = layer.input_size, layer.kernel_size, layer.stride, layer.padding
    per_group = layer.in_channels // layer.groups
    out_group = layer.out_channels // layer.groups
    out = []
    for c in range(layer.out_channels):
        group = c // out_group
        row = []
        for p in range(layer.output_size[0]):
            total = 0
            for i in range(per_group):
                for t in range(k):
                    j = p * s + t - pad
                    if 0 <= j < n:
                        total += weights[c][i][t] * x[group * per_group + i][j]
            row.append(total)
        out.append(row)
    return out


def _expectation(poly: sp.Expr, variances: dict[sp.Symbol, sp.Expr]) -> sp.Expr:
    """E[poly] for independent centred Gaussian symbols: E[v^2] = s, E[v^4] = 3 s^2, odd powers 0."""
    total = sp.Integer(0)
    for monomial, coefficient in sp.Poly(sp.expand(poly), *variances).terms():
        value = coefficient
        for symbol, power in zip(variances, monomial):
            value *= 0 if power % 2 else sp.factorial2(power - 1) * variances[symbol] ** (power // 2)
        total += value
    return total


def test_per_position_recursion_is_the_exact_expectation_of_a_linear_conv_net():
    first = Conv(1, 2, 3, 5, stride=1, padding=1, weights=Normal(sp.Rational(1, 2)))
    second = Conv(2, 1, 2, 5, stride=2, padding=1, weights=Normal(sp.Rational(1, 3)))
    net = Network((first, second))
    x = [sp.symbols("x0:5")]
    w1 = [[sp.symbols(f"a{c}_0:3")] for c in range(2)]
    w2 = [[sp.symbols(f"b0_{i}_0:2") for i in range(2)]]
    variances = {v: 1 for v in x[0]} | {v: first.weights.variance for row in w1 for v in row[0]} | {
        v: second.weights.variance for row in w2[0] for v in row}
    hidden = _direct_conv(first, w1, x)
    out = _direct_conv(second, w2, hidden)
    exact_hidden = tuple(_expectation(h**2, variances) for h in hidden[0])
    exact_out = tuple(_expectation(y**2, variances) for y in out[0])
    assert position_profile(net, "conv1") == exact_hidden
    assert position_profile(net, "conv2") == exact_out
    # The observable covers every unit: its prediction is the average of the per-position values.
    assert derive(net, SecondMoment(Signal(1))).result == sum(exact_out) / len(exact_out)
    # Backward from the loss <g, out>: the gradient at the input, by the same expansion.
    g = sp.symbols("g0:3")
    loss = sum(gi * yi for gi, yi in zip(g, out[0]))
    variances |= {v: 1 for v in g}
    exact_grad = tuple(_expectation(sp.diff(loss, xj) ** 2, variances) for xj in x[0])
    assert position_profile(net, "input", "gradient") == exact_grad
    assert derive(net, SecondMoment(Gradient(-1))).result == sum(exact_grad) / len(exact_grad)


def test_interior_positions_have_the_dense_value_and_the_border_less():
    net = cnn([3, 4, 4], 3, 12, "relu", he(), padding=1)
    profile = position_profile(net, "conv2")
    # Interior: n Var[w] E[x^2] with n = C_in K, the He value 2 (E[x^2] = 1 behind the first relu).
    assert profile[2:-2] == (2,) * 8
    assert profile[0] < profile[1] < 2 and profile[0] == profile[-1]
    assert derive(net, SecondMoment(Signal(2))).result == sum(profile) / 12
    relu = position_profile(net, "act1")
    assert relu == tuple(q / 2 for q in position_profile(net, "conv1"))


def test_strided_backward_counts_taps_per_input_position():
    layer = conv(2, 2, 3, 9, he("fan_out"), stride=2)
    net = Network((layer,))
    grad = position_profile(net, "input", "gradient")
    counts = input_multiplicity(layer).tolist()
    assert counts == [1, 1, 2, 1, 2, 1, 2, 1, 1]
    assert grad == tuple(sp.Rational(2, 3) * m for m in counts)  # fan_out Var[w] m_j / K, Var = 2/fan_out
    d = derive(net, SecondMoment(Gradient(-1)))
    assert d.result == sp.Rational(2 * sum(counts), 3 * 9) and d.exactness == "exact"


def test_conv_derivations_verify_and_state_pytorchs_fans():
    net = cnn([2, 4, 4], (3, 3), (6, 6), "tanh", he(), padding=1, stride=(2, 1))
    for observable in (SecondMoment(Signal(2)), SecondMoment(Gradient(-1)), SecondMoment(Signal(1))):
        d = derive(net, observable)
        assert all(report.ok is not False for report in d.verify())
    text = derive(net, SecondMoment(Signal(0))).text()
    assert "_calculate_fan_in_and_fan_out" in text and "zero padding" in text


def test_symmetric_uniform_weights_and_bias_keep_the_rule_exact():
    layer = Conv(2, 3, 3, 6, padding=1, weights=Uniform(1), bias=Normal(sp.Rational(1, 4)))
    net = Network((layer,))
    d = derive(net, SecondMoment(Signal(0)))
    counts = tap_counts(layer).ravel()
    assert d.exactness == "exact"
    assert d.result == sum(2 * sp.Rational(1, 3) * int(c) + sp.Rational(1, 4) for c in counts) / len(counts)


def test_pairs_through_an_unpadded_conv_and_refused_through_a_padded_one():
    relu = Nonlinearity(activation("relu"))
    plain = Network((conv(2, 3, 3, 8), relu, conv(3, 2, 3, 6)), GaussianInput(correlation=sp.Rational(1, 2)))
    d = derive(plain, CrossMoment(Signal(0)))
    assert d.result == 2 * sp.Rational(1, 2)  # He fan-in: n Var[w] = 2, times E[x x'] = 1/2
    padded = Network((conv(2, 3, 3, 8, padding=1),), FixedInput.pair(16, 0))
    with pytest.raises(DerivationError, match="padding=0 for a pair"):
        derive(padded, CrossMoment(Signal(0)))
    assert derive(padded, SecondMoment(Signal(0))).result > 0  # the refused pair does not block the single input


# --- claim files --------------------------------------------------------------------------------

CONV_FILE = """
[[claim]]
name = "conv-padded"
activation = "relu"
widths = [2, 4, 4]
conv = { kernel_size = 3, input_size = 6, padding = 1 }
observable = "second_moment"
place = "conv2"
prediction = "44/27"

[[claim]]
name = "conv2d-backward"
activation = "linear"
widths = [3, 2]
init = "he"
mode = "fan_out"
conv = { kernel_size = [3, 3], input_size = [6, 6], stride = 2, padding = 1 }
observable = "second_moment"
tensor = "gradient"
place = "input"
prediction = "2"
"""


def test_a_claim_file_writes_conv_layers(tmp_path):
    from varprop.claimfile import load_claims

    path = tmp_path / "conv.toml"
    path.write_text(CONV_FILE)
    padded, strided = load_claims(path)
    assert padded.claim.network == cnn([2, 4, 4], 3, 6, "relu", he(), padding=1)
    assert padded.agreement.startswith("matches the derivation")
    assert strided.claim.network == cnn([3, 2], (3, 3), (6, 6), "linear", he("fan_out"), stride=2, padding=1)
    assert strided.agreement.startswith("differs from the derivation")  # fan-out mode's 2 ignores the stride
    assert strided.derived == derive(strided.claim.network, SecondMoment(Gradient(-1))).result


@pytest.mark.parametrize("replace, match", [
    ("conv = { kernel_size = 3, input_size = 6, padding = 1 }", "conv = { kernel_size = 3 }"),
    ("conv = { kernel_size = 3, input_size = 6, padding = 1 }", "conv = { kernel_size = 3, input_size = 6, dilation = 2 }"),
    ("conv = { kernel_size = 3, input_size = 6, padding = 1 }", "conv = { kernel_size = 9, input_size = 6 }"),
    ('place = "conv2"', "layer = 2"),
])
def test_bad_conv_tables_are_refused_with_the_reason(tmp_path, replace, match):
    from varprop.claimfile import load_claims
    from varprop.claims import ClaimError

    path = tmp_path / "conv.toml"
    path.write_text(CONV_FILE.split("[[claim]]")[1].join(["[[claim]]", ""]).replace(replace, match))
    with pytest.raises(ClaimError, match="kernel_size and input_size|unknown key 'dilation'|larger than the padded|by place"):
        load_claims(path)
