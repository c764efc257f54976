"""The audit of a real PyTorch ResNet-style MLP (x + Linear(relu(Linear(x)))): residual translation, verdicts, wrong sibling."""

from __future__ import annotations

import math
import pathlib
import sys
from fractions import Fraction

import numpy as np
import pytest
import sympy as sp

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from varprop.errors import VarpropError  # noqa: E402
from varprop.network import Dense, Residual  # noqa: E402
from varprop.torch import audit, instance_seeds  # noqa: E402
from varprop.weights import Uniform  # noqa: E402

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))
from resnet_pytorch_default import BLOCKS, WIDTH, make_resnet, make_scaled_resnet  # noqa: E402


@pytest.fixture(scope="module")
def resnet_audit():
    return audit(make_resnet, (WIDTH,), networks=1500, seed=1, pilot=30)


def test_resnet_translation(resnet_audit):
    layers = resnet_audit.network.layers
    assert [type(layer).__name__ for layer in layers] == ["Dense"] + ["Residual"] * BLOCKS + ["Dense"]
    for block in layers[1:-1]:
        assert block.alpha == 1
        assert [type(layer).__name__ for layer in block.branch] == ["Dense", "Nonlinearity", "Dense"]
        assert block.branch[0].weights == Uniform(1 / sp.sqrt(WIDTH))
    assert [p.place for p in resnet_audit.signal] == ["dense1", "res1", "res2", "res3", "dense2"]


def test_resnet_every_forward_place_passes(resnet_audit):
    assert [p.outcome for p in resnet_audit.signal] == ["PASS"] * (BLOCKS + 2)
    assert all(p.result.exactness == "exact" for p in resnet_audit.signal)
    for p in resnet_audit.gradient:
        assert p.outcome == ("PASS" if p.result.exactness == "exact" else "INCONCLUSIVE"), p.result.message


def _pytorch_resnet_recursion(width: int, blocks: int, alpha: Fraction) -> list[Fraction]:
    """E[h^2] at stem, each block, head by exact rationals (no sympy, no varprop).

    Var[w] = Var[b] = v = 1/(3n); a block adds alpha^2 E[f^2] with E[f^2] = n v (n v q + v)/2 + v (the
    cross term E[x f] is zero: the branch's last weights are zero-mean and independent of x).
    """
    v = Fraction(1, 3 * width)
    q = [width * v + v]
    for _ in range(blocks):
        q.append(q[-1] + alpha**2 * (width * v * (width * v * q[-1] + v) / 2 + v))
    q.append(width * v * q[-1] + v)
    return q


@pytest.mark.parametrize("factory, alpha", [(make_resnet, Fraction(1)),
                                            (make_scaled_resnet, Fraction(repr(1 / math.sqrt(BLOCKS))))])
def test_prediction_matches_independent_recursion(factory, alpha, resnet_audit):
    result = resnet_audit if factory is make_resnet else audit(factory, (WIDTH,), networks=20, pilot=30, seed=1)
    assert all(block.alpha == sp.Rational(alpha.numerator, alpha.denominator)
               for block in result.network.layers[1:-1])
    expected = _pytorch_resnet_recursion(WIDTH, BLOCKS, alpha)
    assert [sp.Rational(p.result.claim.prediction) for p in result.signal] == [
        sp.Rational(q.numerator, q.denominator) for q in expected]


def test_scaled_resnet_passes():
    result = audit(make_scaled_resnet, (WIDTH,), networks=1500, seed=1, pilot=30)
    assert [p.outcome for p in result.signal] == ["PASS"] * (BLOCKS + 2)


def test_measurement_matches_a_plain_torch_loop():
    networks, batch = 20, 8
    small = audit(make_resnet, (WIDTH,), networks=networks, batch=batch, seed=3, pilot=10)
    signal = np.zeros((networks, BLOCKS + 2))
    gradient = np.zeros((networks, BLOCKS + 3))
    torch.set_num_threads(1)
    for i in range(networks):
        model_seed, data_seed = instance_seeds(3, 0, i)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(model_seed)
            model = make_resnet().double()
        generator = torch.Generator().manual_seed(data_seed)
        x = torch.randn((batch, WIDTH), generator=generator, dtype=torch.float64, requires_grad=True)
        kept = [x, model.stem(x)]
        for block in model.blocks:
            h = kept[-1]
            kept.append(h + block.second(torch.relu(block.first(h))))
        kept.append(model.head(kept[-1]))
        g = torch.randn(kept[-1].shape, generator=generator, dtype=torch.float64)
        grads = torch.autograd.grad((kept[-1] * g).sum(), kept)
        signal[i] = [float((t * t).mean().detach()) for t in kept[1:]]
        gradient[i] = [float((d * d).mean()) for d in grads]
    np.testing.assert_allclose([p.estimate for p in small.signal], signal.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose([p.estimate for p in small.gradient], gradient.mean(axis=0), rtol=1e-12)


def _branches_at_twice_the_variance():
    model = make_resnet()
    with torch.no_grad():
        for module in model.blocks.modules():
            if isinstance(module, nn.Linear):
                bound = math.sqrt(2 / module.in_features)  # variance 2/(3n), twice the default
                nn.init.uniform_(module.weight, -bound, bound)
    return model


def test_wrong_sibling_branches_at_twice_the_variance_fail():
    default = Uniform(1 / sp.sqrt(WIDTH))
    assume = {f"blocks.{b}.{layer}.weight": default for b in range(BLOCKS) for layer in ("first", "second")}
    result = audit(_branches_at_twice_the_variance, (WIDTH,), networks=400, seed=2, pilot=10, assume=assume)
    assert [p.outcome for p in result.signal] == ["PASS"] + ["FAIL"] * (BLOCKS + 1)


class _Shortcut(nn.Module):
    """x + f(x) written in the other order, through torch.add with alpha, and a nested block."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        h = self.a(x)
        inner = torch.add(h, self.b(h.relu()), alpha=0.5)
        return self.c(inner) / 4 + h


def test_residual_forms_translate():
    result = audit(_Shortcut, (8,), networks=4, pilot=4)
    dense, outer = result.network.layers
    assert isinstance(dense, Dense) and isinstance(outer, Residual) and outer.alpha == sp.Rational(1, 4)
    inner, last = outer.branch
    assert isinstance(inner, Residual) and inner.alpha == sp.Rational(1, 2) and isinstance(last, Dense)


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)

    def forward(self, x):
        return self.a(x) * 2


class _AddTwoBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        return self.a(x) + self.b(x)


@pytest.mark.parametrize("factory, words", [
    (_Twice, ["multiplication by a number outside a residual addition"]),
    (_AddTwoBranches, ["only a chain", "residual addition"]),
    (make_resnet, ["input shape (8,)", "32 features"]),
])
def test_unsupported_residual_forms_are_named(factory, words):
    with pytest.raises(VarpropError) as info:
        audit(factory, (8,), networks=4, pilot=2)
    for word in words:
        assert word in str(info.value)

