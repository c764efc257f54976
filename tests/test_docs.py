"""The Sphinx site builds with warnings as errors, and has one page per explain topic."""

from __future__ import annotations

import html
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import sphinx  # noqa: F401
except ImportError:
    pytest.skip("sphinx is not installed (python -m pip install -e '.[docs]')", allow_module_level=True)

from varprop.explain import TOPICS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    out = tmp_path / "html"
    run = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", str(DOCS), str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, f"sphinx-build failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    for page in ("index", "getting-started", "claims", "api", "topics/index"):
        assert (out / f"{page}.html").is_file(), page
    for name in TOPICS:
        page = (out / "topics" / f"{name}.html").read_text(encoding="utf-8")
        # docutils' smart quotes turn ' into a right single quotation mark
        assert TOPICS[name].title in html.unescape(page).replace("\u2019", "'"), name
        assert f"_images/{name}.png" in page, name
        assert (out / "_images" / f"{name}.png").is_file(), name
        assert "\\begin{aligned}" in page and "Tolerance:" in page and "reason" in page, name  # derivation, table
        assert "**" not in html.unescape(page).split("<body")[1], name  # no ASCII powers in the prose
    gallery = (out / "topics" / "gallery.html").read_text(encoding="utf-8")
    assert all(f"_images/{name}.png" in gallery for name in TOPICS)
