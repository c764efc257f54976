"""Wall and CPU time of ``varprop audit`` on the shipped PyTorch-default MLP example.

Runs ``varprop audit examples/mlp_pytorch_default.py:make_mlp --quiet`` at its defaults (2000
networks, 8 inputs each, the law pilot of 100 instances, every derivation) in a fresh process,
``--runs`` times, and reports each run's wall time, the child's CPU time and the load average.

Target: under 60 s wall on this 2-core machine. The exit code is 1 when the median misses it.

Run from the repository root::

    python benchmarks/bench_audit.py             # 3 runs
    python benchmarks/bench_audit.py --runs 1
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_SECONDS = 60.0
COMMAND = [sys.executable, "-m", "varprop.cli", "audit", "examples/mlp_pytorch_default.py:make_mlp", "--quiet"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    walls = []
    for run in range(args.runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(COMMAND, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if done.returncode not in (0, 1):
            print(done.stderr, file=sys.stderr)
            return 2
        verdicts = done.stdout.split("Verdicts: ", 1)[-1].split("(", 1)[0].strip()
        print(f"run {run + 1}: {wall:.1f} s wall, {cpu:.1f} s CPU, load average {os.getloadavg()[0]:.1f}; {verdicts}")
        walls.append(wall)
    median = statistics.median(walls)
    print(f"median wall {median:.1f} s (target < {TARGET_SECONDS:.0f} s): {'met' if median < TARGET_SECONDS else 'MISSED'}")
    return 0 if median < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
