"""Observables at network positions: the per-position record, the estimator registry, and moments
that the per-dense-layer record could not see (a trailing nonlinearity, a gradient at the input,
gradient and weight-gradient means).

Each statistical assertion is decided by the checker's own verdict (``judge``) against a value
worked out by hand, and each PASS has a sibling with a wrong formula that FAILs. The per-position
arrays of one network are compared with a plain numpy forward and backward pass.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from varprop.activations import activation
from varprop.montecarlo import FAIL, PASS, MonteCarloError, estimate, judge, layer_step, network_values, per_network_values, sample
from varprop.montecarlo.check import _measure_one, _observable
from varprop.montecarlo.estimators import health
from varprop.network import (LAYER_CLASSES, BatchNorm, Conv, Dense, Dropout, FixedInput, GaussianInput, LayerNorm, Network, Nonlinearity,
                             Residual, RMSNorm, mlp)
from varprop.observables import (
    OBSERVABLES,
    PAIR_OBSERVABLES,
    Gradient,
    Mean,
    NormRatio,
    Observable,
    SecondMoment,
    Signal,
    Variance,
    WeightGradient,
    from_name,
)
from varprop.weights import Normal

X = (0.5, -1.0, 2.0)  # ||x||^2 = 5.25
NORM2 = 5.25
ALPHA = 1e-3  # as in test_sampler: a wrong formula FAILs by many SEs whatever the level


def verdict(prediction: float, samples, observable: Observable, rtol: float = 0.05) -> str:
    est = estimate(samples, observable)
    return judge(prediction, est.value, est.se, est.n, rtol=rtol, alpha=ALPHA).outcome


# --- every spec class has a Monte Carlo rule ---------------------------------------------------


def _missing(registry, classes) -> list[str]:
    """Classes that fall through to ``registry``'s fallback (the rule for ``object``)."""
    fallback = registry.dispatch(object)
    return [cls.__name__ for cls in classes if registry.dispatch(cls) is fallback]


def test_every_observable_and_layer_class_has_a_monte_carlo_rule():
    assert OBSERVABLES and LAYER_CLASSES
    assert _missing(network_values, OBSERVABLES) == []
    assert _missing(layer_step, LAYER_CLASSES) == []
    # and each rule runs: every statistic at the last position of a network holding every layer kind
    # a pair of fixed inputs, so that the pair statistics (cross moment, correlation) run too
    net = Network((Conv(1, 1, 2, 3, padding=1, weights=Normal(0.5)), Dense(4, 4, Normal(0.5)),
                   Nonlinearity(activation("tanh")),
                   Residual((Dense(4, 4, Normal(0.25)), Nonlinearity(activation("relu")), Dense(4, 4, Normal(0.5))), 0.5),
                   Dropout(0.75), LayerNorm(4), RMSNorm(4)), FixedInput(X, partner=(0.5, 1.0, -1.0)))
    assert {type(layer) for layer in net.layers} == set(LAYER_CLASSES) - {BatchNorm}
    samples = sample(net, 20, seed=0)
    for cls in OBSERVABLES:
        for position in (0, 2, 4, 6):
            assert np.isfinite(estimate(samples, cls(Signal(position))).value), cls
    # BatchNorm carries a batch, not a pair: every statistic of one input runs in a network of its own
    batched = sample(Network((Dense(3, 4, Normal(0.5)), BatchNorm(4, 3, eps=0.1), Nonlinearity(activation("relu")),
                              LayerNorm(4))), 20, seed=0)
    for cls in OBSERVABLES:
        if cls not in PAIR_OBSERVABLES:
            assert np.isfinite(estimate(batched, cls(Signal(1))).value), cls


def test_the_registry_check_catches_a_class_without_a_rule():
    # The sibling of the test above: a statistic class nobody registered is reported, and estimating
    # it raises a MonteCarloError that names the known ones.
    class Skewness(Observable):
        statistic = "skewness"

    class Pooling:
        pass

    assert _missing(network_values, (*OBSERVABLES, Skewness)) == ["Skewness"]
    assert _missing(layer_step, (*LAYER_CLASSES, Pooling)) == ["Pooling"]
    samples = sample(mlp([3, 4, 2]), 5, seed=0)
    with pytest.raises(MonteCarloError, match="Skewness.*Mean, SecondMoment, Variance, NormRatio"):
        network_values(Skewness(Signal(0)), samples)


# --- moments the per-dense-layer record could not see --------------------------------------------


def test_output_of_a_trailing_nonlinearity():
    # y = W x with W_ij ~ N(0, v), x fixed: y_i ~ N(0, q), q = v ||x||^2, exactly. Then relu(y) has
    # E = sqrt(q / (2 pi)), E[.^2] = q / 2, Var = q/2 - q/(2 pi), and ||relu(y)||^2/||x||^2 has mean
    # n_out v / 2; the gradient dL/dy = g 1[y > 0] has E[.^2] = 1/2.
    v, n_out = 0.4, 5
    q = v * NORM2
    net = Network((Dense(3, n_out, Normal(v)), Nonlinearity(activation("relu"))), FixedInput(X))
    samples = sample(net, 20000, seed=41)
    out = Signal(1)
    assert verdict(q / 2, samples, SecondMoment(out)) == PASS
    assert verdict(q, samples, SecondMoment(out)) == FAIL  # relu's 1/2 forgotten
    assert verdict(math.sqrt(q / (2 * math.pi)), samples, Mean(out)) == PASS
    assert verdict(math.sqrt(q / math.pi), samples, Mean(out)) == FAIL  # the mean of |y|, not relu(y)
    assert verdict(q / 2 - q / (2 * math.pi), samples, Variance(out)) == PASS
    assert verdict(q / 2, samples, Variance(out)) == FAIL  # the mean's square forgotten
    assert verdict(n_out * v / 2, samples, NormRatio(out)) == PASS
    assert verdict(n_out * v, samples, NormRatio(out)) == FAIL
    assert verdict(0.5, samples, SecondMoment(Gradient(0))) == PASS
    assert verdict(1.0, samples, SecondMoment(Gradient(0))) == FAIL  # relu' ignored
    # the loss gradient at the output is g itself
    assert verdict(1.0, samples, SecondMoment(Gradient(1))) == PASS


def test_gradient_at_the_input_of_a_leading_nonlinearity():
    # tanh first, then y = W tanh(x) with x fixed: dL/dx_j = tanh'(x_j) (W^T g)_j, W and g
    # independent, E[(W^T g)_j^2] = n_out v. So E[(dL/dx)^2] = n_out v mean_j sech^4(x_j); its mean is 0.
    v, n_out = 0.5, 4
    x = np.array(X)
    sech2 = 1 / np.cosh(x) ** 2
    net = Network((Nonlinearity(activation("tanh")), Dense(3, n_out, Normal(v))), FixedInput(X))
    samples = sample(net, 60000, seed=42)
    assert verdict(n_out * v * float(np.mean(sech2**2)), samples, SecondMoment(Gradient(-1))) == PASS
    assert verdict(n_out * v * float(np.mean(sech2)), samples, SecondMoment(Gradient(-1))) == FAIL  # tanh' not squared
    assert verdict(n_out * v, samples, SecondMoment(Gradient(-1))) == FAIL  # tanh' forgotten
    assert verdict(0.0, samples, Mean(Gradient(-1)), rtol=0.05) == PASS
    # the signal after the leading tanh is fixed: known without error
    assert estimate(samples, SecondMoment(Signal(0))).value == pytest.approx(float(np.mean(np.tanh(x) ** 2)), rel=1e-15)


def test_gradient_and_weight_gradient_means():
    # Every gradient is linear in g ~ N(0, I), g independent of the weights, so its mean is exactly 0
    # at every position, and so is the weight gradient's (dL/dW = (dL/dy) x^T, mean(dy) mean(x) per
    # network). Dense 2 sees x_2 = relu(y_1), y_1 ~ N(0, q): E[x_2^2] = q/2 and E[(dL/dW_2)^2] = q/2.
    v = 0.5
    q = v * NORM2
    net = mlp([3, 6, 4], "relu", Normal(v), inputs=FixedInput(X))  # positions: dense1, act1, dense2
    samples = sample(net, 40000, seed=43)
    for position in range(-1, 3):
        assert verdict(0.0, samples, Mean(Gradient(position)), rtol=0.05) == PASS, position
    abs_g = math.sqrt(2 / math.pi)  # E|g|: the mean of the gradient's magnitude, not of the gradient
    assert verdict(abs_g, samples, Mean(Gradient(2)), rtol=0.05) == FAIL
    for position in net.dense_positions:
        assert verdict(0.0, samples, Mean(WeightGradient(position)), rtol=0.05) == PASS, position
    assert verdict(abs_g * math.sqrt(q / (2 * math.pi)), samples, Mean(WeightGradient(2)), rtol=0.05) == FAIL
    assert verdict(q / 2, samples, SecondMoment(WeightGradient(2))) == PASS
    assert verdict(q, samples, SecondMoment(WeightGradient(2))) == FAIL  # relu's 1/2 forgotten
    # the legacy name is the same observable, with the same estimate
    assert estimate(samples, "dw_second_moment", 2) == estimate(samples, SecondMoment(WeightGradient(2)))


# --- the per-position record against a plain numpy pass -----------------------------------------

#: Dense layers at uneven positions (0, 2, 5), stacked and trailing nonlinearities.
ODD = Network(
    (
        Dense(3, 4, Normal(0.7), Normal(0.1)),
        Nonlinearity(activation("tanh")),
        Dense(4, 5, Normal(0.4), Normal(0.2)),
        Nonlinearity(activation("tanh")),
        Nonlinearity(activation("relu")),
        Dense(5, 2, Normal(0.3)),
        Nonlinearity(activation("tanh")),
    ),
    GaussianInput(1),
)


def _numpy_pass(network: Network, seed: int):
    """Signals of the input and partner, and gradients, at every position of network 0 (block_size=1)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(0,))))
    n_in = network.widths[0]
    x = Normal(1).sample((1, n_in), rng=rng)[0]
    partner = Normal(1).sample((1, n_in), rng=rng)[0]
    params = []
    for layer in network.layers:
        if isinstance(layer, Dense):
            w = layer.weights.sample((1, layer.fan_out, layer.fan_in), rng=rng)[0]
            b = layer.bias.sample((1, layer.fan_out), rng=rng)[0] if layer.bias is not None else 0.0
            params.append((w, b))
        else:
            params.append(None)
    g = rng.standard_normal((1, network.widths[-1]))[0]

    def forward(h):
        out = [h]
        for layer, p in zip(network.layers, params):
            if isinstance(layer, Dense):
                h = p[0] @ h + p[1]
            elif layer.activation.name == "tanh":
                h = np.tanh(h)
            else:
                h = np.maximum(h, 0.0)
            out.append(h)
        return out  # index p + 1 is position p

    signals, partners = forward(x), forward(partner)
    grads = [None] * len(signals)
    grads[-1] = g
    for index in range(len(network.layers) - 1, -1, -1):
        layer, below = network.layers[index], signals[index]
        if isinstance(layer, Dense):
            grads[index] = params[index][0].T @ grads[index + 1]
        elif layer.activation.name == "tanh":
            grads[index] = (1 - np.tanh(below) ** 2) * grads[index + 1]
        else:
            grads[index] = (below > 0) * grads[index + 1]
    loss = lambda h: float(g @ forward(h)[-1])  # noqa: E731
    return signals, partners, grads, loss, x


def test_per_position_arrays_match_a_plain_numpy_pass():
    seed = 22
    samples = sample(ODD, 1, seed=seed, block_size=1, correlation=True)
    signals, partners, grads, loss, x = _numpy_pass(ODD, seed)
    pp = samples.per_position
    for column, (h, h2, d) in enumerate(zip(signals, partners, grads)):
        close = {"rel": 1e-12, "abs": 1e-15}
        assert pp["signal_mean"][0, column] == pytest.approx(np.mean(h), **close), column
        assert pp["signal_second_moment"][0, column] == pytest.approx(np.mean(h * h), **close), column
        assert pp["signal_partner_second_moment"][0, column] == pytest.approx(np.mean(h2 * h2), **close)
        assert pp["signal_cross"][0, column] == pytest.approx(np.mean(h * h2), **close), column
        assert pp["gradient_mean"][0, column] == pytest.approx(np.mean(d), **close), column
        assert pp["gradient_second_moment"][0, column] == pytest.approx(np.mean(d * d), **close), column
        assert pp["norm_ratio"][0, column] == pytest.approx((h @ h) / (x @ x), **close), column
    # the gradient at the input, by central differences of the loss (an independent route)
    eps = 1e-6
    fd = np.array([(loss(x + eps * e) - loss(x - eps * e)) / (2 * eps) for e in np.eye(x.size)])
    assert samples.per_position["gradient_second_moment"][0, 0] == pytest.approx(np.mean(fd**2), rel=1e-6)
    # the weight gradient of dense 3 (position 5) against the outer product itself
    dw = np.outer(grads[6], signals[5])
    assert per_network_values(samples, Mean(WeightGradient(5)))[0] == pytest.approx(np.mean(dw), rel=1e-12)
    assert per_network_values(samples, SecondMoment(WeightGradient(5)))[0] == pytest.approx(np.mean(dw**2), rel=1e-12)


def test_legacy_arrays_are_the_per_position_columns():
    # y_l, dy_l at dense layer l's position q; x_l, dx_l, the norm ratio at q - 1; for evenly spaced
    # dense layers (an MLP) they are views, for uneven ones (ODD) copies of the same values.
    for net in (ODD, mlp([3, 5, 4, 2], "tanh")):
        samples = sample(net, 30, seed=7, correlation=True)
        pp, legacy = samples.per_position, samples.per_network
        columns = [q + 1 for q in net.dense_positions]
        for name, source, shift in [
            ("y_mean", "signal_mean", 0), ("y_second_moment", "signal_second_moment", 0),
            ("y_cross", "signal_cross", 0), ("y_partner_second_moment", "signal_partner_second_moment", 0),
            ("x_mean", "signal_mean", -1), ("x_second_moment", "signal_second_moment", -1),
            ("dy_second_moment", "gradient_second_moment", 0), ("dx_second_moment", "gradient_second_moment", -1),
            ("x_norm_ratio", "norm_ratio", -1),
        ]:
            assert legacy[name].shape == (30, net.depth)
            assert np.array_equal(legacy[name], pp[source][:, [c + shift for c in columns]]), name
            assert not legacy[name].flags.writeable
        for layer in range(1, net.depth + 1):
            for name in ("y_variance", "dw_second_moment", "x_norm_ratio", "x_mean"):
                assert estimate(samples, name, layer) == estimate(samples, from_name(name, layer, net)), (name, layer)
    assert np.shares_memory(samples.per_network["x_mean"], samples.per_position["signal_mean"])


def test_per_network_values_of_a_variance_is_its_second_moment_part():
    samples = sample(mlp([3, 4, 2], "relu", inputs=FixedInput(X)), 200, seed=8)
    values = per_network_values(samples, Variance(Signal(1)))
    assert np.array_equal(values, samples.per_position["signal_second_moment"][:, 2])
    with pytest.raises(MonteCarloError, match="position 3 is not in the network.*-1.*2"):
        per_network_values(samples, Mean(Signal(3)))


# --- health per position -------------------------------------------------------------------------


def test_dead_and_overflowing_networks_per_position():
    # A width-1 relu net with a trailing relu: act1 is dead in about half of the networks, and then
    # everything after it is zero too. Dead networks are finite and stay in the estimates.
    net = mlp([1, 1, 1], "relu", inputs=FixedInput((1.0,)), output_activation=True)
    samples = sample(net, 400, seed=4)
    signal = samples.per_position["signal_second_moment"]
    dead = int(np.count_nonzero(signal[:, 2] == 0))
    assert samples.position_zero.tolist()[2] == dead == samples.zero_x[1] > 0
    assert samples.position_zero[0] == 0 and samples.position_zero[4] >= dead
    assert health(samples, SecondMoment(Signal(1)))["zero_networks"] == dead
    assert health(samples, SecondMoment(Signal(3)))["zero_networks"] == samples.position_zero[4]
    assert estimate(samples, SecondMoment(Signal(3))).n == 400
    # Var[w] = 1e200 in a linear net: y_1 ~ 1e100 and the gradient there (~1e100) square to finite
    # values, but y_2^2 and the squared gradient at the input (~1e200) overflow. Each position
    # counts its own; a network with any non-finite value is excluded from every estimate.
    huge = mlp([3, 3, 3], "linear", Normal(1e200), inputs=FixedInput(X))
    bad = sample(huge, 20, seed=3)  # positions: input, dense1, act1, dense2
    assert (bad.position_overflow + bad.position_nan).tolist() == [20, 0, 0, 20]
    assert (bad.overflow + bad.nan).tolist() == [20, 20]  # dense l: its input or output position
    at_dense1 = health(bad, SecondMoment(Signal(0)))
    assert (at_dense1["overflow"], at_dense1["nan"], at_dense1["excluded"]) == (0, 0, 20)
    weights1 = health(bad, SecondMoment(WeightGradient(0)))  # reads positions -1 and 0
    assert weights1["overflow"] + weights1["nan"] == 20
    assert np.isfinite(bad.per_position["signal_second_moment"][:, :3]).all()


# --- bad input -------------------------------------------------------------------------------------


def test_observables_not_in_the_network_are_refused():
    samples = sample(mlp([3, 4, 2]), 5, seed=0)  # positions -1 .. 2; dense at 0 and 2
    with pytest.raises(MonteCarloError, match="position 5 is not in the network"):
        estimate(samples, SecondMoment(Signal(5)))
    with pytest.raises(MonteCarloError, match="weight gradient needs a dense layer.*act1"):
        estimate(samples, Mean(WeightGradient(1)))
    with pytest.raises(MonteCarloError, match="give no layer"):
        estimate(samples, SecondMoment(Signal(0)), 1)
    with pytest.raises(MonteCarloError, match="unknown observable 3.*Mean.*y_second_moment"):
        estimate(samples, 3, 1)
    with pytest.raises(MonteCarloError, match="position must be an integer from -1.*to 2, got 7"):
        samples.column(7)


# --- the checker's measurement takes an Observable ------------------------------------------------


def test_measure_takes_an_observable_or_a_name():
    # The checker measures claims whose observable is an Observable (layer None) or a claim-file
    # name with a dense layer; the same tensor gives the same estimate either way.
    v = 0.5
    net = mlp([3, 6, 4], "relu", Normal(v), inputs=FixedInput(X))
    typed = SimpleNamespace(name="typed", observable=SecondMoment(Signal(1)), layer=None, value=v * NORM2 / 2)
    named = SimpleNamespace(name="named", observable="x_second_moment", layer=2, value=v * NORM2 / 2)
    wrong = SimpleNamespace(name="wrong", observable=SecondMoment(Signal(1)), layer=None, value=v * NORM2)
    drawn = sample(net, 20000, seed=1)
    measured = [_measure_one(drawn, _observable(claim, net), 3.0) for claim in (typed, named, wrong)]
    (est, state, note), (est_named, _, _), (est_wrong, _, _) = measured
    assert est == est_named == est_wrong and note == ""
    assert set(state) == {"excluded", "overflow", "nan", "zero_networks", "zero_input_networks", "skewness",
                          "skew_minimum"}
    assert judge(typed.value, est.value, est.se, est.n, rtol=0.03, alpha=ALPHA).outcome == PASS
    assert judge(wrong.value, est.value, est.se, est.n, rtol=0.03, alpha=ALPHA).outcome == FAIL
    bad = SimpleNamespace(name="bad", observable="y_second_moment", layer=5, value=1.0)
    with pytest.raises(MonteCarloError, match="claim 'bad'.*layer.*from 1 to 2"):
        _observable(bad, net)
