"""Progress bars for long commands: tqdm on a terminal, nothing otherwise.

``varprop check`` and ``varprop report`` show a bar with the rate and an estimate of the time left
(tqdm, the field's standard) when stderr is a terminal, and print nothing under ``--quiet`` or
when stderr is a file or a pipe (logs and CI stay clean).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["progress_bar"]


@contextmanager
def progress_bar(description: str, *, quiet: bool = False, unit: str = "step", stream=None,
                 mininterval: float = 0.1) -> Iterator[Callable[[str, int, int], None] | None]:
    """A ``progress(label, done, total)`` callback drawing a tqdm bar, or ``None`` when nothing is shown.

    Nothing is shown under ``quiet`` or when ``stream`` (default ``sys.stderr``) is not a terminal.
    The bar is redrawn at most every ``mininterval`` seconds and left in place when done.
    """
    stream = sys.stderr if stream is None else stream
    if quiet or not getattr(stream, "isatty", lambda: False)():
        yield None
        return
    from tqdm import tqdm  # imported only when a bar is drawn: keeps start-up fast

    bar = tqdm(total=None, desc=description, unit=unit, file=stream, dynamic_ncols=True, mininterval=mininterval)

    def update(label: str, done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.set_postfix_str(label[:60], refresh=False)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()
