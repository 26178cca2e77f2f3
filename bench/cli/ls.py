"""``bench ls datasets|models|profiles|ablations|tables``: what is registered."""

from __future__ import annotations

import importlib

import typer
from rich.console import Console
from rich.table import Table

from bench.cli import app

KINDS = {
    "datasets": ("bench.datasets", "DATASETS"),
    "models": ("bench.models", "MODELS"),
    "profiles": ("bench.config", "PROFILES"),
    "ablations": ("bench.ablations", "ABLATIONS"),
    "tables": ("bench.reports.tables", "TABLES"),
}


@app.command("ls")
def ls(
    kind: str = typer.Argument("models", help="datasets | models | profiles | ablations | tables"),
    detail: bool = typer.Option(False, "--detail", help="models: parameter counts at the paper profile"),
) -> None:
    """List what is registered."""
    from bench.errors import ConfigError

    if kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    module, attr = KINDS[kind]
    registry = getattr(importlib.import_module(module), attr)
    table = Table(title=kind)
    table.add_column("name")
    table.add_column("description")
    if detail and kind == "models":
        table.add_column("parameters (paper profile)", justify="right")
    for name in registry.names():
        row = [name, registry.help(name)]
        if detail and kind == "models":
            from bench.models import count_parameters

            row.append(f"{count_parameters(name, 'paper'):,}")
        table.add_row(*row)
    Console().print(table)
