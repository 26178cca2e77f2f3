"""``bench report``: Tables 3-8 (+ paired and post-processing comparisons, patch ablations), figures and
index.md from a results folder;
``--external NAME=PRED_DIR`` adds another tool's 3-D predictions (nnU-Net, ...) to Tables 7/8 and the
paired comparison (`bench.reports.external`); ``--check GOLDEN`` compares freshly built tables with
committed golden tables (CI); ``--calibrate LAYER`` reruns a training layer's study under several
seeds, kernel sets and thread counts and rewrites its tables and calibrated tolerances."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from bench.cli import app


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
    check: Optional[str] = typer.Option(None, "--check", help="golden folder: results/golden checks every layer "
                                        "(exact, train), results/golden/exact one; exit 1 on any difference"),
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
    """Write the paper's tables (md/csv/tex), figures and index.md; or check them against golden tables."""
    from bench.cli.paths_check import writable_dir
    from bench.errors import ConfigError
    from bench.reports.select import ReportOptions
    from bench.reports.tables import parse_table_spec
    from bench.reports.writers import parse_formats

    console = Console()
    given = [flag for flag, value in (("--seeds", seeds), ("--threads", threads), ("--kernels", kernels),
                                      ("--command", command)) if value is not None]
    if given and calibrate is None:
        raise ConfigError(f"{given[0]} is a calibration option; it needs --calibrate LAYER_DIR")
    if calibrate is not None:
        if check is not None or external or results is not None:
            raise ConfigError("--calibrate runs the layer's study itself; it takes no --check, --results or --external")
        _calibrate(console, calibrate, seeds, threads, kernels, command, parse_table_spec(tables), aggregation)
        return
    if update_golden and check is None:
        raise ConfigError("--update-golden needs --check GOLDEN_DIR (the folder to rewrite)")
    if external and check is not None:
        raise ConfigError("--external is not part of the golden check (--check compares our own runs only)")
    options = ReportOptions(aggregation=aggregation, dataset=dataset, profile=profile, scores=scores)
    numbers = parse_table_spec(tables)
    if check is not None:
        if update_golden:
            writable_dir(check, "--check")
        _check(console, Path(check), results, numbers, options, update_golden)
        return
    from bench.reports.collect import load_results
    from bench.reports.report import write_report

    from bench.paths import default_results_root

    root = Path(results or default_results_root())
    out_dir = writable_dir(out, "--out") if out else writable_dir(root / "report", "--results")
    formats = parse_formats(format)
    collected = load_results(root)
    if external:
        from bench.reports.external import add_externals

        collected = add_externals(collected, external, options, out_dir)
        for ext in collected.externals:
            scored = ", ".join(f"{s} {n}" for s, n in ext.n_cases.items())
            console.print(f"[green]external[/green] {ext.label}: {ext.folder} scored on {scored} patient(s) -> "
                          f"{ext.out_dir}", highlight=False, soft_wrap=True)
    rep = write_report(collected, out_dir, numbers, formats, options, figures=figures)
    missing = sum(int((t.frame["status"] == "missing").sum()) for t in rep.tables)
    console.print(f"[green]report[/green] {len(rep.tables)} tables ({format}), {len(rep.figures)} figures -> "
                  f"{rep.index}" + (f"  ({missing} cells without a run: see the notes)" if missing else ""),
                  highlight=False, soft_wrap=True)


def _check(console: Console, golden_dir: Path, results: Optional[str], numbers: list[int],
           options, update: bool) -> None:
    """Check (or rewrite) every golden layer under ``golden_dir``, or the one layer it is.

    Mismatch lines first, then one verdict line per layer; exit status 1 when any layer differs.
    """
    from rich.markup import escape

    from bench.engine.golden import check_layer
    from bench.errors import ConfigError
    from bench.reports.golden import find_layers

    layers = find_layers(golden_dir, update=update)
    if results is not None and len(layers) > 1:
        raise ConfigError(f"--results gives one layer's results; name the layer folder "
                          f"({', '.join(str(p) for p in layers)}), not {golden_dir}")
    opts = {"aggregation": options.aggregation, "dataset": options.dataset, "profile": options.profile,
            "scores": options.scores}
    failed = []
    for folder in layers:
        out = check_layer(folder, results=results, update=update, numbers=numbers, options=opts,
                          say=lambda text: console.print(escape(text), highlight=False, soft_wrap=True))
        what = f"{out.n_cells} cells (tables {', '.join(n.removeprefix('table') for n in out.names)})"
        if update:
            console.print(f"[yellow]golden updated ({out.layer} layer)[/yellow]: {len(out.updated)} files, {what} "
                          f"in {escape(str(folder))} ({escape(out.source)})", highlight=False, soft_wrap=True)
            continue
        for m in out.mismatches:
            console.print(f"[red]MISMATCH[/red] {out.layer}: {escape(str(m))}", highlight=False, soft_wrap=True)
        rule = ("equal to {} (counts exact, other numbers within 1e-9, text equal)" if out.layer == "exact"
                else "within tolerance of {}" + (f" ({out.excluded} unstable cell(s) not compared)"
                                                  if out.excluded else ""))
        if out.mismatches:
            failed.append(out)
            console.print(f"[red]golden check failed ({out.layer} layer)[/red]: {len(out.mismatches)} difference(s) "
                          f"in {what} vs {escape(str(folder))}", highlight=False, soft_wrap=True)
        else:
            console.print(f"[green]golden check OK ({out.layer} layer)[/green]: {what} {rule.format(escape(str(folder)))}",
                          highlight=False, soft_wrap=True)
    if failed:
        # the overall verdict is the one line on stderr; the per-layer lines above go to stdout
        n = sum(len(o.mismatches) for o in failed)
        Console(stderr=True).print(f"[red]golden check failed[/red]: {n} difference(s) in {len(failed)} of "
                                   f"{len(layers)} layer(s) of {escape(str(golden_dir))} "
                                   f"({', '.join(o.layer for o in failed)})", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _calibrate(console: Console, folder: str, seeds: Optional[str], threads: Optional[str], kernels: Optional[str],
               command: Optional[str], numbers: list[int], aggregation: str) -> None:
    """``--calibrate``: run the layer's study under every condition and rewrite it (`bench.engine.golden_calibrate`)."""
    import shlex
    import sys

    from rich.markup import escape

    from bench.cli.common import parse_int_list
    from bench.cli.paths_check import writable_dir
    from bench.engine.golden_calibrate import DEFAULT_KERNELS, DEFAULT_SEEDS, DEFAULT_THREADS, calibrate_layer

    writable_dir(folder, "--calibrate")
    seed_list = parse_int_list(seeds, "--seeds") if seeds is not None else list(DEFAULT_SEEDS)
    thread_list = parse_int_list(threads, "--threads", "1,2") if threads is not None else list(DEFAULT_THREADS)
    kernel_list = [k.strip() for k in kernels.split(",") if k.strip()] if kernels is not None else list(DEFAULT_KERNELS)
    invocation = "bench " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["report"] else (
        f"bench report --calibrate {folder}" + (f" --seeds {seeds}" if seeds else "")
        + (f" --threads {threads}" if threads else "") + (f" --kernels {kernels}" if kernels else "")
        + (f" --command {shlex.quote(command)}" if command else ""))
    manifest = calibrate_layer(folder, command=command, seeds=seed_list, kernels=kernel_list, threads=thread_list,
                               numbers=numbers, options={"aggregation": aggregation, "dataset": None, "profile": None},
                               invocation=invocation,
                               say=lambda text: console.print(escape(text), highlight=False, soft_wrap=True))
    cal = manifest["calibration"]
    console.print(f"[yellow]golden calibrated (train layer)[/yellow]: {len(cal['conditions'])} conditions, "
                  f"{len(manifest['excluded'])} unstable cell(s) excluded, tolerances and tables rewritten in "
                  f"{escape(str(folder))} ({cal['seconds']:.0f} s)", highlight=False, soft_wrap=True)
