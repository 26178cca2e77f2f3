"""Scores from counts (paper Eq. 9-12, LiTS VOE/RVD) and the two reductions every table reports.

Why one module: Accuracy, Dice, IoU, mIoU, VOE and RVD are each defined once here (one function
per metric), vectorised over numpy arrays of counts, and both reductions call the same functions:

* ``mean``   - score each case (3-D volume), then average over cases; NaN cases are left out.
* ``global`` - sum the counts over cases, then score once (large livers weigh more).

Empty rule (nnU-Net's): when reference and prediction are both empty for a class
(tp + fp + fn == 0), Dice, IoU and mIoU are NaN - never a silent 1.0 or 0.0 - excluded from
the mean and counted as ``n_excluded``. Accuracy stays defined (it is 1.0 there) and its mean
covers every case. mIoU is the mean of background IoU ``tn / (tn + fp + fn)`` and foreground
IoU (Eq. 12 with C = 2); if a volume has no background in either mask, mIoU is the foreground IoU.

The LiTS challenge's count metrics (Bilic et al., "The Liver Tumor Segmentation Benchmark
(LiTS)", Medical Image Analysis 84, 2023), from the same four counts, no surface pass needed:

* VOE (volume overlap error) = 1 - IoU = 1 - TP / (TP + FP + FN); NaN exactly when IoU is NaN
  (both masks empty: excluded and counted); 1.0 when only one mask is empty.
* RVD (relative volume difference, signed) = (|pred| - |ref|) / |ref| = (FP - FN) / (TP + FN),
  the paper's definition: positive = over-segmentation, -1.0 = an empty prediction. Empty
  reference (TP + FN == 0): NaN, excluded from the mean and counted (``excluded["rvd"]``) - also
  when the prediction is not empty, since no relative difference to nothing exists. (The LiTS
  evaluation script calls medpy's ``ravd(reference, prediction)``, i.e. the opposite sign and
  the prediction as denominator; we follow the paper's formula.) Its ``global`` form is the RVD
  of the summed volumes.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

METRICS = ("accuracy", "dice", "iou", "miou", "voe", "rvd")
# Computed by bench.metrics.surface in one surface-distance pass (``--surface``); no global form.
SURFACE_METRICS = ("hd95", "nsd", "assd", "mssd", "rmsd")
COUNT_COLUMNS = ("tp", "fp", "fn", "tn")


def _arrays(*values: Any) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(v, dtype=np.float64) for v in values)


def accuracy(tp: Any, fp: Any, fn: Any, tn: Any) -> np.ndarray:
    """(TP + TN) / N (Eq. 9); NaN only for an empty volume."""
    tp, fp, fn, tn = _arrays(tp, fp, fn, tn)
    n = tp + fp + fn + tn
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, (tp + tn) / n, np.nan)


def dice(tp: Any, fp: Any, fn: Any) -> np.ndarray:
    """2 TP / (2 TP + FP + FN) (Eq. 10); NaN when both masks are empty."""
    tp, fp, fn = _arrays(tp, fp, fn)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tp + fp + fn > 0, 2.0 * tp / (2.0 * tp + fp + fn), np.nan)


def iou(tp: Any, fp: Any, fn: Any) -> np.ndarray:
    """Foreground IoU TP / (TP + FP + FN) (Eq. 11); NaN when both masks are empty."""
    tp, fp, fn = _arrays(tp, fp, fn)
    fg = tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(fg > 0, tp / fg, np.nan)


def miou(tp: Any, fp: Any, fn: Any, tn: Any) -> np.ndarray:
    """Mean of background IoU TN / (TN + FP + FN) and foreground IoU (Eq. 12, C = 2)."""
    tp, fp, fn, tn = _arrays(tp, fp, fn, tn)
    fg_iou = iou(tp, fp, fn)
    bg = tn + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        bg_iou = np.where(bg > 0, tn / bg, fg_iou)
    return np.where(tp + fp + fn > 0, 0.5 * (fg_iou + bg_iou), np.nan)


def voe(tp: Any, fp: Any, fn: Any) -> np.ndarray:
    """Volume overlap error 1 - IoU (LiTS); NaN when both masks are empty."""
    return 1.0 - iou(tp, fp, fn)


def rvd(tp: Any, fp: Any, fn: Any) -> np.ndarray:
    """Signed relative volume difference (|pred| - |ref|) / |ref| = (FP - FN) / (TP + FN) (LiTS).

    NaN when the reference is empty (whatever the prediction holds): excluded and counted.
    """
    tp, fp, fn = _arrays(tp, fp, fn)
    ref = tp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ref > 0, (fp - fn) / ref, np.nan)


def scores_from_counts(tp: Any, fp: Any, fn: Any, tn: Any) -> dict[str, Any]:
    """{accuracy, dice, iou, miou, voe, rvd}; floats for scalar counts, float64 arrays for array counts."""
    scalar = all(np.ndim(v) == 0 for v in (tp, fp, fn, tn))
    tp, fp, fn, tn = _arrays(tp, fp, fn, tn)
    out = {
        "accuracy": accuracy(tp, fp, fn, tn),
        "dice": dice(tp, fp, fn),
        "iou": iou(tp, fp, fn),
        "miou": miou(tp, fp, fn, tn),
        "voe": voe(tp, fp, fn),
        "rvd": rvd(tp, fp, fn),
    }
    if scalar:
        return {k: float(v) for k, v in out.items()}
    return out


def case_mean(values: Any) -> float:
    """Mean over cases with NaN cases left out (the empty rule); NaN when every case is NaN.

    The one per-case reduction: tables (`reduce_cases`), epoch selection and Algorithm 1's
    per-iteration scores all call it.
    """
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = arr[~np.isnan(arr)]
    return float(finite.mean()) if finite.size else math.nan


def _counts_array(counts: Any) -> np.ndarray:
    """(n_cases, 4) int64 from a DataFrame with tp/fp/fn/tn columns or an array-like."""
    if hasattr(counts, "columns"):
        missing = [c for c in COUNT_COLUMNS if c not in counts.columns]
        if missing:
            raise ValueError(f"per-case table lacks columns {missing}")
        arr = counts[list(COUNT_COLUMNS)].to_numpy()
    else:
        arr = np.asarray(counts)
    arr = np.asarray(arr, dtype=np.int64).reshape(-1, 4)
    return arr


def reduce_cases(counts: Any, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Both reductions for one class: {"mean", "global", "n_cases", "n_excluded", "excluded"}.

    ``counts``: (n_cases, 4) [tp, fp, fn, tn] or a per-case DataFrame of one class (its surface
    columns, `SURFACE_METRICS`, when present, are averaged too). ``extra``: more per-case metric arrays to
    average (surface metrics); they have no ``global`` form. ``excluded`` gives the NaN count of
    every metric; ``n_excluded`` is the empty-rule count (Dice NaN).
    """
    arr = _counts_array(counts)
    per_case = scores_from_counts(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3])
    more: dict[str, np.ndarray] = {}
    if hasattr(counts, "columns"):
        for m in SURFACE_METRICS:
            if m in counts.columns:
                more[m] = counts[m].to_numpy(dtype=np.float64)
    for k, v in (extra or {}).items():
        more[k] = np.asarray(v, dtype=np.float64).reshape(-1)
    totals = arr.sum(axis=0)
    glob = scores_from_counts(*(int(t) for t in totals))
    mean: dict[str, float] = {}
    excluded: dict[str, int] = {}
    for name, values in {**per_case, **more}.items():
        excluded[name] = int(np.isnan(values).sum())
        mean[name] = case_mean(values)
    return {
        "mean": mean,
        "global": glob,
        "n_cases": int(arr.shape[0]),
        "n_excluded": excluded["dice"],
        "excluded": excluded,
    }
