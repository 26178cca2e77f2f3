"""The commit of the checkout this package runs from: one function for run records and ``bench --version``.

git is trusted only when ``bench/`` sits at the top of a git work tree (a clone or worktree of this
project); an installed copy inside another repository, or git missing, says ``unknown`` rather than
recording some other project's commit.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def git_hash(short: bool = False, package_dir: Path | None = None) -> str:
    """Commit hash (12 characters when ``short``) + ``-dirty`` with local changes to tracked files, else ``unknown``."""
    root = (package_dir or PACKAGE_DIR).parent
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True,
                             timeout=5)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root.resolve():
            return "unknown"
        head = subprocess.run(["git", "rev-parse", *(["--short=12"] if short else []), "HEAD"], cwd=root,
                              capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
