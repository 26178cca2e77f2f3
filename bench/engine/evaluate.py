"""``bench evaluate`` per plane and fused: faces of the one evaluation pipeline for trained runs.

A trained plane run or the three planes fused is a prediction source (`bench.engine.sources`:
slices predicted from the cache, put back on each case's original grid, thresholded, post-processed
by the run's one rule); the one scorer and writer (`bench.metrics.pipeline`) do the rest, as for
``bench score`` and ``bench report --external``. This module picks the source, loads what it needs
(the run's model from config.json and best.pt and its cache, or, straight after training, what the
runner hands over: `OpenRun`), shows progress and records timings and examples.

Scores are stored with and without the post-processing (``per_case.csv``/``metrics.csv`` with,
``per_case_raw.csv``/``metrics_raw.csv`` without), so a table can show either and say which.

Evaluating some splits keeps the rows of the others: ``bench evaluate --split val`` updates the
validation rows of per_case.csv and leaves the test rows as they were.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from bench.config import PLANES, RunConfig
from bench.engine.sources import FusedSource, PlaneSource, SlicePredictor, run_masks, run_variants
from bench.errors import ConfigError, DataError
from bench.metrics.pipeline import CasePrediction, score_prediction, score_source, write_scored
from bench.metrics.scorer import ScoreOptions
from bench.paths import EXAMPLES, checkpoint_path, run_dir

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


def score_case_variants(prob_volume: np.ndarray, reference: np.ndarray, cfg: RunConfig, device: torch.device,
                        spacing: tuple[float, float, float] | None = None, surface: bool = False) -> dict[str, dict]:
    """{"post": scores after the run's post-processing, "raw": scores of the thresholded probabilities}
    of one probability volume, through the pipeline's scorer (the golden layer's fixed volumes use it)."""
    item = CasePrediction("", "", reference, run_masks(prob_volume, cfg), spacing)
    scores = score_prediction(item, (cfg.task,), False, ScoreOptions.for_run(cfg, surface, device))
    return {variant: rows[cfg.task] for variant, rows in scores.items()}


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


def write_scores(folder: Path, rows: dict[str, list[dict]], scored: Iterable[str], surface: bool, cfg: RunConfig) -> None:
    """Write the post-processed and the raw results (each merged with the other splits' old rows)."""
    write_scored(folder, rows, run_variants(cfg), (cfg.task,), ScoreOptions.for_run(cfg, surface),
                 keep_other_splits=tuple(scored))


def _say_case(bar: Any, task: str) -> Any:
    """The pipeline's per-case callback of a run: one progress step and the case's Dice after and before post-processing."""
    def on_case(item: CasePrediction, scores: dict[str, dict[str, dict]]) -> None:
        bar.step()
        bar.say(f"{item.split} case {item.case}: Dice {scores['post'][task]['dice']:.4f} "
                f"(raw {scores['raw'][task]['dice']:.4f})")

    return on_case


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
    source = PlaneSource(cfg, predict, cache, _split_cases(splits, scored), adapter, device)
    example_rows = []
    with progress_bar(f"evaluate {source.description}", len(source.pairs), progress) as bar:
        say = _say_case(bar, cfg.task)

        def on_case(item: CasePrediction, scores: dict[str, dict[str, dict]]) -> None:
            say(item, scores)
            if examples and item.split == "test":
                example_rows.append(_example(model, cache, item.case, cfg, device))

        result = score_source(source, ScoreOptions.for_run(cfg, surface, device), on_case)
    write_scores(folder, result.rows, scored, surface, cfg)
    if example_rows:
        _write_examples(folder / EXAMPLES, example_rows)
    update_record(folder, inference_s_per_slice=source.seconds / max(source.n_slices, 1),
                  wall_time_s={"evaluate": source.seconds})
    return folder


def evaluate_fused(cfg: RunConfig, splits_to_score: Iterable[str] = EVALUATION_SPLITS, progress: bool = True,
                   surface: bool = False) -> Path:
    """Soft voting of the three plane runs (Eq. 8); says which planes are missing."""
    from bench.atomic import write_json
    from bench.datasets import get_dataset
    from bench.datasets.cache import open_or_prepare
    from bench.devices import resolve_device
    from bench.models.lesion_roi import data_profile
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
    t0 = time.perf_counter()
    source = FusedSource(plane_cfgs, predictors, caches, _split_cases(splits, scored), adapter, device,
                         f"{cfg.run_tag} {cfg.task} fused")
    with progress_bar(f"evaluate {source.description}", len(source.pairs), progress) as bar:
        result = score_source(source, ScoreOptions.for_run(base, surface, device), _say_case(bar, base.task))
    folder = run_dir(fused_cfg)
    write_scores(folder, result.rows, scored, surface, base)
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
