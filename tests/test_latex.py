"""The generated LaTeX compiles with a real TeX engine, and nothing runs off the page.

Skipped only when no ``pdflatex`` is on PATH *and* ``VARPROP_REQUIRE_TEX`` is unset; ``.ci/run``
installs TeX and sets ``VARPROP_REQUIRE_TEX=1``, so in CI a missing engine is a failure.

Every document is compiled on the report's page (A4, 10 pt, 2 cm margins) and its log is read:
an overfull box wider than :data:`varprop.report.OVERFULL_LIMIT_PT` (text in the margin, a cut-off
word, an equation tag pushed to its own line) fails the test. The report itself, whose sections are
every topic's LaTeX, is checked in ``test_report.py`` from the log of the same build.
"""

import subprocess

import pytest

from tests.conftest import require_pdflatex
import sympy as sp

from varprop.activations import activation
from varprop.cli import main
from varprop.derive import DERIVATIONS, Variance, forward, to_latex
from varprop.derive.derivation import Code, citation, latex_text, prose, prose_latex, prose_markdown, tidy
from varprop.errors import DerivationError
from varprop.report import LATEX_PREAMBLE, overfull_boxes

ACTIVATIONS = [("relu", {}), ("leaky_relu", {"a": None}), ("shifted_relu", {}), ("tanh", {}), ("gelu", {}),
               ("selu", {}), ("linear", {}), ("erf", {})]


def _pdflatex() -> str:
    return require_pdflatex()


def _compile(tmp_path, source: str) -> str:
    """Compile ``source``; return the log."""
    tex = tmp_path / "doc.tex"
    tex.write_text(source)
    result = subprocess.run(
        [_pdflatex(), "-interaction=nonstopmode", "-halt-on-error", tex.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000
    return (tmp_path / "doc.log").read_text(errors="replace")


def _document(bodies) -> str:
    return LATEX_PREAMBLE + "\n\\begin{document}\n" + "\n\n".join(bodies) + "\n\\end{document}\n"


def _all_derivations():
    for name, params in ACTIVATIONS:
        act = activation(name, **params)
        for kind, function in DERIVATIONS.items():
            try:
                yield f"{kind} {name}", function(act)
            except DerivationError:
                continue
    yield "forward relu, weight mean", forward(activation("relu"), weight_mean=True)


def test_every_derivation_compiles_within_the_page(tmp_path):
    bodies = [f"\\section*{{{latex_text(label)}}}\n" + prose_latex(d.summary) + "\n\n" + d.latex() for label, d in _all_derivations()]
    log = _compile(tmp_path, _document(bodies))
    assert overfull_boxes(log) == []


@pytest.mark.parametrize("args", [
    ["derive", "forward", "--activation", "relu"],
    ["derive", "weight-gradient", "--activation", "gelu"],
    ["derive", "condition", "--activation", "leaky_relu", "--param", "a"],
    ["derive", "glorot"],
    ["derive", "claim", "--claim", "glorot-tanh-linear-regime"],
], ids=lambda a: " ".join(a[1:4]))
def test_cli_standalone_documents_compile_within_the_page(tmp_path, capsys, args):
    assert main([*args, "--format", "latex", "--standalone"]) == 0
    log = _compile(tmp_path, capsys.readouterr().out)
    assert overfull_boxes(log) == []


def test_the_overfull_check_catches_text_in_the_margin(tmp_path):
    # A word TeX cannot break (a long identifier in \texttt) runs into the margin: the check must see it.
    log = _compile(tmp_path, _document(["\\texttt{" + "kaiming\\_uniform" * 12 + "}"]))
    assert overfull_boxes(log) and float(overfull_boxes(log)[0].split("pt")[0]) > 100


def test_broken_latex_is_caught(tmp_path):
    # The compile check can fail: an unbalanced brace halts pdflatex.
    with pytest.raises(AssertionError):
        _compile(tmp_path, "\\documentclass{article}\\begin{document}$\\frac{1}{$\\end{document}")


# --- formulas in words come from sympy, typeset as a person writes them --------------------------


def test_roots_are_gathered_and_the_value_kept():
    v = Variance(sp.Symbol("y"))
    expr = sp.sqrt(2) * sp.sqrt(v) / (2 * sp.sqrt(sp.pi))
    assert to_latex(expr) == r"\sqrt{\frac{\operatorname{Var}\left[y\right]}{2 \pi}}"
    q = sp.Symbol("q", positive=True)
    for original in (expr.subs(v, q), -expr.subs(v, q) + q / 2 + sp.Rational(1, 4),
                     sp.sqrt(2) / (sp.sqrt(sp.Symbol("n", positive=True)) * sp.sqrt(q + 1))):
        tidied = tidy(original)
        for value in (sp.Rational(3, 7), sp.Integer(5)):
            numbers = {s: value for s in original.free_symbols}
            assert float(tidied.subs(numbers)) == pytest.approx(float(original.subs(numbers)), rel=1e-14)
    # A wrong rewrite would be caught: the comparison is not vacuous.
    assert float(sp.sqrt(q / sp.pi).subs(q, 5)) != pytest.approx(float(expr.subs(v, q).subs(q, 5)))


def test_words_are_upright_and_names_read_as_written():
    assert to_latex(sp.Symbol("std")) == r"\mathrm{std}"
    assert to_latex(sp.Symbol("bound")) == r"\mathrm{bound}"
    assert to_latex(sp.Symbol("q_star")) == "q^{*}"
    assert to_latex(sp.Symbol("n_in")) == r"n_{\mathrm{in}}"
    assert to_latex(sp.Symbol("sigma")) == r"\sigma" and to_latex(sp.Symbol("x_2")) == "x_{2}"


def test_an_unevaluated_equation_with_a_float_stays_an_equation():
    # Rounding the displayed floats rebuilds the expression: (1/6)^19 = 1.641e-15 must not fold to "True".
    equation = sp.Eq(sp.Pow(sp.Rational(1, 6), 19, evaluate=False), sp.Float(6.0**-19, 4), evaluate=False)
    assert to_latex(equation) == r"\left(\frac{1}{6}\right)^{19} = 1.641 \cdot 10^{-15}"


def test_roots_gather_and_other_factors_stay_outside():
    gain, n_in = sp.Symbol("gain"), sp.Symbol("n_in")
    assert to_latex(gain * sp.sqrt(3 / n_in)) == r"\mathrm{gain} \sqrt{\frac{3}{n_{\mathrm{in}}}}"


def test_code_is_set_as_code_and_citations_mark_their_code():
    sentence = prose(Code("nn.Linear"), " uses ", Code("kaiming_uniform_"), " at ", sp.Eq(sp.Symbol("a"), sp.sqrt(5)))
    assert prose_latex(sentence) == (r"\texttt{nn.Linear} uses \texttt{kaiming\_\allowbreak{}uniform\_\allowbreak{}} "
                                     r"at $a = \sqrt{5}$")
    assert prose_markdown(sentence) == r"`nn.Linear` uses `kaiming_uniform_` at $a = \sqrt{5}$"
    source = citation("PyTorch nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5))")
    assert [p for p in source.parts if isinstance(p, Code)] == ["nn.Linear.reset_parameters",
                                                                 "kaiming_uniform_(a=sqrt(5))"]
    assert not any(isinstance(p, Code) for p in citation("He et al. 2015, eqs. (9), (10), e.g. (13)").parts)


def test_prose_typesets_formulas_and_escapes_words():
    sentence = prose("keeps ", sp.Rational(1, 2), " of 100% of ", Variance(sp.Symbol("y")), "_")
    assert prose_latex(sentence).startswith(r"keeps $\frac{1}{2}$ of 100\% of $\operatorname{Var}")
    assert str(sentence) == "keeps 1/2 of 100% of Var[y]_"
    with pytest.raises(DerivationError, match="prose takes words"):
        prose("x", 3)
