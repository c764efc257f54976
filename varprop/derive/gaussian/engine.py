r"""Routing of the Gaussian expectation engine and its public result types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

from ...activations import X, Activation
from ...errors import DerivationError, IntegrabilityError
from . import rules
from .integrability import _short, nonintegrable_reason
from .numeric import NumericValue, as_expr, evaluate

#: The variance of the Gaussian argument, :math:`z \sim \mathcal N(0, q)`.
Q = sp.Symbol("q", positive=True)

_T = sp.Symbol("t", real=True)  # standardised integration variable of the quadrature route

ROUTES = ("polynomial", "tilted-gaussian", "truncated-gaussian", "stein-erf", "trigonometric", "symmetry",
          "quadrature", "does-not-exist")


class Expectation:
    r"""The result of one Gaussian expectation, or the statement that it does not exist.

    Attributes
    ----------
    expr
        A closed form (``exact``), or an expression holding unevaluated ``Integral`` objects. Reading
        it raises :class:`~varprop.errors.IntegrabilityError` when the expectation does not exist.
    route
        One of ``polynomial``, ``tilted-gaussian``, ``truncated-gaussian``, ``stein-erf``,
        ``trigonometric``, ``symmetry``, ``quadrature``, or ``does-not-exist``.
    exists
        False when the integral diverges (a non-integrable singularity, or growth like
        :math:`e^{c z^2}`); :attr:`reason` then says why.
    name
        What is expected, e.g. ``E[phi'(z)^2]`` (used in messages).
    """

    __slots__ = ("_expr", "route", "reason", "name")

    def __init__(self, expr: sp.Expr | None, route: str, *, reason: str = "", name: str = "") -> None:
        self._expr = expr
        self.route = route
        self.reason = reason
        self.name = name

    @classmethod
    def missing(cls, reason: str, name: str = "") -> Expectation:
        """An expectation that does not exist, with the reason."""
        return cls(None, "does-not-exist", reason=reason, name=name)

    @property
    def exists(self) -> bool:
        return self._expr is not None

    @property
    def expr(self) -> sp.Expr:
        if self._expr is None:
            raise IntegrabilityError(self._message())
        return self._expr

    @property
    def exact(self) -> bool:
        """True when :attr:`expr` is a closed form (no unevaluated integral); False when it does not exist."""
        return self._expr is not None and not self._expr.has(sp.Integral)

    def evaluate(self, values: Mapping[sp.Symbol, object] | None = None) -> NumericValue:
        """The number at ``values`` (e.g. ``{Q: 2}``) with its error estimate (0 when exact)."""
        return evaluate(self.expr, values)

    def _message(self) -> str:
        return f"{self.name or 'the expectation'} does not exist: {self.reason}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Expectation):
            return NotImplemented
        return (self._expr, self.route, self.reason) == (other._expr, other.route, other.reason)

    def __hash__(self) -> int:
        return hash((self._expr, self.route, self.reason))

    def __repr__(self) -> str:
        if self._expr is None:
            return f"Expectation(does not exist: {self.reason!r})"
        return f"Expectation({self._expr}, route={self.route!r})"


def gaussian_expectation(g: sp.Expr, variance: sp.Expr = Q, mean: sp.Expr = sp.Integer(0)) -> Expectation:
    r""":math:`E[g(z)]` for :math:`z \sim \mathcal N(\mu, q)`, with ``g`` a sympy expression in :data:`~varprop.activations.X`.

    Raises
    ------
    IntegrabilityError
        When the expectation does not exist: ``g`` grows like :math:`e^{c z^2}` (c > 0) or faster, or has
        a non-integrable singularity on the real line (see :mod:`.integrability`).
    """
    result = _expectation(as_expr(g, "integrand"), as_expr(variance, "variance"), as_expr(mean, "mean"))
    if not result.exists:
        raise IntegrabilityError(f"E[{_short(g, 80)}] does not exist: {result.reason}")
    return result


_NAMES = {
    "mean": "E[phi(z)]",
    "second_moment": "E[phi(z)^2]",
    "variance": "Var[phi(z)]",
    "derivative_second_moment": "E[phi'(z)^2]",
}


@dataclass(frozen=True)
class Moments:
    r"""Gaussian moments of an activation :math:`\phi` at :math:`z \sim \mathcal N(0, q)`.

    ``mean`` is :math:`E[\phi(z)]`, ``second_moment`` :math:`E[\phi(z)^2]`, ``variance``
    :math:`E[\phi^2] - E[\phi]^2` and ``derivative_second_moment`` :math:`E[\phi'(z)^2]`. A moment that
    does not exist (e.g. :math:`E[\phi'^2]` of :math:`\sqrt{|x|}`) is an :class:`Expectation` with
    ``exists`` False; the others are still given.
    """

    activation: Activation
    variance_symbol: sp.Symbol
    mean: Expectation
    second_moment: Expectation
    derivative_second_moment: Expectation

    @property
    def variance(self) -> Expectation:
        if not self.second_moment.exists:
            return Expectation.missing(self.second_moment.reason, _NAMES["variance"])
        expr = _tidy(self.second_moment.expr - self.mean.expr**2)
        routes = {self.second_moment.route, self.mean.route}
        route = "quadrature" if "quadrature" in routes else self.second_moment.route
        return Expectation(expr, route, name=_NAMES["variance"])

    @property
    def exact(self) -> bool:
        """True when every moment that exists is a closed form."""
        return all(e.exact for e in self.as_dict().values() if e.exists)

    @property
    def missing(self) -> dict[str, str]:
        """The moments that do not exist, by name, with the reason."""
        return {key: e.reason for key, e in self.as_dict().items() if not e.exists}

    def as_dict(self) -> dict[str, Expectation]:
        """The four moments by name."""
        return {
            "mean": self.mean,
            "second_moment": self.second_moment,
            "variance": self.variance,
            "derivative_second_moment": self.derivative_second_moment,
        }


def moments(act: Activation, variance: sp.Expr = Q) -> Moments:
    r"""Mean, second moment, variance and derivative second moment of ``act`` under :math:`\mathcal N(0, q)`.

    Every moment is checked for existence first; one that does not exist is reported as such
    (:attr:`Expectation.exists`) instead of raising, so ``moments`` of :math:`\sqrt{|x|}` gives
    its mean and second moment.
    """
    if isinstance(act, str):
        raise DerivationError(
            f"moments expects an Activation, got the text {_short(repr(act), 60)}; pass varprop.activation({act[:40]!r}) "
            "for a built-in or varprop.expression(...) for an expression in x"
        )
    if not isinstance(act, Activation):
        raise DerivationError(
            f"moments expects an Activation (varprop.activation(name) or varprop.expression(text)), "
            f"got {type(act).__name__}"
        )
    return _moments(act, as_expr(variance, "variance"))


@lru_cache(maxsize=512)
def _moments(act: Activation, variance: sp.Expr) -> Moments:
    integrands = {
        "mean": act.expr,
        "second_moment": act.expr**2,
        "derivative_second_moment": act.derivative**2,
    }
    results = {key: _named(_expectation(g, variance, sp.Integer(0)), _NAMES[key]) for key, g in integrands.items()}
    return Moments(act, variance, results["mean"], results["second_moment"], results["derivative_second_moment"])


def _named(result: Expectation, name: str) -> Expectation:
    if result.exists:
        return Expectation(result.expr, result.route, name=name)
    return Expectation.missing(result.reason, name)


# --- routing --------------------------------------------------------------------------------


@lru_cache(maxsize=2048)
def _expectation(g: sp.Expr, variance: sp.Expr, mean: sp.Expr) -> Expectation:
    if variance.is_negative or variance.is_extended_real is False:
        raise DerivationError(f"a Gaussian variance must be a non-negative real number, got {_short(variance, 60)}")
    if X not in g.free_symbols:
        return Expectation(g, "polynomial")
    reason = nonintegrable_reason(g)
    if reason is not None:
        return Expectation.missing(reason)
    if variance == 0:
        return Expectation(_tidy(g.subs(X, mean)), "polynomial")
    g = _integer_powers(g)
    try:
        prepared = _integer_powers(rules.prepare(g))
    except rules.NotInClass:
        prepared = None
    if prepared is not None:
        try:
            exponential, trigonometric = rules.to_exponentials(prepared)
            pieces = rules.pieces(exponential)
            route = "truncated-gaussian" if len(pieces) > 1 or pieces[0][1] != (-sp.oo, sp.oo) else None
            total = sp.Integer(0)
            for expr, (lo, hi) in pieces:
                value, piece_route = rules.integrate_piece(expr, lo, hi, variance, mean)
                total += value
                route = route or piece_route
            if trigonometric:
                total, route = rules.real_form(total), "trigonometric"
            return Expectation(_tidy(total), route or "polynomial")
        except rules.NotInClass:
            pass
        symmetric = rules.symmetry_constant(prepared) if mean == 0 else None
        if symmetric is not None:
            return Expectation(symmetric, "symmetry")
    return Expectation(_quadrature_integral(g, variance, mean), "quadrature")


def _integer_powers(g: sp.Expr) -> sp.Expr:
    """``x**1.0`` as ``x``: a Float exponent that is an integer becomes an Integer (exact rules need it)."""
    return g.replace(
        lambda e: e.is_Pow and e.exp.is_Float and float(e.exp).is_integer() and abs(float(e.exp)) <= 64,
        lambda e: e.base ** int(e.exp),
    )


def _quadrature_integral(g: sp.Expr, variance: sp.Expr, mean: sp.Expr) -> sp.Expr:
    r""":math:`\int g(\mu + \sqrt q\, t)\, e^{-t^2/2}/\sqrt{2\pi}\, dt`, left unevaluated."""
    integrand = g.subs(X, mean + sp.sqrt(variance) * _T) * sp.exp(-(_T**2) / 2) / sp.sqrt(2 * sp.pi)
    if not integrand.has(sp.Piecewise):
        return sp.Integral(integrand, (_T, -sp.oo, sp.oo))
    # sympy's Integral() folds every Piecewise through simplify_logic (seconds for nested max/min);
    # the quadrature does not need the fold, so the object is built as ExprWithLimits would, unfolded.
    integral = sp.Expr.__new__(sp.Integral, integrand, sp.Tuple(_T, -sp.oo, sp.oo))
    integral.is_commutative = True
    return integral


def _tidy(expr: sp.Expr) -> sp.Expr:
    """Light simplification that keeps the closed forms readable without paying for ``simplify``."""
    if expr.has(sp.Integral) or rules.term_estimate(expr) > rules.MAX_TERMS:
        return expr
    return sp.powsimp(sp.factor_terms(sp.expand(expr, log=False)))
