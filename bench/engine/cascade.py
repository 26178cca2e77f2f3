"""The ``cascade`` recipe: training the proposed method ("ours"), paper 3.3-3.10 and Algorithm 1.

Liver task, one plane, in four stages (each a function below):
  1. `locate`: the localization network learns the liver on full slices (BCE + Dice);
  2. `write_priors`: Grad-CAM of its foreground output -> threshold (-> dense CRF) -> boxes gives
     every slice's box prior, written once per case; training priors come from Grad-CAM as at
     inference, or from the ground truth with ``cascade.box_prior_train="ground_truth"``;
  3. `train_tuner`: the tuning network learns (slice, box prior) -> liver with the multi-level loss;
  4. Algorithm 1 (`bench.engine.reiterate.reiterate`) fine-tunes it on patches with self-labels
     while validation Dice improves; per-iteration validation and test scores go to
     ``reiteration.csv`` (Table 5, Fig. 16). The best-validation iteration is kept.
Lesion task: stage 1 reads the trained liver cascade of the same plane (a prerequisite run, see
`bench.models.cascade.liver_cascade_of`; the scheduler trains it first), whose predicted liver
mask (``cascade.lesion_prior="liver_mask"``) or that mask's boxes (``"liver_box"``) is the prior.
With ``cascade.lesion_roi="box"`` stage 2 cuts every slice's liver box on the finer ROI grid
(`write_roi_priors`, `bench.models.lesion_roi`) and stages 3-4 train on those crops.

Every prior used for validation and test comes from the networks, never from the ground truth.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from bench.atomic import atomic_path
from bench.config import to_dict
from bench.datasets.base import task_mask
from bench.engine.checkpoint import save_checkpoint
from bench.engine.data import SliceDataset
from bench.engine.distributed import unwrap
from bench.engine.priors import PriorReader, load_liver_cascade, write_run_priors
from bench.engine.recipe import RECIPES, TrainContext, Trained
from bench.engine.reiterate import Tuner, TunerData, reiterate
from bench.engine.roi_cache import roi_context
from bench.engine.train import Stage, fit
from bench.models.cascade import (
    CascadeNet, LesionCascade, build_localizer, build_tuner, liver_cascade_of, prior_from_liver,
)
from bench.models.lesion_roi import lesion_cut, roi_record
from bench.models.losses import MultiLevelLoss, bce_dice_loss
from bench.models.roi import box_prior
from bench.paths import REITERATION, checkpoint_dir, checkpoint_path, priors_dir, run_dir


@dataclass
class RoiSource:
    """Where a run's box priors come from: a function of a slice batch, and the networks behind it."""

    prior_fn: Callable[[torch.Tensor], torch.Tensor]  # (B, 1, S, S) slices -> (B, 1, S, S) prior
    localizer: torch.nn.Module | None  # liver task: the trained localization network
    liver: torch.nn.Module | None  # lesion task: the trained liver cascade
    stages: dict[str, dict[str, Any]]
    history: list[dict[str, Any]]


def locate(ctx: TrainContext) -> RoiSource:
    """Stage 1: the network that says where the organ is (trained localizer, or the liver cascade)."""
    cfg, cc = ctx.cfg, ctx.cfg.profile.cascade
    if cfg.task == "lesion":
        liver = load_liver_cascade(liver_cascade_of(cfg)[0], ctx.device)
        lesion = LesionCascade(liver, build_tuner(cfg), cc).to(ctx.device).eval()
        return RoiSource(lesion.lesion_prior, None, liver, {}, [])
    localizer = build_localizer(cfg)
    stage = Stage(
        name="localizer", model=localizer,
        loss=lambda m, b: bce_dice_loss(m(b["image"]), b["target"]),
        predict=lambda m, b: torch.sigmoid(m(b["image"])),
        train_set=SliceDataset(ctx.cache, ctx.splits["train"], cfg.plane, cfg.task),
        val_set=SliceDataset(ctx.cache, ctx.val_ids, cfg.plane, cfg.task),
        epochs=cc.loc_epochs or cfg.profile.train.epochs, checkpoint_dir=checkpoint_dir(cfg),
    )
    summary = fit(stage, cfg, ctx.device, ctx.info, resume=ctx.resume, progress=ctx.progress)
    roi_model = CascadeNet(localizer, build_tuner(cfg), cc).to(ctx.device).eval()
    return RoiSource(lambda x: roi_model.roi(x)[0], localizer, None, {"localizer": summary}, stage.history)


def roi_coverage(cache, case_ids: list[str], plane: str, task: str, prior_of: PriorReader) -> float:
    """Share of the reference foreground inside the box priors (1.0 = the ROI never cuts the organ).

    Recorded in config.json: an empty or misplaced ROI silently turns ConvBox into a constant,
    so this is the first number to look at when the cascade underperforms.
    """
    inside = total = 0
    for case in case_ids:
        truth = task_mask(np.asarray(cache.labels(case, plane)), task)
        inside += int((truth & (np.asarray(prior_of(case, plane)) > 0)).sum())
        total += int(truth.sum())
    return inside / total if total else float("nan")


def _truth_box_reader(cache, task: str, margin: float, min_area: float) -> PriorReader:
    """BB-UNet style training priors: boxes of the ground truth (only when configured)."""
    def read(case: str, plane: str) -> np.ndarray:
        mask = torch.from_numpy(task_mask(np.asarray(cache.labels(case, plane)), task))[:, None]
        return box_prior(mask, margin, min_area)[:, 0].numpy().astype(np.uint8)

    return read


@dataclass
class Priors:
    """The priors every split reads: training priors (as configured) and the networks' priors."""

    train: PriorReader
    inference: PriorReader
    coverage: float


def write_priors(ctx: TrainContext, roi: RoiSource) -> Priors:
    """Stage 2: box priors of every cached slice (train, val, test) from the networks; ROI coverage."""
    cfg, cc = ctx.cfg, ctx.cfg.profile.cascade
    inference = write_run_priors(ctx, roi.prior_fn, priors_dir(cfg))
    coverage = roi_coverage(ctx.cache, list(ctx.splits["val"]), cfg.plane, cfg.task, inference)
    if coverage < 0.5:
        warnings.warn(f"{cfg.run_tag} {cfg.plane}: the box priors cover only {coverage:.0%} of the validation "
                      f"{cfg.task}; check cascade.gradcam_layer / gradcam_threshold", stacklevel=2)
    train = inference
    if cc.box_prior_train == "ground_truth" and cfg.task == "liver":
        train = _truth_box_reader(ctx.cache, cfg.task, cc.box_margin, cc.box_min_area)
    return Priors(train, inference, coverage)


def write_roi_priors(ctx: TrainContext, roi: RoiSource, cut) -> tuple[TrainContext, Priors]:
    """Stage 2 on the liver ROI (``cascade.lesion_roi="box"``): the crops and their cropped priors.

    The tuner and Algorithm 1 then train on the crops (`bench.engine.roi_cache`) cut by the
    same function that cuts them at inference (`bench.models.lesion_roi.LesionRoi`).
    """
    cfg, cc = ctx.cfg, ctx.cfg.profile.cascade
    ctx, roi_cache, coverage = roi_context(
        ctx, cut, roi.liver, lambda logits: prior_from_liver(logits, cc.lesion_prior, cc.box_margin, cc.box_min_area))
    if coverage < 0.5:
        warnings.warn(f"{cfg.run_tag} {cfg.plane}: the liver ROI covers only {coverage:.0%} of the validation "
                      f"{cfg.task}; check the liver cascade and cascade.lesion_roi_margin", stacklevel=2)
    return ctx, Priors(roi_cache.priors, roi_cache.priors, coverage)


def train_tuner(ctx: TrainContext, priors: Priors) -> tuple[Tuner, TunerData, dict[str, Any], list[dict]]:
    """Stage 3: the tuning network on full slices with their priors and the multi-level loss (N = 0)."""
    cfg, cc = ctx.cfg, ctx.cfg.profile.cascade
    loss_fn = MultiLevelLoss(enabled=cc.multilevel_loss)
    model = build_tuner(cfg)

    def probabilities(image: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(unwrap(model).predict(image, prior))

    tuner = Tuner(model=model, loss=lambda m, b: loss_fn(m(b["image"], b["prior"]), b["target"]),
                  predict=lambda m, b: probabilities(b["image"], b["prior"]), probabilities=probabilities)

    def slices(cases: list[str], prior: PriorReader) -> SliceDataset:
        return SliceDataset(ctx.cache, cases, cfg.plane, cfg.task, extra={"prior": prior})

    data = TunerData(train=slices(ctx.splits["train"], priors.train), val=slices(ctx.val_ids, priors.inference),
                     test=slices(ctx.splits["test"], priors.inference), train_prior=priors.train)
    stage = Stage(name="tuner", model=model, loss=tuner.loss, predict=tuner.predict, train_set=data.train,
                  val_set=data.val, epochs=cfg.profile.train.epochs, checkpoint_dir=checkpoint_dir(cfg))
    summary = fit(stage, cfg, ctx.device, ctx.info, resume=ctx.resume, progress=ctx.progress)
    return tuner, data, summary, stage.history


@RECIPES.register("cascade", help="localizer -> Grad-CAM box priors -> tuning net -> Algorithm 1")
def train_cascade(ctx: TrainContext) -> Trained:
    """Stages 1-4 (module docstring); saves ``best.pt`` (the whole model) and ``reiteration.csv``."""
    cfg = ctx.cfg
    roi = locate(ctx)
    cut = lesion_cut(cfg)
    if cut is not None:
        ctx, priors = write_roi_priors(ctx, roi, cut)
    else:
        priors = write_priors(ctx, roi)
    tuner, data, tuner_summary, history = train_tuner(ctx, priors)
    algorithm1 = reiterate(ctx, tuner, data)
    tuner.model.load_state_dict(algorithm1.best_state)
    if roi.liver is not None:
        model: torch.nn.Module = LesionCascade(roi.liver.cpu(), tuner.model, cfg.profile.cascade, cut)
    else:
        model = CascadeNet(roi.localizer, tuner.model, cfg.profile.cascade)
    if ctx.info.is_main:
        with atomic_path(run_dir(cfg) / REITERATION) as tmp:
            pd.DataFrame(algorithm1.rows).to_csv(tmp, index=False)
        save_checkpoint(checkpoint_path(cfg), {"model": model.state_dict(), "config": to_dict(cfg)})
    stages = {**roi.stages, "tuner": tuner_summary, **algorithm1.stages}
    extra = {"roi_coverage": priors.coverage,
             "reiteration": {"best_iteration": algorithm1.best_iteration, "iterations_run": algorithm1.iterations_run}}
    if cut is not None:
        extra["lesion_roi"] = roi_record(cfg)
    return Trained(model=model, history=roi.history + history + algorithm1.history, stages=stages, extra=extra)
