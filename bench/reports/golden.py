"""Golden tables: regenerate Tables 3-8 from a small deterministic run and compare them cell by cell.

A golden folder holds ``table3.csv`` ... ``table8.csv`` (the tidy cells written by the report)
and ``manifest.json``: the command that regenerates the results, the report options, and the
tolerance of every compared column *with the reason for it* (lm-eval / nnU-Net practice: a
tolerance without its origin is a number nobody dares to change). Golden files change only
through ``bench report --check DIR --update-golden``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from bench.atomic import write_json, write_text
from bench.errors import BenchError, DataError
from bench.reports.tables import TableResult

MANIFEST = "manifest.json"
# --workers is fixed: the thread count per run changes float summation order
DEFAULT_COMMAND = "bench demo --profile golden --results {results} --lesion-planes axial,coronal,sagittal --workers 2 --no-report"
KEY_COLUMNS = ("group", "row", "col_group", "col")
EXACT_COLUMNS = ("status",)  # compared for equality, always

_WHY_METRIC = (
    "the golden run is a tiny model (32x32 input, a few optimiser steps) trained on CPU; a different CPU, "
    "BLAS or thread count changes float summation order, which can flip a few boundary pixels whose "
    "probability sits near 0.5. At 32x32 a phantom liver covers ~150-250 pixels per slice, so a handful of "
    "flipped boundary pixels moves a case's Dice by ~0.01; 0.02 allows that while still catching a changed "
    "metric formula, a swapped split, a lost case or a broken model (each moves Dice by >= 0.05)"
)
DEFAULT_TOLERANCES: dict[str, dict[str, Any]] = {
    "ours": {"abs": 0.02, "why": _WHY_METRIC},
    "ours:accuracy": {"abs": 0.01, "why": "accuracy is dominated by the ~90% background voxels, so the same "
                      "boundary flips that move Dice by 0.02 move accuracy by well under 0.01"},
    "diff": {"abs": 0.02, "why": "ours - paper: the paper's value is a constant, so it moves exactly as 'ours'"},
    "diff:accuracy": {"abs": 0.01, "why": "ours - paper for accuracy: as 'ours:accuracy'"},
    "sd": {"abs": 0.02, "why": "sd over seeds is a difference of seed values, each within the 'ours' tolerance"},
    "paper": {"abs": 0.0, "why": "constants transcribed from the paper (bench/reports/paper.py): any change "
              "is an edit of the transcription and must be deliberate"},
    "n_cases": {"abs": 0, "why": "case counts follow from the seeded patient-level split: exact"},
    "n_excluded": {"abs": 0, "why": "cases with empty reference and empty prediction: a change means the "
                   "data, the split or the model's empty predictions changed"},
    "n_seeds": {"abs": 0, "why": "the number of runs behind a cell is fixed by the command: exact"},
}


@dataclass(frozen=True)
class Mismatch:
    """One golden cell that differs from the regenerated one (or exists on one side only)."""

    table: str
    key: tuple[str, ...]
    column: str
    golden: Any
    new: Any
    tolerance: float | None = None

    def __str__(self) -> str:
        where = " / ".join(k for k in self.key if k)
        if self.column == "(cell)":
            return f"{self.table} [{where}]: {self.golden} in golden, {self.new} now"
        if self.tolerance is None:
            return f"{self.table} [{where}] {self.column}: golden {self.golden!r}, now {self.new!r}"
        g, n = _numeric(self.golden), _numeric(self.new)
        delta = "one side NaN" if math.isnan(g) != math.isnan(n) else f"|diff| {abs(n - g):.4g}"
        return (f"{self.table} [{where}] {self.column}: golden {g:.6g}, now {n:.6g} "
                f"({delta} > tol {self.tolerance:g})")


def read_manifest(golden_dir: str | os.PathLike) -> dict[str, Any]:
    """The golden folder's manifest.json (a DataError naming the file when absent or unreadable)."""
    path = Path(golden_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path} not found; create the golden tables with "
                        f"`bench report --check {golden_dir} --update-golden` (make golden)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as exc:
        raise DataError(f"{path}: unreadable manifest ({exc})") from None
    for key in ("command", "tables", "tolerances"):
        if key not in manifest:
            raise DataError(f"{path}: manifest lacks {key!r}")
    return manifest


def tolerance_for(tolerances: Mapping[str, Any], column: str, metric: str) -> float | None:
    """Tolerance of ``column`` for a cell of ``metric`` ("col:metric" beats "col"); None = not compared."""
    for key in (f"{column}:{metric}", column):
        if key in tolerances:
            spec = tolerances[key]
            return float(spec["abs"] if isinstance(spec, Mapping) else spec)
    return None


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Keys as strings ('' for empty), everything else numeric where it can be: CSV and memory compare alike."""
    f = frame.copy()
    for col in KEY_COLUMNS + ("metric",) + EXACT_COLUMNS:
        if col in f.columns:
            f[col] = f[col].fillna("").astype(str)
    return f


def _numeric(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def compare_frames(table: str, golden: pd.DataFrame, new: pd.DataFrame,
                   tolerances: Mapping[str, Any]) -> list[Mismatch]:
    """Cell-by-cell comparison of two tidy tables; NaN equals NaN, missing vs present is a mismatch."""
    g, n = _normalise(golden), _normalise(new)
    g_rows = {tuple(r[k] for k in KEY_COLUMNS): r for _, r in g.iterrows()}
    n_rows = {tuple(r[k] for k in KEY_COLUMNS): r for _, r in n.iterrows()}
    columns = sorted({key.split(":")[0] for key in tolerances})
    out: list[Mismatch] = []
    for key in list(g_rows) + [k for k in n_rows if k not in g_rows]:
        if key not in n_rows:
            out.append(Mismatch(table, key, "(cell)", "present", "absent"))
            continue
        if key not in g_rows:
            out.append(Mismatch(table, key, "(cell)", "absent", "present"))
            continue
        a, b = g_rows[key], n_rows[key]
        for col in EXACT_COLUMNS:
            if col in a and col in b and a[col] != b[col]:
                out.append(Mismatch(table, key, col, a[col], b[col]))
        metric = str(a.get("metric", ""))
        for col in columns:
            tol = tolerance_for(tolerances, col, metric)
            if tol is None or (col not in a and col not in b):
                continue
            x, y = _numeric(a.get(col)), _numeric(b.get(col))
            if math.isnan(x) and math.isnan(y):
                continue
            if math.isnan(x) or math.isnan(y) or abs(x - y) > tol + 1e-12:
                out.append(Mismatch(table, key, col, a.get(col), b.get(col), tol))
    return out


def _table_frames(new_tables: Mapping[str, pd.DataFrame] | Sequence[TableResult]) -> dict[str, pd.DataFrame]:
    if isinstance(new_tables, Mapping):
        return dict(new_tables)
    return {t.name: t.frame for t in new_tables}


def compare_tables(golden_dir: str | os.PathLike, new_tables: Mapping[str, pd.DataFrame] | Sequence[TableResult],
                   tolerances: Mapping[str, Any] | None = None) -> list[Mismatch]:
    """Compare the golden table CSVs named in the manifest with freshly built tables (name -> tidy frame)."""
    golden_dir = Path(golden_dir)
    manifest = read_manifest(golden_dir)
    tolerances = manifest["tolerances"] if tolerances is None else tolerances
    frames = _table_frames(new_tables)
    out: list[Mismatch] = []
    for number in manifest["tables"]:
        name = f"table{number}"
        path = golden_dir / f"{name}.csv"
        if not path.is_file():
            raise DataError(f"{path} is named in {golden_dir / MANIFEST} but does not exist")
        golden = pd.read_csv(path, keep_default_na=False, dtype=str)  # status "nan" stays a word
        if name not in frames:
            out.append(Mismatch(name, ("",), "(cell)", "table present", "table not built"))
            continue
        out += compare_frames(name, golden, frames[name], tolerances)
    return out


def _versions() -> dict[str, str]:
    import numpy

    import bench

    versions = {"python": platform.python_version(), "numpy": numpy.__version__, "pandas": pd.__version__,
                "bench": bench.__version__, "platform": platform.platform()}
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:
        versions["torch"] = "not installed"
    try:
        versions["git"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                         cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        versions["git"] = "unknown"
    return versions


def write_golden(golden_dir: str | os.PathLike, tables: Sequence[TableResult], *, command: str,
                 report_options: Mapping[str, Any], source: str,
                 tolerances: Mapping[str, Any] | None = None) -> list[Path]:
    """(Re)write the golden CSVs and manifest; only ``bench report --update-golden`` calls this."""
    golden_dir = Path(golden_dir)
    written = []
    numbers = []
    for t in tables:
        write_text(golden_dir / f"{t.name}.csv", t.frame.to_csv(index=False))
        written.append(golden_dir / f"{t.name}.csv")
        numbers.append(t.name.removeprefix("table"))
    manifest = {
        "command": command,
        "source": source,
        "tables": numbers,
        "report_options": dict(report_options),
        "tolerances": dict(tolerances or DEFAULT_TOLERANCES),
        "compare": {"keys": list(KEY_COLUMNS), "exact": list(EXACT_COLUMNS),
                    "rule": "NaN equals NaN; a cell present on one side only is a mismatch; "
                            "columns without a tolerance (runs, ci_*) are not compared"},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
    write_json(golden_dir / MANIFEST, manifest)
    return written + [golden_dir / MANIFEST]


def _bench_executable() -> str:
    """The ``bench`` script beside this interpreter (a venv not on PATH), else the one on PATH."""
    local = Path(sys.executable).parent / "bench"
    if local.is_file():
        return str(local)
    return shutil.which("bench") or "bench"


def run_golden_command(command: str, results_dir: str | os.PathLike, timeout: float | None = None) -> str:
    """Run the manifest's command with ``{results}`` replaced, on CPU; returns the command as run."""
    text = command.replace("{results}", shlex.quote(str(results_dir)))
    argv = shlex.split(text)
    if not argv:
        raise DataError("golden manifest command is empty")
    if argv[0] == "bench":
        argv[0] = _bench_executable()
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # the golden run is a CPU run on every machine
    try:
        proc = subprocess.run(argv, env=env, timeout=timeout)
    except FileNotFoundError:
        raise BenchError(f"golden command not found: {argv[0]} (from {text!r})") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"golden command timed out after {timeout} s: {text}") from None
    if proc.returncode != 0:
        raise BenchError(f"golden command failed with exit status {proc.returncode}: {text}")
    return text
