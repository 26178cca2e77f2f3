"""``bench demo``: the whole study on the built-in phantom, then Tables 3-8 and the figures."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from bench.ablations import ABLATIONS
from bench.cli import app
from bench.cli.common import check_device, default_profile, parse_planes, parse_seeds
from bench.cli.paths_check import writable_dir
from bench.config import TASKS
from bench.engine.study import StudyPlan, real_data_models, run_study
from bench.errors import ConfigError
from bench.paths import CACHE_ENV, RESULTS_ENV


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


@app.command("demo")
def demo(
    dataset: str = typer.Option("phantom", "--dataset", help="{datasets} (default phantom)"),
    root: Optional[str] = typer.Option(None, "--root", help="data set folder (phantom: generated under $BENCH_DATA/phantom, default data/phantom)"),
    profile: Optional[str] = typer.Option(None, "--profile",
                                          help="{profiles} (default: {default_profile})"),
    results: str = typer.Option("results", "--results", envvar=RESULTS_ENV, help="results root"),
    cache: str = typer.Option("cache", "--cache", envvar=CACHE_ENV, help="slice cache root"),
    seeds: str = typer.Option("0", "--seeds", help="e.g. 0,1,2"),
    device: str = typer.Option("cpu", "--device", help="cpu keeps the demo deterministic; auto uses a GPU"),
    models: Optional[str] = typer.Option(None, "--models", help="any of {models} (default: every registered model on the phantom, {real_data_models} on real data)"),
    tasks: str = typer.Option("liver,lesion", "--tasks"),
    planes: Optional[str] = typer.Option(None, "--planes", help="default: all three + fused on the phantom, axial on real data"),
    lesion_planes: str = typer.Option("axial", "--lesion-planes",
                                      help="planes for the lesion step (axial,coronal,sagittal for all of Table 8)"),
    liver_priors: str = typer.Option("crop", "--liver-priors",
                                     help="lesion: {prior_baselines} also with these model.liver_prior modes (crop, channel; "
                                          "'' for none): Table 8's '+ liver prior' columns beside the plain "
                                          "baselines and ours"),
    ablations: Optional[str] = typer.Option(None, "--ablations",
                                            help="any of {ablations} (default: patch-level,loss,iterations on the phantom, none on real data)"),
    splits: Optional[str] = typer.Option(None, "--splits", help="a splits_final.json with the train/val/test "
                                         "patient lists to use instead of the data set's own (then no "
                                         "cross-validation unless --folds is given)"),
    folds: Optional[int] = typer.Option(None, "--folds", help="cross-validation folds (default: none on the phantom; "
                                        "leave-one-patient-out on real data with up to 10 patients, else 5)"),
    budget: str = typer.Option("matched", "--budget", help="matched (default): every baseline trains as many "
                               "optimiser steps as ours on the same plane, task and fold; epochs: each model its "
                               "profile's epochs"),
    workers: int = typer.Option(0, "--workers", help="runs side by side (0: two single-thread workers on a CPU)"),
    report: bool = typer.Option(True, "--report/--no-report", help="write Tables 3-8 (on real data also the "
                                "verdict table) and figures at the end"),
    out: Optional[str] = typer.Option(None, "--out", help="report folder (default RESULTS/report)"),
) -> None:
    """The study behind Tables 3-8 (phantom by default; real CT with cross-validation), then the report."""
    writable_dir(results, "--results")
    writable_dir(cache, "--cache")
    if out is not None:
        writable_dir(out, "--out")
    from bench.models.liver_prior import MODES  # lazy: torch

    for mode in _names(liver_priors):  # checked before any data is written
        if mode not in MODES:
            raise ConfigError(f"--liver-priors {liver_priors!r}: {mode!r} is not a liver prior (known: {', '.join(MODES)})")
    from bench.datasets import DATASETS, get_dataset  # lazy: numpy, nibabel, scipy
    DATASETS.get(dataset)
    check_device(device)
    chosen_planes = parse_planes(planes) if planes else None  # checked before any data is written
    chosen_lesion_planes = parse_planes(lesion_planes, "--lesion-planes")
    from bench.models import get_model_spec  # lazy: torch

    for name in _names(models or ""):  # every name checked before the phantom is generated or anything trained
        get_model_spec(name)
    for name in _names(ablations or ""):
        ABLATIONS.get(name)
    for name in _names(tasks):
        if name not in TASKS:
            raise ConfigError(f"--tasks {tasks!r}: {name!r} is not a task (known: {', '.join(TASKS)})")
    if splits is not None:
        splits_path = Path(splits).expanduser().resolve()
        if not splits_path.is_file():
            raise ConfigError(f"--splits {splits}: no such file")
        splits = str(splits_path)
    console = Console()
    t0 = time.perf_counter()
    adapter = get_dataset(dataset, root=root)  # the phantom writes data/phantom on first use
    real = dataset != "phantom"
    n_patients = len(adapter.case_ids())
    if folds is None:  # an explicit split file is the user's protocol: its own train/val/test, no folds
        folds = 0 if splits else ((n_patients if n_patients <= 10 else 5) if real else 0)
    profile = profile or default_profile(dataset, device)
    plan = StudyPlan(
        models=_names(models) if models else (real_data_models() if real else ()),
        planes=chosen_planes or (("axial",) if real else StudyPlan.planes),
        tasks=_names(tasks), lesion_planes=chosen_lesion_planes,
        ablations=_names(ablations) if ablations is not None else (() if real else StudyPlan.ablations),
        folds=folds, budget=budget, liver_priors=_names(liver_priors),
        overrides=(("splits", splits),) if splits else (),
    )
    console.print(f"study: {dataset} ({n_patients} patients{f', {folds} folds' if folds else ''}), profile {profile}, "
                  f"models {','.join(plan.models) or 'all registered'}, planes {','.join(plan.planes)}, tasks {','.join(plan.tasks)}, "
                  f"budget {budget}",
                  highlight=False, soft_wrap=True)
    timings = run_study(profile, results, dataset=dataset, root=str(adapter.root.resolve()) if real or root else "",
                        cache=cache, seeds=tuple(parse_seeds(0, seeds)), device=device, plan=plan,
                        say=lambda line: console.print(line, highlight=False, soft_wrap=True), workers=workers)
    for phase, seconds in timings.items():
        console.print(f"  {phase}: {seconds:.0f} s")
    if report:
        from bench.reports.report import build_report  # lazy: pandas, torch
        from bench.reports.select import ReportOptions  # lazy: pandas, torch

        # real data: also the verdict table (what the study can say per model and patient); the phantom report
        # keeps Tables 3-8 and their companions
        out_dir = build_report(results, out=out, tables="3-8,verdict" if real else "3-8",
                               options=ReportOptions(dataset=dataset, profile=profile))
        console.print(f"[green]report[/green] -> {Path(out_dir) / 'index.md'}")
    console.print(f"[green]demo finished[/green] in {time.perf_counter() - t0:.0f} s; results under {results}/")
