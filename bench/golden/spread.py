"""Calibrating a training golden layer: per-cell spread over conditions -> per-column tolerances.

A training layer's tables come from models trained on CPU, so they move with anything that changes
float summation order (the CPU's kernel set, the thread count) and, far more, with the seed. The
calibration runs the layer's study under every combination of a few seeds, kernel sets and thread
counts (`bench.golden.calibrate.calibrate_layer` runs them; this module only does the arithmetic on
their tables, so it is tested on synthetic frames), and derives:

* per cell and compared column, the **spread** (max - min over the conditions);
* the **unstable cells**: a cell whose value spread exceeds ``UNSTABLE_SPREAD``, whose status or a
  count (n_cases, n_excluded, n_seeds) differs between conditions, that is NaN in some conditions
  only, or that exists in some conditions only. Such a cell is decided by the conditions, not by
  the code; it is *not compared* (listed in the manifest with its reason and spread) rather than
  given a tolerance so wide that it would hide every real change in its column;
* per column and metric (``ours:dice``, ``diff:accuracy``, ``sd:miou``), the **tolerance**
  ``SAFETY_FACTOR x (largest spread over the stable cells) + FLOOR``. The spread is measured over
  seeds too, which move a model far more than a kernel set does (a different seed is a different
  trajectory from the first step; a kernel set perturbs the last bits, which training then
  amplifies into a different trajectory of the same kind), so it bounds what another machine can
  do to the reference seed; the safety factor covers machines and conditions the calibration did
  not see, the floor a column whose measured spread happens to be 0.

Counts are compared exactly and the paper's constants exactly; the ``runs`` text and bootstrap
``ci_*`` columns are not compared (the run folder names carry the seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from bench.errors import DataError
from bench.golden.manifest import KEY_COLUMNS

VALUE_COLUMNS = ("ours", "diff", "sd")  # calibrated per metric
COUNT_COLUMNS = ("n_cases", "n_excluded", "n_seeds")  # exact; a count that varies makes the cell unstable
TEXT_COLUMNS = ("status",)  # exact; a status that varies makes the cell unstable

# The stated calibration constants (recorded in the manifest with every calibration; declared beside the
# other constants a manifest cannot change, which also bound a calibrated tolerance)
from bench.golden.manifest import FLOOR, SAFETY_FACTOR, UNSTABLE_SPREAD  # noqa: E402
WHY_SAFETY = ("the calibration saw one machine, a few seeds, two kernel sets and two thread counts; x2 covers "
              "a CPU it did not see while staying below the smallest change the layer exists to catch "
              "(a broken model, loss or data pipeline moves a converged Dice by >= 0.1)")
WHY_FLOOR = ("a column whose measured spread is 0 (every condition agreed to the last digit) still gets 0.002, "
             "a few boundary pixels of one case, so a machine with yet another summation order does not fail it")
WHY_UNSTABLE = ("a cell whose value moves by more than 0.1 between seeds or machines is decided by the run "
                "conditions (a model collapsing, an all-NaN split), not by the code; comparing it would need a "
                "tolerance wide enough to hide a broken model")

_CONSTANT = {"paper": {"abs": 0.0, "why": "constants transcribed from the paper (bench/reports/paper.py): any "
                                          "change is an edit of the transcription and must be deliberate"}}
_WHY_COUNT = {
    "n_cases": "case counts follow from the seeded patient-level split: exact",
    "n_excluded": "cases with empty reference and empty prediction (the NaN rule): exact on every stable cell; "
                  "a cell where the count varied between conditions is excluded instead",
    "n_seeds": "the number of runs behind a cell is fixed by the command: exact",
}


@dataclass(frozen=True)
class Calibration:
    """What a calibration found: tolerances per column, the excluded cells, the spread per column."""

    tolerances: dict[str, dict[str, Any]]
    excluded: list[dict[str, Any]]
    column_spread: dict[str, dict[str, Any]]
    n_conditions: int
    n_cells: int
    constants: dict[str, Any] = field(default_factory=dict)


def _key(row: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple("" if _blank(row.get(k)) else str(row.get(k)) for k in KEY_COLUMNS)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and value.strip() in ("", "nan", "NaN"))


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def condition_cells(conditions: Mapping[str, Mapping[str, pd.DataFrame]]) -> pd.DataFrame:
    """Every condition's table rows in one frame (``condition`` and ``table`` columns first).

    This is what a calibration stores (``calibration/cells.csv``): the spreads, and so the tolerances,
    can be recomputed from it without training anything again.
    """
    frames = []
    for name, tables in conditions.items():
        for table, frame in tables.items():
            f = frame.copy()
            if "table" in f.columns:
                f = f.drop(columns=["table"])
            f.insert(0, "table", table)
            f.insert(0, "condition", name)
            frames.append(f)
    if not frames:
        raise DataError("calibration: no condition produced any table")
    return pd.concat(frames, ignore_index=True)


def cell_spreads(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (table, cell): metric, spread/min/max of every value column, and ``structural``: why the
    cell is unstable whatever the threshold ('' if it is not): present in some conditions only, a status
    or count that varies, a value NaN in some conditions only (its spread is then infinite). A value
    column NaN in every condition has spread 0 (NaN equals NaN, as in the comparison). `derive` adds
    the spread threshold.
    """
    conditions = sorted(cells["condition"].astype(str).unique())
    n = len(conditions)
    rows = []
    for (table, *key), group in cells.groupby(["table", *KEY_COLUMNS], sort=False, dropna=False):
        key = ["" if _blank(k) else str(k) for k in key]
        metric = "" if "metric" not in group or _blank(group["metric"].iloc[0]) else str(group["metric"].iloc[0])
        out: dict[str, Any] = {"table": table, **dict(zip(KEY_COLUMNS, key)), "metric": metric}
        reasons = []
        present = group["condition"].astype(str).nunique()
        if present < n or len(group) != present:
            reasons.append(f"present in {present} of {n} conditions" if len(group) == present
                           else "duplicate key within a condition")
        for col in TEXT_COLUMNS:
            if col in group:
                # "nan" is a status word here, not a missing value
                seen = group[col].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
                if seen.nunique() > 1:
                    counts = seen.value_counts()
                    reasons.append(f"{col} varies: " + ", ".join(f"{v} in {c}" for v, c in counts.items()))
        for col in COUNT_COLUMNS:
            if col in group:
                vals = group[col].map(_number)
                if vals.isna().any() and not vals.isna().all():
                    reasons.append(f"{col} NaN in {int(vals.isna().sum())} of {len(vals)} conditions")
                elif not vals.isna().all() and vals.max() != vals.min():
                    reasons.append(f"{col} varies: {vals.min():g}..{vals.max():g}")
        for col in VALUE_COLUMNS:
            if col not in group:
                continue
            vals = group[col].map(_number).to_numpy(dtype=float)
            if np.isnan(vals).all():
                spread = 0.0
            elif np.isnan(vals).any():
                spread = math.inf
                reasons.append(f"{col} NaN in {int(np.isnan(vals).sum())} of {len(vals)} conditions")
            else:
                spread = float(vals.max() - vals.min())
            out[f"spread_{col}"] = spread
            finite = vals[~np.isnan(vals)]
            out[f"min_{col}"] = float(finite.min()) if finite.size else math.nan
            out[f"max_{col}"] = float(finite.max()) if finite.size else math.nan
        out["structural"] = "; ".join(dict.fromkeys(reasons))
        rows.append(out)
    return pd.DataFrame(rows)


def _where(row: Mapping[str, Any]) -> str:
    return f"{row['table']} [{' / '.join(str(row[k]) for k in KEY_COLUMNS if row[k])}]"


def derive(spreads: pd.DataFrame, n_conditions: int, safety: float = SAFETY_FACTOR, floor: float = FLOOR,
           unstable: float | None = None) -> Calibration:
    """Tolerances per (column, metric), the excluded cells and the spread per column from `cell_spreads`.

    A cell is unstable when `cell_spreads` found a structural reason or a value column's spread
    exceeds ``unstable`` (default ``UNSTABLE_SPREAD``).
    """
    limit = UNSTABLE_SPREAD if unstable is None else unstable
    spreads = spreads.copy()
    reasons = []
    for _, row in spreads.iterrows():
        structural = row.get("structural")
        why = [str(structural)] if isinstance(structural, str) and structural else []
        for col in VALUE_COLUMNS:
            s = _number(row.get(f"spread_{col}"))
            if math.isfinite(s) and s > limit:
                why.append(f"{col} spread {s:.4g} > {limit:g}")
        reasons.append("; ".join(why))
    spreads["unstable"] = reasons
    stable = spreads[spreads["unstable"] == ""]
    tolerances: dict[str, dict[str, Any]] = {}
    column_spread: dict[str, dict[str, Any]] = {}
    for col in VALUE_COLUMNS:
        if f"spread_{col}" not in spreads:
            continue
        for metric in sorted(m for m in spreads["metric"].unique()):
            if not metric:
                continue
            of_metric = stable[stable["metric"] == metric]
            name = f"{col}:{metric}"
            n_all = int((spreads["metric"] == metric).sum())
            if of_metric.empty:
                largest, where = 0.0, "no stable cell"
            else:
                idx = of_metric[f"spread_{col}"].astype(float).idxmax()
                largest, where = float(of_metric.loc[idx, f"spread_{col}"]), _where(of_metric.loc[idx])
            tol = safety * largest + floor
            column_spread[name] = {"max_spread": largest, "at": where, "stable_cells": int(len(of_metric)),
                                   "cells": n_all, "tolerance": tol}
            tolerances[name] = {
                "abs": round(tol, 6),
                "why": f"calibrated: {safety:g} x the largest spread {largest:.4g} of {col} over the "
                       f"{len(of_metric)} stable {metric} cells in {n_conditions} conditions (at {where}) + floor "
                       f"{floor:g}; see calibration.safety_factor and calibration.floor for why",
            }
    tolerances.update({k: dict(v) for k, v in _CONSTANT.items()})
    tolerances.update({c: {"abs": 0, "why": w} for c, w in _WHY_COUNT.items()})
    excluded = []
    for _, row in spreads[spreads["unstable"] != ""].iterrows():
        spread = {c: (None if not math.isfinite(float(row[f"spread_{c}"])) else round(float(row[f"spread_{c}"]), 6))
                  for c in VALUE_COLUMNS if f"spread_{c}" in row and not pd.isna(row[f"spread_{c}"])}
        ranges = {c: [None if pd.isna(row[f"min_{c}"]) else round(float(row[f"min_{c}"]), 6),
                      None if pd.isna(row[f"max_{c}"]) else round(float(row[f"max_{c}"]), 6)]
                  for c in VALUE_COLUMNS if f"min_{c}" in row and not pd.isna(row.get(f"min_{c}"))}
        excluded.append({"table": str(row["table"]), "key": [str(row[k]) for k in KEY_COLUMNS],
                         "metric": str(row["metric"]), "reason": str(row["unstable"]), "spread": spread,
                         "range": ranges})
    constants = {"safety_factor": {"value": safety, "why": WHY_SAFETY}, "floor": {"value": floor, "why": WHY_FLOOR},
                 "unstable_spread": {"value": limit, "why": WHY_UNSTABLE}}
    return Calibration(tolerances, excluded, column_spread, n_conditions, int(len(spreads)), constants)


def calibrate(conditions: Mapping[str, Mapping[str, pd.DataFrame]], safety: float = SAFETY_FACTOR,
              floor: float = FLOOR, unstable: float | None = None) -> tuple[Calibration, pd.DataFrame, pd.DataFrame]:
    """Condition name -> (table name -> tidy frame) to (calibration, the stored cells, per-cell spreads)."""
    if len(conditions) < 2:
        raise DataError(f"calibration needs at least 2 conditions to measure a spread (got {len(conditions)})")
    cells = condition_cells(conditions)
    spreads = cell_spreads(cells)
    return derive(spreads, len(conditions), safety, floor, unstable), cells, spreads


def summary_lines(cal: Calibration) -> list[str]:
    """Human-readable lines: the tolerance per column and the excluded cells."""
    lines = [f"calibration: {cal.n_cells} cells over {cal.n_conditions} conditions; "
             f"{len(cal.excluded)} unstable cell(s) excluded"]
    for name, s in sorted(cal.column_spread.items()):
        lines.append(f"  {name:18s} max spread {s['max_spread']:.4g} ({s['stable_cells']} stable of {s['cells']}) "
                     f"-> tolerance {s['tolerance']:.4g}")
    for e in cal.excluded:
        lines.append(f"  excluded {e['table']} [{' / '.join(k for k in e['key'] if k)}]: {e['reason']}")
    return lines


__all__: Sequence[str] = ("Calibration", "calibrate", "cell_spreads", "condition_cells", "derive",
                          "summary_lines", "SAFETY_FACTOR", "FLOOR", "UNSTABLE_SPREAD")
