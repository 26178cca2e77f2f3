"""Per-plane and fused evaluation of trained runs, at each case's original resolution.

A run's slices are predicted from the slice cache, put back on the case's original (Z, Y, X)
grid (`bench.datasets.planes.slices_to_volume`), thresholded at 0.5, post-processed as the run's
config says, and counted against the original reference label loaded through the data set
adapter — so the 3-D scores do not depend on the network's input size. Fused = mean of the three
planes' probability volumes (soft voting, Eq. 8), computed case by case so no probability volume
is ever stored. Every score goes through the one evaluation engine (`bench.metrics`).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from bench.config import PLANES, RunConfig, load_run_config
from bench.errors import ConfigError, DataError
from bench.paths import run_dir

SlicePredictor = Callable[[torch.Tensor], torch.Tensor]  # (B,1,S,S) preprocessed -> (B,1,S,S) probabilities


def read_record(folder: Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.exists():
        raise DataError(f"{path}: no run here (train it first)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: corrupt run record ({exc.msg})") from None


def stored_config(cfg: RunConfig, plane: str | None = None) -> RunConfig:
    """The config a run was trained with (its folder's config.json), with this call's device."""
    folder = run_dir(cfg, plane)
    stored = load_run_config(folder / "config.json")
    return replace(stored, device=cfg.device, results=cfg.results, cache=cfg.cache)


def load_predictor(cfg: RunConfig, device: torch.device) -> tuple[SlicePredictor, torch.nn.Module]:
    """Build the run's model from its saved config and best weights; returns a probability function."""
    from bench.engine.train import load_weights
    from bench.models import build_model

    model = build_model(cfg)
    load_weights(model, run_dir(cfg) / "checkpoints" / "best.pt", device)
    model = model.to(device).eval()

    def predict(images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(model(images))

    return predict, model


def predict_case_slices(predict: SlicePredictor, cache, case: str, plane: str, device: torch.device,
                        batch_size: int = 16) -> torch.Tensor:
    """Probabilities (N, S, S) for every cached slice of one case along ``plane``."""
    images = cache.images(case, plane)
    out = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            x = torch.from_numpy(np.asarray(images[start : start + batch_size], dtype=np.float32))[:, None].to(device)
            out.append(predict(x)[:, 0].float().cpu())
    return torch.cat(out) if out else torch.zeros((0,) + tuple(images.shape[1:]))


def case_probability_volume(predict: SlicePredictor, cache, case: str, plane: str, device: torch.device,
                            fit: str, batch_size: int = 16) -> np.ndarray:
    from bench.datasets.planes import slices_to_volume

    shape = tuple(cache.meta(case)["shape"])
    slices = predict_case_slices(predict, cache, case, plane, device, batch_size)
    return slices_to_volume(slices, plane, shape, fit, mode="linear").numpy()


def _postprocess(mask: np.ndarray, cfg: RunConfig) -> np.ndarray:
    from bench.engine.infer import postprocess

    mode, min_voxels = postprocess_mode(cfg)
    return postprocess(mask, mode, min_voxels)


def postprocess_mode(cfg: RunConfig) -> tuple[str, int]:
    """Baselines use the profile's ``postprocess``; the cascade its own (Fig. 13): the largest 3-D
    component for the liver, components of at least ``min_component_voxels`` for lesions."""
    from bench.models import get_model_spec

    if get_model_spec(cfg.model).kind == "cascade":
        cascade = cfg.profile.cascade
        mode = cascade.postprocess if cfg.task == "liver" else ("min_size" if cascade.postprocess != "none" else "none")
        return mode, cascade.min_component_voxels
    return cfg.profile.postprocess, cfg.profile.cascade.min_component_voxels


def score_case(prob_volume: np.ndarray, reference: np.ndarray, cfg: RunConfig, device: torch.device,
               spacing: tuple[float, float, float] | None = None, surface: bool = False) -> dict:
    """Counts and scores of one case (HD95/NSD in mm too when ``surface``; slower)."""
    from bench.metrics.counts import binary_counts
    from bench.metrics.scores import scores_from_counts

    mask = _postprocess(prob_volume > 0.5, cfg)
    counts = binary_counts(torch.from_numpy(mask).to(device), torch.from_numpy(reference).to(device))
    row = {"tp": counts.tp, "fp": counts.fp, "fn": counts.fn, "tn": counts.tn}
    row.update(scores_from_counts(counts.tp, counts.fp, counts.fn, counts.tn))
    if surface:
        from bench.metrics.surface import surface_metrics

        row.update(surface_metrics(mask, reference, spacing))
    return row


def _split_cases(splits: dict, names: Iterable[str]) -> list[tuple[str, str]]:
    pairs = []
    for split in names:
        if split not in splits:
            raise ConfigError(f"unknown split {split!r} (known: {', '.join(splits)})")
        pairs += [(split, case) for case in splits[split]]
    return pairs


def evaluate_plane(cfg: RunConfig, splits_to_score: Iterable[str] = ("val", "test"), progress: bool = True,
                   examples: bool = True, surface: bool = False) -> Path:
    """Score one trained plane run on the given splits; writes the results files into its folder."""
    from bench.atomic import write_json
    from bench.datasets import get_dataset
    from bench.datasets.cache import open_or_prepare
    from bench.engine.runinfo import resolve_device
    from bench.metrics.results import write_evaluation

    cfg = stored_config(cfg)
    device = resolve_device(cfg.device)
    folder = run_dir(cfg)
    record = read_record(folder)
    cache, splits = open_or_prepare(cfg)
    adapter = get_dataset(cfg.dataset, root=cfg.root or None, include_cysts=cfg.include_cysts)
    predict, model = load_predictor(cfg, device)
    fit = cfg.profile.preprocess.slice_fit
    rows, n_slices, t_infer = [], 0, 0.0
    example_rows = []
    for split, case in _track(_split_cases(splits, splits_to_score), progress, f"evaluate {cfg.run_tag} {cfg.plane}"):
        t0 = time.perf_counter()
        probs = case_probability_volume(predict, cache, case, cfg.plane, device, fit)
        t_infer += time.perf_counter() - t0
        n_slices += probs.shape[["axial", "coronal", "sagittal"].index(cfg.plane)]
        loaded = adapter.load(case)
        rows.append({"split": split, "case": case, "class": cfg.task,
                     **score_case(probs, loaded.mask(cfg.task), cfg, device, loaded.spacing, surface)})
        if examples and split == "test":
            example_rows.append(_example(model, cache, case, cfg, device))
    per_case = pd.DataFrame(rows)
    from bench.metrics.results import evaluation_policy

    write_evaluation(folder, per_case, with_splits=True, policy=evaluation_policy(surface=surface))
    if example_rows:
        _write_examples(folder / "examples.npz", example_rows)
    record["inference_s_per_slice"] = t_infer / max(n_slices, 1)
    record.setdefault("wall_time_s", {})["evaluate"] = t_infer
    record["status"] = "complete"
    write_json(folder / "config.json", record)
    return folder


def evaluate_fused(cfg: RunConfig, splits_to_score: Iterable[str] = ("val", "test"), progress: bool = True,
                   surface: bool = False) -> Path:
    """Soft voting of the three plane runs (Eq. 8); says which planes are missing."""
    from bench.atomic import write_json
    from bench.datasets import get_dataset
    from bench.datasets.cache import open_or_prepare
    from bench.engine.runinfo import resolve_device, run_record
    from bench.engine.infer import fuse_soft
    from bench.metrics.results import write_evaluation

    missing = [p for p in PLANES if not (run_dir(cfg, p) / "checkpoints" / "best.pt").exists()]
    if missing:
        cmds = "; ".join(f"bench train {cfg.model} --plane {p} --task {cfg.task} --dataset {cfg.dataset}" for p in missing)
        raise DataError(f"fused {cfg.run_tag} needs all three planes; missing: {', '.join(missing)} (run: {cmds})")
    plane_cfgs = {p: stored_config(cfg, p) for p in PLANES}
    device = resolve_device(cfg.device)
    predictors = {p: load_predictor(c, device)[0] for p, c in plane_cfgs.items()}
    base = plane_cfgs["axial"]
    caches = {p: open_or_prepare(c) for p, c in plane_cfgs.items()}
    splits = caches["axial"][1]
    adapter = get_dataset(base.dataset, root=base.root or None, include_cysts=base.include_cysts)
    rows = []
    t0 = time.perf_counter()
    for split, case in _track(_split_cases(splits, splits_to_score), progress, f"evaluate {cfg.run_tag} fused"):
        vols = [case_probability_volume(predictors[p], caches[p][0], case, p, device,
                                        plane_cfgs[p].profile.preprocess.slice_fit) for p in PLANES]
        probs = fuse_soft(vols)
        loaded = adapter.load(case)
        rows.append({"split": split, "case": case, "class": base.task,
                     **score_case(probs, loaded.mask(base.task), base, device, loaded.spacing, surface)})
    fused_cfg = replace(base, plane="fused")
    folder = run_dir(fused_cfg)
    from bench.metrics.results import evaluation_policy

    write_evaluation(folder, pd.DataFrame(rows), with_splits=True, policy=evaluation_policy(surface=surface))
    record = run_record(fused_cfg, device, sources=[str(run_dir(cfg, p)) for p in PLANES],
                        wall_time_s={"evaluate": time.perf_counter() - t0}, status="complete", fusion="soft voting (Eq. 8)")
    write_json(folder / "config.json", record)
    return folder


def _example(model: torch.nn.Module, cache, case: str, cfg: RunConfig, device: torch.device) -> dict:
    """The slice of a test case with the most foreground: image, truth, ROI (cascade) and prediction."""
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


def _track(items: list, enabled: bool, description: str):
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description=description, transient=True)
