r"""Sampler step of :class:`~varprop.network.BatchNorm` in training mode.

A network with a BatchNorm carries a batch of :math:`B` inputs through the same weights (the
activations have shape ``(networks, B, width)``), and the loss sums over the batch,
:math:`\mathcal L = \sum_b \langle g_b, \text{out}_b\rangle` with every :math:`g_b \sim \mathcal N(0, I)`,
so every example's gradient flows back (:mod:`varprop.montecarlo.engines`). Each unit is normalised
over the batch with the biased batch variance, as ``torch.nn.BatchNorm1d`` does in ``train()`` mode in
float64, the affine parameters at their initial values (gain 1, bias 0); a BatchNorm over ``channels``
normalises each channel over the batch and its positions (``torch.nn.BatchNorm2d``), the bars below
then being means over those :math:`BP` values:

.. math:: y_{b} = \frac{x_{b} - \bar x}{\sigma}, \qquad \sigma = \sqrt{\tfrac1B \textstyle\sum_c (x_c - \bar x)^2 + \epsilon},

and the gradient goes back through the Jacobian over the batch, per unit
:math:`\partial\mathcal L/\partial x = (\delta - \bar\delta\,\mathbf 1 - y\,\overline{y\delta})/\sigma`
(bars: means over the batch). The layer draws nothing. With :math:`\epsilon = 0` a unit whose
:math:`B` inputs are all equal gives 0/0: the network's values are NaN there, and the sampler counts and
excludes it (``Samples.position_nan``).

Observables are recorded at example 0 of each network's batch (the examples are exchangeable, so
their expectations are those of any example). The conditional-Gaussian engine refuses such networks:
it draws only what one input, or a pair, sees of each weight matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..network import BatchNorm
from .engines import DrawsNothing, LayerStep, conditional_step, layer_step
from .errors import MonteCarloError
from .statistics import sum_units_first

__all__ = ["BatchNormStep"]


def _batch_means(a: np.ndarray) -> np.ndarray:
    """Means over the batch axis of ``a``, shape ``(networks, B, width)``, one example after the other
    (chunk-independent), kept as an axis."""
    return (sum_units_first(a.transpose(1, 0, 2)) / a.shape[1])[:, None, :]


def _channel_means(a: np.ndarray, channels: int) -> np.ndarray:
    """Means over the batch and the positions of each channel of ``a``, shape ``(networks, B, channels *
    positions)`` flattened channels first, broadcast back to that shape. Each (network, channel) sums its
    ``B * positions`` values along a contiguous axis, row by row, so a network's value does not depend on its chunk."""
    networks, batch, width = a.shape
    grouped = np.ascontiguousarray(a.reshape(networks, batch, channels, width // channels).transpose(0, 2, 1, 3))
    means = grouped.reshape(networks, channels, -1).sum(axis=-1) / (batch * (width // channels))
    return np.repeat(means, width // channels, axis=1)[:, None, :]


@dataclass(frozen=True)
class BatchNormStep(DrawsNothing):
    """The step of a BatchNorm: no draws; forward and backward over the batch, unit by unit."""

    layer: BatchNorm
    eps: float = field(init=False)

    def __post_init__(self) -> None:
        try:
            eps = float(self.layer.eps)
        except TypeError:
            raise MonteCarloError(f"cannot sample {self.layer!r}: its eps is symbolic; give a number") from None
        object.__setattr__(self, "eps", eps)

    def batched(self, rows: int) -> BatchNormStep:
        if rows != self.layer.batch:
            raise MonteCarloError(f"{self.layer!r} normalises a batch of {self.layer.batch}, not {rows}")
        return self

    def forward(self, params: tuple[np.ndarray, ...], h: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        if h.shape[1] != self.layer.batch:
            raise MonteCarloError(f"{self.layer!r} received {h.shape[1]} examples per network, not its batch")
        means = self._means
        centred = h - means(h)
        sigma = np.sqrt(means(centred * centred) + self.eps)
        y = centred / sigma  # 0/0 = NaN when a unit's batch is constant (eps = 0): flagged and excluded
        return y, (y, sigma)

    def backward(self, params: tuple[np.ndarray, ...], noise: tuple[np.ndarray, ...],
                 cache: tuple[np.ndarray, np.ndarray], grad: np.ndarray) -> np.ndarray:
        y, sigma = cache
        means = self._means
        return (grad - means(grad) - y * means(y * grad)) / sigma

    def _means(self, a: np.ndarray) -> np.ndarray:
        """Means over what one unit is normalised over: the batch, and the positions of its channel."""
        if self.layer.channels is None:
            return _batch_means(a)
        return _channel_means(a, self.layer.channels)


@layer_step.register
def _(layer: BatchNorm, inputs: int = 1) -> LayerStep:
    return BatchNormStep(layer)


@conditional_step.register
def _(layer: BatchNorm, inputs: int = 1) -> LayerStep:
    raise MonteCarloError(
        f"{layer!r} normalises over a batch of {layer.batch} inputs through the same weights, and the conditional "
        "engine draws only what one input (or a pair) sees of each weight matrix; use engine 'full'")
