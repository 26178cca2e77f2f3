"""``bench ablate NAME``: the paper's ablations (Tables 3-5) and this toolkit's (norm, capacity, ...)."""

from __future__ import annotations

from typing import List, Optional

import typer
from rich.console import Console

from bench.cli import app
from bench.cli.common import build_run_config, parse_seeds
from bench.cli.data import cysts_override


@app.command("ablate")
def ablate(
    name: str = typer.Argument(..., help="patch-level | loss | iterations | norm | capacity ... (bench ls ablations)"),
    dataset: str = typer.Option("phantom", "--dataset"),
    root: Optional[str] = typer.Option(None, "--root"),
    profile: Optional[str] = typer.Option(None, "--profile"),
    seed: int = typer.Option(0, "--seed"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="e.g. 0,1,2"),
    fold: Optional[int] = typer.Option(None, "--fold", help="cross-validation fold (bench data prepare --folds K first)"),
    device: str = typer.Option("auto", "--device"),
    results: str = typer.Option("results", "--results"),
    cache: str = typer.Option("cache", "--cache"),
    splits: Optional[str] = typer.Option(None, "--splits"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="extra overrides for every variant"),
    force: bool = typer.Option(False, "--force", help="retrain variants that already finished"),
    include_cysts: bool = typer.Option(False, "--include-cysts", help="ircadb: liver cysts count as lesions"),
) -> None:
    """Run one ablation; finished runs are reused unless --force."""
    from bench.cli.paths_check import writable_dir

    writable_dir(results, "--results")
    writable_dir(cache, "--cache")
    from bench.ablations import ABLATIONS, ablation_targets
    from bench.engine.scheduler import execute, plan

    ablation = ABLATIONS.get(name)
    console = Console()
    targets = []
    for s in parse_seeds(seed, seeds):
        base = build_run_config(ablation.models[0], ablation.plane, ablation.task, dataset, root, profile, s, device,
                                results, cache, splits, cysts_override(set_, include_cysts), fold=fold)
        targets += [(f"{name} {label} (seed {s})", cfg) for label, cfg in ablation_targets(name, base)]
    execute(plan(targets), force=force, say=lambda line: console.print(line, highlight=False, soft_wrap=True))
    console.print(f"tables: bench report --tables {ablation.table} --results {results}")
