"""LiTS adapter: ``volume-N.nii[.gz]`` + ``segmentation-N.nii[.gz]`` anywhere below ``root``.

Why search sub-folders: the official download unpacks into ``Training Batch 1/`` and
``Training Batch 2/`` (and mirrors add their own folders); a flat copy works the same.
Case ids are the number N as a string without leading zeros (``"0"``, ``"12"``), in numeric
order: stable across layouts and usable in file names. Two files for one N (``volume-3.nii`` and
``volume-3.nii.gz``, or copies in two folders) are an error, never a silent pick.

Geometry comes from each file's own affine (`bench.datasets.nifti`): LiTS stores x, y, z with
both in-plane axes flipped, and some copies were re-saved in other orientations; both files are
canonicalised separately and must then lie on the same grid. The image keeps int16 when the file
holds integers that fit (no float copy of a 512x512x500 volume), else float32.

Options: ``require_labels`` (default True): a volume without its segmentation is an error; with
False such volumes load with ``label=None`` (inference on unlabelled scans).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from bench.datasets import DATASETS
from bench.datasets.base import Case, DatasetAdapter, check_case_id, check_label_values
from bench.datasets.nifti import load_nifti_zyx, same_grid
from bench.errors import ConfigError, DataError

_VOLUME = re.compile(r"^volume-(\d+)\.nii(?:\.gz)?$", re.IGNORECASE)
_SEGMENTATION = re.compile(r"^segmentation-(\d+)\.nii(?:\.gz)?$", re.IGNORECASE)
OPTIONS = {"require_labels": True}


def hu_array(array: np.ndarray, source: str | Path) -> np.ndarray:
    """int16 when the values are integers within int16 (lossless, half the memory of float32), else float32."""
    if array.dtype == np.int16:
        return array
    if np.issubdtype(array.dtype, np.integer):
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if -32768 <= lo and hi <= 32767:
            return array.astype(np.int16)
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32, copy=False)
    raise DataError(f"{source}: unsupported voxel type {array.dtype} for a CT volume")


def _label_values(seg: np.ndarray, source: Path) -> np.ndarray:
    """uint8 0/1/2 labels; integer maps in range skip the full `np.unique` sort (0.8 s on a LiTS volume)."""
    if np.issubdtype(seg.dtype, np.integer) and seg.size and int(seg.min()) >= 0 and int(seg.max()) <= 2:
        return seg.astype(np.uint8, copy=False)
    return check_label_values(seg, source)


def _scan(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    volumes: dict[str, Path] = {}
    segmentations: dict[str, Path] = {}
    for path in sorted(root.rglob("*.nii*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        for pattern, found in ((_VOLUME, volumes), (_SEGMENTATION, segmentations)):
            m = pattern.match(path.name)
            if m:
                cid = str(int(m.group(1)))
                if cid in found:
                    raise DataError(f"{path}: second file for LiTS case {cid} (also {found[cid]})")
                found[cid] = path
    return volumes, segmentations


@DATASETS.register("lits")
class LitsDataset(DatasetAdapter):
    """LiTS NIfTI volumes and 0/1/2 segmentations (also inside 'Training Batch 1/2')."""

    name = "lits"

    def __init__(self, root: str | Path, **options: Any) -> None:
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"unknown lits option(s) {unknown} (known: {sorted(OPTIONS)})")
        merged = {**OPTIONS, **options}
        super().__init__(root, **merged)
        self.require_labels = bool(merged["require_labels"])
        self._files: tuple[dict[str, Path], dict[str, Path]] | None = None

    def _pairs(self) -> tuple[dict[str, Path], dict[str, Path]]:
        if self._files is None:
            if not self.root.is_dir():
                raise DataError(f"{self.root}: not a folder (expected volume-N.nii and segmentation-N.nii files)")
            volumes, segmentations = _scan(self.root)
            for cid, seg in segmentations.items():
                if cid not in volumes:
                    raise DataError(f"{seg}: no matching volume-{cid}.nii[.gz] under {self.root}")
            if self.require_labels:
                for cid, vol in volumes.items():
                    if cid not in segmentations:
                        raise DataError(f"{vol}: no matching segmentation-{cid}.nii[.gz] under {self.root}")
            if not volumes:
                raise DataError(f"{self.root}: no LiTS files (volume-N.nii[.gz] + segmentation-N.nii[.gz])")
            self._files = (volumes, segmentations)
        return self._files

    def case_ids(self) -> list[str]:
        return [check_case_id(c, self.root) for c in sorted(self._pairs()[0], key=int)]

    def source_files(self, case_id: str) -> list[Path]:
        """The case's volume and segmentation files."""
        volumes, segmentations = self._pairs()
        key = str(int(case_id)) if str(case_id).isdigit() else str(case_id)
        return [p for p in (volumes.get(key), segmentations.get(key)) if p is not None]

    def load(self, case_id: str) -> Case:
        volumes, segmentations = self._pairs()
        key = str(int(case_id)) if str(case_id).isdigit() else str(case_id)
        if key not in volumes:
            raise DataError(f"{self.root}: no LiTS case {case_id!r}")
        vol_path = volumes[key]
        image, spacing, affine = load_nifti_zyx(vol_path)
        image = hu_array(image, vol_path)
        label = None
        seg_path = segmentations.get(key)
        if seg_path is not None:
            seg, _, seg_affine = load_nifti_zyx(seg_path)
            if seg.shape != image.shape:
                raise DataError(f"{seg_path}: shape {seg.shape} differs from {vol_path.name} {image.shape} (Z, Y, X)")
            if not same_grid(affine, seg_affine):
                raise DataError(f"{seg_path}: voxel grid (affine) differs from {vol_path.name}")
            label = _label_values(seg, seg_path)
        return Case(
            id=key,
            image=image,
            label=label,
            spacing=spacing,
            affine=affine,
            meta={"source": str(vol_path), "label_source": str(seg_path) if seg_path else None},
        )
