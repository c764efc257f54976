"""Per-layer predictions for concrete networks, against hand-computed exact values."""

import pytest
import sympy as sp

from varprop.activations import activation
from varprop.derive import Q, moments
from varprop.derive import predict, weakest
from varprop.errors import DerivationError, VarpropError
from varprop.network import FixedInput, GaussianInput, mlp
from varprop.weights import Normal, Uniform, glorot, he, torch_linear_default


def test_relu_he_forward_and_backward_by_hand():
    layers = predict(mlp([3, 4, 4, 4, 2], "relu", he()))
    assert [p["y_second_moment"].value for p in layers] == [2, 2, 2, 2]
    assert [p["x_second_moment"].value for p in layers] == [1, 1, 1, 1]
    assert all(p["y_second_moment"].exactness == "exact" for p in layers)
    assert layers[1]["x_mean"].value == 1 / sp.sqrt(sp.pi)  # sqrt(2 / (2 pi))
    assert layers[1]["x_mean"].exactness == "asymptotic"  # Gaussian input times weights: not Gaussian
    # Backward, loss <g, y_L>: dL/dy_L = g, dL/dx_L = nhat Var[w] = 2 * 2/4; He's 1/2 per relu below.
    assert layers[3]["dy_second_moment"].value == 1 and layers[3]["dx_second_moment"].value == 1
    assert layers[2]["dy_second_moment"].value == sp.Rational(1, 2)
    assert layers[3]["dx_second_moment"].exactness == "exact"
    assert layers[0]["dx_second_moment"].exactness == "asymptotic"


def test_finite_width_factor_is_exact_only_where_derivable():
    net = mlp([3, 4, 4, 4, 2], "relu", he())
    refined = predict(net, finite_width=True)
    # P(x_3 != 0) = (1 - 2^-4)^2: layers 2 and 3 are each all-zero with probability 1/16.
    assert refined[2]["dy_second_moment"].value == sp.Rational(1, 2) * sp.Rational(15, 16) ** 2
    assert refined[2]["dy_second_moment"].exactness == "exact"
    assert refined[0]["dy_second_moment"].value == sp.Rational(1, 2)  # deeper: textbook value kept
    assert refined[0]["dy_second_moment"].exactness == "asymptotic"


def test_gaussian_exact_first_layer_and_pytorch_default():
    net = mlp([4, 8, 2], "relu", he(), inputs=FixedInput((1.0, -1.0, 2.0, 0.0)))
    layer2 = predict(net)[1]
    assert layer2["x_mean"].exactness == "gaussian-exact"  # y_1 is exactly N(0, 2 * 6/4)
    assert layer2["x_mean"].value == sp.sqrt(sp.Rational(3) / (2 * sp.pi))
    uniform = mlp([4, 8, 2], "relu", he(distribution="uniform"), inputs=FixedInput((1.0, -1.0, 2.0, 0.0)))
    assert predict(uniform)[1]["x_mean"].exactness == "asymptotic"
    torch = predict(mlp([16] * 5, "relu", torch_linear_default(bias=False)))
    ratios = [torch[i + 1]["y_second_moment"].value / torch[i]["y_second_moment"].value for i in range(3)]
    assert ratios == [sp.Rational(1, 6)] * 3 and torch[0]["y_second_moment"].value == sp.Rational(1, 3)


def test_tanh_uses_the_gaussian_engine_and_linear_nets_are_exact():
    layers = predict(mlp([8, 8, 8], "tanh", glorot()))
    q = layers[0]["y_second_moment"].value
    assert layers[1]["x_second_moment"].value == moments(activation("tanh")).second_moment.expr.subs(Q, q)
    assert layers[1]["x_mean"].value == 0 and layers[1]["x_mean"].exactness == "exact"  # odd activation
    linear = predict(mlp([3, 6, 4, 5], "linear", glorot()))
    assert all(p[k].exactness == "exact" for p in linear for k in p.values)


def test_bias_and_bad_inputs():
    layers = predict(mlp([4, 4, 4], "relu", he(), bias_variance=sp.Rational(1, 10)))
    assert layers[0]["y_second_moment"].value == 2 + sp.Rational(1, 10)
    assert layers[1]["y_second_moment"].value == 4 * sp.Rational(1, 2) * (2 + sp.Rational(1, 10)) / 2 + sp.Rational(1, 10)
    with pytest.raises(DerivationError, match="zero-mean weights"):
        predict(mlp([4, 4], "relu", Normal(1, 0.5)))
    with pytest.raises(DerivationError, match="needs a Network"):
        predict("relu")
    assert weakest("exact", "asymptotic", "gaussian-exact") == "asymptotic"
    # Uniform(-1, 1) has variance 1/3: E[y_1^2] = 4 * 1/3 * 1, and relu keeps half of it.
    assert predict(mlp([4, 4, 4], "relu", Uniform(1)))[1]["x_second_moment"].value == sp.Rational(2, 3)


# --- one derivation is what gets checked -------------------------------------------------------

from dataclasses import replace as _replace  # noqa: E402

from varprop.activations import BUILTIN_ACTIVATIONS  # noqa: E402
from varprop.catalogue import CATALOGUE  # noqa: E402
from varprop.derive import DERIVATIONS, Variance, condition, derive, forward, propagate  # noqa: E402
from varprop.derive.propagate import DEPTH  # noqa: E402
from varprop.observables import OBSERVABLES, Gradient, Mean, SecondMoment, Signal, WeightGradient, from_name  # noqa: E402


def _no_failed_check(derivation):
    reports = derivation.verify()
    assert len(reports) == len(derivation.steps)
    failed = [r for r in reports if r.ok is False]
    assert not failed, failed
    return reports


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_every_catalogue_claim_carries_the_derivation_it_comes_from(name):
    claim = CATALOGUE[name].at()
    d = claim.derivation
    assert d is not None and sp.simplify(d.result - claim.prediction) == 0
    assert claim.exactness == d.exactness  # never typed separately
    reports = _no_failed_check(d)
    assert any(r.ok for r in reports)  # at least one step is really checked


@pytest.mark.parametrize("kind", sorted(DERIVATIONS))
@pytest.mark.parametrize("name", BUILTIN_ACTIVATIONS)
def test_every_textbook_derivation_verifies(kind, name):
    try:
        d = DERIVATIONS[kind](activation(name))
    except DerivationError:
        return  # not applicable (ratio, glorot): a clear error, tested elsewhere
    _no_failed_check(d)
    assert d.exactness in ("exact", "gaussian-exact", "asymptotic", "approximation")


def _tampered(d, kind):
    """The derivation with the first step of check ``kind`` given a wrong right side."""
    index = next(i for i, s in enumerate(d.steps) if s.check == kind)
    step = d.steps[index]
    wrong = 2 * step.rhs if step.rhs != 0 else sp.Integer(1)
    steps = d.steps[:index] + (_replace(step, rhs=wrong),) + d.steps[index + 1:]
    return _replace(d, steps=steps), index + 1


@pytest.mark.parametrize("derivation, kind", [
    (lambda: derive(mlp([4, 4, 4], "relu", he()), from_name("y_second_moment", 2, mlp([4, 4, 4], "relu", he()))),
     "identity"),
    (lambda: forward(activation("relu")), "lemma"),
    (lambda: forward(activation("tanh")), "integral"),
    (lambda: forward(activation("relu")), "unrolled"),
    (lambda: condition(activation("relu")), "solve"),
])
def test_every_check_kind_fails_on_a_wrong_step(derivation, kind):
    d = derivation()
    tampered, number = _tampered(d, kind)
    report = tampered.verify()[number - 1]
    assert report.kind == kind and report.ok is False, report


def test_numeric_steps_are_rechecked_by_quadrature():
    net = mlp([6, 6, 6, 6], "tanh", glorot())
    d = derive(net, from_name("y_second_moment", 3, net))
    numeric = [i for i, s in enumerate(d.steps) if s.check == "integral" and s.rhs.is_Float]
    assert numeric, "a tanh network nests quadratures: some step evaluates one"
    assert all(r.ok for r in d.verify() if r.step - 1 in numeric)
    step = d.steps[numeric[0]]
    wrong = _replace(step, rhs=step.rhs * 1.001)
    assert wrong.proof.run(wrong, d.steps)[0] is False  # only this step's check: later ones would redo the algebra


def test_a_derivation_is_as_exact_as_its_weakest_step():
    net = mlp([8, 8, 8, 8], "relu", he())
    forward_d = derive(net, from_name("y_second_moment", 3, net))
    assert {s.exactness for s in forward_d.steps} == {"exact"} and forward_d.exactness == "exact"
    deep = derive(net, from_name("dx_second_moment", 1, net))
    assert deep.exactness == "asymptotic" and "asymptotic" in {s.exactness for s in deep.steps}
    tanh = propagate(mlp([8, 8, 8], "tanh", glorot()), linear_regime=True)
    assert tanh.derivation(from_name("y_second_moment", 2, tanh.network)).exactness == "approximation"


def test_the_engine_agrees_with_the_textbook_recursion_for_symbolic_widths():
    # A depth-5 relu MLP with symbolic widths n_1..n_6 and He (fan-in) variance 2/n_l: the walk gives
    # E[y_5^2] = 2 Var[x]; the textbook product Var[y_1] prod_{l=2}^{5} (1/2) n_l Var[w_l] with the same
    # variances gives the same number. Two routes through the same facts, compared by sympy.
    widths = sp.symbols("m1:7", positive=True, integer=True)
    net = mlp(list(widths), "relu", he())
    walked = derive(net, from_name("y_second_moment", 5, net)).result
    textbook = forward(activation("relu")).result.subs(DEPTH, 5).doit()
    values = {Variance(sp.IndexedBase("w")[k]): 2 / widths[k - 1] for k in range(1, 6)}
    values |= {sp.IndexedBase("n")[k]: widths[k - 1] for k in range(1, 6)}
    values[Variance(sp.IndexedBase("y")[1])] = 2  # n_1 Var[w_1] E[x^2] with unit input variance
    assert sp.simplify(textbook.subs(values) - walked) == 0
    assert sp.simplify(walked - 2) == 0


def test_observables_at_any_position():
    net = mlp([3, 4, 4, 2], "relu", he(), output_activation=True)
    last = len(net.layers) - 1  # the trailing relu: no dense layer name, still derivable
    assert derive(net, SecondMoment(Signal(last))).result == sp.Rational(1, 2) * derive(net, SecondMoment(Signal(last - 1))).result
    assert derive(net, Mean(Gradient(-1))).result == 0
    assert derive(net, Mean(WeightGradient(net.dense_positions[0]))).result == 0
    with pytest.raises(VarpropError, match="not in the network"):
        derive(net, SecondMoment(Signal(99)))


def test_every_layer_and_observable_class_has_a_derive_rule():
    from varprop.derive import backward_rule, forward_rule, observable_rules
    from varprop.network import LAYER_CLASSES

    for cls in LAYER_CLASSES:
        assert cls in forward_rule.registry and cls in backward_rule.registry, cls
    for cls in OBSERVABLES:
        assert cls in observable_rules.registry, cls


NETWORKS = {
    "tanh, fixed input, bias": mlp([3, 4, 2], "tanh", glorot(), bias_variance=0.1,
                                   inputs=FixedInput((1.0, -2.0, 1.0), partner=(0.5, 1.0, 1.0))),
    "leaky relu, trailing activation": mlp([2, 3, 3], activation("leaky_relu", a=0.2), he(a=0.2),
                                           output_activation=True, inputs=GaussianInput(correlation=sp.Rational(3, 10))),
    "gelu, uniform": mlp([3, 3, 3, 2], "gelu", he(distribution="uniform")),
    "selu, truncated normal": mlp([2, 5, 2], "selu", he(distribution="truncated_normal")),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_every_observable_everywhere_derives_and_verifies(name):
    # Every statistic of every tensor at every position: a derivation whose checks all re-run, or one
    # clear error for what does not exist (a weight gradient away from a dense layer).
    from varprop.observables import OBSERVABLES, Gradient, Signal, WeightGradient

    net = NETWORKS[name]
    derived = 0
    for cls in OBSERVABLES:
        for position in range(-1, len(net.layers)):
            for tensor in (Signal(position), Gradient(position), WeightGradient(position)):
                try:
                    observable = cls(tensor)
                    d = derive(net, observable)
                except VarpropError as exc:
                    unpaired = "needs a pair of inputs" in str(exc) and not net.inputs.paired
                    # the finite-width observables exist only on zero-bias relu chains: the error names the chain
                    assert any(w in str(exc) for w in ("dense layer", "signals only", "relu chain")) or unpaired, exc
                    continue
                derived += 1
                assert not [r for r in d.verify() if r.ok is False]
                assert d.exactness in ("exact", "gaussian-exact", "asymptotic")
    assert derived >= 4 * len(net.layers)


# --- the words of the steps: formulas are sympy parts, never ASCII math in the words (issue 13) ----

from varprop.derive.derivation import Rule, prose_latex  # noqa: E402

from tests.prose_words import ASCII_MATH, words  # noqa: E402

#: Networks (and walk options) that between them reach every rule of the walk: the symmetry lemmas and
#: the Gaussian integrals, the finite-width factor and He's value without it, the row-flip argument,
#: the linear regime, biases, a quadrature carried as a number, and both kinds of input pair.
PROSE_NETWORKS = {
    "relu, Gaussian input, finite width": (mlp([3, 4, 4, 4, 2], "relu", he()), True, False),
    "relu, Gaussian input, He's value": (mlp([3, 4, 4, 4, 2], "relu", he()), False, False),
    "tanh, fixed pair, bias": (mlp([3, 4, 2], "tanh", glorot(), bias_variance=0.1,
                                   inputs=FixedInput((1.0, -2.0, 1.0), partner=(0.5, 1.0, 1.0))), False, False),
    "leaky relu, Gaussian pair": (mlp([2, 3, 3], activation("leaky_relu", a=0.2), he(a=0.2), output_activation=True,
                                      inputs=GaussianInput(correlation=sp.Rational(3, 10))), False, False),
    "relu, orthogonal fixed pair": (mlp([2, 4, 4, 2], "relu", he(), inputs=FixedInput((1.0, 0.0), partner=(0.0, 1.0))),
                                    True, False),
    "tanh, linear regime": (mlp([3, 4, 4, 2], "tanh", glorot()), False, True),
    "tanh, two layers": (mlp([3, 3, 3, 2], "tanh", glorot()), False, False),
}


def _sentences(net, finite_width, linear_regime):
    """Title, summary, assumptions and every step's justification of the derivation of every observable."""
    from varprop.observables import OBSERVABLES, Gradient, Signal, WeightGradient

    walk = propagate(net, finite_width=finite_width, linear_regime=linear_regime)
    for cls in OBSERVABLES:
        for position in range(-1, len(net.layers)):
            for tensor in (Signal(position), Gradient(position), WeightGradient(position)):
                try:
                    d = walk.derivation(cls(tensor))
                except VarpropError:  # what does not exist here (covered by the test above)
                    continue
                yield d.title, None
                yield d.summary, None
                yield from ((a, None) for a in d.assumptions)
                yield from ((s.justification, s.rule) for s in d.steps)


def test_step_words_have_no_ascii_math():
    rules = set()
    for name, (net, finite_width, linear_regime) in PROSE_NETWORKS.items():
        for text, rule in _sentences(net, finite_width, linear_regime):
            found = ASCII_MATH.search(words(text))
            assert found is None, (name, found.group(), words(text))
            assert prose_latex(text)  # every formula part typesets
            rules.add(rule)
    # Every rule the walk writes a justification for was seen, so the scan covered all of them.
    assert {Rule.DEFINITION, Rule.CHAIN_RULE, Rule.INDEPENDENCE, Rule.ZERO_MEAN, Rule.SYMMETRY, Rule.GAUSSIAN_INTEGRAL,
            Rule.LINEAR_REGIME, Rule.SUBSTITUTION, Rule.VARIANCE_DEFINITION} <= rules


def test_the_step_words_scan_sees_the_old_ascii_justifications():
    # The justifications this module wrote as f-strings before issue 13: the scan above would have failed on them.
    for old in ("y_1 is a sum of n terms w x, uncorrelated because E[w] = 0 and w is independent of x", "phi(z) ~ z",
                "phi'(y)^2 + phi'(-y)^2 = 1 for y != 0 (sympy)", "dL/dW_2 = (Delta_y_2) x^T",
                "R = |y_2|^2 / |x_1|^2", "the fixed pair: (1/n) <x, x'>", "weights of dense1: Normal(var=1/16)",
                "substitute the moments of y_1", "(y, y') is exactly jointly Gaussian"):
        assert ASCII_MATH.search(words(old)), old


@pytest.mark.parametrize("integral", [False, True])
def test_a_numeric_step_is_re_evaluated_and_refused_when_wrong(integral):
    from varprop.derive.derivation import Expect, Numeric, Rule, _Builder
    from varprop.derive.gaussian import evaluate
    from varprop.errors import DerivationError

    z = sp.Symbol("z", real=True)
    closed = sp.erf(sp.Rational(1, 3)) ** 3 + sp.exp(sp.erf(1)) / 7
    if integral:
        closed += sp.Integral(sp.exp(-z**2 / 2) * sp.tanh(z) ** 2, (z, -sp.oo, sp.oo))
    number = evaluate(closed)
    builder = _Builder("test")
    lhs = Expect(sp.Symbol("x") ** 2)
    builder.add(lhs, sp.Float(number.value), Rule.ALGEBRA, proof=Numeric(closed, number.error_estimate))
    with pytest.raises(DerivationError, match="re-evaluated by " + ("quadrature" if integral else "evaluation")):
        builder.add(lhs, sp.Float(number.value * (1 + 1e-6)), Rule.ALGEBRA, proof=Numeric(closed, number.error_estimate))
