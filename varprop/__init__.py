"""varprop: derive (sympy) and check (Monte Carlo) how moments propagate through random networks.

The public surface is small: the network description (:mod:`varprop.network`, with its activations
and weight laws), the symbolic engine :mod:`varprop.derive`, and the error family.

``import varprop`` loads the description only (sympy and numpy); :mod:`varprop.derive` is imported on
first access to ``varprop.derive``, and scipy and matplotlib where they are used, so that starting
Python with varprop costs little more than starting it with sympy and numpy
(``benchmarks/bench_import.py``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

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
    AbsoluteTruncatedNormal,
    InitScheme,
    Normal,
    Orthogonal,
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

#: Submodules in ``__all__`` imported on first attribute access (PEP 562).
_LAZY_SUBMODULES = ("derive",)


def __getattr__(name: str) -> ModuleType:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))

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
    "AbsoluteTruncatedNormal",
    "Orthogonal",
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
