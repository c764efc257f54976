"""Residual blocks and dropout in the derive engine.

Every value is compared with an independent computation: the recursions in exact rational arithmetic
(``fractions.Fraction``) from the layer facts (He: a dense layer multiplies E[x^2] by n Var[w], a relu
halves it), never with the derivation's own numbers. The Monte Carlo checks are in
``tests/montecarlo/test_residual.py``.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import sympy as sp

from varprop.activations import activation
from varprop.catalogue import residual_network
from varprop.derive import derive
from varprop.derive.propagate import propagate
from varprop.errors import DerivationError
from varprop.network import Dense, Dropout, FixedInput, GaussianInput, Network, Nonlinearity, Residual
from varprop.observables import Correlation, CrossMoment, Gradient, Mean, SecondMoment, Signal, WeightGradient
from varprop.weights import Normal, Uniform, he

RELU = activation("relu")


def _rational(expr: sp.Expr) -> Fraction:
    value = sp.nsimplify(expr)
    assert value.is_Rational, expr
    return Fraction(int(value.p), int(value.q))


def _verified(derivation) -> bool:
    return all(report.ok is not False for report in derivation.verify())


@pytest.mark.parametrize("blocks", [1, 2, 4])
@pytest.mark.parametrize("alpha_squared", [Fraction(1), Fraction(1, 4), Fraction(1, 100)])
def test_forward_recursion_against_rational_arithmetic(blocks, alpha_squared):
    alpha = sp.sqrt(sp.Rational(alpha_squared.numerator, alpha_squared.denominator))
    net = residual_network(8, blocks, alpha)
    v = Fraction(1) * 8 * Fraction(2, 8)  # the first dense layer: n Var[w] E[x^2] = 2
    for _ in range(blocks):
        branch = v * 8 * Fraction(2, 8) / 2 * 8 * Fraction(2, 8)  # dense, relu, dense: E[f^2] = 2 v
        v = v + alpha_squared * branch
    d = derive(net, SecondMoment(Signal(blocks)))
    assert _rational(d.result) == v
    assert d.exactness == "exact" and _verified(d)
    assert derive(net, Mean(Signal(blocks))).result == 0


def test_cross_term_is_a_checked_identity_from_the_last_layers_zero_mean():
    net = residual_network(4, 1, sp.Rational(1, 2))
    d = derive(net, SecondMoment(Signal(1)))
    zero = [s for s in d.steps if s.rhs == 0 and s.lhs.has(sp.IndexedBase("h")[sp.Symbol("res1.3")])]
    assert len(zero) == 1 and zero[0].check == "identity"
    # The identity rests on E[w] = 0 of the branch's last layer: it fails with that fact replaced by E[w] = 1.
    step = zero[0]
    facts = {d.steps[i].lhs: d.steps[i].rhs for i in step.uses}
    mean_fact = next(lhs for lhs, rhs in facts.items() if rhs == 0 and "res1.3" in str(lhs))
    facts[mean_fact] = sp.Integer(1)
    assert sp.simplify(step.lhs.subs(facts).subs(facts) - step.rhs) != 0


def test_a_branch_that_does_not_end_with_a_dense_layer_is_refused_with_the_reason():
    law = he().law(4, 4)
    net = Network((Dense(4, 4, law), Residual((Dense(4, 4, law), Nonlinearity(RELU)), 1)))
    with pytest.raises(DerivationError, match="end with a Dense layer.*E\\[x f\\(x\\)\\] = 0.*ends with Nonlinearity"):
        derive(net, SecondMoment(Signal(1)))


def test_a_pre_activation_branch_is_exact_in_the_first_block_only():
    # f = W relu(x): E[f^2] = n Var[w] E[x^2]/2 = E[x^2] while x is symmetric (the first block's input). The block
    # output x + alpha W relu(x) is not symmetric (relu(x) carries the sign of x), so the second block's relu
    # rests on the Gaussian limit: the same value, labelled asymptotic.
    law = he().law(8, 8)
    block = Residual((Nonlinearity(RELU), Dense(8, 8, law)), 1)
    net = Network((Dense(8, 8, law), block, block))
    first, second = derive(net, SecondMoment(Signal(1))), derive(net, SecondMoment(Signal(2)))
    assert _rational(first.result) == 2 * 2 and first.exactness == "exact"
    assert _rational(second.result) == 2 * 2 * 2 and second.exactness == "asymptotic"


def test_backward_recursion_exact_for_the_last_block_then_asymptotic():
    blocks, alpha_squared = 3, Fraction(1, 3)
    net = residual_network(8, blocks, 1 / sp.sqrt(3))
    # The loss direction g has E[g^2] = 1; each block (dense, relu, dense backward: 2 * 1/2 * 2 = 2) multiplies the
    # gradient's second moment by 1 + 2 alpha^2.
    expected = Fraction(1)
    for position in range(blocks - 1, -1, -1):
        expected *= 1 + 2 * alpha_squared
        d = derive(net, SecondMoment(Gradient(position)))
        assert _rational(d.result) == expected and _verified(d)
        assert d.exactness == ("exact" if position == blocks - 1 else "asymptotic"), position


def test_alpha_zero_is_the_identity_and_a_symbolic_alpha_stays_symbolic():
    alpha = sp.Symbol("alpha", positive=True)
    net = residual_network(4, 2, alpha)
    assert sp.simplify(derive(net, SecondMoment(Signal(2))).result - 2 * (1 + 2 * alpha**2) ** 2) == 0
    assert derive(residual_network(4, 2, 0), SecondMoment(Signal(2))).result == 2


def test_a_pair_through_residual_blocks_keeps_the_cross_moment_rule():
    # Linear branch (Dense, Dense): the cross moment obeys the same recursion as the second moment, exactly.
    law = Normal(sp.Rational(1, 4))
    block = Residual((Dense(4, 4, law), Dense(4, 4, law)), sp.Rational(1, 2))
    net = Network((Dense(4, 4, law), block), FixedInput.pair(4, sp.Rational(1, 2)))
    cross, second = derive(net, CrossMoment(Signal(1))), derive(net, SecondMoment(Signal(1)))
    # E[y y'] = n Var[w] c0 = 1/2 after the first layer; the branch's gain is (4 * 1/4)^2 = 1: times 1 + 1/4.
    assert _rational(cross.result) == Fraction(1, 2) * Fraction(5, 4)
    assert _rational(second.result) == Fraction(5, 4)
    assert derive(net, Correlation(Signal(1))).result == sp.Rational(1, 2)
    assert cross.exactness == "exact" and _verified(cross)


def test_residual_block_with_uniform_weights_and_biases():
    law, bias = Uniform(sp.sqrt(3) / 2), Normal(sp.Rational(1, 10))  # Var[w] = (sqrt(3)/2)^2/3 = 1/4
    block = Residual((Dense(4, 4, law, bias), Nonlinearity(RELU), Dense(4, 4, law, bias)), 1)
    net = Network((Dense(4, 4, law), block))
    # E[x^2] = 1 after the first layer; branch: 4*1/4*1 + 1/10, halved by relu, then 4*1/4*that + 1/10.
    inner = (Fraction(1) + Fraction(1, 10)) / 2
    assert _rational(derive(net, SecondMoment(Signal(1))).result) == 1 + inner + Fraction(1, 10)


# --- dropout ----------------------------------------------------------------------------------------


def _dropout_net(keep, inputs=None):
    law = he().law(8, 8)
    layers = (Dense(8, 8, law), Nonlinearity(RELU), Dropout(keep), Dense(8, 8, law))
    return Network(layers, inputs) if inputs is not None else Network(layers)


@pytest.mark.parametrize("keep", [sp.Rational(1, 2), sp.Rational(4, 5), sp.Integer(1)])
def test_dropout_divides_the_second_moment_by_keep_and_keeps_the_mean(keep):
    net = _dropout_net(keep)
    p = Fraction(int(keep.p), int(keep.q))
    after = derive(net, SecondMoment(Signal(2)))
    assert _rational(after.result) == Fraction(1) / p and after.exactness == "exact" and _verified(after)
    assert derive(net, Mean(Signal(2))).result == derive(net, Mean(Signal(1))).result
    # the next dense layer: n Var[w] E[x^2]/p = 2/p, exact; its weight gradient E[g^2] E[x^2]/p
    assert _rational(derive(net, SecondMoment(Signal(3))).result) == 2 / p
    assert _rational(derive(net, SecondMoment(WeightGradient(3))).result) == 1 / p
    # backward: the gradient below the dropout layer is E[(dL/dy)^2]/p = 2/p, exact (g is independent of the mask)
    below = derive(net, SecondMoment(Gradient(1)))
    assert _rational(below.result) == 2 / p and below.exactness == "exact"


def test_dropout_shrinks_a_pairs_correlation_by_keep():
    keep = sp.Rational(4, 5)
    net = _dropout_net(keep, FixedInput.pair(8, sp.Rational(1, 2)))
    before, after = derive(net, Correlation(Signal(1))).result, derive(net, Correlation(Signal(2))).result
    assert sp.simplify(after - keep * before) == 0
    assert derive(net, CrossMoment(Signal(2))).result == derive(net, CrossMoment(Signal(1))).result


def test_after_dropout_a_fixed_input_no_longer_gives_a_gaussian_pre_activation():
    # tanh's second moment at a fixed input through Gaussian weights is gaussian-exact; with a dropout layer in
    # front the pre-activation is a scale mixture of Gaussians, so it is asymptotic.
    law = Normal(sp.Rational(1, 4))
    fixed = FixedInput((1.0, -1.0, 1.0, -1.0))
    tanh = activation("tanh")
    plain = Network((Dense(4, 4, law), Nonlinearity(tanh)), fixed)
    dropped = Network((Dropout(sp.Rational(1, 2)), Dense(4, 4, law), Nonlinearity(tanh)), fixed)
    assert derive(plain, SecondMoment(Signal(1))).exactness == "gaussian-exact"
    assert derive(dropped, SecondMoment(Signal(2))).exactness == "asymptotic"
    # a symmetric pre-activation keeps relu's 1/2 exact after dropout (the symmetry lemma needs no Gaussian)
    relu_net = Network((Dense(4, 4, law), Dropout(sp.Rational(1, 2)), Dense(4, 4, law), Nonlinearity(RELU)))
    assert derive(relu_net, SecondMoment(Signal(3))).exactness == "exact"


def test_finite_width_dead_probability_counts_a_dropped_layer():
    # Dense, Dropout(1/2), Dense, relu, Dense: the pre-activation of the relu is zero when every unit is dropped,
    # probability (1/2)^4 exactly (the dense output has no zero entries), so the relu's backward slope is
    # 1/2 (1 - 2^-4) exactly at finite width.
    law = Normal(sp.Rational(1, 2))
    net = Network((Dense(4, 4, law), Dropout(sp.Rational(1, 2)), Dense(4, 4, law), Nonlinearity(RELU), Dense(4, 4, law)))
    walk = propagate(net, finite_width=True)
    d = walk.derivation(SecondMoment(Gradient(2)))
    # E[g^2] = 1, the last dense layer: 4 * 1/2 = 2, the relu: 1/2 (1 - 1/16) + 0
    assert _rational(d.result) == 2 * Fraction(1, 2) * (1 - Fraction(1, 16))
    assert d.exactness == "exact"


def test_prose_of_residual_and_dropout_steps_has_no_ascii_math():
    from tests.derive.test_propagate import _sentences
    from tests.prose_words import ASCII_MATH, words

    from varprop.derive.derivation import prose_latex

    nets = [residual_network(4, 2, 1 / sp.sqrt(2), FixedInput.pair(4, sp.Rational(1, 2))),
            _dropout_net(sp.Rational(1, 2), GaussianInput(correlation=sp.Rational(1, 3)))]
    for net in nets:
        for text, _ in _sentences(net, False, False):
            found = ASCII_MATH.search(words(text))
            assert found is None, (found.group(), words(text))
            assert prose_latex(text)


# --- the length of the signal (Hanin & Rolnick 2018) and the depth scalings ----------------------------


def _length_moment_by_mixture(n: int, blocks: int, alpha_squared: Fraction) -> Fraction:
    """E[R^2] from another route: given j of the m = n hidden units active, K is chi-square with j degrees of
    freedom (E[K] = j, E[K^2] = j (j + 2)), j ~ Binomial(n, 1/2); F = 1 + 2 a sqrt(K) g_1 + a^2 K |g|^2."""
    from math import comb

    s = Fraction(2, n)  # He variance of every layer
    a2 = alpha_squared * s * s
    second = Fraction(0)
    for j in range(n + 1):
        weight = Fraction(comb(n, j), 2**n)
        k1, k2 = Fraction(j), Fraction(j * (j + 2))
        # E[F^2 | j] = 1 + 4 a^2 E[K] E[g_1^2] + 2 a^2 E[K] E|g|^2 + a^4 E[K^2] E|g|^4
        second += weight * (1 + 4 * a2 * k1 + 2 * a2 * k1 * n + a2 * a2 * k2 * n * (n + 2))
    return s * s * n * (n + 2) * second**blocks


@pytest.mark.parametrize("n,blocks", [(4, 1), (4, 3), (16, 2)])
def test_length_second_moment_against_the_binomial_mixture(n, blocks):
    from varprop.observables import NormRatioSecondMoment

    net = residual_network(n, blocks, 1 / sp.sqrt(blocks))
    d = derive(net, NormRatioSecondMoment(Signal(blocks)))
    assert _rational(d.result) == _length_moment_by_mixture(n, blocks, Fraction(1, blocks))
    assert d.exactness == "gaussian-exact" and _verified(d)


def test_length_second_moment_refuses_other_branches():
    from varprop.observables import NormRatioSecondMoment

    law = Uniform(1)
    net = Network((Dense(4, 4, law), Residual((Dense(4, 4, law), Nonlinearity(RELU), Dense(4, 4, law)), 1)))
    with pytest.raises(DerivationError, match="Gaussian dense layer without bias"):
        derive(net, NormRatioSecondMoment(Signal(1)))


def test_relative_length_variance_stays_bounded_with_sum_of_alpha_squared_bounded():
    # Hanin & Rolnick 2018, Thm. 5.4: E[R^2]/E[R]^2 stays bounded over the depth when sum alpha_l^2 is bounded
    # (alpha = 1/sqrt(L)) and grows geometrically at alpha = 1. Exact values from the mixture route above.
    def relative(blocks, alpha_squared):
        mean = Fraction(2) * (1 + 2 * alpha_squared) ** blocks  # E[R] = n E[h^2] / (n E[x^2])
        return _length_moment_by_mixture(8, blocks, alpha_squared) / mean**2

    scaled = [relative(L, Fraction(1, L)) for L in (1, 4, 16, 64)]
    unscaled = [relative(L, Fraction(1)) for L in (1, 4, 16)]
    assert max(scaled) < 2 * scaled[0] and scaled[-1] - scaled[-2] < scaled[1] - scaled[0]
    assert unscaled[2] > 10 * unscaled[1] > 10 * unscaled[0]


def test_depth_scalings_and_their_limits():
    from varprop.derive.derivation import Limit, Step
    from varprop.derive.residual import GAIN, depth_scaling, fixup_alpha

    depth = sp.Symbol("L", positive=True, integer=True)
    scaled = depth_scaling(1 / sp.sqrt(depth))
    assert scaled.result == sp.exp(GAIN) and _verified(scaled)
    assert depth_scaling(sp.Integer(1)).result == sp.oo
    assert sp.simplify(depth_scaling(sp.Integer(1)).extras["ratio"].subs(GAIN, 1) - 2**depth) == 0
    for m in (2, 3, 4):
        fixup = depth_scaling(fixup_alpha(m))
        assert fixup.result == 1 and _verified(fixup)
    # the limit check refuses a wrong limit
    step = Step(sp.Symbol("lhs"), sp.exp(2 * GAIN), scaled.steps[-1].rule, "", scaled.steps[-1].proof)
    assert isinstance(step.proof, Limit) and step.proof.run(step, ())[0] is False
    with pytest.raises(DerivationError, match="at least 2 layers"):
        fixup_alpha(1)
