"""``bench demo``: the whole study on the built-in phantom, then Tables 3-8 and the figures."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from bench.cli import app


@app.command("demo")
def demo(
    profile: str = typer.Option("demo", "--profile", help="demo (make demo) | golden (CI tables) | smoke"),
    results: str = typer.Option("results", "--results"),
    cache: str = typer.Option("cache", "--cache"),
    seeds: str = typer.Option("0", "--seeds", help="e.g. 0,1,2"),
    device: str = typer.Option("cpu", "--device", help="cpu keeps the demo deterministic; auto uses a GPU"),
    tasks: str = typer.Option("liver,lesion", "--tasks"),
    lesion_planes: str = typer.Option("axial", "--lesion-planes",
                                      help="planes for the lesion step (axial,coronal,sagittal for all of Table 8)"),
    workers: int = typer.Option(0, "--workers", help="runs side by side (0: two single-thread workers on a CPU)"),
    report: bool = typer.Option(True, "--report/--no-report", help="write Tables 3-8 and figures at the end"),
    out: Optional[str] = typer.Option(None, "--out", help="report folder (default RESULTS/report)"),
) -> None:
    """Phantom data -> every model on three planes -> fused -> ablations -> tables and figures."""
    from bench.cli.paths_check import writable_dir

    writable_dir(results, "--results")
    writable_dir(cache, "--cache")
    if out is not None:
        writable_dir(out, "--out")
    from bench.cli.common import parse_seeds
    from bench.datasets import get_dataset
    from bench.engine.study import StudyPlan, run_study

    console = Console()
    t0 = time.perf_counter()
    get_dataset("phantom")  # writes data/phantom on first use
    plan = StudyPlan(tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()),
                     lesion_planes=tuple(p.strip() for p in lesion_planes.split(",") if p.strip()))
    timings = run_study(profile, results, cache=cache, seeds=tuple(parse_seeds(0, seeds)), device=device, plan=plan,
                        console=console, workers=workers)
    for phase, seconds in timings.items():
        console.print(f"  {phase}: {seconds:.0f} s")
    if report:
        from bench.reports import build_report

        out_dir = build_report(results, out=out)
        console.print(f"[green]report[/green] -> {Path(out_dir) / 'index.md'}")
    console.print(f"[green]demo finished[/green] in {time.perf_counter() - t0:.0f} s; results under {results}/")
