"""LiTS adapter on synthetic files with LiTS-like headers (x, y, z storage, flipped in-plane axes)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bench.datasets import DATASETS, get_dataset
from bench.errors import ConfigError, DataError

SHAPE_XYZ = (16, 12, 8)


def lits_affine() -> np.ndarray:
    aff = np.diag([-0.7, -0.7, 2.5, 1.0])
    aff[:3, 3] = [180.0, 170.0, -350.0]
    return aff


def phantom(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stored (x, y, z): HU-like noise, a liver box (1) with a lesion (2) inside, off-centre to expose flips."""
    rng = np.random.default_rng(seed)
    image = rng.integers(-1000, 400, SHAPE_XYZ).astype(np.int16)
    label = np.zeros(SHAPE_XYZ, np.uint8)
    label[2:9, 3:10, 1:6] = 1
    label[4:6, 5:7, 2:4] = 2
    return image, label


def write_case(folder: Path, n: int, suffix: str = ".nii.gz", affine: np.ndarray | None = None,
               image: np.ndarray | None = None, label: np.ndarray | None = None) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    img, lab = phantom(n)
    img = img if image is None else image
    lab = lab if label is None else label
    aff = lits_affine() if affine is None else affine
    vol = folder / f"volume-{n}{suffix}"
    seg = folder / f"segmentation-{n}{suffix}"
    nib.save(nib.Nifti1Image(img, aff), str(vol))
    nib.save(nib.Nifti1Image(lab, aff), str(seg))
    return vol, seg


@pytest.fixture
def lits_root(tmp_path: Path) -> Path:
    root = tmp_path / "LiTS"
    write_case(root / "Training Batch 1", 0, ".nii")
    write_case(root / "Training Batch 1", 2)
    write_case(root / "Training Batch 2", 10, ".nii")
    write_case(root, 1)  # flat files beside the batch folders
    (root / "Training Batch 2" / "notes.txt").write_text("not a case")
    return root


def test_registered_and_found_in_batch_folders(lits_root):
    assert "lits" in DATASETS
    ds = get_dataset("lits", root=lits_root)
    assert ds.case_ids() == ["0", "1", "2", "10"]


def test_load_gives_zyx_hu_label_spacing_and_affine(lits_root):
    ds = get_dataset("lits", root=lits_root)
    case = ds.load("10")
    raw_img, raw_lab = phantom(10)
    assert case.id == "10"
    assert case.image.shape == (8, 12, 16) and case.image.dtype == np.int16
    assert case.label.dtype == np.uint8 and set(np.unique(case.label)) == {0, 1, 2}
    assert case.spacing == pytest.approx((2.5, 0.7, 0.7))
    # LiTS storage already runs x->left, y->posterior, z->superior: canonical is a pure transpose.
    np.testing.assert_array_equal(case.image, raw_img.transpose(2, 1, 0))
    np.testing.assert_array_equal(case.label, raw_lab.transpose(2, 1, 0))
    np.testing.assert_allclose(case.affine @ [0, 0, 0, 1], lits_affine() @ [0, 0, 0, 1], atol=1e-4)
    assert case.meta["source"].endswith("volume-10.nii")
    assert case.mask("lesion").sum() == (raw_lab == 2).sum()
    assert ds.load("010").id == "10"


def test_other_orientation_loads_to_the_same_arrays(tmp_path):
    img, lab = phantom(3)
    write_case(tmp_path / "a", 3)
    # The same scan saved RAS (both in-plane axes flipped, origin moved to the opposite corner).
    aff = lits_affine()
    ras = aff.copy()
    ras[:3, :2] *= -1
    ras[:3, 3] = (aff @ [SHAPE_XYZ[0] - 1, SHAPE_XYZ[1] - 1, 0, 1])[:3]
    write_case(tmp_path / "b", 3, affine=ras, image=np.ascontiguousarray(img[::-1, ::-1]),
               label=np.ascontiguousarray(lab[::-1, ::-1]))
    a = get_dataset("lits", root=tmp_path / "a").load("3")
    b = get_dataset("lits", root=tmp_path / "b").load("3")
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)


def test_float_volume_with_scaling_becomes_float32(tmp_path):
    img, lab = phantom(4)
    write_case(tmp_path, 4, image=img.astype(np.float64) + 0.5, label=lab.astype(np.float32))
    case = get_dataset("lits", root=tmp_path).load("4")
    assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
    np.testing.assert_allclose(case.image, img.transpose(2, 1, 0) + 0.5)


def test_missing_segmentation_names_the_volume(tmp_path):
    vol, seg = write_case(tmp_path, 5)
    seg.unlink()
    with pytest.raises(DataError, match="volume-5.nii.gz"):
        get_dataset("lits", root=tmp_path).case_ids()
    case = get_dataset("lits", root=tmp_path, require_labels=False).load("5")
    assert case.label is None and case.image.shape == (8, 12, 16)


def test_segmentation_without_volume_is_an_error(tmp_path):
    vol, seg = write_case(tmp_path, 6)
    vol.unlink()
    with pytest.raises(DataError, match="segmentation-6.nii.gz"):
        get_dataset("lits", root=tmp_path, require_labels=False).case_ids()


def test_shape_mismatch(tmp_path):
    img, lab = phantom(7)
    write_case(tmp_path, 7, label=lab[:, :, :-1])
    with pytest.raises(DataError, match="segmentation-7.*shape"):
        get_dataset("lits", root=tmp_path).load("7")


def test_grid_mismatch(tmp_path):
    vol, seg = write_case(tmp_path, 8)
    _, lab = phantom(8)
    shifted = lits_affine()
    shifted[:3, 3] += [5.0, 0, 0]
    nib.save(nib.Nifti1Image(lab, shifted), str(seg))
    with pytest.raises(DataError, match="segmentation-8.*grid"):
        get_dataset("lits", root=tmp_path).load("8")


@pytest.mark.parametrize("bad", [3, 255])
def test_label_outside_012(tmp_path, bad):
    _, lab = phantom(9)
    lab[0, 0, 0] = bad
    write_case(tmp_path, 9, label=lab)
    with pytest.raises(DataError, match=rf"segmentation-9.*\[{bad}\]"):
        get_dataset("lits", root=tmp_path).load("9")


def test_non_integer_float_label(tmp_path):
    _, lab = phantom(9)
    fl = lab.astype(np.float32)
    fl[1, 1, 1] = 1.5
    write_case(tmp_path, 9, label=fl)
    with pytest.raises(DataError, match="segmentation-9"):
        get_dataset("lits", root=tmp_path).load("9")


def test_truncated_volume_names_the_file(tmp_path):
    vol, _ = write_case(tmp_path, 11)
    blob = vol.read_bytes()
    vol.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="volume-11.nii.gz") as err:
        get_dataset("lits", root=tmp_path).load("11")
    assert "\n" not in str(err.value)


def test_duplicate_case_files(tmp_path):
    write_case(tmp_path / "Training Batch 1", 12)
    write_case(tmp_path / "Training Batch 2", 12, ".nii")
    with pytest.raises(DataError, match="second file for LiTS case 12"):
        get_dataset("lits", root=tmp_path).case_ids()


def test_bad_root_option_and_case(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        get_dataset("lits", root=tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no LiTS files"):
        get_dataset("lits", root=tmp_path / "empty").case_ids()
    with pytest.raises(ConfigError, match="include_cysts"):
        get_dataset("lits", root=tmp_path, include_cysts=True)
    write_case(tmp_path / "ok", 1)
    with pytest.raises(DataError, match="no LiTS case"):
        get_dataset("lits", root=tmp_path / "ok").load("99")
