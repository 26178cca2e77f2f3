"""One writer per run folder: an OS file lock held while a run is trained or evaluated.

Two ``bench`` processes writing one results folder at once would leave a ``config.json`` that
describes one run beside a ``per_case.csv`` of another. The lock is ``flock`` on ``<run>/.lock``:
the kernel releases it when its process dies however it dies, so a lock can never go stale; the
holder's pid is written into the file only to name it in the refusal.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path
from typing import Iterator

from bench.errors import ConfigError
from bench.paths import LOCK


def _missing_dirs(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first (what ``mkdir -p`` would create)."""
    missing = []
    for p in (folder, *folder.parents):
        if p.exists():
            break
        missing.append(p)
    return missing


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold the folder's lock for the block; a second holder is refused in one line.

    The lock file is removed when the block ends, however it ends (a failed ``bench evaluate``
    of a run that does not exist left ``.lock`` and its empty folders behind), and so are the
    folders that only the lock created. Removing a flock file is safe with the usual check: the
    holder unlinks it *before* unlocking, and whoever locks an inode checks afterwards that the
    path still names that inode (else it was unlinked meanwhile and the lock is taken again).
    """
    folder = Path(folder)
    created = _missing_dirs(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(f"{folder} is being written by another bench process (pid {holder}); "
                              f"wait for it to finish or use another --results") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed this file between our open and our lock: take the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        for p in created:  # deepest first; a folder that now holds anything stays
            try:
                p.rmdir()
            except OSError:
                break


def clear_folder(folder: Path) -> None:
    """Remove everything in a run folder except its lock (``--force`` while holding the lock)."""
    for entry in Path(folder).iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
