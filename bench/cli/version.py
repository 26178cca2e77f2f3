"""``bench --version``: the package version and, run from a git checkout, its commit.

The version has one home, ``bench.__version__`` (pyproject.toml reads it from there). The commit
comes from git when the package lives at the top of a git work tree (a clone or worktree of this
project); an installed copy, or git missing, says ``unknown`` rather than guessing.
"""

from __future__ import annotations

import bench
from bench.gitinfo import git_hash


def version_line() -> str:
    """``liverbench 0.1.0 (git abc123def456)``."""
    return f"liverbench {bench.__version__} (git {git_hash(short=True)})"
