"""False-alarm rate of the checker: run the correct catalogue over many seeds and count FAILs.

Every catalogue claim is true (exact claims hold at every width, asymptotic deviations shrink), so
any FAIL is a false alarm. Holm's procedure over all the tests of one ``check_all`` run is meant to
hold the chance of at least one false FAIL per run at ``alpha``; this script measures that chance.

Each run sizes its samples from pilots like ``varprop check --all``, but to resolve ``--rtol 0.05``
instead of 0.01 (25 times fewer networks), so 200 runs fit in minutes. Smaller samples are the
harder case for the normal approximation behind the z-tests, so the rate measured here is, if
anything, an overestimate of the rate at the defaults. ``--samples T`` fixes T per width instead.

Run:  python benchmarks/false_alarm_rate.py [--seeds 200] [--rtol 0.05] [--workers 2]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from varprop.catalogue import CATALOGUE
from varprop.montecarlo import check_all


def one_run(args: tuple[int, int | None, float, float]) -> tuple[list[str], int]:
    seed, samples, alpha, rtol = args
    results = check_all(list(CATALOGUE.values()), samples=samples, seed=seed, alpha=alpha, rtol=rtol)
    return [r.name for r in results if r.outcome == "FAIL"], sum(r.outcome == "INCONCLUSIVE" for r in results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--rtol", type=float, default=0.05)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    start = time.perf_counter()
    jobs = [(seed, args.samples, args.alpha, args.rtol) for seed in range(1000, 1000 + args.seeds)]
    failed_runs = 0
    inconclusive = 0
    by_claim: dict[str, int] = {}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for done, (failures, unresolved) in enumerate(pool.map(one_run, jobs), 1):
            inconclusive += unresolved
            if failures:
                failed_runs += 1
                for name in failures:
                    by_claim[name] = by_claim.get(name, 0) + 1
            if done % 20 == 0:
                print(f"  {done}/{args.seeds} runs, {failed_runs} with a false FAIL", file=sys.stderr, flush=True)
    rate = failed_runs / args.seeds
    se = math.sqrt(rate * (1 - rate) / args.seeds) if 0 < rate < 1 else math.sqrt(args.alpha * (1 - args.alpha) / args.seeds)
    sizing = f"{args.samples} networks per width" if args.samples else f"samples sized to resolve rtol = {args.rtol}"
    print(f"catalogue of {len(CATALOGUE)} claims, {sizing}, alpha = {args.alpha}")
    print(f"runs with at least one false FAIL: {failed_runs} of {args.seeds} = {rate:.3f} (SE {se:.3f}); "
          f"alpha = {args.alpha}")
    print(f"INCONCLUSIVE claim checks: {inconclusive} of {args.seeds * len(CATALOGUE)}")
    if by_claim:
        print("false FAILs by claim: " + ", ".join(f"{k}: {v}" for k, v in sorted(by_claim.items())))
    print(f"wall time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
