"""Models whose Linear and Conv layers sit in nested modules are audited as the equivalent flat model (real torch)."""

from __future__ import annotations

import pytest
import sympy as sp

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from varprop.cli import main  # noqa: E402
from varprop.errors import VarpropError  # noqa: E402
from varprop.torch import TranslationError, audit  # noqa: E402
from varprop.weights import Uniform  # noqa: E402

WIDTH = 16


class UserLinear(nn.Linear):
    """A user's own subclass of nn.Linear that keeps its forward: torch.fx would trace into it, the audit keeps it whole."""


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(UserLinear(width, width), nn.ReLU())

    def forward(self, x):
        return self.body(x)


class NestedMLP(nn.Module):
    """Linear, relu, Linear, relu in a loop over an nn.ModuleList of blocks, then a Linear two Sequentials deep."""

    def __init__(self, width: int = WIDTH, blocks: int = 2):
        super().__init__()
        self.blocks = nn.ModuleList([Block(width) for _ in range(blocks)])
        self.head = nn.Sequential(nn.Sequential(nn.Linear(width, width)))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = NestedMLP()

    def forward(self, x):
        return self.inner(x)


def flat_mlp(width: int = WIDTH) -> nn.Sequential:
    """The same layers, created in the same order (so the same torch seed draws the same weights), at the top level."""
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))


def _same_audit(nested, flat):
    assert [p.place for p in nested.signal + nested.gradient] == [p.place for p in flat.signal + flat.gradient]
    for a, b in zip(nested.signal + nested.gradient, flat.signal + flat.gradient, strict=True):
        assert sp.simplify(a.result.claim.prediction - b.result.claim.prediction) == 0, a.place
        assert a.estimate == b.estimate and a.se == b.se, a.place  # the same instances: the same numbers
        assert a.outcome == b.outcome, a.place
    assert [law.law for law in nested.laws] == [law.law for law in flat.laws]


@pytest.mark.parametrize("factory", [NestedMLP, Wrapper])
def test_a_nested_model_is_audited_as_the_flat_one(factory):
    nested = audit(factory, networks=300, seed=4, pilot=20)  # the input width is found inside the nesting
    flat = audit(flat_mlp, (WIDTH,), networks=300, seed=4, pilot=20)
    _same_audit(nested, flat)
    assert nested.network == flat.network
    paths = nested.translation.paths
    assert paths[0].endswith("blocks.0.body.0") and paths[-1].endswith("head.0.0")
    assert "UserLinear" in nested.translation.kinds[0]


def test_the_nested_model_passes_where_the_flat_one_does():
    """Enough networks for verdicts: every forward place PASSes, as for the flat model (its own tests hold the
    measurement against a plain torch loop and the prediction against an exact recursion)."""
    nested = audit(NestedMLP, networks=1500, seed=5, pilot=30)
    assert [p.outcome for p in nested.signal] == ["PASS"] * len(nested.signal)
    # the wrong sibling: the nested parameters, addressed by their paths, told to be at twice the default variance
    twice = Uniform(sp.sqrt(sp.Rational(2, WIDTH)))
    assume = {f"{path}.{parameter}": twice for path in ("blocks.0.body.0", "blocks.1.body.0", "head.0.0")
              for parameter in ("weight", "bias")}
    wrong = audit(NestedMLP, networks=300, seed=5, pilot=10, assume=assume)
    assert [p.outcome for p in wrong.signal] == ["FAIL"] * len(wrong.signal)


class NestedCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU()),
                                      nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()))
        self.classifier = nn.ModuleDict({"flat": nn.Flatten(), "out": nn.Linear(4 * 5 * 5, 3)})

    def forward(self, x):
        return self.classifier["out"](self.classifier["flat"](self.features(x)))


def flat_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 5 * 5, 3))


def test_a_nested_cnn_is_audited_as_the_flat_one():
    _same_audit(audit(NestedCNN, (2, 5, 5), networks=200, seed=6, pilot=20),
                audit(flat_cnn, (2, 5, 5), networks=200, seed=6, pilot=20))
    with pytest.raises(VarpropError, match="give input_shape: its first weighted layer 'features.0.0' is a convolution"):
        audit(NestedCNN, networks=20, pilot=10)


@pytest.mark.parametrize("factory, width", [
    (lambda: nn.Sequential(nn.Dropout(0.1), nn.Sequential(nn.Linear(12, 8), nn.ReLU()), nn.Linear(8, 4)), 12),
    (lambda: nn.Sequential(nn.LayerNorm(10), nn.ReLU(), nn.Linear(10, 4)), 10),
])
def test_the_input_width_is_read_past_shape_keeping_layers(factory, width):
    result = audit(factory, networks=20, pilot=10)
    assert result.input_shape == (width,)


def test_a_reshape_before_the_first_linear_needs_an_input_shape():
    def model():
        return nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(16, 4)))

    with pytest.raises(VarpropError, match="give input_shape: module '0' \\(Flatten\\), a reshape, comes before"):
        audit(model, networks=20, pilot=10)
    assert audit(model, (4, 4), networks=20, pilot=10).network.layers[0].fan_in == 16


def test_a_model_without_weighted_layers_is_one_clear_error(tmp_path, capsys):
    def activations_only():
        return nn.Sequential(nn.Sequential(nn.ReLU()), nn.Tanh())

    with pytest.raises(VarpropError, match="the model has no nn.Linear or convolution"):
        audit(activations_only, networks=20, pilot=10)
    with pytest.raises(TranslationError, match="no layer with weights for the audit to derive \\(it translates to: "
                                               "ReLU, Tanh\\)"):
        audit(activations_only, (8,), networks=20, pilot=10)
    path = tmp_path / "model.py"
    path.write_text("from torch import nn\n\ndef make():\n    return nn.Sequential(nn.ReLU())\n", encoding="utf-8")
    assert main(["audit", f"{path}:make", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("varprop: the model has no nn.Linear or convolution") and "Traceback" not in err


class Shared(nn.Module):
    """One Linear applied three times in a loop: tied weights, which varprop's independent layers do not describe."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Sequential(nn.Linear(8, 8), nn.ReLU())

    def forward(self, x):
        for _ in range(3):
            x = self.layer(x)
        return x


def test_a_module_applied_twice_is_refused():
    with pytest.raises(TranslationError, match="module 'layer.0' \\(Linear\\) is applied more than once"):
        audit(Shared, networks=20, pilot=10)


class FunctionalLinear(nn.Linear):
    """A subclass whose own forward calls F.linear: traced into, and F.linear on parameters is not translated."""

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


def test_a_subclass_overriding_forward_is_traced_into():
    with pytest.raises(TranslationError, match="call 'linear' \\(torch._C._nn.linear\\) is not supported"):
        audit(lambda: nn.Sequential(FunctionalLinear(8, 8)), (8,), networks=20, pilot=10)
