"""One run end to end: resolve config -> prepare data -> train -> evaluate -> record.

Finished runs are reused, not retrained (ablations and the demo rely on it): a run folder whose
``config.json`` says ``complete`` for the same config fingerprint is left alone unless
``force``. A folder holding a *different* config is an error rather than a silent overwrite.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bench.config import RunConfig, fingerprint
from bench.errors import ConfigError
from bench.paths import checkpoint_dir, run_dir

_NOT_RESULT_FIELDS = ("device", "results", "cache")


def run_fingerprint(cfg: RunConfig) -> str:
    return fingerprint(cfg, drop=_NOT_RESULT_FIELDS)


def existing_status(cfg: RunConfig) -> str:
    """"none" | "complete" (same config) | "partial" (same config) | "different" (another config)."""
    path = run_dir(cfg) / "config.json"
    if not path.exists():
        return "partial" if checkpoint_dir(cfg).exists() else "none"
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return "partial"
    if record.get("fingerprint") != run_fingerprint(cfg):
        return "different"
    return "complete" if record.get("status") == "complete" else "partial"


def train_run(cfg: RunConfig, resume: bool = False, force: bool = False, progress: bool = True,
              evaluate: bool = True) -> Path:
    """Train (or reuse) one plane run and evaluate it on val and test. Returns the run folder."""
    from bench.atomic import write_json
    from bench.datasets.cache import open_or_prepare
    from bench.engine.runinfo import resolve_device, run_record
    from bench.engine.train import init_distributed, set_seed
    from bench.models import get_model_spec

    if cfg.plane == "fused":
        raise ConfigError("train one plane at a time (axial, coronal, sagittal); fused is evaluated from the three")
    spec = get_model_spec(cfg.model)
    folder = run_dir(cfg)
    status = existing_status(cfg)
    if status == "complete" and not force:
        return folder
    if status == "different" and not force:
        raise ConfigError(f"{folder} holds a run with another config; use --force to replace it or --results DIR")
    if force and folder.exists():
        shutil.rmtree(folder)
    elif status == "partial" and not resume:
        shutil.rmtree(folder, ignore_errors=True)

    device = resolve_device(cfg.device)
    info = init_distributed(device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    set_seed(cfg.seed, cfg.profile.train.deterministic)
    if info.is_main:
        cache, splits = open_or_prepare(cfg)
    if info.enabled:
        torch.distributed.barrier()
    if not info.is_main:
        cache, splits = open_or_prepare(cfg)
    folder.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    if spec.kind == "cascade":
        from bench.engine.cascade import train_cascade

        summary, history, model = train_cascade(cfg, cache, splits, device, info, resume=resume, progress=progress)
    else:
        summary, history, model = train_standard(cfg, cache, splits, device, info, resume=resume, progress=progress)
    wall = time.perf_counter() - t0
    if info.is_main:
        pd.DataFrame(history).to_csv(folder / "history.csv", index=False)
        record = run_record(cfg, device, fingerprint=run_fingerprint(cfg), status="trained",
                            wall_time_s={"train": wall}, training=summary,
                            parameters=sum(p.numel() for p in model.parameters()),
                            world_size=info.world, splits={k: len(v) for k, v in splits.items()})
        write_json(folder / "config.json", record)
    if info.enabled:
        torch.distributed.barrier()
    if evaluate and info.is_main:
        from bench.engine.evaluate import evaluate_plane

        evaluate_plane(cfg, progress=progress)
    return folder


def train_standard(cfg: RunConfig, cache, splits: dict, device: torch.device, info, resume: bool, progress: bool
                   ) -> tuple[dict[str, Any], list[dict], torch.nn.Module]:
    """A baseline on full slices: BCE + Dice (the paper's per-level loss with alpha = beta = 1)."""
    from bench.engine.data import SliceDataset
    from bench.engine.train import Stage, fit
    from bench.models import build_model
    from bench.models.losses import bce_dice_loss

    model = build_model(cfg)
    train_set = SliceDataset(cache, splits["train"], cfg.plane, cfg.task)
    val_set = SliceDataset(cache, validation_cases(cfg, splits), cfg.plane, cfg.task)
    stage = Stage(
        name="model",
        model=model,
        loss=lambda m, b: bce_dice_loss(m(b["image"]), b["target"]),
        predict=lambda m, b: torch.sigmoid(m(b["image"])),
        train_set=train_set,
        val_set=val_set,
        epochs=cfg.profile.train.epochs,
        checkpoint_dir=checkpoint_dir(cfg),
        best_name="best.pt",
        last_name="last.pt",
    )
    summary = fit(stage, cfg, device, info, resume=resume, progress=progress)
    return summary, stage.history, model


def validation_cases(cfg: RunConfig, splits: dict) -> list[str]:
    cases = list(splits["val"])
    limit = cfg.profile.train.val_max_cases
    return cases[:limit] if limit else cases
