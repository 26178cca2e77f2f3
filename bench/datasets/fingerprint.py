"""Fingerprints of a case's source files: how the slice cache and a run notice that the data changed.

Why: a cached case is a derived copy of its source files, and a run's scores are bound to the
data it was trained and scored on. Replacing a volume or blanking a segmentation after
``bench data prepare`` must not leave training on the old cached label while evaluation reads
the new file.

What is recorded per source file (path relative to the data root): ``size``, ``mtime_ns`` and,
for files up to `HASH_LIMIT` bytes (every phantom and 3D-IRCADb file, LiTS segmentations; not
the 100-700 MB LiTS volumes), the SHA-256 of the content. A case's fingerprint is a hash over
(path, size, content hash or mtime) of all its files, so a ``touch`` or a copy of identical
content leaves a hashed file's fingerprint unchanged, while any change of size, content or file
set changes it. Checking is cheap, as git's index does it: a file whose size and mtime equal the
recorded ones keeps its recorded hash; only a file that looks touched is read again.

The adapter names a case's files (`DatasetAdapter.source_files`): LiTS/phantom the volume and
segmentation, 3D-IRCADb every file of the patient's ``PATIENT_DICOM`` and ``MASKS_DICOM`` folders
or their zips. An adapter that names none gives the fingerprint ``""`` ("unknown": never
reported as changed, nothing to compare).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

from bench.errors import DataError

HASH_LIMIT = 64 * 1024 * 1024  # bytes: files up to this size are content-hashed (reading them costs < 0.1 s)
FileEntry = dict[str, Any]  # {"size": int, "mtime_ns": int, "sha256": str | None}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def source_entries(files: list[Path], root: str | Path, known: Mapping[str, FileEntry] | None = None) -> dict[str, FileEntry]:
    """{relative path: entry} of ``files``; a file unchanged in size and mtime keeps its ``known`` hash."""
    known = known or {}
    out: dict[str, FileEntry] = {}
    for path in sorted(Path(p) for p in files):
        rel = _relative(path, Path(root))
        try:
            st = os.stat(path)
        except OSError as exc:
            raise DataError(f"{path}: cannot read the source file ({exc.strerror or exc})") from None
        old = known.get(rel)
        if old and old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
            digest = old.get("sha256")
        else:
            digest = _sha256(path) if st.st_size <= HASH_LIMIT else None
        out[rel] = {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns), "sha256": digest}
    return out


def fingerprint_of(entries: Mapping[str, FileEntry]) -> str:
    """Short hash over (path, size, content hash or mtime) of every file; "" when no file is known."""
    if not entries:
        return ""
    items = [[rel, e["size"], e.get("sha256") or f"mtime:{e['mtime_ns']}"] for rel, e in sorted(entries.items())]
    return hashlib.sha1(json.dumps(items).encode()).hexdigest()[:16]


def describe_change(old: Mapping[str, FileEntry], new: Mapping[str, FileEntry]) -> str:
    """Which files differ, for a one-line message: ``volume-1.nii.gz changed``, ``mask.zip removed``."""
    parts = []
    for rel in sorted(set(old) | set(new)):
        if rel not in new:
            parts.append(f"{rel} removed")
        elif rel not in old:
            parts.append(f"{rel} added")
        elif fingerprint_of({rel: old[rel]}) != fingerprint_of({rel: new[rel]}):
            parts.append(f"{rel} changed")
    if not parts:
        return "source files changed"
    return ", ".join(parts[:3]) + (f" (+{len(parts) - 3} more)" if len(parts) > 3 else "")
