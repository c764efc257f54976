"""The audit translates nn.BatchNorm2d (and nn.BatchNorm1d on a convolution's (N, C, L) output) into BatchNorm over
each channel's batch and positions, judges what is derived against real torch (a wrong normalisation FAILs), and shows
what is not derived as NOT DERIVED with the reason instead of failing."""

from __future__ import annotations

import pytest
import sympy as sp

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from varprop.montecarlo import FAIL, PASS  # noqa: E402
from varprop.network import BatchNorm  # noqa: E402
from varprop.torch import audit  # noqa: E402
from varprop.torch.audit import NOT_DERIVED  # noqa: E402
from varprop.torch.translate import TranslationError, translate  # noqa: E402


def _no_laws(path, parameter):
    return None


class _Unbiased2d(nn.BatchNorm2d):
    """Divides by the unbiased variance over the batch and positions: the translation still says BatchNorm2d, so the
    exact place must FAIL."""

    def forward(self, x):
        return (x - x.mean((0, 2, 3), keepdim=True)) / torch.sqrt(x.var((0, 2, 3), unbiased=True, keepdim=True) + self.eps)


_Unbiased2d.__module__ = "torch.nn.modules.batchnorm"  # a leaf for torch.fx, as torch's own modules are


def _cnn(norm: type = nn.BatchNorm2d):
    return nn.Sequential(norm(2, eps=0.25), nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 3, 1))


def _run(norm: type = nn.BatchNorm2d):
    return audit(lambda: _cnn(norm), input_shape=(2, 4, 4), networks=600, batch=3, seed=1, pilot=10)


def test_batchnorm2d_translates_per_channel_and_batchnorm1d_on_a_conv_output_too():
    net = translate(_cnn(), (2, 4, 4), _no_laws, batch=3).network
    assert net.layers[0] == BatchNorm(32, 3, eps=sp.Rational(1, 4), channels=2)
    assert net.layers[2] == BatchNorm(64, 3, eps=sp.Rational(1, 100000), channels=4)
    conv1d = nn.Sequential(nn.Conv1d(2, 2, 3), nn.BatchNorm1d(2))
    assert translate(conv1d, (2, 8), _no_laws, batch=4).network.layers[1] == BatchNorm(12, 4, eps=sp.Rational(1, 100000),
                                                                                         channels=2)
    with pytest.raises(TranslationError, match="give translate"):
        translate(_cnn(), (2, 4, 4), _no_laws)


def test_a_conv2d_batchnorm2d_relu_model_is_judged_where_derived_and_named_where_not():
    result = _run()
    places = {(p.place, p.tensor): p for p in result.places}
    # on the Gaussian input the B*P values of a channel are iid: chi-square with B*P - 1 degrees, exact
    assert places["batchnorm1", "signal"].exactness == "exact" and places["batchnorm1", "signal"].outcome == PASS
    assert places["conv1", "signal"].outcome == PASS
    # behind the convolution torch's eps = 1e-5 needs the law of a correlated variance: measured, not judged
    refused = places["batchnorm2", "signal"]
    assert refused.outcome == NOT_DERIVED and "correlated across positions" in refused.reason
    assert 1 - refused.estimate > 10 * refused.se  # V/(V + eps) < 1, and the measurement resolves it: the value 1 would FAIL
    assert not any(p.outcome == FAIL for p in result.places)
    assert "NOT DERIVED: BatchNorm batchnorm2 over 4 channels with eps = 1/100000" in result.text()


def test_the_unbiased_variance_over_channels_fails_where_the_biased_passes():
    result = _run(_Unbiased2d)
    places = {(p.place, p.tensor): p for p in result.places}
    assert places["batchnorm1", "signal"].outcome == FAIL
