"""Sampling only what some observables read, and sampling several networks concurrently.

``sample(..., observables=...)`` stops the forward pass at the highest signal read and runs the
backward pass only as far down as the lowest gradient read: what it records must be the whole
sample's values bit for bit, and what it did not record must be refused, never read as NaN.
``sample_each`` runs several requests through one executor and must give each request's
``sample`` result bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from varprop.montecarlo import MonteCarloError, estimate, sample
from varprop.montecarlo.estimators import health, per_network_values
from varprop.montecarlo import SampleRequest, sample_each
from varprop.montecarlo.sampler import recorded_extent
from varprop.activations import activation
from varprop.network import BatchNorm, Dense, Dropout, GaussianInput, Network, Nonlinearity, Residual, mlp
from varprop.observables import Correlation, Gradient, Mean, NormRatio, SecondMoment, Signal, WeightGradient
from varprop.weights import Normal, Uniform

RELU = activation("relu")


def _residual() -> Network:
    block = (Dense(6, 6, Normal(0.2)), Nonlinearity(RELU), Dense(6, 6, Normal(0.2)))
    return Network((Dense(6, 6, Normal(1 / 3)), Residual(block), Nonlinearity(RELU), Dense(6, 6, Normal(1 / 3))))


NETWORKS = {
    "conditional mlp": (mlp([5, 7, 6, 4]), "conditional"),
    "full mlp": (mlp([5, 7, 6, 4], init=Uniform(0.6)), "full"),
    "residual": (_residual(), "conditional"),
    "dropout": (Network((Dense(6, 6, Normal(1 / 3)), Nonlinearity(RELU), Dropout(keep=0.75), Dense(6, 6, Normal(0.5)))),
                "conditional"),
    "batchnorm": (Network((Dense(5, 5, Normal(0.4)), BatchNorm(5, 6, eps=0), Nonlinearity(RELU), Dense(5, 5, Normal(0.4)))),
                  "full"),
}
COUNT = 1500


def _wanted(network: Network) -> list[list]:
    """Observable sets: forward only (low and high), a gradient high up, a weight gradient, everything."""
    last = len(network.layers) - 1
    return [[Mean(Signal(0))], [SecondMoment(Signal(1)), NormRatio(Signal(2))], [SecondMoment(Gradient(last - 1))],
            [SecondMoment(WeightGradient(last)), Mean(Signal(0))], [SecondMoment(Gradient(-1))]]


@pytest.mark.parametrize("name", NETWORKS)
def test_what_is_recorded_is_the_whole_samples_values_bit_for_bit(name):
    network, engine = NETWORKS[name]
    whole = sample(network, COUNT, seed=11, engine=engine)
    assert whole.extent is None
    for wanted in _wanted(network):
        part = sample(network, COUNT, seed=11, engine=engine, observables=wanted)
        assert part.extent == recorded_extent(network, wanted)
        for observable in wanted:
            assert np.array_equal(per_network_values(part, observable), per_network_values(whole, observable))
            assert estimate(part, observable) == estimate(whole, observable)
            assert health(part, observable) == health(whole, observable)
        assert np.array_equal(part.finite, whole.finite)


def test_the_extent_is_the_least_that_serves_the_observables():
    network = mlp([5, 7, 6, 4])  # positions -1 .. 4
    assert recorded_extent(network, [Mean(Signal(0))]) == (0, None)
    assert recorded_extent(network, [Mean(Signal(0)), SecondMoment(Signal(3))]) == (3, None)
    assert recorded_extent(network, [SecondMoment(Gradient(2))]) == (4, 2)
    assert recorded_extent(network, [SecondMoment(WeightGradient(2)), SecondMoment(Gradient(3))]) == (4, 2)
    assert recorded_extent(network, [SecondMoment(Gradient(-1))]) is None


def test_what_was_not_recorded_is_refused_not_read_as_nan():
    network = mlp([5, 7, 6, 4])
    forward = sample(network, 200, seed=1, engine="conditional", observables=[SecondMoment(Signal(2))])
    for observable in (SecondMoment(Signal(3)), SecondMoment(Gradient(0)), SecondMoment(WeightGradient(2))):
        with pytest.raises(MonteCarloError, match="did not record"):
            estimate(forward, observable)
    assert np.isnan(forward.per_position["signal_second_moment"][:, 5]).all()  # kept out of reach, not zero
    for gradient in ("gradient_mean", "gradient_second_moment"):  # no gradient recorded: rows never written
        assert np.isnan(forward.per_position[gradient]).all() and not forward.per_position[gradient].flags.writeable
    assert forward.finite.all()  # the values not recorded take no part in which networks are finite
    backward = sample(network, 200, seed=1, engine="conditional", observables=[SecondMoment(Gradient(2))])
    with pytest.raises(MonteCarloError, match="gradient at position 1"):
        estimate(backward, SecondMoment(Gradient(1)))
    estimate(backward, SecondMoment(Signal(0)))  # a full forward pass was needed, and is recorded


def test_a_pair_records_its_cross_moments_up_to_the_top():
    network = Network(mlp([6, 6, 6]).layers, GaussianInput(1, correlation=0.3))
    whole = sample(network, 800, seed=2, engine="conditional")
    part = sample(network, 800, seed=2, engine="conditional", observables=[Correlation(Signal(1))])
    assert estimate(part, Correlation(Signal(1))) == estimate(whole, Correlation(Signal(1)))
    with pytest.raises(MonteCarloError, match="did not record"):
        estimate(part, Correlation(Signal(2)))


@pytest.mark.parametrize("bad, match", [([], "empty"), ("signal", "sequence of observables"),
                                         (Mean(Signal(0)), "sequence of observables"),
                                         ([Mean(Signal(9))], "position 9 is not in the network"),
                                         ([object()], "expected an observable")])
def test_bad_observables_are_named(bad, match):
    with pytest.raises(MonteCarloError, match=match):
        sample(mlp([4, 4, 4]), 10, seed=0, observables=bad)


def test_sample_each_gives_each_requests_sample_bit_for_bit_on_two_processes():
    requests = [SampleRequest(network, count, seed, engine, tuple(wanted) if wanted else None)
                for (network, engine), count, seed, wanted in (
                    (NETWORKS["conditional mlp"], 300, 1, [Mean(Signal(1))]),
                    (NETWORKS["full mlp"], 9_000, 2, None),  # several ranges
                    (NETWORKS["batchnorm"], 50, 3, [SecondMoment(Gradient(0))]),
                    (NETWORKS["residual"], 2_000, 4, [SecondMoment(Signal(3))]))]
    done: list[tuple[int, int]] = []
    requests[1] = SampleRequest(*NETWORKS["full mlp"][:1], 9_000, 2, "full",
                                progress=lambda k, n: done.append((k, n)))
    concurrent = list(sample_each(requests, executor="processes=2"))
    assert len(concurrent) == len(requests)
    for request, got in zip(requests, concurrent):
        alone = sample(request.network, request.samples, seed=request.seed, engine=request.engine,
                       observables=None if request.observables is None else list(request.observables))
        assert got.extent == alone.extent and got.count == request.samples
        for key in alone.per_position:
            assert np.array_equal(got.per_position[key], alone.per_position[key], equal_nan=True), key
        assert np.array_equal(got.finite, alone.finite)
    assert done[-1] == (9_000, 9_000) and [k for k, _ in done] == sorted(k for k, _ in done)


def test_sample_each_checks_every_request_before_sampling_any():
    good = SampleRequest(mlp([4, 4]), 10, 0)
    bad = SampleRequest(mlp([4, 4]), 0, 0)
    with pytest.raises(MonteCarloError, match="samples"):
        next(sample_each([good, bad], executor="serial"))


def test_streaming_agrees_with_the_sample_drawn_for_its_observables():
    from varprop.montecarlo.streaming import stream_estimates

    network = mlp([5, 7, 6, 4])
    wanted = [SecondMoment(Signal(1)), Mean(Signal(2))]
    stored = sample(network, 2_000, seed=3, engine="conditional", observables=wanted)
    streamed = stream_estimates(network, wanted, 2_000, seed=3, engine="conditional")
    for observable in wanted:
        assert streamed.estimates[observable].value == pytest.approx(estimate(stored, observable).value, rel=1e-12)
