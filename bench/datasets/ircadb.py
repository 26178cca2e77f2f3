"""3D-IRCADb-01 adapter: ``3Dircadb1.N/PATIENT_DICOM`` CT + ``MASKS_DICOM/<structure>`` masks -> 0/1/2 labels.

Layouts accepted (the official download and what unzip tools make of it):
* zipped:   ``3Dircadb1.N/PATIENT_DICOM.zip`` and ``MASKS_DICOM.zip``, read in memory, never unpacked;
* unpacked: ``3Dircadb1.N/PATIENT_DICOM/image_K`` and ``MASKS_DICOM/<structure>/image_K``, also
  nested one level deeper (``PATIENT_DICOM/PATIENT_DICOM/``); an unpacked folder with files wins
  over the zip beside it.
``root`` is one patient folder or a folder whose sub-folders are patient folders. Case ids are the
patient folder names (``3Dircadb1.1``), in natural order.

Labels: the structure folders are classified by `classify_structure` (their real names vary
between patients: ``livertumor``, ``livertumor01``, ``livertumor1``, ``livertumors``,
``metastasectomie``; cysts ``liverkyst``/``liverkyste``/``livercyst`` only with
``include_cysts=True``; extrahepatic ``tumor``, ``leftsurretumor``... never). Label 1 = the
``liver`` mask, label 2 = the union of the lesion masks, written after the liver so a lesion voxel
is label 2 even where the liver mask misses it: LiTS scores liver as label >= 1, so lesions count
as liver, which is anatomically right since these tumours lie in the liver (3Dircadb1.1: all of
them). The number of lesion voxels outside the liver mask is kept in ``Case.meta``.
Mask series are put on the CT grid slice by slice (ImagePositionPatient, else InstanceNumber,
else name order), so a mask never lands on the wrong slice even if the files are renamed.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bench.datasets import DATASETS
from bench.datasets.base import Case, DatasetAdapter, check_case_id, natural_key
from bench.datasets.dicom import DicomItem, dir_items, open_zip, read_dicom_volume, zip_items
from bench.errors import ConfigError, DataError

CT_FOLDER = "PATIENT_DICOM"
MASK_FOLDER = "MASKS_DICOM"
OPTIONS = {"include_cysts": False}

_LIVER = re.compile(r"^liver$")
_LESION = re.compile(r"^(?:livertumou?rs?|livertumeurs?|livermetastas[a-z]*|metastasectom[a-z]*)\d*$")
_CYST = re.compile(r"^liver(?:kyst(?:es?)?|cysts?)\d*$")


def classify_structure(name: str, include_cysts: bool = False) -> Literal["liver", "lesion"] | None:
    """What a MASKS_DICOM structure folder contributes: ``"liver"``, ``"lesion"`` or nothing.

    Case, spaces, dashes, dots and underscores are ignored (``Liver_Tumor_02`` = ``livertumor02``).
    A bare ``tumor`` and the adrenal ``left/rightsurretumor`` are extrahepatic and give None.
    """
    key = re.sub(r"[\s_\-.]+", "", name.strip().lower())
    if _LIVER.match(key):
        return "liver"
    if _LESION.match(key):
        return "lesion"
    if _CYST.match(key):
        return "lesion" if include_cysts else None
    return None


def _child(folder: Path, name: str, suffix: str = "") -> Path | None:
    """``folder/name{suffix}`` matched case-insensitively (copies made on other systems change case)."""
    want = f"{name}{suffix}".lower()
    exact = folder / f"{name}{suffix}"
    if exact.exists():
        return exact
    for p in folder.iterdir():
        if p.name.lower() == want:
            return p
    return None


def _has_files(folder: Path) -> bool:
    return any(p.is_file() for p in folder.rglob("*"))


def _source(patient: Path, name: str) -> Path | None:
    """The unpacked folder when it holds files, else the zip; None when neither is there."""
    folder = _child(patient, name)
    if folder is not None and folder.is_dir() and _has_files(folder):
        return folder
    archive = _child(patient, name, ".zip")
    if archive is not None and archive.is_file():
        return archive
    return None


def is_patient_folder(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    return any(_child(folder, n) is not None or _child(folder, n, ".zip") is not None for n in (CT_FOLDER, MASK_FOLDER))


def _structure_groups(items: list[DicomItem], top: str) -> dict[str, list[DicomItem]]:
    """Group mask slices by their parent folder; the structure name is that folder's name."""
    groups: dict[str, list[DicomItem]] = {}
    parents: dict[str, str] = {}
    for it in items:
        if it.path is not None:
            parent = it.path.parent.as_posix()
        else:
            parent = str(it.member).rsplit("/", 1)[0] if "/" in str(it.member) else ""
        name = parent.rsplit("/", 1)[-1]
        if not name or name.lower() == MASK_FOLDER.lower():
            continue  # a stray file at the top of MASKS_DICOM is not a structure
        if name in parents and parents[name] != parent:
            raise DataError(f"{top}: structure {name!r} appears twice ({parents[name]} and {parent})")
        parents[name] = parent
        groups.setdefault(name, []).append(it)
    return dict(sorted(groups.items(), key=lambda kv: natural_key(kv[0])))


@contextlib.contextmanager
def _opened(source: Path):
    """Items of a folder or of a zip archive kept open for the duration of the block."""
    if source.is_dir():
        yield dir_items(source)
        return
    archive = open_zip(source)
    try:
        yield zip_items(archive)
    finally:
        archive.close()


def list_structures(patient: str | Path) -> list[str]:
    """Structure folder names found in a patient's MASKS_DICOM (folder or zip), natural order."""
    patient = Path(patient)
    source = _source(patient, MASK_FOLDER)
    if source is None:
        raise DataError(f"{patient}: no {MASK_FOLDER} folder or {MASK_FOLDER}.zip")
    with _opened(source) as items:
        return list(_structure_groups(items, str(source)))


def _bool_option(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"ircadb option {name}={value!r} is not a boolean")


@DATASETS.register("ircadb")
class IrcadbDataset(DatasetAdapter):
    """3D-IRCADb-01 DICOM (zipped or unpacked): liver + liver tumours (cysts optional)."""

    name = "ircadb"
    label_options = ("include_cysts",)

    def __init__(self, root: str | Path, **options: Any) -> None:
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"unknown ircadb option(s) {unknown} (known: {sorted(OPTIONS)})")
        merged = {**OPTIONS, **options}
        merged["include_cysts"] = _bool_option(merged["include_cysts"], "include_cysts")
        super().__init__(root, **merged)
        self.include_cysts: bool = merged["include_cysts"]
        self._patients: dict[str, Path] | None = None

    def label_fingerprint(self) -> dict[str, Any]:
        """``{"include_cysts": True}`` when cysts are lesions (the cache then lives in its own folder)."""
        return {"include_cysts": True} if self.include_cysts else {}

    def _scan(self) -> dict[str, Path]:
        if self._patients is None:
            if not self.root.is_dir():
                raise DataError(f"{self.root}: not a folder (expected 3Dircadb1.N patient folders)")
            if is_patient_folder(self.root):
                found = [self.root]
            else:
                found = [p for p in self.root.iterdir() if not p.name.startswith(".") and is_patient_folder(p)]
            if not found:
                raise DataError(f"{self.root}: no 3D-IRCADb patient folders (3Dircadb1.N/{CT_FOLDER}[.zip])")
            # the id is the folder name as given: root "." or "PATIENT_DICOM/.." is refused, not guessed
            self._patients = {check_case_id(p.name, self.root): p for p in sorted(found, key=lambda p: natural_key(p.name))}
        return self._patients

    def case_ids(self) -> list[str]:
        return list(self._scan())

    def source_files(self, case_id: str) -> list[Path]:
        """Every file of the patient's CT and mask folders (or their zips): what `load` reads."""
        folder = self._scan().get(case_id)
        if folder is None:
            return []
        files: list[Path] = []
        for name in (CT_FOLDER, MASK_FOLDER):
            source = _source(folder, name)
            if source is None:
                continue
            files += sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
        return files

    def load(self, case_id: str) -> Case:
        patients = self._scan()
        if case_id not in patients:
            raise DataError(f"{self.root}: no case {case_id!r} (found: {', '.join(list(patients)[:5])}...)")
        folder = patients[case_id]
        ct_source = _source(folder, CT_FOLDER)
        if ct_source is None:
            raise DataError(f"{folder}: no CT ({CT_FOLDER} folder with files or {CT_FOLDER}.zip)")
        mask_source = _source(folder, MASK_FOLDER)
        if mask_source is None:
            raise DataError(f"{folder}: no masks ({MASK_FOLDER} folder with files or {MASK_FOLDER}.zip)")

        with _opened(ct_source) as ct_items:
            ct = read_dicom_volume(ct_items, hu=True, where=str(ct_source))
        with _opened(mask_source) as mask_items:
            groups = _structure_groups(mask_items, str(mask_source))
            roles = {name: classify_structure(name, self.include_cysts) for name in groups}
            livers = [n for n, r in roles.items() if r == "liver"]
            lesions = [n for n, r in roles.items() if r == "lesion"]
            if not livers:
                raise DataError(f"{mask_source}: no liver mask (structures: {', '.join(groups) or 'none'})")
            liver = self._mask(groups[livers[0]], ct, mask_source, livers[0])
            lesion = np.zeros_like(liver)
            for name in lesions:
                lesion |= self._mask(groups[name], ct, mask_source, name)

        label = liver.astype(np.uint8)
        label[lesion] = 2
        return Case(
            id=case_id,
            image=ct.volume,
            label=label,
            spacing=ct.spacing,
            affine=ct.affine,
            meta={
                "source": str(folder),
                "ct": str(ct_source),
                "masks": str(mask_source),
                "liver_structure": livers[0],
                "lesion_structures": lesions,
                "ignored_structures": [n for n, r in roles.items() if r is None],
                "include_cysts": self.include_cysts,
                "lesion_voxels_outside_liver": int(np.count_nonzero(lesion & ~liver)),
                "slice_order": ct.ordered_by,
            },
        )

    @staticmethod
    def _mask(items: list[DicomItem], ct: Any, source: Path, name: str) -> np.ndarray:
        vol = read_dicom_volume(items, hu=False, where=f"{source}:{name}", reference=ct)
        return vol.volume > 0
