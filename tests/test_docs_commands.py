"""Every ``bench`` command line written in README.md and docs/ exists in the CLI (issue 21, item 1).

docs/cli.md is generated from ``--help`` (tests/test_cli_docs.py); the prose documents are not, so
this test reads every fenced code block of README.md and docs/*.md, takes each line that runs
``bench`` (after any ``VAR=value`` prefixes) and checks that its command path and every ``--option``
are in the Typer app. A renamed option or verb then fails here instead of misleading a reader.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from bench.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "cli.md"),
             *sorted((ROOT / "examples").rglob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def bench_lines(text: str) -> list[str]:
    """The ``bench ...`` invocations in the fenced code blocks of one Markdown text."""
    found = []
    for block in FENCE.findall(text):
        for raw in block.splitlines():
            line = raw.split("#", 1)[0].strip()
            while line.split(" ", 1)[0].count("=") == 1 and " " in line:  # VAR=value prefixes
                line = line.split(" ", 1)[1].strip()
            if line.startswith("bench "):
                found.append(line)
    return found


def unknown_parts(line: str, root: object) -> list[str]:
    """Command path elements and options of ``line`` that the CLI does not have."""
    words = shlex.split(line.replace("\\", " "))[1:]
    cmd = root
    problems: list[str] = []
    options = {o for p in root.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("-"):
            name = word.split("=", 1)[0]
            if name not in options | {"--help"}:
                problems.append(name)
            opt = next((p for p in cmd.params if name in getattr(p, "opts", [])), None)
            if opt is not None and not getattr(opt, "is_flag", False) and "=" not in word:
                i += 1  # the option's value
        elif word in getattr(cmd, "commands", {}):
            cmd = cmd.commands[word]
            options = {o for p in cmd.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
        elif hasattr(cmd, "commands"):  # a group: the word must be a subcommand
            problems.append(word)
            break
        i += 1
    return problems


def test_documents_have_bench_commands() -> None:
    lines = [line for doc in DOCUMENTS for line in bench_lines(doc.read_text())]
    assert len(lines) >= 20, "the documents' command examples were not found"


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_command_exists(doc: Path) -> None:
    root = typer.main.get_command(app)
    bad = {line: unknown_parts(line, root) for line in bench_lines(doc.read_text())}
    bad = {line: parts for line, parts in bad.items() if parts}
    assert not bad, f"{doc.name}: commands or options the CLI does not have: {bad}"


def test_a_wrong_option_is_caught() -> None:
    root = typer.main.get_command(app)
    assert unknown_parts("bench train unet --plane axial", root) == []
    assert unknown_parts("bench train unet --plain axial", root) == ["--plain"]
    assert unknown_parts("bench trian unet", root) == ["trian"]
    assert unknown_parts("bench data prepare --dataset lits --root /x", root) == []
