"""The checker's engine and executor plumbing: which engine, said where, refused with the reason.

That the two engines sample the same law is tested in ``test_engines.py``; here the checker picks
the conditional engine where it is valid, records the engine in every measurement (text and JSON),
refuses an explicit engine that cannot serve a claim's network, and reaches the same verdicts and
estimates whatever the executor.
"""

from __future__ import annotations

import io
import json

import pytest

from varprop.catalogue import family
from varprop.cli import main
from varprop.montecarlo import MonteCarloError, check, check_all, format_results
from varprop.progress import progress_bar

GAUSSIAN = "relu-mean-fixed-input"
UNIFORM = "he-forward-relu-uniform"


def test_auto_uses_the_conditional_engine_where_valid_and_says_so():
    results = check_all([family(GAUSSIAN), family(UNIFORM)], width=8, samples=4000, seed=1)
    assert [m.engine for m in results[0].measurements] == ["conditional"]
    assert [m.engine for m in results[1].measurements] == ["full"]
    text = format_results(results)
    assert "sampled by the conditional engine" in text and "sampled by the full engine" in text
    assert results[0].to_dict()["measurements"][0]["engine"] == "conditional"


def test_an_explicit_engine_is_used_or_refused_with_the_reason():
    full = check(family(GAUSSIAN), width=8, samples=4000, seed=1, engine="full")
    assert full.primary.engine == "full"
    with pytest.raises(MonteCarloError, match=rf"claim '{UNIFORM}'.*conditional engine cannot sample.*Uniform.*Normal"):
        check(family(UNIFORM), width=8, samples=100, engine="conditional")
    with pytest.raises(MonteCarloError, match=r"unknown engine 'gpu'"):
        check(family(GAUSSIAN), width=8, samples=100, engine="gpu")


def test_verdicts_and_estimates_do_not_depend_on_the_executor():
    serial = check(family(GAUSSIAN), width=8, samples=30_000, seed=2)
    parallel = check(family(GAUSSIAN), width=8, samples=30_000, seed=2, executor="processes=2")
    assert parallel.primary.estimate == serial.primary.estimate
    assert parallel.outcome == serial.outcome


def test_cli_engine_and_executor_options(capsys):
    assert main(["check", GAUSSIAN, "--width", "8", "--samples", "3000", "--engine", "full", "--json", "--quiet"]) in (0, 3)
    payload = json.loads(capsys.readouterr().out)
    assert payload["results"][0]["measurements"][0]["engine"] == "full"
    assert main(["check", UNIFORM, "--width", "8", "--engine", "conditional", "--quiet"]) == 2
    assert "conditional engine cannot sample" in capsys.readouterr().err
    assert main(["check", GAUSSIAN, "--executor", "threads", "--quiet"]) == 2
    assert "unknown executor 'threads'" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal_and_not_under_quiet():
    with progress_bar("check", stream=io.StringIO()) as progress:
        assert progress is None  # a file or a pipe: nothing
    with progress_bar("check", quiet=True, stream=_Terminal()) as progress:
        assert progress is None
    terminal = _Terminal()
    with progress_bar("check", stream=terminal, unit="group", mininterval=0) as progress:
        for done in range(1, 4):
            progress("claim", done, 3)
    shown = terminal.getvalue()
    assert "3/3" in shown and "group/s" in shown and "<" in shown  # count, rate and time left


def test_progress_counts_networks_and_moves_inside_one_large_sample():
    calls: list[tuple[str, int, int]] = []
    (result,) = check_all([family(UNIFORM)], seed=3, width=8, progress=lambda *call: calls.append(call))
    pilots = [c for c in calls if c[0].startswith("pilot: ")]
    main_calls = [c for c in calls if not c[0].startswith("pilot: ")]
    assert pilots and main_calls
    assert pilots[-1][1] == pilots[-1][2]  # every pilot network counted
    total = main_calls[-1][2]
    assert all(c[2] == total for c in main_calls) and main_calls[-1][1] == total  # the bar ends full
    assert [c[1] for c in calls] == sorted(c[1] for c in calls)  # never moves back
    sampled = pilots[-1][2] + sum(m.estimate.n + m.estimate.excluded for m in result.measurements)
    assert total == sampled  # the networks of every sample, pilots included
    assert len(main_calls) > len({c[0] for c in main_calls})  # blocks of one large sample move it, not whole samples only
