"""Write-then-rename helpers, so a killed process never leaves a half-written file behind.

A reader either sees the old file, or the complete new one; temporary files carry a ``.tmp``
marker and the writer's pid so a rerun can recognise and remove leftovers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import resource
import shutil
from pathlib import Path
from typing import Any, Iterator

from bench.errors import DiskSpaceError

TMP_MARK = ".tmp-"


def tmp_path_for(path: Path) -> Path:
    path = Path(path)
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")


# ---------------------------------------------------------------- out of space: one line, exit 2

SPACE_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                errno.EFBIG: "file size limit exceeded (ulimit -f)"}
LOW_SPACE_BYTES = 1 << 20  # a failed write with less than this free on its disk is a full disk


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def space_problem(exc: BaseException, written: Path | None = None) -> str | None:
    """Why a failed write failed when it is for lack of space (full disk, quota, ``ulimit -f``), else None.

    Why more than the errno: numpy's ``tofile`` ("32768 requested and 10176 written") and torch's
    zip writer ("file write failed") drop it. Without one, a write that stopped at the process's
    file size limit (the partial file is that long) or on a disk with under `LOW_SPACE_BYTES` free
    is recognised from the limit and the disk; anything else is not a space problem.
    """
    code = getattr(exc, "errno", None)
    if code in SPACE_ERRNOS:
        return SPACE_ERRNOS[code]
    if not isinstance(exc, (OSError, RuntimeError)):
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if written is not None:
        with contextlib.suppress(OSError):
            if soft != resource.RLIM_INFINITY and Path(written).stat().st_size >= soft:
                return f"{SPACE_ERRNOS[errno.EFBIG]}: {_size(soft)} per file"
        with contextlib.suppress(OSError):
            if shutil.disk_usage(Path(written).parent).free < LOW_SPACE_BYTES:
                return SPACE_ERRNOS[errno.ENOSPC]
    return None


def space_message(path: Path, why: str, needed: int | None = None) -> str:
    """``PATH: <why> (needs N MB; M MB free on its disk)``: one line for `bench.errors.DiskSpaceError`."""
    parts = []
    if needed:
        parts.append(f"needs {_size(needed)}")
    with contextlib.suppress(OSError):
        parts.append(f"{_size(shutil.disk_usage(Path(path).parent).free)} free on its disk")
    return f"{path}: cannot write: {why}" + (f" ({'; '.join(parts)})" if parts else "")


@contextlib.contextmanager
def space_errors(path: str | os.PathLike, needed: int | None = None,
                 written: str | os.PathLike | None = None) -> Iterator[None]:
    """Within the block, a write that fails for lack of space raises one `DiskSpaceError` naming ``path``.

    ``written``: the file being written (default ``path``), inspected to tell a ``ulimit -f`` stop
    from another failure; ``needed``: the bytes the write needs, when known.
    """
    try:
        yield
    except (OSError, RuntimeError) as exc:
        why = space_problem(exc, Path(written if written is not None else path))
        if why is None:
            raise
        raise DiskSpaceError(space_message(Path(path), why, needed)) from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    A write that fails for lack of space becomes a one-line `DiskSpaceError` naming ``path``
    (`space_errors`), after the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        why = space_problem(exc, tmp) if isinstance(exc, (OSError, RuntimeError)) else None
        with contextlib.suppress(FileNotFoundError):
            if tmp.is_dir():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()
        if why is None:
            raise
        raise DiskSpaceError(space_message(path, why, needed)) from None


OLD_MARK = ".old"  # <final>.old.tmp-<pid>: a complete older copy moved aside by `replace_dir`


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Rename a finished temporary folder onto ``final``; an older ``final`` is moved aside, then removed.

    A reader sees the old folder or the complete new one, never a mix (the slice cache's cases,
    nnU-Net exports). The older copy is never lost: if the second rename fails (or a signal
    arrives between the two), it is renamed back before the error propagates; if the process is
    killed outright, the next writer finds ``<final>.old.tmp-<pid>`` and renames it back
    (`bench.datasets.cache.remove_stale_temp`).
    """
    tmp, final = Path(tmp), Path(final)
    if tmp.parent != final.parent:
        raise ValueError(f"{final}: not beside its temp folder {tmp}; refusing to move it")
    old = final.with_name(f"{final.name}{OLD_MARK}{TMP_MARK}{os.getpid()}") if final.exists() else None
    try:
        if old is not None:
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException:
        if old is not None and old.exists() and not final.exists():
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Strict JSON (NaN and infinities written as null, which every JSON reader accepts)."""
    write_text(path, json.dumps(_finite(obj), indent=2, sort_keys=False, default=_json_default, allow_nan=False) + "\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json_default(obj: Any) -> Any:
    import numpy as np  # lazy: numpy stays out of bench --help, whose import path holds this module

    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.ndarray):
        return _finite(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (a temp file of a live writer must not be removed)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def remove_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``*.tmp-<pid>`` leftovers of writers that died (directly in ``folder``); returns them.

    A temp file whose pid is alive belongs to a running writer and is kept.
    """
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if TMP_MARK not in p.name:
            continue
        pid_text = p.name.rsplit(TMP_MARK, 1)[1]
        if pid_text.isdigit() and pid_alive(int(pid_text)):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


@contextlib.contextmanager
def staged_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a new empty folder beside ``final``; on success it replaces ``final`` as a whole (`replace_dir`).

    On any failure or signal (`bench.cli.exits.Interrupted` unwinds the stack) the temporary folder is
    removed and ``final`` is left as it was: a reader never sees a half-written output folder (``bench
    report`` killed after three of six tables). A leftover of a killed process carries the ``.tmp-<pid>``
    mark (`remove_stale_tmp`).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
