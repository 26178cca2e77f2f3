"""A golden layer's files: where the layers are, its manifest.json (read and written), its table CSVs.

``results/golden/`` holds one folder per layer (``exact``, ``train``), each with its tidy table
CSVs (``table3.csv`` ... written by the report; the exact layer also ``paired.csv`` and the
per-case/per-run frames ``cases.csv``/``metrics.csv``/``runs.csv``) and its own ``manifest.json``:
the layer, how its results are built, the report options, and the tolerance of every compared
column *with the reason for it* (lm-eval / nnU-Net practice: a tolerance without its origin is a
number nobody dares to change). Golden files change only through ``bench check DIR --update-golden``
and, for a training layer, ``bench check DIR --calibrate``.

This module knows the files, not what is in the tables: `bench.golden.compare` compares them,
`bench.golden.exact` and `bench.golden.train` build them.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy
import pandas as pd
import torch

import bench
from bench.atomic import write_json, write_text
from bench.errors import DataError
from bench.golden.study import parse_study
from bench.reports.select import ReportOptions
from bench.reports.tables import TableResult

MANIFEST = "manifest.json"
LAYERS = ("exact", "train")  # each a folder under results/golden/ with its own manifest.json
KEY_COLUMNS = ("group", "row", "col_group", "col")
EXACT_COLUMNS = ("status",)  # compared for equality, always

# What the exact layer's manifest must say: constants of this code, which a manifest cannot change
EXACT_COMMAND = "python -m bench.golden.exact --inputs {inputs} --results {results}"
EXACT_BUILDER = "bench.golden.exact.build_exact_results (run in-process by bench check)"

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


# Top-level fields a manifest may hold, per layer; anything else is refused (a folder cannot add behaviour)
COMMON_FIELDS = ("layer", "command", "source", "tables", "report_options", "tolerances", "compare", "created",
                 "versions", "update")
LAYER_FIELDS = {"exact": COMMON_FIELDS + ("builder", "inputs"), "train": COMMON_FIELDS + ("calibration", "excluded")}
REPORT_OPTIONS = {"aggregation": ("mean", "global"), "scores": ("post", "raw"), "dataset": None, "profile": None}
TRAIN_TABLES = ("3", "4", "5", "6", "7", "8")

# Calibration constants (bench.golden.spread): tolerance = SAFETY_FACTOR x the largest spread of a column over
# its stable cells + FLOOR, and a cell spreading more than UNSTABLE_SPREAD is excluded, never compared. So no
# calibration this code runs can give a tolerance above TOLERANCE_CEILING, and a manifest asking for more
# loosens its own check: refused.
SAFETY_FACTOR = 2.0
FLOOR = 0.002
UNSTABLE_SPREAD = 0.1
TOLERANCE_CEILING = SAFETY_FACTOR * UNSTABLE_SPREAD + FLOOR


def read_manifest(golden_dir: str | os.PathLike) -> dict[str, Any]:
    """The golden folder's manifest.json, validated (`validate_manifest`); a DataError names the file (and field)."""
    path = Path(golden_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path} not found; create the golden tables with "
                        f"`bench check {golden_dir} --update-golden` (make golden)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable manifest ({exc})") from None
    validate_manifest(manifest, path)
    return manifest


def _abs(spec: Any, where: str) -> float:
    """A tolerance's ``abs``: a finite, non-negative number (not a bool, not text)."""
    value = spec.get("abs") if isinstance(spec, Mapping) else None
    if not isinstance(spec, Mapping) or set(spec) - {"abs", "why"} or (
            "why" in spec and not isinstance(spec["why"], str)):
        raise DataError(f"{where}: expected {{\"abs\": number, \"why\": text}}, got {spec!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise DataError(f"{where}: 'abs' must be a finite, non-negative number, got {value!r}")
    return float(value)


def validate_manifest(manifest: Any, path: Path) -> None:
    """Refuse (a one-line DataError naming ``path`` and the field) a manifest that asks for anything this code
    does not build itself: an unknown field, a command other than the one built from validated fields (the
    exact layer: `EXACT_COMMAND`; a training layer: `bench.golden.study`), exact-layer tolerances, tables or
    compared columns other than this code's constants, a tolerance that is not a finite non-negative number,
    malformed report options or excluded cells. Calibrated tolerances of a training layer stay data."""
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: a manifest is a JSON object, got {type(manifest).__name__}")
    layer = manifest.get("layer", "train")
    if layer not in LAYERS:
        raise DataError(f"{path}: field 'layer': unknown layer {layer!r} (known: {', '.join(LAYERS)})")
    for key in ("command", "tables", "tolerances"):
        if key not in manifest:
            raise DataError(f"{path}: manifest lacks {key!r}")
    unknown = [k for k in manifest if k not in LAYER_FIELDS[layer]]
    if unknown:
        raise DataError(f"{path}: unknown field {unknown[0]!r} in a {layer} layer's manifest "
                        f"(known: {', '.join(LAYER_FIELDS[layer])})")
    for key in ("source", "created", "update", "builder"):
        if key in manifest and not isinstance(manifest[key], str):
            raise DataError(f"{path}: field {key!r} must be text")
    for key in ("versions", "inputs", "calibration"):
        if key in manifest and not isinstance(manifest[key], dict):
            raise DataError(f"{path}: field {key!r} must be an object")
    tolerances = manifest["tolerances"]
    if not isinstance(tolerances, dict) or not tolerances:
        raise DataError(f"{path}: field 'tolerances' must be an object of column -> {{\"abs\": number}}")
    given = {str(k): _abs(v, f"{path}: field 'tolerances.{k}'") for k, v in tolerances.items()}
    tables = manifest["tables"]
    if not isinstance(tables, list) or not all(isinstance(n, (str, int)) and not isinstance(n, bool) for n in tables):
        raise DataError(f"{path}: field 'tables' must be a list of table names")
    compare = manifest.get("compare", {})
    if not isinstance(compare, dict) or list(compare.get("keys", KEY_COLUMNS)) != list(KEY_COLUMNS) or list(
            compare.get("exact", EXACT_COLUMNS)) != list(EXACT_COLUMNS) or set(compare) - {"keys", "exact", "rule"}:
        raise DataError(f"{path}: field 'compare' must keep this code's keys {list(KEY_COLUMNS)} and exactly compared "
                        f"columns {list(EXACT_COLUMNS)}")
    _check_report_options(manifest.get("report_options", {}), path)
    if layer == "exact":
        if manifest["command"] != EXACT_COMMAND:
            raise DataError(f"{path}: field 'command': the exact layer is built in-process by this code "
                            f"({EXACT_COMMAND!r}); the manifest says {manifest['command']!r}")
        constant = {k: float(v["abs"]) for k, v in EXACT_TOLERANCES.items()}
        if given != constant:
            key = next((k for k in sorted(set(given) | set(constant)) if given.get(k) != constant.get(k)), "?")
            raise DataError(f"{path}: field 'tolerances.{key}': the exact layer's tolerances are constants of this "
                            f"code ({key}: {constant.get(key, 'none')}); the manifest says {given.get(key, 'none')}")
        if [str(n) for n in tables] != list(EXACT_NAMES):
            raise DataError(f"{path}: field 'tables': the exact layer compares {', '.join(EXACT_NAMES)}")
        return
    parse_study(manifest["command"], f"{path}: field 'command'")
    loose = next((k for k, v in sorted(given.items()) if v > TOLERANCE_CEILING + 1e-12), None)
    if loose is not None:
        raise DataError(f"{path}: field 'tolerances.{loose}': {given[loose]} is above {TOLERANCE_CEILING:g}, the most "
                        f"a calibration can give ({SAFETY_FACTOR:g} x the instability threshold {UNSTABLE_SPREAD:g} + "
                        f"floor {FLOOR:g}); recalibrate instead of widening a tolerance")
    if not all(str(n) in TRAIN_TABLES for n in tables):
        raise DataError(f"{path}: field 'tables': a training layer compares tables among {', '.join(TRAIN_TABLES)}")
    _check_excluded(manifest.get("excluded", []), path)


def _check_report_options(options: Any, path: Path) -> None:
    where = f"{path}: field 'report_options'"
    if not isinstance(options, dict) or set(options) - set(REPORT_OPTIONS):
        raise DataError(f"{where}: an object with keys among {', '.join(REPORT_OPTIONS)}")
    for key, allowed in REPORT_OPTIONS.items():
        value = options.get(key)
        if value is None and key in ("dataset", "profile"):
            continue
        if key in options and (not isinstance(value, str) or (allowed is not None and value not in allowed)):
            raise DataError(f"{where}.{key}: {value!r} is not " + (" or ".join(allowed) if allowed else "a name"))


def _check_excluded(excluded: Any, path: Path) -> None:
    if not isinstance(excluded, list):
        raise DataError(f"{path}: field 'excluded' must be a list of cells")
    for entry in excluded:
        key = entry.get("key") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("table"), str) or not isinstance(key, list) or len(
                key) != len(KEY_COLUMNS) or not all(isinstance(k, str) for k in key):
            raise DataError(f"{path}: field 'excluded': a cell needs 'table' and a 'key' of {len(KEY_COLUMNS)} texts "
                            f"({', '.join(KEY_COLUMNS)}), got {entry!r}")


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
                    f"tables with `bench check {root} --update-golden` (make golden)")


def table_name(entry: Any) -> str:
    """A manifest ``tables`` entry as a file stem: "7" -> "table7", "paired" -> "paired"."""
    text = str(entry)
    return f"table{text}" if text.isdigit() else text


def versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "numpy": numpy.__version__, "pandas": pd.__version__,
                "bench": bench.__version__, "platform": platform.platform(), "torch": torch.__version__}
    try:
        versions["git"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                         cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        versions["git"] = "unknown"
    return versions


def write_golden(golden_dir: str | os.PathLike, tables: Sequence[TableResult], *, command: str,
                 report_options: Mapping[str, Any], source: str,
                 tolerances: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> list[Path]:
    """(Re)write the golden CSVs and manifest; only ``bench check --update-golden``/``--calibrate`` call this.

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
        "tolerances": dict(tolerances),
        "compare": {"keys": list(KEY_COLUMNS), "exact": list(EXACT_COLUMNS),
                    "rule": "NaN equals NaN; a cell present on one side only is a mismatch; "
                            + ("every column is compared ('*'): numbers within their tolerance, text equal, a "
                               "column or table on one side only is a mismatch"
                               if "*" in (tolerances or {}) else
                               "columns without a tolerance (runs, ci_*) are not compared")},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }
    write_json(golden_dir / MANIFEST, manifest)
    return written + [golden_dir / MANIFEST]



def report_options(options: Mapping[str, Any]) -> ReportOptions:
    """The manifest's ``report_options`` as the report's `ReportOptions` (how the layer's tables are built)."""
    return ReportOptions(**options)
