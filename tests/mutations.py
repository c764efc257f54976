"""Mutation siblings of every catalogue claim (used by ``tests/test_mutations.py`` and, through the
``catalogue_verdicts`` fixture of ``conftest.py``, by ``tests/test_check.py``).

The siblings are the mistakes people make with these formulas: the missing 1/2 of relu (a factor
2), Var[x] where E[x^2] belongs, fan-out where fan-in belongs (unequal widths), the formula of the
layer before or after, and copies off by +-2 % and +-5 %. A sibling whose value equals the correct
one (fan-out = fan-in at equal widths; every layer has the same E[y^2] under He init) is no
mistake there and is left out, by computing it, not by listing names. Approximations without a
tolerance get no verdict, so they have no siblings. The verdicts are the checker's own.
"""

from __future__ import annotations

import sympy as sp

from varprop.activations import activation
from varprop.catalogue import CATALOGUE
from varprop.claims import ClaimFamily
from varprop.derive.gaussian import evaluate
from varprop.derive.propagate import derive
from varprop.network import mlp
from varprop.observables import SecondMoment, Variance, from_name
from varprop.weights import he

RTOL = 0.01


def _family(entry: ClaimFamily, label: str, predict, copy: bool = False) -> ClaimFamily | None:
    """``entry`` with the prediction ``predict(claim)`` at every width, or None where that mistake gives a
    value within 2 rtol of the correct one on this network (it is then no mistake the check must catch)."""
    name = f"{entry.name} [{label}]"
    claim = entry.at()
    value = predict(claim)
    if value is None or not copy and abs(float(evaluate(value).value) - claim.value) <= 2 * RTOL * abs(claim.value):
        return None

    def build(n):
        correct = entry.at(n)
        return correct.with_prediction(predict(correct), name=name)

    return ClaimFamily(name, entry.description, build, entry.width, entry.sweep)


def _variance_for_second_moment(claim):
    if not isinstance(claim.observable, SecondMoment):
        return None
    return derive(claim.network, Variance(claim.observable.tensor)).result


def _layer(offset):
    def predict(claim):
        name, layer = claim.observable_name, claim.layer
        if name is None or not 1 <= layer + offset <= claim.network.depth:
            return None
        return derive(claim.network, from_name(name, layer + offset, claim.network)).result
    return predict


def _fan(mode):
    """He's prediction for the same widths with weights scaled by ``mode`` (fan-out where fan-in belongs).

    Only for the He relu networks; on the catalogue's networks (input and output widths equal) the
    two coincide for the observables claimed, so this sibling is computed and then left out there;
    ``tests/test_check.py`` has it on unequal widths, [8, 16, 8, 4], where it differs.
    """
    def predict(claim):
        if "he-" not in claim.name or "relu" not in repr(claim.network) or "leaky" in claim.name:
            return None
        return derive(mlp(list(claim.network.widths), activation("relu"), he(mode)), claim.observable).result
    return predict


def _copy(percent: int):
    """A copy off by ``percent`` %; of a zero prediction, off by ``percent`` % in absolute terms (the checker
    reads its tolerance as absolute there: rtol 0.01 becomes atol 0.01), since a relative copy of 0 is 0."""
    def predict(claim):
        if claim.prediction == 0:
            return sp.Rational(percent, 100)
        return claim.prediction * sp.Rational(100 + percent, 100)

    return predict


def siblings() -> list[ClaimFamily]:
    """Every catalogue claim's wrong siblings, as claim families checked like the claim itself."""
    out = []
    for entry in CATALOGUE.values():
        if entry.at().exactness == "approximation":
            continue
        mutations = {
            "missing 1/2": lambda c: c.prediction * 2,
            "Var for E[x^2]": _variance_for_second_moment,
            "layer before": _layer(-1),
            "layer after": _layer(+1),
            "+2%": _copy(2),
            "-2%": _copy(-2),
            "+5%": _copy(5),
            "-5%": _copy(-5),
        }
        mutations["fan-out for fan-in"] = _fan("fan_out")
        for label, predict in mutations.items():
            sibling = _family(entry, label, predict, copy=label.endswith("%"))
            if sibling is not None:
                out.append(sibling)
    return out
