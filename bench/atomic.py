"""Write-then-rename helpers, so a killed process never leaves a half-written file behind.

A reader either sees the old file, or the complete new one; temporary files carry a ``.tmp``
marker and the writer's pid so a rerun can recognise and remove leftovers.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

TMP_MARK = ".tmp-"


def tmp_path_for(path: Path) -> Path:
    path = Path(path)
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            if tmp.is_dir():
                import shutil

                shutil.rmtree(tmp)
            else:
                tmp.unlink()
        raise


OLD_MARK = ".old"  # <final>.old.tmp-<pid>: a complete older copy moved aside by `replace_dir`


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Rename a finished temporary folder onto ``final``; an older ``final`` is moved aside, then removed.

    A reader sees the old folder or the complete new one, never a mix (the slice cache's cases,
    nnU-Net exports). The older copy is never lost: if the second rename fails (or a signal
    arrives between the two), it is renamed back before the error propagates; if the process is
    killed outright, the next writer finds ``<final>.old.tmp-<pid>`` and renames it back
    (`bench.datasets.cache.remove_stale_temp`).
    """
    import shutil

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
    import math

    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json_default(obj: Any) -> Any:
    import dataclasses

    import numpy as np

    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        import math

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
    import shutil

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
    import shutil

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
