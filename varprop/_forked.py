"""Independent pieces of work (derivations) run in forked copies of this process, results in order.

Derivations are sympy work in one Python process: while ``varprop check --all`` derives its claims
(about a fifth of the command's time before this module), the sampling workers have nothing to do.
:func:`map_forked` runs zero-argument callables in worker processes forked from this one, so the
callables (closures over catalogue entries included) need not be picklable; only their results travel
back, pickled. The results are the same objects as those computed here: derivations are deterministic.

It falls back to running the callables here, one after the other, wherever forking is unavailable or
not worth it: one usable CPU, fewer than two callables, no ``fork`` start method (Windows, and macOS by
default), or a process that is itself a worker (a report topic's worker derives its own claims in turn
rather than fork a pool of its own inside a pool).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

__all__ = ["map_forked", "usable_cpus"]

T = TypeVar("T")

#: The callables of the running :func:`map_forked`, inherited by its forked workers (read by index).
_TASKS: Sequence[Callable[[], object]] = ()


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _run(index: int) -> object:
    return _TASKS[index]()


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods() and multiprocessing.parent_process() is None


def map_forked(tasks: Sequence[Callable[[], T]], *, workers: int | None = None) -> list[T]:
    """``[task() for task in tasks]``, computed in up to ``workers`` (default: the usable CPUs) forked processes.

    An exception raised by a task is raised here, as the task raised it. Each worker process takes the
    next task as it finishes one, so long and short tasks share the workers evenly.
    """
    global _TASKS
    workers = min(usable_cpus() if workers is None else workers, len(tasks))
    if workers < 2 or not _can_fork():
        return [task() for task in tasks]
    _TASKS = tasks
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_run, range(len(tasks))))
    finally:
        _TASKS = ()
