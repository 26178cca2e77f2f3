"""Scores from counts (paper Eq. 9-12, LiTS VOE/RVD) and the two reductions every table reports.

Why one module: Accuracy, Dice, IoU, mIoU, VOE and RVD are each defined once here (one function
per metric), vectorised over numpy arrays of counts, and both reductions call the same functions:

* ``mean``   - score each case (3-D volume), then average over cases; NaN cases are left out.
* ``global`` - sum the counts over cases, then score once (large livers weigh more).

Empty rule: when reference and prediction are both empty for a class (tp + fp + fn == 0), Dice,
IoU and mIoU are NaN - never a silent 1.0 or 0.0 - excluded from the mean and counted as
``n_excluded``. Accuracy stays defined (it is 1.0 there) and its mean covers every case. mIoU is
the mean of background IoU ``tn / (tn + fp + fn)`` and foreground IoU (Eq. 12 with C = 2); if a
volume has no background in either mask, mIoU is the foreground IoU.

Empty-reference rule (``evaluate.empty_reference``, `scores_from_counts`'s ``empty_reference``): a
case whose reference is empty for a class (tp + fn == 0: a patient without a liver lesion) but
whose prediction is not.

* ``nan`` (default): Dice, IoU, mIoU and VOE are NaN there too (RVD already is), left out of the
  mean and counted (``n_empty_reference`` = every empty-reference case; ``n_excluded`` = every NaN
  case, so the two agree under this rule). Why: such a case has no overlap to measure; its Dice is 0
  for one false-positive voxel as for a million, so averaging that 0 with the lesion-bearing
  patients' Dice measures false positives inside an overlap mean (a lesion-free patient drags the
  mean lesion Dice toward 0). Its false-positive voxels (``fp``) and false-positive lesions
  (``fp_lesions``, `bench.metrics.lesions`) are the numbers that judge it (`empty_reference_summary`).
  mIoU follows IoU although its background IoU is still defined: mIoU averages the two classes'
  IoU, and with the foreground IoU undefined what remains is the background IoU alone - about 1.0
  on a lesion-free patient, the opposite bias - a different quantity mixed into the same mean.
* ``zero``: nnU-Net's convention (its ``compute_metrics``): Dice = IoU = 0, VOE = 1, mIoU = half the
  background IoU; the case enters the mean.

Accuracy stays defined under both. The ``global`` form scores the summed counts as one case under
the same rule, so it differs only when a whole split has no reference voxel; otherwise a lesion-free
case's false-positive voxels still lower the global Dice (they are in the summed FP).

The LiTS challenge's count metrics (Bilic et al., "The Liver Tumor Segmentation Benchmark
(LiTS)", Medical Image Analysis 84, 2023), from the same four counts, no surface pass needed:

* VOE (volume overlap error) = 1 - IoU = 1 - TP / (TP + FP + FN); NaN exactly when IoU is NaN
  (both masks empty, or an empty reference under the ``nan`` rule: excluded and counted); 1.0 when
  only the prediction is empty (and, under ``zero``, when only the reference is).
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

from bench.config import EMPTY_REFERENCE_RULES, EvaluateConfig

METRICS = ("accuracy", "dice", "iou", "miou", "voe", "rvd")
DEFAULT_EMPTY_REFERENCE = EvaluateConfig().empty_reference  # "nan": evaluate.empty_reference's default
# the scores an empty reference leaves undefined under the ``nan`` rule (rvd already is under both)
EMPTY_REFERENCE_NAN = ("dice", "iou", "miou", "voe")
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


def check_empty_reference(rule: str) -> str:
    """``rule`` when it is an empty-reference rule, else a ValueError naming the choices."""
    if rule not in EMPTY_REFERENCE_RULES:
        raise ValueError(f"empty-reference rule {rule!r} is not one of {', '.join(EMPTY_REFERENCE_RULES)}")
    return rule


def is_empty_reference(tp: Any, fn: Any) -> np.ndarray:
    """Cases whose reference is empty for the class (tp + fn == 0): the one test of the empty-reference rule."""
    tp, fn = _arrays(tp, fn)
    return (tp + fn) == 0


def scores_from_counts(tp: Any, fp: Any, fn: Any, tn: Any,
                       empty_reference: str = DEFAULT_EMPTY_REFERENCE) -> dict[str, Any]:
    """{accuracy, dice, iou, miou, voe, rvd}; floats for scalar counts, float64 arrays for array counts.

    ``empty_reference``: ``nan`` or ``zero``, the rule for an empty reference (module docstring).
    """
    check_empty_reference(empty_reference)
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
    if empty_reference == "nan":
        empty = is_empty_reference(tp, fn)
        for name in EMPTY_REFERENCE_NAN:
            out[name] = np.where(empty, np.nan, out[name])
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


def empty_reference_summary(counts: Any) -> dict[str, Any]:
    """The cases with an empty reference and what judges them: {"n_cases", "fp_voxels_per_case"
    [, "fp_lesions_per_case"]}, means over those cases (NaN when there are none).

    ``counts``: as `reduce_cases`; a per-case DataFrame's ``fp_lesions`` column (lesion detection,
    `bench.metrics.lesions`) adds the false-positive lesions. Whatever the rule, these are the numbers
    a lesion-free patient is scored by (summary.json's ``empty_reference``).
    """
    arr = _counts_array(counts)
    empty = is_empty_reference(arr[:, 0], arr[:, 2])
    out: dict[str, Any] = {"n_cases": int(empty.sum()),
                           "fp_voxels_per_case": float(arr[empty, 1].mean()) if empty.any() else math.nan}
    if hasattr(counts, "columns") and "fp_lesions" in counts.columns:
        fp_lesions = np.asarray(counts["fp_lesions"], dtype=np.float64)[empty]
        out["fp_lesions_per_case"] = case_mean(fp_lesions)
    return out


def reduce_cases(counts: Any, extra: Mapping[str, Any] | None = None,
                 empty_reference: str = DEFAULT_EMPTY_REFERENCE) -> dict[str, Any]:
    """Both reductions for one class: {"mean", "global", "n_cases", "n_excluded", "n_empty_reference", "excluded"}.

    ``counts``: (n_cases, 4) [tp, fp, fn, tn] or a per-case DataFrame of one class (its surface
    columns, `SURFACE_METRICS`, when present, are averaged too). ``extra``: more per-case metric arrays to
    average (surface metrics); they have no ``global`` form. ``excluded`` gives the NaN count of
    every metric; ``n_excluded`` is the empty-rule count (Dice NaN); ``n_empty_reference`` the cases
    whose reference is empty (all of them NaN and excluded under ``empty_reference="nan"``; under
    ``zero`` only those with an empty prediction too).
    """
    arr = _counts_array(counts)
    per_case = scores_from_counts(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], empty_reference)
    more: dict[str, np.ndarray] = {}
    if hasattr(counts, "columns"):
        for m in SURFACE_METRICS:
            if m in counts.columns:
                more[m] = counts[m].to_numpy(dtype=np.float64)
    for k, v in (extra or {}).items():
        more[k] = np.asarray(v, dtype=np.float64).reshape(-1)
    totals = arr.sum(axis=0)
    glob = scores_from_counts(*(int(t) for t in totals), empty_reference=empty_reference)
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
        "n_empty_reference": int(is_empty_reference(arr[:, 0], arr[:, 2]).sum()),
        "excluded": excluded,
    }
