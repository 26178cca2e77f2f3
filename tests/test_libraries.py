"""Our hand-written pieces agree with standard libraries; the package ships what it declares (issue 21, item 6)."""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
IRCADB = ROOT.parent / "shared" / "data" / "3dircadb1"


# ---------------------------------------------------------------- bootstrap CI vs scipy.stats.bootstrap


@pytest.mark.parametrize("seed,n", [(0, 8), (1, 20), (2, 60)])
def test_bootstrap_ci_agrees_with_scipy(seed: int, n: int) -> None:
    """bench.reports.tables.bootstrap_ci (percentile, seeded; kept so the golden CI cells stay exact)
    against scipy's percentile bootstrap: the endpoints agree within Monte-Carlo noise."""
    from scipy import stats

    from bench.reports.tables import BOOTSTRAP_RESAMPLES, bootstrap_ci

    diffs = np.random.default_rng(seed).normal(0.03, 0.05, n)
    ours = np.array(bootstrap_ci(diffs))
    theirs = stats.bootstrap((diffs,), np.mean, confidence_level=0.95, n_resamples=20000, method="percentile",
                             random_state=np.random.default_rng(100 + seed)).confidence_interval
    theirs = np.array([theirs.low, theirs.high])
    se = diffs.std(ddof=1) / np.sqrt(n)
    assert np.abs(ours - theirs).max() < 0.1 * se, (ours, theirs, se)
    # the tolerance tells levels apart: scipy's 90% interval is not within it
    ninety = stats.bootstrap((diffs,), np.mean, confidence_level=0.90, n_resamples=20000, method="percentile",
                             random_state=np.random.default_rng(100 + seed)).confidence_interval
    assert np.abs(ours - np.array([ninety.low, ninety.high])).max() > 0.1 * se
    assert BOOTSTRAP_RESAMPLES >= 1000


# ---------------------------------------------------------------- DICOM reader vs plain pydicom


def _pydicom_volume(archive: Path) -> tuple[np.ndarray, np.ndarray]:
    """The series in a zip read with pydicom alone: slices sorted by ImagePositionPatient along the
    slice normal, rescaled to HU; returns (stack (k, row, col), affine (k, row, col) -> RAS mm)."""
    import pydicom

    slices = []
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            if name.endswith("/"):
                continue
            ds = pydicom.dcmread(io.BytesIO(zf.read(name)))
            slices.append(ds)
    iop = np.array(slices[0].ImageOrientationPatient, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]  # direction of increasing column index, of increasing row index
    normal = np.cross(row_dir, col_dir)
    slices.sort(key=lambda ds: float(np.dot(normal, np.array(ds.ImagePositionPatient, dtype=float))))
    stack = np.stack([ds.pixel_array.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1))
                      + float(getattr(ds, "RescaleIntercept", 0)) for ds in slices])
    first = np.array(slices[0].ImagePositionPatient, dtype=float)
    last = np.array(slices[-1].ImagePositionPatient, dtype=float)
    step = (last - first) / (len(slices) - 1)
    dr, dc = (float(v) for v in slices[0].PixelSpacing)  # row spacing, column spacing
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = step, col_dir * dr, row_dir * dc, first
    return stack, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS


@pytest.mark.parametrize("patient", ["3Dircadb1.1", pytest.param("3Dircadb1.7", marks=pytest.mark.slow)])
def test_dicom_reader_agrees_with_pydicom_on_real_ircadb(patient: str) -> None:
    archive = IRCADB / patient / "PATIENT_DICOM.zip"
    if not archive.is_file():
        pytest.skip(f"{archive} not present")
    from bench.datasets.dicom import read_dicom_volume

    ours = read_dicom_volume(archive)
    theirs, affine = _pydicom_volume(archive)
    # the index map between the two grids: a signed axis permutation (canonicalisation) plus offsets
    mapping = np.linalg.inv(ours.affine) @ affine
    assert np.allclose(mapping, np.round(mapping), atol=1e-3), mapping
    mapping = np.round(mapping).astype(int)
    perm = [int(np.flatnonzero(mapping[i, :3])[0]) for i in range(3)]
    aligned = theirs.transpose(perm)
    for axis in range(3):
        if mapping[axis, perm[axis]] < 0:
            aligned = np.flip(aligned, axis)
    assert aligned.shape == ours.volume.shape
    assert np.array_equal(aligned.astype(np.float32), ours.volume)
    unit = np.abs(mapping[:3, :3])  # one unit step per axis on both grids: no resampling
    assert (unit.sum(axis=0) == 1).all() and (unit.sum(axis=1) == 1).all()
    assert np.allclose(sorted(ours.spacing), sorted(np.linalg.norm(affine[:3, :3], axis=0)), atol=1e-4)


# ---------------------------------------------------------------- packaging


def test_package_declares_licence_authors_version_and_types() -> None:
    if sys.version_info < (3, 11):
        pytest.skip("tomllib")
    import tomllib

    import bench

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    meta = project["project"]
    assert meta["license"] == "MIT" and "MIT License" in (ROOT / "LICENSE").read_text()
    assert meta["authors"] and meta["classifiers"]
    assert "version" in meta["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "bench.__version__"} and bench.__version__
    assert (ROOT / "bench" / "py.typed").is_file()
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["bench"]
