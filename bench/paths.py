"""The only code that builds paths under results/, cache/ and data/.

Results: ``<results>/<dataset>/<task>/<tag>/<plane>/`` where ``tag`` is the model name for a
default run and a suffixed name for ablation variants and extra seeds. Folder names are for
humans only: everything reads the meaning of a run from its ``config.json``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from bench.config import RunConfig

DEFAULT_DATA_ROOT = Path("data")


def run_dir(cfg: RunConfig, plane: str | None = None) -> Path:
    return Path(cfg.results) / cfg.dataset / cfg.task / cfg.run_tag / (plane or cfg.plane)


def checkpoint_dir(cfg: RunConfig) -> Path:
    return run_dir(cfg) / "checkpoints"


def dataset_cache_root(cache: str | Path, dataset: str, root: str | Path) -> Path:
    """Per data set and per data root: two LiTS copies never share a cache or a split."""
    digest = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:8]
    return Path(cache) / f"{dataset}-{digest}"


def splits_path(cache: str | Path, dataset: str, root: str | Path) -> Path:
    return dataset_cache_root(cache, dataset, root) / "splits_final.json"
