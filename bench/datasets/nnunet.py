"""Export any adapter's cases as an nnU-Net v2 raw data set, split included (``bench data export``).

Why: nnU-Net is the baseline most liver papers must beat. Trained on exactly our patient split,
its predictions can be scored by the same engine and put into the same tables
(``bench report --external NAME=PRED_DIR``), so the comparison is fair by construction.

Layout written (nnU-Net v2 ``dataset_format.md``), atomically: everything goes into a temporary
folder beside ``DatasetXXX_Name`` and is renamed into place when complete::

    DatasetXXX_Name/
      dataset.json          channel_names {"0": "CT"}, labels, numTraining, file_ending ".nii.gz"
                            (+ a "liverbench" block: source, task, split, case-id map)
      imagesTr/<case>_0000.nii.gz   train + val patients, HU (int16 when lossless, else float32)
      labelsTr/<case>.nii.gz        uint8: both 0/1/2 (background, liver, lesion);
                                    liver 0/1 (liver incl. lesions); lesion 0/1 (lesion)
      imagesTs/<case>_0000.nii.gz   our TEST patients: never in a fold's train or val
      labelsTs/<case>.nii.gz        their labels (nnU-Net ignores them; kept for scoring)
      splits_final.json     [{"train": [...], "val": [...]}]: one fold = our train/val split

Choices (README "Reproduction notes"):

* Split: the data set's own ``splits_final.json`` (`bench.paths.splits_path`, made with seed 0 on
  first use, exactly as training does) or ``--splits FILE``. nnU-Net trains from the splits file
  in its *preprocessed* folder; ``nnUNetv2_plan_and_preprocess`` (2.8.1, checked) copies a
  ``splits_final.json`` from the raw folder there, older versions need a manual copy to
  ``$nnUNet_preprocessed/DatasetXXX_Name/``. Train fold 0. Cases the split file leaves out are not
  exported.
* Case identifiers: our case ids with every character outside ``[A-Za-z0-9._-]`` replaced by
  ``_`` (`nnunet_case_id`), so nnU-Net's output names (``<case>.nii.gz``) map straight back to our
  ids; two ids that would collide are an error.
* Geometry: each volume is written with the adapter's affine. A case read from a NIfTI file
  (LiTS, phantom) is written in that file's own axis order, affine and qform/sform codes (as
  ``bench predict`` writes masks), so an nnU-Net prediction overlays the original file voxel for
  voxel; other sources (DICOM) are written in canonical storage with their world affine. Image
  and label of a case always share one grid (nnU-Net's integrity check compares them).
* Labels: plain labels, not nnU-Net regions; with ``both`` a prediction is 0/1/2 and scores
  liver = label >= 1, lesion = label == 2 exactly as LiTS does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from bench.atomic import TMP_MARK, replace_dir, write_json
from bench.datasets.base import Case, DatasetAdapter
from bench.datasets.nifti import is_nifti_path, save_nifti_zyx
from bench.errors import ConfigError, DataError

EXPORT_FORMATS = ("nnunet",)
TASKS = ("liver", "lesion", "both")
FILE_ENDING = ".nii.gz"
CHANNEL_SUFFIX = "_0000"
DEFAULT_DATASET_ID = 501  # nnU-Net reserves low ids for its own conversions; users pick freely above
LABELS: dict[str, dict[str, int]] = {
    "both": {"background": 0, "liver": 1, "lesion": 2},
    "liver": {"background": 0, "liver": 1},
    "lesion": {"background": 0, "lesion": 1},
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def nnunet_case_id(case_id: str) -> str:
    """A file-name-safe nnU-Net identifier for one of our case ids (identity for safe ids)."""
    out = _UNSAFE.sub("_", str(case_id).strip())
    if not out or out.strip("._") == "":
        raise DataError(f"case id {case_id!r} cannot be made into a file name")
    return out


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset501_Name``: nnU-Net's required folder name (three-digit id, then the name)."""
    if not 1 <= int(dataset_id) <= 999:
        raise ConfigError(f"--dataset-id must be in 1..999 (nnU-Net's three digits), got {dataset_id}")
    if not _NAME.match(name):
        raise ConfigError(f"--name {name!r}: letters, digits, '_' and '-' only (it becomes part of a folder name)")
    return f"Dataset{int(dataset_id):03d}_{name}"


def task_labels(label: np.ndarray, task: str) -> np.ndarray:
    """uint8 label map for nnU-Net: both -> 0/1/2, liver -> (label >= 1), lesion -> (label == 2)."""
    if task == "both":
        return label.astype(np.uint8, copy=False)
    if task == "liver":
        return (label >= 1).astype(np.uint8)
    if task == "lesion":
        return (label == 2).astype(np.uint8)
    raise ConfigError(f"unknown --task {task!r} (known: {', '.join(TASKS)})")


def hu_for_nifti(image: np.ndarray) -> np.ndarray:
    """int16 when every value is a whole number within int16 (lossless), else float32."""
    if image.dtype == np.int16:
        return image
    if image.size == 0:
        return image.astype(np.int16)
    if np.issubdtype(image.dtype, np.integer):
        lo, hi = int(image.min()), int(image.max())
    elif np.issubdtype(image.dtype, np.floating):
        if not np.all(np.isfinite(image)) or not np.array_equal(image, np.round(image)):
            return image.astype(np.float32, copy=False)
        lo, hi = float(image.min()), float(image.max())
    else:
        raise DataError(f"unsupported CT voxel type {image.dtype}")
    if -32768 <= lo and hi <= 32767:
        return image.astype(np.int16)
    return image.astype(np.float32)


@dataclass
class ExportResult:
    """What an export wrote: the folder, case counts per role and notes to print."""

    folder: Path
    dataset_json: dict[str, Any]
    splits_final: list[dict[str, list[str]]]
    train: list[str]
    val: list[str]
    test: list[str]
    notes: list[str] = field(default_factory=list)


def _like_source(case: Case) -> Path | None:
    """The NIfTI file a case was read from (its image), to write back in its own orientation."""
    src = case.meta.get("source")
    if src and is_nifti_path(src) and Path(src).is_file():
        return Path(src)
    return None


def write_case(case: Case, image_path: Path, label_path: Path | None, task: str) -> None:
    """Write one case's image (``_0000``) and label on the adapter's grid (see module docstring)."""
    affine = case.affine if case.affine is not None else np.diag([*case.spacing, 1.0])
    like = _like_source(case)
    save_nifti_zyx(image_path, hu_for_nifti(case.image), affine, like=like)
    if label_path is not None:
        if case.label is None:
            raise DataError(f"{case.meta.get('source') or case.id}: case {case.id} has no label to export")
        save_nifti_zyx(label_path, task_labels(case.label, task), affine, like=like)


def dataset_json(task: str, n_training: int, name: str, description: Mapping[str, Any]) -> dict[str, Any]:
    """nnU-Net v2's dataset.json; extra keys (``liverbench``) are ignored by nnU-Net."""
    return {
        "name": name,
        "channel_names": {"0": "CT"},
        "labels": dict(LABELS[task]),
        "numTraining": int(n_training),
        "file_ending": FILE_ENDING,
        "description": "exported by liverbench (bench data export --format nnunet)",
        "liverbench": dict(description),
    }


def _case_map(ids: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for cid in ids:
        nid = nnunet_case_id(cid)
        if nid in seen:
            raise DataError(f"case ids {seen[nid]!r} and {cid!r} both become nnU-Net case {nid!r}")
        seen[nid] = cid
        out[cid] = nid
    return out


def export_nnunet(
    adapter: DatasetAdapter,
    splits: Mapping[str, list[str]],
    out_dir: str | Path,
    task: str = "both",
    dataset_id: int = DEFAULT_DATASET_ID,
    name: str | None = None,
    splits_source: str = "",
    force: bool = False,
    on_case: Callable[[str], None] | None = None,
) -> ExportResult:
    """Write ``<out_dir>/DatasetXXX_Name`` from ``adapter`` and our ``splits`` (module docstring)."""
    if task not in TASKS:
        raise ConfigError(f"unknown --task {task!r} (known: {', '.join(TASKS)})")
    out = Path(out_dir)
    final, same_id = check_export_target(out, dataset_id, name or default_export_name(adapter.name, task), force)
    folder_name = final.name
    ids = adapter.case_ids()
    train, val, test = (list(splits.get(k, [])) for k in ("train", "val", "test"))
    unknown = sorted(set(train + val + test) - set(ids))
    if unknown:
        raise DataError(f"split lists case(s) {', '.join(unknown[:5])} not in the {adapter.name} data set at {adapter.root}")
    mapping = _case_map(train + val + test)
    notes = []
    left_out = [c for c in ids if c not in mapping]
    if left_out:
        notes.append(f"{len(left_out)} case(s) in no split list, not exported: {', '.join(left_out[:10])}")
    if not val:
        notes.append("the split has no validation case: nnU-Net's fold 0 needs one (its val list is empty)")
    description = {
        "source_dataset": adapter.name,
        "root": str(Path(adapter.root).resolve()),
        "adapter": adapter.describe(),
        "task": task,
        "split_source": splits_source,
        "splits": {"train": train, "val": val, "test": test},
        "case_ids": {mapping[c]: c for c in train + val + test},
        "test_cases": "imagesTs/labelsTs: our test patients, in no fold (score nnU-Net's predictions on them "
                      "with bench report --external NAME=PRED_DIR)",
        "labels_rule": {"both": "0 background, 1 liver, 2 lesion (liver = label >= 1 when scored)",
                        "liver": "1 = liver including lesions", "lesion": "1 = lesion"}[task],
    }
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{folder_name}{TMP_MARK}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir(parents=True)
        for role, cases in (("Tr", train + val), ("Ts", test)):
            for cid in cases:
                nid = mapping[cid]
                case = adapter.load(cid)
                write_case(case, tmp / f"images{role}" / f"{nid}{CHANNEL_SUFFIX}{FILE_ENDING}",
                           tmp / f"labels{role}" / f"{nid}{FILE_ENDING}", task)
                del case
                if on_case is not None:
                    on_case(cid)
        folds = [{"train": [mapping[c] for c in train], "val": [mapping[c] for c in val]}]
        write_json(tmp / "splits_final.json", folds)
        meta = dataset_json(task, len(train) + len(val), folder_name, description)
        write_json(tmp / "dataset.json", meta)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for other in same_id:  # only once the new export is in place: a failure above loses nothing
        shutil.rmtree(other)
        notes.append(f"removed {other} (--force: one folder per data set id)")
    return ExportResult(final, meta, folds, train, val, test, notes)


def default_export_name(dataset: str | None, task: str) -> str:
    return f"{dataset or 'data'}_{task}"


def check_export_target(out: Path, dataset_id: int, name: str, force: bool) -> tuple[Path, list[Path]]:
    """``(out/DatasetXXX_Name, other same-id folders to replace)``, or the one-line refusal.

    The CLI calls it before drawing its progress bar, so a refusal stays one line.
    """
    final = Path(out) / dataset_folder_name(dataset_id, name)
    if final.exists() and not force:
        raise DataError(f"{final} exists; pass --force to replace it")
    return final, _same_id_folders(Path(out), dataset_id, final.name, force)


def _same_id_folders(out: Path, dataset_id: int, folder_name: str, force: bool) -> list[Path]:
    """Other ``DatasetXXX_*`` folders with this id in ``out``: refused, or (``force``) to be replaced.

    Why: nnU-Net finds a data set by its id alone and stops at two folders with one id, so a
    ``--task liver`` export beside an earlier ``Dataset501_phantom_both`` would break both.
    ``--force`` replaces the earlier folder only if it is one of our exports (its dataset.json has
    a ``liverbench`` record); another tool's data set is never removed (use another --dataset-id).
    """
    if not out.is_dir():
        return []
    prefix = f"Dataset{int(dataset_id):03d}_"
    others = sorted(p for p in out.iterdir()
                    if p.name.startswith(prefix) and p.name != folder_name and TMP_MARK not in p.name and p.is_dir())
    if not others:
        return []
    if not force:
        raise DataError(f"{out} already holds data set id {int(dataset_id):03d} as {others[0].name} (nnU-Net needs one "
                        f"folder per id); choose another --dataset-id, or pass --force to replace {others[0].name}")
    for other in others:
        try:
            ours = "liverbench" in json.loads((other / "dataset.json").read_text())
        except (OSError, ValueError, TypeError):
            ours = False
        if not ours:
            raise DataError(f"{other}: data set id {int(dataset_id):03d} taken by a data set not exported by "
                            f"liverbench; choose another --dataset-id (it is never replaced)")
    return others


def read_export_labels(pred_dir: str | Path) -> dict[str, int] | None:
    """The ``labels`` of a ``dataset.json`` beside predictions (nnUNetv2_predict copies it), or None."""
    path = Path(pred_dir) / "dataset.json"
    if not path.is_file():
        return None
    try:
        labels = json.loads(path.read_text()).get("labels")
    except (OSError, ValueError, AttributeError) as exc:
        raise DataError(f"{path}: not a readable dataset.json ({exc})") from None
    if not isinstance(labels, dict):
        raise DataError(f"{path}: no 'labels' object")
    return {str(k): v for k, v in labels.items()}
