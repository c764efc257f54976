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


# --- issue 11: absolute-bound truncated normal, orthogonal, the framework table ---------------------

import mpmath

from varprop.montecarlo.verdict import judge
from varprop.weights import (
    FRAMEWORK_INITIALISERS,
    TORCH_GAINS,
    AbsoluteTruncatedNormal,
    Orthogonal,
    torch_conv_fans,
    torch_gain,
)


def _mp_truncated_variance(lo, hi):
    """Var of N(0, 1) truncated to [lo, hi], by mpmath quadrature (an independent route)."""
    mpmath.mp.dps = 40
    pdf = lambda t: mpmath.exp(-t * t / 2) / mpmath.sqrt(2 * mpmath.pi)
    z = mpmath.quad(pdf, [lo, hi])
    m1 = mpmath.quad(lambda t: t * pdf(t), [lo, hi]) / z
    m2 = mpmath.quad(lambda t: t * t * pdf(t), [lo, hi]) / z
    return m2 - m1 * m1


def test_truncated_variance_factor_pinned_against_mpmath_and_the_keras_flax_constant():
    factor = _mp_truncated_variance(-2, 2)
    assert mpmath.nstr(factor, 10) == "0.7737413035"  # the number, to its 10 digits
    assert float(TruncatedNormal(1).standard_variance()) == pytest.approx(float(factor), rel=1e-15)
    # Keras' and Flax's variance_scaling(truncated_normal) divide the std by .87962566103423978: that constant is
    # sqrt(0.7737...) (the sd of the truncated law), so the variance they draw is scale / n.
    assert float(mpmath.sqrt(factor)) == pytest.approx(0.87962566103423978, rel=1e-16)
    assert 1 / float(mpmath.sqrt(factor)) != pytest.approx(0.87962566103423978, rel=1e-3)


def test_pytorch_trunc_normal_has_absolute_bounds():
    default = AbsoluteTruncatedNormal()  # trunc_normal_(mean=0, std=1, a=-2, b=2): +-2 sd
    assert float(default.variance) == pytest.approx(float(_mp_truncated_variance(-2, 2)), rel=1e-14)
    narrow = AbsoluteTruncatedNormal(sp.Rational(1, 50))  # std 0.02: a = -2 is 100 sd out, nothing is cut
    assert float(narrow.variance) == pytest.approx(0.02**2, rel=1e-15)
    # Keras/JAX TruncatedNormal(0.02) cuts at +-2 sd whatever the std:
    assert float(TruncatedNormal(sp.Rational(1, 50)).variance) == pytest.approx(0.02**2 * 0.7737413035, rel=1e-9)


@pytest.mark.parametrize("std, loc, a, b", [(1, 0, -2, 2), (sp.Rational(1, 2), sp.Rational(3, 10), -1, 2), (2, -1, -3, 0)])
def test_absolute_truncated_normal_moments_against_scipy(std, loc, a, b):
    law = AbsoluteTruncatedNormal(std, loc, a, b)
    s, m = float(std), float(loc)
    reference = scipy.stats.truncnorm((a - m) / s, (b - m) / s, loc=m, scale=s)
    assert float(law.mean) == pytest.approx(reference.mean(), rel=1e-12, abs=1e-14)
    assert float(law.variance) == pytest.approx(reference.var(), rel=1e-12)
    for k in range(5):
        assert float(law.moment(k)) == pytest.approx(reference.moment(k), rel=1e-10, abs=1e-14)
    assert law.iid and not law.gaussian and law.symmetric == (loc == 0 and a == -b)
    draws = law.sample((4, 5), rng=np.random.default_rng(0))
    assert draws.shape == (4, 5) and np.all((draws >= a) & (draws <= b))


def test_absolute_truncated_normal_refuses_rescaling_and_bad_bounds():
    with pytest.raises(SpecError, match="absolute bounds"):
        AbsoluteTruncatedNormal().with_variance(2)
    with pytest.raises(SpecError, match="a < b"):
        AbsoluteTruncatedNormal(1, 0, 2, -2)


def test_orthogonal_entry_moments_are_the_beta_law_of_a_sphere_coordinate():
    # A column (or row) of a Haar matrix is uniform on the sphere of dimension m = max(rows, cols):
    # w^2 / g^2 ~ Beta(1/2, (m - 1)/2); its moments from scipy.
    for rows, cols in [(7, 3), (3, 7), (5, 5)]:
        law = Orthogonal(sp.Rational(3, 2)).for_shape(rows, cols)
        m = max(rows, cols)
        beta = scipy.stats.beta(0.5, (m - 1) / 2)
        for j in (1, 2, 3):
            assert float(law.moment(2 * j)) == pytest.approx(1.5 ** (2 * j) * beta.moment(j), rel=1e-13)
        assert law.moment(3) == 0 and law.mean == 0
        assert law.variance == sp.Rational(9, 4) / m
        assert law.isometry is (rows >= cols)
    n_in, n_out, g = sp.symbols("n_in n_out g", positive=True)
    assert Orthogonal(g).for_shape(n_out, n_in).variance == g**2 / sp.Max(n_in, n_out)
    assert not Orthogonal().iid


@pytest.mark.parametrize("rows, cols", [(6, 3), (3, 6), (4, 4)])
def test_orthogonal_sampler_draws_orthogonal_matrices(rows, cols):
    law = Orthogonal(2).for_shape(rows, cols)
    w = law.sample((5, rows, cols), rng=np.random.default_rng(1))
    gram = np.swapaxes(w, -1, -2) @ w if rows >= cols else w @ np.swapaxes(w, -1, -2)
    eye = np.broadcast_to(4 * np.eye(min(rows, cols)), gram.shape)
    assert np.max(np.abs(gram - eye)) < 64 * np.finfo(float).eps * 4
    with pytest.raises(SpecError, match="for 6 x 3|for 3 x 6|for 4 x 4"):
        law.sample((2, rows + 1, cols), rng=np.random.default_rng(0))


def test_orthogonal_sampler_is_pytorch_algorithm_on_the_same_gaussian_matrix():
    torch = pytest.importorskip("torch")
    for rows, cols in [(6, 3), (3, 6)]:
        seed = 7
        ours = Orthogonal(1).for_shape(rows, cols).sample((rows, cols), rng=np.random.default_rng(seed))
        # torch.nn.init.orthogonal_'s own steps (torch 2.x), fed the Gaussian matrix our sampler drew.
        gaussian = np.random.default_rng(seed).standard_normal((rows, cols) if rows >= cols else (cols, rows))
        flattened = torch.from_numpy(gaussian)
        q, r = torch.linalg.qr(flattened)
        q = q * torch.diag(r, 0).sign()
        if rows < cols:
            q = q.t()
        assert np.max(np.abs(q.numpy() - ours)) < 1e-12


def test_torch_gains_are_calculate_gain():
    torch = pytest.importorskip("torch")
    for name, value in TORCH_GAINS.items():
        assert float(value) == torch.nn.init.calculate_gain(name)
    for slope in (None, 0.01, 0.1, 0.2, math.sqrt(5)):
        assert float(torch_gain("leaky_relu", slope)) == pytest.approx(
            torch.nn.init.calculate_gain("leaky_relu", slope), rel=1e-15)
    with pytest.raises(SpecError, match="no gain for 'gelu'"):
        torch_gain("gelu")


def test_torch_initialisers_match_torch_formulas_exactly():
    torch = pytest.importorskip("torch")
    init = torch.nn.init
    fan_in, fan_out = 48, 20
    weight = torch.empty(fan_out, fan_in)
    fi, fo = init._calculate_fan_in_and_fan_out(weight)
    assert (fi, fo) == (fan_in, fan_out)
    cases = [
        ("torch.kaiming_uniform_", {}, (init.calculate_gain("leaky_relu", 0) * math.sqrt(3 / fi)) ** 2 / 3),
        ("torch.kaiming_uniform_", {"a": math.sqrt(5)}, (init.calculate_gain("leaky_relu", math.sqrt(5)) * math.sqrt(3 / fi)) ** 2 / 3),
        ("torch.kaiming_uniform_", {"mode": "fan_out", "nonlinearity": "relu"}, (init.calculate_gain("relu") / math.sqrt(fo)) ** 2),
        ("torch.kaiming_normal_", {"nonlinearity": "tanh"}, (init.calculate_gain("tanh") / math.sqrt(fi)) ** 2),
        ("torch.xavier_uniform_", {"gain": 2}, (2 * math.sqrt(6 / (fi + fo))) ** 2 / 3),
        ("torch.xavier_normal_", {}, 2 / (fi + fo)),
        ("torch.orthogonal_", {"gain": 3}, 9 / max(fi, fo)),
        ("torch.nn.Linear", {}, (1 / math.sqrt(fi)) ** 2 / 3),
    ]
    for name, params, variance in cases:
        scheme = init_scheme(name, **params)
        assert float(scheme.law(fan_in, fan_out).variance) == pytest.approx(variance, rel=1e-14), name
    bias = init_scheme("torch.nn.Linear").bias_law(fan_in, fan_out)
    assert float(bias.bound) == pytest.approx(1 / math.sqrt(fi), rel=1e-15)


@pytest.mark.parametrize("in_channels, out_channels, kernel, groups", [(6, 8, (3, 3), 1), (6, 8, (3, 5), 2), (4, 4, 5, 4)])
def test_torch_conv_fans_are_pytorchs(in_channels, out_channels, kernel, groups):
    torch = pytest.importorskip("torch")
    kernel_tuple = kernel if isinstance(kernel, tuple) else (kernel,)
    conv = (torch.nn.Conv2d if len(kernel_tuple) == 2 else torch.nn.Conv1d)(in_channels, out_channels, kernel, groups=groups)
    fi, fo = torch.nn.init._calculate_fan_in_and_fan_out(conv.weight)
    assert torch_conv_fans(in_channels, out_channels, kernel, groups) == (fi, fo)
    # the default conv init is kaiming_uniform_(a=sqrt(5)): bound 1/sqrt(fan_in), as for nn.Linear
    law = init_scheme("torch.nn.Conv2d").law(*torch_conv_fans(in_channels, out_channels, kernel, groups))
    assert float(law.bound) == pytest.approx(1 / math.sqrt(fi), rel=1e-15)
    c, k = sp.symbols("C K", positive=True, integer=True)
    assert torch_conv_fans(c, 2 * c, (k, k), 2) == (c * k**2 / 2, 2 * c * k**2)


def _variance_verdict(draws: np.ndarray, law, prediction):
    """The checker's verdict on the sample variance of ``draws`` (SE from the law's exact fourth moment, as for
    iid entries; for an orthogonal matrix the sum of squares is a constant, so this SE is an upper bound)."""
    n = draws.size
    v, m1 = float(law.variance), float(law.mean)
    central4 = float(sp.expand(sum(sp.binomial(4, j) * law.moment(j) * (-law.mean) ** (4 - j) for j in range(5))))
    se = math.sqrt((central4 - v * v) / n)
    return judge(float(prediction), float(np.var(draws.astype(np.float64) - m1)), se, n, rtol=0.01)


@pytest.mark.parametrize("name, params, draw", [
    ("torch.nn.Linear", {}, lambda t, fi, fo: t.nn.Linear(fi, fo).weight),
    ("torch.kaiming_normal_", {"nonlinearity": "relu"}, lambda t, fi, fo: t.nn.init.kaiming_normal_(t.empty(fo, fi), nonlinearity="relu")),
    ("torch.xavier_uniform_", {}, lambda t, fi, fo: t.nn.init.xavier_uniform_(t.empty(fo, fi))),
    ("torch.trunc_normal_", {}, lambda t, fi, fo: t.nn.init.trunc_normal_(t.empty(fo, fi))),
    ("torch.orthogonal_", {}, lambda t, fi, fo: t.nn.init.orthogonal_(t.empty(fo, fi))),
])
def test_torch_initialisers_empirically(name, params, draw):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    fan_in, fan_out = 600, 500  # 3e5 entries: the 1% tolerance is resolved with 90% power for each law
    with torch.no_grad():
        draws = draw(torch, fan_in, fan_out).detach().double().numpy().ravel()
    law = init_scheme(name, **params).law(fan_in, fan_out)
    assert _variance_verdict(draws, law, law.variance).outcome == "PASS", name
    # the wrong sibling: He's 2/fan_in where the framework does something else (or half of it for He itself)
    wrong = law.variance / 2 if "kaiming" in name else sp.Rational(2, fan_in)
    assert _variance_verdict(draws, law, wrong).outcome == "FAIL", name


def test_keras_and_flax_documented_formulas():
    fan_in, fan_out = 30, 50
    sd_factor = 0.87962566103423978  # keras/jax: stddev = sqrt(scale / n) / .87962566103423978, then cut at +-2 sd
    truncated = float(_mp_truncated_variance(-2, 2))
    documented = {
        "keras.glorot_uniform": math.sqrt(6 / (fan_in + fan_out)) ** 2 / 3,
        "keras.glorot_normal": (math.sqrt(2 / (fan_in + fan_out)) / sd_factor) ** 2 * truncated,
        "keras.he_uniform": math.sqrt(6 / fan_in) ** 2 / 3,
        "keras.he_normal": (math.sqrt(2 / fan_in) / sd_factor) ** 2 * truncated,
        "keras.lecun_uniform": math.sqrt(3 / fan_in) ** 2 / 3,
        "keras.lecun_normal": (math.sqrt(1 / fan_in) / sd_factor) ** 2 * truncated,
        "keras.Dense": math.sqrt(6 / (fan_in + fan_out)) ** 2 / 3,
        "keras.orthogonal": 1 / max(fan_in, fan_out),
        "keras.random_normal": 0.05**2,
        "keras.random_uniform": 0.05**2 / 3,
        "keras.truncated_normal": 0.05**2 * truncated,
        "flax.lecun_normal": (math.sqrt(1 / fan_in) / sd_factor) ** 2 * truncated,
        "flax.linen.Dense": (math.sqrt(1 / fan_in) / sd_factor) ** 2 * truncated,
        "flax.xavier_uniform": math.sqrt(6 / (fan_in + fan_out)) ** 2 / 3,
        "flax.glorot_normal": (math.sqrt(2 / (fan_in + fan_out)) / sd_factor) ** 2 * truncated,
        "flax.kaiming_normal": (math.sqrt(2 / fan_in) / sd_factor) ** 2 * truncated,
        "flax.he_uniform": math.sqrt(6 / fan_in) ** 2 / 3,
        "flax.orthogonal": 1 / max(fan_in, fan_out),
        "flax.normal": 0.01**2,
        "flax.truncated_normal": 0.01**2 * truncated,
    }
    for name, variance in documented.items():
        assert float(init_scheme(name).law(fan_in, fan_out).variance) == pytest.approx(variance, rel=1e-14), name
    scaled = init_scheme("keras.variance_scaling", scale=3, mode="fan_out", distribution="untruncated_normal")
    assert scaled.law(fan_in, fan_out).gaussian and scaled.variance(fan_in, fan_out) == sp.Rational(3, fan_out)
    assert init_scheme("flax.variance_scaling", scale=2, mode="fan_avg").variance(N_IN, N_OUT) == 4 / (N_IN + N_OUT)


def test_every_framework_initialiser_names_its_source_and_gives_a_law():
    for name in FRAMEWORK_INITIALISERS:
        scheme = init_scheme(name)
        assert scheme.source and name.split(".")[0] in scheme.source + scheme.name
        law = scheme.law(12, 7)
        assert sp.simplify(law.variance - scheme.variance(12, 7)) == 0


def test_framework_initialiser_errors():
    with pytest.raises(SpecError, match="has no parameter 'gian'"):
        init_scheme("torch.xavier_normal_", gian=2)
    with pytest.raises(SpecError, match="unknown mode 'fan_sum'"):
        init_scheme("keras.variance_scaling", mode="fan_sum")
    with pytest.raises(SpecError, match="unknown variance_scaling distribution"):
        init_scheme("flax.variance_scaling", distribution="laplace")
    with pytest.raises(SpecError, match="no gain for 'gelu'"):
        init_scheme("torch.kaiming_normal_", nonlinearity="gelu")
