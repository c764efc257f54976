r"""Derive rules of a convolution (:class:`~varprop.network.Conv`): forward, backward, cross moment.

A convolution is a dense layer whose rows share weights and see only the taps of the kernel that
fall inside the input. Output unit :math:`(c, p)` reads the :math:`C_\text{in}/g` input channels of
its group at the positions :math:`s p + t - \text{pad}` of the taps :math:`t \in T(p)` that land
inside the input (the others read the zero padding). With iid zero-mean weights independent of the
input, the terms are uncorrelated, exactly as in He et al. (2015), eq. (7), position by position:

.. math::
    E[y_{c,p}^2] = \frac{C_\text{in}}{g} \operatorname{Var}[w] \sum_{t \in T(p)} E[x_{s p + t - \text{pad}}^2]
    + E[b^2].

An *interior* output position (whose receptive field misses the padding) has all
:math:`K = \prod \text{kernel}` taps: :math:`E[y^2] = n \operatorname{Var}[w] E[x^2] + E[b^2]` with
PyTorch's fan-in :math:`n = C_\text{in} K / g`, as for a dense layer. A border position has
:math:`|T(p)| < K` taps and a smaller second moment. After a padded convolution the signal's second
moment therefore differs between positions, and the next convolution's sum above weights every
position by its own value: the walk carries the exact per-position vector
(``_Walk.profiles``) through convolutions and (per position) through nonlinearities.

What an observable covers: every observable of :mod:`varprop.observables` at a convolution's place
is the average over **all** units of the layer, border positions included (what the sampler
measures, :mod:`varprop.montecarlo.sampler`). Its prediction is the exact average of the
per-position recursion:

.. math::
    \overline{E[y^2]} = n \operatorname{Var}[w]\, S + E[b^2], \qquad
    S = \frac{1}{P_\text{out} K} \sum_j m_j\, E[x_j^2],

where :math:`m_j` counts the (output position, tap) pairs that read input position :math:`j`
(:func:`input_multiplicity`). For an input whose second moment is the same at every position,
:math:`S = \tau E[x^2]` with :math:`\tau = \sum_p |T(p)| / (P_\text{out} K)` the mean fraction of
in-range taps (1 without padding). :func:`position_profile` gives the per-position values
themselves (interior positions included).

Backward, :math:`\partial\mathcal L/\partial x` is the transposed convolution: input position
:math:`j` receives the :math:`m_j` pairs :math:`(p, t)` with :math:`s p + t - \text{pad} = j`, each
through :math:`C_\text{out}/g` output channels:

.. math::
    E[(\partial_{x_j}\mathcal L)^2] = \frac{C_\text{out}}{g}\operatorname{Var}[w]
    \sum_{(p, t) \to j} E[(\partial_{y_p}\mathcal L)^2],

so with stride :math:`s > 1` some input positions receive fewer pairs than others even without
padding, and the layer average is :math:`(\hat n / g) \operatorname{Var}[w]\, \mu\, E[(\partial_y\mathcal L)^2]`
with PyTorch's fan-out :math:`\hat n = C_\text{out} K` (``torch.nn.init`` does not divide it by the
groups :math:`g`, although an input channel reaches only the :math:`C_\text{out}/g` output channels of
its group, so fan-out mode overestimates the backward sum of a grouped convolution :math:`g` times) and
:math:`\mu = \sum_j m_j / (P_\text{in} K) = P_\text{out} \tau / P_\text{in}` (about :math:`1/s`).
Exact when the gradient arriving is independent of the layer's weights (or by the row-flip
symmetry of the dense rule, one output-channel filter at a time); He et al.'s assumption otherwise.

The weight gradient of a convolution sums over positions (it is not a per-unit product); it is not
an observable here (:func:`varprop.observables.resolve` refuses it).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import sympy as sp

from ..errors import DerivationError
from ..network import Conv, Dense, Network
from .batchnorm_channels import check_positions, positions_unknown
from .derivation import Code, Expect, Rule, Variance, prose
from .propagate import (
    A_GRAD_INDEP,
    A_IID,
    A_ZERO_MEAN,
    HE,
    Quantity,
    _Gradient,
    _Signal,
    _Walk,
    _zero_mean_gradient,
    backward_rule,
    cross_rule,
    forward_rule,
    propagate,
)

__all__ = ["index_map", "input_multiplicity", "position_profile", "tap_counts"]

#: The notation of a convolution's steps, indexed by the convolution's ordinal (conv1, conv2, ...).
n_conv = sp.IndexedBase("n^c")  # PyTorch's fan-in C_in K / g
nhat_conv = sp.IndexedBase("nhat^c")  # PyTorch's fan-out C_out K (not divided by the groups)
groups_conv = sp.IndexedBase("g^c")
w_conv = sp.IndexedBase("w^c")
b_conv = sp.IndexedBase("b^c")
tau = sp.IndexedBase("tau")  # mean fraction of in-range taps per output position
mu = sp.IndexedBase("mu^c")  # mean fraction of the kernel reaching each input position (backward)
S = sp.IndexedBase("S")  # the tap-weighted input second moment
S_grad = sp.IndexedBase("S^Delta")  # the same for the gradient (backward)

#: Bound on (output positions x taps), the size of the index map.
MAX_INDEX_ENTRIES = 2**20


def _axis(n: int, k: int, s: int, pad: int) -> np.ndarray:
    """Input index of every (output position, tap) along one axis, -1 where the tap reads the padding."""
    out = (n + 2 * pad - k) // s + 1
    index = np.arange(out)[:, None] * s + np.arange(k)[None, :] - pad
    return np.where((index >= 0) & (index < n), index, -1)


@lru_cache(maxsize=128)
def index_map(layer: Conv) -> np.ndarray:
    """The flat input position read by each (output position, tap), shape ``(P_out, K)``; -1: padding.

    Positions are flattened in C order (rows then columns in 2-D), taps likewise.
    """
    if math.prod(layer.output_size) * layer.taps > MAX_INDEX_ENTRIES:
        raise DerivationError(f"{layer} has {math.prod(layer.output_size)} output positions of {layer.taps} taps; "
                              f"the derivation walks at most {MAX_INDEX_ENTRIES} of them")
    axes = [_axis(n, k, s, p) for n, k, s, p in
            zip(layer.input_size, layer.kernel_size, layer.stride, layer.padding)]
    if len(axes) == 1:
        result = axes[0]
    else:
        rows, cols = axes
        width = layer.input_size[1]
        # (out_r, out_c, k_r, k_c): valid only where both axes are.
        r = rows[:, None, :, None]
        c = cols[None, :, None, :]
        result = np.where((r >= 0) & (c >= 0), r * width + c, -1).reshape(len(rows) * len(cols), -1)
    result.setflags(write=False)
    return result


def tap_counts(layer: Conv) -> np.ndarray:
    """:math:`|T(p)|`: the number of taps of each output position that read the input, shape ``output_size``."""
    return np.count_nonzero(index_map(layer) >= 0, axis=1).reshape(layer.output_size)


def input_multiplicity(layer: Conv) -> np.ndarray:
    """:math:`m_j`: the number of (output position, tap) pairs that read input position j, shape ``input_size``."""
    flat = index_map(layer).ravel()
    return np.bincount(flat[flat >= 0], minlength=math.prod(layer.input_size)).reshape(layer.input_size)


def _uniform(profile: tuple[sp.Expr, ...]) -> bool:
    return len(set(profile)) == 1


def _forward_profile(layer: Conv, profile: tuple[sp.Expr, ...], scale: sp.Expr, bias: sp.Expr) -> tuple[sp.Expr, ...]:
    """The exact per-position recursion :math:`E[y_p^2] = a \\sum_{t \\in T(p)} E[x_{p,t}^2] + E[b^2]`."""
    rows = index_map(layer)
    if _uniform(profile):
        return tuple(sp.expand(scale * int(count) * profile[0] + bias)
                     for count in np.count_nonzero(rows >= 0, axis=1))
    return tuple(sp.expand(scale * sp.Add(*(profile[j] for j in row if j >= 0)) + bias) for row in rows)


def _backward_profile(layer: Conv, profile: tuple[sp.Expr, ...], scale: sp.Expr) -> tuple[sp.Expr, ...]:
    """The transposed recursion :math:`E[\\delta_j^2] = a \\sum_{(p,t) \\to j} E[\\delta_p^2]`."""
    rows = index_map(layer)
    collected: list[list[sp.Expr]] = [[] for _ in range(math.prod(layer.input_size))]
    for p, row in enumerate(rows):
        for j in row:
            if j >= 0:
                collected[j].append(profile[p])
    return tuple(sp.expand(scale * sp.Add(*terms)) for terms in collected)


def _conv_index(walk: _Walk, position: int) -> int:
    return sum(1 for layer in walk.network.layers[: position + 1] if isinstance(layer, Conv))


def _definitions(walk: _Walk, layer: Conv, position: int) -> tuple[int, sp.Expr, int, int, tuple[int, ...], sp.Expr, sp.Expr]:
    k = _conv_index(walk, position)
    law, bias = layer.weights, layer.bias
    name = walk.network.place_name(position)
    if law.mean != 0 or (bias is not None and bias.mean != 0):
        raise DerivationError(f"per-layer predictions need zero-mean weights and biases, got {law}"
                              + (f" and bias {bias}" if bias is not None else "") + f" at {name}")
    i_vw = walk.define(Variance(w_conv[k]), law.variance, prose(f"weights of {name}: ", Code(str(law))))
    i_ew = walk.define(Expect(w_conv[k]), law.mean, prose(f"weights of {name}: ", Code(str(law))))
    uses_b: tuple[int, ...] = ()
    bias_second = sp.Integer(0)
    if bias is not None:
        uses_b = (walk.define(Expect(b_conv[k] ** 2), bias.variance, prose(f"bias of {name}: ", Code(str(bias)))),
                  walk.define(Expect(b_conv[k]), bias.mean, prose(f"bias of {name}: ", Code(str(bias)))))
        bias_second = Expect(b_conv[k] ** 2)
    return k, name, i_vw, i_ew, uses_b, bias_second, (bias.variance if bias is not None else sp.Integer(0))


def _shape_words(layer: Conv) -> str:
    size = lambda t: "x".join(map(str, t))
    return (f"{layer.in_channels} -> {layer.out_channels} channels, kernel {size(layer.kernel_size)}, input "
            f"{size(layer.input_size)}, output {size(layer.output_size)}, stride {size(layer.stride)}, padding "
            f"{size(layer.padding)}, groups {layer.groups}")


@forward_rule.register
def _(layer: Conv, walk: _Walk, signal: _Signal, position: int) -> _Signal:
    k, name, i_vw, i_ew, uses_b, bias_second, bias_value = _definitions(walk, layer, position)
    out, X_in = walk.signal_symbol(position), signal.symbol
    builder = walk.builder
    K, P_out = layer.taps, math.prod(layer.output_size)
    i_n = walk.define(n_conv[k], layer.fan_in,
                      f"fan-in of {name} ({_shape_words(layer)}): in_channels * {K} taps / groups, as "
                      "torch.nn.init._calculate_fan_in_and_fan_out computes it")
    bias_mean = Expect(b_conv[k]) if layer.bias is not None else sp.Integer(0)
    general_mean = builder.model(Expect(out), n_conv[k] * tau[k] * Expect(w_conv[k]) * Expect(X_in) + bias_mean,
                                 Rule.INDEPENDENCE, "linearity of expectation over the in-range taps; the weights "
                                 "are independent of the layer input", assumptions=(A_IID,))
    rows = index_map(layer)
    counts = np.count_nonzero(rows >= 0, axis=1)
    i_tau = walk.define(tau[k], sp.Rational(int(counts.sum()), P_out * K),
                        f"the mean fraction of {name}'s {K} taps that read the input rather than its zero padding, "
                        f"over its {P_out} output positions (counted from the layer's index map: "
                        f"{int(counts.sum())} in-range taps in all)")
    mean_step = builder.identity(Expect(out), sp.Integer(0), Rule.ZERO_MEAN, "zero-mean weights and bias",
                                 uses=(general_mean, i_ew, *uses_b[1:]))
    check_positions(walk, layer, position, len(set(input_multiplicity(layer).ravel().tolist())) == 1)
    profile_in = walk.profiles.get((walk.prime, position - 1))
    if profile_in is not None and len(profile_in) != math.prod(layer.input_size):
        profile_in = None  # a dense layer reshaped in between: the positions are not this layer's
    profile_in = profile_in or (signal.second.value,) * math.prod(layer.input_size)
    scale = sp.Rational(layer.in_channels, layer.groups) * layer.weights.variance
    profile = _forward_profile(layer, profile_in, scale, bias_value)
    per_unit = prose(out, " at position ", sp.Symbol("p"), " is a sum over the in-range taps of ", name,
                     " and the ", sp.Rational(layer.in_channels, layer.groups), " input channels of its group of "
                     "terms ", w_conv[k] * X_in, ", uncorrelated because ", sp.Eq(Expect(w_conv[k]), 0),
                     " and the weights are independent of ", X_in, "; averaged over the output positions")
    if _uniform(profile_in):
        general = builder.model(
            Expect(out**2), n_conv[k] * Variance(w_conv[k]) * tau[k] * Expect(X_in**2) + bias_second,
            Rule.INDEPENDENCE, per_unit, assumptions=(A_IID, A_ZERO_MEAN), source=f"{HE}, eq. (7), per position")
        facts = (general, i_n, i_vw, i_tau, *uses_b[:1], signal.second.step)
        value = sp.expand(layer.fan_in * layer.weights.variance * walk.builder.steps[i_tau].rhs * signal.second.value
                          + bias_value)
    else:
        multiplicity = input_multiplicity(layer).ravel()
        weighted = sp.Add(*(int(m) * q for m, q in zip(multiplicity, profile_in))) / (P_out * K)
        i_s = walk.define(S[k], weighted,
                          prose("the input's second moment at every position ", sp.Symbol("j"), " (which differs "
                                "between positions after a padded convolution), weighted by the number ",
                                sp.Symbol("m_j"), " of (output position, tap) pairs of ", name, " that read it, "
                                f"over {P_out * K} pairs: the exact per-position recursion"),
                          uses=(signal.second.step,))
        general = builder.model(
            Expect(out**2), n_conv[k] * Variance(w_conv[k]) * S[k] + bias_second, Rule.INDEPENDENCE, per_unit,
            assumptions=(A_IID, A_ZERO_MEAN), source=f"{HE}, eq. (7), per position")
        facts = (general, i_n, i_vw, i_s, *uses_b[:1])
        value = sp.expand(layer.fan_in * layer.weights.variance * weighted + bias_value)
    second_step = builder.identity(Expect(out**2), value, Rule.SUBSTITUTION, "substitute the layer's values",
                                   uses=facts)
    if not _uniform(profile):
        walk.profiles[walk.prime, position] = profile
    law, bias = layer.weights, layer.bias
    multiplicity_uniform = len(set(input_multiplicity(layer).ravel().tolist())) == 1
    return _Signal(
        position, out, layer.out_width,
        Quantity(Expect(out), sp.Integer(0), mean_step),
        Quantity(Expect(out**2), value, second_step),
        gaussian=signal.deterministic and law.gaussian and (bias is None or bias.gaussian),
        symmetric=law.symmetric and (bias is None or bias.symmetric),
        homogeneous=signal.homogeneous and bias is None and multiplicity_uniform,
        p_nonzero=signal.p_nonzero if bias is None else sp.Integer(1),
        p_exact=signal.p_exact or bias is not None,
        # The units of a convolution share weights, so they are not independent given the input: the
        # probability 2^-n that a rectifier zeroes all n of them (the dense rule) is not exact here.
        independent_units=False,
    )


@backward_rule.register
def _(layer: Conv, walk: _Walk, gradient: _Gradient, below: _Signal, position: int) -> _Gradient:
    k, name, i_vw, _, _, _, _ = _definitions(walk, layer, position)
    builder = walk.builder
    D_out, D_in = gradient.symbol, walk.gradient_symbol(position - 1)
    K, P_in = layer.taps, math.prod(layer.input_size)
    i_nhat = walk.define(nhat_conv[k], layer.fan_out,
                         f"fan-out of {name} ({_shape_words(layer)}): out_channels * {K} taps, as "
                         "torch.nn.init._calculate_fan_in_and_fan_out computes it (not divided by the groups)")
    i_g = walk.define(groups_conv[k], layer.groups, f"groups of {name}: an input channel reaches "
                      f"out_channels / groups = {layer.out_channels // layer.groups} output channels")
    multiplicity = input_multiplicity(layer).ravel()
    exact = gradient.independent or gradient.flip
    if gradient.independent:
        why = prose(D_out, " is independent of the weights of ", name)
    elif gradient.flip:
        why = prose("flipping the sign of one output channel's filter flips that channel's pre-activations but not "
                    "their squared slopes, so each term's weight and gradient factor exactly, as for a dense layer")
    else:
        why = prose(D_out, " treated as independent of the weights of ", name, " (He et al.'s assumption)")
    words = prose(D_in, " is the transposed convolution of ", D_out, ": input position ", sp.Symbol("j"),
                  " receives the ", sp.Symbol("m_j"), " (output position, tap) pairs that read it, each through ",
                  sp.Rational(layer.out_channels, layer.groups), " output channels; ", why,
                  "; averaged over the input positions")
    assumptions = (A_IID, A_ZERO_MEAN) + (() if exact else (A_GRAD_INDEP,))
    profile_out = walk.gradient_profiles.get(position)
    scale = sp.Rational(layer.out_channels, layer.groups) * layer.weights.variance
    uniform = profile_out is None
    profile_out = profile_out or (gradient.second.value,) * math.prod(layer.output_size)
    if uniform:
        i_mu = walk.define(mu[k], sp.Rational(int(multiplicity.sum()), P_in * K),
                           f"the mean fraction of {name}'s {K} taps through which an input position reaches an "
                           f"output position, over its {P_in} input positions (counted from the layer's index map; "
                           "with stride > 1 some positions are reached by fewer taps)")
        general = builder.model(Expect(D_in**2),
                                nhat_conv[k] / groups_conv[k] * Variance(w_conv[k]) * mu[k] * Expect(D_out**2),
                                Rule.INDEPENDENCE, words, assumptions=assumptions,
                                exactness="exact" if exact else "asymptotic", source=f"{HE}, eq. (11), per position")
        value = sp.expand(sp.Rational(layer.fan_out, layer.groups) * layer.weights.variance * builder.steps[i_mu].rhs
                          * gradient.second.value)
        facts = (general, i_nhat, i_g, i_vw, i_mu, gradient.second.step)
    else:
        P_out = math.prod(layer.output_size)
        counts = np.count_nonzero(index_map(layer) >= 0, axis=1)
        weighted = sp.Add(*(int(c) * g for c, g in zip(counts, profile_out))) / (P_in * K)
        i_s = walk.define(S_grad[k], weighted,
                          prose("the gradient's second moment at every output position ", sp.Symbol("p"),
                                f" of {name}, weighted by its number of in-range taps, over {P_in * K}",
                                f" (input position, tap) slots ({P_out} output positions): the exact per-position "
                                "recursion"), uses=(gradient.second.step,))
        general = builder.model(Expect(D_in**2), nhat_conv[k] / groups_conv[k] * Variance(w_conv[k]) * S_grad[k],
                                Rule.INDEPENDENCE,
                                words, assumptions=assumptions, exactness="exact" if exact else "asymptotic",
                                source=f"{HE}, eq. (11), per position")
        value = sp.expand(sp.Rational(layer.fan_out, layer.groups) * layer.weights.variance * weighted)
        facts = (general, i_nhat, i_g, i_vw, i_s)
    second = builder.identity(Expect(D_in**2), value, Rule.SUBSTITUTION, "substitute the layer's values", uses=facts)
    profile_in = _backward_profile(layer, profile_out, scale)
    if not _uniform(profile_in):
        walk.gradient_profiles[position - 1] = profile_in
    return _Gradient(position - 1, D_in, _zero_mean_gradient(walk, D_in), Quantity(Expect(D_in**2), value, second),
                     independent=gradient.independent)


@cross_rule.register
def _(layer: Conv, walk: _Walk, cross: Quantity, position: int) -> Quantity:
    """:math:`E[y y'] = n \\operatorname{Var}[w]\\, \\tau E[x x'] + E[b^2]`, when every position is alike.

    Both inputs go through the same weights (Poole et al. 2016, eq. 4, per position). Where the
    second moments differ between positions (zero padding), the cross moments do too, and the
    bivariate kernel of a nonlinearity is not linear in them: refused.
    """
    name = walk.network.place_name(position)
    if ((True, position) in walk.profiles or (False, position) in walk.profiles
            or (True, position - 1) in walk.profiles or (False, position - 1) in walk.profiles):
        raise DerivationError(f"cross moments of a pair of inputs through {name} are not derived: its second moments "
                              "differ between positions (zero padding); use padding=0 for a pair")
    k, name, i_vw, _, uses_b, bias_second, bias_value = _definitions(walk, layer, position)
    out, out_pair = walk.signals[position].symbol, walk.partners[position].symbol
    below, below_pair = walk.signals[position - 1].symbol, walk.partners[position - 1].symbol
    i_n = walk.define(n_conv[k], layer.fan_in, f"fan-in of {name} ({_shape_words(layer)})")
    counts = np.count_nonzero(index_map(layer) >= 0, axis=1)
    i_tau = walk.define(tau[k], sp.Rational(int(counts.sum()), math.prod(layer.output_size) * layer.taps),
                        f"the mean fraction of {name}'s taps that read the input rather than its zero padding")
    general = walk.builder.model(
        Expect(out * out_pair), n_conv[k] * Variance(w_conv[k]) * tau[k] * Expect(below * below_pair) + bias_second,
        Rule.INDEPENDENCE, prose("both inputs go through the same weights of ", name, "; distinct weights are "
                                 "uncorrelated, so only matching taps and channels contribute, at every width"),
        source="Poole et al. 2016, eq. (4), per position")
    value = sp.expand(layer.fan_in * layer.weights.variance * walk.builder.steps[i_tau].rhs * cross.value + bias_value)
    step = walk.builder.identity(Expect(out * out_pair), value, Rule.SUBSTITUTION, "substitute the layer's values",
                                 uses=(general, i_n, i_vw, i_tau, *uses_b[:1], cross.step))
    return Quantity(Expect(out * out_pair), value, step)


def position_profile(network: Network, place: int | str, tensor: str = "signal") -> tuple[sp.Expr, ...]:
    r"""The exact second moment at every spatial position of ``place`` (channels alike), in C order.

    ``tensor`` is ``"signal"`` (:math:`E[h_p^2]`) or ``"gradient"`` (:math:`E[(\partial\mathcal
    L/\partial h_p)^2]`). Where the walk found every position alike (no convolution's padding or
    stride upstream), every entry is the layer's value. The layer average of these values is what
    a :class:`~varprop.observables.SecondMoment` at ``place`` predicts.
    """
    if tensor not in ("signal", "gradient"):
        raise DerivationError(f"tensor must be 'signal' or 'gradient', got {tensor!r}")
    position = network.position(place)
    walk = propagate(network)._walk
    profile = (walk.profiles.get((False, position)) if tensor == "signal" else walk.gradient_profiles.get(position))
    if profile is not None:
        return profile
    norm = positions_unknown(walk, position) if tensor == "signal" else None
    if norm is not None:
        raise DerivationError(f"the second moment per position at {network.place_name(position)} is not derived: "
                              f"BatchNorm {norm} over channels makes only its average over the positions exactly 1 "
                              "(eps = 0); a padded convolution below it leaves the border values smaller")
    quantity = (walk.signals if tensor == "signal" else walk.gradients)[position].second
    return (quantity.value,) * _positions(network, position)


def _positions(network: Network, position: int) -> int:
    """The number of spatial positions of the signal at ``position`` (1 for a dense signal)."""
    layers = network.layers
    for index in range(position, -1, -1):
        if isinstance(layers[index], Conv):
            return math.prod(layers[index].output_size)
        if isinstance(layers[index], Dense):
            return 1
    for layer in layers[position + 1:]:
        if isinstance(layer, Conv):
            return math.prod(layer.input_size)
        if isinstance(layer, Dense):
            return 1
    return 1
