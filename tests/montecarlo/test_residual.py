"""Residual blocks and dropout in the sampler: the steps against plain numpy, and the derived claims
checked by Monte Carlo, each PASS with a wrong sibling that FAILs (the checker's own verdicts)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from varprop.activations import activation
from varprop.catalogue import CATALOGUE, claim_from_derivation, residual_network
from varprop.montecarlo import FAIL, PASS, MonteCarloError, check, sample
from varprop.montecarlo.engines import CONDITIONAL, FULL, select_engine
from varprop.network import Dense, Dropout, Network, Nonlinearity, Residual
from varprop.observables import SecondMoment, Signal
from varprop.weights import Normal, Uniform

RELU = activation("relu")


def _relu(v):
    return np.maximum(v, 0.0)


def test_residual_step_is_x_plus_alpha_f_and_its_backward_pass():
    alpha = 0.7
    law = Normal(0.5)
    block = Residual((Dense(3, 5, law, Normal(0.1)), Nonlinearity(RELU), Dense(5, 3, law)), alpha)
    net = Network((Dense(3, 3, law), block))
    steps = FULL.steps(net, False)
    rng = np.random.default_rng(1)
    params = steps[1].draw(2, rng)
    (w1, b1, w2) = params
    x = rng.standard_normal((2, 1, 3))
    out, cache = steps[1].forward(params, x)
    pre = np.einsum("kij,kj->ki", w1, x[:, 0]) + b1
    f = np.einsum("kij,kj->ki", w2, _relu(pre))
    np.testing.assert_allclose(out[:, 0], x[:, 0] + alpha * f)
    g = rng.standard_normal((2, 1, 3))
    grad = steps[1].backward(params, steps[1].draw_backward(2, rng), cache, g)
    through = np.einsum("kij,ki->kj", w1, (pre > 0) * np.einsum("kij,ki->kj", w2, alpha * g[:, 0]))
    np.testing.assert_allclose(grad[:, 0], g[:, 0] + through)


def test_dropout_step_masks_and_scales_with_the_same_mask_backward():
    net = Network((Dense(4, 4, Normal(0.25)), Dropout(0.5)))
    step = FULL.steps(net, True)[1]
    mask, = step.draw(3, np.random.default_rng(0))
    assert mask.shape == (3, 2, 4) and set(np.unique(mask)) <= {0.0, 2.0}
    h = np.ones((3, 2, 4))
    out, cache = step.forward((mask,), h)
    np.testing.assert_array_equal(out, mask)
    np.testing.assert_array_equal(step.backward((mask,), (), cache, np.ones((3, 1, 4))), mask[:, :1])


def test_the_conditional_engine_serves_residual_and_dropout_networks_of_gaussian_weights_only():
    assert select_engine("auto", residual_network(4, 2, 1)) is CONDITIONAL
    uniform = Residual((Dense(4, 4, Uniform(1)), Nonlinearity(RELU), Dense(4, 4, Normal(1))), 1)
    net = Network((Dense(4, 4, Normal(0.5)), uniform, Dropout(0.5)))
    assert select_engine("auto", net) is FULL
    with pytest.raises(MonteCarloError, match="res1.*dense layer in its branch with Uniform"):
        select_engine("conditional", net)


def test_symbolic_alpha_or_keep_cannot_be_sampled():
    with pytest.raises(MonteCarloError, match="symbolic alpha"):
        sample(residual_network(4, 1, sp.Symbol("alpha")), 4, seed=0)
    with pytest.raises(MonteCarloError, match="symbolic keep"):
        sample(Network((Dense(4, 4, Normal(1)), Dropout(sp.Symbol("p", positive=True)))), 4, seed=0)


def test_both_engines_give_the_same_law_for_a_residual_network():
    # The same block-output second moment, exact (1 + 2 alpha^2)^L E[x^2], passes by the full engine and by the
    # conditional one; the checker seeds both from the claim.
    claim = CATALOGUE["residual-backward-last-block"].at(8)
    assert check(claim, engine="full").outcome == PASS
    assert check(claim, engine="conditional").outcome == PASS


def _wrong(claim, prediction, what):
    return claim.with_prediction(sp.nsimplify(prediction), name=f"{claim.name} ({what})")


@pytest.mark.parametrize("name", ["residual-forward-scaled", "residual-backward-last-block", "dropout-forward",
                                  "dropout-backward", "dropout-correlation"])
def test_catalogue_claim_passes(name):
    assert check(CATALOGUE[name], seed=1).outcome == PASS


def test_wrong_residual_formulas_fail():
    blocks = 4
    claim = CATALOGUE["residual-forward-scaled"].at(8)
    alpha = 1 / sp.sqrt(blocks)
    assert claim.prediction == 2 * (1 + 2 * alpha**2) ** blocks
    wrong = [
        _wrong(claim, 2 * (1 + 2 * alpha) ** blocks, "alpha^2 dropped"),
        _wrong(claim, 2 * (1 + 2 * alpha**2 + 2 * alpha) ** blocks, "cross term 2 alpha E[x^2] claimed nonzero"),
        _wrong(claim, 2 * (1 + alpha**2) ** blocks, "branch gain 1 instead of 2"),
    ]
    for mutant in wrong:
        assert check(mutant).outcome == FAIL, mutant.name


def test_wrong_dropout_formulas_fail():
    forward = CATALOGUE["dropout-forward"].at(8)
    keep = sp.Rational(4, 5)
    assert forward.prediction == 2 / keep
    assert check(_wrong(forward, 2 * keep, "p for 1/p")).outcome == FAIL
    backward = CATALOGUE["dropout-backward"].at(8)
    assert check(_wrong(backward, 2, "no 1/p backward")).outcome == FAIL
    # The same mask for both inputs of a pair would keep the correlation; PyTorch (and the sampler) draws a
    # mask per input, which multiplies it by p.
    pair = CATALOGUE["dropout-correlation"].at(16)
    assert check(_wrong(pair, pair.prediction / keep, "one mask for the pair")).outcome == FAIL


def test_a_residual_block_of_width_mismatch_in_the_sampler_is_a_spec_error():
    # The spec refuses it before any engine sees it.
    from varprop.errors import SpecError

    with pytest.raises(SpecError, match="receives a signal of width 4"):
        Network((Dense(4, 4, Normal(1)), Residual((Dense(3, 3, Normal(1)),), 1)))


def test_claim_from_derivation_reads_the_block_output():
    claim = claim_from_derivation("res", residual_network(4, 1, 1), SecondMoment(Signal(1)))
    assert claim.prediction == 6 and claim.exactness == "exact"


def test_length_second_moment_passes_and_its_wrong_sibling_fails():
    # E[R^2] through two blocks at width 16: gaussian-exact; the fourth moment of a length is heavy-tailed, so it is
    # resolved at rtol 0.05. The wrong sibling drops the cross term 4 a^2 E[K] of E[F^2] (<x, f> taken as 0 per network).
    from varprop.observables import NormRatioSecondMoment

    n, blocks = 16, 2
    claim = claim_from_derivation("length", residual_network(n, blocks, 1 / sp.sqrt(blocks)),
                                  NormRatioSecondMoment(Signal(blocks)))
    assert claim.exactness == "gaussian-exact"
    assert check(claim, rtol=0.05).outcome == PASS
    a2 = sp.Rational(1, blocks) * sp.Rational(2, n) ** 2
    factor = 1 + 2 * n * a2 * sp.Rational(n, 2) + n * (n + 2) * a2**2 * sp.Rational(n * n + 5 * n, 4)
    wrong = sp.Rational(2, n) ** 2 * n * (n + 2) * factor**blocks
    assert check(claim.with_prediction(wrong, name="length (no cross term)"), rtol=0.05).outcome == FAIL
