r"""The sampler's step for a convolution (:class:`~varprop.network.Conv`), vectorised over networks.

Signals are flattened channels first, then positions (C order), so the step reads and writes the
sampler's ``(networks, k, width)`` arrays. Forward: the zero-padded input is cut into its receptive
fields with :func:`numpy.lib.stride_tricks.sliding_window_view` (im2col; a view, then one strided
copy), and every network's filters are applied to its own fields by one :func:`numpy.einsum`:

.. math:: y_{c, p} = \sum_{c' \in G(c)} \sum_t w_{c, c', t}\, \tilde x_{c', s p + t} + b_c,

:math:`\tilde x` the padded input. Backward: the transposed convolution, through the same window
geometry: :math:`\partial\mathcal L/\partial \tilde x_{c', s p + t} \mathrel{+}= \sum_c w_{c,c',t}\,
\partial\mathcal L/\partial y_{c,p}` one kernel tap at a time (a strided slice per tap; no loop over
networks or positions), then the padding is cropped off.

Each network draws its weights (shape ``(out_channels, in_channels / groups, *kernel_size)``, as
PyTorch stores them), then its bias (one per output channel). The conditional-Gaussian engine does
not sample convolutions: a convolution's output units share weights, so the part of the weights a
network's pass sees is not an O(width) Gaussian draw; it refuses the network with that reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..network import Conv
from .engines import LayerStep, _as_draw, conditional_step, layer_cost, layer_step
from .errors import MonteCarloError

__all__ = ["ConvStep"]


@dataclass(frozen=True)
class ConvStep:
    r"""A convolution in the full engine: every weight drawn, applied by im2col and :func:`numpy.einsum`."""

    layer: Conv

    def draw(
        self, count: int, rng: np.random.Generator, reuse: tuple[np.ndarray, ...] | None = None
    ) -> tuple[np.ndarray, ...]:
        layer = self.layer
        shape = (count, layer.out_channels, layer.in_channels // layer.groups, *layer.kernel_size)
        buffers = reuse if reuse is not None and reuse[0].shape == shape else (None, None)
        weights = _as_draw(layer.weights.sample(shape, rng=rng, out=buffers[0]))
        if layer.bias is None:
            return (weights,)
        bias_buffer = buffers[1] if len(buffers) > 1 else None
        return weights, _as_draw(layer.bias.sample((count, layer.out_channels), rng=rng, out=bias_buffer))

    def draw_backward(
        self, count: int, rng: np.random.Generator, reuse: tuple[np.ndarray, ...] | None = None
    ) -> tuple[np.ndarray, ...]:
        return ()

    def batched(self, rows: int) -> ConvStep:
        return self  # every example goes through the same filters, forward and backward

    def _grouped_weights(self, weights: np.ndarray) -> np.ndarray:
        """``(networks, groups, out/groups, in/groups, K)``."""
        layer = self.layer
        g = layer.groups
        return weights.reshape(weights.shape[0], g, layer.out_channels // g, layer.in_channels // g, layer.taps)

    def forward(self, params: tuple[np.ndarray, ...], h: np.ndarray) -> tuple[np.ndarray, None]:
        layer = self.layer
        networks, k = h.shape[:2]
        dims, g = layer.dims, layer.groups
        x = h.reshape(networks, k, layer.in_channels, *layer.input_size)
        pad = [(0, 0)] * 3 + [(p, p) for p in layer.padding]
        if any(layer.padding):
            x = np.pad(x, pad)
        windows = sliding_window_view(x, layer.kernel_size, axis=tuple(range(3, 3 + dims)))
        # windows: (networks, k, C_in, *positions, *kernel); keep every stride-th position.
        strided = windows[(slice(None),) * 3 + tuple(slice(None, None, s) for s in layer.stride)]
        positions = math.prod(layer.output_size)
        fields = strided.reshape(networks, k, g, layer.in_channels // g, positions, layer.taps)
        out = np.einsum("ngoik,nqgipk->nqgop", self._grouped_weights(params[0]), fields, optimize=True)
        out = out.reshape(networks, k, layer.out_channels, positions)
        if len(params) > 1:
            out = out + params[1][:, None, :, None]
        return np.ascontiguousarray(out.reshape(networks, k, layer.out_width)), None

    def backward(self, params: tuple[np.ndarray, ...], noise: tuple[np.ndarray, ...], cache: None,
                 grad: np.ndarray) -> np.ndarray:
        layer = self.layer
        networks, rows = grad.shape[:2]  # rows: 1, or the batch of a network with a BatchNorm
        g = layer.groups
        delta = grad.reshape(networks, rows, g, layer.out_channels // g, math.prod(layer.output_size))
        # d/d(field): (networks, rows, groups, in/groups, positions, K)
        fields = np.einsum("ngoik,nqgop->nqgipk", self._grouped_weights(params[0]), delta, optimize=True)
        fields = fields.reshape(networks, rows, layer.in_channels, *layer.output_size, *layer.kernel_size)
        padded_size = tuple(n + 2 * p for n, p in zip(layer.input_size, layer.padding))
        padded = np.zeros((networks, rows, layer.in_channels, *padded_size))
        for tap in np.ndindex(*layer.kernel_size):
            # Tap t of output position p reads padded position s p + t: a strided slice per tap.
            where = tuple(slice(t, t + s * (n - 1) + 1, s) for t, s, n in zip(tap, layer.stride, layer.output_size))
            padded[(slice(None), slice(None), slice(None), *where)] += fields[(Ellipsis, *tap)]
        crop = tuple(slice(p, p + n) for p, n in zip(layer.padding, layer.input_size))
        result = padded[(slice(None), slice(None), slice(None), *crop)]
        return np.ascontiguousarray(result).reshape(networks, rows, layer.in_width)


@layer_step.register
def _(layer: Conv, inputs: int = 1) -> LayerStep:
    return ConvStep(layer)


@layer_cost.register
def _(layer: Conv) -> tuple[int, int]:
    weights = layer.out_channels * (layer.in_channels // layer.groups) * layer.taps
    drawn = weights + (layer.out_channels if layer.bias is not None else 0)
    padded = layer.in_channels * math.prod(n + 2 * p for n, p in zip(layer.input_size, layer.padding))
    fields = layer.in_channels * math.prod(layer.output_size) * layer.taps  # the im2col copy, forward and backward
    return drawn, 2 * fields + 2 * padded


@conditional_step.register
def _(layer: Conv, inputs: int = 1) -> LayerStep:
    raise MonteCarloError(
        "a convolution's output units share their weights, so what one network's pass sees of them is not an "
        "O(width) Gaussian draw given the input; the conditional engine samples dense layers only (use engine "
        "'full' or 'auto')"
    )
