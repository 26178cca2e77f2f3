"""Golden tables: rebuild the tables of a golden *layer* and compare them cell by cell.

``results/golden/`` holds one folder per layer (``exact``, ``train``), each with its tidy table
CSVs (``table3.csv`` ... written by the report; the exact layer also ``paired.csv`` and the
per-case/per-run frames ``cases.csv``/``metrics.csv``) and its own ``manifest.json``: the layer,
how its results are built, the report options, and the tolerance of every compared column *with
the reason for it* (lm-eval / nnU-Net practice: a tolerance without its origin is a number nobody
dares to change). Golden files change only through ``bench report --check DIR --update-golden`` and,
for a training layer, ``bench report --calibrate DIR``.

* exact layer: every column is compared (``"*"`` in its tolerances): counts exactly, every other
  number to 1e-9 absolute, every text (status, runs, metric) exactly; a column or cell on one
  side only is a mismatch. Built by `bench.engine.golden` from committed inputs, no training.
* train layer: the columns named in its tolerances, with tolerances calibrated from the spread of the
  study over seeds, kernel sets and thread counts (`bench.reports.golden_calibrate`); the cells the
  calibration found unstable (``excluded`` in the manifest, each with its reason and spread) must
  exist but are not compared.
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
from typing import Any, Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from bench.atomic import write_json, write_text
from bench.errors import BenchError, DataError
from bench.reports.tables import TableResult

MANIFEST = "manifest.json"
LAYERS = ("exact", "train")  # each a folder under results/golden/ with its own manifest.json
# --workers is fixed: the thread count per run changes float summation order
DEFAULT_COMMAND = ('bench demo --profile golden --models unet,ours --planes axial --tasks liver --ablations "" '
                   '--budget epochs --workers 2 --no-report --results {results}')
KEY_COLUMNS = ("group", "row", "col_group", "col")
EXACT_COLUMNS = ("status",)  # compared for equality, always

_WHY_METRIC = (
    "uncalibrated default of a training layer written from one run (--update-golden on a folder without a "
    "calibration): a converged model's case Dice moves by ~0.01 when a different CPU, kernel set or thread "
    "count flips boundary pixels; 0.02 allows that while still catching a broken model, a swapped split or a "
    "lost case (each moves Dice by >= 0.05). `bench report --calibrate DIR` replaces it with a tolerance "
    "measured over seeds, kernel sets and thread counts"
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


# The exact layer: tables 3-8 with their companions (the patch ablations, the paired and post-processing
# comparisons: `bench.reports.tables.table_names`) and the per-case / per-run frames.
EXACT_NAMES = ("3", "patch-mode", "4", "5", "patch-scale", "6", "7", "8", "lesion-detection", "paired", "postprocess",
               "cases", "metrics", "runs")
_WHY_EXACT_FLOAT = (
    "the exact layer involves no training: the same committed integer labels and float16 probabilities go "
    "through the same thresholding, post-processing and integer counting on every machine, so counts are "
    "identical and every other number is a few float64 operations on them (divisions, means over <= 8 cases, "
    "a seeded bootstrap). Those can differ only in the last bits (summation order of a numpy/pandas build, "
    "~1e-16 relative), which can at most flip the 10th significant digit metrics.csv stores (~1e-10); 1e-9 "
    "absorbs that, while the smallest real change, one voxel of a 9216-voxel case, moves a case's accuracy by "
    "1.1e-4 and a mean over 3 cases by 3.6e-5, more than four orders of magnitude above the tolerance"
)
EXACT_TOLERANCES: dict[str, dict[str, Any]] = {
    "*": {"abs": 1e-9, "why": _WHY_EXACT_FLOAT + "; text columns (status, runs, metric, split) must be equal"},
    **{c: {"abs": 0, "why": "integer voxel counts of fixed inputs: exact"} for c in ("tp", "fp", "fn", "tn")},
    "n_cases": {"abs": 0, "why": "cases per split follow from the committed split file: exact"},
    "n_excluded": {"abs": 0, "why": "empty-reference-and-prediction cases (the NaN rule) of fixed inputs: exact"},
    "n_seeds": {"abs": 0, "why": "runs behind a cell are fixed by the inputs: exact"},
    "paper": {"abs": 0.0, "why": "constants transcribed from the paper (bench/reports/paper.py): any change "
              "is an edit of the transcription and must be deliberate"},
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
        if self.column in ("(cell)", "(key)"):
            return f"{self.table} [{where}]: {self.golden} in golden, {self.new} now"
        if not self.key or not any(self.key):  # a whole column or table
            return f"{self.table} {self.column}: {self.golden} in golden, {self.new} now"
        if self.tolerance is None:
            return f"{self.table} [{where}] {self.column}: golden {self.golden!r}, now {self.new!r}"
        g, n = _numeric(self.golden), _numeric(self.new)
        delta = "one side NaN" if math.isnan(g) != math.isnan(n) else f"|diff| {abs(n - g):.4g}"
        digits = 6 if self.tolerance >= 1e-6 else 15  # enough to see a 1e-9 difference
        return (f"{self.table} [{where}] {self.column}: golden {g:.{digits}g}, now {n:.{digits}g} "
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
    if manifest.get("layer", "train") not in LAYERS:
        raise DataError(f"{path}: unknown layer {manifest['layer']!r} (known: {', '.join(LAYERS)})")
    return manifest


def layer_kind(manifest: Mapping[str, Any] | None, folder: str | os.PathLike) -> str:
    """``exact`` or ``train``: the manifest says; a folder without one is exact when it holds ``inputs/``."""
    if manifest is not None:
        return str(manifest.get("layer", "train"))
    return "exact" if (Path(folder) / "inputs").is_dir() else "train"


def find_layers(golden_dir: str | os.PathLike, update: bool = False) -> list[Path]:
    """The layer folders to check: ``golden_dir`` itself when it is one, else its sub-folders that are.

    A folder is a layer when it holds manifest.json (or, with ``update``, an exact layer's ``inputs/``
    whose golden tables are still to be written).
    """
    root = Path(golden_dir)

    def is_layer(folder: Path) -> bool:
        return (folder / MANIFEST).is_file() or (update and (folder / "inputs").is_dir())

    if is_layer(root):
        return [root]
    layers = sorted(p for p in root.iterdir() if p.is_dir() and is_layer(p)) if root.is_dir() else []
    if layers:
        return layers
    if update and not root.exists():
        return [root]  # a new training layer at this path
    raise DataError(f"{root / MANIFEST} not found, nor a layer folder with one below {root}; create the golden "
                    f"tables with `bench report --check {root} --update-golden` (make golden)")


def tolerance_for(tolerances: Mapping[str, Any], column: str, metric: str) -> float | None:
    """Tolerance of ``column`` for a cell of ``metric`` ("col:metric" beats "col" beats "*"); None = not compared."""
    for key in (f"{column}:{metric}", column, "*"):
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


def _number_or_none(value: Any) -> float | None:
    """A float for numbers and blanks (NaN), None for text: decides how a cell is compared."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "nan", "NaN")):
        return math.nan
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    return "" if _number_or_none(value) is not None and math.isnan(_number_or_none(value)) else str(value)


def compare_frames(table: str, golden: pd.DataFrame, new: pd.DataFrame,
                   tolerances: Mapping[str, Any], exact: Sequence[str] = EXACT_COLUMNS,
                   excluded: Collection[tuple[str, ...]] = ()) -> list[Mismatch]:
    """Cell-by-cell comparison of two tidy tables; NaN equals NaN, missing vs present is a mismatch.

    Compared: the ``exact`` columns for equality, and the columns named in ``tolerances`` within their
    tolerance. With a ``"*"`` tolerance every other column is compared too: numbers within the
    tolerance, text for equality, and a column present on one side only is a mismatch. ``excluded``
    cells (keys a calibration found unstable) must still exist on both sides, but none of their
    values or their status is compared.
    """
    g, n = _normalise(golden), _normalise(new)
    out: list[Mismatch] = []
    for side, frame in (("golden", g), ("now", n)):
        present = [k for k in KEY_COLUMNS if k in frame.columns]
        dup = frame[frame.duplicated(present, keep="first")] if present else frame.iloc[:0]
        for _, r in dup.iterrows():
            key = tuple(r[k] for k in present)
            out.append(Mismatch(table, key, "(key)", "duplicate key" if side == "golden" else "unique key",
                                "duplicate key" if side == "now" else "unique key"))
    g_rows = {tuple(r[k] for k in KEY_COLUMNS): r for _, r in g.iterrows()}
    n_rows = {tuple(r[k] for k in KEY_COLUMNS): r for _, r in n.iterrows()}
    columns = sorted({key.split(":")[0] for key in tolerances} - {"*"})
    if "*" in tolerances:
        skip = set(KEY_COLUMNS) | set(exact)
        both = [c for c in dict.fromkeys(list(g.columns) + list(n.columns)) if c not in skip]
        for c in both:
            if (c in g.columns) != (c in n.columns):
                out.append(Mismatch(table, (), c, "column present" if c in g.columns else "column absent",
                                    "column present" if c in n.columns else "column absent"))
        columns = [c for c in both if c in g.columns and c in n.columns]
    for key in list(g_rows) + [k for k in n_rows if k not in g_rows]:
        if key not in n_rows:
            out.append(Mismatch(table, key, "(cell)", "present", "absent"))
            continue
        if key not in g_rows:
            out.append(Mismatch(table, key, "(cell)", "absent", "present"))
            continue
        if key in excluded:
            continue
        a, b = g_rows[key], n_rows[key]
        for col in exact:
            if col in a and col in b and a[col] != b[col]:
                out.append(Mismatch(table, key, col, a[col], b[col]))
        metric = str(a.get("metric", ""))
        for col in columns:
            tol = tolerance_for(tolerances, col, metric)
            if tol is None or (col not in a and col not in b):
                continue
            if "*" in tolerances and (_number_or_none(a.get(col)) is None or _number_or_none(b.get(col)) is None):
                if _text(a.get(col)) != _text(b.get(col)):
                    out.append(Mismatch(table, key, col, _text(a.get(col)), _text(b.get(col))))
                continue
            x, y = _numeric(a.get(col)), _numeric(b.get(col))
            if math.isnan(x) and math.isnan(y):
                continue
            if math.isnan(x) or math.isnan(y) or abs(x - y) > tol + 1e-12:
                out.append(Mismatch(table, key, col, a.get(col), b.get(col), tol))
    return out


def excluded_keys(manifest: Mapping[str, Any]) -> dict[str, set[tuple[str, ...]]]:
    """The manifest's excluded cells as table name -> set of key tuples (what `compare_frames` skips)."""
    out: dict[str, set[tuple[str, ...]]] = {}
    for entry in manifest.get("excluded", []) or []:
        try:
            table, key = str(entry["table"]), tuple(str(k) for k in entry["key"])
        except (KeyError, TypeError):
            raise DataError(f"golden manifest: an excluded cell needs 'table' and 'key' (got {entry!r})") from None
        if len(key) != len(KEY_COLUMNS):
            raise DataError(f"golden manifest: excluded cell {table} {list(key)} needs {len(KEY_COLUMNS)} key parts "
                            f"({', '.join(KEY_COLUMNS)})")
        out.setdefault(table, set()).add(key)
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
    exact = tuple(manifest.get("compare", {}).get("exact", EXACT_COLUMNS))
    excluded = excluded_keys(manifest)
    frames = _table_frames(new_tables)
    out: list[Mismatch] = []
    names = [table_name(entry) for entry in manifest["tables"]]
    for name in names:
        path = golden_dir / f"{name}.csv"
        if not path.is_file():
            raise DataError(f"{path} is named in {golden_dir / MANIFEST} but does not exist")
        golden = pd.read_csv(path, keep_default_na=False, dtype=str)  # status "nan" stays a word
        if name not in frames:
            out.append(Mismatch(name, (), "(table)", "present", "not built"))
            continue
        out += compare_frames(name, golden, frames[name], tolerances, exact, excluded.get(name, set()))
    if "*" in tolerances:  # the exact layer: a table built but not in golden is a difference too
        out += [Mismatch(name, (), "(table)", "absent", "built") for name in frames if name not in names]
    return out


def table_name(entry: Any) -> str:
    """A manifest ``tables`` entry as a file stem: "7" -> "table7", "paired" -> "paired"."""
    text = str(entry)
    return f"table{text}" if text.isdigit() else text


# run-level columns of the ``runs`` frame: what each run is and what it spent (paths and fingerprints left out:
# they differ between machines or change with any new config default)
RUN_FRAME_COLUMNS = ("model", "task", "plane", "tag", "seed", "profile", "patch_levels", "multilevel_loss",
                     "reiter_stop", "max_reiterations", "patch_mode", "patch_scale", "patch_share", "reiter_lr_scale",
                     "liver_prior", "postprocess", "budget_rule", "budget_steps", "budget_epochs", "budget_seconds",
                     "budget_stages", "budget_matched_to", "budget_reference", "has_metrics", "has_per_case",
                     "has_reiteration")


def result_frames(results: Any) -> list[TableResult]:
    """The collected per-case rows, per-run metrics and runs as tidy keyed frames (exact-layer golden files).

    ``cases``: one row per (run, case, split, class) with TP/FP/FN/TN and every per-case score;
    ``metrics``: one row per (run, split, aggregation, metric) with value, n_cases, n_excluded; ``runs``:
    one row per run with its ablated fields, post-processing and training budget (`RUN_FRAME_COLUMNS`).
    They pin what the tables do not show (foreground IoU, surface metrics, the global reduction, each
    case's counts, the budgets behind the tables' provenance).
    """
    from bench.reports.collect import CONFIG_COLUMNS

    out = []
    run_cols = [c for c in CONFIG_COLUMNS if c != "run_id"]
    for name, frame, keys in (("cases", results.per_case, ("run_id", "case", "split", "class")),
                              ("metrics", results.metrics, ("run_id", "split", "aggregation", "metric"))):
        f = frame.drop(columns=[c for c in run_cols if c in frame.columns] + (["class"] if name == "metrics" else []))
        if "variant" in f.columns:  # post-processed and raw scores of one run are separate rows
            f = f.assign(run_id=f["run_id"] + " [" + f["variant"] + "]").drop(columns=["variant"])
        f = f.rename(columns=dict(zip(keys, KEY_COLUMNS)))
        rest = [c for c in f.columns if c not in KEY_COLUMNS]
        f = f[list(KEY_COLUMNS) + rest].sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)
        f.insert(0, "table", name)
        title = "per-case counts and scores of every run" if name == "cases" else "metrics.csv of every run"
        out.append(TableResult(name, title, f, {"table": title, "source": "bench.reports.collect.load_results"}))
    runs = results.runs
    rest = [c for c in RUN_FRAME_COLUMNS if c in runs.columns]
    f = runs[["run_id"] + rest].rename(columns={"run_id": "group"}).assign(row="", col_group="", col="")
    f = f[list(KEY_COLUMNS) + rest]
    f = f.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)
    f.insert(0, "table", "runs")
    title = "every run: ablated fields, post-processing, training budget"
    out.append(TableResult("runs", title, f, {"table": title, "source": "bench.reports.collect.load_results"}))
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
                 tolerances: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> list[Path]:
    """(Re)write the golden CSVs and manifest; only ``bench report --update-golden`` calls this.

    ``extra`` adds manifest keys first (``layer`` and how the layer is built); table CSVs of an
    earlier version that are no longer written are removed, so the folder holds what is compared.
    """
    golden_dir = Path(golden_dir)
    written = []
    numbers = []
    for t in tables:
        write_text(golden_dir / f"{t.name}.csv", t.frame.to_csv(index=False))
        written.append(golden_dir / f"{t.name}.csv")
        numbers.append(t.name.removeprefix("table"))
    for stale in set(golden_dir.glob("*.csv")) - set(written):
        stale.unlink()
    manifest = {
        **dict(extra or {}),
        "command": command,
        "source": source,
        "tables": numbers,
        "report_options": dict(report_options),
        "tolerances": dict(tolerances or DEFAULT_TOLERANCES),
        "compare": {"keys": list(KEY_COLUMNS), "exact": list(EXACT_COLUMNS),
                    "rule": "NaN equals NaN; a cell present on one side only is a mismatch; "
                            + ("every column is compared ('*'): numbers within their tolerance, text equal, a "
                               "column or table on one side only is a mismatch"
                               if "*" in (tolerances or {}) else
                               "columns without a tolerance (runs, ci_*) are not compared")},
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


def run_golden_command(command: str, results_dir: str | os.PathLike, timeout: float | None = None,
                       env: Mapping[str, str | None] | None = None, log: str | os.PathLike | None = None) -> str:
    """Run the manifest's command with ``{results}`` replaced, on CPU; returns the command as run.

    ``env`` sets (a string) or removes (None) environment variables for this run only (a calibration's
    kernel set and thread count); ``log`` sends the command's output to that file instead of the terminal.
    """
    text = command.replace("{results}", shlex.quote(str(results_dir)))
    argv = shlex.split(text)
    if not argv:
        raise DataError("golden manifest command is empty")
    if argv[0] == "bench":
        argv[0] = _bench_executable()
    run_env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # the golden run is a CPU run on every machine
    for name, value in (env or {}).items():
        if value is None:
            run_env.pop(name, None)
        else:
            run_env[name] = value
    try:
        if log is None:
            proc = subprocess.run(argv, env=run_env, timeout=timeout)
        else:
            with open(log, "w") as out:
                proc = subprocess.run(argv, env=run_env, timeout=timeout, stdout=out, stderr=subprocess.STDOUT)
    except FileNotFoundError:
        raise BenchError(f"golden command not found: {argv[0]} (from {text!r})") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"golden command timed out after {timeout} s: {text}") from None
    if proc.returncode != 0:
        where = f" (output in {log})" if log is not None else ""
        raise BenchError(f"golden command failed with exit status {proc.returncode}: {text}{where}")
    return text
