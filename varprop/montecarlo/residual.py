r"""The sampler step of a residual block :math:`x \mapsto x + \alpha f(x)`: the branch's own steps run inside.

Each layer of the branch gets the step of the engine that samples the network (any layer kind the
engine reads, a nested residual block included). Forward: the branch's steps in order from the block
input, their caches kept, then :math:`x + \alpha f`. Backward: :math:`\alpha\,\delta` back through
the branch's steps in reverse order, plus the skip connection's :math:`\delta`. Draws: the branch's
forward draws in branch order (one flat tuple), its backward draws in reverse branch order.

The conditional-Gaussian engine stays exact for blocks whose branch dense layers have Gaussian
weights: each such layer's weights still enter the network only through :math:`W z` (forward) and
:math:`W^\top \delta` (backward), with :math:`\delta` a function of :math:`W z` and of draws
independent of :math:`W`; the skip connection adds terms that do not involve :math:`W`
(``docs/engines.rst``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..network import Dense, Residual
from .engines import LayerStep, conditional_step, layer_step, sized
from .errors import MonteCarloError

__all__: list[str] = []


def _counts(steps: tuple[LayerStep, ...], backward: bool) -> tuple[int, ...]:
    """How many arrays each step draws (probed once on one network; it depends only on the layer)."""
    probe = np.random.default_rng(0)
    return tuple(len(step.draw_backward(1, probe) if backward else step.draw(1, probe)) for step in steps)


@dataclass(frozen=True)
class ResidualStep:
    """A residual block whose branch runs the steps ``steps`` (one per branch layer)."""

    layer: Residual
    steps: tuple[LayerStep, ...]
    alpha: float = field(init=False)
    forward_counts: tuple[int, ...] = field(init=False)
    backward_counts: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        try:
            alpha = float(self.layer.alpha)
        except TypeError:
            raise MonteCarloError(f"cannot sample a residual block with a symbolic alpha ({self.layer.alpha}); "
                                  "give a number") from None
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "forward_counts", _counts(self.steps, False))
        object.__setattr__(self, "backward_counts", _counts(self.steps, True))

    @classmethod
    def build(cls, layer: Residual, inputs: int, reader: Callable[..., LayerStep], width: int) -> ResidualStep:
        steps = []
        for inner in layer.branch:
            if isinstance(inner, Dense) and not (isinstance(inner.fan_in, int) and isinstance(inner.fan_out, int)):
                raise MonteCarloError(f"cannot sample a residual branch with symbolic widths ({inner}); give integers")
            steps.append(sized(reader(inner, inputs), width))
            if isinstance(inner, Dense):
                width = inner.fan_out
        return cls(layer, tuple(steps))

    @staticmethod
    def _split(arrays: tuple[np.ndarray, ...], counts: tuple[int, ...]) -> list[tuple[np.ndarray, ...]]:
        out, start = [], 0
        for count in counts:
            out.append(tuple(arrays[start:start + count]))
            start += count
        return out

    def draw(self, count: int, rng: np.random.Generator, reuse: tuple[np.ndarray, ...] | None = None
             ) -> tuple[np.ndarray, ...]:
        parts = self._split(reuse, self.forward_counts) if reuse is not None else [None] * len(self.steps)
        return tuple(array for step, old in zip(self.steps, parts) for array in step.draw(count, rng, old or None))

    def draw_backward(self, count: int, rng: np.random.Generator, reuse: tuple[np.ndarray, ...] | None = None
                      ) -> tuple[np.ndarray, ...]:
        parts = self._split(reuse, self.backward_counts) if reuse is not None else [None] * len(self.steps)
        drawn: list[tuple[np.ndarray, ...]] = [()] * len(self.steps)
        for index in range(len(self.steps) - 1, -1, -1):  # reverse branch order, as the network's own backward draws
            drawn[index] = self.steps[index].draw_backward(count, rng, parts[index] or None)
        return tuple(array for part in drawn for array in part)

    def forward(self, params: tuple[np.ndarray, ...], h: np.ndarray) -> tuple[np.ndarray, list]:
        z, caches = h, []
        for step, p in zip(self.steps, self._split(params, self.forward_counts)):
            z, cache = step.forward(p, z)
            caches.append(cache)
        return h + self.alpha * z, caches

    def backward(self, params: tuple[np.ndarray, ...], noise: tuple[np.ndarray, ...], cache: list,
                 grad: np.ndarray) -> np.ndarray:
        branch = self.alpha * grad
        parts = self._split(params, self.forward_counts)
        noises = self._split(noise, self.backward_counts)
        for index in range(len(self.steps) - 1, -1, -1):
            branch = self.steps[index].backward(parts[index], noises[index], cache[index], branch)
        return grad + branch


@dataclass(frozen=True)
class _Unsized:
    """A residual step waiting for its input width (the engine's ``sized`` hook)."""

    layer: Residual
    inputs: int
    reader: Callable[..., LayerStep]

    def sized(self, width: int) -> ResidualStep:
        return ResidualStep.build(self.layer, self.inputs, self.reader, width)

    def _unsized(self, *args: object, **kwargs: object) -> None:
        raise MonteCarloError("a residual step must be sized (told its input width, engines.sized) before it runs")

    draw = draw_backward = forward = backward = _unsized


@layer_step.register
def _(layer: Residual, inputs: int = 1) -> _Unsized:
    return _Unsized(layer, inputs, layer_step)


@conditional_step.register
def _(layer: Residual, inputs: int = 1) -> _Unsized:
    return _Unsized(layer, inputs, conditional_step)
