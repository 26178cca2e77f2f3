"""Compare a golden layer's tables with freshly built ones, cell by cell, within stated tolerances.

* exact layer: every column is compared (``"*"`` in its tolerances): counts exactly, every other
  number to 1e-9 absolute, every text (status, runs, metric) exactly; a column or cell on one
  side only is a mismatch (`bench.golden.exact` builds the tables from committed inputs).
* train layer: the columns named in its tolerances, with tolerances calibrated from the spread of the
  study over seeds, kernel sets and thread counts (`bench.golden.spread`); the cells the
  calibration found unstable (``excluded`` in the manifest, each with its reason and spread) must
  exist but are not compared.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from bench.errors import DataError
from bench.golden.manifest import EXACT_COLUMNS, KEY_COLUMNS, MANIFEST, read_manifest, table_name
from bench.reports.tables import TableResult


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
    """Compare the golden table CSVs named in the manifest with freshly built tables (name -> tidy frame).

    ``tolerances``: the layer's (`bench.golden.check` passes the exact layer's constants); None = the
    manifest's, validated by `read_manifest`. Status columns are compared exactly, always."""
    golden_dir = Path(golden_dir)
    manifest = read_manifest(golden_dir)
    tolerances = manifest["tolerances"] if tolerances is None else tolerances
    exact = EXACT_COLUMNS
    excluded = excluded_keys(manifest)
    frames = _table_frames(new_tables)
    out: list[Mismatch] = []
    names = [table_name(entry) for entry in manifest["tables"]]
    for name in names:
        path = golden_dir / f"{name}.csv"
        if not path.is_file():
            raise DataError(f"{path} is named in {golden_dir / MANIFEST} but does not exist")
        golden = read_golden_csv(path)
        if name not in frames:
            out.append(Mismatch(name, (), "(table)", "present", "not built"))
            continue
        out += compare_frames(name, golden, frames[name], tolerances, exact, excluded.get(name, set()))
    if "*" in tolerances:  # the exact layer: a table built but not in golden is a difference too
        out += [Mismatch(name, (), "(table)", "absent", "built") for name in frames if name not in names]
    return out



def read_golden_csv(path: Path) -> pd.DataFrame:
    """One golden table, every cell as text (a status "nan" stays a word); a file that is not a table with the
    key columns is a one-line DataError naming it."""
    try:
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    except (ValueError, OSError, UnicodeDecodeError) as exc:  # pandas' ParserError/EmptyDataError are ValueErrors
        raise DataError(f"{path}: malformed golden table ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})") from None
    if not isinstance(frame.index, pd.RangeIndex):  # pandas takes surplus leading fields as an index
        raise DataError(f"{path}: malformed golden table: rows have more fields than the header")
    missing = [k for k in KEY_COLUMNS if k not in frame.columns]
    if missing:
        raise DataError(f"{path}: malformed golden table: lacks the key column(s) {', '.join(missing)}")
    return frame
