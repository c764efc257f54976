"""The main job: derive the catalogue, check every claim, answer every topic, write it all down.

:func:`build_report` writes into one directory:

``report.md``
    the answers (text, derivations, tables of checks, figures) and the catalogue's verdicts;
``report.tex`` (and ``report.pdf`` when ``pdflatex`` is on PATH)
    the same as a LaTeX document;
``figures/TOPIC.png`` and ``figures/TOPIC.svg``
    the signal-propagation plots, theory against Monte Carlo;
``results.json``
    every claim's numbers (prediction, estimate, SE, z, verdict, per width), each topic's key numbers,
    and the settings (widths, depths, seed, tolerances) and computing time.
``report.log``
    pdflatex's log, kept so the layout can be checked (overfull boxes).

It needs no network access and no service.

The topics are answered (sampled, drawn and typeset) in worker processes while this process checks the
catalogue on workers of its own, so every core stays busy; every sample comes from the seed, so the report
is the same, bit for bit, as one computed one step after the other.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from ._files import output_directory
from .activations import activation
from .catalogue import CATALOGUE
from .derive import DERIVATIONS, Derivation
from .derive.derivation import latex_text, prose_latex, prose_markdown
from .errors import VarpropError
from .explain import (TOPICS, Answer, _latex_table, _markdown_table, answer, checks_on, reason, settings_for,
                      tolerance_sentence)
from .montecarlo import CheckResult, check_all, format_results
from .montecarlo.check import DEFAULT_RTOL
from .montecarlo.executors import prepare_worker
from .montecarlo.limits import check_seed
from .montecarlo.verdict import FAIL
from .plot import PropagationData, save_figure

__all__ = ["ReportSummary", "ReportError", "build_report", "overfull_boxes", "OVERFULL_LIMIT_PT", "LATEX_PREAMBLE",
           "SUMMARY_OVERFLOW"]

Progress = Callable[[str, int, int], None]

#: The family-wise false-alarm rate of the catalogue's checks (Holm), as ``varprop check`` uses it.
CATALOGUE_ALPHA = 0.05


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


def build_report(directory: str | Path = "varprop-report", *, seed: int = 0, width: int | None = None,
                 depth: int | None = None, progress: Progress | None = None) -> ReportSummary:
    """Check the catalogue, answer every topic, and write the report files (see the module docstring).

    ``width`` and ``depth`` are passed to every topic (:func:`varprop.explain.answer`); the catalogue
    keeps its own networks. The front page says which widths, depths, seeds, sample counts and
    tolerances produced the report, and how long it took. Every argument is checked, and the output
    directory made and proved writable, before the long computation starts.

    The topics are answered in worker processes of their own while this process checks the catalogue
    (on its own workers), so every CPU stays busy; the answers are the same as one after the other,
    bit for bit, since every sample comes from the seed. ``progress(label, done, steps)`` counts the
    catalogue, each topic as it finishes (in any order) and the writing.
    """
    started = time.perf_counter()
    check_seed(seed)
    for name in TOPICS:  # refuse a size a topic cannot use before any sampling
        settings_for(name, seed=seed, width=width, depth=depth)
    out = output_directory(directory, "--out")
    figures = output_directory(out / "figures", "--out")
    steps = len(TOPICS) + 2
    done = 0

    def step(label: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(label, done, steps)

    with _topic_pool() as pool:
        topics = _TopicRun(pool, tuple(TOPICS), seed, width, depth, figures)
        appendix = pool.submit(_appendix)  # derived and typeset there too, while this process checks the catalogue

        def finished(name: str) -> None:
            step(f"topic {name}")

        def catalogue_progress(label: str, networks: int, total: int) -> None:
            topics.collect(finished, block=False)  # a topic that failed stops the report here
            if progress is not None:
                progress(f"catalogue: {label} ({networks}/{total} networks)", done, steps)

        catalogue = tuple(check_all(CATALOGUE.with_sweeps(), seed=seed, rtol=DEFAULT_RTOL, alpha=CATALOGUE_ALPHA,
                                    executor="auto", progress=catalogue_progress))
        step("catalogue checked")
        topics.collect(finished, block=True)
        appendix_markdown, appendix_latex = appendix.result()
    outputs = tuple(topics.outputs[name] for name in TOPICS)
    answers = tuple(o.answer for o in outputs)
    run = _Run(seed, time.perf_counter() - started, catalogue, outputs)
    files = [_write_markdown(out, run, appendix_markdown), _write_json(out, run)]
    tex = _write_latex(out, run, appendix_latex)
    files.append(tex)
    pdf_note = _compile(tex)
    if (out / "report.pdf").exists():
        files.append(out / "report.pdf")
    for o in outputs:
        files += list(o.figure_files)
    step("report written")
    return ReportSummary(out, catalogue, answers, tuple(files), pdf_note)


#: Worker processes answering the topics (the catalogue's check runs on workers of its own meanwhile).
_TOPIC_WORKERS = 2


@contextmanager
def _topic_pool(workers: int | None = None) -> Iterator[ProcessPoolExecutor]:
    """A process pool for the topics, shut down on leaving; on an error (or Ctrl-C) its queued topics are
    dropped and its workers stopped at once, so an error never waits for the other topics to finish."""
    workers = workers or min(_TOPIC_WORKERS, len(TOPICS))
    # The sampler's own process pools use the platform's default start method too (fork on Linux: the
    # workers start with varprop already imported).
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(),
                               initializer=prepare_worker)
    try:
        yield pool
    except BaseException:
        for process in list((getattr(pool, "_processes", None) or {}).values()):  # no public handle on the workers
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)  # the pool sees its workers gone, fails what they held, reaps them
        raise
    pool.shutdown(wait=True)


@dataclass(frozen=True)
class _TopicOutput:
    """Everything the report needs from one topic, made in a worker process: the answer, its figure's
    numbers and files, and its Markdown, LaTeX and JSON (typesetting the formulas is slow: done there)."""

    answer: Answer
    figure_data: tuple[PropagationData, ...]
    figure_files: tuple[Path, Path]
    markdown: str
    latex: str
    checks: tuple[dict, ...]


def _figure_path(name: str) -> str:
    return f"figures/{name}.png"


def _answer_topic(name: str, seed: int, width: int | None, depth: int | None, figures: Path) -> _TopicOutput:
    """One topic, answered, drawn and typeset in a worker process (its checks sample there, one at a time)."""
    with checks_on("serial"):
        result = answer(name, seed=seed, width=width, depth=depth)
        data = result.figure_data()
    files = save_figure(result.figure(data), figures / name)
    return _TopicOutput(result, data, files, result.markdown(figure=_figure_path(name)),
                        result.latex(figure=_figure_path(name)), tuple(r.to_dict() for r in result.checks))


def _appendix() -> tuple[str, str]:
    """The appendix's derivations as Markdown and as LaTeX."""
    derivations = _appendix_derivations()
    markdown = ["## Appendix: derivations", ""] + [d.markdown() for d in derivations]
    latex = ["\\section*{Appendix: derivations}"]
    for d in derivations:
        latex += [f"\\subsection*{{{prose_latex(d.title)}}}", prose_latex(d.summary), "", "{\\small", d.latex(), "}"]
    return "\n".join(markdown), "\n".join(latex)


class _TopicRun:
    """The topics submitted to a pool; :meth:`collect` takes in those finished, in the order they finish."""

    def __init__(self, pool: ProcessPoolExecutor, names: tuple[str, ...], seed: int, width: int | None,
                 depth: int | None, figures: Path) -> None:
        self.pending: dict[Future, str] = {pool.submit(_answer_topic, name, seed, width, depth, figures): name
                                           for name in names}
        self.outputs: dict[str, _TopicOutput] = {}

    def collect(self, finished: Callable[[str], None], *, block: bool) -> None:
        """Take in every topic done (all of them when ``block``), calling ``finished(name)`` for each.

        The error of a topic that failed is raised here, as the topic raised it.
        """
        while self.pending:
            done, _ = wait(self.pending, timeout=None if block else 0, return_when=FIRST_COMPLETED)
            if not done:
                return
            for future in [f for f in self.pending if f in done]:  # submission order among those done
                name = self.pending.pop(future)
                self.outputs[name] = future.result()
                finished(name)


@dataclass(frozen=True)
class _Run:
    """Everything one report run computed, and how long the computing took (before writing)."""

    seed: int
    seconds: float
    catalogue: tuple[CheckResult, ...]
    topics: tuple[_TopicOutput, ...]

    @property
    def answers(self) -> tuple[Answer, ...]:
        return tuple(t.answer for t in self.topics)

    @property
    def figures(self) -> dict[str, tuple[PropagationData, ...]]:
        return {t.answer.topic.name: t.figure_data for t in self.topics}

    def settings_rows(self) -> list[tuple[str, str]]:
        """(what, value) lines of the front page: widths, depths, seeds, samples, tolerances, time."""
        rows = [("varprop", __version__), ("seed", str(self.seed)),
                ("catalogue", f"{len(self.catalogue)} claims at tolerance {_percent(DEFAULT_RTOL)}, family-wise "
                              f"false-alarm rate {_percent(CATALOGUE_ALPHA)} (Holm); widths "
                              f"{_span(w for r in self.catalogue for w in (m.width for m in r.measurements))}; "
                              f"{_span(m.estimate.n for r in self.catalogue for m in r.measurements)} networks per width")]
        for a in self.answers:
            s = a.settings
            checks = [m for r in a.checks for m in r.measurements]
            data = self.figures.get(a.topic.name, ())
            rows.append((a.topic.name, f"hidden width {s.width}, depth {s.depth}; checks at widths "
                                       f"{_span(m.width for m in checks)} with {_span(m.estimate.n for m in checks)} "
                                       f"networks, tolerance {_percent(s.rtol)}; figure "
                                       f"{_span(d.samples for d in data)} networks per series"))
        rows.append(("computing time", f"{self.seconds:.0f} s (sampling, checks and figures; LaTeX not included)"))
        return rows


def _latex_settings(run: _Run) -> str:
    """The front page's settings as one small table: a row per topic, then the catalogue, seed and time."""
    rows = ["{\\scriptsize\\noindent\\begin{tabularx}{\\linewidth}{@{}lrrlll>{\\raggedleft\\arraybackslash}X@{}}", "\\toprule",
            "topic & hidden width & depth & checked at widths & networks per check & tolerance & networks per figure series \\\\",
            "\\midrule"]
    for a in run.answers:
        s, data = a.settings, run.figures.get(a.topic.name, ())
        checks = [m for r in a.checks for m in r.measurements]
        rows.append(f"\\texttt{{{latex_text(a.topic.name)}}} & {s.width} & {s.depth} & "
                    f"{latex_text(_span(m.width for m in checks))} & {latex_text(_span(m.estimate.n for m in checks))} & "
                    f"{latex_text(_percent(s.rtol))}, Holm {latex_text(_percent(s.alpha))} & "
                    f"{latex_text(_span(d.samples for d in data))} \\\\")
    rows += ["\\bottomrule", "\\end{tabularx}\\par\\smallskip"]
    rows += [f"\\noindent\\textbf{{{latex_text(what)}}}: {latex_text(value)}\\\\"
             for what, value in run.settings_rows() if what in ("catalogue", "seed", "computing time")]
    return "\n".join(rows) + "\n}"


_COUNT_WORDS = ("No", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten", "Eleven", "Twelve")


def questions_heading(count: int) -> str:
    """``Seven questions, seven answers``: the summary's heading for ``count`` topics."""
    word = _COUNT_WORDS[count] if 0 <= count < len(_COUNT_WORDS) else str(count)
    return f"{word} questions, {word.lower()} answers"


def _span(values) -> str:
    values = sorted(set(values))
    if not values:
        return "none"
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def _percent(value: float) -> str:
    return f"{100 * value:g}%"


def _summary_rows(run: _Run) -> list[tuple[Answer, CheckResult]]:
    return [(a, a.checks[a.key]) for a in run.answers]


def _write_markdown(out: Path, run: _Run, appendix: str) -> Path:
    lines = [f"# varprop report (varprop {__version__})", "",
             "Each answer below is built from sympy derivations and Monte Carlo checks of real random networks; "
             "every number is computed, none is typed in.", "", "## How this report was made", ""]
    lines += [f"- **{what}**: {value}" for what, value in run.settings_rows()]
    lines += ["", f"## {questions_heading(len(run.answers))}", ""]
    for a, key in _summary_rows(run):
        lines += [f"**{a.topic.title}** — *{prose_markdown(a.topic.question)}*  ", prose_markdown(a.headline) +
                  f" Verdict: **{key.outcome}** ({prose_markdown(reason(key))}). [Answer and derivation](#{a.topic.name})", ""]
    lines += ["## Catalogue of claims", "", prose_markdown(tolerance_sentence(DEFAULT_RTOL, CATALOGUE_ALPHA,
                                                                              len(run.catalogue))), "",
              _markdown_table(run.catalogue), ""]
    for t in run.topics:  # an explicit anchor: a title's own anchor differs between Markdown renderers
        lines += [f'<a id="{t.answer.topic.name}"></a>', "", t.markdown]
    lines.append(appendix)
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _write_json(out: Path, run: _Run) -> Path:
    payload = {
        "varprop": __version__,
        "seed": run.seed,
        "seconds": run.seconds,
        "settings": dict(run.settings_rows()),
        "catalogue": [r.to_dict() for r in run.catalogue],
        "topics": {
            a.topic.name: {
                "title": a.topic.title,
                "width": a.settings.width,
                "depth": a.settings.depth,
                "rtol": a.settings.rtol,
                "alpha": a.settings.alpha,
                "headline": str(a.headline),
                "numbers": dict(a.numbers),
                "checks": list(t.checks),
            }
            for t in run.topics
            for a in (t.answer,)
        },
    }
    path = out / "results.json"
    path.write_text(json.dumps(payload, indent=2, default=float), encoding="utf-8")
    return path


LATEX_PREAMBLE = "\n".join([
    "\\documentclass[10pt,a4paper]{article}",
    "\\usepackage[margin=2cm]{geometry}",
    "\\usepackage[T1]{fontenc}",
    "\\usepackage{amsmath,amssymb,graphicx,booktabs,tabularx,longtable}",
    "\\usepackage[hidelinks]{hyperref}",
    "\\allowdisplaybreaks",
    "\\emergencystretch=3em",
    "\\setcounter{secnumdepth}{1}",
])


#: Written to the TeX log when the summary does not fit on its first page (the report tests read the log).
SUMMARY_OVERFLOW = "varprop: the summary runs over one page"


def _write_latex(out: Path, run: _Run, appendix: str) -> Path:
    body = [
        LATEX_PREAMBLE,
        f"\\hypersetup{{pdftitle={{varprop report}}, pdfsubject={{varprop {__version__}}}}}",
        # The front page is one page a teacher can hand out, for eleven topics and more: narrower margins there
        # only, the answers in \\footnotesize and the settings table in \\scriptsize.
        "\\begin{document}", "\\newgeometry{margin=1.4cm,top=1.2cm,bottom=1.2cm}", "\\thispagestyle{empty}",
        f"{{\\Large\\bfseries varprop report: {questions_heading(len(run.answers)).lower()}}}\\hfill varprop {__version__}\\par",
        "\\medskip\\noindent Each answer is built from sympy derivations and Monte Carlo checks of real random "
        "networks; every number is computed, none is typed in. The key number quoted is the Monte Carlo estimate "
        "$\\pm$ its standard error.",
        "{\\footnotesize\\begin{description}\\setlength{\\itemsep}{1pt}\\setlength{\\parsep}{0pt}\\setlength{\\topsep}{2pt}",
    ]
    for a, key in _summary_rows(run):
        body.append(f"\\item[{latex_text(a.topic.title)}] \\emph{{{prose_latex(a.topic.question)}}}\\\\")
        body.append(f"{prose_latex(a.headline)} \\textbf{{{key.outcome}}} ({prose_latex(reason(key))}). "
                    f"Answer p.~\\pageref{{topic:{a.topic.name}}}, derivation p.~\\pageref{{derivation:{a.topic.name}}}.")
    body += ["\\end{description}}", "\\subsection*{How this report was made}", _latex_settings(run),
             # The summary is one page a teacher can hand out: say so in the log when it is not.
             f"\\par\\ifnum\\value{{page}}>1 \\typeout{{{SUMMARY_OVERFLOW}}}\\fi"]
    body += ["\\clearpage\\restoregeometry",
             "\\section*{Catalogue of claims}", prose_latex(tolerance_sentence(DEFAULT_RTOL, CATALOGUE_ALPHA,
                                                                              len(run.catalogue))), "",
             _latex_table(run.catalogue)]
    for t in run.topics:
        body += ["\\clearpage", t.latex]
    body += ["\\clearpage", appendix, "\\end{document}"]
    path = out / "report.tex"
    path.write_text("\n".join(body) + "\n", encoding="utf-8")
    return path


#: Overfull boxes up to this many points are invisible in print; beyond it text runs into the margin.
OVERFULL_LIMIT_PT = 3.0

_OVERFULL = re.compile(r"^Overfull \\[hv]box \((\d+(?:\.\d+)?)pt too (?:wide|high)\) (.*)$", re.MULTILINE)


def overfull_boxes(log: str, limit: float = OVERFULL_LIMIT_PT) -> list[str]:
    """The overfull boxes of a TeX log that exceed ``limit`` points, each with what TeX says about where."""
    return [f"{match.group(1)}pt: {match.group(2)}" for match in _OVERFULL.finditer(log)
            if float(match.group(1)) > limit]


def _compile(tex: Path) -> str:
    """Compile with pdflatex when it is on PATH (twice, for the page references); say why not otherwise.

    The log is kept as ``report.log`` so the layout can be checked (overfull boxes).
    """
    engine = shutil.which("pdflatex")
    if engine is None:
        return "pdflatex is not on PATH: report.tex written, no PDF (Debian: apt-get install texlive-latex-base)"
    for _ in range(2):
        result = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", tex.name], cwd=tex.parent,
                                capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            tail = "\n".join(result.stdout.splitlines()[-15:])
            raise ReportError(f"pdflatex failed on {tex}:\n{tail}")
    for suffix in (".aux", ".out"):
        tex.with_suffix(suffix).unlink(missing_ok=True)
    return f"compiled {tex.with_suffix('.pdf').name} with {engine}"
