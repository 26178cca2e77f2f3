"""Help text whose lists come from the registries, so ``--help`` cannot drift from ``bench ls``.

A help string names a registry with a placeholder (``{models}``, ``{datasets}``, ``{profiles}``,
``{ablations}``, ``{tables}``) and the rule that picks the default profile with
``{default_profile}``; a registry query with its own placeholder (``{real_data_models}``,
``{prior_baselines}``: `QUERIES`) gives the names a default is made of, so a help text states a
default without naming a model by hand. The placeholders are filled only when help is shown (`install` wraps every
command's ``format_help``): the model registry imports torch, which ``bench data ...`` or
``bench --version`` must not pay for.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Callable

from bench.cli.common import DEFAULT_PROFILE_RULE

# placeholder -> (module, registry attribute); the same table `bench ls` reads
REGISTRIES: dict[str, tuple[str, str]] = {
    "datasets": ("bench.datasets", "DATASETS"),
    "models": ("bench.models", "MODELS"),
    "profiles": ("bench.config", "PROFILES"),
    "ablations": ("bench.ablations", "ABLATIONS"),
    "tables": ("bench.reports.tables", "TABLES"),
}

# placeholder -> (module, function returning model names), written comma-separated as a --models value
QUERIES: dict[str, tuple[str, str]] = {
    "real_data_models": ("bench.engine.study", "real_data_models"),  # bench demo's models on real CT
    "prior_baselines": ("bench.engine.study", "prior_baselines"),  # the baselines a study gives the liver prior
}

_PLACEHOLDER = re.compile(r"\{(" + "|".join([*REGISTRIES, *QUERIES, "default_profile"]) + r")\}")


def registry_names(kind: str) -> list[str]:
    """The registered names of one kind, as `bench ls KIND` lists them."""
    module, attr = REGISTRIES[kind]
    return list(getattr(importlib.import_module(module), attr).names())


def choices(kind: str) -> str:
    """``a | b | c``: the registered names of one kind, for a help string."""
    return " | ".join(registry_names(kind))


def fill(text: str | None) -> str | None:
    """Replace every placeholder in a help string (None stays None)."""
    if not text:
        return text

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "default_profile":
            return DEFAULT_PROFILE_RULE
        if name in QUERIES:
            module, attr = QUERIES[name]
            return ",".join(getattr(importlib.import_module(module), attr)())
        return choices(name)

    return _PLACEHOLDER.sub(one, text)


def fill_command(command: Any) -> None:
    """Fill the placeholders of one click command's own help and its parameters' help, in place."""
    command.help = fill(command.help)
    for param in getattr(command, "params", []):
        if getattr(param, "help", None):
            param.help = fill(param.help)


def install(command: Any) -> None:
    """Wrap ``format_help`` of ``command`` and of every subcommand so help is filled when it is shown."""
    original: Callable[..., Any] = command.format_help

    def format_help(ctx: Any, formatter: Any) -> Any:
        fill_command(command)
        return original(ctx, formatter)

    command.format_help = format_help
    for sub in getattr(command, "commands", {}).values():
        install(sub)
