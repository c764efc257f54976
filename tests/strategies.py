"""Hypothesis strategies shared by the fuzz test and ``benchmarks/fuzz_expressions.py``.

Expressions are generated as *text* from a grammar: numbers (tiny, huge, negative, float and
integer), x, + - * / ** and ^, the whitelisted functions (and a few that are not), nested.
"""

from __future__ import annotations

import time

from hypothesis import strategies as st

import sympy as sp

from varprop.activations import _FUNCTIONS, expression
from varprop.derive.gaussian import Q, moments
from varprop.errors import VarpropError

NUMBERS = st.one_of(
    st.integers(min_value=0, max_value=20).map(str),
    st.sampled_from(["0.5", "1e-3", "1e300", "1e-300", "1e308", "10**16", "2**0.5", "pi", "e", "0", "1e400",
                     "9" * 40, "3.0", "1/3", "-1"]),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(repr),
)
UNARY = sorted(name for name in _FUNCTIONS if name not in ("max", "min")) + ["tan", "gamma"]


def _extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(children, st.sampled_from(["+", "-", "*", "/", "**", "^"]), children).map(
        lambda t: f"({t[0]}) {t[1]} ({t[2]})"
    )
    power = st.tuples(children, st.sampled_from(["2", "3", "0.5", "-1", "-0.5", "16", "1.5", "x"])).map(
        lambda t: f"({t[0]})**{t[1]}"
    )
    unary = st.tuples(st.sampled_from(UNARY), children).map(lambda t: f"{t[0]}({t[1]})")
    pair = st.tuples(st.sampled_from(["max", "min"]), children, children).map(lambda t: f"{t[0]}({t[1]}, {t[2]})")
    negate = children.map(lambda c: f"-({c})")
    return st.one_of(binary, power, unary, pair, negate)


EXPRESSIONS = st.recursive(st.one_of(st.just("x"), st.just("x"), NUMBERS), _extend, max_leaves=8)
Q_VALUES = (0.1, 1.0, 30.0)


def exercise(text: str) -> tuple[str, float]:
    """Parse, derive the moments and evaluate them at a few q; return the outcome and the time taken.

    The outcome is ``"ok"``, or the name of the VarpropError subclass raised. Any other exception
    propagates (that is a bug).
    """
    start = time.perf_counter()
    try:
        act = expression(text)
        result = moments(act)
        for expectation in result.as_dict().values():
            if not expectation.exists:
                continue
            for q in Q_VALUES:
                try:
                    number = expectation.evaluate({Q: q})
                except VarpropError:
                    continue
                assert isinstance(number.value, float) and number.value == number.value, (text, q, number)
                assert abs(number.value) != float("inf"), (text, q, number)
        outcome = "ok"
    except VarpropError as exc:
        outcome = type(exc).__name__
    return outcome, time.perf_counter() - start


__all__ = ["EXPRESSIONS", "exercise", "sp"]
