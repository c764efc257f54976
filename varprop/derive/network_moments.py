r"""Per-layer predictions for one concrete network, read from its description layer by layer.

For a :class:`~varprop.network.Network` (integer or symbolic widths) :func:`predict` returns, for
every dense layer :math:`l` (He et al.'s notation: :math:`x_l` its input, :math:`y_l = W_l x_l + b_l`),
the predicted value of each observable with its exactness class:

``exact``
    holds at every finite width under the stated weight law. :math:`E[y_l^2] = n_l E[w_l^2] E[x_l^2]
    + E[b_l^2]` for zero-mean weights; :math:`E[\phi(y)^2] = \tfrac c2 E[y^2]` when the symmetry lemma
    holds and the weights are symmetric; the last layer's gradients, which see only the independent
    loss direction :math:`g`.
``gaussian-exact``
    exact because :math:`y_1` is exactly Gaussian: a fixed input and Gaussian weights and bias.
``asymptotic``
    uses the Gaussian law of a pre-activation (central limit theorem) or He et al.'s independence of
    forward and backward quantities; the error vanishes as the widths grow.

The loss is :math:`L = \langle g, \text{output}\rangle` with :math:`g \sim \mathcal N(0, I)`
independent of the network, as in :mod:`varprop.montecarlo`. Layers are read through a
``functools.singledispatch`` registry keyed on the layer classes, the same classes the Monte Carlo
engine registers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import singledispatch

import sympy as sp

from ..activations import X, Activation
from ..claims import EXACTNESS, OBSERVABLES
from ..errors import DerivationError
from ..network import Dense, FixedInput, Network, Nonlinearity
from .gaussian import Q, evaluate, moments
from .recursions import _lemma, derivative_symmetry_lemma, symmetry_lemma

__all__ = ["EXACTNESS", "OBSERVABLES", "Prediction", "LayerPrediction", "predict", "weakest"]

def weakest(*classes: str) -> str:
    """The weakest of several exactness classes (``exact`` < ... < ``approximation``)."""
    return max(classes, key=EXACTNESS.index)


@dataclass(frozen=True)
class Prediction:
    """A predicted value, its exactness class and the reason for that class."""

    value: sp.Expr
    exactness: str
    reason: str = ""


@dataclass(frozen=True)
class LayerPrediction:
    """The predictions for dense layer ``layer`` (1-based)."""

    layer: int
    values: Mapping[str, Prediction]

    def __getitem__(self, observable: str) -> Prediction:
        return self.values[observable]


@dataclass(frozen=True)
class _Signal:
    """What is known of the current vector: its per-unit mean and second moment, and their classes."""

    mean: Prediction
    second: Prediction
    width: int | sp.Symbol
    gaussian: bool = False  # exactly Gaussian entries (fixed input through one Gaussian layer)
    symmetric: bool = False  # symmetric about zero
    p_nonzero: sp.Expr = sp.Integer(1)  # P(the vector is not identically zero)
    p_exact: bool = True  # whether p_nonzero is exact


# --- forward -----------------------------------------------------------------------------------


@singledispatch
def _forward(layer: object, signal: _Signal, first: bool) -> _Signal:
    raise DerivationError(f"varprop.derive cannot read the layer {layer!r}; known: Dense, Nonlinearity")


@_forward.register
def _(layer: Dense, signal: _Signal, first: bool) -> _Signal:
    law, bias = layer.weights, layer.bias
    if law.mean != 0 or (bias is not None and bias.mean != 0):
        raise DerivationError(
            f"per-layer predictions need zero-mean weights and biases, got {law}"
            + (f" and bias {bias}" if bias is not None else "")
        )
    bias_second = bias.variance if bias is not None else sp.Integer(0)
    second = layer.fan_in * law.variance * signal.second.value + bias_second
    gaussian = first and law.gaussian and (bias is None or bias.gaussian) and signal.gaussian
    symmetric = law.symmetric and (bias is None or bias.symmetric)
    reason = "E[y^2] = n E[w^2] E[x^2] + E[b^2]: zero-mean iid weights independent of x"
    # y = W x + b is identically zero only when x is and there is no bias (continuous weights).
    return _Signal(
        Prediction(sp.Integer(0), "exact", "zero-mean weights and bias"),
        Prediction(sp.expand(second), signal.second.exactness, reason),
        width=layer.fan_out,
        gaussian=gaussian,
        symmetric=symmetric,
        p_nonzero=signal.p_nonzero if bias is None else sp.Integer(1),
        p_exact=signal.p_exact or bias is not None,
    )


def _gaussian_moment(value: sp.Expr, variance: sp.Expr) -> sp.Expr:
    """A Gaussian moment at ``variance``; a numeric variance that is itself a quadrature is evaluated first.

    Otherwise the integrals would nest, one level per layer (tanh, silu, ...), and each level would
    multiply the cost of evaluating the prediction.
    """
    if variance.has(sp.Integral) and not variance.free_symbols:
        variance = sp.Float(evaluate(variance).value, 17)
    return value.subs(Q, variance)


@_forward.register
def _(layer: Nonlinearity, signal: _Signal, first: bool) -> _Signal:
    act = layer.activation
    m = moments(act)
    q = signal.second.value
    lemma = symmetry_lemma(act)
    if lemma.holds and signal.symmetric:
        second = Prediction(lemma.constant / 2 * q, signal.second.exactness,
                            f"symmetry lemma phi(y)^2 + phi(-y)^2 = {lemma.constant} y^2 for symmetric y")
    else:
        second = Prediction(_gaussian_moment(m.second_moment.expr, q), _gaussian_class(signal),
                            "Gaussian second moment of phi at Var[y]")
    odd = _lemma(act.expr, 0)
    if odd.holds and signal.symmetric:
        mean = Prediction(odd.constant / 2, "exact", f"phi(y) + phi(-y) = {odd.constant} and y is symmetric")
    else:
        mean = Prediction(_gaussian_moment(m.mean.expr, q), _gaussian_class(signal),
                          "Gaussian mean of phi at Var[y]")
    # relu-like units: x = phi(y) is all zero iff every y_i <= 0. Unless y is forced to zero, its
    # entries are independent (independent rows of W), symmetric and continuous given the layer's
    # input, so that happens with probability 2^-n exactly.
    if _zero_on_negatives(act):
        p_nonzero = signal.p_nonzero * (1 - sp.Integer(2) ** (-signal.width))
        p_exact = signal.p_exact and signal.symmetric
    else:
        p_nonzero, p_exact = signal.p_nonzero, signal.p_exact
    return _Signal(mean, second, width=signal.width, p_nonzero=p_nonzero, p_exact=p_exact)


def _zero_on_negatives(act: Activation) -> bool:
    """True when phi vanishes on y < 0 (relu): then a whole layer can be zero with probability 2^-n."""
    probe = sp.Symbol("probe", negative=True)
    return sp.simplify(act.expr.subs(X, probe)) == 0


def _gaussian_class(signal: _Signal) -> str:
    if signal.gaussian:
        return weakest(signal.second.exactness, "gaussian-exact")
    return "asymptotic"


# --- backward ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Gradient:
    """Per-unit second moment of the gradient with respect to the current vector."""

    second: Prediction
    independent_of_weights: bool  # independent of every forward quantity below this vector


def predict(network: Network, *, finite_width: bool = False) -> tuple[LayerPrediction, ...]:
    r"""Predicted observables for every dense layer of ``network`` (see the module docstring).

    ``finite_width=False`` gives the textbook (He et al.) values; ``finite_width=True`` keeps the
    exact finite-width factors varprop can derive (the probability :math:`\prod_k (1 - 2^{-n_k})`
    that no relu layer below is identically zero, which gates the gradient) wherever the result is
    then exact; elsewhere (deeper gradients) no exact finite-width form is known and the textbook
    value, labelled asymptotic, is kept.
    """
    textbook = _predict(network, finite_width=False)
    if not finite_width:
        return textbook
    refined = _predict(network, finite_width=True)
    merged = []
    for plain, exact in zip(textbook, refined):
        values = {
            key: exact.values[key] if exact.values[key].exactness != "asymptotic" else plain.values[key]
            for key in plain.values
        }
        merged.append(LayerPrediction(plain.layer, values))
    return tuple(merged)


def _predict(network: Network, *, finite_width: bool) -> tuple[LayerPrediction, ...]:
    if not isinstance(network, Network):
        raise DerivationError(f"predict needs a Network, got {network!r}")
    inputs = network.inputs
    input_second = inputs.second_moment
    fixed = isinstance(inputs, FixedInput)
    input_mean = (
        sp.nsimplify(sum(inputs.values) / len(inputs.values), rational=True) if fixed else sp.Integer(0)
    )
    signal = _Signal(
        Prediction(input_mean, "exact", "the input"),
        Prediction(input_second, "exact", "the input"),
        width=network.dense_layers[0].fan_in,
        gaussian=fixed,
        symmetric=not fixed,
        p_nonzero=sp.Integer(0 if fixed and input_second == 0 else 1),
    )
    # Forward: record each dense layer's input and pre-activation.
    forward: list[tuple[_Signal, _Signal]] = []
    activations: list[Activation | None] = []  # activation applied after each dense layer (None: none)
    dense_seen = 0
    for layer in network.layers:
        if isinstance(layer, Dense):
            output = _forward(layer, signal, dense_seen == 0)
            forward.append((signal, output))
            activations.append(None)
            signal = output
            dense_seen += 1
        else:
            activations[-1] = layer.activation if isinstance(layer, Nonlinearity) else activations[-1]
            signal = _forward(layer, signal, False)
    dense = network.dense_layers
    depth = len(dense)

    # Backward: L = <g, output>, g ~ N(0, I) independent of the network.
    gradient = _Gradient(Prediction(sp.Integer(1), "exact", "dL/d(output) = g"), True)
    dy_predictions: list[Prediction] = [None] * depth  # type: ignore[list-item]
    dx_predictions: list[Prediction] = [None] * depth  # type: ignore[list-item]
    for index in range(depth - 1, -1, -1):
        act = activations[index]
        y_signal = forward[index][1]
        if act is None:
            dy = gradient.second
            independent = gradient.independent_of_weights
        else:
            dy = _through_activation(act, y_signal, gradient, finite_width)
            # A constant phi' (linear units) gates nothing, so no forward quantity enters the gradient.
            independent = gradient.independent_of_weights and X not in act.derivative.free_symbols
        dy_predictions[index] = dy
        law = dense[index].weights
        # Row-flip symmetry: with dL/dx_{l+1} independent of W_l, zero-mean and uncorrelated across
        # units, E[w_ij^2 phi'(y_i)^2] = E[w^2] E[phi'(y)^2] exactly when the derivative lemma holds.
        flip = (
            act is not None
            and gradient.independent_of_weights
            and y_signal.symmetric
            and derivative_symmetry_lemma(act).holds
        )
        exact = (independent or flip) and dy.exactness != "asymptotic"
        dx_predictions[index] = Prediction(
            sp.expand(dense[index].fan_out * law.variance * dy.value),
            weakest(dy.exactness, "exact") if exact else "asymptotic",
            "E[(dL/dx)^2] = nhat E[w^2] E[(dL/dy)^2]"
            + ("" if exact else " (He et al.'s independence of W_l and dL/dy_l)"),
        )
        # dL/dx_l = W_l^T dL/dy_l is independent of everything below layer l only when dL/dy_l is (= g).
        gradient = _Gradient(dx_predictions[index], independent)

    out = []
    for index in range(depth):
        x_signal, y_signal = forward[index]
        x_mean, x_second = x_signal.mean, x_signal.second
        y_mean, y_second = y_signal.mean, y_signal.second
        dy, dx = dy_predictions[index], dx_predictions[index]
        dw_exact = dx_predictions[index].exactness != "asymptotic" and (
            index == depth - 1 and activations[index] is None or _gradient_is_forward_free(activations[index:])
        )
        values = {
            "y_mean": y_mean,
            "y_second_moment": y_second,
            "y_variance": Prediction(y_second.value - y_mean.value**2, weakest(y_second.exactness, y_mean.exactness)),
            "x_mean": x_mean,
            "x_second_moment": x_second,
            "x_variance": Prediction(
                sp.expand(x_second.value - x_mean.value**2), weakest(x_second.exactness, x_mean.exactness)
            ),
            "dx_second_moment": dx,
            "dy_second_moment": dy,
            "dw_second_moment": Prediction(
                sp.expand(dy.value * x_second.value),
                weakest(dy.exactness, x_second.exactness) if dw_exact else "asymptotic",
                "E[(dL/dW)^2] = E[(dL/dy)^2] E[x^2]" + ("" if dw_exact else " (dL/dy independent of x)"),
            ),
        }
        out.append(LayerPrediction(index + 1, values))
    return tuple(out)


def _gradient_is_forward_free(activations: list[Activation | None]) -> bool:
    """True when every activation from this layer up has a constant derivative (a linear network)."""
    return all(act is None or X not in act.derivative.free_symbols for act in activations)


def _through_activation(act: Activation, y_signal: _Signal, gradient: _Gradient, finite_width: bool) -> Prediction:
    r"""E[(dL/dy)^2] = E[phi'(y)^2] E[(dL/dx_next)^2].

    When :math:`\phi'(y)^2 + \phi'(-y)^2 = c'` for :math:`y \ne 0` and y is symmetric,
    :math:`E[\phi'(y)^2] = \tfrac{c'}{2} P(y \ne 0) + \phi'(0)^2 P(y = 0)`: He et al.'s
    :math:`c'/2` is exact only when y has no atom at zero. A relu layer is identically zero with
    probability :math:`2^{-n}`, so ``finite_width=True`` keeps that factor (exact) and
    ``finite_width=False`` gives He's value (asymptotic when the factor is not 1).
    """
    lemma = derivative_symmetry_lemma(act)
    q = y_signal.second.value
    if lemma.holds and y_signal.symmetric:
        p = y_signal.p_nonzero
        at_zero = act.derivative.subs(X, 0) ** 2
        if finite_width or p == 1:
            slope = sp.expand(lemma.constant / 2 * p + at_zero * (1 - p))
            slope_class = "exact" if y_signal.p_exact else "asymptotic"
        else:
            slope, slope_class = lemma.constant / 2, "asymptotic"
    else:
        slope = _gaussian_moment(moments(act).derivative_second_moment.expr, q)
        slope_class = _gaussian_class(y_signal)
    # phi'(y_l) depends on W_1..W_l; dL/dx_{l+1} is independent of it only if nothing above gates it.
    exactness = weakest(slope_class, gradient.second.exactness) if gradient.independent_of_weights else "asymptotic"
    return replace(
        gradient.second,
        value=sp.expand(slope * gradient.second.value),
        exactness=exactness,
        reason="E[(dL/dy)^2] = E[phi'(y)^2] E[(dL/dx_next)^2]",
    )
