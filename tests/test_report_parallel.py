"""varprop report answers its topics in worker processes: the same answers as in this process, errors as raised.

The report's topics run in a process pool while the catalogue is checked (:mod:`varprop.report`).
Every sample comes from the seed, so an answer computed in a worker must equal, bit for bit, the one
computed here one check after the other; an error in a worker must reach the caller as the topic
raised it, and leaving the pool on an error must not wait for the other topics.
"""

import time
from types import SimpleNamespace

import pytest

from varprop import explain, report
from varprop.claims import ClaimError
from varprop.errors import SpecError
from varprop.explain import answer, checks_on
from varprop.report import _answer_topic, _topic_pool, _TopicRun

#: Two of the quickest topics (a second or two each); together they check 11 claims.
TOPICS = ("why-half", "glorot-vs-he")


def _forget_answers() -> None:
    """Clear this process's answers, so a worker forked from it computes its own."""
    explain._answer.cache_clear()
    explain._FIGURE_DATA.clear()


def _numbers(result) -> list:
    """Every number the checks of an answer measured and decided, and its figure's numbers."""
    checks = [(r.name, r.outcome, m.width, m.estimate.n, m.estimate.value, m.estimate.se,
               None if m.verdict is None else m.verdict.z) for r in result.checks for m in r.measurements]
    return checks + [dict(result.numbers)]


def _figure_numbers(data) -> list:
    return [(d.network_label, d.observable, tuple(d.predicted), tuple(d.estimated), tuple(d.se)) for d in data]


def test_topics_in_workers_equal_topics_in_this_process(tmp_path):
    _forget_answers()
    with _topic_pool(2) as pool:
        run = _TopicRun(pool, TOPICS, 0, None, None, tmp_path)
        other_seed = pool.submit(_answer_topic, TOPICS[0], 1, None, None, tmp_path / "seed1")
        finished = []
        run.collect(finished.append, block=True)
        other = other_seed.result()
    assert sorted(finished) == sorted(TOPICS)
    _forget_answers()
    for name in TOPICS:
        with checks_on("serial"):
            here = answer(name)
            data = here.figure_data()
        there = run.outputs[name]
        assert _numbers(there.answer) == _numbers(here)  # exact: floats compared bit for bit
        assert _figure_numbers(there.figure_data) == _figure_numbers(data)
        assert there.markdown == here.markdown(figure=f"figures/{name}.png")
        assert there.checks == tuple(r.to_dict() for r in here.checks)
        for path in there.figure_files:
            assert path.parent == tmp_path and path.stat().st_size > 1000
    # The comparison sees a difference when there is one: another seed measures other numbers.
    assert _numbers(other.answer) != _numbers(run.outputs[TOPICS[0]].answer)
    assert len(_numbers(other.answer)) == len(_numbers(run.outputs[TOPICS[0]].answer))


def test_an_error_in_a_worker_is_raised_as_the_topic_raised_it(tmp_path):
    with pytest.raises(ClaimError) as here:
        answer("no-such-topic")
    with _topic_pool(2) as pool:
        run = _TopicRun(pool, ("no-such-topic",), 0, None, None, tmp_path)
        with pytest.raises(ClaimError) as there:
            run.collect(lambda name: None, block=True)
    assert str(there.value) == str(here.value) and "no-such-topic" in str(there.value)


@pytest.mark.parametrize("error", [KeyboardInterrupt, ClaimError])
def test_leaving_the_pool_on_an_error_stops_its_workers_at_once(error):
    started = time.perf_counter()
    with pytest.raises(error), _topic_pool(2) as pool:
        tasks = [pool.submit(time.sleep, 60) for _ in range(3)]
        time.sleep(0.5)  # the workers have started sleeping
        workers = list(pool._processes.values())
        assert len(workers) == 2 and all(w.is_alive() for w in workers)
        raise error("stop")
    assert time.perf_counter() - started < 30  # not the 60 s a sleeping worker would take
    assert not any(w.is_alive() for w in workers)
    assert all(task.done() for task in tasks)  # cancelled, or broken off: nobody waits on them


def _topic_that_fails(name, seed, width, depth, figures):
    """A stand-in for the report's topic worker: one topic raises, the others would take a minute."""
    if name == "why-half":  # the first topic submitted: it starts at once
        raise SpecError(f"topic {name!r}: width must be an integer from 2 to 1024, got 0")
    time.sleep(60)


def test_a_failing_topic_stops_the_report_while_the_catalogue_is_checked(tmp_path, monkeypatch):
    """The error of a topic surfaces during the catalogue's check (not after it), as raised, without waiting
    for the other topics."""
    seen = []

    def catalogue(claims, *, progress, **kwargs):  # a check whose networks arrive for half a minute
        for block in range(600):
            time.sleep(0.05)
            progress("a claim", block, 600)
        return []

    monkeypatch.setattr(report, "_answer_topic", _topic_that_fails)
    monkeypatch.setattr(report, "check_all", catalogue)
    monkeypatch.setattr(report, "CATALOGUE", SimpleNamespace(with_sweeps=list))  # no catalogue to derive
    started = time.perf_counter()
    with pytest.raises(SpecError, match="topic 'why-half': width must be an integer from 2 to 1024, got 0"):
        report.build_report(tmp_path, progress=lambda label, done, steps: seen.append(label))
    assert time.perf_counter() - started < 20  # neither the catalogue's 30 s nor the other topics' minute
    assert all(label.startswith("catalogue: a claim") for label in seen)  # no topic was reported done
