"""Speed of the symbolic engine, measured on this machine.

Targets (issue: foundation):
  * the moments of every built-in activation plus every He/Glorot derivation, in a fresh Python
    process (import included), in under 3 s wall;
  * each rectifier-family activation's moments in under 50 ms once varprop is imported.

Run:  python benchmarks/bench_derive.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

WORKLOAD = r"""
import sympy as sp
from varprop.activations import BUILTIN_ACTIVATIONS, activation
from varprop.derive import moments, forward, backward, weight_gradient, condition, ratio, glorot
for name in BUILTIN_ACTIVATIONS:
    moments(activation(name))
relu = activation("relu")
leaky = activation("leaky_relu", a=sp.Symbol("a", real=True))
derivations = [
    forward(relu), forward(relu, weight_mean=True), backward(relu), weight_gradient(relu),
    condition(relu), condition(relu, mode="fan_out"), condition(relu, weights="uniform"), ratio(relu),
    glorot(activation("linear")), glorot(activation("tanh")),
    forward(leaky), condition(leaky), forward(activation("shifted_relu")), condition(activation("shifted_relu")),
]
for d in derivations:
    d.latex(); d.markdown(); d.text()
"""

RECTIFIERS = ("relu", "leaky_relu", "abs", "shifted_relu")


def fresh_process_seconds(repeats: int = 5) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", WORKLOAD], check=True)
        times.append(time.perf_counter() - start)
    return times


def rectifier_milliseconds(repeats: int = 7) -> dict[str, float]:
    from varprop.activations import activation
    from varprop.derive import gaussian
    from varprop.derive.gaussian import engine

    out = {}
    for name in RECTIFIERS:
        samples = []
        for _ in range(repeats):
            engine._moments.cache_clear()
            engine._expectation.cache_clear()
            act = activation(name)
            start = time.perf_counter()
            gaussian.moments(act)
            samples.append(1000 * (time.perf_counter() - start))
        out[name] = statistics.median(samples)
    return out


def main() -> int:
    fresh = fresh_process_seconds()
    print("moments of all built-ins + all derivations, fresh process (import included):")
    print(f"  median {statistics.median(fresh):.2f} s, min {min(fresh):.2f} s, max {max(fresh):.2f} s  (target < 3 s)")
    per = rectifier_milliseconds()
    print("rectifier family, one activation's four moments after import (median of 7, caches cleared):")
    for name, ms in per.items():
        print(f"  {name:<13} {ms:6.1f} ms  (target < 50 ms)")
    ok = max(fresh) < 3.0 and max(per.values()) < 50.0
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
