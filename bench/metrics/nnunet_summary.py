"""Our evaluation in nnU-Net v2's ``summary.json`` schema, so nnU-Net's own tools can read it.

Written beside our ``summary.json`` by the one results writer (`bench.metrics.results.write_evaluation`):
``summary_nnunet.json`` for ``bench score`` (one split), ``summary_nnunet_<split>.json`` for a run
(nnU-Net's file has no split level; one file per split keeps val and test apart). The schema is that
of ``nnunetv2.evaluation.evaluate_predictions.compute_metrics_on_folder`` / ``save_summary_json``::

    {"metric_per_case": [{"metrics": {KEY: {"Dice", "IoU", "FP", "TP", "FN", "TN", "n_pred", "n_ref"}},
                          "prediction_file": ..., "reference_file": ...}, ...],
     "mean": {KEY: {same metrics: nanmean over cases}},
     "foreground_mean": {same metrics: mean of the per-KEY means over every KEY but background 0}}

KEY is nnU-Net's string of a label or region (``load_summary_json`` turns ``"2"`` back into ``2`` and
``"(1, 2)"`` into the region ``(1, 2)``), so a name such as "liver" cannot be a key. Our classes map to:

* liver = label >= 1 (liver including lesions, the LiTS scoring rule) = nnU-Net **region** ``(1, 2)``;
* lesion = label == 2 = nnU-Net **label** ``2``.

nnU-Net evaluated with plain labels (``nnUNetv2_evaluate_simple -l 1 2``) scores label ``1`` = liver
*without* its lesions, a different quantity: on the same files its label-1 Dice was 0.8456 where our
liver Dice (region ``(1, 2)``) was 0.8406. Compare our liver with nnU-Net's region ``(1, 2)`` only.
``regions`` (an extra top-level key, ignored by nnU-Net's loader) names each KEY.

NaN, as in nnU-Net: a case whose reference and prediction are both empty for a class has Dice and
IoU NaN (counted, left out of ``mean`` by nanmean); an empty reference with a non-empty prediction
has Dice = IoU = 0 here whatever our ``evaluate.empty_reference`` rule (nnU-Net's own convention,
`bench.metrics.scores`' ``zero``), so this file reads as nnU-Net would have written it; NaN is written as the literal ``NaN`` that
nnU-Net's own summaries contain (Python's json reads it back), not as our files' ``null``.
Files: for ``bench score`` the scored files (``null`` for a missing prediction, scored as empty);
a run predicts in memory, so its case id stands in for both file names.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from bench.atomic import write_text
from bench.metrics.scores import scores_from_counts

# our class -> (nnU-Net key, what it is)
NNUNET_KEYS: dict[str, tuple[str, str]] = {
    "liver": ("(1, 2)", "liver: labels 1 and 2 (label >= 1, the LiTS rule; nnU-Net's label 1 alone excludes lesions)"),
    "lesion": ("2", "lesion: label 2"),
}
NNUNET_METRICS = ("Dice", "IoU", "FP", "TP", "FN", "TN", "n_pred", "n_ref")
FILE_NAME = "summary_nnunet.json"


def nnunet_file_name(split: str | None = None) -> str:
    """``summary_nnunet.json`` (no split, or the single split ``all`` of `bench score`), else ``summary_nnunet_<split>.json``."""
    return FILE_NAME if split in (None, "all") else f"summary_nnunet_{split}.json"


def _case_metrics(row: Mapping[str, Any]) -> dict[str, float | int]:
    tp, fp, fn, tn = (int(row[c]) for c in ("tp", "fp", "fn", "tn"))
    s = scores_from_counts(tp, fp, fn, tn, empty_reference="zero")  # nnU-Net's convention (module docstring)
    return {"Dice": s["dice"], "IoU": s["iou"], "FP": fp, "TP": tp, "FN": fn, "TN": tn,
            "n_pred": tp + fp, "n_ref": tp + fn}


def nnunet_summary(per_case: pd.DataFrame,
                   case_files: Mapping[str, tuple[str | None, str | None]] | None = None) -> dict[str, Any]:
    """The nnU-Net-schema summary of one split's per-case table (columns case, class, tp, fp, fn, tn, dice, iou)."""
    classes = [c for c in NNUNET_KEYS if c in set(per_case["class"])]
    cases: list[dict[str, Any]] = []
    for case, part in per_case.groupby("case", sort=False):
        pred, ref = (case_files or {}).get(str(case), (str(case), str(case)))
        by_class = {row["class"]: row for row in part.to_dict("records")}
        cases.append({"metrics": {NNUNET_KEYS[c][0]: _case_metrics(by_class[c]) for c in classes if c in by_class},
                      "prediction_file": pred, "reference_file": ref})
    mean: dict[str, dict[str, float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of all-NaN is NaN, as in nnU-Net
        for c in classes:
            key = NNUNET_KEYS[c][0]
            mean[key] = {m: float(np.nanmean([case["metrics"][key][m] for case in cases if key in case["metrics"]]))
                         for m in NNUNET_METRICS}
        foreground = {m: float(np.mean([mean[k][m] for k in mean if k != "0"])) if mean else math.nan
                      for m in NNUNET_METRICS}
    return {"foreground_mean": foreground, "mean": mean, "metric_per_case": cases,
            "regions": {NNUNET_KEYS[c][0]: NNUNET_KEYS[c][1] for c in classes}}


def write_nnunet_summaries(out_dir: str | Path, per_case: pd.DataFrame, with_splits: bool,
                           case_files: Mapping[str, tuple[str | None, str | None]] | None = None) -> list[Path]:
    """One nnU-Net-schema file per split of ``per_case`` (one file without splits); returns the paths."""
    out = Path(out_dir)
    written: list[Path] = []
    splits: Sequence[str | None] = list(dict.fromkeys(per_case["split"])) if with_splits else [None]
    for split in splits:
        part = per_case if split is None else per_case[per_case["split"] == split]
        path = out / nnunet_file_name(split)
        # sort_keys and NaN as nnU-Net's save_json writes them
        write_text(path, json.dumps(nnunet_summary(part, case_files), indent=4, sort_keys=True) + "\n")
        written.append(path)
    return written
