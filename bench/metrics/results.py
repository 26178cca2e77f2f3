"""The one writer of evaluation results (per_case.csv, metrics.csv, summary.json) and its table.

Why one writer: `bench evaluate` (per plane and fused), `bench score` and the report tables all
read the same files (contract in ``.notes/RESULTS_FORMAT.md``), so the files must come from one
place that recomputes every score from the stored counts. The evaluation policy travels with
every summary and is printed with every table, so a number is never read without its rules.

Files (written atomically):
* ``per_case.csv``  split, case, class, tp, fp, fn, tn, accuracy, dice, iou, miou [, hd95, nsd]
* ``metrics.csv``   split, class, aggregation (mean | global), metric, value, n_cases, n_excluded
  (``n_excluded`` = NaN cases left out of that mean; a global score excludes nothing; surface
  metrics have no global form)
* ``summary.json``  {"policy", "splits": {split: {"classes": {cls: reduction}}}} or, without
  splits (`bench score`), {"policy", "classes": {...}}. NaN is written as ``null``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from bench.atomic import atomic_path, write_json
from bench.errors import ConfigError, DataError
from bench.metrics.counts import Counts
from bench.metrics.scores import COUNT_COLUMNS, METRICS, SURFACE_METRICS, reduce_cases, scores_from_counts

BASE_COLUMNS = ("split", "case", "class") + COUNT_COLUMNS + METRICS
CLASS_ORDER = ("liver", "lesion")
NA_REP = "NaN"


def evaluation_policy(surface: bool = False, tolerance_mm: float | None = None) -> dict[str, Any]:
    """The declared evaluation rules, saved in every summary.json and printed with every table."""
    policy: dict[str, Any] = {
        "unit": "case = one 3-D volume; counts TP/FP/FN/TN per case and class, every score computed from counts",
        "classes": {
            "liver": "label >= 1 (liver including lesions, the LiTS scoring rule)",
            "lesion": "label == 2",
        },
        "metrics": {
            "accuracy": "(TP + TN) / (TP + FP + FN + TN)  (Eq. 9)",
            "dice": "2 TP / (2 TP + FP + FN)  (Eq. 10)",
            "iou": "TP / (TP + FP + FN), foreground  (Eq. 11)",
            "miou": "mean of background IoU TN / (TN + FP + FN) and foreground IoU  (Eq. 12, C = 2)",
        },
        "aggregations": {
            "mean": "score each case, then average over cases; NaN cases left out",
            "global": "sum TP/FP/FN/TN over cases, then score once",
        },
        "empty": (
            "reference and prediction both empty for a class: dice, iou, miou = NaN, excluded from the "
            "mean and counted as n_excluded (never 1.0 or 0.0); accuracy stays defined and its mean covers every case"
        ),
        "fusion": "fused = soft voting: mean of the three planes' probability volumes (Eq. 8), threshold 0.5",
        "threshold": 0.5,
        "missing_predictions": "bench score: a reference case without a prediction is scored as an empty prediction and counted (n_missing)",
    }
    if surface:
        policy["surface"] = {
            "hd95": "max of the two directed 95th-percentile surface distances, mm (MONAI definition)",
            "nsd": f"surface Dice at tolerance {tolerance_mm} mm (MONAI compute_surface_dice, voxel surfaces)",
            "tolerance_mm": tolerance_mm,
            "empty": "both empty: NaN (excluded); exactly one empty: hd95 NaN (excluded, counted), nsd 0",
            "aggregations": "mean only (no global form)",
        }
    policy["text"] = (
        "Per-case (3-D volume) TP/FP/FN/TN; liver = label >= 1, lesion = label == 2. "
        "Dice/IoU/mIoU are NaN when reference and prediction are both empty: excluded from means and counted. "
        "'mean' averages cases; 'global' scores summed counts. mIoU = mean(background IoU, foreground IoU)."
    )
    return policy


def case_rows(
    case: str,
    counts: Mapping[str, Counts | Iterable[int]],
    split: str = "all",
    surface: Mapping[str, Mapping[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """Rows of per_case.csv for one case: one per class, scores computed from the counts."""
    rows = []
    for cls, c in counts.items():
        tp, fp, fn, tn = (c.as_tuple() if isinstance(c, Counts) else tuple(int(v) for v in c))
        row: dict[str, Any] = {"split": split, "case": str(case), "class": cls, "tp": tp, "fp": fp, "fn": fn, "tn": tn}
        row.update(scores_from_counts(tp, fp, fn, tn))
        if surface is not None and cls in surface:
            row.update({m: float(surface[cls][m]) for m in SURFACE_METRICS})
        rows.append(row)
    return rows


def per_case_frame(rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Normalise a per-case table: required columns, int64 counts, scores recomputed from counts."""
    df = pd.DataFrame(rows).copy() if not isinstance(rows, pd.DataFrame) else rows.copy()
    if "split" not in df.columns:
        df.insert(0, "split", "all")
    missing = [c for c in ("case", "class") + COUNT_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"per-case table lacks columns {missing}")
    for c in COUNT_COLUMNS:
        df[c] = df[c].astype(np.int64)
    df["case"] = df["case"].astype(str)
    s = scores_from_counts(*(df[c].to_numpy() for c in COUNT_COLUMNS))
    for m in METRICS:
        df[m] = s[m]
    columns = list(BASE_COLUMNS) + [m for m in SURFACE_METRICS if m in df.columns]
    return df[columns].reset_index(drop=True)


def _ordered(values: Iterable[str], order: tuple[str, ...]) -> list[str]:
    vals = list(dict.fromkeys(values))
    return [v for v in order if v in vals] + [v for v in vals if v not in order]


def summarize(per_case: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """{split: {"classes": {cls: reduce_cases(...)}}} from a per-case table."""
    df = per_case_frame(per_case)
    out: dict[str, dict[str, Any]] = {}
    for split in _ordered(df["split"], ("train", "val", "test", "all")):
        part = df[df["split"] == split]
        classes = {}
        for cls in _ordered(part["class"], CLASS_ORDER):
            classes[cls] = reduce_cases(part[part["class"] == cls])
        out[split] = {"classes": classes}
    return out


def metrics_table(summary_splits: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Long metrics.csv rows from `summarize` output."""
    rows = []
    for split, body in summary_splits.items():
        for cls, red in body["classes"].items():
            for agg in ("mean", "global"):
                for metric, value in red[agg].items():
                    excluded = red["excluded"].get(metric, 0) if agg == "mean" else 0
                    rows.append({"split": split, "class": cls, "aggregation": agg, "metric": metric,
                                 "value": value, "n_cases": red["n_cases"], "n_excluded": excluded})
    return pd.DataFrame(rows, columns=["split", "class", "aggregation", "metric", "value", "n_cases", "n_excluded"])


def _json_clean(obj: Any) -> Any:
    """NaN/inf -> None so summary.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, na_rep=NA_REP, float_format="%.10g")


def write_evaluation(
    out_dir: str | Path,
    per_case: pd.DataFrame | Iterable[Mapping[str, Any]],
    with_splits: bool = True,
    policy: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    suffix: str = "",
) -> dict[str, Any]:
    """Write per_case.csv, metrics.csv and summary.json into ``out_dir``; return the summary.

    ``with_splits=False`` (`bench score`) needs a single split and writes the summary without the
    "splits" level. ``extra`` adds top-level keys to summary.json (e.g. n_missing, inputs).
    ``suffix`` names a second set of files (``per_case_raw.csv`` ...: scores without post-processing).
    """
    out = Path(out_dir)
    df = per_case_frame(per_case)
    by_split = summarize(df)
    summary: dict[str, Any] = {"policy": dict(policy) if policy is not None else evaluation_policy()}
    if with_splits:
        summary["splits"] = by_split
    else:
        if len(by_split) > 1:
            raise ConfigError(f"a summary without splits needs one split, got {', '.join(by_split)}")
        summary["classes"] = next(iter(by_split.values()))["classes"] if by_split else {}
    if extra:
        summary.update(extra)
    summary = _json_clean(summary)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / f"per_case{suffix}.csv", df)
    _write_csv(out / f"metrics{suffix}.csv", metrics_table(by_split))
    write_json(out / f"summary{suffix}.json", summary)
    return summary


def read_per_case(path: str | Path) -> pd.DataFrame:
    """per_case.csv back as a DataFrame (NaN restored, counts int64)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no per_case.csv")
    df = pd.read_csv(path, keep_default_na=True, na_values=[NA_REP], dtype={"case": str})
    return per_case_frame(df)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def print_summary(summary: Mapping[str, Any], title: str = "evaluation", console: Any = None) -> None:
    """Rich table(s): one row per class and aggregation, then the policy text."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if "splits" in summary:
        blocks = [(f"{title} [{split}]", body["classes"]) for split, body in summary["splits"].items()]
    else:
        blocks = [(title, summary.get("classes", {}))]
    for name, classes in blocks:
        surface = any("hd95" in red["mean"] for red in classes.values())
        table = Table(title=name, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                      caption="acc = accuracy; excl = cases left out of the mean (empty rule)")
        table.add_column("class", no_wrap=True)
        table.add_column("agg", no_wrap=True)
        for m in ("acc", "dice", "iou", "miou"):
            table.add_column(m, justify="right", no_wrap=True, min_width=6)
        if surface:
            table.add_column("hd95 mm", justify="right", no_wrap=True)
            table.add_column("nsd", justify="right", no_wrap=True, min_width=6)
        table.add_column("n", justify="right", no_wrap=True)
        table.add_column("excl", justify="right", no_wrap=True, min_width=4)
        for cls, red in classes.items():
            for agg in ("mean", "global"):
                cells = [_fmt(red[agg].get(m)) for m in METRICS]
                if surface:
                    cells += [_fmt(red[agg].get("hd95"), 2), _fmt(red[agg].get("nsd"))] if agg == "mean" else ["", ""]
                excluded = str(red["n_excluded"]) if agg == "mean" else "0"
                if surface and agg == "mean":
                    hd_ex = (red.get("excluded") or {}).get("hd95", 0)
                    excluded += f" (hd95 {hd_ex})" if hd_ex != red["n_excluded"] else ""
                table.add_row(cls, agg, *cells, str(red["n_cases"]), excluded)
        console.print(table)
    policy = summary.get("policy") or {}
    if policy.get("text"):
        console.print(f"[dim]policy: {policy['text']}[/dim]", highlight=False)
