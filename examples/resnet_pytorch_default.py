"""A small ResNet-style MLP exactly as PyTorch builds it by default: a Linear stem, then blocks x + Linear(relu(Linear(x))).

Audit it with ``varprop audit examples/resnet_pytorch_default.py:make_resnet``. Every nn.Linear has
PyTorch's default weight variance 1/(3 n) and bias U(+-1/sqrt(n)); a block adds its branch to its
input, so the second moment grows by E[f^2] per block instead of shrinking by 1/6 per layer as in
the plain MLP (``examples/mlp_pytorch_default.py``). ``make_scaled_resnet`` scales each branch by
1/sqrt(blocks) (``x + alpha * f(x)``).
"""

import math

from torch import nn

WIDTH = 32
BLOCKS = 3


class Block(nn.Module):
    """x + alpha * Linear(relu(Linear(x))), PyTorch's own init."""

    def __init__(self, width: int = WIDTH, alpha: float = 1.0):
        super().__init__()
        self.first = nn.Linear(width, width)
        self.second = nn.Linear(width, width)
        self.alpha = alpha

    def forward(self, x):
        branch = self.second(nn.functional.relu(self.first(x)))
        return x + branch if self.alpha == 1.0 else x + self.alpha * branch


class ResNet(nn.Module):
    """A Linear stem, ``blocks`` residual blocks, a Linear head."""

    def __init__(self, width: int = WIDTH, blocks: int = BLOCKS, alpha: float = 1.0, inputs: int = WIDTH):
        super().__init__()
        self.stem = nn.Linear(inputs, width)
        self.blocks = nn.Sequential(*(Block(width, alpha) for _ in range(blocks)))
        self.head = nn.Linear(width, width)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def make_resnet() -> ResNet:
    return ResNet()


def make_scaled_resnet() -> ResNet:
    """Each branch scaled by alpha = 1/sqrt(blocks)."""
    return ResNet(alpha=1 / math.sqrt(BLOCKS))
