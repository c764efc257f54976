r"""Which law did torch draw a parameter from? Identified over many instances of the user's model.

The audit never re-initialises a model: it reads the law of every parameter from the values torch
drew. The values of one parameter (say ``layers.0.weight``) are pooled over :math:`K` independently
seeded instances of the model, :math:`N` entries in all, and compared with the laws of the named
initialisers its module class may carry (:func:`varprop.torch.translate.ModuleTranslation`, e.g.
``nn.Linear``'s default ``kaiming_uniform_(a=sqrt(5))``, ``kaiming_normal_``, ``xavier_uniform_``,
zeros for a bias). A candidate law with moments :math:`\mu_k = E[w^k]` (sympy) is accepted when the
pooled sample agrees with it in the second and fourth moments and in its support:

.. math:: |\bar{w^k} - \mu_k| \le z\,\operatorname{SE}(\bar{w^k}), \quad k = 2, 4, \qquad
          \operatorname{SE}(\bar{w^k}) = \operatorname{sd}(w^k)/\sqrt N,

with :math:`z` = :data:`Z_ACCEPT` (a per-test false rejection rate below :math:`10^{-6}`), and, for a
bounded law, :math:`\max |w| \le b`. The fourth moment tells a uniform law (kurtosis 9/5) from a
normal one (kurtosis 3) of the same variance. The first candidate accepted is used; its law is
exact (a sympy expression in the layer's fans), so the prediction does not depend on the sample.

When no named initialiser fits (a user's own ``uniform_(-b, b)`` or ``normal_(0, s)``), the law is
*measured*: the family whose kurtosis is nearer (uniform or normal) with the pooled mean square,
rounded to four significant digits. Such a prediction rests on a measured variance (its SE is
reported); the report says so. What is assumed: entries are iid within a parameter and across
instances (true of every ``torch.nn.init`` call except ``orthogonal_`` and ``sparse_``, whose
entries are exchangeable but dependent; the iid law with their variance gives the same second
moments in expectation for a dense layer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import sympy as sp
import torch
from torch import nn

from ..weights import Normal, Uniform, WeightLaw
from .translate import TranslationError

__all__ = ["IdentifiedLaw", "identify_laws", "Z_ACCEPT"]

#: How many standard errors a pooled moment may be from a candidate's before the candidate is rejected.
Z_ACCEPT = 5.0


@dataclass(frozen=True)
class IdentifiedLaw:
    """The law of one parameter's entries, how it was identified, and the evidence.

    ``law`` is ``None`` for a parameter that is identically zero (a zero bias: no bias).
    ``source`` is ``"named"`` (a named initialiser's exact law), ``"measured"`` (no named
    initialiser fits; the pooled moments define the law) or ``"assumed"`` (given by the caller).
    """

    path: str
    parameter: str
    law: WeightLaw | None
    name: str
    source: str
    entries: int
    second_moment: float
    second_moment_se: float
    kurtosis: float
    max_abs: float

    @property
    def key(self) -> str:
        return f"{self.path}.{self.parameter}" if self.path else self.parameter

    def describe(self) -> str:
        law = "zero" if self.law is None else str(self.law)
        evidence = (f"E[w^2] = {self.second_moment:.6g} +- {self.second_moment_se:.2g}, kurtosis {self.kurtosis:.3g}, "
                    f"max |w| = {self.max_abs:.4g} over {self.entries} entries")
        return f"{self.key}: {law} [{self.source}: {self.name}] ({evidence})"

    def to_dict(self) -> dict[str, object]:
        return {"parameter": self.key, "law": None if self.law is None else str(self.law), "name": self.name,
                "source": self.source, "entries": self.entries, "second_moment": self.second_moment,
                "second_moment_se": self.second_moment_se, "kurtosis": self.kurtosis, "max_abs": self.max_abs}


def _pooled(instances: Sequence[nn.Module], path: str, parameter: str) -> np.ndarray:
    values = []
    for model in instances:
        tensor = getattr(model.get_submodule(path), parameter)
        values.append(tensor.detach().to(torch.float64).reshape(-1).numpy())
    return np.concatenate(values)


def _agrees(values: np.ndarray, law: WeightLaw | None, stats: Mapping[str, float]) -> bool:
    if law is None:
        return stats["max_abs"] == 0.0
    if stats["max_abs"] == 0.0:
        return False
    for k in (2, 4):
        target = float(law.moment(k))
        if abs(stats[f"m{k}"] - target) > Z_ACCEPT * stats[f"se{k}"] + 1e-12 * target:
            return False
    if abs(stats["m1"] - float(law.mean)) > Z_ACCEPT * stats["se1"]:
        return False
    bound = getattr(law, "bound", None)
    if bound is not None and stats["max_abs"] > float(bound) * (1 + 1e-6):  # float32 rounding of the bound
        return False
    return True


def _statistics(values: np.ndarray) -> dict[str, float]:
    n = values.size
    squares = values * values
    fourth = squares * squares
    m2 = float(squares.mean())
    return {
        "m1": float(values.mean()),
        "se1": float(values.std() / math.sqrt(n)),
        "m2": m2,
        "se2": float(squares.std() / math.sqrt(n)),
        "m4": float(fourth.mean()),
        "se4": float(fourth.std() / math.sqrt(n)),
        "kurtosis": float(fourth.mean() / m2**2) if m2 > 0 else math.nan,
        "max_abs": float(np.abs(values).max()) if n else 0.0,
    }


def _measured(path: str, parameter: str, stats: Mapping[str, float], instances: int) -> tuple[WeightLaw | None, str]:
    if stats["max_abs"] == 0.0:
        return None, "identically zero"
    centred = abs(stats["m1"]) <= Z_ACCEPT * stats["se1"]
    if not centred:
        raise TranslationError(
            f"{path}.{parameter} has a non-zero mean ({stats['m1']:.4g} +- {stats['se1']:.2g} over {instances} "
            "instances) and no named initialiser fits it; the audit handles zero-mean laws")
    variance = sp.Rational(f"{stats['m2']:.4g}")
    if abs(stats["kurtosis"] - 1.8) < abs(stats["kurtosis"] - 3.0):
        return Uniform(sp.sqrt(3 * variance)), f"measured: uniform with E[w^2] = {variance} (no named initialiser fits)"
    return Normal(variance), f"measured: normal with E[w^2] = {variance} (no named initialiser fits)"


def identify_laws(instances: Sequence[nn.Module],
                  candidates: Mapping[str, Mapping[str, Sequence[tuple[str, WeightLaw | None]]]],
                  assume: Mapping[str, WeightLaw | None] | None = None) -> dict[tuple[str, str], IdentifiedLaw]:
    """The law of every parameter in ``candidates`` (``{path: {parameter: [(name, law), ...]}}``).

    ``instances`` are independently initialised models (the pilot of :func:`varprop.torch.audit`);
    ``assume`` maps ``"path.parameter"`` to a law the caller asserts (``None``: zero), used instead
    of identification (its evidence is still measured and reported).
    """
    assume = dict(assume or {})
    known = {f"{path}.{name}" for path, params in candidates.items() for name in params}
    unknown = sorted(set(assume) - known)
    if unknown:
        raise TranslationError(f"assumed laws for unknown parameters {unknown}; the model's parameters: {sorted(known)}")
    out: dict[tuple[str, str], IdentifiedLaw] = {}
    for path, params in candidates.items():
        for parameter, options in params.items():
            values = _pooled(instances, path, parameter)
            stats = _statistics(values)
            key = f"{path}.{parameter}"
            if key in assume:
                law, name, source = assume[key], "given by the caller", "assumed"
            else:
                match = next(((name, law) for name, law in options if _agrees(values, law, stats)), None)
                if match is not None:
                    (name, law), source = match, "named"
                else:
                    (law, name), source = _measured(path, parameter, stats, len(instances)), "measured"
            out[path, parameter] = IdentifiedLaw(path, parameter, law, name, source, int(values.size), stats["m2"],
                                                 stats["se2"], stats["kurtosis"], stats["max_abs"])
    return out
