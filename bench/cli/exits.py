"""Exit statuses you can script against, one-line errors, and signals turned into exceptions.

Why this module: ``bench`` runs in CI (``make test``, ``bench report --check``) and in shell
pipelines (``bench data prepare && bench train ...``), so its exit status must mean something:

====  ==================================================================================
0     success, ``--help``
1     a failed check (a ``--check``-style verdict: ``raise typer.Exit(1)``)
2     a user error: bad flag, unknown option or command, unknown name, bad input file
      (`bench.errors.BenchError`), a path that cannot be written (``OSError`` naming a file),
      no space left: full disk, quota, ``ulimit -f`` (`bench.errors.DiskSpaceError`)
130   interrupted by SIGINT (Ctrl-C)
143   terminated by SIGTERM
====  ==================================================================================

Errors print one line on stderr and no traceback (``BENCH_TRACEBACK=1`` shows it, for bug
reports). Typer runs with ``standalone_mode=False`` so a `BenchError` reaches us unformatted;
in that mode typer *returns* the code of a ``typer.Exit`` instead of exiting, and raises click
exceptions from its vendored copy (``typer._click``, typer >= 0.29) or from click itself
(older typer): `run` handles both families and turns the returned code into the exit status.

Signals: SIGINT and SIGTERM raise `Interrupted` (a `BaseException`, like KeyboardInterrupt, so
``except Exception`` in library code cannot swallow it) in the main thread. The stack unwinds,
so ``finally`` blocks and the write-then-rename cleanup of `bench.atomic` and the slice cache
run; a half-written file or cache case is removed before the process exits with 128 + signal.
Without the handler SIGTERM would kill the process on the spot and leave temp files behind.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from typing import Any, Iterator, Sequence

import typer
from rich.console import Console
from rich.markup import escape

from bench.atomic import SPACE_ERRNOS
from bench.errors import BenchError
from bench.progress import bench_warnings_one_line  # noqa: F401  (used by run(); workers use it too)

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
TRACEBACK_ENV = "BENCH_TRACEBACK"


class Interrupted(BaseException):
    """SIGINT or SIGTERM received; unwinds the stack so cleanup runs, then exits 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _modules(*names: str) -> list[Any]:
    out = []
    for name in names:
        try:
            out.append(importlib.import_module(name))
        except ImportError:  # typer < 0.29 has no vendored click; click may be absent with typer >= 0.29
            pass
    return out


def _exception_classes() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(ClickException, Abort, Exit) classes of every click the installed typer may raise."""
    clicks = _modules("typer._click.exceptions", "click.exceptions")
    click_exc = tuple({m.ClickException for m in clicks})
    # typer >= 0.29 defines Abort and Exit itself (typer.exceptions), older typer re-exports click's
    abort = tuple({typer.Abort, *(m.Abort for m in clicks if hasattr(m, "Abort"))})
    exit_ = tuple({typer.Exit, *(m.Exit for m in clicks if hasattr(m, "Exit"))})
    return click_exc, abort, exit_


# ---------------------------------------------------------------- signals


@contextlib.contextmanager
def signals_as_exceptions(signals: Sequence[int] = HANDLED_SIGNALS) -> Iterator[None]:
    """Within the block, the first SIGINT/SIGTERM raises `Interrupted`; later ones are ignored.

    Ignoring repeats keeps a second Ctrl-C from cutting the cleanup short (removing a temp
    folder takes milliseconds; SIGKILL still works). Outside the main thread (where Python
    cannot install handlers) the block runs unchanged. A forked child (a DataLoader worker)
    inherits the handler but gets the default behaviour: KeyboardInterrupt on SIGINT, which
    torch's workers expect and swallow quietly, and termination on SIGTERM.
    """
    received: list[int] = []
    owner = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != owner:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if received:
            return
        received.append(signum)
        raise Interrupted(signum)

    previous = {}
    try:
        for sig in signals:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _verb(args: Sequence[str]) -> tuple[str, ...]:
    """The command words of ``args`` (``("data", "prepare")``, ``("train",)``), options skipped."""
    words = [a for a in args if not a.startswith("-")]
    return tuple(words[:2]) if words[:1] == ["data"] else tuple(words[:1])


def interrupt_message(signum: int, args: Sequence[str]) -> str:
    """One line saying what was interrupted and how to continue, where the command can."""
    name = signal.Signals(signum).name
    hint = {
        ("train",): "rerun with --resume to continue from the last checkpoint",
        ("data", "prepare"): "rerun the same command to continue (finished cases are kept)",
        ("demo",): "rerun the same command to continue (finished runs are reused)",
        ("ablate",): "rerun the same command to continue (finished runs are reused)",
    }.get(_verb(args))
    return f"interrupted ({name})" + (f"; {hint}" if hint else "")


# ---------------------------------------------------------------- warnings


# ---------------------------------------------------------------- errors


def _print_error(text: str) -> None:
    """``error: <text>`` on stderr as one line (rich markup and highlighting off, no wrapping)."""
    one_line = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    Console(stderr=True).print(f"[red]error:[/red] {_escape(one_line)}", highlight=False, soft_wrap=True)


def _escape(text: str) -> str:
    return escape(text)


def _usage_line(exc: BaseException) -> str:
    """Click's own message plus where to get help: ``No such command 'trian'. Did you mean 'train'? (...)``."""
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and getattr(ctx, "command_path", None):
        message = f"{message} (see '{ctx.command_path} --help')"
    return message


def _os_error_line(exc: OSError) -> str:
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    what = exc.strerror or str(exc)
    return f"{where}: {what}" if where else what


def run(app: Any, args: Sequence[str] | None = None, prog_name: str = "bench") -> int:
    """Run the typer ``app`` on ``args`` (default ``sys.argv[1:]``) and return the exit status.

    Never raises for user errors, failed checks or signals: each is one line on stderr and
    its status (module docstring). A bug (any other exception) keeps its traceback.
    """
    args = list(sys.argv[1:] if args is None else args)
    click_exc, abort_exc, exit_exc = _exception_classes()
    debug = bool(os.environ.get(TRACEBACK_ENV))
    # a write past ``ulimit -f`` raises SIGXFSZ, whose default action kills the process on the spot
    # (no cleanup, no message); ignored, the write fails with EFBIG and becomes one line (exit 2)
    if hasattr(signal, "SIGXFSZ"):
        with contextlib.suppress(ValueError, OSError):  # ValueError: not the main thread
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        with signals_as_exceptions(), bench_warnings_one_line():
            rv = app(args=args, prog_name=prog_name, standalone_mode=False)
    except Interrupted as exc:
        Console(stderr=True).print(f"[yellow]{_escape(interrupt_message(exc.signum, args))}[/yellow]",
                                   highlight=False, soft_wrap=True)
        return exc.exit_code
    except BenchError as exc:
        if debug:
            raise
        _print_error(str(exc))
        return EXIT_USAGE
    except exit_exc as exc:  # an Exit raised outside typer's own handling
        return int(exc.exit_code or 0)
    except abort_exc:
        _print_error("aborted")
        return EXIT_CHECK_FAILED
    except click_exc as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `bench` / `bench data` alone: help was printed
            text = exc.format_message().strip()
            if text:
                print(text, file=sys.stderr)
            return EXIT_USAGE
        _print_error(_usage_line(exc))
        return EXIT_USAGE  # every click error is a usage error (bad option, argument, value, file)
    except OSError as exc:  # a path that cannot be read or written, named by the OS
        if debug or (exc.filename is None and exc.filename2 is None and exc.errno not in SPACE_ERRNOS):
            raise
        _print_error(_os_error_line(exc))  # a full disk without a file name still is one line
        return EXIT_USAGE
    # standalone_mode=False: typer returns the code of a typer.Exit (and of Ctrl-C: 130),
    # otherwise the command's return value (our commands return None)
    if isinstance(rv, int) and not isinstance(rv, bool):
        if rv == 130:
            Console(stderr=True).print(f"[yellow]{interrupt_message(signal.SIGINT, args)}[/yellow]",
                                       highlight=False, soft_wrap=True)
        return rv
    return EXIT_OK
