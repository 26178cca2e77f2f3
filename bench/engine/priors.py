"""Per-slice priors that a trained network gives every cached slice, computed once and read back.

Two recipes train on such priors: the cascade (`bench.engine.cascade`: its Grad-CAM box priors,
or, for lesions, the liver cascade's mask) and a baseline with ``model.liver_prior``
(`bench.engine.slices`: the same liver cascade's mask or boxes). Both go through the functions
here, so a baseline's liver prior is computed exactly as the lesion cascade's: one
`bench.engine.infer.predict_slices` pass per case, stored as ``(N, S, S)`` uint8 in
``<run>/priors/<case>.npy``, written by the main process only, read as memory maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.atomic import atomic_path
from bench.config import RunConfig
from bench.engine.checkpoint import load_weights
from bench.engine.infer import predict_slices
from bench.engine.records import stored_config
from bench.models.cascade import build_liver_cascade
from bench.paths import checkpoint_path

PriorReader = Callable[[str, str], np.ndarray]  # (case, plane) -> (N, S, S) uint8 prior
PriorFn = Callable[[torch.Tensor], torch.Tensor]  # (B, 1, S, S) slices -> (B, 1, S, S) prior


def compute_priors(prior_fn: PriorFn, cache, case_ids: list[str], plane: str, folder: Path, device: torch.device,
                   batch_size: int = 16) -> None:
    """Write the (N, S, S) uint8 prior of every slice of ``case_ids`` to ``folder/<case>.npy``."""
    folder.mkdir(parents=True, exist_ok=True)
    for case in case_ids:
        path = folder / f"{case}.npy"
        if path.exists():
            continue
        prior = predict_slices(prior_fn, cache.images(case, plane), batch_size, device).numpy().astype(np.uint8)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, prior)


def saved_prior_reader(folder: Path) -> PriorReader:
    """Read the priors `compute_priors` wrote (memory-mapped: a batch reads only its slices)."""

    def read(case: str, plane: str) -> np.ndarray:
        return np.load(folder / f"{case}.npy", mmap_mode="r")

    return read


def write_run_priors(ctx, prior_fn: PriorFn, folder: Path) -> PriorReader:
    """Priors of every slice of a run's train, val and test cases (``ctx``: a `TrainContext`).

    The main process computes them; under ``torchrun`` the other ranks wait, then all read them.
    """
    cases = list(ctx.splits["train"]) + list(ctx.splits["val"]) + list(ctx.splits["test"])
    if ctx.info.is_main:
        compute_priors(prior_fn, ctx.cache, cases, ctx.cfg.plane, folder, ctx.device,
                       ctx.cfg.profile.train.batch_size)
    ctx.info.barrier()
    return saved_prior_reader(folder)


def load_liver_cascade(liver_cfg: RunConfig, device: torch.device) -> torch.nn.Module:
    """The trained liver cascade of a complete liver run ``liver_cfg`` (built from its stored config), in eval mode.

    Callers name the run: the lesion cascade its own tag's liver run
    (`bench.models.cascade.liver_cascade_of`), a baseline with a liver prior the "ours" run of its
    seed and fold (`bench.models.liver_prior.liver_prior_run`).
    """
    stored = stored_config(liver_cfg)
    model = build_liver_cascade(stored)
    load_weights(model, checkpoint_path(stored), device)
    return model.to(device).eval()
