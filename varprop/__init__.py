"""varprop: derive (sympy) and check (Monte Carlo) how moments propagate through random networks.

The public surface is small: the network description (:mod:`varprop.network`, with its activations
and weight laws), the symbolic engine :mod:`varprop.derive`, and the error family.
"""

from . import derive
from .activations import BUILTIN_ACTIVATIONS, Activation, activation, expression
from .errors import (
    ActivationError,
    DerivationError,
    ExpressionError,
    IntegrabilityError,
    ResourceError,
    SpecError,
    VarpropError,
)
from .network import Dense, FixedInput, GaussianInput, Network, Nonlinearity, mlp
from .weights import (
    InitScheme,
    Normal,
    TruncatedNormal,
    Uniform,
    explicit,
    glorot,
    he,
    init_scheme,
    kaiming,
    keras_default,
    lecun,
    torch_linear_default,
    xavier,
)

__version__ = "0.1.0"

__all__ = [
    "derive",
    "Activation",
    "activation",
    "expression",
    "BUILTIN_ACTIVATIONS",
    "Dense",
    "Nonlinearity",
    "GaussianInput",
    "FixedInput",
    "Network",
    "mlp",
    "Normal",
    "Uniform",
    "TruncatedNormal",
    "InitScheme",
    "he",
    "kaiming",
    "glorot",
    "xavier",
    "lecun",
    "torch_linear_default",
    "keras_default",
    "explicit",
    "init_scheme",
    "VarpropError",
    "SpecError",
    "ActivationError",
    "ExpressionError",
    "IntegrabilityError",
    "DerivationError",
    "ResourceError",
]
