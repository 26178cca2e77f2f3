"""A tool's folder of 3-D label maps scored on a data set's val/test patients (a prediction source).

Why its own source: ``bench report --external NAME=PRED_DIR`` scores another method's predictions
on exactly the patients our runs were scored on; the references come from the data set adapter
(not from a second folder, as in ``bench score``), the patients from the runs' split file. The
report (`bench.reports.external`) decides which data set, root and split; this module matches the
files, reads and checks them and yields the cases to the one pipeline (`bench.metrics.pipeline`).

Rules:

* Names: a prediction file is matched to a case by `bench.metrics.folder.case_id` (LiTS
  ``segmentation-N`` / ``test-segmentation-N`` -> ``N``; other names -> the name without
  ``.nii[.gz]``), accepting our case id itself or its nnU-Net identifier
  (`bench.datasets.nnunet.nnunet_case_id`, what ``bench data export`` writes).
* Labels: 0/1/2 as LiTS (liver = label >= 1, lesion = label == 2) unless the folder holds a
  ``dataset.json`` (``nnUNetv2_predict`` copies it there) whose labels say otherwise: an export
  with ``--task liver`` (0/1 = liver) feeds the liver class only; ``--task lesion`` (1 = lesion)
  the lesion class only (`label_rule`).
* Geometry: each prediction must lie on its reference's grid (shape and affine, compared on the
  canonical (Z, Y, X) grid); otherwise an error naming both files. No resampling.
* Missing: a patient of a scored split without a prediction is scored as an empty prediction and
  counted (``missing``); a split with no prediction at all is not scored (``skipped``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from bench.datasets.nifti import read_nifti_geometry, same_grid
from bench.datasets.nnunet import LABELS, nnunet_case_id, read_export_labels
from bench.errors import DataError
from bench.metrics.folder import index_folder, read_label_map
from bench.metrics.pipeline import AS_GIVEN, CasePrediction

SCORED_SPLITS = ("val", "test")  # train patients are never scored


def label_rule(folder: Path) -> tuple[tuple[str, ...], bool]:
    """(classes the folder feeds, whether 1 means lesion) from a dataset.json beside the predictions."""
    labels = read_export_labels(folder)
    if labels is None or labels == LABELS["both"]:
        return ("liver", "lesion"), False
    if labels == LABELS["liver"]:
        return ("liver",), False
    if labels == LABELS["lesion"]:
        return ("lesion",), True
    raise DataError(f"{folder / 'dataset.json'}: labels {labels} are none of {list(LABELS.values())} "
                    "(predictions must be 0/1/2 LiTS maps or a bench data export's liver/lesion labels)")


def prediction_files(folder: Path, cases: Sequence[str]) -> dict[str, Path]:
    """Our case id -> prediction file, by the id itself or its nnU-Net identifier."""
    files = index_folder(folder, "prediction").files
    out = {}
    for cid in cases:
        for key in (cid, nnunet_case_id(cid)):
            if key in files:
                out[cid] = files[key]
                break
    return out


class SplitFolderSource:
    """`bench.metrics.pipeline.PredictionSource` of a prediction folder on a data set's split patients.

    ``files``: case id -> prediction file (`prediction_files`); ``classes``/``one_is_lesion``: the
    folder's `label_rule`. Per split: ``n_cases`` scored patients, ``missing`` those without a
    prediction (scored as empty), ``skipped`` the patients of a split without any prediction.
    """

    label_maps = True
    with_splits = True
    variants = AS_GIVEN

    def __init__(self, description: str, adapter: Any, splits: dict[str, list[str]], files: dict[str, Path],
                 classes: tuple[str, ...], one_is_lesion: bool, scored_splits: Sequence[str] = SCORED_SPLITS,
                 progress: Callable[[str], None] | None = None) -> None:
        self.description = description
        self.adapter = adapter
        self.splits = splits
        self.files = files
        self.classes = classes
        self.one_is_lesion = one_is_lesion
        self.progress = progress
        self.n_cases: dict[str, int] = {}
        self.missing: dict[str, list[str]] = {}
        self.skipped: dict[str, int] = {}
        for split in scored_splits:
            cases = splits[split]
            if not any(c in files for c in cases):
                if cases:
                    self.skipped[split] = len(cases)
                continue
            self.missing[split] = [c for c in cases if c not in files]
            self.n_cases[split] = len(cases)

    def cases(self) -> Iterator[CasePrediction]:
        """Every patient of the scored splits, its reference from the adapter."""
        for split in self.n_cases:
            for cid in self.splits[split]:
                if self.progress is not None:
                    self.progress(cid)
                case = self.adapter.load(cid)
                if case.label is None:
                    raise DataError(f"{case.meta.get('source') or cid}: case {cid} has no reference label")
                ref_name = case.meta.get("label_source") or case.meta.get("source") or cid
                if cid in self.files:
                    shape, affine = read_nifti_geometry(self.files[cid])
                    if shape != case.label.shape:
                        raise DataError(f"{self.files[cid]}: shape {shape} differs from its reference {ref_name} "
                                        f"{case.label.shape} (Z, Y, X)")
                    if case.affine is not None and not same_grid(affine, case.affine):
                        raise DataError(f"{self.files[cid]}: voxel grid (affine) differs from its reference {ref_name}")
                    pred, _, _ = read_label_map(self.files[cid])
                    if self.one_is_lesion:
                        pred = (pred >= 1).astype(np.uint8) * 2
                else:
                    pred = np.zeros_like(case.label)
                yield CasePrediction(split, cid, case.label, {"given": pred}, case.spacing)
