"""NIfTI in and out on the benchmark's canonical (Z, Y, X) grid, with the file's orientation undone and redone.

Why: NIfTI files store voxels in whatever axis order and direction the writer chose (LiTS stores
x, y, z with both in-plane axes flipped; TotalSegmentator writes RAS). Only the affine says which
array axis is which, so the axis order is always read from it, never assumed.

Canonical orientation (shared with the DICOM reader, so every adapter returns the same layout):
the array is indexed ``[z, y, x]`` with

* X (last axis)  increasing towards the patient's **left**   (column 0 = patient's right),
* Y (middle)     increasing towards **posterior**            (row 0 = anterior),
* Z (first axis) increasing towards **superior**             (slice 0 = most inferior),

i.e. the index directions of DICOM's LPS patient system. ``image[k]`` is an axial slice shown as
radiologists view it (anterior at the top, the patient's right on the left of the screen).

Affines returned here map the canonical voxel index ``(z, y, x, 1)`` to NIfTI world coordinates
(RAS+, mm), so they can be compared across adapters and written back by `save_nifti_zyx`.
A mask predicted on the canonical array is saved in the *input file's* own orientation and
affine by passing ``like=<input file>`` (what `bench predict` needs to hand back a mask that
overlays the user's file in any viewer).
"""

from __future__ import annotations

import gzip
import mmap
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

from bench.atomic import atomic_path
from bench.errors import DataError

# Index directions of the canonical (x, y, z) storage, in nibabel's "towards" axis codes.
CANONICAL_AXCODES = ("L", "P", "S")
_CANONICAL_ORNT = nio.axcodes2ornt(CANONICAL_AXCODES)
# (z, y, x) voxel index -> (x, y, z) voxel index; it is its own inverse.
_SWAP_ZX = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def is_nifti_path(path: str | os.PathLike) -> bool:
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def spacing_of(affine_zyx: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (z, y, x) in mm: the lengths of the affine's columns."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine_zyx)[:3, :3], axis=0))  # type: ignore[return-value]


def zyx_affine_from_xyz(affine_xyz: np.ndarray) -> np.ndarray:
    """Affine of the same grid indexed (z, y, x) instead of (x, y, z)."""
    return np.asarray(affine_xyz, dtype=float) @ _SWAP_ZX


def _to_canonical_transform(affine_xyz: np.ndarray) -> np.ndarray:
    return nio.ornt_transform(nio.io_orientation(affine_xyz), _CANONICAL_ORNT)


def canonicalize_xyz(array_xyz: np.ndarray, affine_xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder/flip an (x, y, z)-indexed array to canonical and return it as a (Z, Y, X) view + zyx affine.

    Only axis permutations and flips (no resampling): oblique scans keep their exact geometry in
    the affine, and the axes go to the closest canonical direction (nibabel's io_orientation).
    The result is a view (no copy); callers decide whether to make it contiguous.
    """
    transform = _to_canonical_transform(affine_xyz)
    canon_xyz = nio.apply_orientation(array_xyz, transform)
    canon_affine = np.asarray(affine_xyz, dtype=float) @ nio.inv_ornt_aff(transform, array_xyz.shape[:3])
    return canon_xyz.transpose(2, 1, 0), zyx_affine_from_xyz(canon_affine)


def canonicalize_zyx(array_zyx: np.ndarray, affine_zyx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`canonicalize_xyz` for an array already indexed (z, y, x) with its zyx affine (DICOM stacks)."""
    return canonicalize_xyz(array_zyx.transpose(2, 1, 0), zyx_affine_from_xyz(affine_zyx))


def _materialize(view: np.ndarray, dtype: np.dtype | type | None) -> np.ndarray:
    """One C-contiguous in-memory array from a (possibly memory-mapped, strided) view; at most one copy."""
    if dtype is not None and view.dtype != np.dtype(dtype):
        return np.ascontiguousarray(view, dtype=dtype)
    if _backed_by_file(view) or not view.flags.c_contiguous:
        return np.array(view, order="C")
    return np.asarray(view)


def _backed_by_file(array: np.ndarray) -> bool:
    """Whether ``array`` is (a view of) a memory map; such arrays fail later if the file changes or is short."""
    obj: object = array
    while obj is not None:
        if isinstance(obj, (np.memmap, mmap.mmap)):
            return True
        obj = getattr(obj, "base", None)
    return False


def _load_image(path: Path) -> nib.Nifti1Image:
    if not path.is_file():
        raise DataError(f"{path}: NIfTI file not found")
    if not is_nifti_path(path):
        raise DataError(f"{path}: not a NIfTI file (expected .nii or .nii.gz)")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for bad headers / truncated gzip
        raise DataError(f"{path}: cannot read NIfTI header ({_one_line(exc)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(f"{path}: not a NIfTI-1/2 image ({type(img).__name__})")
    return img


def _spatial_shape(img: nib.spatialimages.SpatialImage, path: Path) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 3 or any(s != 1 for s in shape[3:]) or min(shape[:3]) < 1:
        raise DataError(f"{path}: expected a 3-D volume, got shape {shape}")
    return shape[:3]  # type: ignore[return-value]


def _check_affine(affine: np.ndarray, path: Path) -> None:
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(f"{path}: NIfTI affine is singular or not finite")


def load_nifti_zyx(
    path: str | os.PathLike, dtype: np.dtype | type | None = None
) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """Read a NIfTI volume as ``(array (Z, Y, X), spacing (z, y, x) mm, affine_zyx 4x4 -> RAS mm)``.

    The array keeps the stored dtype after the header's scl_slope/inter (int16 stays int16;
    nibabel's float64 promotion of `get_fdata` is avoided), unless ``dtype`` is given. A truncated
    or corrupt file raises `DataError` naming it.
    """
    path = Path(path)
    img = _load_image(path)
    shape = _spatial_shape(img, path)
    affine = np.asarray(img.affine, dtype=float)
    _check_affine(affine, path)
    try:
        raw = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise DataError(f"{path}: cannot read NIfTI voxel data, truncated or corrupt? ({_one_line(exc)})") from None
    raw = raw.reshape(shape, order="A") if raw.shape != shape else raw
    view, affine_zyx = canonicalize_xyz(raw, affine)
    try:
        array = _materialize(view, dtype)
    except Exception as exc:  # memory-mapped reads of a truncated .nii fail here
        raise DataError(f"{path}: cannot read NIfTI voxel data, truncated or corrupt? ({_one_line(exc)})") from None
    return array, spacing_of(affine_zyx), affine_zyx


def read_nifti_geometry(path: str | os.PathLike) -> tuple[tuple[int, int, int], np.ndarray]:
    """Canonical ``(shape (Z, Y, X), affine_zyx)`` of a NIfTI file from its header alone (no voxel read)."""
    path = Path(path)
    img = _load_image(path)
    shape = _spatial_shape(img, path)
    affine = np.asarray(img.affine, dtype=float)
    _check_affine(affine, path)
    transform = _to_canonical_transform(affine)
    canon_shape_xyz = tuple(int(shape[int(ax)]) for ax in np.argsort(transform[:, 0]))
    canon_affine = affine @ nio.inv_ornt_aff(transform, shape)
    return (canon_shape_xyz[2], canon_shape_xyz[1], canon_shape_xyz[0]), zyx_affine_from_xyz(canon_affine)


# Grid comparison tolerances (see `grid_difference`): a fraction of the voxel, plus a floor in mm.
GRID_REL_TOL = 1e-3
GRID_ABS_TOL_MM = 1e-4


def _grid_tolerance(spacing_a: tuple[float, ...], spacing_b: tuple[float, ...]) -> float:
    """Position tolerance in mm: ``GRID_REL_TOL`` of the smallest voxel plus ``GRID_ABS_TOL_MM``.

    Why these numbers: what has to be tolerated is float32 header rounding (the NIfTI affine is
    stored in float32: ~6e-5 mm at 1000 mm from the origin, ~1e-7 of a voxel size), which the
    0.1 um floor covers; anything beyond a thousandth of a voxel is a different grid. A relative
    tolerance is what makes the check scale-free: the old 0.5 mm absolute one let 0.70 vs 0.76 mm
    pixels (30 mm apart at the far edge of a 512 px slice) pass.
    """
    return GRID_REL_TOL * min(min(spacing_a), min(spacing_b)) + GRID_ABS_TOL_MM


def format_spacing(spacing: tuple[float, ...]) -> str:
    """``(6.0, 0.7, 0.7)`` -> ``"6 x 0.7 x 0.7 mm"`` (z, y, x)."""
    return " x ".join(f"{s:.6g}" for s in spacing) + " mm"


def grid_difference(affine_a: np.ndarray, affine_b: np.ndarray) -> str | None:
    """What differs between two canonical zyx voxel grids (spacing, origin, axis directions), or None.

    Both affines must be canonical (`load_nifti_zyx`, `read_nifti_geometry`): voxel (0, 0, 0) is
    then the same anatomical corner whatever the files' storage order, so the same grid stored
    RAS and LPS compares equal, and spacing, origin and axis directions are compared in world
    space rather than entry by entry. Spacing per axis within ``GRID_REL_TOL`` of that axis's
    voxel plus ``GRID_ABS_TOL_MM``; the origin within `_grid_tolerance`; each axis direction
    (unit vector) within ``GRID_REL_TOL`` (1 mrad).
    """
    a, b = np.asarray(affine_a, dtype=float), np.asarray(affine_b, dtype=float)
    sa, sb = np.asarray(spacing_of(a)), np.asarray(spacing_of(b))
    if np.any(np.abs(sa - sb) > GRID_REL_TOL * np.maximum(sa, sb) + GRID_ABS_TOL_MM):
        return "voxel spacing differs"
    origin_gap = float(np.linalg.norm(a[:3, 3] - b[:3, 3]))
    if origin_gap > _grid_tolerance(tuple(sa), tuple(sb)):
        return f"origin differs by {origin_gap:.4g} mm ({origin_gap / float(min(sa.min(), sb.min())):.3g} voxel)"
    dir_gap = float(np.max(np.linalg.norm(a[:3, :3] / sa - b[:3, :3] / sb, axis=0)))
    if dir_gap > GRID_REL_TOL:
        return f"axis directions differ by {np.degrees(dir_gap):.3g} degrees"
    return None


def same_grid(affine_a: np.ndarray, affine_b: np.ndarray) -> bool:
    """Whether two canonical zyx affines describe the same voxel grid, up to float32 header rounding."""
    return grid_difference(affine_a, affine_b) is None


def save_nifti_zyx(
    path: str | os.PathLike,
    array_zyx: np.ndarray,
    affine_zyx: np.ndarray,
    like: str | os.PathLike | None = None,
) -> Path:
    """Write a canonical (Z, Y, X) array as NIfTI (.nii or .nii.gz), atomically.

    With ``like`` (the input file the array was computed from): the array is put back into that
    file's own axis order and flips and written with its exact affine and qform/sform codes, so the
    result overlays the input in any viewer (qform_code 0 stays 0); its grid must match
    ``affine_zyx`` (else `DataError`).
    Without ``like``: written in canonical storage (x -> L, y -> P, z -> S) with ``affine_zyx``.
    Either way `load_nifti_zyx` of the result returns ``array_zyx`` unchanged.
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise DataError(f"{path}: output name must end in .nii or .nii.gz")
    array_zyx = np.asarray(array_zyx)
    affine_zyx = np.asarray(affine_zyx, dtype=float)
    if array_zyx.ndim != 3 or affine_zyx.shape != (4, 4):
        raise DataError(f"{path}: need a 3-D array and a 4x4 affine, got {array_zyx.shape} and {affine_zyx.shape}")
    if array_zyx.dtype == np.bool_:
        array_zyx = array_zyx.astype(np.uint8)
    if array_zyx.dtype == np.float64:
        array_zyx = array_zyx.astype(np.float32)

    if like is None:
        data = array_zyx.transpose(2, 1, 0)
        out_affine = zyx_affine_from_xyz(affine_zyx)
        qcode = scode = 1  # scanner-anatomical
    else:
        like = Path(like)
        ref = _load_image(like)
        ref_shape = _spatial_shape(ref, like)
        ref_affine = np.asarray(ref.affine, dtype=float)
        _check_affine(ref_affine, like)
        canon_shape, canon_affine = read_nifti_geometry(like)
        if tuple(array_zyx.shape) != canon_shape:
            raise DataError(f"{path}: array shape {array_zyx.shape} differs from {like} (canonical {canon_shape})")
        if not same_grid(affine_zyx, canon_affine):
            raise DataError(f"{path}: affine differs from the grid of {like}; cannot save in its orientation")
        back = nio.ornt_transform(_CANONICAL_ORNT, nio.io_orientation(ref_affine))
        data = nio.apply_orientation(array_zyx.transpose(2, 1, 0), back)
        if data.shape != ref_shape:  # cannot happen if the transforms are consistent; guards the invariant
            raise DataError(f"{path}: reoriented shape {data.shape} differs from {like} shape {ref_shape}")
        out_affine = ref_affine
        # the input's own qform and sform, codes included, exactly: a code 0 stays 0 ("unknown"),
        # so a viewer picks the same transform for the mask as for the CT it overlays
        qform, qcode = ref.header.get_qform(), int(ref.header["qform_code"])
        sform, scode = ref.header.get_sform(), int(ref.header["sform_code"])

    img = nib.Nifti1Image(np.asanyarray(data), out_affine)
    if like is None:
        img.set_qform(out_affine, code=qcode)
        img.set_sform(out_affine, code=scode)
    else:
        img.set_qform(qform, code=qcode)
        img.set_sform(sform, code=scode)
    img.header.set_xyzt_units("mm", "sec")
    img.set_data_dtype(array_zyx.dtype)
    payload = img.to_bytes()
    if path.name.lower().endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=1, mtime=0)
    with atomic_path(path, needed=len(payload)) as tmp:  # a full disk is one line naming the size
        tmp.write_bytes(payload)
    return path
