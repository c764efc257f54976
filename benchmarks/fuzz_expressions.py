"""Fuzz the expression parser and the Gaussian expectation engine with generated expressions.

Usage::

    PYTHONPATH=$PWD python benchmarks/fuzz_expressions.py [N] [SEED]

Generates N (default 10000) expressions as text from the grammar in ``tests/strategies.py``, and for
each parses it, derives its moments and evaluates them at q = 0.1, 1, 30. Prints the count of each
outcome (ok or the VarpropError raised), every exception outside the VarpropError family, the
expressions slower than 2 s and the slowest one. Exits 1 when a foreign exception or a slow case is found.
"""

from __future__ import annotations

import collections
import faulthandler
import pathlib
import random
import sys
import time
import traceback

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.strategies import EXPRESSIONS, exercise  # noqa: E402

LIMIT = 2.0


def main(count: int = 10_000, seed: int = 0) -> int:
    outcomes: collections.Counter[str] = collections.Counter()
    slow: list[tuple[float, str]] = []
    foreign: list[tuple[str, str]] = []
    seen: set[str] = set()
    slowest = (0.0, "")
    start = time.perf_counter()
    current = sys.stderr

    @settings(max_examples=count, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(EXPRESSIONS)
    def run(text: str) -> None:
        nonlocal slowest
        if text in seen:
            outcomes["duplicate"] += 1
            return
        seen.add(text)
        # A case that hangs is shown with its stack (and the run goes on after it returns).
        faulthandler.dump_traceback_later(30, exit=False)
        print(f"current: {text!r}", file=current, flush=True)
        try:
            outcome, elapsed = exercise(text)
        except Exception:  # noqa: BLE001 - the point is to find these
            foreign.append((text, traceback.format_exc(limit=3)))
            outcomes["FOREIGN"] += 1
            return
        finally:
            faulthandler.cancel_dump_traceback_later()
        outcomes[outcome] += 1
        done = sum(outcomes.values())
        if done % 500 == 0:
            print(f"... {done} expressions, {time.perf_counter() - start:.0f} s, slowest so far "
                  f"{max(slowest[0], elapsed):.2f} s, foreign {len(foreign)}, slow {len(slow)}", flush=True)
        if elapsed > slowest[0]:
            slowest = (elapsed, text)
        if elapsed > LIMIT:
            slow.append((elapsed, text))

    random.seed(seed)
    from hypothesis import seed as hypothesis_seed

    hypothesis_seed(seed)(run)()
    total = time.perf_counter() - start
    print(f"generated {sum(outcomes.values())} expressions ({len(seen)} distinct) in {total:.0f} s")
    for name, n in outcomes.most_common():
        print(f"  {name:<20} {n}")
    print(f"slowest: {slowest[0]:.2f} s  {slowest[1]!r}")
    for elapsed, text in sorted(slow, reverse=True)[:20]:
        print(f"SLOW {elapsed:.2f} s  {text!r}")
    for text, trace in foreign[:20]:
        print(f"FOREIGN {text!r}\n{trace}")
    return 1 if slow or foreign else 0


if __name__ == "__main__":
    arguments = [int(a) for a in sys.argv[1:3]]
    sys.exit(main(*arguments))
