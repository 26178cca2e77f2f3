"""Per-plane and fused evaluation of trained runs, at each case's original resolution.

A run's slices are predicted from the slice cache (`bench.engine.infer.predict_slices`, the one
prediction loop), put back on the case's original (Z, Y, X) grid
(`bench.datasets.planes.slices_to_volume`), thresholded at 0.5, post-processed by the run's one
rule (``profile.postprocess``, the same for every model), and counted against the original
reference label loaded through the data set adapter — so the 3-D scores do not depend on the
network's input size. Fused = mean of the three planes' probability volumes (soft voting,
Eq. 8), computed case by case so no probability volume is ever stored. Every score goes
through the one evaluation engine (`bench.metrics`).

Scores are stored with and without the post-processing (``per_case.csv``/``metrics.csv`` with,
``per_case_raw.csv``/``metrics_raw.csv`` without), so a table can show either and say which.

Evaluating some splits keeps the rows of the others: ``bench evaluate --split val`` updates the
validation rows of per_case.csv and leaves the test rows as they were.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import torch

from bench.config import PLANE_AXIS, PLANES, RunConfig
from bench.errors import ConfigError, DataError
from bench.metrics.results import write_evaluation
from bench.metrics.scorer import ScoreOptions, score_masks
from bench.paths import EXAMPLES, PER_CASE, RAW_SUFFIX, checkpoint_path, run_dir

SlicePredictor = Callable[[torch.Tensor], torch.Tensor]  # (B,1,S,S) preprocessed -> (B,1,S,S) probabilities
EVALUATION_SPLITS = ("val", "test")


@dataclass
class OpenRun:
    """A run its runner has just trained, handed to evaluation as it is in memory: the model with its
    selected weights (what best.pt holds), the open slice cache and the patient split, so nothing is
    rebuilt, re-read or re-opened (`bench.engine.runner`)."""

    model: torch.nn.Module
    cache: Any  # bench.datasets.cache.SliceCache
    splits: dict[str, list[str]]


def load_predictor(cfg: RunConfig, device: torch.device) -> tuple[SlicePredictor, torch.nn.Module]:
    """Build the run's model from its saved config and best weights; returns a probability function."""
    from bench.engine.checkpoint import load_weights
    from bench.models import build_model

    model = build_model(cfg)
    load_weights(model, checkpoint_path(cfg), device)
    return predictor(model, device)


def predictor(model: torch.nn.Module, device: torch.device) -> tuple[SlicePredictor, torch.nn.Module]:
    """(probability function, model) of a model on ``device`` in eval mode and the default memory
    layout (training may leave it channels_last on CUDA; a model loaded from best.pt has neither)."""
    model = model.to(device=device, memory_format=torch.contiguous_format).eval()

    def predict(images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(model(images))

    return predict, model


def case_probability_volume(predict: SlicePredictor, cache, case: str, plane: str, device: torch.device,
                            cfg: RunConfig) -> np.ndarray:
    """Probabilities of one cached case along ``plane``, on the case's original (Z, Y, X) grid."""
    from bench.datasets.planes import slices_to_volume
    from bench.engine.infer import predict_slices
    from bench.engine.precision import Precision

    slices = predict_slices(predict, cache.images(case, plane), cfg.profile.train.batch_size, device,
                            precision=Precision.for_device(device, cfg.profile.train))
    from bench.models.lesion_roi import data_profile

    meta = cache.meta(case)
    pre = data_profile(cfg).preprocess  # the grid the model predicts on (finer for a liver-ROI lesion run)
    return slices_to_volume(slices, plane, tuple(meta["shape"]), pre.slice_fit, mode="linear",
                            spacing=tuple(meta["spacing"]), target_mm=pre.spacing_mm).numpy()


def postprocess_rule(cfg: RunConfig) -> tuple[str, int]:
    """(mode, minimum component voxels) of the run's post-processing for its task (same for every model)."""
    rule = cfg.profile.postprocess
    return rule.mode(cfg.task), rule.min_voxels


def score_mask(mask: np.ndarray, reference: np.ndarray, device: torch.device,
               spacing: tuple[float, float, float] | None = None, surface: bool = False,
               cfg: RunConfig | None = None) -> dict:
    """One binary mask against its reference through the one scorer (`bench.metrics.scorer`): counts,
    scores, surface metrics in mm when ``surface``, lesion detection when the run's task is lesion."""
    options = ScoreOptions.for_run(cfg, surface, device) if cfg is not None else ScoreOptions(surface=surface, device=device)
    task = cfg.task if cfg is not None else "liver"
    return score_masks(task, mask, reference, spacing, options)


def score_case_variants(prob_volume: np.ndarray, reference: np.ndarray, cfg: RunConfig, device: torch.device,
                        spacing: tuple[float, float, float] | None = None, surface: bool = False) -> dict[str, dict]:
    """{"post": scores after the run's post-processing, "raw": scores of the thresholded probabilities}."""
    from bench.engine.infer import postprocess

    raw = prob_volume > 0.5
    mode, min_voxels = postprocess_rule(cfg)
    post = postprocess(raw, mode, min_voxels)
    out = {"post": score_mask(post, reference, device, spacing, surface, cfg)}
    out["raw"] = out["post"] if mode == "none" else score_mask(raw, reference, device, spacing, surface, cfg)
    return out


def score_case(prob_volume: np.ndarray, reference: np.ndarray, cfg: RunConfig, device: torch.device,
               spacing: tuple[float, float, float] | None = None, surface: bool = False) -> dict:
    """Counts and scores of one case after the run's post-processing (the number tables show by default)."""
    return score_case_variants(prob_volume, reference, cfg, device, spacing, surface)["post"]


def _split_cases(splits: dict, names: Iterable[str]) -> list[tuple[str, str]]:
    pairs = []
    for split in names:
        if split not in EVALUATION_SPLITS:
            raise ConfigError(f"unknown split {split!r} (known: {', '.join(EVALUATION_SPLITS)})")
        pairs += [(split, case) for case in splits[split]]
    return pairs


def _merge_splits(folder: Path, rows: pd.DataFrame, scored: Iterable[str], suffix: str = "") -> pd.DataFrame:
    """New rows for the scored splits plus the existing rows of every other split."""
    from bench.metrics.results import read_per_case

    path = folder / PER_CASE.replace(".csv", f"{suffix}.csv")
    if not path.is_file():
        return rows
    old = read_per_case(path)
    kept = old[~old["split"].isin(list(scored))]
    if kept.empty:
        return rows
    return pd.concat([kept, rows], ignore_index=True)


def write_scores(folder: Path, rows: dict[str, list[dict]], scored: Iterable[str], surface: bool, cfg: RunConfig) -> None:
    """Write the post-processed and the raw results (each merged with the other splits' old rows)."""
    mode, min_voxels = postprocess_rule(cfg)
    for variant, suffix in (("post", ""), ("raw", RAW_SUFFIX)):
        frame = _merge_splits(folder, pd.DataFrame(rows[variant]), scored, suffix)
        frame = frame.sort_values("split", key=lambda s: s.map({"val": 0, "test": 1}), kind="stable")
        policy = ScoreOptions.for_run(cfg, surface).policy([cfg.task])
        policy["postprocess"] = (f"{mode} (min {min_voxels} voxels) for {cfg.task}, the same rule for every model"
                                 if variant == "post" else "none: the thresholded probabilities as predicted")
        write_evaluation(folder, frame, with_splits=True, policy=policy, suffix=suffix)


def evaluate_plane(cfg: RunConfig, splits_to_score: Iterable[str] = EVALUATION_SPLITS, progress: bool = True,
                   examples: bool = True, surface: bool = False, trained: OpenRun | None = None) -> Path:
    """Score one trained plane run on the given splits; writes the results files into its folder.

    ``trained``: the runner's model, cache and split just after training (``cfg`` is then the config
    it trained with); None: the model is rebuilt from the run's config.json and best.pt, the cache opened.
    """
    from bench.datasets import get_dataset
    from bench.datasets.cache import open_or_prepare
    from bench.devices import resolve_device
    from bench.models.lesion_roi import data_profile
    from bench.engine.records import stored_config, update_record
    from bench.progress import progress as progress_bar

    scored = tuple(splits_to_score)
    cfg = cfg if trained is not None else stored_config(cfg)
    device = resolve_device(cfg.device)
    folder = run_dir(cfg)
    if trained is None:
        cache, splits = open_or_prepare(cfg, progress=progress, profile=data_profile(cfg))
    else:
        cache, splits = trained.cache, trained.splits
    adapter = get_dataset(cfg.dataset, root=cfg.root or None, include_cysts=cfg.include_cysts)
    predict, model = load_predictor(cfg, device) if trained is None else predictor(trained.model, device)
    rows: dict[str, list[dict]] = {"post": [], "raw": []}
    example_rows, n_slices, t_infer = [], 0, 0.0
    pairs = _split_cases(splits, scored)
    with progress_bar(f"evaluate {cfg.run_tag} {cfg.task} {cfg.plane}", len(pairs), progress) as bar:
        for split, case in pairs:
            t0 = time.perf_counter()
            probs = case_probability_volume(predict, cache, case, cfg.plane, device, cfg)
            t_infer += time.perf_counter() - t0
            n_slices += probs.shape[PLANE_AXIS[cfg.plane]]
            loaded = adapter.load(case)
            scores = score_case_variants(probs, loaded.mask(cfg.task), cfg, device, loaded.spacing, surface)
            for variant, row in scores.items():
                rows[variant].append({"split": split, "case": case, "class": cfg.task, **row})
            bar.step()
            bar.say(f"{split} case {case}: Dice {scores['post']['dice']:.4f} (raw {scores['raw']['dice']:.4f})")
            if examples and split == "test":
                example_rows.append(_example(model, cache, case, cfg, device))
    write_scores(folder, rows, scored, surface, cfg)
    if example_rows:
        _write_examples(folder / EXAMPLES, example_rows)
    update_record(folder, inference_s_per_slice=t_infer / max(n_slices, 1), wall_time_s={"evaluate": t_infer})
    return folder


def evaluate_fused(cfg: RunConfig, splits_to_score: Iterable[str] = EVALUATION_SPLITS, progress: bool = True,
                   surface: bool = False) -> Path:
    """Soft voting of the three plane runs (Eq. 8); says which planes are missing."""
    from bench.atomic import write_json
    from bench.datasets import get_dataset
    from bench.datasets.cache import open_or_prepare
    from bench.devices import resolve_device
    from bench.models.lesion_roi import data_profile
    from bench.engine.infer import fuse_soft
    from bench.engine.records import run_fingerprint, run_record, stored_config
    from bench.paths import RECORD
    from bench.progress import progress as progress_bar

    scored = tuple(splits_to_score)
    missing = [p for p in PLANES if not checkpoint_path(replace(cfg, plane=p)).exists()]
    if missing:
        cmds = "; ".join(f"bench train {cfg.model} --plane {p} --task {cfg.task} --dataset {cfg.dataset}" for p in missing)
        raise DataError(f"fused {cfg.run_tag} needs all three planes; missing: {', '.join(missing)} (run: {cmds})")
    plane_cfgs = {p: stored_config(cfg, p) for p in PLANES}
    device = resolve_device(cfg.device)
    predictors = {p: load_predictor(c, device)[0] for p, c in plane_cfgs.items()}
    base = plane_cfgs["axial"]
    caches = {p: open_or_prepare(c, progress=progress, profile=data_profile(c))[0] for p, c in plane_cfgs.items()}
    splits = open_or_prepare(base, progress=False)[1]
    adapter = get_dataset(base.dataset, root=base.root or None, include_cysts=base.include_cysts)
    fused_cfg = replace(base, plane="fused")
    rows: dict[str, list[dict]] = {"post": [], "raw": []}
    t0 = time.perf_counter()
    pairs = _split_cases(splits, scored)
    with progress_bar(f"evaluate {cfg.run_tag} {cfg.task} fused", len(pairs), progress) as bar:
        for split, case in pairs:
            vols = [case_probability_volume(predictors[p], caches[p], case, p, device, plane_cfgs[p]) for p in PLANES]
            loaded = adapter.load(case)
            scores = score_case_variants(fuse_soft(vols), loaded.mask(base.task), base, device, loaded.spacing, surface)
            for variant, row in scores.items():
                rows[variant].append({"split": split, "case": case, "class": base.task, **row})
            bar.step()
            bar.say(f"{split} case {case}: Dice {scores['post']['dice']:.4f} (raw {scores['raw']['dice']:.4f})")
    folder = run_dir(fused_cfg)
    write_scores(folder, rows, scored, surface, base)
    record = run_record(fused_cfg, device, fingerprint=run_fingerprint(fused_cfg), status="complete",
                        sources=[str(run_dir(cfg, p)) for p in PLANES], fusion="soft voting (Eq. 8)",
                        wall_time_s={"evaluate": time.perf_counter() - t0})
    write_json(folder / RECORD, record)
    return folder


def _example(model: torch.nn.Module, cache, case: str, cfg: RunConfig, device: torch.device) -> dict:
    """The slice of a test case with the most foreground: image, truth, ROI (when the model has one), prediction."""
    from bench.datasets.base import task_mask

    labels = cache.labels(case, cfg.plane)
    fg = task_mask(np.asarray(labels), cfg.task).reshape(labels.shape[0], -1).sum(1)
    index = int(np.argmax(fg))
    x = torch.from_numpy(np.asarray(cache.images(case, cfg.plane)[index], dtype=np.float32))[None, None].to(device)
    roi = np.zeros(x.shape[-2:], dtype=np.float32)
    if hasattr(model, "roi"):
        roi = model.roi(x)[0][0, 0].float().cpu().numpy()
    with torch.no_grad():
        pred = (torch.sigmoid(model(x)) > 0.5)[0, 0].cpu().numpy()
    return {"case": case, "image": x[0, 0].cpu().numpy(), "ground_truth": task_mask(np.asarray(labels[index]), cfg.task),
            "roi": roi, "prediction": pred}


def _write_examples(path: Path, rows: list[dict]) -> None:
    from bench.atomic import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, case=np.array([r["case"] for r in rows]),
                                **{k: np.stack([r[k] for r in rows]) for k in ("image", "ground_truth", "roi", "prediction")})
