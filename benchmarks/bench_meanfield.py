"""Speed of the bivariate kernels and the mean-field analysis, measured on this machine.

Targets (issue 9: correlation propagation and mean-field maps):
  * a closed-form kernel E[phi(u) phi(v)] (relu, erf, gelu), once varprop is imported: < 50 ms;
  * a numeric bivariate expectation (tanh, sigmoid, silu, softplus) to 1e-10: < 0.5 s;
  * the tanh edge-of-chaos curve at 50 bias variances: < 5 s.

Every timing clears the caches first (the kernels and the analysis are lru_cached), so it is the cost
of a first call. Reported: the median and the worst of the repeats.

Run:  python benchmarks/bench_meanfield.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from varprop.activations import activation
from varprop.derive.gaussian import bivariate, engine
from varprop.derive.meanfield import _homogeneous_slope, edge_of_chaos

CLOSED = ("relu", "leaky_relu", "abs", "erf", "gelu")
NUMERIC = ("tanh", "sigmoid", "silu", "softplus")
POINTS = [(1.0, 2.0, 0.3), (0.5, 3.0, -0.9), (2.0, 2.0, 1.0)]


def _clear() -> None:
    bivariate._cross.cache_clear()
    engine._moments.cache_clear()
    engine._expectation.cache_clear()
    _homogeneous_slope.cache_clear()


def _time(function, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        _clear()
        start = time.perf_counter()
        function()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    for name in (*CLOSED, *NUMERIC):  # warm the imports (scipy, the numpy kernels) outside the timings
        act = activation(name)
        bivariate.cross_expectation(act, 1.0, 1.0, 0.5)
    print("closed-form kernels E[phi(u) phi(v)] and E[phi'(u) phi'(v)], first call (target < 50 ms):")
    worst_closed = 0.0
    for name in CLOSED:
        act = activation(name)
        for derivative in (False, True):
            times = [t for q1, q2, c in POINTS for t in _time(
                lambda act=act, q1=q1, q2=q2, c=c, derivative=derivative: bivariate.cross_expectation(
                    act, q1, q2, c, derivative=derivative).evaluate(), 5)]
            worst_closed = max(worst_closed, max(times))
            print(f"  {name:<11} {'phi_prime' if derivative else 'phi':<9} median {1e3 * statistics.median(times):6.1f} ms"
                  f"   worst {1e3 * max(times):6.1f} ms")
    print("numeric kernels to 1e-10, first call (target < 0.5 s):")
    worst_numeric = 0.0
    for name in NUMERIC:
        act = activation(name)
        for derivative in (False, True):
            estimates = []

            def run(act=act, derivative=derivative, estimates=estimates):
                for q1, q2, c in POINTS:
                    estimates.append(bivariate.cross_expectation(act, q1, q2, c, derivative=derivative,
                                                                 tolerance=1e-10).error_estimate)

            times = [t / len(POINTS) for t in _time(run, 5)]
            worst_numeric = max(worst_numeric, max(times))
            print(f"  {name:<11} {'phi_prime' if derivative else 'phi':<9} median {1e3 * statistics.median(times):6.1f} ms"
                  f"   worst {1e3 * max(times):6.1f} ms   largest error estimate {max(estimates):.1e}")
    times = _time(lambda: edge_of_chaos("tanh", np.linspace(0.0, 0.5, 50)), 5)
    print(f"tanh edge of chaos at 50 bias variances (target < 5 s): median {statistics.median(times):.3f} s, "
          f"worst {max(times):.3f} s")
    print(f"\nworst closed form {1e3 * worst_closed:.1f} ms (ratio to target {worst_closed / 0.05:.2f}); worst numeric "
          f"{1e3 * worst_numeric:.1f} ms (ratio {worst_numeric / 0.5:.2f}); edge curve {max(times):.3f} s "
          f"(ratio {max(times) / 5:.3f})")


if __name__ == "__main__":
    main()
