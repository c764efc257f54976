r"""Estimates of per-layer observables, with standard errors across networks.

The independent unit is the network. Units inside one network are exchangeable but dependent
(they share the network's weights upstream, hence its activation scale), so an observable is first
averaged over the units of each network (:class:`~varprop.montecarlo.sampler.Samples` holds these
per-network averages :math:`a_t`), and then

.. math:: \hat\mu = \frac1T \sum_{t=1}^T a_t, \qquad
          \operatorname{SE} = \frac{s_a}{\sqrt T}, \quad s_a^2 = \frac{1}{T-1}\sum_t (a_t - \hat\mu)^2.

Treating all :math:`T n` units as independent would understate the SE by up to a factor
:math:`\sqrt{1 + (n-1)\rho}`, :math:`\rho` the correlation of two units of one network.

Observables (``layer`` is the dense layer :math:`l = 1 .. L`):

==================================  ===========================================================
observable                          estimates
==================================  ===========================================================
``y_mean``                          :math:`E[y_l]` (one unit)
``y_second_moment``                 :math:`E[y_l^2]` (= :math:`E[\|y_l\|^2/\hat n_l]`)
``y_variance``                      :math:`\operatorname{Var}[y_l] = E[y_l^2] - E[y_l]^2`
``x_mean``                          :math:`E[x_l]`
``x_second_moment``                 :math:`E[x_l^2]`
``x_variance``                      :math:`\operatorname{Var}[x_l]`
``dx_second_moment``                :math:`E[(\partial\mathcal L/\partial x_l)^2]`
``dy_second_moment``                :math:`E[(\partial\mathcal L/\partial y_l)^2]`
``dw_second_moment``                :math:`E[(\partial\mathcal L/\partial W_l)^2]` (one entry)
``x_norm_ratio``                    :math:`E[\|x_l\|^2 / \|x_1\|^2]`
``x_norm_ratio_second_moment``      :math:`E[(\|x_l\|^2 / \|x_1\|^2)^2]`
``y_mean_square_second_moment``     :math:`E[(\|y_l\|^2/\hat n_l)^2]`, the spread of a layer's
                                    mean square across networks (its mean is ``y_second_moment``)
``y_correlation``                   :math:`E[y_l y_l'] / \sqrt{E[y_l^2]\,E[{y_l'}^2]}` for the
                                    network's input and its partner input (see ``sample``)
==================================  ===========================================================

Per network, :math:`\frac{1}{\hat n n}\sum_{ij} (\partial\mathcal L/\partial W_{ij})^2 =
\big(\frac1{\hat n}\sum_i (\partial\mathcal L/\partial y_i)^2\big)\big(\frac1n\sum_j x_j^2\big)`
exactly, since :math:`\partial\mathcal L/\partial W = (\partial\mathcal L/\partial y)\, x^\top`.

The two variances and the correlation are smooth functions of means; their SE comes from the
delta method on the per-network values (the influence values :math:`d_t` below, SE
:math:`= s_d/\sqrt T`). The variance uses the unbiased :math:`\hat\mu_2 - \hat\mu_1^2 +
s_{a}^2/T`; the correlation is a ratio estimator, with a bias of order :math:`1/T`.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import numpy as np

from ..claims import OBSERVABLES as CLAIM_OBSERVABLES
from .errors import MonteCarloError
from .sampler import Samples

__all__ = ["OBSERVABLES", "Estimate", "estimate"]

#: Observable names accepted by :func:`estimate` (see the module docstring).
OBSERVABLES: tuple[str, ...] = CLAIM_OBSERVABLES + (
    "x_norm_ratio",
    "x_norm_ratio_second_moment",
    "y_mean_square_second_moment",
    "y_correlation",
)


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate with its standard error.

    Attributes
    ----------
    value
        The estimate.
    se
        Its standard error, from the spread across networks.
    n
        The number of (finite) networks it is computed from.
    excluded
        Networks left out because some recorded value was not finite.
    """

    value: float
    se: float
    n: int
    excluded: int = 0


def _check_observable(observable: object) -> str:
    if observable not in OBSERVABLES:
        raise MonteCarloError(f"unknown observable {observable!r}; accepted: {', '.join(OBSERVABLES)}")
    return str(observable)


def _check_layer(layer: object, depth: int) -> int:
    if isinstance(layer, bool) or not isinstance(layer, Integral) or not 1 <= int(layer) <= depth:
        raise MonteCarloError(
            f"layer must be a dense-layer index from 1 to {depth} (the network has {depth} dense layers), "
            f"got {layer!r}"
        )
    return int(layer)


def _mean_and_se(values: np.ndarray) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1) / np.sqrt(values.shape[0]))


def estimate(samples: Samples, observable: str, layer: int) -> Estimate:
    r"""Estimate ``observable`` at dense layer ``layer`` (1-based) from ``samples``.

    Parameters
    ----------
    samples
        The output of :func:`~varprop.montecarlo.sample`.
    observable
        One of :data:`OBSERVABLES`.
    layer
        The dense layer :math:`l`, from 1 to ``samples.depth``.

    Returns
    -------
    Estimate
        Value, standard error (across networks) and the number of finite networks used.

    Raises
    ------
    MonteCarloError
        For an unknown observable, a layer out of range, fewer than two finite networks, or a
        correlation whose denominator is estimated as zero.
    """
    if not isinstance(samples, Samples):
        raise MonteCarloError(f"expected Samples from varprop.montecarlo.sample, got {samples!r}")
    name = _check_observable(observable)
    column = _check_layer(layer, samples.depth) - 1
    finite = samples.finite
    n = int(np.count_nonzero(finite))
    if n < 2:
        raise MonteCarloError(
            f"an estimate needs at least 2 finite networks, got {n} of {samples.count} "
            f"(overflow per layer: {samples.overflow.tolist()}, NaN per layer: {samples.nan.tolist()})"
        )

    def get(key: str) -> np.ndarray:
        return samples.per_network[key][finite, column]

    if name in ("y_variance", "x_variance"):
        first, second = get(name[0] + "_mean"), get(name[0] + "_second_moment")
        mean1 = float(np.mean(first))
        var1 = float(np.var(first, ddof=1))
        value = float(np.mean(second)) - mean1 * mean1 + var1 / n
        influence = second - 2.0 * mean1 * first
        se = float(np.std(influence, ddof=1) / np.sqrt(n))
    elif name == "y_correlation":
        if "y_cross" not in samples.per_network:
            raise MonteCarloError(
                "y_correlation needs paired inputs: sample the networks with correlation=True (or a partner)"
            )
        cross, own, partner = get("y_cross"), get("y_second_moment"), get("y_partner_second_moment")
        c, p, q = float(np.mean(cross)), float(np.mean(own)), float(np.mean(partner))
        if not (p > 0 and q > 0):
            raise MonteCarloError(
                f"the correlation of y at layer {column + 1} is undefined: E[y^2] is estimated as {p} and "
                f"E[y'^2] as {q}; both must be positive"
            )
        scale = np.sqrt(p * q)
        value = c / scale
        influence = cross / scale - value * own / (2.0 * p) - value * partner / (2.0 * q)
        se = float(np.std(influence, ddof=1) / np.sqrt(n))
    else:
        if name == "dw_second_moment":
            values = get("dy_second_moment") * get("x_second_moment")
        elif name == "x_norm_ratio_second_moment":
            values = get("x_norm_ratio") ** 2
        elif name == "y_mean_square_second_moment":
            values = get("y_second_moment") ** 2
        else:
            values = get(name)
        value, se = _mean_and_se(values)
    return Estimate(value=float(value), se=se, n=n, excluded=samples.count - n)
