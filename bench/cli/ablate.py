"""``bench ablate NAME``: the paper's ablations (Tables 3-5) and this toolkit's (norm, capacity, ...)."""

from __future__ import annotations

from typing import List, Optional

import typer
from rich.console import Console

from bench.ablations import ABLATIONS, ablation_targets
from bench.cli import app
from bench.cli.common import build_run_config, given_flags, parse_seeds
from bench.cli.data import cysts_override
from bench.cli.paths_check import writable_dir
from bench.paths import CACHE_ENV, RESULTS_ENV


@app.command("ablate")
def ablate(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="{ablations} (bench ls ablations)"),
    dataset: str = typer.Option("phantom", "--dataset", help="{datasets}"),
    root: Optional[str] = typer.Option(None, "--root"),
    profile: Optional[str] = typer.Option(None, "--profile", help="{profiles} (default: {default_profile})"),
    seed: int = typer.Option(0, "--seed"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="e.g. 0,1,2"),
    fold: Optional[int] = typer.Option(None, "--fold", help="cross-validation fold (bench data prepare --folds K first)"),
    device: str = typer.Option("auto", "--device"),
    results: str = typer.Option("results", "--results", envvar=RESULTS_ENV, help="results root"),
    cache: str = typer.Option("cache", "--cache", envvar=CACHE_ENV, help="slice cache root"),
    splits: Optional[str] = typer.Option(None, "--splits"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="extra overrides for every variant"),
    config: Optional[str] = typer.Option(None, "--config", help="settings file (.toml, .yaml, .json; a run's "
                                         "config.json too) with the keys of --set; flags and --set win over it"),
    force: bool = typer.Option(False, "--force", help="retrain variants that already finished"),
    include_cysts: bool = typer.Option(False, "--include-cysts", help="ircadb: liver cysts count as lesions"),
) -> None:
    """Run one ablation; finished runs are reused unless --force."""
    writable_dir(results, "--results")
    writable_dir(cache, "--cache")
    from bench.engine.scheduler import execute, plan  # lazy: torch

    ablation = ABLATIONS.get(name)
    console = Console()
    targets = []
    for s in parse_seeds(seed, seeds):
        base = build_run_config(ablation.models[0], ablation.plane, ablation.task, dataset, root, profile, s, device,
                                results, cache, splits, cysts_override(set_, include_cysts), fold=fold,
                                config_file=config, given=given_flags(ctx) | {"model", "plane", "task"})
        targets += [(f"{name} {label} (seed {s})", cfg) for label, cfg in ablation_targets(name, base)]
    execute(plan(targets), force=force, say=lambda line: console.print(line, highlight=False, soft_wrap=True))
    console.print(f"tables: bench report --tables {ablation.table} --results {results}")
