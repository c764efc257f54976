"""Wall time of the two long commands, in fresh processes, against their targets.

Targets (the issue "Fast and wide"): ``varprop check --all`` at the defaults in under 20 s, and
``varprop report`` at the defaults in under 40 s, on a 2-core machine. Both run quietly: anything
they write to stderr under ``--quiet`` is shown as a failure.

Run:  python benchmarks/bench_commands.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "varprop check --all": (["varprop", "check", "--all", "--quiet"], 20.0),
    "varprop report": (["varprop", "report", "--quiet", "--out"], 40.0),
}


def main() -> int:
    ok = True
    for label, (command, target) in COMMANDS.items():
        with tempfile.TemporaryDirectory() as tmp:
            argv = command + [tmp] if command[-1] == "--out" else command
            load = os.getloadavg()[0]
            cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            result = subprocess.run(argv, capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = sum(getattr(cpu_after, f) - getattr(cpu_before, f) for f in ("ru_utime", "ru_stime"))
        verdict = "ok" if elapsed < target and result.returncode == 0 and not result.stderr else "MISSED"
        ok &= verdict == "ok"
        print(f"{label:<22} {elapsed:6.1f} s wall, {cpu:6.1f} s CPU (all processes; load average {load:.1f} before)  "
              f"(target < {target:.0f} s wall, exit code {result.returncode})  {verdict}")
        if result.stderr:
            print(f"  stderr under --quiet: {result.stderr[-500:]}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
