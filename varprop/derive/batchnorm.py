r"""Derive rules of :class:`~varprop.network.BatchNorm` in training mode (Ioffe & Szegedy 2015, Algorithm 1).

A network with a BatchNorm carries a batch of :math:`B` iid inputs through the same weights; each
unit is normalised over the batch, :math:`y_b = (x_b - \bar x)/\sigma`, :math:`\sigma = \sqrt{V +
\epsilon}`, :math:`V = \frac1B\sum_c (x_c - \bar x)^2` (the biased batch variance; the unbiased
:math:`\frac{B}{B-1}V` only feeds the running variance). Observables are those of one example; the
examples are exchangeable, so an example's expectation is that of the batch average.

Forward. For every unit and network :math:`\frac1B\sum_b y_b^2 = V/(V + \epsilon)` and
:math:`\sum_b y_b = 0`, so :math:`E[y] = 0` exactly and, with :math:`\epsilon = 0`,
:math:`E[y^2] = 1` exactly whatever comes before (a unit whose batch is constant gives 0/0; the
sampler excludes such a network). With :math:`\epsilon > 0`, :math:`E[y^2] = E[V/(V + \epsilon)]`
needs the law of :math:`V`. On the Gaussian input the batch of a unit is iid :math:`\mathcal N(0, v)`
and :math:`BV/v \sim \chi^2_{B-1}` (Cochran), so with :math:`c = B\epsilon/v`,
:math:`E[y^2] = 1 - c F(c)`, :math:`F(c) = E[1/(X + c)]` (the incomplete-gamma closed form of
:mod:`varprop.derive.normalisation`): exact. Deeper, the mean-field theory (Yang et al. 2019): as
the width grows, a unit's batch is Gaussian with the batch's mean Gram matrix, which the
exchangeability of the batch makes :math:`aI + b\mathbf 1\mathbf 1^\top`; centring removes
:math:`b`, so :math:`BV/a \sim \chi^2_{B-1}` with :math:`a = E[x_b^2] - E[x_b x_c]` (:math:`b \ne c`),
``asymptotic``. :math:`a` is exact in expectation: :math:`a = v` for the input, :math:`a \mapsto
n\,\mathrm{Var}[w]\,a` through a dense layer (a bias is common to the batch and cancels), unchanged
through the identity, and :math:`a = \frac{B}{B-1}E[y^2]` after a BatchNorm (from :math:`\sum_b y_b
= 0`). After a relu on a BatchNorm output, :math:`a = E[y^2](\frac12 - \kappa)` with :math:`\kappa` the
arc-cosine kernel :math:`E[\mathrm{relu}(u)\mathrm{relu}(v)]` at correlation :math:`-1/(B-1)` (Cho &
Saul 2009): in the mean-field limit the output's direction over the batch is uniform on the centred
sphere and independent of its length, and relu is positively homogeneous. After another nonlinearity
:math:`a` needs Yang et al.'s integral transforms, not derived here.

Backward. Per unit the Jacobian over the batch is :math:`J = (C - y y^\top/B)/\sigma`,
:math:`C = I - \mathbf 1\mathbf 1^\top/B`, symmetric, with :math:`JC = J` and
:math:`\operatorname{tr} J^2 = (k - 2r + r^2)/\sigma^2`, :math:`k = B - 1`, :math:`r = V/(V+\epsilon)`.
For a gradient :math:`\delta` (over the batch) independent of the forward pass and isotropic,
:math:`E[\delta\delta^\top] = dI` (the loss :math:`\sum_b\langle g_b, \text{out}_b\rangle`, or it
through fresh weights), :math:`E[\Delta x_b^2] = \frac dB E[(B-2)/(V+\epsilon) + \epsilon^2/(V+\epsilon)^3]`:

* on the Gaussian input, exact: :math:`\frac dv\,\frac{B-2}{B-3}` at :math:`\epsilon = 0` (infinite
  for :math:`B \le 3`), and :math:`\frac dv[(k-1)F(c) + \frac{c^2}{2}F''(c)]` for :math:`\epsilon > 0`;
* after a first dense layer with :math:`\mathcal N(0, s)` weights on the Gaussian input, at
  :math:`\epsilon = 0`, exact at every width: given the weights the batch of unit :math:`i` is iid
  :math:`\mathcal N(0, v|w_i|^2)`, :math:`|w_i|^2 = sY`, :math:`Y \sim \chi^2_n`, so
  :math:`E[\Delta x^2] = d\,\frac{B-2}{B-3}\,\frac{1}{vs(n-2)}` (the mean-field value times
  :math:`n/(n-2)`);
* otherwise mean-field, ``asymptotic``: :math:`V \approx (a/B)\chi^2_{B-1}`. From the loss the
  gradient may pass dense layers, identities and relus (a relu's mask multiplies uncorrelated examples,
  and :math:`E[\mathbb 1_{y>0} y^2] = E[y^2]/2` decouples it from the Jacobian's diagonal). A gradient that comes
  from a BatchNorm above through dense layers (and the identity) only is centred over the batch,
  :math:`\sum_b \delta_b = 0`; the mean-field takes it isotropic in the centred subspace,
  :math:`E[\delta\delta^\top] = d\frac{B}{B-1}C`, which multiplies the value by :math:`B/(B-1)`. In
  a deep linear BatchNorm network this gives Yang et al.'s gradient explosion: every
  dense + BatchNorm layer multiplies :math:`E[\Delta^2]` by :math:`\frac{B-2}{B-3}` at any weight
  variance (Yang, Pennington, Rao, Sohl-Dickstein & Schoenholz 2019, "A Mean Field Theory of Batch
  Normalization", ICLR, the linear case of their gradient analysis).

A relu between two BatchNorms (``... BatchNorm, relu, dense, ..., BatchNorm ...``, the usual
Linear-BatchNorm-ReLU stack). The relu's mask :math:`M = \operatorname{diag}(\mathbb 1_{y_b > 0})` and the lower
BatchNorm's Jacobian are functions of the same output, and with a centred gradient they do not factor
(:math:`E[\mathbb 1_{y_b>0}\mathbb 1_{y_c>0}P_{bc}] = -(p + \kappa)/B` with :math:`P = C - yy^\top/B`, not
:math:`p\,E[P_{bc}]`). Mean-field (Yang et al. 2019), ``asymptotic``: the gradient :math:`\delta` at the relu's
output, which came from the BatchNorm above through dense layers only, is independent of the forward pass below
and, centred and exchangeable, has :math:`E[\delta\delta^\top] = d'C`, :math:`d' = d\frac{B}{B-1}`,
:math:`d = E[\delta_b^2]`; so :math:`E[|\Delta x|^2] = d' E[\operatorname{tr}(J M C M J)]` with (checked in exact
arithmetic on matrices built by sympy)

.. math:: \operatorname{tr}(J M C M J) = \Bigl(K - \frac{2K}{B} + \frac{K^2}{B^2}
          - \frac{2 - r}{B}\Bigl(\sum_b \mathrm{relu}(y_b)^2 - \frac1B\bigl(\sum_b \mathrm{relu}(y_b)\bigr)^2\Bigr)\Bigr)
          \Big/ \sigma^2,

:math:`K = \sum_b \mathbb 1_{y_b > 0}`. The output is :math:`\sqrt{Br}\,u` with its direction :math:`u` uniform on
the centred unit sphere and independent of :math:`V`; :math:`u = g/|g|`, :math:`g \sim \mathcal N(0, C)`, so the
signs are those of a Gaussian pair of correlation :math:`\rho = -1/(B-1)` (orthant probability
:math:`p = \frac14 + \frac{\arcsin\rho}{2\pi}`, Sheppard) and :math:`E[\mathrm{relu}(u_b)\mathrm{relu}(u_c)] =
\kappa/B` (the arc-cosine kernel, Cho & Saul 2009), each checked by two-dimensional quadrature; the exchangeable
sums give :math:`E[K - 2K/B + K^2/B^2] = \frac{B-1}{B}(\frac{B-1}2 + p)` and
:math:`E[\sum_b \mathrm{relu}(u_b)^2 - (\sum_b \mathrm{relu}(u_b))^2/B] = \frac{B-1}{B}(\frac12 - \kappa)`. With
:math:`V = (a/B)\chi^2_{B-1}` and :math:`c = B\epsilon/a`,

.. math:: E[\Delta x_b^2] = \frac da\Bigl[\Bigl(\frac{B-2}2 + p + \kappa\Bigr)F(c)
          + \Bigl(\frac12 - \kappa\Bigr)\frac{c^2}{2}F''(c)\Bigr],
          \qquad E[\Delta x_b^2] = \frac{d\,(\frac{B-2}2 + p + \kappa)}{a(B-3)} \text{ at } \epsilon = 0.

In a stack (dense, BatchNorm with :math:`\epsilon = 0`, relu) every block below a BatchNorm multiplies the
gradient's second moment by :math:`\frac{(B-2)/2 + p + \kappa}{(\frac12 - \kappa)(B-3)}` at any weight variance
(:func:`relu_block_factor`), which tends to Yang et al.'s
:math:`\pi/(\pi - 1)` as :math:`B \to \infty`. What stays refused, with the reason: another activation between
two BatchNorms or between a BatchNorm and the loss (its slope correlates with the Jacobian's diagonal), and a relu
that is not directly on the lower BatchNorm's output.

The affine parameters are at their initial values (gain 1, bias 0), so they change neither pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import sympy as sp

from ..errors import DerivationError
from ..network import BatchNorm, Dense, GaussianInput, Nonlinearity
from ..weights import Normal
from ..activations import X, activation
from .derivation import U as _PAIR_U
from .derivation import V as _PAIR_V
from .derivation import BivariateIntegral, Check, Code, Expect, Identity, Rule, Step, _apply, _is_zero, prose, to_text
from .normalisation import CHI, SHIFT, ChiSquare, SumIdentity, TraceCheck, chi_square_inverse
from .propagate import (
    Quantity,
    _Gradient,
    _compact,
    _is_identity,
    _kernel,
    _Signal,
    _Walk,
    _zero_mean_gradient,
    backward_rule,
    cross_rule,
    forward_rule,
)

__all__ = ["relu_block_factor"]

IOFFE = "Ioffe & Szegedy 2015, Algorithm 1"
YANG = "Yang, Pennington, Rao, Sohl-Dickstein & Schoenholz 2019 (ICLR), mean-field theory of batch normalization"
_B = sp.IndexedBase("B")  # the batch size at position p
_EPS = sp.IndexedBase("epsilon")
_V = sp.IndexedBase("V")  # a unit's biased batch variance
_MU = sp.IndexedBase("mu")  # a unit's batch mean
_A = sp.IndexedBase("a")  # E[h_b^2] - E[h_b h_c], b != c: the batch-centred second moment
_CB = sp.IndexedBase("c")
_KAPPA = sp.IndexedBase("kappa")  # E[relu(u) relu(v)] at correlation -1/(B-1), for the relu at position p
_EX = sp.Symbol("b", integer=True)  # the example index within the batch
_Y = sp.Symbol("Y", positive=True)  # |w_i|^2 / s, chi-square with n degrees of freedom
A_NOT_CONSTANT = "the unit's B inputs are not all equal (else 0/0: the sampler excludes such a network)"
A_EXCHANGEABLE = ("the B examples are iid inputs through the same weights, so they are exchangeable: one example's "
                  "expectation is the batch average's")


def _example(symbol: sp.Indexed, b: sp.Expr) -> sp.Indexed:
    """Unit i's value in example b: :math:`y_{p,i} \\to y_{p,i,b}`."""
    return symbol.base[(*symbol.indices, sp.Symbol("i", integer=True), b)]


def _definitions(layer: BatchNorm, walk: _Walk, signal: _Signal, p: int) -> dict[str, int]:
    name = walk.network.place_name(p)
    x_b, y_b = _example(signal.symbol, _EX), _example(walk.signal_symbol(p), _EX)
    B = _B[p]
    out = {
        "B": walk.define(B, layer.batch, f"batch size of {name}"),
        "eps": walk.define(_EPS[p], layer.eps, prose(f"epsilon of {name}")),
    }
    out["mu"] = walk.define(_MU[p], sp.Sum(x_b, (_EX, 1, B)) / B, "a unit's mean over the batch")
    out["V"] = walk.define(_V[p], sp.Sum((x_b - _MU[p]) ** 2, (_EX, 1, B)) / B,
                           "a unit's biased variance over the batch (training mode)", uses=(out["mu"],))
    out["y"] = walk.define(y_b, (x_b - _MU[p]) / sp.sqrt(_V[p] + _EPS[p]),
                           prose(Code("BatchNorm"), " in training mode: each unit centred and divided by ",
                                 sp.sqrt(_V[p] + _EPS[p]), " over the batch; gain 1 and bias 0 at initialisation"),
                           source=IOFFE)
    return out


def _centred_moment(walk: _Walk, position: int) -> tuple[sp.Expr, int] | None:
    r""":math:`a_p = E[h_b^2] - E[h_b h_c]` (:math:`b \ne c`) at ``position``, with the step stating it, or ``None``."""
    key = _A[position]
    if key in walk.definitions:
        step = walk.definitions[key]
        return walk.builder.steps[step].rhs, step
    builder = walk.builder
    layers = walk.network.layers
    if position == -1:
        inputs = walk.network.inputs
        if not isinstance(inputs, GaussianInput):
            return None
        step = builder.model(key, sp.sympify(inputs.variance), Rule.INDEPENDENCE,
                             "the examples are independent draws of the centred Gaussian input: E[x_b x_c] = 0")
    else:
        layer = layers[position]
        if isinstance(layer, Dense):
            below = _centred_moment(walk, position - 1)
            if below is None or layer.weights.mean != 0:
                return None
            value = sp.expand(layer.fan_in * layer.weights.variance * below[0])
            step = builder.model(key, value, Rule.INDEPENDENCE,
                                 prose("the weights are independent of the layer input and zero-mean, so both ",
                                       "E[z_b^2] and E[z_b z_c] are n Var[w] times the input's; a bias is common to the "
                                       "batch and adds E[b^2] to both"), uses=(below[1],))
        elif isinstance(layer, Nonlinearity) and _is_identity(layer.activation):
            below = _centred_moment(walk, position - 1)
            if below is None:
                return None
            step = builder.model(key, below[0], Rule.DEFINITION, "the identity keeps every moment", uses=(below[1],))
        elif _after_batchnorm_relu(walk, position) is not None:
            norm = _after_batchnorm_relu(walk, position)
            k_step, kappa = _sphere_pair_kernel(walk, norm, position)
            second = walk.signals[position - 1].second
            value = sp.expand(second.value * (sp.Rational(1, 2) - kappa))
            step = builder.model(key, value, Rule.SYMMETRY,
                                 prose("relu is positively homogeneous and the BatchNorm output's direction over the "
                                       "batch is uniform and independent of its length, so E[relu(y_b)^2] = E[y^2]/2 and "
                                       "E[relu(y_b) relu(y_c)] = E[y^2] kappa"),
                                 assumptions=(A_SPHERE,), exactness="asymptotic", uses=(k_step, second.step), source=YANG)
            if not value.is_Rational:  # kappa's arccosine and square root: carried on as a checked number
                _, (step,) = _compact(walk, Quantity(key, value, step), limit=0)
        elif isinstance(layer, BatchNorm) and layer.channels is None:
            second = walk.signals[position].second
            value = sp.expand(second.value * layer.batch / (layer.batch - 1))
            step = builder.model(key, value, Rule.ALGEBRA,
                                 prose("per unit the outputs sum to 0 over the batch, so the B(B-1) cross products "
                                       "sum to minus the B squares: E[y_b y_c] = -E[y^2]/(B-1)"),
                                 assumptions=(A_EXCHANGEABLE,), uses=(second.step,))
        else:
            return None
    walk.definitions[key] = step
    return builder.steps[step].rhs, step


def _gaussian_input(walk: _Walk, signal: _Signal) -> bool:
    return signal.position == -1 and isinstance(walk.network.inputs, GaussianInput)


def _forward(layer: BatchNorm, walk: _Walk, signal: _Signal, position: int) -> _Signal:
    if layer.channels is not None:  # over the batch and the positions of each channel
        from .batchnorm_channels import channel_forward

        return channel_forward(layer, walk, signal, position)
    builder = walk.builder
    p, B = position, _B[position]
    d = _definitions(layer, walk, signal, p)
    out = walk.signal_symbol(p)
    y_b = _example(out, _EX)
    ratio = _V[p] / (_V[p] + _EPS[p])
    per_unit = builder.add(sp.Sum(y_b**2, (_EX, 1, B)) / B, ratio, Rule.ALGEBRA,
                           "the mean square over the batch, for every unit and network",
                           proof=SumIdentity(), uses=(d["y"], d["V"]))
    centred = builder.add(sp.Sum(y_b, (_EX, 1, B)) / B, sp.Integer(0), Rule.ALGEBRA,
                          "the output is centred over the batch, for every unit and network",
                          proof=SumIdentity(), uses=(d["y"], d["mu"]))
    i_second = builder.model(Expect(out**2), Expect(sp.Sum(y_b**2, (_EX, 1, B)) / B), Rule.IDENTICAL_DISTRIBUTION,
                             "one example's second moment is the batch average's", assumptions=(A_EXCHANGEABLE,))
    i_mean = builder.model(Expect(out), Expect(sp.Sum(y_b, (_EX, 1, B)) / B), Rule.IDENTICAL_DISTRIBUTION,
                           "one example's mean is the batch average's", assumptions=(A_EXCHANGEABLE,))
    mean_step = builder.add(Expect(out), sp.Integer(0), Rule.SUBSTITUTION, "substitute", proof=SumIdentity(),
                            uses=(i_mean, centred))
    general = builder.add(Expect(out**2), Expect(ratio), Rule.SUBSTITUTION, "substitute the per-unit mean square",
                          proof=SumIdentity(), uses=(i_second, per_unit))
    if layer.eps == 0:
        value = sp.Integer(1)
        step = builder.add(Expect(out**2), value, Rule.SUBSTITUTION,
                           prose(sp.Eq(_EPS[p], 0, evaluate=False), ": the batch mean square is 1 for every unit"),
                           proof=SumIdentity(), uses=(general, d["eps"]), assumptions=(A_NOT_CONSTANT,))
    else:
        scale, exactness, why, uses = _variance_scale(layer, walk, signal, p)
        i_c = walk.define(_CB[p], B * _EPS[p] / scale[0], "the scaled epsilon", uses=(d["B"], d["eps"], scale[1]))
        k = layer.batch - 1
        modelled = builder.model(Expect(ratio), Expect(CHI / (CHI + _CB[p])), Rule.IDENTICAL_DISTRIBUTION,
                                 prose(sp.Eq(_V[p], scale[0] / B * CHI, evaluate=False), " with ", CHI,
                                       f" chi-square with {k} degrees of freedom"),
                                 assumptions=(why,), exactness=exactness, uses=(i_c, *uses), source=YANG if
                                 exactness == "asymptotic" else "")
        closed = 1 - _CB[p] * chi_square_inverse(sp.Integer(k), _CB[p])
        integral = builder.add(Expect(CHI / (CHI + _CB[p])), closed, Rule.GAUSSIAN_INTEGRAL,
                               "the chi-square integral in closed form (upper incomplete gamma function)",
                               proof=ChiSquare(CHI / (CHI + _CB[p]), sp.Integer(k)), uses=(i_c,))
        c_value = layer.batch * layer.eps / scale[0]
        c_step = builder.identity(_CB[p], c_value, Rule.SUBSTITUTION, "substitute the batch size, epsilon and scale",
                                  uses=(i_c, d["B"], d["eps"], scale[1]))
        value = closed.xreplace({_CB[p]: c_value})
        step = builder.add(Expect(out**2), value, Rule.SUBSTITUTION, "substitute the scaled epsilon",
                           proof=SumIdentity(), uses=(general, modelled, integral, c_step))
    return _Signal(
        position, out, signal.width,
        Quantity(Expect(out), sp.Integer(0), mean_step),
        Quantity(Expect(out**2), value, step),
        symmetric=signal.symmetric,
        homogeneous=False,
        independent_units=signal.independent_units,
    )


def _variance_scale(layer: BatchNorm, walk: _Walk, signal: _Signal, p: int) -> tuple[tuple[sp.Expr, int], str, str, tuple]:
    """(scale a with its step, exactness, assumption, uses) of the law V = (a/B) chi^2_{B-1}."""
    name = walk.network.place_name(p)
    if _gaussian_input(walk, signal):
        moment = _centred_moment(walk, -1)
        return moment, "exact", ("the batch of a unit is iid centred Gaussian (the Gaussian input); Cochran's theorem: "
                                 "the centred sum of squares has B - 1 degrees of freedom"), ()
    moment = _centred_moment(walk, p - 1)
    if moment is None:
        raise DerivationError(
            f"BatchNorm {name} with eps > 0: E[y^2] needs the law of the batch variance, derived on the Gaussian input "
            "and, in the mean-field limit, behind dense layers, BatchNorms and identity activations; after another "
            "nonlinearity it needs Yang et al.'s (2019) integral transforms, which varprop does not derive "
            "(with eps = 0, E[y^2] = 1 exactly; torch's BatchNorm refuses eps = 0 in training mode)")
    return moment, "asymptotic", (
        "wide layers (mean-field): a unit's batch is Gaussian with the mean Gram matrix a I + b 1 1^T of the "
        "exchangeable batch; centring removes b"), ()


# --- backward ------------------------------------------------------------------------------------


def _after_batchnorm_relu(walk: _Walk, position: int) -> BatchNorm | None:
    """The BatchNorm right below the relu at ``position``, or ``None`` when it is no relu on a BatchNorm output."""
    layers = walk.network.layers
    layer = layers[position]
    if (isinstance(layer, Nonlinearity) and layer.activation.name == "relu" and not layer.activation.params
            and position >= 1 and isinstance(layers[position - 1], BatchNorm) and layers[position - 1].channels is None):
        return layers[position - 1]
    return None


def _sphere_pair_kernel(walk: _Walk, norm: BatchNorm, position: int) -> tuple[int, sp.Expr]:
    r"""The step stating :math:`\kappa = E[\mathrm{relu}(u)\mathrm{relu}(v)]` for unit Gaussians of correlation
    :math:`\rho = -1/(B-1)` (the arc-cosine kernel, checked by two-dimensional quadrature), and :math:`\kappa`."""
    key = _KAPPA[position]
    if key not in walk.definitions:
        act = walk.network.layers[position].activation
        rho = sp.Rational(-1, norm.batch - 1)
        kernel = _kernel(act, sp.Integer(1), sp.Integer(1), rho)
        if kernel is None:  # relu always has one (Cho & Saul 2009)
            raise DerivationError(f"no closed-form kernel for {act}")
        walk.definitions[key] = walk.builder.add(
            key, sp.simplify(kernel[0]), Rule.GAUSSIAN_INTEGRAL,
            prose("E[relu(u) relu(v)] for unit Gaussians of correlation ", rho, f" ({kernel[1]})"),
            proof=BivariateIntegral(act.expr.subs(X, _PAIR_U) * act.expr.subs(X, _PAIR_V), sp.Integer(1), sp.Integer(1),
                                    rho),
            source="Cho & Saul 2009")
    step = walk.definitions[key]
    return step, walk.builder.steps[step].rhs


A_SPHERE = ("mean-field: the batch of a unit at the BatchNorm's input is Gaussian with covariance a I + b 1 1^T, so its "
            "output over the batch is sqrt(B V/(V + eps)) times a direction uniform on the centred unit sphere, "
            "independent of V; two coordinates of that direction are those of a Gaussian pair of correlation -1/(B-1) "
            "divided by its norm (Yang et al. 2019)")


def _gradient_factor(walk: _Walk, position: int) -> tuple[sp.Expr, str, tuple[int, ...]] | None:
    r"""How the gradient reaches the BatchNorm at ``position``, from what lies between it and the nearest
    BatchNorm above (or the loss): ``(f, through, steps used)`` with :math:`E[\delta_b^2] - E[\delta_b\delta_c] =
    f\,E[\delta^2]`, or ``None``.

    * ``"loss"``, :math:`f = 1`: no BatchNorm above, only dense layers, identities and relus (a relu's mask
      multiplies uncorrelated examples, and :math:`E[\mathbb 1_{y > 0}\, y^2] = E[y^2]/2` decouples it from the
      Jacobian's diagonal);
    * ``"batchnorm"``, :math:`f = B/(B-1)`: dense layers and identities up to a BatchNorm, whose gradient sums to 0
      over the batch;
    * ``"relu-batchnorm"``: a relu directly on this BatchNorm's output, then dense layers and identities up to a
      BatchNorm (:func:`_relu_between_batchnorms`; ``f`` is not used there).

    ``None`` otherwise: another activation (its slope correlates with the Jacobian's diagonal), a relu that is not
    directly on this BatchNorm's output below a BatchNorm, or another layer kind."""
    layers = walk.network.layers
    relus: list[int] = []
    for index in range(position + 1, len(layers)):
        layer = layers[index]
        if isinstance(layer, Dense) or (isinstance(layer, Nonlinearity) and _is_identity(layer.activation)):
            continue
        if isinstance(layer, BatchNorm):
            if layer.channels is not None:  # centred per channel over batch and positions, not per unit
                return None
            if not relus:
                return sp.Integer(layer.batch) / (layer.batch - 1), "batchnorm", ()
            if relus == [position + 1]:
                return sp.Integer(1), "relu-batchnorm", ()
            return None
        if isinstance(layer, Nonlinearity) and layer.activation.name == "relu" and not layer.activation.params:
            relus.append(index)
            continue
        return None
    return sp.Integer(1), "loss", ()


def _backward(layer: BatchNorm, walk: _Walk, gradient: _Gradient, below: _Signal, position: int) -> _Gradient:
    if layer.channels is not None:  # over the batch and the positions of each channel
        from .batchnorm_channels import channel_backward

        return channel_backward(layer, walk, gradient, below, position)
    builder = walk.builder
    p, B = position, _B[position]
    name = walk.network.place_name(p)
    V, eps_p = _V[p], _EPS[p]
    y_b, y_c = _example(walk.signal_symbol(p), _EX), _example(walk.signal_symbol(p), sp.Symbol("c", integer=True))
    D_out, D_in = gradient.symbol, walk.gradient_symbol(p - 1)
    d_b, d_c = _example(D_out, _EX), _example(D_out, sp.Symbol("c", integer=True))
    c_ex = sp.Symbol("c", integer=True)
    sigma = sp.sqrt(V + eps_p)
    chain = walk.define(_example(D_in, _EX),
                        (d_b - sp.Sum(d_c, (c_ex, 1, B)) / B - y_b * sp.Sum(y_c * d_c, (c_ex, 1, B)) / B) / sigma,
                        prose("chain rule through the batch normalisation of one unit: its Jacobian over the batch is ",
                              (sp.Symbol("C") - sp.Symbol("y y^T") / B) / sigma, ", ",
                              sp.Eq(sp.Symbol("C"), sp.Symbol("I - 1 1^T/B"), evaluate=False)),
                        rule=Rule.CHAIN_RULE, source=IOFFE)
    k = layer.batch - 1
    r = V / (V + eps_p)
    spread = (sp.Integer(1), "loss", ()) if gradient.independent else _gradient_factor(walk, p)
    if spread is None:
        raise DerivationError(
            f"the gradient below BatchNorm {name} comes through a nonlinearity whose slope does not factor from the "
            "BatchNorm's Jacobian (another activation: its slope correlates with the Jacobian's diagonal; a relu that "
            "is not directly on this BatchNorm's output, below another BatchNorm: its mask correlates the examples), not "
            "even in the mean-field limit; Yang et al. (2019) handle it with integral transforms, which varprop does not "
            "derive (derived: from the loss through dense layers, identities and relus; from a BatchNorm above through "
            "dense layers and identities, with at most a relu directly on this BatchNorm's output)")
    if spread[1] == "relu-batchnorm":
        value, uses = _relu_between_batchnorms(layer, walk, gradient, below, p, chain)
        step = builder.add(Expect(D_in**2), value, Rule.SUBSTITUTION, "substitute", proof=Identity(), uses=uses)
        quantity = Quantity(Expect(D_in**2), value, step)
        if value.has(sp.Float):  # a closed form around numbers (a relu's kernel below): carried on as a checked number
            number, (index,) = _compact(walk, quantity, limit=0)
            quantity = Quantity(Expect(D_in**2), number, index)
        return _Gradient(p - 1, D_in, _zero_mean_gradient(walk, D_in), quantity, independent=False)
    exact_isotropy = gradient.independent
    centred = spread[1] != "loss"
    factor_uses = spread[2]
    if spread[1] == "batchnorm":
        factor, iso = spread[0], (
            "the gradient came from a BatchNorm above through dense layers only, so it sums to 0 over the batch; "
            "mean-field: it is taken independent of the forward pass and isotropic in the centred subspace, "
            "E[delta delta^T] = d B/(B-1) C (Yang et al. 2019)")
    else:
        factor, iso = sp.Integer(1), (
            "the gradient arriving from above is independent of the forward pass below it and isotropic over the batch "
            "and the units, E[delta delta^T] = d I (the loss sum_b <g_b, out_b>, or it through fresh zero-mean weights)"
            if gradient.independent else
            "the gradient arriving from above is treated as independent of the forward pass and isotropic (He et al.'s "
            "assumption)")
    traced = builder.add(
        Expect(D_in**2), factor * Expect(D_out**2) * Expect((k - 2 * r + r**2) / (B * (V + eps_p))), Rule.INDEPENDENCE,
        prose("per unit, one example's share of ", sp.Symbol("d tr(J^2)"), ", and ", sp.Symbol("tr(J^2)"), " = ",
              (k - 2 * sp.Symbol("r") + sp.Symbol("r") ** 2) / (V + eps_p), " with ", sp.Eq(sp.Symbol("r"), r, evaluate=False),
              ", k = B - 1 (JC = J)"),
        proof=TraceCheck(True), uses=(chain, *factor_uses), assumptions=(iso, A_EXCHANGEABLE),
        exactness="exact" if exact_isotropy else "asymptotic", source=YANG if centred else "")
    simpler = ((k - 1) / (V + eps_p) + eps_p**2 / (V + eps_p) ** 3) / B
    reduced = builder.add(Expect(D_in**2), factor * Expect(D_out**2) * Expect(simpler), Rule.ALGEBRA,
                          prose("with ", sp.Eq(sp.Symbol("r"), r, evaluate=False)), proof=SumIdentity(),
                          uses=(traced, walk.definitions[B]))
    d_value, d_uses = walk.plain(gradient.second)
    first = walk.network.layers[0]
    # exact only for an independent isotropic gradient; under the mean-field assumptions the n/(n-2) is no better
    if (exact_isotropy and layer.eps == 0 and p == 1 and below.position == 0 and isinstance(first, Dense)
            and isinstance(first.weights, Normal) and first.weights.mean == 0 and _gaussian_input(walk, walk.signals[-1])):
        value, uses = _first_dense_backward(layer, walk, first, p, d_value)
    else:
        value, uses = _chi_square_backward(layer, walk, below, p, d_value)
    value = sp.expand(factor * value)
    if value.has(sp.zoo, sp.oo, sp.nan):
        raise DerivationError(f"the gradient's second moment below {name} is infinite")
    step = builder.add(Expect(D_in**2), value, Rule.SUBSTITUTION, "substitute", proof=SumIdentity(),
                       uses=(reduced, *uses, *d_uses))
    return _Gradient(p - 1, D_in, _zero_mean_gradient(walk, D_in), Quantity(Expect(D_in**2), value, step),
                     independent=False)


def _chi_square_backward(layer: BatchNorm, walk: _Walk, below: _Signal, p: int, d_value: sp.Expr) -> tuple[sp.Expr, tuple]:
    """E[simpler] for V = (a/B) X, X ~ chi^2_{B-1}: exact on the Gaussian input, else mean-field."""
    builder = walk.builder
    B, V, eps_p = _B[p], _V[p], _EPS[p]
    name = walk.network.place_name(p)
    k = layer.batch - 1
    simpler = ((k - 1) / (V + eps_p) + eps_p**2 / (V + eps_p) ** 3) / B
    moment, exactness, why = _batch_variance_law(walk, below, p)
    if moment is None:
        raise _no_variance_law(name)
    a, a_step = moment
    if layer.eps == 0:
        if k <= 2:
            raise DerivationError(
                f"the gradient's second moment below {name} is infinite: with eps = 0 it is proportional to E[1/X], X "
                f"chi-square with B - 1 = {k} degrees of freedom, which diverges for B <= 3 (give eps > 0 or a batch of 4 "
                "or more)")
        integrand = (k - 1) / (a * CHI)
        closed = sp.Integer(k - 1) / (a * (k - 2))
        extra: tuple[int, ...] = ()
    else:
        i_c = walk.define(_CB[p], B * eps_p / a, "the scaled epsilon", uses=(a_step,))
        c_step = builder.identity(_CB[p], layer.batch * layer.eps / a, Rule.SUBSTITUTION,
                                  "substitute the batch size and epsilon",
                                  uses=(i_c, walk.definitions[B], walk.definitions[eps_p]))
        c = _CB[p]
        integrand = ((k - 1) / (CHI + c) + c**2 / (CHI + c) ** 3) / a
        F = chi_square_inverse(sp.Integer(k), SHIFT)
        closed = ((k - 1) * F + SHIFT**2 * sp.diff(F, SHIFT, 2) / 2).xreplace({SHIFT: c}) / a
        extra = (i_c,)
    modelled = builder.model(Expect(simpler), Expect(integrand), Rule.IDENTICAL_DISTRIBUTION,
                             prose(sp.Eq(V, a / B * CHI, evaluate=False), " with ", CHI,
                                   f" chi-square with {k} degrees of freedom"),
                             assumptions=(why,), exactness=exactness, uses=(*extra, a_step),
                             source=YANG if exactness == "asymptotic" else "")
    integral = builder.add(Expect(integrand), closed, Rule.GAUSSIAN_INTEGRAL,
                           "E[1/X] = 1/(k - 2)" if layer.eps == 0 else
                           "E[1/(X + c)] = F(c) (upper incomplete gamma function) and E[1/(X + c)^3] = F''(c)/2",
                           proof=ChiSquare(integrand, sp.Integer(k)), uses=(*extra, a_step))
    if layer.eps == 0:
        return d_value * closed, (modelled, integral, a_step)
    return d_value * closed.xreplace({_CB[p]: layer.batch * layer.eps / a}), (modelled, integral, c_step)


def _first_dense_backward(layer: BatchNorm, walk: _Walk, dense: Dense, p: int, d_value: sp.Expr) -> tuple[sp.Expr, tuple]:
    """eps = 0 after a first dense layer with N(0, s) weights on the Gaussian input: exact at every width."""
    builder = walk.builder
    B, V = _B[p], _V[p]
    k = layer.batch - 1
    n = dense.fan_in
    v = walk.network.inputs.variance
    s = dense.weights.variance
    name = walk.network.place_name(p)
    if k <= 2 or n <= 2:
        raise DerivationError(
            f"the gradient's second moment below {name} is infinite: with eps = 0 it is proportional to E[1/X] E[1/Y], "
            f"X, Y chi-square with B - 1 = {k} and n = {n} degrees of freedom, which diverges unless B >= 4 and n >= 3")
    eps_p = _EPS[p]
    simpler = ((k - 1) / (V + eps_p) + eps_p**2 / (V + eps_p) ** 3) / B
    law = builder.model(
        Expect(simpler), Expect((k - 1) / (v * s * _Y * CHI)), Rule.IDENTICAL_DISTRIBUTION,
        prose("given the weights, unit i's batch is iid ", sp.Symbol("N(0, v|w_i|^2)"), " (a bias is common to the batch "
              "and cancels), so with ", sp.Eq(eps_p, 0, evaluate=False), " ", sp.Eq(V, v * s * _Y * CHI / B, evaluate=False), " with ", CHI,
              f" chi-square with {k} and ", _Y, f" = |w_i|^2/s chi-square with {n} degrees of freedom, independent"),
        assumptions=("the Gaussian input and N(0, s) weights in the first dense layer; Cochran's theorem",))
    e_x = builder.add(Expect(1 / CHI), sp.Integer(1) / (k - 2), Rule.GAUSSIAN_INTEGRAL, "E[1/X] = 1/(k - 2)",
                      proof=ChiSquare(1 / CHI, sp.Integer(k)))
    e_y = builder.add(Expect(1 / _Y), sp.Integer(1) / (n - 2), Rule.GAUSSIAN_INTEGRAL, "E[1/Y] = 1/(n - 2)",
                      proof=ChiSquare(1 / CHI, sp.Integer(n)))
    closed = builder.model(Expect((k - 1) / (v * s * _Y * CHI)), sp.Integer(k - 1) / (v * s * (k - 2) * (n - 2)),
                           Rule.INDEPENDENCE, "X and Y are independent: the expectation of the product factors",
                           uses=(e_x, e_y))
    return d_value * sp.Integer(k - 1) / (v * s * (k - 2) * (n - 2)), (law, e_x, e_y, closed)



# --- a relu between two BatchNorms ---------------------------------------------------------------

_DIR = sp.IndexedBase("u")  # u_{p,b}: the direction over the batch of a unit's output of the BatchNorm at p
SHEPPARD = "Sheppard 1899 (the orthant probability of a bivariate Gaussian)"
A_CENTRED_GRADIENT = (
    "mean-field gradient independence (Yang et al. 2019): the gradient at the relu's output came from a BatchNorm "
    "above through dense layers only, so it sums to 0 over the batch, and its examples are exchangeable, so "
    "E[delta delta^T] = d B/(B-1) C; it is taken independent of the forward pass below the relu")
A_POLAR = ("u = g/|g| with g ~ N(0, C): the sign of u_b is that of g_b, and |g|^2 (mean B - 1) is independent of u, so "
           "E[relu(u_b) relu(u_c)] = E[relu(g_b) relu(g_c)]/(B - 1); g_b, g_c have variance (B-1)/B and covariance -1/B")
A_EXCHANGEABLE_DIRECTION = ("the coordinates of u are exchangeable: linearity of the expectation, and every pair "
                            "(b, c), b != c, has the law of (1, 2)")


def _masked_trace_value(width: int, eps: sp.Rational, values: Sequence[int]) -> tuple[sp.Expr, dict, sp.Expr]:
    r""":math:`\operatorname{tr}(J M C M J)` at one input vector (exact arithmetic), the BatchNorm's outputs (by
    example, from 1) and its biased batch variance, to substitute into a formula."""
    x = sp.Matrix([sp.Integer(v) for v in values])
    ones = sp.ones(width, 1)
    centred = x - (sum(x) / width) * ones
    variance = (centred.T * centred)[0] / width
    sigma = sp.sqrt(variance + eps)
    y = centred / sigma
    projector = sp.eye(width) - ones * ones.T / width
    jacobian = (projector - y * y.T / width) / sigma
    mask = sp.diag(*[1 if value > 0 else 0 for value in y])
    return (jacobian * mask * projector * mask * jacobian).trace(), dict(enumerate(y, start=1)), variance


@dataclass(frozen=True)
class MaskedTrace(Check):
    r"""The step's right side is ``scale`` times :math:`E[g]`, and :math:`g = \operatorname{tr}(J M C M J)` for the
    BatchNorm's Jacobian :math:`J` and the relu mask :math:`M = \operatorname{diag}(\mathbb 1_{y_b > 0})`.

    :math:`g` (``integrand``, in the output ``output`` over the batch index, the variance ``variance``, ``eps`` and
    the batch ``batch``) is evaluated at integer input vectors of widths 2 to 6 with both signs present, at
    :math:`\epsilon \in \{0, 1/3\}`, and compared in exact arithmetic with the trace of the matrices built by sympy.
    What the step adds, :math:`E[\delta^\top A\delta] = d' E[\operatorname{tr}(A C)]` for a gradient
    :math:`\delta` independent of :math:`A` with :math:`E[\delta\delta^\top] = d' C`, is its stated assumption.
    """

    integrand: sp.Expr
    scale: sp.Expr
    output: sp.Indexed
    variance: sp.Expr
    eps: sp.Expr
    batch: sp.Expr
    kind: ClassVar[str] = "identity"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        if not _is_zero(sp.expand(step.rhs - self.scale * Expect(self.integrand))):
            return False, f"the right side is not {to_text(self.scale)} E[{to_text(self.integrand)}]"
        for width in range(2, 7):
            for shift in (0, 2):
                values = [((3 * j * j + 5 * j + 2 + shift) % 7) - 3 for j in range(width)]
                if len(set(values)) == 1:
                    values[0] += 1
                while any(v * width == sum(values) for v in values):  # an example at the batch mean: mask 1/2
                    values[-1] += 1
                for eps in (sp.Integer(0), sp.Rational(1, 3)):
                    trace, outputs, variance = _masked_trace_value(width, eps, values)
                    g = self.integrand.xreplace({self.batch: sp.Integer(width)})
                    g = _explicit_sums(g, self.output, outputs)
                    g = g.xreplace({self.variance: variance, self.eps: eps})
                    if not _is_zero(sp.nsimplify(sp.simplify(g - trace))):
                        return False, (f"tr(J M C M J) = {trace} but the integrand gives {sp.simplify(g)} at the input "
                                       f"{values}, eps = {eps}")
        return True, ("the integrand equals tr(J M C M J) of the matrices built by sympy at widths 2-6 (two inputs "
                      "each, both signs present), eps 0 and 1/3")


def _explicit_sums(expr: sp.Expr, coordinate: sp.Indexed, values: dict[int, sp.Expr]) -> sp.Expr:
    """Every sum over the batch index written out, the coordinate replaced by ``values`` (index -> value)."""
    def written(total: sp.Sum) -> sp.Expr:
        (variable, low, high), = total.limits
        return sp.Add(*(total.function.xreplace({variable: sp.Integer(j)}).xreplace(
            {coordinate.base[(*coordinate.indices[:-1], sp.Integer(j))]: values[j]} if values else {})
            for j in range(int(low), int(high) + 1)))

    return expr.replace(lambda e: isinstance(e, sp.Sum), written)


@dataclass(frozen=True)
class ExchangeableMoments(Check):
    r""":math:`E[g(u_1, \dots, u_B)]` of an exchangeable vector in its one- and two-coordinate moments, by algebra.

    The step's left side is :math:`E[g]`, :math:`g` a polynomial in sums over the batch of functions of the
    coordinate ``coordinate``; at every batch size from 2 to 7 the sums are written out, :math:`g` expanded, a
    Heaviside step's powers reduced (:math:`\mathbb 1^2 = \mathbb 1`), and each term's expectation relabelled to
    coordinates 1 and 2 (exchangeability); the result must equal the right side at that batch size.
    """

    coordinate: sp.Indexed
    batch: sp.Expr
    kind: ClassVar[str] = "identity"

    def run(self, step: Step, steps: Sequence[Step]) -> tuple[bool | None, str]:
        base, head = self.coordinate.base, self.coordinate.indices[:-1]
        statistic = step.lhs.args[0] if isinstance(step.lhs, Expect) else step.lhs
        for width in range(2, 8):
            expanded = sp.expand(_explicit_sums(statistic.xreplace({self.batch: sp.Integer(width)}), self.coordinate, {}))
            expanded = expanded.replace(lambda e: e.is_Pow and isinstance(e.base, sp.Heaviside) and e.exp.is_positive,
                                        lambda e: e.base)
            total = sp.Integer(0)
            for term in sp.Add.make_args(sp.expand(expanded)):
                coefficient, groups = sp.Integer(1), {}
                for factor in sp.Mul.make_args(term):
                    atoms = [a for a in factor.atoms(sp.Indexed) if a.base == base]
                    if not atoms:
                        coefficient *= factor
                    elif len(atoms) == 1:
                        groups[atoms[0]] = groups.get(atoms[0], sp.Integer(1)) * factor
                    else:
                        return False, f"the term {term} mixes coordinates in one factor"
                neutral = sp.Dummy("z")
                shapes = sorted((g.xreplace({a: neutral}) for a, g in groups.items()), key=sp.default_sort_key)
                canonical = sp.Mul(*(shape.xreplace({neutral: base[(*head, sp.Integer(k))]})
                                     for k, shape in enumerate(shapes, start=1)))
                total += coefficient * (Expect(canonical) if groups else 1)
            stated = step.rhs.xreplace({self.batch: sp.Integer(width)})
            if not _is_zero(sp.expand(total - stated)):
                return False, f"at a batch of {width} the sums give {to_text(total)}, the step states {to_text(stated)}"
        return True, "the sums written out and expanded at batches 2-7, each term relabelled to coordinates 1 and 2"


def _no_variance_law(name: str) -> DerivationError:
    return DerivationError(
        f"the gradient below BatchNorm {name} needs the law of the batch variance, derived on the Gaussian input, "
        "after a first dense layer (eps = 0) and, in the mean-field limit, behind dense layers, BatchNorms, identities "
        "and a relu on a BatchNorm; after another nonlinearity it needs Yang et al.'s (2019) integral transforms, "
        "which varprop does not derive")


def _batch_variance_law(walk: _Walk, below: _Signal, p: int) -> tuple[tuple[sp.Expr, int] | None, str, str]:
    """The scale a of the law V = (a/B) chi^2_{B-1} of the BatchNorm at p (with its step, or None), its exactness
    and why."""
    if _gaussian_input(walk, below):
        return _centred_moment(walk, -1), "exact", (
            "the batch of a unit is iid centred Gaussian (the Gaussian input); Cochran's theorem: the centred sum of "
            "squares has B - 1 degrees of freedom")
    return _centred_moment(walk, p - 1), "asymptotic", (
        "wide layers (mean-field): a unit's batch is Gaussian with the mean Gram matrix a I + b 1 1^T of the "
        "exchangeable batch; centring removes b")


def relu_block_factor(batch: sp.Expr) -> sp.Expr:
    r"""The mean-field growth of the gradient's second moment per block (dense, BatchNorm with
    :math:`\epsilon = 0`, relu) below a BatchNorm, at batch size ``batch`` (a number or a symbol):

    .. math:: \frac{(B-2)/2 + p + \kappa}{(\frac12 - \kappa)(B - 3)}, \quad
              p = \frac14 + \frac{\arcsin\rho}{2\pi}, \quad
              \kappa = \frac{\sqrt{1 - \rho^2} + (\pi - \arccos\rho)\rho}{2\pi}, \quad \rho = -\frac1{B-1},

    the ratio of :func:`_relu_between_batchnorms`' value to the one a block above, whatever the weight variance
    (Yang et al. 2019; it tends to :math:`\pi/(\pi - 1)` as :math:`B \to \infty`). :math:`p` is Sheppard's orthant
    probability and :math:`\kappa` the arc-cosine kernel of relu (Cho & Saul 2009), from the same closed forms the
    derivation checks by quadrature.
    """
    if isinstance(batch, bool) or not isinstance(batch, int | sp.Expr):  # never parse text with sympify
        raise DerivationError(f"batch must be an integer or a sympy expression, got {batch!r}")
    batch = sp.sympify(batch)
    rho = -1 / (batch - 1)
    orthant = sp.Rational(1, 4) + sp.asin(rho) / (2 * sp.pi)
    kappa = _kernel(activation("relu"), sp.Integer(1), sp.Integer(1), rho)[0]
    return ((batch - 2) / sp.Integer(2) + orthant + kappa) / ((sp.Rational(1, 2) - kappa) * (batch - 3))


def _relu_between_batchnorms(layer: BatchNorm, walk: _Walk, gradient: _Gradient, below: _Signal, p: int,
                             chain: int) -> tuple[sp.Expr, tuple[int, ...]]:
    r"""The gradient's second moment at the input of the BatchNorm at ``p`` under a relu (at ``p + 1``) whose gradient
    comes from a BatchNorm above through dense layers and identities, mean-field (see the module docstring), and the
    steps the final substitution uses."""
    builder = walk.builder
    B, V, eps_p = _B[p], _V[p], _EPS[p]
    batch, k = layer.batch, layer.batch - 1
    name = walk.network.place_name(p)
    above = walk.gradients[p + 1]  # the gradient at the relu's output
    y_b = _example(walk.signal_symbol(p), _EX)
    u_b, u1, u2 = _DIR[p, _EX], _DIR[p, 1], _DIR[p, 2]
    r = V / (V + eps_p)

    def relu(z: sp.Expr) -> sp.Expr:
        return sp.Max(z, 0)

    def t1(z: sp.Expr) -> sp.Expr:
        count = sp.Sum(sp.Heaviside(z), (_EX, 1, B))
        return count - 2 * count / B + count**2 / B**2

    def spread(z: sp.Expr) -> sp.Expr:
        return sp.Sum(relu(z) ** 2, (_EX, 1, B)) - sp.Sum(relu(z), (_EX, 1, B)) ** 2 / B

    integrand = (t1(y_b) - (2 - r) * spread(y_b) / B) / (V + eps_p)
    scale = Expect(above.symbol**2) / (B - 1)
    relu_chain = walk.definitions.get(gradient.symbol)
    traced = builder.add(
        Expect(walk.gradient_symbol(p - 1) ** 2), scale * Expect(integrand), Rule.INDEPENDENCE,
        prose("the gradient at the input is J M delta per unit, ", sp.Symbol("M") , " = diag(1[y_b > 0]) the relu's "
              "mask; one example's share of ", sp.Symbol("d' E[tr(J M C M J)]"), ", ",
              sp.Eq(sp.Symbol("d'"), sp.Symbol("d") * B / (B - 1), evaluate=False),
              ", with K the number of positive outputs and relu(y) the relu's output"),
        proof=MaskedTrace(integrand, scale, y_b, V, eps_p, B),
        uses=(chain, *((relu_chain,) if relu_chain is not None else ()), walk.definitions[V]),
        assumptions=(A_CENTRED_GRADIENT, A_EXCHANGEABLE), exactness="asymptotic", source=YANG)
    first, second = 1 / (V + eps_p), (2 - r) * r / (V + eps_p)
    sphere = builder.model(
        Expect(integrand), Expect(t1(u_b)) * Expect(first) - Expect(spread(u_b)) * Expect(second), Rule.INDEPENDENCE,
        prose("the output over the batch is ", sp.sqrt(B * r), " times its direction ", _DIR[p, sp.Symbol("b")],
              ", and relu is positively homogeneous with the same signs"),
        assumptions=(A_SPHERE,), exactness="asymptotic", source=YANG)
    # the direction's one- and two-coordinate moments, through g ~ N(0, C)
    k_step, kappa = _sphere_pair_kernel(walk, layer, p + 1)
    q, cov, rho = sp.Rational(k, batch), sp.Rational(-1, batch), sp.Rational(-1, k)
    pair = {"first": q, "second": q, "covariance": cov}
    h1 = builder.add(Expect(sp.Heaviside(u1)), sp.Rational(1, 2), Rule.GAUSSIAN_INTEGRAL,
                     "the sign of a coordinate is that of a centred Gaussian",
                     proof=BivariateIntegral(sp.Heaviside(_PAIR_U), **pair), assumptions=(A_POLAR,))
    orthant = sp.Rational(1, 4) + sp.asin(rho) / (2 * sp.pi)
    h11 = builder.add(Expect(sp.Heaviside(u1) * sp.Heaviside(u2)), orthant, Rule.GAUSSIAN_INTEGRAL,
                      prose("the orthant probability of a Gaussian pair of correlation ", rho),
                      proof=BivariateIntegral(sp.Heaviside(_PAIR_U) * sp.Heaviside(_PAIR_V), **pair),
                      assumptions=(A_POLAR,), source=SHEPPARD)
    r2 = builder.add(Expect(relu(u1) ** 2), sp.Rational(1, 2 * batch), Rule.GAUSSIAN_INTEGRAL,
                     "E[relu(g_b)^2]/(B - 1): half the variance, by symmetry",
                     proof=BivariateIntegral(relu(_PAIR_U) ** 2 / k, **pair), assumptions=(A_POLAR,))
    r11 = builder.add(Expect(relu(u1) * relu(u2)), _KAPPA[p + 1] / batch, Rule.GAUSSIAN_INTEGRAL,
                      "E[relu(g_b) relu(g_c)]/(B - 1), the relu kernel at the pair's correlation",
                      proof=BivariateIntegral(relu(_PAIR_U) * relu(_PAIR_V) / k, **pair), assumptions=(A_POLAR,),
                      uses=(k_step,), source="Cho & Saul 2009")
    e_h1, e_h11, e_r2, e_r11 = (builder.steps[i].lhs for i in (h1, h11, r2, r11))
    t1_pairs = builder.add(Expect(t1(u_b)), B * e_h1 - 2 * e_h1 + (B * e_h1 + B * (B - 1) * e_h11) / B**2, Rule.ALGEBRA,
                           "the square of the count expanded; a mask is its own square",
                           proof=ExchangeableMoments(u_b, B), assumptions=(A_EXCHANGEABLE_DIRECTION,))
    spread_pairs = builder.add(Expect(spread(u_b)), B * e_r2 - (B * e_r2 + B * (B - 1) * e_r11) / B, Rule.ALGEBRA,
                               "the square of the sum expanded", proof=ExchangeableMoments(u_b, B),
                               assumptions=(A_EXCHANGEABLE_DIRECTION,))
    t1_value = sp.expand(sp.Rational(k, batch) * (sp.Rational(k, 2) + orthant))
    spread_value = sp.expand(sp.Rational(k, batch) * (sp.Rational(1, 2) - kappa))
    b_step = walk.definitions[B]
    t1_step = builder.identity(Expect(t1(u_b)), t1_value, Rule.SUBSTITUTION, "substitute the batch size and the moments",
                               uses=(t1_pairs, h1, h11, b_step))
    spread_step = builder.identity(Expect(spread(u_b)), spread_value, Rule.SUBSTITUTION,
                                   "substitute the batch size and the moments",
                                   uses=(spread_pairs, r2, r11, b_step, k_step))
    # the batch variance: V = (a/B) X, X chi-square with B - 1 degrees of freedom
    moment, exactness, why = _batch_variance_law(walk, below, p)
    if moment is None:
        raise _no_variance_law(name)
    a, a_step = moment
    if layer.eps == 0:
        if k <= 2:
            raise DerivationError(
                f"the gradient's second moment below {name} is infinite: with eps = 0 it is proportional to E[1/X], X "
                f"chi-square with B - 1 = {k} degrees of freedom, which diverges for B <= 3 (give eps > 0 or a batch of "
                "4 or more)")
        integrands = (batch / (a * CHI), batch / (a * CHI))
        closed = (sp.Integer(batch) / (a * (k - 2)),) * 2
        c_uses: tuple[int, ...] = (walk.definitions[eps_p],)
        extra: tuple[int, ...] = ()
    else:
        i_c = walk.define(_CB[p], B * eps_p / a, "the scaled epsilon", uses=(a_step,))
        c_step = builder.identity(_CB[p], layer.batch * layer.eps / a, Rule.SUBSTITUTION,
                                  "substitute the batch size and epsilon", uses=(i_c, b_step, walk.definitions[eps_p]))
        c = _CB[p]
        integrands = (batch / a / (CHI + c), batch / a * CHI * (CHI + 2 * c) / (CHI + c) ** 3)
        F = chi_square_inverse(sp.Integer(k), SHIFT)
        closed = tuple((batch / a * form).xreplace({SHIFT: c})
                       for form in (F, F - SHIFT**2 * sp.diff(F, SHIFT, 2) / 2))
        c_uses, extra = (c_step,), (i_c,)
    chi_steps = []
    for lhs, integrand_x, value in zip((first, second), integrands, closed):
        modelled = builder.model(Expect(lhs), Expect(integrand_x), Rule.IDENTICAL_DISTRIBUTION,
                                 prose(sp.Eq(V, a / B * CHI, evaluate=False), " with ", CHI,
                                       f" chi-square with {k} degrees of freedom",
                                       ", ", sp.Eq(_CB[p], B * eps_p / a, evaluate=False) if extra else
                                       sp.Eq(eps_p, 0, evaluate=False)),
                                 assumptions=(why,), exactness=exactness,
                                 uses=(*extra, a_step, b_step, walk.definitions[eps_p]),
                                 source=YANG if exactness == "asymptotic" else "")
        integral = builder.add(Expect(integrand_x), value, Rule.GAUSSIAN_INTEGRAL,
                               "E[1/X] = 1/(k - 2)" if layer.eps == 0 else
                               "E[1/(X + c)] = F(c) (upper incomplete gamma function), E[1/(X + c)^3] = F''(c)/2 and "
                               "X(X + 2c) = (X + c)^2 - c^2",
                               proof=ChiSquare(integrand_x, sp.Integer(k)), uses=(*extra, a_step))
        chi_steps += [modelled, integral]
    _, d_uses = walk.plain(above.second)
    uses = (traced, sphere, t1_step, spread_step, *chi_steps, *c_uses, b_step, *d_uses)
    # the value is the substitution itself (done as the check does it, so numbers from below round alike)
    value = _apply(builder.steps[traced].lhs, {builder.steps[i].lhs: builder.steps[i].rhs for i in uses}, structural=True)
    value = value if value.has(sp.Float) else sp.expand(value)
    if value.has(sp.zoo, sp.oo, sp.nan) or value.has(Expect):
        raise DerivationError(f"the gradient's second moment below {name} is infinite")
    return value, uses


def _cross(layer: BatchNorm, walk: _Walk, cross: Quantity, position: int) -> Quantity:
    raise DerivationError("a network with a BatchNorm carries a batch, not an input pair: its cross moments are not "
                          "derived")


forward_rule.register(BatchNorm)(_forward)
backward_rule.register(BatchNorm)(_backward)
cross_rule.register(BatchNorm)(_cross)
