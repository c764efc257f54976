r"""Estimates over any number of networks in bounded memory: a streaming reduction over blocks.

:func:`~varprop.montecarlo.sample` keeps every network's values (about 1 kB per network at depth
10), which is what the checker's tests need up to millions of networks. For more (a claim checked
on :math:`10^9` networks of a cluster), :func:`stream_estimates` keeps, per block of networks and
per observable, only the moments of the per-network values :math:`a_t` (a vector for a
:class:`~varprop.observables.Variance` or :class:`~varprop.observables.LogNormRatioVariance`, whose
estimate reads a mean and a mean square; the statistics of the log norm ratio keep only the networks
whose signal is not identically zero, as :func:`~varprop.montecarlo.estimate` does):

.. math:: n, \quad \bar a, \quad C = \sum_t (a_t - \bar a)(a_t - \bar a)^\top,
          \quad M_3 = \sum_t (a_{t,1} - \bar a_1)^3,

computed inside a unit of consecutive blocks (two passes, numerically stable) and merged unit
after unit in order with the exact pairwise update of Chan, Golub and LeVeque (1979) and Pébay (2008, eq. 1.5):
for :math:`\delta = \bar a_B - \bar a_A`, :math:`n = n_A + n_B`,

.. math:: \bar a = \bar a_A + \delta\, n_B / n, \quad
          C = C_A + C_B + \delta\delta^\top n_A n_B / n,

.. math:: M_3 = M_{3,A} + M_{3,B} + \delta_1^3 \frac{n_A n_B (n_A - n_B)}{n^2}
          + 3 \delta_1 \frac{n_A C_{B,11} - n_B C_{A,11}}{n}.

Memory is one unit of per-network values per worker plus a few numbers per unit, whatever the
number of networks; since each unit's moments depend only on its own networks and units are merged
in order,
the estimates are bit-identical whatever the executor, the number of workers and the chunking.
The estimates and standard errors are those of :func:`~varprop.montecarlo.estimate` on the same
networks (the same formulas, from the moments instead of the stored values).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..observables import LogNormRatioMoment, LogNormRatioVariance, Mean, Observable, SecondMoment, Variance
from .engines import Engine
from .errors import MonteCarloError
from .estimators import Estimate, network_values
from .executors import Executor, executor_from
from .sampler import SampleJob, _job_plan, compute_range, make_job, map_blocks, samples_from

__all__ = ["Moments", "StreamResult", "stream_estimates"]

#: Networks per reduction unit (a whole number of blocks): moments are computed per unit and merged
#: in unit order. Large enough that the per-unit Python work is negligible, small enough to bound memory.
_UNIT_NETWORKS = 1 << 15


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
        centred = np.ascontiguousarray((values - mean).T)
        # Elementwise products and numpy's own reduction, not BLAS (whose summation order may
        # depend on its threads): the same values give the same bits in every worker.
        comoment = np.array([[float(np.add.reduce(centred[i] * centred[j])) for j in range(k)] for i in range(k)])
        third = float(np.add.reduce(centred[0] ** 3))
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
    if isinstance(observable, Variance | LogNormRatioVariance):  # component 0: the mean square, 1: the mean
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
    if isinstance(observable, LogNormRatioVariance):  # NaN where the signal is identically zero (log 0)
        logs = network_values(LogNormRatioMoment(observable.tensor, 1), samples)
        return np.stack((logs**2, logs), axis=1)
    return network_values(observable, samples)[:, None]


def _components(observable: Observable) -> int:
    return 2 if isinstance(observable, Variance | LogNormRatioVariance) else 1


def _unit_blocks(job: SampleJob) -> int:
    """Blocks per reduction unit: about :data:`_UNIT_NETWORKS` networks, from the job alone."""
    return max(1, _UNIT_NETWORKS // job.block)


def _reduce_range(job: SampleJob, first: int, stop: int, observables: tuple[Observable, ...]) -> list:
    """Per reduction unit of ``first .. stop - 1``: (excluded networks, the moments of each observable).

    A unit is :func:`_unit_blocks` consecutive blocks (the range starts on a unit boundary). Its
    per-network values are gathered chunk by chunk (a unit's chunks never cross its boundary) and
    reduced at once, so a unit's moments do not depend on the chunking or on the range.
    """
    plan = _job_plan(job)
    per_chunk = job.chunk // job.block
    unit = _unit_blocks(job)
    columns = len(job.network.layers) + 1
    workspace: dict = {}
    out = []
    for unit_first in range(first, stop, unit):
        unit_stop = min(stop, unit_first + unit)
        finite_parts: list[np.ndarray] = []
        value_parts: list[list[np.ndarray]] = [[] for _ in observables]
        for chunk_first in range(unit_first, unit_stop, per_chunk):
            chunk_stop = min(unit_stop, chunk_first + per_chunk)
            start, end = job.networks(chunk_first, chunk_stop)
            sums, flags = compute_range(job, chunk_first, chunk_stop, np.empty((job.rows, columns, end - start)),
                                        np.zeros((3, columns, end - start), dtype=bool), workspace)
            samples = samples_from(plan, job, sums, flags)
            finite_parts.append(samples.finite)
            for parts, observable in zip(value_parts, observables):
                parts.append(_values(observable, samples))
        finite = np.concatenate(finite_parts)
        moments = []
        for parts in value_parts:
            values = np.concatenate(parts)[finite]
            # the statistics of the log norm ratio are over the networks whose signal is not identically zero (NaN)
            moments.append(Moments.of(values[~np.isnan(values).any(axis=1)]))
        out.append((int(finite.size - np.count_nonzero(finite)), tuple(moments)))
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

    The same networks as :func:`~varprop.montecarlo.sample` with the same arguments and
    ``observables=observables``, and the same estimates and standard errors (to rounding); memory
    does not grow with ``samples``, and only what the observables read is computed. Networks with a
    non-finite recorded value are excluded and counted, as there.

    Raises
    ------
    MonteCarloError
        As :func:`~varprop.montecarlo.sample`, and for something that is not an observable of the network.
    """
    from .estimators import _resolve  # the estimators' own check of an observable against a network

    job = make_job(network, samples, seed=seed, chunk_size=chunk_size, block_size=block_size, partner=partner,
                   correlation=correlation, engine=engine)
    probe = samples_from(_job_plan(job), job, np.zeros((job.rows, len(network.layers) + 1, 1)),
                         np.zeros((3, len(network.layers) + 1, 1), dtype=bool))
    observables = tuple(_resolve(probe, o) for o in observables)
    if not observables:
        raise MonteCarloError("stream_estimates needs at least one observable")
    # compute only what the observables read (the same values, bit for bit; sample(..., observables=))
    job = make_job(network, samples, seed=seed, chunk_size=chunk_size, block_size=block_size, partner=partner,
                   correlation=correlation, engine=engine, observables=observables)
    total = [Moments.of(np.empty((0, _components(o)))) for o in observables]
    excluded = 0
    with executor_from(executor) as runner:
        for _, stop, blocks in map_blocks(job, _reduce_range, runner, observables, align=_unit_blocks(job)):
            for bad, moments in blocks:
                excluded += bad
                total = [a.merge(b) for a, b in zip(total, moments)]
            if progress is not None:
                progress(job.networks(0, stop)[1], job.count)
    return StreamResult(job.engine.name, job.count, excluded, observables, tuple(total))
