r"""Audit a PyTorch model's initialisation: translate it into a varprop network, derive, measure, judge.

``varprop.torch`` is optional: it needs PyTorch (``pip install -e '.[torch]'``; CI installs
``torch==2.13.0``). :func:`audit` instantiates the user's model many times with its own
initialisers, reads each layer's weight and bias law from how torch initialised it
(:mod:`varprop.torch.laws`), translates the model traced by ``torch.fx`` into a
:class:`~varprop.network.Network` (:mod:`varprop.torch.translate`, one registry entry per torch
module class or function), derives every place's forward and gradient second moment with
:func:`varprop.derive.derive`, measures them on the real torch model (forward and autograd
backward) and judges each with the checker (:func:`varprop.montecarlo.check.judge_values`).
"""

from __future__ import annotations

from ..errors import VarpropError

__all__ = [
    "audit",
    "AuditResult",
    "PlaceAudit",
    "IdentifiedLaw",
    "identify_laws",
    "translate",
    "Translation",
    "register_module",
    "register_function",
    "register_method",
    "MODULE_TRANSLATIONS",
    "FUNCTION_TRANSLATIONS",
    "METHOD_TRANSLATIONS",
    "TorchUnavailableError",
    "TranslationError",
    "audit_figure",
    "instance_seeds",
    "random_seed",
    "load_factory",
    "FactoryError",
]

TORCH_VERSION = "2.13.0"


class TorchUnavailableError(VarpropError):
    """PyTorch is not installed (varprop.torch needs the optional extra)."""


try:
    import torch as _torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only where torch is missing
    raise TorchUnavailableError(
        f"varprop.torch needs PyTorch, which is not installed ({exc}); install the optional extra with "
        f"pip install -e '.[torch]' (CI pins torch=={TORCH_VERSION}; a CPU-only wheel: "
        f"pip install torch=={TORCH_VERSION} --index-url https://download.pytorch.org/whl/cpu)"
    ) from None

from .translate import (  # noqa: E402
    FUNCTION_TRANSLATIONS,
    METHOD_TRANSLATIONS,
    MODULE_TRANSLATIONS,
    Translation,
    TranslationError,
    register_function,
    register_method,
    register_module,
    translate,
)
from .laws import IdentifiedLaw, identify_laws  # noqa: E402
from .loader import FactoryError, load_factory  # noqa: E402
from .audit import AuditResult, PlaceAudit, audit, audit_figure, instance_seeds, random_seed  # noqa: E402
