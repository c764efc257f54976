r"""Mean-field signal propagation: the q-map, the c-map, :math:`\chi_1`, order, chaos and depth scales.

A wide fully connected network with weights :math:`W_{ij} \sim \mathcal N(0, \sigma_w^2/N)` and biases
:math:`b_i \sim \mathcal N(0, \sigma_b^2)` propagates the pre-activation length :math:`q^l` of one input
and the correlation :math:`c^l` of two inputs by deterministic maps (Poole et al. 2016; Schoenholz,
Gilmer, Ganguli & Sohl-Dickstein 2017, "Deep Information Propagation"; equation numbers are theirs):

.. math::

    q^l &= \sigma_w^2 \int \mathcal Dz\, \phi\bigl(\sqrt{q^{l-1}} z\bigr)^2 + \sigma_b^2
        && \text{(Schoenholz eq. 3, Poole eq. 3)} \\
    c^l &= \frac{\sigma_w^2 \, E[\phi(u_1)\phi(u_2)] + \sigma_b^2}{q^*}, \quad
        (u_1, u_2) \sim \mathcal N\!\left(0, q^*\begin{pmatrix}1 & c^{l-1} \\ c^{l-1} & 1\end{pmatrix}\right)
        && \text{(eq. 4, at the fixed point } q^*) \\
    \chi_1 &= \sigma_w^2 \int \mathcal Dz\, \phi'\bigl(\sqrt{q^*} z\bigr)^2
        && \text{(eq. 5: the slope of the c-map at } c = 1) \\
    \chi_c &= \sigma_w^2 E[\phi'(u_1)\phi'(u_2)] \text{ at } c^*
        && \text{(eq. 8: the slope of the c-map at } c^*) \\
    \xi_q^{-1} &= -\log\bigl(\chi_1 + \sigma_w^2 \textstyle\int \mathcal Dz\, \phi''\phi\bigr), \quad
    \xi_c^{-1} = -\log \chi_c
        && \text{(eqs. 6 and 9)}

:math:`\chi_1 < 1` is the ordered phase (:math:`c^* = 1` attracts: inputs become indistinguishable),
:math:`\chi_1 > 1` the chaotic phase (a :math:`c^* < 1` attracts), :math:`\chi_1 = 1` the edge of
chaos, where :math:`\xi_c` diverges. The slope of the q-map at :math:`q^*` is computed as
:math:`dq^l/dq^{l-1} = \sigma_w^2 E[z\,\phi(\sqrt q z)\phi'(\sqrt q z)]/\sqrt q` (Stein's lemma), which
equals eq. 6's :math:`\chi_1 + \sigma_w^2 \int \mathcal Dz\,\phi''\phi` and needs no second derivative
(it stays right for the rectifier family, whose :math:`\phi''` is a Dirac delta).

Closed forms come from the Gaussian engines (:mod:`.gaussian` and :mod:`.gaussian.bivariate`); the
numbers (fixed points, slopes, depth scales) are computed with composite Gauss-Legendre quadrature of
the activation's numpy functions, with an error estimate (the difference of two successive rules).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import sympy as sp

from .._validate import as_sympy_number
from ..activations import Activation
from ..activations import activation as _builtin
from ..errors import DerivationError, VarpropError
from .derivation import (
    Check,
    Derivation,
    DPhi,
    Expect,
    Integral,
    Numeric,
    Phi,
    Rule,
    Solve,
    Step,
    Variance,
    _Builder,
    _is_zero,
    prose,
    to_text,
)
from .gaussian import NumericValue, Q, moments
from .gaussian.bivariate import cross_expectation
from .propagate import LAYER
from .textbook import Q_STAR

__all__ = [
    "PHASES",
    "SIGMA_B",
    "SIGMA_W",
    "C",
    "EdgePoint",
    "FixedPoint",
    "LengthFixedPoint",
    "Kernel",
    "MeanField",
    "c_map",
    "c_map_values",
    "correlation_depth_scale",
    "depth_scale_grid",
    "edge_of_chaos",
    "iterate_c_map",
    "kernel_derivation",
    "mean_field",
    "q_map",
    "q_fixed_point",
    "relu_power_law",
]

POOLE = "Poole et al. 2016"
SCHOENHOLZ = "Schoenholz et al. 2017"
CHO_SAUL = "Cho & Saul 2009"

#: The weight and bias standard deviations: the weight variance per fan-in is sigma_w^2 / N.
SIGMA_W = sp.Symbol("sigma_w", positive=True)
SIGMA_B = sp.Symbol("sigma_b", nonnegative=True)
#: The correlation entering a layer, the variable of the c-map.
C = sp.Symbol("c", real=True)
_q = sp.IndexedBase("q")
_c = sp.IndexedBase("c")
_q12 = sp.IndexedBase("q_12")
_h = sp.IndexedBase("h")
_w = sp.IndexedBase("w")
_Z = sp.Symbol("z", real=True)
_U1, _U2 = sp.symbols("u_1 u_2", real=True)
_CHI1 = sp.Symbol("chi_1", positive=True)
_EPS = sp.Symbol("epsilon", positive=True)

#: The phases of a network at initialisation.
PHASES = ("ordered", "critical", "chaotic")

_A_MEANFIELD = "the width tends to infinity: pre-activations are Gaussian and self-average (the mean-field limit)"
_A_WEIGHTS = prose("the weights and biases are independent, centred and Gaussian, ",
                   sp.Eq(Variance(sp.Symbol("W_ij")), SIGMA_W**2 / sp.Symbol("N")), " and ",
                   sp.Eq(Variance(sp.Symbol("b_i")), SIGMA_B**2))
_A_FIXED = prose("the lengths have reached their fixed point, ", sp.Eq(sp.Symbol("q_11"), Q_STAR), " and ",
                 sp.Eq(sp.Symbol("q_22"), Q_STAR))
_CRITICAL_TOLERANCE = 1e-9  # |chi_1 - 1| below this (and its error estimate) is the edge of chaos


# --- checks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernel(Check):
    r"""The step's right side is :math:`E[f(u_1) f(u_2)]` (``f`` = :math:`\phi`, or :math:`\phi'`),
    re-computed by :func:`~varprop.derive.gaussian.bivariate.cross_expectation`; a quadrature value
    must agree within ten times its error estimate. ``second_variance`` defaults to ``variance``."""

    activation: Activation
    variance: sp.Expr
    correlation: sp.Expr
    derivative: bool = False
    second_variance: sp.Expr | None = None
    kind = "integral"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        second = self.variance if self.second_variance is None else self.second_variance
        result = cross_expectation(self.activation, self.variance, second, self.correlation, derivative=self.derivative)
        if result.exact:
            ok = _is_zero(result.value - step.rhs)
            return ok, f"re-computed by the bivariate engine ({result.route})" + ("" if ok else f": got {result.value}")
        ok = bool(abs(float(result.value) - float(step.rhs)) <= 10 * result.error_estimate + 1e-15)
        return ok, f"re-computed by quadrature: {float(result.value):.15g} (error estimate {result.error_estimate:.1e})"


_Q1, _Q2 = sp.symbols("q_1 q_2", positive=True)
_RHO = sp.Symbol("rho", real=True)


def kernel_derivation(activation: Activation | str, q1: object, q2: object, c: object, *,
                      derivative: bool = False) -> Derivation:
    r""":math:`E[f(u)f(v)]` for centred jointly Gaussian :math:`(u, v)` as a derivation: the closed form in
    :math:`q_1, q_2, \rho` (when one exists) and its value at the given numbers, or the quadrature value.

    See :func:`~varprop.derive.gaussian.bivariate.cross_expectation` for the routes and the errors.
    """
    act = _as_activation(activation)
    result = cross_expectation(act, q1, q2, c, derivative=derivative)
    f = DPhi if derivative else Phi
    lhs = Expect(f(_U1) * f(_U2))
    b = _Builder(f"The {'derivative ' if derivative else ''}kernel of {_named(act)}")
    general = None
    if result.exact:
        try:
            general = cross_expectation(act, _Q1, _Q2, _RHO, derivative=derivative)
        except VarpropError:
            general = None
    given = {_Q1: as_sympy_number(q1, "q1", error=VarpropError), _Q2: as_sympy_number(q2, "q2", error=VarpropError),
             _RHO: as_sympy_number(c, "c", error=VarpropError)}
    why = prose(_U1, ", ", _U2, " centred, jointly Gaussian, variances ", _Q1, ", ", _Q2, ", correlation ", _RHO,
                f" ({result.route})")
    if general is not None and general.exact:
        first = b.add(lhs, general.value, Rule.GAUSSIAN_INTEGRAL, why,
                      proof=Kernel(act, _Q1, _RHO, derivative, _Q2), source=_route_source(general.route))
        values = [b.define(symbol, value, prose("the given ", symbol)) for symbol, value in given.items()]
        value = general.value.subs(given)
        b.identity(lhs, value, Rule.SUBSTITUTION, "the given values", uses=(first, *values))
        summary = prose(f"The closed form ({general.route}) at the given variances and correlation.")
        return b.build(value, summary=summary)
    values = [b.define(symbol, value, prose("the given ", symbol)) for symbol, value in given.items()]
    value = result.value
    b.add(lhs, value, Rule.GAUSSIAN_INTEGRAL, why, proof=Kernel(act, given[_Q1], given[_RHO], derivative, given[_Q2]),
          uses=values, source=_route_source(result.route))
    note = "" if result.exact else f" (error estimate {result.error_estimate:.1e})"
    return b.build(value, summary=prose(f"The value by {result.route}{note}."))


def _named(act: Activation) -> str:
    """The activation in words, for titles: ``leaky relu (a = 0.2)``; a user expression is 'the expression'."""
    if act.name == "expression":
        return "the expression"
    words = act.name.replace("_", " ")
    if act.params:
        words += " (" + ", ".join(f"{key} = {float(value):g}" if not value.free_symbols else f"{key} symbolic"
                                  for key, value in act.params) + ")"
    return words


def _route_source(route: str) -> str:
    return {
        "arc-cosine kernel (degree 0)": CHO_SAUL,
        "arc-cosine kernel (degree 1)": CHO_SAUL,
        "arcsin (erf)": "Williams 1997, eq. 11",
        "gelu kernel (Tsuchida et al. 2020)": "Tsuchida et al. 2020 (arXiv:2002.08517)",
    }.get(route, "")


@dataclass(frozen=True)
class _MapResidual(Check):
    """A numeric fixed point: the map at the stated value returns it, within the stated error."""

    activation: Activation
    weight_variance: float
    bias_variance: float
    error_estimate: float
    kind = "integral"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        q = float(step.rhs)
        image = _Moments(self.activation).q_map(q, self.weight_variance, self.bias_variance)
        slope = abs(1.0 - _Moments(self.activation).q_map_slope(q, self.weight_variance).value)
        distance = abs(image.value - q) / max(slope, 1e-300)
        ok = bool(distance <= 10 * self.error_estimate + 1e-12 * q)
        return ok, f"the q-map at {q:.15g} gives {image.value:.15g} (a fixed point within {distance:.1e})"


# --- numbers: one-dimensional Gaussian averages of the numpy kernels -------------------------------


def _average(function: Callable[[np.ndarray], np.ndarray], q: float, tolerance: float = 1e-12) -> NumericValue:
    r""":math:`E[g(\sqrt q z)]` by composite Gauss-Legendre on [-9, 9] (panels doubled until two rules agree)."""
    previous = None
    panels = 1
    with np.errstate(over="ignore", invalid="ignore"):
        while panels <= 64:
            z, w = _graded_rule(panels)
            value = float(w @ function(math.sqrt(q) * z, z))
            if not math.isfinite(value):
                raise DerivationError(f"a Gaussian average at q = {q:g} is not finite")
            if previous is not None:
                estimate = max(abs(value - previous), 8 * np.finfo(float).eps * abs(value))
                if estimate <= tolerance * max(1.0, abs(value)):
                    return NumericValue(value, estimate, True)
            previous = value
            panels *= 2
    raise DerivationError(f"a Gaussian average at q = {q:g} did not converge (last change {estimate:.1e})")


@lru_cache(maxsize=8)
def _graded_rule(split: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre on [-9, 9] with panels graded geometrically towards 0 (edges 9 * 2^-k, k <= 40),
    each cut into ``split`` equal parts: the activation's features sit near x = 0, at z of order 1/sqrt(q)."""
    nodes, weights = np.polynomial.legendre.leggauss(16)
    half_line = np.concatenate(([0.0], 9.0 * 2.0 ** -np.arange(40, -1, -1.0)))
    edges = np.concatenate((-half_line[::-1], half_line[1:]))
    edges = np.concatenate([np.linspace(a, b, split + 1)[:-1] for a, b in itertools.pairwise(edges)] + [edges[-1:]])
    half = np.diff(edges) / 2
    mid = (edges[:-1] + edges[1:]) / 2
    z = (mid[:, None] + half[:, None] * nodes[None, :]).ravel()
    w = (half[:, None] * weights[None, :]).ravel() * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    return z, w


class _Moments:
    """The Gaussian averages a mean-field analysis needs, for one activation, by quadrature."""

    def __init__(self, act: Activation) -> None:
        if not act.is_numeric:
            raise VarpropError(f"the mean-field numbers need numeric activation parameters; {act} has symbols")
        self.act = act

    def second(self, q: float) -> NumericValue:
        return _average(lambda x, z: self.act.numpy(x) ** 2, q)

    def derivative_second(self, q: float) -> NumericValue:
        return _average(lambda x, z: self.act.numpy_derivative(x) ** 2, q)

    def q_map(self, q: float, sw2: float, sb2: float) -> NumericValue:
        m = self.second(q)
        return NumericValue(sw2 * m.value + sb2, sw2 * m.error_estimate, True)

    def q_map_slope(self, q: float, sw2: float) -> NumericValue:
        r""":math:`dq^l/dq^{l-1} = \sigma_w^2 E[z\phi\phi'(\sqrt q z)]/\sqrt q` (Stein's lemma); its q -> 0 limit is :math:`\sigma_w^2\phi'(0)^2`."""
        if q <= 0:
            value = sw2 * float(self.act.numpy_derivative(np.array([0.0]))[0]) ** 2
            return NumericValue(value, 0.0, False)
        m = _average(lambda x, z: z * self.act.numpy(x) * self.act.numpy_derivative(x), q)
        return NumericValue(sw2 * m.value / math.sqrt(q), sw2 * m.error_estimate / math.sqrt(q), True)


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FixedPoint:
    r"""A fixed point of the q-map or the c-map and the slope of the map there.

    ``stable`` is :math:`|\text{slope}| < 1`; :attr:`depth_scale` is :math:`-1/\log|\text{slope}|`
    (Schoenholz et al. 2017, eqs. 6 and 9), infinite at slope 1.
    """

    value: float
    error_estimate: float
    slope: float
    slope_error: float

    @property
    def stable(self) -> bool:
        return bool(abs(self.slope) < 1.0 - max(self.slope_error, _CRITICAL_TOLERANCE))

    @property
    def marginal(self) -> bool:
        """Slope 1 within its error: neither attracting nor repelling to first order (the edge of chaos)."""
        return bool(abs(abs(self.slope) - 1.0) <= max(self.slope_error, _CRITICAL_TOLERANCE))

    @property
    def kind(self) -> str:
        """``stable``, ``marginal`` or ``unstable``."""
        return "marginal" if self.marginal else "stable" if self.stable else "unstable"

    @property
    def depth_scale(self) -> float | None:
        r""":math:`-1/\log|\text{slope}|`: infinite at slope 1, None when the point repels (slope above 1)."""
        size = abs(self.slope)
        if size == 0:
            return 0.0
        if abs(size - 1.0) <= max(self.slope_error, _CRITICAL_TOLERANCE):
            return math.inf
        return -1.0 / math.log(size) if size < 1 else None


@dataclass(frozen=True)
class MeanField:
    r"""The mean-field analysis of one activation at :math:`(\sigma_w^2, \sigma_b^2)`.

    Attributes
    ----------
    q_star
        The fixed point of the q-map, or None when there is none (the length grows without bound);
        ``q_star_status`` says which case holds.
    chi_1
        :math:`\sigma_w^2 E[\phi'(\sqrt{q^*} z)^2]` (Schoenholz eq. 5) with its error estimate.
    correlation_fixed_points
        The fixed points :math:`c^*` of the c-map in :math:`[-1, 1]`, :math:`c^* = 1` first, each with
        its slope :math:`\chi_c` (eq. 8).
    phase
        ``ordered`` (:math:`\chi_1 < 1`), ``chaotic`` (:math:`\chi_1 > 1`) or ``critical``.
    xi_q, xi_c
        The depth scales (eqs. 6 and 9): the q-map's at :math:`q^*`, and the c-map's at its stable
        fixed point (infinite at the edge of chaos).
    scale_free
        True when the c-map does not depend on the length (a positively homogeneous activation
        without bias), so it is the normalised kernel :math:`E[\phi(u)\phi(v)]/E[\phi(u)^2]` at any q.
    derivations
        The q-map, the fixed point, :math:`\chi_1` and the c-map as checked derivations.
    """

    activation: Activation
    weight_variance: float
    bias_variance: float
    q_star: FixedPoint | None
    q_star_status: str
    chi_1: NumericValue
    correlation_fixed_points: tuple[FixedPoint, ...]
    phase: str
    xi_q: float | None
    xi_c: float | None
    scale_free: bool
    derivations: tuple[Derivation, ...]

    def to_dict(self) -> dict[str, object]:
        def number(x: float | None) -> float | str | None:
            return x if x is None or math.isfinite(x) else "inf"

        return {
            "activation": str(self.activation),
            "weight_variance": self.weight_variance,
            "bias_variance": self.bias_variance,
            "q_star": None if self.q_star is None else self.q_star.value,
            "q_star_error_estimate": None if self.q_star is None else self.q_star.error_estimate,
            "q_star_status": self.q_star_status,
            "chi_1": self.chi_1.value,
            "chi_1_error_estimate": self.chi_1.error_estimate,
            "phase": self.phase,
            "xi_q": number(self.xi_q),
            "xi_c": number(self.xi_c),
            "scale_free_c_map": self.scale_free,
            "correlation_fixed_points": [
                {"c_star": p.value, "error_estimate": p.error_estimate, "chi_c": p.slope, "stable": p.stable,
                 "kind": p.kind}
                for p in self.correlation_fixed_points
            ],
            "derivations": [d.to_dict() for d in self.derivations],
        }

    def text(self) -> str:
        """A terminal summary: the numbers, then each derivation."""
        lines = [
            (f"Mean-field analysis of {self.activation} at sigma_w^2 = {self.weight_variance:g}, "
             f"sigma_b^2 = {self.bias_variance:g} ({SCHOENHOLZ})"),
            "",
            f"  q*       {_shown(self.q_star)}  ({self.q_star_status})",
            f"  chi_1    {self.chi_1.value:.12g}  (error estimate {self.chi_1.error_estimate:.1e})",
            f"  phase    {self.phase}",
            f"  xi_q     {_depth(self.xi_q)}",
            f"  xi_c     {_depth(self.xi_c)}",
            "  c*       " + ", ".join(
                f"{p.value:.12g} ({p.kind}, chi_c = {p.slope:.6g})"
                for p in self.correlation_fixed_points),
        ]
        if self.scale_free:
            lines.append("  (the c-map is scale-free: it does not depend on q)")
        out = "\n".join(lines) + "\n"
        for derivation in self.derivations:
            out += "\n" + derivation.text()
        return out


def _shown(point: FixedPoint | None) -> str:
    if point is None:
        return "-"
    return f"{point.value:.12g}  (error estimate {point.error_estimate:.1e}, slope {point.slope:.6g})"


def _depth(value: float | None) -> str:
    if value is None:
        return "none (the fixed point repels)"
    return "infinite (critical)" if math.isinf(value) else f"{value:.6g} layers"


@dataclass(frozen=True)
class EdgePoint:
    r"""A point of the edge of chaos: :math:`\chi_1 = 1` at :math:`(\sigma_b^2, \sigma_w^2)`, with its :math:`q^*`
    (None when every q is a fixed point, as for relu under He's init)."""

    bias_variance: float
    weight_variance: float
    q_star: float | None


# --- validation ---------------------------------------------------------------------------------


def _as_activation(act: object) -> Activation:
    if isinstance(act, str):
        return _builtin(act)
    if not isinstance(act, Activation):
        raise VarpropError(f"expected an Activation or a built-in name, got {type(act).__name__}")
    return act


def _variance_value(value: object, what: str, *, positive: bool = False) -> float:
    expr = as_sympy_number(value, what, error=VarpropError)
    if expr.free_symbols:
        raise VarpropError(f"{what} must be a number for the mean-field numbers, got {expr}")
    number = float(expr)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise VarpropError(f"{what} must be {'positive' if positive else 'non-negative'}, got {value!r}")
    if number > 1e6:
        raise VarpropError(f"{what} must be at most 1e6, got {value!r}")
    return number


# --- the q-map ----------------------------------------------------------------------------------


def q_map(activation: Activation | str, weight_variance: object = SIGMA_W**2,
          bias_variance: object = SIGMA_B**2) -> Derivation:
    r"""The length map :math:`q^l = \sigma_w^2 E[\phi(\sqrt{q^{l-1}} z)^2] + \sigma_b^2` (Schoenholz eq. 3) as a derivation.

    The result is an expression in :math:`q_{l-1}`; with a closed-form second moment it is exact, and
    otherwise it holds the one-dimensional quadrature as an unevaluated integral.
    """
    act = _as_activation(activation)
    sw2 = as_sympy_number(weight_variance, "the weight variance", error=VarpropError)
    sb2 = as_sympy_number(bias_variance, "the bias variance", error=VarpropError)
    l = LAYER
    b = _Builder(f"The q-map of {_named(act)}")
    recursion = b.model(
        _q[l], SIGMA_W**2 * Expect(Phi(_h[l - 1]) ** 2) + SIGMA_B**2, Rule.INDEPENDENCE,
        prose("each pre-activation sums many independent terms: ", _q[l], " = ", SIGMA_W**2, " times the mean of ",
              Phi(_h[l - 1]) ** 2, " plus ", SIGMA_B**2),
        assumptions=(_A_WEIGHTS, _A_MEANFIELD), exactness="asymptotic", source=f"{SCHOENHOLZ}, eq. (3); {POOLE}, eq. (3)")
    m2 = moments(act).second_moment
    moment = m2.expr.subs(Q, _q[l - 1])
    integral = b.add(Expect(Phi(_h[l - 1]) ** 2), moment, Rule.GAUSSIAN_INTEGRAL,
                     prose(_h[l - 1], " is centred Gaussian with variance ", _q[l - 1], f" ({m2.route})"),
                     proof=Integral(act.expr**2, _q[l - 1]))
    general = SIGMA_W**2 * moment + SIGMA_B**2
    b.identity(_q[l], general, Rule.SUBSTITUTION, "the Gaussian integral", uses=(recursion, integral))
    result = general
    if (sw2, sb2) != (SIGMA_W**2, SIGMA_B**2):
        values = b.define(SIGMA_W, sp.sqrt(sw2), prose("the weight variance ", sp.Eq(SIGMA_W**2, sw2, evaluate=False)))
        bias = b.define(SIGMA_B, sp.sqrt(sb2), prose("the bias variance ", sp.Eq(SIGMA_B**2, sb2, evaluate=False)))
        result = sp.expand(general.subs({SIGMA_W: sp.sqrt(sw2), SIGMA_B: sp.sqrt(sb2)}))
        b.then(result, Rule.SUBSTITUTION, "the variances", uses=(values, bias))
    return b.build(result, summary=prose("The squared length of a pre-activation after one more layer, as a function of ",
                                         _q[l - 1], f" ({m2.route})."))


# --- the c-map ----------------------------------------------------------------------------------


def c_map(activation: Activation | str, weight_variance: object, bias_variance: object,
          q_star: object) -> Derivation:
    r"""The correlation map at the length fixed point :math:`q^*` (Schoenholz eq. 4) as a derivation.

    .. math:: c^l = \bigl(\sigma_w^2 E[\phi(u_1)\phi(u_2)] + \sigma_b^2\bigr) / q^*

    The result is an expression in :math:`c_{l-1}` when the kernel has a closed form; otherwise the
    kernel is stated at the symbol and only numbers are available (:func:`mean_field`).
    """
    act = _as_activation(activation)
    sw2 = as_sympy_number(weight_variance, "the weight variance", error=VarpropError)
    sb2 = as_sympy_number(bias_variance, "the bias variance", error=VarpropError)
    qs = as_sympy_number(q_star, "q*", error=VarpropError)
    l = LAYER
    b = _Builder(f"The c-map of {_named(act)}")
    defined = b.model(
        _q12[l], SIGMA_W**2 * Expect(Phi(_U1) * Phi(_U2)) + SIGMA_B**2, Rule.INDEPENDENCE,
        prose("the covariance of two inputs' pre-activations, with ", _U1, ", ", _U2, " jointly Gaussian, variances ", Q_STAR,
              " and correlation ", _c[l - 1]),
        assumptions=(_A_WEIGHTS, _A_MEANFIELD, _A_FIXED), exactness="asymptotic", source=f"{SCHOENHOLZ}, eq. (4)")
    correlation = b.define(_c[l], _q12[l] / Q_STAR, prose("the correlation at the fixed point, ",
                                                           sp.Eq(_c[l], _q12[l] / sp.sqrt(_q[l] * _q[l]))),
                           source=f"{SCHOENHOLZ}, eq. (4)")
    result = cross_expectation(act, qs, qs, _c[l - 1]) if _closed_in_c(act, qs) else None
    if result is None:
        derivation = b.build(
            (SIGMA_W**2 * Expect(Phi(_U1) * Phi(_U2)) + SIGMA_B**2) / Q_STAR,
            summary=prose(f"The kernel of {act} has no closed form: the c-map is evaluated numerically."))
        return derivation
    kernel = b.add(Expect(Phi(_U1) * Phi(_U2)), result.value, Rule.GAUSSIAN_INTEGRAL,
                   prose(f"the bivariate Gaussian integral ({result.route})"),
                   proof=Kernel(act, qs, _c[l - 1]), source=CHO_SAUL if "arc-cosine" in result.route else "")
    general = (SIGMA_W**2 * result.value + SIGMA_B**2) / Q_STAR
    general_step = b.identity(_c[l], general, Rule.SUBSTITUTION, "the kernel", uses=(defined, correlation, kernel))
    fixed = b.define(Q_STAR, qs, prose("the fixed point of the q-map"))
    values = b.define(SIGMA_W, sp.sqrt(sw2), prose("the weight variance ", sp.Eq(SIGMA_W**2, sw2, evaluate=False)))
    bias = b.define(SIGMA_B, sp.sqrt(sb2), prose("the bias variance ", sp.Eq(SIGMA_B**2, sb2, evaluate=False)))
    value = _simplified(general.subs({SIGMA_W: sp.sqrt(sw2), SIGMA_B: sp.sqrt(sb2), Q_STAR: qs}))
    b.identity(_c[l], value, Rule.SUBSTITUTION, "the variances and the fixed point",
               uses=(general_step, fixed, values, bias))
    return b.build(value, summary=prose("The correlation of two inputs after one more layer, as a function of ",
                                        _c[l - 1], f" ({result.route})."))


def _closed_in_c(act: Activation, q: sp.Expr) -> bool:
    try:
        return cross_expectation(act, q, q, C).exact
    except VarpropError:
        return False


def _simplified(expr: sp.Expr) -> sp.Expr:
    expanded = sp.expand(expr)
    simpler = sp.simplify(expanded)
    return simpler if sp.count_ops(simpler) <= sp.count_ops(expanded) else expanded


# --- the analysis -------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _homogeneous_slope(act: Activation) -> sp.Expr | None:
    r""":math:`\kappa` when :math:`E[\phi(\sqrt q z)^2] = \kappa q` (relu family without shift, linear), else None."""
    m2 = moments(act).second_moment
    if not m2.exact:
        return None
    ratio = sp.simplify(m2.expr / Q)
    return None if ratio.has(Q) else ratio


def mean_field(activation: Activation | str, weight_variance: object = None, bias_variance: object = 0.0) -> MeanField:
    r"""The mean-field analysis of ``activation`` at :math:`(\sigma_w^2, \sigma_b^2)` (Schoenholz et al. 2017).

    Parameters
    ----------
    activation
        An :class:`~varprop.activations.Activation` with numeric parameters, or a built-in name.
    weight_variance
        :math:`\sigma_w^2` (the weight variance times the fan-in). ``None``: the edge of chaos at
        this bias variance (:func:`edge_of_chaos`), e.g. 2 for relu without bias (He et al. 2015).
    bias_variance
        :math:`\sigma_b^2`.

    Raises
    ------
    VarpropError
        For negative or non-numeric variances, or an activation whose edge of chaos does not exist
        at this bias variance (when ``weight_variance`` is None).
    """
    act = _as_activation(activation)
    sb2 = _variance_value(bias_variance, "the bias variance")
    if weight_variance is None:
        sw2 = edge_of_chaos(act, [sb2])[0].weight_variance
    else:
        sw2 = _variance_value(weight_variance, "the weight variance", positive=True)
    numbers = _Moments(act)
    kappa = _homogeneous_slope(act)
    scale_free = False
    if kappa is not None:
        slope = sw2 * float(kappa)
        q_slope = NumericValue(slope, 0.0)
        if abs(slope - 1.0) <= _CRITICAL_TOLERANCE and sb2 == 0:
            q_star, status, scale_free = None, "every q is a fixed point (the q-map is the identity)", True
        elif slope < 1.0 and sb2 > 0:
            value = sb2 / (1.0 - slope)
            q_star, status = FixedPoint(value, 0.0, slope, 0.0), "unique, stable"
        elif slope < 1.0:
            q_star, status, scale_free = FixedPoint(0.0, 0.0, slope, 0.0), "q* = 0: the signal vanishes geometrically", True
        else:
            q_star, status, scale_free = None, "none: the length grows without bound", True
    else:
        q_star, status = _q_fixed_point(numbers, act, sw2, sb2)
        q_slope = NumericValue(q_star.slope, q_star.slope_error) if q_star is not None else None
    q_at = q_star.value if q_star is not None and not scale_free else 1.0
    chi_1 = _chi_1(numbers, q_at, sw2)
    if abs(chi_1.value - 1.0) <= max(_CRITICAL_TOLERANCE, 2 * chi_1.error_estimate):
        phase = "critical"
    else:
        phase = "ordered" if chi_1.value < 1.0 else "chaotic"
    if q_at > 0:
        c_points = _CorrelationMap(act, sw2, sb2, q_at, scale_free).fixed_points()
    else:  # q* = 0: the layers act on vanishing signals, where phi is linear and the c-map has slope chi_1 at 1
        c_points = [FixedPoint(1.0, 0.0, chi_1.value, chi_1.error_estimate)]
    stable = [p for p in c_points if p.stable]
    if phase == "critical" or scale_free:
        xi_c = math.inf if not stable else stable[0].depth_scale  # scale-free: c* = 1 has slope 1 at every sigma_w
    elif stable:
        xi_c = stable[0].depth_scale
    else:
        xi_c = None
    xi_q = FixedPoint(0, 0, q_slope.value, q_slope.error_estimate).depth_scale if q_slope is not None else None
    derivations = [q_map(act, _rational(sw2), _rational(sb2))]
    if q_star is not None and not scale_free:
        derivations.append(_fixed_point_derivation(act, sw2, sb2, q_star, kappa))
    derivations.append(_chi_1_derivation(act, sw2, q_at, chi_1, scale_free))
    if scale_free:
        derivations.append(_scale_free_c_map(act))
    elif q_at > 0 and _closed_in_c(act, sp.Float(q_at)):
        q_value = _rational(q_at) if kappa is not None else sp.Float(q_at, 17)
        derivations.append(c_map(act, _rational(sw2), _rational(sb2), q_value))
    return MeanField(act, sw2, sb2, q_star, status, chi_1, tuple(c_points), phase, xi_q, xi_c, scale_free,
                     tuple(derivations))


@dataclass(frozen=True)
class LengthFixedPoint:
    r"""The fixed point :math:`q^*` of the q-map alone, with the Gaussian averages there.

    ``point`` is None when every q is a fixed point (``every_q``: a homogeneous activation at its
    critical weight variance) or when the length grows without bound (``status`` says which).
    ``derivative_second`` is :math:`E[\phi'(\sqrt{q^*} z)^2]` and ``second`` :math:`E[\phi(\sqrt{q^*} z)^2]`
    (at q = 1 when every q is a fixed point: they are then proportional to q and q).
    """

    point: FixedPoint | None
    status: str
    every_q: bool
    second: NumericValue | None
    derivative_second: NumericValue | None


def q_fixed_point(activation: Activation | str, weight_variance: object, bias_variance: object = 0.0) -> LengthFixedPoint:
    r"""The stable fixed point of :math:`q \mapsto \sigma_w^2 E[\phi(\sqrt q z)^2] + \sigma_b^2` (Schoenholz et al. 2017, eq. 3).

    The length part of :func:`mean_field` without the correlation map: cheap enough for a table over
    many activations. The averages at :math:`q^*` come from the same Gauss-Legendre quadrature.
    """
    act = _as_activation(activation)
    sw2 = _variance_value(weight_variance, "the weight variance", positive=True)
    sb2 = _variance_value(bias_variance, "the bias variance")
    numbers = _Moments(act)
    kappa = _homogeneous_slope(act)
    if kappa is not None:
        slope = sw2 * float(kappa)
        if abs(slope - 1.0) <= _CRITICAL_TOLERANCE and sb2 == 0:
            return LengthFixedPoint(None, "every q is a fixed point (the q-map is the identity)", True,
                                    numbers.second(1.0), numbers.derivative_second(1.0))
        if slope < 1.0:
            value = sb2 / (1.0 - slope)
            point = FixedPoint(value, 0.0, slope, 0.0)
        else:
            return LengthFixedPoint(None, "none: the length grows without bound", False, None, None)
        status = "unique, stable" if value > 0 else "q* = 0: the signal vanishes geometrically"
    else:
        point, status = _q_fixed_point(numbers, act, sw2, sb2)
        if point is None:
            return LengthFixedPoint(None, status, False, None, None)
    q = point.value
    if q > 0:
        return LengthFixedPoint(point, status, False, numbers.second(q), numbers.derivative_second(q))
    at_zero = float(act.numpy_derivative(np.array([0.0]))[0]) ** 2
    return LengthFixedPoint(point, status, False, NumericValue(0.0, 0.0), NumericValue(at_zero, 0.0))


def _rational(value: float) -> sp.Expr:
    """A float as the simplest rational within float64 rounding (2.0 -> 2, 0.05 -> 1/20), else as a 17-digit Float."""
    rational = sp.Rational(value).limit_denominator(10**6)
    return rational if abs(float(rational) - value) <= 1e-15 * max(1.0, abs(value)) else sp.Float(value, 17)


def _q_fixed_point(numbers: _Moments, act: Activation, sw2: float, sb2: float) -> tuple[FixedPoint | None, str]:
    """The positive fixed points of the q-map by bracketing on a log grid and Brent's method."""
    from scipy.optimize import brentq

    def gap(q: float) -> float:
        return numbers.q_map(q, sw2, sb2).value - q

    grid = np.concatenate(([0.0], np.geomspace(1e-8, 1e6, 57)))
    values = [gap(q) for q in grid]
    roots = []
    for left, right, g_left, g_right in zip(grid[:-1], grid[1:], values[:-1], values[1:]):
        if g_left == 0.0 and left > 0:
            roots.append(left)
        elif g_left * g_right < 0:
            roots.append(brentq(gap, left, right, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=200))
    points = []
    for root in roots:
        image = numbers.q_map(root, sw2, sb2)
        slope = numbers.q_map_slope(root, sw2)
        distance = (abs(image.value - root) + image.error_estimate) / max(abs(1.0 - slope.value), 1e-300)
        points.append(FixedPoint(root, max(distance, 4 * np.finfo(float).eps * root), slope.value, slope.error_estimate))
    stable = [p for p in points if p.stable]
    if stable:
        return stable[0], "unique, stable" if len(points) == 1 else f"stable (of {len(points)} positive fixed points)"
    if points:
        return points[0], "unstable"
    if values[-1] > 0:
        return None, "none: the length grows without bound"
    return FixedPoint(0.0, 0.0, numbers.q_map_slope(0.0, sw2).value, 0.0), "q* = 0: the signal vanishes"


def _chi_1(numbers: _Moments, q: float, sw2: float) -> NumericValue:
    m = numbers.derivative_second(q) if q > 0 else NumericValue(float(numbers.act.numpy_derivative(np.array([0.0]))[0]) ** 2, 0.0)
    return NumericValue(sw2 * m.value, sw2 * m.error_estimate, m.quadrature)


class _CorrelationMap:
    r"""The c-map :math:`c \mapsto (\sigma_w^2 K(c) + \sigma_b^2)/q^*` as a number, and its fixed points."""

    def __init__(self, act: Activation, sw2: float, sb2: float, q: float, scale_free: bool) -> None:
        self.act, self.sw2, self.sb2, self.q, self.scale_free = act, sw2, sb2, q, scale_free
        closed = cross_expectation(act, q, q, C)  if _closed_in_c(act, sp.Float(q)) else None
        self._kernel = None
        self._derivative = None
        if closed is not None:
            self._kernel = sp.lambdify(C, closed.value, modules=["mpmath"])
            self._derivative = sp.lambdify(C, cross_expectation(act, q, q, C, derivative=True).value, modules=["mpmath"])
        self.normaliser = self.kernel(1.0)[0] if scale_free else None

    def kernel(self, c: float) -> tuple[float, float]:
        if self._kernel is not None:
            return float(self._kernel(c).real), 0.0
        result = cross_expectation(self.act, self.q, self.q, c)
        return float(result.value), result.error_estimate or 0.0

    def derivative_kernel(self, c: float) -> tuple[float, float]:
        if self._derivative is not None:
            return float(self._derivative(c).real), 0.0
        result = cross_expectation(self.act, self.q, self.q, c, derivative=True)
        return float(result.value), result.error_estimate or 0.0

    def __call__(self, c: float) -> tuple[float, float]:
        k, error = self.kernel(c)
        if self.scale_free:
            return k / self.normaliser, error / abs(self.normaliser)
        return (self.sw2 * k + self.sb2) / self.q, self.sw2 * error / self.q

    def slope(self, c: float) -> tuple[float, float]:
        """:math:`dc^l/dc^{l-1} = \\sigma_w^2 E[\\phi'\\phi']` (Price's theorem: dK/dc = q E[phi' phi'])."""
        kd, error = self.derivative_kernel(c)
        if self.scale_free:
            return kd / self.normaliser, error / abs(self.normaliser)
        return self.sw2 * kd, self.sw2 * error

    def fixed_points(self) -> list[FixedPoint]:
        from scipy.optimize import brentq

        points = [FixedPoint(1.0, 0.0, *self.slope(1.0))]

        def gap(c: float) -> float:
            return self(c)[0] - c

        grid = np.linspace(-1.0, 1.0, 41)[:-1]
        grid = np.append(grid, 1.0 - 1e-6)
        values = [gap(c) for c in grid]
        for left, right, g_left, g_right in zip(grid[:-1], grid[1:], values[:-1], values[1:]):
            if g_left * g_right < 0:
                root = brentq(gap, left, right, xtol=1e-13, maxiter=200)
                image, error = self(root)
                slope, slope_error = self.slope(root)
                distance = (abs(image - root) + error) / max(abs(1.0 - slope), 1e-300)
                points.append(FixedPoint(root, max(distance, 1e-15), slope, slope_error))
        return points


# --- derivations of the numbers -----------------------------------------------------------------


def _fixed_point_derivation(act: Activation, sw2: float, sb2: float, point: FixedPoint, kappa: sp.Expr | None) -> Derivation:
    b = _Builder(f"The length fixed point of {_named(act)}")
    l = LAYER
    fixed = b.model(_q[l], _q[l - 1], Rule.FIXED_POINT, prose("at a fixed point the length stops changing, ",
                                                                 sp.Eq(_q[l], _q[l - 1]), " = ", Q_STAR),
                    source=f"{SCHOENHOLZ}, after eq. (3)")
    if kappa is not None:
        equation = sp.Eq(Q_STAR, _rational(sw2) * kappa * Q_STAR + _rational(sb2))
        value = sp.solve(equation, Q_STAR)[0]
        b.add(Q_STAR, value, Rule.SOLVE, prose("solve ", equation, " (a linear q-map)"),
              proof=Solve(equation, Q_STAR), uses=(fixed,))
        return b.build(value, summary=prose("The q-map is linear, so its fixed point is ", sp.Eq(Q_STAR, value), "."))
    number = sp.Float(point.value, 17)
    b.add(Q_STAR, number, Rule.FIXED_POINT,
          prose(f"Brent's method on the q-map minus the identity (error estimate {point.error_estimate:.1e})"),
          proof=_MapResidual(act, sw2, sb2, point.error_estimate), uses=(fixed,))
    return b.build(number, summary=prose("The fixed point of the q-map, found numerically and re-checked by "
                                         "applying the map to it."))


def _chi_1_derivation(act: Activation, sw2: float, q: float, chi_1: NumericValue, scale_free: bool) -> Derivation:
    b = _Builder(f"The slope of the c-map of {_named(act)} at c = 1")
    z = _Z
    defined = b.define(_CHI1, SIGMA_W**2 * Expect(DPhi(sp.sqrt(Q_STAR) * z) ** 2),
                       prose("the slope of the c-map at ", sp.Eq(C, 1), ", the mean squared singular value of the "
                             "layer's Jacobian"), source=f"{SCHOENHOLZ}, eq. (5); {POOLE}, eq. (7)")
    m = moments(act).derivative_second_moment
    integral = b.add(Expect(DPhi(sp.sqrt(Q_STAR) * z) ** 2), m.expr.subs(Q, Q_STAR), Rule.GAUSSIAN_INTEGRAL,
                     prose(z, f" is a standard Gaussian ({m.route})"), proof=Integral(act.derivative**2, Q_STAR))
    general = SIGMA_W**2 * m.expr.subs(Q, Q_STAR)
    b.identity(_CHI1, general, Rule.SUBSTITUTION, "the Gaussian integral", uses=(defined, integral))
    weights = b.define(SIGMA_W, sp.sqrt(_rational(sw2)), prose("the weight variance ",
                                                               sp.Eq(SIGMA_W**2, _rational(sw2), evaluate=False)))
    value = general.subs(SIGMA_W, sp.sqrt(_rational(sw2)))
    uses = [weights]
    if value.has(Q_STAR) and not scale_free:
        fixed = b.define(Q_STAR, sp.Float(q, 17), prose("the fixed point of the q-map"))
        value = value.subs(Q_STAR, sp.Float(q, 17))
        uses.append(fixed)
    value = _simplified(value) if not value.has(sp.Integral) else value
    b.then(value, Rule.SUBSTITUTION, "the values", uses=uses)
    if value.has(sp.Integral):
        b.add(_CHI1, sp.Float(chi_1.value, 17), Rule.SUBSTITUTION, "the quadrature evaluated numerically",
              proof=Numeric(value, chi_1.error_estimate), uses=(b.current,))
        value = sp.Float(chi_1.value, 17)
    return b.build(value, summary=prose(_CHI1, " below 1 is the ordered phase, above 1 the chaotic phase; ",
                                        sp.Eq(_CHI1, 1), " is the edge of chaos."))


def _scale_free_c_map(act: Activation) -> Derivation:
    r"""The c-map of a positively homogeneous activation without bias: :math:`K(c)/K(1)`, any q."""
    q = sp.Symbol("q", positive=True)
    l = LAYER
    b = _Builder(f"The c-map of {_named(act)} (scale-free)")
    defined = b.model(
        _c[l], Expect(Phi(_U1) * Phi(_U2)) / Expect(Phi(_U1) ** 2), Rule.INDEPENDENCE,
        prose("without bias the weight variance cancels from the correlation, at any length ", q),
        assumptions=(_A_WEIGHTS, _A_MEANFIELD), exactness="asymptotic", source=f"{SCHOENHOLZ}, eq. (4)")
    kernel = cross_expectation(act, q, q, _c[l - 1])
    k_step = b.add(Expect(Phi(_U1) * Phi(_U2)), kernel.value, Rule.GAUSSIAN_INTEGRAL,
                   prose(f"the bivariate Gaussian integral ({kernel.route})"), proof=Kernel(act, q, _c[l - 1]),
                   source=CHO_SAUL if "arc-cosine" in kernel.route else "")
    m2 = moments(act).second_moment.expr.subs(Q, q)
    m_step = b.add(Expect(Phi(_U1) ** 2), m2, Rule.GAUSSIAN_INTEGRAL, prose(_U1, " is centred Gaussian with variance ", q),
                   proof=Integral(act.expr**2, q))
    value = _simplified(kernel.value / m2)
    b.identity(_c[l], value, Rule.SUBSTITUTION, "the two integrals", uses=(defined, k_step, m_step))
    return b.build(value, summary=prose(f"The correlation map of {_named(act)} without bias: it does not depend "
                                        "on the length or on the weight variance."))


# --- the edge of chaos --------------------------------------------------------------------------


def edge_of_chaos(activation: Activation | str, bias_variances: Iterable[object]) -> tuple[EdgePoint, ...]:
    r"""The critical line :math:`\chi_1 = 1` as :math:`\sigma_w^2(\sigma_b^2)` (Schoenholz et al. 2017, Fig. 1).

    On the line the two conditions :math:`\sigma_w^2 E[\phi'(\sqrt q z)^2] = 1` and
    :math:`q = \sigma_w^2 E[\phi(\sqrt q z)^2] + \sigma_b^2` hold at :math:`q = q^*`, so the line is
    parametrised by :math:`q^*`:

    .. math:: \sigma_w^2 = \frac{1}{E[\phi'(\sqrt{q^*} z)^2]}, \qquad
              \sigma_b^2 = q^* - \frac{E[\phi(\sqrt{q^*} z)^2]}{E[\phi'(\sqrt{q^*} z)^2]};

    for each requested :math:`\sigma_b^2` the second equation is solved for :math:`q^*` by Brent's method.

    Raises
    ------
    VarpropError
        When the line does not reach a requested bias variance for this activation (e.g. relu: only
        :math:`\sigma_b^2 = 0`, where every :math:`q^*` is critical at :math:`\sigma_w^2 = 2`).
    """
    from scipy.optimize import brentq

    act = _as_activation(activation)
    targets = [_variance_value(v, "the bias variance") for v in bias_variances]
    if len(targets) > 10_000:
        raise VarpropError(f"at most 10000 bias variances, got {len(targets)}")
    numbers = _Moments(act)
    kappa = _homogeneous_slope(act)
    out = []
    if kappa is not None:
        for target in targets:
            if target != 0:
                raise VarpropError(
                    f"{act} has no edge of chaos at sigma_b^2 = {target:g}: its q-map is linear, so chi_1 = 1 "
                    f"(sigma_w^2 = {1 / float(kappa):g}) makes the length grow without bound; only sigma_b^2 = 0 is critical")
            out.append(EdgePoint(0.0, 1.0 / float(kappa), None))  # every q is a fixed point there
        return tuple(out)

    def line(q: float) -> tuple[float, float]:
        d2 = numbers.derivative_second(q).value
        if d2 <= 0:
            raise VarpropError(f"E[phi'(z)^2] vanishes at q = {q:g} for {act}: no edge of chaos there")
        return 1.0 / d2, q - numbers.second(q).value / d2

    q_grid = np.geomspace(1e-10, 1e4, 60)
    sb_grid = np.array([line(q)[1] for q in q_grid])
    for target in targets:
        if target == 0 and abs(float(act.numpy(np.array([0.0]))[0])) == 0:
            d0 = float(act.numpy_derivative(np.array([0.0]))[0]) ** 2
            if d0 > 0:
                out.append(EdgePoint(0.0, 1.0 / d0, 0.0))
                continue
        gaps = sb_grid - target
        crossings = np.nonzero(np.sign(gaps[:-1]) * np.sign(gaps[1:]) <= 0)[0]
        if crossings.size == 0:
            raise VarpropError(
                f"the edge of chaos of {act} does not reach sigma_b^2 = {target:g} "
                f"(sigma_b^2 on the line ranges over [{sb_grid.min():.3g}, {sb_grid.max():.3g}] for q* in [1e-10, 1e4])")
        i = int(crossings[0])
        q = brentq(lambda q, target=target: line(q)[1] - target, q_grid[i], q_grid[i + 1], xtol=1e-14, rtol=1e-14, maxiter=200)
        out.append(EdgePoint(target, line(q)[0], q))
    return tuple(out)


# --- iterating the c-map and the power law at criticality ---------------------------------------


def _correlation_map(result: MeanField) -> _CorrelationMap:
    if not isinstance(result, MeanField):
        raise VarpropError(f"expected a MeanField result (mean_field), got {type(result).__name__}")
    q = result.q_star.value if result.q_star is not None and not result.scale_free else 1.0
    if q <= 0:
        raise VarpropError("at q* = 0 the c-map is not defined (the signal vanishes); it has slope chi_1 at c = 1")
    return _CorrelationMap(result.activation, result.weight_variance, result.bias_variance, q, result.scale_free)


def c_map_values(result: MeanField, correlations: Sequence[float]) -> np.ndarray:
    """The c-map of ``result`` (Schoenholz eq. 4) at each correlation in ``correlations`` (in [-1, 1], at most 10 000)."""
    values = np.asarray(correlations, dtype=float)
    if values.ndim != 1 or values.size > 10_000 or not np.all(np.isfinite(values)):
        raise VarpropError("correlations must be a flat sequence of at most 10000 finite numbers")
    if np.any(np.abs(values) > 1):
        bad = values[np.abs(values) > 1][0]
        raise VarpropError(f"a correlation must be in [-1, 1], got {bad!r}")
    cmap = _correlation_map(result)
    return np.array([min(1.0, max(-1.0, cmap(float(c))[0])) for c in values])


def iterate_c_map(result: MeanField, c0: float, depth: int) -> np.ndarray:
    """The correlations :math:`c^0, c^1, \\dots, c^{depth}` under the c-map of ``result``."""
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= 100_000:
        raise VarpropError(f"depth must be an integer in [0, 100000], got {depth!r}")
    c0 = float(c0)
    if not -1.0 <= c0 <= 1.0:
        raise VarpropError(f"the initial correlation must be in [-1, 1], got {c0!r}")
    cmap = _correlation_map(result)
    values = [c0]
    for _ in range(depth):
        values.append(min(1.0, max(-1.0, cmap(values[-1])[0])))
    return np.array(values)


@lru_cache(maxsize=1)
def relu_power_law() -> Derivation:
    r"""At criticality relu's correlation approaches 1 as a power of the depth, not exponentially.

    With :math:`\epsilon_l = 1 - c_l` and the c-map of relu under He's init,
    :math:`c \mapsto (\sqrt{1-c^2} + (\pi - \arccos c)\,c)/\pi` (Cho & Saul 2009), sympy's series gives

    .. math:: \epsilon_{l+1} = \epsilon_l - a\,\epsilon_l^{3/2} + O(\epsilon_l^{5/2}), \qquad a = \frac{2\sqrt 2}{3\pi}

    (there is no :math:`\epsilon^2` term). For :math:`w_l = \epsilon_l^{-1/2}` this is
    :math:`w_{l+1} = w_l + a/2 + \tfrac{3a^2}{8}/w_l + O(w_l^{-2})`, so
    :math:`w_l = \tfrac a2 l + \tfrac{3a}{4}\log l + O(1)` and

    .. math:: 1 - c_l \sim \frac{k}{l^2}, \qquad k = \frac{4}{a^2} = \frac{9\pi^2}{2}.
    """
    eps, l = _EPS, LAYER
    b = _Builder("How fast relu's correlations approach 1 at criticality")
    c_prev = _c[l - 1]
    cmap = _scale_free_c_map(_builtin("relu")).result
    relu_map = b.define(_c[l], cmap, prose("the c-map of relu under He's init"), source=f"{CHO_SAUL}; {SCHOENHOLZ}, eq. (4)")
    one_minus = b.define(_EPS, 1 - c_prev, prose("the distance from the fixed point, ", sp.Eq(_EPS, 1 - c_prev)))
    exact_gap = 1 - cmap.subs(c_prev, 1 - eps)
    series = _series(exact_gap, eps, sp.S.Zero, 3)
    b.add(1 - _c[l], series, Rule.ALGEBRA, prose("sympy's series of ", 1 - _c[l], " in ", eps, " to order ", eps**3,
                                                   " (the remainder is of order ", eps ** sp.Rational(5, 2), ")"),
          proof=_Series(exact_gap, eps, 3), uses=(relu_map, one_minus), exactness="asymptotic")
    a = -series.coeff(eps ** sp.Rational(3, 2))
    if series.coeff(eps) != 1 or a == 0 or series.coeff(eps**2) != 0:
        raise DerivationError(f"unexpected expansion of the relu c-map: {series}")
    a_symbol = sp.Symbol("a", positive=True)
    a_step = b.define(a_symbol, a, prose("the coefficient of ", eps ** sp.Rational(3, 2)))
    w = sp.Symbol("w", positive=True)
    increment = _series((1 - a_symbol / w) ** sp.Rational(-1, 2) * w - w, w, sp.oo, 3)
    step = b.add(_w[l + 1] - _w[l], increment, Rule.ALGEBRA,
                 prose("with ", sp.Eq(_w[l], _EPS ** sp.Rational(-1, 2)), " the map is ",
                       sp.Eq(_w[l + 1], _w[l] * (1 - a_symbol / _w[l]) ** sp.Rational(-1, 2)),
                       " up to terms of relative order ", _w[l] ** -3, "; expanded for large ", sp.Eq(w, _w[l])),
                 proof=_Series((1 - a_symbol / w) ** sp.Rational(-1, 2) * w - w, w, 3, at=sp.oo), exactness="asymptotic")
    k = sp.Symbol("k", positive=True)
    k_value = sp.simplify(4 / a**2)
    b.add(k, 4 / a_symbol**2, Rule.ALGEBRA,
          prose("the increment tends to ", a_symbol / 2, ", so ", _w[l], " grows like ", a_symbol * l / 2,
                " (the ", 1 / w, " term adds only a logarithm) and ", sp.Eq(k, sp.Limit(l**2 * _EPS, l, sp.oo)),
                " = ", 4 / a_symbol**2),
          proof=_LeadingPowerLaw(w), uses=(step,), exactness="asymptotic")
    b.identity(k, k_value, Rule.SUBSTITUTION, "the coefficient a", uses=(b.current, a_step))
    return b.build(k_value, summary=prose(
        "At the edge of chaos relu's correlation of two inputs approaches 1 like ", sp.Eq(1 - _c[l], k / l**2),
        " (a power law, not an exponential), with ", sp.Eq(k, k_value), "; the next correction is a factor ",
        1 - 3 * sp.log(l) / l, "."), a=a, k=k_value)


@lru_cache(maxsize=32)
def _series(expr: sp.Expr, variable: sp.Symbol, at: sp.Expr, order: int) -> sp.Expr:
    """sympy's series without the order term (cached: the acos series of the relu c-map takes a second)."""
    return sp.expand(sp.series(expr, variable, at, order).removeO())


@dataclass(frozen=True)
class _Series(Check):
    """The step's right side is sympy's series of ``expr`` in ``variable`` to ``order`` (at ``at``)."""

    expr: sp.Expr
    variable: sp.Symbol
    order: int
    at: sp.Expr = sp.S.Zero
    kind = "identity"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        series = _series(self.expr, self.variable, self.at, self.order)
        ok = _is_zero(sp.expand(series - step.rhs))
        return ok, f"sympy.series of {to_text(self.expr)} at {self.variable} = {self.at}" + ("" if ok else f" gives {series}")


@dataclass(frozen=True)
class _LeadingPowerLaw(Check):
    r"""From the increment :math:`w_{l+1} - w_l` (the step it uses): its limit :math:`d` at large
    :math:`w` gives :math:`w_l \sim d\,l`, so :math:`l^2 \epsilon_l = l^2 / w_l^2 \to 1/d^2`."""

    variable: sp.Symbol
    kind = "identity"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        increment = steps[step.uses[0]].rhs
        drift = sp.limit(increment, self.variable, sp.oo)
        if not drift.is_positive:
            return False, f"the increment tends to {drift}, not to a positive constant"
        l = sp.Symbol("l", positive=True)
        limit = sp.limit(l**2 / (drift * l) ** 2, l, sp.oo)
        ok = _is_zero(limit - step.rhs)
        return ok, f"the increment tends to {to_text(drift)}, so l^2 epsilon_l tends to {to_text(limit)}"


# --- the phase diagram ----------------------------------------------------------------------------


def correlation_depth_scale(activation: Activation | str, weight_variance: object, bias_variance: object,
                            *, panels: int = 8) -> float:
    r""":math:`\xi_c` (Schoenholz eq. 9) at one point, fast enough for a phase diagram.

    Ordered phase (:math:`\chi_1 < 1`): :math:`\xi_c = -1/\log\chi_1`; chaotic phase: the stable
    :math:`c^* < 1` is found by Brent's method on the c-map computed with a fixed tensor
    Gauss-Legendre rule of ``panels`` x 16 nodes per axis (about 1e-10 for tanh at moderate q*), and
    :math:`\xi_c = -1/\log\chi_c(c^*)`. Infinite at the edge of chaos; None when there is no length
    fixed point.
    """
    from scipy.optimize import brentq

    from .gaussian.bivariate import _rule

    act = _as_activation(activation)
    sw2 = _variance_value(weight_variance, "the weight variance", positive=True)
    sb2 = _variance_value(bias_variance, "the bias variance")
    numbers = _Moments(act)
    if _homogeneous_slope(act) is not None:
        raise VarpropError(f"{act} is positively homogeneous: its c-map has slope 1 at c = 1 for every sigma_w^2 "
                           "without bias, so it has no phase diagram of xi_c; use mean_field")
    point, _ = _q_fixed_point(numbers, act, sw2, sb2)
    if point is None or point.value <= 0:
        return None
    q = point.value
    chi_1 = _chi_1(numbers, q, sw2).value
    if abs(chi_1 - 1.0) <= _CRITICAL_TOLERANCE:
        return math.inf
    if chi_1 < 1.0:
        return -1.0 / math.log(chi_1)

    def c_map_gap(c: float) -> float:
        return (sw2 * _rule(act.numpy, q, q, c, panels) + sb2) / q - c

    # c* < 1 is where the map crosses the identity: below 1 the map is above the identity near 1 in chaos
    grid = np.linspace(-1.0, 1.0 - 1e-9, 21)
    values = [c_map_gap(c) for c in grid]
    for left, right, g_left, g_right in zip(grid[:-1], grid[1:], values[:-1], values[1:]):
        if g_left * g_right < 0:
            c_star = brentq(c_map_gap, left, right, xtol=1e-12)
            chi_c = sw2 * _rule(act.numpy_derivative, q, q, c_star, panels)
            return -1.0 / math.log(abs(chi_c)) if abs(chi_c) < 1 else math.inf
    return math.inf


def depth_scale_grid(activation: Activation | str, bias_variances: Sequence[float],
                     weight_variances: Sequence[float]) -> np.ndarray:
    r""":math:`\xi_c` on a grid: rows follow ``weight_variances``, columns ``bias_variances`` (NaN where
    there is no length fixed point). At most 10 000 points."""
    if len(bias_variances) * len(weight_variances) > 10_000:
        raise VarpropError(f"at most 10000 grid points, got {len(bias_variances)} x {len(weight_variances)}")
    out = np.full((len(weight_variances), len(bias_variances)), np.nan)
    for i, sw2 in enumerate(weight_variances):
        for j, sb2 in enumerate(bias_variances):
            value = correlation_depth_scale(activation, sw2, sb2)
            out[i, j] = np.nan if value is None else value
    return out
