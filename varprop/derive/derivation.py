r"""Derivations as data: ordered, sympy-checked steps with their rule, assumptions and source.

A :class:`Step` is an equation ``lhs = rhs`` (sympy), the :class:`Rule` that justifies it, the
assumptions it uses, the paper and equation it comes from, and how it was checked:

``definition``
    the left side is defined as the right side (a value read from the network description, the
    activation, the chain rule).
``identity``
    sympy simplified ``lhs - rhs`` to zero once the equations of the earlier steps it cites
    (``Step.uses``) were substituted; the builder refuses a step that fails this check, and one whose
    cited fact is the step itself.
``lemma``
    a pointwise identity of the activation (e.g. :math:`\mathrm{relu}(y)^2 + \mathrm{relu}(-y)^2 = y^2`)
    proved by sympy for :math:`y > 0` and :math:`y < 0`.
``integral``
    computed by the Gaussian expectation engine (its route is named in the justification), or a
    number standing for a quadrature, re-evaluated within its error estimate.
``unrolled``
    a product formula checked against the recursion unrolled for several depths.
``solve``
    the unique solution of a stored equation, found again by ``sympy.solve``.
``modelling``
    a statement that follows from the stated assumptions (independence, identical distribution), not
    from algebra; it is shown as such, never passed off as checked.

Every step also carries an exactness class (``exact`` > ``gaussian-exact`` > ``asymptotic`` >
``approximation``); a derivation's is its weakest step's. :meth:`Derivation.verify` re-runs every
check from the stored data.

A :class:`Derivation` renders through sympy's own printers to LaTeX (an ``align`` environment with
one tagged line per step), Markdown and plain text.
"""

from __future__ import annotations

import abc
import enum
import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

import sympy as sp
from mpmath.libmp import prec_to_dps
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter

from ..errors import DerivationError

__all__ = [
    "Expect",
    "Variance",
    "NormalLaw",
    "BinomialLaw",
    "Phi",
    "DPhi",
    "Rule",
    "EXACTNESS",
    "weakest",
    "Check",
    "CheckReport",
    "Definition",
    "Modelling",
    "Identity",
    "Lemma",
    "LEMMA_CONSTANT",
    "Integral",
    "Numeric",
    "BivariateIntegral",
    "Unrolled",
    "Limit",
    "Solve",
    "CHECKS",
    "Step",
    "Derivation",
    "closure",
    "to_text",
    "to_latex",
    "tidy",
    "Prose",
    "Code",
    "prose",
    "prose_text",
    "prose_latex",
    "prose_markdown",
    "citation",
]


class _Bracket(sp.Function):
    """An unevaluated operator printed as ``NAME[arg]`` (text) and ``TEX\\left[arg\\right]`` (LaTeX)."""

    nargs = 1
    _text = ""
    _tex = ""

    def _latex(self, printer: LatexPrinter, exp: object = None) -> str:
        tex = r"%s\left[%s\right]" % (self._tex, printer._print(self.args[0]))
        return tex if exp is None else r"%s^{%s}" % (tex, exp)

    def _sympystr(self, printer: StrPrinter) -> str:
        return "%s[%s]" % (self._text, printer._print(self.args[0]))


class Expect(_Bracket):
    r"""The expectation :math:`E[\,\cdot\,]` of a random quantity, kept unevaluated."""

    _text, _tex = "E", r"\mathbb{E}"


class Variance(_Bracket):
    r"""The variance :math:`\operatorname{Var}[\,\cdot\,]` of a random quantity, kept unevaluated."""

    _text, _tex = "Var", r"\operatorname{Var}"


class NormalLaw(sp.Function):
    r"""``NormalLaw(z, m, v)``: :math:`z \sim \mathcal N(m, v)`, a variable and its Gaussian law, for the words of a step."""

    nargs = 3

    def _latex(self, printer: LatexPrinter, exp: object = None) -> str:
        z, m, v = (printer._print(a) for a in self.args)
        return rf"{z} \sim \mathcal{{N}}\left({m}, {v}\right)"

    def _sympystr(self, printer: StrPrinter) -> str:
        z, m, v = (printer._print(a) for a in self.args)
        return f"{z} ~ N({m}, {v})"


class BinomialLaw(sp.Function):
    r"""``BinomialLaw(k, n, p)``: :math:`k \sim \mathrm{Binomial}(n, p)`, a count and its binomial law, for the words of a step."""

    nargs = 3

    def _latex(self, printer: LatexPrinter, exp: object = None) -> str:
        k, n, p = (printer._print(a) for a in self.args)
        return rf"{k} \sim \operatorname{{Binomial}}\left({n}, {p}\right)"

    def _sympystr(self, printer: StrPrinter) -> str:
        k, n, p = (printer._print(a) for a in self.args)
        return f"{k} ~ Binomial({n}, {p})"


class _Applied(sp.Function):
    """A named function of a random quantity, printed ``name(arg)`` (text) and ``TEX\\left(arg\\right)``."""

    nargs = 1
    _text = ""
    _tex = ""

    def _latex(self, printer: LatexPrinter, exp: object = None) -> str:
        base = self._tex if exp is None else r"%s^{%s}" % (self._tex, exp)
        return r"%s\left(%s\right)" % (base, printer._print(self.args[0]))

    def _sympystr(self, printer: StrPrinter) -> str:
        return "%s(%s)" % (self._text, printer._print(self.args[0]))


class Phi(_Applied):
    r"""The activation :math:`\phi` applied to a random quantity (defined in the derivation)."""

    _text, _tex = "phi", r"\phi"


class DPhi(_Applied):
    r"""The derivative :math:`\phi'` applied to a random quantity."""

    _text, _tex = "phi'", r"\phi'"


class Rule(str, enum.Enum):
    """Why a step holds."""

    DEFINITION = "definition"
    INDEPENDENCE = "independence"
    IDENTICAL_DISTRIBUTION = "identical distribution"
    ZERO_MEAN = "zero-mean weights"
    VARIANCE_DEFINITION = "definition of variance"
    SYMMETRY = "symmetry"
    GAUSSIAN_INTEGRAL = "Gaussian integral"
    CHAIN_RULE = "chain rule"
    SUBSTITUTION = "substitution"
    ALGEBRA = "algebra"
    UNROLLING = "unrolling the recursion"
    CONDITION = "condition"
    SOLVE = "solve"
    TELESCOPING = "telescoping product"
    LINEAR_REGIME = "linear regime"
    FIXED_POINT = "fixed point"


#: Exactness classes, strongest first (DESIGN.md, "Exactness").
EXACTNESS: tuple[str, ...] = ("exact", "gaussian-exact", "asymptotic", "approximation")


def weakest(*classes: str) -> str:
    """The weakest of several exactness classes (``exact`` > ``gaussian-exact`` > ``asymptotic`` > ``approximation``)."""
    for value in classes:
        if value not in EXACTNESS:
            raise DerivationError(f"unknown exactness class {value!r}; known: {', '.join(EXACTNESS)}")
    return max(classes, key=EXACTNESS.index) if classes else "exact"


# --- checks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckReport:
    """The outcome of re-running one step's check: ``ok`` is ``None`` when there is nothing to check."""

    step: int
    kind: str
    ok: bool | None
    detail: str

    def to_dict(self) -> dict[str, object]:
        return {"step": self.step, "check": self.kind, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class Check(abc.ABC):
    """How a step is established. Subclasses store what their check needs, so it can be re-run."""

    kind: ClassVar[str] = ""

    @abc.abstractmethod
    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        """Re-run the check of ``step`` against the earlier ``steps``: (True/False, or None if nothing to check; why)."""


@dataclass(frozen=True)
class Definition(Check):
    """The left side is defined as the right side (a value read from the network description, a name)."""

    kind: ClassVar[str] = "definition"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        return None, "a definition: nothing to check"


@dataclass(frozen=True)
class Modelling(Check):
    """A statement that holds by its stated assumptions (independence, a Gaussian law), not by algebra."""

    kind: ClassVar[str] = "modelling"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        because = "; ".join(step.assumptions) or step.justification or step.rule.value
        return None, f"holds by assumption, not checked: {because}"


@dataclass(frozen=True)
class Identity(Check):
    r"""``simplify(lhs - rhs) == 0`` once the equations of the earlier steps in ``step.uses`` are substituted."""

    kind: ClassVar[str] = "identity"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        facts = {steps[i].lhs: steps[i].rhs for i in step.uses}
        # Structural replacement first (fast, and enough when the value was built from these facts);
        # sympy's subs, which also matches sub-products, only when that does not close the gap.
        difference = _apply(step.lhs - step.rhs, facts, structural=True)
        # a number left (floats from a numeric step below, summed in another order) is judged with its rounding
        if not _is_zero(difference, quick=True) and not (difference.is_number and _is_zero(difference)):
            difference = _apply(step.lhs - step.rhs, facts)
        if difference.has(sp.Product):  # a product over the depth, stated once unevaluated and once evaluated
            difference = difference.replace(lambda e: isinstance(e, sp.Product), lambda e: e.doit())
        used = ", ".join(f"({i + 1})" for i in step.uses) or "no earlier step"
        if _is_zero(difference):
            return True, f"lhs - rhs simplifies to 0 using {used}"
        return False, f"lhs - rhs = {difference} using {used}"


#: The lemma constant c in a :class:`Lemma`'s conclusion.
LEMMA_CONSTANT = sp.Symbol("c")


@dataclass(frozen=True)
class Lemma(Check):
    r"""A symmetry lemma of the activation and what it gives the step, both re-proved by sympy.

    ``pair`` is :math:`g(u) + g(-u)` in the real variable ``u``; the check proves
    :math:`g(u) + g(-u) = c\,u^{p}` for every :math:`u > 0` with c a constant (e.g.
    :math:`\phi(u)^2 + \phi(-u)^2 = c u^2`, He et al. 2015, eq. 8 for relu), and that the step's right
    side is ``conclusion`` with :data:`LEMMA_CONSTANT` replaced by that c.
    """

    pair: sp.Expr
    power: int
    conclusion: sp.Expr
    kind: ClassVar[str] = "lemma"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        positive = {symbol: sp.Dummy(symbol.name, positive=True) for symbol in self.pair.free_symbols
                    if symbol.name == "u"}
        u = next(iter(positive.values()), sp.Dummy("u", positive=True))
        expr = self.pair.xreplace(positive)  # without u, sympy already reduced the pair to a constant
        if expr.has(sp.Piecewise):
            expr = sp.piecewise_fold(expr)
        constant = sp.simplify(expr / u**self.power)
        if constant.has(u) or constant.has(sp.Piecewise):
            return False, f"{to_text(self.pair)} is not a constant times u^{self.power} for u > 0"
        implied = self.conclusion.subs(LEMMA_CONSTANT, constant)
        ok = _is_zero(implied - step.rhs)
        shown = f"({to_text(constant)})" if isinstance(constant, sp.Add) else to_text(constant)
        detail = f"{to_text(self.pair)} = {shown} u^{self.power} for every u > 0 (sympy), which gives {to_text(implied)}"
        return ok, detail + ("" if ok else f", not {to_text(step.rhs)}")


#: The mean of a non-centred Gaussian in an :class:`Integral` check's general form.
GAUSSIAN_MEAN = sp.Symbol("mu", real=True)


@dataclass(frozen=True)
class Integral(Check):
    r"""A Gaussian expectation: ``rhs`` is :math:`E[g(z)]`, :math:`z \sim \mathcal N(\mu, v)` (``mean`` :math:`\mu`, default 0), re-computed by the engine."""

    integrand: sp.Expr
    variance: sp.Expr
    mean: sp.Expr = sp.Integer(0)
    kind: ClassVar[str] = "integral"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        from .gaussian import Q, gaussian_expectation

        if self.mean != 0:  # computed in the symbols q and mu, then substituted (as for the centred case)
            result = gaussian_expectation(self.integrand, Q, GAUSSIAN_MEAN)
            value = result.expr.subs({Q: self.variance, GAUSSIAN_MEAN: self.mean})
        else:
            result = gaussian_expectation(self.integrand, Q)
            value = result.expr.subs(Q, self.variance)
        ok = _is_zero(value - step.rhs)
        return ok, f"E[{to_text(self.integrand)}] re-computed by the expectation engine ({result.route})" + (
            "" if ok else f": got {value}")


@dataclass(frozen=True)
class Numeric(Check):
    """A number that stands for an expression holding quadratures, re-evaluated within its error estimate."""

    expression: sp.Expr
    error_estimate: float
    kind: ClassVar[str] = "integral"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        from .gaussian import evaluate

        value = evaluate(self.expression).value
        stated = float(step.rhs)
        tolerance = max(10 * self.error_estimate, 1e-12 * abs(value))
        ok = abs(value - stated) <= tolerance
        how = "quadrature of its integrals" if self.expression.has(sp.Integral) else "evaluation at raised precision"
        return ok, (f"re-evaluated by {how}: {value:.15g} (error estimate {self.error_estimate:.1e})" +
                    ("" if ok else f", the step states {stated:.15g}"))


#: The two variables of a :class:`BivariateIntegral`'s integrand.
U, V = sp.symbols("u v", real=True)


@dataclass(frozen=True)
class BivariateIntegral(Check):
    r"""A bivariate Gaussian expectation :math:`E[g(u, v)]`, re-computed by independent quadrature.

    :math:`(u, v)` is centred jointly Gaussian with variances ``first``, ``second`` and covariance
    ``covariance`` (expressions in the moments of earlier steps, or numbers). The check substitutes
    the equations of ``step.uses`` into them and into the step's right side; when that leaves
    moments unknown (a closed form stated in symbols), it compares at two test covariances (positive
    and negative correlation). Either way the comparison is with a two-dimensional quadrature
    written without the closed form (:func:`bivariate_quadrature`), within ten times its error
    estimate plus ``error_estimate`` (the stated value's own quadrature error).
    """

    integrand: sp.Expr
    first: sp.Expr
    second: sp.Expr
    covariance: sp.Expr
    error_estimate: float = 0.0
    kind: ClassVar[str] = "integral"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        facts = {steps[i].lhs: steps[i].rhs for i in step.uses}
        q1, q2, q12, rhs = (_apply(e, facts) for e in (self.first, self.second, self.covariance, step.rhs))
        unknown = sorted((q1 + q2 + q12 + rhs).atoms(Expect) | (q1 + q2 + q12 + rhs).free_symbols, key=sp.default_sort_key)
        points = [{}] if not unknown else [_test_point(unknown, q1, q2, q12, rho) for rho in (0.35, -0.6)]
        details = []
        for point in points:
            a, b, ab = (_test_value(e.xreplace(point)) for e in (q1, q2, q12))
            stated, stated_error = _stated_value(rhs.xreplace(point))
            value, error = bivariate_quadrature(self.integrand, a, b, ab)
            tolerance = 10 * error + self.error_estimate + stated_error + 1e-12 * max(1.0, abs(value))
            if not abs(value - stated) <= tolerance:
                return False, (f"two-dimensional quadrature gives {value:.15g} (error estimate {error:.1e}) at "
                               f"variances {a:.6g}, {b:.6g} and covariance {ab:.6g}; the step states {stated:.15g}")
            details.append(f"{value:.12g} at ({a:.4g}, {b:.4g}, {ab:.4g})")
        where = "" if not unknown else " at test covariances"
        return True, f"two-dimensional quadrature of E[{to_text(self.integrand)}]{where}: " + "; ".join(details)


#: A test point's moment computed by quadrature is used when its error estimate is below this (relative to the
#: moment, or absolute below 1): a tenth of the 1e-12 floor of :class:`BivariateIntegral`'s tolerance, which
#: holds since the moments are of order one and so is the expectation's sensitivity to them.
_TEST_VALUE_ERROR = 1e-13


@functools.lru_cache(maxsize=256)  # both test points of a check, and the checks of one network, share moments
def _test_value(expr: sp.Expr) -> float:
    """A variance or covariance of a test point as a float. A form holding one-dimensional integrals (the moments
    of a tanh layer) is evaluated by the expectation engine's quadrature when its error estimate is negligible
    (sympy's own tanh-sinh quadrature took a second per integral, the bulk of a report's topic); otherwise, and
    for a closed form, by sympy."""
    if expr.has(sp.Integral):
        from .gaussian import evaluate

        number = evaluate(expr)
        if number.error_estimate <= _TEST_VALUE_ERROR * max(1.0, abs(number.value)):
            return number.value
    return float(expr)


def _stated_value(expr: sp.Expr) -> tuple[float, float]:
    """The number a step states and its error: 30 digits for a closed form; a form that keeps one-dimensional
    integrals is evaluated by the expectation engine's quadrature with its error estimate (sympy's own
    30-digit tanh-sinh quadrature took seconds per integral)."""
    if expr.has(sp.Integral):
        from .gaussian import evaluate

        number = evaluate(expr)
        return number.value, number.error_estimate
    return float(sp.N(expr, 30)), 0.0


def _test_point(unknown: Sequence[sp.Expr], q1: sp.Expr, q2: sp.Expr, q12: sp.Expr, rho: float) -> dict:
    """Values for the unknown moments: variances 1.3 and 0.7 and correlation ``rho`` where they appear."""
    point: dict[sp.Expr, sp.Expr] = {}
    for atom, value in ((q1, 1.3), (q2, 0.7)):
        if atom in unknown:
            point[atom] = sp.Float(value)
    if q12 in unknown:
        point[q12] = sp.Float(rho) * sp.sqrt(point.get(q1, q1) * point.get(q2, q2))
    for atom in unknown:  # anything else (a moment inside a closed form, a parameter): a moderate positive value
        point.setdefault(atom, sp.Float(0.9))
    return {k: sp.Float(sp.N(v.xreplace(point), 30), 30) for k, v in point.items()}


def bivariate_quadrature(integrand: sp.Expr, first: float, second: float, covariance: float) -> tuple[float, float]:
    r""":math:`E[g(u, v)]` for a centred Gaussian pair by quadrature, and an estimate of its error.

    Writes :math:`u = \sqrt{q_1}\, z_1`, :math:`v = (q_{12}/\sqrt{q_1})\, z_1 + \sqrt{q_2 -
    q_{12}^2/q_1}\, z_2` with :math:`z_1, z_2` independent standard normals. A smooth integrand
    (no ``Piecewise``, ``Max``, ``Abs``, ``Heaviside``, ``sign``) uses a tensor Gauss-Hermite rule,
    the error estimate being the change from 96 to 160 nodes per axis; a kinked one Gauss-Legendre
    rules on panels of :math:`[-12, 12]^2` cut where a factor has its kink (so the integrand is
    smooth on each panel), the error estimate being the change from 16 to 24 nodes per panel.
    Results are cached (the test covariances of closed forms repeat).
    """
    return _bivariate_quadrature(integrand, float(first), float(second), float(covariance))


@functools.lru_cache(maxsize=512)
def _bivariate_quadrature(integrand: sp.Expr, q1: float, q2: float, q12: float) -> tuple[float, float]:
    import numpy as np

    if q1 <= 0 or q2 < 0:
        raise DerivationError(f"a bivariate Gaussian needs positive variances, got {q1} and {q2}")
    a = q12 / np.sqrt(q1)
    b = np.sqrt(max(0.0, q2 - a * a))
    g = sp.lambdify((U, V), integrand, modules=["scipy", "numpy"])

    def values(z1: np.ndarray, z2: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(g(np.sqrt(q1) * z1, a * z1 + b * z2), dtype=float), np.broadcast(z1, z2).shape)

    if not integrand.has(sp.Piecewise, sp.Max, sp.Min, sp.Abs, sp.Heaviside, sp.sign):
        estimates = []
        for nodes in (96, 160):
            t, w = np.polynomial.hermite_e.hermegauss(nodes)
            w = w / np.sqrt(2 * np.pi)
            estimates.append(float(w @ values(t[:, None], t[None, :]) @ w))
        return float(estimates[1]), float(abs(estimates[1] - estimates[0]))
    lo, hi = -12.0, 12.0  # standard-normal mass beyond: 4e-33
    kinks_u, kinks_v = _kinks(integrand, U), _kinks(integrand, V)
    estimates = [_panel_rule(values, q1, a, b, kinks_u, kinks_v, nodes, lo, hi) for nodes in (16, 24)]
    return float(estimates[1]), float(abs(estimates[1] - estimates[0]))


def _panels(kinks: Sequence[float], lo: float, hi: float, length: float = 2.0) -> list[tuple[float, float]]:
    """[lo, hi] cut at the kinks and into pieces of at most ``length``."""
    cuts = sorted({lo, hi, *(k for k in kinks if lo < k < hi)})
    out = []
    for left, right in zip(cuts, cuts[1:]):
        pieces = max(1, int(-(-(right - left) // length)))
        edges = [left + (right - left) * i / pieces for i in range(pieces + 1)]
        out += list(zip(edges, edges[1:]))
    return out


def _panel_rule(values, q1: float, a: float, b: float, kinks_u: Sequence[float], kinks_v: Sequence[float],
                nodes: int, lo: float, hi: float) -> float:
    """Gauss-Legendre on panels cut at the kinks (the integrand is smooth on each): z1 outside, z2 inside."""
    import numpy as np

    t, w = np.polynomial.legendre.leggauss(nodes)

    def rule(panels: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
        left, right = np.array(panels).T
        half = (right - left)[:, None] / 2
        points = (left[:, None] + half * (t + 1)).ravel()
        weights = (half * w).ravel() * np.exp(-points * points / 2) / np.sqrt(2 * np.pi)
        return points, weights

    z1, w1 = rule(_panels([k / np.sqrt(q1) for k in kinks_u], lo, hi))
    total = 0.0
    for point, weight in zip(z1, w1):
        if b < 1e-12:  # |c| = 1: v is a function of z1
            total += weight * float(values(np.array(point), np.array(0.0)))
            continue
        z2, w2 = rule(_panels([(k - a * point) / b for k in kinks_v], lo, hi))
        total += weight * float(values(np.full_like(z2, point), z2) @ w2)
    return total


def _kinks(integrand: sp.Expr, variable: sp.Symbol) -> list[float]:
    """Real points where a factor of ``integrand`` in ``variable`` alone has a kink or jump (max, abs, piecewise, step)."""
    arguments = []
    for atom in integrand.atoms(sp.Max, sp.Min, sp.Abs, sp.Heaviside, sp.sign, sp.Piecewise):
        if atom.free_symbols != {variable}:
            continue
        if isinstance(atom, sp.Max | sp.Min):
            arguments += [p - q for p in atom.args for q in atom.args if p != q]
        elif isinstance(atom, sp.Piecewise):
            arguments += [rel.lhs - rel.rhs for _, cond in atom.args for rel in sp.Tuple(cond).atoms(sp.core.relational.Relational)]
        else:
            arguments.append(atom.args[0])
    points: set[float] = set()
    for argument in arguments:
        try:
            roots = sp.solve(argument, variable)
        except (NotImplementedError, TypeError, ValueError):
            continue
        points |= {float(r) for r in roots if r.is_real and not r.free_symbols}
    return sorted(points)


@dataclass(frozen=True)
class Unrolled(Check):
    r"""A product formula in the depth, checked against the recursion unrolled for several depths.

    The recursion is :math:`v_L = v_{L-1} \cdot f(L)`; ``rhs`` (a formula in ``depth``) must equal
    ``initial`` times :math:`\prod_{k=\text{lower}}^{L} f(k)` for L = 2..7.
    """

    initial: sp.Expr
    factor: sp.Expr
    index: sp.Symbol
    lower: int
    depth: sp.Symbol
    kind: ClassVar[str] = "unrolled"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        for depth in range(2, 8):
            closed = step.rhs.subs(self.depth, depth).doit()
            unrolled = sp.Mul(self.initial, *(self.factor.subs(self.index, k) for k in range(self.lower, depth + 1)))
            if not _is_zero(sp.expand(unrolled.subs(self.depth, depth) - closed)):
                return False, f"fails at depth {depth}: {unrolled} != {closed}"
        return True, "equals the recursion unrolled for L = 2..7"


@dataclass(frozen=True)
class Solve(Check):
    """``rhs`` is the unique solution of ``equation`` for ``unknown``, found again by ``sympy.solve``."""

    equation: sp.Eq
    unknown: sp.Expr
    kind: ClassVar[str] = "solve"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        # Unevaluated quadratures are constants here; sympy.solve cannot handle them as they are.
        integrals = sorted(self.equation.atoms(sp.Integral), key=sp.default_sort_key)
        stand_ins = {integral: sp.Dummy(f"I{i}") for i, integral in enumerate(integrals)}
        equation = self.equation.xreplace(stand_ins)
        back = {v: k for k, v in stand_ins.items()}
        solutions = [solution.xreplace(back) for solution in sp.solve(equation, self.unknown, rational=False)]
        if len(solutions) != 1:
            return False, f"sympy.solve finds {len(solutions)} solutions: {solutions}"
        ok = _is_zero(solutions[0] - step.rhs)
        return ok, f"sympy.solve({to_text(self.equation.lhs)} = {to_text(self.equation.rhs)}) gives {to_text(solutions[0])}"


@dataclass(frozen=True)
class Limit(Check):
    r"""``rhs`` is :math:`\lim_{v \to \text{point}}` of ``expression``, found again by ``sympy.limit``."""

    expression: sp.Expr
    variable: sp.Symbol
    point: sp.Expr = sp.oo
    kind: ClassVar[str] = "limit"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        value = sp.limit(self.expression, self.variable, self.point)
        infinite = value.has(sp.oo, -sp.oo, sp.zoo) or step.rhs.has(sp.oo, -sp.oo, sp.zoo)
        ok = value == step.rhs if infinite else _is_zero(value - step.rhs)
        return ok, f"sympy.limit({to_text(self.expression)}, {self.variable} -> {self.point}) gives {to_text(value)}"


#: The check kinds, by name.
CHECKS: dict[str, type[Check]] = {
    cls.kind: cls for cls in (Identity, Definition, Lemma, Integral, Unrolled, Solve, Limit, Modelling)
}
_CHECKS = tuple(CHECKS)


@dataclass(frozen=True)
class Step:
    """One line of a derivation: ``lhs = rhs``, why it holds, how that was checked, and how exactly it holds.

    ``uses`` are the (0-based) indices of the earlier steps it depends on; an ``identity`` check
    substitutes exactly those steps' equations, so it can be re-run from the stored data.
    """

    lhs: sp.Expr
    rhs: sp.Expr
    rule: Rule
    justification: str
    proof: Check
    assumptions: tuple[str, ...] = ()
    source: str = ""
    exactness: str = "exact"
    uses: tuple[int, ...] = ()

    @property
    def check(self) -> str:
        """The check kind: ``identity``, ``definition``, ``lemma``, ``integral``, ``unrolled``, ``solve``, ``modelling``."""
        return self.proof.kind

    @property
    def equation(self) -> sp.Eq:
        return sp.Eq(self.lhs, self.rhs, evaluate=False)

    @property
    def checked(self) -> bool:
        """True when sympy (or the expectation engine) establishes the step, not a definition or an assumption."""
        return self.check not in ("modelling", "definition")

    def reason(self) -> str:
        text = f"{self.rule.value}: {self.justification}" if self.justification else self.rule.value
        return f"{text} [{self.source}]" if self.source else text

    def check_text(self) -> str:
        """``identity from (2), (5); exact``: how the step was checked and how exactly it holds."""
        uses = "" if not self.uses else " from " + ", ".join(f"({i + 1})" for i in self.uses)
        return f"{self.check}{uses}; {self.exactness}"


@dataclass(frozen=True)
class Derivation:
    """An ordered list of checked steps and the result they establish.

    The derivation's exactness is its weakest step's (:func:`weakest`); :meth:`verify` re-runs every
    step's check from the stored data.
    """

    title: str
    steps: tuple[Step, ...]
    result: sp.Expr
    summary: str = ""
    extras: Mapping[str, sp.Expr] = field(default_factory=dict)

    @property
    def exactness(self) -> str:
        """The weakest exactness class of the steps."""
        return weakest(*(step.exactness for step in self.steps))

    @property
    def assumptions(self) -> tuple[str, ...]:
        """Every assumption used by some step, in order of first use."""
        seen: dict[str, None] = {}
        for step in self.steps:
            for assumption in step.assumptions:
                seen.setdefault(assumption, None)
        return tuple(seen)

    @property
    def sources(self) -> tuple[str, ...]:
        """Every source cited by some step, in order of first citation."""
        return tuple(dict.fromkeys(step.source for step in self.steps if step.source))

    def verify(self) -> tuple[CheckReport, ...]:
        """Re-run every step's check from the stored data (definitions and modelling steps report ``None``)."""
        reports = []
        for number, step in enumerate(self.steps, 1):
            try:
                ok, detail = step.proof.run(step, self.steps)
            except (DerivationError, TypeError, ValueError, ZeroDivisionError) as exc:
                ok, detail = False, f"the check raised {type(exc).__name__}: {exc}"
            reports.append(CheckReport(number, step.check, ok, detail))
        return tuple(reports)

    def latex(self, *, standalone: bool = False) -> str:
        r"""The steps as an ``align`` environment, one ``\tag`` per step, then each step's reason.

        The display holds only the equations (so a long right side keeps its tag on its line); the
        list below it gives each step's rule, justification and source, how it was checked and its
        exactness. Formulas in the words are typeset through :func:`to_latex`. ``standalone`` wraps
        it all in a document that ``pdflatex`` compiles.
        """
        lines = []
        previous_lhs = None
        for number, step in enumerate(self.steps, 1):
            lhs = "" if previous_lhs is not None and step.lhs == previous_lhs else to_latex(step.lhs)
            rows = _broken(step.rhs, _LINE_BUDGET - _visible_length(lhs))
            rows = [f"{lhs} &= {rows[0]}"] + [f"&{row}" for row in rows[1:]]
            lines += [row + " \\notag" for row in rows[:-1]] + [f"{rows[-1]} \\tag{{{number}}}"]
            previous_lhs = step.lhs
        body = "\\begin{align}\n" + " \\\\\n".join(lines) + "\n\\end{align}\n"
        details = "".join(
            f"\\item[({number})] {_reason_latex(step)} "
            f"(checked: {latex_text(step.check_text())})\n"
            for number, step in enumerate(self.steps, 1)
        )
        body += "\\begin{description}\\small\n" + details + "\\end{description}\n"
        step = "" if self.result_step is None else f"step {self.result_step}; "
        # A short result stays in the line (display style, so fractions are legible); a long one is displayed.
        rows = _broken(self.result, _LINE_BUDGET)
        shown = (f"$\\displaystyle {rows[0]}$" if len(rows) == 1 and _visible_length(rows[0]) <= _INLINE_RESULT else
                 "\n\\begin{align*}\n" + " \\\\\n".join(f"&{row}" for row in rows) + "\n\\end{align*}\n")
        result = f"\\paragraph{{Result}} ({step}{latex_text(self.exactness)}). {shown}\n"
        header = f"% {self.title}\n"
        if not standalone:
            return header + body + result + _latex_assumptions(self.assumptions)
        return (
            _LATEX_PREAMBLE + "\\begin{document}\n"
            f"\\section*{{{prose_latex(self.title)}}}\n{prose_latex(self.summary)}\n\n"
            + header
            + body
            + result
            + _latex_assumptions(self.assumptions)
            + "\\end{document}\n"
        )

    @functools.cached_property
    def result_step(self) -> int | None:
        """The number (1-based) of the last step whose right side is the result, ``None`` when no step states it
        as it is (the result then rewrites a step, e.g. with the widths named ``n_in``). Computed once: the
        labels of every rendering ask for it."""
        for quick in (True, False):  # the same expression (or its expansion) first: simplify is slow on closed forms
            for number in range(len(self.steps), 0, -1):
                rhs = self.steps[number - 1].rhs
                if rhs == self.result or _is_zero(rhs - self.result, quick=quick):  # == first: oo - oo is nan
                    return number
        return None

    def _result_label(self) -> str:
        return "Result" if self.result_step is None else f"Result (step {self.result_step})"

    def markdown(self) -> str:
        """A Markdown section: the summary, a numbered list of steps with LaTeX math, the result."""
        out = [f"### {prose_markdown(self.title)}", ""]
        if self.summary:
            out += [prose_markdown(self.summary), ""]
        for number, step in enumerate(self.steps, 1):
            out.append(f"{number}. $${to_latex(step.lhs)} = {to_latex(step.rhs)}$$  ")
            out.append(f"   *{_reason_markdown(step)}*; checked: {step.check_text()}")
        out += ["", f"**{self._result_label()}:** ${to_latex(self.result)}$ ({self.exactness})", ""]
        if self.assumptions:
            out.append("**Assumptions:** " + "; ".join(prose_markdown(a) for a in self.assumptions) + ".")
            out.append("")
        return "\n".join(out)

    def text(self) -> str:
        """Plain text, readable in a terminal: one numbered line per step and its justification."""
        out = [self.title, "=" * len(self.title)]
        if self.summary:
            out += [self.summary, ""]
        width = len(str(len(self.steps)))
        for number, step in enumerate(self.steps, 1):
            out.append(f"({number:>{width}}) {to_text(step.lhs)} = {to_text(step.rhs)}")
            out.append(f"{'':>{width + 3}}  {step.reason()}  [checked: {step.check_text()}]")
        out += ["", f"{self._result_label()}: {to_text(self.result)}  ({self.exactness})"]
        if self.assumptions:
            out.append("Assumptions:")
            out += [f"  - {a}" for a in self.assumptions]
        return "\n".join(out) + "\n"

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dictionary: sympy text (``srepr``-free ``str``) for every expression."""
        return {
            "title": self.title,
            "summary": self.summary,
            "exactness": self.exactness,
            "steps": [
                {
                    "lhs": plain_text(step.lhs),
                    "rhs": plain_text(step.rhs),
                    "latex": f"{to_latex(step.lhs)} = {to_latex(step.rhs)}",
                    "rule": step.rule.value,
                    "justification": step.justification,
                    "source": step.source,
                    "assumptions": list(step.assumptions),
                    "check": step.check,
                    "uses": [i + 1 for i in step.uses],
                    "exactness": step.exactness,
                }
                for step in self.steps
            ],
            "result": plain_text(self.result),
            "result_latex": to_latex(self.result),
            "assumptions": list(self.assumptions),
            **{key: plain_text(value) for key, value in self.extras.items()},
        }

    def json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def closure(steps: Sequence[Step], wanted: Iterable[int]) -> tuple[Step, ...]:
    """The steps ``wanted`` and every step they use, transitively, in order and renumbered."""
    needed: set[int] = set()
    stack = list(wanted)
    while stack:
        index = stack.pop()
        if index in needed:
            continue
        needed.add(index)
        stack.extend(steps[index].uses)
    order = sorted(needed)
    renumber = {old: new for new, old in enumerate(order)}
    return tuple(replace(steps[old], uses=tuple(renumber[i] for i in steps[old].uses)) for old in order)


# --- printing -------------------------------------------------------------------------------


def tidy(expr: sp.Basic) -> sp.Basic:
    r"""``expr`` in the form a person writes: a product of square roots under one root.

    :math:`\sqrt{2}\sqrt{v}/(2\sqrt{\pi})` becomes :math:`\sqrt{v/(2\pi)}`; the value is unchanged
    (the new root is an unevaluated power of the simplified square), only its printed form.
    """
    if not isinstance(expr, sp.Basic) or expr.is_Atom or isinstance(expr, sp.Indexed):
        return expr
    if isinstance(expr, sp.Mul):
        roots = [a for a in expr.args if a.is_Pow and a.exp in (sp.S.Half, -sp.S.Half)]
        if len(roots) >= 2:
            # The roots and the number in front go under one root; other factors stay outside (gain sqrt(3/n)).
            coefficient, _ = expr.as_coeff_Mul()
            sign = -1 if coefficient.is_negative else 1
            inside = sp.Mul(sign * coefficient, *roots)
            outside = [a for a in expr.args if a not in roots and not a.is_Number]
            numerator, denominator = sp.fraction(sp.simplify(inside**2))
            root = (sp.Pow(sp.Pow(denominator, sp.S.Half, evaluate=False), -1, evaluate=False) if numerator == 1
                    else sp.Pow(sp.simplify(inside**2), sp.S.Half, evaluate=False))  # 1/sqrt(2 pi), sqrt(v/(2 pi))
            factors = ([sp.S.NegativeOne] if sign < 0 else []) + outside + [root]
            return sp.Mul(*factors, evaluate=False) if len(factors) > 1 else root
    args = [tidy(a) for a in expr.args]
    if args == list(expr.args):
        return expr
    if isinstance(expr, sp.Add | sp.Mul | sp.Pow):
        return expr.func(*args, evaluate=False)
    return expr.func(*args)


class _NoNumericOrdering:
    """Printers that order the terms of a sum without evaluating them: sympy sorts an ``Add`` by each term's
    numeric coefficient, and a closed-form integral counts as one, so printing it ran an mpmath quadrature
    (seconds per term, the bulk of ``varprop report``). A sum holding an integral keeps sympy's canonical
    argument order instead."""

    def _as_ordered_terms(self, expr: sp.Expr, order: str | None = None) -> list[sp.Expr]:
        if expr.has(sp.Integral):
            return list(expr.args)
        return super()._as_ordered_terms(expr, order)


class _PlainPrinter(_NoNumericOrdering, StrPrinter):
    """sympy's ``str`` of an expression, without the numeric ordering of :class:`_NoNumericOrdering`."""


def plain_text(expr: object) -> str:
    """``str(expr)`` as sympy prints it (the JSON form of a formula), without evaluating integrals to order terms."""
    return _PlainPrinter().doprint(expr) if isinstance(expr, sp.Basic) else str(expr)


class _TextPrinter(_NoNumericOrdering, StrPrinter):
    def _print(self, expr: object, **kwargs: object) -> str:
        if isinstance(expr, sp.Indexed):  # Indexed's own _sympystr would win otherwise
            return self._print_Indexed(expr)
        return super()._print(expr, **kwargs)

    def _print_Indexed(self, expr: sp.Indexed) -> str:
        index = self._print(expr.indices[0]) if len(expr.indices) == 1 else ",".join(map(self._print, expr.indices))
        if not (expr.indices[0].is_Symbol or expr.indices[0].is_Integer) or len(expr.indices) > 1:
            index = f"({index})"
        return f"{self._print(expr.base)}_{index}"

    def _print_Product(self, expr: sp.Product) -> str:
        (var, lo, hi), = expr.limits
        return f"prod_({self._print(var)}={self._print(lo)}..{self._print(hi)}) [{self._print(expr.function)}]"


class _ProseTextPrinter(_TextPrinter):
    """Formulas inside sentences, for a terminal: ``x^2``, ``√(q/(2π))``, ``2/(n_in (a^2 + 1))``."""

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        if expr.exp == sp.S.Half:
            return f"√({self._print(expr.base)})"
        if expr.exp == -sp.S.Half:
            return f"1/√({self._print(expr.base)})"
        text = super()._print_Pow(expr, rational)
        return text.replace("**", "^")

    def _print_Mul(self, expr: sp.Mul) -> str:
        return super()._print_Mul(expr).replace("*", " ")

    def _print(self, expr: object, **kwargs: object) -> str:
        if isinstance(expr, sp.IndexedBase) and str(expr.label).startswith("Delta_"):
            return "Δ" + str(expr.label).removeprefix("Delta_")  # He et al.'s gradient notation, as in LaTeX
        return super()._print(expr, **kwargs)

    def _print_Pi(self, expr: sp.Expr) -> str:
        return "π"

    def _print_Abs(self, expr: sp.Abs) -> str:
        return f"|{self._print(expr.args[0])}|"

    def _print_Relational(self, expr: sp.Basic) -> str:
        op = "=" if expr.rel_op == "==" else expr.rel_op
        return f"{self._print(expr.lhs)} {op} {self._print(expr.rhs)}"

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:
        """``{y if y > 0; 0 otherwise}``, as a case distinction is written, not sympy's constructor call."""
        cases = [f"{self._print(value)} otherwise" if condition == sp.true
                 else f"{self._print(value)} if {self._print(condition)}" for value, condition in expr.args]
        return "{" + "; ".join(cases) + "}"


_SUPERSCRIPT_WORDS = {"star": "*"}


class _LatexPrinter(_NoNumericOrdering, LatexPrinter):
    def _print_Indexed(self, expr: sp.Indexed) -> str:
        name = str(expr.base.label)
        if name.startswith("Delta_"):  # gradient bases: Delta_x -> \Delta x (He et al.'s notation)
            base = r"\Delta " + name.removeprefix("Delta_")
        else:
            base = self._print(expr.base.label)
        if "_" in base or "^" in base or "'" in base:  # y' in braces: {y'}_{2}^{2}, not a double superscript
            base = f"{{{base}}}"
        return f"{base}_{{{','.join(self._print(i) for i in expr.indices)}}}"

    def _print_Symbol(self, expr: sp.Symbol, style: str = "plain") -> str:
        """Words stay words: ``std`` is upright, not s·t·d; ``q_star`` is :math:`q^*`; ``n_in`` is :math:`n_\\mathrm{in}`."""
        name = expr.name
        base, _, sub = name.partition("_")
        if not base.isalpha() or (sub and not sub.isalnum()):
            return super()._print_Symbol(expr, style)
        plain = super()._print_Symbol(sp.Symbol(base), style)
        head = rf"\mathrm{{{base}}}" if len(base) > 1 and plain == base else plain
        if not sub:
            return head
        if sub in _SUPERSCRIPT_WORDS:
            return f"{head}^{{{_SUPERSCRIPT_WORDS[sub]}}}"
        tail = rf"\mathrm{{{sub}}}" if len(sub) > 1 and sub.isalpha() else super()._print_Symbol(sp.Symbol(sub), style)
        return f"{head}_{{{tail}}}"


def to_text(expr: sp.Basic) -> str:
    """One-line text of ``expr`` for a terminal (``y_l``, ``Var[y_(l - 1)]``, ``E[x_l^2]``, ``√(q/(2π))``),
    the same printer as the formulas inside prose."""
    return _prose_text(expr)


def to_latex(expr: sp.Basic) -> str:
    """LaTeX of ``expr`` through sympy's printer (``y_{l-1}``, ``\\operatorname{Var}[\\cdot]``), roots gathered by :func:`tidy`."""
    expr = tidy(expr)
    if isinstance(expr, sp.Basic) and expr.has(sp.Float):  # displayed to 6 digits; the data keep every digit
        with sp.evaluate(False):  # an unevaluated equation stays one (Eq(x, 0.5) is not folded to True)
            expr = expr.xreplace({f: sp.Float(f, min(6, prec_to_dps(f._prec))) for f in expr.atoms(sp.Float)})
    return _LatexPrinter().doprint(expr)


def _prose_text(expr: sp.Basic) -> str:
    return _ProseTextPrinter().doprint(tidy(expr))


class Prose(str):
    """A sentence whose formulas are sympy objects: ``str`` of it is the terminal text, and the
    renderers (:func:`prose_latex`, :func:`prose_markdown`) typeset each formula through the printers.

    Build it with :func:`prose`; it is a ``str``, so code that stores or compares text keeps working.
    """

    parts: tuple[str | sp.Basic, ...]

    def __new__(cls, parts: Iterable[str | sp.Basic]) -> Prose:
        parts = tuple(parts)
        self = super().__new__(cls, "".join(p if isinstance(p, str) else _prose_text(p) for p in parts))
        self.parts = parts
        return self

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (_unpickled_prose, (str.__str__(self), self.parts))


def _unpickled_prose(text: str, parts: tuple[str | sp.Basic, ...]) -> Prose:
    """A :class:`Prose` from its pickled text and parts: the formulas are not printed again (printing is
    most of what unpickling a derivation would cost, and derivations come back from worker processes)."""
    self = str.__new__(Prose, text)
    self.parts = parts
    return self


_SCIENTIFIC = re.compile(r"(?<![\w.])(-?\d+(?:\.\d+)?e[-+]\d+)(?![\w.])")


class Code(str):
    """A code identifier in a sentence (``kaiming_uniform_``, ``nn.Linear``): set as code, not as words.

    :func:`prose_latex` sets it in ``\\texttt``, :func:`prose_markdown` in backticks; the terminal
    text shows it as it is.
    """

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Code, (str(self),))


def prose(*parts: str | sp.Basic) -> Prose:
    """Words (``str``) and formulas (sympy objects, ``sp.Eq`` for an equation) as one sentence.

    A :class:`Prose` part contributes its own parts; a number written ``4.3e-12`` in the words is
    typeset as a number (:math:`4.3 \\cdot 10^{-12}`).
    """
    flat: list[str | sp.Basic] = []
    for part in parts:
        if isinstance(part, Prose):
            flat += part.parts
        elif isinstance(part, Code):
            flat.append(part)
        elif isinstance(part, str):
            pieces = _SCIENTIFIC.split(part)
            flat += [piece if i % 2 == 0 else sp.Float(piece, len(piece.split("e")[0].replace("-", "").replace(".", "")))
                     for i, piece in enumerate(pieces) if piece]
        elif isinstance(part, sp.Basic):
            flat.append(part)
        else:
            raise DerivationError(f"prose takes words (str) and sympy formulas, got {part!r}")
    return Prose(flat)


def _parts(text: str) -> tuple[str | sp.Basic, ...]:
    return text.parts if isinstance(text, Prose) else (text,)


def prose_text(text: str) -> str:
    """Terminal text of words and formulas (``√(q/(2π))``, ``x^2``)."""
    return str.__str__(text)


def prose_latex(text: str) -> str:
    """LaTeX: words escaped for text mode, each formula in ``$...$`` through :func:`to_latex`, code in ``\\texttt``."""
    return "".join(_latex_part(p) for p in _parts(text))


def _latex_part(part: str | sp.Basic) -> str:
    if isinstance(part, Code):
        return f"\\texttt{{{latex_text(part)}}}"
    return latex_text(part) if isinstance(part, str) else f"${to_latex(part)}$"


def prose_markdown(text: str) -> str:
    """Markdown: words as they are, each formula as ``$...$`` LaTeX math (GitHub, Sphinx and pandoc render it),
    code in backticks."""
    return "".join(f"`{p}`" if isinstance(p, Code) else p if isinstance(p, str) else f"${to_latex(p)}$"
                   for p in _parts(text))


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_\allowbreak{}", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}", "±": r"$\pm$",
                  "≤": r"$\le$", "≥": r"$\ge$", "≈": r"$\approx$", "≠": r"$\neq$", "→": r"$\to$", "π": r"$\pi$",
                  "√": r"$\surd$", "²": r"$^2$", "½": r"\texorpdfstring{$\tfrac{1}{2}$}{1/2}", "−": "-", "—": "---", "–": "--"}


def latex_text(text: str) -> str:
    """Plain words escaped for LaTeX text mode; a number written ``4.3e-12`` is set as :math:`4.3 \\times 10^{-12}`."""
    pieces = _SCIENTIFIC.split(text)
    return "".join(
        "".join(_LATEX_SPECIAL.get(ch, ch) for ch in piece) if i % 2 == 0 else _latex_number(piece)
        for i, piece in enumerate(pieces)
    )


def _latex_number(text: str) -> str:
    mantissa, exponent = text.split("e")
    return f"${mantissa}\\times 10^{{{int(exponent)}}}$"


def _latex_assumptions(assumptions: Iterable[str]) -> str:
    items = list(assumptions)
    if not items:
        return ""
    return "\\paragraph{Assumptions.}\n\\begin{itemize}\n" + "".join(
        f"\\item {prose_latex(a)}\n" for a in items
    ) + "\\end{itemize}\n"


#: Roughly how many characters of typeset math fit on a line of the report's page.
_LINE_BUDGET = 80
#: The longest result (in shown characters) set in the line after "Result (step k; exactness)."
_INLINE_RESULT = 40


def _visible_length(tex: str) -> int:
    """A rough count of the characters ``tex`` shows (commands count one, braces and spacing none)."""
    tex = re.sub(r"\\(left|right|operatorname|mathbb|mathrm|frac|sqrt)\b", "", tex)
    tex = re.sub(r"\\[A-Za-z]+", "x", tex)
    return len(re.sub(r"[{}\\ ^_]", "", tex))


def _signed(term: sp.Expr, first: bool) -> str:
    if term.could_extract_minus_sign():
        return f"- {to_latex(-term)}"
    return to_latex(term) if first else f"+ {to_latex(term)}"


def _broken(expr: sp.Expr, budget: int, prefix: str = "") -> list[str]:
    """``expr`` as LaTeX rows of about ``budget`` visible characters, broken between the terms of a sum.

    A sum is broken between its terms; a product holding a long sum breaks that sum inside large
    parentheses (``\\left``/``\\right`` cannot span rows); a fraction with a long denominator is
    written ``numerator / (denominator)`` and its denominator broken. Anything else stays on one row.
    """
    whole = to_latex(expr)
    if _visible_length(prefix + whole) <= budget:
        return [prefix + whole]
    expr = tidy(expr)
    suffix, terms = "", None
    numerator, denominator = sp.fraction(expr)
    if denominator != 1 and _visible_length(to_latex(denominator)) > budget // 2 and not prefix:
        head = to_latex(numerator) + " \\Big/ "
        if isinstance(denominator, sp.Add):
            return _broken(sp.Mul(sp.S.One, denominator, evaluate=False), budget, head)
        return _broken(denominator, budget, head)
    if isinstance(expr, sp.Add):
        terms = list(expr.args)
        if prefix:
            prefix, suffix = prefix + "\\Big(", "\\Big)"
    elif isinstance(expr, sp.Mul):
        sums = [a for a in expr.args if isinstance(a, sp.Add)]
        if sums:
            inner = max(sums, key=lambda a: _visible_length(to_latex(a)))
            rest = [a for a in expr.args if a is not inner]
            terms = list(inner.args)
            rest_tex = "" if not rest or rest == [sp.S.One] else to_latex(sp.Mul(*rest)) + " "
            prefix, suffix = prefix + rest_tex + "\\Big(", "\\Big)"
    if not terms:
        return [prefix + whole]
    rows, current, empty = [], prefix, True
    for index, term in enumerate(terms):
        piece = _signed(term, index == 0)
        if not empty and _visible_length(current + piece) > budget:
            rows.append(current)
            current = "\\quad "
        current += piece + " "
        empty = False
    rows.append(current + suffix)
    return rows


def _reason_latex(step: Step) -> str:
    words = prose_latex(step.justification) if step.justification else ""
    text = f"\\emph{{{latex_text(step.rule.value)}}}" + (f": {words}" if words else "")
    return text + (f" [{prose_latex(citation(step.source))}]" if step.source else "")


def _reason_markdown(step: Step) -> str:
    words = prose_markdown(step.justification) if step.justification else ""
    text = step.rule.value + (f": {words}" if words else "")
    return text + (f" [{prose_markdown(citation(step.source))}]" if step.source else "")


#: A code identifier in a citation: a dotted name (``nn.Linear.reset_parameters``) or a name with an
#: underscore (``kaiming_uniform_``), with its call arguments.
_IDENTIFIER = re.compile(r"(?<![\w.])((?:[A-Za-z_]\w+\.)+[A-Za-z_]\w+|[A-Za-z]\w*_\w*)(\([^()]*(?:\([^()]*\))?[^()]*\))?")


def citation(source: str) -> Prose:
    """A source as words with its code identifiers marked as :class:`Code`.

    A source cites a paper (``He et al. 2015, eq. (8)``) or a library's code (``PyTorch
    nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5))``); the code is set as code.
    """
    if isinstance(source, Prose):
        return source
    parts: list[str] = []
    last = 0
    for match in _IDENTIFIER.finditer(source):
        parts += [source[last:match.start()], Code(match.group(0))]
        last = match.end()
    parts.append(source[last:])
    return Prose([p for p in parts if p])


#: The preamble of every standalone LaTeX document varprop writes (A4, 10 pt, words may stretch
#: rather than run into the margin).
_LATEX_PREAMBLE = (
    "\\documentclass[10pt,a4paper]{article}\n\\usepackage[margin=2cm]{geometry}\n"
    "\\usepackage{amsmath,amssymb}\n\\allowdisplaybreaks\n\\emergencystretch=3em\n"
)


# --- building with checks -------------------------------------------------------------------


def _is_zero(expr: sp.Expr, *, quick: bool = False) -> bool:
    """True when sympy proves ``expr`` is 0.

    Algebra first (expand, then ``simplify`` without ``doit``, which would hand unevaluated integrals to
    ``integrate``); a constant that simplify cannot reduce (nested closed forms of gelu, erf) is
    evaluated with 60 significant digits and taken as zero below 1e-45 of its terms' size (1e-13 when
    it holds floats, such as a quadrature's value, whose own rounding is about 1e-17).
    """
    if expr == 0:
        return True
    if expr is sp.nan:  # oo - oo: not a proof of anything
        return False
    expanded = sp.expand(expr)
    if expanded == 0:
        return True
    if quick:
        return False
    if sp.simplify(expanded, doit=False) == 0:
        return True
    if expr.free_symbols or expr.has(sp.Integral):
        return False
    try:
        value = sp.N(expr, 60)
        scale = max((abs(sp.N(term, 60)) for term in sp.Add.make_args(expanded)), default=sp.Integer(1))
    except (TypeError, ValueError):
        return False
    if not (value.is_number and scale.is_number):
        return False
    # Floats (a quadrature's value, 17 digits) carry their own rounding: zero up to that, not to 1e-45.
    tolerance = sp.Float("1e-13", 60) if expr.has(sp.Float) else sp.Float("1e-45", 60)
    return bool(abs(value) <= tolerance * max(scale, sp.Integer(1)))


def _apply(expr: sp.Expr, facts: Mapping[sp.Expr, sp.Expr] | None, *, structural: bool = False) -> sp.Expr:
    """Substitute ``facts`` until nothing changes (a fact's right side may use another fact's left side).

    ``xreplace`` follows ``subs`` so that facts also reach inside products over the depth, where
    ``subs`` leaves expressions holding the bound index alone.
    """
    facts = dict(facts or {})
    for _ in range(len(facts) + 1):
        replaced = expr.xreplace(facts) if structural else expr.subs(facts).xreplace(facts)
        if replaced == expr:
            break
        expr = replaced
    return expr


class _Builder:
    """Accumulates steps, running each step's check as it is added and refusing any that fails.

    Every method returns the new step's index, to be passed in ``uses`` of later steps.
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self.steps: list[Step] = []
        self.chain: int | None = None  # the step `then` continues: the latest statement of the chain's left side

    @property
    def current(self) -> int:
        return len(self.steps) - 1

    def add(
        self,
        lhs: sp.Expr,
        rhs: sp.Expr,
        rule: Rule,
        justification: str = "",
        *,
        proof: Check,
        uses: Iterable[int] = (),
        assumptions: Iterable[str] = (),
        source: str = "",
        exactness: str = "exact",
    ) -> int:
        """Record ``lhs = rhs`` after running its check; a failed check or a self-referential fact is refused."""
        weakest(exactness)
        uses = tuple(dict.fromkeys(uses))
        for index in uses:
            if not 0 <= index < len(self.steps):
                raise DerivationError(f"step '{justification or rule.value}' uses step {index + 1}, which is not an earlier step")
            earlier = self.steps[index]
            if isinstance(proof, Identity) and {earlier.lhs, earlier.rhs} == {lhs, rhs}:
                raise DerivationError(
                    f"step '{justification or rule.value}' would be checked by step {index + 1}, which states the "
                    "same equation: a fact that is the step itself checks nothing (make it a definition or a "
                    "modelling step)"
                )
        step = Step(lhs, rhs, rule, justification, proof, tuple(assumptions), source, exactness, uses)
        ok, detail = proof.run(step, self.steps)
        if ok is False:
            verb = "does not follow" if isinstance(proof, Identity) and uses else "does not hold"
            raise DerivationError(f"step '{justification or rule.value}' {verb}: {detail}")
        self.steps.append(step)
        index = len(self.steps) - 1
        if isinstance(proof, Identity | Modelling) and (self.chain is None or self.steps[self.chain].lhs == lhs):
            self.chain = index
        return index

    def define(self, lhs: sp.Expr, rhs: sp.Expr, justification: str, *, rule: Rule = Rule.DEFINITION,
               source: str = "", uses: Iterable[int] = ()) -> int:
        """A definition (a value read from the network description, a chain rule, a name)."""
        return self.add(lhs, rhs, rule, justification, proof=Definition(), uses=uses, source=source)

    def model(self, lhs: sp.Expr, rhs: sp.Expr, rule: Rule, justification: str = "", *,
              assumptions: Iterable[str] = (), exactness: str = "exact", uses: Iterable[int] = (),
              source: str = "") -> int:
        """A statement that holds by its assumptions, with the exactness those assumptions give it."""
        return self.add(lhs, rhs, rule, justification, proof=Modelling(), uses=uses, assumptions=assumptions,
                        source=source, exactness=exactness)

    def identity(self, lhs: sp.Expr, rhs: sp.Expr, rule: Rule, justification: str = "", *,
                 uses: Iterable[int] = (), assumptions: Iterable[str] = (), source: str = "") -> int:
        """``lhs = rhs``, checked by substituting the equations of the steps in ``uses``."""
        return self.add(lhs, rhs, rule, justification, proof=Identity(), uses=uses, assumptions=assumptions,
                        source=source)

    def then(self, rhs: sp.Expr, rule: Rule, justification: str = "", *, uses: Iterable[int] = (),
             assumptions: Iterable[str] = (), source: str = "") -> int:
        """Continue the current chain: same left side, a right side that follows from the previous step and ``uses``."""
        previous = self.current if self.chain is None else self.chain
        return self.identity(self.steps[previous].lhs, rhs, rule, justification, uses=(previous, *uses),
                             assumptions=assumptions, source=source)

    def build(self, result: sp.Expr, summary: str = "", **extras: sp.Expr) -> Derivation:
        return Derivation(self.title, tuple(self.steps), result, summary, dict(extras))
