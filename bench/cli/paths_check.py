"""Early checks of the folders and files a verb will write, so a bad path is one line, not a traceback.

Why early: ``--results``, ``--cache`` and ``--out`` are written at the end of minutes or hours of
work (a trained model's evaluation, a prepared cache); a typo or a read-only mount should stop
the command before it starts, with a message naming the flag and the path. Why not `mkdir`:
a check must not leave empty folders behind when the command then fails for another reason, so
the nearest existing folder is probed instead (a temp file created and removed at once, which
also catches read-only mounts and ACLs that ``os.access`` misses, e.g. when running as root).

`output_not_input` guards ``bench predict``: the mask must never replace the CT it was read from.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.errors import ConfigError


def _as_path(path: str | os.PathLike, flag: str) -> Path:
    text = os.fspath(path)
    if not str(text).strip():
        raise ConfigError(f"{flag}: empty path")
    if "\x00" in str(text):
        raise ConfigError(f"{flag} {text!r}: the path contains a NUL character")
    return Path(text).expanduser()


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest existing ancestor (resolved against the working folder)."""
    current = path.absolute()
    while not current.exists():
        if current.parent == current:
            break
        current = current.parent
    return current


def _probe_writable(folder: Path) -> str | None:
    """None when a file can be created in ``folder``, else the OS's reason."""
    try:
        fd, name = tempfile.mkstemp(prefix=".bench-write-probe-", dir=folder)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:
        pass
    return None


def _check_folder(folder: Path, label: str) -> None:
    base = _nearest_existing(folder)
    if base == folder.absolute():
        if not base.is_dir():
            raise ConfigError(f"{label}: {folder} exists and is not a folder")
    elif not base.is_dir():
        raise ConfigError(f"{label}: {base} is a file, so {folder} cannot be created")
    reason = _probe_writable(base)
    if reason is not None:
        where = "" if base == folder.absolute() else f" (nearest existing folder {base})"
        raise ConfigError(f"{label}: cannot write in {folder}{where}: {reason}")


def writable_dir(path: str | os.PathLike, flag: str) -> Path:
    """Check that ``path`` is a folder this process can write into, or can be created; return it.

    Refused (a `ConfigError` naming ``flag`` and the path): an empty path, an existing file where
    the folder should be, a file among its parents, a folder (or nearest existing parent) that is
    not writable. Nothing is created.
    """
    target = _as_path(path, flag)
    _check_folder(target, f"{flag} {target}")
    return target


def writable_file(path: str | os.PathLike, flag: str) -> Path:
    """Check that the file ``path`` can be written: not a folder, its folder writable or creatable."""
    target = _as_path(path, flag)
    if target.is_dir():
        raise ConfigError(f"{flag} {target}: is a folder, expected a file name")
    _check_folder(target.parent, f"{flag} {target}")
    return target


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def output_not_input(output: str | os.PathLike, input_: str | os.PathLike, out_flag: str = "--output",
                     in_flag: str = "--input") -> None:
    """Refuse an output that would overwrite or write into the input (symlinks and hard links resolved).

    Same file (also through a symlink or a hard link), the input DICOM zip itself, or a path inside
    the input DICOM folder (a mask written there would become part of the series it was read from).
    """
    out_path, in_path = Path(output), Path(input_)
    out_real, in_real = out_path.resolve(), in_path.resolve()
    same = out_real == in_real
    if not same and out_path.exists() and in_path.exists():
        try:
            same = os.path.samefile(out_path, in_path)
        except OSError:
            same = False
    if same:
        raise ConfigError(f"{out_flag} {output} is the same file as the input {in_flag} {input_}; refusing to overwrite "
                          f"the input (choose another output name)")
    if in_real.is_dir() and _inside(out_real, in_real):
        raise ConfigError(f"{out_flag} {output} lies inside the input DICOM folder {input_}; refusing to write "
                          f"into the input (choose a path outside it)")
