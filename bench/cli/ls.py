"""``bench ls datasets|models|profiles|ablations|tables``: what is registered.

``bench ls models --detail [--profile NAME] [--set KEY=VALUE]`` prints one model card per model
(`bench.models.cards`: parameters by component, trainable vs non-trainable, the paper's figure
beside ours, the normalisation used).
"""

from __future__ import annotations

import importlib
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from bench.cli import app
from bench.cli.helptext import REGISTRIES as KINDS
from bench.errors import ConfigError


@app.command("ls")
def ls(
    kind: str = typer.Argument("models", help=" | ".join(KINDS)),
    detail: bool = typer.Option(False, "--detail", help="models: a model card each (parameters by component)"),
    profile: str = typer.Option("paper", "--profile", help="models --detail: the profile the cards count at"),
    set_: Optional[List[str]] = typer.Option(
        None, "--set", help="models --detail: override a config field, e.g. --set cascade.norm=batch"
    ),
) -> None:
    """List what is registered."""
    if kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    module, attr = KINDS[kind]
    registry = getattr(importlib.import_module(module), attr)
    if detail and kind == "models":
        from bench.models import model_names  # lazy: torch
        from bench.models.cards import format_card, model_card  # lazy: torch

        cards = [format_card(model_card(name, profile, set_)) for name in model_names()]
        typer.echo("\n\n".join(cards))
        return
    if kind == "models":
        _list_models()
        return
    table = Table(title=kind)
    table.add_column("name")
    table.add_column("description")
    for name in registry.names():
        table.add_row(name, registry.help(name))
    Console().print(table)


def _list_models() -> None:
    """One row per spec, in table order: what the toolkit knows about each model (plug-ins included)."""
    from bench.models import MODELS, model_names  # lazy: torch

    table = Table(title="models")
    for column in ("name", "label", "role", "recipe", "capabilities", "config", "description", "from"):
        table.add_column(column)
    for name in model_names():
        spec = MODELS.get(name)
        role = f"{spec.role} (default)" if spec.default_baseline else spec.role  # scheduled where a study runs few
        table.add_row(name, spec.display, role, spec.recipe, ",".join(sorted(spec.capabilities)) or "-",
                      spec.config_section, spec.description, spec.module)
    Console(width=200).print(table)
