r"""Derive rules of a residual block :math:`x \mapsto x + \alpha f(x)`, the branch :math:`f` a sub-network.

The branch is walked by the same engine as the network (:func:`~varprop.derive.propagate.forward_rule`,
:func:`~varprop.derive.propagate.backward_rule`, :func:`~varprop.derive.propagate.cross_rule` of each
of its layers), on a walk of its own whose symbols carry the block's name: in the block ``res1`` the
signal after the branch's layer j is :math:`h_{\mathrm{res1}.j}`, its weights :math:`w_{\mathrm{res1}.j}`.
Its steps join the network's step list, so a derivation at the block's output shows the branch's.

Forward (per unit, :math:`v = E[x^2]`):

.. math::
    E[(x + \alpha f)^2] = E[x^2] + 2\alpha E[x f] + \alpha^2 E[f^2], \qquad
    E[x_i f_i] = \textstyle\sum_j E[w_{ij}]\, E[x_i z_j] = 0

when the branch ends with a dense layer :math:`f = W z + b` whose zero-mean weights and bias are
independent of :math:`x` and of their own input :math:`z` (the rule refuses a branch that does not),
so :math:`v_{l+1} = v_l + \alpha^2 E[f^2]` at every width. With a branch of gain
:math:`c = E[f^2]/E[x^2]`, :math:`L` blocks multiply the second moment by :math:`(1 + c\alpha^2)^L`:
:math:`e^c` as :math:`L \to \infty` for :math:`\alpha = 1/\sqrt L`, :math:`(1 + c)^L` for
:math:`\alpha = 1`.

Backward: :math:`\partial\mathcal L/\partial x = \delta + \alpha J_f^\top \delta`,
:math:`\delta = \partial\mathcal L/\partial(x + \alpha f)`; the branch's share
:math:`\alpha J_f^\top \delta` is walked back through the branch from :math:`\alpha\delta`, and the
cross term :math:`E[\delta_i (\alpha J_f^\top\delta)_i] = \alpha \sum_{j,k} E[\delta_i \delta_j
w_{jk}\, \partial z_k/\partial x_i]` vanishes exactly when :math:`\delta` is independent of the
branch (the block feeds the loss directly), and under He et al.'s gradient-independence assumption
otherwise (``asymptotic``).

Pairs: :math:`E[o o'] = E[x x'] + \alpha(E[x f'] + E[f x']) + \alpha^2 E[f f']`, the mixed terms zero
by the same zero-mean last layer, :math:`E[f f']` from the branch's cross rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..errors import DerivationError
from ..network import _PLACE_PREFIX, Dense, Residual
from .derivation import Code, Derivation, Expect, Integral, Limit, Phi, Rule, Unrolled, _Builder, prose
from .propagate import (
    Quantity,
    _Gradient,
    _Signal,
    _Walk,
    _zero_mean_gradient,
    backward_rule,
    cross_rule,
    dh,
    forward_rule,
    h,
    h_pair,
    n,
    w,
    b,
)

__all__ = ["depth_scaling", "fixup_alpha", "length_second_moment", "GAIN"]

#: The branch scale alpha of each block, by the block's name.
ALPHA = sp.IndexedBase("alpha")
#: The Jacobian of the branch's signal below its last layer with respect to the block input, by block name.
JACOBIAN = sp.IndexedBase("J")
SOURCE = "He et al. 2016 (residual networks); Hanin & Rolnick 2018, Sec. 3"
A_LAST = prose("the branch ends with a dense layer whose zero-mean weights and bias are independent of the block "
               "input and of the branch's own signal below it")


@dataclass(frozen=True)
class _BranchNetwork:
    """What the layer rules read of ``walk.network`` inside a branch: its layers and their place names."""

    layers: tuple
    block: str

    def place_name(self, position: int) -> str:
        if position == -1:
            return f"the input of {self.block}"
        kind = type(self.layers[position])
        ordinal = sum(1 for layer in self.layers[: position + 1] if type(layer) is kind)
        return f"{self.block}.{_PLACE_PREFIX.get(kind, kind.__name__.lower())}{ordinal}"


@dataclass
class _BranchWalk(_Walk):
    """The walk of one residual branch: the network's step list and definitions, the branch's own states.

    Symbols are labelled by the block's name and the layer's 1-based position in the branch
    (``res1.2``); position -1 is the block input, whose gradient symbol stands for the branch's share
    of the gradient there.
    """

    parent: _Walk | None = None
    block: int = 0
    name: str = ""

    def label_of(self, position: int) -> sp.Symbol:
        return sp.Symbol(f"{self.name}.{position + 1}")

    def dense_index(self, position: int) -> sp.Symbol:
        return self.label_of(position)

    def signal_symbol(self, position: int) -> sp.Expr:
        if position == -1:
            return self.parent.signal_symbol(self.block - 1)
        return (h_pair if self.prime else h)[self.label_of(position)]

    def gradient_symbol(self, position: int) -> sp.Expr:
        return dh[self.label_of(position)]


def _label(walk: _Walk, position: int) -> sp.Expr:
    label_of = getattr(walk, "label_of", None)
    if label_of is not None:
        return label_of(position)
    return sp.Symbol(walk.network.place_name(position))


def _alpha(walk: _Walk, layer: Residual, position: int) -> tuple[sp.Expr, int]:
    symbol = ALPHA[_label(walk, position)]
    name = walk.network.place_name(position)
    return symbol, walk.define(symbol, layer.alpha, prose(f"the branch scale of {name}: ",
                                                          Code(f"Residual(..., alpha={layer.alpha})")))


def _last_dense(layer: Residual, walk: _Walk, position: int) -> Dense:
    last = layer.branch[-1]
    if not isinstance(last, Dense):
        raise DerivationError(
            f"the residual rule needs the branch of {walk.network.place_name(position)} to end with a Dense layer "
            f"(its zero-mean weights make E[x f(x)] = 0 at every width); this branch ends with "
            f"{type(last).__name__}, whose cross term varprop does not derive"
        )
    return last


def _branch(walk: _Walk, layer: Residual, position: int) -> _BranchWalk:
    child = walk.blocks.get(position)
    if child is None:
        name = str(_label(walk, position))
        child = _BranchWalk(_BranchNetwork(layer.branch, name), walk.finite_width, walk.linear_regime, walk.builder,
                            {}, {}, {}, walk.definitions, walk.numeric, {}, parent=walk, block=position, name=name)
        walk.blocks[position] = child
    return child


def _cross_zero(walk: _Walk, child: _BranchWalk, layer: Residual, first: sp.Expr, below: sp.Expr,
                branch_out: sp.Expr) -> int:
    """The checked step :math:`E[x f] = 0`: the modelling statement, then zero by the last layer's zero means."""
    last = _last_dense(layer, walk, child.block)
    k = child.label_of(len(layer.branch) - 1)
    lhs = Expect(first * branch_out)
    rhs = n[k] * Expect(w[k]) * Expect(first * below)
    uses = [walk.definitions[Expect(w[k])]]
    if last.bias is not None:
        rhs += Expect(b[k]) * Expect(first)
        uses.append(walk.definitions[Expect(b[k])])
    general = walk.builder.model(
        lhs, rhs, Rule.INDEPENDENCE,
        prose(branch_out, " is a sum of ", n[k], " terms ", w[k] * below, " (plus the bias): linearity of expectation, "
              "and the weights are independent of ", first, " and ", below),
        assumptions=(A_LAST,), source=SOURCE)
    return walk.builder.identity(lhs, sp.Integer(0), Rule.ZERO_MEAN,
                                 "the last layer of the branch has zero-mean weights and bias",
                                 uses=(general, *uses))


@forward_rule.register
def _(layer: Residual, walk: _Walk, signal: _Signal, position: int) -> _Signal:
    _last_dense(layer, walk, position)
    child = _branch(walk, layer, position)
    states = child.partners if walk.prime else child.signals
    states[-1] = signal
    child.prime = walk.prime
    state = signal
    try:
        for inner, branch_layer in enumerate(layer.branch):
            state = forward_rule(branch_layer, child, state, inner)
            states[inner] = state
    finally:
        child.prime = False
    builder = walk.builder
    X_in, F, out = signal.symbol, state.symbol, walk.signal_symbol(position)
    A, i_a = _alpha(walk, layer, position)
    below = states[len(layer.branch) - 2].symbol if len(layer.branch) > 1 else X_in
    i_def = walk.define(out, X_in + A * F, prose("the residual block: the skip connection adds the branch output ",
                                                 F, " scaled by ", A), source=SOURCE)
    zero = _cross_zero(walk, child, layer, X_in, below, F)
    general = builder.model(Expect(out**2), Expect(X_in**2) + 2 * A * Expect(X_in * F) + A**2 * Expect(F**2),
                            Rule.ALGEBRA, prose("expand ", (X_in + A * F) ** 2, "; linearity of expectation"),
                            uses=(i_def,))
    (v_x, uses_x), (v_f, uses_f) = walk.plain(signal.second), walk.plain(state.second)
    value = sp.expand(v_x + layer.alpha**2 * v_f)
    second = builder.identity(Expect(out**2), value, Rule.SUBSTITUTION,
                              prose("substitute the moments of ", X_in, " and of the branch output"),
                              uses=(general, zero, i_a, *uses_x, *uses_f))
    general_mean = builder.model(Expect(out), Expect(X_in) + A * Expect(F), Rule.ALGEBRA, "linearity of expectation",
                                 uses=(i_def,))
    (m_x, muses_x), (m_f, muses_f) = walk.plain(signal.mean), walk.plain(state.mean)
    mean_value = sp.expand(m_x + layer.alpha * m_f)
    mean = builder.identity(Expect(out), mean_value, Rule.SUBSTITUTION, "substitute the means",
                            uses=(general_mean, i_a, *muses_x, *muses_f))
    first = layer.branch[0]
    # (x, f) -> (-x, -f) in law: flip x and the first layer's weights (f's input is unchanged), then the
    # last layer's weights and bias (f changes sign). Needs both laws symmetric and x symmetric.
    symmetric = (signal.symmetric and state.symmetric and isinstance(first, Dense) and first.weights.symmetric
                 and (first.bias is None or len(layer.branch) == 1))
    return _Signal(
        position, out, signal.width,
        Quantity(Expect(out), mean_value, mean),
        Quantity(Expect(out**2), value, second),
        symmetric=symmetric,
        homogeneous=state.homogeneous,
        p_nonzero=signal.p_nonzero,
        p_exact=signal.p_exact,
    )


@backward_rule.register
def _(layer: Residual, walk: _Walk, gradient: _Gradient, below: _Signal, position: int) -> _Gradient:
    child = walk.blocks[position]
    builder = walk.builder
    last = len(layer.branch) - 1
    D_out, D_in = gradient.symbol, walk.gradient_symbol(position - 1)
    A, i_a = _alpha(walk, layer, position)
    D_f = child.gradient_symbol(last)
    i_df = walk.define(D_f, A * D_out, prose("the branch output enters the block output scaled by ", A),
                       rule=Rule.CHAIN_RULE)
    general_f = builder.model(Expect(D_f**2), A**2 * Expect(D_out**2), Rule.ALGEBRA, "linearity of expectation",
                              uses=(i_df,))
    value_f = sp.expand(layer.alpha**2 * gradient.second.value)
    second_f = builder.identity(Expect(D_f**2), value_f, Rule.SUBSTITUTION, "substitute",
                                uses=(general_f, i_a, gradient.second.step))
    state = _Gradient(last, D_f, _zero_mean_gradient(walk, D_f), Quantity(Expect(D_f**2), value_f, second_f),
                      independent=gradient.independent)
    child.gradients[last] = state
    for inner in range(last, -1, -1):
        state = backward_rule(layer.branch[inner], child, state, child.signals[inner - 1], inner)
        child.gradients[state.position] = state
    D_b = state.symbol
    chain = walk.define(D_in, D_out + D_b,
                        prose("the skip connection passes ", D_out, " through unchanged and the branch adds ",
                              D_b), rule=Rule.CHAIN_RULE)
    k = child.label_of(last)
    z = child.signal_symbol(last - 1)
    X_in = below.symbol
    exact = gradient.independent
    why = (prose(D_out, " is independent of the branch (the block feeds the loss)") if exact else
           prose(D_out, " treated as independent of the branch's last weights (He et al.'s assumption)"))
    general_cross = builder.model(
        Expect(D_out * D_b), A * n[k] * Expect(w[k]) * Expect(D_out**2 * JACOBIAN[sp.Symbol(child.name)]), Rule.INDEPENDENCE,
        prose(D_b, " is ", A, " times the gradient through the branch, linear in the last weights ", w[k], " (",
              JACOBIAN[sp.Symbol(child.name)], " is the Jacobian of ", z, " with respect to ", X_in, "); ", why),
        assumptions=(A_LAST,), exactness="exact" if exact else "asymptotic", source=SOURCE)
    cross = builder.identity(Expect(D_out * D_b), sp.Integer(0), Rule.ZERO_MEAN,
                             "the last layer of the branch has zero-mean weights",
                             uses=(general_cross, walk.definitions[Expect(w[k])]))
    general = builder.model(Expect(D_in**2), Expect(D_out**2) + 2 * Expect(D_out * D_b) + Expect(D_b**2), Rule.ALGEBRA,
                            prose("expand ", (D_out + D_b) ** 2, "; linearity of expectation"), uses=(chain,))
    value = sp.expand(gradient.second.value + state.second.value)
    second = builder.identity(Expect(D_in**2), value, Rule.SUBSTITUTION, "substitute",
                              uses=(general, cross, gradient.second.step, state.second.step))
    return _Gradient(position - 1, D_in, _zero_mean_gradient(walk, D_in), Quantity(Expect(D_in**2), value, second),
                     independent=state.independent)


@cross_rule.register
def _(layer: Residual, walk: _Walk, cross: Quantity, position: int) -> Quantity:
    child = walk.blocks[position]
    builder = walk.builder
    child.crosses[-1] = cross
    state = cross
    for inner, branch_layer in enumerate(layer.branch):
        state = cross_rule(branch_layer, child, state, inner)
        child.crosses[inner] = state
    last = len(layer.branch) - 1
    X_in, X_pair = walk.signals[position - 1].symbol, walk.partners[position - 1].symbol
    F, F_pair = child.signals[last].symbol, child.partners[last].symbol
    below = child.signals[last - 1].symbol if last else X_in
    below_pair = child.partners[last - 1].symbol if last else X_pair
    out, out_pair = walk.signals[position].symbol, walk.partners[position].symbol
    A, i_a = _alpha(walk, layer, position)
    zero_1 = _cross_zero(walk, child, layer, X_in, below_pair, F_pair)
    zero_2 = _cross_zero(walk, child, layer, X_pair, below, F)
    general = builder.model(
        Expect(out * out_pair),
        Expect(X_in * X_pair) + A * (Expect(X_in * F_pair) + Expect(X_pair * F)) + A**2 * Expect(F * F_pair),
        Rule.ALGEBRA, prose("expand ", (X_in + A * F) * (X_pair + A * F_pair), "; linearity of expectation"),
        uses=(walk.definitions[out], walk.definitions[out_pair]))
    (c_x, uses_x), (c_f, uses_f) = walk.plain(cross), walk.plain(state)
    value = sp.expand(c_x + layer.alpha**2 * c_f)
    step = builder.identity(Expect(out * out_pair), value, Rule.SUBSTITUTION, "substitute the cross moments",
                            uses=(general, zero_1, zero_2, i_a, *uses_x, *uses_f))
    return Quantity(Expect(out * out_pair), value, step)


# --- the length of the signal through residual blocks (Hanin & Rolnick 2018) ------------------------

_RATIO = sp.IndexedBase("R")
_FACTOR, _K, _A2 = sp.IndexedBase("F"), sp.IndexedBase("K"), sp.IndexedBase("a")
_Z = sp.Symbol("z")
_NOUT, _NIN = sp.IndexedBase("n"), sp.IndexedBase("m")
HANIN_ROLNICK = "Hanin & Rolnick 2018"
_A_ROTATION = prose("Gaussian weights without biases: given the block input, the branch's pre-activation is ",
                    "rotation invariant, so the factor by which a block multiplies the squared length is independent "
                    "of that length and of the blocks below")


def _gaussian_no_bias(layer: Dense) -> bool:
    return layer.bias is None and layer.weights.gaussian and layer.weights.mean == 0


def _length_chain(network, position: int) -> list[Residual]:
    """The residual blocks of ``network`` up to ``position``, checked to be Dense, relu, Dense with Gaussian weights
    and no bias, after one such dense layer; a :class:`DerivationError` naming what breaks it otherwise."""
    layers = network.layers[: position + 1]
    what = ("the second moment of the length ratio through residual blocks needs a Gaussian dense layer without bias, "
            "then blocks x + alpha f(x) with f = Dense, relu, Dense (Gaussian weights, no biases)")
    first = layers[0] if layers else None
    if position < 0 or not isinstance(first, Dense) or not _gaussian_no_bias(first):
        raise DerivationError(f"{what}; the network starts with {first!r}")
    blocks = []
    for index, layer in enumerate(layers[1:], 1):
        branch = getattr(layer, "branch", ())
        ok = (isinstance(layer, Residual) and len(branch) == 3 and isinstance(branch[0], Dense)
              and isinstance(branch[2], Dense) and all(_gaussian_no_bias(d) for d in (branch[0], branch[2]))
              and getattr(getattr(branch[1], "activation", None), "name", "") == "relu")
        if not ok:
            raise DerivationError(f"{what}; layer {index} ({network.place_name(index)}) is not such a block")
        blocks.append(layer)
    return blocks


def length_second_moment(observable, walk: _Walk) -> Quantity:
    r""":math:`E[R_p^2]`, :math:`R_p = \|h_p\|^2/\|x\|^2`, through residual blocks with Gaussian weights.

    The first dense layer gives :math:`R_0 = \sigma_0^2 \chi^2_{n}`. A block with branch
    :math:`f = W_2 \operatorname{relu}(W_1 x)`, :math:`W_1` of shape :math:`m \times n` and variance
    :math:`\sigma_1^2`, :math:`W_2` of variance :math:`\sigma_2^2`, multiplies the squared length by

    .. math:: F = 1 + 2 a \sqrt K g_1 + a^2 K \|g\|^2, \qquad a = \alpha\sigma_1\sigma_2,

    :math:`K = \sum_{i \le m} \operatorname{relu}(z_i)^2`, :math:`z, g` standard Gaussian vectors of
    widths m and n, independent of each other and of everything below (rotation invariance). Hence
    :math:`E[R_p^2] = E[R_0^2] \prod_l E[F_l^2]` with
    :math:`E[F^2] = 1 + (2n + 4) a^2 E[K] + n(n + 2) a^4 E[K^2]`, exactly at every width. The
    relative variance :math:`E[R^2]/E[R]^2` is then a product of factors :math:`1 + O(\alpha_l^2)`:
    bounded when :math:`\sum_l \alpha_l^2` is (Hanin & Rolnick 2018, Thm. 5.4: the length's variance
    does not blow up with the depth in residual networks so scaled).
    """
    position = observable.tensor.position
    blocks = _length_chain(walk.network, position)
    builder = walk.builder
    first = walk.network.layers[0]
    ratio0 = Expect(_RATIO[1] ** 2)
    s0 = walk.define(sp.Symbol("sigma_0") ** 2, first.weights.variance, "weight variance of dense1")
    n0 = walk.define(_NOUT[0], first.fan_out, "fan-out of dense1")
    chi = builder.model(ratio0, sp.Symbol("sigma_0") ** 4 * _NOUT[0] * (_NOUT[0] + 2), Rule.INDEPENDENCE,
                        prose(_RATIO[1], " is ", sp.Symbol("sigma_0") ** 2, " times a chi-square with ", _NOUT[0],
                              " degrees of freedom (a Gaussian layer at a nonzero input)"),
                        exactness="gaussian-exact", source=f"{HANIN_ROLNICK}, Sec. 5")
    value = first.weights.variance**2 * first.fan_out * (first.fan_out + 2)
    current = builder.identity(ratio0, value, Rule.SUBSTITUTION, "substitute", uses=(chi, s0, n0))
    relu2, relu4 = Expect(Phi(_Z) ** 2), Expect(Phi(_Z) ** 4)
    relu = blocks[0].branch[1].activation.expr if blocks else None
    if blocks:
        i2 = builder.add(relu2, sp.Rational(1, 2), Rule.GAUSSIAN_INTEGRAL, prose(relu2, " at a standard normal ", _Z),
                         proof=Integral(relu**2, sp.Integer(1)))
        i4 = builder.add(relu4, sp.Rational(3, 2), Rule.GAUSSIAN_INTEGRAL, prose(relu4, " at a standard normal ", _Z),
                         proof=Integral(relu**4, sp.Integer(1)))
    for offset, block in enumerate(blocks, 1):
        label = sp.Symbol(walk.network.place_name(offset))
        inner, outer = block.branch[0], block.branch[2]
        width, hidden = outer.fan_out, inner.fan_out
        n_, m_, a2, K, F = _NOUT[label], _NIN[label], _A2[label] ** 2, _K[label], _FACTOR[label]
        defs = (walk.define(n_, width, f"width of {label}"), walk.define(m_, hidden, f"hidden width of the branch of {label}"),
                walk.define(a2, block.alpha**2 * inner.weights.variance * outer.weights.variance,
                            prose("alpha squared times the two weight variances of the branch of ", Code(str(label)))))
        k1 = builder.model(Expect(K), m_ * relu2, Rule.INDEPENDENCE, prose(K, " is a sum of ", m_, " iid terms"))
        k2 = builder.model(Expect(K**2), m_ * relu4 + m_ * (m_ - 1) * relu2**2, Rule.INDEPENDENCE,
                           prose(K, " is a sum of ", m_, " iid terms"))
        general = builder.model(
            Expect(F**2), 1 + (2 * n_ + 4) * a2 * Expect(K) + n_ * (n_ + 2) * a2**2 * Expect(K**2), Rule.INDEPENDENCE,
            prose(sp.Eq(F, 1 + 2 * _A2[label] * sp.sqrt(K) * sp.Symbol("g_1") + a2 * K * sp.Symbol("G"),
                        evaluate=False), " with ", sp.Symbol("G"), " the squared length of a standard Gaussian vector ",
                  "of width ", n_, " and ", sp.Symbol("g_1"), " its first entry; the odd terms vanish"),
            assumptions=(_A_ROTATION,), exactness="gaussian-exact", source=f"{HANIN_ROLNICK}, Sec. 5")
        factor_value = sp.expand(1 + (2 * width + 4) * block.alpha**2 * inner.weights.variance * outer.weights.variance
                                 * hidden / 2 + width * (width + 2) * (block.alpha**2 * inner.weights.variance
                                                                       * outer.weights.variance) ** 2
                                 * (hidden * sp.Rational(3, 2) + sp.Rational(hidden * (hidden - 1), 4)))
        factor = builder.identity(Expect(F**2), factor_value, Rule.SUBSTITUTION, "substitute",
                                  uses=(general, k1, k2, i2, i4, *defs))
        lhs = Expect(_RATIO[offset + 1] ** 2)
        product = builder.model(lhs, Expect(_RATIO[offset] ** 2) * Expect(F**2), Rule.INDEPENDENCE,
                                prose(sp.Eq(_RATIO[offset + 1], _RATIO[offset] * F, evaluate=False), " with ", F,
                                      " independent of ", _RATIO[offset]),
                                assumptions=(_A_ROTATION,), exactness="gaussian-exact",
                                source=f"{HANIN_ROLNICK}, Sec. 5")
        value = sp.expand(value * factor_value)
        current = builder.identity(lhs, value, Rule.SUBSTITUTION, "substitute", uses=(product, current, factor))
    return Quantity(Expect(_RATIO[position + 1] ** 2), value, current)


# --- consequences over the depth: alpha = 1/sqrt(L), alpha = 1, Fixup ----------------------------------

GAIN = sp.Symbol("c", positive=True)
_DEPTH = sp.Symbol("L", positive=True, integer=True)
_M = sp.Symbol("m", positive=True, integer=True)
_l = sp.Symbol("l", positive=True, integer=True)
_v = sp.IndexedBase("v")


def depth_scaling(alpha: sp.Expr, *, title: str = "") -> Derivation:
    r"""The second moment after L residual blocks of gain c with branch scale ``alpha`` (an expression in
    :data:`~varprop.derive.propagate.DEPTH`-like L), and its limit as the depth grows.

    .. math:: v_L = v_0 (1 + c\alpha^2)^L

    (the forward rule, with :math:`E[f^2] = c\,v_l`). :math:`\alpha = 1/\sqrt L` gives
    :math:`(1 + c/L)^L \to e^c`; :math:`\alpha = 1` gives :math:`(1 + c)^L`, :math:`2^L` for a branch of
    gain 1; Fixup (Zhang, Dauphin & Ma 2019) scales each of the m weight layers of a branch by
    :math:`L^{-1/(2m-2)}`, so the branch's gain becomes :math:`c L^{-m/(m-1)}` and
    :math:`v_L/v_0 \to 1` (its zero-initialised last layer makes every block the identity at init:
    :math:`v_L = v_0` exactly).
    """
    alpha = sp.sympify(alpha)
    builder = _Builder(title or "second moment over L residual blocks")
    a = sp.Symbol("alpha")
    i_a = builder.define(a, alpha, "the branch scale")
    step = builder.model(_v[_l], _v[_l - 1] * (1 + GAIN * a**2), Rule.INDEPENDENCE,
                         prose("the residual rule with ", sp.Eq(Expect(sp.Symbol("x") * sp.Symbol("f")), 0,
                                                                evaluate=False),
                               " and a branch of gain ", GAIN, ": ",
                               sp.Eq(Expect(sp.Symbol("f") ** 2), GAIN * _v[_l - 1], evaluate=False)),
                         assumptions=(A_LAST,), source=SOURCE)
    factor = 1 + GAIN * alpha**2
    unrolled = builder.add(_v[_DEPTH], _v[0] * factor**_DEPTH, Rule.UNROLLING, prose("unroll over the ", _DEPTH, " blocks"),
                           proof=Unrolled(_v[0], factor, _l, 1, _DEPTH), uses=(step, i_a))
    ratio = factor**_DEPTH
    limit = sp.limit(ratio, _DEPTH, sp.oo)
    builder.add(sp.Limit(_v[_DEPTH] / _v[0], _DEPTH, sp.oo), limit, Rule.ALGEBRA, "the limit of deep networks",
                proof=Limit(ratio, _DEPTH), uses=(unrolled,))
    return builder.build(limit, ratio=ratio)


def fixup_alpha(layers: int) -> sp.Expr:
    r"""The branch scale that Fixup's per-layer factor :math:`L^{-1/(2m-2)}` amounts to for m layers of a
    homogeneous branch: :math:`L^{-m/(2m-2)}` (Zhang, Dauphin & Ma 2019, Sec. 3)."""
    m = sp.Integer(layers)
    if m < 2:
        raise DerivationError(f"Fixup's scaling needs at least 2 layers per branch, got {layers}")
    return _DEPTH ** (-m / (2 * m - 2))
