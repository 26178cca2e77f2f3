"""A run folder's record: what is saved beside every run so a number can be traced to code, data
and machine (config, git hash, package versions, device, budget), and how it is read back.

``config.json`` is written when training starts (status ``training``), again when it ends
(``trained``) and after evaluation (``complete``); its fingerprint is that of the config minus
the fields that cannot change results, so a finished run is reused only for the same config.
Its ``data`` block binds the run to its data (`bench.datasets.binding`): every evaluation starts
with `check_data_binding`, which refuses a changed data root, split or case source unless asked
to re-score (``bench evaluate --rescore``, recorded under ``rescored``).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from bench.atomic import write_json
from bench.config import NON_RESULT_FIELDS, RunConfig, fingerprint, run_config_from_dict, to_dict
from bench.datasets import get_dataset
from bench.datasets.binding import binding_change, data_binding, evaluation_root, split_file
from bench.datasets.cache import open_or_prepare
from bench.errors import BenchError, ConfigError, DataError
from bench.gitinfo import git_hash
from bench.paths import RECORD, run_dir

_PACKAGES = ("liverbench", "torch", "torchvision", "segmentation-models-pytorch", "timm", "monai", "numpy",
             "scipy", "pandas", "nibabel", "pydicom")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def run_record(cfg: RunConfig, device: torch.device, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "config": to_dict(cfg),
        "git": git_hash(),
        "versions": package_versions(),
        "device": device_description(device),
    }
    record.update(extra)
    return record


# ---------------------------------------------------------------- reading and updating a run folder


def run_fingerprint(cfg: RunConfig) -> str:
    """What identifies a run's results: its config minus where it ran and where files go."""
    return fingerprint(cfg, drop=NON_RESULT_FIELDS)


def read_record(folder: Path) -> dict[str, Any]:
    """A run folder's config.json (one line naming the file when it is missing or corrupt)."""
    path = Path(folder) / RECORD
    if not path.is_file():
        raise DataError(f"{folder}: no run here (train it first)")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: corrupt run record ({str(exc).splitlines()[0]})") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise DataError(f"{path}: not a run record (no config)")
    return record


def run_status(cfg: RunConfig) -> str:
    """``none`` | ``complete`` | ``partial`` (same config, unfinished) | ``different`` (another config)."""
    folder = run_dir(cfg)
    path = folder / RECORD
    if not path.exists():
        return "partial" if folder.exists() and any(folder.iterdir()) else "none"
    try:
        record = read_record(folder)
    except DataError:
        return "partial"
    if record.get("fingerprint") != run_fingerprint(cfg):
        return "different"
    return "complete" if record.get("status") == "complete" else "partial"


def stored_config(cfg: RunConfig, plane: str | None = None) -> RunConfig:
    """The config a run was trained with (its config.json), with this call's device and folders.

    Evaluation and prediction read the model from here, never from the flags of the call, so a
    run is always rebuilt exactly as it was trained.
    """
    folder = run_dir(cfg, plane)
    record = read_record(folder)
    try:
        stored = run_config_from_dict(record["config"])
    except (TypeError, ValueError, KeyError, BenchError) as exc:
        raise DataError(f"{folder / RECORD}: unreadable config ({str(exc).splitlines()[0]})") from None
    return replace(stored, device=cfg.device, results=cfg.results, cache=cfg.cache)


def update_record(folder: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into a run's config.json (nested dicts merged one level deep) and rewrite it."""
    record = read_record(folder)
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(record.get(key), dict):
            record[key] = {**record[key], **value}
        else:
            record[key] = value
    write_json(Path(folder) / RECORD, record)
    return record


# ---------------------------------------------------------------- the run's data binding


def run_data_binding(cfg: RunConfig, cache_dir: Path, splits: dict[str, list[str]]) -> dict[str, Any]:
    """config.json ``data`` of a plane run: absolute data root, cache, split file and lists, case fingerprints
    (`bench.datasets.binding.data_binding`)."""
    adapter = get_dataset(cfg.dataset, root=evaluation_root(cfg), include_cysts=cfg.include_cysts)
    return data_binding(cfg, adapter, cache_dir, splits)


def check_data_binding(cfg: RunConfig, folder: Path, rescore: bool = False) -> str | None:
    """Called at the start of every evaluation of a trained run: is it still bound to its data?

    ``cfg`` is the call's config (its ``--root``, ``--cache``); the run's own config is read from
    ``folder``. A ``--root`` other than the run's recorded data root is refused (evaluate scores a
    run on its own data; other data: ``bench predict`` / ``bench score``). A changed data root, split
    or case fingerprint is refused in one line naming it, unless ``rescore`` (``--rescore``): then the
    change is returned, for the caller to record once the run is re-scored. A run recorded before
    bindings existed has nothing to compare (None).
    """
    record = read_record(folder)
    data = record.get("data")
    if not isinstance(data, dict):
        return None
    if cfg.root and str(Path(cfg.root).expanduser().resolve()) != data.get("root"):
        raise ConfigError(f"--root {cfg.root}: {folder} was trained on {data.get('root')}; evaluate scores a run on "
                          f"its own data (omit --root; to score other data use bench predict or bench score)")
    try:
        stored = run_config_from_dict(record["config"])
    except (TypeError, ValueError, KeyError, BenchError) as exc:
        raise DataError(f"{folder / RECORD}: unreadable config ({str(exc).splitlines()[0]})") from None
    stored = replace(stored, cache=cfg.cache)  # the split file this call's evaluation will read
    root = evaluation_root(stored)
    change = binding_change(data, stored, root, split_file(stored, root))
    if change is None or rescore:
        return change
    raise DataError(f"{folder}: {change}; its scores belong to the data it was trained on (bench evaluate --rescore "
                    f"scores it on the data as it is now, recorded in config.json; or retrain with --force)")


def record_rescore(cfg: RunConfig, folder: Path, change: str) -> None:
    """After ``bench evaluate --rescore``: the run's ``data`` becomes the data it was just scored on; the
    binding it had (root, split and cache fingerprints) and what changed go to ``rescored``."""
    record = read_record(folder)
    old = record.get("data") or {}
    stored = stored_config(cfg, folder.name)
    cache, splits = open_or_prepare(stored, progress=False)
    entry = {"at": time.time(), "changed": change,
             "before": {k: old.get(k) for k in ("root", "split_file", "split_hash", "cache_fingerprint")}}
    update_record(folder, data=run_data_binding(stored, cache.dir, splits),
                  rescored=[*(record.get("rescored") or []), entry])
