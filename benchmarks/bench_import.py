"""Start-up cost of varprop: ``import varprop`` against ``import sympy, numpy``, and ``varprop --help``.

Each command runs in a fresh Python process (``sys.executable``, with this checkout first on
``PYTHONPATH``); the three commands are interleaved, run once unmeasured to warm the file cache, and
then ``--runs`` times each. The table reports the median wall time of each, and for ``import
varprop`` its difference from and ratio to the sympy + numpy baseline.

Targets: ``import varprop`` at most 0.2 s more than ``import sympy, numpy``; ``varprop --help``
under 1 s. The exit code is 1 when a target is missed.

Run from the repository root::

    python benchmarks/bench_import.py              # 11 runs of each
    python benchmarks/bench_import.py --runs 21
    python benchmarks/bench_import.py --detail     # also the slowest imports under varprop (-X importtime)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMMANDS: dict[str, list[str]] = {
    "import sympy, numpy": ["-c", "import sympy, numpy"],
    "import varprop": ["-c", "import varprop"],
    # What the ``varprop`` console script runs (``from varprop.cli import main``), without the
    # launcher in front of it (a pyenv shim alone adds tens of milliseconds).
    "varprop --help": ["-c", "import sys; from varprop.cli import main; sys.exit(main(['--help']))"],
}
#: The most ``import varprop`` may cost on top of ``import sympy, numpy``, and ``varprop --help`` in all.
IMPORT_BUDGET = 0.2
HELP_BUDGET = 1.0


def _environment() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=ROOT + (os.pathsep + path if path else ""))


def run_once(args: list[str], env: dict[str, str]) -> float:
    """Wall time of one fresh process running ``python <args>``; output discarded."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(runs: int) -> dict[str, list[float]]:
    env = _environment()
    for args in COMMANDS.values():  # warm the file cache
        run_once(args, env)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(runs):
        for name, args in COMMANDS.items():
            times[name].append(run_once(args, env))
    return times


def slowest_imports(count: int = 15) -> list[tuple[int, str]]:
    """The modules with the largest cumulative import time (microseconds) under ``import varprop``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import varprop"],
        env=_environment(), check=True, capture_output=True, text=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        rows.append((int(cumulative), name.rstrip()))
    return sorted(rows, reverse=True)[:count]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11, help="measured runs of each command (default 11)")
    parser.add_argument("--detail", action="store_true", help="also list the slowest imports (-X importtime)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    print(f"python {platform.python_version()} ({sys.executable}), {os.cpu_count()} cpus; "
          f"median of {args.runs} fresh processes\n")
    times = measure(args.runs)
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, value in median.items():
        spread = f"{min(times[name]):.3f} .. {max(times[name]):.3f}"
        print(f"  {name:<22} {value:6.3f} s   (min .. max {spread} s)")
    base, imported, helped = median["import sympy, numpy"], median["import varprop"], median["varprop --help"]
    difference, ratio = imported - base, imported / base
    print(f"\n  import varprop - import sympy, numpy = {difference:+.3f} s (budget {IMPORT_BUDGET} s); "
          f"ratio {ratio:.2f}")
    print(f"  varprop --help = {helped:.3f} s (budget {HELP_BUDGET} s)")
    if args.detail:
        print("\nslowest imports under `import varprop` (cumulative, ms):")
        for micros, name in slowest_imports():
            print(f"  {micros / 1000:8.1f}  {name}")
    return 0 if difference <= IMPORT_BUDGET and helped < HELP_BUDGET else 1


if __name__ == "__main__":
    sys.exit(main())
