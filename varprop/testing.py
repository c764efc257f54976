"""Helpers for users' own pytest suites: assert that a claim holds, by Monte Carlo.

>>> from varprop.catalogue import family
>>> from varprop.testing import assert_claim
>>> assert_claim(family("he-forward-relu-normal"))      # passes silently, returns the result
"""

from __future__ import annotations

from .claims import Claim, ClaimFamily
from .montecarlo.check import DEFAULT_RTOL, MEASURED, CheckResult, check
from .montecarlo.verdict import PASS, format_z

__all__ = ["assert_claim"]


def assert_claim(
    claim: Claim | ClaimFamily,
    *,
    samples: int | None = None,
    seed: int = 0,
    rtol: float = DEFAULT_RTOL,
    alpha: float = 0.05,
    width: int | None = None,
    allow_inconclusive: bool = False,
) -> CheckResult:
    """Check ``claim`` and raise ``AssertionError`` unless it passes.

    The message shows the prediction, the estimate with its standard error, t and the verdict at
    every width checked. A ``MEASURED`` result (an approximation without a ``tolerance``) is no
    pass: it raises, saying so; give the claim a tolerance to have it judged.
    ``allow_inconclusive`` lets a too-noisy check through instead of failing it.
    """
    result = check(claim, samples=samples, seed=seed, rtol=rtol, alpha=alpha, width=width)
    if result.outcome == PASS or allow_inconclusive and result.outcome == "INCONCLUSIVE":
        return result
    if result.outcome == MEASURED:
        raise AssertionError(f"claim {result.name} ({result.exactness}): MEASURED, not a pass: an approximation without "
                             f"a tolerance gets no verdict ({result.message}); give the claim a tolerance")
    lines = [f"claim {result.name} ({result.exactness}): {result.outcome}: {result.message}"]
    for m in result.measurements:
        verdict = "" if m.verdict is None else f", t = {format_z(m.verdict.z)} (t_crit {m.verdict.z_crit:.2f}), {m.verdict.outcome}"
        lines.append(f"  width {m.width}: prediction {m.claim.value:.6g}, estimate {m.estimate.value:.6g} "
                     f"+- {m.estimate.se:.2g} (SE over {m.estimate.n} networks){verdict}")
    raise AssertionError("\n".join(lines))
