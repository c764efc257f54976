"""The audit translates nn.BatchNorm1d in training mode into BatchNorm over the measured batch, and judges it
against real torch: exact places PASS, a wrong prediction FAILs, and what it cannot translate is named."""

from __future__ import annotations

import pytest
import sympy as sp

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from varprop.montecarlo import FAIL, INCONCLUSIVE, PASS  # noqa: E402
from varprop.network import BatchNorm  # noqa: E402
from varprop.torch import audit  # noqa: E402
from varprop.torch.translate import TranslationError, translate  # noqa: E402


def _first_batchnorm(norm: type = nn.BatchNorm1d):
    return nn.Sequential(norm(8, eps=0.5), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))


class _Unbiased(nn.BatchNorm1d):
    """A batch norm that divides by the unbiased batch variance (what the running variance uses): the translation
    still says BatchNorm, so the exact places must FAIL."""

    def forward(self, x):
        return (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=True) + self.eps)


_Unbiased.__module__ = "torch.nn.modules.batchnorm"  # a leaf for torch.fx, as torch's own modules are


def _exact(result):
    return {(p.place, p.tensor): p for p in result.places if p.exactness == "exact"}


def test_batchnorm_on_the_input_is_exact_and_passes_on_real_torch():
    result = audit(_first_batchnorm, input_shape=(8,), networks=800, batch=6, seed=1, pilot=10)
    assert result.network.layers[0] == BatchNorm(8, 6, eps=sp.Rational(1, 2))
    exact = _exact(result)
    assert ("batchnorm1", "signal") in exact and ("batchnorm1", "gradient") in exact
    assert all(p.result.outcome == PASS for (place, tensor), p in exact.items() if tensor == "signal")
    # the gradients are noisier: 800 networks resolve some of them; none contradicts its prediction
    assert all(p.result.outcome in (PASS, INCONCLUSIVE) for p in exact.values())


def test_the_unbiased_variance_fails_where_the_biased_passes():
    result = audit(lambda: _first_batchnorm(_Unbiased), input_shape=(8,), networks=800, batch=6, seed=1, pilot=10)
    assert result.network.layers[0] == BatchNorm(8, 6, eps=sp.Rational(1, 2))
    assert _exact(result)["batchnorm1", "signal"].result.outcome == FAIL


def test_batchnorm_needs_a_batch_and_a_features_tensor():
    def laws(path, parameter):
        return None

    with pytest.raises(TranslationError, match="give translate\\(..., batch=B\\)"):
        translate(_first_batchnorm(), (8,), laws)
    with pytest.raises(TranslationError, match="at least 2 inputs"):
        translate(_first_batchnorm(), (8,), laws, batch=1)
    # before any convolution a (batch, 3, 8) tensor is 3 rows of 8 features for nn.Linear: no channels to normalise
    with pytest.raises(TranslationError, match=r"a \(batch, features\) tensor of 3 features, or per channel"):
        translate(nn.Sequential(nn.BatchNorm1d(3), nn.Linear(8, 8)), (3, 8), laws, batch=4)


def _linear_batchnorm(top=nn.ReLU):
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 16), nn.BatchNorm1d(16),
                         top(), nn.Linear(16, 4))


def test_every_place_of_a_linear_batchnorm_relu_stack_gets_a_prediction():
    """Below the first BatchNorm the gradient comes through a relu from the BatchNorm above: derived in the mean-field
    limit (Yang et al. 2019), so every place is judged; the gradient places are asymptotic, so at the model's one
    width they are INCONCLUSIVE with their deviation shown, and none contradicts its prediction."""
    from varprop.torch.audit import NOT_DERIVED

    result = audit(_linear_batchnorm, input_shape=(8,), networks=300, batch=6, seed=2, pilot=10)
    assert all(p.outcome != NOT_DERIVED and p.result is not None for p in result.places)
    below = {p.place: p for p in result.places if p.tensor == "gradient" and p.place in ("input", "dense1")}
    assert set(below) == {"input", "dense1"} and all(p.exactness == "asymptotic" for p in below.values())
    assert all(p.outcome != FAIL for p in result.places)
    assert "not derived" not in result.text()


def test_a_gradient_varprop_cannot_derive_is_measured_and_named_not_judged():
    """A tanh between the top BatchNorm and the loss: its slope correlates with that BatchNorm's Jacobian, so the
    gradient from that BatchNorm's input down is measured and named, not judged."""
    from varprop.torch.audit import NOT_DERIVED

    result = audit(lambda: _linear_batchnorm(nn.Tanh), input_shape=(8,), networks=300, batch=6, seed=2, pilot=10)
    refused = [p for p in result.places if p.outcome == NOT_DERIVED]
    assert {(p.place, p.tensor) for p in refused} == {(place, "gradient") for place in
                                                     ("input", "dense1", "batchnorm1", "act1", "dense2")}
    for p in refused:
        assert p.result is None and "slope does not factor" in p.reason
        direct = result.to_dict()["places"][result.places.index(p)]
        assert direct["prediction"] is None and direct["estimate"] > 0 and direct["se"] > 0 and direct["networks"] == 300
    # every other place is judged, and none contradicts its prediction
    judged = [p for p in result.places if p.result is not None]
    assert len(judged) == len(result.places) - 5 and all(p.outcome != FAIL for p in judged)
    assert "5 places measured but not derived" in result.text() and "NOT DERIVED: the gradient below" in result.text()
