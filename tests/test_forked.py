"""Derivations in forked processes: the same claims as derived here, errors as raised there, and the fallbacks.

``varprop._forked.map_forked`` runs closures (which do not pickle) in forked copies of this process;
``derive_families`` and ``CATALOGUE.with_sweeps`` build claims with it. The claims that come back must
be those this process would derive: compared here with claims derived in this process, field by field
and through their JSON (the derivation included).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
from functools import partial

import pytest
import sympy as sp

from varprop import _forked
from varprop._forked import map_forked
from varprop.catalogue import CATALOGUE, claim_from_derivation
from varprop import claims as claims_module
from varprop.claims import ClaimFamily, derive_families
from varprop.derive.derivation import prose
from varprop.network import mlp
from varprop.weights import he

needs_fork = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                                reason="the fork start method (multiprocessing) is not available on this platform")


def _pid_and(value: int) -> tuple[int, int]:
    return os.getpid(), value


@needs_fork
def test_closures_run_in_other_processes_and_come_back_in_order():
    offset = 7
    tasks = [lambda k=k: (os.getpid(), k * k + offset) for k in range(9)]  # lambdas: nothing here pickles them
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(tasks[0])
    results = map_forked(tasks, workers=2)
    assert [value for _, value in results] == [k * k + offset for k in range(9)]
    assert os.getpid() not in {pid for pid, _ in results}


@needs_fork
def test_an_error_in_a_task_is_raised_here_as_raised_there():
    def fails() -> None:
        raise ValueError("the task's own message")

    with pytest.raises(ValueError, match="the task's own message"):
        map_forked([lambda: 1, fails, lambda: 3], workers=2)


def test_one_worker_or_one_task_runs_here():
    here = os.getpid()
    assert map_forked([partial(_pid_and, 1), partial(_pid_and, 2)], workers=1) == [(here, 1), (here, 2)]
    assert map_forked([partial(_pid_and, 5)]) == [(here, 5)]
    assert map_forked([]) == []


@needs_fork
def test_a_worker_process_does_not_fork_workers_of_its_own():
    nested = partial(map_forked, [partial(_pid_and, 1), partial(_pid_and, 2)], workers=2)
    inner, _ = map_forked([nested, partial(_pid_and, 0)], workers=2)
    pids = {pid for pid, _ in inner}
    assert len(pids) == 1 and os.getpid() not in pids  # both ran in that worker, one after the other
    assert [value for _, value in inner] == [1, 2]


@needs_fork
def test_the_task_list_is_not_left_behind():
    map_forked([lambda: 1, lambda: 2], workers=2)
    assert _forked._TASKS == ()


def _family(name: str, activation: str) -> ClaimFamily:
    def build(n: int):
        return claim_from_derivation(name, mlp([n, n, n], activation, he()), "y_second_moment", 2)

    return ClaimFamily(name, f"{activation} net, He init, second layer", build, 8, (2, 4, 8))


def _derivation_json(claim) -> str:
    return json.dumps(claim.derivation.to_dict(), sort_keys=True)


@needs_fork
def test_derive_families_gives_the_claims_derived_here():
    forked = [_family("relu-he", "relu"), _family("tanh-he", "tanh")]  # two families: two forked tasks
    here = [_family("relu-he", "relu"), _family("tanh-he", "tanh")]
    derive_families([(family, n) for family in forked for n in (2, 4, 8)] + [(forked[0], 4)])  # 4 derived once
    for family, expected_family in zip(forked, here):
        assert sorted(family._built) == [2, 4, 8]  # at() now returns them without deriving
        for n in (2, 4, 8):
            claim, expected = family.at(n), expected_family.at(n)
            assert claim == expected and claim.prediction == expected.prediction
            assert _derivation_json(claim) == _derivation_json(expected)


def test_a_familys_widths_are_derived_in_one_process(monkeypatch):
    # Its later widths reuse the caches of the first: one task per family, run here when there is one family.
    tasks_seen = []
    monkeypatch.setattr(claims_module, "map_forked", lambda tasks: tasks_seen.append(len(tasks)) or map_forked(tasks))
    family = _family("relu-he", "relu")
    derive_families([(family, n) for n in (2, 4, 8)])
    assert tasks_seen == [1] and sorted(family._built) == [2, 4, 8]


def test_the_catalogue_with_sweeps_needs_no_more_derivation():
    families = CATALOGUE.with_sweeps()
    assert [f.name for f in families] == list(CATALOGUE)
    for f in families:
        assert {f.width, *f.sweep} <= set(f._built), f.name


def test_a_pickled_prose_keeps_its_text_and_its_formulas():
    x = sp.Symbol("x")
    sentence = prose("the mean square is ", sp.sqrt(x / (2 * sp.pi)), " at every width")
    again = pickle.loads(pickle.dumps(sentence))
    assert str(again) == str(sentence) and again.parts == sentence.parts and type(again) is type(sentence)
