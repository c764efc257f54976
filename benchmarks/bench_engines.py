"""Speed of the conditional-Gaussian engine, of both cores, peak memory, and the long commands, in one run.

Depth-10 He-initialised relu MLPs, forward and backward pass with every observable recorded
(what :func:`varprop.montecarlo.sample` always records). Rates are per second of CPU time of this
process (numpy is single-threaded here): the machine is shared with other jobs, and wall time
would also count the waits for a core. Measured, each against its target:

1. ``conditional`` engine rate / the **bulk-draw rate** of full matrices (the networks per second
   at which ``rng.standard_normal`` can merely draw their weights, timed on 2**24 numbers per
   call; no full-matrix sampler can beat it by much): widths 256 (target >= 100x) and 4096
   (>= 1000x); at width 4, conditional rate / full-engine rate (target >= 1, not slower).
2. **both cores**: :func:`varprop.montecarlo.streaming.stream_estimates` of 10**6 networks at
   width 32 (every signal and gradient second moment and every weight-gradient variance), two
   local processes against one (target >= 1.7x on this 2-core machine). The two results are
   also compared bit for bit.
3. **peak memory**: peak RSS of a fresh process streaming 10**7 networks at width 4, against the
   same process streaming 10**5 networks (target: bounded, i.e. about the same).
4. **commands**: ``varprop check --all`` (< 20 s), ``varprop report`` (< 40 s) and a claim
   checked at width 4096 (< 30 s), wall time in fresh processes: the median of three runs each
   (``--runs``), every run shown; a command that writes anything to stderr under ``--quiet`` fails.

It also times blocks at width 65536 and prints what checking a claim on 10**9 networks costs in
core-hours (the figure ``docs/engines.rst`` refers to).

Run from the repository root (about 9 minutes)::

    python benchmarks/bench_engines.py            # everything
    python benchmarks/bench_engines.py --quick    # rates and the width-4096 check only
    python benchmarks/bench_engines.py --cores    # the two-core measurement only
    python benchmarks/bench_engines.py --commands # the commands only (each with a target run --runs times)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from varprop.montecarlo import sample  # noqa: E402
from varprop.network import mlp  # noqa: E402

DEPTH = 10
BUDGET = 1.0  # seconds of work per timed run
REPEATS = 2
RUNS = 3  # runs of each command with a target (the median is judged)


# Rates are per second of this process's CPU time (time.process_time; numpy runs single-threaded
# here): on a machine shared with other jobs, wall time also counts the waits for a core, which
# differ from one measurement to the next and would make the ratios noise.
CLOCK = time.process_time


def _best(run: Callable[[int], object], count: int) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        start = CLOCK()
        run(count)
        best = min(best, CLOCK() - start)
    return count / best


def _calibrated_rate(run: Callable[[int], object], start: int) -> tuple[float, int]:
    """(networks per CPU second, count) for a count whose run takes about BUDGET seconds."""
    count = start
    while True:
        began = CLOCK()
        run(count)
        elapsed = CLOCK() - began
        if elapsed > BUDGET / 4:
            count = max(1, int(count * BUDGET / elapsed))
            return _best(run, count), count
        count *= 4


def seconds_per_number(numbers: int = 1 << 24, call: int | None = None) -> float:
    """CPU seconds numpy takes per standard normal: one call of ``numbers`` into a fresh array (``call=None``,
    the bulk draw; 128 MB, so bound by memory bandwidth and sensitive to other jobs), or ``numbers`` drawn in
    calls of ``call`` into one reused, cache-sized buffer (the fastest way numpy draws them)."""
    rng = np.random.default_rng(0)
    best = float("inf")
    for _ in range(3):
        start = CLOCK()
        if call is None:
            rng.standard_normal(numbers)
        else:
            buffer = np.empty(call)
            for _ in range(numbers // call):
                rng.standard_normal(out=buffer)
        best = min(best, CLOCK() - start)
    return best / numbers


def bulk_draw_rate(weights_per_network: int, call: int | None = None) -> float:
    """Networks per CPU second at which numpy draws the full matrices' weights (2**24 numbers per call, or in
    cache-sized calls of ``call``)."""
    return 1.0 / seconds_per_number(call=call) / weights_per_network


def rates() -> list[dict[str, object]]:
    rows = []
    for width in (4, 256, 4096):
        network = mlp([width] * (DEPTH + 1), "relu")
        weights = sum(layer.fan_in * layer.fan_out for layer in network.dense_layers)
        conditional, count = _calibrated_rate(lambda t: sample(network, t, seed=1, engine="conditional"), 16)
        row = {"width": width, "conditional": conditional, "count": count, "bulk": bulk_draw_rate(weights),
               "bulk_cached": bulk_draw_rate(weights, call=1 << 15)}
        if width <= 256:
            row["full"], _ = _calibrated_rate(lambda t: sample(network, t, seed=1, engine="full"), 4)
        rows.append(row)
    return rows


def cluster_cost(width: int = 65536, networks: float = 1e9) -> dict[str, float]:
    """Measured time per block at ``width`` (conditional engine, depth 10, one core), and what
    ``networks`` networks cost: core-hours, and hours on 100 cores."""
    from varprop.montecarlo.sampler import default_sizes

    network = mlp([width] * (DEPTH + 1), "relu")
    block, _ = default_sizes(network, "conditional")
    blocks = 8
    sample(network, block, seed=0, engine="conditional")  # warm up
    start = CLOCK()
    sample(network, blocks * block, seed=1, engine="conditional")
    per_block = (CLOCK() - start) / blocks
    core_hours = networks / block * per_block / 3600
    return {"width": width, "block": block, "per_block": per_block, "core_hours": core_hours}


def _stream_observables(network):
    from varprop.observables import Gradient, SecondMoment, Signal, Variance, WeightGradient

    observables = []
    for p in range(-1, len(network.layers)):
        observables += [SecondMoment(Signal(p)), SecondMoment(Gradient(p))]
        if p in network.dense_positions:
            observables.append(Variance(WeightGradient(p)))
    return observables


def cores(count: int = 10**6, width: int = 32) -> dict[str, float]:
    """Wall and CPU seconds (this process and its workers) of one stream on one core and on two processes."""
    from varprop.montecarlo import executor_from
    from varprop.montecarlo.streaming import stream_estimates

    network = mlp([width] * (DEPTH + 1), "relu")
    observables = _stream_observables(network)
    out: dict[str, float] = {}
    results = {}
    for name in ("serial", "processes=2"):
        executor = executor_from(name)
        if name != "serial":  # start the workers before timing
            stream_estimates(network, observables[:1], 4096, seed=9, executor=executor)
        before = os.times()
        start = time.perf_counter()
        results[name] = stream_estimates(network, observables, count, seed=3, executor=executor)
        out[name] = time.perf_counter() - start
        executor.close()  # the workers' CPU time is counted once they have exited
        after = os.times()
        out[name + " cpu"] = sum(getattr(after, f) - getattr(before, f)
                                 for f in ("user", "system", "children_user", "children_system"))
    out["identical"] = float(results["serial"].estimates == results["processes=2"].estimates)
    return out


_RSS_SCRIPT = """
import resource, sys
sys.path.insert(0, {root!r})
from varprop.network import mlp
from varprop.montecarlo.streaming import stream_estimates
from varprop.observables import SecondMoment, Signal, Gradient
network = mlp([4] * 11, "relu")
result = stream_estimates(network, [SecondMoment(Signal(18)), SecondMoment(Gradient(-1))], {count}, seed=0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, result.estimates[SecondMoment(Signal(18))].n)
"""


def peak_rss(count: int) -> tuple[float, float, int]:
    """(peak RSS in MB, seconds, networks) of a fresh process streaming ``count`` networks at width 4."""
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", _RSS_SCRIPT.format(root=ROOT, count=count)],
                         capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - start
    kilobytes, networks = run.stdout.split()
    return int(kilobytes) / 1024, elapsed, int(networks)


class _CountingGenerator:
    """A numpy Generator that counts the random numbers its methods return (every draw the engines make)."""

    counted = 0

    def __init__(self, bit_generator) -> None:
        self._inner = _REAL_GENERATOR(bit_generator)

    def __getattr__(self, name: str):
        method = getattr(self._inner, name)

        def counting(*args, **kwargs):
            result = method(*args, **kwargs)
            _CountingGenerator.counted += int(np.size(result))
            return result

        return counting


_REAL_GENERATOR = np.random.Generator


def _numbers_per_network(network, engine: str, observables) -> float:
    """Random numbers one network of ``network`` takes when sampled for ``observables`` (counted, one block)."""
    from varprop.montecarlo.sampler import compute_range, make_job

    job = make_job(network, 1, seed=0, engine=engine, observables=list(observables))
    _CountingGenerator.counted = 0
    np.random.Generator = _CountingGenerator
    try:
        compute_range(job, 0, 1)
    finally:
        np.random.Generator = _REAL_GENERATOR
    return _CountingGenerator.counted / job.block


def check_all_draw_floor(report: str) -> tuple[float, float]:
    """(random numbers ``check --all`` drew, the CPU seconds numpy needs merely to draw them in cache-sized calls).

    From the ``--json`` output: every (claim, width) measurement names its networks and engine; claims about one
    network share its sample (the largest count), sampled for their observables only (what the checker does:
    ``sample(..., observables=)``), and every network also had a pilot. The numbers one network takes are
    counted on one block with a counting generator. The floor shows how much of the command's time no
    implementation of the sampler can save at the sample sizes the verdicts need.
    """
    import json

    from varprop.catalogue import CATALOGUE
    from varprop.montecarlo.check import _PILOT

    counts: dict = {}
    observables: dict = {}
    for result in json.loads(report)["results"]:
        family = CATALOGUE.get(result["name"])
        if family is None:  # a law claim: its own fixed sample, not part of the draw floor
            continue
        for measurement in result["measurements"]:
            claim = family.at(measurement["width"])
            key = (claim.network, measurement["engine"])
            counts[key] = max(counts.get(key, 0), int(measurement["networks"]))
            observables.setdefault(key, {})[claim.observable] = None
    numbers = sum((count + _PILOT) * _numbers_per_network(network, engine, observables[network, engine])
                  for (network, engine), count in counts.items())
    return float(numbers), numbers * seconds_per_number(call=1 << 15)


def command(argv: list[str]) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds of the process and its children, exit code, stderr) of one fresh ``varprop`` run.

    On a machine shared with other jobs the wall time includes waiting for a core; the CPU time
    does not (it is what the command costs on an idle machine, to the effect of shared caches).
    """
    import resource

    env = dict(os.environ, PYTHONPATH=ROOT)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "varprop.cli", *argv], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result.returncode, result.stderr


def section_rates() -> bool:
    ok = True
    print(f"\n1. depth {DEPTH} relu MLP, He normal weights, forward + backward, every observable "
          f"(networks per CPU second)")
    print(f"{'width':>6} {'conditional':>12} {'full engine':>12} {'bulk draw':>12} {'cond/bulk':>10} {'cond/full':>10}")
    targets = {256: 100.0, 4096: 1000.0}
    for row in rates():
        full = row.get("full")
        ratio_bulk = row["conditional"] / row["bulk"]
        ratio_full = None if full is None else row["conditional"] / full
        print(f"{row['width']:>6} {row['conditional']:>12.4g} {full or float('nan'):>12.4g} {row['bulk']:>12.4g} "
              f"{ratio_bulk:>9.1f}x {'' if ratio_full is None else f'{ratio_full:.2f}x':>10}")
        if row["width"] in targets:
            met = ratio_bulk >= targets[row["width"]]
            ok &= met
            print(f"       target conditional/bulk >= {targets[row['width']]:.0f}x: {'met' if met else 'MISSED'}; against "
                  f"draws in cache-sized calls of 2^15 numbers ({row['bulk_cached']:.4g} networks/s, the fastest way "
                  f"numpy draws them): {row['conditional'] / row['bulk_cached']:.1f}x")
        if row["width"] == 4:
            met = ratio_full >= 1.0
            ok &= met
            print(f"       target conditional/full >= 1 at width 4: {'met' if met else 'MISSED'}")
    return ok


def section_cores() -> bool:
    print("\n2. both cores: stream_estimates of 10^6 networks at width 32, depth 10")
    c = cores()
    speedup = c["serial"] / c["processes=2"]
    print(f"   one core {c['serial']:.1f} s, two processes {c['processes=2']:.1f} s: {speedup:.2f}x "
          f"(target >= 1.7x: {'met' if speedup >= 1.7 else 'MISSED'}); "
          f"results bit-identical: {bool(c['identical'])}")
    waited = c["serial"] > 1.2 * c["serial cpu"]  # wall well above CPU: the one-core run waited for a core
    print(f"   CPU time: one core {c['serial cpu']:.1f} s, two processes {c['processes=2 cpu']:.1f} s in all "
          f"(this process and its workers); the CPU times bound the speedup on two idle cores at "
          f"{2 * c['serial cpu'] / c['processes=2 cpu']:.2f}x"
          + (f" ({c['serial']:.1f} s wall for {c['serial cpu']:.1f} s CPU: other jobs held the cores)" if waited else ""))
    return speedup >= 1.7 and bool(c["identical"])


def section_memory() -> bool:
    print("\n3. peak RSS of a fresh process streaming networks at width 4, depth 10")
    small = peak_rss(10**5)
    large = peak_rss(10**7)
    for (mb, seconds, networks) in (small, large):
        print(f"   {networks:>9} networks: peak RSS {mb:.0f} MB ({seconds:.0f} s)")
    bounded = large[0] <= 1.25 * small[0] + 20
    print(f"   10^7 / 10^5 networks: peak RSS x{large[0] / small[0]:.2f} (target: bounded): "
          f"{'met' if bounded else 'MISSED'}")
    cost = cluster_cost()
    print(f"\n   cluster cost: at width {cost['width']} (depth {DEPTH}) one block of {cost['block']} network(s) takes "
          f"{cost['per_block']:.3f} CPU s on one core: 10^9 networks = {cost['core_hours']:.0f} core-hours "
          f"({cost['core_hours'] / 100:.1f} h on 100 cores)")
    return bounded


def section_commands(quick: bool, runs_per_command: int = RUNS) -> bool:
    ok = True
    print("\n4. commands (fresh processes; wall time, and CPU time, which excludes waiting for a shared core)")
    commands = {"varprop check he-forward-relu-normal --width 4096": (["check", "he-forward-relu-normal", "--width",
                                                                         "4096", "--quiet"], 30.0)}
    with tempfile.TemporaryDirectory() as tmp:
        if not quick:
            commands["varprop check --all"] = (["check", "--all", "--quiet"], 20.0)
            commands["varprop check --all --engine full (reference)"] = (["check", "--all", "--quiet", "--engine",
                                                                         "full"], None)
            commands["varprop report"] = (["report", "--quiet", "--out", tmp], 40.0)
        if not quick:
            env = dict(os.environ, PYTHONPATH=ROOT)
            report = subprocess.run([sys.executable, "-m", "varprop.cli", "check", "--all", "--json", "--quiet"],
                                    capture_output=True, text=True, env=env).stdout
            numbers, floor = check_all_draw_floor(report)
            print(f"   varprop check --all draws {numbers:.3g} random numbers (pilots included): {floor:.1f} CPU s for "
                  f"numpy merely to draw them, {floor / 2:.1f} s on 2 idle cores")
        for label, (argv, target) in commands.items():
            if target is None:
                wall, cpu, code, _ = command(argv)
                print(f"   {label:<52} {wall:6.1f} s wall, {cpu:6.1f} s CPU (exit {code})")
                continue
            # Other jobs share this machine: one run's wall time moves by a second or two; the median of
            # several runs is what is judged, and every run is shown.
            runs = [command(argv) for _ in range(runs_per_command)]
            wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            codes = {r[2] for r in runs}
            noise = next((r[3] for r in runs if r[3]), "")  # anything written to stderr under --quiet is a failure
            met = wall < target and codes == {0} and not noise
            ok &= met
            shown = ", ".join(f"{r[0]:.1f}" for r in runs)
            print(f"   {label:<52} {wall:6.1f} s wall, {cpu:6.1f} s CPU, median of {len(runs)} (walls {shown}; "
                  f"target < {target:.0f} s, exit {'/'.join(map(str, sorted(codes)))}): {'met' if met else 'MISSED'}")
            if noise:
                print(f"      stderr under --quiet: {noise[-500:]}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="rates and the width-4096 check only")
    parser.add_argument("--cores", action="store_true", help="the two-core measurement only (a brief re-measure)")
    parser.add_argument("--commands", action="store_true", help="the commands only (section 4)")
    parser.add_argument("--runs", type=int, default=RUNS, metavar="N",
                        help=f"runs of each command with a target, whose median is judged (default {RUNS})")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} cpus, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} (other jobs share this machine)")
    if args.cores:
        return 0 if section_cores() else 1
    if args.commands:
        return 0 if section_commands(False, args.runs) else 1
    ok = section_rates()
    if not args.quick:
        ok &= section_cores()
        ok &= section_memory()
    ok &= section_commands(args.quick, args.runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
