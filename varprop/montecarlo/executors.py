r"""Executors: where the blocks of a sample run (this process, local processes, a Dask cluster).

The sampler splits a request into ranges of whole blocks (:func:`~varprop.montecarlo.sampler.map_blocks`)
and an executor runs one function per range and hands the results back *in range order*. Since
every block draws from its own :class:`numpy.random.SeedSequence` child and every per-network value
depends only on its block, the result is bit-identical whatever the executor, the number of workers
and the chunking.

``serial``
    This process, one range after the other (the default of the Python API).
``auto``
    ``processes`` on every CPU this process may use when there is more than one, else ``serial`` (the
    default of the command line). A sample too small to split runs in this process either way.
``processes[=N]``
    ``N`` local worker processes (default: the CPUs this process may use), through
    :class:`concurrent.futures.ProcessPoolExecutor`. Each worker is set up by :func:`prepare_worker`:
    its BLAS runs on one thread (the workers already use every core, and a BLAS thread pool per worker
    would only spin against the other workers: what Dask's workers and joblib's do too), and its
    allocator keeps the memory a chunk frees for the next chunk.
``dask[=ADDRESS]``
    A Dask distributed cluster (the optional extra ``pip install 'varprop[dask]'``): the scheduler
    at ``ADDRESS`` (``tcp://host:8786``), or a :class:`distributed.LocalCluster` of one worker
    process per CPU when no address is given.

Every executor keeps at most ``2 * workers`` ranges in flight, so the memory in use is bounded
whatever the number of networks. An executor made from a name is closed by whoever made it;
:func:`executor_from` returns one usable as a context manager (an :class:`Executor` passed in is
left open for the caller to reuse).
"""

from __future__ import annotations

import ctypes
import sys
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from .._forked import usable_cpus
from .errors import MonteCarloError

__all__ = ["Executor", "SerialExecutor", "ProcessExecutor", "DaskExecutor", "executor_from", "parse_executor",
           "EXECUTOR_NAMES", "prepare_worker"]

#: The executor names :func:`executor_from` accepts (with ``=N`` or ``=ADDRESS`` where shown).
EXECUTOR_NAMES: tuple[str, ...] = ("auto", "serial", "processes[=N]", "dask[=ADDRESS]")


_BLAS_LIMIT: list = []  # the limit object of this worker process (kept: it is what holds the limit)


def one_blas_thread() -> None:
    """Limit this process's BLAS to one thread (every local worker process: :func:`prepare_worker`).

    Local workers already run one per core; numpy's BLAS (OpenBLAS here) would start a pool of a thread per
    core in each of them, whose threads spin waiting for work when the processes share the cores (about a
    tenth of ``varprop check --all``'s CPU time, measured). The results do not depend on it (the bit-identity
    tests compare such workers with this process, whose BLAS keeps its threads).
    """
    from threadpoolctl import threadpool_limits

    _BLAS_LIMIT.append(threadpool_limits(limits=1, user_api="blas"))


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Freed memory a worker keeps for reuse: more than one chunk's temporaries (a chunk holds about 2**20
#: working floats, 8 MB; a block's draws as much again).
_KEEP_FREED_BYTES = 256 << 20
_MMAP_BYTES = 32 << 20  # glibc's own ceiling for its adaptive threshold


def retain_freed_memory() -> bool:
    """Make this process's allocator (glibc) keep freed memory for reuse rather than hand it back to the system.

    A chunk frees its temporaries (megabytes at the default sizes) before the next chunk allocates the same
    again. With glibc's defaults, whose adaptive thresholds follow the allocations seen so far, a worker
    that writes its samples into shared files (so its own heap stays small) gave that memory back after
    each chunk and faulted it in again in the next, page by page: most of the system time of ``varprop
    check --all``'s workers, which ``tests/montecarlo/test_executors.py`` reproduces on a small pattern.
    With fixed thresholds a chunk's temporaries come from the heap, which is trimmed only beyond
    ``_KEEP_FREED_BYTES`` free. Returns whether it applied (``False`` off glibc, where nothing changes).
    Only worker processes varprop starts call it: a library does not retune its caller's allocator.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED_BYTES))


def prepare_worker() -> None:
    """The initializer of every local worker process: BLAS on one thread (:func:`one_blas_thread`) and an
    allocator that keeps freed memory for the next chunk (:func:`retain_freed_memory`)."""
    one_blas_thread()
    retain_freed_memory()


def _call(task: tuple) -> Any:
    function, args = task
    return function(*args)


class Executor(ABC):
    """Runs ``function(*args)`` for each task and yields the results in task order.

    Subclasses implement :meth:`map` (pools: :class:`_Pooled`'s ``_submit`` and ``_result``). Use as a
    context manager (or call :meth:`close`) to release workers.
    """

    name = "executor"
    workers = 1
    #: True when the workers run on this machine (they may then share memory with this process).
    local = True

    @abstractmethod
    def map(self, function: Callable, tasks: Iterable[tuple]) -> Iterator[Any]:
        """``function(*task)`` for every task, in task order."""

    def close(self) -> None:
        """Release the workers (a no-op for the serial executor)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workers={self.workers})"


class SerialExecutor(Executor):
    """Every range in this process, one after the other."""

    name = "serial"

    def map(self, function: Callable, tasks: Iterable[tuple]) -> Iterator[Any]:
        for task in tasks:
            yield function(*task)


class _Pooled(Executor):
    """An executor with workers: :meth:`map` keeps a window of at most ``2 * workers`` tasks in flight."""

    def map(self, function: Callable, tasks: Iterable[tuple]) -> Iterator[Any]:
        """``function(*task)`` for every task, in order, with at most ``2 * workers`` in flight."""
        window: deque = deque()
        for task in tasks:
            window.append(self._submit(function, task))
            if len(window) >= 2 * self.workers:
                yield self._result(window.popleft())
        while window:
            yield self._result(window.popleft())

    @abstractmethod
    def _submit(self, function: Callable, task: tuple) -> Any:
        """Start ``function(*task)`` on a worker; a handle for :meth:`_result`."""

    @abstractmethod
    def _result(self, handle: Any) -> Any:
        """Wait for a started task and return its result."""


class ProcessExecutor(_Pooled):
    """Ranges on ``workers`` local processes (default: the CPUs available to this process)."""

    name = "processes"

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise MonteCarloError(f"processes needs a positive number of workers, got {workers!r}")
        self.workers = workers or usable_cpus()
        self._pool: ProcessPoolExecutor | None = None

    def _submit(self, function: Callable, task: tuple) -> Any:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, initializer=prepare_worker)
        return self._pool.submit(_call, (function, task))

    def _result(self, handle: Any) -> Any:
        return handle.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskExecutor(_Pooled):
    """Ranges on a Dask distributed cluster: the scheduler at ``address``, or a new ``LocalCluster``.

    Needs the optional extra ``dask`` (``pip install 'varprop[dask]'``). Results come back in range
    order; a cluster made here (no address) is closed with the executor.
    """

    name = "dask"
    local = False

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise MonteCarloError(
                "the dask executor needs Dask distributed: pip install 'varprop[dask]' (or 'dask[distributed]')"
            ) from None
        self.address = address
        self._cluster = None
        try:
            if address is None:
                self._cluster = LocalCluster(n_workers=workers or usable_cpus(), threads_per_worker=1, processes=True,
                                             dashboard_address=None)
                self._client = Client(self._cluster)
            else:
                self._client = Client(address, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            self.close()
            raise MonteCarloError(f"cannot reach a Dask scheduler at {address!r}: {exc}") from None
        self.workers = max(1, len(self._client.scheduler_info().get("workers", {})) or (workers or 1))

    def _submit(self, function: Callable, task: tuple) -> Any:
        return self._client.submit(function, *task, pure=False)

    def _result(self, handle: Any) -> Any:
        result = handle.result()
        handle.release()
        return result

    def close(self) -> None:
        client, cluster = getattr(self, "_client", None), self._cluster
        if client is not None:
            client.close()
            self._client = None
        if cluster is not None:
            cluster.close()
            self._cluster = None

    def __repr__(self) -> str:
        return f"DaskExecutor(address={self.address!r}, workers={self.workers})"


class _Borrowed(Executor):
    """An executor given by the caller: used, and left open for the caller to close."""

    def __init__(self, inner: Executor) -> None:
        self.inner, self.name, self.workers, self.local = inner, inner.name, inner.workers, inner.local

    def map(self, function: Callable, tasks: Iterable[tuple]) -> Iterator[Any]:
        return self.inner.map(function, tasks)


def parse_executor(spec: object) -> tuple[str, str]:
    """``(name, argument)`` of an executor name such as ``"processes=4"``, checked, nothing started."""
    if not isinstance(spec, str):
        raise MonteCarloError(f"executor must be a name ({', '.join(EXECUTOR_NAMES)}) or an Executor, got {spec!r}")
    name, _, argument = spec.strip().partition("=")
    if name in ("serial", "auto") and not argument:
        return name, argument
    if name == "processes":
        if argument and (not argument.isdigit() or int(argument) < 1):
            raise MonteCarloError(f"processes=N needs a positive number of workers, got {spec!r}")
        return name, argument
    if name == "dask":
        return name, argument
    raise MonteCarloError(f"unknown executor {spec!r}; accepted: {', '.join(EXECUTOR_NAMES)}")


def executor_from(spec: Executor | str | None) -> Executor:
    """An executor from its name: ``None``/``"serial"``, ``"auto"``, ``"processes[=N]"``, ``"dask[=ADDRESS]"``, or one given.

    Raises
    ------
    MonteCarloError
        For an unknown name, a bad worker count, a missing Dask installation or an unreachable scheduler.
    """
    if spec is None:
        return SerialExecutor()
    if isinstance(spec, Executor):
        return _Borrowed(spec)
    name, argument = parse_executor(spec)
    if name == "processes":
        return ProcessExecutor(int(argument) if argument else None)
    if name == "dask":
        return DaskExecutor(argument or None)
    if name == "auto" and usable_cpus() > 1:
        return ProcessExecutor()
    return SerialExecutor()
