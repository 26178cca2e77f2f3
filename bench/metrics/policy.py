"""The evaluation policy, written once: every summary.json carries it, every table prints it.

Why one module: the rules a number is computed under (the unit, the classes, each metric's
formula, the empty-mask rule, the reductions, lesion detection) must read the same wherever the
number appears. `evaluation_policy` is the full, structured policy saved in each summary.json
(`bench.metrics.results.write_evaluation`); `TABLE_POLICY` is its one-paragraph form printed in
every table's provenance (`bench.reports.tables`); the lesion-detection rules come from
`bench.metrics.lesions` (one definition of each rule, named here in words).
"""

from __future__ import annotations

from typing import Any

from bench.metrics.lesions import IOU_THRESHOLD, SIZE_BIN_LABELS
from bench.metrics.scores import DEFAULT_EMPTY_REFERENCE, check_empty_reference
from bench.metrics.surface import DEFAULT_CONNECTIVITY, DEFAULT_TOLERANCE_MM

_NEIGHBOURS = {1: "6 (faces)", 2: "18 (faces + edges)", 3: "26 (faces + edges + corners)"}


def empty_reference_text(rule: str) -> str:
    """The empty-mask and empty-reference rules in words (`bench.metrics.scores`), under ``rule``
    (``evaluate.empty_reference``): summary.json's ``empty``, its one-line text and every table's policy."""
    check_empty_reference(rule)
    both = ("reference and prediction both empty for a class: Dice/IoU/mIoU/VOE/RVD = NaN, excluded from the mean "
            "and counted (n_excluded), never 1.0 or 0.0")
    if rule == "nan":
        return (f"{both}; an empty reference (a lesion-free patient) makes them NaN whatever the prediction "
                f"(evaluate.empty_reference=nan): excluded from the mean and counted (n_empty_reference), the case "
                f"is judged by its false-positive voxels (fp) and lesions (fp_lesions); accuracy stays defined; "
                f"global scores still count its false-positive voxels")
    return (f"{both}; empty reference, non-empty prediction (evaluate.empty_reference=zero, nnU-Net's convention): "
            f"Dice = IoU = 0, VOE = 1, mIoU = half the background IoU, in the mean; RVD NaN (counted); the "
            f"empty-reference cases are counted (n_empty_reference) with their false-positive voxels and lesions")


def table_policy(rule: str = DEFAULT_EMPTY_REFERENCE) -> str:
    """The policy paragraph printed with every table (provenance "policy"); the structured form is
    `evaluation_policy`."""
    return ("Accuracy, Dice, mIoU (mean of background and foreground IoU, Eq. 12) per 3-D case; "
            f"{empty_reference_text(rule)}; 'mean' = mean over cases, 'global' = from summed TP/FP/FN/TN")


# printed with the tables of runs scored under the default rule (`table_policy` for another)
TABLE_POLICY = table_policy()


def lesion_match_text(match: str) -> str:
    """One sentence: when a reference lesion counts as detected under ``match``."""
    if match == "overlap":
        return "a reference lesion is detected when a predicted component overlaps it by at least one voxel"
    return (f"overlapping reference and predicted components form groups (split and merged lesions); a group's "
            f"lesions are detected and its components matched when the IoU of the group's reference and "
            f"predicted unions exceeds {IOU_THRESHOLD} (LiTS, Bilic et al. 2023)")


def lesion_policy(match: str, connectivity: int) -> dict[str, Any]:
    """The lesion-detection rules as saved in summary.json."""
    return {
        "lesions": f"3-D connected components per case, {_NEIGHBOURS[connectivity]}-neighbourhood "
                   f"(connectivity {connectivity}), in the reference and the prediction separately",
        "match": match,
        "detected": lesion_match_text(match),
        "recall": "detected reference lesions / reference lesions (pooled: summed counts over cases)",
        "precision": "matched predicted components / predicted components",
        "f1": "2 precision recall / (precision + recall)",
        "fp_lesions": "predicted components matched to no reference lesion, per case",
        "size_bins": "equivalent sphere diameter (6 V / pi)^(1/3) of the reference lesion, V in mm^3 from the "
                     "case's spacing: " + ", ".join(SIZE_BIN_LABELS.values()),
        "empty": "no reference lesion: recall NaN (counted, n_cases_without_lesion); its false-positive "
                 "lesions still count. No predicted component: precision NaN",
        "connectivity": connectivity,
    }


def lesion_policy_text(match: str, connectivity: int) -> str:
    """The lesion-detection rules in one line (tables, printed summaries)."""
    return (f"Lesion detection: 3-D components ({_NEIGHBOURS[connectivity]} neighbours); {lesion_match_text(match)}; "
            f"recall/precision/F1 from counts summed over cases; a patient without lesions: recall NaN, "
            f"false-positive lesions counted.")


def evaluation_policy(surface: bool = False, tolerance_mm: float | None = None,
                      connectivity: int | None = None, lesion: tuple[str, int] | None = None,
                      empty_reference: str = DEFAULT_EMPTY_REFERENCE) -> dict[str, Any]:
    """The declared evaluation rules, saved in every summary.json (`bench.metrics.results`).

    ``tolerance_mm`` / ``connectivity`` default to the surface module's defaults when ``surface``.
    ``lesion``: (match rule, connectivity) of the lesion detection (`bench.metrics.lesions`) when the
    lesion class is scored; adds its rules. ``empty_reference``: the rule value (``evaluate.empty_reference``),
    recorded as ``policy["empty_reference"]``; the results writer computes every score under it.
    """
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
        "empty": empty_reference_text(empty_reference) + (
            "; accuracy's mean covers every case; rvd is NaN for any empty reference (no relative difference to "
            "an empty volume; counted per metric in 'excluded')"),
        "empty_reference": empty_reference,
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
    rule = empty_reference_text(empty_reference)
    policy["text"] = (
        "Per-case (3-D volume) TP/FP/FN/TN; liver = label >= 1, lesion = label == 2. "
        f"{rule[0].upper()}{rule[1:]}. "
        "'mean' averages cases; 'global' scores summed counts. "
        "mIoU = mean(background IoU, foreground IoU); VOE = 1 - IoU; RVD = (|pred| - |ref|) / |ref|."
    )
    if lesion is not None:
        policy["lesion_detection"] = lesion_policy(*lesion)
        policy["text"] += " " + lesion_policy_text(*lesion)
    if surface:
        policy["text"] += (" Surface distances (mm, case spacing): one mask empty -> NaN, counted; "
                           "ASSD/RMSD average over the union of both surfaces.")
    return policy


