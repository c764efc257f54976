import pytest
import sympy as sp

from varprop.activations import activation
from varprop.errors import SpecError
from varprop.network import Dense, FixedInput, GaussianInput, Network, Nonlinearity, mlp
from varprop.weights import Normal, he, torch_linear_default


def test_mlp_layout_and_laws():
    net = mlp([4, 8, 8, 2], "relu")
    assert net.depth == 3 and net.widths == (4, 8, 8, 2)
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds == ["Dense", "Nonlinearity", "Dense", "Nonlinearity", "Dense"]
    assert net.dense_layers[1].weights == Normal(sp.Rational(2, 8))
    assert mlp([3, 5], "relu", torch_linear_default()).dense_layers[0].bias is not None
    assert mlp([3, 5], "tanh", bias_variance=0.1).dense_layers[0].bias == Normal(0.1)
    assert isinstance(mlp([2, 2, 2], "relu", output_activation=True).layers[-1], Nonlinearity)


def test_symbolic_widths_pass():
    n = sp.symbols("n_1:4")
    a = sp.Symbol("a", real=True)
    net = mlp(list(n), activation("leaky_relu", a=a), he(a=a))
    assert net.dense_layers[1].weights.variance == 2 / ((1 + a**2) * n[1])
    assert not net.is_numeric


@pytest.mark.parametrize("widths, fragment", [
    ([4, -3], r"got -3 \(widths\[1\]\)"),
    ([4, 0], "got 0"),
    ([4, 2.5], "got 2.5"),
    ([4, True], "got True"),
    ([4], "at least two widths"),
    ([sp.Symbol("m", negative=True), 3], "got m"),
])
def test_bad_widths(widths, fragment):
    with pytest.raises(SpecError, match=fragment):
        mlp(widths)


def test_inconsistent_layers_and_inputs():
    with pytest.raises(SpecError, match="fan_in 5 but the previous dense layer has fan_out 4"):
        Network((Dense(3, 4, Normal(1)), Dense(5, 2, Normal(1))))
    with pytest.raises(SpecError, match="fixed input has 2 entries"):
        mlp([3, 1], inputs=FixedInput((1.0, 2.0)))
    with pytest.raises(SpecError, match="finite"):
        FixedInput((1.0, float("inf")))
    with pytest.raises(SpecError, match="weight law"):
        Dense(2, 2, "normal")
    with pytest.raises(SpecError, match="non-negative"):
        GaussianInput(-1)
    assert FixedInput((1.0, 2.0)).second_moment == sp.Rational(5, 2)


def test_normalisers_spec():
    import numpy as np

    from varprop.network import FLOAT64_EPS, LayerNorm, Network, RMSNorm
    from varprop.weights import Normal

    assert LayerNorm(4).eps == sp.Rational(1, 100000) and LayerNorm(4, eps=1e-5).eps == sp.Rational(1, 100000)
    assert RMSNorm(4).eps == FLOAT64_EPS == sp.Rational(1, 2**52)  # torch's eps=None: finfo(float64).eps
    assert RMSNorm(4, eps=float(np.finfo(np.float64).eps)).eps == FLOAT64_EPS
    dense = Dense(4, 4, Normal(1))
    network = Network((dense, LayerNorm(4), RMSNorm(4), dense))
    assert [network.place_name(p) for p in range(4)] == ["dense1", "layernorm1", "rmsnorm1", "dense2"]
    assert network.width(1) == 4 and network.depth == 2
    for bad, fragment in [(lambda: LayerNorm(4, eps=-1), "non-negative"), (lambda: RMSNorm(0), "width"),
                          (lambda: LayerNorm(4, affine=1), "True or False"),
                          (lambda: Network((dense, RMSNorm(3), dense)), "width 3 but the signal there has width 4"),
                          (lambda: Network((LayerNorm(5), dense)), "width 5")]:
        with pytest.raises(SpecError, match=fragment):
            bad()
