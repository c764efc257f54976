"""The generated LaTeX compiles with a real TeX engine.

Skipped only when no ``pdflatex`` is on PATH *and* ``VARPROP_REQUIRE_TEX`` is unset; ``.ci/run``
installs TeX and sets ``VARPROP_REQUIRE_TEX=1``, so in CI a missing engine is a failure.
"""

import os
import shutil
import subprocess

import pytest

from varprop.activations import activation
from varprop.cli import main
from varprop.derive import DERIVATIONS, forward
from varprop.errors import DerivationError


def _pdflatex() -> str:
    path = shutil.which("pdflatex")
    if path is None:
        if os.environ.get("VARPROP_REQUIRE_TEX") == "1":
            pytest.fail("VARPROP_REQUIRE_TEX=1 but pdflatex is not on PATH (install texlive-latex-base)")
        pytest.skip("pdflatex not installed (Debian: texlive-latex-base); set VARPROP_REQUIRE_TEX=1 to require it")
    return path


def _compile(tmp_path, source: str) -> None:
    tex = tmp_path / "doc.tex"
    tex.write_text(source)
    result = subprocess.run(
        [_pdflatex(), "-interaction=nonstopmode", "-halt-on-error", tex.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


def test_every_derivation_compiles(tmp_path):
    bodies = []
    for name, params in [("relu", {}), ("leaky_relu", {"a": None}), ("shifted_relu", {}), ("tanh", {}),
                         ("gelu", {}), ("selu", {}), ("linear", {}), ("erf", {})]:
        act = activation(name, **params)
        for kind, function in DERIVATIONS.items():
            try:
                bodies.append(function(act).latex())
            except DerivationError:
                continue
    bodies.append(forward(activation("relu"), weight_mean=True).latex())
    document = (
        "\\documentclass{article}\n\\usepackage[margin=1cm,landscape]{geometry}\n\\usepackage{amsmath,amssymb}\n"
        "\\allowdisplaybreaks\n\\begin{document}\n" + "\n\n".join(bodies) + "\n\\end{document}\n"
    )
    _compile(tmp_path, document)


def test_cli_standalone_document_compiles(tmp_path, capsys):
    assert main(["derive", "forward", "--activation", "relu", "--format", "latex", "--standalone"]) == 0
    _compile(tmp_path, capsys.readouterr().out)


def test_broken_latex_is_caught(tmp_path):
    # The compile check can fail: an unbalanced brace halts pdflatex.
    with pytest.raises(AssertionError):
        _compile(tmp_path, "\\documentclass{article}\\begin{document}$\\frac{1}{$\\end{document}")
