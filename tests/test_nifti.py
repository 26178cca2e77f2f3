"""NIfTI IO: axis order from the affine, exact round trips, bad files as one-line DataErrors."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bench.datasets.nifti import (
    load_nifti_zyx,
    read_nifti_geometry,
    save_nifti_zyx,
    spacing_of,
)
from bench.errors import DataError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TS_CT = DATA / "totalsegmentator" / "example_ct_sm.nii.gz"
TS_SEG = DATA / "totalsegmentator" / "example_seg.nii.gz"


def lits_affine(sx: float = 0.7, sy: float = 0.7, sz: float = 2.5) -> np.ndarray:
    """LiTS-like header: storage x, y, z with both in-plane axes pointing to -R and -A."""
    aff = np.diag([-sx, -sy, sz, 1.0])
    aff[:3, 3] = [170.0, 160.0, -400.0]
    return aff


def write(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def marker_volume(shape_xyz=(12, 10, 6)) -> np.ndarray:
    """Distinct value per voxel, so any axis swap or flip shows."""
    return np.arange(np.prod(shape_xyz), dtype=np.int16).reshape(shape_xyz)


def world_of(affine: np.ndarray, index) -> np.ndarray:
    return (affine @ np.r_[np.asarray(index, float), 1.0])[:3]


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_lits_storage_becomes_zyx_with_same_world_points(tmp_path, suffix):
    raw = marker_volume()
    aff = lits_affine()
    arr, spacing, aff_zyx = load_nifti_zyx(write(tmp_path / f"v{suffix}", raw, aff))
    assert arr.shape == (6, 10, 12) and arr.dtype == np.int16 and arr.flags.c_contiguous
    assert spacing == pytest.approx((2.5, 0.7, 0.7))
    # Every voxel keeps its value and its world position.
    for i, j, k in [(0, 0, 0), (11, 9, 5), (3, 7, 2)]:
        z, y, x = np.argwhere(arr == raw[i, j, k])[0]
        np.testing.assert_allclose(world_of(aff_zyx, (z, y, x)), world_of(aff, (i, j, k)), atol=1e-4)


@pytest.mark.parametrize(
    "axcodes_affine",
    [
        np.diag([1.0, 1.0, 1.0, 1.0]),  # RAS
        np.diag([-1.0, 1.0, -1.0, 1.0]),  # L A I
        np.array([[0, 0, 2.0, 0], [1.0, 0, 0, 0], [0, -1.5, 0, 0], [0, 0, 0, 1]]),  # permuted axes
    ],
)
def test_any_orientation_gives_the_canonical_direction(tmp_path, axcodes_affine):
    arr, spacing, aff_zyx = load_nifti_zyx(write(tmp_path / "v.nii.gz", marker_volume(), axcodes_affine))
    # Canonical: x index -> patient left (RAS x decreases), y -> posterior (RAS y decreases), z -> superior.
    rot = aff_zyx[:3, :3]
    assert rot[0, 2] < 0 and rot[1, 1] < 0 and rot[2, 0] > 0
    assert np.count_nonzero(rot) == 3
    assert sorted(arr.shape) == sorted(marker_volume().shape)
    assert spacing == pytest.approx(tuple(np.linalg.norm(rot, axis=0)))


def test_same_anatomy_in_two_storages_loads_identically(tmp_path):
    raw = marker_volume()
    aff = lits_affine()
    # The same image stored RAS: flip x and y and move the origin accordingly.
    flipped = raw[::-1, ::-1, :]
    aff_ras = aff.copy()
    aff_ras[:3, 0] *= -1
    aff_ras[:3, 1] *= -1
    aff_ras[:3, 3] = world_of(aff, (raw.shape[0] - 1, raw.shape[1] - 1, 0))
    a1, _, A1 = load_nifti_zyx(write(tmp_path / "lps.nii", raw, aff))
    a2, _, A2 = load_nifti_zyx(write(tmp_path / "ras.nii", np.ascontiguousarray(flipped), aff_ras))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_allclose(A1, A2, atol=1e-4)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_save_like_restores_input_orientation(tmp_path, suffix):
    raw = marker_volume()
    aff = np.array([[0, 0, 2.0, 5], [-1.0, 0, 0, 6], [0, 1.5, 0, 7], [0, 0, 0, 1]])
    src = write(tmp_path / f"in{suffix}", raw, aff)
    arr, _, aff_zyx = load_nifti_zyx(src)
    out = save_nifti_zyx(tmp_path / f"out{suffix}", arr, aff_zyx, like=src)
    back = nib.load(str(out))
    assert back.shape == raw.shape
    np.testing.assert_array_equal(back.affine, nib.load(str(src)).affine)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), raw)
    again, _, aff_again = load_nifti_zyx(out)
    np.testing.assert_array_equal(again, arr)
    np.testing.assert_allclose(aff_again, aff_zyx, atol=1e-5)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_save_without_like_round_trips(tmp_path):
    arr, _, aff_zyx = load_nifti_zyx(write(tmp_path / "in.nii.gz", marker_volume(), lits_affine()))
    mask = (arr % 3 == 0)
    out = save_nifti_zyx(tmp_path / "mask.nii.gz", mask, aff_zyx)
    back, spacing, aff_back = load_nifti_zyx(out)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, mask.astype(np.uint8))
    np.testing.assert_allclose(aff_back, aff_zyx, atol=1e-5)
    assert spacing == pytest.approx(spacing_of(aff_zyx))


def test_save_like_rejects_other_grid(tmp_path):
    src = write(tmp_path / "in.nii.gz", marker_volume(), lits_affine())
    arr, _, aff_zyx = load_nifti_zyx(src)
    with pytest.raises(DataError, match="shape"):
        save_nifti_zyx(tmp_path / "o.nii.gz", arr[:-1], aff_zyx, like=src)
    shifted = aff_zyx.copy()
    shifted[:3, 3] += 10.0
    with pytest.raises(DataError, match="affine"):
        save_nifti_zyx(tmp_path / "o.nii.gz", arr, shifted, like=src)
    with pytest.raises(DataError, match=r"\.nii"):
        save_nifti_zyx(tmp_path / "o.png", arr, aff_zyx)


def test_geometry_from_header_matches_load(tmp_path):
    src = write(tmp_path / "in.nii.gz", marker_volume(), np.array([[0, 0, 2.0, 5], [-1.0, 0, 0, 6], [0, 1.5, 0, 7], [0, 0, 0, 1]]))
    arr, _, aff_zyx = load_nifti_zyx(src)
    shape, aff = read_nifti_geometry(src)
    assert shape == arr.shape
    np.testing.assert_array_equal(aff, aff_zyx)


def test_singleton_fourth_axis_is_dropped_and_true_4d_refused(tmp_path):
    arr, _, _ = load_nifti_zyx(write(tmp_path / "a.nii.gz", marker_volume()[..., None], np.eye(4)))
    assert arr.ndim == 3
    with pytest.raises(DataError, match="3-D"):
        load_nifti_zyx(write(tmp_path / "b.nii.gz", np.zeros((4, 4, 4, 2), np.int16), np.eye(4)))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_file_is_a_one_line_data_error(tmp_path, suffix):
    good = write(tmp_path / f"good{suffix}", np.random.default_rng(0).integers(-999, 999, (40, 40, 20)).astype(np.int16), lits_affine())
    blob = good.read_bytes()
    for name, cut in [("half", len(blob) // 2), ("header", 100)]:
        bad = tmp_path / f"{name}{suffix}"
        bad.write_bytes(blob[:cut])
        with pytest.raises(DataError) as err:
            load_nifti_zyx(bad)
        assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_garbage_and_missing_files(tmp_path):
    bad = tmp_path / "junk.nii.gz"
    bad.write_bytes(b"not a nifti" * 50)
    with pytest.raises(DataError, match="junk.nii.gz"):
        load_nifti_zyx(bad)
    with pytest.raises(DataError, match="not found"):
        load_nifti_zyx(tmp_path / "absent.nii")


@pytest.mark.skipif(not TS_CT.exists(), reason="shared real data absent")
def test_totalsegmentator_example_round_trip(tmp_path):
    ct, spacing, aff = load_nifti_zyx(TS_CT)
    assert ct.shape == (30, 101, 122) and ct.dtype == np.int16
    assert spacing == pytest.approx((3.0, 3.0, 3.0))
    seg, _, aff_seg = load_nifti_zyx(TS_SEG)
    np.testing.assert_array_equal(aff, aff_seg)
    liver = seg == 5
    assert liver.any()
    # Liver lies on the patient's right: lower canonical x (x increases towards the left).
    assert np.argwhere(liver)[:, 2].mean() < ct.shape[2] / 2
    out = save_nifti_zyx(tmp_path / "liver.nii.gz", liver, aff, like=TS_CT)
    ref, saved = nib.load(str(TS_CT)), nib.load(str(out))
    assert saved.shape == ref.shape
    np.testing.assert_array_equal(saved.affine, ref.affine)
    np.testing.assert_array_equal(np.asanyarray(saved.dataobj), np.asanyarray(nib.load(str(TS_SEG)).dataobj) == 5)
    back, _, aff_back = load_nifti_zyx(out)
    np.testing.assert_array_equal(back, liver)
    np.testing.assert_array_equal(aff_back, aff)
