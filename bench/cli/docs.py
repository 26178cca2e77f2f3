"""docs/cli.md, the CLI reference: every command's ``--help``, rendered from the Typer app itself.

Generated, never edited by hand, so it cannot drift from the code: ``make docs`` (or
``python -m bench.cli.docs docs/cli.md``) rewrites it, and ``--check`` (run by
tests/test_cli_docs.py) exits 1 when the file differs from what the app renders now. The help is
rendered at a fixed width without colour, so the file does not depend on the terminal it was made in.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from typing import Any, Iterator

import typer
import typer.rich_utils as ru

from bench.atomic import write_text
from bench.cli import app

WIDTH = 100
HEADER = ("# bench command reference\n\n"
          "Generated from the command line's own `--help` by `make docs` (`python -m bench.cli.docs docs/cli.md`);\n"
          "do not edit by hand: a test fails when this file is stale.\n")


def command_paths() -> list[list[str]]:
    """Every command and group of the app, parents first, subcommands in registration order."""
    def walk(cmd: Any, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            if not getattr(sub, "hidden", False):
                yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


@contextlib.contextmanager
def _plain_rich() -> Iterator[None]:
    """typer's rich help at a fixed width, no colour, no terminal codes."""
    saved = (ru.MAX_WIDTH, ru.COLOR_SYSTEM, ru.FORCE_TERMINAL)
    ru.MAX_WIDTH, ru.COLOR_SYSTEM, ru.FORCE_TERMINAL = WIDTH, None, False
    try:
        yield
    finally:
        ru.MAX_WIDTH, ru.COLOR_SYSTEM, ru.FORCE_TERMINAL = saved


def help_text(path: list[str]) -> str:
    """What ``bench <path> --help`` prints, at the fixed width, trailing spaces removed."""
    buf = io.StringIO()
    with _plain_rich(), contextlib.redirect_stdout(buf):
        app(args=[*path, "--help"], prog_name="bench", standalone_mode=False)
    lines = [line.rstrip() for line in buf.getvalue().splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def render() -> str:
    """The whole reference: a contents list, then one section per command with its help."""
    paths = command_paths()
    titles = [" ".join(["bench", *p]) for p in paths]
    out = [HEADER, "## Commands", ""]
    out += [f"- [`{t}`](#{t.replace(' ', '-')})" for t in titles]
    for path, title in zip(paths, titles):
        out += ["", f"## {title}", "", "```text", help_text(path), "```"]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.cli.docs [--check] FILE``: write FILE, or exit 1 when it is stale."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    files = [a for a in args if a != "--check"]
    if len(files) != 1:
        print("usage: python -m bench.cli.docs [--check] docs/cli.md", file=sys.stderr)
        return 2
    target = Path(files[0])
    text = render()
    if check:
        if not target.is_file() or target.read_text() != text:
            print(f"{target} is stale: run make docs", file=sys.stderr)
            return 1
        return 0
    write_text(target, text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
