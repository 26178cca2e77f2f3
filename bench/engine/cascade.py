"""Training the proposed cascade ("ours"), paper 3.3-3.10 and Algorithm 1.

Liver task, one plane:
  1. the localization network learns the liver on full slices (BCE + Dice);
  2. Grad-CAM of its foreground output -> threshold (-> dense CRF) -> bounding boxes gives every
     slice's box prior (train priors from Grad-CAM as at inference, or from the ground truth
     with ``cascade.box_prior_train="ground_truth"``);
  3. the tuning network learns (slice, box prior) -> liver with the multi-level loss;
  4. Algorithm 1 (`bench.engine.reiterate`) fine-tunes it on patches with self-labels while
     validation Dice improves; validation and test scores after every iteration N = 0, 1, ...
     go to ``reiteration.csv`` (Table 5, Fig. 16). The best-validation iteration is kept.
Lesion task: the liver cascade of the same plane (trained first if missing) gives the ROI —
its predicted liver mask (``cascade.lesion_prior="liver_mask"``) or that mask's boxes
(``"liver_box"``) — and a tuning network learns lesions inside it (paper section 2: separate
liver and lesion steps).

Every prior used for validation and test comes from the networks, never from the ground truth.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from bench.config import RunConfig
from bench.engine.data import SliceDataset
from bench.engine.train import DistInfo, Precision, Stage, fit, validation_counts
from bench.paths import checkpoint_dir, run_dir


def _priors_folder(cfg: RunConfig) -> Path:
    return run_dir(cfg) / "priors"


def compute_priors(prior_fn: Callable[[torch.Tensor], torch.Tensor], cache, case_ids: list[str], plane: str,
                   folder: Path, device: torch.device, batch_size: int = 16, progress: bool = False) -> None:
    """Write the (N, S, S) uint8 box prior of every slice of ``case_ids`` to ``folder/<case>.npy``."""
    from bench.atomic import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    for case in case_ids:
        path = folder / f"{case}.npy"
        if path.exists():
            continue
        images = cache.images(case, plane)
        out = []
        for start in range(0, images.shape[0], batch_size):
            x = torch.from_numpy(np.asarray(images[start : start + batch_size], dtype=np.float32))[:, None].to(device)
            out.append(prior_fn(x)[:, 0].cpu().numpy().astype(np.uint8))
        array = np.concatenate(out) if out else np.zeros(images.shape, dtype=np.uint8)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, array)


def _prior_reader(folder: Path) -> Callable[[str, str], np.ndarray]:
    def read(case: str, plane: str) -> np.ndarray:
        return np.load(folder / f"{case}.npy", mmap_mode="r")

    return read


def roi_coverage(cache, case_ids: list[str], plane: str, task: str,
                 prior_of: Callable[[str, str], np.ndarray]) -> float:
    """Share of the reference foreground inside the box priors (1.0 = the ROI never cuts the organ).

    Recorded in config.json: an empty or misplaced ROI silently turns ConvBox into a constant,
    so this is the first number to look at when the cascade underperforms.
    """
    from bench.datasets.base import task_mask

    inside = total = 0
    for case in case_ids:
        truth = task_mask(np.asarray(cache.labels(case, plane)), task)
        inside += int((truth & (np.asarray(prior_of(case, plane)) > 0)).sum())
        total += int(truth.sum())
    return inside / total if total else float("nan")


def _truth_box_reader(cache, task: str, margin: float, min_area: float) -> Callable[[str, str], np.ndarray]:
    """BB-UNet style training priors: boxes of the ground truth (only when configured)."""
    from bench.datasets.base import task_mask
    from bench.models.roi import box_prior

    def read(case: str, plane: str) -> np.ndarray:
        mask = torch.from_numpy(task_mask(np.asarray(cache.labels(case, plane)), task))[:, None]
        return box_prior(mask, margin, min_area)[:, 0].numpy().astype(np.uint8)

    return read


def split_scores(model: torch.nn.Module, predict, dataset: SliceDataset, cfg: RunConfig, device: torch.device,
                 info: DistInfo) -> dict[str, float]:
    """Mean over cases of Accuracy, Dice, mIoU (3-D per case at the network input resolution)."""
    from bench.metrics.scores import scores_from_counts

    precision = Precision.for_device(device, cfg.profile.train)
    _, counts = validation_counts(model, predict, dataset, cfg.profile.train.batch_size, device, precision, info)
    c = np.asarray(counts, dtype=np.float64)
    scores = scores_from_counts(c[:, 0], c[:, 1], c[:, 2], c[:, 3])
    return {k: float(np.nanmean(np.asarray(scores[k], dtype=float))) if np.isfinite(np.asarray(scores[k], dtype=float)).any()
            else float("nan") for k in ("accuracy", "dice", "miou")}


def _liver_run(cfg: RunConfig) -> RunConfig:
    return replace(cfg, task="liver")


def train_cascade(cfg: RunConfig, cache, splits: dict, device: torch.device, info: DistInfo, resume: bool = False,
                  progress: bool = True) -> tuple[dict[str, Any], list[dict], torch.nn.Module]:
    from bench.models.cascade import CascadeNet, LesionCascade, build_localizer, build_tuner
    from bench.models.losses import MultiLevelLoss, bce_dice_loss
    from bench.engine.run import validation_cases

    cc = cfg.profile.cascade
    train_cfg = cfg.profile.train
    ckpt = checkpoint_dir(cfg)
    history: list[dict] = []
    summary: dict[str, Any] = {}
    val_ids = validation_cases(cfg, splits)
    all_ids = list(splits["train"]) + list(splits["val"]) + list(splits["test"])
    priors_dir = _priors_folder(cfg)
    t0 = time.perf_counter()

    # ---- stage 1: the region of interest
    if cfg.task == "liver":
        localizer = build_localizer(cfg)
        loc_stage = Stage(
            name="localizer", model=localizer,
            loss=lambda m, b: bce_dice_loss(m(b["image"]), b["target"]),
            predict=lambda m, b: torch.sigmoid(m(b["image"])),
            train_set=SliceDataset(cache, splits["train"], cfg.plane, cfg.task),
            val_set=SliceDataset(cache, val_ids, cfg.plane, cfg.task),
            epochs=cc.loc_epochs or train_cfg.epochs, checkpoint_dir=ckpt,
        )
        summary["localizer"] = fit(loc_stage, cfg, device, info, resume=resume, progress=progress)
        history += loc_stage.history
        roi_model = CascadeNet(localizer, build_tuner(cfg), cc).to(device).eval()

        def prior_fn(x: torch.Tensor) -> torch.Tensor:
            return roi_model.roi(x)[0]
    else:
        liver_cascade = _load_liver_cascade(cfg, device, progress)
        localizer = None
        prior_model = LesionCascade(liver_cascade, build_tuner(cfg), cc).to(device).eval()

        def prior_fn(x: torch.Tensor) -> torch.Tensor:
            return prior_model.lesion_prior(x)

    if info.is_main:
        compute_priors(prior_fn, cache, all_ids, cfg.plane, priors_dir, device)
    if info.enabled:
        torch.distributed.barrier()
    infer_priors = _prior_reader(priors_dir)
    summary["roi_coverage"] = roi_coverage(cache, list(splits["val"]), cfg.plane, cfg.task, infer_priors)
    if summary["roi_coverage"] < 0.5:
        import warnings

        warnings.warn(f"{cfg.run_tag} {cfg.plane}: the box priors cover only {summary['roi_coverage']:.0%} of the "
                      f"validation {cfg.task}; check cascade.gradcam_layer / gradcam_threshold", stacklevel=2)
    train_priors = infer_priors
    if cc.box_prior_train == "ground_truth" and cfg.task == "liver":
        train_priors = _truth_box_reader(cache, cfg.task, cc.box_margin, cc.box_min_area)

    # ---- stage 2: the tuning network on full slices (N = 0)
    tuner = build_tuner(cfg)
    loss_fn = MultiLevelLoss(enabled=cc.multilevel_loss)

    def tuner_loss(m, b):
        return loss_fn(m(b["image"], b["prior"]), b["target"])

    def tuner_predict(m, b):
        return torch.sigmoid(_final(m, b["image"], b["prior"]))

    train_slices = SliceDataset(cache, splits["train"], cfg.plane, cfg.task, extra={"prior": train_priors})
    val_set = SliceDataset(cache, val_ids, cfg.plane, cfg.task, extra={"prior": infer_priors})
    test_set = SliceDataset(cache, splits["test"], cfg.plane, cfg.task, extra={"prior": infer_priors})
    tune_stage = Stage(name="tuner", model=tuner, loss=tuner_loss, predict=tuner_predict, train_set=train_slices,
                       val_set=val_set, epochs=train_cfg.epochs, checkpoint_dir=ckpt)
    summary["tuner"] = fit(tune_stage, cfg, device, info, resume=resume, progress=progress)
    history += tune_stage.history

    # ---- stage 3: Algorithm 1
    reiter_rows, best_state, best_iter = _reiterate(cfg, cache, splits, tuner, tuner_loss, tuner_predict, train_slices,
                                                    val_set, test_set, train_priors, device, info, resume, progress, history)
    tuner.load_state_dict(best_state)
    summary["reiteration"] = {"best_iteration": best_iter, "iterations_run": int(max(r["iteration"] for r in reiter_rows))}
    summary["seconds"] = time.perf_counter() - t0

    if cfg.task == "liver":
        model = CascadeNet(localizer, tuner, cc)
    else:
        model = LesionCascade(liver_cascade.cpu(), tuner, cc)
    if info.is_main:
        from bench.atomic import atomic_path

        pd.DataFrame(reiter_rows).to_csv(run_dir(cfg) / "reiteration.csv", index=False)
        with atomic_path(ckpt / "best.pt") as tmp:
            torch.save({"model": model.state_dict(), "config": cfg.__class__.__name__}, tmp)
    return summary, history, model


def _final(model: torch.nn.Module, image: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Full-resolution logits of the tuning network in eval mode."""
    from bench.engine.train import unwrap

    return unwrap(model).predict(image, prior)


def _reiterate(cfg, cache, splits, tuner, tuner_loss, tuner_predict, train_slices, val_set, test_set, train_priors,
               device, info, resume, progress, history):
    from bench.engine.reiterate import Combined, PatchSet, cut_patches, patch_sizes, refresh_self_labels

    cc = cfg.profile.cascade
    rows = []

    def record(iteration: int, n_train: int) -> float:
        scores = {}
        for split, dataset in (("val", val_set), ("test", test_set)):
            s = split_scores(tuner, tuner_predict, dataset, cfg, device, info)
            rows.append({"iteration": iteration, "split": split, **s, "n_train_samples": n_train})
            scores[split] = s
        return scores["val"]["dice"]

    best_val = record(0, len(train_slices))
    best_state = {k: v.detach().clone() for k, v in tuner.state_dict().items()}
    best_iter = 0
    sizes = patch_sizes(cfg.profile.input_size, cc.reiter_patch_levels, divisor=16)
    if cc.max_reiterations <= 0 or not sizes:
        return rows, best_state, best_iter
    folder = run_dir(cfg) / "reiteration"
    if info.is_main:
        cut_patches(cache, list(splits["train"]), cfg.plane, cfg.task, cfg.profile.input_size, sizes, cc.area_threshold,
                    train_priors, folder)
    if info.enabled:
        torch.distributed.barrier()
    epochs = cc.reiter_epochs or max(1, cfg.profile.train.epochs // 4)
    tuner.eval()
    for n in range(1, cc.max_reiterations + 1):
        if info.is_main:
            refresh_self_labels(lambda x, p: torch.sigmoid(_final(tuner, x, p)), folder, cfg.profile.input_size,
                                cc.self_label_threshold, cc.self_label_source, device)
        if info.enabled:
            torch.distributed.barrier()
        patches = PatchSet(folder, cfg.profile.input_size)
        combined = Combined(train_slices, patches)
        stage = Stage(name=f"reiter{n}", model=tuner, loss=tuner_loss, predict=tuner_predict, train_set=combined,
                      val_set=val_set, epochs=epochs, checkpoint_dir=checkpoint_dir(cfg))
        fit(stage, cfg, device, info, resume=resume, progress=progress)
        history += stage.history
        val_dice = record(n, len(combined))
        if val_dice > best_val:
            best_val, best_iter = val_dice, n
            best_state = {k: v.detach().clone() for k, v in tuner.state_dict().items()}
        elif cc.reiter_stop == "plateau":
            break
    return rows, best_state, best_iter


def _load_liver_cascade(cfg: RunConfig, device: torch.device, progress: bool):
    """The same-plane liver cascade (trained now if this results folder has none)."""
    from bench.engine.run import existing_status, train_run
    from bench.engine.train import load_weights
    from bench.models.cascade import CascadeNet, build_localizer, build_tuner

    liver_cfg = _liver_run(cfg)
    if existing_status(liver_cfg) != "complete":
        train_run(liver_cfg, progress=progress)
    model = CascadeNet(build_localizer(liver_cfg), build_tuner(liver_cfg), liver_cfg.profile.cascade)
    load_weights(model, checkpoint_dir(liver_cfg) / "best.pt", device)
    return model.to(device).eval()
