"""judge_values: the checker's verdicts on per-network values measured elsewhere (the PyTorch audit)."""

import math

import numpy as np
import pytest
import sympy as sp

from varprop.catalogue import claim_from_derivation
from varprop.montecarlo import FAIL, INCONCLUSIVE, PASS, MonteCarloError, judge_values
from varprop.network import mlp
from varprop.observables import SecondMoment, Signal


@pytest.fixture(scope="module")
def claim():
    net = mlp([16, 16, 16], "relu")  # He: E[y_1^2] = 2 (exact)
    return claim_from_derivation("y1", net, SecondMoment(Signal(0)))


def _values(mean: float, seed: int, count: int = 4000) -> np.ndarray:
    # A per-network mean square of 16 units of N(0, mean): mean * chi-square(16) / 16, drawn independently.
    return mean * np.random.default_rng(seed).chisquare(16, count) / 16


def test_right_prediction_passes_and_wrong_fails(claim):
    assert claim.value == 2.0
    right, wrong = judge_values([claim, claim.with_prediction(sp.Rational(21, 10))], [_values(2.0, 1), _values(2.0, 2)],
                                rtol=0.05, engine="torch")
    assert right.outcome == PASS and wrong.outcome == FAIL
    assert right.primary.engine == "torch"
    assert math.isclose(right.primary.estimate.value, float(_values(2.0, 1).mean()))


def test_non_finite_values_are_inconclusive(claim):
    values = _values(2.0, 3)
    values[5] = np.inf
    (result,) = judge_values([claim], [values], rtol=0.05)
    assert result.outcome == INCONCLUSIVE and "excluded" in result.message


def test_one_array_per_claim(claim):
    with pytest.raises(MonteCarloError, match="one array of values per claim"):
        judge_values([claim], [])
