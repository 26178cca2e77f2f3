"""Training data of a lesion run on the liver ROI: every slice's ROI crop, cut once and read back.

Why a cache of crops: the lesion network of a ROI run (`bench.models.lesion_roi`) trains on the
same crops it sees at inference, cut from the frozen liver cascade's prediction. Cutting them
on every read would run the liver cascade (Grad-CAM included) in the training loop; here it runs
once per slice, as the box priors do (`bench.engine.priors`). `RoiCache` has the read side of
`bench.datasets.cache.SliceCache` (``images``, ``labels``, ``slice_table``, ``input_size``), so
the unchanged training loop, `SliceDataset` and Algorithm 1's patches work on ROI crops.

Layout, ``<run>/roi/<case>/``, written by the main process, each case renamed into place whole::

    <plane>_image.npy   (N', S, S) float16 crops of the fine slices that have a window
    <plane>_label.npy   (N', S, S) uint8 labels cut alike (nearest neighbour)
    <plane>_prior.npy   (N', S, S) uint8 the lesion network's prior cut alike
    <plane>_window.npy  (N', 8) int64: source slice index and the `Window`
    <plane>.json        per-crop liver/lesion pixels; the reference foreground on the fine
                        grid and the part inside the boxes (``roi_coverage``)

Slices without a predicted liver have no window and no crop (the lesion prediction there is
empty at inference, so training on them would teach a case the model never meets).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from bench.atomic import TMP_MARK, replace_dir
from bench.datasets.base import task_mask
from bench.errors import DataError
from bench.models.lesion_roi import LesionRoi, crop_roi
from bench.paths import run_dir

BATCH = 16


class RoiCache:
    """Read side of the ROI crops of one run (the `SliceCache` methods training uses)."""

    def __init__(self, folder: Path, input_size: int) -> None:
        self.dir = Path(folder)
        self.input_size = int(input_size)

    def _load(self, case: str, plane: str, kind: str) -> np.ndarray:
        return np.load(self.dir / case / f"{plane}_{kind}.npy", mmap_mode="r")

    def images(self, case: str, plane: str) -> np.ndarray:
        return self._load(case, plane, "image")

    def labels(self, case: str, plane: str) -> np.ndarray:
        return self._load(case, plane, "label")

    def priors(self, case: str, plane: str) -> np.ndarray:
        return self._load(case, plane, "prior")

    def windows(self, case: str, plane: str) -> np.ndarray:
        return self._load(case, plane, "window")

    def facts(self, case: str, plane: str) -> dict[str, Any]:
        return json.loads((self.dir / case / f"{plane}.json").read_text())

    def slice_table(self, case_ids: Sequence[str], plane: str) -> pd.DataFrame:
        """One row per crop: ``case, index, liver_px, lesion_px`` (index into the case's crops)."""
        frames = []
        for case in case_ids:
            f = self.facts(case, plane)
            frames.append(pd.DataFrame({"case": [case] * int(f["n"]), "index": np.arange(int(f["n"]), dtype=np.int64),
                                        "liver_px": np.asarray(f["liver_px"], dtype=np.int64),
                                        "lesion_px": np.asarray(f["lesion_px"], dtype=np.int64)}))
        if not frames or not sum(len(f) for f in frames):
            return pd.DataFrame({"case": pd.Series(dtype=str), "index": pd.Series(dtype=np.int64),
                                 "liver_px": pd.Series(dtype=np.int64), "lesion_px": pd.Series(dtype=np.int64)})
        return pd.concat(frames, ignore_index=True)

    def coverage(self, case_ids: Sequence[str], plane: str) -> float:
        """Share of the reference foreground (fine grid) inside the ROI boxes; NaN without any."""
        inside = total = 0
        for case in case_ids:
            f = self.facts(case, plane)
            inside += int(f["task_px_inside"])
            total += int(f["task_px"])
        return inside / total if total else float("nan")


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array)


def write_case(source, case: str, plane: str, task: str, cut: LesionRoi, liver: Callable, prior: Callable,
               folder: Path, device: torch.device) -> None:
    """Cut every slice of one case (``source``: the fine `SliceCache`) into ``folder/<case>/``."""
    final = folder / case
    if (final / f"{plane}.json").is_file():
        return
    images, labels = source.images(case, plane), source.labels(case, plane)
    s = cut.geo.size
    out_img, out_lab, out_pri, out_win = [], [], [], []
    task_px = inside = 0
    for start in range(0, images.shape[0], BATCH):
        x = torch.from_numpy(np.asarray(images[start:start + BATCH], dtype=np.float32))[:, None].to(device)
        rois = cut.inputs(x, liver, prior)
        lab = np.asarray(labels[start:start + BATCH])
        truth = task_mask(lab, task)
        task_px += int(truth.sum())
        for j, i in enumerate(rois.keep):
            w = rois.windows[i]
            inside += int(truth[i, w.r0:w.r1, w.c0:w.c1].sum())
            out_img.append(rois.images[j, 0].cpu().numpy().astype(np.float16))
            out_pri.append((rois.priors[j, 0] > 0).cpu().numpy().astype(np.uint8))
            out_lab.append(crop_roi(torch.from_numpy(np.array(lab[i])), w, s, "nearest").numpy().astype(np.uint8))
            out_win.append([start + i, *w])
    n = len(out_img)

    def stack(rows: list, dtype) -> np.ndarray:
        return np.stack(rows).astype(dtype) if rows else np.zeros((0, s, s), dtype=dtype)

    lab_arr = stack(out_lab, np.uint8)
    facts = {"n": n, "liver_px": [int(v) for v in task_mask(lab_arr, "liver").sum(axis=(1, 2))],
             "lesion_px": [int(v) for v in task_mask(lab_arr, "lesion").sum(axis=(1, 2))],
             "task": task, "task_px": task_px, "task_px_inside": inside, "slices": int(images.shape[0])}
    tmp = folder / f"{case}{TMP_MARK}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if final.is_dir():  # other planes of this case already cut: keep them
        shutil.copytree(final, tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    _save(tmp / f"{plane}_image.npy", stack(out_img, np.float16))
    _save(tmp / f"{plane}_label.npy", lab_arr)
    _save(tmp / f"{plane}_prior.npy", stack(out_pri, np.uint8))
    _save(tmp / f"{plane}_window.npy", np.asarray(out_win, dtype=np.int64).reshape(n, 8))
    (tmp / f"{plane}.json").write_text(json.dumps(facts))
    replace_dir(tmp, final)


def roi_context(ctx, cut: LesionRoi, liver: torch.nn.Module, prior: Callable) -> tuple[Any, RoiCache, float]:
    """Cut the ROI crops of a run's train, val and test cases; the context that trains on them.

    Returns ``(ctx with cache = the RoiCache, the RoiCache, ROI coverage of the validation
    reference)``. ``ctx``: a `bench.engine.recipe.TrainContext` whose cache is the fine slice
    cache (`bench.models.lesion_roi.data_profile`). The main process cuts; other ranks wait.
    """
    cfg = ctx.cfg
    folder = run_dir(cfg) / "roi"
    cases = list(ctx.splits["train"]) + list(ctx.splits["val"]) + list(ctx.splits["test"])
    if ctx.info.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        liver.eval()
        for case in cases:
            write_case(ctx.cache, case, cfg.plane, cfg.task, cut, liver, prior, folder, ctx.device)
    ctx.info.barrier()
    roi_cache = RoiCache(folder, cut.geo.size)
    if roi_cache.slice_table(list(ctx.splits["train"]), cfg.plane).empty:
        raise DataError(f"{folder}: the liver cascade predicts no liver on any training slice, so the lesion "
                        f"ROI (cascade.lesion_roi=box) has nothing to train on; retrain the liver run or set "
                        f"cascade.lesion_roi=none")
    return replace(ctx, cache=roi_cache), roi_cache, roi_cache.coverage(list(ctx.splits["val"]), cfg.plane)


__all__ = ["RoiCache", "write_case", "roi_context"]
