r"""Estimates over any number of networks in bounded memory: a streaming reduction over blocks.

:func:`~varprop.montecarlo.sample` keeps every network's values (about 1 kB per network at depth
10), which is what the checker's tests need up to millions of networks. For more (a claim checked
on :math:`10^9` networks of a cluster), :func:`stream_estimates` keeps, per block of networks and
per observable, only the moments of the per-network values :math:`a_t` (a vector for a
:class:`~varprop.observables.Variance`, whose estimate reads a tensor's mean and mean square):

.. math:: n, \quad \bar a, \quad C = \sum_t (a_t - \bar a)(a_t - \bar a)^\top,
          \quad M_3 = \sum_t (a_{t,1} - \bar a_1)^3,

computed inside the block (two passes, numerically stable) and merged block after block in block
order with the exact pairwise update of Chan, Golub and LeVeque (1979) and Pébay (2008, eq. 1.5):
for :math:`\delta = \bar a_B - \bar a_A`, :math:`n = n_A + n_B`,

.. math:: \bar a = \bar a_A + \delta\, n_B / n, \quad
          C = C_A + C_B + \delta\delta^\top n_A n_B / n,

.. math:: M_3 = M_{3,A} + M_{3,B} + \delta_1^3 \frac{n_A n_B (n_A - n_B)}{n^2}
          + 3 \delta_1 \frac{n_A C_{B,11} - n_B C_{A,11}}{n}.

Memory is one chunk per worker plus a few numbers per block, whatever the number of networks;
since each block's moments depend only on its own networks and blocks are merged in block order,
the estimates are bit-identical whatever the executor, the number of workers and the chunking.
The estimates and standard errors are those of :func:`~varprop.montecarlo.estimate` on the same
networks (the same formulas, from the moments instead of the stored values).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..observables import Mean, Observable, SecondMoment, Variance
from .engines import Engine
from .errors import MonteCarloError
from .estimators import Estimate, network_values
from .executors import Executor, executor_from
from .sampler import SampleJob, _job_plan, compute_range, make_job, map_blocks, samples_from

__all__ = ["Moments", "StreamResult", "stream_estimates"]


@dataclass(frozen=True)
class Moments:
    """Count, mean vector, co-moment matrix and third central moment (first component) of per-network values."""

    n: int
    mean: np.ndarray
    comoment: np.ndarray
    third: float

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        """The moments of ``values``, shape ``(n, k)`` (two passes, in a fixed order)."""
        values = np.ascontiguousarray(values, dtype=np.float64)
        n, k = values.shape
        if n == 0:
            return cls(0, np.zeros(k), np.zeros((k, k)), 0.0)
        mean = np.add.reduce(values, axis=0) / n
        centred = values - mean
        comoment = centred.T @ centred
        third = float(np.add.reduce(centred[:, 0] ** 3))
        return cls(n, mean, comoment, third)

    def merge(self, other: Moments) -> Moments:
        """The moments of both samples together (Chan et al. 1979; Pébay 2008)."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        comoment = self.comoment + other.comoment + np.outer(delta, delta) * (self.n * other.n / n)
        d = float(delta[0])
        third = (self.third + other.third + d**3 * self.n * other.n * (self.n - other.n) / n**2
                 + 3.0 * d * (self.n * float(other.comoment[0, 0]) - other.n * float(self.comoment[0, 0])) / n)
        return Moments(n, mean, comoment, third)

    def covariance(self) -> np.ndarray:
        return self.comoment / (self.n - 1)

    @property
    def skewness(self) -> float:
        """Sample skewness of the first component (0 when it does not vary)."""
        m2 = float(self.comoment[0, 0]) / self.n
        return 0.0 if m2 <= 0 else (self.third / self.n) / m2**1.5


@dataclass(frozen=True)
class StreamResult:
    """Estimates of several observables from ``count`` networks, with their moments and the engine used."""

    engine: str
    count: int
    excluded: int
    observables: tuple[Observable, ...]
    moments: tuple[Moments, ...]

    @property
    def estimates(self) -> dict[Observable, Estimate]:
        return {o: _estimate(o, m, self.excluded) for o, m in zip(self.observables, self.moments)}


def _estimate(observable: Observable, moments: Moments, excluded: int) -> Estimate:
    n = moments.n
    if n < 2:
        raise MonteCarloError(f"an estimate needs at least 2 finite networks, got {n}")
    cov = moments.covariance()
    if isinstance(observable, Variance):  # component 0: the mean square, 1: the mean
        m2, m1 = float(moments.mean[0]), float(moments.mean[1])
        value = m2 - m1 * m1 + float(cov[1, 1]) / n
        spread = float(cov[0, 0]) - 4.0 * m1 * float(cov[0, 1]) + 4.0 * m1 * m1 * float(cov[1, 1])
        return Estimate(value, math.sqrt(max(spread, 0.0) / n), n, excluded)
    return Estimate(float(moments.mean[0]), math.sqrt(max(float(cov[0, 0]), 0.0) / n), n, excluded)


def _values(observable: Observable, samples) -> np.ndarray:
    """Per-network values of one block, shape ``(networks, k)``: the mean square first for a variance."""
    if isinstance(observable, Variance):
        return np.stack((network_values(SecondMoment(observable.tensor), samples),
                         network_values(Mean(observable.tensor), samples)), axis=1)
    return network_values(observable, samples)[:, None]


def _reduce_range(job: SampleJob, first: int, stop: int, observables: tuple[Observable, ...]) -> list:
    """Per block of ``first .. stop - 1``: (excluded networks, the moments of each observable).

    Computed one chunk at a time, so a range holds one chunk of per-network values at most.
    """
    plan = _job_plan(job)
    per_chunk = job.chunk // job.block
    workspace: dict = {}
    out = []
    for chunk_first in range(first, stop, per_chunk):
        chunk_stop = min(stop, chunk_first + per_chunk)
        start, end = job.networks(chunk_first, chunk_stop)
        columns = len(job.network.layers) + 1
        sums, flags = compute_range(job, chunk_first, chunk_stop, np.empty((job.rows, end - start, columns)),
                                    np.zeros((3, end - start, columns), dtype=bool), workspace)
        for block in range(chunk_first, chunk_stop):
            lo, hi = (k - start for k in job.networks(block, block + 1))
            samples = samples_from(plan, job, np.ascontiguousarray(sums[:, lo:hi]),
                                   np.ascontiguousarray(flags[:, lo:hi]))
            finite = samples.finite
            out.append((samples.count - int(np.count_nonzero(finite)),
                        tuple(Moments.of(_values(o, samples)[finite]) for o in observables)))
    return out


def stream_estimates(
    network,
    observables: Sequence[Observable],
    samples: int,
    *,
    seed: int | np.random.SeedSequence,
    engine: Engine | str = "auto",
    executor: Executor | str | None = None,
    block_size: int | None = None,
    chunk_size: int | None = None,
    correlation: bool = False,
    partner: Sequence[float] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> StreamResult:
    """Estimate ``observables`` from ``samples`` networks without keeping per-network values.

    The same networks as :func:`~varprop.montecarlo.sample` with the same arguments, and the same
    estimates and standard errors (to rounding); memory does not grow with ``samples``. Networks
    with a non-finite value are excluded and counted, as there.

    Raises
    ------
    MonteCarloError
        As :func:`~varprop.montecarlo.sample`, and for something that is not an observable of the network.
    """
    from .estimators import _resolve  # the estimators' own check of an observable against a network

    job = make_job(network, samples, seed=seed, chunk_size=chunk_size, block_size=block_size, partner=partner,
                   correlation=correlation, engine=engine)
    probe = samples_from(_job_plan(job), job, np.zeros((job.rows, 1, len(network.layers) + 1)),
                         np.zeros((3, 1, len(network.layers) + 1), dtype=bool))
    observables = tuple(_resolve(probe, o) for o in observables)
    if not observables:
        raise MonteCarloError("stream_estimates needs at least one observable")
    total = [Moments.of(np.empty((0, 2 if isinstance(o, Variance) else 1))) for o in observables]
    excluded = 0
    with executor_from(executor) as runner:
        for _, stop, blocks in map_blocks(job, _reduce_range, runner, observables):
            for bad, moments in blocks:
                excluded += bad
                total = [a.merge(b) for a, b in zip(total, moments)]
            if progress is not None:
                progress(job.networks(0, stop)[1], job.count)
    return StreamResult(job.engine.name, job.count, excluded, observables, tuple(total))
