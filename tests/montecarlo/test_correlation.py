"""The pair of inputs in the sampler, and the correlation estimator's delta-method SE.

The SE is tested by its calibration on a case whose correlation is known exactly: two orthogonal
fixed inputs through one Gaussian He layer and relu have correlation 1/pi at every width (the
arc-cosine kernel of degree 1 at c = 0, Cho & Saul 2009), so z = (rho_hat - 1/pi)/SE over many
independent replicates must be standard normal: sum z^2 is chi-square with one degree of freedom
per replicate. The same test rejects an SE that ignores the denominator's fluctuation.
"""

import math

import numpy as np
import pytest
import sympy as sp
from scipy import stats

from varprop.activations import activation
from varprop.errors import SpecError
from varprop.montecarlo import estimate, sample
from varprop.montecarlo.errors import MonteCarloError
from varprop.montecarlo.estimators import correlation_influence, ratio_correlation
from varprop.network import Dense, FixedInput, GaussianInput, Network, Nonlinearity, mlp
from varprop.observables import Correlation, CrossMoment, ObservableError, Signal, resolve
from varprop.weights import Normal

WIDTH = 16
REPLICATES, PER_REPLICATE = 200, 200


def _one_relu_layer(inputs) -> Network:
    return Network((Dense(WIDTH, WIDTH, Normal(sp.Rational(2, WIDTH))), Nonlinearity(activation("relu"))), inputs)


@pytest.fixture(scope="module")
def replicates():
    drawn = sample(_one_relu_layer(FixedInput.pair(WIDTH, 0)), REPLICATES * PER_REPLICATE, seed=7)
    column = drawn.column(1)
    return tuple(drawn.per_position[key][:, column].reshape(REPLICATES, PER_REPLICATE)
                 for key in ("signal_cross", "signal_second_moment", "signal_partner_second_moment"))


def _chi_square_p(z: np.ndarray) -> float:
    """Two-sided p-value of sum z^2 against chi-square with len(z) degrees of freedom."""
    statistic = float(np.sum(z**2))
    tail = stats.chi2.sf(statistic, z.size)
    return 2 * min(tail, 1 - tail)


def test_delta_method_se_is_calibrated(replicates):
    exact = 1 / math.pi
    z = np.array([(value - exact) / se for value, se in (ratio_correlation(*r) for r in zip(*replicates))])
    assert _chi_square_p(z) > 0.01


def test_calibration_rejects_an_se_that_ignores_the_denominator(replicates):
    # The sibling: treating sqrt(mean b mean b') as a constant misses the (positive) covariance of the
    # cross moment with the mean squares, and overstates the SE; the same test must catch it.
    exact = 1 / math.pi
    z = []
    for cross, own, partner in zip(*replicates):
        value, _ = ratio_correlation(cross, own, partner)
        naive = np.std(cross, ddof=1) / np.sqrt(own.mean() * partner.mean()) / np.sqrt(cross.size)
        z.append((value - exact) / naive)
    assert _chi_square_p(np.array(z)) < 0.01


def test_ratio_correlation_is_the_ratio_of_means_and_its_influence_is_centred():
    rng = np.random.default_rng(3)
    own, partner = rng.gamma(3.0, size=50), rng.gamma(2.0, size=50)
    cross = 0.3 * np.sqrt(own * partner) + rng.normal(scale=0.1, size=50)
    value, se = ratio_correlation(cross, own, partner)
    assert value == pytest.approx(cross.mean() / math.sqrt(own.mean() * partner.mean()), rel=1e-15)
    influence = correlation_influence(cross, own, partner)
    assert abs(influence.mean()) < 1e-14 * np.abs(influence).max()
    assert se == pytest.approx(np.std(influence, ddof=1) / math.sqrt(50), rel=1e-15)


def test_the_estimate_of_a_correlation_observable_uses_the_ratio_estimator():
    network = _one_relu_layer(FixedInput.pair(WIDTH, 0))
    drawn = sample(network, 500, seed=1)
    column = drawn.column(1)
    arrays = [drawn.per_position[key][:, column]
              for key in ("signal_cross", "signal_second_moment", "signal_partner_second_moment")]
    result = estimate(drawn, Correlation(Signal(1)))
    assert (result.value, result.se) == ratio_correlation(*arrays)
    assert estimate(drawn, CrossMoment(Signal(1))).value == pytest.approx(arrays[0].mean(), rel=1e-15)


def test_the_fixed_pair_is_fed_unchanged():
    pair = FixedInput.pair(WIDTH, 0.25)
    drawn = sample(_one_relu_layer(pair), 3, seed=0)
    column = drawn.column(-1)
    expected = np.dot(pair.values, pair.partner) / WIDTH
    assert np.all(drawn.per_position["signal_cross"][:, column] == expected)
    assert float(pair.correlation) == pytest.approx(0.25, abs=1e-15)


def test_pair_statistics_need_a_pair():
    network = mlp([4, 4, 4])
    with pytest.raises(ObservableError, match="needs a pair of inputs"):
        resolve(Correlation(Signal(1)), network)
    with pytest.raises(MonteCarloError, match="needs a pair of inputs"):
        estimate(sample(network, 4, seed=0), CrossMoment(Signal(1)))
    with pytest.raises(ObservableError, match="signals only"):
        from varprop.observables import Gradient

        Correlation(Gradient(1))


@pytest.mark.parametrize("bad", [1.5, -1.01, sp.Integer(2), sp.I])
def test_an_input_correlation_outside_minus_one_to_one_is_refused(bad):
    with pytest.raises(SpecError, match=r"input correlation must be a number in \[-1, 1\]"):
        GaussianInput(correlation=bad)
    with pytest.raises(SpecError, match=r"\[-1, 1\]"):
        FixedInput.pair(8, bad)


def test_a_symbolic_correlation_passes_validation_but_cannot_be_sampled():
    c0 = sp.Symbol("c_0", real=True)
    network = mlp([4, 4, 4], inputs=GaussianInput(correlation=c0))
    with pytest.raises(MonteCarloError, match="symbolic correlation"):
        sample(network, 4, seed=0)


def test_partner_vectors_are_validated():
    with pytest.raises(SpecError, match="same length"):
        FixedInput((1.0, 2.0), partner=(1.0,))
    with pytest.raises(SpecError, match="non-zero"):
        FixedInput((1.0, 2.0), partner=(0.0, 0.0))
    with pytest.raises(SpecError, match="correlation \\+1 or -1 only"):
        FixedInput.pair(1, 0.5)


def test_pair_descriptions_pickle_and_compare():
    import pickle

    for inputs in (GaussianInput(correlation=sp.Rational(1, 3)), FixedInput.pair(8, 0.5),
                   FixedInput((1.0, 2.0), partner=(2.0, -1.0))):
        network = mlp([len(getattr(inputs, "values", (0,) * 8)), 4, 4], inputs=inputs)
        assert pickle.loads(pickle.dumps(network)) == network
    assert GaussianInput(correlation=0.25) == GaussianInput(correlation=sp.Rational(1, 4))  # floats become rationals
