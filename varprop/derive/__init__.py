"""The symbolic engine: Gaussian expectations and the He/Glorot derivations (sympy only).

Nothing here imports :mod:`varprop.montecarlo`; both engines read :mod:`varprop.network`.
"""

from .derivation import Derivation, DPhi, Expect, Phi, Rule, Step, Variance, to_latex, to_text
from .gaussian import Q, Expectation, Moments, NumericValue, evaluate, gaussian_expectation, moments
from .recursions import (
    DEPTH,
    DERIVATIONS,
    LAYER,
    Q_STAR,
    SymmetryLemma,
    backward,
    condition,
    derivative_symmetry_lemma,
    forward,
    glorot,
    ratio,
    symmetry_lemma,
    weight_gradient,
)

__all__ = [
    "Q",
    "Q_STAR",
    "LAYER",
    "DEPTH",
    "Expectation",
    "NumericValue",
    "Moments",
    "gaussian_expectation",
    "moments",
    "evaluate",
    "Derivation",
    "Step",
    "Rule",
    "Expect",
    "Variance",
    "Phi",
    "DPhi",
    "to_latex",
    "to_text",
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
