r"""Derive rules of the normalisers :class:`~varprop.network.LayerNorm` and :class:`~varprop.network.RMSNorm`.

Both normalise each example over its :math:`N` units. With :math:`m` the per-network mean square of
the layer input (RMSNorm) or its variance over the units (LayerNorm, the biased variance PyTorch
uses) and :math:`\sigma = \sqrt{m + \epsilon}`,

.. math:: y_i = \frac{x_i}{\sigma} \;\text{(RMSNorm)}, \qquad
          y_i = \frac{x_i - \bar x}{\sigma} \;\text{(LayerNorm)}, \qquad
          \frac1N \sum_i y_i^2 = \frac{m}{m + \epsilon} \;\text{for every network.}

Forward. With :math:`\epsilon = 0` the mean square after the layer is 1 for *every* network (zero
variance; a network whose input has :math:`m = 0` gives 0/0 and is excluded by the sampler), and
after LayerNorm the mean over the units is 0 for every network, whatever :math:`\epsilon`. With
:math:`\epsilon > 0`, :math:`E[y^2] = E[m/(m + \epsilon)]` depends on the law of :math:`m`:

* a fixed input (a deterministic vector): :math:`m` is known; exact;
* iid :math:`\mathcal N(0, q)` entries (the Gaussian input, or a fixed input through one Gaussian
  dense layer): :math:`m = (q/N) X` with :math:`X \sim \chi^2_k`, :math:`k = N` (RMSNorm) or
  :math:`k = N - 1` (LayerNorm, Cochran's theorem), and with :math:`c = N\epsilon/q`

  .. math:: E\Bigl[\frac{X}{X + c}\Bigr] = 1 - c\,F(c), \qquad
            F(c) = E\Bigl[\frac{1}{X + c}\Bigr] = \tfrac12 (c/2)^{k/2 - 1} e^{c/2}\,\Gamma(1 - k/2, c/2),

  the upper incomplete gamma function (from :math:`\int_0^\infty x^{s-1} e^{-x/2}/(x + c)\,dx
  = c^{s-1}\Gamma(s) e^{c/2}\Gamma(1-s, c/2)`, Gradshteyn & Ryzhik 3.383.10); exact
  (``gaussian-exact`` behind a dense layer), each step checked against quadrature of the
  :math:`\chi^2_k` density;
* otherwise :math:`m` concentrates at its mean as :math:`N \to \infty`:
  :math:`E[y^2] \to v/(v + \epsilon)`, :math:`v = E[x^2]` (RMSNorm) or :math:`E[x^2] - E[x]^2`
  (LayerNorm): ``asymptotic``.

Backward. The Jacobian is :math:`J = (I - y y^\top/N)/\sigma` (RMSNorm) and
:math:`J = (I - \mathbf 1\mathbf 1^\top/N - y y^\top/N)/\sigma` (LayerNorm; Ba et al. 2016), both
symmetric. When the gradient :math:`\delta` arriving from above is independent of the forward pass
below and isotropic, :math:`E[\delta\delta^\top] = d\,I` (the loss direction, or it through iid
zero-mean weights), :math:`E[|J\delta|^2 \mid \text{forward}] = d \operatorname{tr}(J^2)
= d\,(k - 2r + r^2)/\sigma^2` with :math:`r = m/(m+\epsilon)`, that is

.. math:: E[\Delta x^2] = \frac dN\, E\Bigl[\frac{k - 1}{m + \epsilon} + \frac{\epsilon^2}{(m + \epsilon)^3}\Bigr]
          = \frac dq \Bigl[(k - 1) F(c) + \frac{c^2}{2} F''(c)\Bigr]

for iid Gaussian entries, since :math:`E[(X + c)^{-3}] = F''(c)/2`; at :math:`\epsilon = 0`,
:math:`E[\Delta x^2] = \frac dq \frac{k-1}{k-2}` (:math:`E[1/X] = 1/(k-2)`, infinite for
:math:`k \le 2`). Otherwise (a gradient that depends on the forward pass, or a non-Gaussian input)
the mean-field value :math:`\frac dN[(k-1)/(v + \epsilon) + \epsilon^2/(v + \epsilon)^3] \to d/(v +
\epsilon)`, ``asymptotic``. The affine parameters are at their initial values (gain 1, bias 0), so
they change neither pass.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import sympy as sp

from ..errors import DerivationError
from ..network import GaussianInput, LayerNorm, RMSNorm
from .derivation import (
    Check,
    Code,
    Expect,
    Rule,
    Step,
    _apply,
    _is_zero,
    prose,
    to_text,
)
from .propagate import (
    Quantity,
    _entry,
    _Gradient,
    _Signal,
    _Walk,
    _zero_mean_gradient,
    backward_rule,
    cross_rule,
    forward_rule,
)

__all__ = ["ChiSquare", "SumIdentity", "TraceCheck", "chi_square_inverse"]

_WIDTH = sp.IndexedBase("N")  # N_p: the width the normaliser at position p acts on
_EPS = sp.IndexedBase("epsilon")
_M = sp.IndexedBase("m")  # per-network mean square (RMSNorm) or variance over the units (LayerNorm) of the input
_XBAR = sp.IndexedBase("xbar")
_CPAR = sp.IndexedBase("c")  # c_p = N_p epsilon_p / q
_I, _J = sp.symbols("i j", integer=True)
#: The chi-square variable, its degrees of freedom, and the shift c of F(c) = E[1/(X + c)].
CHI = sp.Symbol("X", positive=True)
DOF = sp.Symbol("k", positive=True)
SHIFT = sp.Symbol("c", positive=True)
BA = "Ba et al. 2016, eq. (4)"
ZHANG = "Zhang & Sennrich 2019, eq. (4)"
GR = "Gradshteyn & Ryzhik 3.383.10"


def chi_square_inverse(dof: sp.Expr, shift: sp.Expr) -> sp.Expr:
    r""":math:`F(c) = E[1/(X + c)]` for :math:`X \sim \chi^2_k`, :math:`c > 0`: the incomplete-gamma closed form.

    .. math:: F(c) = \tfrac12 (c/2)^{k/2 - 1} e^{c/2}\,\Gamma(1 - k/2, c/2)
    """
    s = dof / 2
    return sp.Rational(1, 2) * (shift / 2) ** (s - 1) * sp.exp(shift / 2) * sp.uppergamma(1 - s, shift / 2)


_DOF = sp.Symbol("k", positive=True)


@lru_cache(maxsize=1)
def _inverse_and_second_derivative() -> tuple[sp.Expr, sp.Expr]:
    """:func:`chi_square_inverse` and its second derivative in the shift, for a symbolic number of degrees of
    freedom (differentiated once; at a concrete odd k sympy would first expand the incomplete gamma function
    into erfc terms, seconds per width)."""
    F = chi_square_inverse(_DOF, SHIFT)
    return F, sp.diff(F, SHIFT, 2)


# --- checks ------------------------------------------------------------------------------------


def _constants(expr: sp.Expr) -> sp.Expr:
    """``E[a] -> a`` for a non-random ``a`` (a number), after the sums have been done."""
    return expr.replace(lambda e: isinstance(e, Expect) and e.args[0].is_number, lambda e: e.args[0])


@dataclass(frozen=True)
class SumIdentity(Check):
    r"""An identity over the units of a layer: the earlier steps' equations substituted, the sums done
    (``Sum.doit``), the expectation of a constant replaced by the constant, then ``simplify`` to 0."""

    kind: ClassVar[str] = "identity"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        facts = tuple((steps[i].lhs, steps[i].rhs) for i in step.uses)
        used = ", ".join(f"({i + 1})" for i in step.uses) or "no earlier step"
        holds, how = _identity(step.lhs - step.rhs, facts)
        return holds, (f"lhs - rhs simplifies to 0 using {used}{how}" if holds else
                       f"lhs - rhs = {how} using {used}")


@lru_cache(maxsize=512)
def _identity(difference: sp.Expr, facts: tuple[tuple[sp.Expr, sp.Expr], ...]) -> tuple[bool, str]:
    """Whether ``difference`` is 0 once ``facts`` are substituted and the sums done: ``(True, how)`` or
    ``(False, the difference left)``. Cached: the per-network identities keep the width and epsilon as
    symbols, so every width of a claim family (and every claim through the same layer) asks the same
    question, and sympy's symbolic summation is the slow part of a normaliser's derivation."""
    facts = dict(facts)
    # Structural replacement first (the value was built from these facts), sympy's subs only if needed.
    # Linearity of the finite sums first (fast, and enough when the identity is rational in the sums);
    # sympy's own summation (slow: it looks for closed forms) only if that does not settle it.
    linear = _constants(_linear_sums(_apply(difference, facts, structural=True)))
    if _is_zero(linear, quick=True) or sp.cancel(sp.together(sp.expand(linear))) == 0:
        return True, " (linearity of the sums over the units)"
    quick = _constants(_apply(difference, facts, structural=True).doit())
    if _is_zero(quick, quick=True):
        return True, ""
    full = _constants(sp.expand(_apply(difference, facts)).doit())
    if _sums_vanish(full):
        return True, " (sums over the units done by sympy)"
    return False, to_text(full)


def _linear_sums(expr: sp.Expr) -> sp.Expr:
    r"""Every finite sum over units split by linearity: :math:`\sum_i (a f_i + b g_i) = a\sum_i f_i + b\sum_i g_i`
    for :math:`a, b` free of :math:`i`, and :math:`\sum_{i=1}^N a = N a`; what is left inside a sum depends on
    :math:`i`."""

    def split(total: sp.Sum) -> sp.Expr:
        index, low, high = total.limits[0]
        result = sp.Integer(0)
        for term in sp.Add.make_args(sp.expand(total.function)):
            inside, outside = [], []
            for factor in sp.Mul.make_args(term):
                (inside if index in factor.free_symbols else outside).append(factor)
            count = sp.Sum(sp.Mul(*inside), (index, low, high)) if inside else high - low + 1
            result += sp.Mul(*outside) * count
        return result

    return expr.replace(lambda e: isinstance(e, sp.Sum) and len(e.limits) == 1, split)


def _sums_vanish(difference: sp.Expr) -> bool:
    """``simplify`` proves ``difference`` is 0."""
    if difference == 0 or sp.cancel(sp.together(difference)) == 0:  # a rational function of the sums: fast
        return True
    # Expectations of the same rational function written two ways: bring each argument to one canonical
    # form (numerator and denominator expanded, common factors cancelled) first.
    canonical = difference.replace(lambda e: isinstance(e, Expect), lambda e: Expect(sp.cancel(sp.together(e.args[0]))))
    if canonical == 0 or sp.cancel(sp.together(canonical)) == 0:
        return True
    return _is_zero(difference) or _is_zero(sp.factor_terms(sp.simplify(difference)))


def _test_values(unknown: Sequence[sp.Expr]) -> dict[sp.Expr, sp.Expr]:
    """Values for what is left unknown in a check: 9 for integers (widths), 7/10 for the others."""
    return {a: (sp.Integer(9) if getattr(a, "is_integer", False) else sp.Rational(7, 10)) for a in unknown}


@dataclass(frozen=True)
class ChiSquare(Check):
    r""":math:`E[g(X)]`, :math:`X \sim \chi^2_k`, re-computed by quadrature of the :math:`\chi^2_k` density.

    ``integrand`` is :math:`g` in :data:`CHI`; ``dof`` is k. The earlier steps in ``uses`` are
    substituted; symbols still free (a symbolic width) get test values. The step's right side,
    evaluated at 30 digits, must agree with ``scipy.integrate.quad`` (in the variable
    :math:`\log X`, independent of the closed form) within 1e-8 relative.
    """

    integrand: sp.Expr
    dof: sp.Expr
    kind: ClassVar[str] = "integral"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        from scipy import integrate, special

        facts = {steps[i].lhs: steps[i].rhs for i in step.uses}
        integrand, dof, rhs = (_apply(e, facts) for e in (self.integrand, self.dof, step.rhs))
        unknown = [a for e in (integrand, dof, rhs) for a in (e.atoms(Expect) | e.free_symbols) if a != CHI]
        point = _test_values(unknown)
        integrand, dof, rhs = (e.xreplace(point) for e in (integrand, dof, rhs))
        k = float(dof)
        g = sp.lambdify(CHI, integrand, modules="numpy")
        log_norm = -(k / 2) * math.log(2) - special.gammaln(k / 2)

        def density_log(u: float) -> float:  # E[g(X)] = int g(e^u) p(e^u) e^u du
            x = math.exp(u)
            return float(g(x)) * math.exp(log_norm + (k / 2) * u - x / 2)

        # Breakpoints in log X: far below the bulk, its start, the mean k, and far beyond it (40 sd).
        cuts = sorted({-700.0, -5.0, 0.0, math.log(max(k, 2.0)), math.log(k + 40 * math.sqrt(2 * k) + 50)})
        pieces = [integrate.quad(density_log, a, b, epsabs=0, epsrel=1e-12, limit=200) for a, b in itertools.pairwise(cuts)]
        value = sum(p[0] for p in pieces)
        stated = float(sp.N(rhs, 30))
        ok = abs(value - stated) <= 1e-8 * max(1.0, abs(value))
        where = f" at {', '.join(f'{s} = {v}' for s, v in point.items())}" if point else ""
        detail = f"quadrature of E[{to_text(self.integrand)}] over the chi-square({to_text(dof)}) density gives {value:.15g}{where}"
        return ok, detail + ("" if ok else f", the step states {stated:.15g}")


def _jacobian_trace(width: int, centred: bool, eps: sp.Rational, values: Sequence[int]) -> tuple[sp.Expr, sp.Expr]:
    """(tr(J J^T), the formula (k - 2r + r^2)/sigma^2) at one input vector, in exact arithmetic."""
    x = sp.Matrix([sp.Integer(v) for v in values])
    ones = sp.ones(width, 1)
    mean = sum(x) / width if centred else 0
    c = x - mean * ones
    m = (c.T * c)[0] / width
    sigma = sp.sqrt(m + eps)
    y = c / sigma
    projector = sp.eye(width) - (ones * ones.T / width if centred else sp.zeros(width))
    jacobian = (projector - y * y.T / width) / sigma
    r = m / (m + eps)
    k = width - 1 if centred else width
    return sp.nsimplify((jacobian * jacobian.T).trace()), (k - 2 * r + r**2) / (m + eps)


@dataclass(frozen=True)
class TraceCheck(Check):
    r""":math:`\operatorname{tr}(J J^\top) = (k - 2r + r^2)/\sigma^2` for the normaliser's Jacobian, in exact arithmetic.

    The Jacobian is built by sympy from the layer's definition (``centred``: LayerNorm) at integer
    input vectors of widths 2 to 6 and :math:`\epsilon \in \{0, 1/3\}`, and its trace compared with
    the formula; what the step adds (the expectation over an isotropic gradient independent of the
    forward pass) is its stated assumption.
    """

    centred: bool
    kind: ClassVar[str] = "identity"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        return _trace_identity(self.centred)


@lru_cache(maxsize=2)
def _trace_identity(centred: bool) -> tuple[bool, str]:
    """:class:`TraceCheck`'s verdict, once per normaliser kind (it does not depend on the step's widths)."""
    for width in range(2, 7):
        values = [(3 * j * j + 5 * j + 2) % 7 - 3 for j in range(width)]
        if len(set(values)) == 1:
            values[0] += 1
        for eps in (sp.Integer(0), sp.Rational(1, 3)):
            trace, formula = _jacobian_trace(width, centred, eps, values)
            if not _is_zero(sp.nsimplify(trace - formula)):
                return False, f"tr(J J^T) = {trace} but the formula gives {formula} at width {width}, eps = {eps}"
    return True, "tr(J J^T) of the Jacobian built by sympy equals (k - 2r + r^2)/sigma^2 at widths 2-6, eps 0 and 1/3"


# --- what the walk knows of the input ------------------------------------------------------------


def _base(walk: _Walk, base: sp.IndexedBase) -> sp.IndexedBase:
    """``base``, primed while the walk follows the partner input (its own per-network quantities)."""
    return sp.IndexedBase(f"{base.name}'") if walk.prime else base


def _iid_gaussian(walk: _Walk, signal: _Signal) -> str | None:
    """The exactness class when the signal has iid centred Gaussian entries, else ``None``."""
    if signal.position == -1 and isinstance(walk.network.inputs, GaussianInput):
        return "exact"
    if signal.gaussian and signal.mean.value == 0:
        return "gaussian-exact"
    return None


@dataclass(frozen=True)
class _Parts:
    """The per-layer definitions shared by the forward and backward rules."""

    width: int
    eps: int
    m: int
    y: int
    centred: bool
    dof: sp.Expr


def _definitions(layer: LayerNorm | RMSNorm, walk: _Walk, signal: _Signal, position: int) -> _Parts:
    name = walk.network.place_name(position)
    p = position
    N = _WIDTH[p]
    centred = isinstance(layer, LayerNorm)
    kind = "LayerNorm" if centred else "RMSNorm"
    X_in = signal.symbol
    # The sums defining the per-network mean and mean square run over the same dummy index as the
    # output's sums, so that sympy recognises them inside those sums.
    xi = _entry(X_in, _I)
    out_i = _entry(walk.signal_symbol(position), _I)
    i_n = walk.define(N, layer.width, f"width of {name}")
    i_eps = walk.define(_EPS[p], layer.eps, prose(f"epsilon of {name}"))
    sigma = sp.sqrt(_base(walk, _M)[p] + _EPS[p])
    if centred:
        i_bar = walk.define(_base(walk, _XBAR)[p], sp.Sum(xi, (_I, 1, N)) / N, "the mean of the layer input over its units")
        i_m = walk.define(_base(walk, _M)[p], sp.Sum((xi - _base(walk, _XBAR)[p]) ** 2, (_I, 1, N)) / N,
                          "the (biased) variance of the layer input over its units, per network", uses=(i_bar,))
        i_y = walk.define(out_i, (xi - _base(walk, _XBAR)[p]) / sigma,
                          prose(Code(kind), ": centred, divided by ", sp.sqrt(_base(walk, _M)[p] + _EPS[p]),
                                "; gain 1 and bias 0 at initialisation"), source=BA)
    else:
        i_m = walk.define(_base(walk, _M)[p], sp.Sum(xi**2, (_I, 1, N)) / N, "the mean square of the layer input over its units, "
                          "per network")
        i_y = walk.define(out_i, xi / sigma,
                          prose(Code(kind), ": divided by ", sp.sqrt(_base(walk, _M)[p] + _EPS[p]), "; gain 1 at initialisation"),
                          source=ZHANG)
    dof = (layer.width - 1) if centred else layer.width
    return _Parts(i_n, i_eps, i_m, i_y, centred, sp.sympify(dof))


# --- forward -------------------------------------------------------------------------------------


def _forward(layer: LayerNorm | RMSNorm, walk: _Walk, signal: _Signal, position: int) -> _Signal:
    builder = walk.builder
    parts = _definitions(layer, walk, signal, position)
    p, N = position, _WIDTH[position]
    out = walk.signal_symbol(position)
    yi = _entry(out, _I)
    ratio = _base(walk, _M)[p] / (_base(walk, _M)[p] + _EPS[p])
    eps = layer.eps
    # The identity holds for every width and epsilon: N and epsilon stay symbols here (fast, and general).
    uses_defs = (parts.y, parts.m)  # LayerNorm: the mean xbar stays a symbol (the identity holds for any centring)
    mean_square = sp.Sum(yi**2, (_I, 1, N)) / N
    per_network = builder.add(mean_square, ratio, Rule.ALGEBRA,
                              prose("the mean square of the output, for every network: ", sp.Sum(yi**2, (_I, 1, N)),
                                    " = ", N * ratio),
                              proof=SumIdentity(), uses=uses_defs)
    i_second = walk.define(Expect(out**2), Expect(mean_square),
                           "a layer's second moment is the expected mean square over its units (what is sampled)")
    general = builder.add(Expect(out**2), Expect(ratio), Rule.SUBSTITUTION, "substitute the per-network mean square",
                          proof=SumIdentity(), uses=(i_second, per_network))
    zero_input = prose("the layer input is not identically zero" if not parts.centred else
                       "the layer input is not constant over its units",
                       " (else 0/0: the sampler excludes such a network)")
    q_sym = signal.second.symbol
    if eps == 0:
        value = sp.Integer(1)
        second_step = builder.add(Expect(out**2), value, Rule.SUBSTITUTION,
                                  prose(sp.Eq(_EPS[p], 0, evaluate=False), ": the mean square is 1 for every network"),
                                  proof=SumIdentity(), uses=(general, parts.eps), assumptions=(zero_input,))
    elif signal.deterministic:
        v_value = signal.second.value - (signal.mean.value**2 if parts.centred else 0)
        v_sym = signal.second.symbol - (signal.mean.symbol**2 if parts.centred else 0)
        fixed = builder.model(_base(walk, _M)[p], v_sym, Rule.DEFINITION,
                              prose("the input is a fixed vector: ", _base(walk, _M)[p], " is its (known) ",
                                    "variance over the units" if parts.centred else "mean square"))
        value = v_value / (v_value + eps)
        second_step = builder.add(Expect(out**2), value, Rule.SUBSTITUTION, "substitute the fixed input's moments",
                                  proof=SumIdentity(),
                                  uses=(general, fixed, parts.eps, signal.second.step, signal.mean.step))
    else:
        exactness = _iid_gaussian(walk, signal)
        if exactness is not None:
            value, second_step = _chi_square_forward(layer, walk, parts, signal, general, exactness, p)
        else:
            mean_sym = signal.mean.symbol
            v_sym = q_sym - (mean_sym**2 if parts.centred else 0)
            plug = builder.model(
                Expect(ratio), v_sym / (v_sym + _EPS[p]), Rule.INDEPENDENCE,
                prose(_base(walk, _M)[p], " concentrates at its mean ", v_sym, " as the width grows (law of large numbers over "
                      "the units), and ", ratio, " is bounded"),
                assumptions=("wide layers: the per-network mean square concentrates",), exactness="asymptotic")
            v_value = signal.second.value - (signal.mean.value**2 if parts.centred else 0)
            value = v_value / (v_value + eps)
            second_step = builder.add(Expect(out**2), value, Rule.SUBSTITUTION, "substitute the moments of the input",
                                      proof=SumIdentity(),
                                      uses=(general, plug, parts.eps, signal.second.step, signal.mean.step))
    mean_quantity = _forward_mean(layer, walk, signal, position, parts)
    return _Signal(
        position, out, signal.width,
        mean_quantity,
        Quantity(Expect(out**2), value, second_step),
        deterministic=signal.deterministic,
        symmetric=signal.symmetric,
        homogeneous=False,
        p_nonzero=signal.p_nonzero,
        p_exact=signal.p_exact,
    )


def _chi_square_forward(layer: LayerNorm | RMSNorm, walk: _Walk, parts: _Parts, signal: _Signal, general: int,
                        exactness: str, p: int) -> tuple[sp.Expr, int]:
    """E[y^2] = E[X/(X + c)] for iid Gaussian input entries: the incomplete-gamma closed form."""
    builder = walk.builder
    N, q_sym, k = _WIDTH[p], signal.second.symbol, parts.dof
    ratio = _base(walk, _M)[p] / (_base(walk, _M)[p] + _EPS[p])
    i_c = walk.define(_base(walk, _CPAR)[p], N * _EPS[p] / q_sym, "the scaled epsilon")
    law = prose(sp.Eq(_base(walk, _M)[p], q_sym / N * CHI, evaluate=False), " with ", CHI,
                f" chi-square with {to_text(k)} degrees of freedom")
    why = ("the layer input's entries are iid centred Gaussian" + (
        "; Cochran's theorem: the centred sum of squares has one degree of freedom fewer" if parts.centred else ""))
    modelled = builder.model(Expect(ratio), Expect(CHI / (CHI + _base(walk, _CPAR)[p])), Rule.IDENTICAL_DISTRIBUTION,
                             prose(law, ", so ", sp.Eq(ratio, CHI / (CHI + _base(walk, _CPAR)[p]), evaluate=False)),
                             assumptions=(why,), exactness=exactness, uses=(i_c,))
    closed = 1 - _base(walk, _CPAR)[p] * chi_square_inverse(k, _base(walk, _CPAR)[p])
    integral = builder.add(Expect(CHI / (CHI + _base(walk, _CPAR)[p])), closed, Rule.GAUSSIAN_INTEGRAL,
                           "the chi-square integral in closed form (upper incomplete gamma function)",
                           proof=ChiSquare(CHI / (CHI + _base(walk, _CPAR)[p]), k),
                           uses=(i_c, parts.eps, parts.width, signal.second.step), source=GR)
    q_value, q_uses = walk.plain(signal.second)
    c_value = layer.width * layer.eps / q_value
    value = closed.xreplace({_base(walk, _CPAR)[p]: c_value})
    step = builder.add(Expect(walk.signal_symbol(p) ** 2), value, Rule.SUBSTITUTION,
                       "substitute the width, epsilon and the input's second moment",
                       proof=SumIdentity(),
                       uses=(general, modelled, integral, i_c, parts.eps, parts.width, *q_uses))
    return value, step


def _forward_mean(layer: LayerNorm | RMSNorm, walk: _Walk, signal: _Signal, position: int,
                  parts: _Parts) -> Quantity:
    builder = walk.builder
    p, N = position, _WIDTH[position]
    out = walk.signal_symbol(position)
    yi = _entry(out, _I)
    mean_units = sp.Sum(yi, (_I, 1, N)) / N
    i_mean = walk.define(Expect(out), Expect(mean_units),
                         "a layer's mean is the expected mean over its units (what is sampled)")
    if parts.centred:
        zero = builder.add(mean_units, sp.Integer(0), Rule.ALGEBRA,
                           "the output is centred over the units, for every network",
                           proof=SumIdentity(), uses=(parts.y, walk.definitions[_base(walk, _XBAR)[p]]))
        step = builder.add(Expect(out), sp.Integer(0), Rule.SUBSTITUTION, "substitute", proof=SumIdentity(),
                           uses=(i_mean, zero))
        return Quantity(Expect(out), sp.Integer(0), step)
    if signal.symmetric:
        step = builder.model(Expect(out), sp.Integer(0), Rule.SYMMETRY,
                             prose("the law of the input is invariant under ", sp.Symbol("x"), " -> ", -sp.Symbol("x"),
                                   ", which flips the sign of the output"),
                             assumptions=("the layer input is symmetric about 0 (symmetric weight law)",),
                             uses=(i_mean,))
        return Quantity(Expect(out), sp.Integer(0), step)
    second = signal.second.symbol
    step_model = builder.model(
        Expect(out), signal.mean.symbol / sp.sqrt(second + _EPS[p]), Rule.INDEPENDENCE,
        prose(_base(walk, _M)[p], " concentrates at ", second, " as the width grows"),
        assumptions=("wide layers: the per-network mean square concentrates",), exactness="asymptotic",
        uses=(i_mean,))
    value = signal.mean.value / sp.sqrt(signal.second.value + layer.eps)
    step = builder.add(Expect(out), value, Rule.SUBSTITUTION, "substitute the moments of the input",
                       proof=SumIdentity(), uses=(step_model, parts.eps, signal.mean.step, signal.second.step))
    return Quantity(Expect(out), value, step)


# --- backward ------------------------------------------------------------------------------------

A_ISOTROPIC = ("the gradient arriving from above is independent of the forward pass below it and isotropic, "
               "E[delta delta^T] = d I (the loss direction g, or g through iid zero-mean weights)")


def _backward(layer: LayerNorm | RMSNorm, walk: _Walk, gradient: _Gradient, below: _Signal, position: int) -> _Gradient:
    builder = walk.builder
    p, N = position, _WIDTH[position]
    parts = _Parts(walk.definitions[N], walk.definitions[_EPS[p]], walk.definitions[_M[p]],
                   walk.definitions[_entry(walk.signal_symbol(p), _I)], isinstance(layer, LayerNorm),
                   sp.sympify(layer.width - 1 if isinstance(layer, LayerNorm) else layer.width))
    M, eps_p = _M[p], _EPS[p]
    out_i, out_j = _entry(walk.signal_symbol(p), _I), _entry(walk.signal_symbol(p), _J)
    D_out, D_in = gradient.symbol, walk.gradient_symbol(p - 1)
    d_i, d_j = _entry(D_out, _I), _entry(D_out, _J)
    sigma = sp.sqrt(M + eps_p)
    projected = d_i - (sp.Sum(d_j, (_J, 1, N)) / N if parts.centred else 0)
    chain = walk.define(_entry(D_in, _I), (projected - out_i * sp.Sum(out_j * d_j, (_J, 1, N)) / N) / sigma,
                        prose("chain rule through the normaliser: its Jacobian is ",
                              (sp.Symbol("I") - (sp.Symbol("1 1^T") / N if parts.centred else 0)
                               - sp.Symbol("y y^T") / N) / sigma),
                        rule=Rule.CHAIN_RULE, source=BA if parts.centred else ZHANG)
    k = parts.dof
    r = M / (M + eps_p)
    exact = gradient.independent
    traced = builder.add(
        Expect(D_in**2), Expect(D_out**2) * Expect((k - 2 * r + r**2) / (N * (M + eps_p))), Rule.INDEPENDENCE,
        prose("given the forward pass, ", sp.Eq(Expect(sp.Symbol("|J delta|^2")), sp.Symbol("d tr(J^2)"), evaluate=False),
              " for an isotropic ", sp.Symbol("delta"), ", and ", sp.Symbol("tr(J^2)"), " = ",
              (k - 2 * sp.Symbol("r") + sp.Symbol("r") ** 2) / (M + eps_p), " with ", sp.Eq(sp.Symbol("r"), r, evaluate=False)),
        proof=TraceCheck(parts.centred), uses=(chain,),
        assumptions=(A_ISOTROPIC if exact else
                     "the gradient arriving from above is treated as independent of the forward pass and isotropic "
                     "(He et al.'s assumption)",),
        exactness="exact" if exact else "asymptotic")
    simpler = ((k - 1) / (M + eps_p) + eps_p**2 / (M + eps_p) ** 3) / N
    reduced = builder.add(Expect(D_in**2), Expect(D_out**2) * Expect(simpler), Rule.ALGEBRA,
                          prose("with ", sp.Eq(sp.Symbol("r"), r, evaluate=False)), proof=SumIdentity(), uses=(traced,))
    d_value, d_uses = walk.plain(gradient.second)
    eps = layer.eps
    exactness = _iid_gaussian(walk, below) if not below.deterministic else "exact"
    if below.deterministic:
        v_value = below.second.value - (below.mean.value**2 if parts.centred else 0)
        fixed = builder.model(M, below.second.symbol - (below.mean.symbol**2 if parts.centred else 0), Rule.DEFINITION,
                              "the layer input is a fixed vector: its mean square and variance are known")
        value = d_value * simpler.xreplace({M: v_value, N: layer.width, eps_p: eps})
        uses: tuple[int, ...] = (reduced, fixed, parts.width, parts.eps, below.second.step, below.mean.step, *d_uses)
    elif exactness is not None:
        value, uses = _chi_square_backward(layer, walk, parts, below, reduced, exactness, d_value, d_uses, p)
    else:
        v_sym = below.second.symbol - (below.mean.symbol**2 if parts.centred else 0)
        plug = builder.model(Expect(simpler), simpler.xreplace({M: v_sym}), Rule.INDEPENDENCE,
                             prose(M, " concentrates at its mean ", v_sym, " as the width grows"),
                             assumptions=("wide layers: the per-network mean square concentrates",),
                             exactness="asymptotic")
        v_value = below.second.value - (below.mean.value**2 if parts.centred else 0)
        value = d_value * simpler.xreplace({M: v_value, N: layer.width, eps_p: eps})
        uses = (reduced, plug, parts.width, parts.eps, below.second.step, below.mean.step, *d_uses)
    if value.has(sp.zoo, sp.oo, sp.nan):
        raise DerivationError(f"the gradient's second moment below {walk.network.place_name(p)} is infinite")
    step = builder.add(Expect(D_in**2), value, Rule.SUBSTITUTION, "substitute", proof=SumIdentity(), uses=uses)
    return _Gradient(p - 1, D_in, _zero_mean_gradient(walk, D_in), Quantity(Expect(D_in**2), value, step),
                     independent=False)


def _chi_square_backward(layer: LayerNorm | RMSNorm, walk: _Walk, parts: _Parts, below: _Signal, reduced: int,
                         exactness: str, d_value: sp.Expr, d_uses: tuple[int, ...], p: int) -> tuple[sp.Expr, tuple]:
    builder = walk.builder
    N, M, eps_p, k = _WIDTH[p], _M[p], _EPS[p], parts.dof
    q_sym = below.second.symbol
    name = walk.network.place_name(p)
    simpler = ((k - 1) / (M + eps_p) + eps_p**2 / (M + eps_p) ** 3) / N
    q_value, q_uses = walk.plain(below.second)
    why = ("the layer input's entries are iid centred Gaussian" + (
        "; Cochran's theorem: the centred sum of squares has one degree of freedom fewer" if parts.centred else ""))
    if layer.eps == 0:
        if k <= 2:
            raise DerivationError(
                f"the gradient's second moment below {name} is infinite: with eps = 0 it is proportional to E[1/X], "
                f"X chi-square with {k} degrees of freedom, which diverges for k <= 2 (give eps > 0 or a wider layer)")
        integrand = (k - 1) / (q_sym * CHI)
        closed = (k - 1) / (q_sym * (k - 2))
    else:
        walk.define(_CPAR[p], N * eps_p / q_sym, "the scaled epsilon")
        c = _CPAR[p]
        integrand = ((k - 1) / (CHI + c) + c**2 / (CHI + c) ** 3) / q_sym
        F, F2 = _inverse_and_second_derivative()
        closed = ((k - 1) * F + SHIFT**2 * F2 / 2).subs(_DOF, k).xreplace({SHIFT: c}) / q_sym
    law = prose(sp.Eq(M, q_sym / N * CHI, evaluate=False), " with ", CHI, f" chi-square with {to_text(k)} degrees of "
                "freedom, so ", sp.Eq(simpler, integrand, evaluate=False))
    extra = () if layer.eps == 0 else (walk.definitions[_CPAR[p]],)
    modelled = builder.model(Expect(simpler), Expect(integrand), Rule.IDENTICAL_DISTRIBUTION, law,
                             assumptions=(why,), exactness=exactness, uses=extra)
    integral = builder.add(Expect(integrand), closed, Rule.GAUSSIAN_INTEGRAL,
                           "E[1/X] = 1/(k - 2)" if layer.eps == 0 else
                           prose("E[1/(X + c)] = F(c) (upper incomplete gamma function) and ",
                                 sp.Eq(Expect(1 / (CHI + SHIFT) ** 3), sp.Symbol("F''(c)") / 2, evaluate=False)),
                           proof=ChiSquare(integrand, k),
                           uses=(*extra, parts.eps, parts.width, below.second.step), source="" if layer.eps == 0 else GR)
    values = {q_sym: q_value}
    if layer.eps != 0:
        values[_CPAR[p]] = layer.width * layer.eps / q_value
    value = d_value * closed.xreplace(values)
    return value, (reduced, modelled, integral, *extra, parts.eps, parts.width, below.second.step, *q_uses, *d_uses)


# --- a pair of inputs ------------------------------------------------------------------------------


def _cross(layer: LayerNorm | RMSNorm, walk: _Walk, cross: Quantity, position: int) -> Quantity:
    r""":math:`E[y y'] \approx E[\tilde x \tilde x']/\sqrt{(v + \epsilon)(v' + \epsilon)}` (centred for LayerNorm)."""
    builder = walk.builder
    p = position
    signal, partner = walk.signals[p - 1], walk.partners[p - 1]
    out, out_pair = walk.signals[p].symbol, walk.partners[p].symbol
    centred = isinstance(layer, LayerNorm)
    eps_p = _EPS[p]

    def spread(state: _Signal) -> tuple[sp.Expr, sp.Expr]:
        return (state.second.symbol - (state.mean.symbol**2 if centred else 0),
                state.second.value - (state.mean.value**2 if centred else 0))

    (v1, v1_value), (v2, v2_value) = spread(signal), spread(partner)
    shared = cross.symbol - (signal.mean.symbol * partner.mean.symbol if centred else 0)
    shared_value = cross.value - (signal.mean.value * partner.mean.value if centred else 0)
    exact = signal.deterministic and partner.deterministic
    general = builder.model(
        Expect(out * out_pair), shared / sp.sqrt((v1 + eps_p) * (v2 + eps_p)), Rule.INDEPENDENCE,
        ("both inputs are fixed vectors: every quantity is known" if exact else
         prose("the per-network mean squares and cross moment concentrate at their means as the width grows")),
        assumptions=(() if exact else ("wide layers: per-network moments concentrate",)),
        exactness="exact" if exact else "asymptotic")
    value = shared_value / sp.sqrt((v1_value + layer.eps) * (v2_value + layer.eps))
    uses = (general, walk.definitions[eps_p], cross.step, signal.second.step, partner.second.step, signal.mean.step,
            partner.mean.step)
    step = builder.add(Expect(out * out_pair), value, Rule.SUBSTITUTION, "substitute the moments of both inputs",
                       proof=SumIdentity(), uses=uses)
    return Quantity(Expect(out * out_pair), value, step)


for _cls in (LayerNorm, RMSNorm):
    forward_rule.register(_cls)(_forward)
    backward_rule.register(_cls)(_backward)
    cross_rule.register(_cls)(_cross)
