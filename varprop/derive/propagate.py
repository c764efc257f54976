r"""The propagation engine: one walk through a network, one derivation per observable.

:func:`propagate` walks a :class:`~varprop.network.Network` layer by layer, forward from the input
and then backward from the loss :math:`\mathcal L = \langle g, h_\text{_t(out)}\rangle`,
:math:`g \sim \mathcal N(0, I)` independent of the network (as in :mod:`varprop.montecarlo`). Each
layer class has a forward and a backward rule in a registry keyed on the class
(:func:`forward_rule`, :func:`backward_rule`, ``functools.singledispatch``). A rule adds checked steps
(:mod:`varprop.derive.derivation`) to one list: definitions read from the layer's description, the
modelling statement with the exactness its assumptions give it (He et al. 2015, eqs. 7 and 11 for a
dense layer; the symmetry lemma or a Gaussian integral for a nonlinearity), and the identity that
substitutes the values. :meth:`Propagation.derivation` then returns, for any observable
(:mod:`varprop.observables`) at any place, the steps it rests on, renumbered; the derivation's
``result`` *is* the prediction the checker tests, and its exactness the weakest of those steps.

A pair of inputs (the network's inputs describe one: ``GaussianInput(correlation=c0)``,
``FixedInput(values, partner=...)``) is walked too: the partner's signals :math:`h'_p` by the same
forward rules (primed symbols), then the cross moments :math:`E[h_p h'_p]` by :func:`cross_rule`,
one rule per layer class, and the :class:`~varprop.observables.Correlation` as the ratio
:math:`E[h h']/\sqrt{E[h^2] E[{h'}^2]}` (Schoenholz et al. 2017, eq. 3). A dense layer gives
:math:`E[y y'] = n \operatorname{Var}[w] E[x x'] + E[b^2]`, exact at every width for iid zero-mean
weights (Poole et al. 2016, eq. 4). A nonlinearity gives the bivariate Gaussian kernel
:math:`E[\phi(u)\phi(v)]` at the pre-activations' second moments and cross moment
(:func:`varprop.derive.gaussian.bivariate.cross_expectation`, checked by independent
two-dimensional quadrature; at covariance 0, :math:`E[\phi(u)]E[\phi(v)]`): ``gaussian-exact`` for
a fixed pair through Gaussian weights, whose pre-activations are then exactly jointly Gaussian;
``asymptotic`` otherwise (random inputs, or any deeper layer), because the kernel is non-linear in
the random empirical covariance of the layer below.

Notation (He et al. 2015): dense layer :math:`l` maps :math:`x_l` to :math:`y_l = W_l x_l + b_l`;
:math:`n_l` is its fan-in, :math:`\hat n_l` its fan-out; :math:`\Delta x_l, \Delta y_l, \Delta W_l`
are gradients of :math:`\mathcal L`. A signal between two nonlinearities is :math:`h_p` (position p).

Exactness:

``exact``
    every finite width under the stated weight law: :math:`E[y^2] = n E[w^2] E[x^2] + E[b^2]` for
    zero-mean weights independent of x; :math:`E[\phi(y)^2] = \tfrac c2 E[y^2]` when sympy proves
    :math:`\phi(y)^2 + \phi(-y)^2 = c y^2` and y is symmetric; gradients that see only the
    independent loss direction g.
``gaussian-exact``
    a Gaussian integral at a pre-activation that is exactly Gaussian (a fixed input through Gaussian
    weights and biases).
``asymptotic``
    a Gaussian integral at a pre-activation that is Gaussian only as widths grow (central limit
    theorem), or He et al.'s independence of forward and backward quantities.
``approximation``
    Glorot's linear regime :math:`\phi(z) \approx z` for a non-linear :math:`\phi` (``linear_regime=True``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache, singledispatch

import sympy as sp

from ..activations import X, Activation
from ..errors import DerivationError, VarpropError
from ..network import WEIGHTED_LAYERS, Dense, FixedInput, Network, Nonlinearity
from ..observables import (
    Correlation,
    CrossMoment,
    Gradient,
    Mean,
    NormRatio,
    Observable,
    SecondMoment,
    Signal,
    Variance as VarianceObservable,
    legacy_name,
    resolve,
)
from .derivation import (
    U as _U2,
    V as _V2,
    BivariateIntegral,
    Code,
    DPhi,
    Modelling,
    Derivation,
    Expect,
    LEMMA_CONSTANT,
    Integral,
    Lemma,
    Numeric,
    NormalLaw,
    Phi,
    Rule,
    Variance,
    _Builder,
    closure,
    Prose,
    prose,
    weakest,
)
from .derivation import to_text as _t
from .gaussian import Q, evaluate, moments

__all__ = [
    "LAYER",
    "DEPTH",
    "SYMBOLS",
    "SymmetryLemma",
    "symmetry_lemma",
    "derivative_symmetry_lemma",
    "odd_lemma",
    "Quantity",
    "Propagation",
    "propagate",
    "derive",
    "forward_rule",
    "backward_rule",
    "cross_rule",
    "observable_rules",
    "Prediction",
    "LayerPrediction",
    "predict",
    "weakest",
]

#: Layer index l and depth L of the textbook recursions.
LAYER = sp.Symbol("l", integer=True, positive=True)
DEPTH = sp.Symbol("L", integer=True, positive=True)

n = sp.IndexedBase("n")  # fan-in n_l
nhat = sp.IndexedBase("nhat")  # fan-out \hat n_l
w = sp.IndexedBase("w")
b = sp.IndexedBase("b")
x = sp.IndexedBase("x")
y = sp.IndexedBase("y")
h = sp.IndexedBase("h")
dx = sp.IndexedBase("Delta_x")
dy = sp.IndexedBase("Delta_y")
dh = sp.IndexedBase("Delta_h")
dW = sp.IndexedBase("Delta_W")
ratio_base = sp.IndexedBase("R")
# The partner input's signals (a pair of inputs through the same network) and the pair's correlation.
x_pair, y_pair, h_pair = sp.IndexedBase("x'"), sp.IndexedBase("y'"), sp.IndexedBase("h'")
rho = sp.Function("rho")  # rho(h, h'): the correlation of a pair's signals
_PRIMED = {x: x_pair, y: y_pair, h: h_pair}
#: The indexed symbols of the notation, by name.
SYMBOLS = {"n": n, "nhat": nhat, "w": w, "b": b, "x": x, "y": y, "h": h, "Delta_x": dx, "Delta_y": dy,
           "Delta_h": dh, "Delta_W": dW, "R": ratio_base, "x'": x_pair, "y'": y_pair, "h'": h_pair, "rho": rho}

HE = "He et al. 2015"

A_IID = prose("the entries of ", sp.Symbol("W"), " are iid, and independent of the layer input")
A_UNCORRELATED = prose("the entries of ", sp.Symbol("W"), " are uncorrelated with equal variance (not independent: an "
                       "orthogonal matrix), and ", sp.Symbol("W"), " is independent of the layer input")
A_ZERO_MEAN_WEIGHTS = prose(sp.Eq(Expect(sp.Symbol("w")), 0), " (zero-mean weights; the bias has a mean)")
A_ZERO_MEAN = prose(sp.Eq(Expect(sp.Symbol("w")), 0), " (zero-mean weights and biases)")
A_SYMMETRIC = "the pre-activation is symmetric about 0 (symmetric weight law)"
A_GRAD_INDEP = prose("the gradient with respect to the pre-activation is independent of ", sp.Symbol("W"),
                     " (He et al.'s gradient-independence assumption)")
A_DERIV_INDEP = prose(DPhi(sp.Symbol("y")), " is independent of the gradient arriving from above")
A_DY_X_INDEP = "the gradient with respect to the pre-activation is independent of the layer input"
A_LINEAR_REGIME = prose(Phi(sp.Symbol("z")), " is linear near 0 with ", sp.Eq(Phi(0), 0), " and ", sp.Eq(DPhi(0), 1),
                        " (Glorot's linear regime)")


#: Symbols that only appear in the words of steps: the weight matrix, the loss direction g ~ N(0, I), the
#: input correlation c0 and variance v, and entry indices.
_W = sp.IndexedBase("W")
_G, _IDENTITY = sp.Symbol("g"), sp.Symbol("I")
_C0, _V_WORD = sp.Symbol("c_0"), sp.Symbol("v")
_I, _J = sp.symbols("i j", integer=True)
_WIDTH = sp.Symbol("n", integer=True, positive=True)


def _entry(symbol: sp.Indexed, index: sp.Expr) -> sp.Indexed:
    """Entry ``index`` of a layer's signal or gradient: :math:`y_2 \\to y_{2,i}`."""
    return symbol.base[(*symbol.indices, index)]


def _weight_assumption(law: object) -> str:
    """iid entries, or (an orthogonal matrix) uncorrelated entries: what the dense rules need is the latter."""
    return A_IID if law.iid else A_UNCORRELATED


def _gaussian_assumption(gaussian: bool, centred: bool = True) -> str:
    if gaussian:
        return "the pre-activation is exactly Gaussian (a fixed input through Gaussian weights)"
    if not centred:
        return "the pre-activation is Gaussian with the bias's mean (wide layers: central limit theorem)"
    return "the pre-activation is Gaussian with mean 0 (wide layers: central limit theorem)"


# --- lemmas ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SymmetryLemma:
    r""":math:`g(y) + g(-y) = c \cdot y^{p}` for all :math:`y \ne 0`, proved by sympy.

    ``statement`` is :math:`g(t) + g(-t) - c t^p` for a positive symbol t (zero when the lemma holds).
    """

    holds: bool
    constant: sp.Expr | None
    expression: sp.Expr
    pair: sp.Expr | None = None
    power: int = 0

    def proof(self, conclusion: sp.Expr) -> Lemma:
        """The check of a step whose right side is ``conclusion`` (in :data:`LEMMA_CONSTANT`) with c from this lemma."""
        return Lemma(self.pair, self.power, conclusion)


_T = sp.Symbol("y", positive=True)
#: The variable of stored lemma statements (real, sign unknown); a lemma holds for every U > 0.
_U = sp.Symbol("u", real=True)


@lru_cache(maxsize=256)
def _lemma(g: sp.Expr, power: int) -> SymmetryLemma:
    both = g.subs(X, _T) + g.subs(X, -_T)
    if both.has(sp.Piecewise):
        both = sp.piecewise_fold(both)
    constant = sp.simplify(both / _T**power)
    holds = not constant.has(_T) and not constant.has(sp.Piecewise)
    if not holds:
        return SymmetryLemma(False, None, both)
    # Stored in a real variable without a sign, so that the check (which substitutes a positive one) has work to do.
    return SymmetryLemma(True, constant, both, g.subs(X, _U) + g.subs(X, -_U), power)


def symmetry_lemma(act: Activation) -> SymmetryLemma:
    r"""Test :math:`\phi(y)^2 + \phi(-y)^2 = c\,y^2`; then :math:`E[\phi(y)^2] = \tfrac c2 E[y^2]` for symmetric y.

    For relu this is the identity behind He et al. (2015), eq. (8): :math:`c = 1`.
    """
    return _lemma(act.expr**2, 2)


def derivative_symmetry_lemma(act: Activation) -> SymmetryLemma:
    r"""Test :math:`\phi'(y)^2 + \phi'(-y)^2 = c'`; then :math:`E[\phi'(y)^2] = c'/2` for symmetric y without an atom at 0."""
    return _lemma(act.derivative**2, 0)


def odd_lemma(act: Activation) -> SymmetryLemma:
    r"""Test :math:`\phi(y) + \phi(-y) = c`; then :math:`E[\phi(y)] = c/2` for symmetric y (tanh: 0, sigmoid: 1/2)."""
    return _lemma(act.expr, 0)


@lru_cache(maxsize=256)
def _is_identity(act: Activation) -> bool:
    """True when phi(y) = y (a linear network): simplify of a Piecewise is slow, so once per activation."""
    return sp.simplify(act.expr - X) == 0


@lru_cache(maxsize=256)
def _zero_on_negatives(act: Activation) -> bool:
    """True when phi vanishes on y < 0 (relu): then a whole layer is zero with probability 2^-n."""
    probe = sp.Symbol("probe", negative=True)
    return sp.simplify(act.expr.subs(X, probe)) == 0


@lru_cache(maxsize=256)
def _norm_scaling(act: Activation) -> sp.Expr | None:
    """c when sympy proves phi(y)^2 = c y^2 for every y (identity, abs): then |phi(h)|^2 = c |h|^2 exactly."""
    ratio = sp.simplify(sp.piecewise_fold(act.expr**2) / X**2)
    return None if ratio.has(X) or ratio.has(sp.Piecewise) else ratio


# --- states ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quantity:
    """A moment the walk has derived: ``symbol = value``, stated by step ``step``."""

    symbol: sp.Expr
    value: sp.Expr
    step: int


@dataclass(frozen=True)
class _Signal:
    """What the walk knows of the signal at one position."""

    position: int
    symbol: sp.Expr
    width: int | sp.Expr
    mean: Quantity
    second: Quantity
    deterministic: bool = False  # a fixed vector (the fixed input)
    gaussian: bool = False  # exactly Gaussian entries
    symmetric: bool = False  # symmetric about zero
    homogeneous: bool = True  # E[|h|^2 | input] = |input|^2 * constant, exactly
    isometric: bool = False  # |h|^2 = |input|^2 * constant for every network (orthogonal weights, no bias)
    preactivation: bool = False  # a dense layer's output: a sum, Gaussian at least as widths grow (any mean)
    p_nonzero: sp.Expr = sp.Integer(1)  # P(the vector is not identically zero)
    p_exact: bool = True  # whether p_nonzero is exact
    # units independent given the layer input (independent rows of W): a rectifier zeroes all n of them with
    # probability 2^-n; not so for a convolution's units, which share weights
    independent_units: bool = True


class PositionsUnknown(DerivationError):
    """A Gaussian integral needs the per-position second moments, which a BatchNorm over channels leaves underived."""


@dataclass(frozen=True)
class _Gradient:
    """What the walk knows of the gradient with respect to the signal at one position."""

    position: int
    symbol: sp.Expr
    mean: Quantity
    second: Quantity
    independent: bool  # independent of every forward quantity below this position
    flip: bool = False  # row-flip symmetry makes the next dense step exact (see backward rules)


@dataclass
class _Walk:
    """The step list and what is known at every position; rules append to it."""

    network: Network
    finite_width: bool
    linear_regime: bool
    builder: _Builder
    signals: dict[int, _Signal]
    gradients: dict[int, _Gradient]
    weight_gradients: dict[int, tuple[Quantity, Quantity]]
    definitions: dict[sp.Expr, int]
    numeric: dict[int, tuple[int, sp.Expr]]
    derived: dict[Observable, Quantity]
    partners: dict[int, _Signal] = field(default_factory=dict)  # the partner input's signals (pairs only)
    # Per-position second moments where they differ between positions (a convolution's zero padding or
    # stride): (prime, position) -> E[h^2] at every spatial position (channels alike; prime: the partner
    # input's); gradients: position -> E[(dL/dh)^2] per spatial position. Absent means uniform.
    profiles: dict[tuple[bool, int], tuple[sp.Expr, ...]] = field(default_factory=dict)
    gradient_profiles: dict[int, tuple[sp.Expr, ...]] = field(default_factory=dict)
    crosses: dict[int, Quantity] = field(default_factory=dict)  # E[h_p h'_p] (pairs only)
    prime: bool = False  # while walking the partner input: signal symbols are primed
    blocks: dict[int, _Walk] = field(default_factory=dict)  # the walks of residual branches, by block position
    pair_error: DerivationError | None = None  # why the cross moments stop at some layer (a bias with a mean)
    gradient_error: DerivationError | None = None  # why the backward walk stops at some layer (a BatchNorm's law)
    forward_error: DerivationError | None = None  # why the forward walk stops at some layer (then no gradient either)
    mean_errors: dict[int, DerivationError] = field(default_factory=dict)  # positions whose mean is not derived

    # -- naming --

    def dense_index(self, position: int) -> int:
        """1-based index of the dense layer at or before ``position`` (0 before the first)."""
        return sum(1 for layer in self.network.layers[: position + 1] if isinstance(layer, Dense))

    def _after(self, position: int) -> bool:
        layers = self.network.layers
        if any(not isinstance(layer, Dense | Nonlinearity) for layer in layers[: position + 1]):
            return False  # after a convolution (or another layer kind) signals are named by position: h_p
        return position == -1 or position + 1 == len(layers) or isinstance(layers[position + 1], Dense)

    def signal_symbol(self, position: int) -> sp.Expr:
        symbol = self._unprimed_symbol(position)
        return _PRIMED[symbol.base][symbol.indices] if self.prime else symbol

    def _unprimed_symbol(self, position: int) -> sp.Expr:
        layers = self.network.layers
        if position >= 0 and isinstance(layers[position], Dense):
            return y[self.dense_index(position)]
        if self._after(position) and not self._before_first_dense(position):
            return x[self.dense_index(position) + 1]
        return h[position]

    def gradient_symbol(self, position: int) -> sp.Expr:
        layers = self.network.layers
        if position >= 0 and isinstance(layers[position], Dense):
            return dy[self.dense_index(position)]
        if self._after(position) and not self._before_first_dense(position):
            return dx[self.dense_index(position) + 1]
        return dh[position]

    def _before_first_dense(self, position: int) -> bool:
        """A layer ahead of the first dense layer (a normaliser on the input): its output is not x_1, the input."""
        return position >= 0 and self.dense_index(position) == 0

    # -- steps --

    def define(self, lhs: sp.Expr, rhs: sp.Expr, why: str, **kwargs: object) -> int:
        """A definition, stated once per walk however many rules need it."""
        if lhs in self.definitions:
            return self.definitions[lhs]
        index = self.builder.define(lhs, rhs, why, **kwargs)
        self.definitions[lhs] = index
        return index

    def plain(self, quantity: Quantity) -> tuple[sp.Expr, tuple[int, ...]]:
        """The value of ``quantity`` with any quadrature evaluated to a number, and the step that says so.

        A Gaussian moment at a variance that is itself a quadrature would nest integrals, one level
        per layer; a numeric step evaluates it once (its check re-runs the quadrature).
        """
        if not quantity.value.has(sp.Integral) or quantity.value.free_symbols:
            return quantity.value, (quantity.step,)
        if quantity.step not in self.numeric:
            number = evaluate(quantity.value)
            value = sp.Float(number.value, 17)
            index = self.builder.add(
                quantity.symbol, value, Rule.SUBSTITUTION, "the quadrature evaluated numerically (scipy QUADPACK)",
                proof=Numeric(quantity.value, number.error_estimate), uses=(quantity.step,))
            self.numeric[quantity.step] = (index, value)
        index, value = self.numeric[quantity.step]
        return value, (index,)


# --- forward rules -----------------------------------------------------------------------------


@singledispatch
def forward_rule(layer: object, walk: _Walk, signal: _Signal, position: int) -> _Signal:
    """The forward rule of a layer class: steps from the signal below to the signal at ``position``."""
    known = ", ".join(sorted(cls.__name__ for cls in forward_rule.registry if cls is not object))
    raise DerivationError(f"varprop.derive has no forward rule for the layer {layer!r}; layers it reads: {known}")


@singledispatch
def backward_rule(layer: object, walk: _Walk, gradient: _Gradient, below: _Signal, position: int) -> _Gradient:
    """The backward rule of a layer class: from the gradient at ``position`` to the one below it."""
    known = ", ".join(sorted(cls.__name__ for cls in backward_rule.registry if cls is not object))
    raise DerivationError(f"varprop.derive has no backward rule for the layer {layer!r}; layers it reads: {known}")


def _input_signal(walk: _Walk) -> _Signal:
    inputs = walk.network.inputs
    symbol = walk.signal_symbol(-1)
    width = walk.network.widths[0]
    if isinstance(inputs, FixedInput):
        mean_value = sp.nsimplify(sum(inputs.values) / len(inputs.values), rational=True)
        why = f"the fixed input ({len(inputs.values)} entries): its mean and mean square"
    else:
        mean_value = sp.Integer(0)
        why = prose("the input: iid entries ", NormalLaw(_entry(symbol, _J), 0, sp.sympify(inputs.variance)))
    second = walk.define(Expect(symbol**2), inputs.second_moment, why)
    mean = walk.define(Expect(symbol), mean_value, why)
    fixed = isinstance(inputs, FixedInput)
    return _Signal(
        -1, symbol, width,
        Quantity(Expect(symbol), mean_value, mean),
        Quantity(Expect(symbol**2), inputs.second_moment, second),
        deterministic=fixed,
        symmetric=not fixed,
        p_nonzero=sp.Integer(0 if fixed and inputs.second_moment == 0 else 1),
        isometric=True,  # the input itself: the ratio is 1
    )


@forward_rule.register
def _(layer: Dense, walk: _Walk, signal: _Signal, position: int) -> _Signal:
    k = walk.dense_index(position)
    law, bias = layer.weights, layer.bias
    name = walk.network.place_name(position)
    if law.mean != 0:
        raise DerivationError(
            f"per-layer predictions need zero-mean weights, got {law} at {name} (a weight mean couples every "
            "unit to the input's mean; a bias may have any mean)"
        )
    out = walk.signal_symbol(position)
    X_in = signal.symbol
    i_n = walk.define(n[k], layer.fan_in, f"fan-in of {name}")
    i_vw = walk.define(Variance(w[k]), law.variance, prose(f"weights of {name}: ", Code(str(law))))
    i_ew = walk.define(Expect(w[k]), law.mean, prose(f"weights of {name}: ", Code(str(law))))
    uses_b: tuple[int, ...] = ()
    bias_mean, bias_second = sp.Integer(0), sp.Integer(0)
    if bias is not None:
        uses_b = (walk.define(Expect(b[k] ** 2), bias.moment(2), prose(f"bias of {name}: ", Code(str(bias)))),
                  walk.define(Expect(b[k]), bias.mean, prose(f"bias of {name}: ", Code(str(bias)))))
        bias_mean, bias_second = Expect(b[k]), Expect(b[k] ** 2)
    builder = walk.builder
    general_mean = builder.model(Expect(out), n[k] * Expect(w[k]) * Expect(X_in) + bias_mean, Rule.INDEPENDENCE,
                                 "linearity of expectation; the weights are independent of the layer input",
                                 assumptions=(_weight_assumption(law),))
    mean_value = sp.Integer(0) if bias is None else bias.mean
    if mean_value == 0:
        mean_step = builder.identity(Expect(out), sp.Integer(0), Rule.ZERO_MEAN, "zero-mean weights and bias",
                                     uses=(general_mean, i_ew, *uses_b[1:]))
    else:
        mean_step = builder.identity(Expect(out), mean_value, Rule.SUBSTITUTION,
                                     "zero-mean weights: only the bias's mean is left", uses=(general_mean, i_ew, uses_b[1]))
    general = builder.model(
        Expect(out**2), n[k] * Variance(w[k]) * Expect(X_in**2) + bias_second, Rule.INDEPENDENCE,
        prose(out, " is a sum of ", n[k], " terms ", w[k] * X_in, ", uncorrelated because ", sp.Eq(Expect(w[k]), 0),
              " and ", w[k], " is independent of ", X_in, *(() if bias is None else
              (", plus the bias, whose cross term with them has mean zero",))),
        assumptions=(_weight_assumption(law), A_ZERO_MEAN if bias is None or bias.mean == 0 else A_ZERO_MEAN_WEIGHTS),
        source=f"{HE}, eq. (7)")
    value = sp.expand(layer.fan_in * law.variance * signal.second.value + (bias.moment(2) if bias is not None else 0))
    second_step = builder.identity(Expect(out**2), value, Rule.SUBSTITUTION, "substitute the layer's values",
                                   uses=(general, i_n, i_vw, *uses_b[:1], signal.second.step))
    gaussian = signal.deterministic and law.gaussian and (bias is None or bias.gaussian)
    return _Signal(
        position, out, layer.fan_out,
        Quantity(Expect(out), mean_value, mean_step),
        Quantity(Expect(out**2), value, second_step),
        gaussian=gaussian,
        symmetric=law.symmetric and (bias is None or bias.symmetric),
        homogeneous=signal.homogeneous and bias is None,
        isometric=signal.isometric and bias is None and law.isometry is True,
        p_nonzero=signal.p_nonzero if bias is None else sp.Integer(1),
        p_exact=signal.p_exact or bias is not None,
        preactivation=True,
    )


def _check_linear_regime(act: Activation) -> None:
    at_zero, slope = sp.simplify(act.expr.subs(X, 0)), sp.simplify(act.derivative.subs(X, 0))
    if at_zero != 0 or slope != 1:
        raise DerivationError(
            f"Glorot's linear regime needs phi(0) = 0 and phi'(0) = 1; {act} has phi(0) = {at_zero}, phi'(0) = {slope}"
        )


_Y_WORD, _Z_WORD = sp.Symbol("y"), sp.Symbol("z")
#: The Gaussian moments named in step justifications, as formulas (typeset by the printers).
_WHAT = {"E[phi(z)^2]": Expect(Phi(_Z_WORD) ** 2), "E[phi(z)]": Expect(Phi(_Z_WORD)),
         "E[phi'(z)^2]": Expect(DPhi(_Z_WORD) ** 2)}


A_POSITIONS = ("the layer average of the per-position values: positions of a convolution's output differ in "
               "second moment near its zero padding (varprop.derive.convolution)")


def _plain_values(values: Iterable[sp.Expr]) -> tuple[sp.Expr, ...]:
    """``values``, with any quadrature evaluated to a 17-digit number (per-position integrals would nest otherwise)."""
    return tuple(sp.Float(evaluate(v).value, 17) if v.has(sp.Integral) else v for v in values)


def _position_average(walk: _Walk, lhs: sp.Expr, index: int, per_position: tuple[sp.Expr, ...],
                      exactness: str) -> tuple[int, sp.Expr, tuple[int, ...]]:
    """``lhs`` averaged over positions whose second moments differ: the mean of ``per_position``."""
    per_position = _plain_values(per_position)
    value = sp.Add(*per_position) / len(per_position)
    step = walk.builder.model(lhs, value, Rule.SUBSTITUTION,
                              f"the step above at each of the {len(per_position)} positions' own second moment, "
                              "averaged over the positions (every unit of the layer counts once)",
                              assumptions=(A_POSITIONS,), exactness=exactness, uses=(index,))
    return step, value, ()


def _gaussian_step(walk: _Walk, lhs: sp.Expr, integrand: sp.Expr, expectation, signal: _Signal, what: str) -> tuple[int, sp.Expr, tuple[int, ...]]:
    r"""A Gaussian-integral step ``lhs = E[g(z)]``, z ~ N(0, E[y^2]), and the value at the signal's second moment.

    A pre-activation with a mean (a bias with a mean) gives :math:`z \sim \mathcal N(\mu, E[y^2] - \mu^2)`,
    :math:`\mu = E[y]`: truncated-normal moments for the rectifier family, quadrature otherwise.

    Where the second moment differs between positions (:attr:`_Walk.profiles`), the value is the
    average over positions of the integral at each position's second moment.
    """
    if (walk.prime, signal.position) not in walk.profiles:
        from .batchnorm_channels import positions_unknown

        norm = positions_unknown(walk, signal.position)
        if norm is not None:  # the integral at the average second moment is not the average of the integrals
            raise PositionsUnknown(
                f"{what} at {walk.network.place_name(signal.position + 1)} needs the second moment at each position: "
                f"BatchNorm {norm} over channels derives only their average (exactly 1 at eps = 0), and a Gaussian "
                "integral at the average is not the average of the integrals (derived after such a BatchNorm: the "
                "second moment through relu, leaky relu, abs and the identity, whose moments are proportional)")
    if signal.mean.value != 0:
        if not signal.preactivation:
            raise DerivationError(
                f"the Gaussian route needs a pre-activation (a dense layer's output); {_t(signal.symbol)} has mean "
                f"{signal.mean.value} and is not one (a nonlinearity applied to the output of another nonlinearity is "
                "not derivable)")
        return _shifted_gaussian_step(walk, lhs, integrand, signal, what)
    q_symbol = signal.second.symbol
    rhs = expectation.expr.subs(Q, q_symbol)
    exactness = "gaussian-exact" if signal.gaussian else "asymptotic"
    index = walk.builder.add(
        lhs, rhs, Rule.GAUSSIAN_INTEGRAL,
        prose(_WHAT[what], ", ", NormalLaw(_Z_WORD, 0, q_symbol), f" ({expectation.route})"),
        proof=Integral(integrand, q_symbol), assumptions=(_gaussian_assumption(signal.gaussian),),
        exactness=exactness, source=f"{HE}, eq. (7)" if what.startswith("E[phi(z)^2]") else "")
    profile = walk.profiles.get((walk.prime, signal.position))
    if profile is not None:
        return _position_average(walk, lhs, index, tuple(expectation.expr.subs(Q, q) for q in profile), exactness)
    # A long closed form (gelu, erf through a few layers) is evaluated to a number before it is nested
    # once more: the expansion behind the next dense layer's identity check grows exponentially with depth.
    q_value, q_uses = _compact(walk, signal.second, _NESTED_OPS)
    # The value exactly as the identity check will rebuild it (rhs, then the variance's value), so that
    # the check is structural and cheap.
    return index, rhs.subs(q_symbol, q_value), q_uses


def _shifted_gaussian_step(walk: _Walk, lhs: sp.Expr, integrand: sp.Expr, signal: _Signal,
                           what: str) -> tuple[int, sp.Expr, tuple[int, ...]]:
    """``lhs = E[g(z)]`` for a non-centred pre-activation, z ~ N(E[y], E[y^2] - E[y]^2)."""
    from .gaussian import gaussian_expectation

    from .derivation import GAUSSIAN_MEAN

    q_symbol, m_symbol = signal.second.symbol, signal.mean.symbol
    variance = q_symbol - m_symbol**2
    # in the symbols q and mu first, then substituted: the form the Integral check rebuilds
    expectation = gaussian_expectation(integrand, Q, GAUSSIAN_MEAN)
    expr = expectation.expr.subs({Q: variance, GAUSSIAN_MEAN: m_symbol})
    exactness = "gaussian-exact" if signal.gaussian else "asymptotic"
    index = walk.builder.add(
        lhs, expr, Rule.GAUSSIAN_INTEGRAL,
        prose(_WHAT[what], ", ", NormalLaw(_Z_WORD, m_symbol, variance), f" ({expectation.route})"),
        proof=Integral(integrand, variance, m_symbol), assumptions=(_gaussian_assumption(signal.gaussian, centred=False),),
        exactness=exactness)
    (q_value, q_uses), (m_value, m_uses) = walk.plain(signal.second), walk.plain(signal.mean)
    return index, expr.subs({q_symbol: q_value, m_symbol: m_value}), q_uses + m_uses


@forward_rule.register
def _(layer: Nonlinearity, walk: _Walk, signal: _Signal, position: int) -> _Signal:
    act = layer.activation
    out = walk.signal_symbol(position)
    Y = signal.symbol
    builder = walk.builder
    walk.define(Phi(Y), act.expr.subs(X, Y), prose("the activation ", Code(str(act))))
    i_x2 = walk.define(Expect(out**2), Expect(Phi(Y) ** 2), prose(sp.Eq(out, Phi(Y), evaluate=False)))
    i_x1 = walk.define(Expect(out), Expect(Phi(Y)), prose(sp.Eq(out, Phi(Y), evaluate=False)))
    lemma = symmetry_lemma(act)
    odd = odd_lemma(act)
    is_linear = _is_identity(act)
    if walk.linear_regime and not is_linear:
        _check_linear_regime(act)
        s2 = builder.model(Expect(Phi(Y) ** 2), Expect(Y**2), Rule.LINEAR_REGIME,
                           prose(Phi(_Z_WORD), " ≈ ", _Z_WORD, " keeps the whole second moment"),
                           assumptions=(A_LINEAR_REGIME,), exactness="approximation", source="Glorot & Bengio 2010, eq. (5)")
        s1 = builder.model(Expect(Phi(Y)), Expect(Y), Rule.LINEAR_REGIME, prose(Phi(_Z_WORD), " ≈ ", _Z_WORD),
                           assumptions=(A_LINEAR_REGIME,),
                           exactness="approximation")
        second_value, second_uses = signal.second.value, (signal.second.step,)
        mean_value, mean_uses = signal.mean.value, (signal.mean.step,)
    else:
        if lemma.holds and signal.symmetric:
            c = lemma.constant
            s2 = builder.add(
                Expect(Phi(Y) ** 2), c / 2 * Expect(Y**2), Rule.SYMMETRY,
                prose(sp.Eq(Phi(_Y_WORD) ** 2 + Phi(-_Y_WORD) ** 2, c * _Y_WORD**2, evaluate=False),
                      " (sympy), so a symmetric ", _Y_WORD, " keeps the fraction ", c / 2, " of its second moment"),
                proof=lemma.proof(LEMMA_CONSTANT / 2 * Expect(Y**2)), assumptions=(A_SYMMETRIC,),
                source=f"{HE}, eq. (8)" if act.name in ("relu", "leaky_relu") else "")
            second_value, second_uses = sp.expand(c / 2 * signal.second.value), (signal.second.step,)
        else:
            s2, second_value, second_uses = _gaussian_step(walk, Expect(Phi(Y) ** 2), act.expr**2,
                                                           moments(act).second_moment, signal, "E[phi(z)^2]")
        if odd.holds and signal.symmetric:
            c0 = odd.constant
            s1 = builder.add(Expect(Phi(Y)), c0 / 2, Rule.SYMMETRY,
                             prose(sp.Eq(Phi(_Y_WORD) + Phi(-_Y_WORD), c0, evaluate=False), " and ", _Y_WORD,
                                   " is symmetric"),
                             proof=odd.proof(LEMMA_CONSTANT / 2), assumptions=(A_SYMMETRIC,))
            mean_value, mean_uses = c0 / 2, ()
        else:
            try:
                s1, mean_value, mean_uses = _gaussian_step(walk, Expect(Phi(Y)), act.expr, moments(act).mean, signal,
                                                           "E[phi(z)]")
            except PositionsUnknown as exc:  # the second moment may still be derived: only the mean is refused
                walk.mean_errors[position] = exc
                s1, mean_value, mean_uses = i_x1, Expect(Phi(Y)), ()
    second_step = builder.identity(Expect(out**2), second_value, Rule.SUBSTITUTION, prose("substitute the moments of ", Y),
                                   uses=(i_x2, s2, *second_uses))
    mean_step = (i_x1 if position in walk.mean_errors else
                 builder.identity(Expect(out), mean_value, Rule.SUBSTITUTION, prose("substitute the moments of ", Y),
                                  uses=(i_x1, s1, *mean_uses)))
    profile = walk.profiles.get((walk.prime, position - 1))
    if profile is not None:
        if walk.linear_regime and not is_linear:
            walk.profiles[walk.prime, position] = profile
        elif lemma.holds and signal.symmetric:
            walk.profiles[walk.prime, position] = tuple(sp.expand(lemma.constant / 2 * q) for q in profile)
        else:
            walk.profiles[walk.prime, position] = _plain_values(moments(act).second_moment.expr.subs(Q, q)
                                                                for q in profile)
    if _zero_on_negatives(act):
        # Unless y is forced to zero, its entries are independent given the layer input (independent
        # rows of W), symmetric and continuous, so the whole vector is <= 0 with probability 2^-n.
        p_nonzero = signal.p_nonzero * (1 - sp.Integer(2) ** (-signal.width))
        p_exact = signal.p_exact and signal.symmetric and signal.independent_units
    else:
        p_nonzero, p_exact = signal.p_nonzero, signal.p_exact
    return _Signal(
        position, out, signal.width,
        Quantity(Expect(out), mean_value, mean_step),
        Quantity(Expect(out**2), second_value, second_step),
        homogeneous=signal.homogeneous and lemma.holds and signal.symmetric and not walk.linear_regime,
        isometric=signal.isometric and _norm_scaling(act) is not None,
        p_nonzero=p_nonzero,
        p_exact=p_exact,
    )


# --- backward rules ----------------------------------------------------------------------------


def _output_gradient(walk: _Walk) -> _Gradient:
    last = len(walk.network.layers) - 1
    symbol = walk.gradient_symbol(last)
    why = prose("the loss is the inner product of the output with ", NormalLaw(_G, 0, _IDENTITY),
                ", independent of the network, so ", sp.Eq(symbol, _G, evaluate=False))
    second = walk.define(Expect(symbol**2), sp.Integer(1), why)
    mean = walk.define(Expect(symbol), sp.Integer(0), why)
    return _Gradient(last, symbol, Quantity(Expect(symbol), sp.Integer(0), mean),
                     Quantity(Expect(symbol**2), sp.Integer(1), second), independent=True)


def _zero_mean_gradient(walk: _Walk, symbol: sp.Expr) -> Quantity:
    index = walk.builder.model(Expect(symbol), sp.Integer(0), Rule.ZERO_MEAN,
                               prose("the gradient is linear in ", _G, ", and ", _G,
                                     " is symmetric and independent of the network"),
                               assumptions=(prose(NormalLaw(_G, 0, _IDENTITY), " is independent of the network"),))
    return Quantity(Expect(symbol), sp.Integer(0), index)


@backward_rule.register
def _(layer: Nonlinearity, walk: _Walk, gradient: _Gradient, below: _Signal, position: int) -> _Gradient:
    act = layer.activation
    builder = walk.builder
    Y, D_out = below.symbol, gradient.symbol
    D_in = walk.gradient_symbol(position - 1)
    chain = walk.define(D_in, DPhi(Y) * D_out,
                        prose("chain rule through ", sp.Eq(walk.signal_symbol(position), Phi(Y), evaluate=False)),
                        rule=Rule.CHAIN_RULE)
    factor = builder.model(
        Expect(D_in**2), Expect(DPhi(Y) ** 2) * Expect(D_out**2), Rule.INDEPENDENCE,
        prose(DPhi(Y), " is independent of ", D_out, "" if gradient.independent else " (He et al.'s assumption)"),
        assumptions=(A_DERIV_INDEP,), exactness="exact" if gradient.independent else "asymptotic", uses=(chain,),
        source=f"{HE}, eq. (12)")
    lemma = derivative_symmetry_lemma(act)
    is_linear = _is_identity(act)
    slope_uses: tuple[int, ...] = ()
    if walk.linear_regime and not is_linear:
        _check_linear_regime(act)
        slope_step = builder.model(Expect(DPhi(Y) ** 2), sp.Integer(1), Rule.LINEAR_REGIME,
                                   prose(DPhi(_Z_WORD), " ≈ ", sp.Integer(1)),
                                   assumptions=(A_LINEAR_REGIME,), exactness="approximation",
                                   source="Glorot & Bengio 2010, eq. (6)")
        slope = sp.Integer(1)
    elif lemma.holds and below.symmetric:
        c = lemma.constant
        p = below.p_nonzero
        at_zero = act.derivative.subs(X, 0) ** 2
        lemma_words = prose(sp.Eq(DPhi(_Y_WORD) ** 2 + DPhi(-_Y_WORD) ** 2, c, evaluate=False), " for ",
                            sp.Ne(_Y_WORD, 0), " (sympy)")
        if p == 1 or walk.finite_width:
            conclusion = sp.expand(LEMMA_CONSTANT / 2 * p + at_zero * (1 - p))
            slope = sp.expand(c / 2 * p + at_zero * (1 - p))
            exactness = "exact" if below.p_exact else "asymptotic"
            why = prose(lemma_words)
            if p != 1:
                why = prose(why, "; ", Y, " is identically zero (a relu layer below is all zero) with probability ",
                            1 - p, ", where ",
                            sp.Eq(DPhi(sp.Integer(0)) ** 2, at_zero, evaluate=False))
        else:
            conclusion, slope, exactness = LEMMA_CONSTANT / 2, c / 2, "asymptotic"
            why = prose(lemma_words, "; He et al.'s value, which ignores that ", Y, " is identically zero when a relu "
                        "layer below is all zero (probability ", sp.Pow(2, -_WIDTH, evaluate=False),
                        " each, for a layer of width ", _WIDTH, ")")
        slope_step = builder.add(Expect(DPhi(Y) ** 2), slope, Rule.SYMMETRY, why, proof=lemma.proof(conclusion),
                                 assumptions=(A_SYMMETRIC,), exactness=exactness, source=f"{HE}, eq. (12)")
    else:
        slope_step, slope, slope_uses = _gaussian_step(walk, Expect(DPhi(Y) ** 2), act.derivative**2,
                                                       moments(act).derivative_second_moment, below, "E[phi'(z)^2]")
    forward_profile, backward_profile = walk.profiles.get((False, position - 1)), walk.gradient_profiles.get(position)
    if (forward_profile is not None or backward_profile is not None) and not (
            walk.linear_regime or (lemma.holds and below.symmetric)):
        # phi'(y)^2 differs between positions: the per-position products, averaged.
        slopes = (moments(act).derivative_second_moment.expr.subs(Q, q)
                  for q in (forward_profile or (below.second.value,) * len(backward_profile)))
        gradients = backward_profile or (gradient.second.value,) * len(forward_profile)
        per_position = _plain_values(s_p * g_p for s_p, g_p in zip(slopes, gradients))
        second, value, _ = _position_average(walk, Expect(D_in**2), factor, per_position,
                                             walk.builder.steps[slope_step].exactness)
        walk.gradient_profiles[position - 1] = per_position
    else:
        value = sp.expand(slope * gradient.second.value)
        second = builder.identity(Expect(D_in**2), value, Rule.SUBSTITUTION, "substitute",
                                  uses=(factor, slope_step, *slope_uses, gradient.second.step))
        if backward_profile is not None:
            walk.gradient_profiles[position - 1] = tuple(sp.expand(slope * g) for g in backward_profile)
    return _Gradient(
        position - 1, D_in, _zero_mean_gradient(walk, D_in), Quantity(Expect(D_in**2), value, second),
        independent=gradient.independent and X not in act.derivative.free_symbols,
        flip=gradient.independent and below.symmetric and lemma.holds,
    )


@backward_rule.register
def _(layer: Dense, walk: _Walk, gradient: _Gradient, below: _Signal, position: int) -> _Gradient:
    k = walk.dense_index(position)
    law = layer.weights
    builder = walk.builder
    name = walk.network.place_name(position)
    D_out, D_in = gradient.symbol, walk.gradient_symbol(position - 1)
    i_nhat = walk.define(nhat[k], layer.fan_out, f"fan-out of {name}")
    i_vw = walk.define(Variance(w[k]), law.variance, prose(f"weights of {name}: ", Code(str(law))))
    exact = gradient.independent or gradient.flip
    if gradient.independent:
        why = prose(D_out, " is independent of ", _W[k])
    elif gradient.flip:
        out_i = _entry(walk.signal_symbol(position), _I)
        why = prose("flipping the sign of row ", _I, " of ", _W[k], " flips ", out_i, " but not ", DPhi(out_i) ** 2,
                    ", so ", sp.Eq(Expect(w[k, _I, _J] ** 2 * _entry(D_out, _I) ** 2),
                                   Expect(w[k] ** 2) * Expect(D_out**2), evaluate=False), " exactly")
    else:
        why = prose(D_out, " treated as independent of ", _W[k], " (He et al.'s assumption)")
    general = builder.model(
        Expect(D_in**2), nhat[k] * Variance(w[k]) * Expect(D_out**2), Rule.INDEPENDENCE,
        prose(sp.Eq(D_in, sp.Symbol(f"W_{k}^T") * D_out, evaluate=False), " is a sum of ", nhat[k], " terms ",
              w[k] * D_out, "; ", why),
        assumptions=(_weight_assumption(law), A_ZERO_MEAN) + (() if exact else (A_GRAD_INDEP,)),
        exactness="exact" if exact else "asymptotic", source=f"{HE}, eq. (11)")
    # A long closed form (a product of gelu's or erf's moments over the layers above) is a number first:
    # expanding the product of such sums grows exponentially with depth.
    g_value, g_uses = _compact(walk, gradient.second, _NESTED_OPS)
    value = sp.expand(layer.fan_out * law.variance * g_value)
    second = builder.identity(Expect(D_in**2), value, Rule.SUBSTITUTION, "substitute the layer's values",
                              uses=(general, i_nhat, i_vw, *g_uses))
    # dL/dW = (dL/dy) x^T: its mean square is E[(dL/dy)^2] E[x^2] when dL/dy is independent of x.
    X_in = below.symbol
    dw_general = builder.model(
        Expect(dW[k] ** 2), Expect(D_out**2) * Expect(X_in**2), Rule.INDEPENDENCE,
        prose(dW[k], " is the outer product of ", D_out, " and ", X_in, "; ", D_out,
              " is independent of " if gradient.independent else " treated as independent of ", X_in),
        assumptions=(A_DY_X_INDEP,), exactness="exact" if gradient.independent else "asymptotic")
    x_value, x_uses = _compact(walk, below.second, _NESTED_OPS)
    dw_value = sp.expand(g_value * x_value)
    dw_second = builder.identity(Expect(dW[k] ** 2), dw_value, Rule.SUBSTITUTION, "substitute",
                                 uses=(dw_general, *g_uses, *x_uses))
    walk.weight_gradients[position] = (_zero_mean_gradient(walk, dW[k]), Quantity(Expect(dW[k] ** 2), dw_value, dw_second))
    return _Gradient(position - 1, D_in, _zero_mean_gradient(walk, D_in), Quantity(Expect(D_in**2), value, second),
                     independent=gradient.independent)


# --- observables -------------------------------------------------------------------------------


def _tensor_moments(walk: _Walk, observable: Observable) -> tuple[Quantity, Quantity]:
    tensor = observable.tensor
    if isinstance(tensor, Signal):
        state = walk.signals[tensor.position]
        if tensor.position in walk.mean_errors and not isinstance(observable, SecondMoment):
            raise DerivationError(str(walk.mean_errors[tensor.position]))
        return state.mean, state.second
    if isinstance(tensor, Gradient):
        if tensor.position not in walk.gradients and walk.gradient_error is not None:
            raise DerivationError(str(walk.gradient_error))
        state = walk.gradients[tensor.position]
        return state.mean, state.second
    if tensor.position not in walk.weight_gradients and walk.gradient_error is not None:
        raise DerivationError(str(walk.gradient_error))
    return walk.weight_gradients[tensor.position]


@singledispatch
def observable_rules(observable: object, walk: _Walk) -> Quantity:
    """The derive rule of an observable class: the quantity (and its steps) that predicts it."""
    raise DerivationError(f"varprop.derive has no rule for the observable {observable!r}")


@observable_rules.register
def _(observable: Mean, walk: _Walk) -> Quantity:
    return _tensor_moments(walk, observable)[0]


@observable_rules.register
def _(observable: SecondMoment, walk: _Walk) -> Quantity:
    return _tensor_moments(walk, observable)[1]


@observable_rules.register
def _(observable: VarianceObservable, walk: _Walk) -> Quantity:
    mean, second = _tensor_moments(walk, observable)
    symbol = mean.symbol.args[0]
    definition = walk.define(Variance(symbol), Expect(symbol**2) - Expect(symbol) ** 2, "definition of the variance",
                             rule=Rule.VARIANCE_DEFINITION)
    value = second.value - mean.value**2  # not expanded: the check rebuilds exactly this, cheaply
    index = walk.builder.identity(Variance(symbol), value, Rule.SUBSTITUTION, "substitute the mean and second moment",
                                  uses=(definition, second.step, mean.step))
    return Quantity(Variance(symbol), value, index)


@observable_rules.register
def _(observable: NormRatio, walk: _Walk) -> Quantity:
    position = observable.tensor.position
    state, first = walk.signals[position], walk.signals[-1]
    symbol = Expect(ratio_base[position + 1])
    if first.second.value == 0:
        raise DerivationError("the norm ratio is undefined for an input that is identically zero")
    exact = first.deterministic or state.homogeneous or state.isometric
    norm, norm_in = sp.Abs(state.symbol) ** 2, sp.Abs(first.symbol) ** 2
    why = (prose("every layer below maps lengths by a constant factor (orthogonal weights with fan-out >= fan-in, "
                 "so ", sp.Eq(sp.Abs(sp.Symbol("W") * sp.Symbol("x")), sp.Symbol("g") * sp.Abs(sp.Symbol("x")), evaluate=False),
                 "; no bias; activations with ", sp.Eq(Phi(_Y_WORD) ** 2, sp.Symbol("c") * _Y_WORD**2, evaluate=False),
                 "): the ratio is the same constant in every network, with zero variance") if state.isometric and position >= 0 else
           prose("the input is fixed, so the ratio's mean is ", Expect(norm) / norm_in) if first.deterministic else
           prose("given the input, ", Expect(norm), " is ", norm_in, " times a constant (zero-mean symmetric weights, "
                 "no bias, homogeneous activations)") if state.homogeneous else
           "the ratio of expectations stands for the expectation of the ratio (the norms concentrate as widths grow)")
    general = walk.builder.model(
        symbol, state.width * state.second.symbol / (first.width * first.second.symbol), Rule.INDEPENDENCE,
        prose(sp.Eq(ratio_base[position + 1], norm / norm_in, evaluate=False), ": ", why),
        exactness="exact" if exact else "asymptotic")
    value = state.width * state.second.value / (first.width * first.second.value)
    if walk.builder.steps[general].rhs == value:  # the input itself: the ratio is 1 by definition
        return Quantity(symbol, value, general)
    index = walk.builder.identity(symbol, value, Rule.SUBSTITUTION, "substitute",
                                  uses=(general, state.second.step, first.second.step))
    return Quantity(symbol, value, index)


# --- a pair of inputs: the partner's signal and the cross moment ---------------------------------

A_PAIR_WEIGHTS = prose("both inputs go through the same weights, iid with ", sp.Eq(Expect(sp.Symbol("w")), 0),
                       " and independent of the inputs")
POOLE = "Poole et al. 2016"


def _pair_walk(walk: _Walk) -> None:
    """Walk the partner input forward with the same forward rules (primed symbols), then the cross moments."""
    walk.prime = True
    try:
        partner = _partner_input(walk)
        walk.partners[-1] = partner
        for position, layer in enumerate(walk.network.layers):
            partner = forward_rule(layer, walk, partner, position)
            walk.partners[position] = partner
    finally:
        walk.prime = False
    cross = _input_cross(walk)
    walk.crosses[-1] = cross
    for position, layer in enumerate(walk.network.layers):
        try:
            cross = cross_rule(layer, walk, cross, position)
        except DerivationError as exc:  # the layers below stay derivable; the pair's observables from here raise it
            walk.pair_error = exc
            break
        walk.crosses[position] = cross


def _partner_input(walk: _Walk) -> _Signal:
    inputs = walk.network.inputs
    symbol = walk.signal_symbol(-1)
    width = walk.network.widths[0]
    fixed = isinstance(inputs, FixedInput)
    if fixed:
        mean_value = sp.nsimplify(sum(inputs.partner) / len(inputs.partner), rational=True)
        why = f"the fixed partner input ({len(inputs.partner)} entries): its mean and mean square"
    else:
        mean_value = sp.Integer(0)
        first, variance = walk.signals[-1].symbol, sp.sympify(inputs.variance)
        why = prose("the partner input ",
                    sp.Eq(symbol, _C0 * first + sp.sqrt(1 - _C0**2) * _Z_WORD, evaluate=False), ", with ", _Z_WORD,
                    " independent of ", first, " and iid entries ", NormalLaw(sp.IndexedBase("z")[_J], 0, variance),
                    ", has iid entries ", NormalLaw(_entry(symbol, _J), 0, variance))
    second = walk.define(Expect(symbol**2), inputs.partner_second_moment, why)
    mean = walk.define(Expect(symbol), mean_value, why)
    return _Signal(
        -1, symbol, width,
        Quantity(Expect(symbol), mean_value, mean),
        Quantity(Expect(symbol**2), inputs.partner_second_moment, second),
        deterministic=fixed,
        symmetric=not fixed,
    )


def _input_cross(walk: _Walk) -> Quantity:
    inputs = walk.network.inputs
    first, second = walk.signals[-1].symbol, walk.partners[-1].symbol
    lhs = Expect(first * second)
    if isinstance(inputs, FixedInput):
        why = prose("the fixed pair: the mean of ", _entry(first, _J) * _entry(second, _J),
                    f" over its {len(inputs.values)} entries")
    else:
        why = prose("the Gaussian pair: ", sp.Eq(lhs, _C0 * _V_WORD, evaluate=False), " with ",
                    sp.Eq(_C0, sp.sympify(inputs.correlation), evaluate=False), " and ",
                    sp.Eq(_V_WORD, sp.sympify(inputs.variance), evaluate=False))
    return Quantity(lhs, inputs.cross_moment, walk.define(lhs, inputs.cross_moment, why))


@singledispatch
def cross_rule(layer: object, walk: _Walk, cross: Quantity, position: int) -> Quantity:
    r"""The cross-moment rule of a layer class: :math:`E[h h']` at ``position`` from the one below.

    ``walk.signals`` and ``walk.partners`` hold both inputs' signals (their second moments); ``cross``
    is :math:`E[h_{p-1} h'_{p-1}]`.
    """
    known = ", ".join(sorted(cls.__name__ for cls in cross_rule.registry if cls is not object))
    raise DerivationError(f"varprop.derive has no cross-moment rule for the layer {layer!r}; layers it reads: {known}")


@cross_rule.register
def _(layer: Dense, walk: _Walk, cross: Quantity, position: int) -> Quantity:
    k = walk.dense_index(position)
    law, bias = layer.weights, layer.bias
    name = walk.network.place_name(position)
    out, out_pair = walk.signals[position].symbol, walk.partners[position].symbol
    below, below_pair = walk.signals[position - 1].symbol, walk.partners[position - 1].symbol
    i_n = walk.define(n[k], layer.fan_in, f"fan-in of {name}")
    i_vw = walk.define(Variance(w[k]), law.variance, prose(f"weights of {name}: ", Code(str(law))))
    uses_b: tuple[int, ...] = ()
    bias_term = sp.Integer(0)
    if bias is not None:
        uses_b = (walk.define(Expect(b[k] ** 2), bias.moment(2), prose(f"bias of {name}: ", Code(str(bias)))),)
        bias_term = Expect(b[k] ** 2)
    general = walk.builder.model(
        Expect(out * out_pair), n[k] * Variance(w[k]) * Expect(below * below_pair) + bias_term, Rule.INDEPENDENCE,
        prose(out * out_pair, " is a double sum of the terms ",
              w[k, _I] * w[k, _J] * _entry(below, _I) * _entry(below_pair, _J), " (plus the shared bias ", b[k] ** 2,
              " and terms linear in it): ", sp.Eq(Expect(w[k, _I] * w[k, _J]), Variance(w[k]), evaluate=False),
              " if ", sp.Eq(_I, _J, evaluate=False), " and ", sp.Integer(0), " otherwise, at every width"),
        assumptions=(A_PAIR_WEIGHTS,), source=f"{POOLE}, eq. (4)")
    value = sp.expand(layer.fan_in * law.variance * cross.value + (bias.moment(2) if bias is not None else 0))
    step = walk.builder.identity(Expect(out * out_pair), value, Rule.SUBSTITUTION, "substitute the layer's values",
                                 uses=(general, i_n, i_vw, *uses_b, cross.step))
    return Quantity(Expect(out * out_pair), value, step)


_PAIR_WORDS = sp.Tuple(sp.Symbol("y"), sp.Symbol("y'"))


def _pair_assumption(gaussian: bool) -> str:
    if gaussian:
        return prose(_PAIR_WORDS, " is exactly jointly Gaussian (a fixed pair of inputs through Gaussian weights)")
    return prose(_PAIR_WORDS, " is jointly Gaussian with the expected covariance (wide layers: central limit theorem, "
                 "and the empirical covariance of the layer below concentrates at its mean)")


@cross_rule.register
def _(layer: Nonlinearity, walk: _Walk, cross: Quantity, position: int) -> Quantity:
    act = layer.activation
    builder = walk.builder
    signal, partner = walk.signals[position - 1], walk.partners[position - 1]
    Y, Yp = signal.symbol, partner.symbol
    out, out_pair = walk.signals[position].symbol, walk.partners[position].symbol
    for state in (signal, partner):
        if state.mean.value != 0:
            raise DerivationError(
                f"the bivariate Gaussian route needs centred pre-activations; {_t(state.symbol)} has mean "
                f"{state.mean.value} (a bias with a mean, or a nonlinearity applied to the output of another "
                "nonlinearity): the correlation of a pair is not derivable there"
            )
    lhs = Expect(Phi(Y) * Phi(Yp))
    i_def = walk.define(Expect(out * out_pair), lhs, prose(sp.Eq(out, Phi(Y), evaluate=False), ", ",
                                                           sp.Eq(out_pair, Phi(Yp), evaluate=False)))
    q1, q2, q12 = signal.second.symbol, partner.second.symbol, cross.symbol
    gaussian = signal.gaussian and partner.gaussian
    exactness = "gaussian-exact" if gaussian else "asymptotic"
    integrand = act.expr.subs(X, _U2) * act.expr.subs(X, _V2)
    if cross.value == 0:
        # Uncorrelated and jointly Gaussian: independent, so only the means are shared (Poole et al. 2016, eq. 5
        # at c = 0). This is where a non-zero mean of phi correlates two orthogonal inputs.
        mean, mean_pair = walk.signals[position].mean, walk.partners[position].mean
        facts = (cross.step, signal.second.step, partner.second.step, mean.step, mean_pair.step)
        numeric = not any(walk.builder.steps[i].rhs.free_symbols for i in facts)
        # With numbers, the product of the means is checked against the 2-D quadrature at the actual
        # covariance; with symbols (symbolic widths) it rests on the theorem alone.
        step = builder.add(
            lhs, mean.symbol * mean_pair.symbol, Rule.INDEPENDENCE,
            prose(sp.Eq(q12, 0), ": ", sp.Tuple(Y, Yp), " is uncorrelated and jointly Gaussian, hence independent, "
                  "and ", sp.Eq(lhs, Expect(Phi(Y)) * Expect(Phi(Yp)), evaluate=False)),
            proof=BivariateIntegral(integrand, q1, q2, q12) if numeric else Modelling(),
            assumptions=(_pair_assumption(gaussian),), exactness=exactness, uses=facts,
            source=f"{POOLE}, eq. (5) at c = 0")
        (value, uses), (value_pair, uses_pair) = walk.plain(mean), walk.plain(mean_pair)
        index = builder.identity(Expect(out * out_pair), value * value_pair, Rule.SUBSTITUTION,
                                 "substitute the means", uses=(i_def, step, *uses, *uses_pair))
        return Quantity(Expect(out * out_pair), value * value_pair, index)
    kernel = _kernel(act, q1, q2, q12)
    why = prose(Expect(Phi(_U2) * Phi(_V2)), ", ", sp.Tuple(_U2, _V2), " centred jointly Gaussian with variances ", q1,
                ", ", q2,
                " and covariance ", q12)
    source = f"{POOLE}, eq. (5)"
    if kernel is not None:
        expr, route = kernel
        step = builder.add(lhs, expr, Rule.GAUSSIAN_INTEGRAL, prose(why, f" ({route})"),
                           proof=BivariateIntegral(integrand, q1, q2, q12), assumptions=(_pair_assumption(gaussian),),
                           exactness=exactness, source=source)
        values, uses = [], []
        for quantity in (signal.second, partner.second, cross):
            value, quantity_uses = _compact(walk, quantity)
            values.append(value)
            uses.extend(quantity_uses)
        value = expr.xreplace(dict(zip((q1, q2, q12), values)))
        index = builder.identity(Expect(out * out_pair), value, Rule.SUBSTITUTION,
                                 prose("substitute the moments of ", Y, " and ", Yp), uses=(i_def, step, *uses))
        return Quantity(Expect(out * out_pair), value, index)
    # No closed form: the kernel evaluated by quadrature at the numeric moments.
    numbers, uses = [], []
    for quantity in (signal.second, partner.second, cross):
        value, quantity_uses = _compact(walk, quantity)
        numbers.append(value)
        uses.extend(quantity_uses)
    if any(sp.sympify(v).free_symbols for v in numbers):
        raise DerivationError(f"{act} has no closed-form bivariate kernel; its quadrature needs numeric moments")
    value, error, route = _kernel_number(act, *numbers)
    step = builder.add(lhs, value, Rule.GAUSSIAN_INTEGRAL, prose(why, f", evaluated at the moments above ({route})"),
                       proof=BivariateIntegral(integrand, q1, q2, q12, error), uses=tuple(uses),
                       assumptions=(_pair_assumption(gaussian),), exactness=exactness, source=source)
    index = builder.identity(Expect(out * out_pair), value, Rule.SUBSTITUTION, "substitute", uses=(i_def, step))
    return Quantity(Expect(out * out_pair), value, index)


#: A closed-form value with more operations than this is carried on as a number (a Numeric step), so that
#: kernels nested over the depth do not grow without bound.
_COMPACT_OPS = 40


#: Operations above which a numeric closed form is evaluated before a Gaussian moment nests it again.
_NESTED_OPS = 120


def _compact(walk: _Walk, quantity: Quantity, limit: int = _COMPACT_OPS) -> tuple[sp.Expr, tuple[int, ...]]:
    """The value of ``quantity`` for substitution into a kernel: quadratures evaluated (:meth:`_Walk.plain`),
    and a numeric closed form longer than ``limit`` operations replaced by its value (its check
    re-evaluates the closed form)."""
    value, uses = walk.plain(quantity)
    if value.free_symbols or value.is_Float or sp.count_ops(value) <= limit:
        return value, uses
    key = -1 - quantity.step  # walk.numeric is keyed by step; negative keys: compacted closed forms
    if key not in walk.numeric:
        number = evaluate(value)
        rounded = sp.Float(number.value, 17)
        index = walk.builder.add(quantity.symbol, rounded, Rule.SUBSTITUTION,
                                 "the closed form above evaluated to 17 digits (it nests the kernel of every layer below)",
                                 proof=Numeric(value, number.error_estimate), uses=(quantity.step,))
        walk.numeric[key] = (index, rounded)
    index, rounded = walk.numeric[key]
    return rounded, (index,)


_Q1, _Q2 = sp.symbols("q_1 q_2", positive=True)
_C = sp.Symbol("c", real=True)


def _kernel(act: Activation, q1: sp.Expr, q2: sp.Expr, q12: sp.Expr) -> tuple[sp.Expr, str] | None:
    """The closed-form kernel E[phi(u) phi(v)] in the moment symbols, or ``None`` when only quadrature knows it."""
    result = _closed_kernel(act)
    if result is None:
        return None
    expr, route = result
    return expr.xreplace({_Q1: q1, _Q2: q2, _C: q12 / sp.sqrt(q1 * q2)}), route


@lru_cache(maxsize=128)
def _closed_kernel(act: Activation) -> tuple[sp.Expr, str] | None:
    from .gaussian.bivariate import cross_expectation

    try:
        result = cross_expectation(act, _Q1, _Q2, _C)
    except (VarpropError, TypeError, ValueError):  # no closed form: quadrature at numbers
        return None
    if not result.exact or result.value.has(sp.Integral):
        return None
    return result.value, result.route


def _kernel_number(act: Activation, q1: sp.Expr, q2: sp.Expr, q12: sp.Expr) -> tuple[sp.Expr, float, str]:
    from .gaussian.bivariate import cross_expectation

    a, b = float(q1), float(q2)
    c = float(q12) / (a * b) ** 0.5
    result = cross_expectation(act, sp.Float(a, 17), sp.Float(b, 17), sp.Float(c, 17))
    number = evaluate(result.value)
    error = max(number.error_estimate, result.error_estimate or 0.0)
    return sp.Float(number.value, 17), error, result.route


def _require_cross(walk: _Walk, position: int) -> None:
    if position not in walk.crosses and walk.pair_error is not None:
        raise DerivationError(str(walk.pair_error))


@observable_rules.register
def _(observable: CrossMoment, walk: _Walk) -> Quantity:
    _require_cross(walk, observable.tensor.position)
    return walk.crosses[observable.tensor.position]


@observable_rules.register
def _(observable: Correlation, walk: _Walk) -> Quantity:
    position = observable.tensor.position
    _require_cross(walk, position)
    cross, first, second = walk.crosses[position], walk.signals[position].second, walk.partners[position].second
    symbol = rho(walk.signals[position].symbol, walk.partners[position].symbol)
    ratio = cross.symbol / sp.sqrt(first.symbol * second.symbol)
    definition = walk.define(
        symbol, ratio, "the correlation of the pair: a ratio of expectations over networks (what the estimator "
        "estimates)", source="Schoenholz et al. 2017, eq. (3)")
    if first.value == 0 or second.value == 0:
        raise DerivationError(f"the correlation at {walk.network.place_name(position)} is undefined: a second moment is 0")
    (c, c_uses), (a, a_uses), (b, b_uses) = (_compact(walk, q) for q in (cross, first, second))
    value = c / sp.sqrt(a * b)
    index = walk.builder.identity(symbol, value, Rule.SUBSTITUTION, "substitute the cross moment and second moments",
                                  uses=(definition, *c_uses, *a_uses, *b_uses))
    return Quantity(symbol, value, index)


# --- the walk ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Propagation:
    """One walk through a network: every step, and a derivation for any observable.

    Use :func:`propagate` to build it; :meth:`derivation` extracts the steps one observable rests on.
    """

    network: Network
    finite_width: bool
    linear_regime: bool
    _walk: _Walk

    def derivation(self, observable: Observable) -> Derivation:
        """The derivation of ``observable``; its ``result`` is the prediction, its exactness the weakest step's."""
        resolve(observable, self.network)
        walk = self._walk
        tensor = getattr(observable, "tensor", None)
        if walk.forward_error is not None and isinstance(tensor, Signal) and tensor.position not in walk.signals:
            raise DerivationError(str(walk.forward_error))  # the forward walk stopped below this place
        if observable not in walk.derived:
            walk.derived[observable] = observable_rules(observable, walk)
        quantity = walk.derived[observable]
        steps = closure(tuple(walk.builder.steps), [quantity.step])
        tensor = observable.tensor
        words = [f"{observable.statistic} of the {tensor.kind} at {self.network.place_name(tensor.position)}"]
        legacy = legacy_name(observable, self.network)
        if legacy:
            words += [" (", Code(legacy[0]), f", layer {legacy[1]})"]
        short = len(_t(quantity.value)) < 40
        formula = sp.Eq(quantity.symbol, quantity.value, evaluate=False) if short else quantity.symbol
        return Derivation(
            prose(*words, ": ", formula),
            steps,
            quantity.value,
            summary=prose(_network_summary(self.network),
                          " Finite-width factors kept where they are exact." if self.finite_width else "",
                          *((" Glorot's linear regime ", sp.Eq(Phi(_Z_WORD), _Z_WORD, evaluate=False), " assumed.")
                            if self.linear_regime else ())),
        )


def _all_layers(layers: tuple) -> list:
    """Every layer, those inside residual branches included."""
    return [inner for layer in layers for inner in (layer, *_all_layers(getattr(layer, "branch", ())))]


def _network_summary(network: Network) -> Prose:
    every = _all_layers(network.layers)
    laws = sorted({str(layer.weights) for layer in every if isinstance(layer, WEIGHTED_LAYERS)})
    acts = sorted({str(layer.activation) for layer in every if isinstance(layer, Nonlinearity)})
    inputs = network.inputs
    parts: list[str | sp.Basic] = [f"Network: widths {list(network.widths)}, activations "]
    parts += _joined([Code(a) for a in acts]) or ["none"]
    others = sorted({str(layer) for layer in network.layers if not isinstance(layer, Dense | Nonlinearity)})
    if others:  # normalisers and the other layers without weights, as described
        parts += [", layers "] + _joined([Code(other) for other in others], "; ")
    parts += [", weights "]
    parts += _joined([Code(law) for law in laws], "; ") if len(laws) <= 2 else [f"{len(laws)} laws"]
    if isinstance(inputs, FixedInput):
        parts += [f", fixed input of {len(inputs.values)} entries"]
        if inputs.partner is not None:
            parts += [" and a fixed partner input"]
    else:
        parts += [", Gaussian input with iid entries of variance ", sp.sympify(inputs.variance)]
        if inputs.correlation is not None:
            parts += [" and a partner input with correlation ", sp.sympify(inputs.correlation)]
    return prose(*parts, ".")


def _joined(items: list, separator: str = ", ") -> list:
    out: list = []
    for item in items:
        out += [separator, item] if out else [item]
    return out


def _walk(network: Network, finite_width: bool, linear_regime: bool) -> _Walk:
    walk = _Walk(network, finite_width, linear_regime, _Builder("propagation"), {}, {}, {}, {}, {}, {})
    signal = _input_signal(walk)
    walk.signals[-1] = signal
    for position, layer in enumerate(network.layers):
        try:
            signal = forward_rule(layer, walk, signal, position)
        except DerivationError as exc:  # the signals below stay derived (derive() answers there); nothing above
            walk.forward_error = walk.gradient_error = walk.pair_error = exc
            return walk
        walk.signals[position] = signal
    gradient = _output_gradient(walk)
    walk.gradients[gradient.position] = gradient
    for position in range(len(network.layers) - 1, -1, -1):
        try:
            gradient = backward_rule(network.layers[position], walk, gradient, walk.signals[position - 1], position)
        except DerivationError as exc:  # the gradients below stay underived; the forward ones are unaffected
            walk.gradient_error = exc
            break
        walk.gradients[gradient.position] = gradient
    if getattr(network.inputs, "paired", False):
        _pair_walk(walk)
    return walk


@lru_cache(maxsize=256)
def _propagate(network: Network, finite_width: bool, linear_regime: bool) -> Propagation:
    return Propagation(network, finite_width, linear_regime, _walk(network, finite_width, linear_regime))


def propagate(network: Network, *, finite_width: bool = False, linear_regime: bool = False) -> Propagation:
    """Walk ``network`` forward and backward once (see the module docstring).

    ``finite_width=True`` keeps the exact finite-width factor :math:`\\prod_k (1 - 2^{-n_k})` (the
    probability that no relu layer below is identically zero, which gates the gradient);
    ``linear_regime=True`` replaces every non-linear activation by Glorot's approximation
    :math:`\\phi(z) \\approx z` (steps of class ``approximation``).
    """
    if not isinstance(network, Network):
        raise DerivationError(f"propagate needs a varprop Network, got {_short(network)}")
    result = _propagate(network, bool(finite_width), bool(linear_regime))
    if result._walk.forward_error is not None:  # a whole walk is asked for: every layer must be derivable
        raise DerivationError(str(result._walk.forward_error))
    return result


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def derive(network: Network, observable: Observable, *, finite_width: bool = False,
           linear_regime: bool = False) -> Derivation:
    """The derivation of ``observable`` in ``network``; its ``result`` is the prediction.

    With ``finite_width=True`` the finite-width derivation is used where it is not asymptotic, and
    the textbook (He et al.) one elsewhere, labelled asymptotic.
    """
    # A walk that stops at some layer still derives the observables below it (the audit's NOT DERIVED places).
    if not isinstance(network, Network):
        raise DerivationError(f"derive needs a varprop Network, got {_short(network)}")
    textbook = _propagate(network, False, bool(linear_regime)).derivation(observable)
    if not finite_width:
        return textbook
    refined = _propagate(network, True, bool(linear_regime)).derivation(observable)
    return refined if refined.exactness != "asymptotic" else textbook


# --- per-layer view --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """A predicted value, its exactness class, the reason for that class, and the derivation behind it."""

    value: sp.Expr
    exactness: str
    reason: str = ""
    derivation: Derivation | None = None


@dataclass(frozen=True)
class LayerPrediction:
    """The predictions for dense layer ``layer`` (1-based), by claim-file observable name."""

    layer: int
    values: dict[str, Prediction]

    def __getitem__(self, observable: str) -> Prediction:
        return self.values[observable]


def predict(network: Network, *, finite_width: bool = False) -> tuple[LayerPrediction, ...]:
    """Every claim-file observable at every dense layer of ``network`` (those of a pair of inputs only when the
    network has one), read off :func:`derive`.

    A view for tables and plots: each :class:`Prediction` holds the derivation its value comes from.
    """
    from ..observables import LEGACY_NAMES, PAIR_OBSERVABLES, from_name

    if not isinstance(network, Network):
        raise DerivationError(f"predict needs a Network, got {_short(network)}")
    paired = getattr(network.inputs, "paired", False)
    out = []
    for layer in range(1, network.depth + 1):
        values = {}
        for name in LEGACY_NAMES:
            observable = from_name(name, layer, network)
            if isinstance(observable, PAIR_OBSERVABLES) and not paired:  # a pair's observables need a pair
                continue
            d = derive(network, observable, finite_width=finite_width)
            values[name] = Prediction(d.result, d.exactness, _reason(d), d)
        out.append(LayerPrediction(layer, values))
    return tuple(out)


def _reason(derivation: Derivation) -> str:
    """The justification of the last modelling or lemma step: what the prediction rests on."""
    for step in reversed(derivation.steps):
        if step.check in ("modelling", "lemma", "integral"):
            return step.justification
    return derivation.steps[-1].justification if derivation.steps else ""
