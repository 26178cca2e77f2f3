"""The one writer of evaluation results (per_case.csv, metrics.csv, summary.json) and its table.

Why one writer: `bench evaluate` (per plane and fused), `bench score` and the report tables all
read the same files (contract in ``.notes/RESULTS_FORMAT.md``), so the files must come from one
place that recomputes every score from the stored counts. The evaluation policy travels with
every summary and is printed with every table, so a number is never read without its rules.

Files (written atomically):
* ``per_case.csv``  split, case, class, tp, fp, fn, tn, accuracy, dice, iou, miou, voe, rvd
  [, hd95, nsd, assd, mssd, rmsd] (the bracketed surface columns only with ``--surface``)
  [, n_ref_lesions, n_detected, n_pred_lesions, n_pred_matched, fp_lesions, ref_/det_<size bin>,
  lesion_recall, lesion_precision, lesion_f1, lesion_recall_<size bin>] when the lesion class is scored
  (`bench.metrics.lesions`; NA on other classes' rows)
* ``metrics.csv``   split, class, aggregation (mean | global), metric, value, n_cases, n_excluded
  (``n_excluded`` = NaN cases left out of that mean; a global score excludes nothing; surface
  metrics have no global form; lesion detection's pooled scores - lesion_recall, lesion_precision,
  lesion_f1, lesion_recall_<bin>, fp_lesions_per_case - are 'global' rows of the lesion class)
* ``summary.json``  {"policy", "splits": {split: {"classes": {cls: reduction}}}} or, without
  splits (`bench score`), {"policy", "classes": {...}}. NaN is written as ``null``. Each class's
  reduction carries ``n_empty_reference`` beside ``n_excluded`` and ``empty_reference`` (those cases'
  count and mean false-positive voxels and lesions, `bench.metrics.scores.empty_reference_summary`).

Every score is computed under the empty-reference rule the policy records (``policy["empty_reference"]``,
the run's ``evaluate.empty_reference``; `bench.metrics.scores`), so a summary's numbers and its rule
cannot disagree.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

from bench.atomic import atomic_path, write_json
from bench.errors import ConfigError, DataError
from bench.metrics.counts import Counts
from bench.metrics.lesions import LESION_COUNT_COLUMNS, LESION_SCORE_COLUMNS, SIZE_BIN_LABELS, SIZE_BINS, lesion_scores, pooled
from bench.metrics.nnunet_summary import write_nnunet_summaries
from bench.metrics.policy import evaluation_policy  # noqa: F401  (the one policy; re-exported for callers)
from bench.metrics.scores import (COUNT_COLUMNS, DEFAULT_EMPTY_REFERENCE, METRICS, SURFACE_METRICS,
                                  empty_reference_summary, reduce_cases, scores_from_counts)

BASE_COLUMNS = ("split", "case", "class") + COUNT_COLUMNS + METRICS
CLASS_ORDER = ("liver", "lesion")
# metrics.csv rows of the pooled lesion detection (aggregation "global": from counts summed over cases)
LESION_DETECTION_METRICS = LESION_SCORE_COLUMNS + ("fp_lesions_per_case",)
NA_REP = "NaN"


def case_rows(
    case: str,
    counts: Mapping[str, Counts | Iterable[int]],
    split: str = "all",
    surface: Mapping[str, Mapping[str, float]] | None = None,
    empty_reference: str = DEFAULT_EMPTY_REFERENCE,
) -> list[dict[str, Any]]:
    """Rows of per_case.csv for one case: one per class, scores computed from the counts."""
    rows = []
    for cls, c in counts.items():
        tp, fp, fn, tn = (c.as_tuple() if isinstance(c, Counts) else tuple(int(v) for v in c))
        row: dict[str, Any] = {"split": split, "case": str(case), "class": cls, "tp": tp, "fp": fp, "fn": fn, "tn": tn}
        row.update(scores_from_counts(tp, fp, fn, tn, empty_reference))
        if surface is not None and cls in surface:
            row.update({m: float(surface[cls][m]) for m in SURFACE_METRICS if m in surface[cls]})
        rows.append(row)
    return rows


def per_case_frame(rows: Iterable[Mapping[str, Any]] | pd.DataFrame,
                   empty_reference: str = DEFAULT_EMPTY_REFERENCE) -> pd.DataFrame:
    """Normalise a per-case table: required columns, int64 counts, scores recomputed from counts
    (under the ``empty_reference`` rule)."""
    df = pd.DataFrame(rows).copy() if not isinstance(rows, pd.DataFrame) else rows.copy()
    if "split" not in df.columns:
        df.insert(0, "split", "all")
    missing = [c for c in ("case", "class") + COUNT_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"per-case table lacks columns {missing}")
    for c in COUNT_COLUMNS:
        df[c] = df[c].astype(np.int64)
    df["case"] = df["case"].astype(str)
    s = scores_from_counts(*(df[c].to_numpy() for c in COUNT_COLUMNS), empty_reference=empty_reference)
    for m in METRICS:
        df[m] = s[m]
    columns = list(BASE_COLUMNS) + [m for m in SURFACE_METRICS if m in df.columns]
    if "n_ref_lesions" in df.columns:  # lesion detection (lesion rows; other classes' cells are NA)
        missing = [c for c in LESION_COUNT_COLUMNS if c not in df.columns]
        if missing:
            raise DataError(f"per-case table has lesion counts but lacks {missing}")
        for c in LESION_COUNT_COLUMNS:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
        ls = lesion_scores({c: df[c].astype("float64").to_numpy() for c in LESION_COUNT_COLUMNS})
        for m in LESION_SCORE_COLUMNS:
            df[m] = ls[m]
        columns += list(LESION_COUNT_COLUMNS) + list(LESION_SCORE_COLUMNS)
    return df[columns].reset_index(drop=True)


def _ordered(values: Iterable[str], order: tuple[str, ...]) -> list[str]:
    vals = list(dict.fromkeys(values))
    return [v for v in order if v in vals] + [v for v in vals if v not in order]


def summarize(per_case: pd.DataFrame, empty_reference: str = DEFAULT_EMPTY_REFERENCE) -> dict[str, dict[str, Any]]:
    """{split: {"classes": {cls: reduce_cases(...)}}} from a per-case table, under the ``empty_reference`` rule."""
    df = per_case_frame(per_case, empty_reference)
    out: dict[str, dict[str, Any]] = {}
    for split in _ordered(df["split"], ("train", "val", "test", "all")):
        part = df[df["split"] == split]
        classes = {}
        for cls in _ordered(part["class"], CLASS_ORDER):
            rows = part[part["class"] == cls]
            classes[cls] = reduce_cases(rows, empty_reference=empty_reference)
            classes[cls]["empty_reference"] = empty_reference_summary(rows)
            detection = pooled(rows) if "n_ref_lesions" in rows.columns and rows["n_ref_lesions"].notna().any() else {}
            if detection:
                classes[cls]["lesion_detection"] = detection
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
            det = red.get("lesion_detection")
            if det:  # pooled lesion detection: scores of the counts summed over cases (a 'global' form)
                for metric in LESION_DETECTION_METRICS:
                    rows.append({"split": split, "class": cls, "aggregation": "global", "metric": metric,
                                 "value": det[metric], "n_cases": det["n_cases"], "n_excluded": 0})
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
    Scores are computed under ``policy["empty_reference"]`` (the default rule when the policy has none).
    The main set (no suffix) also gets nnU-Net's schema (`bench.metrics.nnunet_summary`; ``case_files``:
    case id -> (prediction file, reference file) where files were scored).
    """
    out = Path(out_dir)
    summary: dict[str, Any] = {"policy": dict(policy) if policy is not None else evaluation_policy()}
    rule = summary["policy"].get("empty_reference", DEFAULT_EMPTY_REFERENCE)
    df = per_case_frame(per_case, rule)
    by_split = summarize(df, rule)
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
        write_nnunet_summaries(out, df, with_splits, case_files)
    return summary


def read_per_case(path: str | Path, empty_reference: str = DEFAULT_EMPTY_REFERENCE) -> pd.DataFrame:
    """per_case.csv back as a DataFrame (NaN restored, counts int64, scores recomputed under ``empty_reference``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no per_case.csv")
    df = pd.read_csv(path, keep_default_na=True, na_values=[NA_REP], dtype={"case": str})
    return per_case_frame(df, empty_reference)


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


def lesion_detection_table(title: str, detection: Mapping[str, Mapping[str, Any]]) -> Any:
    """A rich table of pooled lesion detection (`bench.metrics.lesions.pooled`) per class."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                  caption="counts summed over cases; recall = detected / reference lesions, precision = matched / "
                          "predicted components; FP/case = unmatched components per case; bins by equivalent "
                          "diameter (detected/reference)")
    table.add_column("class", no_wrap=True)
    for head in ("recall", "precision", "F1", "FP/case", "lesions", "predicted"):
        table.add_column(head, justify="right", no_wrap=True)
    for name, _, _ in SIZE_BINS:
        table.add_column(SIZE_BIN_LABELS[name], justify="right", no_wrap=True)
    for cls, det in detection.items():
        bins = [f"{det[f'det_{n}']}/{det[f'ref_{n}']}" for n, _, _ in SIZE_BINS]
        table.add_row(cls, _fmt(det["lesion_recall"]), _fmt(det["lesion_precision"]), _fmt(det["lesion_f1"]),
                      _fmt(det["fp_lesions_per_case"], 2), str(det["n_ref_lesions"]), str(det["n_pred_lesions"]), *bins)
    return table


def empty_reference_lines(classes: Mapping[str, Mapping[str, Any]], rule: str) -> list[str]:
    """One line per class with empty-reference cases: how many, how their overlap scores were treated
    (``rule``) and their false positives per case (summary.json's ``empty_reference``)."""
    lines = []
    for cls, red in classes.items():
        empty = red.get("empty_reference") or {}
        if not empty.get("n_cases"):
            continue
        treated = ("overlap scores NaN, left out of the mean" if rule == "nan"
                   else "Dice 0 in the mean where anything was predicted")
        fp = f"{_fmt(empty.get('fp_voxels_per_case'), 1)} voxels"
        if "fp_lesions_per_case" in empty:
            fp += f", {_fmt(empty.get('fp_lesions_per_case'), 2)} lesions"
        lines.append(f"{cls}: {empty['n_cases']} case(s) with an empty reference ({treated}; "
                     f"evaluate.empty_reference={rule}): false positives per case {fp}")
    return lines


def print_summary(summary: Mapping[str, Any], title: str = "evaluation", console: Any = None) -> None:
    """Rich table(s): one row per class and aggregation, then the policy text."""
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
        detection = {cls: red["lesion_detection"] for cls, red in classes.items() if red.get("lesion_detection")}
        if detection:
            console.print(lesion_detection_table(f"{name}: lesion detection", detection))
        rule = (summary.get("policy") or {}).get("empty_reference", DEFAULT_EMPTY_REFERENCE)
        for line in empty_reference_lines(classes, rule):
            console.print(line, highlight=False, soft_wrap=True)
    policy = summary.get("policy") or {}
    if policy.get("text"):
        console.print(f"[dim]policy: {policy['text']}[/dim]", highlight=False)
