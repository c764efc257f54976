"""varprop report: the main job writes every file, its LaTeX compiles within the page, and it exits 0.

One report is built per module (a module-scoped fixture) and every test reads its files: the
Markdown, the LaTeX and its log, results.json.
"""

import json
import re
import subprocess

import pytest

from tests.conftest import require_pdflatex

from varprop.cli import main
from varprop.explain import TOPICS
from varprop.report import LATEX_PREAMBLE, SUMMARY_OVERFLOW, overfull_boxes, questions_heading


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    code = main(["report", "--out", str(out), "--quiet"])
    return out, code


def _needs_tex() -> str:
    return require_pdflatex()


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


def test_report_pdf_has_nothing_off_the_page(report):
    out, _ = report
    _needs_tex()
    assert (out / "report.pdf").read_bytes()[:5] == b"%PDF-"
    log = (out / "report.log").read_text(errors="replace")
    assert overfull_boxes(log) == []
    assert "undefined references" not in log  # the summary's page references resolve
    assert SUMMARY_OVERFLOW not in log  # the summary, settings included, is one page a teacher can hand out


def test_a_summary_that_runs_over_its_page_is_reported(tmp_path):
    """The one-page check is not vacuous: the same test line after two pages of text writes the message."""
    path = require_pdflatex()
    check = f"\\par\\ifnum\\value{{page}}>1 \\typeout{{{SUMMARY_OVERFLOW}}}\\fi"
    for filler, expected in ((1, False), (120, True)):
        tex = tmp_path / f"doc{filler}.tex"
        tex.write_text(LATEX_PREAMBLE + "\n\\begin{document}\n" + "Words. " * filler * 20 + check
                       + "\n\\end{document}\n")
        subprocess.run([path, "-interaction=nonstopmode", tex.name], cwd=tmp_path, capture_output=True, timeout=120)
        assert (SUMMARY_OVERFLOW in tex.with_suffix(".log").read_text(errors="replace")) is expected


def test_json_says_networks_and_width(report):
    out, _ = report
    data = json.loads((out / "results.json").read_text())
    for result in data["catalogue"] + [c for t in data["topics"].values() for c in t["checks"]]:
        for m in result["measurements"]:
            assert m["networks"] == m["n"] and m["width"] >= 1  # "n" kept for old readers
    topic = data["topics"]["glorot-vs-he"]
    assert topic["width"] == 32 and topic["depth"] == TOPICS["glorot-vs-he"].depth and topic["rtol"] == 0.05
    assert data["seconds"] > 0 and data["settings"]["seed"] == "0"


def _prose(markdown: str) -> list[str]:
    """The running text of the Markdown, derivation steps' reasons and headings included: no tables, math,
    code, figures, links' targets, anchors or bold markers."""
    lines = []
    for line in markdown.splitlines():
        if line.startswith(("|", "!", "<a id=")) or re.match(r"^\d+\. \$\$", line):
            continue
        line = re.sub(r"\$\$[^$]*\$\$|\$[^$]*\$|`[^`]*`|\]\(#[^)]*\)", "", line)
        lines.append(re.sub(r"(?<!\w)\*|\*(?!\w)", "", line.replace("**", "")))  # emphasis, not a product
    return lines


def test_markdown_prose_has_no_ascii_math(report):
    out, _ = report
    for number, line in enumerate(_prose((out / "report.md").read_text()), 1):
        for ascii_math in ("^", "*", "sqrt(", "q_star", "_", "E[", "Var[", "phi(", "~", "dL/d"):
            assert ascii_math not in line, (ascii_math, number, line)
    # The check sees ASCII math when it is there, and code set as words.
    assert "sqrt(" in "\n".join(_prose("E[relu(y)] = sqrt(2)*sqrt(Var[y])/(2*sqrt(pi))"))
    assert "_" in "\n".join(_prose("nn.Linear uses kaiming_uniform_"))
    assert "*" in "\n".join(_prose("*the weight is 2*x*"))
    assert _prose("**PASS** $x_2$ `kaiming_uniform_` [see](#why-half)") == ["PASS   [see"]


def test_latex_prose_has_no_ascii_math(report):
    out, _ = report
    tex = (out / "report.tex").read_text()
    prose = re.sub(r"\\begin\{(longtable|tabularx)\}.*?\\end\{\1\}", "", tex, flags=re.S)  # tables: labels, numbers
    prose = re.sub(r"\$[^$]*\$|\\begin\{align\*?\}.*?\\end\{align\*?\}", "", prose, flags=re.S)
    prose = re.sub(r"\\texttt\{(?:[^{}]|\{\})*\}", "", prose)  # code, set as code
    for ascii_math in ("\\textasciicircum", "sqrt(", "**", "\\_", "\\textasciitilde", "E[", "Var["):
        assert ascii_math not in prose, (ascii_math, prose[max(0, prose.find(ascii_math) - 200):][:400])
    assert "\\mathrm{std}" in tex and "s t d" not in tex


def test_front_page_and_summary(report):
    out, _ = report
    markdown = (out / "report.md").read_text()
    tex = (out / "report.tex").read_text()
    assert "## How this report was made" in markdown and "computing time" in markdown
    assert "tolerance 1%" in markdown and "tolerance 5%" in markdown  # catalogue and topics, both stated
    heading = questions_heading(len(TOPICS))  # e.g. "Seven questions, seven answers"
    assert heading.split()[0].lower() not in ("no", str(len(TOPICS)))
    summary = markdown.split(f"## {heading}")[1].split("## Catalogue")[0]
    for topic in TOPICS.values():
        assert topic.title in summary and f"\\pageref{{topic:{topic.name}}}" in tex
        assert f"\\label{{derivation:{topic.name}}}" in tex
    assert summary.count("Verdict: **") == len(TOPICS)
    # Every link of the summary lands on an anchor of the same file.
    for target in re.findall(r"\]\(#([^)]+)\)", markdown):
        assert f'<a id="{target}"></a>' in markdown, target
    # Every table says its tolerance and every verdict its reason.
    assert markdown.count("Tolerance: PASS means") == len(TOPICS) + 1
    assert "| width | networks |" in markdown and "| reason |" in markdown and "| n |" not in markdown


def test_report_refuses_a_file_as_directory(tmp_path, capsys):
    path = tmp_path / "taken"
    path.write_text("x")
    assert main(["report", "--out", str(path), "--quiet"]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_report_refuses_a_size_it_cannot_use(tmp_path, capsys):
    assert main(["report", "--out", str(tmp_path), "--quiet", "--width", "0"]) == 2
    assert "width must be an integer" in capsys.readouterr().err
