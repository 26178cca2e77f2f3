"""The one writer of evaluation results (per_case.csv, metrics.csv, summary.json) and its table.

Why one writer: `bench evaluate` (per plane and fused), `bench score` and the report tables all
read the same files (contract in ``.notes/RESULTS_FORMAT.md``), so the files must come from one
place that recomputes every score from the stored counts. The evaluation policy travels with
every summary and is printed with every table, so a number is never read without its rules.

Files (written atomically):
* ``per_case.csv``  split, case, class, tp, fp, fn, tn, accuracy, dice, iou, miou, voe, rvd
  [, hd95, nsd, assd, mssd, rmsd] (the bracketed surface columns only with ``--surface``)
* ``metrics.csv``   split, class, aggregation (mean | global), metric, value, n_cases, n_excluded
  (``n_excluded`` = NaN cases left out of that mean; a global score excludes nothing; surface
  metrics have no global form)
* ``summary.json``  {"policy", "splits": {split: {"classes": {cls: reduction}}}} or, without
  splits (`bench score`), {"policy", "classes": {...}}. NaN is written as ``null``.
"""

from __future__ import annotations

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


def evaluation_policy(surface: bool = False, tolerance_mm: float | None = None,
                      connectivity: int | None = None) -> dict[str, Any]:
    """The declared evaluation rules, saved in every summary.json and printed with every table.

    ``tolerance_mm`` / ``connectivity`` default to the surface module's defaults when ``surface``.
    """
    from bench.metrics.surface import DEFAULT_CONNECTIVITY, DEFAULT_TOLERANCE_MM

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
            "voe": "volume overlap error 1 - IoU  (LiTS, Bilic et al. 2023)",
            "rvd": "signed relative volume difference (|pred| - |ref|) / |ref| = (FP - FN) / (TP + FN)  (LiTS)",
        },
        "aggregations": {
            "mean": "score each case, then average over cases; NaN cases left out",
            "global": "sum TP/FP/FN/TN over cases, then score once",
        },
        "empty": (
            "reference and prediction both empty for a class: dice, iou, miou, voe, rvd = NaN, excluded from the "
            "mean and counted as n_excluded (never 1.0 or 0.0); accuracy stays defined and its mean covers every "
            "case. Empty reference, non-empty prediction: dice = iou = 0, voe = 1, rvd = NaN (no relative "
            "difference to an empty volume; excluded and counted per metric in 'excluded')"
        ),
        "fusion": "fused = soft voting: mean of the three planes' probability volumes (Eq. 8), threshold 0.5",
        "threshold": 0.5,
        "missing_predictions": "bench score: a reference case without a prediction is scored as an empty prediction and counted (n_missing)",
    }
    if surface:
        tolerance_mm = DEFAULT_TOLERANCE_MM if tolerance_mm is None else tolerance_mm
        connectivity = DEFAULT_CONNECTIVITY if connectivity is None else connectivity
        policy["surface"] = {
            "surfaces": (f"mask voxels with a background neighbour (connectivity {connectivity}: "
                         + ("face neighbours, MONAI's erosion" if connectivity == 1 else
                            "face + edge neighbours, the LiTS script's 18-neighbourhood")
                         + "); outside the volume is background; distances between voxel centres in mm, "
                           "in each case's own spacing"),
            "hd95": "max of the two directed 95th-percentile surface distances, mm (MONAI definition)",
            "nsd": f"surface Dice at tolerance {tolerance_mm} mm (MONAI compute_surface_dice, voxel surfaces)",
            "assd": ("average symmetric surface distance: mean over the union of both surfaces' distances, "
                     "(sum d(S_pred, S_ref) + sum d(S_ref, S_pred)) / (|S_pred| + |S_ref|), mm (LiTS; MONAI "
                     "compute_average_surface_distance(symmetric=True))"),
            "mssd": "maximum symmetric surface distance = Hausdorff distance, mm (LiTS)",
            "rmsd": "root mean square of the same union of distances, mm (LiTS)",
            "tolerance_mm": tolerance_mm,
            "connectivity": connectivity,
            "empty": ("both empty: every surface metric NaN (excluded); exactly one empty: hd95, assd, mssd, "
                      "rmsd NaN (excluded, counted per metric), nsd 0"),
            "aggregations": "mean only (no global form)",
        }
    policy["text"] = (
        "Per-case (3-D volume) TP/FP/FN/TN; liver = label >= 1, lesion = label == 2. "
        "Dice/IoU/mIoU/VOE/RVD are NaN when reference and prediction are both empty (RVD also when only the "
        "reference is): excluded from means and counted. 'mean' averages cases; 'global' scores summed counts. "
        "mIoU = mean(background IoU, foreground IoU); VOE = 1 - IoU; RVD = (|pred| - |ref|) / |ref|."
    )
    if surface:
        policy["text"] += (" Surface distances (mm, case spacing): one mask empty -> NaN, counted; "
                           "ASSD/RMSD average over the union of both surfaces.")
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
            row.update({m: float(surface[cls][m]) for m in SURFACE_METRICS if m in surface[cls]})
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
    case_files: Mapping[str, tuple[str | None, str | None]] | None = None,
) -> dict[str, Any]:
    """Write per_case.csv, metrics.csv and summary.json into ``out_dir``; return the summary.

    ``with_splits=False`` (`bench score`) needs a single split and writes the summary without the
    "splits" level. ``extra`` adds top-level keys to summary.json (e.g. n_missing, inputs).
    ``suffix`` names a second set of files (``per_case_raw.csv`` ...: scores without post-processing).
    The main set (no suffix) also gets nnU-Net's schema (`bench.metrics.nnunet_summary`; ``case_files``:
    case id -> (prediction file, reference file) where files were scored).
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
    if not suffix:
        from bench.metrics.nnunet_summary import write_nnunet_summaries

        write_nnunet_summaries(out, df, with_splits, case_files)
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


def _excluded_text(red: Mapping[str, Any], metrics: Iterable[str], base_metric: str = "dice") -> str:
    """NaN count of ``base_metric``, plus those of ``metrics`` whose count differs, grouped by count."""
    excluded = red.get("excluded") or {}
    base = int(excluded.get(base_metric, red["n_excluded"]) or 0)
    differing: dict[int, list[str]] = {}
    for metric in metrics:
        k = excluded.get(metric)
        if k and int(k) != base:  # 0 = defined everywhere (accuracy; nsd when one mask is empty)
            differing.setdefault(int(k), []).append(metric)
    if not differing:
        return str(base)
    return f"{base} (" + ", ".join(f"{'/'.join(ms)} {k}" for k, ms in differing.items()) + ")"


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
        table = Table(title=name, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                      caption="voe = 1 - IoU; rvd = (|pred| - |ref|) / |ref|; excl = cases left out of the mean "
                              "(empty rule; per metric where it differs)")
        table.add_column("class", no_wrap=True)
        table.add_column("agg", no_wrap=True)
        for m in ("acc", "dice", "iou", "miou", "voe", "rvd"):
            table.add_column(m, justify="right", no_wrap=True, min_width=6)
        table.add_column("n", justify="right", no_wrap=True)
        table.add_column("excl", justify="right", min_width=4)
        for cls, red in classes.items():
            for agg in ("mean", "global"):
                cells = [_fmt(red[agg].get(m)) for m in METRICS]
                excluded = _excluded_text(red, METRICS) if agg == "mean" else "0"
                table.add_row(cls, agg, *cells, str(red["n_cases"]), excluded)
        console.print(table)
        if any("hd95" in red["mean"] for red in classes.values()):
            surf = Table(title=f"{name}: surface distances", box=box.SIMPLE_HEAD, pad_edge=False,
                         collapse_padding=True,
                         caption="mm, in each case's spacing; mean over cases (no global form); assd/rmsd over "
                                 "the union of both surfaces; excl = NaN cases (a mask empty)")
            surf.add_column("class", no_wrap=True)
            for m in SURFACE_METRICS:
                surf.add_column(m + ("" if m == "nsd" else " mm"), justify="right", no_wrap=True, min_width=6)
            surf.add_column("n", justify="right", no_wrap=True)
            surf.add_column("excl", justify="right", min_width=4)
            for cls, red in classes.items():
                cells = [_fmt(red["mean"].get(m), 4 if m == "nsd" else 2) for m in SURFACE_METRICS]
                surf.add_row(cls, *cells, str(red["n_cases"]), _excluded_text(red, SURFACE_METRICS, "hd95"))
            console.print(surf)
    policy = summary.get("policy") or {}
    if policy.get("text"):
        console.print(f"[dim]policy: {policy['text']}[/dim]", highlight=False)
