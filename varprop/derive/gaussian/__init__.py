r"""The Gaussian expectation engine: :math:`E[g(z)]` for :math:`z \sim \mathcal N(\mu, q)`.

Integrability is checked first (:mod:`.integrability`): an expectation that does not exist is
reported as such, never integrated. Then exact rules (:mod:`.rules`) are tried, and the result says
which route produced it:

``polynomial``
    :math:`E[z^k]` from the Gaussian moments :math:`q^{k/2}(k-1)!!` (after centring).
``tilted-gaussian``
    Terms :math:`c\,z^k e^{\lambda z - \beta z^2}` on the whole line: the exponential tilts the Gaussian
    (complete the square) and the polynomial is integrated by its moments.
``truncated-gaussian``
    Piecewise integrands (the rectifier family, elu, selu, user ``max``/``abs``) integrated piece by
    piece with the truncated-moment recursion
    :math:`T_j = (j-1)\,q\,T_{j-2} + q\,(a^{j-1}\varphi_q(a) - b^{j-1}\varphi_q(b))`, half-line masses
    written with ``erfc`` so that :math:`e^{c^2}\operatorname{erfc}(c)` never cancels.
``stein-erf``
    Terms :math:`z^k e^{-\beta z^2} \prod_i \operatorname{erf}(a_i z)` with at most two erf factors,
    reduced by Stein's lemma down to Williams (1997), eq. 11.
``trigonometric``
    Products of :math:`\sin(az + b)`, :math:`\cos(az + b)` (and polynomials) written as exponentials
    :math:`e^{\pm i(az + b)}` and integrated with the characteristic function
    :math:`E[e^{iaz}] = e^{ia\mu - a^2 q/2}`; e.g. :math:`E[\sin^2 z] = (1 - e^{-2q})/2`.
``symmetry``
    :math:`g(z) + g(-z) = 2c` for a constant c and a centred Gaussian gives :math:`E[g] = c`.
``quadrature``
    No closed form is known: an unevaluated ``sympy.Integral`` in the standardised variable, evaluated
    by :func:`evaluate` with scipy's QUADPACK and an error *estimate*.
``does-not-exist``
    The integral diverges; :attr:`Expectation.reason` says why.

Closed forms are evaluated at raised precision until correct to float64 accuracy
(:mod:`.numeric`). sympy's generic ``integrate`` and ``sympy.stats`` are never called. scipy is
imported only when a quadrature runs.
"""

from .engine import Q, Expectation, Moments, gaussian_expectation, moments
from .numeric import NumericValue, evaluate

__all__ = [
    "Q",
    "Expectation",
    "NumericValue",
    "Moments",
    "gaussian_expectation",
    "moments",
    "evaluate",
]
