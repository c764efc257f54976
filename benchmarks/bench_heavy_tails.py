"""Heavy tails at width 10 and depth 10: the plain mean of M_L^2 against the Rao-Blackwellised one, over seeds.

E[M_L^2] = 1.5^10 exactly. For each seed, 10^5 zero-bias relu networks at He's variance are sampled
(varprop.montecarlo.laws.sample_counts, full weight matrices); the plain estimate is the mean of the
per-network M_L^2, the Rao-Blackwellised one the mean of E[M_L^2 | K_1..K_L] over the same networks.
Printed: both estimates with their standard errors and z-scores against the exact value, and the sum
of squared z-scores (chi-square with `seeds` degrees of freedom when the SE is honest).

    nice -n 10 python benchmarks/bench_heavy_tails.py [--seeds 10] [--networks 100000]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy import stats

from varprop.derive.finite import mean_square
from varprop.montecarlo.laws import moment_tails, rao_blackwell, sample_counts

WIDTHS = (10,) * 11


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--networks", type=int, default=100_000)
    args = parser.parse_args()
    exact = float(mean_square(list(WIDTHS)))
    tails = moment_tails(WIDTHS, 2)
    print(f"E[M_L^2] = {exact:.6g}; per-network M_L^2: relative SD {tails.relative_sd:.3g}, skewness {tails.skewness:.3g}")
    print(f"{'seed':>4}  {'plain':>9} {'SE':>8} {'z':>7}   {'Rao-Blackwell':>13} {'SE':>7} {'z':>6}")
    z_plain, z_rb = [], []
    for seed in range(args.seeds):
        m, counts = sample_counts(WIDTHS, args.networks, seed=seed)
        plain, rb = m**2, rao_blackwell(counts, WIDTHS)
        se_p, se_r = plain.std(ddof=1) / math.sqrt(plain.size), rb.std(ddof=1) / math.sqrt(rb.size)
        z_plain.append((plain.mean() - exact) / se_p)
        z_rb.append((rb.mean() - exact) / se_r)
        print(f"{seed:>4}  {plain.mean():>9.4g} {se_p:>8.3g} {z_plain[-1]:>+7.2f}   {rb.mean():>13.5g} {se_r:>7.3g} "
              f"{z_rb[-1]:>+6.2f}")
    for name, z in (("plain", z_plain), ("Rao-Blackwell", z_rb)):
        total = float(np.sum(np.square(z)))
        print(f"{name}: sum z^2 = {total:.1f} (chi-square({args.seeds}) 99.9% point "
              f"{stats.chi2.ppf(0.999, args.seeds):.1f})")


if __name__ == "__main__":
    main()
