"""Which tail of the t statistic a skewed log moment makes heavy: E[(log R)^k] over many simulated samples.

Per repetition, `networks` values of log R given no dead layer are drawn from the exact law (per layer
log(2/n_(j-1) chi^2_K), K ~ Binomial(n_j, 1/2) given K >= 1, independent layers: the law the checker's
guard uses, varprop.derive.finite.log_skewness), and the t statistic of the mean of (log R)^k against
the exact E[(log R)^k] is recorded. Printed: the exact skewness of the per-network value, and the
frequency of t below -z and above z against the normal tail, for z = 1.96, 2.5, 2.77. One-term Edgeworth
(Hall 1992, Sec. 2.6): for negative skewness the right tail is the heavy one, the left one light.

    nice -n 10 python benchmarks/bench_log_skew_tails.py [--widths 8,8,8,8] [--order 3]
        [--networks 100000] [--repetitions 3000] [--seed 2]
"""

from __future__ import annotations

import argparse
import itertools
import math

import mpmath
import numpy as np
from scipy import stats

from varprop.derive import finite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="8,8,8,8")
    parser.add_argument("--order", type=int, default=3)
    parser.add_argument("--networks", type=int, default=100_000)
    parser.add_argument("--repetitions", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()
    widths = tuple(int(w) for w in args.widths.split(","))
    k = args.order
    with mpmath.workdps(30):
        truth = float(finite.log_moments(widths, k, dps=30)[0])
    rng = np.random.default_rng(np.random.SeedSequence(args.seed))
    ts = np.empty(args.repetitions)
    for r in range(args.repetitions):
        x = np.zeros(args.networks)
        for a, n in itertools.pairwise(widths):
            active = rng.binomial(n, 0.5, size=args.networks)
            while (dead := active == 0).any():
                active[dead] = rng.binomial(n, 0.5, size=int(dead.sum()))
            x += np.log(2 / a * rng.chisquare(active))
        v = x**k
        ts[r] = (v.mean() - truth) / (v.std(ddof=1) / math.sqrt(v.size))
    print(f"widths {widths}, E[(log R)^{k}] = {truth:.6g}, exact skewness of the per-network value "
          f"{finite.log_skewness(widths, k):.3g}; {args.repetitions} samples of {args.networks} networks")
    for z in (1.96, 2.5, 2.77):
        print(f"z = {z}: P(t < -z) = {np.mean(ts < -z):.4f}, P(t > z) = {np.mean(ts > z):.4f}, "
              f"normal {stats.norm.sf(z):.4f}")


if __name__ == "__main__":
    main()
