r"""The textbook recursions of He et al. (2015) and Glorot & Bengio (2010), for a generic layer l.

Notation (He et al. 2015, Sec. 2.2): dense layer :math:`l` maps :math:`x_l \in \mathbb R^{n_l}` to
:math:`y_l = W_l x_l + b_l`; :math:`x_{l+1} = \phi(y_l)`; :math:`\hat n_l` is the fan-out of layer
:math:`l`; :math:`\Delta x_l = \partial L/\partial x_l` and :math:`\Delta y_l = \partial L/\partial y_l`.

Every derivation here is activation-generic. When sympy proves the *symmetry lemma*
:math:`\phi(y)^2 + \phi(-y)^2 = c\,y^2` (relu: c = 1, leaky relu: :math:`1 + a^2`, abs: 2), the
second moment :math:`E[\phi(y)^2] = \tfrac{c}{2}\operatorname{Var}[y]` holds for *any* symmetric
zero-mean :math:`y`, so the recursion is exact at finite width; otherwise the Gaussian moment from
:mod:`varprop.derive.gaussian` is used under the wide-layer assumption that :math:`y` is Gaussian, and
the derivation says so.

The per-layer facts (the symmetry lemmas, the Gaussian integrals, the dense layer's second moment)
are the ones :mod:`varprop.derive.propagate` uses for concrete networks; here they are stated for a
generic layer :math:`l` with symbolic widths and weight variance, then unrolled over the depth
(``unrolled`` checks) and solved for the weight variance (``solve`` checks).
"""

from __future__ import annotations

import sympy as sp

from ..activations import BUILTIN_ACTIVATIONS, X, Activation
from ..errors import DerivationError
from ..weights import DISTRIBUTIONS, N_IN, N_OUT, InitScheme, Normal, TruncatedNormal, Uniform, WeightLaw
from .derivation import (LEMMA_CONSTANT, Code, DPhi, Derivation, Expect, Integral, NormalLaw, Phi, Prose, Rule, Solve,
                         Unrolled, Variance, _Builder, prose)
from .gaussian import Q, moments
from .propagate import (
    DEPTH,
    LAYER,
    SymmetryLemma,
    _check_linear_regime,
    derivative_symmetry_lemma,
    symmetry_lemma,
)
from .propagate import dW as _dW
from .propagate import dx as _dx
from .propagate import dy as _dy
from .propagate import n as _n
from .propagate import nhat as _nhat
from .propagate import w as _w
from .propagate import x as _x
from .propagate import y as _y

__all__ = [
    "LAYER",
    "DEPTH",
    "Q_STAR",
    "SymmetryLemma",
    "symmetry_lemma",
    "derivative_symmetry_lemma",
    "forward",
    "backward",
    "weight_gradient",
    "condition",
    "ratio",
    "glorot",
    "DERIVATIONS",
]

#: Unknown fixed-point variance of a non-homogeneous recursion.
Q_STAR = sp.Symbol("q_star", positive=True)

_l = LAYER
_Y = sp.Symbol("y")
_Z = sp.Symbol("z")
_Q_WORD = sp.Symbol("q")
HE = "He et al. 2015"
_CHECKED_DEPTHS = prose(" (checked for depths ", sp.Eq(sp.Symbol("L"), 2), " to 7)")
GLOROT = "Glorot & Bengio 2010"

_A_IID = prose("the entries of ", sp.Symbol("W_l"), " are iid, and independent of ", _x[_l])
_A_X_ID = prose("the entries of ", _x[_l], " are identically distributed")
_A_X_INDEP = prose("the entries of ", _x[_l], " are mutually independent (He et al.'s simplification)")
_A_ZERO_MEAN = prose(sp.Eq(Expect(_w[_l]), 0), " (zero-mean weights)")
_A_SYMMETRIC = prose("the weight law is symmetric about 0, so ", _y[_l - 1], " is symmetric about 0 with no atom at 0")
_A_GAUSSIAN_Y = prose(_y[_l - 1], " is Gaussian (wide layers: central limit theorem)")
_A_GRAD_INDEP = prose(_dy[_l], " is independent of ", sp.Symbol("W_l"), " (the gradient-independence assumption)")
_A_DERIV_INDEP = prose(DPhi(_y[_l]), " is independent of ", _dx[_l + 1])
_A_DY_X_INDEP = prose(_dy[_l], " is independent of ", _x[_l])
_A_NO_BIAS = "biases are zero"
_A_LINEAR_REGIME = prose(Phi(_Z), " is linear near 0 with ", sp.Eq(Phi(0), 0), " and ", sp.Eq(DPhi(0), 1),
                         " (Glorot's linear regime)")


# --- shared pieces -----------------------------------------------------------------------------


def _factor_text(value: sp.Expr) -> str:
    return f"({value})" if isinstance(value, sp.Add) else str(value)


def _title(kind: str, act: Activation) -> Prose:
    return prose(f"{kind} for ", _named(act))


def _named(act: Activation) -> Prose:
    """The activation in words: ``leaky relu with a = 1/5``; a user's expression as the formula it is."""
    if act.name not in BUILTIN_ACTIVATIONS:
        return prose(sp.Eq(sp.Function("phi")(sp.Symbol("x")), act.expr, evaluate=False))
    words = act.name.replace("_", " ")
    symbolic = {k for k, v in act.params if isinstance(v, sp.Symbol) and v.name == k}
    values = [sp.Eq(sp.Symbol(k), v, evaluate=False) for k, v in act.params if k not in symbolic]
    named = [sp.Symbol(k) for k in sorted(symbolic)]
    parts: list[str | sp.Basic] = [words]
    for i, part in enumerate(named):
        parts += [" with parameter " if i == 0 else " and ", part]
    for i, value in enumerate(values):
        parts += [" with " if i == 0 and not named else " and ", value]
    return prose(*parts)


def _scheme(scheme: InitScheme) -> Code:
    """An init scheme by its varprop name, set as code (``torch_linear_default(no bias)``)."""
    return Code(str(scheme))


def _second_moment_fact(b: _Builder, act: Activation, arg: sp.Expr) -> tuple[int, sp.Expr, sp.Expr | None, tuple[str, ...]]:
    r"""Add the step :math:`E[\phi(arg)^2] = \dots` in terms of :math:`\operatorname{Var}[arg]`.

    Returns (step index, value, c or None, assumptions).
    """
    lemma = symmetry_lemma(act)
    if lemma.holds:
        value = lemma.constant / 2 * Variance(arg)
        y = sp.Symbol("y")
        why = prose("symmetry lemma ", sp.Eq(Phi(y) ** 2 + Phi(-y) ** 2, lemma.constant * y**2),
                    " (checked by sympy), so a symmetric zero-mean ", _Y, " keeps the fraction ", lemma.constant / 2,
                    " of its second moment")
        index = b.add(Expect(Phi(arg) ** 2), value, Rule.SYMMETRY, why,
                      proof=lemma.proof(LEMMA_CONSTANT / 2 * Variance(arg)),
                      assumptions=(_A_SYMMETRIC, _A_ZERO_MEAN), source=f"{HE}, eq. (8)")
        return index, value, lemma.constant, (_A_SYMMETRIC,)
    m = moments(act).second_moment
    value = m.expr.subs(Q, Variance(arg))
    why = prose("Gaussian integral ", Expect(Phi(_Z) ** 2), ", ", NormalLaw(_Z, 0, _Q_WORD), f" ({m.route}{'' if m.exact else ', numeric'})")
    index = b.add(Expect(Phi(arg) ** 2), value, Rule.GAUSSIAN_INTEGRAL, why, proof=Integral(act.expr**2, Variance(arg)),
                  assumptions=(_A_SYMMETRIC, _A_GAUSSIAN_Y, _A_ZERO_MEAN), exactness="asymptotic")
    return index, value, None, (_A_SYMMETRIC, _A_GAUSSIAN_Y)


def _derivative_moment_fact(b: _Builder, act: Activation, arg: sp.Expr) -> tuple[int, sp.Expr, sp.Expr | None]:
    r"""Add the step :math:`E[\phi'(arg)^2] = \dots`; returns (step index, value, c' or None)."""
    lemma = derivative_symmetry_lemma(act)
    if lemma.holds:
        why = prose("symmetry lemma ", sp.Eq(DPhi(_Y) ** 2 + DPhi(-_Y) ** 2, lemma.constant), " (checked by sympy) for ", sp.Ne(_Y, 0))
        index = b.add(Expect(DPhi(arg) ** 2), lemma.constant / 2, Rule.SYMMETRY, why, proof=lemma.proof(LEMMA_CONSTANT / 2),
                      assumptions=(_A_SYMMETRIC,))
        return index, lemma.constant / 2, lemma.constant
    m = moments(act).derivative_second_moment
    value = m.expr.subs(Q, Variance(arg))
    why = prose("Gaussian integral ", Expect(DPhi(_Z) ** 2), ", ", NormalLaw(_Z, 0, _Q_WORD), f" ({m.route}{'' if m.exact else ', numeric'})")
    index = b.add(Expect(DPhi(arg) ** 2), value, Rule.GAUSSIAN_INTEGRAL, why,
                  proof=Integral(act.derivative**2, Variance(arg)), assumptions=(_A_SYMMETRIC, _A_GAUSSIAN_Y),
                  exactness="asymptotic")
    return index, value, None


def _definition_step(b: _Builder, act: Activation, arg: sp.Expr) -> int:
    return b.define(Phi(arg), act.expr.subs(X, arg), prose("the activation ", _named(act)))


def _unrolled(b: _Builder, lhs: sp.Expr, initial: sp.Expr, factor: sp.Expr, why: str, source: str, *,
              uses: tuple[int, ...] = ()) -> int:
    """``lhs = initial * prod_{l=2}^{L} factor``, checked against the recursion unrolled for L = 2..7."""
    rhs = initial * sp.Product(factor, (_l, 2, DEPTH))
    return b.add(lhs, rhs, Rule.UNROLLING, prose(why, _CHECKED_DEPTHS),
                 proof=Unrolled(initial, factor, _l, 2, DEPTH), uses=uses, source=source)


# --- forward -----------------------------------------------------------------------------------


def forward(act: Activation, *, weight_mean: bool = False, scheme: InitScheme | None = None) -> Derivation:
    r"""The forward recursion for :math:`\operatorname{Var}[y_l]` (He et al. 2015, eqs. 6-9).

    .. math::
        \operatorname{Var}[y_l] = n_l \operatorname{Var}[w_l]\, E[x_l^2], \qquad
        E[x_l^2] = \tfrac12 \operatorname{Var}[y_{l-1}] \text{ (relu)}, \qquad
        \operatorname{Var}[y_L] = \operatorname{Var}[y_1] \prod_{l=2}^{L} \tfrac12 n_l \operatorname{Var}[w_l].

    With ``scheme`` (an :class:`~varprop.weights.InitScheme`), its variance is substituted into the
    product, giving the per-layer factor that scheme produces (PyTorch's ``nn.Linear`` default with
    relu: 1/6). With ``weight_mean=True`` the weights keep a mean :math:`E[w_l]`, and the derivation shows the
    extra term :math:`n_l E[w_l]^2 \operatorname{Var}[x_l]`: :math:`\operatorname{Var}[w x] =
    \operatorname{Var}[w] E[x^2]` only when :math:`E[w] = 0`.
    """
    l = _l
    b = _Builder(_title("Forward recursion" + (" with non-zero-mean weights" if weight_mean else ""), act))
    var_y, wx = Variance(_y[l]), Variance(_w[l] * _x[l])
    assumptions = (_A_IID, _A_X_ID, _A_NO_BIAS) + ((_A_X_INDEP,) if weight_mean else ())
    b.model(var_y, _n[l] * wx, Rule.INDEPENDENCE,
            prose(_y[l], " is a sum of ", _n[l], " terms ", _w[l] * _x[l], " that are uncorrelated (zero-mean weights) or independent"),
            assumptions=assumptions, source=f"{HE}, eq. (6)")
    Ew, Ew2, Ex, Ex2, Vw, Vx = (Expect(_w[l]), Expect(_w[l] ** 2), Expect(_x[l]), Expect(_x[l] ** 2),
                                Variance(_w[l]), Variance(_x[l]))
    product_variance = Ew2 * Ex2 - Ew**2 * Ex**2
    w_, x_ = sp.Symbol("w"), sp.Symbol("x")
    product_rule = sp.Eq(Variance(w_ * x_), Expect(w_**2) * Expect(x_**2) - Expect(w_) ** 2 * Expect(x_) ** 2)
    product = b.model(wx, product_variance, Rule.INDEPENDENCE, prose(product_rule),
                      assumptions=(_A_IID,))
    b.identity(var_y, _n[l] * product_variance, Rule.INDEPENDENCE,
               prose(product_rule, " for independent ", w_, " and ", x_), uses=(b.current - 1, product))
    second_rule = prose(sp.Eq(Expect(w_**2), Variance(w_) + Expect(w_) ** 2))
    w2 = b.define(Ew2, Vw + Ew**2, second_rule, rule=Rule.VARIANCE_DEFINITION)
    b.then(_n[l] * ((Vw + Ew**2) * Ex2 - Ew**2 * Ex**2), Rule.VARIANCE_DEFINITION, second_rule,
           uses=(w2,))
    vx = b.define(Vx, Ex2 - Ex**2, prose("definition of ", Variance(x_)), rule=Rule.VARIANCE_DEFINITION)
    general = _n[l] * (Vw * Ex2 + Ew**2 * Vx)
    general_step = b.then(general, Rule.VARIANCE_DEFINITION, prose(sp.Eq(Expect(x_**2) - Expect(x_) ** 2, Variance(x_)), ": the extra term is ", Expect(w_) ** 2 * Variance(x_)),
                          uses=(vx,))
    if weight_mean:
        return _forward_with_mean(b, act, general_step, vx)

    zero = b.model(Ew, sp.Integer(0), Rule.ZERO_MEAN, "zero-mean weights", assumptions=(_A_ZERO_MEAN,))
    chain = b.then(_n[l] * Vw * Ex2, Rule.ZERO_MEAN, prose("the extra term vanishes only because ", sp.Eq(Ew, 0)),
                   uses=(zero,), source=f"{HE}, eq. (7)")
    _definition_step(b, act, _y[l - 1])
    ex2 = b.define(Ex2, Expect(Phi(_y[l - 1]) ** 2), prose(sp.Eq(_x[l], Phi(_y[l - 1]))))
    fact, x_second, c, _ = _second_moment_fact(b, act, _y[l - 1])
    recursion = _n[l] * Vw * x_second
    b.identity(var_y, recursion, Rule.SUBSTITUTION, prose("substitute ", Ex2), uses=(chain, ex2, fact),
               source=f"{HE}, eq. (8)" if c is not None else "")
    if c is None:
        return b.build(recursion, summary=_forward_summary(act, None), recursion=recursion)
    factor = c / 2 * _n[l] * Vw
    unrolled = _unrolled(b, Variance(_y[DEPTH]), Variance(_y[1]), factor,
                         prose("apply the recursion from layer ", DEPTH, " down to layer 2"), f"{HE}, eq. (9)", uses=(b.current,))
    if scheme is None:
        return b.build(Variance(_y[1]) * sp.Product(factor, (l, 2, DEPTH)), summary=_forward_summary(act, c),
                       recursion=recursion, factor=factor)
    variance = scheme.variance(_n[l], _nhat[l])
    applied = sp.simplify(factor.subs(Vw, variance))
    result = Variance(_y[1]) * sp.Product(applied, (l, 2, DEPTH)).doit()
    scheme_step = b.define(Vw, variance, prose(_scheme(scheme), ": ", sp.Eq(Vw, variance)), source=scheme.source)
    b.identity(Variance(_y[DEPTH]), result, Rule.SUBSTITUTION,
               prose(_scheme(scheme), ": ", sp.Eq(Vw, variance), ", so each layer multiplies ", Variance(sp.Symbol("y")),
                     " by ", applied),
               uses=(unrolled, scheme_step), source=scheme.source)
    return b.build(result, summary=prose(_forward_summary(act, c), " Under ", _scheme(scheme), " the factor is ", applied, "."),
                   recursion=recursion, factor=applied)


def _forward_summary(act: Activation, c: sp.Expr | None) -> Prose:
    y = sp.Symbol("y")
    if c is None:
        return prose(
            "For ", _named(act), " the second moment ", Expect(Phi(y) ** 2), " is not a fixed fraction of ", Variance(y),
            ", so the recursion is a non-linear map of the variance and holds for Gaussian pre-activations (wide layers)."
        )
    return prose(
        "For ", _named(act), ", ", sp.Eq(Phi(y) ** 2 + Phi(-y) ** 2, c * y**2), ", so each layer multiplies the pre-activation "
        "variance by ", c / 2 * _n[LAYER] * Variance(sp.Symbol("w_l")),
        "; this is exact at every width for any symmetric zero-mean weight law."
    )


def _forward_with_mean(b: _Builder, act: Activation, general_step: int, vx: int) -> Derivation:
    l = _l
    m = moments(act)
    x_mean = m.mean.expr.subs(Q, Variance(_y[l - 1]))
    _definition_step(b, act, _y[l - 1])
    mean = b.add(Expect(_x[l]), x_mean, Rule.GAUSSIAN_INTEGRAL if m.mean.route != "symmetry" else Rule.SYMMETRY,
                 prose(Expect(Phi(_Z)), ", ", NormalLaw(_Z, 0, Variance(_y[l - 1])), f" ({m.mean.route})"), proof=Integral(act.expr, Variance(_y[l - 1])),
                 assumptions=(_A_GAUSSIAN_Y, prose(_y[l - 1], " is centred (the weights of layer ", l - 1, " have zero mean)")),
                 exactness="asymptotic")
    ex2 = b.define(Expect(_x[l] ** 2), Expect(Phi(_y[l - 1]) ** 2), prose(sp.Eq(_x[l], Phi(_y[l - 1]))))
    fact, x_second, _, _ = _second_moment_fact(b, act, _y[l - 1])
    Vw, Ew = Variance(_w[l]), Expect(_w[l])
    value = _n[l] * (Vw * x_second + Ew**2 * (x_second - x_mean**2))
    b.identity(Variance(_y[l]), value, Rule.SUBSTITUTION,
               prose("substitute ", Expect(_x[l]), " and ", Expect(_x[l] ** 2), " (", sp.Eq(Variance(_x[l]), Expect(_x[l] ** 2) - Expect(_x[l]) ** 2), ")"), uses=(general_step, vx, ex2, fact, mean))
    linearity = b.model(Expect(_y[l]), _n[l] * Ew * Expect(_x[l]), Rule.INDEPENDENCE,
                        prose("linearity: ", sp.Eq(Expect(_y[l]), _n[l] * Ew * Expect(_x[l]))), assumptions=(_A_IID,))
    b.identity(Expect(_y[l]), _n[l] * Ew * x_mean, Rule.INDEPENDENCE,
               prose(sp.Eq(Expect(_y[l]), _n[l] * Ew * Expect(_x[l])), ": non-zero, so ", _y[l], " is no longer centred"), uses=(linearity, mean))
    return b.build(
        value,
        summary=prose(
            "With ", sp.Ne(Ew, 0), " the variance gains ", _n[l] * Ew**2 * Variance(_x[l]), ", and ", _y[l],
            " acquires the mean ", _n[l] * Ew * Expect(_x[l]), "; He et al.'s ",
            sp.Eq(Variance(_y[l]), _n[l] * Variance(_w[l]) * Expect(_x[l] ** 2)), " is exactly the zero-mean case."
        ),
        extra_term=_n[l] * Ew**2 * (x_second - x_mean**2),
    )


# --- backward ----------------------------------------------------------------------------------


def _backward_chain(b: _Builder, act: Activation) -> tuple[int, sp.Expr, sp.Expr | None]:
    r"""Steps for :math:`E[\Delta y_l^2] = E[\phi'(y_l)^2] \operatorname{Var}[\Delta x_{l+1}]`: (step, value, c')."""
    l = _l
    Edy2 = Expect(_dy[l] ** 2)
    dphi2 = Expect(DPhi(_y[l]) ** 2)
    chain = b.define(_dy[l], DPhi(_y[l]) * _dx[l + 1], prose(sp.Eq(_x[l + 1], Phi(_y[l]))), rule=Rule.CHAIN_RULE)
    independent = b.model(Edy2, dphi2 * Expect(_dx[l + 1] ** 2), Rule.INDEPENDENCE, "",
                          assumptions=(_A_DERIV_INDEP,), exactness="asymptotic", uses=(chain,))
    slope_step, slope, c = _derivative_moment_fact(b, act, _y[l])
    centred = b.model(Expect(_dx[l + 1] ** 2), Variance(_dx[l + 1]), Rule.ZERO_MEAN,
                      prose(sp.Eq(Expect(_dx[l + 1]), 0), " because the weights of layer ", l + 1, " have zero mean"))
    value = slope * Variance(_dx[l + 1])
    step = b.identity(Edy2, value, Rule.SUBSTITUTION, prose(sp.Eq(Edy2, dphi2 * Variance(_dx[l + 1]))),
                      uses=(independent, slope_step, centred))
    return step, slope, c


def backward(act: Activation) -> Derivation:
    r"""The backward recursion for :math:`\operatorname{Var}[\Delta x_l]` (He et al. 2015, eqs. 11-14).

    .. math::
        \operatorname{Var}[\Delta x_l] = \hat n_l \operatorname{Var}[w_l]\, E[\phi'(y_l)^2]\,
        \operatorname{Var}[\Delta x_{l+1}], \qquad
        \operatorname{Var}[\Delta x_2] = \operatorname{Var}[\Delta x_{L+1}]
        \prod_{l=2}^{L} \tfrac12 \hat n_l \operatorname{Var}[w_l] \text{ (relu)}.
    """
    l = _l
    b = _Builder(_title("Backward recursion", act))
    var_dx, wdy = Variance(_dx[l]), Variance(_w[l] * _dy[l])
    Vw, Edy2 = Variance(_w[l]), Expect(_dy[l] ** 2)
    first = b.model(var_dx, _nhat[l] * wdy, Rule.INDEPENDENCE, prose(_dx[l], " is a sum of ", _nhat[l], " terms ", _w[l] * _dy[l], " (fan-out)"),
                    assumptions=(_A_IID, _A_GRAD_INDEP), exactness="asymptotic", source=f"{HE}, eq. (11)")
    zero = b.model(wdy, Vw * Edy2, Rule.ZERO_MEAN, prose(sp.Eq(wdy, Vw * Edy2), " as ", sp.Eq(Expect(_w[l]), 0)),
                   assumptions=(_A_ZERO_MEAN,))
    chain = b.identity(var_dx, _nhat[l] * Vw * Edy2, Rule.ZERO_MEAN, prose(sp.Eq(wdy, Vw * Edy2), " as ", sp.Eq(Expect(_w[l]), 0)),
                       uses=(first, zero))
    dy_step, slope, c = _backward_chain(b, act)
    recursion = _nhat[l] * Vw * slope * Variance(_dx[l + 1])
    b.identity(var_dx, recursion, Rule.SUBSTITUTION, prose("substitute ", Edy2), uses=(chain, dy_step),
               source=f"{HE}, eq. (12)" if c is not None else "")
    if c is None:
        return b.build(recursion, summary=prose(
            "For ", _named(act), " ", Expect(DPhi(_y[l]) ** 2), " depends on ", Variance(_y[l]), ", so the backward factor "
            "changes with the forward variance and there is no depth-independent product."), recursion=recursion)
    factor = slope * _nhat[l] * Vw
    _unrolled(b, Variance(_dx[2]), Variance(_dx[DEPTH + 1]), factor, prose("apply the recursion from layer 2 up to layer ", DEPTH),
              f"{HE}, eq. (13)", uses=(b.current,))
    return b.build(Variance(_dx[DEPTH + 1]) * sp.Product(factor, (l, 2, DEPTH)), summary=prose(
        "Each layer multiplies the gradient's second moment by ", c / 2 * _nhat[l] * Vw, ", with ", _nhat[l],
        " the fan-out."),
        recursion=recursion, factor=factor)


# --- weight gradient ---------------------------------------------------------------------------


def weight_gradient(act: Activation) -> Derivation:
    r"""The second moment of :math:`\partial L / \partial W_l`.

    .. math::
        E\big[(\partial L/\partial W_{l,ij})^2\big] = E[\Delta y_{l,i}^2]\, E[x_{l,j}^2]
        = E[\phi'(y_l)^2] \operatorname{Var}[\Delta x_{l+1}] \cdot E[\phi(y_{l-1})^2],

    so it is controlled by the pre-activation variance (forward) and the activation-gradient
    variance (backward) together.
    """
    l = _l
    b = _Builder(_title("Weight-gradient second moment", act))
    dW2 = Expect(_dW[l] ** 2)
    chain = b.define(_dW[l], _dy[l] * _x[l], prose("chain rule through ", sp.Eq(_y[l], sp.Symbol("W_l") * _x[l]), ", entry by entry"), rule=Rule.CHAIN_RULE)
    Edy2, Ex2 = Expect(_dy[l] ** 2), Expect(_x[l] ** 2)
    b.model(dW2, Edy2 * Ex2, Rule.INDEPENDENCE, "", assumptions=(_A_DY_X_INDEP,), exactness="asymptotic", uses=(chain,))
    dy_step, slope, c_back = _backward_chain(b, act)
    b.then(slope * Variance(_dx[l + 1]) * Ex2, Rule.SUBSTITUTION,
           prose("backward recursion: ", sp.Eq(Edy2, Expect(DPhi(_y[l]) ** 2) * Variance(_dx[l + 1]))), uses=(dy_step,))
    _definition_step(b, act, _y[l - 1])
    ex2 = b.define(Ex2, Expect(Phi(_y[l - 1]) ** 2), prose(sp.Eq(_x[l], Phi(_y[l - 1]))))
    fact, x_second, c_fwd, _ = _second_moment_fact(b, act, _y[l - 1])
    value = slope * Variance(_dx[l + 1]) * x_second
    # `then` continues the chain of E[Delta_W_l^2], which is three steps back.
    chain_step = next(i for i in range(len(b.steps) - 1, -1, -1) if b.steps[i].lhs == dW2)
    b.identity(dW2, value, Rule.SUBSTITUTION, prose("forward recursion: ", sp.Eq(Ex2, Expect(Phi(_y[l - 1]) ** 2))),
               uses=(chain_step, ex2, fact), assumptions=(_A_SYMMETRIC,))
    summary = prose(
        "The weight gradient's second moment is the product of the backward quantity ", Variance(_dx[l + 1]),
        " and the forward quantity ", Variance(_y[l - 1]), ": keeping both stable (one exactly, the other up to the "
        "width ratio of the ratio derivation) keeps the weight gradients stable, whether or not ", _x[l],
        " is zero-mean."
    )
    if c_back is None or c_fwd is None:
        return b.build(value, summary=summary, general=value)
    # Under the fan-in condition every forward factor is 1 and every backward factor nhat_k / n_k.
    k = sp.Symbol("k", integer=True, positive=True)
    under_fan_in = c_back / 2 * c_fwd / 2 * Variance(_y[1]) * Variance(_dx[DEPTH + 1]) * sp.Product(
        _nhat[k] / _n[k], (k, l + 1, DEPTH))
    b.model(dW2, under_fan_in, Rule.CONDITION,
            prose("with the fan-in condition ", sp.Eq(c_fwd / 2 * _n[k] * Variance(_w[k]), 1), " for every ", k, ": ",
                  sp.Eq(Variance(_y[l - 1]), Variance(_y[1])), " and ", sp.Eq(Variance(_dx[l + 1]),
                  Variance(_dx[DEPTH + 1]) * sp.Product(_nhat[k] / _n[k], (k, l + 1, DEPTH)))),
            source=f"{HE}, eqs. (9), (10), (13)")
    # The result is the last step: the general product (``general``) under He's fan-in condition.
    return b.build(under_fan_in, summary=prose(summary, " Under the fan-in condition it is the last step's product: "
                                              "no power of the depth, only a ratio of widths."),
                   general=value, under_fan_in=under_fan_in)


# --- conditions --------------------------------------------------------------------------------


def _law_parameter(weights: str, variance: sp.Expr) -> tuple[str, sp.Expr, WeightLaw, sp.Expr]:
    """(parameter name, its value, the law, the law's variance in the parameter symbol)."""
    symbol_name = "bound" if weights == "uniform" else "std"
    s = sp.Symbol(symbol_name, positive=True)
    if weights == "normal":
        return symbol_name, sp.sqrt(variance), Normal(variance), s**2
    if weights == "uniform":
        law = Uniform(sp.sqrt(3 * variance))
        return symbol_name, law.bound, law, s**2 / 3
    if weights == "truncated_normal":
        law = TruncatedNormal(1).with_variance(variance)
        return symbol_name, law.std, law, s**2 * TruncatedNormal(1).standard_variance()
    raise DerivationError(f"unknown weight distribution {weights!r}; known: {', '.join(DISTRIBUTIONS)}")


def _law_step(b: _Builder, weights: str, weight_variance: sp.Expr, why: str, source: str = "",
              uses: tuple[int, ...] = ()) -> sp.Expr:
    name, parameter, law, law_variance = _law_parameter(weights, weight_variance)
    symbol = sp.Symbol(name, positive=True)
    b.add(symbol, parameter, Rule.SOLVE, prose(*(why.parts if isinstance(why, Prose) else (why,)),
                                               f" ({law.__class__.__name__}: variance ", law_variance, ")"),
          proof=Solve(sp.Eq(law_variance, weight_variance), symbol), uses=uses, source=source)
    return parameter


_CONDITION_SOURCES = {
    ("relu", "fan_in"): f"{HE}, eq. (10)",
    ("relu", "fan_out"): f"{HE}, eq. (14)",
    ("leaky_relu", "fan_in"): f"{HE}, eq. (15)",
}


def condition(act: Activation, *, mode: str = "fan_in", weights: str = "normal") -> Derivation:
    r"""The initialisation condition and the weight variance it prescribes.

    For a homogeneous activation (symmetry lemma with constant c):
    :math:`\tfrac c2 n_l \operatorname{Var}[w_l] = 1` (He et al. 2015, eq. 10; leaky relu / PReLU:
    :math:`\tfrac12 (1 + a^2) n_l \operatorname{Var}[w_l] = 1`, eq. 15) with :math:`n_l` the fan-in,
    or :math:`\tfrac{c'}2 \hat n_l \operatorname{Var}[w_l] = 1` (eq. 14) with the fan-out. The result
    ``weight_variance`` is written in :data:`~varprop.weights.N_IN` / :data:`~varprop.weights.N_OUT`.

    Otherwise (tanh, shifted relu, ...) no scale-free condition exists: the variance is preserved only
    at a fixed point :math:`q^* = n \operatorname{Var}[w] E[\phi(z)^2]`, :math:`z \sim \mathcal N(0, q^*)`,
    and ``weight_variance`` depends on :math:`q^*`.
    """
    if mode not in ("fan_in", "fan_out"):
        raise DerivationError(f"unknown mode {mode!r}; known: fan_in, fan_out")
    if weights not in DISTRIBUTIONS:
        raise DerivationError(f"unknown weight distribution {weights!r}; known: {', '.join(DISTRIBUTIONS)}")
    l = _l
    var_w = Variance(_w[l])
    fan, fan_symbol = (_n[l], N_IN) if mode == "fan_in" else (_nhat[l], N_OUT)
    b = _Builder(_title(f"Initialisation condition ({mode.replace('_', '-')})", act))
    if mode == "fan_in":
        lemma = symmetry_lemma(act)
        what, kept = "forward", sp.Eq(Variance(_y[l]), Variance(_y[l - 1]))
        if not lemma.holds:
            return _fixed_point_condition(b, act, mode, weights)
        fact, moment, c, assumptions = _second_moment_fact(b, act, _y[l - 1])
        scale = moment / Variance(_y[l - 1])
    else:
        lemma = derivative_symmetry_lemma(act)
        what, kept = "backward", sp.Eq(Variance(_dx[l]), Variance(_dx[l + 1]))
        if not lemma.holds:
            return _fixed_point_condition(b, act, mode, weights)
        fact, scale, c = _derivative_moment_fact(b, act, _y[l])
        assumptions = (_A_SYMMETRIC,)
    factor = scale * fan * var_w
    condition_step = b.model(factor, sp.Integer(1), Rule.CONDITION, prose(f"keep every layer's factor at 1 ({what}: ", kept, ")"),
                             assumptions=assumptions, uses=(fact,), source=_CONDITION_SOURCES.get((act.name, mode), ""))
    solutions = sp.solve(sp.Eq(factor, 1), var_w)
    if len(solutions) != 1:
        raise DerivationError(f"the condition {factor} = 1 has no unique solution for Var[w_l]: {solutions}")
    variance = solutions[0]
    solved = b.add(var_w, variance, Rule.SOLVE, prose("solve the condition for ", Variance(_w[l]), " (", Code("sympy.solve"), ")"),
                   proof=Solve(sp.Eq(factor, 1), var_w), uses=(condition_step,))
    weight_variance = variance.subs(fan, fan_symbol)
    parameter = _law_step(b, weights, weight_variance, prose(f"{weights} law with variance ", Variance(_w[l])), uses=(solved,))
    return b.build(
        weight_variance,
        summary=prose(sp.Eq(Variance(_w[_l]), weight_variance), f" keeps the {what} signal's scale at every depth."),
        weight_variance=weight_variance,
        law_parameter=parameter,
    )


def _fixed_point_condition(b: _Builder, act: Activation, mode: str, weights: str) -> Derivation:
    l = _l
    m2 = moments(act).second_moment
    var_w = Variance(_w[l])
    second = m2.expr.subs(Q, Q_STAR)
    if m2.exact and not sp.simplify(second / Q_STAR).has(Q_STAR):
        raise DerivationError(f"{act} is homogeneous; use the scale-free condition")
    equation_lhs = _n[l] * var_w * second
    fact, moment, _, _ = _second_moment_fact(b, act, _y[l - 1])
    ex2 = b.define(Expect(_x[l] ** 2), Expect(Phi(_y[l - 1]) ** 2), prose(sp.Eq(_x[l], Phi(_y[l - 1]))))
    recursion = b.model(Variance(_y[l]), _n[l] * var_w * Expect(_x[l] ** 2), Rule.INDEPENDENCE,
                        "the forward recursion with zero-mean weights", assumptions=(_A_IID, _A_ZERO_MEAN),
                        source=f"{HE}, eq. (7)")
    b.identity(Variance(_y[l]), _n[l] * var_w * moment, Rule.GAUSSIAN_INTEGRAL,
               prose("forward recursion with ", Expect(Phi(_Z) ** 2), ", ", NormalLaw(_Z, 0, Variance(_y[l - 1])), f" ({m2.route})"), uses=(recursion, ex2, fact))
    fixed = b.model(Q_STAR, equation_lhs, Rule.FIXED_POINT,
                    prose(sp.Eq(Variance(_y[l]), Variance(_y[l - 1])), " = ", Q_STAR, ": the variance is preserved "
                          "only at a fixed point, since ", Expect(Phi(_Z) ** 2) / Q, " depends on ", Q, " (no scale-free condition)"))
    variance = Q_STAR / (_n[l] * second)
    b.add(var_w, variance, Rule.SOLVE, prose("solve the fixed-point equation for ", Variance(_w[l])),
          proof=Solve(sp.Eq(Q_STAR, equation_lhs), var_w), uses=(fixed,))
    weight_variance = variance.subs(_n[l], N_IN)
    note = "" if mode == "fan_in" else " (the fan-out mode has no separate fixed point: it follows the forward one)"
    return b.build(
        weight_variance,
        summary=prose(
            "For ", _named(act), " there is no scale-free condition: preserving a pre-activation variance ", Q_STAR, " needs ",
            sp.Eq(Variance(sp.Symbol("w")), Q_STAR / (N_IN * Expect(Phi(sp.Symbol("z")) ** 2))), " with ",
            NormalLaw(sp.Symbol("z"), 0, Q_STAR), ", a different variance for every ", Q_STAR, f"{note}."
        ),
        weight_variance=weight_variance,
        fixed_point_equation=sp.Eq(Q_STAR, equation_lhs.subs(_n[l], N_IN)),
    )


# --- ratio between the two conditions -----------------------------------------------------------


def ratio(act: Activation) -> Derivation:
    r"""What the unused direction does under each condition (He et al. 2015, after eq. 14).

    For a dense network :math:`\hat n_l = n_{l+1}`, so with the fan-in condition the backward product
    telescopes to :math:`\prod_{l=2}^{L} \hat n_l / n_l = n_{L+1}/n_2`, and with the fan-out condition
    the forward product to :math:`n_2/n_{L+1}` (He's :math:`c_2/d_L`): a ratio of two widths, not
    exponential in depth.
    """
    lemma_f, lemma_b = symmetry_lemma(act), derivative_symmetry_lemma(act)
    if not (lemma_f.holds and lemma_b.holds):
        raise DerivationError(
            f"the ratio of the two conditions needs a homogeneous activation (relu family); {act} has no "
            "scale-free condition"
        )
    c = lemma_f.constant
    if sp.simplify(lemma_b.constant - c) != 0:
        raise DerivationError(f"{act}: the forward and backward lemma constants differ ({c}, {lemma_b.constant})")
    l = _l
    b = _Builder(_title("Ratio between the fan-in and fan-out conditions", act))
    Vw = Variance(_w[l])
    backward_factor = c / 2 * _nhat[l] * Vw
    condition_step = b.model(c / 2 * _n[l] * Vw, sp.Integer(1), Rule.CONDITION, "fan-in condition",
                             source=f"{HE}, eq. (10)")
    fan_in_variance = 2 / (c * _n[l])
    solved = b.add(Vw, fan_in_variance, Rule.SOLVE, prose("solve the fan-in condition for ", Variance(_w[l])),
                   proof=Solve(sp.Eq(c / 2 * _n[l] * Vw, 1), Vw), uses=(condition_step,))
    per_layer = _nhat[l] / _n[l]
    b.identity(backward_factor, per_layer, Rule.SUBSTITUTION, "backward factor under the fan-in condition",
               uses=(solved,))
    b.define(_nhat[l], _n[l + 1], prose("dense layers: the fan-out of layer ", l, " is the fan-in of layer ", l + 1))
    # The fan-out case first, so that the result (the fan-in case) is the last step.
    forward_telescoped = _n[2] / _n[DEPTH + 1]
    b.add(sp.Product(_n[l] / _n[l + 1], (l, 2, DEPTH)), forward_telescoped, Rule.TELESCOPING,
          prose("with the fan-out condition the forward product is the inverse ratio (He's ",
                sp.Symbol("c_2") / sp.Symbol("d_L"), ")", _CHECKED_DEPTHS),
          proof=Unrolled(sp.Integer(1), _n[l] / _n[l + 1], l, 2, DEPTH), source=f"{HE}, after eq. (14)")
    telescoped = _n[DEPTH + 1] / _n[2]
    b.add(sp.Product(_n[l + 1] / _n[l], (l, 2, DEPTH)), telescoped, Rule.TELESCOPING,
          prose("with the fan-in condition consecutive widths cancel", _CHECKED_DEPTHS),
          proof=Unrolled(sp.Integer(1), _n[l + 1] / _n[l], l, 2, DEPTH), source=f"{HE}, after eq. (14)")
    return b.build(
        telescoped,
        summary=prose(
            "Whichever condition is used, the other direction's product is a ratio of two widths (", telescoped,
            " or its inverse), not exponential in depth: either condition alone suffices."
        ),
        fan_in_backward_product=telescoped,
        fan_out_forward_product=forward_telescoped,
    )


# --- Glorot --------------------------------------------------------------------------------------


def glorot(act: Activation, *, weights: str = "uniform") -> Derivation:
    r"""Glorot & Bengio (2010) for a linear (or linear-regime) network.

    Forward :math:`n_l \operatorname{Var}[w_l] = 1` (eq. 10), backward
    :math:`\hat n_l \operatorname{Var}[w_l] = 1` (eq. 11), and the compromise
    :math:`\operatorname{Var}[w_l] = 2/(n_l + \hat n_l)` (eq. 12); uniform weights with bound
    :math:`\sqrt{6/(n_l + \hat n_l)}` (eq. 16). For any activation other than linear this rests on the
    linear-regime approximation :math:`\phi(z) \approx z` near 0, which varprop checks (phi(0) = 0,
    phi'(0) = 1) and labels as an approximation.
    """
    l = _l
    b = _Builder(_title("Glorot / Xavier initialisation", act))
    exact_linear = sp.simplify(act.expr - X) == 0
    if not exact_linear:
        _check_linear_regime(act)
    Vw = Variance(_w[l])
    forward_general = b.model(Variance(_y[l]), _n[l] * Vw * Expect(_x[l] ** 2), Rule.INDEPENDENCE,
                              "forward recursion with zero-mean weights", assumptions=(_A_IID, _A_ZERO_MEAN),
                              source=f"{GLOROT}, eq. (5)")
    backward_general = b.model(Variance(_dx[l]), _nhat[l] * Vw * Expect(DPhi(_y[l]) ** 2) * Variance(_dx[l + 1]),
                               Rule.INDEPENDENCE, "backward recursion", assumptions=(_A_GRAD_INDEP,),
                               exactness="asymptotic", source=f"{GLOROT}, eq. (6)")
    if exact_linear:
        _definition_step(b, act, _y[l - 1])
        ex2 = b.define(Expect(_x[l] ** 2), Expect(Phi(_y[l - 1]) ** 2), prose(sp.Eq(_x[l], Phi(_y[l - 1]))))
        fact, _, _, _ = _second_moment_fact(b, act, _y[l - 1])
        slope_step, _, _ = _derivative_moment_fact(b, act, _y[l])
        forward_uses, backward_uses = (ex2, fact), (slope_step,)
    else:
        regime = b.model(Expect(_x[l] ** 2), Variance(_y[l - 1]), Rule.LINEAR_REGIME,
                         prose(Phi(_Z), " ≈ ", _Z, " keeps the whole second moment (", sp.Eq(Phi(0), 0), ", ", sp.Eq(DPhi(0), 1), " checked)"),
                         assumptions=(_A_LINEAR_REGIME,), exactness="approximation")
        slope_regime = b.model(Expect(DPhi(_y[l]) ** 2), sp.Integer(1), Rule.LINEAR_REGIME, prose(DPhi(_Z), " ≈ 1"),
                               assumptions=(_A_LINEAR_REGIME,), exactness="approximation")
        forward_uses, backward_uses = (regime,), (slope_regime,)
    b.identity(Variance(_y[l]), _n[l] * Vw * Variance(_y[l - 1]), Rule.LINEAR_REGIME, prose("forward recursion with ", sp.Eq(Phi(_Z), _Z)),
               uses=(forward_general, *forward_uses), source=f"{GLOROT}, eq. (5)")
    b.identity(Variance(_dx[l]), _nhat[l] * Vw * Variance(_dx[l + 1]), Rule.LINEAR_REGIME,
               prose("backward recursion with ", sp.Eq(DPhi(_Z), 1)), uses=(backward_general, *backward_uses), source=f"{GLOROT}, eq. (6)")
    b.model(_n[l] * Vw, sp.Integer(1), Rule.CONDITION, "forward condition", source=f"{GLOROT}, eq. (10)")
    b.model(_nhat[l] * Vw, sp.Integer(1), Rule.CONDITION, "backward condition", source=f"{GLOROT}, eq. (11)")
    compromise_equation = sp.Eq((_n[l] + _nhat[l]) / 2 * Vw, 1)
    compromise = sp.solve(compromise_equation, Vw)[0]
    solved = b.add(Vw, compromise, Rule.SOLVE,
                   prose("both hold only when ", sp.Eq(_n[l], _nhat[l]), "; the compromise sets the average of the two factors to 1"),
                   proof=Solve(compromise_equation, Vw), source=f"{GLOROT}, eq. (12)")
    weight_variance = compromise.subs({_n[l]: N_IN, _nhat[l]: N_OUT})
    parameter = _law_step(b, weights, weight_variance, f"{weights} law with this variance", uses=(solved,),
                          source=f"{GLOROT}, eq. (16)" if weights == "uniform" else "")
    return b.build(
        weight_variance,
        summary=prose(
            "For a linear network the forward and backward conditions differ unless fan-in equals fan-out; "
            "Glorot and Bengio take the compromise ", weight_variance, ".",
            *(() if exact_linear else (" For ", _named(act), " this is an approximation (linear regime), not an identity."))
        ),
        weight_variance=weight_variance,
        law_parameter=parameter,
    )


#: The derivations by CLI name.
DERIVATIONS = {
    "forward": forward,
    "backward": backward,
    "weight-gradient": weight_gradient,
    "condition": condition,
    "ratio": ratio,
    "glorot": glorot,
}
