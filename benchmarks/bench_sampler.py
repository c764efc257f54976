"""Networks per second of ``varprop.montecarlo.sample`` against two references.

For depth-10 He-initialised relu MLPs of widths 4, 32 and 256 (forward and backward pass, all
observables recorded), this measures in one run:

* ``sampler``: :func:`varprop.montecarlo.sample` with its default block and chunk sizes;
* ``loop`` (reference a): a plain per-network Python loop with numpy (draw, forward, backward,
  the same per-layer statistics), one network at a time;
* ``bulk draw`` (reference b): the time to draw the same number of weight entries (for the same
  T as the sampler run) in one call, ``rng.standard_normal(T * weights_per_network)``, allocation
  included; no sampler that draws every weight can beat it by much.

Targets: sampler >= 50% of the bulk-draw rate at every width, and >= 5x the loop at width 4.
With ``--sweep`` it also times the sampler over a range of chunk sizes (the figures behind the
default in ``varprop.montecarlo.sampler.default_sizes``).

Run from the repository root::

    python benchmarks/bench_sampler.py            # the table
    python benchmarks/bench_sampler.py --sweep    # plus chunk-size sweeps
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from varprop.montecarlo import sample  # noqa: E402
from varprop.montecarlo.sampler import default_sizes  # noqa: E402
from varprop.network import Network, mlp  # noqa: E402

DEPTH = 10
WIDTHS = (4, 32, 256)
#: Seconds of work to aim for per measurement (each is the best of REPEATS runs).
BUDGET = 0.6
REPEATS = 3


def plain_loop(network: Network, count: int, seed: int) -> np.ndarray:
    """Reference (a): one network at a time, the same draws and statistics, no vectorisation."""
    rng = np.random.default_rng(seed)
    dense = network.dense_layers
    depth = len(dense)
    act = network.layers[1].activation
    stds = [float(layer.weights.variance) ** 0.5 for layer in dense]
    out = np.empty((count, depth, 6))
    for t in range(count):
        x = rng.standard_normal(dense[0].fan_in)
        weights = [rng.standard_normal((layer.fan_out, layer.fan_in)) * std for layer, std in zip(dense, stds)]
        pre = []
        h = x
        for index, w in enumerate(weights):
            y = w @ h
            pre.append(y)
            out[t, index, 0:4] = y.mean(), (y**2).mean(), h.mean(), (h**2).mean()
            h = act.numpy(y) if index < depth - 1 else y
        grad = rng.standard_normal(dense[-1].fan_out)
        for index in range(depth - 1, -1, -1):
            dx = weights[index].T @ grad
            out[t, index, 4:6] = (grad**2).mean(), (dx**2).mean()
            if index:
                grad = dx * act.numpy_derivative(pre[index - 1])
    return out


def best_rate(run: Callable[[int], object], count: int) -> float:
    """Networks per second: the best of REPEATS timed runs of ``run(count)``."""
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        run(count)
        best = min(best, time.perf_counter() - start)
    return count / best


def calibrate(run: Callable[[int], object], start: int) -> int:
    """A count for which one run of ``run`` takes about BUDGET seconds."""
    count = start
    while True:
        began = time.perf_counter()
        run(count)
        elapsed = time.perf_counter() - began
        if elapsed > BUDGET / 4 or count > 10**7:
            return max(1, int(count * BUDGET / max(elapsed, 1e-9)))
        count *= 4


def measure(width: int) -> dict[str, float]:
    network = mlp([width] * (DEPTH + 1), "relu")
    weights = sum(layer.fan_in * layer.fan_out for layer in network.dense_layers)
    draw_rng = np.random.default_rng(0)

    def bulk(count: int) -> None:
        draw_rng.standard_normal(count * weights)

    def sampler(count: int) -> None:
        sample(network, count, seed=1)

    def loop(count: int) -> None:
        plain_loop(network, count, seed=1)

    count = calibrate(sampler, 16)
    rates = {"sampler": best_rate(sampler, count), "bulk": best_rate(bulk, count), "count": count}
    rates["loop"] = best_rate(loop, calibrate(loop, 4))
    block, chunk = default_sizes(network)
    rates["block"], rates["chunk"] = block, chunk
    return rates


def sweep(width: int) -> list[tuple[int, float]]:
    network = mlp([width] * (DEPTH + 1), "relu")
    block, _ = default_sizes(network)
    rows = []
    for multiple in (1, 2, 4, 8, 16, 64):
        chunk = block * multiple

        def run(count: int, chunk: int = chunk) -> None:
            sample(network, count, seed=1, chunk_size=chunk)

        rows.append((chunk, best_rate(run, calibrate(run, 16))))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="also time a range of chunk sizes")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} cpus, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '-')}")
    print(f"depth {DEPTH} relu MLP, He normal weights; networks per second (best of {REPEATS})\n")
    header = (f"{'width':>5}  {'block':>5}  {'chunk':>5}  {'T':>7}  {'sampler':>10}  {'loop (a)':>10}  {'bulk draw (b)':>13}"
              f"  {'sampler/loop':>12}  {'sampler/bulk':>12}")
    print(header)
    print("-" * len(header))
    for width in WIDTHS:
        r = measure(width)
        print(f"{width:>5}  {r['block']:>5}  {r['chunk']:>5}  {r['count']:>7}  {r['sampler']:>10.4g}  {r['loop']:>10.4g}  "
              f"{r['bulk']:>13.4g}  {r['sampler'] / r['loop']:>11.1f}x  {r['sampler'] / r['bulk']:>11.0%}")
    if args.sweep:
        for width in WIDTHS:
            print(f"\nchunk-size sweep, width {width}: " + ", ".join(
                f"{chunk}: {rate:.4g}/s" for chunk, rate in sweep(width)))


if __name__ == "__main__":
    main()
