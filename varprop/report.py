"""The main job: derive the catalogue, check every claim, answer every topic, write it all down.

:func:`build_report` writes into one directory:

``report.md``
    the answers (text, derivations, tables of checks, figures) and the catalogue's verdicts;
``report.tex`` (and ``report.pdf`` when ``pdflatex`` is on PATH)
    the same as a LaTeX document;
``figures/TOPIC.png`` and ``figures/TOPIC.svg``
    the signal-propagation plots, theory against Monte Carlo;
``results.json``
    every claim's numbers (prediction, estimate, SE, z, verdict, per width) and each topic's key numbers.

It needs no network access and no service.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from ._files import output_directory
from .activations import activation
from .catalogue import CATALOGUE
from .derive import DERIVATIONS, Derivation
from .derive.derivation import latex_text
from .errors import VarpropError
from .explain import TOPICS, Answer, answer
from .montecarlo import CheckResult, check_all, format_results
from .montecarlo.limits import check_seed
from .montecarlo.verdict import FAIL, format_z
from .plot import save_figure

__all__ = ["ReportSummary", "ReportError", "build_report"]

Progress = Callable[[str, int, int], None]


class ReportError(VarpropError):
    """The report cannot be written (an output directory that is a file, a failed LaTeX run)."""


@dataclass(frozen=True)
class ReportSummary:
    """What the report found and where it wrote it."""

    directory: Path
    catalogue: tuple[CheckResult, ...]
    answers: tuple[Answer, ...]
    files: tuple[Path, ...]
    pdf_note: str

    @property
    def failures(self) -> tuple[str, ...]:
        """Claims that should hold and failed (approximations are measured, never failed)."""
        checks = list(self.catalogue) + [c for a in self.answers for c in a.checks]
        return tuple(r.name for r in checks if r.outcome == FAIL)

    def table(self) -> str:
        """The catalogue's verdicts as a plain-text table."""
        return format_results(self.catalogue)


def _appendix_derivations() -> list[Derivation]:
    relu = activation("relu")
    out = [function(relu) for name, function in DERIVATIONS.items() if name != "glorot"]
    out.append(DERIVATIONS["glorot"](activation("linear")))
    out.append(DERIVATIONS["condition"](activation("leaky_relu", a=None)))
    out.append(DERIVATIONS["condition"](activation("shifted_relu")))
    return out


def build_report(directory: str | Path = "varprop-report", *, seed: int = 0, progress: Progress | None = None) -> ReportSummary:
    """Check the catalogue, answer every topic, and write the report files (see the module docstring)."""
    check_seed(seed)  # every argument is checked before anything is created
    out = output_directory(directory, "--out")  # made and proved writable before the long computation
    figures = output_directory(out / "figures", "--out")
    steps = len(TOPICS) + 2
    done = 0

    def step(label: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(label, done, steps)

    catalogue = tuple(check_all(
        list(CATALOGUE.values()), seed=seed,
        progress=None if progress is None else lambda name, k, n: progress(f"catalogue: {name} ({k}/{n})", done, steps),
    ))
    step("catalogue checked")
    answers, figure_files = [], {}
    for name in TOPICS:
        result = answer(name, seed=seed)
        png, svg = save_figure(result.figure(seed=seed), figures / name)
        figure_files[name] = (png, svg)
        answers.append(result)
        step(f"topic {name}")
    appendix = _appendix_derivations()
    files = [_write_markdown(out, catalogue, answers, appendix), _write_json(out, catalogue, answers, seed)]
    tex = _write_latex(out, catalogue, answers, appendix)
    files.append(tex)
    pdf_note = _compile(tex)
    if (out / "report.pdf").exists():
        files.append(out / "report.pdf")
    for png, svg in figure_files.values():
        files += [png, svg]
    step("report written")
    return ReportSummary(out, catalogue, tuple(answers), tuple(files), pdf_note)


def _write_markdown(out: Path, catalogue, answers, appendix) -> Path:
    lines = [f"# varprop report (varprop {__version__})", "",
             "Each answer below is built from sympy derivations and Monte Carlo checks of real random networks; "
             "every number is computed, none is typed in.", "", "## Catalogue of claims", "",
             "| claim | exactness | n | prediction | estimate ± SE | z | verdict | note |", "|---|---|---|---|---|---|---|---|"]
    for r in catalogue:
        m = r.primary
        z = "" if m.verdict is None else format_z(m.verdict.z)
        lines.append(f"| {r.name} | {r.exactness} | {m.width} | {m.claim.value:.6g} | {m.estimate.value:.6g} ± "
                     f"{m.estimate.se:.2g} | {z} | {r.outcome} | {r.message} |")
    lines.append("")
    for a in answers:
        lines.append(a.markdown(figure=f"figures/{a.topic.name}.png"))
    lines += ["## Appendix: derivations", ""]
    lines += [d.markdown() for d in appendix]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _write_json(out: Path, catalogue, answers, seed: int) -> Path:
    payload = {
        "varprop": __version__,
        "seed": seed,
        "catalogue": [r.to_dict() for r in catalogue],
        "topics": {
            a.topic.name: {
                "title": a.topic.title,
                "numbers": dict(a.numbers),
                "checks": [r.to_dict() for r in a.checks],
            }
            for a in answers
        },
    }
    path = out / "results.json"
    path.write_text(json.dumps(payload, indent=2, default=float), encoding="utf-8")
    return path


def _write_latex(out: Path, catalogue, answers, appendix) -> Path:
    from .explain import _latex_table

    body = [
        "\\documentclass[10pt]{article}",
        "\\usepackage[margin=1.8cm]{geometry}",
        "\\usepackage{amsmath,amssymb,graphicx}",
        "\\allowdisplaybreaks",
        f"\\title{{varprop report}}\\author{{varprop {__version__}}}\\date{{}}",
        "\\begin{document}", "\\maketitle",
        "\\section*{Catalogue of claims}", _latex_table(catalogue),
    ]
    for a in answers:
        body.append("\\clearpage")
        body.append(a.latex(figure=f"figures/{a.topic.name}.png"))
    body += ["\\clearpage", "\\section*{Appendix: derivations}"]
    for d in appendix:
        body += [f"\\subsection*{{{latex_text(d.title)}}}", "{\\small", d.latex(), "}"]
    body.append("\\end{document}")
    path = out / "report.tex"
    path.write_text("\n".join(body) + "\n", encoding="utf-8")
    return path


def _compile(tex: Path) -> str:
    """Compile with pdflatex when it is on PATH; say why not otherwise."""
    engine = shutil.which("pdflatex")
    if engine is None:
        return "pdflatex is not on PATH: report.tex written, no PDF (Debian: apt-get install texlive-latex-base)"
    result = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", tex.name], cwd=tex.parent,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-15:])
        raise ReportError(f"pdflatex failed on {tex}:\n{tail}")
    for suffix in (".aux", ".log"):
        tex.with_suffix(suffix).unlink(missing_ok=True)
    return f"compiled {tex.with_suffix('.pdf').name} with {engine}"
