r"""Derive rules of :class:`~varprop.network.BatchNorm` over channels (``nn.BatchNorm2d``), in training mode.

The signal is :math:`C` channels of :math:`P` positions (flattened channels first, a convolution's
output); each network carries a batch of :math:`B` iid inputs through the same weights, and channel
:math:`c` is normalised over its :math:`BP` values, :math:`y_{b,c,p} = (x_{b,c,p} - \bar x_c)/\sigma_c`,
:math:`\sigma_c = \sqrt{V_c + \epsilon}`, :math:`V_c = \frac{1}{BP}\sum_{b,p}(x_{b,c,p} - \bar x_c)^2`
(Ioffe & Szegedy 2015, Sec. 3.2: "so that different elements of the same feature map, at different
locations, are normalized in the same way"). The rules of :mod:`varprop.derive.batchnorm` carry over
with the :math:`B` values of a unit replaced by the :math:`BP` values of a channel, where their
derivation does.

What an observable covers: a signal's second moment at a place is the average over its units, every
channel and **every** position, of one example (:mod:`varprop.derive.convolution`). Per channel, one
example's average over the positions has, the examples being exchangeable, the expectation of the
average over the batch and the positions, and that is :math:`V_c/(V_c + \epsilon)` for every network.

Forward, exact:

* :math:`\epsilon = 0`: the layer average of :math:`E[y^2]` is 1 whatever comes before, and
  :math:`E[y] = 0`. The second moment at one position is not 1 at the border of a padded convolution
  behind it (border values are smaller, and the channel's variance is their average with the
  interior's): it is not derived, so a convolution after the BatchNorm (through elementwise layers)
  that weights positions unequally (:func:`~varprop.derive.convolution.input_multiplicity` not
  constant) is refused. On the Gaussian input the :math:`BP` values are iid, every position alike.
* :math:`\epsilon > 0` on the Gaussian input: the :math:`BP` values of a channel are iid
  :math:`\mathcal N(0, v)`, so :math:`BP\,V/v \sim \chi^2_{BP-1}` (Cochran) and
  :math:`E[y^2] = 1 - cF(c)`, :math:`c = BP\epsilon/v`.
* :math:`\epsilon > 0` elsewhere: behind a convolution the values of a channel share its filter and
  overlapping input patches, so they are correlated across positions and :math:`V` is no
  :math:`\chi^2`: refused (a :class:`~varprop.errors.DerivationError` that names what is derived).

Backward, exact on the Gaussian input when the gradient arriving is independent of the forward pass,
isotropic and alike at every position (from the loss, or through fresh weights whose backward sum
reaches every position equally): per channel the Jacobian over its :math:`BP` values is the centred
normaliser's, :math:`J = (C - yy^\top/BP)/\sigma`, so with :math:`k = BP - 1`

.. math:: E[\Delta x^2] = \frac{d}{BP} E\Bigl[\frac{k - 1}{V + \epsilon} + \frac{\epsilon^2}{(V + \epsilon)^3}\Bigr]
          = \frac dv\,\frac{k-1}{k-2} \;(\epsilon = 0), \quad
          \frac dv\Bigl[(k-1)F(c) + \frac{c^2}{2}F''(c)\Bigr] \;(\epsilon > 0).

Elsewhere refused: behind a layer with weights :math:`V` is no :math:`\chi^2`, and a gradient that
came through a BatchNorm or a nonlinearity above depends on the forward pass. (The walk stops there, so
no BatchNorm below it is reached.)
"""

from __future__ import annotations

import math

import sympy as sp

from ..errors import DerivationError
from ..network import BatchNorm, Conv, Dense, GaussianInput, Residual
from .batchnorm import _B, _CB, _EPS, _MU, _V, A_NOT_CONSTANT, IOFFE, _centred_moment
from .derivation import Code, Expect, Rule, prose
from .normalisation import CHI, SHIFT, ChiSquare, SumIdentity, TraceCheck, _inverse_and_second_derivative
from .normalisation import _DOF, chi_square_inverse
from .propagate import Quantity, _Gradient, _Signal, _Walk, _zero_mean_gradient

__all__: list[str] = []

_P = sp.IndexedBase("P")  # the positions of a channel at position p
_CH, _POS, _EX, _EX2, _POS2 = sp.symbols("c q b b' q'", integer=True)
A_CHANNEL = ("the B examples are iid inputs through the same weights, so they are exchangeable: per channel, one "
             "example's average over the positions has the expectation of the average over the batch and the positions")


def _value(symbol: sp.Indexed, channel: sp.Expr, where: sp.Expr, example: sp.Expr) -> sp.Indexed:
    """The value at channel ``channel``, position ``where`` of example ``example``: :math:`h_p \\to h_{p,c,q,b}`."""
    return symbol.base[(*symbol.indices, channel, where, example)]


def _total(expr: sp.Expr, B: sp.Expr, P: sp.Expr) -> sp.Expr:
    """:math:`\\sum_b \\sum_q` expr over the batch and a channel's positions."""
    return sp.Sum(sp.Sum(expr, (_POS, 1, P)), (_EX, 1, B))


def _gaussian_input(walk: _Walk, signal: _Signal) -> bool:
    return signal.position == -1 and isinstance(walk.network.inputs, GaussianInput)


def _definitions(layer: BatchNorm, walk: _Walk, signal: _Signal, p: int) -> dict[str, int]:
    name = walk.network.place_name(p)
    x_v, y_v = _value(signal.symbol, _CH, _POS, _EX), _value(walk.signal_symbol(p), _CH, _POS, _EX)
    B, P = _B[p], _P[p]
    out = {
        "B": walk.define(B, layer.batch, f"batch size of {name}"),
        "P": walk.define(P, layer.positions, f"positions of each of the {layer.channels} channels of {name}"),
        "eps": walk.define(_EPS[p], layer.eps, prose(f"epsilon of {name}")),
    }
    out["mu"] = walk.define(_MU[p], _total(x_v, B, P) / (B * P), "a channel's mean over the batch and its positions")
    out["V"] = walk.define(_V[p], _total((x_v - _MU[p]) ** 2, B, P) / (B * P),
                           "a channel's biased variance over the batch and its positions (training mode)",
                           uses=(out["mu"],))
    out["y"] = walk.define(y_v, (x_v - _MU[p]) / sp.sqrt(_V[p] + _EPS[p]),
                           prose(Code("BatchNorm2d"), " in training mode: each channel centred and divided by ",
                                 sp.sqrt(_V[p] + _EPS[p]), " over the batch and its positions; gain 1 and bias 0 at "
                                 "initialisation"), source=f"{IOFFE}; Sec. 3.2 (convolutional networks)")
    return out


def channel_forward(layer: BatchNorm, walk: _Walk, signal: _Signal, position: int) -> _Signal:
    """The forward rule of a BatchNorm over channels (see the module docstring)."""
    builder = walk.builder
    p, B, P = position, _B[position], _P[position]
    name = walk.network.place_name(p)
    if layer.eps != 0 and not _gaussian_input(walk, signal):
        raise DerivationError(
            f"BatchNorm {name} over {layer.channels} channels with eps = {layer.eps}: E[y^2] = E[V/(V + eps)] needs the "
            f"law of a channel's variance V over its {layer.batch} x {layer.positions} values, which behind a layer "
            "with weights are correlated across positions (they share the channel's filter and overlapping input "
            "patches), so V is no chi-square; derived: eps = 0 (the layer average of E[y^2] is 1 exactly) and eps > 0 "
            "on the Gaussian input (chi-square with B*P - 1 degrees of freedom)")
    d = _definitions(layer, walk, signal, p)
    out = walk.signal_symbol(p)
    y_v = _value(out, _CH, _POS, _EX)
    ratio = _V[p] / (_V[p] + _EPS[p])
    per_channel = builder.add(_total(y_v**2, B, P) / (B * P), ratio, Rule.ALGEBRA,
                              "the mean square over the batch and the positions, for every channel and network",
                              proof=SumIdentity(), uses=(d["y"], d["V"]))
    centred = builder.add(_total(y_v, B, P) / (B * P), sp.Integer(0), Rule.ALGEBRA,
                          "the output is centred over the batch and the positions, for every channel and network",
                          proof=SumIdentity(), uses=(d["y"], d["mu"]))
    i_second = builder.model(Expect(out**2), Expect(_total(y_v**2, B, P) / (B * P)), Rule.IDENTICAL_DISTRIBUTION,
                             "the layer average of one example's second moment is, channel by channel, the average "
                             "over the batch and the positions", assumptions=(A_CHANNEL,))
    i_mean = builder.model(Expect(out), Expect(_total(y_v, B, P) / (B * P)), Rule.IDENTICAL_DISTRIBUTION,
                           "the layer average of one example's mean is, channel by channel, the average over the "
                           "batch and the positions", assumptions=(A_CHANNEL,))
    mean_step = builder.add(Expect(out), sp.Integer(0), Rule.SUBSTITUTION, "substitute", proof=SumIdentity(),
                            uses=(i_mean, centred))
    general = builder.add(Expect(out**2), Expect(ratio), Rule.SUBSTITUTION, "substitute the per-channel mean square",
                          proof=SumIdentity(), uses=(i_second, per_channel))
    if layer.eps == 0:
        value = sp.Integer(1)
        step = builder.add(Expect(out**2), value, Rule.SUBSTITUTION,
                           prose(sp.Eq(_EPS[p], 0, evaluate=False), ": the mean square over the batch and the "
                                 "positions is 1 for every channel"),
                           proof=SumIdentity(), uses=(general, d["eps"]),
                           assumptions=(A_NOT_CONSTANT.replace("unit's B inputs", "channel's B*P values"),))
    else:
        v, i_v = _centred_moment(walk, -1)  # the input's variance
        k = layer.group - 1
        i_c = walk.define(_CB[p], B * P * _EPS[p] / v, "the scaled epsilon", uses=(d["B"], d["P"], d["eps"], i_v))
        modelled = builder.model(Expect(ratio), Expect(CHI / (CHI + _CB[p])), Rule.IDENTICAL_DISTRIBUTION,
                                 prose(sp.Eq(_V[p], v / (B * P) * CHI, evaluate=False), " with ", CHI,
                                       f" chi-square with B P - 1 = {k} degrees of freedom"),
                                 assumptions=("the B*P values of a channel are iid centred Gaussian (the Gaussian "
                                              "input); Cochran's theorem: the centred sum of squares has B*P - 1 "
                                              "degrees of freedom",), uses=(i_c,))
        closed = 1 - _CB[p] * chi_square_inverse(sp.Integer(k), _CB[p])
        integral = builder.add(Expect(CHI / (CHI + _CB[p])), closed, Rule.GAUSSIAN_INTEGRAL,
                               "the chi-square integral in closed form (upper incomplete gamma function)",
                               proof=ChiSquare(CHI / (CHI + _CB[p]), sp.Integer(k)), uses=(i_c,))
        c_value = layer.group * layer.eps / v
        c_step = builder.identity(_CB[p], c_value, Rule.SUBSTITUTION,
                                  "substitute the batch size, the positions, epsilon and the input variance",
                                  uses=(i_c, d["B"], d["P"], d["eps"], i_v))
        value = closed.xreplace({_CB[p]: c_value})
        step = builder.add(Expect(out**2), value, Rule.SUBSTITUTION, "substitute the scaled epsilon",
                           proof=SumIdentity(), uses=(general, modelled, integral, c_step))
    return _Signal(
        position, out, signal.width,
        Quantity(Expect(out), sp.Integer(0), mean_step),
        Quantity(Expect(out**2), value, step),
        symmetric=signal.symmetric,
        homogeneous=False,
        independent_units=False,
    )


def positions_unknown(walk: _Walk, position: int) -> str | None:
    """The name of a BatchNorm over channels whose per-position second moments reach ``position`` underived
    (through layers without weights), or ``None``. On the Gaussian input a channel's values are iid, every
    position alike, so such a BatchNorm does not count."""
    layers = walk.network.layers
    for index in range(position, -1, -1):
        layer = layers[index]
        if isinstance(layer, Dense | Conv | Residual):
            return None
        if isinstance(layer, BatchNorm) and layer.channels is not None and index > 0:
            return walk.network.place_name(index)
    return None


def check_positions(walk: _Walk, conv: Conv, position: int, multiplicity_uniform: bool) -> None:
    """Refuse the convolution at ``position`` when it weights its input positions unequally and their second
    moments come from a BatchNorm over channels that derives only their average."""
    norm = positions_unknown(walk, position - 1)
    if norm is not None and not multiplicity_uniform:
        raise DerivationError(
            f"{walk.network.place_name(position)} weights its input positions unequally (padding or the border of "
            f"its kernel), and its input's second moment per position is not derived: BatchNorm {norm} over channels "
            "makes the average over the positions exactly 1 (eps = 0), not each position's (a padded convolution "
            "below it leaves smaller values at the border); derived after such a BatchNorm: convolutions that read "
            "every input position equally often (a 1x1 kernel, or stride = kernel without padding)")


def channel_backward(layer: BatchNorm, walk: _Walk, gradient: _Gradient, below: _Signal, position: int) -> _Gradient:
    """The backward rule of a BatchNorm over channels (see the module docstring). Derived only on the Gaussian
    input, so no BatchNorm lies below one whose gradient is derived."""
    builder = walk.builder
    p, B, P = position, _B[position], _P[position]
    name = walk.network.place_name(p)
    uniform = p not in walk.gradient_profiles
    if not (gradient.independent and uniform and _gaussian_input(walk, below)):
        why = ("it sits behind a layer with weights, so a channel's values are correlated across positions and its "
               "variance is no chi-square" if not _gaussian_input(walk, below) else
               "the gradient arriving from above differs between positions" if not uniform else
               "the gradient arriving from above depends on the forward pass (it came through a BatchNorm or a "
               "nonlinearity)")
        raise DerivationError(
            f"the gradient below BatchNorm {name} over channels is not derived: {why}; derived: on the Gaussian input "
            "with the gradient from the loss (or through fresh weights) alike at every position, exactly")
    k = layer.group - 1
    if layer.eps == 0 and k <= 2:
        raise DerivationError(
            f"the gradient's second moment below {name} is infinite: with eps = 0 it is proportional to E[1/X], X "
            f"chi-square with B*P - 1 = {k} degrees of freedom, which diverges for B*P <= 3")
    d_out, d_in = gradient.symbol, walk.gradient_symbol(p - 1)
    out = walk.signal_symbol(p)
    V, eps_p = _V[p], _EPS[p]
    sigma = sp.sqrt(V + eps_p)
    y_v, y_w = _value(out, _CH, _POS, _EX), _value(out, _CH, _POS2, _EX2)
    g_v, g_w = _value(d_out, _CH, _POS, _EX), _value(d_out, _CH, _POS2, _EX2)
    other = lambda e: sp.Sum(sp.Sum(e, (_POS2, 1, P)), (_EX2, 1, B))  # noqa: E731
    chain = walk.define(_value(d_in, _CH, _POS, _EX), (g_v - other(g_w) / (B * P) - y_v * other(y_w * g_w) / (B * P))
                        / sigma,
                        prose("chain rule through the normalisation of one channel: its Jacobian over the batch and "
                              "the positions is ", (sp.Symbol("C") - sp.Symbol("y y^T") / (B * P)) / sigma, ", ",
                              sp.Eq(sp.Symbol("C"), sp.Symbol("I - 1 1^T/(B P)"), evaluate=False)),
                        rule=Rule.CHAIN_RULE, source=IOFFE)
    r = V / (V + eps_p)
    iso = ("the gradient arriving from above is independent of the forward pass below it and isotropic over the batch, "
           "the channels and the positions, E[delta delta^T] = d I (the loss sum_b <g_b, out_b>, or it through fresh "
           "zero-mean weights reaching every position alike)")
    traced = builder.add(
        Expect(d_in**2), Expect(d_out**2) * Expect((k - 2 * r + r**2) / (B * P * (V + eps_p))), Rule.INDEPENDENCE,
        prose("per channel, one value's share of ", sp.Symbol("d tr(J^2)"), ", and ", sp.Symbol("tr(J^2)"), " = ",
              (k - 2 * sp.Symbol("r") + sp.Symbol("r") ** 2) / (V + eps_p), " with ",
              sp.Eq(sp.Symbol("r"), r, evaluate=False), ", k = B P - 1 (the centred normaliser's Jacobian over B P "
              "values)"),
        proof=TraceCheck(True), uses=(chain,), assumptions=(iso, A_CHANNEL))
    simpler = ((k - 1) / (V + eps_p) + eps_p**2 / (V + eps_p) ** 3) / (B * P)
    reduced = builder.add(Expect(d_in**2), Expect(d_out**2) * Expect(simpler), Rule.ALGEBRA,
                          prose("with ", sp.Eq(sp.Symbol("r"), r, evaluate=False)), proof=SumIdentity(),
                          uses=(traced, walk.definitions[B], walk.definitions[P]))
    a, i_v = _centred_moment(walk, -1)  # the input's variance
    if layer.eps == 0:
        integrand, closed, extra = (k - 1) / (a * CHI), sp.Integer(k - 1) / (a * (k - 2)), ()
        c_uses: tuple[int, ...] = ()
    else:
        i_c = walk.define(_CB[p], B * P * eps_p / a, "the scaled epsilon", uses=(i_v,))
        c = _CB[p]
        integrand = ((k - 1) / (CHI + c) + c**2 / (CHI + c) ** 3) / a
        F, F2 = _inverse_and_second_derivative()
        closed = ((k - 1) * F + SHIFT**2 * F2 / 2).xreplace({_DOF: sp.Integer(k), SHIFT: c}) / a
        c_value = layer.group * layer.eps / a
        c_step = builder.identity(c, c_value, Rule.SUBSTITUTION, "substitute the batch size, positions and epsilon",
                                  uses=(i_c, walk.definitions[B], walk.definitions[P], walk.definitions[eps_p], i_v))
        extra, c_uses = (i_c,), (c_step,)
    closed_value = closed.xreplace({_CB[p]: layer.group * layer.eps / a}) if layer.eps != 0 else closed
    modelled = builder.model(Expect(simpler), Expect(integrand), Rule.IDENTICAL_DISTRIBUTION,
                             prose(sp.Eq(V, a / (B * P) * CHI, evaluate=False), " with ", CHI,
                                   f" chi-square with B P - 1 = {k} degrees of freedom"),
                             assumptions=("the B*P values of a channel are iid centred Gaussian (the Gaussian input); "
                                          "Cochran's theorem",), uses=(*extra, i_v))
    integral = builder.add(Expect(integrand), closed, Rule.GAUSSIAN_INTEGRAL,
                           "E[1/X] = 1/(k - 2)" if layer.eps == 0 else
                           "E[1/(X + c)] = F(c) (upper incomplete gamma function) and E[1/(X + c)^3] = F''(c)/2",
                           proof=ChiSquare(integrand, sp.Integer(k)), uses=(*extra, i_v))
    d_value, d_uses = walk.plain(gradient.second)
    value = sp.expand(d_value * closed_value)
    if value.has(sp.zoo, sp.oo, sp.nan) or (value.is_number and not math.isfinite(float(value))):
        raise DerivationError(f"the gradient's second moment below {name} is infinite")
    step = builder.add(Expect(d_in**2), value, Rule.SUBSTITUTION, "substitute", proof=SumIdentity(),
                       uses=(reduced, modelled, integral, i_v, *c_uses, *d_uses))
    return _Gradient(p - 1, d_in, _zero_mean_gradient(walk, d_in), Quantity(Expect(d_in**2), value, step),
                     independent=False)
