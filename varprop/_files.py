"""Output directories: made (or found) and proved writable before any long computation starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import VarpropError, abbreviate

__all__ = ["OutputError", "output_directory"]


class OutputError(VarpropError):
    """An output directory that cannot be created or written to."""


def output_directory(path: str | os.PathLike[str], option: str = "output directory") -> Path:
    """Create ``path`` (and its parents) if needed and check that a file can be written in it.

    Call it after every other option has been validated (so bad input creates nothing) and before
    the long computation (so an unwritable directory is reported at once, not after it). Raises
    :class:`OutputError` naming ``option``, the path (abbreviated when huge) and the reason.
    """
    try:
        out = Path(path)
    except TypeError:
        raise OutputError(f"{option} must be a path, got {abbreviate(path)}") from None
    shown = abbreviate(str(out))
    try:
        if out.exists() and not out.is_dir():
            raise OutputError(f"{option} {shown} exists and is not a directory")
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{option} {shown}: a part of the path exists and is not a directory") from None
    except OSError as exc:
        raise OutputError(f"cannot create {option} {shown}: {exc.strerror or exc}") from None
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write into {option} {shown}: {exc.strerror or exc}") from None
    return out
