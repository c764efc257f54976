"""How heavy-tailed the catalogue's per-network values are: the sample skewness at every width of every claim.

The calibration (``benchmarks/calibration.py``) checks the whole catalogue; this script shows that it already
holds strongly skewed samples (exact claims are checked at widths 2 and 4, where one network's average of
y^2 is a product of a few chi-squares), so its false-FAIL rate covers heavy tails, not only Gaussian-like
means. Printed per claim: exactness, and per width the skewness of the per-network values and the
networks the checker drew (one ``check --all`` at the given seed).

Run:  nice python benchmarks/catalogue_skewness.py [--seed 7]
"""

from __future__ import annotations

import argparse
import math

from varprop.catalogue import CATALOGUE
from varprop.montecarlo import check_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    worst = []
    for result in check_all(list(CATALOGUE.values()), seed=args.seed):
        cells = []
        for m in sorted(result.measurements, key=lambda m: m.width):
            skew = float(m.health.get("skewness", math.nan))
            cells.append(f"width {m.width}: skewness {skew:+.1f} ({m.estimate.n} networks)")
            worst.append((abs(skew), result.name, m.width, skew))
        print(f"{result.name} ({result.exactness}, {result.outcome}): " + "; ".join(cells))
    worst.sort(reverse=True)
    print("most skewed: " + "; ".join(f"{name} at width {w}: {s:+.1f}" for _, name, w, s in worst[:5]))


if __name__ == "__main__":
    main()
