"""Calibration of the checker's verdicts: false FAILs, INCONCLUSIVE rate and power, over many seeds.

For each seed (1000, 1001, ...) at the default settings (pilot-sized samples, rtol = 0.01,
alpha = 0.05, 90 % power):

* every correct catalogue claim is checked **alone** (``varprop check NAME``): a FAIL is a false
  alarm. An exact or gaussian-exact claim is tested at its predicted value, so its false-FAIL rate
  should be within 2 SE of alpha. An asymptotic claim FAILs only when the limit fitted over its sweep
  is significantly away from the prediction *and* beyond rtol (the tolerance a limit extrapolated
  from finite widths is given), so at a correct prediction its rate is far below alpha by design; the
  table counts the two classes apart;
* the whole catalogue is checked **together** (``varprop check --all``): a run with any FAIL is a
  false alarm, whose rate per run should be within 2 SE of alpha (Holm holds the family-wise rate);
* optionally (``--heavy``, or ``--heavy-only`` into a log of their own that ``--merge`` joins to the
  table) heavy-tailed correct claims are checked alone: the norm ratio
  :math:`E[\\|x_L\\|^2/\\|x_1\\|^2]` of a width-10, depth-10 relu net (skewness near 40);
* **copies** of exact and asymptotic claims whose prediction is multiplied by 1 +- 0.5 %, 1 %, 2 % and
  5 % are checked alone: their FAIL rate is the power (the target: at least 90 % at 2 %).

Every rate is printed with its binomial SE :math:`\\sqrt{p(1-p)/N}` (with Laplace's
:math:`p = (k + 1)/(N + 2)` for a count of 0 or N, so an empty or full count still carries an SE),
and the table is written as Markdown (``--out``). INCONCLUSIVE rates are over the correct claims checked alone (target: at most 10 %).

Run (the full calibration takes hours; run it when the machine is free)::

    nice python benchmarks/calibration.py --seeds 200 --workers 2 --out calibration.md

With ``--log FILE`` every finished seed is appended to FILE as a JSON line, and a run started again
with the same log skips the seeds already there, so the calibration can be spread over several
sittings; the table is always made from every seed in the log.

and a smoke run: ``python benchmarks/calibration.py --seeds 2 --copies he-forward-relu-normal``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import sympy as sp

from varprop.activations import activation
from varprop.catalogue import CATALOGUE, claim_from_derivation, family
from varprop.claims import ClaimFamily
from varprop.montecarlo import check, check_all
from varprop.network import mlp
from varprop.observables import NormRatio, Signal
from varprop.weights import he

OFFSETS = (0.005, 0.01, 0.02, 0.05)
#: Default claims whose copies are checked: two exact, two asymptotic (cheap at the defaults).
DEFAULT_COPIES = ("he-forward-relu-normal", "relu-mean-fixed-input", "he-backward-fan-in-equal", "relu-mean-uniform")


def _copy(name: str, factor: float) -> ClaimFamily:
    entry = family(name)
    label = f"{name} x{factor:g}"
    ratio = sp.nsimplify(factor)
    return ClaimFamily(label, entry.description,
                       lambda n: entry.at(n).with_prediction(entry.at(n).prediction * ratio, name=label),
                       entry.width, entry.sweep)


def _heavy():
    net = mlp([10] * 11, activation("relu"), he())
    return [claim_from_derivation("E[M_L] relu width 10 depth 10", net, NormRatio(Signal(len(net.layers) - 1)))]


def one_seed(job: tuple[int, tuple[str, ...], bool, bool, bool]) -> dict[str, object]:
    seed, copies, heavy, together, heavy_only = job
    out: dict[str, object] = {"seed": seed}
    if heavy_only:
        out["heavy"] = {claim.name: check(claim, seed=seed).outcome for claim in _heavy()}
        return out
    out["alone"] = {name: check(entry, seed=seed).outcome for name, entry in CATALOGUE.items()}
    if together:
        out["all"] = {r.name: r.outcome for r in check_all(list(CATALOGUE.values()), seed=seed)}
    if heavy:
        out["heavy"] = {claim.name: check(claim, seed=seed).outcome for claim in _heavy()}
    out["copies"] = {
        (name, sign * offset): check(_copy(name, 1 + sign * offset), seed=seed).outcome
        for name in copies for offset in OFFSETS for sign in (-1, 1)
    }
    return out


def _encode(run: dict[str, object]) -> str:
    if "copies" not in run:
        return json.dumps(run)
    copies = [[name, offset, outcome] for (name, offset), outcome in run["copies"].items()]
    return json.dumps({**run, "copies": copies})


def _decode(line: str) -> dict[str, object]:
    run = json.loads(line)
    if "copies" in run:
        run["copies"] = {(name, offset): outcome for name, offset, outcome in run["copies"]}
    return run


def read_log(path: str) -> list[dict[str, object]]:
    """Every seed's outcomes recorded in the JSON-lines log at ``path`` (none if it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [_decode(line) for line in handle if line.strip()]


def merge_logs(*logs: list[dict[str, object]]) -> list[dict[str, object]]:
    """One run per seed from several logs (e.g. the catalogue's and a ``--heavy-only`` one), their parts joined."""
    merged: dict[int, dict[str, object]] = {}
    for log in logs:
        for run in log:
            merged.setdefault(run["seed"], {}).update(run)
    return [merged[seed] for seed in sorted(merged)]


def _rate(count: int, total: int) -> tuple[float, float]:
    p = count / total if total else math.nan
    q = p if 0 < p < 1 else (count + 1) / (total + 2)
    return p, math.sqrt(q * (1 - q) / total) if total else math.nan


def _row(label: str, count: int, total: int, alpha: float, target: str) -> str:
    p, se = _rate(count, total)
    return f"| {label} | {count} / {total} | {100 * p:.2f}% | {100 * se:.2f}% | {target} |"


def table(runs: list[dict[str, object]], alpha: float, copies: tuple[str, ...]) -> str:
    heavy_runs = [run for run in runs if "heavy" in run]
    runs = [run for run in runs if "alone" in run]
    seeds = len(runs)
    lines = [(f"Calibration over {seeds} seeds at the defaults (rtol = 0.01, alpha = {alpha}, 90 % power); "
              "binomial SEs."), "", "| quantity | count | rate | SE | target |", "|---|---|---|---|---|"]
    kinds = {n: CATALOGUE[n].at().exactness for n in CATALOGUE}
    names = [n for n in CATALOGUE if kinds[n] != "approximation"]
    # A log can hold seeds run on an older catalogue: each seed counts the claims it checked.
    alone = [run["alone"][n] for run in runs for n in names if n in run["alone"]]
    for label, chosen, target in (
            ("exact and gaussian-exact claims (tested at the predicted value)", ("exact", "gaussian-exact"),
             f"within 2 SE of alpha = {alpha}"),
            ("asymptotic claims (FAIL only when the fitted limit is significantly beyond rtol)", ("asymptotic",),
             f"<= alpha = {alpha}")):
        outcomes = [run["alone"][n] for run in runs for n in names if n in run["alone"] and kinds[n] in chosen]
        lines.append(_row(f"false FAIL alone, {label}", outcomes.count("FAIL"), len(outcomes), alpha, target))
    lines.append(_row("INCONCLUSIVE, each correct claim checked alone", alone.count("INCONCLUSIVE"), len(alone),
                      alpha, "<= 10%"))
    if all("all" in run for run in runs):
        failed = sum(any(run["all"].get(n) == "FAIL" for n in names) for run in runs)
        lines.append(_row("runs of `check --all` with a false FAIL", failed, seeds, alpha, f"alpha = {alpha}"))
        together = [run["all"][n] for run in runs for n in names if n in run["all"]]
        lines.append(_row("INCONCLUSIVE within `check --all`", together.count("INCONCLUSIVE"), len(together),
                          alpha, "<= 10%"))
    if heavy_runs:
        heavy = [o for run in heavy_runs for o in run["heavy"].values()]
        claims = ", ".join(sorted({name for run in heavy_runs for name in run["heavy"]}))
        lines.append(_row(f"false FAIL, heavy-tailed claims alone ({claims}; {len(heavy_runs)} seeds)",
                          heavy.count("FAIL"), len(heavy), alpha, f"<= alpha = {alpha}"))
        lines.append(_row("INCONCLUSIVE, heavy-tailed claims alone", heavy.count("INCONCLUSIVE"), len(heavy), alpha,
                          ""))
    for kind in ("exact", "gaussian-exact", "asymptotic"):
        chosen = [n for n in copies if CATALOGUE[n].at().exactness == kind]
        if not chosen:
            continue
        for offset in OFFSETS:
            outcomes = [run["copies"][(n, sign * offset)] for run in runs for n in chosen for sign in (-1, 1)
                        if (n, sign * offset) in run.get("copies", {})]
            target = ">= 90%" if offset == 0.02 else ""
            lines.append(_row(f"FAIL of {kind} copies off by {100 * offset:g}% ({', '.join(chosen)})",
                              outcomes.count("FAIL"), len(outcomes), alpha, target))
    return "\n".join(line for line in lines if "| 0 / 0 |" not in line)  # rows with nothing measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200, help="seeds to run (at least 200 for the published table)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--copies", nargs="*", default=list(DEFAULT_COPIES), metavar="NAME",
                        help="catalogue claims whose off-by-x%% copies are checked")
    parser.add_argument("--heavy", action="store_true", help="also check heavy-tailed claims alone")
    parser.add_argument("--heavy-only", action="store_true",
                        help="check only the heavy-tailed claims (their own --log; --merge joins the logs' tables)")
    parser.add_argument("--merge", nargs="*", default=[], metavar="LOG",
                        help="further logs whose seeds are joined into the table (e.g. a --heavy-only log)")
    parser.add_argument("--no-all", action="store_true", help="skip the `check --all` runs")
    parser.add_argument("--out", default=None, help="write the Markdown table here")
    parser.add_argument("--log", default=None, metavar="FILE",
                        help="append each seed's outcomes to FILE (JSON lines) and skip seeds already there")
    args = parser.parse_args()
    if args.seeds < 1 or args.workers < 1:
        parser.error("--seeds and --workers must be at least 1")
    unknown = [n for n in args.copies if n not in CATALOGUE]
    if unknown:
        parser.error(f"unknown claim {unknown[0]!r}; known: {', '.join(CATALOGUE)}")
    start = time.perf_counter()
    runs = read_log(args.log) if args.log else []
    logged = {run["seed"] for run in runs}
    jobs = [(seed, tuple(args.copies), args.heavy, not args.no_all, args.heavy_only)
            for seed in range(1000, 1000 + args.seeds) if seed not in logged]
    if logged:
        print(f"  {len(logged)} seeds read from {args.log}; {len(jobs)} to run", file=sys.stderr, flush=True)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for done, run in enumerate(pool.map(one_seed, jobs), 1):
            runs.append(run)
            if args.log:
                with open(args.log, "a", encoding="utf-8") as handle:
                    handle.write(_encode(run) + "\n")
            print(f"  {done}/{len(jobs)} seeds, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    runs = merge_logs(runs, *(read_log(path) for path in args.merge))
    runs = [run for run in runs if run["seed"] < 1000 + args.seeds]
    text = table(runs, 0.05, tuple(args.copies))
    text += f"\n\n{len(runs)} seeds; the last {len(jobs)} in {time.perf_counter() - start:.0f} s with " \
            f"{args.workers} worker(s): `python benchmarks/calibration.py --seeds {args.seeds}`.\n"
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
