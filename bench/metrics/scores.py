"""Scores from counts (paper Eq. 9-12) and the two reductions every table reports.

Why one module: Accuracy, Dice, IoU and mIoU are each defined once here, vectorised over numpy
arrays of counts, and both reductions call the same function:

* ``mean``   - score each case (3-D volume), then average over cases; NaN cases are left out.
* ``global`` - sum the counts over cases, then score once (large livers weigh more).

Empty rule (nnU-Net's): when reference and prediction are both empty for a class
(tp + fp + fn == 0), Dice, IoU and mIoU are NaN - never a silent 1.0 or 0.0 - excluded from
the mean and counted as ``n_excluded``. Accuracy stays defined (it is 1.0 there) and its mean
covers every case. mIoU is the mean of background IoU ``tn / (tn + fp + fn)`` and foreground
IoU (Eq. 12 with C = 2); if a volume has no background in either mask, mIoU is the foreground IoU.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

METRICS = ("accuracy", "dice", "iou", "miou")
SURFACE_METRICS = ("hd95", "nsd")
COUNT_COLUMNS = ("tp", "fp", "fn", "tn")


def scores_from_counts(tp: Any, fp: Any, fn: Any, tn: Any) -> dict[str, Any]:
    """{accuracy, dice, iou, miou}; floats for scalar counts, float64 arrays for array counts."""
    scalar = all(np.ndim(v) == 0 for v in (tp, fp, fn, tn))
    tp, fp, fn, tn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn, tn))
    n = tp + fp + fn + tn
    fg = tp + fp + fn
    bg = tn + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = np.where(n > 0, (tp + tn) / n, np.nan)
        dice = np.where(fg > 0, 2.0 * tp / (2.0 * tp + fp + fn), np.nan)
        iou = np.where(fg > 0, tp / fg, np.nan)
        iou_bg = np.where(bg > 0, tn / bg, iou)
        miou = np.where(fg > 0, 0.5 * (iou + iou_bg), np.nan)
    out = {"accuracy": accuracy, "dice": dice, "iou": iou, "miou": miou}
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
    columns hd95/nsd, when present, are averaged too). ``extra``: more per-case metric arrays to
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
