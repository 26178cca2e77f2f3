"""Lesion detection (bench.metrics.lesions) on hand-made volumes whose lesions are known.

Each test builds reference and predicted masks voxel by voxel and asserts the exact counts:
split, merged, diagonal-touching (connectivity), missed, false positive, size bins under an
anisotropic spacing, a patient without lesions, and the pooled scores from summed counts.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.metrics.lesions import (
    LESION_COUNT_COLUMNS,
    equivalent_diameter_mm,
    lesion_detection,
    lesion_scores,
    pooled,
)

ISO = (1.0, 1.0, 1.0)


def vol(shape=(12, 12, 12)) -> np.ndarray:
    return np.zeros(shape, dtype=bool)


def test_missed_and_false_positive():
    ref, pred = vol(), vol()
    ref[1:3, 1:3, 1:3] = True  # found
    ref[6:8, 6:8, 6:8] = True  # missed
    pred[1:3, 1:3, 1:2] = True  # half of the first lesion (IoU 0.5: not > 0.5)
    pred[9:11, 1:3, 9:11] = True  # a false positive far from any lesion
    c = lesion_detection(pred, ref, ISO, match="overlap")
    assert (c.n_ref_lesions, c.n_detected, c.n_pred_lesions, c.n_pred_matched, c.fp_lesions) == (2, 1, 2, 1, 1)
    strict = lesion_detection(pred, ref, ISO, match="iou50")
    assert (strict.n_detected, strict.n_pred_matched, strict.fp_lesions) == (0, 0, 2)
    pred[1:3, 1:3, 2] = True  # now the whole first lesion: IoU 1
    strict = lesion_detection(pred, ref, ISO, match="iou50")
    assert (strict.n_detected, strict.n_pred_matched, strict.fp_lesions) == (1, 1, 1)
    s = lesion_scores(strict.as_dict())
    assert s["lesion_recall"] == 0.5 and s["lesion_precision"] == 0.5 and s["lesion_f1"] == 0.5


def test_split_one_lesion_predicted_as_two_components():
    ref, pred = vol(), vol()
    ref[2:6, 2:4, 2:4] = True  # one lesion of 16 voxels
    pred[2:4, 2:4, 2:4] = True  # its upper half ...
    pred[5:6, 2:4, 2:4] = True  # ... and its last slice, a separate component (slice 4 missing)
    for match in ("overlap", "iou50"):  # group IoU 12/16 = 0.75: both components are the one lesion
        c = lesion_detection(pred, ref, ISO, match=match)
        assert (c.n_ref_lesions, c.n_detected, c.n_pred_lesions, c.n_pred_matched, c.fp_lesions) == (1, 1, 2, 2, 0)


def test_merged_two_lesions_covered_by_one_component():
    ref, pred = vol(), vol()
    ref[2:4, 2:4, 2:4] = True
    ref[2:4, 2:4, 5:7] = True  # a second lesion, one voxel column apart
    pred[2:4, 2:4, 2:7] = True  # one component over both and the gap
    c = lesion_detection(pred, ref, ISO, match="overlap")
    assert (c.n_ref_lesions, c.n_detected, c.n_pred_lesions, c.n_pred_matched) == (2, 2, 1, 1)
    c = lesion_detection(pred, ref, ISO, match="iou50")  # group IoU 16/20 = 0.8
    assert (c.n_detected, c.n_pred_matched) == (2, 1)
    pred[0:6, 0:6, 2:7] = True  # grown far beyond both: group IoU 16/180 -> the group fails as a whole
    c = lesion_detection(pred, ref, ISO, match="iou50")
    assert (c.n_detected, c.n_pred_matched, c.fp_lesions) == (0, 0, 1)


def test_diagonal_touching_voxels_depend_on_connectivity():
    ref, pred = vol(), vol()
    ref[3, 3, 3] = ref[4, 4, 4] = True  # corner neighbours only
    pred[3, 3, 3] = True
    c26 = lesion_detection(pred, ref, ISO, connectivity=3)
    assert (c26.n_ref_lesions, c26.n_detected) == (1, 1)  # one lesion, found
    c6 = lesion_detection(pred, ref, ISO, connectivity=1)
    assert (c6.n_ref_lesions, c6.n_detected) == (2, 1)  # two lesions, one missed
    ref[6, 6, 7] = ref[6, 7, 8] = True  # edge neighbours: one lesion from 18-connectivity on
    assert lesion_detection(pred, ref, ISO, connectivity=2).n_ref_lesions == 3
    assert lesion_detection(pred, ref, ISO, connectivity=1).n_ref_lesions == 4


def test_size_bins_use_the_anisotropic_spacing():
    spacing = (5.0, 0.8, 0.8)  # thick slices, fine pixels: 3.2 mm^3 per voxel
    ref, pred = vol((10, 40, 40)), vol((10, 40, 40))
    ref[0, 0:2, 0:2] = True  # 4 voxels = 12.8 mm^3 -> d = 2.9 mm
    ref[0:2, 10:20, 10:20] = True  # 200 voxels = 640 mm^3 -> d = 10.7 mm
    ref[3:10, 20:40, 20:40] = True  # 2800 voxels = 8960 mm^3 -> d = 25.8 mm
    pred[5, 30, 30] = True  # finds the large one only
    d = equivalent_diameter_mm(np.array([4, 200, 2800]), spacing)
    assert d[0] < 10 and 10 <= d[1] <= 20 and d[2] > 20
    assert d[1] == pytest.approx((6 * 640 / math.pi) ** (1 / 3))
    c = lesion_detection(pred, ref, spacing).as_dict()
    assert (c["ref_lt10"], c["ref_10to20"], c["ref_gt20"]) == (1, 1, 1)
    assert (c["det_lt10"], c["det_10to20"], c["det_gt20"]) == (0, 0, 1)
    # the same voxels at 1 mm: 200 voxels -> d = 7.3 mm (small), 2800 -> d = 17.5 mm (middle)
    iso = lesion_detection(pred, ref, ISO).as_dict()
    assert (iso["ref_lt10"], iso["ref_10to20"], iso["ref_gt20"]) == (2, 1, 0)
    assert (iso["det_lt10"], iso["det_10to20"], iso["det_gt20"]) == (0, 1, 0)
    s = lesion_scores(c)
    assert s["lesion_recall_gt20"] == 1.0 and s["lesion_recall_lt10"] == 0.0


def test_patient_without_lesions_recall_nan_false_positives_counted():
    ref, pred = vol(), vol()
    pred[1, 1, 1] = pred[8, 8, 8] = True
    c = lesion_detection(pred, ref, ISO)
    assert (c.n_ref_lesions, c.n_detected, c.n_pred_lesions, c.fp_lesions) == (0, 0, 2, 2)
    s = lesion_scores(c.as_dict())
    assert math.isnan(s["lesion_recall"]) and s["lesion_precision"] == 0.0 and math.isnan(s["lesion_f1"])
    empty = lesion_scores(lesion_detection(vol(), vol(), ISO).as_dict())
    assert all(math.isnan(v) for v in empty.values())


def test_pooled_recall_from_summed_counts_not_mean_of_cases():
    a = {"n_ref_lesions": 1, "n_detected": 1, "n_pred_lesions": 1, "n_pred_matched": 1, "fp_lesions": 0}
    b = {"n_ref_lesions": 3, "n_detected": 0, "n_pred_lesions": 2, "n_pred_matched": 0, "fp_lesions": 2}
    c = {"n_ref_lesions": 0, "n_detected": 0, "n_pred_lesions": 1, "n_pred_matched": 0, "fp_lesions": 1}
    rows = []
    for counts in (a, b, c):
        row = {k: 0 for k in LESION_COUNT_COLUMNS}
        row.update(counts)
        rows.append(row)
    frame = pd.DataFrame(rows + [{k: np.nan for k in LESION_COUNT_COLUMNS}])  # a liver row: skipped
    p = pooled(frame)
    assert p["n_cases"] == 3 and p["n_cases_without_lesion"] == 1
    assert p["lesion_recall"] == 0.25  # 1 of 4 lesions, not the mean of 1.0 and 0.0
    assert p["lesion_precision"] == 0.25 and p["fp_lesions_per_case"] == 1.0


def test_bad_rule_is_refused():
    with pytest.raises(ValueError, match="lesion match"):
        lesion_detection(vol(), vol(), ISO, match="any")
    with pytest.raises(ValueError, match="connectivity"):
        lesion_detection(vol(), vol(), ISO, connectivity=4)
