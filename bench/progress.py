"""Progress that a terminal and a log file can both show.

On a terminal (stdout is a TTY) a rich progress bar is drawn and updated in place. Without one
(nohup, CI, a pipe to a log file) rich draws nothing, so a ten-minute training would be silent;
there every epoch, every prepared case and every evaluated case prints one plain, flushed line
(stage, epoch, loss, validation Dice, elapsed) instead. ``enabled=False`` prints nothing at all.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from typing import Any, Iterator

from rich.console import Console
from rich.markup import escape


def is_terminal() -> bool:
    """Draw bars only on a terminal, and never in a worker process sharing it (BENCH_PROGRESS=plain)."""
    if os.environ.get("BENCH_PROGRESS") == "plain":
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """``step()`` advances a bar (terminal only); ``say(text)`` is a line in a log, a caption on a bar."""

    def __init__(self, title: str, total: int, enabled: bool = True) -> None:
        self.title = title
        self.total = total
        self.enabled = enabled
        self.start = time.perf_counter()
        self._bar = None
        self._task = None

    def __enter__(self) -> "Progress":
        if self.enabled and is_terminal():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn  # lazy: as below
            from rich.progress import Progress as Bar  # lazy: rich.progress costs about what bench --help does

            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self._bar.__enter__()
            self._task = self._bar.add_task(self.title, total=max(self.total, 0))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def step(self, n: int = 1, caption: str | None = None) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=n, **({"description": caption} if caption else {}))

    def hide(self) -> None:
        """Remove the bar from the terminal (before an error line, so that line stands alone)."""
        if self._bar is not None:
            self._bar.update(self._task, visible=False)

    def say(self, text: str) -> None:
        """One line of progress: printed (with the elapsed time) in a log, the bar's caption on a terminal."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, description=f"{self.title} {text}")
            return
        print(f"{self.title} {text} ({self.elapsed:.0f} s)", flush=True)


def note(text: str) -> None:
    """One line on stderr saying what a command does besides its job (e.g. generating data)."""
    print(f"note: {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def progress(title: str, total: int, enabled: bool = True) -> Iterator[Progress]:
    with Progress(title, total, enabled) as p:
        yield p


@contextlib.contextmanager
def bench_warnings_one_line() -> Iterator[None]:
    """Warnings issued by bench's own modules print as one ``warning: <message>`` line on stderr.

    Python's default format adds the file, line and source line, which reads like a crash to a
    user. Warnings from other packages (torch, nibabel, ...) keep the default format. The CLI and
    every scheduler worker process (which does not run the CLI's entry point) install it.
    """
    package_dir = os.path.dirname(os.path.abspath(__file__))
    original = warnings.showwarning

    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if os.path.abspath(filename).startswith(package_dir + os.sep):
            Console(stderr=True).print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False,
                                       soft_wrap=True)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original
