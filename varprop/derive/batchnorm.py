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
  Normalization", ICLR, the linear case of their gradient analysis). A relu between two BatchNorms is
  refused for the gradient below it: its mask and the lower BatchNorm's Jacobian are functions of the
  same output, and with a centred gradient they do not factor, not even in the mean-field limit
  (:math:`E[\mathbb 1_{y_b>0}\mathbb 1_{y_c>0}P_{bc}] = -(p + \kappa)/B` with :math:`P = C - yy^\top/B`,
  :math:`p` the orthant probability and :math:`\kappa` the relu kernel at correlation :math:`-1/(B-1)`,
  not :math:`p\,E[P_{bc}]`).

The affine parameters are at their initial values (gain 1, bias 0), so they change neither pass.
"""

from __future__ import annotations

import sympy as sp

from ..errors import DerivationError
from ..network import BatchNorm, Dense, GaussianInput, Nonlinearity
from ..weights import Normal
from ..activations import X
from .derivation import U as _PAIR_U
from .derivation import V as _PAIR_V
from .derivation import BivariateIntegral, Code, Expect, Rule, prose
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

__all__: list[str] = []

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
    r""":math:`f` with :math:`E[\delta_b^2] - E[\delta_b\delta_c] = f\,E[\delta^2]` for the gradient at ``position``
    (mean-field, walking down from the loss, where :math:`f = 1`): a dense layer or the identity keeps it, a
    BatchNorm makes it :math:`B/(B-1)` (its gradient sums to 0 over the batch), a relu keeps :math:`f = 1` (its mask
    multiplies uncorrelated examples, and :math:`E[\mathbb 1_{y > 0}\, y^2] = E[y^2]/2` decouples it from the
    Jacobian's diagonal). ``None`` otherwise: a relu above a BatchNorm whose gradient is centred masks it with the
    signs of the very output that BatchNorm's Jacobian is built from, so the two do not factor even in the
    mean-field limit (Yang et al.'s transforms handle it; varprop does not), and other activations correlate their
    slope with the Jacobian's diagonal. Returns (f, what it came through, the steps used)."""
    factor, through = sp.Integer(1), "loss"
    for layer in walk.network.layers[position + 1:][::-1]:
        if isinstance(layer, Dense) or (isinstance(layer, Nonlinearity) and _is_identity(layer.activation)):
            continue
        if isinstance(layer, BatchNorm):
            factor, through = sp.Integer(layer.batch) / (layer.batch - 1), "batchnorm"
            continue
        if (isinstance(layer, Nonlinearity) and layer.activation.name == "relu" and not layer.activation.params
                and factor == 1):
            continue
        return None
    return factor, through, ()


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
            "BatchNorm's Jacobian (a relu above a BatchNorm: its mask and that BatchNorm's Jacobian depend on the same "
            "output; another activation: its slope correlates with the Jacobian's diagonal), not even in the mean-field "
            "limit; Yang et al. (2019) handle it with integral transforms, which varprop does not derive (derived: "
            "from the loss through dense layers, identities and relus, and from a BatchNorm through dense layers and "
            "identities)")
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
    if _gaussian_input(walk, below):
        moment = _centred_moment(walk, -1)
        exactness, why = "exact", ("the batch of a unit is iid centred Gaussian (the Gaussian input); Cochran's "
                                   "theorem: the centred sum of squares has B - 1 degrees of freedom")
    else:
        moment = _centred_moment(walk, p - 1)
        if moment is None:
            raise DerivationError(
                f"the gradient below BatchNorm {name} needs the law of the batch variance, derived on the Gaussian input, "
                "after a first dense layer (eps = 0) and, in the mean-field limit, behind dense layers, BatchNorms and "
                "identity activations; after another nonlinearity it needs Yang et al.'s (2019) integral transforms, "
                "which varprop does not derive")
        exactness, why = "asymptotic", ("wide layers (mean-field): a unit's batch is Gaussian with the mean Gram "
                                        "matrix a I + b 1 1^T of the exchangeable batch; centring removes b")
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


def _cross(layer: BatchNorm, walk: _Walk, cross: Quantity, position: int) -> Quantity:
    raise DerivationError("a network with a BatchNorm carries a batch, not an input pair: its cross moments are not "
                          "derived")


forward_rule.register(BatchNorm)(_forward)
backward_rule.register(BatchNorm)(_backward)
cross_rule.register(BatchNorm)(_cross)
