"""``bench evaluate MODEL --plane PLANE|fused``: score trained runs on val/test (fused = soft voting)."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console

from bench.cli import app
from bench.cli.common import build_run_config, parse_seeds
from bench.cli.data import check_cysts, cysts_override
from bench.cli.paths_check import writable_dir
from bench.errors import ConfigError
from bench.paths import CACHE_ENV, RESULTS_ENV, SUMMARY


@app.command("evaluate")
def evaluate(
    model: str = typer.Argument(..., help="a trained model: {models}"),
    plane: str = typer.Option("axial", "--plane", help="axial | coronal | sagittal | fused"),
    task: str = typer.Option("liver", "--task"),
    dataset: str = typer.Option("phantom", "--dataset", help="{datasets}"),
    root: Optional[str] = typer.Option(None, "--root"),
    split: str = typer.Option("all", "--split", help="val | test | all (other splits' rows are kept)"),
    seed: int = typer.Option(0, "--seed"),
    seeds: Optional[str] = typer.Option(None, "--seeds"),
    fold: Optional[int] = typer.Option(None, "--fold", help="cross-validation fold (bench data prepare --folds K first)"),
    device: str = typer.Option("auto", "--device"),
    results: str = typer.Option("results", "--results", envvar=RESULTS_ENV, help="results root"),
    cache: str = typer.Option("cache", "--cache", envvar=CACHE_ENV, help="slice cache root"),
    tag: str = typer.Option("", "--tag"),
    include_cysts: bool = typer.Option(False, "--include-cysts", help="ircadb: the run was trained with "
                                       "cysts as lesions (checked against its config.json)"),
    surface: bool = typer.Option(False, "--surface", help="also HD95, surface Dice (NSD, 1 mm), ASSD, MSSD, RMSD in mm; slower"),
    rescore: bool = typer.Option(False, "--rescore", help="the run's data changed since training (root, split or "
                                 "case files): score it on the data as it is now, recorded in its config.json "
                                 "(without it, evaluate refuses)"),
) -> None:
    """Evaluate a trained run per plane, or fuse the three planes.

    ``--root`` must be the run's own data root (recorded absolute at training) or omitted: a run is
    scored on the data it was trained on; other data is scored with ``bench predict``/``bench score``.
    """
    writable_dir(results, "--results")
    writable_dir(cache, "--cache")
    from bench.engine.runner import evaluate as evaluate_run  # lazy: torch
    from bench.metrics.results import print_summary  # lazy: pandas, torch
    choices = {"val": ("val",), "test": ("test",), "all": ("val", "test"), "both": ("val", "test")}
    if split not in choices:
        raise ConfigError(f"--split {split!r}: expected val, test or all")
    for s in parse_seeds(seed, seeds):
        cfg = build_run_config(model, plane, task, dataset, root, None, s, device, results, cache, None,
                               cysts_override(None, include_cysts), tag, fold)
        check_cysts(cfg)
        folder = evaluate_run(cfg, choices[split], surface=surface, rescore=rescore)
        print_summary(json.loads((folder / SUMMARY).read_text()), title=f"{model} {plane} {task}")
        Console().print(f"[green]results[/green] -> {folder}")
