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
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from bench.atomic import write_json, write_text
from bench.errors import DataError
from bench.reports.select import ReportOptions
from bench.reports.tables import TableResult

MANIFEST = "manifest.json"
LAYERS = ("exact", "train")  # each a folder under results/golden/ with its own manifest.json
KEY_COLUMNS = ("group", "row", "col_group", "col")
EXACT_COLUMNS = ("status",)  # compared for equality, always


def read_manifest(golden_dir: str | os.PathLike) -> dict[str, Any]:
    """The golden folder's manifest.json (a DataError naming the file when absent or unreadable)."""
    path = Path(golden_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path} not found; create the golden tables with "
                        f"`bench check {golden_dir} --update-golden` (make golden)")
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
                    f"tables with `bench check {root} --update-golden` (make golden)")


def table_name(entry: Any) -> str:
    """A manifest ``tables`` entry as a file stem: "7" -> "table7", "paired" -> "paired"."""
    text = str(entry)
    return f"table{text}" if text.isdigit() else text


def versions() -> dict[str, str]:
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
