r"""Weight laws (with symbolic moments and a numpy sampler) and initialisation schemes.

Every law answers the same questions: ``mean``, ``variance``, ``moment(k)`` (sympy) and
``sample(shape, rng=...)`` (numpy), ``with_variance(v)`` gives the law of the same family scaled
to a target variance, ``iid`` says whether the entries of a matrix are independent and
``for_shape(rows, cols)`` binds a law whose entries depend on the matrix's shape
(:class:`Orthogonal`). Code handling "any law" never switches on a type name.

=================================  ======================================================  ====
law                                what                                                    iid
=================================  ======================================================  ====
:class:`Normal`                    :math:`\mathcal N(\mu, \sigma^2)`                       yes
:class:`Uniform`                   :math:`U(-b, b)`                                        yes
:class:`TruncatedNormal`           normal cut at bounds in units of its sd (Keras, JAX)    yes
:class:`AbsoluteTruncatedNormal`   PyTorch's ``trunc_normal_(mean, std, a, b)``            yes
:class:`Orthogonal`                Haar orthogonal matrix times a gain (``orthogonal_``)   no
=================================  ======================================================  ====

An :class:`InitScheme` maps (fan-in, fan-out) to a law through one variance expression in the
symbols :data:`N_IN` and :data:`N_OUT`:

==========================  ======================================================  =====================
scheme                      variance                                                 source
==========================  ======================================================  =====================
he / kaiming (fan_in)       :math:`2 / ((1 + a^2)\, n_{in})`                        He et al. 2015, eq. 10
he / kaiming (fan_out)      :math:`2 / ((1 + a^2)\, n_{out})`                       He et al. 2015, eq. 14
glorot / xavier             :math:`2 / (n_{in} + n_{out})`                          Glorot & Bengio 2010, eq. 12
lecun                       :math:`1 / n_{in}`                                      LeCun et al. 1998
torch nn.Linear default     :math:`1 / (3 n_{in})` (kaiming_uniform, a = sqrt 5)    PyTorch ``reset_parameters``
==========================  ======================================================  =====================

Every PyTorch, Keras and Flax initialiser is in :data:`FRAMEWORK_INITIALISERS`, by name
(``torch.kaiming_uniform_``, ``keras.he_normal``, ``flax.lecun_normal``, ...), each taking the
framework function's own parameters with its defaults: ``init_scheme("torch.kaiming_uniform_",
a=5 ** 0.5)``."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Protocol, runtime_checkable

import numpy as np
import sympy as sp

from ._validate import as_sympy_number, check_nonnegative, check_positive, is_numeric
from .errors import SpecError

__all__ = [
    "N_IN",
    "N_OUT",
    "WeightLaw",
    "Normal",
    "Uniform",
    "TruncatedNormal",
    "AbsoluteTruncatedNormal",
    "Orthogonal",
    "DISTRIBUTIONS",
    "InitScheme",
    "he",
    "kaiming",
    "glorot",
    "xavier",
    "lecun",
    "torch_linear_default",
    "keras_default",
    "explicit",
    "init_scheme",
    "init_parameters",
    "initialiser_table",
    "INIT_SCHEMES",
    "INIT_NAMES",
    "FRAMEWORK_INITIALISERS",
    "TORCH_GAINS",
    "torch_gain",
    "torch_conv_fans",
]

#: Fan-in and fan-out of a dense layer, as they appear in init-scheme variances.
N_IN = sp.Symbol("n_in", positive=True, integer=True)
N_OUT = sp.Symbol("n_out", positive=True, integer=True)


@runtime_checkable
class WeightLaw(Protocol):
    """What every weight law answers."""

    @property
    def mean(self) -> sp.Expr: ...

    @property
    def variance(self) -> sp.Expr: ...

    @property
    def symmetric(self) -> bool:
        """True when the law is symmetric about 0 (what the exact rectifier lemmas need)."""
        ...

    @property
    def gaussian(self) -> bool:
        """True for a (non-truncated) normal law."""
        ...

    @property
    def iid(self) -> bool:
        """True when the entries of a weight matrix are drawn independently (False: :class:`Orthogonal`).

        Derivations that need independent entries (fourth moments, the finite-width laws, the
        conditional-Gaussian sampling engine) refuse a law for which this is False.
        """
        ...

    @property
    def isometry(self) -> bool | None:
        r"""True when :math:`\|W x\| / \|x\|` is the same constant for every x and every draw (tall orthogonal W)."""
        ...

    def for_shape(self, rows: object, cols: object) -> WeightLaw:
        """The law of the entries of a ``rows x cols`` matrix (itself for an iid law)."""
        ...

    def moment(self, k: int) -> sp.Expr: ...

    def with_variance(self, variance: sp.Expr) -> WeightLaw: ...

    def sample(
        self, shape: tuple[int, ...], *, rng: np.random.Generator, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Draw entries (``shape`` ends with rows, cols for a matrix); ``out`` (float64) is filled in place when given."""
        ...


class _Iid:
    """What every law with independent entries shares."""

    iid = True
    isometry = False

    def for_shape(self, rows: object, cols: object) -> WeightLaw:
        return self


def _numeric(expr: sp.Expr, what: str) -> float:
    if not is_numeric(expr):
        raise SpecError(f"{what} is symbolic ({expr}); give numeric widths and parameters to sample")
    return float(expr)


# Numbers a law needs to sample, computed once per process and kept in module-level caches keyed on
# the law's (hashable, immutable) parameters, never in the instance: a law stays plain data that
# pickles, before and after sampling, and equal laws share the cache.


@lru_cache(maxsize=1024)
def _float(expr: sp.Expr, what: str) -> float:
    return _numeric(expr, what)


@lru_cache(maxsize=1024)
def _normal_floats(var: sp.Expr, loc: sp.Expr) -> tuple[float, float]:
    return math.sqrt(_numeric(var, "variance of the Normal law")), _numeric(loc, "mean of the Normal law")


@lru_cache(maxsize=256)
def _truncnorm(std: sp.Expr, lo: sp.Expr, hi: sp.Expr) -> object:
    """The frozen ``scipy.stats.truncnorm`` law of ``TruncatedNormal(std, lo, hi)``."""
    scale = _numeric(std, "std of the TruncatedNormal law")
    a = _numeric(lo, "lower truncation point")
    b = _numeric(hi, "upper truncation point")
    import scipy.stats  # imported here: it costs 0.4 s, and only truncated-normal sampling needs it

    return scipy.stats.truncnorm(a, b, loc=0.0, scale=scale)


def _check_order(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise SpecError(f"moment order must be a non-negative integer, got {k!r}")
    return k


@dataclass(frozen=True)
class Normal(_Iid):
    r"""Gaussian weights :math:`w \sim \mathcal N(\mu, \sigma^2)`."""

    var: sp.Expr
    loc: sp.Expr = sp.Integer(0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "var", check_nonnegative(self.var, "variance of a Normal law"))
        object.__setattr__(self, "loc", as_sympy_number(self.loc, "mean of a Normal law"))

    @property
    def mean(self) -> sp.Expr:
        return self.loc

    @property
    def symmetric(self) -> bool:
        return self.loc == 0

    @property
    def gaussian(self) -> bool:
        return True

    @property
    def variance(self) -> sp.Expr:
        return self.var

    def moment(self, k: int) -> sp.Expr:
        r""":math:`E[w^k] = \sum_j \binom{k}{j} \mu^{k-j} \sigma^j (j-1)!!` over even j."""
        k = _check_order(k)
        return sp.expand(
            sum(
                sp.binomial(k, j) * self.loc ** (k - j) * self.var ** sp.Rational(j, 2) * sp.factorial2(j - 1)
                for j in range(0, k + 1, 2)
            )
        )

    def with_variance(self, variance: sp.Expr) -> Normal:
        return Normal(variance, self.loc)

    def sample(
        self, shape: tuple[int, ...], *, rng: np.random.Generator, out: np.ndarray | None = None
    ) -> np.ndarray:
        std, loc = _normal_floats(self.var, self.loc)
        out = rng.standard_normal(shape) if out is None else rng.standard_normal(out=out)
        out *= std
        if loc:
            out += loc
        return out

    def __str__(self) -> str:
        return f"Normal(var={self.var}" + (f", mean={self.loc})" if self.loc != 0 else ")")


@dataclass(frozen=True)
class Uniform(_Iid):
    r"""Symmetric uniform weights :math:`w \sim U(-b, b)`, variance :math:`b^2/3`."""

    bound: sp.Expr

    def __post_init__(self) -> None:
        object.__setattr__(self, "bound", check_positive(self.bound, "bound of a Uniform law"))

    @property
    def mean(self) -> sp.Expr:
        return sp.Integer(0)

    symmetric = True
    gaussian = False

    @property
    def variance(self) -> sp.Expr:
        return self.bound**2 / 3

    def moment(self, k: int) -> sp.Expr:
        r""":math:`E[w^k] = b^k / (k + 1)` for even k, 0 for odd k."""
        k = _check_order(k)
        return sp.Integer(0) if k % 2 else self.bound**k / (k + 1)

    def with_variance(self, variance: sp.Expr) -> Uniform:
        return Uniform(sp.sqrt(3 * check_positive(variance, "variance of a Uniform law")))

    def sample(
        self, shape: tuple[int, ...], *, rng: np.random.Generator, out: np.ndarray | None = None
    ) -> np.ndarray:
        bound = _float(self.bound, "bound of the Uniform law")
        out = rng.random(shape) if out is None else rng.random(out=out)
        out *= 2.0 * bound
        out -= bound
        return out

    def __str__(self) -> str:
        return f"Uniform(-{self.bound}, {self.bound})"


def _std_normal_pdf(t: sp.Expr) -> sp.Expr:
    return sp.exp(-(t**2) / 2) / sp.sqrt(2 * sp.pi)


def _std_normal_cdf(t: sp.Expr) -> sp.Expr:
    return (1 + sp.erf(t / sp.sqrt(2))) / 2


@dataclass(frozen=True)
class TruncatedNormal(_Iid):
    r"""A normal law of scale :math:`\sigma` truncated to :math:`[\sigma\,lo, \sigma\,hi]`.

    ``lo`` and ``hi`` are in units of ``std`` (Keras and TensorFlow truncate at two standard
    deviations: ``lo=-2, hi=2``). Moments follow the truncated-normal recursion
    :math:`m_k = (k-1) m_{k-2} - (hi^{k-1}\varphi(hi) - lo^{k-1}\varphi(lo))/Z`, with
    :math:`Z = \Phi(hi) - \Phi(lo)`.
    """

    std: sp.Expr
    lo: sp.Expr = sp.Integer(-2)
    hi: sp.Expr = sp.Integer(2)

    def __post_init__(self) -> None:
        object.__setattr__(self, "std", check_positive(self.std, "std of a TruncatedNormal law"))
        lo = as_sympy_number(self.lo, "lower truncation point")
        hi = as_sympy_number(self.hi, "upper truncation point")
        if (hi - lo).is_nonpositive:
            raise SpecError(f"truncation needs lo < hi, got lo={lo}, hi={hi}")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    def _standard_moment(self, k: int) -> sp.Expr:
        lo, hi = self.lo, self.hi
        mass = _std_normal_cdf(hi) - _std_normal_cdf(lo)
        moments = [sp.Integer(1), -(_std_normal_pdf(hi) - _std_normal_pdf(lo)) / mass]
        for j in range(2, k + 1):
            boundary = hi ** (j - 1) * _std_normal_pdf(hi) - lo ** (j - 1) * _std_normal_pdf(lo)
            moments.append((j - 1) * moments[j - 2] - boundary / mass)
        return moments[k]

    @property
    def mean(self) -> sp.Expr:
        return sp.simplify(self.std * self._standard_moment(1))

    @property
    def symmetric(self) -> bool:
        return sp.simplify(self.lo + self.hi) == 0

    gaussian = False

    @property
    def variance(self) -> sp.Expr:
        return self.std**2 * self.standard_variance()

    def standard_variance(self) -> sp.Expr:
        """Variance of the truncated law with ``std = 1`` (0.7737... for the interval [-2, 2])."""
        m1 = self._standard_moment(1)
        if m1 != 0:  # asymmetric bounds: simplify would take tens of seconds for nothing shorter
            return self._standard_moment(2) - m1**2
        return sp.simplify(self._standard_moment(2))

    def moment(self, k: int) -> sp.Expr:
        k = _check_order(k)
        return self.std**k * self._standard_moment(k)

    def with_variance(self, variance: sp.Expr) -> TruncatedNormal:
        variance = check_positive(variance, "variance of a TruncatedNormal law")
        return TruncatedNormal(sp.sqrt(variance / self.standard_variance()), self.lo, self.hi)

    def sample(
        self, shape: tuple[int, ...], *, rng: np.random.Generator, out: np.ndarray | None = None
    ) -> np.ndarray:
        draws = _truncnorm(self.std, self.lo, self.hi).rvs(size=shape, random_state=rng)
        if out is None:
            return draws
        out[...] = draws
        return out

    def __str__(self) -> str:
        return f"TruncatedNormal(std={self.std}, [{self.lo}, {self.hi}] std)"


@lru_cache(maxsize=256)
def _absolute_truncnorm(loc: sp.Expr, std: sp.Expr, lo: sp.Expr, hi: sp.Expr) -> object:
    """The frozen ``scipy.stats.truncnorm`` law of ``AbsoluteTruncatedNormal(loc, std, a, b)``."""
    import scipy.stats

    centre = _numeric(loc, "mean of the AbsoluteTruncatedNormal law")
    scale = _numeric(std, "std of the AbsoluteTruncatedNormal law")
    a, b = _numeric(lo, "lower bound a"), _numeric(hi, "upper bound b")
    return scipy.stats.truncnorm((a - centre) / scale, (b - centre) / scale, loc=centre, scale=scale)


@dataclass(frozen=True)
class AbsoluteTruncatedNormal(_Iid):
    r"""PyTorch's ``trunc_normal_(mean, std, a, b)``: :math:`\mathcal N(\mu, \sigma^2)` truncated to :math:`[a, b]`.

    The bounds are *absolute* (PyTorch, ``torch.nn.init.trunc_normal_``; defaults ``mean=0, std=1,
    a=-2, b=2``), unlike :class:`TruncatedNormal` whose bounds are in units of the standard
    deviation (Keras, JAX). With :math:`\alpha = (a - \mu)/\sigma`, :math:`\beta = (b - \mu)/\sigma`
    the law is :math:`\mu + \sigma T` with :math:`T` a standard normal truncated to
    :math:`[\alpha, \beta]`, so its moments are those of ``TruncatedNormal(std, alpha, beta)``
    shifted by :math:`\mu`. With ``std = 0.02`` (a common transformer init) the default bounds
    :math:`\pm 2` sit 100 standard deviations out and truncate nothing; with ``std = 1`` they are
    :math:`\pm 2` sd and the variance is :math:`0.7737\ldots`, not 1.
    """

    std: sp.Expr = sp.Integer(1)
    loc: sp.Expr = sp.Integer(0)
    a: sp.Expr = sp.Integer(-2)
    b: sp.Expr = sp.Integer(2)

    def __post_init__(self) -> None:
        object.__setattr__(self, "std", check_positive(self.std, "std of trunc_normal_"))
        object.__setattr__(self, "loc", as_sympy_number(self.loc, "mean of trunc_normal_"))
        a = as_sympy_number(self.a, "lower bound a of trunc_normal_")
        b = as_sympy_number(self.b, "upper bound b of trunc_normal_")
        if (b - a).is_nonpositive:
            raise SpecError(f"trunc_normal_ needs a < b, got a={a}, b={b}")
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)

    @property
    def standardised(self) -> TruncatedNormal:
        r"""The centred law :math:`\sigma T`: ``TruncatedNormal(std, (a - mean)/std, (b - mean)/std)``."""
        return TruncatedNormal(self.std, (self.a - self.loc) / self.std, (self.b - self.loc) / self.std)

    @property
    def mean(self) -> sp.Expr:
        return self.loc + self.standardised.mean

    @property
    def symmetric(self) -> bool:
        return sp.simplify(self.a + self.b - 2 * self.loc) == 0 and self.loc == 0

    gaussian = False

    @property
    def variance(self) -> sp.Expr:
        return self.standardised.variance

    def moment(self, k: int) -> sp.Expr:
        r""":math:`E[w^k] = \sum_j \binom kj \mu^{k-j} E[(\sigma T)^j]`."""
        k = _check_order(k)
        inner = self.standardised
        return sum(sp.binomial(k, j) * self.loc ** (k - j) * inner.moment(j) for j in range(k + 1))

    def with_variance(self, variance: sp.Expr) -> AbsoluteTruncatedNormal:
        raise SpecError(
            f"{self} has absolute bounds, so its variance is not a scale of one law; give std "
            "(AbsoluteTruncatedNormal(std, mean, a, b)) or use TruncatedNormal, whose bounds are in sd units"
        )

    def sample(
        self, shape: tuple[int, ...], *, rng: np.random.Generator, out: np.ndarray | None = None
    ) -> np.ndarray:
        draws = _absolute_truncnorm(self.loc, self.std, self.a, self.b).rvs(size=shape, random_state=rng)
        if out is None:
            return draws
        out[...] = draws
        return out

    def __str__(self) -> str:
        mean = f", mean={self.loc}" if self.loc != 0 else ""
        return f"trunc_normal_(std={self.std}{mean}, a={self.a}, b={self.b})"


@dataclass(frozen=True)
class Orthogonal:
    r"""A Haar-random (semi-)orthogonal matrix times ``gain``: PyTorch's ``orthogonal_``, Keras' and Flax's ``orthogonal``.

    For a ``rows x cols`` matrix, PyTorch draws a Gaussian matrix (transposed when rows < cols), takes
    its QR decomposition and multiplies :math:`Q` by the signs of :math:`R`'s diagonal, which makes
    :math:`Q` Haar-distributed (Mezzadri 2007, "How to generate random matrices from the classical
    compact groups"): the columns are orthonormal when rows >= cols, the rows when rows < cols.
    Every column (rows >= cols) or row is uniform on the unit sphere of dimension
    :math:`m = \max(\text{rows}, \text{cols})`, so an entry has

    .. math:: E[w] = 0, \quad E[w^2] = \frac{g^2}{m}, \quad E[w^{2j}] = g^{2j} \prod_{i=0}^{j-1} \frac{2i + 1}{m + 2i}

    (:math:`w^2/g^2 \sim \mathrm{Beta}(1/2, (m-1)/2)`), and distinct entries are uncorrelated
    (flipping the sign of one column or row keeps the law). Entries are **not** independent:
    :attr:`iid` is False. ``rows`` and ``cols`` are bound by the dense layer that holds the law
    (:meth:`for_shape`); until then the moments are in the symbols :data:`N_OUT` (rows) and :data:`N_IN` (cols).
    """

    gain: sp.Expr = sp.Integer(1)
    rows: object = None
    cols: object = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "gain", check_positive(self.gain, "gain of an Orthogonal law"))
        if (self.rows is None) != (self.cols is None):
            raise SpecError(f"Orthogonal needs both rows and cols, or neither; got rows={self.rows}, cols={self.cols}")
        if self.rows is not None:
            from ._validate import check_width

            object.__setattr__(self, "rows", check_width(self.rows, "rows of an Orthogonal matrix"))
            object.__setattr__(self, "cols", check_width(self.cols, "cols of an Orthogonal matrix"))

    iid = False
    gaussian = False
    symmetric = True  # W and -W have the same law

    def for_shape(self, rows: object, cols: object) -> Orthogonal:
        if self.rows is not None and (sp.simplify(self.rows - rows) != 0 or sp.simplify(self.cols - cols) != 0):
            raise SpecError(f"{self} is for a {self.rows} x {self.cols} matrix, not {rows} x {cols}")
        return Orthogonal(self.gain, rows, cols)

    def _size(self) -> sp.Expr:
        """max(rows, cols); in the symbols N_OUT, N_IN until a layer binds the shape."""
        if self.rows is None:
            return sp.Max(N_OUT, N_IN)
        return sp.Max(self.rows, self.cols)

    @property
    def mean(self) -> sp.Expr:
        return sp.Integer(0)

    @property
    def variance(self) -> sp.Expr:
        return self.gain**2 / self._size()

    @property
    def isometry(self) -> bool | None:
        r"""True when :math:`\|W x\| = g \|x\|` for every x (rows >= cols), False when not, None when unknown (symbols)."""
        if self.rows is None:
            return None
        diff = sp.sympify(self.rows - self.cols)
        return True if diff.is_nonnegative else False if diff.is_negative else None

    def moment(self, k: int) -> sp.Expr:
        k = _check_order(k)
        if k % 2:
            return sp.Integer(0)
        m = self._size()
        return self.gain**k * sp.Mul(*[sp.Integer(2 * i + 1) / (m + 2 * i) for i in range(k // 2)])

    def with_variance(self, variance: sp.Expr) -> Orthogonal:
        variance = check_positive(variance, "variance of an Orthogonal law")
        return Orthogonal(sp.sqrt(variance * self._size()), self.rows, self.cols)

    def sample(
        self, shape: tuple[int, ...], *, rng: np.random.Generator, out: np.ndarray | None = None
    ) -> np.ndarray:
        """One Haar matrix per leading index: ``shape`` is ``(..., rows, cols)``, as PyTorch's ``orthogonal_`` draws it."""
        if len(shape) < 2:
            raise SpecError(f"an Orthogonal law samples matrices; got shape {shape}")
        rows, cols = shape[-2:]
        if self.rows is not None and (rows, cols) != (self.rows, self.cols):
            raise SpecError(f"{self} is for {self.rows} x {self.cols} matrices, asked for {rows} x {cols}")
        gain = _float(self.gain, "gain of the Orthogonal law")
        tall = rows >= cols
        gaussian = rng.standard_normal(shape if tall else (*shape[:-2], cols, rows))
        q, r = np.linalg.qr(gaussian)
        signs = np.sign(np.diagonal(r, axis1=-2, axis2=-1))
        signs[signs == 0] = 1.0
        q *= signs[..., None, :]
        if not tall:
            q = np.swapaxes(q, -1, -2)
        q *= gain
        if out is None:
            return np.ascontiguousarray(q)
        out[...] = q
        return out

    def __str__(self) -> str:
        shape = f", {self.rows} x {self.cols}" if self.rows is not None else ""
        return f"Orthogonal(gain={self.gain}{shape})"


_DEFAULT_LAWS: dict[str, WeightLaw] = {
    "normal": Normal(1),
    "uniform": Uniform(1),
    "truncated_normal": TruncatedNormal(1),
    "orthogonal": Orthogonal(1),
}
#: Distribution names of the iid families, accepted wherever a distribution is chosen (init schemes also take
#: ``"orthogonal"``).
DISTRIBUTIONS: tuple[str, ...] = ("normal", "uniform", "truncated_normal")


def _check_distribution(distribution: str) -> str:
    if distribution not in _DEFAULT_LAWS:
        raise SpecError(f"unknown weight distribution {distribution!r}; known: {', '.join(DISTRIBUTIONS)}")
    return distribution


@dataclass(frozen=True)
class InitScheme:
    r"""An initialisation scheme: a weight variance in :data:`N_IN`, :data:`N_OUT` and a family.

    Parameters
    ----------
    name
        A readable name such as ``"he(fan_in)"``.
    variance_expr
        :math:`\operatorname{Var}[w]` as a sympy expression in :data:`N_IN` and :data:`N_OUT`.
    distribution
        ``"normal"``, ``"uniform"``, ``"truncated_normal"`` (bounds at +-2 sd) or ``"orthogonal"``, scaled so
        its variance is exact.
    bias_variance_expr
        Variance of the bias in the same symbols (uniform), or ``None`` for no bias.
    source
        Where the scheme comes from (the framework function, or the paper and equation).
    fixed_law
        A law used as it is, whatever the fans (PyTorch's ``trunc_normal_(std=1)``, Keras'
        ``RandomNormal(stddev=0.05)``); ``variance_expr`` is then its variance.
    """

    name: str
    variance_expr: sp.Expr
    distribution: str = "normal"
    bias_variance_expr: sp.Expr | None = None
    source: str = ""
    fixed_law: WeightLaw | None = None

    def __post_init__(self) -> None:
        _check_distribution(self.distribution)
        expr = as_sympy_number(self.variance_expr, f"variance of init scheme {self.name}")
        object.__setattr__(self, "variance_expr", expr)
        if self.fixed_law is not None and not isinstance(self.fixed_law, WeightLaw):
            raise SpecError(f"fixed_law of init scheme {self.name} must be a weight law, got {self.fixed_law!r}")

    def variance(self, fan_in: int | sp.Symbol, fan_out: int | sp.Symbol) -> sp.Expr:
        """The weight variance for one layer."""
        return self.variance_expr.subs({N_IN: fan_in, N_OUT: fan_out})

    def law(self, fan_in: int | sp.Symbol, fan_out: int | sp.Symbol) -> WeightLaw:
        """The weight law for one layer (a ``fan_out x fan_in`` matrix)."""
        if self.fixed_law is not None:
            return self.fixed_law.for_shape(fan_out, fan_in)
        return _DEFAULT_LAWS[self.distribution].for_shape(fan_out, fan_in).with_variance(self.variance(fan_in, fan_out))

    def bias_law(self, fan_in: int | sp.Symbol, fan_out: int | sp.Symbol) -> WeightLaw | None:
        """The bias law for one layer, or ``None`` when the scheme has no bias."""
        if self.bias_variance_expr is None:
            return None
        variance = self.bias_variance_expr.subs({N_IN: fan_in, N_OUT: fan_out})
        return Uniform(1).with_variance(variance)

    def __str__(self) -> str:
        return self.name


_MODES = ("fan_in", "fan_out")


def _fan(mode: str) -> sp.Symbol:
    if mode not in _MODES:
        raise SpecError(f"unknown mode {mode!r}; known: {', '.join(_MODES)}")
    return N_IN if mode == "fan_in" else N_OUT


def he(mode: str = "fan_in", a: object = 0, distribution: str = "normal") -> InitScheme:
    r"""He / Kaiming: :math:`\operatorname{Var}[w] = 2 / ((1 + a^2)\, n)` with n the fan of ``mode``.

    He et al. (2015), eq. (10) (fan_in, forward) and eq. (14) (fan_out, backward); the leaky slope
    ``a`` follows their PReLU analysis, Sec. 2.2.
    """
    slope = as_sympy_number(a, "leaky slope a")
    label = f"he({mode}" + (f", a={slope}" if slope != 0 else "") + f", {distribution})"
    return InitScheme(
        label,
        2 / ((1 + slope**2) * _fan(mode)),
        _check_distribution(distribution),
        source="He et al. 2015, eq. (10)" if mode == "fan_in" else "He et al. 2015, eq. (14)",
    )


kaiming = he


def glorot(distribution: str = "normal") -> InitScheme:
    r"""Glorot / Xavier: :math:`\operatorname{Var}[w] = 2/(n_{in} + n_{out})` (Glorot & Bengio 2010, eq. 12)."""
    return InitScheme(
        f"glorot({distribution})",
        2 / (N_IN + N_OUT),
        _check_distribution(distribution),
        source="Glorot & Bengio 2010, eq. (12)",
    )


xavier = glorot


def lecun(distribution: str = "normal") -> InitScheme:
    r"""LeCun: :math:`\operatorname{Var}[w] = 1 / n_{in}` (LeCun et al. 1998, Efficient BackProp)."""
    return InitScheme(
        f"lecun({distribution})",
        1 / N_IN,
        _check_distribution(distribution),
        source="LeCun et al. 1998",
    )


def torch_linear_default(bias: bool = True) -> InitScheme:
    r"""PyTorch ``nn.Linear`` default: ``kaiming_uniform_(a=sqrt(5))``.

    The gain is :math:`\sqrt{2/(1+5)}`, the bound :math:`\text{gain}\sqrt{3/n_{in}} = 1/\sqrt{n_{in}}`,
    so :math:`\operatorname{Var}[w] = 1/(3 n_{in})`; the bias is :math:`U(-1/\sqrt{n_{in}}, 1/\sqrt{n_{in}})`,
    also of variance :math:`1/(3 n_{in})`.
    """
    return InitScheme(
        "torch_linear_default" + ("" if bias else "(no bias)"),
        1 / (3 * N_IN),
        "uniform",
        bias_variance_expr=1 / (3 * N_IN) if bias else None,
        source="PyTorch nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5))",
    )


def keras_default() -> InitScheme:
    """Keras ``Dense`` default: ``glorot_uniform`` with zero bias."""
    return glorot("uniform")


def explicit(variance: object, distribution: str = "normal") -> InitScheme:
    """A scheme with a given variance, a number or a sympy expression in ``N_IN`` / ``N_OUT``."""
    expr = check_nonnegative(variance, "explicit weight variance")
    stray = expr.free_symbols - {N_IN, N_OUT}
    if any(s.is_positive is False for s in stray):
        raise SpecError(f"explicit weight variance {expr} uses a symbol known to be non-positive")
    return InitScheme(f"explicit({expr}, {distribution})", expr, _check_distribution(distribution))


# --- PyTorch's gains and every framework initialiser by name --------------------------------------

#: PyTorch's ``torch.nn.init.calculate_gain`` table, as documented
#: (https://pytorch.org/docs/stable/nn.init.html#torch.nn.init.calculate_gain): a published framework
#: constant per nonlinearity, ``leaky_relu`` with its negative slope (default 0.01).
TORCH_GAINS: dict[str, sp.Expr] = {
    "linear": sp.Integer(1),
    "conv1d": sp.Integer(1),
    "conv2d": sp.Integer(1),
    "conv3d": sp.Integer(1),
    "conv_transpose1d": sp.Integer(1),
    "conv_transpose2d": sp.Integer(1),
    "conv_transpose3d": sp.Integer(1),
    "sigmoid": sp.Integer(1),
    "tanh": sp.Rational(5, 3),
    "relu": sp.sqrt(2),
    "selu": sp.Rational(3, 4),
}
#: leaky_relu's default negative slope in ``calculate_gain`` and ``kaiming_*_``'s default ``a`` (0).
TORCH_LEAKY_DEFAULT = sp.Rational(1, 100)


def torch_gain(nonlinearity: str, param: object = None) -> sp.Expr:
    r"""PyTorch's ``calculate_gain(nonlinearity, param)``, from its documented table.

    ``leaky_relu`` gives :math:`\sqrt{2/(1 + a^2)}` with ``a = param`` (default 0.01); every other
    entry is a constant (``tanh``: 5/3, ``selu``: 3/4, ``relu``: :math:`\sqrt 2`, ``linear``, conv and
    ``sigmoid``: 1). Nonlinearities outside the table (gelu, silu, ...) are refused, as PyTorch refuses them.
    """
    if nonlinearity == "leaky_relu":
        slope = TORCH_LEAKY_DEFAULT if param is None else as_sympy_number(param, "leaky_relu negative slope")
        return sp.sqrt(sp.Integer(2) / (1 + slope**2))
    if nonlinearity not in TORCH_GAINS:
        known = ", ".join([*TORCH_GAINS, "leaky_relu"])
        raise SpecError(f"PyTorch's calculate_gain has no gain for {nonlinearity!r}; it knows: {known}")
    return TORCH_GAINS[nonlinearity]


def torch_conv_fans(in_channels: object, out_channels: object, kernel_size: object, groups: object = 1) -> tuple[sp.Expr, sp.Expr]:
    r"""(fan_in, fan_out) of a convolution's weight as PyTorch's ``_calculate_fan_in_and_fan_out`` computes them.

    The weight has shape ``(out_channels, in_channels / groups, *kernel)``; with :math:`k` the
    product of the kernel sizes, :math:`\text{fan\_in} = (\text{in} / \text{groups})\,k` and
    :math:`\text{fan\_out} = \text{out}\,k` (PyTorch does not divide the fan-out by the groups).
    Symbols are accepted: ``torch_conv_fans(C_in, C_out, (K, K))``.
    """
    kernel = kernel_size if isinstance(kernel_size, tuple | list) else (kernel_size,)
    size = sp.Mul(*[as_sympy_number(k, "kernel size") for k in kernel])
    groups_ = as_sympy_number(groups, "groups")
    return as_sympy_number(in_channels, "in_channels") / groups_ * size, as_sympy_number(out_channels, "out_channels") * size


_FAN_MODES = {"fan_in": N_IN, "fan_out": N_OUT, "fan_avg": (N_IN + N_OUT) / 2}


def _mode(mode: str, known: tuple[str, ...] = ("fan_in", "fan_out", "fan_avg")) -> sp.Expr:
    if mode not in known:
        raise SpecError(f"unknown mode {mode!r}; known: {', '.join(known)}")
    return _FAN_MODES[mode]


def _torch_kaiming(distribution: str, a: object = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> InitScheme:
    gain = torch_gain(nonlinearity, a)
    fan = _mode(mode, ("fan_in", "fan_out"))
    return InitScheme(f"torch.nn.init.kaiming_{distribution}_(a={a}, mode={mode}, nonlinearity={nonlinearity})",
                      gain**2 / fan, distribution, source=f"torch.nn.init.kaiming_{distribution}_: std = gain / sqrt({mode})")


def _torch_xavier(distribution: str, gain: object = 1) -> InitScheme:
    g = as_sympy_number(gain, "gain")
    return InitScheme(f"torch.nn.init.xavier_{distribution}_(gain={g})", g**2 * 2 / (N_IN + N_OUT), distribution,
                      source=f"torch.nn.init.xavier_{distribution}_: std = gain * sqrt(2 / (fan_in + fan_out))")


def _torch_trunc_normal(mean: object = 0, std: object = 1, a: object = -2, b: object = 2) -> InitScheme:
    law = AbsoluteTruncatedNormal(std, mean, a, b)
    return InitScheme(f"torch.nn.init.{law}", law.variance, "truncated_normal", fixed_law=law,
                      source="torch.nn.init.trunc_normal_ (absolute bounds a, b)")


def _orthogonal(framework: str, gain: object = 1) -> InitScheme:
    g = as_sympy_number(gain, "gain")
    return InitScheme(f"{framework}(gain={g})", g**2 / sp.Max(N_IN, N_OUT), "orthogonal", source=framework)


def _torch_module_default(module: str) -> InitScheme:
    scheme = torch_linear_default()
    fans = "fan_in = in_features" if module == "Linear" else "fan_in = in_channels / groups * prod(kernel_size)"
    return replace(scheme, name=f"torch.nn.{module} default",
                   source=f"torch.nn.{module}.reset_parameters: kaiming_uniform_(a=sqrt(5)), bias U(+-1/sqrt(fan_in)); "
                          f"{fans} (torch_conv_fans)")


def _variance_scaling(framework: str, scale: object = 1, mode: str = "fan_in", distribution: str = "truncated_normal") -> InitScheme:
    r"""Keras / JAX ``variance_scaling``: Var[w] = scale / n, n the fan of ``mode`` (fan_avg: the mean of both).

    ``truncated_normal`` draws a standard normal truncated to [-2, 2] times sqrt(scale / n) / .87962566103423978,
    the constant being the sd of that truncated law, so the variance is scale / n (to the constant's 17 digits).
    """
    names = {"truncated_normal": "truncated_normal", "normal": "normal", "untruncated_normal": "normal",
             "uniform": "uniform"}
    if distribution not in names:
        raise SpecError(f"unknown variance_scaling distribution {distribution!r}; known: {', '.join(names)}")
    s = check_positive(scale, "scale")
    return InitScheme(f"{framework}(scale={s}, mode={mode}, distribution={distribution})", sp.cancel(s / _mode(mode)),
                      names[distribution], source=f"{framework}")


def _named_scaling(framework: str, name: str, scale: int, mode: str, distribution: str) -> InitScheme:
    scheme = _variance_scaling(framework.rsplit(".", 1)[0] + ".variance_scaling", scale, mode, distribution)
    return replace(scheme, name=f"{framework}", source=f"{framework} = variance_scaling({scale}, {mode!r}, {distribution!r})")


def _fixed(name: str, law: WeightLaw, source: str) -> InitScheme:
    distribution = "normal" if law.gaussian else "uniform" if isinstance(law, Uniform) else "truncated_normal"
    return InitScheme(name, law.variance, distribution, fixed_law=law, source=source)


_K, _F = "keras.initializers", "flax.linen.initializers"


def _keras_scaling(name: str, scale: int, mode: str, distribution: str):
    return lambda: _named_scaling(f"{_K}.{name}", name, scale, mode, distribution)


def _flax_scaling(name: str, scale: int, mode: str, distribution: str):
    return lambda: _named_scaling(f"{_F}.{name}", name, scale, mode, distribution)


#: Every PyTorch, Keras and Flax initialiser by name, with its parameters (as keyword arguments of
#: :func:`init_scheme`) and defaults as in the framework.
FRAMEWORK_INITIALISERS: dict[str, object] = {
    # PyTorch (torch.nn.init and the modules' reset_parameters)
    "torch.kaiming_uniform_": lambda a=0, mode="fan_in", nonlinearity="leaky_relu": _torch_kaiming("uniform", a, mode, nonlinearity),
    "torch.kaiming_normal_": lambda a=0, mode="fan_in", nonlinearity="leaky_relu": _torch_kaiming("normal", a, mode, nonlinearity),
    "torch.xavier_uniform_": lambda gain=1: _torch_xavier("uniform", gain),
    "torch.xavier_normal_": lambda gain=1: _torch_xavier("normal", gain),
    "torch.trunc_normal_": _torch_trunc_normal,
    "torch.orthogonal_": lambda gain=1: _orthogonal("torch.nn.init.orthogonal_", gain),
    "torch.nn.Linear": lambda: _torch_module_default("Linear"),
    "torch.nn.Conv1d": lambda: _torch_module_default("Conv1d"),
    "torch.nn.Conv2d": lambda: _torch_module_default("Conv2d"),
    "torch.nn.Conv3d": lambda: _torch_module_default("Conv3d"),
    "torch.nn.Embedding": lambda: _fixed("torch.nn.Embedding default", Normal(1), "torch.nn.Embedding.reset_parameters: normal_(0, 1)"),
    # Keras 3 (keras.initializers); Dense: glorot_uniform kernel, zeros bias
    "keras.glorot_uniform": _keras_scaling("glorot_uniform", 1, "fan_avg", "uniform"),
    "keras.glorot_normal": _keras_scaling("glorot_normal", 1, "fan_avg", "truncated_normal"),
    "keras.he_uniform": _keras_scaling("he_uniform", 2, "fan_in", "uniform"),
    "keras.he_normal": _keras_scaling("he_normal", 2, "fan_in", "truncated_normal"),
    "keras.lecun_uniform": _keras_scaling("lecun_uniform", 1, "fan_in", "uniform"),
    "keras.lecun_normal": _keras_scaling("lecun_normal", 1, "fan_in", "truncated_normal"),
    "keras.variance_scaling": lambda scale=1, mode="fan_in", distribution="truncated_normal": _variance_scaling(f"{_K}.variance_scaling", scale, mode, distribution),
    "keras.orthogonal": lambda gain=1: _orthogonal(f"{_K}.orthogonal", gain),
    "keras.random_normal": lambda mean=0, stddev=sp.Rational(5, 100): _fixed(
        f"{_K}.random_normal(mean={mean}, stddev={stddev})", Normal(as_sympy_number(stddev, "stddev") ** 2, mean), f"{_K}.RandomNormal"),
    "keras.random_uniform": lambda limit=sp.Rational(5, 100): _fixed(
        f"{_K}.random_uniform(-{limit}, {limit})", Uniform(limit), f"{_K}.RandomUniform (minval=-limit, maxval=limit)"),
    "keras.truncated_normal": lambda stddev=sp.Rational(5, 100): _fixed(
        f"{_K}.truncated_normal(stddev={stddev})", TruncatedNormal(stddev), f"{_K}.TruncatedNormal (bounds +-2 stddev)"),
    "keras.Dense": lambda: replace(_named_scaling(f"{_K}.glorot_uniform", "glorot_uniform", 1, "fan_avg", "uniform"),
                                   name="keras.layers.Dense default"),
    # Flax (flax.linen.initializers = jax.nn.initializers); Dense: lecun_normal kernel, zeros bias
    "flax.lecun_normal": _flax_scaling("lecun_normal", 1, "fan_in", "truncated_normal"),
    "flax.lecun_uniform": _flax_scaling("lecun_uniform", 1, "fan_in", "uniform"),
    "flax.xavier_normal": _flax_scaling("xavier_normal", 1, "fan_avg", "truncated_normal"),
    "flax.xavier_uniform": _flax_scaling("xavier_uniform", 1, "fan_avg", "uniform"),
    "flax.glorot_normal": _flax_scaling("glorot_normal", 1, "fan_avg", "truncated_normal"),
    "flax.glorot_uniform": _flax_scaling("glorot_uniform", 1, "fan_avg", "uniform"),
    "flax.kaiming_normal": _flax_scaling("kaiming_normal", 2, "fan_in", "truncated_normal"),
    "flax.kaiming_uniform": _flax_scaling("kaiming_uniform", 2, "fan_in", "uniform"),
    "flax.he_normal": _flax_scaling("he_normal", 2, "fan_in", "truncated_normal"),
    "flax.he_uniform": _flax_scaling("he_uniform", 2, "fan_in", "uniform"),
    "flax.variance_scaling": lambda scale=1, mode="fan_in", distribution="truncated_normal": _variance_scaling(f"{_F}.variance_scaling", scale, mode, distribution),
    "flax.orthogonal": lambda scale=1: _orthogonal(f"{_F}.orthogonal", scale),
    "flax.normal": lambda stddev=sp.Rational(1, 100): _fixed(
        f"{_F}.normal(stddev={stddev})", Normal(as_sympy_number(stddev, "stddev") ** 2), f"{_F}.normal"),
    "flax.truncated_normal": lambda stddev=sp.Rational(1, 100): _fixed(
        f"{_F}.truncated_normal(stddev={stddev})", TruncatedNormal(stddev), f"{_F}.truncated_normal (lower=-2, upper=2 in sd units)"),
    "flax.linen.Dense": lambda: replace(_named_scaling(f"{_F}.lecun_normal", "lecun_normal", 1, "fan_in", "truncated_normal"),
                                        name="flax.linen.Dense default"),
}

#: Scheme names accepted by :func:`init_scheme` (and the CLI) besides :data:`FRAMEWORK_INITIALISERS`.
INIT_SCHEMES: tuple[str, ...] = ("he", "kaiming", "glorot", "xavier", "lecun", "torch_default", "keras_default")
#: Every name :func:`init_scheme` accepts: the built-in schemes, then every framework initialiser.
INIT_NAMES: tuple[str, ...] = (*INIT_SCHEMES, *FRAMEWORK_INITIALISERS)

#: The keyword arguments of each built-in scheme name, with their defaults.
_SCHEME_PARAMETERS: dict[str, dict[str, object]] = {
    "he": {"mode": "fan_in", "a": 0, "distribution": "normal"},
    "kaiming": {"mode": "fan_in", "a": 0, "distribution": "normal"},
    "glorot": {"distribution": "normal"},
    "xavier": {"distribution": "normal"},
    "lecun": {"distribution": "normal"},
    "torch_default": {},
    "keras_default": {},
}


def _unknown_init(name: object) -> SpecError:
    import difflib

    close = difflib.get_close_matches(str(name), INIT_NAMES, n=1) if isinstance(name, str) else []
    hint = f"did you mean {close[0]!r}? " if close else ""
    return SpecError(f"unknown init scheme {name!r}; {hint}known (`varprop initialisers` lists them with their "
                     f"arguments): {', '.join(INIT_NAMES)}")


def init_parameters(name: str) -> dict[str, object]:
    """The keyword arguments :func:`init_scheme` takes for ``name``, with their defaults.

    For a framework name they are the framework function's own (``torch.kaiming_uniform_``:
    ``a=0, mode='fan_in', nonlinearity='leaky_relu'``), read from :data:`FRAMEWORK_INITIALISERS`.
    A default that is a string marks a parameter whose value is a name (a mode, a nonlinearity,
    a distribution); the others are numbers.
    """
    if name in FRAMEWORK_INITIALISERS:
        import inspect

        return {p.name: p.default for p in inspect.signature(FRAMEWORK_INITIALISERS[name]).parameters.values()}
    if isinstance(name, str) and name in _SCHEME_PARAMETERS:
        return dict(_SCHEME_PARAMETERS[name])
    raise _unknown_init(name)


def init_scheme(name: str, *, mode: str | None = None, a: object = None, distribution: str | None = None,
                **params: object) -> InitScheme:
    """Look an init scheme up by name (any of :data:`INIT_NAMES`).

    ``he``, ``glorot``, ``lecun``, ``torch_default``, ``keras_default`` take ``mode``, ``a`` and
    ``distribution`` (``mode="fan_in", a=0, distribution="normal"`` when not given; a scheme
    ignores those it has no use for); a framework name from :data:`FRAMEWORK_INITIALISERS`
    (``torch.kaiming_uniform_``, ``keras.he_normal``, ``flax.lecun_normal``, ...) takes that
    function's own parameters as keywords (:func:`init_parameters`), with the framework's
    defaults: ``init_scheme("torch.kaiming_uniform_", a=5 ** 0.5)``.
    """
    accepted = init_parameters(name)  # raises for an unknown name, with the known ones
    if name in FRAMEWORK_INITIALISERS:
        given = dict(params)
        given.update({key: value for key, value in (("mode", mode), ("a", a), ("distribution", distribution))
                      if value is not None})
        stray = sorted(set(given) - set(accepted))
        if stray:
            raise SpecError(f"{name} has no parameter {', '.join(map(repr, stray))}; it takes: {', '.join(accepted) or 'none'}")
        return FRAMEWORK_INITIALISERS[name](**given)
    if params:
        raise SpecError(f"init scheme {name!r} takes mode, a and distribution, not {', '.join(map(repr, sorted(params)))}")
    mode = "fan_in" if mode is None else mode
    a = 0 if a is None else a
    distribution = "normal" if distribution is None else distribution
    if name in ("he", "kaiming"):
        return he(mode, a, distribution)
    if name in ("glorot", "xavier"):
        return glorot(distribution)
    if name == "lecun":
        return lecun(distribution)
    if name == "torch_default":
        return torch_linear_default()
    return keras_default()


def initialiser_table() -> list[dict[str, object]]:
    r"""Every name of :data:`INIT_NAMES` with its arguments, their defaults and its law at them (``varprop initialisers``).

    Each row: ``name``; ``call``, the name with its defaults (``torch.kaiming_uniform_(a=0, mode='fan_in',
    nonlinearity='leaky_relu')``); ``arguments``, the defaults (numbers as text, exact); ``law``, the
    distribution and :math:`\operatorname{Var}[w]` in the fans ``n_in``, ``n_out`` (or the fixed law, and
    the bias's law where the scheme has one); ``source``.
    """
    rows = []
    for name in INIT_NAMES:
        scheme = init_scheme(name)
        law = str(scheme.fixed_law) if scheme.fixed_law is not None else (
            f"{scheme.distribution}, Var[w] = {sp.sstr(scheme.variance_expr)}")
        if scheme.bias_variance_expr is not None:
            law += f"; bias uniform, Var[b] = {sp.sstr(scheme.bias_variance_expr)}"
        defaults = init_parameters(name)
        signature = ", ".join(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"
                              for key, value in defaults.items())
        rows.append({"name": name, "call": f"{name}({signature})",
                     "arguments": {key: value if isinstance(value, str) else str(value) for key, value in defaults.items()},
                     "law": law, "source": scheme.source})
    return rows
