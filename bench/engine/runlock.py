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
from pathlib import Path
from typing import Iterator

from bench.errors import ConfigError
from bench.paths import LOCK


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold the folder's lock for the block; a second holder is refused in one line."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ConfigError(f"{folder} is being written by another bench process (pid {holder}); "
                          f"wait for it to finish or use another --results") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def clear_folder(folder: Path) -> None:
    """Remove everything in a run folder except its lock (``--force`` while holding the lock)."""
    import shutil

    for entry in Path(folder).iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
