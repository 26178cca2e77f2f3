"""Counts, scores, reductions, surface metrics and the results writer.

References are independent: plain numpy boolean algebra on the same arrays, hand-computed tiny
cases, and MONAI (DiceMetric, MeanIoU, Hausdorff, surface Dice) where its policy matches ours.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bench.errors import DataError
from bench.metrics.counts import (
    CountAccumulator,
    Counts,
    binary_counts,
    confusion_matrix,
    label_counts,
    sum_counts,
)
from bench.metrics.scores import METRICS, reduce_cases, scores_from_counts
from bench.metrics.surface import surface_metrics

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def numpy_counts(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int, int]:
    p = pred.astype(bool)
    r = ref.astype(bool)
    return (
        int(np.sum(p & r)),
        int(np.sum(p & ~r)),
        int(np.sum(~p & r)),
        int(np.sum(~p & ~r)),
    )


label_maps = st.tuples(st.integers(1, 6), st.integers(1, 9), st.integers(1, 9)).flatmap(
    lambda shape: st.tuples(
        arrays(np.uint8, shape, elements=st.integers(0, 2)),
        arrays(np.uint8, shape, elements=st.integers(0, 2)),
    )
)


# ----------------------------------------------------------------- counts


def test_hand_computed_label_counts() -> None:
    ref = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    pred = np.array([[0, 2, 2], [1, 1, 0]], np.uint8)
    c = label_counts(pred, ref)
    # liver: ref>=1 at 4 voxels, pred>=1 at the same 4 -> all hit
    assert c["liver"] == Counts(tp=4, fp=0, fn=0, tn=2)
    # lesion: ref==2 at (0,2),(1,0); pred==2 at (0,1),(0,2)
    assert c["lesion"] == Counts(tp=1, fp=1, fn=1, tn=3)
    cm = confusion_matrix(pred, ref).tolist()
    assert cm == [[2, 0, 0], [0, 1, 1], [0, 1, 1]]


def test_hand_computed_scores() -> None:
    s = scores_from_counts(tp=1, fp=2, fn=3, tn=4)
    assert s["accuracy"] == pytest.approx(5 / 10)
    assert s["dice"] == pytest.approx(2 / (2 + 2 + 3))
    assert s["iou"] == pytest.approx(1 / 6)
    assert s["miou"] == pytest.approx((1 / 6 + 4 / 9) / 2)


@SETTINGS
@given(label_maps, st.sampled_from([1, 5, 64, None]))
def test_label_counts_match_numpy(maps: tuple[np.ndarray, np.ndarray], chunk: int | None) -> None:
    pred, ref = maps
    cm = confusion_matrix(pred, ref, 3, chunk=chunk)
    from bench.metrics.counts import task_counts_from_confusion

    got = task_counts_from_confusion(cm)
    assert tuple(got[0]) == numpy_counts(pred >= 1, ref >= 1)
    assert tuple(got[1]) == numpy_counts(pred == 2, ref == 2)
    assert int(cm.sum()) == pred.size
    # the CPU byte-counting path (what label_counts uses on the CPU) gives the same integers
    from bench.metrics.counts import _cpu_task_counts

    assert _cpu_task_counts(pred, ref, 3, chunk=chunk).tolist() == got.tolist()
    assert _cpu_task_counts(pred >= 1, ref >= 1, 2, chunk=chunk).tolist() == [got[0].tolist()]


@SETTINGS
@given(label_maps, st.sampled_from(["bool", "uint8", "int16", "int64", "float32", "torch_bool", "torch_long"]))
def test_binary_counts_any_dtype(maps: tuple[np.ndarray, np.ndarray], kind: str) -> None:
    pred, ref = (m >= 1 for m in maps)
    expected = numpy_counts(pred, ref)
    convert = {
        "bool": lambda a: a,
        "uint8": lambda a: a.astype(np.uint8),
        "int16": lambda a: a.astype(np.int16),
        "int64": lambda a: a.astype(np.int64),
        "float32": lambda a: a.astype(np.float32),
        "torch_bool": lambda a: torch.from_numpy(a),
        "torch_long": lambda a: torch.from_numpy(a).long(),
    }[kind]
    assert binary_counts(convert(pred), convert(ref)).as_tuple() == expected


def test_non_contiguous_and_transposed_inputs() -> None:
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 3, (5, 7, 9), dtype=np.uint8)
    pred = rng.integers(0, 3, (5, 7, 9), dtype=np.uint8)
    a = label_counts(np.moveaxis(pred, 2, 0), np.moveaxis(ref, 2, 0))
    b = label_counts(pred, ref)
    c = label_counts(torch.from_numpy(pred).permute(2, 0, 1), torch.from_numpy(ref).permute(2, 0, 1))
    assert a == b == c


def test_identical_and_disjoint() -> None:
    ref = np.zeros((4, 8, 8), np.uint8)
    ref[1:3, 2:6, 2:6] = 1
    ref[1:3, 3:5, 3:5] = 2
    same = label_counts(ref, ref)
    for cls in ("liver", "lesion"):
        s = scores_from_counts(*same[cls].as_tuple())
        assert all(s[m] == 1.0 for m in ("accuracy", "dice", "iou", "miou")), (cls, s)
        assert s["voe"] == 0.0 and s["rvd"] == 0.0
    pred = np.zeros_like(ref)
    pred[0, 0:2, 0:2] = 2
    dis = label_counts(pred, ref)
    for cls in ("liver", "lesion"):
        s = scores_from_counts(*dis[cls].as_tuple())
        assert s["dice"] == 0.0 and s["iou"] == 0.0
        assert s["accuracy"] < 1.0


def test_empty_masks_are_nan_and_excluded() -> None:
    ref = np.zeros((3, 4, 4), np.uint8)
    ref[0, :2, :2] = 1  # liver but no lesion
    c = label_counts(ref, ref)
    lesion = scores_from_counts(*c["lesion"].as_tuple())
    assert math.isnan(lesion["dice"]) and math.isnan(lesion["iou"]) and math.isnan(lesion["miou"])
    assert lesion["accuracy"] == 1.0
    # empty reference, non-empty prediction: NaN by default (evaluate.empty_reference=nan), zero under "zero"
    pred = ref.copy()
    pred[2, 3, 3] = 2
    s = scores_from_counts(*label_counts(pred, ref)["lesion"].as_tuple())
    assert math.isnan(s["dice"]) and math.isnan(s["iou"]) and s["accuracy"] == pytest.approx(47 / 48)
    s = scores_from_counts(*label_counts(pred, ref)["lesion"].as_tuple(), empty_reference="zero")
    assert s["dice"] == 0.0 and s["iou"] == 0.0
    table = np.array([c["lesion"].as_tuple(), (3, 1, 0, 44), label_counts(pred, ref)["lesion"].as_tuple()])
    red = reduce_cases(table, empty_reference="zero")
    assert red["n_cases"] == 3 and red["n_excluded"] == 1 and red["n_empty_reference"] == 2
    assert red["mean"]["dice"] == pytest.approx((2 * 3 / 7 + 0.0) / 2)
    assert red["mean"]["accuracy"] == pytest.approx((1.0 + 47 / 48 + 47 / 48) / 3)
    g = table.sum(0)
    assert red["global"]["dice"] == pytest.approx(2 * g[0] / (2 * g[0] + g[1] + g[2]))
    red = reduce_cases(table)
    assert red["n_excluded"] == 2 and red["n_empty_reference"] == 2 and red["mean"]["dice"] == pytest.approx(6 / 7)
    assert red["mean"]["accuracy"] == pytest.approx((1.0 + 47 / 48 + 47 / 48) / 3)
    assert red["global"]["dice"] == pytest.approx(2 * g[0] / (2 * g[0] + g[1] + g[2]))


def test_all_empty_reduction_is_nan() -> None:
    red = reduce_cases(np.array([[0, 0, 0, 10], [0, 0, 0, 5]]))
    assert red["n_excluded"] == 2 and math.isnan(red["mean"]["dice"]) and math.isnan(red["global"]["dice"])
    assert red["mean"]["accuracy"] == 1.0


@SETTINGS
@given(st.lists(st.tuples(*(st.integers(0, 50) for _ in range(4))), min_size=1, max_size=8))
def test_scores_vectorised_equal_scalar(rows: list[tuple[int, int, int, int]]) -> None:
    arr = np.array(rows, dtype=np.int64)
    vec = scores_from_counts(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3])
    for i, row in enumerate(rows):
        one = scores_from_counts(*row)
        for m in METRICS:
            assert (math.isnan(one[m]) and math.isnan(vec[m][i])) or one[m] == pytest.approx(vec[m][i])
            if not math.isnan(one[m]):
                assert (-1.0 <= one[m]) if m == "rvd" else (0.0 <= one[m] <= 1.0), m


def test_int64_safe_totals() -> None:
    big = 3_000_000_000  # > 2**31, as a data set's summed voxels are
    red = reduce_cases(np.array([[big, 0, 0, big], [big, big, 0, 0]], dtype=np.int64))
    assert red["global"]["dice"] == pytest.approx(4 * big / (4 * big + big))
    assert sum_counts([Counts(big, 1, 2, 3), Counts(big, 0, 0, 0)]).tp == 2 * big


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_maps)
def test_dice_and_iou_match_monai(maps: tuple[np.ndarray, np.ndarray]) -> None:
    from monai.metrics import DiceMetric, MeanIoU

    pred, ref = maps
    counts = label_counts(pred, ref)
    for cls, fn in (("liver", lambda a: a >= 1), ("lesion", lambda a: a == 2)):
        p = torch.from_numpy(fn(pred)).float()[None, None]
        r = torch.from_numpy(fn(ref)).float()[None, None]
        if r.sum() == 0:  # MONAI's empty-reference rule differs (documented in our policy)
            continue
        onehot_p = torch.cat([1 - p, p], 1)
        onehot_r = torch.cat([1 - r, r], 1)
        ours = scores_from_counts(*counts[cls].as_tuple())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dice = DiceMetric(include_background=False, reduction="none")(onehot_p, onehot_r)
            iou = MeanIoU(include_background=False, reduction="none")(onehot_p, onehot_r)
            both = MeanIoU(include_background=True, reduction="none")(onehot_p, onehot_r).mean()
        assert ours["dice"] == pytest.approx(float(dice), abs=1e-6)
        assert ours["iou"] == pytest.approx(float(iou), abs=1e-6)
        if (1 - r).sum() > 0:  # background present: mIoU = MONAI's mean over both channels
            assert ours["miou"] == pytest.approx(float(both), abs=1e-6)


def test_bad_inputs() -> None:
    a = np.zeros((2, 3, 4), np.uint8)
    with pytest.raises(DataError, match="shape"):
        label_counts(a, np.zeros((2, 3, 5), np.uint8))
    with pytest.raises(DataError, match="label value 3"):
        label_counts(a + 3, a)
    with pytest.raises(DataError, match="outside"):
        label_counts(a.astype(np.int64) + 258, a)  # would wrap to 2 in uint8
    with pytest.raises(DataError, match=">= 0"):
        label_counts(a.astype(np.int16) - 1, a)
    with pytest.raises(DataError, match="whole numbers"):
        binary_counts(a + 0.5, a)
    with pytest.raises(DataError, match="label value 2"):
        binary_counts(a + 2, a)


# ----------------------------------------------------------------- accumulator


def test_accumulator_matches_per_case_counts() -> None:
    rng = np.random.default_rng(3)
    cases = [(rng.integers(0, 3, (4, 6, 6)), rng.integers(0, 3, (4, 6, 6))) for _ in range(3)]
    acc = CountAccumulator(3)
    # batches mixing cases, with a per-item case index tensor
    slices = [(i, p[z], r[z]) for i, (p, r) in enumerate(cases) for z in range(p.shape[0])]
    order = rng.permutation(len(slices))
    for start in range(0, len(order), 5):
        batch = [slices[j] for j in order[start : start + 5]]
        idx = torch.tensor([b[0] for b in batch])
        acc.add(idx, torch.from_numpy(np.stack([b[1] for b in batch])), torch.from_numpy(np.stack([b[2] for b in batch])))
    got = acc.counts()
    for i, (p, r) in enumerate(cases):
        expect = label_counts(p, r)
        assert tuple(got["liver"][i]) == expect["liver"].as_tuple()
        assert tuple(got["lesion"][i]) == expect["lesion"].as_tuple()


def test_accumulator_binary_float_targets_and_int_index() -> None:
    rng = np.random.default_rng(4)
    p = rng.random((2, 5, 5)) > 0.5
    r = rng.random((2, 5, 5)) > 0.5
    acc = CountAccumulator(2, mode="binary", task="lesion")
    acc.add(1, torch.from_numpy(p), torch.from_numpy(r).float())
    got = acc.counts()["lesion"]
    assert tuple(got[1]) == numpy_counts(p, r)
    assert tuple(got[0]) == (0, 0, 0, 0)
    assert acc.confusion.dtype == torch.int64 and acc.confusion.shape == (2, 2, 2)
    acc.reset()
    assert int(acc.confusion.sum()) == 0


def test_accumulator_flags_bad_values_once_at_the_end() -> None:
    acc = CountAccumulator(1, mode="binary")
    acc.add(0, torch.full((1, 3, 3), 2), torch.zeros((1, 3, 3)))  # no sync, no error yet
    with pytest.raises(DataError, match="outside"):
        acc.counts()
    acc = CountAccumulator(1, mode="binary")
    acc.add(0, torch.zeros((1, 3, 3)), torch.full((1, 3, 3), 0.4))
    with pytest.raises(DataError, match="fractional"):
        acc.counts()
    with pytest.raises(IndexError):
        CountAccumulator(2).add(2, torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))


# ----------------------------------------------------------------- surface


def _box(shape: tuple[int, int, int], lo: tuple[int, int, int], hi: tuple[int, int, int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return m


def test_surface_hand_computed() -> None:
    a = _box((10, 10, 10), (2, 2, 2), (6, 6, 6))
    b = np.roll(a, 2, axis=0)  # shift by 2 voxels along z at 3 mm -> every distance 0 or 6 mm
    m = surface_metrics(a, a, (3.0, 1.0, 1.0))
    assert m == {"hd95": 0.0, "nsd": 1.0, "assd": 0.0, "mssd": 0.0, "rmsd": 0.0}
    m = surface_metrics(a, b, (3.0, 1.0, 1.0), tolerance_mm=5.0)
    assert m["hd95"] == pytest.approx(6.0)
    assert 0.0 < m["nsd"] < 1.0


def test_surface_empty_policy() -> None:
    e = np.zeros((4, 4, 4), bool)
    a = _box((4, 4, 4), (1, 1, 1), (3, 3, 3))
    both = surface_metrics(e, e, (1, 1, 1))
    assert set(both) == {"hd95", "nsd", "assd", "mssd", "rmsd"} and all(math.isnan(v) for v in both.values())
    for one in (surface_metrics(a, e, (1, 1, 1)), surface_metrics(e, a, (1, 1, 1))):
        assert one["nsd"] == 0.0
        assert all(math.isnan(one[k]) for k in ("hd95", "assd", "mssd", "rmsd"))
    with pytest.raises(ValueError):
        surface_metrics(a, e[:3], (1, 1, 1))


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.booleans())
def test_surface_matches_monai(seed: int, touch_border: bool) -> None:
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    rng = np.random.default_rng(seed)
    shape = (8, 12, 10)
    a = rng.random(shape) > 0.6
    b = rng.random(shape) > 0.6
    if not touch_border:
        a[0] = a[-1] = b[0] = b[-1] = False
    if not a.any() or not b.any():
        return
    spacing = tuple(float(s) for s in rng.uniform(0.5, 3.0, 3))
    ours = surface_metrics(a, b, spacing, tolerance_mm=1.5)
    A = torch.from_numpy(a).float()[None, None]
    B = torch.from_numpy(b).float()[None, None]
    A2, B2 = torch.cat([1 - A, A], 1), torch.cat([1 - B, B], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = float(compute_hausdorff_distance(A2, B2, percentile=95, spacing=spacing))
        sd = float(compute_surface_dice(A2, B2, [1.5], spacing=spacing))
    assert ours["hd95"] == pytest.approx(hd, rel=1e-5)
    assert ours["nsd"] == pytest.approx(sd, abs=1e-6)


# ----------------------------------------------------------------- LiTS metric set


def test_lits_distances_hand_computed_use_the_union_of_both_surfaces() -> None:
    """pred = two voxels 3 mm apart along x, ref = the first one: distances {0, 3} and {0}."""
    pred = np.zeros((3, 3, 8), bool)
    ref = np.zeros_like(pred)
    pred[1, 1, 1] = pred[1, 1, 4] = True
    ref[1, 1, 1] = True
    m = surface_metrics(pred, ref, (2.0, 1.5, 1.0))
    assert m["mssd"] == 3.0
    assert m["assd"] == pytest.approx(3.0 / 3)  # union mean; medpy's mean of directed means would be 0.75
    assert m["rmsd"] == pytest.approx(math.sqrt(9.0 / 3))
    assert m["nsd"] == pytest.approx(2 / 3)


def test_voe_and_rvd_hand_computed_and_empty_rules() -> None:
    s = scores_from_counts(8, 2, 0, 90)  # |pred| 10, |ref| 8
    assert s["voe"] == pytest.approx(1 - 0.8) and s["rvd"] == pytest.approx(0.25)
    s = scores_from_counts(3, 0, 5, 92)  # under-segmentation: negative RVD
    assert s["voe"] == pytest.approx(1 - 3 / 8) and s["rvd"] == pytest.approx(-5 / 8)
    both_empty = scores_from_counts(0, 0, 0, 50)
    assert math.isnan(both_empty["voe"]) and math.isnan(both_empty["rvd"])
    empty_ref = scores_from_counts(0, 4, 0, 46, empty_reference="zero")
    assert empty_ref["voe"] == 1.0 and math.isnan(empty_ref["rvd"])  # no relative difference to nothing
    assert math.isnan(scores_from_counts(0, 4, 0, 46)["voe"])  # the default empty-reference rule: NaN
    empty_pred = scores_from_counts(0, 0, 4, 46)
    assert empty_pred["voe"] == 1.0 and empty_pred["rvd"] == -1.0
    counts = np.array([[8, 2, 0, 90], [0, 4, 0, 46], [0, 0, 0, 50]])
    red = reduce_cases(counts, empty_reference="zero")
    assert red["excluded"]["rvd"] == 2 and red["excluded"]["voe"] == 1 and red["n_excluded"] == 1
    assert red["mean"]["rvd"] == pytest.approx(0.25) and red["mean"]["voe"] == pytest.approx((0.2 + 1.0) / 2)
    red = reduce_cases(counts)
    assert red["excluded"]["rvd"] == red["excluded"]["voe"] == red["n_excluded"] == 2
    assert red["mean"]["voe"] == pytest.approx(0.2)
    assert red["global"]["rvd"] == pytest.approx((14 - 8) / 8)  # summed volumes


@SETTINGS
@given(label_maps)
def test_voe_and_rvd_match_mask_volumes(maps: tuple[np.ndarray, np.ndarray]) -> None:
    from tests.surface_reference import reference_metrics

    pred, ref = maps
    counts = label_counts(pred, ref)
    for cls, (p, r) in {"liver": (pred >= 1, ref >= 1), "lesion": (pred == 2, ref == 2)}.items():
        # the formulas themselves (an empty reference's VOE is 1 there): the "zero" rule, which adds no NaN
        ours = scores_from_counts(*counts[cls].as_tuple(), empty_reference="zero")
        expect = reference_metrics(p, r, (1.0, 1.0, 1.0))
        for m in ("voe", "rvd"):
            assert ours[m] == pytest.approx(expect[m], rel=1e-12, abs=1e-15, nan_ok=True), (cls, m)


def _blobs(rng: np.random.Generator, shape: tuple[int, int, int], touch_border: bool) -> np.ndarray:
    """Random smooth-ish blobs (thresholded noise, a closing), optionally kept off the border."""
    from scipy import ndimage

    noise = ndimage.uniform_filter(rng.random(shape), size=3, mode="constant")
    mask = noise > np.quantile(noise, rng.uniform(0.4, 0.85))
    if not touch_border:
        mask[0] = mask[-1] = False
        mask[:, 0] = mask[:, -1] = False
        mask[:, :, 0] = mask[:, :, -1] = False
    return mask


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 100_000), st.booleans(), st.sampled_from([1, 2]))
def test_surface_metrics_match_an_independent_distance_transform(seed: int, touch_border: bool,
                                                                 connectivity: int) -> None:
    """Random shapes and sizes, anisotropic spacing, border-touching masks, both connectivities."""
    from tests.surface_reference import reference_metrics

    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(3, 14, 3))
    pred, ref = _blobs(rng, shape, touch_border), _blobs(rng, shape, touch_border)
    if rng.random() < 0.2:
        ref = pred.copy()
    spacing = tuple(float(v) for v in rng.uniform(0.4, 3.5, 3))
    tol = float(rng.uniform(0.5, 3.0))
    ours = surface_metrics(pred, ref, spacing, tolerance_mm=tol, connectivity=connectivity)
    expect = reference_metrics(pred, ref, spacing, tolerance_mm=tol, connectivity=connectivity)
    for m in ("hd95", "nsd", "assd", "mssd", "rmsd"):
        assert ours[m] == pytest.approx(expect[m], rel=1e-9, abs=1e-12, nan_ok=True), m


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 100_000), st.booleans())
def test_assd_and_mssd_match_monai(seed: int, touch_border: bool) -> None:
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(4, 16, 3))
    a, b = _blobs(rng, shape, touch_border), _blobs(rng, shape, touch_border)
    if not a.any() or not b.any():
        return
    spacing = tuple(float(v) for v in rng.uniform(0.4, 3.5, 3))
    ours = surface_metrics(a, b, spacing)
    A = torch.from_numpy(a).float()[None, None]
    B = torch.from_numpy(b).float()[None, None]
    A2, B2 = torch.cat([1 - A, A], 1), torch.cat([1 - B, B], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        asd = float(compute_average_surface_distance(A2, B2, symmetric=True, spacing=spacing))
        hd = float(compute_hausdorff_distance(A2, B2, spacing=spacing))
    # MONAI returns float32; 1e-6 relative is its precision, not a looser check of ours
    assert ours["assd"] == pytest.approx(asd, rel=1e-6)
    assert ours["mssd"] == pytest.approx(hd, rel=1e-6)


def test_surface_connectivity_is_checked() -> None:
    a = _box((4, 4, 4), (1, 1, 1), (3, 3, 3))
    with pytest.raises(ValueError, match="connectivity"):
        surface_metrics(a, a, (1, 1, 1), connectivity=4)


# ----------------------------------------------------------------- results writer


def _rows() -> list[dict]:
    from bench.metrics.results import case_rows

    rows = []
    rows += case_rows("c1", {"liver": Counts(8, 2, 0, 90), "lesion": Counts(0, 0, 0, 100)}, split="val")
    rows += case_rows("c2", {"liver": Counts(5, 0, 5, 90), "lesion": Counts(1, 1, 0, 98)}, split="val")
    rows += case_rows("c3", {"liver": Counts(10, 0, 0, 90), "lesion": Counts(2, 0, 2, 96)}, split="test")
    return rows


def test_write_evaluation_files_follow_the_contract(tmp_path) -> None:
    import json

    import pandas as pd

    from bench.metrics.results import read_per_case, write_evaluation

    summary = write_evaluation(tmp_path, _rows(), with_splits=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "per_case.csv", "summary.json",
                                                          "summary_nnunet_test.json", "summary_nnunet_val.json"]
    per_case = pd.read_csv(tmp_path / "per_case.csv")
    assert list(per_case.columns) == ["split", "case", "class", "tp", "fp", "fn", "tn", "accuracy", "dice", "iou", "miou",
                                      "voe", "rvd"]
    assert len(per_case) == 6
    back = read_per_case(tmp_path / "per_case.csv")
    assert math.isnan(back.loc[(back["case"] == "c1") & (back["class"] == "lesion"), "dice"].item())
    data = json.loads((tmp_path / "summary.json").read_text())  # strict JSON: NaN became null
    assert data == summary
    val_lesion = data["splits"]["val"]["classes"]["lesion"]
    assert val_lesion["n_cases"] == 2 and val_lesion["n_excluded"] == 1
    assert val_lesion["mean"]["dice"] == pytest.approx(2 / 3)
    val_liver = data["splits"]["val"]["classes"]["liver"]
    assert val_liver["mean"]["dice"] == pytest.approx((16 / 18 + 10 / 15) / 2)
    assert val_liver["global"]["dice"] == pytest.approx(26 / (26 + 2 + 5))
    assert set(data["splits"]) == {"val", "test"}
    assert "text" in data["policy"]
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics.columns) == ["split", "class", "aggregation", "metric", "value", "n_cases", "n_excluded"]
    row = metrics[(metrics["split"] == "val") & (metrics["class"] == "lesion") & (metrics["aggregation"] == "mean") & (metrics["metric"] == "dice")]
    assert row["value"].item() == pytest.approx(2 / 3) and row["n_excluded"].item() == 1
    assert not any(p.name.count(".tmp-") for p in tmp_path.iterdir())


def test_write_evaluation_without_splits_and_scores_recomputed(tmp_path) -> None:
    import pandas as pd

    from bench.errors import ConfigError
    from bench.metrics.results import write_evaluation

    df = pd.DataFrame(_rows())
    df["split"] = "all"
    df["dice"] = 0.123  # stale scores are never trusted: recomputed from the counts
    summary = write_evaluation(tmp_path, df, with_splits=False, extra={"n_missing": 0})
    assert set(summary) == {"policy", "classes", "n_missing"}
    assert summary["classes"]["liver"]["mean"]["dice"] != 0.123
    with pytest.raises(ConfigError):
        write_evaluation(tmp_path / "x", _rows(), with_splits=False)


def test_print_summary_renders(tmp_path) -> None:
    from rich.console import Console

    from bench.metrics.results import case_rows, evaluation_policy, print_summary, write_evaluation

    surf = {"hd95": 2.5, "nsd": 0.75, "assd": 1.25, "mssd": 7.5, "rmsd": 1.75}
    rows = case_rows("a", {"liver": Counts(3, 1, 1, 20)}, surface={"liver": surf})
    rows += case_rows("b", {"liver": Counts(0, 2, 0, 20)},
                      surface={"liver": {**dict.fromkeys(surf, math.nan), "nsd": 0.0}})
    # case b has an empty reference: under the "zero" rule its Dice 0 / VOE 1 enter the means shown below
    summary = write_evaluation(tmp_path, rows, with_splits=False,
                               policy=evaluation_policy(True, 1.0, empty_reference="zero"))
    console = Console(record=True, width=80)  # a plain terminal: every column must fit
    print_summary(summary, title="score", console=console)
    text = console.export_text()
    assert "liver" in text and "0.3750" in text and "2.50" in text and "policy:" in text
    for header, value in (("voe", "0.7000"), ("rvd", "0.0000"), ("assd", "1.25"), ("mssd", "7.50"), ("rmsd", "1.75")):
        assert header in text and value in text, header
    # case b: empty reference -> rvd and the distances are NaN there, and the excl columns say so
    assert "0 (rvd 1)" in text and "surface distances" in text
    assert "1 case(s) with an empty reference" in text and "2.0 voxels" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_request_without_cuda_is_a_config_error() -> None:
    from bench.errors import ConfigError

    with pytest.raises(ConfigError, match="CUDA"):
        label_counts(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8), device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_counts_equal_cpu_counts() -> None:
    rng = np.random.default_rng(5)
    ref = rng.integers(0, 3, (6, 32, 32), dtype=np.uint8)
    pred = rng.integers(0, 3, (6, 32, 32), dtype=np.uint8)
    assert label_counts(pred, ref, "cuda") == label_counts(pred, ref, "cpu")
    assert label_counts(torch.from_numpy(pred).cuda(), torch.from_numpy(ref).cuda()) == label_counts(pred, ref)
    acc = CountAccumulator(1, device="cuda")
    acc.add(0, torch.from_numpy(pred).cuda(), torch.from_numpy(ref).cuda())
    assert tuple(acc.counts()["liver"][0]) == label_counts(pred, ref)["liver"].as_tuple()
