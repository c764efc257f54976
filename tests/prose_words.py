"""What counts as ASCII math in the words of a report (issue 13): formulas belong in sympy parts of a
:class:`~varprop.derive.derivation.Prose`, typeset by the printers, never typed into the words."""

from __future__ import annotations

import re

from varprop.derive.derivation import Code, Prose

#: ASCII math in words: powers, products, roots, brackets of moments, subscripts, a Gaussian law written
#: "~ N(", a fraction of numbers ("1/2"), a layer written "l+1", and the letters of formulas standing alone.
ASCII_MATH = re.compile(r"\^|\*|sqrt\(|\b(?:E|Var)\[|_|~|\bN\(|\d/\d|\b[lL][+-]\d|(?<![\w'’-])[wxyzqnlLk](?![\w'’-])")


def words(text: str) -> str:
    """The words of a sentence: formulas (sympy) and code identifiers left out."""
    parts = text.parts if isinstance(text, Prose) else (text,)
    return "".join(p for p in parts if isinstance(p, str) and not isinstance(p, Code))
