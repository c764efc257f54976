"""An MLP exactly as PyTorch builds it by default: nn.Linear's kaiming_uniform_(a=sqrt(5)) and U(+-1/sqrt(n)) biases.

Audit it with ``varprop audit examples/mlp_pytorch_default.py:make_mlp``. In a relu network the
default weight variance 1/(3 n) multiplies the second moment by 1/6 per layer, and the default bias
adds 1/(3 n): the pre-activations settle at the floor (6/5) / (3 n) instead of vanishing
(``varprop explain pytorch-default``).
"""

from torch import nn

WIDTH = 64
DEPTH = 8


def make_mlp(width: int = WIDTH, depth: int = DEPTH, bias: bool = True) -> nn.Sequential:
    """``depth`` nn.Linear layers of ``width`` units with relu between them, PyTorch's own init."""
    layers: list[nn.Module] = []
    for index in range(depth):
        if index:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(width, width, bias=bias))
    return nn.Sequential(*layers)


def make_mlp_no_bias() -> nn.Sequential:
    """The same MLP without biases: the second moment shrinks by 1/6 per layer all the way down."""
    return make_mlp(bias=False)


class TwoLayerNet(nn.Module):
    """A user module traced by torch.fx: Linear, tanh (functional), Linear."""

    def __init__(self, width: int = WIDTH):
        super().__init__()
        self.first = nn.Linear(width, width)
        self.second = nn.Linear(width, 10)

    def forward(self, x):
        return self.second(self.first(x).tanh())


def make_two_layer() -> TwoLayerNet:
    return TwoLayerNet()
