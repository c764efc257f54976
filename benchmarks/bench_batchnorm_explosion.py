"""Yang et al.'s (2019) BatchNorm gradient explosion, measured against varprop's mean-field derivation.

A deep linear BatchNorm network (dense, BatchNorm) x 3, batch B = 6, Var[w] = 1/n, eps = 0, sampled by
the full engine at widths 16, 64 and 256. Printed per width: the gradient's second moment at the top
BatchNorm's input (derived: (B-2)(B-1)/((B-3)B) = 10/9 as the width grows), and the ratios at successive
BatchNorm inputs (derived: (B-2)/(B-3) = 4/3 in the bulk, Yang et al.'s rate; (B-2)B/((B-3)(B-1)) = 8/5
for the first BatchNorm, whose input batch is independent), each with its standard error (delta method,
networks independent), next to varprop's derived values at that width. Then the mean-field forward behind a
relu on a BatchNorm output: ``dense, BatchNorm(eps=0), relu, dense, BatchNorm(eps=1/2)``, B = 4, E[y^2] at the
last BatchNorm against the derived value (a = E[y^2](1/2 - kappa)). Last, the relu stack (dense, BatchNorm(eps=0),
relu) x 3, He weights, batch 6 and 32: the measured per-block ratio of the gradient's second moment at successive
BatchNorm inputs (the middle one's over the top one's) beside varprop's derived ratio at that batch,
((B-2)/2 + p + kappa)/((1/2 - kappa)(B-3)), and Yang et al.'s large-batch limit pi/(pi-1). A statistical
measurement, not a speed target: run it with ``nice``; a few minutes.

Run:  python benchmarks/bench_batchnorm_explosion.py
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from varprop.activations import activation
from varprop.derive import derive
from varprop.derive.batchnorm import relu_block_factor
from varprop.montecarlo import sample
from varprop.network import BatchNorm, Dense, Network, Nonlinearity
from varprop.observables import Gradient, SecondMoment, Signal
from varprop.weights import Normal

BATCH = 6
WIDTHS = {16: 4000, 64: 4000, 256: 1500}  # width -> networks


def _ratio(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """mean(a)/mean(b) and its delta-method standard error over paired networks."""
    ma, mb = a.mean(), b.mean()
    r = ma / mb
    se = np.sqrt(np.var(a / mb - r * b / mb, ddof=1) / len(a))
    return float(r), float(se)


def main() -> None:
    for width, networks in WIDTHS.items():
        net = Network(tuple(layer for _ in range(3) for layer in
                            (Dense(width, width, Normal(sp.Rational(1, width))), BatchNorm(width, BATCH, eps=0))))
        derived = [float(derive(net, SecondMoment(Gradient(p))).result) for p in (4, 2, 0)]
        s = sample(net, networks, seed=5)
        g = s.per_position["gradient_second_moment"][s.finite]
        top, middle, bottom = g[:, 5], g[:, 3], g[:, 1]
        r_bulk, se_bulk = _ratio(middle, top)
        r_first, se_first = _ratio(bottom, middle)
        print(f"width {width:4d} ({len(g)} networks): top {top.mean():.4f} ± {top.std(ddof=1) / np.sqrt(len(top)):.4f} "
              f"(derived {derived[0]:.4f}); bulk ratio {r_bulk:.4f} ± {se_bulk:.4f} (derived "
              f"{derived[1] / derived[0]:.4f}); first-layer ratio {r_first:.4f} ± {se_first:.4f} (derived "
              f"{derived[2] / derived[1]:.4f})", flush=True)
    relu = Nonlinearity(activation("relu"))
    for width, networks in {16: 4000, 64: 4000, 256: 1500}.items():
        net = Network((Dense(width, width, Normal(sp.Rational(1, width))), BatchNorm(width, 4, eps=0), relu,
                       Dense(width, width, Normal(sp.Rational(2, width))), BatchNorm(width, 4, eps=sp.Rational(1, 2))))
        derived_value = float(derive(net, SecondMoment(Signal(4))).result)
        s = sample(net, networks, seed=4)
        h = s.per_position["signal_second_moment"][s.finite][:, 5]
        print(f"width {width:4d} ({len(h)} networks): relu then BatchNorm(eps=1/2): E[y^2] {h.mean():.4f} ± "
              f"{h.std(ddof=1) / np.sqrt(len(h)):.4f} (derived {derived_value:.4f})", flush=True)

    relu_stack()


def relu_stack() -> None:
    """The per-block gradient growth of (dense, BatchNorm(eps=0), relu) x 3 against the derived rate and its limit."""
    relu = Nonlinearity(activation("relu"))
    limit = float(sp.pi / (sp.pi - 1))
    for batch, sizes in ((6, {16: 4000, 64: 4000, 256: 1500}), (32, {16: 2000, 64: 1000, 256: 400})):
        rate = float(relu_block_factor(batch))
        for width, networks in sizes.items():
            net = Network(tuple(layer for _ in range(3) for layer in
                                (Dense(width, width, Normal(sp.Rational(2, width))), BatchNorm(width, batch, eps=0), relu)))
            derived = [float(derive(net, SecondMoment(Gradient(p))).result) for p in (6, 3)]
            s = sample(net, networks, seed=7)
            g = s.per_position["gradient_second_moment"][s.finite]
            top, middle = g[:, 7], g[:, 4]
            ratio, se = _ratio(middle, top)
            print(f"relu stack, batch {batch:2d}, width {width:4d} ({len(g)} networks): per-block ratio {ratio:.4f} ± "
                  f"{se:.4f} (derived {derived[1] / derived[0]:.4f} = rate {rate:.4f} at B = {batch}; large-batch limit "
                  f"pi/(pi-1) = {limit:.4f})", flush=True)


if __name__ == "__main__":
    main()
