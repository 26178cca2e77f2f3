"""Algorithm 1 (paper 3.8): reiterative patch-wise training on a self-labelled data set.

Step 1  choose the area threshold mu (Eq. 7, ``cascade.area_threshold``, default 0.3);
Step 2  for each level l in ``cascade.reiter_patch_levels`` cut every training slice into
        non-overlapping patches of side input_size / 2**l (256/128/64 at 512) and keep those whose
        annotated area A over patch area C reaches mu;
Step 3  (done before this module runs) the tuning network is trained on the full slices X, Y;
Step 4  predict the kept patches with the current network: S = p > ``self_label_threshold``;
Step 5  X = X u P and Y = Y u S;
Step 6  fine-tune on the enlarged set for ``reiter_epochs`` epochs;
Step 7  repeat from step 4 while validation Dice improves (``reiter_stop="plateau"``), at most
        ``max_reiterations`` times; ``reiter_stop="none"`` runs every iteration (Table 5).

Choices where the paper is silent (also in README "Reproduction notes"):
* The patch set P is cut once; each iteration *refreshes* its self-labels S with the newest
  network instead of appending duplicates, so the set grows from X to X u P at N = 1 and the
  labels improve with the network (appending stale copies would re-weight old mistakes).
* Patches are fed at the network input size (bilinear for the CT, nearest for labels and
  priors): batches stay homogeneous and the network sees each patch magnified, which is the
  fine-detail purpose 3.8 gives for patches. A patch keeps the crop of its slice's box prior.
* mu uses the ground-truth area (the annotation, "A is the annotated area"), S the prediction.
* The stop rule reads validation only; test metrics are recorded per iteration but never used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from bench.datasets.base import task_mask


def patch_sizes(input_size: int, levels: tuple[int, ...], divisor: int) -> list[int]:
    """Patch sides for the requested levels that the tuning network can take (multiples of ``divisor``)."""
    sizes = []
    for level in levels:
        size = input_size // (2**level)
        if size >= divisor and size % divisor == 0 and input_size % size == 0:
            sizes.append(size)
    return sizes


class PatchSet(Dataset):
    """Kept training patches P with their current self-labels S, stored as memmaps in the run folder.

    Items are resized to ``input_size`` and returned like `SliceDataset` items
    (image, target, prior), so the training loop does not know it sees patches.
    """

    def __init__(self, folder: Path, input_size: int) -> None:
        self.folder = Path(folder)
        self.input_size = input_size
        self.image = np.load(self.folder / "patch_image.npy", mmap_mode="r")
        self.prior = np.load(self.folder / "patch_prior.npy", mmap_mode="r")
        self.truth = np.load(self.folder / "patch_truth.npy", mmap_mode="r")
        labels = self.folder / "patch_selflabel.npy"
        self.selflabel = np.load(labels, mmap_mode="r") if labels.exists() else None
        self.foreground = np.ones(len(self.image), dtype=bool)

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def _resize(self, array: np.ndarray, mode: str) -> torch.Tensor:
        t = torch.from_numpy(np.asarray(array, dtype=np.float32))[None, None]
        if t.shape[-1] != self.input_size:
            if mode == "linear":
                t = F.interpolate(t, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
            else:
                t = F.interpolate(t, size=(self.input_size,) * 2, mode="nearest-exact")
        return t[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        labels = self.selflabel if self.selflabel is not None else self.truth
        return {
            "image": self._resize(self.image[i], "linear"),
            "target": self._resize(labels[i], "nearest"),
            "prior": self._resize(self.prior[i], "nearest"),
        }

    def __getstate__(self) -> dict:
        return dict(self.__dict__)


class Combined(Dataset):
    """X u P: full slices followed by patches, one index space for the sampler."""

    def __init__(self, slices: Dataset, patches: Dataset | None) -> None:
        self.parts = [slices] + ([patches] if patches is not None and len(patches) else [])
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.foreground = np.concatenate([np.asarray(p.foreground) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int):
        part = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.parts[part][int(i - self.offsets[part])]


def cut_patches(cache, case_ids: list[str], plane: str, task: str, input_size: int, sizes: list[int], mu: float,
                prior_of: Callable[[str, str], np.ndarray], folder: Path) -> int:
    """Steps 1-2: write every kept patch (image, prior, ground truth) to memmaps; returns how many.

    Uses `bench.models.patches.select_patches` for the A / C >= mu rule (Eq. 7).
    """
    from bench.atomic import atomic_path
    from bench.models.patches import extract_patches, select_patches

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kept = {"image": [], "prior": [], "truth": []}
    for case in case_ids:
        images = np.asarray(cache.images(case, plane), dtype=np.float32)
        truth = task_mask(np.asarray(cache.labels(case, plane)), task).astype(np.uint8)
        prior = np.array(prior_of(case, plane), dtype=np.uint8)  # a writable copy of the memmap
        for size in sizes:
            p_img, p_truth, p_prior, _ = extract_patches(torch.from_numpy(images), torch.from_numpy(truth),
                                                         torch.from_numpy(prior), size)
            keep = select_patches(p_truth, mu)
            if len(keep):
                kept["image"].append(p_img[keep].numpy().astype(np.float16))
                kept["truth"].append(p_truth[keep].numpy().astype(np.uint8))
                kept["prior"].append(p_prior[keep].numpy().astype(np.uint8))
    n = 0
    for name, parts in kept.items():
        if parts:
            # patches of different sizes are stored zoomed to the largest so one array holds them all
            side = max(p.shape[-1] for p in parts)
            parts = [_zoom(p, side, "linear" if name == "image" else "nearest") for p in parts]
            array = np.concatenate(parts)
        else:
            array = np.zeros((0, input_size, input_size), dtype=np.float16 if name == "image" else np.uint8)
        n = len(array)
        with atomic_path(folder / f"patch_{name}.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, array)
    return n


def _zoom(stack: np.ndarray, side: int, mode: str) -> np.ndarray:
    if stack.shape[-1] == side:
        return stack
    t = torch.from_numpy(stack.astype(np.float32))[:, None]
    if mode == "linear":
        t = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)
    else:
        t = F.interpolate(t, size=(side, side), mode="nearest-exact")
    return t[:, 0].numpy().astype(stack.dtype)


@torch.no_grad()
def refresh_self_labels(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], folder: Path, input_size: int,
                        threshold: float, source: str, device: torch.device, batch_size: int = 16) -> None:
    """Step 4: S = predicted patch masks (or the ground truth when ``source='ground_truth'``)."""
    from bench.atomic import atomic_path

    patches = PatchSet(folder, input_size)
    if source == "ground_truth":
        labels = np.asarray(patches.truth, dtype=np.uint8)
    else:
        side = patches.image.shape[-1] if len(patches) else input_size
        out = []
        for start in range(0, len(patches), batch_size):
            items = [patches[i] for i in range(start, min(start + batch_size, len(patches)))]
            x = torch.stack([it["image"] for it in items]).to(device)
            prior = torch.stack([it["prior"] for it in items]).to(device)
            probs = predict(x, prior).float()
            if probs.shape[-1] != side:
                probs = F.interpolate(probs, size=(side, side), mode="bilinear", align_corners=False)
            out.append((probs[:, 0] > threshold).cpu().numpy().astype(np.uint8))
        labels = np.concatenate(out) if out else np.zeros((0, side, side), dtype=np.uint8)
    with atomic_path(folder / "patch_selflabel.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, labels)
