"""varprop report: the main job writes every file, its LaTeX compiles, and it exits 0."""

import json
import os
import shutil

import pytest

from varprop.cli import main
from varprop.explain import TOPICS


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    code = main(["report", "--out", str(out), "--quiet"])
    return out, code


def test_report_files(report):
    out, code = report
    assert code == 0
    for name in ("report.md", "report.tex", "results.json"):
        assert (out / name).stat().st_size > 1000
    for topic in TOPICS:
        assert (out / "figures" / f"{topic}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in (out / "figures" / f"{topic}.svg").read_text()
        assert f"figures/{topic}.png" in (out / "report.md").read_text()
    data = json.loads((out / "results.json").read_text())
    assert len(data["catalogue"]) >= 17 and set(data["topics"]) == set(TOPICS)
    assert all(r["outcome"] in ("PASS", "MEASURED") for r in data["catalogue"])


def test_report_pdf(report):
    out, _ = report
    if shutil.which("pdflatex") is None:
        if os.environ.get("VARPROP_REQUIRE_TEX") == "1":
            pytest.fail("VARPROP_REQUIRE_TEX=1 but pdflatex is not on PATH")
        pytest.skip("pdflatex not installed (Debian: texlive-latex-base)")
    assert (out / "report.pdf").read_bytes()[:5] == b"%PDF-"


def test_report_refuses_a_file_as_directory(tmp_path, capsys):
    path = tmp_path / "taken"
    path.write_text("x")
    assert main(["report", "--out", str(path), "--quiet"]) == 2
    assert "is not a directory" in capsys.readouterr().err
