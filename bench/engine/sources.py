"""Prediction sources of trained runs: one plane, or the three planes fused by soft voting.

Each is a `bench.metrics.pipeline.PredictionSource`: it predicts a case's slices from the slice
cache (`bench.engine.infer.predict_slices`, the one prediction loop), puts them back on the case's
original (Z, Y, X) grid (`bench.datasets.planes.slices_to_volume`), and yields the case's two
variants against the original reference label loaded through the data set adapter, so the 3-D
scores do not depend on the network's input size:

* ``post``: the probabilities thresholded at 0.5 and post-processed by the run's one rule
  (``profile.postprocess``, the same for every model) - per_case.csv, metrics.csv, summary.json;
* ``raw``: the thresholded probabilities as predicted - per_case_raw.csv, ...

Fused = mean of the three planes' probability volumes (soft voting, Eq. 8), computed case by
case so no probability volume is ever stored. Scoring and writing are the pipeline's.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from bench.config import PLANE_AXIS, PLANES, RunConfig
from bench.datasets.planes import slices_to_volume
from bench.engine.infer import fuse_soft, postprocess, predict_slices
from bench.engine.precision import Precision
from bench.metrics.pipeline import CasePrediction, Variant
from bench.models.lesion_roi import data_profile
from bench.paths import RAW_SUFFIX

SlicePredictor = Callable[[torch.Tensor], torch.Tensor]  # (B,1,S,S) preprocessed -> (B,1,S,S) probabilities
THRESHOLD = 0.5  # probabilities above it are foreground (the policy's "threshold")


def postprocess_rule(cfg: RunConfig) -> tuple[str, int]:
    """(mode, minimum component voxels) of the run's post-processing for its task (same for every model)."""
    rule = cfg.profile.postprocess
    return rule.mode(cfg.task), rule.min_voxels


def run_variants(cfg: RunConfig) -> tuple[Variant, Variant]:
    """A run's two prediction sets, each with its post-processing rule in the written policy."""
    mode, min_voxels = postprocess_rule(cfg)
    post = f"{mode} (min {min_voxels} voxels) for {cfg.task}, the same rule for every model"
    return (Variant("post", "", {"postprocess": post}),
            Variant("raw", RAW_SUFFIX, {"postprocess": "none: the thresholded probabilities as predicted"}))


def run_masks(prob_volume: np.ndarray, cfg: RunConfig) -> dict[str, np.ndarray]:
    """{"post": thresholded + the run's post-processing, "raw": thresholded} (one array when nothing is removed)."""
    raw = prob_volume > THRESHOLD
    mode, min_voxels = postprocess_rule(cfg)
    return {"post": postprocess(raw, mode, min_voxels), "raw": raw}


def case_probability_volume(predict: SlicePredictor, cache: Any, case: str, plane: str, device: torch.device,
                            cfg: RunConfig) -> np.ndarray:
    """Probabilities of one cached case along ``plane``, on the case's original (Z, Y, X) grid."""
    slices = predict_slices(predict, cache.images(case, plane), cfg.profile.train.batch_size, device,
                            precision=Precision.for_device(device, cfg.profile.train))
    meta = cache.meta(case)
    pre = data_profile(cfg).preprocess  # the grid the model predicts on (finer for a liver-ROI lesion run)
    return slices_to_volume(slices, plane, tuple(meta["shape"]), pre.slice_fit, mode="linear",
                            spacing=tuple(meta["spacing"]), target_mm=pre.spacing_mm).numpy()


class RunSource:
    """The cases of a run's splits: probabilities (`probabilities`, per subclass) -> the two variants.

    ``cfg``: the config whose task and post-processing rule apply; ``pairs``: (split, case) in order.
    """

    label_maps = False
    with_splits = True

    def __init__(self, description: str, cfg: RunConfig, pairs: Sequence[tuple[str, str]], adapter: Any) -> None:
        self.description = description
        self.cfg = cfg
        self.pairs = list(pairs)
        self.adapter = adapter
        self.classes = (cfg.task,)
        self.variants = run_variants(cfg)

    def probabilities(self, case: str) -> np.ndarray:
        raise NotImplementedError

    def cases(self) -> Iterator[CasePrediction]:
        for split, case in self.pairs:
            probs = self.probabilities(case)
            loaded = self.adapter.load(case)
            yield CasePrediction(split, case, loaded.mask(self.cfg.task), run_masks(probs, self.cfg), loaded.spacing)


class PlaneSource(RunSource):
    """One trained plane run (its model as a probability function, its open slice cache).

    Counts the slices it predicted and the seconds it took (``n_slices``, ``seconds``; config.json).
    """

    def __init__(self, cfg: RunConfig, predict: SlicePredictor, cache: Any, pairs: Sequence[tuple[str, str]],
                 adapter: Any, device: torch.device) -> None:
        super().__init__(f"{cfg.run_tag} {cfg.task} {cfg.plane}", cfg, pairs, adapter)
        self.predict, self.cache, self.device = predict, cache, device
        self.n_slices, self.seconds = 0, 0.0

    def probabilities(self, case: str) -> np.ndarray:
        t0 = time.perf_counter()
        probs = case_probability_volume(self.predict, self.cache, case, self.cfg.plane, self.device, self.cfg)
        self.seconds += time.perf_counter() - t0
        self.n_slices += probs.shape[PLANE_AXIS[self.cfg.plane]]
        return probs


class FusedSource(RunSource):
    """The three plane runs of one model, soft-voted per case (Eq. 8); scored under the axial run's config."""

    def __init__(self, plane_cfgs: Mapping[str, RunConfig], predictors: Mapping[str, SlicePredictor],
                 caches: Mapping[str, Any], pairs: Sequence[tuple[str, str]], adapter: Any,
                 device: torch.device, description: str) -> None:
        super().__init__(description, plane_cfgs["axial"], pairs, adapter)
        self.plane_cfgs, self.predictors, self.caches, self.device = plane_cfgs, predictors, caches, device

    def probabilities(self, case: str) -> np.ndarray:
        return fuse_soft([case_probability_volume(self.predictors[p], self.caches[p], case, p, self.device,
                                                  self.plane_cfgs[p]) for p in PLANES])
