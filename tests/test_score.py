"""`bench score` on small NIfTI folders and on TotalSegmentator's real example (when present)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.errors import DataError
from bench.metrics.counts import label_counts
from bench.metrics.scores import scores_from_counts
from bench.metrics.surface import surface_metrics

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TOTALSEG = SHARED_DATA / "totalsegmentator"
AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def save(path: Path, array_xyz: np.ndarray, affine: np.ndarray = AFFINE, dtype=np.uint8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array_xyz, dtype=dtype), affine), str(path))
    return path


def label_volume(seed: int, shape=(24, 20, 8), lesion: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.zeros(shape, np.uint8)
    x0, y0 = rng.integers(2, 6, 2)
    a[x0 : x0 + 14, y0 : y0 + 10, 1:7] = 1
    if lesion:
        a[x0 + 3 : x0 + 7, y0 + 2 : y0 + 6, 2:5] = 2
    return a


def run(args: list[str]):
    return CliRunner().invoke(app, ["score", *[str(a) for a in args]])


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """LiTS-named references (with a CT volume beside them) and predictions named three ways."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    cases = {}
    for i in (1, 2, 3):
        ref = label_volume(i, lesion=(i != 3))
        p = np.roll(ref, i - 1, axis=0)
        cases[str(i)] = (p, ref)
        save(gt / f"segmentation-{i}.nii.gz", ref)
    save(gt / "volume-1.nii.gz", np.zeros((24, 20, 8)), dtype=np.int16)  # a CT image: ignored
    save(pred / "test-segmentation-1.nii", cases["1"][0])
    save(pred / "segmentation-2.nii.gz", cases["2"][0])
    save(pred / "segmentation-3.nii.gz", cases["3"][0])
    return pred, gt, cases


def test_score_matches_direct_counts_and_writes_contract(folders, tmp_path: Path, monkeypatch) -> None:
    pred, gt, cases = folders
    monkeypatch.chdir(tmp_path)
    result = run([pred, gt])
    assert result.exit_code == 0, result.output
    out = tmp_path / "score-pred"  # default output folder
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "per_case.csv", "summary.json", "summary_nnunet.json"]
    df = pd.read_csv(out / "per_case.csv", dtype={"case": str})
    from bench.metrics.folder import read_label_map
    from bench.metrics.lesions import LESION_COLUMNS, LESION_COUNT_COLUMNS, lesion_detection

    assert list(df.columns) == ["split", "case", "class", "tp", "fp", "fn", "tn", "accuracy", "dice", "iou", "miou",
                                "voe", "rvd", *LESION_COLUMNS]
    assert len(df) == 6 and set(df["split"]) == {"all"}
    assert df.loc[df["class"] == "liver", list(LESION_COUNT_COLUMNS)].isna().all().all()  # lesion class only
    for cid, pred_name in (("1", "test-segmentation-1.nii"), ("3", "segmentation-3.nii.gz")):
        r_zyx, spacing, _ = read_label_map(gt / f"segmentation-{cid}.nii.gz")
        p_zyx, _, _ = read_label_map(pred / pred_name)
        expect = lesion_detection(p_zyx == 2, r_zyx == 2, spacing).as_dict()
        row = df[(df["case"] == cid) & (df["class"] == "lesion")].iloc[0]
        assert {k: int(row[k]) for k in LESION_COUNT_COLUMNS} == expect
    row3 = df[(df["case"] == "3") & (df["class"] == "lesion")].iloc[0]
    assert row3["n_ref_lesions"] == 0 and math.isnan(row3["lesion_recall"])  # no lesion: recall NaN, counted
    for cid, (p, r) in cases.items():
        expect = label_counts(p, r)
        for cls in ("liver", "lesion"):
            row = df[(df["case"] == cid) & (df["class"] == cls)].iloc[0]
            assert (row.tp, row.fp, row.fn, row.tn) == expect[cls].as_tuple()
    summary = json.loads((out / "summary.json").read_text())
    assert {"policy", "classes", "n_missing"} <= set(summary) and "splits" not in summary
    lesion = summary["classes"]["lesion"]
    assert lesion["n_cases"] == 3 and lesion["n_excluded"] == 1  # case 3 has no lesion in either
    assert summary["classes"]["liver"]["mean"]["dice"] == pytest.approx(df[df["class"] == "liver"]["dice"].mean())
    assert summary["n_missing"] == 0
    det = lesion["lesion_detection"]  # pooled from summed counts
    lesion_rows = df[df["class"] == "lesion"]
    assert det["n_ref_lesions"] == lesion_rows["n_ref_lesions"].sum() == 2
    assert det["lesion_recall"] == pytest.approx(lesion_rows["n_detected"].sum() / 2)
    assert det["n_cases_without_lesion"] == 1 and summary["policy"]["lesion_detection"]["match"] == "overlap"
    assert "liver" in result.output and "policy" in result.output and "lesion detection" in result.output


def test_identical_predictions_score_one_and_disjoint_zero(tmp_path: Path) -> None:
    ref = label_volume(0)
    save(tmp_path / "gt" / "a.nii.gz", ref)
    save(tmp_path / "same" / "a.nii.gz", ref)
    disjoint = np.zeros_like(ref)
    disjoint[0:2, 0:2, 0] = 2
    save(tmp_path / "dis" / "a.nii.gz", disjoint)
    r = run([tmp_path / "same", tmp_path / "gt", "--out", tmp_path / "o1"])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "o1" / "summary.json").read_text())
    for cls in ("liver", "lesion"):
        for agg in ("mean", "global"):
            got = s["classes"][cls][agg]
            assert got == {"accuracy": 1.0, "dice": 1.0, "iou": 1.0, "miou": 1.0, "voe": 0.0, "rvd": 0.0}
    r = run([tmp_path / "dis", tmp_path / "gt", "--out", tmp_path / "o2"])
    s = json.loads((tmp_path / "o2" / "summary.json").read_text())
    for cls in ("liver", "lesion"):
        assert s["classes"][cls]["mean"]["dice"] == 0.0 and s["classes"][cls]["mean"]["iou"] == 0.0


def test_missing_prediction_is_counted_and_scored_empty(folders, tmp_path: Path) -> None:
    pred, gt, cases = folders
    (pred / "segmentation-2.nii.gz").unlink()
    (pred / "readme.txt").write_text("not an image")
    save(pred / "segmentation-9.nii.gz", cases["1"][0])  # no reference 9
    result = run([pred, gt, "--out", tmp_path / "o", "--task", "liver"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "without a prediction" in out and "readme.txt" in out and "segmentation-9.nii.gz" in out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["n_missing"] == 1 and summary["missing"] == ["2"]
    assert summary["unmatched_predictions"] == ["segmentation-9.nii.gz"]
    assert set(summary["classes"]) == {"liver"} and summary["classes"]["liver"]["n_cases"] == 3
    df = pd.read_csv(tmp_path / "o" / "per_case.csv", dtype={"case": str})
    row = df[df["case"] == "2"].iloc[0]
    ref = cases["2"][1]
    assert row.tp == 0 and row.fp == 0 and row.fn == int((ref >= 1).sum()) and row.dice == 0.0


def test_surface_flag_adds_hd95_and_nsd_in_mm(folders, tmp_path: Path) -> None:
    pred, gt, cases = folders
    result = run([pred, gt, "--out", tmp_path / "o", "--surface", "--tolerance", "2"])
    assert result.exit_code == 0, result.output
    df = pd.read_csv(tmp_path / "o" / "per_case.csv", dtype={"case": str})
    assert list(df.columns)[13:18] == ["hd95", "nsd", "assd", "mssd", "rmsd"]  # then the lesion columns
    # the canonical (Z, Y, X) spacing of AFFINE is (2.5, 0.8, 0.8)
    p, r = cases["2"]
    expect = surface_metrics(np.transpose(p >= 1, (2, 1, 0)), np.transpose(r >= 1, (2, 1, 0)), (2.5, 0.8, 0.8), 2.0)
    row = df[(df["case"] == "2") & (df["class"] == "liver")].iloc[0]
    assert row.hd95 == pytest.approx(expect["hd95"]) and row.nsd == pytest.approx(expect["nsd"])
    assert row.hd95 == pytest.approx(0.8)  # shifted by one voxel along x (0.8 mm)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["policy"]["surface"]["tolerance_mm"] == 2.0
    lesion3 = df[(df["case"] == "3") & (df["class"] == "lesion")].iloc[0]
    assert math.isnan(lesion3.hd95) and math.isnan(lesion3.nsd)


def _blob_volume(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """A 0/1/2 label map (x, y, z) of random blobs touching the border, lesion blobs inside the liver."""
    from scipy import ndimage

    noise = ndimage.uniform_filter(rng.random(shape), size=3, mode="constant")
    liver = noise > np.quantile(noise, 0.45)
    lesion = liver & (ndimage.uniform_filter(rng.random(shape), size=3) > 0.55)
    return (liver.astype(np.uint8) + lesion.astype(np.uint8)).astype(np.uint8)


@pytest.mark.parametrize("connectivity", [1, 2])
def test_console_score_surface_writes_the_lits_set_matching_an_independent_reference(tmp_path: Path,
                                                                                     connectivity: int) -> None:
    """`bench score --surface`: VOE, RVD, ASSD, MSSD, RMSD (and HD95, NSD) per case and class match
    scipy distance transforms on each case's own anisotropic spacing, to 1e-6 relative."""
    from tests.surface_reference import reference_metrics

    rng = np.random.default_rng(11 + connectivity)
    cases = {}
    for i, (shape, zooms) in enumerate([((14, 11, 9), (0.7, 0.9, 2.5)), ((9, 13, 12), (1.6, 0.6, 3.0)),
                                        ((12, 12, 7), (0.8, 0.8, 5.0))]):
        ref = _blob_volume(rng, shape)
        pred = _blob_volume(rng, shape) if i != 2 else np.where(ref == 2, 1, ref).astype(np.uint8)  # 2: no lesion
        affine = np.diag([*zooms, 1.0])
        save(tmp_path / "gt" / f"c{i}.nii.gz", ref, affine)
        save(tmp_path / "pred" / f"c{i}.nii.gz", pred, affine)
        cases[f"c{i}"] = (pred, ref, zooms)
    proc = subprocess.run([sys.executable, "-m", "bench", "score", str(tmp_path / "pred"), str(tmp_path / "gt"),
                           "--surface", "--tolerance", "1.5", "--connectivity", str(connectivity),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for header in ("voe", "rvd", "assd", "mssd", "rmsd"):
        assert header in proc.stdout
    df = pd.read_csv(tmp_path / "o" / "per_case.csv", dtype={"case": str})
    checked = 0
    for cid, (pred, ref, zooms) in cases.items():
        for cls, fn in (("liver", lambda a: a >= 1), ("lesion", lambda a: a == 2)):
            # the files are stored (x, y, z); the reference is computed there, with the file's zooms
            expect = reference_metrics(fn(pred), fn(ref), zooms, tolerance_mm=1.5, connectivity=connectivity)
            row = df[(df["case"] == cid) & (df["class"] == cls)].iloc[0]
            for m in ("voe", "rvd", "hd95", "nsd", "assd", "mssd", "rmsd"):
                assert row[m] == pytest.approx(expect[m], rel=1e-6, nan_ok=True), (cid, cls, m)
                checked += not math.isnan(expect[m])
    assert checked >= 30
    lesion2 = df[(df["case"] == "c2") & (df["class"] == "lesion")].iloc[0]  # reference lesion, none predicted
    assert lesion2.rvd == -1.0 and lesion2.voe == 1.0 and lesion2.nsd == 0.0 and math.isnan(lesion2.assd)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["policy"]["surface"]["connectivity"] == connectivity
    assert summary["classes"]["lesion"]["excluded"]["assd"] == 1


@pytest.mark.parametrize(
    "make_bad, message",
    [
        (lambda d: save(d / "a.nii.gz", np.zeros((24, 20, 7), np.uint8)), "shape"),
        (lambda d: save(d / "a.nii.gz", label_volume(0), affine=np.diag([1.0, 0.8, 2.5, 1.0])), "grid"),
        (lambda d: save(d / "a.nii.gz", label_volume(0) * 2), r"label values \[4\]"),
        (lambda d: save(d / "a.nii.gz", label_volume(0) * 0.3, dtype=np.float32), "fractional"),
        (lambda d: save(d / "b.nii.gz", label_volume(0)), "no prediction matches"),
        (lambda d: (save(d / "a.nii.gz", label_volume(0)), save(d / "a.nii", label_volume(0))), "both case"),
    ],
)
def test_bad_predictions_are_one_line_data_errors(tmp_path: Path, make_bad, message: str) -> None:
    save(tmp_path / "gt" / "a.nii.gz", label_volume(0))
    make_bad(tmp_path / "pred")
    result = run([tmp_path / "pred", tmp_path / "gt", "--out", tmp_path / "o"])
    assert isinstance(result.exception, DataError), result.output
    assert re.search(message, str(result.exception)), str(result.exception)
    assert "\n" not in str(result.exception)
    assert not (tmp_path / "o" / "summary.json").exists()


def test_bad_folders_and_options(tmp_path: Path) -> None:
    from bench.errors import ConfigError

    save(tmp_path / "gt" / "a.nii.gz", label_volume(0))
    assert isinstance(run([tmp_path / "nope", tmp_path / "gt"]).exception, DataError)
    (tmp_path / "empty").mkdir()
    assert isinstance(run([tmp_path / "gt", tmp_path / "empty"]).exception, DataError)
    assert isinstance(run([tmp_path / "gt", tmp_path / "gt", "--task", "kidney"]).exception, ConfigError)
    (tmp_path / "gt" / "broken.nii.gz").write_bytes(b"not gzip at all")
    r = run([tmp_path / "gt", tmp_path / "gt", "--out", tmp_path / "o"])
    assert isinstance(r.exception, DataError) and "broken.nii.gz" in str(r.exception)


def test_console_script_prints_one_line_without_traceback(tmp_path: Path) -> None:
    save(tmp_path / "gt" / "a.nii.gz", label_volume(0))
    save(tmp_path / "pred" / "a.nii.gz", label_volume(0) + 1)
    proc = subprocess.run(
        [sys.executable, "-c", "from bench.cli import main; main()", "score", str(tmp_path / "pred"), str(tmp_path / "gt")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("error:") == 1 and "a.nii.gz" in proc.stderr and "[3]" in proc.stderr


@pytest.mark.skipif(not (TOTALSEG / "example_seg.nii.gz").exists(), reason="shared TotalSegmentator example absent")
def test_totalsegmentator_liver_any_orientation(tmp_path: Path) -> None:
    from nibabel import orientations as nio

    img = nib.load(str(TOTALSEG / "example_seg.nii.gz"))
    liver = (np.asanyarray(img.dataobj) == 5).astype(np.uint8)  # label 5 = liver there
    assert liver.any()
    ref_img = nib.Nifti1Image(liver, img.affine)
    nib.save(ref_img, str(_mk(tmp_path / "gt") / "example.nii.gz"))
    # the same mask stored in another orientation (LPS instead of RAS): same voxels in the world
    flipped = ref_img.as_reoriented(nio.ornt_transform(nio.io_orientation(img.affine), nio.axcodes2ornt(("L", "P", "S"))))
    nib.save(flipped, str(_mk(tmp_path / "same") / "example.nii.gz"))
    r = run([tmp_path / "same", tmp_path / "gt", "--task", "liver", "--out", tmp_path / "o", "--surface"])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["classes"]["liver"]["mean"] == {"accuracy": 1.0, "dice": 1.0, "iou": 1.0, "miou": 1.0, "voe": 0.0, "rvd": 0.0,
                                             "hd95": 0.0, "nsd": 1.0, "assd": 0.0, "mssd": 0.0, "rmsd": 0.0}
    # a prediction shifted by one voxel (3 mm, no wrap-around): Dice below 1, HD95 at most 3 mm
    shifted = np.zeros_like(liver)
    shifted[:, :, 1:] = liver[:, :, :-1]
    nib.save(nib.Nifti1Image(shifted, img.affine), str(_mk(tmp_path / "shift") / "example.nii.gz"))
    r = run([tmp_path / "shift", tmp_path / "gt", "--task", "liver", "--out", tmp_path / "o2", "--surface"])
    assert r.exit_code == 0, r.output
    row = pd.read_csv(tmp_path / "o2" / "per_case.csv").iloc[0]
    c = label_counts(shifted, liver)["liver"]
    assert row.dice == pytest.approx(scores_from_counts(*c.as_tuple())["dice"]) and 0.5 < row.dice < 1.0
    spacing = tuple(float(v) for v in np.abs(np.diag(img.affine))[:3])
    direct = surface_metrics(shifted, liver, spacing, 1.0)  # same voxels, file axis order (x, y, z)
    assert row.hd95 == pytest.approx(direct["hd95"]) and 0.0 < row.hd95 <= 3.0 + 1e-9
    assert row.nsd == pytest.approx(direct["nsd"])
    # the raw multi-organ label map is not a 0/1/2 map: a clear error naming the file
    nib.save(img, str(_mk(tmp_path / "raw") / "example.nii.gz"))
    r = run([tmp_path / "raw", tmp_path / "gt", "--out", tmp_path / "o3"])
    assert isinstance(r.exception, DataError) and "raw/example.nii.gz" in str(r.exception)


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def test_lesion_match_option_through_the_console_script(tmp_path: Path) -> None:
    """`bench score --lesion-match`: a half-covered lesion is found under overlap, missed under iou50;
    a bad rule is one line, exit 2."""
    from tests.cli_run import assert_one_line_error, bench

    ref = np.zeros((12, 12, 6), np.uint8)
    ref[2:10, 2:10, 1:5] = 1
    ref[3:7, 3:7, 2:4] = 2  # one lesion of 32 voxels
    pred = ref.copy()
    pred[3:7, 3:7, 3] = 1  # half of it predicted: IoU 0.5, not > 0.5
    save(tmp_path / "gt" / "a.nii.gz", ref)
    save(tmp_path / "pred" / "a.nii.gz", pred)
    found = {}
    for match in ("overlap", "iou50"):
        out = tmp_path / match
        proc = bench("score", str(tmp_path / "pred"), str(tmp_path / "gt"), "--task", "lesion", "--out", str(out),
                     "--lesion-match", match, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        row = pd.read_csv(out / "per_case.csv").iloc[0]
        found[match] = (int(row["n_ref_lesions"]), int(row["n_detected"]), int(row["fp_lesions"]))
        assert json.loads((out / "summary.json").read_text())["policy"]["lesion_detection"]["match"] == match
    assert found == {"overlap": (1, 1, 0), "iou50": (1, 0, 1)}
    bad = bench("score", str(tmp_path / "pred"), str(tmp_path / "gt"), "--lesion-match", "any", cwd=tmp_path)
    assert_one_line_error(bad, "--lesion-match", "iou50")
