"""`bench data export --format nnunet`: folder structure, dataset.json, the split, geometry, atomicity,
and nnU-Net v2's own integrity check when nnunetv2 is available (else that test skips)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bench.datasets import get_dataset
from bench.datasets.nifti import load_nifti_zyx
from bench.datasets.nnunet import dataset_folder_name, export_nnunet, nnunet_case_id
from bench.datasets.splits import read_splits
from bench.errors import ConfigError, DataError
from bench.paths import splits_path

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IRCADB = SHARED_DATA / "3dircadb1"


def _bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def _nnunet_python() -> str | None:
    """A Python that imports nnunetv2: this one, or $LIVERBENCH_NNUNET_PYTHON (a separate venv)."""
    try:
        import nnunetv2  # noqa: F401

        return sys.executable
    except ImportError:
        pass
    other = os.environ.get("LIVERBENCH_NNUNET_PYTHON")
    if other and subprocess.run([other, "-c", "import nnunetv2"], capture_output=True, timeout=120).returncode == 0:
        return other
    return None


def verify_with_nnunet(python: str, folder: Path) -> subprocess.CompletedProcess:
    code = ("import sys; from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity; "
            "verify_dataset_integrity(sys.argv[1], num_processes=1)")
    env = {**os.environ, "nnUNet_raw": str(folder.parent), "nnUNet_preprocessed": str(folder.parent / "pre"),
           "nnUNet_results": str(folder.parent / "res")}
    return subprocess.run([python, "-c", code, str(folder)], capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def exported(tiny_phantom: Path, tmp_path_factory) -> tuple[Path, Path, Path]:
    """The tiny phantom exported once through the console script: (dataset folder, cache, work dir)."""
    work = tmp_path_factory.mktemp("export")
    proc = _bench("data", "export", "--format", "nnunet", "--dataset", "phantom", "--root", tiny_phantom,
                  "--out", work / "raw", "--cache", work / "cache", "--dataset-id", "7", "--name", "Tiny", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "imagesTs/labelsTs 1" in proc.stdout and "nnUNetv2_plan_and_preprocess -d 7" in proc.stdout
    assert "nnUNetv2_predict -i" in proc.stdout  # a test patient: predict imagesTs
    return work / "raw" / "Dataset007_Tiny", work / "cache", work


def test_the_next_step_hint_never_predicts_an_empty_imagests(tiny_phantom: Path, tmp_path: Path) -> None:
    """Two patients (1 train, 1 val) leave imagesTs empty: the hint points at the fold's validation output."""
    import json

    ids = sorted(p.name.removeprefix("volume-").split(".")[0] for p in tiny_phantom.glob("volume-*"))
    splits = tmp_path / "two.json"
    splits.write_text(json.dumps({"train": ids[:1], "val": ids[1:2], "test": []}))
    proc = _bench("data", "export", "--format", "nnunet", "--dataset", "phantom", "--root", tiny_phantom,
                  "--out", tmp_path / "raw", "--cache", tmp_path / "cache", "--splits", splits, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "imagesTs/labelsTs 0" in proc.stdout
    assert "nnUNetv2_predict -i" not in proc.stdout and "fold_0/validation" in proc.stdout


def test_export_structure_dataset_json_and_split(exported, tiny_phantom: Path) -> None:
    folder, cache, _ = exported
    split = read_splits(splits_path(cache, "phantom", tiny_phantom))  # the split training uses, made by the export
    assert sorted(p.name for p in folder.iterdir()) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr", "labelsTs",
                                                        "splits_final.json"]
    tr, ts = split["train"] + split["val"], split["test"]
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == sorted(f"{c}_0000.nii.gz" for c in tr)
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == sorted(f"{c}.nii.gz" for c in tr)
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == sorted(f"{c}_0000.nii.gz" for c in ts)
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == sorted(f"{c}.nii.gz" for c in ts)
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"} and meta["file_ending"] == ".nii.gz"
    assert meta["labels"] == {"background": 0, "liver": 1, "lesion": 2} and meta["numTraining"] == len(tr)
    assert meta["liverbench"]["splits"] == {k: split[k] for k in ("train", "val", "test")}
    folds = json.loads((folder / "splits_final.json").read_text())
    assert folds == [{"train": split["train"], "val": split["val"]}]
    in_folds = {c for f in folds for k in ("train", "val") for c in f[k]}
    assert ts and not (set(ts) & in_folds)  # our test patients are in no fold


def test_export_keeps_values_and_geometry(exported, tiny_phantom: Path) -> None:
    folder, _, _ = exported
    ds = get_dataset("phantom", root=tiny_phantom)
    for image_file in sorted((folder / "imagesTr").iterdir()) + sorted((folder / "imagesTs").iterdir()):
        cid = image_file.name[: -len("_0000.nii.gz")]
        labels_dir = "labelsTr" if image_file.parent.name == "imagesTr" else "labelsTs"
        case = ds.load(cid)
        image, spacing, affine = load_nifti_zyx(image_file)
        label, _, label_affine = load_nifti_zyx(folder / labels_dir / f"{cid}.nii.gz")
        assert image.dtype == np.int16 and label.dtype == np.uint8
        np.testing.assert_array_equal(image, case.image)
        np.testing.assert_array_equal(label, case.label)
        np.testing.assert_allclose(affine, case.affine, atol=1e-4)
        np.testing.assert_allclose(label_affine, case.affine, atol=1e-4)
        # written in the source file's own storage order and affine, so a prediction overlays it voxel for voxel
        src = nib.load(case.meta["source"])
        out = nib.load(str(image_file))
        assert out.shape == src.shape
        np.testing.assert_allclose(out.affine, src.affine, atol=1e-4)
        np.testing.assert_array_equal(np.asanyarray(out.dataobj), np.asanyarray(src.dataobj))


def test_task_labels_and_names(tiny_phantom: Path, tmp_path: Path) -> None:
    ds = get_dataset("phantom", root=tiny_phantom)
    ids = ds.case_ids()
    split = {"train": ids[:2], "val": ids[2:3], "test": ids[3:]}
    for task, labels in (("liver", {"background": 0, "liver": 1}), ("lesion", {"background": 0, "lesion": 1})):
        res = export_nnunet(ds, split, tmp_path / task, task=task, dataset_id=12)  # one folder per id (nnU-Net)
        assert res.folder.name == f"Dataset012_phantom_{task}" and res.dataset_json["labels"] == labels
        cid = ids[0]
        label, _, _ = load_nifti_zyx(res.folder / "labelsTr" / f"{cid}.nii.gz")
        ref = ds.load(cid).label
        np.testing.assert_array_equal(label, (ref >= 1) if task == "liver" else (ref == 2))
    assert nnunet_case_id("3Dircadb1.1") == "3Dircadb1.1" and nnunet_case_id("a b/c") == "a_b_c"
    assert dataset_folder_name(3, "Liver") == "Dataset003_Liver"
    with pytest.raises(ConfigError, match="1..999"):
        dataset_folder_name(1000, "x")
    with pytest.raises(ConfigError, match="--name"):
        dataset_folder_name(5, "has space")


def test_export_is_atomic_and_refuses_to_overwrite(tiny_phantom: Path, tmp_path: Path, monkeypatch) -> None:
    import bench.datasets.nnunet as nn

    ds = get_dataset("phantom", root=tiny_phantom)
    ids = ds.case_ids()
    split = {"train": ids[:2], "val": ids[2:3], "test": ids[3:]}
    calls = []

    def failing(case, *args, **kwargs):
        calls.append(case.id)
        if len(calls) == 2:
            raise DataError("disk full (planted)")
        return real(case, *args, **kwargs)

    real = nn.write_case
    monkeypatch.setattr(nn, "write_case", failing)
    with pytest.raises(DataError, match="planted"):
        export_nnunet(ds, split, tmp_path, dataset_id=9, name="X")
    assert list(tmp_path.iterdir()) == []  # no final folder, no temp folder left behind
    monkeypatch.setattr(nn, "write_case", real)
    res = export_nnunet(ds, split, tmp_path, dataset_id=9, name="X")
    with pytest.raises(DataError, match="exists; pass --force"):
        export_nnunet(ds, split, tmp_path, dataset_id=9, name="X")
    (res.folder / "marker").write_text("old")
    export_nnunet(ds, split, tmp_path, dataset_id=9, name="X", force=True)
    assert not (res.folder / "marker").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["Dataset009_X"]
    with pytest.raises(DataError, match="not in the phantom data set"):
        export_nnunet(ds, {"train": ["99"], "val": [], "test": []}, tmp_path / "y")


def test_export_cli_errors_are_one_line(tiny_phantom: Path, tmp_path: Path) -> None:
    for args, needle in (
        (["--format", "msd"], "unknown --format"),
        (["--format", "nnunet", "--task", "kidney"], "unknown --task"),
        (["--format", "nnunet", "--dataset-id", "0"], "1..999"),
        (["--format", "nnunet", "--include-cysts"], "applies to data sets with cyst masks (ircadb)"),
    ):
        proc = _bench("data", "export", "--dataset", "phantom", "--root", tiny_phantom, "--out", tmp_path / "o",
                      "--cache", tmp_path / "c", *args, cwd=tmp_path)
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.skipif(_nnunet_python() is None, reason="nnunetv2 not importable (set LIVERBENCH_NNUNET_PYTHON to a venv with it)")
def test_nnunet_verify_dataset_integrity_accepts_the_export_and_catches_a_planted_defect(exported) -> None:
    python = _nnunet_python()
    folder, _, work = exported
    proc = verify_with_nnunet(python, folder)
    assert proc.returncode == 0 and "verify_dataset_integrity Done" in proc.stdout, proc.stdout + proc.stderr
    broken = work / "broken" / folder.name  # the gate works: a label value outside dataset.json fails it
    shutil.copytree(folder, broken)
    label_file = next((broken / "labelsTr").iterdir())
    label, _, affine = load_nifti_zyx(label_file)
    label[0, 0, 0] = 3
    from bench.datasets.nifti import save_nifti_zyx

    save_nifti_zyx(label_file, label, affine)
    assert verify_with_nnunet(python, broken).returncode != 0


@pytest.mark.slow
@pytest.mark.skipif(not (IRCADB / "3Dircadb1.1").exists(), reason="shared 3D-IRCADb data absent")
def test_real_ircadb_export(tmp_path: Path) -> None:
    """Patients 1 and 7 (DICOM zips) -> nnU-Net: world geometry kept, and nnU-Net's check when available."""
    root = tmp_path / "ircadb"
    root.mkdir()
    for p in ("3Dircadb1.1", "3Dircadb1.7"):
        (root / p).symlink_to(IRCADB / p)
    ds = get_dataset("ircadb", root=root)
    split = {"train": ["3Dircadb1.1"], "val": ["3Dircadb1.7"], "test": []}
    res = export_nnunet(ds, split, tmp_path / "raw", dataset_id=502, name="IRCADb")
    image, spacing, affine = load_nifti_zyx(res.folder / "imagesTr" / "3Dircadb1.1_0000.nii.gz")
    case = ds.load("3Dircadb1.1")
    assert image.dtype == np.int16 and image.shape == (129, 512, 512)
    np.testing.assert_array_equal(image, case.image)
    np.testing.assert_allclose(affine, case.affine, atol=1e-3)
    label, _, _ = load_nifti_zyx(res.folder / "labelsTr" / "3Dircadb1.1.nii.gz")
    np.testing.assert_array_equal(label, case.label)
    python = _nnunet_python()
    if python is not None:
        proc = verify_with_nnunet(python, res.folder)
        assert proc.returncode == 0, proc.stdout + proc.stderr
