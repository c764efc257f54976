r"""Derive rules of inverted dropout at initialisation: :math:`y = m \odot x / p`, :math:`m_i \sim \mathrm{Bernoulli}(p)`.

The mask is independent of everything else in the network (weights, inputs, loss direction), one
entry per unit, per network and per input of a pair (as PyTorch draws it for every element of a
batch). Hence, at every width:

.. math::
    E[y] = \frac{E[m]}{p} E[x] = E[x], \qquad E[y^2] = \frac{E[m^2]}{p^2} E[x^2] = \frac{E[x^2]}{p},
    \qquad E[y y'] = \frac{E[m]\,E[m']}{p^2} E[x x'] = E[x x'],

since :math:`m^2 = m` and the pair's masks are independent: dropout keeps the cross moment and
multiplies the second moments by :math:`1/p`, so a pair's correlation shrinks by the factor
:math:`p`. Backward, :math:`\partial\mathcal L/\partial x = (m/p) \odot \partial\mathcal L/\partial y`:
:math:`E[(\partial\mathcal L/\partial x)^2] = E[(\partial\mathcal L/\partial y)^2]/p`, exact when
the gradient arriving is independent of the mask (the layers above see the mask through their
input, so otherwise it rests on He et al.'s independence assumption). The same mask serves the
forward and the backward pass.

What stays exact after dropout: a dense layer's second moment (it only needs zero-mean weights
independent of its input), the symmetry lemma of a following rectifier (:math:`m x/p` is
symmetric when :math:`x` is), and the weight gradient :math:`E[(\partial\mathcal L/\partial W)^2] =
E[(\partial\mathcal L/\partial y)^2]\,E[x^2]/p` of the next dense layer. What does not: the
pre-activation of the next layer, :math:`W (m \odot x)/p`, is a scale mixture of Gaussians (its
variance :math:`\|m \odot x\|^2 \operatorname{Var}[w]/p^2` is random), so a Gaussian integral at it
(tanh, gelu, the mean of relu) is only asymptotic even for a fixed input and Gaussian weights.
"""

from __future__ import annotations

import sympy as sp

from ..network import Dense, Dropout
from .derivation import Code, Expect, Rule, prose
from .propagate import (
    Quantity,
    _Gradient,
    _Signal,
    _Walk,
    _zero_mean_gradient,
    backward_rule,
    cross_rule,
    forward_rule,
)

__all__: list[str] = []

#: The keep probability p and the mask entry m of the words of steps.
KEEP = sp.IndexedBase("p")
MASK, MASK_PAIR = sp.IndexedBase("m"), sp.IndexedBase("m'")
SOURCE = "Srivastava et al. 2014, Sec. 10 (inverted dropout)"


def _mask_assumption() -> str:
    return prose("the mask ", sp.Symbol("m"), " has iid Bernoulli entries, independent of the layer input")


def _index(walk: _Walk, position: int) -> sp.Expr:
    """The label of the dropout layer at ``position``: its ordinal among the dropout layers of its walk."""
    layers = walk.network.layers
    return sp.Integer(sum(1 for layer in layers[: position + 1] if isinstance(layer, Dropout)))


def _keep(walk: _Walk, layer: Dropout, position: int) -> tuple[sp.Expr, sp.Expr, int, int]:
    """``p_k``, ``m_k`` and the definitions of E[m] = E[m^2] = p (a Bernoulli entry is its own square)."""
    label_of = getattr(walk, "label_of", None)  # a residual branch's walk labels its own layers
    k = _index(walk, position) if label_of is None else label_of(position)
    p, m = KEEP[k], (MASK_PAIR if walk.prime else MASK)[k]
    name = walk.network.place_name(position)
    i_p = walk.define(p, layer.keep, prose(f"keep probability of {name}: ", Code(f"Dropout(keep={layer.keep})")))
    i_m = walk.define(Expect(m), p, prose(m, " is Bernoulli with mean ", p), uses=(i_p,))
    i_m2 = walk.define(Expect(m**2), p, prose(sp.Eq(m**2, m, evaluate=False), " for an entry that is 0 or 1"), uses=(i_p,))
    return p, m, i_m, i_m2


@forward_rule.register
def _(layer: Dropout, walk: _Walk, signal: _Signal, position: int) -> _Signal:
    builder = walk.builder
    out, X_in = walk.signal_symbol(position), signal.symbol
    p, m, i_m, i_m2 = _keep(walk, layer, position)
    i_p = walk.definitions[p]
    walk.define(out, m * X_in / p, prose("inverted dropout: the kept units are scaled by ", 1 / p), source=SOURCE)
    general_mean = builder.model(Expect(out), Expect(m) * Expect(X_in) / p, Rule.INDEPENDENCE,
                                 prose(m, " is independent of ", X_in), assumptions=(_mask_assumption(),),
                                 source=SOURCE)
    mean_value = signal.mean.value
    mean_step = builder.identity(Expect(out), mean_value, Rule.SUBSTITUTION, "substitute the mask's mean",
                                 uses=(general_mean, i_m, i_p, signal.mean.step))
    general = builder.model(Expect(out**2), Expect(m**2) * Expect(X_in**2) / p**2, Rule.INDEPENDENCE,
                            prose(m, " is independent of ", X_in), assumptions=(_mask_assumption(),), source=SOURCE)
    value = sp.expand(signal.second.value / layer.keep)
    second_step = builder.identity(Expect(out**2), value, Rule.SUBSTITUTION, "substitute the mask's second moment",
                                   uses=(general, i_m2, i_p, signal.second.step))
    # The whole vector is zero when every kept unit is zero. Below a dense layer (continuous weights)
    # or at the Gaussian input every entry is nonzero unless the vector is: P = (1 - p)^n exactly.
    layers = walk.network.layers
    below_dense = position == 0 and not signal.deterministic or position > 0 and isinstance(layers[position - 1], Dense)
    if layer.keep == 1:
        p_nonzero, p_exact = signal.p_nonzero, signal.p_exact
    else:
        p_nonzero = signal.p_nonzero * (1 - (1 - layer.keep) ** signal.width)
        p_exact = signal.p_exact and below_dense
    return _Signal(
        position, out, signal.width,
        Quantity(Expect(out), mean_value, mean_step),
        Quantity(Expect(out**2), value, second_step),
        deterministic=signal.deterministic and layer.keep == 1,
        gaussian=signal.gaussian and layer.keep == 1,  # m x / p is a mixture: no longer Gaussian
        symmetric=signal.symmetric,
        homogeneous=signal.homogeneous,
        p_nonzero=p_nonzero,
        p_exact=p_exact,
    )


@backward_rule.register
def _(layer: Dropout, walk: _Walk, gradient: _Gradient, below: _Signal, position: int) -> _Gradient:
    builder = walk.builder
    D_out, D_in = gradient.symbol, walk.gradient_symbol(position - 1)
    p, m, _, i_m2 = _keep(walk, layer, position)
    i_p = walk.definitions[p]
    chain = walk.define(D_in, m * D_out / p, prose("through ", walk.signal_symbol(position), ": the same mask as the "
                                                   "forward pass"), rule=Rule.CHAIN_RULE)
    exact = gradient.independent
    why = (prose(D_out, " is independent of the mask") if exact else
           prose(D_out, " treated as independent of the mask (He et al.'s assumption: the layers above see ", m,
                 " through their input)"))
    general = builder.model(Expect(D_in**2), Expect(m**2) * Expect(D_out**2) / p**2, Rule.INDEPENDENCE, why,
                            assumptions=(_mask_assumption(),), exactness="exact" if exact else "asymptotic",
                            uses=(chain,), source=SOURCE)
    value = sp.expand(gradient.second.value / layer.keep)
    second = builder.identity(Expect(D_in**2), value, Rule.SUBSTITUTION, "substitute the mask's second moment",
                              uses=(general, i_m2, i_p, gradient.second.step))
    return _Gradient(position - 1, D_in, _zero_mean_gradient(walk, D_in), Quantity(Expect(D_in**2), value, second),
                     independent=gradient.independent)


@cross_rule.register
def _(layer: Dropout, walk: _Walk, cross: Quantity, position: int) -> Quantity:
    builder = walk.builder
    out, out_pair = walk.signals[position].symbol, walk.partners[position].symbol
    below, below_pair = walk.signals[position - 1].symbol, walk.partners[position - 1].symbol
    p, m, i_m, _ = _keep(walk, layer, position)
    i_p = walk.definitions[p]
    m_pair = MASK_PAIR[m.indices]
    i_mp = walk.define(Expect(m_pair), p, prose("the partner's mask ", m_pair, " is Bernoulli with mean ", p),
                       uses=(i_p,))
    general = builder.model(
        Expect(out * out_pair), Expect(m) * Expect(m_pair) * Expect(below * below_pair) / p**2, Rule.INDEPENDENCE,
        prose("each input of the pair gets its own mask (as every element of a PyTorch batch): ", m, ", ", m_pair,
              " and the signals below are independent"),
        assumptions=(_mask_assumption(),), source=SOURCE)
    value = cross.value
    step = builder.identity(Expect(out * out_pair), value, Rule.SUBSTITUTION, "substitute the masks' means",
                            uses=(general, i_m, i_mp, i_p, cross.step))
    return Quantity(Expect(out * out_pair), value, step)
