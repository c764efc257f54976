r"""The sampler step of inverted dropout, :math:`y = m \odot x / p`, in both engines.

Forward draw: :math:`u \sim U(0, 1)` of shape ``(networks, inputs, width)``, turned into the scaled
mask :math:`m/p = [u < p]/p`; each input of a pair gets its own mask (as every element of a PyTorch
batch does, and as two separate forward passes do). Backward: :math:`\partial\mathcal L/\partial x
= (m/p) \odot \partial\mathcal L/\partial y` with the first input's mask, the one its forward pass
used. The mask is independent of every weight, so the conditional-Gaussian engine stays exact with
dropout layers between its dense layers: a dense layer's weights still enter only through
:math:`W x` and :math:`W^\top \delta`, :math:`\delta` a function of :math:`W x` and of draws
independent of :math:`W` (``docs/engines.rst``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..network import Dropout
from .engines import conditional_step, layer_step
from .errors import MonteCarloError

__all__: list[str] = []


@dataclass(frozen=True)
class DropoutStep:
    """Inverted dropout with keep probability ``layer.keep``, on an input of ``width`` units."""

    layer: Dropout
    inputs: int = 1
    width: int | None = None

    def __post_init__(self) -> None:
        try:
            keep = float(self.layer.keep)
        except TypeError:
            raise MonteCarloError(f"cannot sample dropout with a symbolic keep probability ({self.layer.keep}); "
                                  "give a number") from None
        object.__setattr__(self, "_keep", keep)

    def sized(self, width: int) -> DropoutStep:
        return DropoutStep(self.layer, self.inputs, int(width))

    def draw(self, count: int, rng: np.random.Generator, reuse: tuple[np.ndarray, ...] | None = None
             ) -> tuple[np.ndarray, ...]:
        if self.width is None:
            raise MonteCarloError("a dropout step must be sized (told its width) before it draws")
        shape = (count, self.inputs, self.width)
        buffer = reuse[0] if reuse is not None and reuse[0].shape == shape else np.empty(shape)
        rng.random(out=buffer)
        keep = self._keep
        # [u < p] / p in place: 1/p where kept, 0 where dropped.
        np.copyto(buffer, np.where(buffer < keep, 1.0 / keep, 0.0))
        return (buffer,)

    def draw_backward(self, count: int, rng: np.random.Generator, reuse: tuple[np.ndarray, ...] | None = None
                      ) -> tuple[np.ndarray, ...]:
        return ()

    def forward(self, params: tuple[np.ndarray, ...], h: np.ndarray) -> tuple[np.ndarray, None]:
        return h * params[0][:, : h.shape[1]], None

    def backward(self, params: tuple[np.ndarray, ...], noise: tuple[np.ndarray, ...], cache: None,
                 grad: np.ndarray) -> np.ndarray:
        return grad * params[0][:, :1]


@layer_step.register
def _(layer: Dropout, inputs: int = 1) -> DropoutStep:
    return DropoutStep(layer, inputs)


@conditional_step.register
def _(layer: Dropout, inputs: int = 1) -> DropoutStep:
    return DropoutStep(layer, inputs)
