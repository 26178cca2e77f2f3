"""summary_nnunet.json: nnU-Net v2's summary schema, computed the way nnU-Net computes it (issue 21, item 3)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.cli_run import bench

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def _save(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(a.astype(np.uint8), AFFINE), str(path))


def _volumes(i: int, lesion: bool) -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((20, 18, 6), np.uint8)
    ref[3:15, 4:14, 1:5] = 1
    if lesion:
        ref[6:10, 6:10, 2:4] = 2
    pred = np.roll(ref, i, axis=0)
    if lesion:
        pred[4:6, 4:6, 1] = 2  # a false-positive lesion blob too
    return pred, ref


def _nnunet_metrics(pred: np.ndarray, ref: np.ndarray, region: tuple[int, ...]) -> dict[str, float]:
    """nnU-Net's compute_metrics for one region, re-stated (region_or_label_to_mask + compute_tp_fp_fn_tn)."""
    p, r = np.isin(pred, region), np.isin(ref, region)
    tp, fp, fn, tn = int((p & r).sum()), int((p & ~r).sum()), int((~p & r).sum()), int((~p & ~r).sum())
    dice = math.nan if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    iou = math.nan if tp + fp + fn == 0 else tp / (tp + fp + fn)
    return {"Dice": dice, "IoU": iou, "FP": fp, "TP": tp, "FN": fn, "TN": tn, "n_pred": tp + fp, "n_ref": tp + fn}


def _key_to_label_or_region(key: str):
    """nnU-Net's key_to_label_or_region (evaluate_predictions.py): how its loader reads every key."""
    try:
        return int(key)
    except ValueError:
        return tuple(int(i) for i in key.replace("(", "").replace(")", "").split(",") if len(i) > 0)


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    root = tmp_path_factory.mktemp("nnunet_summary")
    cases = {}
    for i, lesion in ((1, True), (2, True), (3, False)):  # case 3: no lesion in either mask -> lesion Dice NaN
        pred, ref = _volumes(i, lesion)
        if not lesion:
            pred[pred == 2] = 0
        cases[str(i)] = (pred, ref)
        _save(root / "gt" / f"segmentation-{i}.nii.gz", ref)
        _save(root / "pred" / f"segmentation-{i}.nii.gz", pred)
    proc = bench("score", "pred", "gt", "--out", "out", "--device", "cpu", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root / "out" / "summary_nnunet.json", cases


def test_schema_and_values_equal_nnunets_computation(scored) -> None:
    path, cases = scored
    data = json.loads(path.read_text())
    assert {"metric_per_case", "mean", "foreground_mean"} <= set(data)
    assert set(data["mean"]) == {"(1, 2)", "2"}
    assert all(isinstance(_key_to_label_or_region(k), (int, tuple)) for k in data["mean"])
    assert len(data["metric_per_case"]) == 3
    for entry in data["metric_per_case"]:
        cid = Path(entry["reference_file"]).name.split("-")[1].split(".")[0]
        assert Path(entry["prediction_file"]).name == f"segmentation-{cid}.nii.gz"
        pred, ref = cases[cid]
        for key, region in (("(1, 2)", (1, 2)), ("2", (2,))):
            want = _nnunet_metrics(pred, ref, region)
            got = entry["metrics"][key]
            assert set(got) == set(want)
            for m, v in want.items():
                assert (math.isnan(v) and math.isnan(got[m])) or got[m] == pytest.approx(v), (cid, key, m)
    lesion_dice = [e["metrics"]["2"]["Dice"] for e in data["metric_per_case"]]
    assert sum(math.isnan(v) for v in lesion_dice) == 1  # the empty case stays NaN (and is counted) ...
    assert data["mean"]["2"]["Dice"] == pytest.approx(np.nanmean(lesion_dice))  # ... and left out of the mean
    assert data["foreground_mean"]["Dice"] == pytest.approx(
        (data["mean"]["(1, 2)"]["Dice"] + data["mean"]["2"]["Dice"]) / 2)
    assert "NaN" in path.read_text()  # nnU-Net's own NaN literal, not null


def test_nnunets_own_loader_reads_it(scored) -> None:
    evaluate = pytest.importorskip("nnunetv2.evaluation.evaluate_predictions",
                                   reason="nnunetv2 not installed (optional: pip install nnunetv2)")
    path, _ = scored
    loaded = evaluate.load_summary_json(str(path))
    assert set(loaded["mean"]) == {(1, 2), 2}
    assert set(loaded["metric_per_case"][0]["metrics"]) == {(1, 2), 2}
