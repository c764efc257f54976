r"""Sampler steps of the normalisers :class:`~varprop.network.LayerNorm` and :class:`~varprop.network.RMSNorm`.

Each example (every one of the ``k`` inputs a network carries) is normalised over its units, as
``torch.nn.LayerNorm`` and ``torch.nn.RMSNorm`` do in float64, with the affine parameters at their
initial values (gain 1, bias 0):

.. math:: y = \frac{x - \bar x}{\sqrt{\sigma^2 + \epsilon}} \;\text{(LayerNorm)}, \qquad
          y = \frac{x}{\sqrt{\overline{x^2} + \epsilon}} \;\text{(RMSNorm)},

and the gradient goes back through the Jacobian, :math:`\partial\mathcal L/\partial x = (P\delta -
y\,(y\cdot\delta)/N)/\sigma` with :math:`P = I - \mathbf 1\mathbf 1^\top/N` (LayerNorm) or
:math:`I` (RMSNorm). The layers draw nothing.

With :math:`\epsilon = 0` a network whose input to the layer is identically zero (RMSNorm) or constant
over its units (LayerNorm) gives 0/0: its values there are NaN, and the sampler counts and excludes
such networks (``Samples.position_nan``; a check then says how many), never averaging them.

Both engines read these layers with the same step. The conditional-Gaussian engine stays exact: a
normaliser is a deterministic function of its layer's input (like a nonlinearity), and the
conditional dense step only needs the part of :math:`W` orthogonal to its inputs to be independent
of everything else, whatever the layers between the dense layers compute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..network import LayerNorm, RMSNorm
from .engines import DrawsNothing, LayerStep, conditional_step, layer_step
from .errors import MonteCarloError
from .statistics import row_sums

__all__ = ["NormaliserStep"]


def _unit_sums(a: np.ndarray) -> np.ndarray:
    """Sums over the last (unit) axis of ``a``, shape ``(networks, k, width)``, chunk-independent, kept as an axis."""
    networks, k, width = a.shape
    return row_sums(a.reshape(networks * k, width)).reshape(networks, k, 1)


@dataclass(frozen=True)
class NormaliserStep(DrawsNothing):
    """The step of a LayerNorm (``centred``) or an RMSNorm: no draws; forward and backward over the units."""

    layer: LayerNorm | RMSNorm
    rows: int = 1  # the examples whose gradient goes back (the whole batch in a network with a BatchNorm)
    eps: float = field(init=False)
    centred: bool = field(init=False)

    def __post_init__(self) -> None:
        try:
            eps = float(self.layer.eps)
        except TypeError:
            raise MonteCarloError(f"cannot sample {self.layer!r}: its eps is symbolic; give a number") from None
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "centred", isinstance(self.layer, LayerNorm))

    def forward(self, params: tuple[np.ndarray, ...], h: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        width = h.shape[-1]
        centred = h - _unit_sums(h) / width if self.centred else h
        sigma = np.sqrt(_unit_sums(centred * centred) / width + self.eps)
        y = centred / sigma  # 0/0 = NaN when sigma = 0 (eps = 0): flagged and excluded by the sampler
        return y, (y[:, :self.rows], sigma[:, :self.rows])

    def batched(self, rows: int) -> NormaliserStep:
        return NormaliserStep(self.layer, rows)

    def backward(self, params: tuple[np.ndarray, ...], noise: tuple[np.ndarray, ...],
                 cache: tuple[np.ndarray, np.ndarray], grad: np.ndarray) -> np.ndarray:
        y, sigma = cache
        width = grad.shape[-1]
        projected = grad - _unit_sums(grad) / width if self.centred else grad
        return (projected - y * (_unit_sums(y * grad) / width)) / sigma


def _step(layer: LayerNorm | RMSNorm, inputs: int = 1) -> LayerStep:
    return NormaliserStep(layer)


for _cls in (LayerNorm, RMSNorm):
    layer_step.register(_cls)(_step)
    conditional_step.register(_cls)(_step)
