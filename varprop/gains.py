r"""Framework gains beside the exact ones: what ``varprop gains`` prints.

For each activation :math:`\phi` and :math:`z \sim \mathcal N(0, 1)`, one row holds:

``torch``
    PyTorch's ``torch.nn.init.calculate_gain`` (a published constant, typed from PyTorch's documented
    table in :data:`varprop.weights.TORCH_GAINS`; ``None`` where PyTorch has none: gelu, silu, mish,
    elu, softplus).
``forward`` :math:`g_2(1) = 1/\sqrt{E[\phi(z)^2]}`
    the gain that keeps the second moment at :math:`q = 1`: :math:`g^2 E[\phi(z)^2] = 1`, so a layer
    with weight variance :math:`g^2/n_{in}` maps :math:`E[y^2] = 1` to :math:`E[y^2] = 1`
    (He et al. 2015, eq. 7, with the Gaussian integral in place of the symmetry lemma).
``backward`` :math:`g_1(1) = 1/\sqrt{E[\phi'(z)^2]}`
    the gain that keeps the gradient's second moment at :math:`q = 1`: :math:`\chi_1 = g^2 E[\phi'(z)^2] = 1`
    (Schoenholz et al. 2017, eq. 5; He et al. 2015, eq. 13).
``q*``
    the stable fixed point of :math:`q \mapsto g_\text{ref}^2 E[\phi(\sqrt q z)^2]` (Schoenholz et
    al. 2017, eq. 3, no bias): the second moment a deep net initialised with the reference gain
    :math:`g_\text{ref}` (PyTorch's where it has one, else :math:`g_2(1)`) settles at. "every q"
    for a homogeneous activation at its critical gain.
``forward at q*`` :math:`\sqrt{q^*/E[\phi(\sqrt{q^*} z)^2]}`
    the gain that keeps the second moment at :math:`q^*`; equal to :math:`g_\text{ref}` by the
    definition of :math:`q^*` (shown as a check of the fixed point).
``backward at q*`` :math:`1/\sqrt{E[\phi'(\sqrt{q^*} z)^2]}` and :math:`\chi_1 = g_\text{ref}^2 E[\phi'(\sqrt{q^*} z)^2]`
    the gain that would keep gradients at the length the net actually has, and the gradient growth
    per layer there under :math:`g_\text{ref}` (ordered below 1, chaotic above).
``NFNets gamma``
    Brock, De & Smith (2021), "Characterizing signal propagation to close the performance gap in
    unnormalized ResNets" (arXiv:2101.08692), the ``nonlinearities`` table of their code
    (deepmind-research, ``nfnets/base.py``): Monte Carlo estimates of
    :math:`\gamma = 1/\sqrt{\operatorname{Var}[\phi(z)]}` -- the **variance**, not the second
    moment -- beside the exact :math:`1/\sqrt{\operatorname{Var}[\phi(z)]}`. Their ``gelu`` is JAX's
    default tanh approximation (the row ``gelu_tanh``) and their ``leaky_relu`` has slope 0.01 (JAX's default).

Every difference is :math:`100\,(\text{published}/\text{exact} - 1)` percent. The exact values come
from the Gaussian expectation engine (:mod:`varprop.derive.gaussian`: closed forms where they exist,
quadrature with an error estimate otherwise); the fixed point from :func:`varprop.derive.meanfield.q_fixed_point`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

from .activations import Activation, activation, expression
from .derive.gaussian import moments
from .derive.meanfield import q_fixed_point
from .errors import VarpropError
from .weights import torch_gain

__all__ = ["NFNETS_GAMMA", "NFNETS_SOURCE", "GAIN_ACTIVATIONS", "Gain", "GainRow", "gain_row", "gains_table", "format_gains"]

#: Brock et al. (2021), deepmind-research ``nfnets/base.py``, ``nonlinearities``: published Monte Carlo
#: estimates of 1/sqrt(Var[phi(z)]), z ~ N(0, 1) (float32 digits as published).
NFNETS_GAMMA: dict[str, float] = {
    "identity": 1.0,
    "elu": 1.2716004848480225,
    "gelu": 1.7015043497085571,
    "leaky_relu": 1.70590341091156,
    "relu": 1.7139588594436646,
    "selu": 1.0008515119552612,
    "sigmoid": 4.803835391998291,
    "silu": 1.7881293296813965,
    "softplus": 1.9203323125839233,
    "tanh": 1.5939117670059204,
}
NFNETS_SOURCE = ("Brock, De & Smith 2021, arXiv:2101.08692 (deepmind-research nfnets/base.py, nonlinearities: "
                 "gamma = 1/sqrt(Var[phi(z)]) estimated by Monte Carlo)")

_MISH = "x*tanh(log(1 + exp(x)))"
#: JAX's default ``gelu`` (``approximate=True``), the one NFNets' gamma was estimated for.
_GELU_TANH = "0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x**3)))"


@dataclass(frozen=True)
class _Entry:
    label: str
    act: object  # a factory: () -> Activation (built lazily: parsing mish costs time)
    torch: tuple[str, object] | None  # (nonlinearity, param) for calculate_gain
    nfnets: str | None


def _builtin(name: str, **params: object):
    return lambda: activation(name, **params)


#: The activations of the table, in order: (label, activation, PyTorch's calculate_gain name and param, NFNets key).
GAIN_ACTIVATIONS: tuple[_Entry, ...] = (
    _Entry("relu", _builtin("relu"), ("relu", None), "relu"),
    _Entry("leaky_relu(0.01)", _builtin("leaky_relu", a=sp.Rational(1, 100)), ("leaky_relu", sp.Rational(1, 100)), "leaky_relu"),
    _Entry("leaky_relu(0.1)", _builtin("leaky_relu", a=sp.Rational(1, 10)), ("leaky_relu", sp.Rational(1, 10)), None),
    _Entry("leaky_relu(0.2)", _builtin("leaky_relu", a=sp.Rational(1, 5)), ("leaky_relu", sp.Rational(1, 5)), None),
    _Entry("leaky_relu(sqrt(5))", _builtin("leaky_relu", a=sp.sqrt(5)), ("leaky_relu", sp.sqrt(5)), None),
    _Entry("linear", _builtin("linear"), ("linear", None), "identity"),
    _Entry("tanh", _builtin("tanh"), ("tanh", None), "tanh"),
    _Entry("sigmoid", _builtin("sigmoid"), ("sigmoid", None), "sigmoid"),
    _Entry("selu", _builtin("selu"), ("selu", None), "selu"),
    _Entry("elu", _builtin("elu"), None, "elu"),
    _Entry("gelu", _builtin("gelu"), None, None),
    _Entry("gelu_tanh", lambda: expression(_GELU_TANH), None, "gelu"),
    _Entry("silu", _builtin("silu"), None, "silu"),
    _Entry("mish", lambda: expression(_MISH), None, None),
    _Entry("softplus", _builtin("softplus"), None, "softplus"),
)


@dataclass(frozen=True)
class Gain:
    """One exact gain: its value, the error estimate of a quadrature (0 for a closed form) and the route."""

    value: float
    error_estimate: float
    route: str
    expr: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"value": self.value, "error_estimate": self.error_estimate, "route": self.route, "expr": self.expr}


@dataclass(frozen=True)
class GainRow:
    """One activation's row of :func:`gains_table` (see the module docstring for each quantity)."""

    label: str
    activation: Activation
    torch: float | None
    torch_expr: str | None
    forward: Gain
    backward: Gain
    reference: float
    q_star: float | None
    q_star_status: str
    forward_at_q_star: float | None
    backward_at_q_star: float | None
    chi_1: float | None
    nfnets: float | None
    variance_gain: Gain

    @staticmethod
    def _percent(published: float | None, exact: float | None) -> float | None:
        if published is None or exact is None or exact == 0:
            return None
        return 100.0 * (published / exact - 1.0)

    @property
    def torch_vs_forward(self) -> float | None:
        return self._percent(self.torch, self.forward.value)

    @property
    def torch_vs_backward(self) -> float | None:
        return self._percent(self.torch, self.backward.value)

    @property
    def torch_vs_backward_at_q_star(self) -> float | None:
        return self._percent(self.torch, self.backward_at_q_star)

    @property
    def nfnets_vs_exact(self) -> float | None:
        return self._percent(self.nfnets, self.variance_gain.value)

    def to_dict(self) -> dict[str, object]:
        return {
            "activation": self.label,
            "expression": str(self.activation.expr),
            "torch_calculate_gain": self.torch,
            "torch_calculate_gain_expr": self.torch_expr,
            "forward_gain_q1": self.forward.to_dict(),
            "backward_gain_q1": self.backward.to_dict(),
            "reference_gain": self.reference,
            "q_star": self.q_star,
            "q_star_status": self.q_star_status,
            "forward_gain_q_star": self.forward_at_q_star,
            "backward_gain_q_star": self.backward_at_q_star,
            "chi_1_q_star": self.chi_1,
            "torch_vs_forward_percent": self.torch_vs_forward,
            "torch_vs_backward_percent": self.torch_vs_backward,
            "torch_vs_backward_q_star_percent": self.torch_vs_backward_at_q_star,
            "nfnets_gamma": self.nfnets,
            "exact_gamma": self.variance_gain.to_dict(),
            "nfnets_vs_exact_percent": self.nfnets_vs_exact,
        }


def _inverse_sqrt(expectation, what: str) -> Gain:
    number = expectation.evaluate()
    if not number.value > 0:
        raise VarpropError(f"{what} is {number.value}: no finite gain")
    value = 1.0 / math.sqrt(number.value)
    # d(m^-1/2) = -1/2 m^-3/2 dm
    error = 0.5 * number.error_estimate / number.value * value
    expr = None
    if expectation.exact:
        expr = str(sp.nsimplify(1 / sp.sqrt(expectation.expr)) if expectation.expr.is_Rational else 1 / sp.sqrt(expectation.expr))
    return Gain(value, float(error), expectation.route, expr)


@lru_cache(maxsize=64)
def _row(index: int) -> GainRow:
    entry = GAIN_ACTIVATIONS[index]
    act = entry.act()
    m = moments(act, sp.Integer(1))
    forward = _inverse_sqrt(m.second_moment, f"E[{entry.label}(z)^2]")
    backward = _inverse_sqrt(m.derivative_second_moment, f"E[{entry.label}'(z)^2]")
    variance_gain = _inverse_sqrt(m.variance, f"Var[{entry.label}(z)]")
    torch_value = torch_expr = None
    if entry.torch is not None:
        expr = torch_gain(*entry.torch)
        torch_value, torch_expr = float(expr), str(expr)
    reference = torch_value if torch_value is not None else forward.value
    fixed = q_fixed_point(act, reference**2)
    q_star = forward_q = backward_q = chi_1 = None
    if fixed.every_q:
        forward_q, backward_q = forward.value, backward.value
        chi_1 = reference**2 * fixed.derivative_second.value
    elif fixed.point is not None:
        q_star = fixed.point.value
        chi_1 = reference**2 * fixed.derivative_second.value
        backward_q = 1.0 / math.sqrt(fixed.derivative_second.value) if fixed.derivative_second.value > 0 else None
        forward_q = math.sqrt(q_star / fixed.second.value) if q_star > 0 else None
    nfnets = NFNETS_GAMMA.get(entry.nfnets) if entry.nfnets else None
    return GainRow(entry.label, act, torch_value, torch_expr, forward, backward, reference, q_star, fixed.status,
                   forward_q, backward_q, chi_1, nfnets, variance_gain)


def gain_row(label: str) -> GainRow:
    """The row of one activation of :data:`GAIN_ACTIVATIONS`, by its label (``tanh``, ``leaky_relu(0.2)``, ...)."""
    for index, entry in enumerate(GAIN_ACTIVATIONS):
        if entry.label == label:
            return _row(index)
    known = ", ".join(entry.label for entry in GAIN_ACTIVATIONS)
    raise VarpropError(f"no gains row for {label!r}; rows: {known}")


def gains_table() -> tuple[GainRow, ...]:
    """Every row of :data:`GAIN_ACTIVATIONS`."""
    return tuple(_row(index) for index in range(len(GAIN_ACTIVATIONS)))


def _number(value: float | None, width: int, digits: int = 6) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}g}"


def _pct(value: float | None, width: int = 8) -> str:
    if value is None:
        return f"{'-':>{width}}"
    return f"{(0.0 if abs(value) < 0.005 else value):>+{width - 1}.2f}%"  # no "-0.00%" from rounding


def format_gains(rows: tuple[GainRow, ...]) -> str:
    """Two readable text tables: PyTorch's gains against the exact ones, and NFNets' gammas against theirs."""
    lines = [
        "Gains for z ~ N(0, q). g2 = 1/sqrt(E[phi(z)^2]) keeps the second moment, g1 = 1/sqrt(E[phi'(z)^2]) keeps",
        "the gradient's (chi_1 = 1). q* is the stable fixed point of q -> g_ref^2 E[phi(sqrt(q) z)^2], g_ref = torch's",
        "gain (or g2 at q = 1 where torch has none); chi_1 = g_ref^2 E[phi'(z)^2] at q*. Differences: torch / exact - 1.",
        "",
        (f"{'activation':<20} {'torch':>8} {'g2(q=1)':>9} {'g1(q=1)':>9} {'torch-g2':>9} {'torch-g1':>9} "
         f"{'q*':>9} {'g1(q*)':>9} {'chi_1':>8}  route"),
    ]
    for row in rows:
        q = "every q" if row.q_star is None and row.chi_1 is not None else None
        q_text = f"{q:>9}" if q else _number(row.q_star, 9, 5)
        lines.append(
            f"{row.label:<20} {_number(row.torch, 8, 5)} {_number(row.forward.value, 9)} {_number(row.backward.value, 9)} "
            f"{_pct(row.torch_vs_forward, 9)} {_pct(row.torch_vs_backward, 9)} {q_text} "
            f"{_number(row.backward_at_q_star, 9)} {_number(row.chi_1, 8, 4)}  {row.forward.route}")
    lines += [
        "",
        "NFNets gamma = 1/sqrt(Var[phi(z)]), z ~ N(0, 1) (the variance, not the second moment): published Monte Carlo",
        "estimates beside the exact value. Source: Brock, De & Smith 2021, arXiv:2101.08692, the nonlinearities",
        "table of deepmind-research nfnets/base.py.",
        "",
        f"{'activation':<20} {'published':>12} {'exact':>12} {'difference':>11}",
    ]
    for row in rows:
        if row.nfnets is None:
            continue
        lines.append(f"{row.label:<20} {row.nfnets:>12.8f} {row.variance_gain.value:>12.8f} {_pct(row.nfnets_vs_exact, 11)}")
    lines.append("")
    lines.append("NFNets' gelu is JAX's default tanh approximation (gelu_tanh); varprop's gelu is the exact x Phi(x).")
    return "\n".join(lines) + "\n"
