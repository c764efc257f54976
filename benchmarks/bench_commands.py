"""Wall time of the two long commands, in fresh processes, against their targets.

Targets: ``varprop check --all`` at the defaults in under 60 s, and ``varprop report`` at the
defaults in under 2 minutes, on a 2-core machine.

Run:  python benchmarks/bench_commands.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "varprop check --all": (["varprop", "check", "--all", "--quiet"], 60.0),
    "varprop report": (["varprop", "report", "--quiet", "--out"], 120.0),
}


def main() -> int:
    ok = True
    for label, (command, target) in COMMANDS.items():
        with tempfile.TemporaryDirectory() as tmp:
            argv = command + [tmp] if command[-1] == "--out" else command
            start = time.perf_counter()
            result = subprocess.run(argv, capture_output=True, text=True)
            elapsed = time.perf_counter() - start
        verdict = "ok" if elapsed < target and result.returncode == 0 else "MISSED"
        ok &= verdict == "ok"
        print(f"{label:<22} {elapsed:6.1f} s  (target < {target:.0f} s, exit code {result.returncode})  {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
