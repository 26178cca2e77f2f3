"""Score a folder of NIfTI label-map predictions against a folder of references (`bench score`).

Why: predictions from any tool (nnU-Net, TotalSegmentator, ours via ``bench predict``) are scored
by the same counts and writer as our own runs, so numbers are comparable across tools. The folder
pair is a prediction source (`FolderSource`) of the one pipeline (`bench.metrics.pipeline`);
`score_folders` is the ``bench score`` face of it. Reading and indexing label-map folders
(`index_folder`, `read_label_map`, `case_id`) is shared with the external-folder source
(`bench.metrics.split_folder`).

Rules (declared in the summary and the README):
* Case ids: LiTS names ``segmentation-N`` / ``test-segmentation-N`` (.nii or .nii.gz) map to
  ``N``; any other NIfTI file maps to its name without the extension, so identical names match.
  In a folder holding LiTS segmentations, ``volume-N`` files are CT images and are ignored.
* Labels: 0 background, 1 liver, 2 lesion (the LiTS convention) in both folders; liver = label
  >= 1, lesion = label == 2. A 0/1 prediction therefore has no lesion. Other values are an error
  naming the file.
* Geometry: both files are read on the canonical (Z, Y, X) grid and must have the same shape and
  the same voxel grid in world space (spacing, origin and axis directions within a thousandth of
  a voxel plus 0.1 um, whatever the storage order); otherwise an error naming both files and
  both spacings. Surface metrics use the reference's spacing.
* A reference case without a prediction is warned about, scored as an empty prediction and
  counted (``n_missing``) - an honest score, never a silently smaller test set. Predictions
  without a reference and non-NIfTI files are warned about and skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from bench.datasets.base import natural_key
from bench.datasets.nifti import format_spacing, grid_difference, load_nifti_zyx, read_nifti_geometry, spacing_of
from bench.errors import DataError
from bench.metrics.lesions import DEFAULT_CONNECTIVITY as LESION_CONNECTIVITY
from bench.metrics.lesions import DEFAULT_MATCH
from bench.metrics.pipeline import AS_GIVEN, CasePrediction, evaluate_source
from bench.metrics.scorer import ScoreOptions
from bench.metrics.scores import DEFAULT_EMPTY_REFERENCE
from bench.metrics.surface import DEFAULT_CONNECTIVITY, DEFAULT_TOLERANCE_MM

TASK_CHOICES = ("liver", "lesion", "both")
_LITS_SEG = re.compile(r"^(?:test-)?segmentation-(\d+)$", re.IGNORECASE)
_LITS_VOLUME = re.compile(r"^(?:test-)?volume-(\d+)$", re.IGNORECASE)


def _stem(path: Path) -> str | None:
    name = path.name
    low = name.lower()
    for suffix in (".nii.gz", ".nii"):
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return None


def case_id(path: Path) -> str | None:
    """``segmentation-007.nii.gz`` -> "7"; ``liver_3.nii.gz`` -> "liver_3"; non-NIfTI -> None."""
    stem = _stem(path)
    if stem is None:
        return None
    m = _LITS_SEG.match(stem)
    return str(int(m.group(1))) if m else stem


@dataclass
class FolderIndex:
    """The NIfTI files of one folder by case id, plus what was skipped and why."""

    files: dict[str, Path] = field(default_factory=dict)
    non_nifti: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)


def index_folder(folder: Path, role: str) -> FolderIndex:
    """Map case id -> file for one folder; duplicate ids (e.g. a.nii and a.nii.gz) are an error."""
    if not folder.is_dir():
        raise DataError(f"{folder}: {role} folder does not exist")
    out = FolderIndex()
    entries = sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: natural_key(p.name))
    lits = any((s := _stem(p)) is not None and _LITS_SEG.match(s) for p in entries)
    for p in entries:
        cid = case_id(p)
        if cid is None:
            out.non_nifti.append(p.name)
            continue
        if lits and _LITS_VOLUME.match(_stem(p) or ""):
            out.images.append(p.name)
            continue
        if cid in out.files:
            raise DataError(f"{folder}: {out.files[cid].name} and {p.name} are both case {cid!r}")
        out.files[cid] = p
    return out


def read_label_map(path: Path) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """(uint8 labels (Z, Y, X), spacing, affine) with every value checked to be 0, 1 or 2."""
    array, spacing, affine = load_nifti_zyx(path)
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: voxel type {array.dtype} is not a label map")
    if array.size:
        if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
            raise DataError(f"{path}: fractional values; expected a label map with 0, 1, 2 (a probability map?)")
        low, high = array.min(), array.max()
        if low < 0 or high > 2:
            bad = np.unique(array[(array < 0) | (array > 2)])[:5].tolist()
            raise DataError(f"{path}: label values {bad} outside {{0, 1, 2}} (0 background, 1 liver, 2 lesion)")
    return array.astype(np.uint8, copy=False), spacing, affine


def _check_pair(pred_path: Path, ref_path: Path) -> None:
    """Same shape and voxel grid in world space, from the headers alone (before any voxel is read).

    Both grids are taken on the canonical (Z, Y, X) grid and compared by spacing, origin and
    axis directions with a tolerance relative to the voxel (`bench.datasets.nifti.grid_difference`),
    so the same grid stored in another axis order passes and a 0.70 vs 0.76 mm pixel does not.
    """
    p_shape, p_affine = read_nifti_geometry(pred_path)
    r_shape, r_affine = read_nifti_geometry(ref_path)
    if p_shape != r_shape:
        raise DataError(f"{pred_path}: shape {p_shape} differs from reference {ref_path} {r_shape} (Z, Y, X)")
    what = grid_difference(p_affine, r_affine)
    if what is not None:
        raise DataError(f"{pred_path}: voxel grid differs from reference {ref_path} ({what}): spacing (z, y, x) "
                        f"{format_spacing(spacing_of(p_affine))} vs {format_spacing(spacing_of(r_affine))}")


@dataclass
class ScoreResult:
    summary: dict[str, Any]
    out_dir: Path
    missing: list[str]
    unmatched: list[str]
    warnings: list[str]


def _check_options(task: str, tolerance_mm: float, connectivity: int) -> None:
    if task not in TASK_CHOICES:
        raise DataError(f"unknown task {task!r} (known: {', '.join(TASK_CHOICES)})")
    if tolerance_mm < 0:
        raise DataError(f"--tolerance must be >= 0 mm, got {tolerance_mm}")
    if connectivity not in (1, 2, 3):
        raise DataError(f"--connectivity must be 1 (faces, MONAI), 2 (faces + edges, LiTS) or 3, got {connectivity}")


@dataclass
class _Pairing:
    """Which reference cases have a prediction: scored, missing (scored as empty), unmatched (ignored)."""

    refs: FolderIndex
    preds: FolderIndex
    missing: list[str]
    unmatched: list[str]


def _pair_folders(pred_dir: Path, gt_dir: Path, note: Callable[[str], None]) -> _Pairing:
    """Index both folders and match case ids; a folder without any match is an error, the rest are notes."""
    refs = index_folder(gt_dir, "reference")
    preds = index_folder(pred_dir, "prediction")
    for folder, idx in ((gt_dir, refs), (pred_dir, preds)):
        if idx.non_nifti:
            shown = ", ".join(idx.non_nifti[:5]) + (f" (+{len(idx.non_nifti) - 5} more)" if len(idx.non_nifti) > 5 else "")
            note(f"{folder}: skipped {len(idx.non_nifti)} non-NIfTI file(s): {shown}")
    if not refs.files:
        raise DataError(f"{gt_dir}: no reference NIfTI files (.nii / .nii.gz)")
    matched = [c for c in refs.files if c in preds.files]
    missing = [c for c in refs.files if c not in preds.files]
    unmatched = [c for c in preds.files if c not in refs.files]
    if not matched:
        raise DataError(
            f"{pred_dir}: no prediction matches a reference case in {gt_dir} "
            f"(reference ids: {', '.join(list(refs.files)[:5])}; prediction ids: {', '.join(list(preds.files)[:5]) or 'none'})"
        )
    if missing:
        note(f"{len(missing)} reference case(s) without a prediction, scored as empty predictions: {', '.join(missing)}")
    if unmatched:
        note(f"{len(unmatched)} prediction(s) without a reference, not scored: {', '.join(preds.files[c].name for c in unmatched)}")
    return _Pairing(refs, preds, missing, unmatched)


class FolderSource:
    """`bench.metrics.pipeline.PredictionSource` of a prediction folder against a reference folder.

    Pairs the folders' case ids when built (errors and notes then, before any voxel is read); each
    reference case is one case of split "all", its missing prediction an empty label map.
    """

    label_maps = True
    with_splits = False
    variants = AS_GIVEN

    def __init__(self, pred_dir: Path, gt_dir: Path, classes: tuple[str, ...], note: Callable[[str], None],
                 progress: Callable[[str], None] | None = None) -> None:
        self.pairing = _pair_folders(pred_dir, gt_dir, note)
        self.classes = classes
        self.progress = progress
        self.description = f"{pred_dir} vs {gt_dir}"

    def cases(self) -> Iterator[CasePrediction]:
        """Each reference case with its prediction (no prediction = empty prediction)."""
        pairing = self.pairing
        for cid, ref_path in pairing.refs.files.items():
            if self.progress is not None:
                self.progress(cid)
            ref, spacing, _ = read_label_map(ref_path)
            pred_path = pairing.preds.files.get(cid)
            if pred_path is not None:
                _check_pair(pred_path, ref_path)
                pred, _, _ = read_label_map(pred_path)
            else:
                pred = np.zeros_like(ref)
            yield CasePrediction("all", cid, ref, {"given": pred}, spacing,
                                 (str(pred_path) if pred_path is not None else None, str(ref_path)))


def score_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    out_dir: str | Path,
    task: str = "both",
    surface: bool = False,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    device: str = "auto",
    connectivity: int = DEFAULT_CONNECTIVITY,
    warn: Callable[[str], None] | None = None,
    progress: Callable[[str], None] | None = None,
    lesion_match: str = DEFAULT_MATCH,
    lesion_connectivity: int = LESION_CONNECTIVITY,
    empty_reference: str = DEFAULT_EMPTY_REFERENCE,
) -> ScoreResult:
    """Score every reference case; write per_case.csv, metrics.csv, summary.json into ``out_dir``.

    ``surface``: also HD95, NSD, ASSD, MSSD and RMSD (mm, the reference's spacing) from one
    surface-distance pass per case and class (`bench.metrics.surface`). The lesion class also gets
    lesion detection (`bench.metrics.lesions`) under ``lesion_match`` / ``lesion_connectivity``.
    ``empty_reference``: the overlap scores of a case whose reference is empty (`bench.metrics.scores`).
    """
    _check_options(task, tolerance_mm, connectivity)
    try:
        options = ScoreOptions(surface=surface, tolerance_mm=tolerance_mm, connectivity=connectivity,
                               lesion_match=lesion_match, lesion_connectivity=lesion_connectivity,
                               empty_reference=empty_reference, device=device)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    notes: list[str] = []

    def note(msg: str) -> None:
        notes.append(msg)
        if warn is not None:
            warn(msg)

    classes = ("liver", "lesion") if task == "both" else (task,)
    source = FolderSource(pred_dir, gt_dir, classes, note, progress)
    pairing = source.pairing
    extra = {
        "n_missing": len(pairing.missing),
        "missing": pairing.missing,
        "unmatched_predictions": [pairing.preds.files[c].name for c in pairing.unmatched],
        "inputs": {"predictions": str(pred_dir), "references": str(gt_dir), "task": task,
                   "surface": surface, "tolerance_mm": tolerance_mm if surface else None,
                   "connectivity": connectivity if surface else None,
                   "lesion_match": lesion_match if "lesion" in classes else None,
                   "lesion_connectivity": lesion_connectivity if "lesion" in classes else None,
                   "empty_reference": empty_reference},
        "warnings": notes,
    }
    summary = evaluate_source(source, out_dir, options, extra=extra)
    return ScoreResult(summary, Path(out_dir), pairing.missing, pairing.unmatched, notes)
