"""``bench train MODEL --plane PLANE``: train one model on one plane, then evaluate it."""

from __future__ import annotations

from typing import List, Optional

import typer
from rich.console import Console

from bench.cli import app
from bench.cli.common import build_run_config, given_flags, parse_seeds
from bench.cli.data import cysts_override
from bench.cli.paths_check import writable_dir
from bench.paths import CACHE_ENV, RESULTS_ENV, run_dir


@app.command("train")
def train(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="{models} (bench ls models)"),
    plane: str = typer.Option("axial", "--plane", help="axial | coronal | sagittal"),
    task: str = typer.Option("liver", "--task", help="liver | lesion"),
    dataset: str = typer.Option("phantom", "--dataset", help="{datasets} (bench ls datasets)"),
    root: Optional[str] = typer.Option(None, "--root", help="data set folder (phantom: generated under $BENCH_DATA/phantom, default data/phantom)"),
    profile: Optional[str] = typer.Option(None, "--profile", help="{profiles} (default: {default_profile})"),
    seed: int = typer.Option(0, "--seed"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="several seeds, e.g. 0,1,2 (one run each)"),
    fold: Optional[int] = typer.Option(None, "--fold", help="cross-validation fold (bench data prepare --folds K first)"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    results: str = typer.Option("results", "--results", envvar=RESULTS_ENV, help="results root"),
    cache: str = typer.Option("cache", "--cache", envvar=CACHE_ENV, help="slice cache root"),
    splits: Optional[str] = typer.Option(None, "--splits", help="a splits_final.json to use"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="override a config field, e.g. --set train.lr=1e-3"),
    config: Optional[str] = typer.Option(None, "--config", help="settings file (.toml, .yaml, .json; a run's "
                                         "config.json too) with the keys of --set; flags and --set win over it"),
    tag: str = typer.Option("", "--tag", help="results folder name (default: the model name)"),
    resume: bool = typer.Option(False, "--resume", help="continue a killed run from its last checkpoint"),
    force: bool = typer.Option(False, "--force", help="retrain even if a finished run exists"),
    include_cysts: bool = typer.Option(False, "--include-cysts", help="ircadb: liver cysts count as lesions"),
) -> None:
    """Train one model on one plane (and evaluate it on val and test); runs it needs are trained first."""
    writable_dir(results, "--results")  # before hours of training, not after
    writable_dir(cache, "--cache")
    from bench.engine.scheduler import execute, plan  # lazy: torch

    console = Console()
    cfgs = [build_run_config(model, plane, task, dataset, root, profile, s, device, results, cache, splits,
                             cysts_override(set_, include_cysts), tag, fold, config, given_flags(ctx), check=False)
            for s in parse_seeds(seed, seeds)]
    jobs = plan(cfgs)  # checks every run (the requested ones and those they need) once, before any starts
    execute(jobs, resume=resume, force=force, say=lambda line: console.print(line, highlight=False, soft_wrap=True))
    for cfg in cfgs:
        console.print(f"[green]done[/green] {cfg.model} {cfg.plane} {cfg.task} (profile {cfg.profile.name}, "
                      f"seed {cfg.seed}) -> {run_dir(cfg)}", highlight=False, soft_wrap=True)
