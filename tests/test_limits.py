"""Bad and oversized input: one clear error (CLI: one ``varprop:`` line, exit 2), refused before any work.

Memory limits are pinned with ``VARPROP_MAX_MEMORY`` so that the verdicts do not depend on the
machine running the tests.
"""

import os
import time
import tracemalloc

import pytest

import varprop
from varprop.cli import main
from varprop.errors import ResourceError, SpecError, VarpropError, abbreviate
from varprop.montecarlo import MonteCarloError, check, judge, sample
from varprop.montecarlo import limits
from varprop.montecarlo.limits import LimitError, MAX_NEEDED
from varprop.network import mlp

BIG = 10**300
CLAIM = """
[[claim]]
name = "{name}"
activation = "relu"
widths = {widths}
{law}
observable = "{observable}"
layer = {layer}
prediction = "{prediction}"
"""


@pytest.fixture(autouse=True)
def _pinned_limits(monkeypatch):
    monkeypatch.setenv("VARPROP_MAX_MEMORY", "4GB")
    monkeypatch.delenv("VARPROP_MAX_DRAWS", raising=False)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(capsys, *argv, fragment=""):
    start = time.perf_counter()
    code, out, err = run(capsys, *argv)
    assert code == 2, (out, err)
    assert err.startswith("varprop: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert fragment in err, err
    assert len(err) < 600, err  # nothing huge dumped
    assert time.perf_counter() - start < 10
    return err


def claim_file(tmp_path, name="c", widths="[8, 8, 8]", law="", observable="y_second_moment", layer=2, prediction="2"):
    path = tmp_path / f"{name}.toml"
    path.write_text(CLAIM.format(name=name, widths=widths, law=law, observable=observable, layer=layer,
                                 prediction=prediction))
    return path


# --- check: sizes refused with the figure, before sampling ---------------------------------------


def test_check_refuses_a_trillion_networks_with_the_memory_figure(capsys):
    err = one_line_error(capsys, "check", "he-forward-relu-normal", "--samples", 10**12, fragment="needs about")
    assert "288 TB" in err and "at most 4 GB is allowed" in err and "VARPROP_MAX_MEMORY" in err


def test_check_refuses_a_width_whose_weight_matrix_cannot_fit(capsys):
    err = one_line_error(capsys, "check", "he-forward-relu-normal", "--width", 100000, "--engine", "full",
                         fragment="width 100000")
    assert "80 GB" in err and "at most 4 GB" in err


def test_the_conditional_engine_bound_is_linear_in_the_width(capsys):
    # No weight matrix is held: width 10^5 is checkable (docs/engines.rst), 10^8 is not.
    err = one_line_error(capsys, "check", "he-forward-relu-normal", "--width", 10**8, fragment="width 100000000")
    assert "the vectors of one layer" in err and "at most 4 GB" in err


def test_check_refuses_a_width_that_would_take_hours(capsys):
    err = one_line_error(capsys, "check", "he-forward-relu-normal", "--width", 3000, "--engine", "full",
                         fragment="would draw 5.4e+10")
    assert "VARPROP_MAX_DRAWS" in err


def test_draw_limit_is_configurable(capsys, monkeypatch):
    monkeypatch.setenv("VARPROP_MAX_DRAWS", "1000")
    one_line_error(capsys, "check", "he-forward-relu-normal", "--samples", 100, fragment="at most 1e+03 are drawn")


def test_claim_file_with_a_huge_layer_is_refused_before_any_allocation(tmp_path, capsys):
    path = claim_file(tmp_path, "wide", widths="[8, 100000000, 8]")
    tracemalloc.start()
    try:
        err = one_line_error(capsys, "check", path, "--quiet", fragment="claim 1 (wide): sampling one network")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "widths 8, 100000000, 8" in err and "GB" in err and "at most 4 GB" in err
    assert peak < 200e6


@pytest.mark.parametrize("option, value, fragment", [
    ("--samples", BIG, "(301 digits) networks"),
    ("--width", BIG, "width 1000"),
    ("--width", -BIG, "--width must be at least 1"),
    ("--seed", 10**400, "(401 digits)"),
    ("--seed", -1, "--seed must be an integer from 0 to 2**128 - 1, got -1"),
])
def test_huge_and_negative_numbers_are_abbreviated(capsys, option, value, fragment):
    err = one_line_error(capsys, "check", "he-forward-relu-normal", option, value, fragment=fragment)
    assert len(str(abs(value))) < 60 or str(abs(value)) not in err


def test_argparse_errors_are_one_line_and_abbreviated(capsys):
    for argv in (["check", "he-forward-relu-normal", "--width", "abc"],
                 ["check", "he-forward-relu-normal", "--samples", "1" * 5000],
                 ["derive", "x" * 5000]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and err.startswith("varprop: ") and err.count("\n") == 1 and len(err) < 400, err


# --- claims whose numbers overflow ----------------------------------------------------------------


def test_tiny_prediction_gets_a_verdict_not_an_overflow(tmp_path, capsys):
    path = claim_file(tmp_path, "tiny", prediction="1e-200")
    code, out, err = run(capsys, "check", path, "--quiet", "--samples", 500)
    assert code == 1 and "FAIL" in out and "Traceback" not in err


def test_huge_prediction_fails_with_a_readable_z(tmp_path, capsys):
    path = claim_file(tmp_path, "huge", prediction="1e300")
    code, out, err = run(capsys, "check", path, "--quiet", "--samples", 500, "--engine", "full")  # the z of these draws
    assert code == 1 and "FAIL" in out and "t = -8.65e+300" in out and max(map(len, out.splitlines())) < 200


def test_claim_file_with_a_width_beyond_memory_is_refused_before_deriving(tmp_path, capsys):
    path = claim_file(tmp_path, "w", widths="[8, 9223372036854775807, 8]")
    one_line_error(capsys, "check", path, "--quiet", fragment="claim 1 (w): sampling one network of widths 8, 9223")


def test_tiny_prediction_saturates_the_networks_needed():
    verdict = judge(1e-200, 0.001, 0.01, 100, rtol=0.01)
    assert verdict.outcome == "INCONCLUSIVE" and verdict.samples_needed == MAX_NEEDED
    assert limits.networks_needed(1.15, float("inf")) == MAX_NEEDED
    assert limits.networks_needed(1.15, 3.0) == 11


@pytest.mark.parametrize("prediction, fragment", [
    # the parser refuses constants outside float64's range first, naming them
    ("exp(exp(exp(exp(9))))", "is too large or not a real number"),
    ("exp(exp(9))", "is too large or not a real number"),
    ("1e300*1e300", "is larger than 1e+308"),
    ("sqrt(-1)", "is not a finite real number"),
    # a product of representable constants that underflows is caught when the claim is built
    ("1e-300*1e-300", "smaller than float64 represents"),
])
def test_predictions_beyond_float64_are_refused(tmp_path, capsys, prediction, fragment):
    path = claim_file(tmp_path, "p", prediction=prediction)
    one_line_error(capsys, "check", path, "--quiet", fragment=fragment)


def _deep(tmp_path, name, variance, depth, layer):
    widths = "[" + ", ".join(["8"] * (depth + 1)) + "]"
    return claim_file(tmp_path, name, widths=widths, law=f'weight_variance = "{variance}"', layer=layer, prediction="1")


def test_deep_claim_whose_statistics_overflow_is_inconclusive_with_the_reason(tmp_path, capsys):
    path = _deep(tmp_path, "deep", "100/n_in", 100, 100)
    code, out, err = run(capsys, "check", path, "--quiet", "--samples", 200)
    assert code == 3 and "INCONCLUSIVE" in out and "too large for float64 statistics" in out and "SE inf" in out
    assert "Traceback" not in err


def test_deep_claim_whose_networks_overflow_is_inconclusive_with_the_counts(tmp_path, capsys):
    # The signal overflows (1000^l) before layer 120, in every network: no verdict rests on the
    # survivors, and the text output (not only --json) shows how many were excluded and why.
    path = _deep(tmp_path, "ovf", "1000/n_in", 120, 120)
    code, out, err = run(capsys, "check", path, "--quiet", "--samples", 200)
    assert code == 3 and "INCONCLUSIVE" in out and "Traceback" not in err
    assert "networks excluded" in out and "overflowed (inf)" in out and "survivors" in out
    assert "excluded" in out.split("\n", 4)[4]  # the counts line under the claim


def test_overflow_in_layers_a_claim_does_not_read_excludes_no_network(tmp_path, capsys):
    # The same networks, the claim at layer 10 (finite there, about 1000^10): the layers above it are
    # not computed for it (sample(..., observables=)), so their overflow excludes nothing, and the wrong
    # prediction 1 is judged on every network and FAILs.
    path = _deep(tmp_path, "low", "1000/n_in", 120, 10)
    code, out, err = run(capsys, "check", path, "--quiet", "--samples", 200)
    assert code == 1 and "FAIL" in out and "excluded" not in out and "Traceback" not in err


# --- report and explain: nothing created for bad options, bad directories refused at once ----------


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_report_refuses_an_uncreatable_directory(capsys):
    one_line_error(capsys, "report", "--out", "/proc/x", "--quiet", fragment="cannot create --out '/proc/x'")


def test_report_refuses_a_directory_under_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, "report", "--out", tmp_path / "file" / "x", "--quiet", fragment="cannot create --out")


@pytest.mark.parametrize("seed", [-1, 10**400])
def test_report_bad_seed_creates_nothing(tmp_path, capsys, seed):
    out = tmp_path / "new"
    one_line_error(capsys, "report", "--out", out, "--seed", seed, "--quiet", fragment="seed must be an integer")
    assert not out.exists()


@pytest.fixture
def no_answer(monkeypatch):
    """Fail the test if the long computation of an explain topic starts."""
    import varprop.explain

    def forbidden(*args, **kwargs):
        raise AssertionError("the topic was computed before the options were validated")

    monkeypatch.setattr(varprop.explain, "answer", forbidden)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_explain_refuses_a_bad_plot_directory_before_computing(capsys, no_answer):
    one_line_error(capsys, "explain", "why-half", "--plot", "/proc/x", fragment="cannot create --plot directory")


def test_explain_bad_options_create_nothing(tmp_path, capsys, no_answer):
    out = tmp_path / "plots"
    one_line_error(capsys, "explain", "why-half", "--seed", -1, "--plot", out, fragment="--seed")
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, "explain", "why-half", "--plot", tmp_path / "file", fragment="is not a directory")
    assert not out.exists()


def test_explain_unknown_topic_creates_nothing(tmp_path, capsys):
    out = tmp_path / "plots"
    one_line_error(capsys, "explain", "nope", "--plot", out, fragment="unknown topic 'nope'")
    assert not out.exists()


# --- the Python API ---------------------------------------------------------------------------------


def test_mlp_refuses_widths_that_are_not_a_sequence():
    for bad in (None, 5, "abc", {8: 8}):
        with pytest.raises(SpecError, match="widths must be a sequence"):
            varprop.mlp(bad)
    assert varprop.mlp((3, 4)).widths == (3, 4)


def test_mlp_abbreviates_a_huge_negative_width():
    with pytest.raises(SpecError, match=r"\(301 digits\) \(widths\[1\]\)") as info:
        mlp([8, -BIG, 8])
    assert str(BIG) not in str(info.value)


def test_sample_refuses_a_trillion_networks_at_once_without_allocating():
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(LimitError, match=r"sampling 1000000000000 networks .* needs about 192 TB.*at most 4 GB") as info:
            sample(mlp([64, 64, 64]), 10**12, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 1 and peak < 10e6
    assert isinstance(info.value, MonteCarloError) and isinstance(info.value, ResourceError)


def test_sample_refuses_one_network_too_wide_to_draw():
    with pytest.raises(LimitError, match=r"widths 8, 1000.*\(301 digits\), 8"):
        sample(mlp([8, BIG, 8]), 10, seed=0)
    with pytest.raises(LimitError, match="one chunk of 1 network"):
        sample(mlp([8, 100_000_000, 8]), 1, seed=0)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"samples": BIG}, r"\(301 digits\) networks"),
    ({"samples": -BIG}, r"samples .*got -1000.*\(301 digits\)"),
    ({"samples": 5, "seed": 10**400}, r"seed .*\(401 digits\)"),
    ({"samples": 5, "seed": 2**128}, "2\\*\\*128 - 1"),
])
def test_sample_messages_abbreviate(kwargs, fragment):
    kwargs.setdefault("seed", 0)
    with pytest.raises(MonteCarloError, match=fragment) as info:
        sample(mlp([3, 4, 2]), kwargs.pop("samples"), **kwargs)
    assert len(str(info.value)) < 500


def test_check_refuses_before_deriving_at_an_absurd_width():
    from varprop.catalogue import family

    start = time.perf_counter()
    with pytest.raises(LimitError, match=r"width 1000.*\(301 digits\)"):
        check(family("he-forward-relu-normal"), width=BIG)
    with pytest.raises(MonteCarloError, match=r"seed .*\(401 digits\)"):
        check(family("he-forward-relu-normal"), seed=10**400)
    assert time.perf_counter() - start < 2


def test_memory_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("VARPROP_MAX_MEMORY", "512MiB")
    assert limits.max_memory() == 512 * 2**20
    monkeypatch.setenv("VARPROP_MAX_MEMORY", "2e9")
    assert limits.max_memory() == 2 * 10**9
    for bad in ("lots", "-1GB", "0"):
        monkeypatch.setenv("VARPROP_MAX_MEMORY", bad)
        with pytest.raises(ResourceError, match="VARPROP_MAX_MEMORY"):
            limits.max_memory()
    monkeypatch.delenv("VARPROP_MAX_MEMORY")
    assert 0 < limits.max_memory()
    monkeypatch.setenv("VARPROP_MAX_DRAWS", "12GB")
    with pytest.raises(ResourceError, match="VARPROP_MAX_DRAWS"):
        limits.max_draws()


def test_affordable_count_fits_in_memory(monkeypatch):
    net = mlp([8, 8, 8, 8])
    assert limits.affordable(net, 1000) == 1000
    monkeypatch.setenv("VARPROP_MAX_MEMORY", "100MB")
    count = limits.affordable(net, 10**9)
    assert 1 <= count < 10**9 and limits.sample_bytes(net, count, default_chunk(net)) <= 100e6


def default_chunk(net):
    from varprop.montecarlo import default_sizes

    return default_sizes(net)[1]


def test_abbreviate():
    assert abbreviate(12345) == "12345" and abbreviate(-7) == "-7" and abbreviate(0) == "0"
    assert abbreviate(BIG) == "1" + "0" * 39 + "...(301 digits)"
    assert abbreviate(-(10**5000)).endswith("...(5001 digits)")  # beyond Python's int-to-text limit
    assert abbreviate("x" * 200).endswith("...(202 characters)") and len(abbreviate("x" * 200)) < 70
    assert abbreviate([1, 2]) == "[1, 2]"
    assert issubclass(ResourceError, VarpropError)
