"""The ``slices`` recipe: one network trained on full slices (SegNet, U-Net, DeepLabV3).

Loss: BCE + Dice, the paper's per-level loss with alpha = beta = 1, so the comparison with the
cascade isolates architecture and training scheme rather than the loss.
"""

from __future__ import annotations

import torch

from bench.engine.data import SliceDataset
from bench.engine.recipe import RECIPES, TrainContext, Trained
from bench.engine.train import Stage, fit
from bench.paths import BEST, LAST, checkpoint_dir


@RECIPES.register("slices", help="one network on full slices, BCE + Dice (the baselines)")
def train_on_slices(ctx: TrainContext) -> Trained:
    from bench.models import build_model
    from bench.models.losses import bce_dice_loss

    cfg = ctx.cfg
    model = build_model(cfg)
    stage = Stage(
        name="model",
        model=model,
        loss=lambda m, b: bce_dice_loss(m(b["image"]), b["target"]),
        predict=lambda m, b: torch.sigmoid(m(b["image"])),
        train_set=SliceDataset(ctx.cache, ctx.splits["train"], cfg.plane, cfg.task),
        val_set=SliceDataset(ctx.cache, ctx.val_ids, cfg.plane, cfg.task),
        epochs=cfg.profile.train.epochs,
        checkpoint_dir=checkpoint_dir(cfg),
        best_name=BEST,
        last_name=LAST,
    )
    extra = {}
    if cfg.profile.train.budget == "matched":
        extra["budget_matched_to"] = match_budget(stage, cfg)
    summary = fit(stage, cfg, ctx.device, ctx.info, resume=ctx.resume, progress=ctx.progress)
    return Trained(model=model, history=stage.history, stages={"model": summary}, extra=extra)


def match_budget(stage: Stage, cfg) -> dict:
    """``train.budget=matched``: as many optimiser steps as the reference run spent (its record).

    The epochs are stretched to cover the steps (at the profile's steps per epoch) and training
    stops at exactly that many steps; early stopping still applies. Returns what the record keeps.
    """
    import math

    from bench.engine.records import read_record
    from bench.models import budget_reference
    from bench.paths import run_dir

    ref = budget_reference(cfg)
    record = read_record(run_dir(ref))
    steps = int((record.get("budget") or {}).get("steps") or 0)
    if steps < 1:
        from bench.errors import DataError

        raise DataError(f"{run_dir(ref)}: its record has no training budget to match (retrain it)")
    train = cfg.profile.train
    per_epoch = train.steps_per_epoch or max(1, len(stage.train_set) // train.batch_size)
    stage.epochs = max(1, math.ceil(steps / per_epoch))
    stage.max_steps = steps
    return {"run": str(run_dir(ref)), "fingerprint": record.get("fingerprint"), "steps": steps,
            "epochs": stage.epochs}
