r"""Write one reStructuredText page per ``varprop explain`` topic, from the same code the CLI runs.

For every name in :data:`varprop.explain.TOPICS` the page holds the topic's title and question, the
answer's paragraphs, each derivation as an ``aligned`` math block built from its sympy steps (through
:func:`varprop.derive.to_latex`) with the numbered reasons below it, the Monte Carlo checks as a
table, and the answer's figure (written with :func:`varprop.plot.save_figure`). Nothing is retyped,
so the pages cannot drift from the tool.

``docs/conf.py`` calls :func:`generate` when the builder starts; it can also be run by hand::

    python docs/generate_topics.py [OUT_DIR]

Everything written under ``OUT_DIR`` (default ``docs/topics``) is generated: ``<name>.rst`` per
topic, ``gallery.rst`` (every figure on one page), ``index.rst`` and ``_figures/<name>.png`` / ``.svg``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import sympy as sp

from varprop.derive import Derivation, to_latex
from varprop.derive.derivation import Code, Prose, citation, prose
from varprop.explain import TOPICS, Answer, answer, observable_formula, reason
from varprop.montecarlo import CheckResult
from varprop.plot import save_figure

__all__ = ["generate", "topic_page", "index_page", "gallery_page", "derivation_block", "checks_table", "escape",
           "prose_rst"]

FIGURES = "_figures"
SEED = 0

# Characters that start inline markup (emphasis, literals, references, substitutions, roles).
_INLINE = re.compile(r"([\\*`|_])")
# A paragraph that starts like a list item, a field or an option would become one.
_BLOCK_START = re.compile(r"^([-+*:]\s|\d+[.)]\s|#\.\s|\()")


def escape(text: str) -> str:
    """Quote ``text`` so that reStructuredText shows it literally (as running text, not markup).

    Parameters
    ----------
    text
        Plain text, for example ``relu(y)**2 + relu(-y)**2 = y**2``.

    Returns
    -------
    str
        The text with inline-markup characters backslash-escaped, and a leading character that
        would open a list or a field escaped too.
    """
    quoted = _INLINE.sub(r"\\\1", " ".join(text.split()))
    return "\\" + quoted if _BLOCK_START.match(quoted) else quoted


def prose_rst(text: str) -> str:
    """Words and formulas (a :class:`~varprop.derive.derivation.Prose`) as reStructuredText: words escaped,
    each formula a ``:math:`` role typeset from its sympy object, code identifiers as inline literals."""
    parts = text.parts if isinstance(text, Prose) else (text,)
    words = [None if isinstance(p, sp.Basic | Code) else " ".join(p.split()) for p in parts]
    out = []
    for index, part in enumerate(parts):
        if isinstance(part, sp.Basic | Code):
            before = parts[index - 1] if index else " "
            after = parts[index + 1] if index + 1 < len(parts) else " "
            opening = "" if isinstance(before, str) and not isinstance(before, Code) and before[-1:].isspace() else "\\ "
            closing = ("" if isinstance(after, str) and not isinstance(after, Code) and (after[:1].isspace() or not after)
                       else "\\ ")
            markup = f"``{part}``" if isinstance(part, Code) else f":math:`{to_latex(part)}`"
            out.append(f"{opening}{markup}{closing}")
        else:
            core = escape(words[index]) if words[index] else ""
            lead = " " if part[:1].isspace() and index else ""
            trail = " " if part[-1:].isspace() and core else ""
            out.append(lead + core + trail)
    rst = "".join(out).strip()
    return rst[3:] if rst.startswith("\\ ") else rst


def _heading(text: str, underline: str) -> list[str]:
    title = prose_rst(text) if isinstance(text, Prose) else escape(text)
    return [title, underline * len(title), ""]


def _indent(lines: Iterable[str], prefix: str = "   ") -> list[str]:
    return [prefix + line if line else "" for line in lines]


def derivation_block(derivation: Derivation) -> list[str]:
    r"""A derivation as reStructuredText: summary, an ``aligned`` math block, numbered reasons.

    Each step becomes one line ``lhs &= rhs`` of ``\begin{aligned} ... \end{aligned}`` (the left
    side is left blank when it repeats the previous step's), tagged with its number; the numbered
    list below the block gives each step's :meth:`~varprop.derive.Step.reason` and how it was
    checked.

    Parameters
    ----------
    derivation
        A derivation from :mod:`varprop.derive`.

    Returns
    -------
    list of str
        The lines of the section (heading included).
    """
    out = _heading(derivation.title, "-")
    if derivation.summary:
        out += [prose_rst(derivation.summary), ""]
    rows = []
    previous = None
    for number, step in enumerate(derivation.steps, 1):
        lhs = "" if previous is not None and step.lhs == previous else to_latex(step.lhs)
        rows.append(f"{lhs} &= {to_latex(step.rhs)} && \\text{{({number})}}")
        previous = step.lhs
    math = ["\\[", "\\begin{aligned}", *(row + " \\\\" for row in rows[:-1]), rows[-1], "\\end{aligned}", "\\]"]
    out += [".. math::", "   :nowrap:", "", *_indent(math), ""]
    for number, step in enumerate(derivation.steps, 1):
        words = prose_rst(step.justification) if step.justification else ""
        source = f" [{prose_rst(citation(step.source))}]" if step.source else ""
        out.append(f"{number}. *{escape(step.rule.value)}*{': ' + words if words else ''}{source} "
                   f"(checked: {escape(step.check_text())})")
    label = "Result" if derivation.result_step is None else f"Result (step {derivation.result_step})"
    out += ["", f"**{label}:** :math:`{to_latex(derivation.result)}` ({derivation.exactness})", ""]
    if derivation.assumptions:
        out += ["**Assumptions:**", ""]
        out += [f"- {prose_rst(assumption)}" for assumption in derivation.assumptions]
        out.append("")
    return out


def checks_table(checks: Sequence[CheckResult]) -> list[str]:
    """The Monte Carlo checks as a ``list-table``: one row per claim, at its primary width.

    Parameters
    ----------
    checks
        The answer's check results.

    Returns
    -------
    list of str
        The lines of the table directive.
    """
    header = ("claim", "observable", "exactness", "width", "networks", "prediction", "estimate ± SE", "z", "verdict",
              "reason")
    out = [".. list-table::", "   :header-rows: 1", "   :widths: auto", ""]
    rows: list[tuple[str, ...]] = [header]
    for result in checks:
        m = result.primary
        z = "—" if m.verdict is None else f"{m.verdict.z:+.2f}"
        rows.append((result.name, prose(observable_formula(result)), result.exactness, str(m.width),
                     str(m.estimate.n), f"{m.claim.value:.6g}", f"{m.estimate.value:.6g} ± {m.estimate.se:.2g}", z,
                     result.outcome, reason(result)))
    for row in rows:
        cells = [prose_rst(cell) if isinstance(cell, Prose) else escape(cell) for cell in row]
        out.append(f"   * - {cells[0]}")
        out += [f"     - {cell}" for cell in cells[1:]]
    return out + [""]


def topic_page(result: Answer, figure: str) -> str:
    """The page of one topic.

    Parameters
    ----------
    result
        The topic's answer (:func:`varprop.explain.answer`).
    figure
        The figure's path relative to the page, e.g. ``_figures/why-half.png``.

    Returns
    -------
    str
        The page as reStructuredText.
    """
    topic = result.topic
    out = [f".. _topic-{topic.name}:", "", *_heading(topic.title, "=")]
    out += [f"{prose_rst(topic.question)}", ""]
    out += [f"This page is generated from ``varprop explain {topic.name}`` at build time.", ""]
    out += [f"**In short:** {prose_rst(result.headline)}", ""]
    for paragraph in result.paragraphs:
        out += [prose_rst(paragraph), ""]
    out += [f".. figure:: {figure}", "   :width: 100%",
            f"   :alt: {escape(topic.title)}: theory against Monte Carlo, per layer", "",
            "   Theory (lines: solid exact, dashed asymptotic, dotted approximation) against Monte Carlo "
            "(points, ± 2 SE), per layer.", ""]
    out += _heading("Monte Carlo checks", "-")
    out += [prose_rst(result.tolerance), ""]
    out += checks_table(result.checks)
    for derivation in result.derivations:
        out += derivation_block(derivation)
    return "\n".join(out)


def index_page(names: Sequence[str]) -> str:
    """The index of the topic pages: a short introduction and a toctree.

    Parameters
    ----------
    names
        The topic names, in order.

    Returns
    -------
    str
        The page as reStructuredText.
    """
    out = [*_heading("Explain topics", "="),
           "Each page is the answer of ``varprop explain NAME``: the derivation, Monte Carlo checks of",
           "the claims built from it, and a figure of theory against sampled networks. The pages are",
           "generated from :mod:`varprop.explain` at every build (seed 0), so they say what the tool says.",
           "", ".. toctree::", "   :maxdepth: 1", ""]
    out += [f"   {name}" for name in names]
    out += ["   gallery"]
    return "\n".join(out) + "\n"


def gallery_page(answers: Sequence[Answer]) -> str:
    """Every topic's figure on one page, each linked to its topic.

    Parameters
    ----------
    answers
        The topics' answers, in order.

    Returns
    -------
    str
        The page as reStructuredText.
    """
    out = [*_heading("Gallery", "="),
           "The figure of every topic: theory (lines; solid when exact, dashed for the infinite-width limit, "
           "dotted for an approximation) against Monte Carlo estimates (points with ± 2 SE error bars).", ""]
    for result in answers:
        name = result.topic.name
        out += [*_heading(result.topic.title, "-"), f".. figure:: {FIGURES}/{name}.png", "   :width: 100%",
                f"   :target: {name}.html", f"   :alt: {escape(result.topic.title)}", "",
                f"   :ref:`topic-{name}`", ""]
    return "\n".join(out)


def _write(path: Path, text: str) -> None:
    """Write ``text`` unless the file already holds it (keeps Sphinx's incremental builds quiet)."""
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def generate(out_dir: Path, names: Sequence[str] | None = None) -> list[Path]:
    """Write the topic pages, their figures and the index into ``out_dir``.

    Parameters
    ----------
    out_dir
        Directory for ``<name>.rst``, ``index.rst`` and ``_figures/``; created when missing. Pages
        of topics that no longer exist are removed.
    names
        The topics to write (default: every name in :data:`varprop.explain.TOPICS`).

    Returns
    -------
    list of pathlib.Path
        The pages written, index last.
    """
    names = tuple(TOPICS) if names is None else tuple(names)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.rst"):
        if stale.stem not in names and stale.name not in ("index.rst", "gallery.rst"):
            stale.unlink()
    pages, answers = [], []
    for name in names:
        result = answer(name, seed=SEED)
        save_figure(result.figure(seed=SEED), out_dir / FIGURES / name)
        page = out_dir / f"{name}.rst"
        _write(page, topic_page(result, f"{FIGURES}/{name}.png"))
        pages.append(page)
        answers.append(result)
    gallery = out_dir / "gallery.rst"
    _write(gallery, gallery_page(answers))
    index = out_dir / "index.rst"
    _write(index, index_page(names))
    return [*pages, gallery, index]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "topics"
    for written in generate(target):
        print(written)
