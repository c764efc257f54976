"""Claim files name every framework initialiser: ``init = "NAME"`` or ``init = { name = "NAME", ARG = VALUE }``.

The predictions are compared with the second moments computed here from the frameworks' documented
formulas (the uniform variance by integration, the truncated normal's by mpmath quadrature), not from
varprop's table, and the Monte Carlo checker passes them and fails a wrong sibling.
"""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys
from fractions import Fraction

import mpmath
import pytest
import sympy as sp

from varprop.claimfile import load_claims
from varprop.claims import ClaimError
from varprop.cli import main
from varprop.montecarlo.check import check
from varprop.weights import FRAMEWORK_INITIALISERS, INIT_NAMES, init_scheme

WIDTH = 16
#: Keras / JAX: stddev = sqrt(scale / fan) / .87962566103423978, then cut at +-2 stddev (keras.initializers.VarianceScaling).
KERAS_SD_FACTOR = sp.Float("0.87962566103423978", 30)


def _write(tmp_path, text):
    path = tmp_path / "claims.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _claim(init: str, prediction: str, name: str = "c", layer: int = 2, extra: str = "") -> str:
    return f'''
[[claim]]
name = "{name}"
activation = "relu"
widths = [{WIDTH}, {WIDTH}, {WIDTH}]
init = {init}
{extra}
observable = "y_second_moment"
layer = {layer}
prediction = "{prediction}"
'''


def _relu_layer_two(variance: sp.Expr) -> sp.Expr:
    """E[y_2^2] of relu(W_2 relu... ): n Var[w] E[x^2] = n Var[w] for a standard Gaussian input, then relu halves
    a symmetric pre-activation's second moment (He et al. 2015, eq. 7-8); no bias."""
    first = WIDTH * variance
    return WIDTH * variance * first / 2


def _torch_kaiming_uniform_variance(a: sp.Expr) -> sp.Expr:
    """torch.nn.init.kaiming_uniform_ as documented: bound = gain sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2));
    the variance of U(-bound, bound) by integrating w^2 against its density."""
    w = sp.Symbol("w", real=True)
    bound = sp.sqrt(2 / (1 + a**2)) * sp.sqrt(sp.Rational(3, WIDTH))
    return sp.integrate(w**2 / (2 * bound), (w, -bound, bound))


def _keras_truncated_variance(scale: int) -> float:
    """keras.initializers.VarianceScaling(scale, 'fan_in', 'truncated_normal'): the variance of
    N(0, stddev^2) cut at +-2 stddev, by mpmath quadrature of the truncated density."""
    mpmath.mp.dps = 30
    stddev = mpmath.sqrt(mpmath.mpf(scale) / WIDTH) / mpmath.mpf(str(KERAS_SD_FACTOR))
    density = lambda t: mpmath.npdf(t)
    mass = mpmath.quad(density, [-2, 2])
    standard = mpmath.quad(lambda t: t * t * density(t), [-2, 2]) / mass
    return float(stddev**2 * standard)


def test_pytorch_linear_default_and_a_keras_initialiser_by_name(tmp_path):
    text = (_claim('{ name = "torch.kaiming_uniform_", a = "sqrt(5)" }', "1/18", "torch-linear-weights")
            + _claim('"keras.he_normal"', "2", "keras-he-normal"))
    torch_claim, keras_claim = load_claims(_write(tmp_path, text))
    expected_torch = _relu_layer_two(_torch_kaiming_uniform_variance(sp.sqrt(5)))
    assert expected_torch == sp.Rational(1, 18)
    assert torch_claim.derived == expected_torch and torch_claim.agreement.startswith("matches the derivation")
    assert keras_claim.agreement.startswith("matches the derivation")
    assert float(keras_claim.derived) == pytest.approx(_relu_layer_two(_keras_truncated_variance(2)), rel=1e-14)
    torch_law = torch_claim.claim.network.layers[0].weights
    assert torch_law == init_scheme("torch.nn.Linear").law(WIDTH, WIDTH)  # nn.Linear's weight, without its bias
    keras_law = keras_claim.claim.network.layers[0].weights
    assert (keras_law.lo, keras_law.hi) == (-2, 2)  # truncated at two of its standard deviations


def test_pytorch_gain_is_torchs_calculate_gain():
    torch = pytest.importorskip("torch")
    gain = torch.nn.init.calculate_gain("leaky_relu", math.sqrt(5))
    assert float(_torch_kaiming_uniform_variance(sp.sqrt(5))) == pytest.approx(gain**2 * 3 / WIDTH / 3, rel=1e-15)


def test_the_module_default_carries_its_bias(tmp_path):
    """init = "torch.nn.Linear": the weight and PyTorch's default bias U(+-1/sqrt(fan_in)), both of variance 1/(3n)."""
    (claim,) = load_claims(_write(tmp_path, _claim('"torch.nn.Linear"', "1/18")))
    var = _torch_kaiming_uniform_variance(sp.sqrt(5))
    first = WIDTH * var + var
    assert claim.derived == WIDTH * var * first / 2 + var
    assert claim.agreement.startswith("differs from the derivation")


def test_monte_carlo_passes_the_framework_laws_and_fails_wrong_siblings(tmp_path):
    text = (_claim('{ name = "torch.kaiming_uniform_", a = "sqrt(5)" }', "1/18", "torch")
            + _claim('"keras.he_normal"', "2", "keras"))
    torch_claim, keras_claim = load_claims(_write(tmp_path, text))
    for file_claim in (torch_claim, keras_claim):
        assert check(file_claim.target, samples=4000, seed=3, rtol=0.05).outcome == "PASS", file_claim.claim.name
    # wrong siblings: nn.Linear's default bias U(+-1/sqrt(n)) counted although the weights come alone, and
    # Keras' truncated normal without its 1/.8796 correction (variance 0.7737 * 2/n)
    var = _torch_kaiming_uniform_variance(sp.sqrt(5))
    with_bias = WIDTH * var * (WIDTH * var + var) / 2 + var
    uncorrected = _relu_layer_two(_keras_truncated_variance(2) * float(KERAS_SD_FACTOR) ** 2)
    for file_claim, wrong in ((torch_claim, with_bias), (keras_claim, sp.Float(uncorrected))):
        sibling = file_claim.claim.with_prediction(wrong, name=f"{file_claim.claim.name} (wrong)")
        assert check(sibling, samples=4000, seed=3, rtol=0.05).outcome == "FAIL", file_claim.claim.name


def test_every_init_name_is_accepted_by_a_claim_file(tmp_path):
    text = "".join(_claim(f'"{name}"', "1", f"claim {index}", layer=1) for index, name in enumerate(INIT_NAMES))
    claims = load_claims(_write(tmp_path, text))
    assert [c.claim.network.layers[0].weights for c in claims] == [init_scheme(name).law(WIDTH, WIDTH)
                                                                  for name in INIT_NAMES]
    assert set(FRAMEWORK_INITIALISERS) < set(INIT_NAMES)


@pytest.mark.parametrize("init, arguments", [
    ('{ name = "keras.variance_scaling", scale = 3, mode = "fan_avg", distribution = "uniform" }',
     {"scale": 3, "mode": "fan_avg", "distribution": "uniform"}),
    ('{ name = "torch.kaiming_normal_", mode = "fan_out", nonlinearity = "relu" }',
     {"mode": "fan_out", "nonlinearity": "relu"}),
    ('{ name = "torch.trunc_normal_", std = 0.5, a = -1, b = "3/2" }',
     {"std": sp.Rational(1, 2), "a": -1, "b": sp.Rational(3, 2)}),
    ('{ name = "he", mode = "fan_out", a = 0.2, distribution = "uniform" }',
     {"mode": "fan_out", "a": sp.Rational(1, 5), "distribution": "uniform"}),
    ('{ name = "keras.variance_scaling", distribution = "normal" }', {"distribution": "normal"}),
])
def test_arguments_in_the_init_table(tmp_path, init, arguments):
    (claim,) = load_claims(_write(tmp_path, _claim(init, "1", layer=1)))
    name = init.split('"')[1]
    assert claim.claim.network.layers[0].weights == init_scheme(name, **arguments).law(WIDTH, WIDTH)


def test_variance_scaling_distribution_normal_is_not_the_default():
    """distribution = "normal" given explicitly is Keras' untruncated normal, not its default truncated one."""
    assert init_scheme("keras.variance_scaling", distribution="normal").law(4, 4).gaussian
    assert not init_scheme("keras.variance_scaling").law(4, 4).gaussian


def test_the_old_spelling_still_works(tmp_path):
    (claim,) = load_claims(_write(tmp_path, _claim('"he"', "1", layer=1, extra='mode = "fan_out"\nslope = 0.5\n'
                                                                             'distribution = "uniform"')))
    assert claim.claim.network.layers[0].weights == init_scheme("he", mode="fan_out", a=sp.Rational(1, 2),
                                                                distribution="uniform").law(WIDTH, WIDTH)


@pytest.mark.parametrize("init, extra, message", [
    ('"torch.kaiming_uniform"', "", ("unknown init scheme 'torch.kaiming_uniform'; did you mean 'torch.kaiming_uniform_'"
                                     "\\? known \\(`varprop initialisers` lists them with their arguments\\): he, ")),
    ('{ name = "torch.kaiming_uniform_", gain = 2 }', "",
     "init torch.kaiming_uniform_ has no argument 'gain'; it takes: a \\(default 0\\), mode \\(default 'fan_in'\\)"),
    ('{ name = "torch.kaiming_uniform_", mode = "fan_avg" }', "",
     "init torch.kaiming_uniform_: unknown mode 'fan_avg'; known: fan_in, fan_out"),
    ('{ name = "torch.kaiming_uniform_", a = "five" }', "", "init torch.kaiming_uniform_: a: .*'five'"),
    ('{ name = "torch.kaiming_uniform_", nonlinearity = 3 }', "",
     "nonlinearity must be a name in quotes such as 'leaky_relu', got 3"),
    ('{ name = "torch.kaiming_normal_", nonlinearity = "gelu" }', "", "no gain for 'gelu'"),
    ('{ name = "keras.variance_scaling", scale = -1 }', "", "init keras.variance_scaling: scale must be positive"),
    ('{ a = 2 }', "", "an init table needs name"),
    ("3", "", "init must be a name such as"),
    ('"keras.he_normal"', 'mode = "fan_out"', ('mode goes with a built-in init .*; keras.he_normal takes its own '
                                               'arguments in an init table, init = \\{ name = "keras.he_normal"')),
    ('{ name = "he", mode = "fan_out" }', "slope = 0.1", "with an init table, write slope inside it"),
])
def test_bad_init_names_and_arguments_are_one_clear_error(tmp_path, capsys, init, extra, message):
    path = _write(tmp_path, _claim(init, "1", layer=1, extra=extra))
    with pytest.raises(ClaimError, match=message):
        load_claims(path)
    assert main(["check", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("varprop: claims.toml, claim 1") and "Traceback" not in err


def test_initialisers_lists_every_name(capsys):
    assert main(["initialisers"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name}(" in out for name in INIT_NAMES)
    assert "  torch.kaiming_uniform_(a=0, mode='fan_in', nonlinearity='leaky_relu')\n      uniform, Var[w] = 2/n_in" in out
    assert "torch.nn.Linear()\n      uniform, Var[w] = 1/(3*n_in); bias uniform, Var[b] = 1/(3*n_in)" in out


EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "examples" / "framework-inits.toml"


def test_the_documented_example_passes_and_a_forgotten_bias_fails(tmp_path, capsys):
    assert main(["check", str(EXAMPLE), "--quiet", "--samples", "4000", "--rtol", "0.05", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["outcome"] for r in data["results"]] == ["PASS"] * 3
    claims = load_claims(EXAMPLE)
    assert all(c.agreement.startswith("matches the derivation") for c in claims)
    # the worked value 23/288 by exact rational arithmetic: Var[w] = Var[b] = (1/sqrt(16))^2 / 3
    var = Fraction(1, 16 * 3)
    first = 16 * var + var
    assert claims[0].claim.prediction == sp.Rational(16 * var * first / 2 + var)
    wrong = EXAMPLE.read_text(encoding="utf-8").replace('prediction = "23/288"', 'prediction = "1/18"')
    assert main(["check", str(_write(tmp_path, wrong)), "--quiet", "--samples", "4000", "--rtol", "0.05"]) == 1
    out = capsys.readouterr().out
    assert "torch-linear-default: your prediction differs from the derivation (23/288, exact)" in out


def test_check_help_names_the_initialisers_command():
    help_text = subprocess.run([sys.executable, "-m", "varprop.cli", "check", "--help"], capture_output=True, check=False,
                               text=True).stdout
    assert "varprop initialisers" in " ".join(help_text.split())


def test_the_python_api_takes_the_names_too():
    from varprop.errors import SpecError
    from varprop.network import cnn, mlp

    assert mlp([8, 8, 4], "relu", "torch.nn.Linear") == mlp([8, 8, 4], "relu", init_scheme("torch.nn.Linear"))
    assert cnn([2, 4], 3, 6, "relu", "torch.nn.Conv1d") == cnn([2, 4], 3, 6, "relu", init_scheme("torch.nn.Conv1d"))
    with pytest.raises(SpecError, match="unknown init scheme 'keras.he_norma'; did you mean 'keras.he_normal'"):
        mlp([8, 4], "relu", "keras.he_norma")
