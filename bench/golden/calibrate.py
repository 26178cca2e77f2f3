"""Calibrate a training golden layer: run its study under every condition, derive its tolerances, rewrite it.

``bench check results/golden/train --calibrate [--seeds 0,1,2] [--threads 1,2] [--kernels native,avx2]``
runs the layer's command (its manifest's, or ``--command``) once per combination of

* **seed** - ``--seeds S`` on the command (the study must run one seed);
* **kernel set** - the CPU kernels PyTorch dispatches to: ``native`` (whatever the CPU offers; the
  variables below removed), ``avx2`` (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``),
  ``default`` (``ATEN_CPU_CAPABILITY=default``, no vector kernels);
* **threads per run** - the scheduler (`bench.engine.scheduler.execute`) gives ``--workers W > 1``
  worker processes ``cpu_count // W`` threads each, and runs ``--workers 1`` in the calling process
  with torch's default thread count (``OMP_NUM_THREADS`` when set). So T threads = ``--workers
  cpu_count // T`` (on 2 cores: 1 thread = ``--workers 2``, the manifest's command as CI runs it; 2
  threads = ``--workers 1``), with ``OMP_NUM_THREADS=MKL_NUM_THREADS=T`` when that is one worker. Every
  run's recorded thread count (config.json ``device``) is checked against T afterwards.

Each condition's results go to a temporary folder, become tables (the report code, as ``--check``
builds them) and are deleted. `bench.golden.spread` turns the tables into spreads,
tolerances and excluded cells. The layer is then rewritten: the golden CSVs are the *reference*
condition's tables (seed 0, native kernels, the manifest's command unchanged where the thread
count allows: exactly what ``bench check`` runs on this machine), the manifest gets the
tolerances, the excluded cells and a ``calibration`` record (command, conditions with their
kernel capability, threads and seconds, per-column spread and tolerance, constants, date,
versions), and ``calibration/cells.csv`` / ``spread.csv`` keep every condition's cells and every
cell's spread, so the tolerances can be recomputed without training again.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from bench.atomic import write_text
from bench.errors import BenchError, ConfigError
from bench.golden.manifest import MANIFEST, report_options, read_manifest, versions, write_golden
from bench.golden.spread import calibrate, summary_lines
from bench.golden.study import DEFAULT_COMMAND, GoldenStudy, parse_study
from bench.golden.train import run_study
from bench.reports.collect import load_results
from bench.reports.tables import build_tables

KERNEL_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
KERNEL_SETS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default"},
}
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_THREADS = (1, 2)
DEFAULT_KERNELS = ("native", "avx2")
CALIBRATION_DIR = "calibration"


@dataclass(frozen=True)
class Condition:
    """One way of running the study: the command as run and the environment it changes."""

    seed: int
    kernels: str
    threads: int
    study: GoldenStudy
    env: dict[str, str | None] = field(default_factory=dict)  # None = removed
    pinned: bool = True  # the thread count is set by the calibration (checked against each run's record)

    @property
    def name(self) -> str:
        return f"seed{self.seed}-{self.kernels}-{self.threads}t"

    @property
    def command(self) -> str:
        """The study as a command text, with {results} (what the calibration record shows)."""
        return self.study.command()


def _cores() -> int:
    return os.cpu_count() or 1


def conditions_for(command: str, seeds: Sequence[int], kernels: Sequence[str], threads: Sequence[int],
                   cores: int | None = None) -> list[Condition]:
    """Every (seed, kernel set, thread count) as a command and environment; the reference condition first.

    ``command`` is parsed into its study (`bench.golden.study`: validated fields, never executed as
    text); each condition is that study with its worker count and seed, rendered back to a command.
    """
    cores = cores or _cores()
    study = parse_study(command, "calibration command", exact=False, error=ConfigError)
    if study.seeds is not None and len(study.seeds) > 1:
        raise ConfigError(f"calibration varies the seed itself; the command must run one seed (it has --seeds "
                          f"{','.join(map(str, study.seeds))})")
    unknown = [k for k in kernels if k not in KERNEL_SETS]
    if unknown:
        raise ConfigError(f"--kernels: unknown kernel set {unknown[0]!r} (known: {', '.join(KERNEL_SETS)})")
    bad = [t for t in threads if t < 1 or t > cores]
    if bad:
        raise ConfigError(f"--threads {bad[0]}: this machine has {cores} core(s); a thread count must be 1..{cores}")
    if not seeds or not kernels or not threads:
        raise ConfigError("calibration needs at least one seed, one kernel set and one thread count")
    given_workers = study.workers if study.workers >= 1 else (2 if cores >= 2 else 1)  # 0: the scheduler's default
    own = study.command()
    out = []
    for seed in seeds:
        for kset in kernels:
            for t in threads:
                workers = max(1, cores // t)
                if given_workers > 1 and cores // given_workers == t:
                    workers = study.workers  # the manifest's own --workers gives these threads: keep it verbatim
                cond = study.with_condition(workers, seed if (seed != 0 or study.seeds is not None) else None)
                env: dict[str, str | None] = {v: KERNEL_SETS[kset].get(v) for v in KERNEL_VARS}
                # one worker runs in the calling process with torch's default thread count: pin it
                env.update({v: (str(t) if workers == 1 else None) for v in THREAD_VARS})
                out.append(Condition(seed, kset, t, cond, env))
    reference = next((c for c in out if c.seed == 0 and c.kernels == "native" and c.command == own), None)
    if reference is not None:
        out.remove(reference)
    else:  # the command's own thread count is not in the grid (a machine with more cores): run it as well
        threads_own = cores // given_workers if given_workers > 1 else cores
        reference = Condition(0, "native", threads_own, study, {v: None for v in KERNEL_VARS}, pinned=False)
    return [reference] + out


def kernel_capability(kset: str) -> str:
    """The CPU capability PyTorch reports under a kernel set (``AVX512``, ``AVX2``, ``DEFAULT``...)."""
    env = dict(os.environ)
    for v in KERNEL_VARS:
        env.pop(v, None)
    env.update(KERNEL_SETS[kset])
    proc = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                          capture_output=True, text=True, env=env, timeout=300)
    return proc.stdout.strip() or f"unknown ({proc.stderr.strip()[-200:]})"


_THREADS = re.compile(r",\s*(\d+) threads")


def recorded_threads(results: Path) -> dict[str, int]:
    """Run folder -> the thread count its config.json records (``device``: 'cpu: ..., N threads')."""
    out = {}
    for path in sorted(results.rglob("config.json")):
        try:
            device = str(json.loads(path.read_text()).get("device", ""))
        except (OSError, ValueError):
            continue
        match = _THREADS.search(device)
        if match:
            out[str(path.parent.relative_to(results))] = int(match.group(1))
    return out


def _layer_setup(folder: Path, command: str | None, numbers: Sequence[int], options: Mapping[str, Any] | None
                 ) -> tuple[str, list[int], dict[str, Any]]:
    """The study command, table numbers and report options: the layer's manifest's, else the arguments."""
    manifest = read_manifest(folder) if (folder / MANIFEST).is_file() else None
    if manifest is not None and manifest.get("layer", "train") != "train":
        raise ConfigError(f"{folder}: --calibrate is for a training layer; the {manifest['layer']} layer is compared "
                          f"exactly and has nothing to calibrate")
    command = command or (manifest["command"] if manifest else DEFAULT_COMMAND)
    if manifest is not None:
        numbers = [int(n) for n in manifest["tables"] if str(n).isdigit()]
        options = dict(manifest.get("report_options", {}))
    return command, list(numbers), dict(options or {"aggregation": "mean", "dataset": None, "profile": None})


def _run_condition(cond: Condition, tmp: Path, numbers: Sequence[int], options: Mapping[str, Any],
                   say: Callable[[str], None]) -> tuple[list, float, dict[str, int]]:
    """Run one condition's study, check its thread count, build its tables; returns (tables, seconds, threads)."""
    results, log = tmp / cond.name, tmp / f"{cond.name}.log"
    t0 = time.perf_counter()
    try:
        run_study(cond.study, results, env=cond.env, log=log)
    except BenchError:
        if log.is_file():
            say("\n".join(log.read_text(errors="replace").strip().splitlines()[-15:]))
        raise
    seconds = time.perf_counter() - t0
    ran = recorded_threads(results)
    wrong = {run: n for run, n in ran.items() if n != cond.threads and cond.pinned}
    if wrong:
        run, n = next(iter(wrong.items()))
        raise BenchError(f"calibration {cond.name}: run {run} recorded {n} threads, not {cond.threads}; "
                         f"the thread count could not be set on this machine")
    built = build_tables(load_results(results), list(numbers), report_options(options), with_paired=False)
    shutil.rmtree(results, ignore_errors=True)
    return built, seconds, ran


def _condition_record(cond: Condition, reference: bool, capability: str, seconds: float,
                      ran: Mapping[str, int]) -> dict[str, Any]:
    return {"name": cond.name, "reference": reference, "seed": cond.seed, "kernels": cond.kernels,
            "capability": capability, "threads": cond.threads, "threads_recorded": sorted(set(ran.values())),
            "command": cond.command, "env": {k: v for k, v in cond.env.items() if v is not None},
            "env_removed": sorted(k for k, v in cond.env.items() if v is None), "seconds": round(seconds, 1)}


def calibrate_layer(folder: str | Path, command: str | None = None, seeds: Sequence[int] = DEFAULT_SEEDS,
                    kernels: Sequence[str] = DEFAULT_KERNELS, threads: Sequence[int] = DEFAULT_THREADS,
                    numbers: Sequence[int] = (3, 4, 5, 6, 7), options: Mapping[str, Any] | None = None,
                    invocation: str = "", say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every condition, derive the calibration, rewrite the layer; returns the new manifest.

    ``command``/``numbers``/``options`` default to the layer's manifest (a layer without one: the
    arguments, then `bench.golden.train.DEFAULT_COMMAND`). ``invocation`` is the command line to
    record as how to rerun this calibration.
    """
    folder = Path(folder)
    command, numbers, options = _layer_setup(folder, command, numbers, options)
    cores = _cores()
    conditions = conditions_for(command, seeds, kernels, threads, cores)
    command = conditions[0].command  # the study's canonical text: what the layer's manifest records
    capabilities = {k: kernel_capability(k) for k in dict.fromkeys(kernels)}
    say(f"calibration: {len(conditions)} condition(s) of `{command}` "
        f"({len(seeds)} seed(s) x kernel sets {', '.join(f'{k} ({v})' for k, v in capabilities.items())} x "
        f"threads {', '.join(map(str, threads))}; {cores} cores)")
    same = [k for k in capabilities if list(capabilities.values()).count(capabilities[k]) > 1]
    if same:
        say(f"calibration: note: kernel sets {', '.join(same)} are the same kernels on this CPU "
            f"({capabilities[same[0]]}); add --kernels default for a second kernel set")
    tables: dict[str, dict[str, Any]] = {}
    records, reference_tables = [], None
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-golden-calibrate-") as tmp:
        for i, cond in enumerate(conditions, 1):  # conditions_for puts the reference first
            shown = " ".join(f"{k}={v}" for k, v in cond.env.items() if v is not None)
            say(f"calibration [{i}/{len(conditions)}] {cond.name}: {(shown + ' ') if shown else ''}"
                f"{cond.command.replace('{results}', str(Path(tmp) / cond.name))}")
            built, seconds, ran = _run_condition(cond, Path(tmp), numbers, options, say)
            tables[cond.name] = {t.name: t.frame for t in built}
            reference_tables = built if i == 1 else reference_tables
            records.append(_condition_record(cond, i == 1, capabilities[cond.kernels], seconds, ran))
            say(f"calibration [{i}/{len(conditions)}] {cond.name}: {seconds:.0f} s")
    cal, cells, spreads = calibrate(tables)
    for line in summary_lines(cal):
        say(line)
    calibration = {
        "command": invocation or f"bench check {folder.as_posix()} --calibrate",
        "study_command": command,
        "reference": conditions[0].name,
        "conditions": records,
        "machine": {"cores": cores, "capabilities": capabilities},
        "meets_minimum": {
            "value": bool(len(set(seeds)) >= 3 and len(set(capabilities.values())) >= 2 and {1, 2} <= set(threads)),
            "rule": ">= 3 seeds x >= 2 kernel sets that differ on this CPU x threads 1 and 2 (issue 10)"},
        **cal.constants,
        "column_spread": cal.column_spread,
        "n_cells": cal.n_cells,
        "files": {"cells": f"{CALIBRATION_DIR}/cells.csv", "spread": f"{CALIBRATION_DIR}/spread.csv"},
        "seconds": round(time.perf_counter() - t_all, 1),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }
    extra = {"layer": "train", "calibration": calibration, "excluded": cal.excluded,
             "update": f"{calibration['command']}  (rewrites the tables and the tolerances; "
                       f"bench check {folder.as_posix()} --update-golden rewrites the tables only)"}
    write_golden(folder, reference_tables, command=command, report_options=options,
                 source=f"calibration reference condition {conditions[0].name}: {command}",
                 tolerances=cal.tolerances, extra=extra)
    write_text(folder / CALIBRATION_DIR / "cells.csv", cells.to_csv(index=False))
    write_text(folder / CALIBRATION_DIR / "spread.csv", spreads.to_csv(index=False))
    return read_manifest(folder)
