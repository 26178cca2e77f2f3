"""Read one DICOM series (folder, zip archive or file list) into a canonical (Z, Y, X) HU volume.

Why these rules:
* Files are often extensionless (3D-IRCADb's ``image_K``) and their names say nothing reliable about
  order, so slices are ordered by ImagePositionPatient projected on the slice normal (the
  geometry), falling back to InstanceNumber and then to the natural order of names only when the
  geometry is missing.
* A folder holding two series (a second reconstruction, a localiser) silently interleaves slices,
  so a second SeriesInstanceUID, another image size or orientation, or two slices at one position
  is an error naming the folder, never a guess.
* Zip archives (the official 3D-IRCADb download) are read member by member in memory, no unpacking.
* The volume goes through the same canonicalisation as NIfTI (`bench.datasets.nifti`): index
  directions x -> patient left, y -> posterior, z -> superior; the affine maps (z, y, x) to RAS mm.

A second series can be read *onto* a first one's grid (``reference=``): 3D-IRCADb's mask series
are matched slice by slice to the CT by position (else instance number, else name order).
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from bench.datasets.base import natural_key
from bench.datasets.nifti import canonicalize_zyx, spacing_of
from bench.errors import DataError

# Files found beside DICOM slices that are not slices; everything else in a folder must parse.
NON_DICOM_SUFFIXES = frozenset(
    ".txt .md .json .xml .csv .zip .gz .tar .png .jpg .jpeg .gif .bmp .tif .tiff .pdf .html .htm "
    ".nii .nrrd .mhd .raw .vtk .stl .obj .log .ini .py .sh .bat .exe .db".split()
)
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_DEFAULT_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@dataclass(frozen=True)
class DicomItem:
    """One slice file: on disk (``path``) or a member of an open zip archive (``archive`` + ``member``)."""

    label: str
    path: Path | None = None
    archive: zipfile.ZipFile | None = None
    member: str | None = None

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else str(self.member).rstrip("/").rsplit("/", 1)[-1]

    def open(self) -> Any:
        if self.path is not None:
            return str(self.path)
        assert self.archive is not None and self.member is not None
        try:
            return io.BytesIO(self.archive.read(self.member))
        except Exception as exc:  # CRC error, truncated member, unsupported compression
            raise DataError(f"{self.label}: cannot read zip member ({_one_line(exc)})") from None


def _looks_like_slice_name(name: str) -> bool:
    if name.startswith(".") or name.upper() == "DICOMDIR" or name.startswith("~"):
        return False
    return Path(name).suffix.lower() not in NON_DICOM_SUFFIXES


def dir_items(folder: str | os.PathLike) -> list[DicomItem]:
    """Every candidate slice file below ``folder`` (recursively: nested ``X/X/`` copies are found too)."""
    folder = Path(folder)
    files = [p for p in folder.rglob("*") if p.is_file() and _looks_like_slice_name(p.name)]
    files = [p for p in files if not any(part.startswith(".") or part == "__MACOSX" for part in p.relative_to(folder).parts)]
    files.sort(key=lambda p: natural_key(str(p.relative_to(folder))))
    return [DicomItem(label=str(p), path=p) for p in files]


def open_zip(path: str | os.PathLike) -> zipfile.ZipFile:
    """Open an archive or raise a `DataError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: zip archive not found")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable zip archive ({_one_line(exc)})") from None


def zip_items(archive: zipfile.ZipFile, prefix: str = "") -> list[DicomItem]:
    """Candidate slice members of an open archive whose path starts with ``prefix`` (a folder path or '')."""
    zname = archive.filename or "<zip>"
    members = []
    for info in archive.infolist():
        name = info.filename
        if info.is_dir() or not name.startswith(prefix):
            continue
        parts = name.split("/")
        if "__MACOSX" in parts or any(p.startswith(".") for p in parts[:-1]) or not _looks_like_slice_name(parts[-1]):
            continue
        members.append(name)
    members.sort(key=natural_key)
    return [DicomItem(label=f"{zname}:{m}", archive=archive, member=m) for m in members]


def as_items(source: Any) -> tuple[list[DicomItem], str]:
    """Normalise a folder, a .zip path, one file, or a sequence of paths / `DicomItem` into items + a label."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return dir_items(path), str(path)
        if path.is_file() and zipfile.is_zipfile(path):
            return zip_items(open_zip(path)), str(path)
        if path.is_file():
            return [DicomItem(label=str(path), path=path)], str(path)
        raise DataError(f"{path}: DICOM folder or file not found")
    items: list[DicomItem] = []
    for entry in source:
        if isinstance(entry, DicomItem):
            items.append(entry)
        else:
            p = Path(entry)
            if not p.is_file():
                raise DataError(f"{p}: DICOM file not found")
            items.append(DicomItem(label=str(p), path=p))
    if not items:
        return [], "<no files>"
    if all(it.path is not None for it in items):
        where = os.path.commonpath([str(it.path.parent) for it in items])  # type: ignore[union-attr]
    else:
        where = os.path.commonprefix([it.label for it in items]) or items[0].label
    return items, where


@dataclass
class _Slice:
    item: DicomItem
    ds: Any
    rows: int
    cols: int
    uid: str | None
    orientation: tuple[float, ...] | None
    position: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    instance: int | None
    slope: float
    intercept: float


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def _read_slice(item: DicomItem) -> _Slice:
    try:
        try:
            ds = pydicom.dcmread(item.open())
        except InvalidDicomError:  # no 128-byte preamble: old or raw files; accept only if they hold an image
            ds = pydicom.dcmread(item.open(), force=True)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{item.label}: corrupt or unreadable DICOM ({_one_line(exc)})") from None
    try:
        if "PixelData" not in ds or "Rows" not in ds or "Columns" not in ds:
            raise DataError(f"{item.label}: not a DICOM image, or corrupt (no pixel data)")
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames != 1:
            raise DataError(f"{item.label}: multi-frame DICOM ({frames} frames) is not supported; export one file per slice")
        spacing = _floats(ds.get("PixelSpacing"), 2)
        instance = ds.get("InstanceNumber")
        return _Slice(
            item=item,
            ds=ds,
            rows=int(ds.Rows),
            cols=int(ds.Columns),
            uid=str(ds.SeriesInstanceUID) if ds.get("SeriesInstanceUID") else None,
            orientation=_floats(ds.get("ImageOrientationPatient"), 6),
            position=np.array(p) if (p := _floats(ds.get("ImagePositionPatient"), 3)) else None,
            pixel_spacing=spacing if spacing and min(spacing) > 0 else None,
            instance=int(instance) if instance not in (None, "") else None,
            slope=float(ds.get("RescaleSlope", 1) or 1),
            intercept=float(ds.get("RescaleIntercept", 0) or 0),
        )
    except DataError:
        raise
    except Exception as exc:  # malformed values in a forced read
        raise DataError(f"{item.label}: corrupt DICOM header ({_one_line(exc)})") from None


def _check_one_series(slices: Sequence[_Slice], where: str) -> None:
    uids = sorted({s.uid for s in slices if s.uid})
    if len(uids) > 1:
        raise DataError(f"{where}: mixed series ({len(uids)} SeriesInstanceUIDs); put one series per folder")
    sizes = sorted({(s.rows, s.cols) for s in slices})
    if len(sizes) > 1:
        raise DataError(f"{where}: mixed series (image sizes {sizes[:3]}); put one series per folder")
    orients = [s.orientation for s in slices if s.orientation is not None]
    if orients and not np.allclose(orients, orients[0], atol=1e-3):
        raise DataError(f"{where}: mixed series (different ImageOrientationPatient); put one series per folder")
    spacings = [s.pixel_spacing for s in slices if s.pixel_spacing is not None]
    if spacings and not np.allclose(spacings, spacings[0], rtol=1e-3):
        raise DataError(f"{where}: mixed series (different PixelSpacing); put one series per folder")


def _unit_axes(orientation: tuple[float, ...] | None, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    o = np.array(orientation if orientation is not None else _DEFAULT_ORIENTATION, dtype=float)
    row, col = o[:3], o[3:]
    if np.linalg.norm(row) < 1e-6 or np.linalg.norm(col) < 1e-6:
        raise DataError(f"{where}: ImageOrientationPatient has a zero vector")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    if np.linalg.norm(normal) < 1e-3:
        raise DataError(f"{where}: ImageOrientationPatient row and column directions are parallel")
    return row, col, normal / np.linalg.norm(normal)


def _duplicates(keys: Sequence[float], tol: float) -> bool:
    k = np.sort(np.asarray(keys, dtype=float))
    return bool(len(k) > 1 and np.min(np.diff(k)) <= tol)


@dataclass
class DicomVolume:
    """A series on the canonical grid, plus what is needed to put a second series on the same grid."""

    volume: np.ndarray  # (Z, Y, X) canonical
    spacing: tuple[float, float, float]  # (z, y, x) mm
    affine: np.ndarray  # canonical (z, y, x) -> RAS mm
    raw_affine: np.ndarray  # (z, y, x) of the position-sorted stack -> RAS mm
    where: str
    ordered_by: str  # "position", "instance" or "name"
    rows: int
    cols: int
    orientation: tuple[float, ...]
    positions: tuple[float, ...] | None  # along the normal, raw (ascending) order
    instances: tuple[int, ...] | None  # raw order
    series_uid: str | None
    files: tuple[str, ...] = field(default=())  # raw order


def _sort_slices(slices: list[_Slice], normal: np.ndarray, where: str) -> tuple[list[_Slice], str]:
    if all(s.position is not None for s in slices):
        keys = [float(np.dot(s.position, normal)) for s in slices]  # type: ignore[arg-type]
        if _duplicates(keys, 1e-4):
            raise DataError(f"{where}: two slices at the same ImagePositionPatient (duplicate files or mixed series)")
        order = np.argsort(keys, kind="stable")
        return [slices[i] for i in order], "position"
    if all(s.instance is not None for s in slices):
        inst = [s.instance for s in slices]
        if len(set(inst)) != len(inst):
            raise DataError(f"{where}: no ImagePositionPatient and repeated InstanceNumbers; cannot order slices")
        return sorted(slices, key=lambda s: s.instance), "instance"  # type: ignore[arg-type, return-value]
    return sorted(slices, key=lambda s: natural_key(s.item.name)), "name"


def _slice_step(slices: list[_Slice], normal: np.ndarray, ordered_by: str, where: str) -> np.ndarray:
    """Vector (LPS mm) from one slice to the next; a gap (missing slice) is an error, not a stretched volume."""
    if ordered_by == "position" and len(slices) > 1:
        keys = np.array([np.dot(s.position, normal) for s in slices])  # type: ignore[arg-type]
        gaps = np.diff(keys)
        median = float(np.median(gaps))
        if np.max(np.abs(gaps - median)) > max(0.05 * median, 1e-3):
            raise DataError(
                f"{where}: uneven slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm): missing slices or mixed series"
            )
        return (slices[-1].position - slices[0].position) / (len(slices) - 1)  # type: ignore[operator]
    ds = slices[0].ds
    thickness = _floats([ds.get("SpacingBetweenSlices")], 1) or _floats([ds.get("SliceThickness")], 1)
    dz = thickness[0] if thickness and thickness[0] > 0 else 1.0
    return normal * dz


def _raw_affine(slices: list[_Slice], step: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    first = slices[0]
    dy, dx = first.pixel_spacing if first.pixel_spacing is not None else (1.0, 1.0)
    lps = np.eye(4)
    lps[:3, 0] = step
    lps[:3, 1] = col * dy  # row index advances along the column direction cosine
    lps[:3, 2] = row * dx  # column index advances along the row direction cosine
    lps[:3, 3] = first.position if first.position is not None else 0.0
    return _LPS_TO_RAS @ lps


def _pixels(s: _Slice, hu: bool) -> np.ndarray:
    try:
        arr = s.ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(s.ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise DataError(f"{s.item.label}: cannot decode pixel data ({_one_line(exc)}; transfer syntax {syntax})") from None
    if arr.shape != (s.rows, s.cols):
        raise DataError(f"{s.item.label}: pixel array shape {arr.shape} is not Rows x Columns {(s.rows, s.cols)}")
    if not hu:
        return arr
    out = arr.astype(np.float32)
    if s.slope != 1.0:
        out *= np.float32(s.slope)
    if s.intercept != 0.0:
        out += np.float32(s.intercept)
    return out


def _stack(ordered: list[_Slice], hu: bool) -> np.ndarray:
    first = _pixels(ordered[0], hu)
    stack = np.empty((len(ordered), *first.shape), dtype=np.float32 if hu else first.dtype)
    stack[0] = first
    for k, s in enumerate(ordered[1:], start=1):
        px = _pixels(s, hu)
        if not hu and not np.can_cast(px.dtype, stack.dtype, casting="safe"):
            stack = stack.astype(np.result_type(stack.dtype, px.dtype))
        stack[k] = px
    return stack


def _read_all(items: Iterable[DicomItem], where: str) -> list[_Slice]:
    slices = [_read_slice(it) for it in items]
    if not slices:
        raise DataError(f"{where}: no DICOM files found")
    _check_one_series(slices, where)
    return slices


def read_dicom_volume(source: Any, *, hu: bool = True, where: str | None = None, reference: DicomVolume | None = None) -> DicomVolume:
    """Read one series. ``hu=True``: float32 HU (RescaleSlope/Intercept applied); ``False``: stored values.

    ``source``: a folder (searched recursively), a .zip archive path, one file, or a sequence of
    paths / `DicomItem` (e.g. `zip_items` of an open archive). With ``reference``, the series is
    placed slice by slice onto the reference's grid (see `_match_to_reference`).
    """
    items, label = as_items(source)
    where = where or label
    slices = _read_all(items, where)
    if reference is not None:
        return _onto_reference(slices, reference, hu, where)
    orient = slices[0].orientation
    row, col, normal = _unit_axes(orient, where)
    ordered, ordered_by = _sort_slices(slices, normal, where)
    step = _slice_step(ordered, normal, ordered_by, where)
    raw_affine = _raw_affine(ordered, step, row, col)
    stack = _stack(ordered, hu)
    view, affine = canonicalize_zyx(stack, raw_affine)
    return DicomVolume(
        volume=np.ascontiguousarray(view),
        spacing=spacing_of(affine),
        affine=affine,
        raw_affine=raw_affine,
        where=where,
        ordered_by=ordered_by,
        rows=ordered[0].rows,
        cols=ordered[0].cols,
        orientation=tuple(orient if orient is not None else _DEFAULT_ORIENTATION),
        positions=tuple(float(np.dot(s.position, normal)) for s in ordered) if ordered_by == "position" else None,  # type: ignore[arg-type]
        instances=tuple(s.instance for s in ordered) if all(s.instance is not None for s in ordered) else None,  # type: ignore[misc]
        series_uid=ordered[0].uid,
        files=tuple(s.item.label for s in ordered),
    )


def _match_to_reference(slices: list[_Slice], ref: DicomVolume, where: str) -> list[_Slice]:
    """Order ``slices`` as the reference's raw stack: by position, else InstanceNumber, else name order."""
    n = len(ref.files)
    if len(slices) != n:
        raise DataError(f"{where}: {len(slices)} slices, but the series it belongs to ({ref.where}) has {n}")
    if (slices[0].rows, slices[0].cols) != (ref.rows, ref.cols):
        raise DataError(
            f"{where}: slice size {(slices[0].rows, slices[0].cols)} differs from {ref.where} {(ref.rows, ref.cols)}"
        )
    orient = slices[0].orientation
    if orient is not None and not np.allclose(orient, ref.orientation, atol=1e-3):
        raise DataError(f"{where}: ImageOrientationPatient differs from {ref.where}")
    _, _, normal = _unit_axes(ref.orientation, where)
    if ref.positions is not None and all(s.position is not None for s in slices):
        ref_pos = np.asarray(ref.positions)
        dz = float(np.median(np.diff(ref_pos))) if n > 1 else 1.0
        out: list[_Slice | None] = [None] * n
        for s in slices:
            key = float(np.dot(s.position, normal))  # type: ignore[arg-type]
            k = int(np.argmin(np.abs(ref_pos - key)))
            if abs(ref_pos[k] - key) > 0.25 * dz or out[k] is not None:
                raise DataError(f"{s.item.label}: slice position {key:.3f} mm matches no single slice of {ref.where}")
            out[k] = s
        return out  # type: ignore[return-value]
    if ref.instances is not None and all(s.instance is not None for s in slices):
        by_instance = {s.instance: s for s in slices}
        if len(by_instance) != n or set(by_instance) != set(ref.instances):
            raise DataError(f"{where}: InstanceNumbers do not match those of {ref.where}")
        return [by_instance[i] for i in ref.instances]
    return sorted(slices, key=lambda s: natural_key(s.item.name))


def _onto_reference(slices: list[_Slice], ref: DicomVolume, hu: bool, where: str) -> DicomVolume:
    ordered = _match_to_reference(slices, ref, where)
    view, affine = canonicalize_zyx(_stack(ordered, hu), ref.raw_affine)
    return DicomVolume(
        volume=np.ascontiguousarray(view),
        spacing=ref.spacing,
        affine=affine,
        raw_affine=ref.raw_affine,
        where=where,
        ordered_by=ref.ordered_by,
        rows=ref.rows,
        cols=ref.cols,
        orientation=ref.orientation,
        positions=ref.positions,
        instances=ref.instances,
        series_uid=ordered[0].uid,
        files=tuple(s.item.label for s in ordered),
    )


def read_dicom_series(source: Any, *, where: str | None = None) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """``(volume (Z, Y, X) float32 HU, spacing (z, y, x) mm, affine (z, y, x) -> RAS mm)`` of one series."""
    vol = read_dicom_volume(source, hu=True, where=where)
    return vol.volume, vol.spacing, vol.affine

