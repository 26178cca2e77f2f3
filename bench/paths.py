"""The only code that builds paths under results/, cache/ and data/.

Results: ``<results>/<dataset>/<task>/<tag>/<plane>/`` where ``tag`` is the model name for a
default run and a suffixed name for ablation variants and extra seeds. Folder names are for
humans only: everything reads the meaning of a run from its ``config.json``.

Why containment is checked here: a tag or a case id becomes a folder name, and a folder is later
removed with ``--force``; a tag such as ``../../victim`` must never reach outside ``--results``.
`bench.config.check_folder_name` refuses unsafe names when a config is made, and `run_dir`
checks the resolved folder once more, so a path built here always lies inside its parent.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from bench.config import RunConfig
from bench.errors import ConfigError

# Environment variables for the default roots (as nnU-Net's nnUNet_raw/nnUNet_results): a flag wins over them
DATA_ENV = "BENCH_DATA"  # where generated data sets live by default (the phantom: $BENCH_DATA/phantom)
CACHE_ENV = "BENCH_CACHE"  # the slice cache root (--cache)
RESULTS_ENV = "BENCH_RESULTS"  # the results root (--results)

DEFAULT_DATA_ROOT = Path(os.environ.get(DATA_ENV) or "data")


def default_results_root() -> str:
    """``$BENCH_RESULTS``, else ``results`` (for commands whose --results has no fixed default)."""
    return os.environ.get(RESULTS_ENV) or "results"

# files of a run folder
RECORD = "config.json"
SUMMARY = "summary.json"
PER_CASE = "per_case.csv"
METRICS = "metrics.csv"
RAW_SUFFIX = "_raw"  # per_case_raw.csv, metrics_raw.csv, summary_raw.json: scores without post-processing
HISTORY = "history.csv"
PROGRESS = "progress.png"  # training curves drawn from history.csv (bench.engine.curves)
REITERATION = "reiteration.csv"
EXAMPLES = "examples.npz"
LOCK = ".lock"
BEST = "best.pt"
LAST = "last.pt"


def inside(parent: Path, child: Path, what: str) -> Path:
    """``child`` if it resolves to a path inside ``parent``, else a one-line ConfigError."""
    base = Path(parent).resolve()
    resolved = Path(child).resolve()
    if resolved != base and base not in resolved.parents:
        raise ConfigError(f"{what} {child} would lie outside {parent}")
    return Path(child)


def seed_tag(model: str, tag: str, seed: int, fold: int | None = None) -> str:
    """Seed 0 lands in the model's own folder; other seeds get ``~seedK``, folds ``~foldI``.

    Folder names are for humans; every reader takes seed and fold from config.json.
    """
    base = tag or model
    if seed:
        base += f"~seed{seed}"
    return base if fold is None else f"{base}~fold{fold}"


def run_dir(cfg: RunConfig, plane: str | None = None) -> Path:
    folder = Path(cfg.results) / cfg.dataset / cfg.task / cfg.run_tag / (plane or cfg.plane)
    return inside(Path(cfg.results), folder, "run folder")


def checkpoint_dir(cfg: RunConfig) -> Path:
    return run_dir(cfg) / "checkpoints"


def checkpoint_path(cfg: RunConfig, stage: str = "", which: str = "best") -> Path:
    """``best.pt``/``last.pt`` of the run's final model, ``<stage>-best.pt`` of an intermediate stage."""
    name = f"{stage}-{which}.pt" if stage else f"{which}.pt"
    return checkpoint_dir(cfg) / name


def priors_dir(cfg: RunConfig) -> Path:
    """The cascade's box priors of every cached slice (one ``<case>.npy`` per case)."""
    return run_dir(cfg) / "priors"


def reiteration_dir(cfg: RunConfig) -> Path:
    """Algorithm 1's patch set P and self-labels S."""
    return run_dir(cfg) / "reiteration"


def dataset_cache_root(cache: str | Path, dataset: str, root: str | Path) -> Path:
    """Per data set and per data root: two LiTS copies never share a cache or a split."""
    digest = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:8]
    return Path(cache) / f"{dataset}-{digest}"


def splits_path(cache: str | Path, dataset: str, root: str | Path) -> Path:
    return dataset_cache_root(cache, dataset, root) / "splits_final.json"
