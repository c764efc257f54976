"""The symbolic engine (sympy only): Gaussian expectations, the propagation engine, the textbook recursions.

:func:`derive` (from :mod:`varprop.derive.propagate`) is the one place a prediction comes from: it
walks a network and returns, for an observable, the :class:`Derivation` whose ``result`` is the
prediction. :mod:`varprop.derive.textbook` states the same per-layer facts for a generic layer l and
unrolls them (He et al. 2015; Glorot & Bengio 2010). Nothing here imports :mod:`varprop.montecarlo`;
both engines read :mod:`varprop.network`.
"""

from .derivation import (
    CHECKS,
    EXACTNESS,
    CheckReport,
    Derivation,
    DPhi,
    Expect,
    Phi,
    Rule,
    Step,
    Variance,
    to_latex,
    to_text,
    weakest,
)
from .gaussian import Q, Expectation, Moments, NumericValue, evaluate, gaussian_expectation, moments
from .propagate import (
    DEPTH,
    LAYER,
    LayerPrediction,
    Prediction,
    Propagation,
    SymmetryLemma,
    backward_rule,
    derivative_symmetry_lemma,
    derive,
    forward_rule,
    observable_rules,
    predict,
    propagate,
    symmetry_lemma,
)
from . import finite  # noqa: F401  (registers the finite-width observables' rules)
from . import dropout, residual  # noqa: F401  (register the Dropout and Residual layer rules)
from . import convolution  # noqa: F401  (registers the convolution rules)
from . import normalisation  # noqa: F401  (registers the LayerNorm and RMSNorm rules)
from . import batchnorm  # noqa: F401  (registers the BatchNorm rules)
from .textbook import DERIVATIONS, Q_STAR, backward, condition, forward, glorot, ratio, weight_gradient

__all__ = [
    "Q",
    "Q_STAR",
    "LAYER",
    "DEPTH",
    "EXACTNESS",
    "CHECKS",
    "weakest",
    "Expectation",
    "NumericValue",
    "Moments",
    "gaussian_expectation",
    "moments",
    "evaluate",
    "Derivation",
    "Step",
    "CheckReport",
    "Rule",
    "Expect",
    "Variance",
    "Phi",
    "DPhi",
    "to_latex",
    "to_text",
    "derive",
    "propagate",
    "Propagation",
    "predict",
    "Prediction",
    "LayerPrediction",
    "forward_rule",
    "backward_rule",
    "observable_rules",
    "SymmetryLemma",
    "symmetry_lemma",
    "derivative_symmetry_lemma",
    "forward",
    "backward",
    "weight_gradient",
    "condition",
    "ratio",
    "glorot",
    "DERIVATIONS",
]
