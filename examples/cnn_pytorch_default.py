"""A small CNN exactly as PyTorch builds it by default: Conv2d, relu, Conv2d, relu, flatten, Linear.

Audit it with ``varprop audit examples/cnn_pytorch_default.py:make_cnn --input-shape 3 8 8``.
``nn.Conv2d`` draws its weights from ``kaiming_uniform_(a=sqrt(5))``, i.e. U(+-1/sqrt(fan_in)) with
PyTorch's fan-in ``in_channels * kernel_height * kernel_width`` (variance 1/(3 fan_in)), and its
biases from U(+-1/sqrt(fan_in)). The padded convolutions give border positions fewer taps, so
their second moments differ from the interior's; varprop derives the exact average over all of them.

``make_bn_cnn`` is the same network with ``nn.BatchNorm2d`` after each convolution (audit it with
``--batch 8``): each channel is normalised over the batch and its positions. With PyTorch's
``eps = 1e-5`` behind a convolution a channel's variance has no derived law (its values are correlated
across positions), so the audit measures those places and shows them as NOT DERIVED with the reason.
"""

from torch import nn

CHANNELS = (3, 8, 8)
SIZE = 8
CLASSES = 10


def make_cnn(channels: tuple[int, ...] = CHANNELS, size: int = SIZE, classes: int = CLASSES) -> nn.Sequential:
    """Conv2d(3x3, padding 1), relu, ... then nn.Flatten and nn.Linear, PyTorch's own init."""
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels, channels[1:]):
        layers += [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.ReLU()]
    layers += [nn.Flatten(), nn.Linear(channels[-1] * size * size, classes)]
    return nn.Sequential(*layers)


def make_bn_cnn(channels: tuple[int, ...] = CHANNELS, size: int = SIZE, classes: int = CLASSES) -> nn.Sequential:
    """Conv2d(3x3, padding 1), BatchNorm2d, relu, ... then nn.Flatten and nn.Linear, PyTorch's own init."""
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels, channels[1:]):
        layers += [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
    layers += [nn.Flatten(), nn.Linear(channels[-1] * size * size, classes)]
    return nn.Sequential(*layers)


class StridedCNN(nn.Module):
    """A user module traced by torch.fx: a strided, unpadded Conv2d, relu, a Conv2d, relu, torch.flatten, Linear."""

    def __init__(self, size: int = SIZE):
        super().__init__()
        self.first = nn.Conv2d(3, 8, kernel_size=3, stride=2)
        self.second = nn.Conv2d(8, 8, kernel_size=2)
        out = (size - 3) // 2 + 1 - 1
        self.head = nn.Linear(8 * out * out, CLASSES)

    def forward(self, x):
        h = self.second(self.first(x).relu()).relu()
        return self.head(h.view(h.size(0), -1))


def make_strided_cnn() -> StridedCNN:
    return StridedCNN()
