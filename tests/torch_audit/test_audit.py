"""The PyTorch audit against real torch models (never a mock): verdicts, wrong siblings, an independent loop."""

from __future__ import annotations

import json
import math
import pathlib
import sys
from fractions import Fraction

import numpy as np
import pytest
import sympy as sp

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from varprop.cli import main  # noqa: E402
from varprop.errors import VarpropError  # noqa: E402
from varprop.torch import TranslationError, audit, instance_seeds  # noqa: E402
from varprop.weights import Uniform  # noqa: E402

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))
from mlp_pytorch_default import make_mlp  # noqa: E402

WIDTH, DEPTH = 64, 8


@pytest.fixture(scope="module")
def default_audit():
    return audit(make_mlp, (WIDTH,), networks=600, seed=1)


def _pytorch_recursion(width: int, depth: int) -> list[Fraction]:
    """E[y_l^2] of a relu MLP with nn.Linear defaults, by exact rational arithmetic (no sympy, no varprop).

    Var[w] = Var[b] = 1/(3n) (bound 1/sqrt(n), variance bound^2/3); E[y_1^2] = n Var[w] E[x^2] + Var[b]
    with E[x^2] = 1; relu halves a symmetric pre-activation's second moment.
    """
    var = Fraction(1, 3 * width)
    q = [width * var * 1 + var]
    for _ in range(depth - 1):
        q.append(width * var * q[-1] / 2 + var)
    return q


def test_default_mlp_every_forward_place_passes(default_audit):
    signal = default_audit.signal
    assert len(signal) == 2 * DEPTH - 1
    assert [p.outcome for p in signal] == ["PASS"] * len(signal)
    assert not default_audit.failures
    # every exact gradient claim passes too; the asymptotic ones (gradient independence) need a width sweep
    for p in default_audit.gradient:
        assert p.outcome == ("PASS" if p.result.exactness == "exact" else "INCONCLUSIVE"), p.result.message


def test_default_mlp_laws_are_torch_defaults(default_audit):
    for law in default_audit.laws:
        assert law.source == "named" and "default" in law.name, law.describe()
        assert law.law == Uniform(1 / sp.sqrt(WIDTH))


def test_prediction_matches_independent_recursion(default_audit):
    dense = [p for p in default_audit.signal if p.place.startswith("dense")]
    expected = _pytorch_recursion(WIDTH, DEPTH)
    assert [sp.Rational(p.result.claim.prediction) for p in dense] == [sp.Rational(q.numerator, q.denominator)
                                                                      for q in expected]


def test_measurement_matches_a_plain_torch_loop(default_audit):
    """The same instances, built by the documented seeding, measured by a plain loop over the Sequential."""
    networks, batch = 40, default_audit.batch
    small = audit(make_mlp, (WIDTH,), networks=networks, seed=3, pilot=10)
    signal = np.zeros((networks, 2 * DEPTH - 1))
    grad_input = np.zeros(networks)
    torch.set_num_threads(1)  # tiny matrices: intra-op threads only contend on a loaded machine
    for i in range(networks):
        model_seed, data_seed = instance_seeds(3, 0, i)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(model_seed)
            model = make_mlp().double()
        generator = torch.Generator().manual_seed(data_seed)
        x = torch.randn((batch, WIDTH), generator=generator, dtype=torch.float64, requires_grad=True)
        h, kept = x, []
        for layer in model:
            h = layer(h)
            kept.append(h)
        g = torch.randn(h.shape, generator=generator, dtype=torch.float64)
        (grad_x,) = torch.autograd.grad((h * g).sum(), x)
        signal[i] = [float((t * t).mean().detach()) for t in kept]
        grad_input[i] = float((grad_x * grad_x).mean())
    measured = [p.estimate for p in small.signal]
    np.testing.assert_allclose(measured, signal.mean(axis=0), rtol=1e-12)
    input_gradient = next(p for p in small.gradient if p.position == -1)
    assert math.isclose(input_gradient.estimate, grad_input.mean(), rel_tol=1e-12)


def _twice_the_variance():
    model = make_mlp(32, 4)
    with torch.no_grad():
        for module in model:
            if isinstance(module, nn.Linear):
                bound = math.sqrt(2 / module.in_features)  # U(+-sqrt(2/n)): variance 2/(3n), twice the default
                nn.init.uniform_(module.weight, -bound, bound)
    return model


def test_wrong_sibling_twice_the_variance_fails():
    """The model re-initialised at twice the variance, the prediction told to assume PyTorch's default: FAIL."""
    default = Uniform(1 / sp.sqrt(32))
    assume = {f"{i}.{p}": default for i in (0, 2, 4, 6) for p in ("weight", "bias")}
    result = audit(_twice_the_variance, (32,), networks=300, seed=2, assume=assume)
    deep = [p for p in result.signal if p.position >= 2]
    assert all(p.outcome == "FAIL" for p in deep), [p.outcome for p in deep]


def test_user_reinit_is_read_from_the_instances():
    """Without the false assumption, the audit measures the re-initialised law and its predictions hold."""
    result = audit(_twice_the_variance, (32,), networks=1200, seed=2)
    weights = [law for law in result.laws if law.parameter == "weight"]
    assert all(law.source == "measured" and isinstance(law.law, Uniform) for law in weights)
    assert all(abs(float(law.law.variance) * 3 * 32 / 2 - 1) < 0.01 for law in weights)
    assert not result.failures
    assert all(p.outcome == "PASS" for p in result.signal)


def test_kaiming_normal_reinit_is_named():
    def factory():
        model = make_mlp(32, 2, bias=False)
        for module in model:
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        return model

    result = audit(factory, (32,), networks=50, pilot=20)
    assert all("kaiming_normal_" in law.name for law in result.laws)


class _Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(8, 8)

    def forward(self, x):
        return x * self.inner(x)


class _Branching(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(8, 8)

    def forward(self, x):
        if x.sum() > 0:
            return self.inner(x)
        return x


@pytest.mark.parametrize("factory, words", [
    (lambda: nn.Sequential(nn.Linear(8, 8), nn.Dropout1d(0.1), nn.Linear(8, 8)), ["'1'", "Dropout1d",
                                                                                  "supported modules"]),
    (lambda: nn.Sequential(nn.Unflatten(1, (1, 8)), nn.Conv1d(1, 2, 3, dilation=2)), ["dilation"]),
    (lambda: nn.Sequential(nn.Conv1d(1, 2, 3)), ["input shape (8,)", "Conv1d", "--input-shape 1 8"]),
    (lambda: nn.Sequential(nn.Unflatten(1, (1, 8)), nn.Conv1d(1, 2, 3), nn.Linear(6, 4)),
     ["shape (3, 2, 6) after a convolution", "nn.Flatten"]),
    (_Gated, ["times a number", "mul"]),
    (_Branching, ["torch.fx cannot trace", "_Branching"]),
    (lambda: nn.Sequential(nn.Linear(8, 8), nn.GELU(approximate="tanh")), ["approximate='tanh'"]),
    (lambda: 3, ["torch.nn.Module", "int"]),
])
def test_unsupported_models_are_named(factory, words):
    with pytest.raises(VarpropError) as info:
        audit(factory, (8,), networks=4, pilot=2)
    for word in words:
        assert word in str(info.value)


def test_translation_registry_keys_are_torch_classes():
    from varprop.torch import MODULE_TRANSLATIONS

    for cls in (nn.Linear, nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.SELU, nn.Softplus,
                nn.Mish, nn.Identity, nn.Conv1d, nn.Conv2d, nn.Dropout, nn.LayerNorm, nn.RMSNorm, nn.Flatten):
        assert cls in MODULE_TRANSLATIONS


def test_rows_of_a_linear_are_inputs():
    """An input of shape (T, F) before any convolution: nn.Linear acts on each of the T rows, each an input of width F."""
    result = audit(lambda: make_mlp(16, 3), (4, 16), networks=1000, seed=6, pilot=10)
    expected = _pytorch_recursion(16, 3)
    dense = [p for p in result.signal if p.place.startswith("dense")]
    assert [sp.Rational(p.result.claim.prediction) for p in dense] == [sp.Rational(q.numerator, q.denominator)
                                                                      for q in expected]
    assert all(p.outcome == "PASS" for p in result.signal)


def test_functional_and_leaky_slope_translate():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            return self.b(torch.nn.functional.leaky_relu(self.a(x), 0.2))

    result = audit(Net, (8,), networks=20, pilot=5)
    act = result.network.layers[1].activation
    assert act.name == "leaky_relu" and dict(act.params)["a"] == sp.Rational(1, 5)


@pytest.mark.parametrize("kwargs, word", [({"networks": 1}, "networks"), ({"batch": 0}, "batch"),
                                          ({"seed": -1}, "seed"), ({"rtol": 2.0}, "rtol")])
def test_bad_arguments(kwargs, word):
    with pytest.raises(VarpropError, match=word):
        audit(make_mlp, (WIDTH,), **kwargs)


def test_bad_input_shape():
    with pytest.raises(TranslationError, match="64 features"):
        audit(make_mlp, (32,), networks=4, pilot=2)


def test_cli_errors_exit_2(capsys, tmp_path):
    example = EXAMPLES / "mlp_pytorch_default.py"
    for argv, word in ([["audit", str(tmp_path / "none.py") + ":f"], "no such model file"],
                       [["audit", f"{example}:nope"], "defines no 'nope'"],
                       [["audit", f"{example}"], "PATH.py:FACTORY"],
                       [["audit", f"{example}:make_mlp", "--input-shape", "7"], "64 features"],
                       [["audit", f"{example}:make_mlp", "--depth-plot", str(tmp_path / "x.txt")], ".png"]):
        assert main(argv) == 2
        assert word in capsys.readouterr().err


def test_cli_json_and_depth_plot(capsys, tmp_path):
    plot = tmp_path / "depth.png"
    code = main(["audit", f"{EXAMPLES / 'mlp_pytorch_default.py'}:make_mlp_no_bias", "--networks", "60", "--json",
                 "--depth-plot", str(plot), "--quiet"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert plot.stat().st_size > 10_000
    assert [p["place"] for p in out["places"] if p["tensor"] == "signal"][:3] == ["dense1", "act1", "dense2"]
    assert out["laws"][0]["source"] == "named" and len(out["laws"]) == DEPTH  # weights only: no bias
    assert out["crossings"]["signal_predicted"]["direction"] == "vanishes"


def test_without_torch_the_error_names_the_extra():
    import subprocess

    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch' or name.startswith('torch.'):\n"
            "            raise ImportError('No module named torch')\n"
            "sys.meta_path.insert(0, Block())\n"
            "from varprop.cli import main\n"
            "sys.exit(main(['audit', 'examples/mlp_pytorch_default.py:make_mlp']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=EXAMPLES.parent, capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(EXAMPLES.parent)})
    assert done.returncode == 2
    assert "pip install -e '.[torch]'" in done.stderr and "torch==2.13.0" in done.stderr
