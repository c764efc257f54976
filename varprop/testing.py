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

    The message shows the prediction, the estimate with its standard error, z and the verdict at
    every width checked. An approximation claim (no verdict) always returns its measured result.
    ``allow_inconclusive`` lets a too-noisy check through instead of failing it.
    """
    result = check(claim, samples=samples, seed=seed, rtol=rtol, alpha=alpha, width=width)
    if result.outcome in (PASS, MEASURED) or allow_inconclusive and result.outcome == "INCONCLUSIVE":
        return result
    lines = [f"claim {result.name} ({result.exactness}): {result.outcome}: {result.message}"]
    for m in result.measurements:
        verdict = "" if m.verdict is None else f", z = {format_z(m.verdict.z)} (z_crit {m.verdict.z_crit:.2f}), {m.verdict.outcome}"
        lines.append(f"  width {m.width}: prediction {m.claim.value:.6g}, estimate {m.estimate.value:.6g} "
                     f"+- {m.estimate.se:.2g} (SE over {m.estimate.n} networks){verdict}")
    raise AssertionError("\n".join(lines))
