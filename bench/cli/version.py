"""``bench --version``: the package version and, run from a git checkout, its commit.

The version has one home, ``bench.__version__`` (pyproject.toml reads it from there). The commit
comes from git when the package lives at the top of a git work tree (a clone or worktree of this
project); an installed copy, or git missing, says ``unknown`` rather than guessing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import bench


def git_hash(package_dir: Path | None = None) -> str:
    """Short commit hash of the checkout holding ``bench/`` (+ ``-dirty`` with local changes), else ``unknown``."""
    root = (package_dir or Path(bench.__file__).resolve().parent).parent
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True,
                             timeout=5)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root.resolve():
            return "unknown"  # not a checkout of this project (e.g. site-packages inside another repo)
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=5)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def version_line() -> str:
    """``liverbench 0.1.0 (git abc123def456)``."""
    return f"liverbench {bench.__version__} (git {git_hash()})"
