"""Mutation siblings of every catalogue claim: each deliberately wrong formula FAILs at the default
settings while the correct claim PASSes, all checked together in one ``check_all`` (one Holm family,
shared networks; the ``catalogue_verdicts`` fixture of ``conftest.py``, which ``tests/test_check.py``
uses too). The siblings are built in ``tests/mutations.py``.
"""

from __future__ import annotations

from varprop.catalogue import CATALOGUE
from varprop.montecarlo import FAIL, PASS


def test_every_sibling_fails_and_every_correct_claim_passes(catalogue_verdicts):
    siblings, results = catalogue_verdicts
    for entry in CATALOGUE.values():
        if entry.at().exactness != "approximation":
            assert results[entry.name].outcome == PASS, (entry.name, results[entry.name].message)
    wrong = [(s.name, results[s.name].outcome, results[s.name].message) for s in siblings
             if results[s.name].outcome != FAIL]
    assert not wrong, wrong


def test_every_kind_of_mistake_is_represented(catalogue_verdicts):
    siblings, _ = catalogue_verdicts
    labels = {s.name.split(" [", 1)[1][:-1] for s in siblings}
    assert labels >= {"missing 1/2", "Var for E[x^2]", "layer before", "layer after", "+2%", "-2%", "+5%", "-5%"}
    # every correct catalogue claim with a verdict has at least its +-2 % and +-5 % siblings
    for entry in CATALOGUE.values():
        if entry.at().exactness != "approximation":
            assert sum(s.name.startswith(entry.name + " [") for s in siblings) >= 4, entry.name
