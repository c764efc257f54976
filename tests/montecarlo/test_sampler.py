"""The sampler and the estimators against independent computations.

Exact finite-width moments are worked out by hand in each test; statistical agreement is decided by
the checker's own verdict (``judge``), and each PASS has a sibling with a wrong formula that FAILs.
"""

from __future__ import annotations

import typing

import numpy as np
import pytest
import sympy as sp

from varprop import network as spec
from varprop.activations import activation
from varprop.errors import VarpropError
from varprop.montecarlo import (
    FAIL,
    INCONCLUSIVE,
    OBSERVABLES,
    PASS,
    MonteCarloError,
    estimate,
    judge,
    layer_step,
    sample,
)
from varprop.montecarlo.estimators import rounding_error
from varprop.network import Dense, FixedInput, GaussianInput, Network, Nonlinearity, mlp
from varprop.weights import Normal, TruncatedNormal, Uniform, explicit

X = (0.5, -1.0, 2.0)  # ||x||^2 = 5.25
NORM2 = 5.25


#: Per-assertion level: with a few dozen statistical assertions in the suite, alpha = 1e-3 each keeps
#: the chance of any false alarm in a run below a few percent, while every wrong formula below is off
#: by many standard errors (its FAIL does not depend on the level).
ALPHA = 1e-3


def check(prediction: float, samples, observable: str, layer: int, rtol: float = 0.05) -> str:
    """The verdict at level ALPHA; a PASS resolves ``rtol`` with 90 % power (the checker's definition)."""
    est = estimate(samples, observable, layer)
    return judge(prediction, est.value, est.se, est.n, rtol=rtol, alpha=ALPHA).outcome


# --- exact moments ------------------------------------------------------------------------------


def test_single_linear_layer_second_moment_is_v_norm_squared():
    # y = W x with W_ij ~ N(0, v), x fixed: E[y_i^2] = v ||x||^2 exactly, at any width.
    v = 0.3
    net = Network((Dense(3, 5, Normal(v)),), FixedInput(X))
    samples = sample(net, 12000, seed=11)
    assert check(v * NORM2, samples, "y_second_moment", 1) == PASS
    assert check(v * NORM2 / 2, samples, "y_second_moment", 1) == FAIL  # a spurious 1/2
    assert check(0.0, samples, "y_mean", 1, rtol=0.05) == PASS
    # few networks and a tight tolerance: agreement, but not resolved; the verdict says how many
    few = estimate(sample(net, 50, seed=11), "y_second_moment", 1)
    unsure = judge(v * NORM2, few.value, few.se, few.n, rtol=0.01)
    assert unsure.outcome == INCONCLUSIVE and unsure.samples_needed > 50
    # the input is fixed: its moments are known without error
    assert estimate(samples, "x_second_moment", 1).value == pytest.approx(NORM2 / 3, rel=1e-15)


def test_relu_halves_the_second_moment_for_a_symmetric_law():
    # x_2 = relu(y_1), y_1 symmetric (uniform weights, not Gaussian): E[x_2^2] = Var[y_1]/2 exactly.
    bound = 0.9
    v = bound**2 / 3
    net = mlp([3, 6, 2], "relu", Uniform(bound), inputs=FixedInput(X))
    samples = sample(net, 12000, seed=12)
    assert check(v * NORM2 / 2, samples, "x_second_moment", 2) == PASS
    assert check(v * NORM2, samples, "x_second_moment", 2) == FAIL  # missing 1/2
    assert check(v * NORM2, samples, "y_variance", 1) == PASS


def test_two_layer_linear_net():
    # y_2 = W_2 W_1 x: E[y_2^2] = v_2 E||y_1||^2 = v_2 n_2 v_1 ||x||^2 (fan_out of layer 1 is n_2 = 4).
    v1, v2 = 0.5, 0.25
    net = Network(
        (Dense(3, 4, Normal(v1)), Nonlinearity(activation("linear")), Dense(4, 2, Normal(v2))),
        FixedInput(X),
    )
    samples = sample(net, 60000, seed=13)
    prediction = v2 * 4 * v1 * NORM2
    assert check(prediction, samples, "y_second_moment", 2) == PASS
    assert check(v2 * 2 * v1 * NORM2, samples, "y_second_moment", 2) == FAIL  # fan_out for fan_in


def test_gaussian_input_and_backward_moments():
    # GaussianInput(v0): E[x_1^2] = v0. Backward through a linear net with g ~ N(0, I):
    # E[(dL/dy_2)^2] = 1, E[(dL/dx_2)^2] = n_out v_2, E[(dL/dW_2)^2] = E[(dL/dy_2)^2] E[x_2^2].
    v0, v1, v2 = 2.0, 0.5, 0.25
    net = Network((Dense(3, 4, Normal(v1)), Dense(4, 5, Normal(v2))), GaussianInput(v0))
    samples = sample(net, 60000, seed=14)
    assert check(v0, samples, "x_second_moment", 1) == PASS
    assert check(1.0, samples, "dy_second_moment", 2) == PASS
    assert check(5 * v2, samples, "dx_second_moment", 2) == PASS
    assert check(4 * v2, samples, "dx_second_moment", 2) == FAIL  # fan_in for fan_out
    assert check(1.0 * 3 * v1 * v0, samples, "dw_second_moment", 2) == PASS


def test_correlation_of_a_given_pair_at_layer_one():
    # Fixed pair (a, b), zero-mean weights, no bias: E[y(a) y(b)] = v <a, b> exactly, so the
    # correlation is <a, b> / (|a| |b|) (the ratio estimator is consistent).
    a, b = np.array(X), np.array([1.0, -1.0, 1.0])
    net = Network((Dense(3, 4, Normal(1)),), FixedInput(tuple(a)))
    samples = sample(net, 12000, seed=15, partner=tuple(b))
    rho = float(a @ b / np.sqrt((a @ a) * (b @ b)))  # 3.5 / sqrt(5.25 * 3) = 0.882
    assert check(rho, samples, "y_correlation", 1) == PASS
    assert check(float(a @ b / (a @ a)), samples, "y_correlation", 1) == FAIL  # |a|^2 for |a||b|


def test_norm_ratio_of_a_linear_layer():
    # x_2 = y_1 = W x with fixed x: E[||x_2||^2 / ||x_1||^2] = n_2 v, and layer 1's ratio is 1.
    v = 0.5
    net = mlp([3, 4, 2], "linear", Normal(v), inputs=FixedInput(X))
    samples = sample(net, 12000, seed=16)
    assert check(4 * v, samples, "x_norm_ratio", 2) == PASS
    one = estimate(samples, "x_norm_ratio", 1)
    # every network's ratio is exactly 1: no spread, so the SE is the float64 rounding bound (Higham), not 0
    assert one.value == 1.0 and one.se == rounding_error(net, 1.0, one.n) and 0 < one.se < 1e-13
    # ||W x||^2 / ||x||^2 = v * chi^2_4 for Gaussian W: second moment v^2 * (16 + 8)
    assert check(v * v * 24, samples, "x_norm_ratio_second_moment", 2, rtol=0.08) == PASS


# --- gradients against finite differences -------------------------------------------------------


def _forward_loss(weights, biases, x, g, y_shift=None, layer_shift=None):
    """Plain numpy forward pass of the tanh net used below, with an optional shift of y_l."""
    h = x
    for index, (w, b) in enumerate(zip(weights, biases)):
        y = w @ h + b
        if layer_shift == index:
            y = y + y_shift
        h = np.tanh(y) if index < len(weights) - 1 else y
    return float(g @ h)


def test_gradients_match_finite_differences():
    # One network, block_size=1: its draws come from PCG64(SeedSequence(seed, spawn_key=(0,))) in
    # the documented order (input, partner, each layer's weights then bias, g).
    net = mlp([3, 4, 2], "tanh", Normal(0.7), bias_variance=0.1)
    seed = 21
    samples = sample(net, 1, seed=seed, block_size=1, correlation=True)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(0,))))
    x = rng.standard_normal((1, 3))[0]
    rng.standard_normal((1, 3))  # partner
    weights, biases = [], []
    for layer in net.dense_layers:
        weights.append(layer.weights.sample((1, layer.fan_out, layer.fan_in), rng=rng)[0])
        biases.append(layer.bias.sample((1, layer.fan_out), rng=rng)[0])
    g = rng.standard_normal((1, 2))[0]
    eps = 1e-6

    def fd(function, size):
        grad = np.empty(size)
        for i in range(size):
            e = np.zeros(size)
            e[i] = eps
            grad[i] = (function(e) - function(-e)) / (2 * eps)
        return grad

    dx1 = fd(lambda e: _forward_loss(weights, biases, x + e, g), 3)
    h = x
    xs = [x]
    for w, b in zip(weights[:-1], biases[:-1]):
        h = np.tanh(w @ h + b)
        xs.append(h)
    for index, layer in enumerate(net.dense_layers):
        dy = fd(lambda e: _forward_loss(weights, biases, x, g, e, index), layer.fan_out)
        recorded = samples.per_network["dy_second_moment"][0, index]
        assert recorded == pytest.approx(np.mean(dy**2), rel=1e-6)
        # dL/dW_l = outer(dL/dy_l, x_l): its mean square factorises
        dw = np.outer(dy, xs[index])
        product = recorded * samples.per_network["x_second_moment"][0, index]
        assert product == pytest.approx(np.mean(dw**2), rel=1e-6)
    assert samples.per_network["dx_second_moment"][0, 0] == pytest.approx(np.mean(dx1**2), rel=1e-6)
    y1 = weights[0] @ x + biases[0]
    assert samples.per_network["y_second_moment"][0, 0] == pytest.approx(np.mean(y1**2), rel=1e-12)


# --- reproducibility ----------------------------------------------------------------------------

NETWORKS = {
    "narrow relu, gaussian input": mlp([3, 3, 5, 3], "relu"),
    "wide tanh with bias": mlp([12, 20, 9], "tanh", bias_variance=0.2, output_activation=True),
    "truncated normal, fixed input": mlp([3, 10, 4], "gelu", explicit(1.0, "truncated_normal"), inputs=FixedInput(X)),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_bit_identical_whatever_the_chunk_size(name):
    net = NETWORKS[name]
    # Three groups of runs that differ only in chunking: paired with blocks of 1, paired with blocks
    # of 4, and unpaired (what check() samples) with blocks of 4. Every run is compared with the
    # first of its group, every recorded array.
    groups = [
        [sample(net, 150, seed=5, block_size=1, chunk_size=c, correlation=True) for c in (1, 7, 1000)],
        [sample(net, 150, seed=5, block_size=4, chunk_size=c, correlation=True) for c in (4, 28, 1000)],
        [sample(net, 150, seed=5, block_size=4, chunk_size=c) for c in (4, 28, 1000)],
    ]
    compared = 0
    for first, *others in groups:
        for other in others:
            assert first.per_network.keys() == other.per_network.keys()
            assert first.per_position.keys() == other.per_position.keys()
            for key, values in first.per_network.items():
                assert np.array_equal(values, other.per_network[key], equal_nan=True), key
            for key, values in first.per_position.items():
                assert np.array_equal(values, other.per_position[key], equal_nan=True), key
            assert np.array_equal(first.finite, other.finite)
            compared += 1
    assert compared == sum(len(group) - 1 for group in groups)  # every run built is compared
    unpaired = groups[2][0]
    for observable in OBSERVABLES:
        if observable in ("y_correlation", "y_cross_moment"):  # need paired inputs
            assert estimate(groups[0][0], observable, 2) == estimate(groups[0][2], observable, 2)
            continue
        assert estimate(groups[0][0], observable, 2) == estimate(groups[0][2], observable, 2)
        assert estimate(unpaired, observable, 2) == estimate(groups[2][2], observable, 2)


def test_default_sizes_and_prefix_property():
    net = NETWORKS["narrow relu, gaussian input"]
    whole = sample(net, 300, seed=9, correlation=True)
    assert sample(net, 300, seed=9, chunk_size=whole.block_size, correlation=True).per_network["y_cross"].tobytes() == (
        whole.per_network["y_cross"].tobytes()
    )
    # the first 100 networks of a larger sample are the networks of a smaller one
    prefix = sample(net, 100, seed=9, correlation=True)
    assert np.array_equal(prefix.per_network["dx_second_moment"], whole.per_network["dx_second_moment"][:100])
    assert sample(net, 100, seed=10, correlation=True).per_network["dx_second_moment"].tobytes() != (
        prefix.per_network["dx_second_moment"].tobytes()
    )
    seq = np.random.SeedSequence(9)
    assert np.array_equal(sample(net, 50, seed=seq, correlation=True).per_network["y_mean"], prefix.per_network["y_mean"][:50])
    assert seq.n_children_spawned == 0  # the caller's SeedSequence is not consumed


# --- the network is the unit --------------------------------------------------------------------


def _raw_last_layer_squares(rng: np.random.Generator, count: int, width: int, depth: int) -> np.ndarray:
    """y_L^2 per unit, shape (count, width), of He relu nets, by an independent plain loop."""
    out = np.empty((count, width))
    std = np.sqrt(2.0 / width)
    for t in range(count):
        h = rng.standard_normal(width)
        for layer in range(depth):
            y = (rng.standard_normal((width, width)) * std) @ h
            h = np.maximum(y, 0.0)
        out[t] = y * y
    return out


def test_pooled_standard_error_is_too_small():
    # Deep narrow relu net: each network has its own scale ||x_L||^2, so its units' y_L^2 are
    # positively correlated. The SE across networks matches the actual spread of the estimate over
    # independent seeds; the SE that pools all T*n units as independent is much too small.
    width, depth, count, repeats = 8, 10, 200, 40
    net = mlp([width] * (depth + 1), "relu")
    estimates = [estimate(sample(net, count, seed=1000 + r), "y_second_moment", depth) for r in range(repeats)]
    spread = float(np.std([e.value for e in estimates], ddof=1))
    network_se = float(np.sqrt(np.mean([e.se**2 for e in estimates])))
    rng = np.random.default_rng(7)
    pooled = []
    for _ in range(5):
        units = _raw_last_layer_squares(rng, count, width, depth).ravel()
        pooled.append(np.std(units, ddof=1) / np.sqrt(units.size))
    pooled_se = float(np.sqrt(np.mean(np.square(pooled))))
    # with 40 repeats the spread is known to about +-11% (1 sd); allow 3 sd
    assert 0.67 < network_se / spread < 1.5
    assert pooled_se / spread < 0.6  # measured: about 0.2
    assert pooled_se < network_se


# --- non-finite values --------------------------------------------------------------------------


def test_overflow_is_counted_and_excluded():
    # Var[w] = 1e200: forward, y_1 ~ 1e100 (y_1^2 finite) but y_2 ~ 1e200 so y_2^2 overflows;
    # backward, dL/dx_1 = W_1^T W_2^T g ~ 1e200 overflows too, so both layers count every network.
    net = mlp([3, 3, 3], "linear", Normal(sp.Float(1e200)), inputs=FixedInput(X))
    samples = sample(net, 20, seed=3)
    assert np.isfinite(samples.per_network["y_second_moment"][:, 0]).all()
    assert np.isinf(samples.per_network["y_second_moment"][:, 1]).all()
    assert np.isinf(samples.per_network["dx_second_moment"][:, 0]).all()
    assert (samples.overflow + samples.nan).tolist() == [20, 20]
    assert samples.excluded == 20 and not samples.finite.any()
    with pytest.raises(MonteCarloError, match="at least 2 finite networks"):
        estimate(samples, "y_second_moment", 1)


def test_dead_layers_are_counted_but_kept():
    # A width-1 relu net dies at layer 2 with probability 1/2; dead networks are finite samples.
    net = mlp([1, 1, 1], "relu", inputs=FixedInput((1.0,)))
    samples = sample(net, 400, seed=4)
    dead = int(np.count_nonzero(samples.per_network["x_second_moment"][:, 1] == 0))
    assert samples.zero_x[1] == dead > 0
    assert samples.zero_x[0] == 0 and samples.excluded == 0
    assert estimate(samples, "x_second_moment", 2).n == 400


# --- bad input ----------------------------------------------------------------------------------


def test_symbolic_width_is_refused():
    n = sp.Symbol("n", positive=True, integer=True)
    with pytest.raises(MonteCarloError, match="symbolic widths.*n"):
        sample(mlp([n, 4, 2]), 10, seed=0)


def test_symbolic_activation_parameter_is_refused():
    net = mlp([3, 4, 2], activation("leaky_relu", a=None))
    with pytest.raises(MonteCarloError, match="layer 1.*symbolic parameters"):
        sample(net, 10, seed=0)


def test_symbolic_weight_law_is_refused():
    sigma = sp.Symbol("sigma", positive=True)
    with pytest.raises(MonteCarloError, match="layer 0.*symbolic"):
        sample(mlp([3, 4, 2], "relu", Normal(sigma)), 10, seed=0)


@pytest.mark.parametrize("count", [0, -3, 2.5, True, "10"])
def test_bad_sample_count(count):
    with pytest.raises(MonteCarloError, match="samples"):
        sample(mlp([3, 4, 2]), count, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": 0, "chunk_size": 0}, "chunk_size"),
        ({"seed": 0, "block_size": -2}, "block_size"),
        ({"seed": 0, "partner": (1.0, 2.0)}, "partner"),
        ({"seed": 0, "partner": (1.0, float("nan"), 2.0)}, "partner"),
    ],
)
def test_bad_sample_options(kwargs, match):
    with pytest.raises(MonteCarloError, match=match):
        sample(mlp([3, 4, 2]), 5, **kwargs)


def test_unknown_observable_names_the_accepted_ones():
    samples = sample(mlp([3, 4, 2]), 5, seed=0)
    with pytest.raises(MonteCarloError, match="'y_var'.*y_variance"):
        estimate(samples, "y_var", 1)


@pytest.mark.parametrize("layer", [0, 3, -1, True, 1.0])
def test_layer_out_of_range(layer):
    samples = sample(mlp([3, 4, 2]), 5, seed=0)
    with pytest.raises(MonteCarloError, match="from 1 to 2"):
        estimate(samples, "y_mean", layer)


def test_errors_are_varprop_errors():
    assert issubclass(MonteCarloError, VarpropError)


def test_every_layer_kind_has_a_sampler():
    layer_kinds = typing.get_args(spec.Layer)
    assert layer_kinds
    for kind in layer_kinds:
        assert kind in layer_step.registry, kind
    with pytest.raises(MonteCarloError, match=", ".join(sorted(kind.__name__ for kind in layer_kinds))):
        layer_step(object())


@pytest.mark.parametrize("law", [Normal(0.5), Uniform(1), TruncatedNormal(1)])
def test_every_weight_law_samples_through_its_own_sample_method(law):
    # y = W x, x fixed: E[y^2] = Var[w] ||x||^2 for any zero-mean law.
    net = Network((Dense(3, 4, law),), FixedInput(X))
    samples = sample(net, 8000, seed=30)  # enough to resolve 5 % with 90 % power
    assert check(float(law.variance) * NORM2, samples, "y_second_moment", 1, rtol=0.05) == PASS
