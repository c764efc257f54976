r"""Weight laws (with symbolic moments and a numpy sampler) and initialisation schemes.

Every law answers the same questions: ``mean``, ``variance``, ``moment(k)`` (sympy) and
``sample(shape, rng=...)`` (numpy), and ``with_variance(v)`` gives the law of the same family scaled
to a target variance. Code handling "any law" never switches on a type name.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
    "INIT_SCHEMES",
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

    def moment(self, k: int) -> sp.Expr: ...

    def with_variance(self, variance: sp.Expr) -> WeightLaw: ...

    def sample(
        self, shape: tuple[int, ...], *, rng: np.random.Generator, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Draw iid entries; ``out`` (float64, of ``shape``) is filled in place when given."""
        ...


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
class Normal:
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
class Uniform:
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
class TruncatedNormal:
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
        return sp.simplify(self._standard_moment(2) - m1**2)

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


_DEFAULT_LAWS: dict[str, WeightLaw] = {
    "normal": Normal(1),
    "uniform": Uniform(1),
    "truncated_normal": TruncatedNormal(1),
}
#: Accepted distribution names for init schemes.
DISTRIBUTIONS: tuple[str, ...] = tuple(_DEFAULT_LAWS)


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
        ``"normal"``, ``"uniform"`` or ``"truncated_normal"`` (scaled so its variance is exact).
    bias_variance_expr
        Variance of the bias in the same symbols (uniform), or ``None`` for no bias.
    source
        Where the scheme comes from.
    """

    name: str
    variance_expr: sp.Expr
    distribution: str = "normal"
    bias_variance_expr: sp.Expr | None = None
    source: str = ""

    def __post_init__(self) -> None:
        _check_distribution(self.distribution)
        expr = as_sympy_number(self.variance_expr, f"variance of init scheme {self.name}")
        object.__setattr__(self, "variance_expr", expr)

    def variance(self, fan_in: int | sp.Symbol, fan_out: int | sp.Symbol) -> sp.Expr:
        """The weight variance for one layer."""
        return self.variance_expr.subs({N_IN: fan_in, N_OUT: fan_out})

    def law(self, fan_in: int | sp.Symbol, fan_out: int | sp.Symbol) -> WeightLaw:
        """The weight law for one layer."""
        return _DEFAULT_LAWS[self.distribution].with_variance(self.variance(fan_in, fan_out))

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


#: Scheme names accepted by :func:`init_scheme` (and the CLI).
INIT_SCHEMES: tuple[str, ...] = ("he", "kaiming", "glorot", "xavier", "lecun", "torch_default", "keras_default")


def init_scheme(name: str, *, mode: str = "fan_in", a: object = 0, distribution: str = "normal") -> InitScheme:
    """Look an init scheme up by name (``he``, ``glorot``, ``lecun``, ``torch_default``, ...)."""
    if name in ("he", "kaiming"):
        return he(mode, a, distribution)
    if name in ("glorot", "xavier"):
        return glorot(distribution)
    if name == "lecun":
        return lecun(distribution)
    if name == "torch_default":
        return torch_linear_default()
    if name == "keras_default":
        return keras_default()
    raise SpecError(f"unknown init scheme {name!r}; known: {', '.join(INIT_SCHEMES)}")
