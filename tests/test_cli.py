import json
import pathlib
import subprocess
import sys

import pytest

from varprop.activations import BUILTIN_ACTIVATIONS
from varprop.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_moments_json_keys_and_values(capsys):
    code, out, _ = run(capsys, "moments", "relu", "--json")
    data = json.loads(out)
    assert code == 0
    for key in ("activation", "mean", "second_moment", "variance", "derivative_second_moment",
                "mean_expr", "second_moment_expr", "variance_expr", "derivative_second_moment_expr", "exact", "error_bound"):
        assert key in data
    assert data["second_moment"] == 0.5 and data["second_moment_expr"] == "q/2" and data["exact"] is True
    assert data["error_bound"] == 0


def test_moments_numeric_activation_and_params(capsys):
    _, out, _ = run(capsys, "moments", "tanh", "--q", "2", "--json")
    data = json.loads(out)
    assert data["exact"] is False and 0 < data["error_bound"] < 1e-9
    _, out, _ = run(capsys, "moments", "leaky_relu", "--param", "a=0.2", "--json")
    assert json.loads(out)["second_moment"] == pytest.approx(0.52, rel=1e-15)
    _, out, _ = run(capsys, "moments", "leaky_relu", "--param", "a", "--json")
    data = json.loads(out)
    assert data["second_moment"] is None and "a**2" in data["second_moment_expr"]
    code, out, _ = run(capsys, "moments", "max(x, 0) - 0.5")
    assert code == 0 and "E[phi(z)^2]" in out


@pytest.mark.parametrize("name", BUILTIN_ACTIVATIONS)
def test_moments_text_for_every_builtin(capsys, name):
    code, out, _ = run(capsys, "moments", name)
    assert code == 0 and out.startswith(name)


def test_derive_formats(capsys):
    for fmt in ("text", "markdown", "latex", "json"):
        code, out, _ = run(capsys, "derive", "forward", "--activation", "relu", "--format", fmt)
        assert code == 0 and out
    _, out, _ = run(capsys, "derive", "condition", "--activation", "leaky_relu", "--param", "a", "--format", "json")
    data = json.loads(out)
    assert data["weight_variance"] == "2/(n_in*(a**2 + 1))"
    assert data["steps"] and data["result"]
    _, out, _ = run(capsys, "derive", "condition", "--mode", "fan_out", "--format", "json")
    assert json.loads(out)["weight_variance"] == "2/n_out"
    _, out, _ = run(capsys, "derive", "glorot", "--activation", "linear", "--format", "json")
    assert json.loads(out)["weight_variance"] == "2/(n_in + n_out)"
    code, out, _ = run(capsys, "derive", "forward", "--weight-mean")
    assert code == 0 and "E[w_l]^2" in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["moments", "rleu"], "unknown activation 'rleu'"),
        (["moments", "max(x, 0"], "malformed expression"),
        (["moments", "relu", "--param", "a=1"], "no parameter 'a'"),
        (["moments", "relu", "--q", "-1"], "non-negative"),
        (["moments", "relu", "--q", "x"], "must be a number"),
        (["moments", "exp(x**2)"], "not square-integrable"),
        (["moments", "__import__('os').system('id')"], "not accepted"),
        (["derive", "ratio", "--activation", "tanh"], "homogeneous"),
        (["moments", "leaky_relu", "--param", "1a=2"], "NAME or NAME=VALUE"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, fragment):
    code, out, err = run(capsys, *argv)
    assert code == 2 and fragment in err and err.startswith("varprop: ") and err.count("\n") == 1


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["derive", "sideways"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["derive", "condition", "--weights", "gauss"])
    assert info.value.code == 2


@pytest.mark.parametrize("command", [[], ["moments"], ["derive"], ["activations"]])
def test_help_everywhere(command):
    result = subprocess.run([sys.executable, "-m", "varprop.cli", *command, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: varprop" in result.stdout


def test_console_script_runs_and_rejects_without_traceback():
    result = subprocess.run(["varprop", "moments", "rleu"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_derive_glorot_works_with_its_default_activation(capsys):
    code, out, err = run(capsys, "derive", "glorot")
    assert code == 0 and "for linear" in out and err == ""
    code, out, err = run(capsys, "derive", "glorot", "--activation", "relu")
    assert code == 2 and err.startswith("varprop: ")  # relu is not Glorot's linear regime: refused, and said why
    help_text = subprocess.run([sys.executable, "-m", "varprop.cli", "derive", "--help"], capture_output=True,
                               text=True).stdout
    assert "for glorot linear" in " ".join(help_text.split())


def test_check_help_points_to_the_claim_format():
    help_text = subprocess.run([sys.executable, "-m", "varprop.cli", "check", "--help"], capture_output=True,
                               text=True).stdout
    assert "docs/claims.rst" in help_text and "README" not in help_text


def test_claim_file_notes_are_sentences(capsys):
    example = pathlib.Path(__file__).resolve().parents[1] / "docs" / "examples" / "my-claims.toml"
    code, out, err = run(capsys, "check", str(example), "--samples", "200", "--quiet")
    notes = [line for line in out.splitlines() if line.startswith(("he-relu-uniform:", "relu-mean-uniform:"))]
    assert notes and all(": your prediction " in line or ": varprop derives" in line for line in notes)
    assert "the prediction varprop derives no prediction" not in out
    header = next(line for line in out.splitlines() if line.startswith("claim"))
    assert " width " in f" {header} " and " networks " in f" {header} " and " n " not in f" {header} "


# --- kernel and meanfield -------------------------------------------------------------------------


def test_kernel_closed_form_and_quadrature(capsys):
    code, out, _ = run(capsys, "kernel", "relu", "--q1", "1", "--q2", "1", "--c", "0", "--json")
    data = json.loads(out)
    assert code == 0 and data["route"] == "arc-cosine kernel (degree 1)" and data["exact"] is True
    assert data["value"] == pytest.approx(1 / (2 * 3.141592653589793), rel=1e-15) and data["error_estimate"] is None
    assert data["derivation"]["steps"][0]["check"] == "integral"
    code, out, _ = run(capsys, "kernel", "tanh", "--c", "0.5", "--derivative", "--json")
    data = json.loads(out)
    assert code == 0 and data["route"] == "quadrature" and data["exact"] is False and 0 < data["error_estimate"] < 1e-10
    for fmt in ("text", "markdown", "latex"):
        code, out, _ = run(capsys, "kernel", "erf", "--q1", "2", "--c", "-1", "--format", fmt)
        assert code == 0 and ("arcsin" in out or "asin" in out)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["kernel", "relu", "--c", "1.5"], "--c is a correlation and must be in [-1, 1], got '1.5'"),
        (["kernel", "relu", "--q1", "-1"], "--q1 is a variance and must be non-negative, got '-1'"),
        (["kernel", "relu", "--q2", "-0.5"], "--q2 is a variance and must be non-negative, got '-0.5'"),
        (["kernel", "relu", "--c", "x"], "--c must be a number"),
        (["meanfield", "tanh", "--weight-variance", "-2"], "--weight-variance is a variance and must be non-negative, got '-2'"),
        (["meanfield", "tanh", "--bias-variance", "-1"], "--bias-variance is a variance and must be non-negative, got '-1'"),
        (["meanfield", "relu", "--bias-variance", "0.1"], "relu has no edge of chaos at sigma_b^2 = 0.1"),
        (["meanfield", "tanh", "--edge-of-chaos", "--points", "1"], "--points must be in [2, 1000], got 1"),
    ],
)
def test_kernel_and_meanfield_errors(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err and out == ""


def test_meanfield_relu_under_he_and_tanh(capsys):
    code, out, _ = run(capsys, "meanfield", "relu", "--json")
    data = json.loads(out)
    assert code == 0 and data["weight_variance"] == 2 and data["chi_1"] == 1 and data["phase"] == "critical"
    code, out, _ = run(capsys, "meanfield", "tanh", "--weight-variance", "4", "--bias-variance", "0.05")
    assert code == 0 and "phase    chaotic" in out and "c*" in out
    code, out, _ = run(capsys, "meanfield", "relu", "--weight-variance", "2", "--format", "latex")
    assert code == 0 and r"\begin{align}" in out


def test_meanfield_edge_of_chaos(capsys):
    code, out, _ = run(capsys, "meanfield", "tanh", "--edge-of-chaos", "--points", "3", "--json")
    rows = json.loads(out)["edge_of_chaos"]
    assert code == 0 and [r["bias_variance"] for r in rows] == [0, 0.25, 0.5]
    assert rows[0]["weight_variance"] == pytest.approx(1.0, rel=1e-12)  # tanh'(0) = 1: sigma_w^2 = 1 at sigma_b^2 = 0
    code, out, _ = run(capsys, "meanfield", "relu", "--edge-of-chaos", "--points", "2")
    assert code == 0 and "every q" in out and "none" in out


def test_kernel_and_meanfield_help():
    for command in ("kernel", "meanfield"):
        result = subprocess.run([sys.executable, "-m", "varprop.cli", command, "--help"], capture_output=True, text=True,
                                check=False, cwd=pathlib.Path(__file__).parents[1])
        assert result.returncode == 0 and "usage: varprop " + command in result.stdout


def test_meanfield_plots(capsys, tmp_path):
    code, _, err = run(capsys, "meanfield", "erf", "--weight-variance", "2", "--bias-variance", "0.1", "--plot", str(tmp_path))
    assert code == 0 and (tmp_path / "c-map-erf.png").is_file() and (tmp_path / "c-map-erf.svg").is_file()
    code, _, err = run(capsys, "meanfield", "tanh", "--weight-variance", "1", "--plot", str(tmp_path))
    assert code == 2 and "q* = 0" in err


def test_gains_text_and_json(capsys):
    code, out, err = run(capsys, "gains")
    assert code == 0 and err == ""
    assert "tanh" in out and "NFNets gamma = 1/sqrt(Var[phi(z)])" in out and "leaky_relu(sqrt(5))" in out
    code, out, _ = run(capsys, "gains", "--json")
    rows = {row["activation"]: row for row in json.loads(out)["rows"]}
    assert code == 0 and rows["tanh"]["torch_calculate_gain_expr"] == "5/3"
    assert rows["gelu"]["torch_calculate_gain"] is None and rows["relu"]["forward_gain_q1"]["expr"] == "sqrt(2)"
    assert rows["tanh"]["torch_vs_forward_percent"] == pytest.approx(
        100 * (5 / 3 / rows["tanh"]["forward_gain_q1"]["value"] - 1), rel=1e-12)


def test_gains_help():
    result = subprocess.run([sys.executable, "-m", "varprop.cli", "gains", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: varprop gains" in result.stdout and "--json" in result.stdout


def test_explain_help_names_every_topic(capsys):
    """The topic list in ``varprop explain --help`` is typed (the help must not import the topics): it cannot drift."""
    from varprop.explain import TOPICS

    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse wraps at hyphens
    missing = [name for name in TOPICS if name not in text]
    assert missing == []
