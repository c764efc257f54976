"""Sphinx configuration for the varprop documentation.

Build with warnings as errors::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The pages under ``topics/`` are not kept in the repository: :mod:`generate_topics` writes them from
:mod:`varprop.explain` when the builder starts, so they always show what ``varprop explain`` says.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sphinx.application import Sphinx

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS))

import generate_topics  # noqa: E402  (needs DOCS on sys.path)

project = "varprop"
author = "the varprop developers"
copyright = "the varprop developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

# numpydoc-style docstrings only: a "Returns" line in free text must not be read as a Google section.
napoleon_numpy_docstring = True
napoleon_google_docstring = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"

exclude_patterns = ["_build"]
templates_path: list[str] = []

html_theme = "alabaster"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Derive and check how moments propagate through random networks",
    "fixed_sidebar": True,
}


def _generate_topics(app: Sphinx) -> None:
    """Write ``topics/*.rst`` and their figures before Sphinx looks for source files."""
    generate_topics.generate(Path(app.srcdir) / "topics")


def setup(app: Sphinx) -> dict[str, object]:
    """Regenerate the topic pages at every build (connected to ``builder-inited``)."""
    app.connect("builder-inited", _generate_topics)
    return {"parallel_read_safe": True}
