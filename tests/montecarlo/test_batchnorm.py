"""Sampler step of BatchNorm in training mode: the layer and its Jacobian against torch's autograd, the batch
carried through the sampler, the conditional engine's refusal, and claims checked by Monte Carlo with wrong
siblings that FAIL."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from varprop.catalogue import CATALOGUE
from varprop.montecarlo import FAIL, PASS, MonteCarloError, check, sample
from varprop.montecarlo.engines import layer_step
from varprop.network import BatchNorm, Dense, Network
from varprop.weights import Normal

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("eps", [1e-12, 0.3])  # torch refuses eps = 0 in training mode
def test_forward_and_backward_match_torch_in_training_mode(eps):
    rng = np.random.default_rng(11)
    networks, batch, width = 3, 5, 4
    x = rng.standard_normal((networks, batch, width))
    g = rng.standard_normal((networks, batch, width))
    step = layer_step(BatchNorm(width, batch, eps=eps))
    y, cache = step.forward((), x)
    back = step.backward((), (), cache, g)
    for k in range(networks):
        module = torch.nn.BatchNorm1d(width, eps=eps, dtype=torch.float64).train()
        inputs = torch.tensor(x[k], requires_grad=True)
        out = module(inputs)
        (out * torch.tensor(g[k])).sum().backward()
        assert np.allclose(y[k], out.detach().numpy(), rtol=1e-12, atol=1e-12)
        assert np.allclose(back[k], inputs.grad.numpy(), rtol=1e-10, atol=1e-12)


def _net(eps=0):
    return Network((Dense(6, 6, Normal(sp.Rational(1, 3))), BatchNorm(6, 4, eps=eps)))


def test_samples_do_not_depend_on_the_chunk_and_a_constant_unit_is_excluded_not_averaged():
    a = sample(_net(), 64, seed=3, block_size=8, chunk_size=8)
    b = sample(_net(), 64, seed=3, block_size=8, chunk_size=64)
    for name in a.per_position:
        assert np.array_equal(a.per_position[name], b.per_position[name])
    assert a.excluded == 0
    zero = Network((Dense(6, 6, Normal(0)), BatchNorm(6, 4, eps=0)))  # every unit's batch is 0: 0/0
    s = sample(zero, 16, seed=1)
    assert s.excluded == 16 and s.position_nan[2] == 16


def test_the_conditional_engine_refuses_a_batch_with_the_reason():
    with pytest.raises(MonteCarloError, match="batch of 4 inputs"):
        sample(_net(), 8, seed=0, engine="conditional")
    assert sample(_net(), 8, seed=0, engine="auto").engine == "full"


@pytest.mark.parametrize("name", ["batchnorm-unit-mean-square", "batchnorm-eps-gaussian-input",
                                  "batchnorm-backward-first-dense"])
def test_catalogue_claims_pass_and_wrong_siblings_fail(name):
    claim = CATALOGUE[name].at()
    assert claim.exactness == "exact"
    assert check(claim, seed=5).outcome == PASS
    for factor in (sp.Rational(97, 100), sp.Rational(103, 100)):
        assert check(claim.with_prediction(claim.prediction * factor, name=f"{name} x{factor}"), seed=5).outcome == FAIL


def test_the_mean_field_value_on_the_gaussian_input_fails_where_the_chi_square_passes():
    """v/(v + eps), what a concentrating batch variance would give, is wrong for a batch of 4."""
    claim = CATALOGUE["batchnorm-eps-gaussian-input"].at()
    wrong = claim.with_prediction(sp.Integer(1) / (1 + sp.Rational(1, 2)), name="mean-field v/(v+eps)")
    assert check(wrong, seed=5).outcome == FAIL
