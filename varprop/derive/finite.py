r"""Exact finite-width laws of zero-bias relu networks (Hanin & Rolnick 2018; Hanin 2018).

Network: :math:`x_0 \in \mathbb R^{n_0}` fixed and nonzero, :math:`x_j = \mathrm{relu}(W_j x_{j-1})`
for :math:`j = 1..L`, every entry of :math:`W_j` iid from a law symmetric about 0 with variance
:math:`s_j` (He's variance :math:`s_j = 2/n_{j-1}`), no bias. The quantity studied is the
*normalised* squared length

.. math::

    M_L = \frac{\|x_L\|^2 / n_L}{\|x_0\|^2 / n_0}
        = \prod_{j=1}^{L} F_j, \qquad F_j = \frac{n_{j-1}}{n_j}\,\frac{\|x_j\|^2}{\|x_{j-1}\|^2},

the ratio of mean squares, which is what has mean 1 at He's variance for *unequal* widths
(:math:`\|x_L\|^2/\|x_0\|^2` itself has mean :math:`n_L/n_0` there).

What is derived here, each as a :class:`~varprop.derive.derivation.Derivation` whose steps sympy
checks:

* :func:`one_layer`: given :math:`x \ne 0`, :math:`\|\mathrm{relu}(Wx)\|^2/\|x\|^2 = s\,\chi^2_K`,
  :math:`K \sim \mathrm{Binomial}(n, 1/2)` (Gaussian weights), its mean :math:`sn/2` and second moment
  :math:`s^2 n(n+5)/4`.
* :func:`product_law`: :math:`M_L` is a product of independent factors
  :math:`F_j = (s_j n_{j-1}/n_j)\chi^2_{K_j}`; :math:`E[M_L] = \prod_j s_j n_{j-1}/2` and
  :math:`E[M_L^2] = \prod_j s_j^2 n_{j-1}^2 (n_j + 5)/(4 n_j)`, so :math:`\prod_j (1 + 5/n_j)` at He's
  variance (Hanin & Rolnick 2018, Thm. 5 states the exponential of :math:`5\sum_j 1/n_j` as bounds).
* :func:`fourth_moment_recursion`: for *any* symmetric iid law with fourth moment :math:`m_4`, the
  pair :math:`(E\|x_j\|^4, E\sum_i x_{j,i}^4)` obeys an exact linear recursion; the input enters
  through :math:`\sum_i x_{0,i}^4`, so :math:`E[M_L^2]` is not a function of the widths alone unless
  the law is Gaussian (excess kurtosis 0).
* :func:`dead_layer`: :math:`P(\text{some layer is } 0) = 1 - \prod_j (1 - 2^{-n_j})` for any symmetric
  law without atoms.
* :func:`log_moment`: :math:`E[\log M_L \mid \text{no dead layer}]` as a finite sum of digamma
  values over the binomial law, and its large-width expansion :math:`-\tfrac52 \sum_j 1/n_j`.
* :func:`backward`: the exact second moments of :math:`\partial\mathcal L/\partial x_l` and
  :math:`\partial\mathcal L/\partial W_l` at every width, with the dead-layer factor.

Numeric companions (exact rationals, or mpmath at a stated precision) evaluate the results for
concrete widths: :func:`mean_square`, :func:`fourth_moment`, :func:`dead_probability`,
:func:`expected_log`, :func:`log_law_cdf`.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, partial
from typing import ClassVar

import mpmath
import sympy as sp

from ..errors import DerivationError
from ..network import Dense, Nonlinearity, Residual
from ..observables import (
    MAX_ORDER,
    DeadFraction,
    LogNormRatio,
    LogNormRatioMoment,
    LogNormRatioVariance,
    NormRatioMoment,
    NormRatioSecondMoment,
)
from .derivation import (
    LEMMA_CONSTANT,
    Check,
    Derivation,
    Expect,
    BinomialLaw,
    Code,
    Lemma,
    NormalLaw,
    Rule,
    Step,
    Unrolled,
    Variance,
    _Builder,
    prose,
    to_text,
)
from .propagate import Quantity, observable_rules

__all__ = [
    "HANIN_ROLNICK",
    "one_layer",
    "product_law",
    "fourth_moment_recursion",
    "dead_layer",
    "log_moment",
    "backward",
    "power_moment",
    "log_power_moment",
    "FINITE_DERIVATIONS",
    "relu_chain",
    "gradient_moments",
    "mean_square",
    "fourth_moment",
    "dead_probability",
    "expected_log",
    "expected_log_asymptotic",
    "power_moment_value",
    "log_moments",
    "log_skewness",
    "conditional_second_moment",
    "MomentFromMGF",
    "Linearity",
    "ExpandedMoment",
    "Quadrature",
    "MellinQuadrature",
]

HANIN_ROLNICK = "Hanin & Rolnick 2018"
HANIN = "Hanin 2018"

# --- symbols -----------------------------------------------------------------------------------

_n = sp.Symbol("n", positive=True, integer=True)          # a layer's output width
_m = sp.Symbol("m", positive=True, integer=True)          # its input width
_s = sp.Symbol("s", positive=True)                        # the weight variance
_m4 = sp.Symbol("m_4", positive=True)                     # the weight law's fourth moment
_t = sp.Symbol("t")
_k = sp.Symbol("k", nonnegative=True, integer=True)
_K = sp.Symbol("K", nonnegative=True, integer=True)       # the number of active units
_R = sp.Symbol("R", nonnegative=True)                     # ||relu(W x)||^2 / ||x||^2
_C = sp.Symbol("chi^2_K", nonnegative=True)
_Q = sp.Symbol("Q", positive=True)                        # ||x||^2 of the layer input
_P = sp.Symbol("P", positive=True)                        # sum_i x_i^4 of the layer input
_y = sp.Symbol("y")
_xv = sp.Symbol("x")                                       # the layer input
_W = sp.Symbol("W")                                        # the layer's weight matrix
_half = sp.Rational(1, 2)
_w = sp.Symbol("w")                                        # one weight
_u = sp.Symbol("u")
_j = sp.Symbol("j", positive=True, integer=True)
_l = sp.Symbol("l", positive=True, integer=True)
_L = sp.Symbol("L", positive=True, integer=True)
_nw = sp.IndexedBase("n")
_sw = sp.IndexedBase("s")
_F = sp.IndexedBase("F")
_M = sp.IndexedBase("M")


class Given(sp.Function):
    r"""A conditional expectation :math:`E[X \mid Y]`, kept unevaluated."""

    nargs = 2

    def _latex(self, printer: object, exp: object = None) -> str:
        tex = r"\mathbb{E}\left[%s \mid %s\right]" % (printer._print(self.args[0]), printer._print(self.args[1]))
        return tex if exp is None else r"%s^{%s}" % (tex, exp)

    def _sympystr(self, printer: object) -> str:
        return "E[%s | %s]" % (printer._print(self.args[0]), printer._print(self.args[1]))


class Prob(sp.Function):
    r"""A probability :math:`P(A)` of an event named by a symbol, kept unevaluated."""

    nargs = 1

    def _latex(self, printer: object, exp: object = None) -> str:
        return r"P\left(%s\right)" % printer._print(self.args[0])

    def _sympystr(self, printer: object) -> str:
        event = self.args[0]
        if isinstance(event, sp.Eq):
            return f"P({printer._print(event.lhs)} = {printer._print(event.rhs)})"
        return f"P({printer._print(event)})"


# --- checks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MomentFromMGF(Check):
    r"""``rhs`` is ``scale`` times the ``order``-th derivative at 0 of a moment generating function.

    The law's MGF is the independent route: e.g. :math:`((1+e^t)/2)^n` for
    :math:`\mathrm{Binomial}(n, 1/2)`, :math:`(1-2t)^{-k/2}` for :math:`\chi^2_k`.
    """

    mgf: sp.Expr
    variable: sp.Symbol
    order: int
    scale: sp.Expr = sp.S.One
    kind: ClassVar[str] = "mgf"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        value = self.scale * sp.diff(self.mgf, self.variable, self.order).subs(self.variable, 0)
        gap = sp.expand(value - step.rhs)
        ok = gap == 0 or sp.simplify(gap) == 0
        detail = f"d^{self.order}/dt^{self.order} of the MGF {to_text(self.mgf)} at t = 0 gives {to_text(sp.factor(value))}"
        return ok, detail


@dataclass(frozen=True)
class Linearity(Check):
    r"""Linearity of expectation: ``rhs`` is ``conditional`` (a polynomial in ``variable``) with each
    power :math:`K^p` replaced by :math:`E[K^p]` (the tower property :math:`E[E[X|K]] = E[X]`)."""

    conditional: sp.Expr
    variable: sp.Symbol
    kind: ClassVar[str] = "linearity"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        poly = sp.Poly(sp.expand(self.conditional), self.variable)
        value = sum((c * (Expect(self.variable**p[0]) if p[0] else 1) for p, c in poly.terms()), sp.Integer(0))
        ok = sp.expand(value - step.rhs) == 0
        return ok, f"E of {to_text(self.conditional)} term by term gives {to_text(value)}"


@dataclass(frozen=True)
class ExpandedMoment(Check):
    r"""A moment of :math:`y = \sum_{i \le m} w_i x_i` (iid symmetric :math:`w_i`), re-computed by
    expanding :math:`y^p` for m = 1..4 explicit inputs and taking each monomial's expectation
    (:math:`E[w] = E[w^3] = 0`, :math:`E[w^2] = s`, :math:`E[w^4] = m_4`); ``Q`` and ``P`` in ``rhs``
    stand for :math:`\sum x_i^2` and :math:`\sum x_i^4`."""

    power: int
    kind: ClassVar[str] = "expansion"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        for size in range(1, 5):
            xs = sp.symbols(f"x1:{size + 1}", real=True)
            ws = sp.symbols(f"w1:{size + 1}", real=True)
            poly = sp.Poly(sp.expand(sum(w * x for w, x in zip(ws, xs)) ** self.power), *ws)
            moments = {0: 1, 1: 0, 2: _s, 3: 0, 4: _m4}
            value = sum((c * sp.Mul(*(moments.get(e, sp.nan) for e in exps)) for exps, c in poly.terms()), sp.Integer(0))
            stated = step.rhs.subs({_Q: sum(x**2 for x in xs), _P: sum(x**4 for x in xs)})
            if sp.expand(value - stated) != 0:
                return False, f"fails for {size} inputs: the expansion gives {sp.factor(value)}"
        return True, f"E[y^{self.power}] re-computed by expanding y^{self.power} over 1..4 inputs"


@dataclass(frozen=True)
class Quadrature(Check):
    r"""``rhs`` (a formula in ``variable``) equals :math:`\int g(u)\,f(u)\,du` over :math:`(0, \infty)`
    computed by mpmath quadrature (30 digits) for ``variable`` = 1..8, with ``density`` :math:`f` and
    ``integrand`` :math:`g` in the symbol ``u``."""

    integrand: sp.Expr
    density: sp.Expr
    variable: sp.Symbol
    kind: ClassVar[str] = "integral"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        with mpmath.workdps(30):
            for value in range(1, 9):
                f = sp.lambdify(_u, (self.integrand * self.density).subs(self.variable, value), "mpmath")
                numeric = mpmath.quad(lambda v, f=f: 2 * v * f(v * v), [0, 1, mpmath.inf])  # u = v^2: no endpoint singularity
                stated = sp.N(step.rhs.subs(self.variable, value), 30)
                if abs(numeric - mpmath.mpf(str(stated))) > mpmath.mpf(10) ** -20:
                    return False, f"fails at {self.variable} = {value}: quadrature {numeric}, formula {stated}"
        return True, f"mpmath quadrature (30 digits) agrees to 1e-20 for {self.variable} = 1..8"


# --- assumptions -------------------------------------------------------------------------------

_A_GAUSS = prose("the entries of ", _W, " are iid, each ", NormalLaw(_w, 0, _s), ", and independent of ", _xv)
_A_SYM = prose("the entries of ", _W, " are iid from a law symmetric about 0 with variance ", _s, ", independent of ", _xv)
_A_CONT = prose("the weight law has no atom (a continuous law), so ", _W * _xv, " has no atom at 0 when ", sp.Ne(_xv, 0))
_A_X = prose("the layer input ", _xv, " is fixed and nonzero")
_A_M4 = prose("the weight law has a finite fourth moment ", _m4)

# --- one layer ---------------------------------------------------------------------------------


def _chi2_density(k: sp.Expr) -> sp.Expr:
    return _u ** (k / 2 - 1) * sp.exp(-_u / 2) / (2 ** (k / 2) * sp.gamma(k / 2))


@cache
def one_layer() -> Derivation:
    r"""One relu layer at width :math:`n`: the law of :math:`R = \|\mathrm{relu}(Wx)\|^2/\|x\|^2` and its two moments.

    Given :math:`x \ne 0` and Gaussian weights of variance :math:`s`, the :math:`y_i = (Wx)_i` are iid
    :math:`N(0, s\|x\|^2)`; :math:`K = \#\{i: y_i > 0\} \sim \mathrm{Binomial}(n, 1/2)`; given K the
    positive :math:`y_i^2/(s\|x\|^2)` are K independent :math:`\chi^2_1` (a half-normal squared is a
    normal squared), so :math:`R = s\chi^2_K` with :math:`\chi^2_0 = 0`.
    """
    b = _Builder("One relu layer at finite width: a binomial mixture of chi-squares")
    law = b.model(_R, _s * _C, Rule.SYMMETRY,
                  prose("given ", _xv, ", the entries ", _y, " of ", _W * _xv, " are iid, each ", NormalLaw(_y, 0, _s * _Q),
                        "; the sign of each is a fair coin independent of its square, so the squares of the ", _K,
                        " positive ones are ", _K, " independent ", _s * _Q * sp.Symbol("chi^2_1"), ", with ",
                        BinomialLaw(_K, _n, _half)),
                  assumptions=(_A_GAUSS, _A_X), exactness="gaussian-exact", source=f"{HANIN_ROLNICK}, Sec. 5")
    k1 = b.add(Expect(_K), _n / 2, Rule.DEFINITION, prose("the mean of ", BinomialLaw(_K, _n, _half)),
               proof=MomentFromMGF(((1 + sp.exp(_t)) / 2) ** _n, _t, 1))
    k2 = b.add(Expect(_K**2), _n * (_n + 1) / 4, Rule.DEFINITION, prose("the second moment of ", BinomialLaw(_K, _n, _half)),
               proof=MomentFromMGF(((1 + sp.exp(_t)) / 2) ** _n, _t, 2))
    c1 = b.add(Given(_R, _K), _s * _K, Rule.SUBSTITUTION, prose("the mean of ", _s * _C),
               proof=MomentFromMGF((1 - 2 * _t) ** (-_K / 2), _t, 1, _s), uses=(law,))
    c2 = b.add(Given(_R**2, _K), _s**2 * (_K**2 + 2 * _K), Rule.SUBSTITUTION, prose("the second moment of ", _s * _C),
               proof=MomentFromMGF((1 - 2 * _t) ** (-_K / 2), _t, 2, _s**2), uses=(law,))
    e1 = b.add(Expect(_R), _s * Expect(_K), Rule.ALGEBRA, "tower property", proof=Linearity(_s * _K, _K), uses=(c1,))
    b.identity(Expect(_R), _s * _n / 2, Rule.SUBSTITUTION, uses=(e1, k1))
    e2 = b.add(Expect(_R**2), _s**2 * (Expect(_K**2) + 2 * Expect(_K)), Rule.ALGEBRA, "tower property",
               proof=Linearity(_s**2 * (_K**2 + 2 * _K), _K), uses=(c2,))
    last = b.identity(Expect(_R**2), _s**2 * _n * (_n + 5) / 4, Rule.SUBSTITUTION, uses=(e2, k1, k2))
    return b.build(b.steps[last].rhs, prose("At width ", _n, " the squared-length ratio of one relu layer is ", _s * _C,
                                             " with ", BinomialLaw(_K, _n, _half), "."),
                   mean=_s * _n / 2, second_moment=_s**2 * _n * (_n + 5) / 4)


@cache
def product_law() -> Derivation:
    r""":math:`M_L` as a product of independent factors, and its first two moments for any widths.

    :math:`F_j = (n_{j-1}/n_j)\|x_j\|^2/\|x_{j-1}\|^2 = (s_j n_{j-1}/n_j)\chi^2_{K_j}` by
    :func:`one_layer`; its law does not depend on :math:`x_{j-1}` (Gaussian weights are rotation
    invariant), so the factors are independent. A dead layer (:math:`K_j = 0`) makes :math:`M_L = 0`,
    which the factor :math:`\chi^2_0 = 0` already says.
    """
    b = _Builder("The squared length of a deep relu network at finite width")
    mean_j = _sw[_j] * _nw[_j - 1] / 2
    second_j = _sw[_j] ** 2 * _nw[_j - 1] ** 2 * (_nw[_j] + 5) / (4 * _nw[_j])
    f = b.model(_F[_j], _sw[_j] * _nw[_j - 1] / _nw[_j] * sp.Symbol("chi^2_(K_j)"), Rule.INDEPENDENCE,
                prose("one layer (previous derivation) with ", _s, " = ", _sw[_j], " and ", _n, " = ", _nw[_j],
                      ", times ", _nw[_j - 1] / _nw[_j], "; its law given ", sp.Symbol("x_(j-1)"), " does not depend on ",
                      sp.Symbol("x_(j-1)"), ", so the factors are independent"),
                assumptions=(_A_GAUSS, prose("the input is not 0: ", sp.Ne(sp.Symbol("x_0"), 0))), exactness="gaussian-exact", source=f"{HANIN_ROLNICK}, Sec. 5")
    mixture = ((1 + (1 - 2 * _t) ** sp.Rational(-1, 2)) / 2) ** _nw[_j]
    scale = _sw[_j] * _nw[_j - 1] / _nw[_j]
    why = prose("the MGF of the binomial mixture of chi-squares is ", Expect((1 - 2 * _t) ** (-_K / 2)), " = ", mixture)
    ef = b.add(Expect(_F[_j]), mean_j, Rule.SUBSTITUTION, why, proof=MomentFromMGF(mixture, _t, 1, scale), uses=(f,))
    ef2 = b.add(Expect(_F[_j] ** 2), second_j, Rule.SUBSTITUTION, why, proof=MomentFromMGF(mixture, _t, 2, scale**2),
                uses=(f,))
    rec1 = b.model(Expect(_M[_L]), Expect(_M[_L - 1]) * Expect(_F[_L]), Rule.INDEPENDENCE,
                   prose(_M[_L], " = ", _M[_L - 1] * _F[_L], " with independent factors"), assumptions=(_A_GAUSS,),
                   exactness="gaussian-exact")
    mean = b.add(Expect(_M[_L]), sp.Product(mean_j, (_j, 1, _L)), Rule.UNROLLING, prose("with ", sp.Eq(_M[0], 1)),
                 proof=Unrolled(sp.Integer(1), mean_j, _j, 1, _L), uses=(rec1, ef))
    rec2 = b.model(Expect(_M[_L] ** 2), Expect(_M[_L - 1] ** 2) * Expect(_F[_L] ** 2), Rule.INDEPENDENCE,
                   prose(_M[_L] ** 2, " = ", _M[_L - 1] ** 2 * _F[_L] ** 2, " with independent factors"),
                   assumptions=(_A_GAUSS,), exactness="gaussian-exact")
    second = b.add(Expect(_M[_L] ** 2), sp.Product(second_j, (_j, 1, _L)), Rule.UNROLLING, prose("with ", sp.Eq(_M[0], 1)),
                   proof=Unrolled(sp.Integer(1), second_j, _j, 1, _L), uses=(rec2, ef2))
    he = {_sw[_j]: 2 / _nw[_j - 1]}
    he_step = b.define(_sw[_j], he[_sw[_j]], "He's variance (fan-in)")
    b.identity(Expect(_M[_L]), sp.Integer(1), Rule.SUBSTITUTION, "at He's variance", uses=(mean, he_step))
    he_second = sp.Product(second_j.xreplace(he), (_j, 1, _L))
    b.identity(Expect(_M[_L] ** 2), he_second, Rule.SUBSTITUTION, "at He's variance", uses=(second, he_step))
    return b.build(b.steps[second].rhs, prose(_M[_L], " is a product of independent factors ", _F[_j], "; ",
                                              sp.Eq(Expect(_M[_L]), b.steps[mean].rhs), "."),
                   mean=b.steps[mean].rhs, second_moment=b.steps[second].rhs, he_second_moment=he_second)


# --- non-Gaussian weights: the fourth moment enters ----------------------------------------------

_x = sp.Symbol("x")
_Q1 = sp.Symbol("Q'", positive=True)
_P1 = sp.Symbol("P'", positive=True)


class Relu(sp.Function):
    r""":math:`\mathrm{relu}(y)`, kept unevaluated in displayed equations."""

    nargs = 1

    def _latex(self, printer: object, exp: object = None) -> str:
        base = r"\mathrm{relu}" if exp is None else r"\mathrm{relu}^{%s}" % exp
        return r"%s\left(%s\right)" % (base, printer._print(self.args[0]))

    def _sympystr(self, printer: object) -> str:
        return "relu(%s)" % printer._print(self.args[0])


def _relu(arg: sp.Expr) -> sp.Expr:
    return sp.Max(arg, 0)


@cache
def fourth_moment_recursion() -> Derivation:
    r"""One relu layer with any symmetric iid weight law: the exact linear map on
    :math:`(\|x\|^4, \sum_i x_i^4)`.

    With :math:`Q = \|x\|^2`, :math:`P = \sum_i x_i^4`, :math:`y = (Wx)_i` and
    :math:`\kappa = m_4 - 3s^2` (the weight law's fourth cumulant; 0 for Gaussian weights):
    :math:`E[y^4 \mid x] = 3s^2Q^2 + \kappa P`, and the next layer's
    :math:`Q' = \|\mathrm{relu}(Wx)\|^2`, :math:`P' = \sum_i \mathrm{relu}(y_i)^4` satisfy

    .. math::

        E[Q'^2 \mid x] = \tfrac{s^2 n(n+5)}{4} Q^2 + \tfrac{n\kappa}{2} P, \qquad
        E[P' \mid x] = \tfrac{n}{2}(3 s^2 Q^2 + \kappa P).

    Both are linear in :math:`(Q^2, P)`, so :math:`E[Q_L^2]` is the first entry of a product of 2x2
    matrices applied to :math:`(Q_0^2, P_0)`: exact for every symmetric iid law with a finite fourth
    moment (no Gaussian step), and dependent on the input through :math:`P_0/Q_0^2 \in [1/n_0, 1]`
    unless :math:`\kappa = 0`.
    """
    b = _Builder("One relu layer with a symmetric non-Gaussian weight law: fourth moments")
    kappa = _m4 - 3 * _s**2
    y2 = b.add(Given(_y**2, _x), _s * _Q, Rule.INDEPENDENCE, "iid zero-mean weights: only squares survive",
               proof=ExpandedMoment(2), assumptions=(_A_SYM,))
    y4 = b.add(Given(_y**4, _x), 3 * _s**2 * _Q**2 + kappa * _P, Rule.INDEPENDENCE,
               "iid symmetric weights: odd moments vanish, fourth powers and pairs of squares survive",
               proof=ExpandedMoment(4), assumptions=(_A_SYM, _A_M4))
    r2 = b.add(Given(Relu(_y) ** 2, _x), Given(_y**2, _x) / 2, Rule.SYMMETRY, "y is symmetric about 0 given x",
               proof=Lemma(_relu(_u) ** 2 + _relu(-_u) ** 2, 2, LEMMA_CONSTANT / 2 * Given(_y**2, _x)))
    r4 = b.add(Given(Relu(_y) ** 4, _x), Given(_y**4, _x) / 2, Rule.SYMMETRY, "y is symmetric about 0 given x",
               proof=Lemma(_relu(_u) ** 4 + _relu(-_u) ** 4, 4, LEMMA_CONSTANT / 2 * Given(_y**4, _x)))
    q2 = b.model(Given(_Q1**2, _x), _n * Given(Relu(_y) ** 4, _x) + _n * (_n - 1) * Given(Relu(_y) ** 2, _x) ** 2,
                 Rule.INDEPENDENCE, prose("the ", _n, " rows of W are independent, so given x the units are iid"),
                 assumptions=(_A_SYM,))
    p1 = b.model(Given(_P1, _x), _n * Given(Relu(_y) ** 4, _x), Rule.IDENTICAL_DISTRIBUTION,
                 prose("the ", _n, " units are identically distributed given x"), assumptions=(_A_SYM,))
    q2 = b.identity(Given(_Q1**2, _x), _s**2 * _n * (_n + 5) / 4 * _Q**2 + _n * kappa / 2 * _P, Rule.SUBSTITUTION,
                    uses=(q2, r4, r2, y4, y2))
    p1 = b.identity(Given(_P1, _x), _n * (3 * _s**2 * _Q**2 + kappa * _P) / 2, Rule.SUBSTITUTION, uses=(p1, r4, y4))
    return b.build(b.steps[q2].rhs, prose("The next layer's ", _Q1**2, " and ", _P1, " are linear in ", _Q**2,
                                          " and ", _P, "; the fourth cumulant ", kappa, " couples them."),
                   next_q2=b.steps[q2].rhs, next_p=b.steps[p1].rhs, kappa=kappa)


def _as_widths(widths: Sequence[int], what: str = "widths") -> tuple[int, ...]:
    values = tuple(widths)
    if len(values) < 2 or any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in values):
        raise DerivationError(f"{what} must be at least two positive integers n_0..n_L, got {values!r}")
    return values


def _as_variances(widths: tuple[int, ...], variances: Sequence[object] | None) -> tuple[sp.Expr, ...]:
    if variances is None:
        return tuple(sp.Rational(2, w) for w in widths[:-1])
    values = tuple(sp.nsimplify(v, rational=True) for v in variances)
    if len(values) != len(widths) - 1 or any(not (v.is_number and v > 0) for v in values):
        raise DerivationError(f"variances must be {len(widths) - 1} positive numbers, one per layer, got {variances!r}")
    return values


def fourth_moment(widths: Sequence[int], x0: Sequence[object], fourth_moments: Sequence[object],
                  variances: Sequence[object] | None = None) -> sp.Rational:
    r""":math:`E[M_L^2]` for any symmetric iid weight laws, exactly, by the recursion of
    :func:`fourth_moment_recursion` (``fourth_moments[j]`` is :math:`E[w^4]` of layer j+1's law; the
    Gaussian's is :math:`3s^2`). ``x0`` is the fixed input; the result is a rational when every
    number is."""
    widths = _as_widths(widths)
    variances = _as_variances(widths, variances)
    x0 = [sp.nsimplify(v, rational=True) for v in x0]
    if len(x0) != widths[0] or all(v == 0 for v in x0):
        raise DerivationError(f"x0 must be a nonzero vector of {widths[0]} numbers, got {len(x0)}")
    if len(fourth_moments) != len(widths) - 1:
        raise DerivationError(f"fourth_moments must give one E[w^4] per layer ({len(widths) - 1}), got {len(fourth_moments)}")
    d = fourth_moment_recursion()
    q2, p = sum(v**2 for v in x0) ** 2, sum(v**4 for v in x0)
    start = q2
    for n, s, m4 in zip(widths[1:], variances, fourth_moments):
        values = {_n: n, _s: s, _m4: sp.nsimplify(m4, rational=True), _Q: sp.sqrt(q2), _P: p}
        q2, p = d.extras["next_q2"].subs(values), d.extras["next_p"].subs(values)
    return sp.nsimplify(q2 / start * sp.Rational(widths[0], widths[-1]) ** 2)


def mean_square(widths: Sequence[int], variances: Sequence[object] | None = None) -> sp.Rational:
    r""":math:`E[M_L^2]` for Gaussian weights (default: He's variance), exactly, from :func:`product_law`."""
    widths = _as_widths(widths)
    variances = _as_variances(widths, variances)
    formula = product_law().extras["second_moment"]
    values = {_nw[i]: w for i, w in enumerate(widths)} | {_sw[i + 1]: v for i, v in enumerate(variances)}
    return sp.nsimplify(formula.subs(_L, len(widths) - 1).doit().xreplace(values))


def conditional_second_moment(counts: object, widths: Sequence[int],
                              variances: Sequence[object] | None = None) -> object:
    r""":math:`E[M_L^2 \mid K_1..K_L] = \prod_j c_j^2 (K_j^2 + 2K_j)` with :math:`c_j = s_j n_{j-1}/n_j`
    (step 5 of :func:`one_layer`), for an integer array ``counts`` of shape ``(networks, L)``."""
    import numpy as np

    widths = _as_widths(widths)
    variances = _as_variances(widths, variances)
    k = np.asarray(counts, dtype=np.float64)
    c = np.array([float(s * a / b) for s, a, b in zip(variances, widths[:-1], widths[1:])])
    if k.ndim != 2 or k.shape[1] != len(c):
        raise DerivationError(f"counts must have shape (networks, {len(c)}), got {k.shape}")
    return np.prod(c**2 * (k**2 + 2 * k), axis=1)


# --- dead layers ---------------------------------------------------------------------------------

_Alive = sp.IndexedBase("A")   # A_l: no layer among 1..l is entirely inactive
_Dead = sp.Symbol("D_L")       # some layer among 1..L is entirely inactive


@cache
def dead_layer() -> Derivation:
    r"""The probability that some layer of a zero-bias relu network is entirely inactive.

    Given :math:`x_{j-1} \ne 0`, the :math:`n_j` pre-activations are independent (one row each),
    symmetric and without atom, so all are :math:`\le 0` with probability :math:`2^{-n_j}` whatever
    :math:`x_{j-1}` is; a dead layer zeroes every later one. Exact for every symmetric weight law
    without atoms (Gaussian, uniform, truncated normal).
    """
    b = _Builder("Dead layers: the probability that a relu network outputs 0")
    step = b.model(Prob(_Alive[_L]), Prob(_Alive[_L - 1]) * (1 - 2 ** -_nw[_L]), Rule.INDEPENDENCE,
                   prose("given a nonzero ", sp.Symbol("x_(L-1)"), ", each of the ", _nw[_L], " pre-activations is "
                         "positive with probability one half, independently (one row of W each), whatever its value"),
                   assumptions=(_A_SYM, _A_CONT, "biases are zero"), source=f"{HANIN_ROLNICK}, Sec. 5")
    alive_j = 1 - 2 ** -_nw[_j]
    alive = b.add(Prob(_Alive[_L]), sp.Product(alive_j, (_j, 1, _L)), Rule.UNROLLING, prose("with ", sp.Eq(Prob(_Alive[0]), 1)),
                  proof=Unrolled(sp.Integer(1), alive_j, _j, 1, _L), uses=(step,))
    complement = b.define(Prob(_Dead), 1 - Prob(_Alive[_L]), "complement: some layer dies iff not all live")
    last = b.identity(Prob(_Dead), 1 - sp.Product(alive_j, (_j, 1, _L)), Rule.SUBSTITUTION, uses=(complement, alive))
    return b.build(b.steps[last].rhs, prose("A layer of width ", _nw[_j], " dies with probability ", 2 ** -_nw[_j],
                                            " given a live input."), alive=b.steps[alive].rhs)


def dead_probability(widths: Sequence[int]) -> sp.Rational:
    r""":math:`1 - \prod_{j=1}^L (1 - 2^{-n_j})`, exactly, from :func:`dead_layer` (``widths`` = n_0..n_L)."""
    widths = _as_widths(widths)
    formula = dead_layer().result.subs(_L, len(widths) - 1).doit()
    return sp.nsimplify(formula.xreplace({_nw[i]: w for i, w in enumerate(widths)}))


# --- the log of the squared length ---------------------------------------------------------------


@dataclass(frozen=True)
class MixtureQuadrature(Check):
    r"""``rhs`` (a formula in the width ``width`` and the scale ``scale``) equals
    :math:`\sum_{k=1}^{n} P(K = k \mid K \ge 1)\int \log(c\,u)^p\, f_{\chi^2_k}(u)\,du` by mpmath
    quadrature (30 digits) for n = 1..5 and c = 1/3 (no digamma function used); ``power`` is p."""

    width: sp.Symbol
    scale: sp.Expr
    power: int = 1
    kind: ClassVar[str] = "integral"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        with mpmath.workdps(30):
            c = mpmath.mpf(1) / 3
            for n in range(1, 6):
                total = mpmath.mpf(0)
                for k in range(1, n + 1):
                    density = sp.lambdify(_u, _chi2_density(sp.Integer(k)), "mpmath")
                    total += mpmath.binomial(n, k) / (2**n - 1) * mpmath.quad(  # u = v^2
                        lambda v, density=density: 2 * v * mpmath.log(c * v * v) ** self.power * density(v * v),
                        [0, 1, mpmath.inf])
                stated = sp.N(step.rhs.subs({self.width: n, self.scale: sp.Rational(1, 3)}).doit(), 30)
                if abs(total - mpmath.mpf(str(stated))) > mpmath.mpf(10) ** -20 * max(1, abs(total)):
                    return False, f"fails at width {n}: quadrature {total}, formula {stated}"
        return True, "mpmath quadrature of the mixture (30 digits) agrees to 1e-20 for widths 1..5"


@dataclass(frozen=True)
class AsymptoticDecay(Check):
    r"""``rhs`` is an expansion in ``1/width`` of ``exact`` up to :math:`O(\text{width}^{-(\text{order}+1)})`:
    the gap, computed with 40-digit mpmath at widths 25, 50, 100, 200, shrinks by at least 4x per
    doubling (i.e. faster than the last kept order)."""

    exact: sp.Expr
    width: sp.Symbol
    order: int
    kind: ClassVar[str] = "asymptotic"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        gaps = []
        with mpmath.workdps(40):
            for n in (25, 50, 100, 200):
                exact = sp.N(self.exact.subs(self.width, n).doit(), 40)
                gaps.append(abs(mpmath.mpf(str(exact)) - mpmath.mpf(str(sp.N(step.rhs.subs(self.width, n), 40)))))
        ratios = [float(a / b) for a, b in zip(gaps, gaps[1:])]
        ok = all(r >= 2 ** (self.order + 1) * 0.8 for r in ratios)
        return ok, f"gap to the exact sum at widths 25..200: {', '.join(f'{float(g):.2e}' for g in gaps)} (ratios {', '.join(f'{r:.1f}' for r in ratios)})"


def _log_factor_sum(n: sp.Expr, scale: sp.Expr) -> sp.Expr:
    return sp.log(scale) + sp.log(2) + sp.Sum(sp.binomial(n, _k) * sp.polygamma(0, _k / 2), (_k, 1, n)) / (2**n - 1)


#: The mean log factor of one live layer, :math:`E[\log F \mid K \ge 1]`.
_LOG_LIVE = Given(sp.log(sp.Symbol("F")), sp.Ge(_K, 1))


@cache
def log_moment() -> Derivation:
    r""":math:`E[\log M_L \mid \text{no dead layer}]` as a finite sum, and its large-width expansion.

    :math:`E[\log\chi^2_k] = \psi(k/2) + \log 2`; given that no layer dies, the :math:`K_j` are
    independent with :math:`P(K_j = k) = \binom{n_j}{k}/(2^{n_j} - 1)` for :math:`k \ge 1` (the event is
    a product of events, one per factor). Without the conditioning the mean is :math:`-\infty`:
    :math:`M_L = 0` with the probability of :func:`dead_layer`.
    """
    b = _Builder("The mean log squared length at finite width")
    kk = sp.Symbol("k", positive=True, integer=True)
    logchi = b.add(Expect(sp.log(sp.Symbol("chi^2_k"))), sp.polygamma(0, kk / 2) + sp.log(2), Rule.GAUSSIAN_INTEGRAL,
                   "the mean of a log chi-square", proof=Quadrature(sp.log(_u), _chi2_density(kk), kk))
    c = sp.Symbol("c", positive=True)
    alive_law = b.model(Prob(sp.Eq(_K, _k)), sp.binomial(_n, _k) / (2**_n - 1), Rule.CONDITION,
                        prose(BinomialLaw(_K, _n, _half), " conditioned on ", sp.Ge(_K, 1), " (a live layer)"),
                        assumptions=(_A_SYM, _A_CONT))
    factor = b.add(_LOG_LIVE, _log_factor_sum(_n, c), Rule.SUBSTITUTION,
                   prose(sp.Eq(sp.Symbol("F"), c * _C), f": average of step ({logchi + 1}) over the conditioned binomial"),
                   proof=MixtureQuadrature(_n, c), uses=(logchi, alive_law))
    total = b.model(Expect(sp.log(_M[_L])), sp.Sum(Given(sp.log(_F[_j]), sp.Ge(sp.Indexed("K", _j), 1)), (_j, 1, _L)), Rule.INDEPENDENCE,
                    "log of a product of factors, independent given that no layer dies (a product event)",
                    assumptions=(_A_GAUSS, "no layer is entirely inactive"), exactness="gaussian-exact")
    he_factor = _log_factor_sum(_n, 2 / _n)
    c_he = b.define(c, 2 / _n, prose("He's variance: the scale of F is ", sp.Eq(_sw[_j] * _nw[_j - 1] / _nw[_j],
                                                                             2 / _nw[_j], evaluate=False)))
    he_step = b.identity(_LOG_LIVE, he_factor, Rule.SUBSTITUTION, uses=(factor, c_he))
    expansion = _log_expansion()
    b.add(_LOG_LIVE, expansion, Rule.ALGEBRA,
          prose("large ", _n, ": digamma's asymptotic series, the binomial's central moments, and ",
                sp.Eq(Prob(sp.Eq(_K, 0)), 2**-_n), " dropped (exponentially small)"),
          proof=AsymptoticDecay(he_factor, _n, 2), exactness="asymptotic", uses=(he_step,))
    result = sp.Sum(he_factor.subs(_n, _nw[_j]), (_j, 1, _L))
    b.model(Expect(sp.log(_M[_L])), result, Rule.SUBSTITUTION, prose(f"step ({he_step + 1}) with ", _n, " = ", _nw[_j],
                                                                       f" in each term of step ({total + 1})"),
            uses=(total, he_step), assumptions=(_A_GAUSS, "no layer is entirely inactive"), exactness="gaussian-exact")
    return b.build(result, prose("Given no dead layer, ", Expect(sp.log(_M[_L])), " is a sum over layers of a finite "
                                 "binomial sum of digamma values; at large widths about ",
                                 sp.Sum(expansion.subs(_n, _nw[_j]), (_j, 1, _L)), "."),
                   expansion=expansion, factor=he_factor)


def _log_expansion() -> sp.Expr:
    r"""The large-width expansion of :math:`\log(2/n) + \log 2 + E[\psi(K/2)]` to :math:`O(n^{-2})`.

    :math:`K = \tfrac n2(1+\delta)` with :math:`E\delta^2 = 1/n`, :math:`E\delta^3 = 0`,
    :math:`E\delta^4 = 3/n^2 - 2/n^3`; :math:`\psi(z) = \log z - 1/(2z) - 1/(12 z^2) + O(z^{-4})`.
    """
    d, eps = sp.Symbol("delta"), sp.Symbol("epsilon", positive=True)   # eps = 1/n
    z = (1 + d) / (4 * eps)                                            # K/2
    psi = sp.log(z) - 1 / (2 * z) - 1 / (12 * z**2)
    value = sp.log(2 * eps) + sp.log(2) + psi
    series = sp.series(value, d, 0, 5).removeO()
    moments = {d**4: 3 * eps**2 - 2 * eps**3, d**3: 0, d**2: eps, d: 0}
    poly = sp.Poly(sp.expand(series), d)
    mean = sum((c * (moments[d ** e[0]] if e[0] else 1) for e, c in poly.terms()), sp.Integer(0))
    truncated = sp.series(sp.expand(mean), eps, 0, 3).removeO()
    return sp.expand(truncated.subs(eps, 1 / _n))


def expected_log(widths: Sequence[int], dps: int = 30) -> mpmath.mpf:
    r""":math:`E[\log M_L \mid \text{no dead layer}]` at He's variance, from :func:`log_moment`, to ``dps`` digits."""
    widths = _as_widths(widths)
    factor = log_moment().extras["factor"]
    with mpmath.workdps(dps + 5):
        total = sum(mpmath.mpf(str(sp.N(factor.subs(_n, w).doit(), dps + 5))) for w in widths[1:])
    with mpmath.workdps(dps):  # rounded to dps digits (outside the block, + rounds to the caller's precision)
        return +total


def expected_log_asymptotic(widths: Sequence[int]) -> sp.Expr:
    r"""The large-width expansion of :func:`expected_log`: :math:`\sum_j (-\tfrac{5}{2n_j} + \dots)`."""
    widths = _as_widths(widths)
    expansion = log_moment().extras["expansion"]
    return sp.Add(*(expansion.subs(_n, w) for w in widths[1:]))


# --- moments of every order ----------------------------------------------------------------------

_theta = sp.Symbol("theta")
_kk = sp.Symbol("k", positive=True, integer=True)         # a number of active units, k >= 1
_c = sp.Symbol("c", positive=True)                        # the scale of a layer factor F = c chi^2_K
_r = sp.Symbol("r", positive=True, integer=True)
_mu = sp.IndexedBase("mu")          # mu[j, r] = E[(log F_j)^r | K_j >= 1]
_kappa = sp.IndexedBase("kappa")    # kappa[j, r]: the r-th cumulant of log F_j given K_j >= 1; kappa[r]: of log M_L


def _order(order: object) -> int:
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= MAX_ORDER:
        raise DerivationError(f"order must be an integer from 1 to {MAX_ORDER}, got {order!r}")
    return order


def _rising(count: sp.Expr, order: int) -> sp.Expr:
    r""":math:`\prod_{i<k}(K + 2i)`: the moment of order k of :math:`\chi^2_K` (0 for K = 0)."""
    return sp.Mul(*(count + 2 * i for i in range(order)))


def _binomial_power(order: int) -> sp.Expr:
    r""":math:`E[K^p]` for :math:`K \sim \mathrm{Binomial}(n, 1/2)` through the factorial moments,
    :math:`E[K^p] = \sum_i S(p, i)\, n^{\underline i}/2^i` (Stirling numbers of the second kind)."""
    from sympy.functions.combinatorial.numbers import stirling

    return sp.factor(sum((stirling(order, i) * sp.ff(_n, i) / 2**i for i in range(1, order + 1)), sp.Integer(0)))


def _complete_bell(order: int, cumulants: Sequence[sp.Expr], expand: bool = True) -> sp.Expr:
    r"""The moment of order k from the cumulants :math:`\kappa_1..\kappa_k`: the complete Bell polynomial
    :math:`B_k(\kappa_1, \dots, \kappa_k) = \sum_i B_{k,i}(\kappa_1, \dots)` (partial Bell polynomials)."""
    value = sum((sp.bell(order, i, tuple(cumulants[: order - i + 1])) for i in range(1, order + 1)), sp.Integer(0))
    return sp.expand(value) if expand else value


def _cumulant_from_moments(order: int, moments: Sequence[sp.Expr]) -> sp.Expr:
    r""":math:`\kappa_r = \mu_r - \sum_{i=1}^{r-1}\binom{r-1}{i-1}\kappa_i\,\mu_{r-i}` (``moments[i]`` is
    :math:`\mu_{i+1}`)."""
    kappas: list[sp.Expr] = []
    for r in range(1, order + 1):
        kappas.append(sp.expand(moments[r - 1] - sum((sp.binomial(r - 1, i - 1) * kappas[i - 1] * moments[r - i - 1]
                                                      for i in range(1, r)), sp.Integer(0))))
    return kappas[-1]


def _log_chi_moment(order: int, count: sp.Expr, scale: sp.Expr) -> sp.Expr:
    r""":math:`E[\log(c\chi^2_k)^r]` from the cumulants of :math:`\log\chi^2_k`: :math:`\kappa_1 = \psi(k/2) +
    \log 2`, :math:`\kappa_i = \psi^{(i-1)}(k/2)` (polygamma), plus :math:`\log c` on the first."""
    cumulants = [sp.log(2 * scale) + sp.polygamma(0, count / 2)] + [sp.polygamma(i - 1, count / 2)
                                                                      for i in range(2, order + 1)]
    return _complete_bell(order, cumulants, expand=False)


@dataclass(frozen=True)
class MellinQuadrature(Check):
    r"""``rhs`` (a formula in the degrees of freedom ``variable`` and :math:`\theta`) equals
    :math:`\int_0^\infty u^\theta f_{\chi^2_k}(u)\,du` by mpmath quadrature (30 digits) for k = 1..6 and
    :math:`\theta \in \{1/3, 1, 5/2\}`."""

    variable: sp.Symbol
    kind: ClassVar[str] = "integral"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        with mpmath.workdps(30):
            for k in range(1, 7):
                density = sp.lambdify(_u, _chi2_density(sp.Integer(k)), "mpmath")
                for theta in (sp.Rational(1, 3), sp.Integer(1), sp.Rational(5, 2)):
                    power = mpmath.mpf(theta.p) / theta.q
                    numeric = mpmath.quad(lambda v, density=density, power=power: 2 * v * (v * v) ** power * density(v * v),
                                          [0, 1, mpmath.inf])
                    stated = sp.N(step.rhs.subs({self.variable: k, _theta: theta}), 30)
                    if abs(numeric - mpmath.mpf(str(stated))) > mpmath.mpf(10) ** -20 * max(1, abs(numeric)):
                        return False, f"fails at k = {k}, theta = {theta}: quadrature {numeric}, formula {stated}"
        return True, "mpmath quadrature (30 digits) agrees to 1e-20 for k = 1..6, theta = 1/3, 1, 5/2"


@cache
def _power_moment(order: int) -> Derivation:
    k = order
    b = _Builder(f"Moments of order {k} of the squared length at finite width")
    law = b.model(_R, _s * _C, Rule.SYMMETRY,
                  prose("given ", _xv, ", the entries of ", _W * _xv, " are iid, each ", NormalLaw(_y, 0, _s * _Q),
                        "; the squares of the ", _K, " positive ones are ", _K, " independent ", _s * _Q * sp.Symbol("chi^2_1"),
                        ", with ", BinomialLaw(_K, _n, _half), " (the one-layer law)"),
                  assumptions=(_A_GAUSS, _A_X), exactness="gaussian-exact", source=f"{HANIN_ROLNICK}, Sec. 5")
    conditional = _s**k * _rising(_K, k)
    given = b.add(Given(_R**k, _K), conditional, Rule.SUBSTITUTION,
                  prose("the moment of order ", sp.Integer(k), " of ", _s * _C, " is ", _s**k, " times ", sp.Product(_K + 2 * _k, (_k, 0, k - 1))),
                  proof=MomentFromMGF((1 - 2 * _t) ** (-_K / 2), _t, k, _s**k), uses=(law,))
    binomial = [b.add(Expect(_K**p), _binomial_power(p), Rule.DEFINITION,
                      prose("the moment of order ", sp.Integer(p), " of ", BinomialLaw(_K, _n, _half), ", from its factorial moments ",
                            sp.Eq(Expect(sp.FallingFactorial(_K, _i)), sp.FallingFactorial(_n, _i) / 2**_i)),
                      proof=MomentFromMGF(((1 + sp.exp(_t)) / 2) ** _n, _t, p))
                for p in range(1, k + 1)]
    poly = sp.Poly(sp.expand(conditional), _K)
    tower_rhs = sum((c * Expect(_K ** e[0]) if e[0] else c for e, c in poly.terms()), sp.Integer(0))
    tower = b.add(Expect(_R**k), tower_rhs, Rule.ALGEBRA, "tower property", proof=Linearity(conditional, _K), uses=(given,))
    one = sp.factor(sp.expand(tower_rhs.xreplace({Expect(_K**p): _binomial_power(p) for p in range(1, k + 1)})))
    one_step = b.identity(Expect(_R**k), one, Rule.SUBSTITUTION, uses=(tower, *binomial))
    # the chain: M_L = prod_j F_j with independent F_j = (s_j n_(j-1)/n_j) chi^2_(K_j)
    scale = _sw[_j] * _nw[_j - 1] / _nw[_j]
    f = b.model(_F[_j], scale * sp.Symbol("chi^2_(K_j)"), Rule.INDEPENDENCE,
                prose("one layer with ", _s, " = ", _sw[_j], " and ", _n, " = ", _nw[_j], ", times ", _nw[_j - 1] / _nw[_j],
                      "; its law given ", sp.Symbol("x_(j-1)"), " does not depend on ", sp.Symbol("x_(j-1)"),
                      ", so the factors are independent"),
                assumptions=(_A_GAUSS,), exactness="gaussian-exact", source=f"{HANIN_ROLNICK}, Sec. 5")
    factor_j = (one / _s**k).subs(_n, _nw[_j]) * scale**k
    mixture = ((1 + (1 - 2 * _t) ** sp.Rational(-1, 2)) / 2) ** _nw[_j]
    ef = b.add(Expect(_F[_j] ** k), factor_j, Rule.SUBSTITUTION,
               prose(f"step ({one_step + 1}) with ", _s, " = ", scale, "; the MGF of the binomial mixture of chi-squares is ", mixture),
               proof=MomentFromMGF(mixture, _t, k, scale**k), uses=(f, one_step))
    rec = b.model(Expect(_M[_L] ** k), Expect(_M[_L - 1] ** k) * Expect(_F[_L] ** k), Rule.INDEPENDENCE,
                  prose(_M[_L] ** k, " = ", _M[_L - 1] ** k * _F[_L] ** k, " with independent factors"),
                  assumptions=(_A_GAUSS,), exactness="gaussian-exact")
    total = b.add(Expect(_M[_L] ** k), sp.Product(factor_j, (_j, 1, _L)), Rule.UNROLLING, prose("with ", sp.Eq(_M[0], 1)),
                  proof=Unrolled(sp.Integer(1), factor_j, _j, 1, _L), uses=(rec, ef))
    he = b.define(_sw[_j], 2 / _nw[_j - 1], "He's variance (fan-in)")
    he_factor = factor_j.xreplace({_sw[_j]: 2 / _nw[_j - 1]})
    b.identity(Expect(_M[_L] ** k), sp.Product(he_factor, (_j, 1, _L)), Rule.SUBSTITUTION, "at He's variance",
               uses=(total, he))
    return b.build(b.steps[total].rhs, prose("The moment of order ", sp.Integer(k), " of ", _M[_L], " is a product over layers of a "
                                             "polynomial in the width: ", sp.Eq(Expect(_R**k), one), " for one layer."),
                   one_layer=one, factor=factor_j, he_factor=he_factor)


def power_moment(order: int) -> Derivation:
    r""":math:`E[M_L^k]` for any order :math:`k = 1..8` and any widths (Gaussian weights, zero bias).

    Given :math:`K`, :math:`E[(s\chi^2_K)^k \mid K] = s^k \prod_{i<k}(K + 2i)`; averaging this polynomial
    in :math:`K` over :math:`\mathrm{Binomial}(n, 1/2)` gives :math:`E[R^k]` as a polynomial of degree k in
    the width (:math:`s\,n/2`, :math:`s^2 n(n+5)/4`, :math:`s^3 n(n+4)(n+11)/8`, ...), and
    :math:`M_L = \prod_j F_j` with independent factors gives
    :math:`E[M_L^k] = \prod_j E[F_j^k]` (Hanin & Rolnick 2018, Sec. 5, for k = 2). Orders 1 and 2 are
    :func:`product_law`'s mean and second moment.
    """
    return _power_moment(_order(order))


@cache
def _log_power_moment(order: int) -> Derivation:
    k = order
    b = _Builder(f"Moments of order {k} of the log squared length at finite width")
    chi_k = sp.Symbol("chi^2_k")
    mellin_rhs = 2**_theta * sp.gamma(_kk / 2 + _theta) / sp.gamma(_kk / 2)
    mellin = b.add(Expect(chi_k**_theta), mellin_rhs, Rule.GAUSSIAN_INTEGRAL, "the Mellin transform of the chi-square density",
                   proof=MellinQuadrature(_kk))
    conditional = []
    for r in range(1, k + 1):
        conditional.append(b.add(
            Expect(sp.log(_c * chi_k) ** r), _log_chi_moment(r, _kk, _c), Rule.ALGEBRA,
            prose("the derivative of order ", sp.Integer(r), " at ", sp.Eq(_theta, 0), " of ", sp.Eq(Expect((_c * chi_k) ** _theta),
                                                                                    _c**_theta * mellin_rhs),
                  "; the cumulants of ", sp.log(chi_k), " are ", sp.polygamma(0, _kk / 2) + sp.log(2), " and ",
                  sp.polygamma(_i - 1, _kk / 2), " for ", sp.Ge(_i, 2)),
            proof=MomentFromMGF(_c**_theta * mellin_rhs, _theta, r), uses=(mellin,)))
    alive_law = b.model(Prob(sp.Eq(_K, _k)), sp.binomial(_n, _k) / (2**_n - 1), Rule.CONDITION,
                        prose(BinomialLaw(_K, _n, _half), " conditioned on ", sp.Ge(_K, 1), " (a live layer)"),
                        assumptions=(_A_SYM, _A_CONT))
    moments = []
    for r, step in enumerate(conditional, 1):
        rhs = sp.Sum(sp.binomial(_n, _k) / (2**_n - 1) * _log_chi_moment(r, _k, _c), (_k, 1, _n))
        moments.append(b.add(Given(sp.log(sp.Symbol("F")) ** r, sp.Ge(_K, 1)), rhs, Rule.SUBSTITUTION,
                             prose(sp.Eq(sp.Symbol("F"), _c * _C), f": step ({step + 1}) averaged over the conditioned binomial"),
                             proof=MixtureQuadrature(_n, _c, r), uses=(step, alive_law)))
    mus = [_mu[_j, r] for r in range(1, k + 1)]
    cumulant_steps = [b.add(_kappa[_j, r], _cumulant_from_moments(r, mus), Rule.ALGEBRA,
                            prose("cumulants from the moments ", sp.Eq(_mu[_j, _r], Given(sp.log(_F[_j]) ** _r,
                                                                                         sp.Ge(sp.Indexed("K", _j), 1)))),
                            proof=MomentFromMGF(sp.log(1 + sum(m * _t**i / sp.factorial(i) for i, m in enumerate(mus, 1))),
                                                _t, r))
                      for r in range(1, k + 1)]
    adds = b.model(_kappa[_r], sp.Sum(_kappa[_j, _r], (_j, 1, _L)), Rule.INDEPENDENCE,
                   prose("given that no layer dies (a product event), ", sp.log(_M[_L]), " is a sum of independent ",
                         sp.log(_F[_j]), ", and cumulants of independent terms add"),
                   assumptions=(_A_GAUSS, "no layer is entirely inactive"), exactness="gaussian-exact",
                   source=f"{HANIN_ROLNICK}, Sec. 5", uses=tuple(cumulant_steps))
    kappas = [_kappa[r] for r in range(1, k + 1)]
    moment = _complete_bell(k, kappas)
    last = b.add(Expect(sp.log(_M[_L]) ** k), moment, Rule.ALGEBRA,
                 prose("the moment of order ", sp.Integer(k), " from the cumulants (the complete Bell polynomial), given no dead layer"),
                 proof=MomentFromMGF(sp.exp(sum(q * _t**i / sp.factorial(i) for i, q in enumerate(kappas, 1))), _t, k),
                 uses=(adds,))
    extras = {f"moment_{r}": b.steps[m].rhs for r, m in enumerate(moments, 1)}
    extras |= {f"cumulant_{r}": b.steps[c].rhs for r, c in enumerate(cumulant_steps, 1)}
    if k >= 2:
        b.define(Variance(sp.log(_M[_L])), _kappa[2], "the second cumulant is the variance, given no dead layer",
                 rule=Rule.VARIANCE_DEFINITION, uses=(adds,))
    return b.build(b.steps[last].rhs, prose("Given no dead layer, the cumulants of ", sp.log(_M[_L]), " are sums over "
                                            "layers of finite binomial sums of polygamma values; its moment of order ", sp.Integer(k),
                                            " is their complete Bell polynomial."),
                   moment=moment, **extras)


def log_power_moment(order: int) -> Derivation:
    r""":math:`E[(\log M_L)^k \mid \text{no dead layer}]`, :math:`k = 1..8`, and the variance, as finite sums.

    :math:`E[(c\chi^2_k)^\theta] = (2c)^\theta\Gamma(k/2 + \theta)/\Gamma(k/2)`, so the cumulants of
    :math:`\log\chi^2_k` are :math:`\psi(k/2) + \log 2` and :math:`\psi^{(i-1)}(k/2)` (polygamma); given
    that no layer dies the :math:`\log F_j` are independent, each a mixture over
    :math:`P(K_j = k) = \binom{n_j}{k}/(2^{n_j} - 1)`, :math:`k \ge 1`, so the cumulants of
    :math:`\log M_L` are sums over layers and its moments their complete Bell polynomials. The variance is
    :math:`\sum_j (E[\psi'(K_j/2)] + \operatorname{Var}[\psi(K_j/2)])` (Hanin & Rolnick 2018, Sec. 5, give
    its large-width order :math:`\sum_j 5/n_j`).
    """
    return _log_power_moment(_order(order))


def _layer_log_moments(width: int, scale: sp.Expr, order: int) -> list[mpmath.mpf]:
    """``[E[(log F)^r | K >= 1] for r = 1..order]`` of one layer of ``width`` and scale ``scale``, evaluated
    from :func:`log_power_moment`'s formulas (the finite sum term by term, mpmath at the working precision)."""
    d = log_power_moment(order)
    out = []
    for r in range(1, order + 1):
        summand = d.extras[f"moment_{r}"].function.subs({_n: width, _c: scale})
        term = sp.lambdify(_k, summand, "mpmath")
        out.append(mpmath.fsum(term(mpmath.mpf(m)) for m in range(1, width + 1)))
    return out


def _log_cumulants(widths: Sequence[int], variances: Sequence[sp.Expr], order: int,
                   dps: int = 30) -> list[mpmath.mpf]:
    r"""The cumulants :math:`\kappa_1..\kappa_k` of :math:`\log(\|x_L\|^2/\|x_0\|^2)` given no dead layer: sums over
    layers of :func:`log_power_moment`'s per-layer cumulants (each layer's scale is its weight variance)."""
    d = log_power_moment(order)
    mus = [_mu[_j, i] for i in range(1, order + 1)]
    functions = [sp.lambdify(mus, d.extras[f"cumulant_{r}"], "mpmath") for r in range(1, order + 1)]
    totals = [mpmath.mpf(0)] * order
    with mpmath.workdps(dps + 10):
        cache: dict[tuple[int, sp.Expr], list[mpmath.mpf]] = {}
        for n, s in zip(widths[1:], variances):
            if (n, s) not in cache:
                mus = _layer_log_moments(n, s, order)
                cache[n, s] = [functions[r](*mus) for r in range(order)]
            totals = [a + b for a, b in zip(totals, cache[n, s])]
    return totals


def log_moments(widths: Sequence[int], order: int, variances: Sequence[object] | None = None,
                dps: int = 30) -> tuple[mpmath.mpf, mpmath.mpf]:
    r"""``(E[(log R)^k | no dead layer], Var[log R | no dead layer])`` for :math:`R = \|x_L\|^2/\|x_0\|^2`
    (Gaussian weights, default He's variance), from :func:`log_power_moment`, to ``dps`` digits."""
    widths = _as_widths(widths)
    variances = _as_variances(widths, variances)
    order = _order(order)
    kappas = _log_cumulants(widths, variances, max(order, 2), dps)
    with mpmath.workdps(dps + 10):
        moment = sp.lambdify([_kappa[i] for i in range(1, order + 1)], log_power_moment(order).extras["moment"],
                             "mpmath")(*kappas[:order])
    with mpmath.workdps(dps):  # rounded to dps digits (outside the block, + rounds to the caller's precision)
        return +moment, +kappas[1]


#: The highest order of :func:`_log_cumulants_to`: the skewness of the per-network :math:`(\log R)^k` needs
#: :math:`E[(\log R)^{3k}]`, k up to :data:`~varprop.observables.MAX_ORDER` (an internal bound for the
#: checker's skew guard; the derivations' public orders stay at most ``MAX_ORDER``).
_SKEW_ORDER = 3 * MAX_ORDER
#: The widest layer :func:`_log_cumulants_to` takes (about 2 s per distinct layer at order 24 and width 4096).
_SKEW_MAX_WIDTH = 4096


def _polygamma_table(low: int, high: int, count: int) -> dict[int, list[mpmath.mpf]]:
    r"""``table[m][i]`` = :math:`\psi^{(i)}(m/2)` for m = ``low``..``high``, i = 0..``count`` - 1, at the working
    precision.

    mpmath's polygamma at the two largest arguments (one per parity of m), then downwards by
    :math:`\psi^{(i)}(x) = \psi^{(i)}(x + 1) - (-1)^i\, i!\, x^{-(i+1)}`: each step adds a term of the
    result's own sign and a larger size for i >= 1, so no digits cancel (upwards, from 1/2, they
    would); digamma loses at most a few near its root."""
    factorials = [mpmath.factorial(i) for i in range(count)]
    table: dict[int, list[mpmath.mpf]] = {}
    for top in {high, max(high - 1, low)}:
        x = mpmath.mpf(top) / 2
        values = [mpmath.polygamma(i, x) for i in range(count)]
        m = top
        while True:
            table[m] = values
            if m - 2 < low:
                break
            x -= 1
            m -= 2
            power, step = 1 / x, []
            for i, v in enumerate(values):
                step.append(v - (factorials[i] if i % 2 == 0 else -factorials[i]) * power)
                power /= x
            values = step
    return table


def _moments_from_cumulants(cumulants: Sequence[object]) -> list[object]:
    r"""``[1, m_1, .., m_r]`` from :math:`\kappa_1..\kappa_r` by :math:`m_n = \sum_{i=1}^{n}\binom{n-1}{i-1}\kappa_i m_{n-i}`
    (mpmath or :class:`decimal.Decimal` numbers, at their working precision)."""
    moments = [cumulants[0] * 0 + 1]
    for n in range(1, len(cumulants) + 1):
        row = _binomial_row(n - 1)
        moments.append(sum(row[i - 1] * cumulants[i - 1] * moments[n - i] for i in range(1, n + 1)))
    return moments


@cache
def _binomial_row(n: int) -> tuple[int, ...]:
    return tuple(math.comb(n, i) for i in range(n + 1))


def _cumulants_from_moments(moments: Sequence[mpmath.mpf]) -> list[mpmath.mpf]:
    r""":math:`\kappa_1..\kappa_r` from ``[1, m_1, .., m_r]`` (the same recursion solved for :math:`\kappa_n`)."""
    cumulants: list[mpmath.mpf] = []
    for n in range(1, len(moments)):
        cumulants.append(moments[n] - mpmath.fsum(math.comb(n - 1, i - 1) * cumulants[i - 1] * moments[n - i]
                                                  for i in range(1, n)))
    return cumulants


def _layer_log_cumulants(width: int, scale: sp.Expr, count: int) -> list[mpmath.mpf]:
    r"""The cumulants of order 1..``count`` of :math:`\log(c\,\chi^2_K)`, :math:`P(K = m) = \binom{n}{m}/(2^n - 1)`,
    m = 1..n, at the working precision: per m, the cumulants :math:`\psi(m/2) + \log 2c` and
    :math:`\psi^{(i-1)}(m/2)` give the moments about the mixture's mean (so that a large :math:`\log 2c`
    costs no digits), the binomial mixes them, and the mixture's moments give its cumulants. The mixing runs in
    :mod:`decimal` at the same precision (ten times faster than mpmath numbers; polygamma stays mpmath's).

    Terms whose binomial weight is below :math:`10^{-(\text{dps} + 80)}` are left out: a factor's moments of
    order at most 24 about the mixture's mean are below :math:`10^{32}` (:math:`\log\chi^2_1`'s left tail,
    :math:`E|\log\chi^2_1|^{24} \approx 24!\,2^{25}`, and a shift of at most :math:`\log 2n`), and the
    mixture's moments of even order 2r are at least its variance to the r, above :math:`10^{-50}` at every
    width up to :data:`_SKEW_MAX_WIDTH` (variance about :math:`5/n`): the dropped mass is below :math:`10^{-\text{dps}}` of them."""
    dps = mpmath.mp.dps
    log2c = mpmath.log(2 * mpmath.mpf(str(sp.N(scale, dps + 10))))
    # log10 C(n, m) / (2^n - 1) in floats decides which m to keep (ample margin); the kept weights are exact.
    top = math.lgamma(width + 1) / math.log(10) - width * math.log10(2)
    kept_range = [m for m in range(1, width + 1)
                  if top - (math.lgamma(m + 1) + math.lgamma(width - m + 1)) / math.log(10) > -(dps + 80)]
    weights = {m: math.comb(width, m) for m in kept_range}
    table = _polygamma_table(kept_range[0], kept_range[-1], count)
    kept = sum(weights.values())
    mean = mpmath.fsum(w * table[m][0] for m, w in weights.items()) / kept
    with decimal.localcontext() as context:
        context.prec = dps
        total = [decimal.Decimal(0)] * (count + 1)
        for m, w in weights.items():
            values = [decimal.Decimal(mpmath.nstr(v, dps, strip_zeros=False)) for v in
                      (table[m][0] - mean, *table[m][1:count])]
            raw = _moments_from_cumulants(values)
            weight = decimal.Decimal(w) / kept
            total = [a + weight * b for a, b in zip(total, raw)]
        total = [mpmath.mpf(str(t)) for t in total]
    cumulants = _cumulants_from_moments(total)
    cumulants[0] += mean + log2c
    return cumulants


@cache
def _log_cumulants_at(widths: tuple[int, ...], variances: tuple[sp.Expr, ...], count: int,
                      dps: int) -> tuple[mpmath.mpf, ...]:
    with mpmath.workdps(dps):
        layers: dict[tuple[int, sp.Expr], list[mpmath.mpf]] = {}
        totals = [mpmath.mpf(0)] * count
        for n, s in zip(widths[1:], variances):
            if (n, s) not in layers:
                layers[n, s] = _layer_log_cumulants(n, s, count)
            totals = [a + b for a, b in zip(totals, layers[n, s])]
        return tuple(totals)


def _log_cumulants_to(widths: Sequence[int], count: int, variances: Sequence[object] | None = None,
                      dps: int = 50) -> tuple[mpmath.mpf, ...]:
    r"""The cumulants :math:`\kappa_1..\kappa_{\text{count}}` of :math:`\log R` given no dead layer,
    :math:`R = \|x_L\|^2/\|x_0\|^2`, ``count`` up to :data:`_SKEW_ORDER` (= 24), at ``dps`` digits, without
    symbolic Bell polynomials (:func:`_log_cumulants` builds them and stops at order 8).

    Given no dead layer, :math:`\log R = \sum_j \log(s_j\chi^2_{K_j})` with independent :math:`K_j`
    (:func:`log_power_moment`): the cumulants of :math:`\log(c\chi^2_m)` are :math:`\psi(m/2) + \log 2c` and
    :math:`\psi^{(i-1)}(m/2)`; a layer's mixture over :math:`P(K = m) = \binom{n}{m}/(2^n - 1)` has the weighted
    sums of the per-m moments as its moments; the layers' cumulants add. The moments follow by
    :func:`_moments_from_cumulants`; a test pins them to :func:`log_moments` for the orders it covers and the
    higher ones to mpmath quadrature."""
    widths = _as_widths(widths)
    variances = _as_variances(widths, variances)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= _SKEW_ORDER:
        raise DerivationError(f"count must be an integer from 1 to {_SKEW_ORDER}, got {count!r}")
    if len(widths) > 101 or max(widths) > _SKEW_MAX_WIDTH:
        raise DerivationError(f"the log moments of high order are computed for at most 100 layers of width at most "
                              f"{_SKEW_MAX_WIDTH}, got {widths!r}")
    return _log_cumulants_at(widths, variances, count, dps)


def _poly_mul(a: Sequence[mpmath.mpf], b: Sequence[mpmath.mpf]) -> list[mpmath.mpf]:
    out = [mpmath.mpf(0)] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return out


def _expect(poly: Sequence[mpmath.mpf], central: Sequence[mpmath.mpf]) -> tuple[mpmath.mpf, float]:
    """(E[poly(Y)], digits lost to cancellation) for the central moments ``central`` of Y."""
    terms = [c * m for c, m in zip(poly, central)]
    value = mpmath.fsum(terms)
    size = mpmath.fsum(abs(t) for t in terms)
    if size == 0:
        return value, 0.0
    return value, (math.inf if value == 0 else float(mpmath.log10(size / abs(value))))


def log_skewness(widths: Sequence[int], order: int | None, variances: Sequence[object] | None = None) -> float:
    r"""The exact skewness of the per-network value a Monte Carlo mean averages for a log-moment claim, given no
    dead layer (:math:`R = \|x_L\|^2/\|x_0\|^2`, Gaussian weights, default He's variance).

    For ``order`` k (:math:`E[(\log R)^k]`) the value is :math:`V = (\log R)^k`. For ``order`` None
    (:math:`\operatorname{Var}[\log R]`) the estimate :math:`\overline{X^2} - \bar X^2` (X the per-network
    :math:`\log R`) moves, to first order, with the mean of the influence values :math:`V = (X - \mu)^2`,
    :math:`\mu = E[X]`, whose mean the checker's delta-method SE describes. Either V is a polynomial
    :math:`P(Y)` in :math:`Y = X - \mu`; with :math:`Q = P - E[P]` the skewness is
    :math:`E[Q^3]/E[Q^2]^{3/2}`, each an exact combination of the central moments of X of order up to
    :math:`3k` (6 for the variance), from the cumulants of log R (orders up to 24, from the layers' polygamma
    cumulants in mpmath). The working precision starts at 50 digits and grows until both expectations keep at least 25 of them
    (the cancellation is measured: the sum of the terms' sizes over the size of the sum)."""
    widths = _as_widths(widths)
    if order is not None:
        order = _order(order)
    degree = 2 if order is None else order
    dps = 50
    while True:
        kappas = _log_cumulants_to(widths, 3 * degree, variances, dps)
        with mpmath.workdps(dps):
            central = _moments_from_cumulants([mpmath.mpf(0), *kappas[1:]])
            mu = kappas[0]
            if order is None:
                poly = [mpmath.mpf(0), mpmath.mpf(0), mpmath.mpf(1)]
            else:
                poly = [mpmath.binomial(order, i) * mu ** (order - i) for i in range(order + 1)]
            poly[0] -= _expect(poly, central)[0]
            square = _poly_mul(poly, poly)
            var, lost2 = _expect(square, central)
            third, lost3 = _expect(_poly_mul(square, poly), central)
        lost = max(lost2, lost3)
        if lost < dps - 25 or dps >= 400:
            return float(third / var ** mpmath.mpf(1.5)) if var > 0 else 0.0
        dps = min(int(min(lost, 1e6)) + 50, 400)


def power_moment_value(widths: Sequence[int], order: int, variances: Sequence[object] | None = None) -> sp.Rational:
    r""":math:`E[M_L^k]` (normalised squared length) for Gaussian weights (default He's variance), exactly,
    from :func:`power_moment`."""
    widths = _as_widths(widths)
    variances = _as_variances(widths, variances)
    formula = power_moment(order).result
    values = {_nw[i]: w for i, w in enumerate(widths)} | {_sw[i + 1]: v for i, v in enumerate(variances)}
    return sp.nsimplify(formula.subs(_L, len(widths) - 1).doit().xreplace(values))


# --- the backward pass -------------------------------------------------------------------------

_T = sp.IndexedBase("T")        # E||t_k||^2 of a tangent t pushed from layer l through k layers
_X = sp.IndexedBase("X")        # E||x_k||^2
_i = sp.Symbol("i", positive=True, integer=True)
_D = sp.Symbol("D", positive=True, integer=True)   # layers above l: D = L - l
_G = sp.Symbol("G_l", nonnegative=True)   # ||dL/dx_l||^2
_GW = sp.Symbol("G_W_l", nonnegative=True)  # ||dL/dW_l||_F^2
_A_BELOW_TOP = prose(sp.Lt(_l, _L), ": at the output the gradient is ", sp.Symbol("g"), " itself, with ", sp.Eq(Expect(sp.Symbol("||g||^2")), _nw[_L]))
_A_LOSS = prose("the loss gradient ", sp.Symbol("g"), " at the output ", sp.Symbol("x_L"), " is independent of the network with ", sp.Eq(Expect(sp.Symbol("g g^T")), sp.Symbol("I")))


@cache
def backward() -> Derivation:
    r"""Exact second moments of :math:`\partial\mathcal L/\partial x_l` and :math:`\partial\mathcal L/\partial W_l` at any widths.

    A tangent :math:`t` at layer :math:`l` moves as :math:`t_k = D_k W_k t_{k-1}` with
    :math:`D_k = \mathrm{diag}(\mathbf 1\{y_k > 0\})` (relu'(0) = 0). Flipping the sign of row i of
    :math:`W_k` negates both :math:`y_{k,i}` and :math:`(W_k t)_i` and keeps the law, so
    :math:`E[\mathbf 1\{y_{k,i}>0\}(W_kt)_i^2] = \tfrac12 E[(W_kt)_i^2]` whenever :math:`y_{k,i} \ne 0`
    almost surely; when :math:`x_{k-1} = 0` both sides vanish. Hence, with :math:`D = L - l`,

    .. math::

        E\|\partial\mathcal L/\partial x_l\|^2 = P(x_l \ne 0)\, n_l \prod_{i=1}^{D}\frac{n_{l+i}s_{l+i}}{2} \quad (l < L),
        \qquad
        E\|\partial\mathcal L/\partial W_l\|_F^2 = \|x_0\|^2\,\frac{n_l}{2}\prod_{k \ne l}\frac{n_k s_k}{2},

    exact for every symmetric weight law without atoms (Hanin 2018, Thm. 1, gives the same mean for
    the path sums). A dead layer below :math:`l` zeroes :math:`x_l` and, because relu'(0) = 0, the
    gradient: that is the factor :math:`P(x_l \ne 0) = \prod_{j \le l}(1 - 2^{-n_j})`; the weight
    gradient carries no such factor because :math:`\|x_{l-1}\|^2` already averages over dead layers.
    """
    b = _Builder("The backward pass at finite width")
    step_t = b.add(Expect(_T[_i]), _nw[_l + _i] * _sw[_l + _i] / 2 * Expect(_T[_i - 1]), Rule.SYMMETRY,
                   prose("the relu derivative at ", _y, " is ", sp.Heaviside(_y, 0), "; ",
                         sp.Eq(sp.Heaviside(_u, 0) + sp.Heaviside(-_u, 0), 1), " for ", sp.Ne(_u, 0), " and a row's sign flip keeps the law, so half of ", Expect(_T[_i - 1]),
                         " times the row variance survives; a zero layer input gives 0 on both sides"),
                   proof=Lemma(sp.Heaviside(_u, 0) + sp.Heaviside(-_u, 0), 0,
                               LEMMA_CONSTANT / 2 * _nw[_l + _i] * _sw[_l + _i] * Expect(_T[_i - 1])),
                   assumptions=(_A_SYM, _A_CONT), source=f"{HANIN}, Sec. 3")
    factor = _nw[_l + _i] * _sw[_l + _i] / 2
    t_all = b.add(Expect(_T[_D]), sp.Product(factor, (_i, 1, _D)), Rule.UNROLLING, prose("a unit tangent: ", sp.Eq(_T[0], 1)),
                  proof=Unrolled(sp.Integer(1), factor, _i, 1, _D), uses=(step_t,))
    frob = b.model(Expect(_G), Prob(_Alive[_l]) * _nw[_l] * Expect(_T[_D]), Rule.INDEPENDENCE,
                   prose("averaging over g gives the squared Frobenius norm of the Jacobian, a sum over the ",
                         _nw[_l], " unit tangents; it is 0 when ", sp.Eq(sp.Symbol("x_l"), 0), " (every entry of ", sp.Symbol("D_(l+1)"), " is 0)"),
                   assumptions=(_A_LOSS, _A_SYM, _A_CONT, _A_BELOW_TOP))
    alive = b.model(Prob(_Alive[_l]), sp.Product(1 - 2 ** -_nw[_j], (_j, 1, _l)), Rule.INDEPENDENCE,
                    prose("the dead-layer derivation, step 2, at depth ", _l), assumptions=(_A_SYM, _A_CONT))
    dx = b.identity(Expect(_G), sp.Product(1 - 2 ** -_nw[_j], (_j, 1, _l)) * _nw[_l] * sp.Product(factor, (_i, 1, _D)),
                    Rule.SUBSTITUTION, uses=(frob, alive, t_all))
    he = b.define(_sw[_l + _i], 2 / _nw[_l + _i - 1], "He's variance (fan-in)")
    he_t = b.add(Expect(_T[_D]), _nw[_l + _D] / _nw[_l], Rule.TELESCOPING, "at He's variance the factors telescope",
                 proof=Unrolled(sp.Integer(1), factor.xreplace({_sw[_l + _i]: 2 / _nw[_l + _i - 1]}), _i, 1, _D),
                 uses=(t_all, he))
    dx_he = b.identity(Expect(_G), sp.Product(1 - 2 ** -_nw[_j], (_j, 1, _l)) * _nw[_l + _D], Rule.SUBSTITUTION,
                       uses=(frob, alive, he_t))
    # weight gradient: dL/dW_l = (D_l dL/dx_l) x_(l-1)^T
    fwd = b.add(Expect(_X[_j]), _nw[_j] * _sw[_j] / 2 * Expect(_X[_j - 1]), Rule.SYMMETRY,
                prose("the forward pass: ", sp.Eq(Relu(_u) ** 2 + Relu(-_u) ** 2, _u**2)),
                proof=Lemma(_relu(_u) ** 2 + _relu(-_u) ** 2, 2, LEMMA_CONSTANT / 2 * _nw[_j] * _sw[_j] * Expect(_X[_j - 1])),
                assumptions=(_A_SYM,), source="He et al. 2015, eq. (8)")
    x_all = b.add(Expect(_X[_l - 1]), _X[0] * sp.Product(_nw[_j] * _sw[_j] / 2, (_j, 1, _l - 1)), Rule.UNROLLING,
                  prose(_X[0], " is the fixed input's squared length"),
                  proof=Unrolled(_X[0], _nw[_j] * _sw[_j] / 2, _j, 1, _l - 1), uses=(fwd,))
    w_model = b.model(Expect(_GW), _nw[_l] / 2 * Expect(_X[_l - 1]) * Expect(_T[_D]), Rule.INDEPENDENCE,
                      prose(sp.Symbol("||D_l dL/dx_l||^2"), " averages to ", sp.Symbol("K_l"), " unit tangents, ", BinomialLaw(sp.Symbol("K_l"), _nw[_l], _half),
                            " independent of ", sp.Symbol("||x_(l-1)||^2"), " given a live ", sp.Symbol("x_(l-1)"),
                            " (0 otherwise)"),
                      assumptions=(_A_LOSS, _A_SYM, _A_CONT))
    dw = b.identity(Expect(_GW), _nw[_l] / 2 * _X[0] * sp.Product(_nw[_j] * _sw[_j] / 2, (_j, 1, _l - 1))
                    * sp.Product(factor, (_i, 1, _D)), Rule.SUBSTITUTION, uses=(w_model, x_all, t_all))
    return b.build(b.steps[dx].rhs, prose("Gradients keep their infinite-width mean at every width, except that a dead "
                                          "layer below ", sp.Symbol("x_l"), " zeroes them (the relu derivative is 0 at 0)."),
                   dx=b.steps[dx].rhs, dx_he=b.steps[dx_he].rhs, dw=b.steps[dw].rhs)


def gradient_moments(widths: Sequence[int], variances: Sequence[object] | None = None,
                     input_norm: object = 1) -> tuple[tuple[sp.Rational, ...], tuple[sp.Rational, ...]]:
    r"""``(E||dL/dx_l||^2 for l = 0..L, E||dL/dW_l||_F^2 for l = 1..L)``, exactly, from :func:`backward`
    (``input_norm`` is :math:`\|x_0\|^2`; the loss gradient has identity covariance)."""
    widths = _as_widths(widths)
    variances = _as_variances(widths, variances)
    depth = len(widths) - 1
    d = backward()
    values = {_nw[i]: w for i, w in enumerate(widths)} | {_sw[i + 1]: v for i, v in enumerate(variances)}
    values[_X[0]] = sp.nsimplify(input_norm, rational=True)
    dx = tuple(sp.nsimplify(d.extras["dx"].subs({_l: l, _D: depth - l}).doit().xreplace(values)) for l in range(depth))
    dx += (sp.Integer(widths[-1]),)   # the loss gradient itself
    dw = tuple(sp.nsimplify(d.extras["dw"].subs({_l: l, _D: depth - l}).doit().xreplace(values)) for l in range(1, depth + 1))
    return dx, dw


#: The finite-width derivations, by name.
FINITE_DERIVATIONS = {
    "one-layer": one_layer,
    "product-law": product_law,
    "fourth-moment": fourth_moment_recursion,
    "dead-layer": dead_layer,
    "log-moment": log_moment,
    "backward": backward,
    "power-moment-3": partial(power_moment, 3),
    "log-power-moment-2": partial(log_power_moment, 2),
}


# --- rules for the finite-width observables (both engines: varprop.montecarlo.estimators) ---------


_NW = sp.IndexedBase("N")   # widths n_0..n_L of the walked network, named apart from the walk's fan-ins
_SW = sp.IndexedBase("S")   # the weight variance of each of its dense layers
_RATIO = sp.IndexedBase("R")


def relu_chain(network: object, position: int, *, gaussian: bool) -> tuple[tuple[int, ...], tuple[sp.Expr, ...]]:
    """Widths n_0..n_L and weight variances of the zero-bias relu chain Dense, relu, ..., Dense, relu ending at
    ``position`` of ``network``; a :class:`DerivationError` naming what breaks it otherwise."""
    layers = network.layers[: position + 1]
    what = f"the finite-width laws need a zero-bias relu chain Dense, relu, ..., Dense, relu up to position {position}"
    if position < 1 or len(layers) % 2:
        raise DerivationError(f"{what}; position {position} is not the output of a relu after a dense layer")
    widths, variances = [], []
    for dense, act in zip(layers[::2], layers[1::2]):
        if not isinstance(dense, Dense) or not isinstance(act, Nonlinearity) or act.activation.name != "relu":
            raise DerivationError(f"{what}; found {type(dense).__name__}, {type(act).__name__}")
        if dense.bias is not None:
            raise DerivationError(f"{what}; a dense layer has a bias ({dense.bias})")
        if not all(isinstance(w, int) for w in (dense.fan_in, dense.fan_out)):
            raise DerivationError(f"{what} with integer widths; got {dense.fan_in} -> {dense.fan_out}")
        law = dense.weights
        if not law.iid:
            raise DerivationError(f"{what} with iid weights; got {law}, whose entries are not independent (the laws of "
                                  "one network's length rest on independent rows)")
        if not law.symmetric or (gaussian and not law.gaussian):
            need = "Gaussian" if gaussian else "symmetric"
            raise DerivationError(f"{what} with {need} weights; got {law} (for other laws the second moment depends on "
                                  "the input's fourth powers: varprop.derive.finite.fourth_moment)")
        if not widths:
            widths.append(dense.fan_in)
        widths.append(dense.fan_out)
        variances.append(law.variance)
    return tuple(widths), tuple(variances)


def _walk_values(walk: object, widths: tuple[int, ...], variances: tuple[sp.Expr, ...]) -> list[int]:
    steps = [walk.define(_NW[i], w, prose("width ", sp.Symbol(f"n_{i}"), " of the relu chain")) for i, w in enumerate(widths)]
    steps += [walk.define(_SW[i + 1], v, f"weight variance of its dense layer {i + 1}") for i, v in enumerate(variances)]
    return steps


def _rename(expr: sp.Expr) -> sp.Expr:
    return expr.replace(lambda e: isinstance(e, sp.Indexed) and e.base in (_nw, _sw),
                        lambda e: (_NW if e.base == _nw else _SW)[e.indices])


@observable_rules.register(NormRatioSecondMoment)   # order 2 (its own class since the first version)
@observable_rules.register(NormRatioMoment)
def _norm_ratio_moment(observable: NormRatioMoment, walk: object) -> Quantity:
    position, k = observable.tensor.position, observable.order
    if any(isinstance(layer, Residual) for layer in walk.network.layers):
        if k != 2:
            raise DerivationError(f"moments of the norm ratio through residual blocks are derived for order 2 only, "
                                  f"got order {k}")
        from .residual import length_second_moment

        return length_second_moment(observable, walk)
    widths, variances = relu_chain(walk.network, position, gaussian=True)
    depth = len(widths) - 1
    symbol = Expect(_RATIO[position + 1] ** k)
    general = _rename(power_moment(k).result.subs(_L, depth).doit()) * (_NW[depth] / _NW[0]) ** k
    law = walk.builder.model(symbol, general, Rule.INDEPENDENCE,
                             prose("the ratio is ", (_NW[depth] / _NW[0]), " times the product of independent factors ",
                                   "(the finite-width product law, moment of order ", sp.Integer(k), ")"),
                             assumptions=(_A_GAUSS, "biases are zero"), exactness="gaussian-exact",
                             source=f"{HANIN_ROLNICK}, Sec. 5")
    value = sp.nsimplify(general.xreplace({_NW[i]: w for i, w in enumerate(widths)}
                                          | {_SW[i + 1]: v for i, v in enumerate(variances)}))
    index = walk.builder.identity(symbol, value, Rule.SUBSTITUTION, "substitute the widths and variances",
                                  uses=(law, *_walk_values(walk, widths, variances)))
    return Quantity(symbol, value, index)


@observable_rules.register
def _(observable: DeadFraction, walk: object) -> Quantity:
    position = observable.tensor.position
    widths, _ = relu_chain(walk.network, position, gaussian=False)
    depth = len(widths) - 1
    symbol = Prob(sp.Eq(_RATIO[position + 1], 0))
    general = _rename(dead_layer().result.subs(_L, depth).doit())
    law = walk.builder.model(symbol, general, Rule.INDEPENDENCE, prose("a layer of width ", _n, " with a live input dies with probability ",
                                                                     2**-_n),
                             assumptions=(_A_SYM, _A_CONT, "biases are zero"), source=f"{HANIN_ROLNICK}, Sec. 5")
    value = sp.nsimplify(general.xreplace({_NW[i]: w for i, w in enumerate(widths)}))
    index = walk.builder.identity(symbol, value, Rule.SUBSTITUTION, "substitute the widths",
                                  uses=(law, *_walk_values(walk, widths, ())))
    return Quantity(symbol, value, index)


@observable_rules.register
def _(observable: LogNormRatio, walk: object) -> Quantity:
    position = observable.tensor.position
    widths, variances = relu_chain(walk.network, position, gaussian=True)
    depth = len(widths) - 1
    symbol = Expect(sp.log(_RATIO[position + 1]))
    terms = [_log_factor_sum(_NW[j], _SW[j] * _NW[j - 1] / _NW[j]) for j in range(1, depth + 1)]
    general = sp.log(_NW[depth] / _NW[0]) + sp.Add(*terms)
    law = walk.builder.model(symbol, general, Rule.INDEPENDENCE,
                             prose("given no dead layer, a sum over layers of the mean log of ", _SW[_j] * _NW[_j - 1] / _NW[_j] * _C,
                                   " with ", BinomialLaw(_K, _NW[_j], _half), " given ", sp.Ge(_K, 1),
                                   " (the finite-width log law)"),
                             assumptions=(_A_GAUSS, "biases are zero", "no layer is entirely inactive"),
                             exactness="gaussian-exact", source=f"{HANIN_ROLNICK}, Sec. 5")
    value = general.xreplace({_NW[i]: w for i, w in enumerate(widths)} | {_SW[i + 1]: v for i, v in enumerate(variances)})
    value = sp.Float(sp.N(value.doit(), 30), 30)
    index = walk.builder.add(symbol, value, Rule.SUBSTITUTION, "substitute the widths and variances; the digamma sum "
                             "evaluated to 30 digits", proof=_DigammaSum(general, widths, variances),
                             uses=(law, *_walk_values(walk, widths, variances)))
    return Quantity(symbol, value, index)


@dataclass(frozen=True)
class _DigammaSum(Check):
    """The stated number re-computed with mpmath from the binomial law term by term (mpmath's digamma), to 1e-20."""

    general: sp.Expr
    widths: tuple[int, ...]
    variances: tuple[sp.Expr, ...]
    kind: ClassVar[str] = "integral"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        with mpmath.workdps(30):
            total = mpmath.log(mpmath.mpf(self.widths[-1]) / self.widths[0])
            for a, n, s in zip(self.widths[:-1], self.widths[1:], self.variances):
                c = mpmath.mpf(str(sp.N(s, 35))) * a / n
                total += mpmath.log(2 * c) + sum(mpmath.binomial(n, k) * mpmath.digamma(mpmath.mpf(k) / 2)
                                                 for k in range(1, n + 1)) / (mpmath.mpf(2) ** n - 1)
            ok = abs(total - mpmath.mpf(str(step.rhs))) < mpmath.mpf(10) ** -20
        return ok, f"mpmath re-sums the binomial law with its own digamma: {mpmath.nstr(total, 15)}"




def _log_rule(observable: object, walk: object, variance: bool) -> Quantity:
    position = observable.tensor.position
    order = 2 if variance else observable.order
    widths, variances = relu_chain(walk.network, position, gaussian=True)
    depth = len(widths) - 1
    ratio = sp.log(_RATIO[position + 1])
    symbol = Variance(ratio) if variance else Expect(ratio**order)
    d = log_power_moment(order)
    layer_cumulants = [sp.Sum(_kappa[_j, r], (_j, 1, depth)) for r in range(1, order + 1)]
    general = layer_cumulants[1] if variance else _complete_bell(order, layer_cumulants)
    law = walk.builder.model(symbol, general, Rule.INDEPENDENCE,
                             prose("given no dead layer, ", ratio, " is a sum over the ", sp.Integer(depth),
                                   " layers of independent ", sp.log(_SW[_j] * _C), " with ", BinomialLaw(_K, _NW[_j], _half),
                                   " given ", sp.Ge(_K, 1), "; cumulants ", _kappa[_j, _r], " of independent terms add ",
                                   "(the finite-width log law)"),
                             assumptions=(_A_GAUSS, "biases are zero", "no layer is entirely inactive"),
                             exactness="gaussian-exact", source=f"{HANIN_ROLNICK}, Sec. 5")
    kappas = _log_cumulants(widths, variances, order)
    with mpmath.workdps(40):
        if variance:
            number = kappas[1]
        else:
            number = sp.lambdify([_kappa[i] for i in range(1, order + 1)], d.extras["moment"], "mpmath")(*kappas)
    value = sp.Float(mpmath.nstr(number, 30), 30)
    index = walk.builder.add(symbol, value, Rule.SUBSTITUTION,
                             prose("substitute the widths and variances in the cumulants of each layer (",
                                   f"the log-moment derivation of order {order}), evaluated to 30 digits"),
                             proof=_LogMomentRecursion(widths, variances, order, variance),
                             uses=(law, *_walk_values(walk, widths, variances)))
    return Quantity(symbol, value, index)


@observable_rules.register
def _(observable: LogNormRatioMoment, walk: object) -> Quantity:
    return _log_rule(observable, walk, variance=False)


@observable_rules.register
def _(observable: LogNormRatioVariance, walk: object) -> Quantity:
    return _log_rule(observable, walk, variance=True)


@dataclass(frozen=True)
class _LogMomentRecursion(Check):
    """The stated number re-computed without cumulants or polygamma: per number k of active units, mpmath
    differentiates log E[(c chi^2_k)^theta] = theta log(2c) + log Gamma(k/2 + theta) - log Gamma(k/2) numerically for
    the raw moments, mixes them over the conditioned binomial, and combines the layers by the binomial theorem
    (E[(S + X)^r] = sum_i C(r, i) E[S^(r-i)] E[X^i]); to a relative 1e-20."""

    widths: tuple[int, ...]
    variances: tuple[sp.Expr, ...]
    order: int
    variance: bool
    kind: ClassVar[str] = "integral"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        order = max(self.order, 2)
        with mpmath.workdps(45):
            total = [mpmath.mpf(1)] + [mpmath.mpf(0)] * order
            for n, s in zip(self.widths[1:], self.variances):
                c = mpmath.mpf(str(sp.N(s, 50)))
                layer = [mpmath.mpf(0)] * (order + 1)
                for k in range(1, n + 1):
                    half = mpmath.mpf(k) / 2
                    raw = mpmath.diffs(lambda th, half=half, c=c: mpmath.exp(th * mpmath.log(2 * c) + mpmath.loggamma(half + th)
                                                                        - mpmath.loggamma(half)), 0, order)
                    weight = mpmath.binomial(n, k) / (mpmath.mpf(2) ** n - 1)
                    layer = [a + weight * b for a, b in zip(layer, raw)]
                total = [mpmath.fsum(mpmath.binomial(r, i) * total[r - i] * layer[i] for i in range(r + 1))
                         for r in range(order + 1)]
            value = total[2] - total[1] ** 2 if self.variance else total[self.order]
            stated = mpmath.mpf(str(step.rhs))
            ok = abs(value - stated) <= mpmath.mpf(10) ** -20 * max(1, abs(value))
        return ok, f"mpmath: raw moments by numerical differentiation, layers by the binomial theorem: {mpmath.nstr(value, 15)}"
