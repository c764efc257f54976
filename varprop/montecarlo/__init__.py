"""The Monte Carlo engine: sample random networks with numpy, estimate observables with standard
errors across networks, and judge predictions against the estimates.

It reads :mod:`varprop.network` descriptions and never imports :mod:`varprop.derive`.

>>> from varprop.network import mlp
>>> from varprop.montecarlo import sample, estimate, judge
>>> samples = sample(mlp([64, 64, 64]), 2000, seed=0)
>>> est = estimate(samples, "x_second_moment", 2)   # E[x_2^2] = Var[y_1] / 2 = 1 for He + relu
>>> judge(1.0, est.value, est.se, est.n, rtol=0.05).outcome
'PASS'
>>> from varprop.observables import SecondMoment, Signal
>>> est = estimate(samples, SecondMoment(Signal(1)))   # the same tensor, by position
>>> judge(1.0, est.value, est.se, est.n, rtol=0.05).outcome
'PASS'
"""

from .check import (MEASURED, CheckResult, FamilyResult, LimitFit, Measurement, check, check_all, check_family, fit_limit,
                    format_results, judge_values)
from .errors import MonteCarloError
from .estimators import OBSERVABLES, Estimate, estimate, network_values, per_network_values
from .engines import CONDITIONAL, ENGINES, FULL, Engine, LayerStep, conditional_step, layer_step, select_engine
from . import convolution  # noqa: F401  (registers the convolution step)
from .executors import DaskExecutor, Executor, ProcessExecutor, SerialExecutor, executor_from
from . import dropout, residual  # noqa: F401  (register the Dropout and Residual layer steps)
from .sampler import PER_NETWORK, PER_POSITION, SampleRequest, Samples, default_sizes, sample, sample_each
from .verdict import FAIL, INCONCLUSIVE, PASS, Verdict, holm, holm_critical_values, judge, judge_all
from . import normalisation  # noqa: F401  (registers the LayerNorm and RMSNorm sampler steps)
from . import batchnorm  # noqa: F401  (registers the BatchNorm sampler step)

__all__ = [
    "MonteCarloError",
    "sample",
    "sample_each",
    "SampleRequest",
    "Samples",
    "PER_NETWORK",
    "PER_POSITION",
    "default_sizes",
    "layer_step",
    "conditional_step",
    "LayerStep",
    "Engine",
    "ENGINES",
    "FULL",
    "CONDITIONAL",
    "select_engine",
    "Executor",
    "SerialExecutor",
    "ProcessExecutor",
    "DaskExecutor",
    "executor_from",
    "estimate",
    "per_network_values",
    "network_values",
    "Estimate",
    "OBSERVABLES",
    "judge",
    "judge_all",
    "holm",
    "holm_critical_values",
    "Verdict",
    "PASS",
    "FAIL",
    "INCONCLUSIVE",
    "MEASURED",
    "check",
    "check_all",
    "check_family",
    "FamilyResult",
    "judge_values",
    "CheckResult",
    "Measurement",
    "LimitFit",
    "fit_limit",
    "format_results",
]
