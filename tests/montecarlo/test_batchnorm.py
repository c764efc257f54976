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


@pytest.mark.parametrize("dims, eps", [(2, 1e-12), (2, 0.3), (1, 0.3)])
def test_conv_then_batchnorm_over_channels_matches_torch_conv_and_batchnorm2d(dims, eps):
    """Conv carries the batch through the same filters and BatchNorm(channels=C) normalises each channel over the
    batch and its positions: nn.Conv2d + nn.BatchNorm2d (nn.Conv1d + nn.BatchNorm1d on (N, C, L)) in train()."""
    from varprop.network import Conv

    rng = np.random.default_rng(12)
    networks, batch, size = 2, 3, ((4, 5) if dims == 2 else (7,))
    layer = Conv(2, 3, 3, size, padding=1, weights=Normal(sp.Rational(1, 4)), bias=Normal(1))
    norm = BatchNorm(layer.out_width, batch, eps=eps, channels=3)
    steps = [layer_step(layer), layer_step(norm)]
    params = steps[0].draw(networks, rng)
    x = rng.standard_normal((networks, batch, layer.in_width))
    g = rng.standard_normal((networks, batch, layer.out_width))
    h, conv_cache = steps[0].forward(params, x)
    y, cache = steps[1].forward((), h)
    back = steps[0].backward(params, (), conv_cache, steps[1].backward((), (), cache, g))
    conv_cls, norm_cls = (torch.nn.Conv2d, torch.nn.BatchNorm2d) if dims == 2 else (torch.nn.Conv1d, torch.nn.BatchNorm1d)
    for k in range(networks):
        module = torch.nn.Sequential(conv_cls(2, 3, 3, padding=1, dtype=torch.float64),
                                     norm_cls(3, eps=eps, dtype=torch.float64)).train()
        with torch.no_grad():
            module[0].weight.copy_(torch.tensor(params[0][k]))
            module[0].bias.copy_(torch.tensor(params[1][k]))
        inputs = torch.tensor(x[k].reshape(batch, 2, *size), requires_grad=True)
        out = module(inputs)
        (out * torch.tensor(g[k].reshape(out.shape))).sum().backward()
        assert np.allclose(y[k], out.detach().numpy().reshape(batch, -1), rtol=1e-10, atol=1e-12)
        assert np.allclose(back[k], inputs.grad.numpy().reshape(batch, -1), rtol=1e-10, atol=1e-12)
    # the wrong sibling: normalising each unit over the batch only is not what torch computes
    per_unit, _ = layer_step(BatchNorm(layer.out_width, batch, eps=eps)).forward((), h)
    assert not np.allclose(per_unit, y, rtol=1e-3)


def test_a_conv_batchnorm_network_samples_the_same_in_any_chunk():
    from varprop.network import Nonlinearity, conv
    from varprop.activations import activation

    first = conv(1, 3, 3, (5, 5), padding=1)
    net = Network((first, BatchNorm(first.out_width, 4, eps=0, channels=3), Nonlinearity(activation("relu")),
                   conv(3, 2, 3, (5, 5), padding=1)))
    a = sample(net, 32, seed=3, block_size=8, chunk_size=8)
    b = sample(net, 32, seed=3, block_size=8, chunk_size=32)
    for name in a.per_position:
        assert np.array_equal(a.per_position[name], b.per_position[name])
    assert a.excluded == 0 and a.engine == "full"


def _channel_claims():
    """Exact claims of a BatchNorm over channels, with the wrong sibling each: B - 1 degrees of freedom (normalising
    over the batch only, as a per-unit BatchNorm would) where the chi-square enters, the unbiased variance where not."""
    from scipy import integrate, stats

    from varprop.activations import activation
    from varprop.catalogue import claim_from_derivation
    from varprop.network import Nonlinearity, conv
    from varprop.observables import Gradient, SecondMoment, Signal

    def chi2_mean(g, k):
        return integrate.quad(lambda x: g(x) * stats.chi2.pdf(x, k), 0, float("inf"), limit=200, epsabs=0,
                              epsrel=1e-11)[0]

    batch, eps = 3, sp.Rational(1, 4)
    on_input = Network((BatchNorm(8, batch, eps=eps, channels=2), conv(2, 2, 1, (2, 2), init=Normal(1))))
    forward = claim_from_derivation("bn2d eps on the input", on_input, SecondMoment(Signal(0)))
    per_unit = sp.Float(chi2_mean(lambda x: x / (x + batch * float(eps)), batch - 1), 15)  # B - 1 degrees
    backward = claim_from_derivation("bn2d gradient on the input", on_input, SecondMoment(Gradient(-1)))
    e = float(eps)
    g = lambda x: ((batch - 2) / (x / batch + e) + e**2 / (x / batch + e) ** 3) / batch  # noqa: E731
    per_unit_back = sp.Float(2 * chi2_mean(g, batch - 1), 15)
    first = conv(1, 3, 3, (4, 4), padding=1)
    behind = Network((first, BatchNorm(first.out_width, batch, eps=0, channels=3), Nonlinearity(activation("relu"))))
    average = claim_from_derivation("bn2d eps 0 behind a padded conv", behind, SecondMoment(Signal(1)))
    unbiased = sp.Rational(batch * 16 - 1, batch * 16)  # dividing by the unbiased variance: (BP - 1)/(BP)
    # a relu keeps exactly half of the layer average: the output is symmetric at every position
    half = claim_from_derivation("relu after bn2d behind a padded conv", behind, SecondMoment(Signal(2)))
    return [(forward, per_unit), (backward, per_unit_back), (average, unbiased), (half, unbiased / 2)]


def test_batchnorm_over_channels_claims_pass_and_their_wrong_siblings_fail():
    for claim, wrong in _channel_claims():
        assert claim.exactness == "exact", claim.name
        assert check(claim, seed=5).outcome == PASS, claim.name
        assert check(claim.with_prediction(wrong, name=f"{claim.name} (wrong)"), seed=5).outcome == FAIL
def test_the_relu_batchnorm_gradient_explosion_passes_over_a_width_sweep_and_its_wrong_siblings_fail():
    """(dense, BatchNorm(eps=0), relu) x 2, batch 6: the gradient at the lowest BatchNorm's input, mean-field
    (asymptotic), checked on its limit over widths 16, 32, 64; the wrong siblings: the p + kappa term dropped, and
    the block's large-batch rate pi/(pi - 1) used at B = 6 (the mask taken independent of the Jacobian, 7 % off, is
    shown to fail in tests/derive/test_batchnorm.py against the mean-field model itself)."""
    import math

    from scipy import integrate

    from varprop.activations import activation
    from varprop.catalogue import claim_from_derivation
    from varprop.claims import ClaimFamily
    from varprop.montecarlo import check_all
    from varprop.network import Nonlinearity
    from varprop.observables import Gradient, SecondMoment

    batch = 6
    relu = Nonlinearity(activation("relu"))
    rho = -1 / (batch - 1)

    def density(v, u):
        return math.exp(-(u * u - 2 * rho * u * v + v * v) / (2 * (1 - rho * rho))) / (2 * math.pi * math.sqrt(1 - rho * rho))

    p = integrate.dblquad(density, 0, 12, 0, 12, epsabs=1e-13)[0]  # orthant probability, by quadrature
    kappa = integrate.dblquad(lambda v, u: u * v * density(v, u), 0, 12, 0, 12, epsabs=1e-13)[0]
    right = (batch - 2) / 2 + p + kappa  # the value is d right / (a (B - 3))
    rate = right / ((0.5 - kappa) * (batch - 3))  # per block (dense, BatchNorm, relu) below a BatchNorm
    siblings = {"p + kappa dropped": (batch - 2) / 2 / right, "the large-batch rate": math.pi / (math.pi - 1) / rate}

    def family(name, factor=None):
        def at(n):
            net = Network(tuple(layer for _ in range(2) for layer in
                                (Dense(n, n, Normal(sp.Rational(2, n))), BatchNorm(n, batch, eps=0), relu)))
            claim = claim_from_derivation(name, net, SecondMoment(Gradient(0)))
            return claim if factor is None else claim.with_prediction(sp.Float(claim.value * factor, 17))
        return ClaimFamily(name, "", at, 64, (16, 32))

    assert family("derived").at(64).exactness == "asymptotic"
    results = check_all([family("derived"), *(family(name, factor) for name, factor in siblings.items())], seed=5,
                        rtol=0.05)
    assert [r.outcome for r in results] == [PASS, FAIL, FAIL]
