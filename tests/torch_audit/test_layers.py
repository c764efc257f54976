"""nn.Dropout, nn.LayerNorm and nn.RMSNorm in the audit of real torch models: translation, mode, dtype, verdicts."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import sympy as sp

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from varprop.errors import VarpropError  # noqa: E402
from varprop.network import FLOAT64_EPS, Dropout, LayerNorm, RMSNorm  # noqa: E402
from varprop.torch import audit, instance_seeds  # noqa: E402
from varprop.torch import random_seed  # noqa: E402

WIDTH = 32


def _dropout_net(dropout: type = nn.Dropout) -> nn.Sequential:
    return nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU(), dropout(0.2), nn.Linear(WIDTH, WIDTH))


@pytest.fixture(scope="module")
def dropout_audit():
    return audit(_dropout_net, (WIDTH,), networks=1500, seed=1, pilot=30)


def test_dropout_translates_to_keep_one_minus_p(dropout_audit):
    assert dropout_audit.network.layers[2] == Dropout(sp.Rational(4, 5))


def test_dropout_every_place_passes(dropout_audit):
    assert all(p.result.exactness == "exact" for p in dropout_audit.signal)
    assert [p.outcome for p in dropout_audit.signal] == ["PASS"] * 4
    for p in dropout_audit.gradient:
        assert p.outcome == ("PASS" if p.result.exactness == "exact" else "INCONCLUSIVE"), p.result.message


def test_dropout_prediction_matches_independent_recursion(dropout_audit):
    v = Fraction(1, 3 * WIDTH)  # PyTorch's default Var[w] = Var[b]
    dense1 = WIDTH * v + v
    drop = dense1 / 2 / Fraction(4, 5)  # relu halves; inverted dropout divides by the keep probability
    expected = [dense1, dense1 / 2, drop, WIDTH * v * drop + v]
    assert [sp.Rational(p.result.claim.prediction) for p in dropout_audit.signal] == [
        sp.Rational(q.numerator, q.denominator) for q in expected]


def test_dropout_runs_in_training_mode_with_documented_masks():
    """A factory that returns the model in eval() mode is measured in train() mode, its masks seeded by random_seed."""
    networks, batch = 10, 8
    result = audit(lambda: _dropout_net().eval(), (WIDTH,), networks=networks, batch=batch, seed=3, pilot=5)
    measured = np.zeros((networks, 4))
    for i in range(networks):
        model_seed, data_seed = instance_seeds(3, 0, i)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(model_seed)
            model = _dropout_net().double().train()
        generator = torch.Generator().manual_seed(data_seed)
        x = torch.randn((batch, WIDTH), generator=generator, dtype=torch.float64)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(random_seed(3, i))
            h, row = x, []
            for layer in model:
                h = layer(h)
                row.append(float((h * h).mean()))
        measured[i] = row
    np.testing.assert_allclose([p.estimate for p in result.signal], measured.mean(axis=0), rtol=1e-12)
    assert (measured[:, 2] != measured[:, 1]).all()  # the dropout was active


class _NoRescale(nn.Dropout):
    """A dropout that does nothing (as in eval mode): the translation still says Dropout(keep=0.8)."""

    def forward(self, x):
        return x


# torch.fx keeps modules of torch.nn's namespace as leaves (it traces through a user module's forward): this
# makes the fake dropout a leaf, so the translation sees an nn.Dropout(0.2) that the measurement does not run.
_NoRescale.__module__ = nn.Dropout.__module__


def test_wrong_sibling_dropout_without_rescaling_fails():
    result = audit(lambda: _dropout_net(_NoRescale), (WIDTH,), networks=600, seed=2, pilot=10)
    assert [p.outcome for p in result.signal] == ["PASS", "PASS", "FAIL", "FAIL"]


@pytest.mark.parametrize("norm, expected", [
    (lambda: nn.LayerNorm(WIDTH), LayerNorm(WIDTH, sp.Rational(1, 100000), True)),
    (lambda: nn.LayerNorm(WIDTH, eps=1e-3, elementwise_affine=False), LayerNorm(WIDTH, sp.Rational(1, 1000), False)),
    (lambda: nn.RMSNorm(WIDTH), RMSNorm(WIDTH, FLOAT64_EPS, True)),
    (lambda: nn.RMSNorm(WIDTH, eps=1e-6), RMSNorm(WIDTH, sp.Rational(1, 10**6), True)),
])
def test_normalisers_translate_and_agree(norm, expected):
    """eps=None of nn.RMSNorm is float64's machine epsilon: the audit runs the model in float64."""
    result = audit(lambda: nn.Sequential(nn.Linear(WIDTH, WIDTH), norm(), nn.ReLU(), nn.Linear(WIDTH, WIDTH)),
                   (WIDTH,), networks=1000, seed=1, pilot=10)
    assert result.network.layers[1] == expected
    assert not result.failures, [p.result.message for p in result.failures]
    for p in result.places:
        if p.result.exactness in ("exact", "gaussian-exact"):
            assert p.outcome == "PASS", p.result.message


def _reinitialised_norm():
    model = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.LayerNorm(WIDTH), nn.Linear(WIDTH, WIDTH))
    nn.init.normal_(model[1].weight)
    return model


@pytest.mark.parametrize("factory, words", [
    (_reinitialised_norm, ["'1'", "not all ones"]),
    (lambda: nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.Unflatten(1, (2, 16)), nn.LayerNorm((2, 16))),
     ["normalises over (2, 16)", "(3, 2, 16)"]),
    (lambda: nn.Sequential(nn.Unflatten(1, (1, WIDTH)), nn.Conv1d(1, 2, 3), nn.LayerNorm(WIDTH - 2)),
     ["normalises over (30,)", "(3, 2, 30)", "after a convolution"]),
    (lambda: nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.Dropout(1.0)), ["p=1.0"]),
])
def test_unsupported_normalisers_are_named(factory, words):
    with pytest.raises(VarpropError) as info:
        audit(factory, (WIDTH,), networks=4, pilot=2)
    for word in words:
        assert word in str(info.value)
