"""The conditional-Gaussian engine samples the same law as full weight matrices, observable by observable.

For every observable the conditional engine serves (every statistic of every signal, gradient and
weight gradient at every position, the norm ratio, and the cross moments of an input pair), the
per-network values whose mean the estimators take are compared between the two engines by a
two-sample Kolmogorov-Smirnov test at small widths (2-6), with Holm's procedure over all the
tests of one network at level ALPHA. A conditional step with a deliberate error (the projection
(I - P_x) left out of the backward pass) must be rejected by the same tests: they have power.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.stats import ks_2samp

from varprop.montecarlo import MonteCarloError, sample, select_engine
from varprop.montecarlo.engines import CONDITIONAL, FULL, ConditionalDenseStep, Engine, conditional_step
from varprop.montecarlo.estimators import network_values
from varprop.montecarlo.verdict import holm
from varprop.network import Dense, FixedInput, GaussianInput, Network, Nonlinearity, mlp
from varprop.activations import activation
from varprop.observables import Gradient, Mean, NormRatio, SecondMoment, Signal, WeightGradient
from varprop.weights import Normal, Uniform

ALPHA = 0.01
NETWORKS = 20_000


def _networks() -> dict[str, tuple[Network, dict]]:
    relu, tanh = activation("relu"), activation("tanh")
    return {
        "relu 3-4-5-2": (mlp([3, 4, 5, 2]), {}),
        "tanh 2-2-2-2, Gaussian bias": (mlp([2, 2, 2, 2], "tanh", bias_variance=0.5), {}),
        "nonzero weight mean, fixed input, trailing relu": (
            Network((Dense(4, 3, Normal(0.3, 0.2)), Nonlinearity(relu), Dense(3, 6, Normal(0.25, -0.1)),
                     Nonlinearity(tanh)), FixedInput((1.0, -0.5, 2.0, 0.25))),
            {},
        ),
        "uniform bias": (Network((Dense(3, 3, Normal(0.5), Uniform(1)), Nonlinearity(relu), Dense(3, 2, Normal(1))),
                                 GaussianInput(2)), {}),
        "input pair, relu 3-3-3-3 with bias": (mlp([3, 3, 3, 3], bias_variance=0.2), {"correlation": True}),
        "input pair, relu 2-2-2-2-2": (mlp([2, 2, 2, 2, 2]), {"correlation": True}),
        "fixed partner, relu 2-5-2": (mlp([2, 5, 2], inputs=FixedInput((1.0, 0.5))), {"partner": (0.3, -1.0)}),
    }


NETWORK_CASES = _networks()


def _observed(samples) -> dict[str, np.ndarray]:
    """Per-network values of every observable the estimators serve, by a readable name."""
    network = samples.network
    out: dict[str, np.ndarray] = {}
    for p in range(-1, len(network.layers)):
        tensors = [Signal(p), Gradient(p)]
        if p in network.dense_positions:
            tensors.append(WeightGradient(p))
        for tensor in tensors:
            for statistic in (Mean, SecondMoment):
                out[f"{statistic.__name__}({tensor})"] = network_values(statistic(tensor), samples)
            # Variance reads both per-network statistics jointly: test a joint functional of the pair too.
            first, second = network_values(Mean(tensor), samples), network_values(SecondMoment(tensor), samples)
            out[f"Variance part ({tensor})"] = second - first * first
        out[f"NormRatio(Signal({p}))"] = network_values(NormRatio(Signal(p)), samples)
        if samples.paired:
            column = samples.column(p)
            for key in ("signal_cross", "signal_partner_second_moment"):
                out[f"{key}@{p}"] = samples.per_position[key][:, column]
    return out


def _rejected(first, second) -> list[str]:
    """The observables whose two samples Holm's procedure rejects as equal in law (KS tests)."""
    a, b = _observed(first), _observed(second)
    names, p_values = [], []
    for name in a:
        x, y = a[name], b[name]
        if np.all(x == x[0]) and np.all(y == y[0]):  # constant (a fixed input): must agree exactly
            assert x[0] == pytest.approx(y[0], rel=1e-12, abs=1e-300), name
            continue
        names.append(name)
        p_values.append(ks_2samp(x, y).pvalue)
    assert len(names) > 10
    return [name for name, flag in zip(names, holm(p_values, ALPHA)) if flag]


@pytest.mark.parametrize("case", NETWORK_CASES)
def test_conditional_engine_samples_the_law_of_full_matrices(case):
    network, options = NETWORK_CASES[case]
    full = sample(network, NETWORKS, seed=11, engine="full", **options)
    conditional = sample(network, NETWORKS, seed=12, engine="conditional", **options)
    assert (full.engine, conditional.engine) == ("full", "conditional")
    assert _rejected(full, conditional) == []


class _NoProjectionStep(ConditionalDenseStep):
    """A wrong conditional step: W^T d = sum_i e_i (Z e_i . d) + g, without (I - P) on g."""

    def backward(self, params, noise, cache, grad):
        d = grad[:, 0]
        result = noise[0] * (self.std * np.sqrt(np.sum(d * d, axis=-1)))[:, None]
        for v, inverse, u in cache:  # e_i = v inverse, Z e_i = std u
            result += v * (self.std * np.sum(u * d, axis=-1) * inverse * inverse)[:, None]
        return result[:, None, :]


def _wrong_step(layer, inputs=1):
    return _NoProjectionStep(layer, inputs) if isinstance(layer, Dense) else conditional_step(layer, inputs)


WRONG = Engine("no-projection", _wrong_step, CONDITIONAL.unsupported, CONDITIONAL.cost)


@pytest.mark.parametrize("case", ["relu 3-4-5-2", "input pair, relu 3-3-3-3 with bias"])
def test_a_conditional_step_without_the_projection_is_rejected(case):
    network, options = NETWORK_CASES[case]
    full = sample(network, NETWORKS, seed=11, engine="full", **options)
    wrong = sample(network, NETWORKS, seed=12, engine=WRONG, **options)
    rejected = _rejected(full, wrong)
    assert rejected, "the law tests cannot tell a missing projection from the exact step"
    # Only the backward pass is wrong: every rejected observable is a gradient's.
    assert all("Gradient" in name for name in rejected), rejected


def test_auto_picks_the_conditional_engine_where_it_is_valid():
    assert select_engine("auto", mlp([4, 4, 4])) is CONDITIONAL
    uniform = mlp([4, 4, 4], init=Uniform(1))
    assert select_engine("auto", uniform) is FULL
    assert sample(mlp([3, 3]), 4, seed=0, engine="auto").engine == "conditional"


def test_an_explicit_conditional_engine_on_a_non_gaussian_network_says_why():
    with pytest.raises(MonteCarloError, match=r"conditional engine cannot sample.*Uniform.*Gaussian"):
        sample(mlp([4, 4, 4], init=Uniform(1)), 10, seed=0, engine="conditional")
    with pytest.raises(MonteCarloError, match=r"unknown engine 'fast'.*auto, full, conditional"):
        sample(mlp([4, 4]), 10, seed=0, engine="fast")


def test_conditional_samples_do_not_depend_on_the_chunk():
    network = mlp([9, 12, 3], bias_variance=0.1)  # wider than the narrow-sum threshold, and narrow
    whole = sample(network, 300, seed=5, engine="conditional", block_size=16, correlation=True)
    for chunk in (16, 48, 1000):
        part = sample(network, 300, seed=5, engine="conditional", block_size=16, chunk_size=chunk, correlation=True)
        for name, array in whole.per_position.items():
            assert np.array_equal(array, part.per_position[name]), (name, chunk)


def test_engines_pickle_by_name():
    import pickle

    assert pickle.loads(pickle.dumps(CONDITIONAL)) is CONDITIONAL
    assert dataclasses.replace(CONDITIONAL, name="copy").name == "copy"
