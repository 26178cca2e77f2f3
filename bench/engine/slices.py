"""The ``slices`` recipe: one network trained on full slices (SegNet, U-Net, DeepLabV3).

Loss: BCE + Dice, the paper's per-level loss with alpha = beta = 1, so the comparison with the
cascade isolates architecture and training scheme rather than the loss.

With ``model.liver_prior`` (lesion task, `bench.models.liver_prior`) the model is a
`LiverPriorNet`: the trained "ours" liver cascade of the same plane, seed and fold (loaded from
its run folder, frozen) and the baseline network. Its priors are computed once per case with the
cascade's own function (`bench.engine.priors.write_run_priors`) into ``<run>/priors/``, and the
network trains and validates on ``forward(slice, prior)``; the optimiser only ever receives
gradients for the baseline network (the liver cascade's parameters do not require them).
config.json names the liver run the prior came from (``training.liver_prior``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bench.engine.data import SliceDataset
from bench.engine.priors import load_liver_cascade, write_run_priors
from bench.engine.recipe import RECIPES, TrainContext, Trained
from bench.engine.records import read_record
from bench.engine.roi_cache import roi_context
from bench.engine.train import Stage, fit
from bench.errors import DataError
from bench.models import budget_reference, build_model
from bench.models.lesion_roi import roi_record
from bench.models.liver_prior import liver_prior_run
from bench.models.losses import bce_dice_loss
from bench.paths import BEST, LAST, checkpoint_dir, priors_dir, run_dir


@RECIPES.register("slices", help="one network on full slices, BCE + Dice (the baselines)")
def train_on_slices(ctx: TrainContext) -> Trained:
    cfg = ctx.cfg
    model = build_model(cfg)
    extra: dict[str, Any] = {}
    facts: dict[str, Any] = {}
    if cfg.profile.model.liver_prior != "none":
        ctx, extra, facts = _liver_prior(ctx, model)

    def logits(m: torch.nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return m(b["image"], b["prior"]) if extra else m(b["image"])

    stage = Stage(
        name="model",
        model=model,
        loss=lambda m, b: bce_dice_loss(logits(m, b), b["target"]),
        predict=lambda m, b: torch.sigmoid(logits(m, b)),
        train_set=SliceDataset(ctx.cache, ctx.splits["train"], cfg.plane, cfg.task, extra=extra),
        val_set=SliceDataset(ctx.cache, ctx.val_ids, cfg.plane, cfg.task, extra=extra),
        epochs=cfg.profile.train.epochs,
        checkpoint_dir=checkpoint_dir(cfg),
        best_name=BEST,
        last_name=LAST,
    )
    if cfg.profile.train.budget == "matched":
        facts["budget_matched_to"] = match_budget(stage, cfg)
    summary = fit(stage, cfg, ctx.device, ctx.info, resume=ctx.resume, progress=ctx.progress)
    return Trained(model=model, history=stage.history, stages={"model": summary}, extra=facts)


def _liver_prior(ctx: TrainContext, model: torch.nn.Module) -> tuple[TrainContext, dict[str, Any], dict[str, Any]]:
    """Load the liver run's cascade into ``model`` (a `LiverPriorNet`), write the priors of every case.

    Returns the context to train in, the dataset extra (``prior``) and the record of where the
    prior came from. With the liver ROI (``crop`` and ``cascade.lesion_roi="box"``) the context
    reads the ROI crops, cut by the function that cuts ours' (`bench.engine.roi_cache`).
    """
    (liver_cfg,) = liver_prior_run(ctx.cfg)
    liver = load_liver_cascade(liver_cfg, ctx.device)
    model.liver.load_state_dict(liver.state_dict())
    model.to(ctx.device)
    roi_facts: dict[str, Any] = {}
    if model.cut is not None:
        ctx, roi_cache, coverage = roi_context(ctx, model.cut, model.liver, model.prior_of_liver)
        reader = roi_cache.priors
        roi_facts = {"roi_coverage": coverage, "lesion_roi": roi_record(ctx.cfg)}
    else:
        reader = write_run_priors(ctx, model.prior, priors_dir(ctx.cfg))
    record = read_record(run_dir(liver_cfg))
    facts = {"liver_prior": {
        "mode": ctx.cfg.profile.model.liver_prior,
        "equals": f"cascade.lesion_prior={model.prior_kind}",
        "run": str(run_dir(liver_cfg)),
        "fingerprint": record.get("fingerprint"),
        "finished": record.get("finished"),
        "frozen_parameters": sum(p.numel() for p in model.liver.parameters()),
    }, **roi_facts}
    return ctx, {"prior": reader}, facts

def match_budget(stage: Stage, cfg) -> dict:
    """``train.budget=matched``: as many optimiser steps as the reference run spent (its record).

    The epochs are stretched to cover the steps (at the profile's steps per epoch) and training
    stops at exactly that many steps; early stopping still applies. Returns what the record keeps.
    """
    ref = budget_reference(cfg)
    record = read_record(run_dir(ref))
    steps = int((record.get("budget") or {}).get("steps") or 0)
    if steps < 1:
        raise DataError(f"{run_dir(ref)}: its record has no training budget to match (retrain it)")
    train = cfg.profile.train
    per_epoch = train.steps_per_epoch or max(1, len(stage.train_set) // train.batch_size)
    stage.epochs = max(1, math.ceil(steps / per_epoch))
    stage.max_steps = steps
    return {"run": str(run_dir(ref)), "fingerprint": record.get("fingerprint"), "steps": steps,
            "epochs": stage.epochs}
