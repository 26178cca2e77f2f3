"""``bench report``: Tables 3-8 (+ paired comparison), figures and index.md from a results folder;
``--external NAME=PRED_DIR`` adds another tool's 3-D predictions (nnU-Net, ...) to Tables 7/8 and the
paired comparison (`bench.reports.external`); ``--check GOLDEN`` compares freshly built tables with
committed golden tables (CI)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from bench.cli import app


@app.command("report")
def report(
    results: Optional[str] = typer.Option(None, "--results", help="results folder (default: results; "
                                          "with --check: run the golden manifest's command instead)"),
    tables: str = typer.Option("3-8", "--tables", help="e.g. 3-8, 3,5,7 or 7"),
    format: str = typer.Option("md,csv,tex", "--format", help="any of md, csv, tex"),
    out: Optional[str] = typer.Option(None, "--out", help="report folder (default RESULTS/report)"),
    aggregation: str = typer.Option("mean", "--aggregation", help="mean (over cases) | global (summed counts)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="data set to report (default: the one with most runs)"),
    profile: Optional[str] = typer.Option(None, "--profile", help="profile to report (default: the one with most runs)"),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="draw Figs. 16-18 and the Dice box plots"),
    check: Optional[str] = typer.Option(None, "--check", help="golden folder to compare with (e.g. results/golden)"),
    update_golden: bool = typer.Option(False, "--update-golden", help="with --check: rewrite the golden tables"),
    external: Optional[List[str]] = typer.Option(None, "--external", help="NAME=PRED_DIR (repeatable): score a "
                                                 "folder of 3-D label maps (nnU-Net, LiTS or identical names) on the "
                                                 "runs' val/test patients; added to Tables 7/8 and the paired table"),
) -> None:
    """Write the paper's tables (md/csv/tex), figures and index.md; or check them against golden tables."""
    from bench.errors import ConfigError
    from bench.reports.select import ReportOptions
    from bench.reports.tables import parse_table_spec
    from bench.reports.writers import parse_formats

    console = Console()
    if update_golden and check is None:
        raise ConfigError("--update-golden needs --check GOLDEN_DIR (the folder to rewrite)")
    if external and check is not None:
        raise ConfigError("--external is not part of the golden check (--check compares our own runs only)")
    options = ReportOptions(aggregation=aggregation, dataset=dataset, profile=profile)
    numbers = parse_table_spec(tables)
    if check is not None:
        _check(console, Path(check), results, numbers, options, update_golden)
        return
    from bench.reports.collect import load_results
    from bench.reports.report import write_report

    root = Path(results or "results")
    out_dir = Path(out) if out else root / "report"
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
    """Build the golden tables (from --results, else by running the manifest's command) and compare/update."""
    from bench.reports.collect import load_results
    from bench.reports.golden import (DEFAULT_COMMAND, MANIFEST, compare_tables, read_manifest, run_golden_command,
                                      write_golden)
    from bench.reports.select import ReportOptions
    from bench.reports.tables import build_tables

    manifest = read_manifest(golden_dir) if (golden_dir / MANIFEST).is_file() or not update else None
    command = manifest["command"] if manifest else DEFAULT_COMMAND
    if manifest and not update:
        options = ReportOptions(**manifest.get("report_options", {}))
        numbers = [int(n) for n in manifest["tables"]]
    with tempfile.TemporaryDirectory(prefix="bench-golden-") as tmp:
        if results is not None:
            root, source = Path(results), f"tables built from --results {results}"
        else:
            root = Path(tmp) / "results"
            console.print(f"golden: running {command.replace('{results}', str(root))}", highlight=False)
            source = f"ran: {run_golden_command(command, root)}"
        built = build_tables(load_results(root), numbers, options, with_paired=False)
    if update:
        opts = {"aggregation": options.aggregation, "dataset": options.dataset, "profile": options.profile}
        files = write_golden(golden_dir, built, command=command, report_options=opts, source=source,
                             tolerances=manifest["tolerances"] if manifest else None)
        console.print(f"[yellow]golden updated[/yellow]: {len(files)} files in {golden_dir} ({source})",
                      highlight=False, soft_wrap=True)
        return
    mismatches = compare_tables(golden_dir, built)
    n_cells = sum(len(t.frame) for t in built)
    if mismatches:
        for m in mismatches:
            console.print(f"[red]MISMATCH[/red] {m}", highlight=False, soft_wrap=True)
        console.print(f"[red]golden check failed[/red]: {len(mismatches)} difference(s) outside tolerance in "
                      f"{n_cells} cells vs {golden_dir}", highlight=False)
        raise typer.Exit(1)
    console.print(f"[green]golden check OK[/green]: {n_cells} cells of tables "
                  f"{','.join(str(n) for n in numbers)} within tolerance of {golden_dir}", highlight=False)
