"""The one in-memory form every data set adapter returns, and the adapter interface.

A `Case` is one patient volume: image in Hounsfield units with axes (Z, Y, X) — Z running
from the first to the last acquired slice, Y anterior->posterior rows, X columns — a uint8
label on the same grid (0 background, 1 liver, 2 lesion) and the voxel spacing in mm.
Task masks follow the LiTS scoring rule: liver = label >= 1, lesion = label == 2.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.atomic import TMP_MARK
from bench.errors import DataError

TASKS = ("liver", "lesion")
LABEL_VALUES = (0, 1, 2)


def task_mask(label: np.ndarray, task: str) -> np.ndarray:
    """Binary mask of a task from a 0/1/2 label map (liver includes lesions, as LiTS scores it)."""
    if task == "liver":
        return label >= 1
    if task == "lesion":
        return label == 2
    raise DataError(f"unknown task {task!r} (known: {', '.join(TASKS)})")


@dataclass
class Case:
    """One patient: ``image`` HU float32/int16 (Z, Y, X); ``label`` uint8 0/1/2; ``spacing`` mm (z, y, x)."""

    id: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    affine: np.ndarray | None = None  # voxel (z, y, x) -> world, for writing predictions back
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.ndim != 3:
            raise DataError(f"case {self.id}: image must be 3-D (Z, Y, X), got shape {self.image.shape}")
        if self.label is not None and self.label.shape != self.image.shape:
            raise DataError(
                f"case {self.id}: label shape {self.label.shape} differs from image shape {self.image.shape}"
            )
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]

    def mask(self, task: str) -> np.ndarray:
        if self.label is None:
            raise DataError(f"case {self.id} has no label")
        return task_mask(self.label, task)


def check_label_values(label: np.ndarray, source: str | Path) -> np.ndarray:
    """Return ``label`` as uint8 after checking every value is 0, 1 or 2 (names ``source`` if not)."""
    values = np.unique(label)
    bad = [v for v in values.tolist() if v not in LABEL_VALUES]
    if bad:
        raise DataError(f"{source}: label values {bad[:5]} outside {{0, 1, 2}}")
    return label.astype(np.uint8, copy=False)


def check_case_id(case_id: str, root: str | Path) -> str:
    """Return ``case_id`` if it is a safe single path component, else a `DataError` naming ``root``.

    Why: a case id becomes a folder of the slice cache (``<cache>/<case>/``) and a row of every
    table. An id of ``""``, ``"."`` or ``".."`` (an IRCADb root given as ``.`` inside a patient
    folder, or as ``.../PATIENT_DICOM/..``) would make that folder the cache itself or its parent,
    and a separator would leave the cache; an id carrying the temp marker ``.tmp-`` would be taken
    for a killed writer's leftover and deleted. Such ids are refused, never repaired silently.
    """
    text = str(case_id)
    bad = (
        text in ("", ".", "..") or text != text.strip() or TMP_MARK in text
        or any(ch in text for ch in ("/", "\\", "\x00"))
    )
    if bad:
        hint = ""
        resolved = Path(root).resolve()
        if text in ("", ".", "..") and resolved.name not in ("", ".", ".."):
            hint = f"; name the folder itself, e.g. --root {resolved}"
        raise DataError(f"{root}: case id {text!r} is not a usable folder name (ids come from the data root's "
                        f"folder and file names){hint}")
    return text


class DatasetAdapter(ABC):
    """Reads one data set layout from ``root``; case ids are stable strings usable in file names."""

    name: str = ""
    # Options that change the labels (3D-IRCADb: include_cysts). They enter the slice cache's
    # fingerprint when not at their default, so cached labels never mix two definitions.
    label_options: tuple[str, ...] = ()

    def __init__(self, root: str | Path, **options: Any) -> None:
        self.root = Path(root)
        self.options = options
        if not self.root.exists():
            raise DataError(f"{self.root}: data root does not exist")

    @abstractmethod
    def case_ids(self) -> list[str]:
        """Sorted case ids found under the root (natural order: 2 before 10)."""

    @abstractmethod
    def load(self, case_id: str) -> Case:
        """Load one case fully (image in HU, label 0/1/2)."""

    def source_files(self, case_id: str) -> list[Path]:
        """The files ``load(case_id)`` reads, for the slice cache's fingerprint (`bench.datasets.fingerprint`).

        The default names none: the cache then cannot notice a changed source (an adapter should say).
        """
        return []

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.name, "root": str(self.root), "options": dict(self.options)}

    def label_fingerprint(self) -> dict[str, Any]:
        """The label options set away from their defaults (``{}`` for the default label definition)."""
        return {}


def natural_key(text: str) -> list[Any]:
    """Sort key so that 'volume-2' < 'volume-10'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]
