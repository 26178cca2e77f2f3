"""DICOM series reading and the 3D-IRCADb adapter: synthetic phantoms in every layout, bad inputs, real data."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from bench.datasets import DATASETS, get_dataset
from bench.datasets.dicom import open_zip, read_dicom_series, read_dicom_volume, zip_items
from bench.datasets.ircadb import classify_structure, list_structures
from bench.errors import ConfigError, DataError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "3dircadb1"

Z, Y, X = 6, 16, 20
DZ, DY, DX = 2.0, 0.75, 0.7
Z0 = -40.0


# ----------------------------------------------------------------------------- synthetic writer
def dicom_bytes(pixels: np.ndarray, *, z: float | None, series: str, instance: int | None,
                orientation=(1, 0, 0, 0, 1, 0), origin_xy=(-7.0, -5.0), intercept: float = -1024.0,
                slope: float = 1.0) -> bytes:
    """A minimal valid CT slice (extensionless files are what IRCADb ships)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("slice", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = series
    if instance is not None:
        ds.InstanceNumber = instance
    if z is not None:
        ds.ImagePositionPatient = [origin_xy[0], origin_xy[1], z]
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = [DY, DX]
    ds.SliceThickness = DZ
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if pixels.dtype == np.uint8:
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
    else:
        pixels = pixels.astype(np.int16)
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def truth() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Canonical (Z, Y, X) HU and masks: liver box, two tumours inside, a cyst, an extrahepatic tumour."""
    rng = np.random.default_rng(0)
    hu = rng.integers(-200, 300, (Z, Y, X)).astype(np.float32)
    hu += np.arange(Z, dtype=np.float32)[:, None, None] * 1000  # slice identity is visible in HU
    m = {name: np.zeros((Z, Y, X), bool) for name in ("liver", "livertumor01", "livertumor2", "liverkyste", "tumor", "leftsurretumor", "bone")}
    m["liver"][1:5, 2:10, 1:9] = True
    m["livertumor01"][2:4, 3:5, 2:4] = True
    m["livertumor2"][3:5, 7:9, 6:8] = True
    m["liverkyste"][1:2, 4:6, 5:7] = True
    m["tumor"][2:4, 12:14, 14:17] = True  # outside the liver
    m["leftsurretumor"][1:3, 12:15, 15:19] = True
    m["bone"][:, 14:, :] = True
    return hu, m


def expected_label(masks: dict[str, np.ndarray], cysts: bool = False) -> np.ndarray:
    label = masks["liver"].astype(np.uint8)
    lesion = masks["livertumor01"] | masks["livertumor2"] | (masks["liverkyste"] if cysts else False)
    label[lesion] = 2
    return label


def series_files(volume: np.ndarray, *, mask: bool, seed: int, **kw) -> dict[str, bytes]:
    """File name -> bytes; names and InstanceNumbers shuffled so only the position gives the order."""
    rng = np.random.default_rng(seed)
    names = rng.permutation(volume.shape[0])
    instances = rng.permutation(volume.shape[0])
    series = generate_uid()
    out = {}
    for k in range(volume.shape[0]):
        px = (volume[k].astype(np.uint8) * 255) if mask else (volume[k] + 1024).astype(np.int16)
        out[f"image_{names[k]}"] = dicom_bytes(px, z=Z0 + k * DZ, series=series, instance=int(instances[k]) + 1, **kw)
    return out


def write_patient(folder: Path, layout: str = "unpacked", structures: tuple[str, ...] | None = None) -> Path:
    hu, masks = truth()
    structures = tuple(masks) if structures is None else structures
    ct = series_files(hu, mask=False, seed=1)
    mk = {s: series_files(masks[s], mask=True, seed=10 + i) for i, s in enumerate(structures)}
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "zipped":
        with zipfile.ZipFile(folder / "PATIENT_DICOM.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("PATIENT_DICOM/", b"")
            for name, data in ct.items():
                zf.writestr(f"PATIENT_DICOM/{name}", data)
        with zipfile.ZipFile(folder / "MASKS_DICOM.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            for s, files in mk.items():
                zf.writestr(f"MASKS_DICOM/{s}/", b"")
                for name, data in files.items():
                    zf.writestr(f"MASKS_DICOM/{s}/{name}", data)
        return folder
    nest = layout == "nested"
    ct_dir = folder / "PATIENT_DICOM" / ("PATIENT_DICOM" if nest else "")
    mask_dir = folder / "MASKS_DICOM" / ("MASKS_DICOM" if nest else "")
    ct_dir.mkdir(parents=True, exist_ok=True)
    for name, data in ct.items():
        (ct_dir / name).write_bytes(data)
    for s, files in mk.items():
        (mask_dir / s).mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (mask_dir / s / name).write_bytes(data)
    return folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "ircadb"
    write_patient(r / "3Dircadb1.10", "zipped")
    write_patient(r / "3Dircadb1.2", "nested")
    write_patient(r / "3Dircadb1.1", "unpacked")
    (r / "LICENSE.txt").write_text("licence")
    return r


# ----------------------------------------------------------------------------- structure names
@pytest.mark.parametrize(
    "name, default, with_cysts",
    [
        ("liver", "liver", "liver"),
        ("Liver", "liver", "liver"),
        ("livertumor", "lesion", "lesion"),
        ("livertumor01", "lesion", "lesion"),
        ("livertumor1", "lesion", "lesion"),
        ("livertumors", "lesion", "lesion"),
        ("liver_tumour_3", "lesion", "lesion"),
        ("metastasectomie", "lesion", "lesion"),
        ("liverkyst", None, "lesion"),
        ("liverkyste", None, "lesion"),
        ("livercyst", None, "lesion"),
        ("tumor", None, None),
        ("leftsurretumor", None, None),
        ("rightsurretumor", None, None),
        ("leftsurrenalgland", None, None),
        ("portalvein", None, None),
        ("gallbladder", None, None),
        ("liverkidney", None, None),
    ],
)
def test_classify_structure(name, default, with_cysts):
    assert classify_structure(name) == default
    assert classify_structure(name, include_cysts=True) == with_cysts


# ----------------------------------------------------------------------------- DICOM reader
def test_series_reader_orders_by_position_and_applies_rescale(tmp_path):
    hu, _ = truth()
    folder = tmp_path / "ct"
    folder.mkdir()
    for name, data in series_files(hu, mask=False, seed=3).items():
        (folder / name).write_bytes(data)
    (folder / "README.txt").write_text("not a slice")
    vol, spacing, affine = read_dicom_series(folder)
    assert vol.dtype == np.float32 and vol.shape == (Z, Y, X)
    np.testing.assert_array_equal(vol, hu)
    assert spacing == pytest.approx((DZ, DY, DX))
    # (z, y, x) index -> RAS: z up, y posterior (RAS y falls), x to the patient's left (RAS x falls).
    np.testing.assert_allclose(affine @ [0, 0, 0, 1], [7.0, 5.0, Z0, 1], atol=1e-6)
    np.testing.assert_allclose(affine[:3, :3], np.array([[0, 0, -DX], [0, -DY, 0], [DZ, 0, 0]]), atol=1e-9)
    # The same series from a list of files and from an in-memory zip.
    files = sorted(p for p in folder.iterdir() if p.name.startswith("image_"))
    np.testing.assert_array_equal(read_dicom_series(files)[0], hu)
    zpath = tmp_path / "ct.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in files:
            zf.writestr(f"CT/{p.name}", p.read_bytes())
    np.testing.assert_array_equal(read_dicom_series(zpath)[0], hu)
    with open_zip(zpath) as zf:
        np.testing.assert_array_equal(read_dicom_series(zip_items(zf, "CT/"))[0], hu)


def test_reader_flips_a_rotated_acquisition_to_canonical(tmp_path):
    """Rows/columns stored rotated 180 degrees (IOP -1,0,0,0,-1,0) load as the same canonical image."""
    hu, _ = truth()
    series = generate_uid()
    folder = tmp_path / "rot"
    folder.mkdir()
    # Voxel (r, c) of the rotated image is canonical (Y-1-r, X-1-c); its first pixel sits at the far corner.
    far = (-7.0 + (X - 1) * DX, -5.0 + (Y - 1) * DY)
    for k in range(Z):
        px = (hu[k, ::-1, ::-1] + 1024).astype(np.int16)
        (folder / f"s{k}").write_bytes(dicom_bytes(px, z=Z0 + k * DZ, series=series, instance=k, orientation=(-1, 0, 0, 0, -1, 0), origin_xy=far))
    vol, _, affine = read_dicom_series(folder)
    np.testing.assert_array_equal(vol, hu)
    np.testing.assert_allclose(affine @ [0, 0, 0, 1], [7.0, 5.0, Z0, 1], atol=1e-5)


def test_reader_falls_back_to_instance_number_then_name(tmp_path):
    hu, _ = truth()
    series = generate_uid()
    by_instance, by_name = tmp_path / "inst", tmp_path / "name"
    by_instance.mkdir()
    by_name.mkdir()
    rng = np.random.default_rng(5)
    for k, fake in zip(range(Z), rng.permutation(Z)):
        px = (hu[k] + 1024).astype(np.int16)
        (by_instance / f"x{fake}").write_bytes(dicom_bytes(px, z=None, series=series, instance=k + 1))
        (by_name / f"image_{k}").write_bytes(dicom_bytes(px, z=None, series=series, instance=None))
    vol = read_dicom_volume(by_instance)
    assert vol.ordered_by == "instance"
    np.testing.assert_array_equal(vol.volume, hu)
    assert vol.spacing == pytest.approx((DZ, DY, DX))
    vol = read_dicom_volume(by_name)
    assert vol.ordered_by == "name"
    np.testing.assert_array_equal(vol.volume, hu)


def _ct_folder(tmp_path: Path) -> Path:
    hu, _ = truth()
    folder = tmp_path / "ct"
    folder.mkdir()
    for name, data in series_files(hu, mask=False, seed=4).items():
        (folder / name).write_bytes(data)
    return folder


def test_reader_rejects_mixed_series(tmp_path):
    folder = _ct_folder(tmp_path)
    other = np.zeros((Y, X), np.int16)
    (folder / "image_99").write_bytes(dicom_bytes(other, z=Z0 + 0.5, series=generate_uid(), instance=99))
    with pytest.raises(DataError, match=r"ct: mixed series \(2 SeriesInstanceUIDs\)"):
        read_dicom_series(folder)


def test_reader_rejects_other_size_duplicates_and_gaps(tmp_path):
    folder = _ct_folder(tmp_path)
    first = sorted(folder.iterdir())[0]
    import pydicom

    ds = pydicom.dcmread(first)
    series = str(ds.SeriesInstanceUID)
    small = tmp_path / "small"
    small.mkdir()
    for p in folder.iterdir():
        (small / p.name).write_bytes(p.read_bytes())
    (small / "image_77").write_bytes(dicom_bytes(np.zeros((8, 8), np.int16), z=Z0 + 100, series=series, instance=77))
    with pytest.raises(DataError, match="small: mixed series .image sizes"):
        read_dicom_series(small)
    (folder / "copy").write_bytes(first.read_bytes())
    with pytest.raises(DataError, match="same ImagePositionPatient"):
        read_dicom_series(folder)
    (folder / "copy").unlink()
    middle = [p for p in folder.iterdir()
              if float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) == Z0 + 2 * DZ]
    assert len(middle) == 1
    middle[0].unlink()
    with pytest.raises(DataError, match="uneven slice spacing"):
        read_dicom_series(folder)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_reader_names_a_corrupt_file(tmp_path, damage):
    folder = _ct_folder(tmp_path)
    victim = sorted(folder.iterdir())[2]
    blob = victim.read_bytes()
    victim.write_bytes(b"\x00\x13junk" * 40 if damage == "garbage" else blob[: len(blob) - 200])
    with pytest.raises(DataError) as err:
        read_dicom_series(folder)
    assert str(victim) in str(err.value) and "\n" not in str(err.value)


def test_reader_empty_and_bad_zip(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no DICOM files"):
        read_dicom_series(tmp_path / "empty")
    bad = tmp_path / "PATIENT_DICOM.zip"
    bad.write_bytes(b"PK\x03\x04" + b"broken" * 20)
    with pytest.raises(DataError, match="PATIENT_DICOM.zip"):
        open_zip(bad)


# ----------------------------------------------------------------------------- adapter, synthetic
def test_layouts_ids_and_labels(root):
    assert "ircadb" in DATASETS
    ds = get_dataset("ircadb", root=root)
    assert ds.case_ids() == ["3Dircadb1.1", "3Dircadb1.2", "3Dircadb1.10"]
    hu, masks = truth()
    want = expected_label(masks)
    for cid in ds.case_ids():
        case = ds.load(cid)
        assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
        np.testing.assert_array_equal(case.image, hu, err_msg=cid)
        np.testing.assert_array_equal(case.label, want, err_msg=cid)
        assert case.spacing == pytest.approx((DZ, DY, DX))
        assert case.affine.shape == (4, 4)
        assert case.meta["lesion_structures"] == ["livertumor01", "livertumor2"]
        assert "tumor" in case.meta["ignored_structures"] and "leftsurretumor" in case.meta["ignored_structures"]
        assert case.meta["lesion_voxels_outside_liver"] == 0


def test_include_cysts_option(root):
    _, masks = truth()
    case = get_dataset("ircadb", root=root, include_cysts="true").load("3Dircadb1.10")
    np.testing.assert_array_equal(case.label, expected_label(masks, cysts=True))
    assert "liverkyste" in case.meta["lesion_structures"]
    with pytest.raises(ConfigError, match="unknown ircadb option"):
        get_dataset("ircadb", root=root, cysts=True)


def test_include_cysts_gets_its_own_cache_folder_and_labels(root, tmp_path):
    """Cached labels never mix the two lesion definitions: another folder, recorded in cache.json."""
    import json

    from bench.config import get_profile, override
    from bench.datasets.cache import prepare_dataset

    prof = override(get_profile("smoke"), {"input_size": 16})
    without, split_a = prepare_dataset("ircadb", root, tmp_path / "cache", prof, planes=("axial",), progress=False)
    with_cysts, split_b = prepare_dataset("ircadb", root, tmp_path / "cache", prof, planes=("axial",), progress=False,
                                          include_cysts=True)
    assert with_cysts.dir != without.dir and with_cysts.dir.parent == without.dir.parent
    assert split_a == split_b  # the same patients either way
    assert json.loads((without.dir / "cache.json").read_text())["label_options"] == {}
    assert json.loads((with_cysts.dir / "cache.json").read_text())["label_options"] == {"include_cysts": True}
    _, masks = truth()
    cyst_px = int(masks["liverkyste"].sum())
    for cid in ("3Dircadb1.1", "3Dircadb1.2"):
        a = np.asarray(without.labels(cid, "axial"))
        b = np.asarray(with_cysts.labels(cid, "axial"))
        assert int((b == 2).sum()) > int((a == 2).sum()) and cyst_px > 0
    # the per-slice counts training samples by come from the cysts' own labels too (16 px slices: resized)
    assert sum(without.meta("3Dircadb1.1")["slices"]["axial"]["lesion_px"]) < \
        sum(with_cysts.meta("3Dircadb1.1")["slices"]["axial"]["lesion_px"])
    with pytest.raises(ConfigError, match="ircadb"):
        get_dataset("lits", root=root, include_cysts=True)
    # a run with --include-cysts opens the cysts cache; evaluate checks the flag against the saved run
    import json as _json

    from bench.cli.common import build_run_config
    from bench.cli.data import check_cysts, cysts_override
    from bench.config import to_dict
    from bench.datasets.cache import open_or_prepare
    from bench.paths import run_dir

    cfg = build_run_config("unet", "axial", "lesion", "ircadb", str(root), "smoke", 0, "cpu", str(tmp_path / "r"),
                           str(tmp_path / "cache"), None, cysts_override(["input_size=16"], True))
    assert cfg.include_cysts and open_or_prepare(cfg, progress=False)[0].dir == with_cysts.dir
    folder = run_dir(cfg)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(_json.dumps({"config": to_dict(cfg)}))
    check_cysts(cfg)
    plain_cfg = build_run_config("unet", "axial", "lesion", "ircadb", str(root), "smoke", 0, "cpu",
                                 str(tmp_path / "r"), str(tmp_path / "cache"), None, None)
    with pytest.raises(ConfigError, match="trained with --include-cysts"):
        check_cysts(plain_cfg)


def test_include_cysts_flag_on_the_cli(root, tmp_path):
    import subprocess
    import sys

    def bench(*args):
        return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], capture_output=True, text=True,
                              cwd=tmp_path, timeout=300)

    common = ["--dataset", "ircadb", "--root", root, "--cache", tmp_path / "cache", "--profile", "smoke",
              "--set", "input_size=16", "--planes", "axial"]
    plain = bench("data", "prepare", *common)
    cysts = bench("data", "prepare", *common, "--include-cysts")
    assert plain.returncode == 0 and cysts.returncode == 0, plain.stderr + cysts.stderr
    assert "cysts as lesions" in cysts.stdout and "cysts as lesions" not in plain.stdout
    folder = lambda out: out.split("cache ")[1].split(":")[0]  # noqa: E731
    assert folder(plain.stdout) != folder(cysts.stdout)
    from bench.cli.data import cysts_override

    assert cysts_override(["train.lr=1"], True) == ["train.lr=1", "include_cysts=true"]
    assert cysts_override(None, False) is None


def test_root_can_be_one_patient(root):
    ds = get_dataset("ircadb", root=root / "3Dircadb1.2")
    assert ds.case_ids() == ["3Dircadb1.2"]
    assert ds.load("3Dircadb1.2").label.max() == 2


def test_lesion_outside_liver_is_kept_as_lesion_and_counted(tmp_path):
    hu, masks = truth()
    folder = write_patient(tmp_path / "3Dircadb1.3", structures=("liver",))
    outside = np.zeros_like(masks["liver"])
    outside[0, 0:2, 0:2] = True  # slice 0 has no liver
    for name, data in series_files(outside, mask=True, seed=42).items():
        (folder / "MASKS_DICOM" / "livertumor").mkdir(exist_ok=True)
        (folder / "MASKS_DICOM" / "livertumor" / name).write_bytes(data)
    case = get_dataset("ircadb", root=folder).load("3Dircadb1.3")
    assert case.meta["lesion_voxels_outside_liver"] == 4
    assert (case.label[0, 0:2, 0:2] == 2).all()


def test_patient_without_ct_or_liver(tmp_path):
    folder = write_patient(tmp_path / "3Dircadb1.4", structures=("livertumor01", "bone"))
    with pytest.raises(DataError, match=r"MASKS_DICOM: no liver mask"):
        get_dataset("ircadb", root=folder).load("3Dircadb1.4")
    import shutil

    shutil.rmtree(folder / "PATIENT_DICOM")
    with pytest.raises(DataError, match=r"3Dircadb1.4: no CT"):
        get_dataset("ircadb", root=folder).load("3Dircadb1.4")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="no 3D-IRCADb patient folders"):
        get_dataset("ircadb", root=tmp_path / "nothing").case_ids()


def test_mask_shape_mismatch_and_missing_slice(tmp_path):
    folder = write_patient(tmp_path / "3Dircadb1.5", structures=("liver",))
    liver = folder / "MASKS_DICOM" / "liver"
    series = generate_uid()
    for k, p in enumerate(sorted(liver.iterdir())):
        p.write_bytes(dicom_bytes(np.zeros((Y, X + 2), np.uint8), z=Z0 + k * DZ, series=series, instance=k))
    with pytest.raises(DataError, match=r"liver: slice size \(16, 22\) differs"):
        get_dataset("ircadb", root=folder).load("3Dircadb1.5")
    for p in sorted(liver.iterdir()):
        p.unlink()
    for name, data in list(series_files(truth()[1]["liver"], mask=True, seed=7).items())[:-1]:
        (liver / name).write_bytes(data)
    with pytest.raises(DataError, match=r"liver: 5 slices, but .* has 6"):
        get_dataset("ircadb", root=folder).load("3Dircadb1.5")


def test_mask_on_other_positions_is_refused(tmp_path):
    folder = write_patient(tmp_path / "3Dircadb1.6", structures=("liver",))
    liver = folder / "MASKS_DICOM" / "liver"
    series = generate_uid()
    for k, p in enumerate(sorted(liver.iterdir())):
        p.write_bytes(dicom_bytes(np.zeros((Y, X), np.uint8), z=Z0 + 0.9 + k * DZ, series=series, instance=k))
    with pytest.raises(DataError, match="matches no single slice"):
        get_dataset("ircadb", root=folder).load("3Dircadb1.6")


def test_corrupt_ct_file_and_mixed_ct_series(tmp_path):
    folder = write_patient(tmp_path / "3Dircadb1.8", structures=("liver",))
    ct = folder / "PATIENT_DICOM"
    victim = sorted(ct.iterdir())[0]
    good = victim.read_bytes()
    victim.write_bytes(good[:300])
    with pytest.raises(DataError, match=str(victim)):
        get_dataset("ircadb", root=folder).load("3Dircadb1.8")
    victim.write_bytes(good)
    (ct / "image_extra").write_bytes(dicom_bytes(np.zeros((Y, X), np.int16), z=Z0 + 50, series=generate_uid(), instance=50))
    with pytest.raises(DataError, match=rf"{ct}: mixed series"):
        get_dataset("ircadb", root=folder).load("3Dircadb1.8")


def test_corrupt_zip_names_the_archive(tmp_path):
    folder = write_patient(tmp_path / "3Dircadb1.9", "zipped", structures=("liver",))
    (folder / "MASKS_DICOM.zip").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="MASKS_DICOM.zip"):
        get_dataset("ircadb", root=folder).load("3Dircadb1.9")


# ----------------------------------------------------------------------------- real data
real = pytest.mark.skipif(not DATA.exists(), reason="shared real data absent")


@real
def test_real_patient_1():
    ds = get_dataset("ircadb", root=DATA)
    assert ds.case_ids()[:2] == ["3Dircadb1.1", "3Dircadb1.7"]
    case = ds.load("3Dircadb1.1")
    assert case.image.shape == (129, 512, 512) and case.label.shape == (129, 512, 512)
    assert case.spacing == pytest.approx((1.6, 0.57, 0.57), abs=1e-3)
    lesion, liver = case.label == 2, case.label >= 1
    assert lesion.sum() > 1000 and liver.sum() > 1_000_000
    assert case.meta["lesion_voxels_outside_liver"] == 0
    assert case.meta["lesion_structures"] == [f"livertumor0{k}" for k in range(1, 8)]
    assert "liverkyst" in case.meta["ignored_structures"]
    # Anatomy in canonical axes: liver on the patient's right (low x), HU of soft tissue.
    zz, yy, xx = np.nonzero(liver)
    assert xx.mean() < 256
    assert 0 < float(np.median(case.image[liver])) < 200


@real
def test_real_patient_1_cysts_flag_changes_its_labels():
    """3Dircadb1.1 has a cyst (liverkyst): counted as lesion only with include_cysts."""
    plain = get_dataset("ircadb", root=DATA / "3Dircadb1.1").load("3Dircadb1.1")
    cysts = get_dataset("ircadb", root=DATA / "3Dircadb1.1", include_cysts=True).load("3Dircadb1.1")
    assert [n for n in cysts.meta["lesion_structures"] if n not in plain.meta["lesion_structures"]] == ["liverkyst"]
    added = (cysts.label == 2) & (plain.label != 2)
    assert added.sum() > 100 and not ((plain.label == 2) & (cysts.label != 2)).any()
    assert (plain.label[added] >= 1).mean() > 0.9  # the cyst lies in the liver


@real
def test_real_patient_7_has_no_liver_lesion():
    case = get_dataset("ircadb", root=DATA / "3Dircadb1.7").load("3Dircadb1.7")
    assert case.image.shape == (151, 512, 512)
    assert case.spacing == pytest.approx((1.6, 0.782, 0.782), abs=1e-3)
    assert not (case.label == 2).any() and (case.label == 1).any()
    assert "tumor" in case.meta["ignored_structures"]


EXPECTED_LESIONS = {
    "3Dircadb1.2": ["livertumor"], "3Dircadb1.3": ["livertumor"], "3Dircadb1.4": ["livertumor"],
    "3Dircadb1.5": [], "3Dircadb1.6": ["livertumor"],
    "3Dircadb1.8": ["livertumor01", "livertumor02", "livertumor03"], "3Dircadb1.9": ["livertumor"],
    "3Dircadb1.10": ["livertumor"], "3Dircadb1.11": [], "3Dircadb1.12": ["livertumor"],
    "3Dircadb1.13": ["livertumor"], "3Dircadb1.14": ["metastasectomie"], "3Dircadb1.15": ["livertumor"],
    "3Dircadb1.16": ["livertumor"], "3Dircadb1.18": ["livertumor"], "3Dircadb1.19": ["livertumors"],
}
EXPECTED_CYSTS = {"3Dircadb1.9": ["liverkyste"], "3Dircadb1.19": ["livercyst"]}


@real
def test_real_mask_archives_structure_classification():
    folders = sorted((DATA / "masks_only").glob("3Dircadb1.*"))
    assert {f.name for f in folders} == set(EXPECTED_LESIONS)
    for folder in folders:
        names = list_structures(folder)
        assert [n for n in names if classify_structure(n) == "liver"] == ["liver"], folder.name
        assert [n for n in names if classify_structure(n) == "lesion"] == EXPECTED_LESIONS[folder.name], folder.name
        cysts = [n for n in names if classify_structure(n, True) == "lesion" and classify_structure(n) is None]
        assert cysts == EXPECTED_CYSTS.get(folder.name, []), folder.name
    assert {"leftsurretumor", "rightsurretumor"} <= set(list_structures(DATA / "masks_only" / "3Dircadb1.5"))


@real
def test_real_masks_only_patient_has_no_ct():
    ds = get_dataset("ircadb", root=DATA / "masks_only")
    assert "3Dircadb1.14" in ds.case_ids()
    with pytest.raises(DataError, match=r"3Dircadb1.14: no CT"):
        ds.load("3Dircadb1.14")
