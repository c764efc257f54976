import math

import numpy as np
import pytest
import scipy.stats
import sympy as sp

from varprop.errors import SpecError
from varprop.weights import (
    N_IN,
    N_OUT,
    Normal,
    TruncatedNormal,
    Uniform,
    explicit,
    glorot,
    he,
    init_scheme,
    lecun,
    torch_linear_default,
)


def test_moments_against_scipy():
    for law, reference in [
        (Normal(sp.Rational(3, 2), 0.5), scipy.stats.norm(0.5, math.sqrt(1.5))),
        (Uniform(2), scipy.stats.uniform(-2, 4)),
        (TruncatedNormal(sp.Rational(7, 10)), scipy.stats.truncnorm(-2, 2, scale=0.7)),
        (TruncatedNormal(1, -1, 3), scipy.stats.truncnorm(-1, 3)),
    ]:
        assert float(law.mean) == pytest.approx(reference.mean(), rel=1e-12, abs=1e-14)
        assert float(law.variance) == pytest.approx(reference.var(), rel=1e-12)
        for k in range(5):
            assert float(law.moment(k)) == pytest.approx(reference.moment(k), rel=1e-10, abs=1e-14)


def test_truncated_standard_variance_published_constant():
    # Keras/TensorFlow divide the std by 0.87962566103423978 = sqrt(Var of N(0,1) truncated to [-2, 2]).
    assert math.sqrt(float(TruncatedNormal(1).standard_variance())) == pytest.approx(0.87962566103423978, rel=1e-15)


@pytest.mark.parametrize("law", [Normal(1), Uniform(1), TruncatedNormal(1)])
def test_with_variance_and_sampler(law):
    scaled = law.with_variance(sp.Rational(2, 7))
    assert sp.simplify(scaled.variance - sp.Rational(2, 7)) == 0
    draws = scaled.sample((200_000,), rng=np.random.default_rng(0))
    # The sample variance has SE ~ sqrt((m4 - v^2)/N); 5 SE is far from any plausible fluctuation.
    v, m4 = float(scaled.variance), float(scaled.moment(4))
    assert abs(draws.var() - v) < 5 * math.sqrt((m4 - v * v) / draws.size)


def test_schemes_match_the_frameworks():
    assert he().variance(10, 20) == sp.Rational(2, 10)
    assert he("fan_out").variance(10, 20) == sp.Rational(2, 20)
    assert he(a=sp.Rational(1, 10)).variance(10, 3) == sp.Rational(2, 10) / (1 + sp.Rational(1, 100))
    assert glorot().variance(N_IN, N_OUT) == 2 / (N_IN + N_OUT)
    assert lecun().variance(8, 1) == sp.Rational(1, 8)
    # PyTorch: kaiming_uniform_(a=sqrt(5)): gain = sqrt(2 / (1 + a^2)), bound = gain * sqrt(3 / fan_in).
    fan_in = 64
    gain = math.sqrt(2 / (1 + 5))
    bound = gain * math.sqrt(3 / fan_in)
    law = torch_linear_default().law(fan_in, 10)
    assert float(law.bound) == pytest.approx(bound, rel=1e-15)
    assert float(law.variance) == pytest.approx(1 / (3 * fan_in), rel=1e-15)
    bias = torch_linear_default().bias_law(fan_in, 10)
    assert float(bias.bound) == pytest.approx(1 / math.sqrt(fan_in), rel=1e-15)
    assert glorot("uniform").law(3, 5).bound == sp.sqrt(sp.Rational(6, 8))
    assert init_scheme("kaiming", mode="fan_out").variance(1, 4) == sp.Rational(1, 2)


def test_bad_laws_and_schemes():
    with pytest.raises(SpecError, match="non-negative, got -1"):
        Normal(-1)
    with pytest.raises(SpecError, match="positive"):
        Uniform(0)
    with pytest.raises(SpecError, match="lo < hi"):
        TruncatedNormal(1, 2, -2)
    with pytest.raises(SpecError, match="unknown weight distribution 'gauss'"):
        he(distribution="gauss")
    with pytest.raises(SpecError, match="unknown mode 'fan_avg'"):
        he("fan_avg")
    with pytest.raises(SpecError, match="unknown init scheme"):
        init_scheme("orthogonal")
    with pytest.raises(SpecError, match="non-negative"):
        explicit(-2)
    with pytest.raises(SpecError, match="finite"):
        Normal(float("nan"))
    assert Normal(sp.Symbol("sigma2")).variance == sp.Symbol("sigma2")  # symbols pass validation
    with pytest.raises(SpecError, match="symbolic"):
        Normal(sp.Symbol("s")).sample((2,), rng=np.random.default_rng(0))
