r"""Claims: a closed-form prediction for one observable of one network, as data.

A :class:`Claim` says *what* is predicted (network, observable, dense layer), *the value* (a sympy
expression and its float), *how exactly* it should hold, and *why* (assumptions, source):

``exact``
    at every finite width under the stated weight law: a Monte Carlo FAIL refutes it.
``gaussian-exact``
    exact for Gaussian weights (a Gaussian pre-activation).
``asymptotic``
    as the width grows, with an error that shrinks like :math:`O(1/n)`: checked over a sweep of
    widths.
``approximation``
    a modelling assumption (Glorot's linear regime for tanh) not expected to hold exactly: with a
    ``tolerance`` the check says whether the deviation is within it; without one it reports the
    measured deviation instead of a verdict (``MEASURED``).

A claim built from a :class:`~varprop.derive.Derivation` takes its prediction and its exactness from
it (the derivation's result and weakest step), never typed separately; a user's claim (a claim file)
states its own. A :class:`ClaimFamily` rebuilds a claim at any width, which the checker needs for
sweeps. This module holds data only; it imports neither :mod:`varprop.derive` nor
:mod:`varprop.montecarlo` (the catalogue of named claims, built from derivations, is
:mod:`varprop.catalogue`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

import sympy as sp

from typing import TYPE_CHECKING

from ._forked import map_forked
from ._numeric import finite_float
from .errors import VarpropError
from .network import Network
from .observables import LEGACY_NAMES, Observable, ObservableError, from_name, legacy_name, resolve

if TYPE_CHECKING:  # pragma: no cover
    from .derive.derivation import Derivation

__all__ = ["EXACTNESS", "OBSERVABLES", "ClaimError", "Claim", "ClaimFamily", "derive_families"]

#: Exactness classes, strongest first (the same tuple as :data:`varprop.derive.EXACTNESS`).
EXACTNESS: tuple[str, ...] = ("exact", "gaussian-exact", "asymptotic", "approximation")

#: Observable names a claim file may use (per dense layer l; x_l is its input, y_l its pre-activation).
OBSERVABLES: tuple[str, ...] = LEGACY_NAMES


class ClaimError(VarpropError):
    """A claim that cannot be built: unknown observable, layer out of range, non-numeric value."""


@dataclass(frozen=True)
class Claim:
    """A prediction for one observable of one network, with its exactness class and provenance.

    Parameters
    ----------
    name
        A short identifier, e.g. ``he-forward-relu-normal``.
    network
        The network the prediction is about (integer widths, numeric parameters).
    observable
        A :class:`~varprop.observables.Observable`, or a claim-file name from :data:`OBSERVABLES`
        together with ``layer``.
    layer
        The dense layer, 1-based, for a named observable (filled in for an observable that has a name).
    prediction
        The predicted value as a sympy expression (default: the derivation's result).
    exactness
        One of :data:`EXACTNESS` (default: the derivation's).
    value
        The prediction as a float (computed from ``prediction`` when omitted).
    value_error
        An estimate of the numerical error of ``value`` (quadrature), 0 for a closed form.
    assumptions, source, description
        Why the prediction should hold, where it comes from, and what it says in words.
    derivation
        The :class:`~varprop.derive.Derivation` the prediction comes from, if any.
    tolerance
        For an ``approximation``: the relative deviation it promises to stay within (PASS/FAIL on it);
        ``None`` for no verdict (``MEASURED``).
    atol
        For a prediction of 0: the absolute tolerance, in the observable's units.
    """

    name: str
    network: Network
    observable: Observable | str
    layer: int | None = None
    prediction: sp.Expr | None = None
    exactness: str | None = None
    value: float | None = None
    value_error: float = 0.0
    assumptions: tuple[str, ...] = ()
    source: str = ""
    description: str = ""
    derivation: Derivation | None = field(default=None, compare=False, repr=False)
    tolerance: float | None = None
    atol: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.network, Network):
            raise ClaimError(f"claim {self.name!r}: network must be a varprop Network, got {self.network!r}")
        observable = self.observable
        try:
            if isinstance(observable, str):
                if observable not in OBSERVABLES:
                    raise ClaimError(
                        f"claim {self.name!r}: unknown observable {observable!r}; known: {', '.join(OBSERVABLES)}"
                    )
                depth = self.network.depth
                if isinstance(self.layer, bool) or not isinstance(self.layer, int) or not 1 <= self.layer <= depth:
                    raise ClaimError(
                        f"claim {self.name!r}: layer must be an integer from 1 to {depth}, got {self.layer!r}"
                    )
                observable = from_name(observable, self.layer, self.network)
            else:
                observable = resolve(observable, self.network)
        except ObservableError as exc:
            raise ClaimError(f"claim {self.name!r}: {exc}") from None
        object.__setattr__(self, "observable", observable)
        named = legacy_name(observable, self.network)
        if named is not None:
            object.__setattr__(self, "layer", named[1])
        if self.derivation is not None:
            if self.prediction is None:
                object.__setattr__(self, "prediction", self.derivation.result)
            if self.exactness is None:
                object.__setattr__(self, "exactness", self.derivation.exactness)
            if not self.assumptions:
                object.__setattr__(self, "assumptions", self.derivation.assumptions)
        if self.exactness is None:
            object.__setattr__(self, "exactness", "exact")
        if self.exactness not in EXACTNESS:
            raise ClaimError(
                f"claim {self.name!r}: unknown exactness {self.exactness!r}; known: {', '.join(EXACTNESS)}"
            )
        if not isinstance(self.prediction, sp.Basic):
            raise ClaimError(f"claim {self.name!r}: prediction must be a sympy expression, got {self.prediction!r}")
        value = self.value
        if value is None:
            if self.prediction.free_symbols or self.prediction.has(sp.Integral):
                raise ClaimError(
                    f"claim {self.name!r}: the prediction {self.prediction} is not a number; give its value"
                )
            value = finite_float(self.prediction, f"claim {self.name!r}: the prediction", error=ClaimError)
        if not math.isfinite(value):
            raise ClaimError(f"claim {self.name!r}: the predicted value {value} is not finite")
        object.__setattr__(self, "value", float(value))
        object.__setattr__(self, "assumptions", tuple(self.assumptions))
        for key in ("tolerance", "atol"):
            bound = getattr(self, key)
            if bound is None:
                continue
            if isinstance(bound, bool) or not isinstance(bound, int | float) or not (math.isfinite(bound) and bound > 0):
                raise ClaimError(f"claim {self.name!r}: {key} must be a positive number, got {bound!r}")
            object.__setattr__(self, key, float(bound))
        if self.tolerance is not None and self.exactness != "approximation":
            raise ClaimError(f"claim {self.name!r}: a tolerance goes with exactness 'approximation', got exactness "
                             f"{self.exactness!r} (exact and asymptotic claims are judged at the checker's rtol)")

    @property
    def observable_name(self) -> str | None:
        """The claim-file name of the observable (``y_second_moment``), or ``None`` if it has none."""
        named = legacy_name(self.observable, self.network)
        return None if named is None else named[0]

    @property
    def width(self) -> int:
        """The smallest hidden width of the network (the width that asymptotic claims grow)."""
        widths = self.network.widths[1:-1] or self.network.widths
        return int(min(widths))

    def with_prediction(self, prediction: sp.Expr, value: float | None = None, *, name: str | None = None,
                        exactness: str | None = None) -> Claim:
        """The same claim with another prediction (the mutation tests feed wrong formulas this way).

        The result carries no derivation: it is a hypothesis, not something varprop derived.
        """
        exactness = exactness or self.exactness
        return Claim(
            name or self.name, self.network, self.observable, self.layer, prediction,
            exactness, value, 0.0 if value is None else self.value_error,
            self.assumptions, self.source, self.description,
            tolerance=self.tolerance if exactness == "approximation" else None, atol=self.atol,
        )


def _abbreviated(expr: object, limit: int = 60) -> str:
    text = str(expr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class ClaimFamily:
    """A claim at every width: ``build(n)`` returns the claim for hidden width n.

    ``width`` is the default width; ``sweep`` the widths an asymptotic claim is checked over together
    with ``width`` (at least three in all; the checker fits the limit over them), or the small widths
    an exact claim must also hold at.
    """

    name: str
    description: str
    build: Callable[[int], Claim] = field(compare=False, repr=False)
    width: int = 16
    sweep: tuple[int, ...] = ()
    _built: dict[int, Claim] = field(default_factory=dict, init=False, compare=False, repr=False)

    def at(self, width: int | None = None) -> Claim:
        """The claim at ``width`` (default: the family's width)."""
        n = self.width if width is None else width
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ClaimError(f"claim {self.name!r}: width must be a positive integer, got {width!r}")
        # A claim is a function of the width only: derive it once per width.
        if n not in self._built:
            self._built[n] = self.build(n)
        return self._built[n]

    def at_widths(self, widths: Iterable[int]) -> dict[int, Claim]:
        """The claims at ``widths``, by width (each derived once, as by :meth:`at`)."""
        return {n: self.at(n) for n in widths}

    def knowing(self, width: int, claim: Claim) -> ClaimFamily:
        """This family, told its claim at ``width`` (already built by ``build(width)``, elsewhere); returns itself."""
        self._built.setdefault(width, claim)
        return self


def derive_families(wanted: Iterable[tuple[ClaimFamily, int]]) -> None:
    """Build each family's claim at each width not built yet, the families spread over forked processes.

    A family's widths are derived in one process, one after the other: the later ones reuse what the
    caches kept of the first (a family's sweep split over processes cost more in all). Afterwards
    :meth:`ClaimFamily.at` returns them without deriving (see :func:`varprop._forked.map_forked`).
    """
    missing: dict[int, tuple[ClaimFamily, list[int]]] = {}  # by identity: equal families may build differently
    for family, n in wanted:
        widths = missing.setdefault(id(family), (family, []))[1]
        if n not in family._built and n not in widths:
            widths.append(n)
    tasks = [(family, widths) for family, widths in missing.values() if widths]
    derived = map_forked([partial(family.at_widths, widths) for family, widths in tasks])
    for (family, _), claims in zip(tasks, derived):
        for n, claim in claims.items():
            family.knowing(n, claim)
