"""``bench check GOLDEN``: compare freshly built tables with the committed golden tables (CI's regression);
``--update-golden`` rewrites them; ``--calibrate`` reruns a training layer's study under several seeds,
kernel sets and thread counts and rewrites its tables and calibrated tolerances (`bench.golden`).

``bench report --check`` / ``--update-golden`` / ``--calibrate`` are aliases kept for scripts: they
call `golden_alias`, which runs the same code as this verb."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from bench.cli import app
from bench.cli.common import parse_int_list
from bench.cli.paths_check import writable_dir
from bench.errors import ConfigError

CALIBRATION_FLAGS = ("--seeds", "--threads", "--kernels", "--command")


@app.command("check")
def check(
    golden: str = typer.Argument(..., help="golden folder: results/golden checks every layer (exact, train), "
                                 "results/golden/exact one; exit 1 on any difference"),
    results: Optional[str] = typer.Option(None, "--results", help="one layer: use these results instead of "
                                          "building them"),
    update_golden: bool = typer.Option(False, "--update-golden", help="rewrite the golden tables of the layer(s)"),
    calibrate: bool = typer.Option(False, "--calibrate", help="GOLDEN is a training layer (e.g. results/golden/train): "
                                   "run its study under every --seeds x --kernels x --threads condition, derive "
                                   "per-column tolerances and unstable cells from the spread, rewrite the layer"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="with --calibrate: seeds (default 0,1,2)"),
    threads: Optional[str] = typer.Option(None, "--threads", help="with --calibrate: threads per run (default 1,2)"),
    kernels: Optional[str] = typer.Option(None, "--kernels", help="with --calibrate: CPU kernel sets, any of native, "
                                          "avx2, default (default native,avx2)"),
    command: Optional[str] = typer.Option(None, "--command", help="with --calibrate: the study command, with "
                                          "{results} (default: the layer manifest's)"),
    tables: str = typer.Option("3-8", "--tables", help="a training layer written without a calibration: its tables"),
    aggregation: str = typer.Option("mean", "--aggregation", help="a training layer written without a calibration: "
                                    "mean (over cases) | global"),
) -> None:
    """Check the tables against golden tables (exit 1 on a difference), rewrite them, or calibrate a training layer."""
    golden_alias(check=None if calibrate else golden, calibrate=golden if calibrate else None,
                 update_golden=update_golden, results=results, seeds=seeds, threads=threads, kernels=kernels,
                 command=command, tables=tables, options={"aggregation": aggregation, "dataset": None,
                                                          "profile": None, "scores": "post"})


def golden_alias(*, check: Optional[str], calibrate: Optional[str], update_golden: bool, results: Optional[str],
                 seeds: Optional[str], threads: Optional[str], kernels: Optional[str], command: Optional[str],
                 tables: str, options: dict[str, Any], external: Any = None) -> None:
    """The golden check as `bench check` and `bench report --check/--calibrate` call it: flags checked, then
    one layer's (or every layer's) check, update or calibration."""
    from bench.reports.tables import parse_table_spec  # lazy: pandas, torch

    given = [flag for flag, value in zip(CALIBRATION_FLAGS, (seeds, threads, kernels, command)) if value is not None]
    if given and calibrate is None:
        raise ConfigError(f"{given[0]} is a calibration option; it needs --calibrate")
    numbers = parse_table_spec(tables)
    if calibrate is not None:
        if check is not None or external or results is not None or update_golden:
            raise ConfigError("--calibrate runs the layer's study itself; it takes no --check, --results, "
                              "--update-golden or --external")
        _calibrate(Console(), calibrate, seeds, threads, kernels, command, numbers, options["aggregation"])
        return
    if check is None:
        raise ConfigError("--update-golden needs the golden folder to rewrite (bench check GOLDEN_DIR --update-golden)")
    if external:
        raise ConfigError("--external is not part of the golden check (--check compares our own runs only)")
    if update_golden:
        writable_dir(check, "--check")
    _check(Console(), Path(check), results, numbers, options, update_golden)


def _check(console: Console, golden_dir: Path, results: Optional[str], numbers: list[int],
           options: dict[str, Any], update: bool) -> None:
    """Check (or rewrite) every golden layer under ``golden_dir``, or the one layer it is.

    Mismatch lines first, then one verdict line per layer; exit status 1 when any layer differs.
    """
    from bench.golden.check import check_layer  # lazy: pandas, torch
    from bench.golden.manifest import find_layers  # lazy: pandas, torch

    layers = find_layers(golden_dir, update=update)
    if results is not None and len(layers) > 1:
        raise ConfigError(f"--results gives one layer's results; name the layer folder "
                          f"({', '.join(str(p) for p in layers)}), not {golden_dir}")
    failed = []
    for folder in layers:
        out = check_layer(folder, results=results, update=update, numbers=numbers, options=dict(options),
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
    """``--calibrate``: run the layer's study under every condition and rewrite it (`bench.golden.calibrate`)."""
    from bench.golden.calibrate import DEFAULT_KERNELS, DEFAULT_SEEDS, DEFAULT_THREADS, calibrate_layer  # lazy: pandas, torch

    writable_dir(folder, "--calibrate")
    seed_list = parse_int_list(seeds, "--seeds") if seeds is not None else list(DEFAULT_SEEDS)
    thread_list = parse_int_list(threads, "--threads", "1,2") if threads is not None else list(DEFAULT_THREADS)
    kernel_list = [k.strip() for k in kernels.split(",") if k.strip()] if kernels is not None else list(DEFAULT_KERNELS)
    invocation = "bench " + shlex.join(sys.argv[1:]) if sys.argv[1:2] in (["check"], ["report"]) else (
        f"bench check {folder} --calibrate" + (f" --seeds {seeds}" if seeds else "")
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
