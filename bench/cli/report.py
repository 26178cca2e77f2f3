"""``bench report``: Tables 3-8 (+ paired and post-processing comparisons, patch ablations), figures and
index.md from a results folder;
``--external NAME=PRED_DIR`` adds another tool's 3-D predictions (nnU-Net, ...) to Tables 7/8 and the
paired comparison (`bench.reports.external`). ``--check GOLDEN`` / ``--update-golden`` / ``--calibrate
LAYER`` are aliases of ``bench check`` (`bench.cli.check`), kept for the scripts that use them."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from bench.cli import app
from bench.atomic import staged_dir
from bench.cli.paths_check import writable_dir
from bench.errors import ConfigError
from bench.paths import default_results_root


@app.command("report")
def report(
    results: Optional[str] = typer.Option(None, "--results", help="results folder (default: $BENCH_RESULTS, else results; with "
                                          "--check on one layer: use these results instead of building them)"),
    tables: str = typer.Option("3-8", "--tables", help="e.g. 3-8, 3,5,7 or 7, and table names: {tables} "
                               "(bench ls tables)"),
    format: str = typer.Option("md,csv,tex", "--format", help="any of md, csv, tex"),
    out: Optional[str] = typer.Option(None, "--out", help="report folder (default RESULTS/report)"),
    aggregation: str = typer.Option("mean", "--aggregation", help="mean (over cases) | global (summed counts)"),
    scores: str = typer.Option("post", "--scores", help="post (after the one post-processing rule, default) | raw"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="data set to report (default: the one with most runs)"),
    profile: Optional[str] = typer.Option(None, "--profile", help="profile to report (default: the one with most runs)"),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="draw Figs. 16-18 and the Dice box plots"),
    check: Optional[str] = typer.Option(None, "--check", help="alias of bench check GOLDEN: compare with golden tables, exit 1 on any difference"),
    update_golden: bool = typer.Option(False, "--update-golden", help="with --check: rewrite the golden tables "
                                       "of the layer(s)"),
    calibrate: Optional[str] = typer.Option(None, "--calibrate", help="training golden layer folder (e.g. "
                                            "results/golden/train): run its study under every --seeds x --kernels x "
                                            "--threads condition, derive per-column tolerances and unstable cells "
                                            "from the spread, rewrite the layer"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="with --calibrate: seeds (default 0,1,2)"),
    threads: Optional[str] = typer.Option(None, "--threads", help="with --calibrate: threads per run (default 1,2)"),
    kernels: Optional[str] = typer.Option(None, "--kernels", help="with --calibrate: CPU kernel sets, any of native, "
                                          "avx2, default (default native,avx2)"),
    command: Optional[str] = typer.Option(None, "--command", help="with --calibrate: the study command, with "
                                          "{results} (default: the layer manifest's)"),
    external: Optional[List[str]] = typer.Option(None, "--external", help="NAME=PRED_DIR (repeatable): score a "
                                                 "folder of 3-D label maps (nnU-Net, LiTS or identical names) on the "
                                                 "runs' val/test patients; added to Tables 7/8 and the paired table"),
) -> None:
    """Write the paper's tables (md/csv/tex), figures and index.md (--check/--calibrate: aliases of bench check)."""
    if check is not None or calibrate is not None or update_golden or any(
            v is not None for v in (seeds, threads, kernels, command)):
        from bench.cli.check import golden_alias  # lazy: at the top it would register `check` before `report` (bench --help order)

        golden_alias(check=check, calibrate=calibrate, update_golden=update_golden, results=results, seeds=seeds,
                     threads=threads, kernels=kernels, command=command, tables=tables, external=external,
                     options={"aggregation": aggregation, "dataset": dataset, "profile": profile, "scores": scores})
        return
    _write(results, tables, format, out, {"aggregation": aggregation, "dataset": dataset, "profile": profile,
                                          "scores": scores}, figures, external)


def _write(results: Optional[str], tables: str, format: str, out: Optional[str], selection: dict,
           figures: bool, external: Optional[List[str]]) -> None:
    """The report itself: collect the results (and any external predictions), write tables, figures, index.md."""
    # the report's modules (pandas, matplotlib) stay out of `bench --help`
    from bench.reports.collect import load_results  # lazy: pandas, torch
    from bench.reports.report import write_report  # lazy: pandas, torch
    from bench.reports.select import ReportOptions  # lazy: pandas, torch
    from bench.reports.tables import parse_table_spec  # lazy: pandas, torch
    from bench.reports.writers import parse_formats  # lazy: pandas, torch

    console = Console()
    options = ReportOptions(**selection)
    root = Path(results or default_results_root())
    out_dir = writable_dir(out, "--out") if out else writable_dir(root / "report", "--results")
    numbers = parse_table_spec(tables)
    formats = parse_formats(format)
    collected = load_results(root)
    if external:
        # another tool's scores are written under the report folder and their paths recorded in the tables, so
        # this report is written in place (not staged in a temporary folder)
        from bench.reports.external import add_externals  # lazy: pandas, torch

        collected = add_externals(collected, external, options, out_dir)
        for ext in collected.externals:
            scored = ", ".join(f"{s} {n}" for s, n in ext.n_cases.items())
            console.print(f"[green]external[/green] {ext.label}: {ext.folder} scored on {scored} patient(s) -> "
                          f"{ext.out_dir}", highlight=False, soft_wrap=True)
        rep = write_report(collected, out_dir, numbers, formats, options, figures=figures)
        index, n_tables, n_figures = rep.index, len(rep.tables), len(rep.figures)
    else:
        _replaceable(out_dir, "--out" if out else "--results")
        with staged_dir(out_dir) as stage:  # an interrupted report leaves the old folder or none, never a part
            rep = write_report(collected, stage, numbers, formats, options, figures=figures)
        index, n_tables, n_figures = out_dir / rep.index.name, len(rep.tables), len(rep.figures)
    missing = sum(int((t.frame["status"] == "missing").sum()) for t in rep.tables)
    console.print(f"[green]report[/green] {n_tables} tables ({format}), {n_figures} figures -> "
                  f"{index}" + (f"  ({missing} cells without a run: see the notes)" if missing else ""),
                  highlight=False, soft_wrap=True)


def _replaceable(out_dir: Path, flag: str) -> None:
    """The report replaces its folder as a whole: refuse a folder that holds anything but an earlier report
    (no index.md), and the current folder or one above it."""
    here = Path.cwd().resolve()
    if out_dir.resolve() in (here, *here.parents):
        raise ConfigError(f"{flag} {out_dir}: is the current folder or above it; name a report folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "index.md").is_file():
        raise ConfigError(f"{flag} {out_dir}: exists and is not a report folder (no index.md); the report replaces "
                          f"its folder as a whole, so name a new folder or an earlier report's")
