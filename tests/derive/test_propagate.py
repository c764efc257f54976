"""Per-layer predictions for concrete networks, against hand-computed exact values."""

import pytest
import sympy as sp

from varprop.activations import activation
from varprop.derive import Q, moments
from varprop.derive import predict, weakest
from varprop.errors import DerivationError
from varprop.network import FixedInput, mlp
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
