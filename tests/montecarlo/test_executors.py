"""Results are bit-identical whatever the executor, the number of workers and the chunking.

The Dask test runs a LocalCluster of two worker processes (CI must install the ``dask`` extra:
``pip install -e '.[dask]'``); it is skipped only when Dask distributed is not installed.
"""

from __future__ import annotations

import inspect
import platform
import subprocess
import sys

import numpy as np
import pytest

from varprop.montecarlo import MonteCarloError, ProcessExecutor, estimate, executor_from, sample
from varprop.montecarlo.streaming import Moments, stream_estimates
from varprop.network import mlp
from varprop.observables import Gradient, Mean, NormRatio, SecondMoment, Signal, Variance, WeightGradient
from varprop.weights import Uniform

NETWORKS = {
    "conditional": mlp([6, 10, 3], bias_variance=0.1),
    "full": mlp([6, 10, 3], init=Uniform(0.5)),
}
OBSERVABLES = (Mean(Signal(0)), SecondMoment(Gradient(-1)), Variance(Signal(2)), NormRatio(Signal(2)),
               SecondMoment(WeightGradient(2)), Variance(WeightGradient(0)))
COUNT = 3_000
SIZES = {"block_size": 64, "chunk_size": 128}


def _same(a, b) -> None:
    assert a.engine == b.engine
    assert a.per_position.keys() == b.per_position.keys()
    for name in a.per_position:
        assert np.array_equal(a.per_position[name], b.per_position[name]), name
    assert np.array_equal(a.finite, b.finite)


@pytest.fixture(scope="module")
def serial():
    return {engine: sample(network, COUNT, seed=7, engine=engine, correlation=True, **SIZES)
            for engine, network in NETWORKS.items()}


@pytest.mark.parametrize("engine", NETWORKS)
def test_processes_and_chunking_give_the_serial_samples_bit_for_bit(engine, serial):
    network = NETWORKS[engine]
    for executor, chunk in (("processes=2", 128), (ProcessExecutor(3), 64), ("serial", 1024), ("auto", 128)):
        with executor_from(executor) as runner:
            other = sample(network, COUNT, seed=7, engine=engine, correlation=True, block_size=64, chunk_size=chunk,
                           executor=runner)
        _same(serial[engine], other)
        if isinstance(executor, ProcessExecutor):
            executor.close()


@pytest.mark.parametrize("unit", [1 << 15, 256], ids=["one unit", "units of 4 blocks"])
def test_streaming_estimates_are_those_of_the_stored_samples_and_bit_identical_across_executors(unit, monkeypatch):
    import varprop.montecarlo.streaming as streaming

    monkeypatch.setattr(streaming, "_UNIT_NETWORKS", unit)  # forked workers inherit it
    network = NETWORKS["conditional"]
    stored = sample(network, COUNT, seed=7, engine="conditional", **SIZES)
    streamed = stream_estimates(network, OBSERVABLES, COUNT, seed=7, engine="conditional", **SIZES)
    for observable in OBSERVABLES:
        direct = estimate(stored, observable)
        got = streamed.estimates[observable]
        assert got.n == direct.n
        assert got.value == pytest.approx(direct.value, rel=1e-12)
        assert got.se == pytest.approx(direct.se, rel=1e-10)
    other = stream_estimates(network, OBSERVABLES, COUNT, seed=7, engine="conditional", block_size=64,
                             chunk_size=320, executor="processes=2")
    assert other.estimates == streamed.estimates


def test_moments_merge_like_the_whole_sample():
    values = np.random.default_rng(1).standard_exponential((1001, 2))
    merged = Moments.of(values[:300]).merge(Moments.of(values[300:])).merge(Moments.of(values[:0]))
    whole = Moments.of(values)
    centred = values[:, 0] - values[:, 0].mean()
    assert merged.n == 1001
    assert np.allclose(merged.mean, values.mean(axis=0), rtol=1e-13)
    assert np.allclose(merged.covariance(), np.cov(values.T), rtol=1e-12)
    assert merged.third == pytest.approx(float(np.sum(centred**3)), rel=1e-12)
    assert merged.skewness == pytest.approx(whole.skewness, rel=1e-12)


def test_auto_uses_every_cpu_and_one_cpu_serially(monkeypatch):
    import varprop.montecarlo.executors as executors

    for cpus, kind in ((2, "processes"), (1, "serial")):
        monkeypatch.setattr(executors, "usable_cpus", lambda: cpus)
        with executor_from("auto") as runner:
            assert runner.name == kind and runner.workers == cpus


def test_bad_executors_are_named():
    for spec, message in (("threads", "unknown executor 'threads'"), ("processes=0", "positive number"),
                          (3, "executor must be a name"), ("auto=2", "unknown executor 'auto=2'")):
        with pytest.raises(MonteCarloError, match=message):
            executor_from(spec)


def test_dask_local_cluster_of_two_workers_gives_the_serial_result_bit_for_bit(serial):
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    from varprop.montecarlo import DaskExecutor

    with DaskExecutor(workers=2) as cluster:
        assert cluster.workers == 2
        for engine, network in NETWORKS.items():
            _same(serial[engine], sample(network, COUNT, seed=7, engine=engine, correlation=True, executor=cluster,
                                         **SIZES))
        network = NETWORKS["conditional"]
        streamed = stream_estimates(network, OBSERVABLES, COUNT, seed=7, engine="conditional", executor=cluster, **SIZES)
    assert streamed.estimates == stream_estimates(network, OBSERVABLES, COUNT, seed=7, engine="conditional",
                                                  **SIZES).estimates


def _blas_threads() -> int:
    from threadpoolctl import threadpool_info

    return max(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")


def test_local_workers_run_blas_on_one_thread_and_leave_this_process_alone():
    # Workers already take every core; a BLAS thread pool in each would spin against the others.
    before = _blas_threads()
    with ProcessExecutor(2) as runner:
        assert list(runner.map(_blas_threads, [(), ()])) == [1, 1]
    assert _blas_threads() == before


_ROUNDS = 200
_TEMPORARIES = (200_000, 150_000, 300_000)  # floats: a chunk's temporaries, of the sizes a small chunk frees
_PAGES_PER_ROUND = sum(_TEMPORARIES) * 8 // 4096


def _page_faults_over_chunks() -> int:
    """Page faults while a chunk's temporaries are allocated and freed again and again (after a warm-up)."""
    import resource

    def faults() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    for _ in range(3):
        arrays = [np.ones(n) for n in _TEMPORARIES]
        del arrays
    before = faults()
    for _ in range(_ROUNDS):
        arrays = [np.ones(n) for n in _TEMPORARIES]
        del arrays
    return faults() - before


_GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not _GLIBC, reason="needs glibc's allocator (mallopt); the setting does nothing elsewhere")
def test_local_workers_keep_the_memory_a_chunk_frees():
    # Returned to the system after each round, the temporaries would be faulted in again, page by page, every
    # round: more faults than one round's pages. Kept, they cost none after the warm-up.
    with ProcessExecutor(2) as runner:
        assert all(count < _PAGES_PER_ROUND for count in runner.map(_page_faults_over_chunks, [(), ()]))
    # The same rounds in a fresh process with glibc's own settings fault most of every round's pages in again
    # (the test's power).
    code = (f"import numpy as np, resource\n{inspect.getsource(_page_faults_over_chunks)}\n"
            f"_ROUNDS, _TEMPORARIES = {_ROUNDS}, {_TEMPORARIES}\nprint(_page_faults_over_chunks())")
    default = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert default > _ROUNDS * _PAGES_PER_ROUND // 2
