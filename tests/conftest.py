"""Shared helpers for the test-suite: independent numerical references."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import scipy.integrate


def gaussian_quad(function, q: float, mean: float = 0.0) -> float:
    """E[f(z)], z ~ N(mean, q), by scipy quadrature of the activation's *numpy* implementation.

    Independent of the sympy engine: it integrates the vectorised numpy function, split at 0 where the
    rectifier family has its kink.
    """
    scale = math.sqrt(q)

    def integrand(t: float) -> float:
        return float(function(np.array([mean + scale * t]))[0]) * math.exp(-t * t / 2) / math.sqrt(2 * math.pi)

    kink = -mean / scale if scale > 0 else 0.0
    total = 0.0
    for a, b in ((-40.0, kink), (kink, 40.0)):
        total += scipy.integrate.quad(integrand, a, b, epsabs=1e-13, epsrel=1e-12, limit=400)[0]
    return total


def close(a: float, b: float, tol: float = 1e-9) -> bool:
    """Agreement up to quadrature accuracy (absolute and relative 1e-9): not a tuned tolerance."""
    return abs(a - b) <= tol * max(1.0, abs(b))


def require_pdflatex() -> str:
    """The path of pdflatex; skip when it is missing, but fail under VARPROP_REQUIRE_TEX=1 (as CI sets)."""
    import pytest

    path = shutil.which("pdflatex")
    if path is None:
        if os.environ.get("VARPROP_REQUIRE_TEX") == "1":
            pytest.fail("VARPROP_REQUIRE_TEX=1 but pdflatex is not on PATH (install texlive-latex-base)")
        pytest.skip("pdflatex not installed (Debian: texlive-latex-base); set VARPROP_REQUIRE_TEX=1 to require it")
    return path


import pytest


@pytest.fixture(scope="session")
def catalogue_verdicts():
    """The whole catalogue and every claim's mutation siblings, checked together at the default settings.

    One ``check_all``: the correct claims share their sampled networks with their siblings, so the
    siblings cost little beyond the catalogue itself. Returns ``(siblings, results by name)``.
    """
    from mutations import siblings

    from varprop.catalogue import CATALOGUE
    from varprop.montecarlo import check_all

    wrong = siblings()
    results = check_all(list(CATALOGUE.values()) + wrong)
    return wrong, {result.name: result for result in results}
