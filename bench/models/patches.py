"""Non-overlapping patches: the tuner's multi-level patch input (3.4) and Algorithm 1's patch sets (3.8).

Two different uses of "patches" in the paper:

* **Inside the tuning network** (`level_patches`): "the original image is divided into patches
  according to the size of the feature map in each encoder layer", and the patches are stacked
  as channels, so at encoder level l (feature map H/2^l x W/2^l) a (B, C, H, W) image becomes
  (B, C * 4^l, H/2^l, W/2^l). The sentence admits two readings, both offered as
  ``cascade.patch_mode`` (`PATCH_MODES`) with the same channel count, hence the same number of
  parameters:

  - ``tile`` (`patch_grid`, the literal reading and today's default): the image is cut into
    4^l tiles the size of the feature map; channel ``c * 4^l + i * 2^l + j`` at feature position
    (u, v) holds image pixel ``(i * H/2^l + u, j * W/2^l + v)`` -- tile (i, j), offset (u, v).
    The 4^l values stacked at one feature position come from far-apart places of the image
    (up to H - H/2^l pixels away), so the 1x1 conv that follows mixes anatomy that has nothing
    to do with the feature it is concatenated to.
  - ``unshuffle`` (`space_to_depth`, ``torch.nn.functional.pixel_unshuffle``): the image is cut
    into 2^l x 2^l blocks, one per feature position; channel ``c * 4^l + i * 2^l + j`` at (u, v)
    holds pixel ``(u * 2^l + i, v * 2^l + j)``. Every value stacked at (u, v) lies inside the
    receptive field of the feature at (u, v): the spatially coherent reading, the only one that
    can carry the "fine edge detail" the paper attributes to the patches.

  Which is the default is decided from the patch-mode ablation; until then it stays ``tile``.
* **Algorithm 1** (`extract_patches`, `area_ratio`, `select_patches`): every slice (with its label
  and box prior) is cut into non-overlapping size x size patches, which become extra training
  samples; a patch is kept only if its annotated area ratio ``mu = A / C`` (Eq. 7: foreground
  pixels over patch pixels) reaches the threshold (0.3 in the paper: "patches with an area
  threshold lower than 0.3 are discarded"), which removes background-only patches.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bench.errors import ConfigError, DataError

PATCH_MODES = ("tile", "unshuffle")


def check_patch_mode(mode: str) -> None:
    """One-line `ConfigError` for a ``cascade.patch_mode`` outside `PATCH_MODES`."""
    if mode not in PATCH_MODES:
        raise ConfigError(f"unknown cascade.patch_mode {mode!r} (known: {', '.join(PATCH_MODES)})")


def patch_grid(x: Tensor, patch: int | tuple[int, int]) -> Tensor:
    """(B, C, H, W) -> (B, C * (H/ph) * (W/pw), ph, pw): non-overlapping patches stacked as channels.

    ``patch`` is the side of square patches or a ``(ph, pw)`` pair (non-square slices).
    """
    if x.ndim != 4:
        raise ConfigError(f"patch_grid: expected (B, C, H, W), got {tuple(x.shape)}")
    ph, pw = (patch, patch) if isinstance(patch, int) else (int(patch[0]), int(patch[1]))
    b, c, h, w = x.shape
    if ph < 1 or pw < 1 or h % ph or w % pw:
        raise ConfigError(f"patch_grid: {h}x{w} is not divisible into {ph}x{pw} patches")
    nh, nw = h // ph, w // pw
    x = x.reshape(b, c, nh, ph, nw, pw).permute(0, 1, 2, 4, 3, 5)
    return x.reshape(b, c * nh * nw, ph, pw)


def patch_grid_inverse(x: Tensor, channels: int, height: int, width: int) -> Tensor:
    """Undo `patch_grid`: (B, C * nh * nw, p, p) -> (B, C, H, W)."""
    b, _, ph, pw = x.shape
    nh, nw = height // ph, width // pw
    x = x.reshape(b, channels, nh, nw, ph, pw).permute(0, 1, 2, 4, 3, 5)
    return x.reshape(b, channels, height, width)


def space_to_depth(x: Tensor, factor: int) -> Tensor:
    """(B, C, H, W) -> (B, C * factor^2, H/factor, W/factor), channel ``c*f*f + i*f + j`` at (u, v)
    holding pixel ``(u*f + i, v*f + j)`` of channel c (``pixel_unshuffle``: spatially coherent)."""
    if x.ndim != 4:
        raise ConfigError(f"space_to_depth: expected (B, C, H, W), got {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if factor < 1 or h % factor or w % factor:
        raise ConfigError(f"space_to_depth: {h}x{w} is not divisible into {factor}x{factor} blocks")
    return F.pixel_unshuffle(x, factor)


def level_patches(image: Tensor, level: int, mode: str = "tile") -> Tensor:
    """The tuner's patch input at encoder level ``level``: (B, C, H, W) -> (B, C * 4^l, H/2^l, W/2^l).

    ``mode`` is ``cascade.patch_mode`` (module docstring): ``tile`` stacks the 4^l tiles of the
    feature map's size (`patch_grid`), ``unshuffle`` the 2^l x 2^l block under each feature
    position (`space_to_depth`). H and W must be divisible by 2^l (the tuner pads to 16).
    """
    check_patch_mode(mode)
    factor = 2**level
    h, w = image.shape[-2:]
    if level < 0 or h % factor or w % factor:
        raise ConfigError(f"level_patches: {h}x{w} is not divisible by 2**{level}")
    if mode == "unshuffle":
        return space_to_depth(image, factor)
    return patch_grid(image, (h // factor, w // factor))


def level_patch_sizes(input_size: int, levels: tuple[int, ...] | list[int]) -> list[int]:
    """Patch side per encoder level: ``input_size / 2**level`` (512 -> 256, 128, 64 for levels 1, 2, 3)."""
    sizes = []
    for level in levels:
        if level < 1 or input_size % 2**level:
            raise ConfigError(f"patch level {level} does not divide the input size {input_size}")
        sizes.append(input_size // 2**level)
    return sizes


class PatchSet(NamedTuple):
    """Patches of one size cut from a stack of slices; unpacks as ``images, labels, priors, positions``.

    ``positions[k] = (slice index, row, column)`` of patch k's top-left corner, so a patch (or
    a prediction made on it) can be put back where it came from.
    """

    images: Tensor  # (M, size, size)
    labels: Tensor  # (M, size, size)
    priors: Tensor | None  # (M, size, size) or None
    positions: Tensor  # (M, 3) int64

    @property
    def num_patches(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, index: Tensor) -> "PatchSet":
        return PatchSet(
            images=self.images[index],
            labels=self.labels[index],
            priors=None if self.priors is None else self.priors[index],
            positions=self.positions[index],
        )

    def select(self, mu: float) -> "PatchSet":
        """The patches whose annotated area ratio is at least ``mu`` (Algorithm 1, Eq. 7)."""
        return self.subset(select_patches(self.labels, mu))


def _as_tensor(x: Tensor | np.ndarray, what: str) -> Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 3:
        raise DataError(f"extract_patches: {what} must be (N, H, W), got {tuple(t.shape)}")
    return t


def _cut(x: Tensor, size: int) -> Tensor:
    n, h, w = x.shape
    return x.reshape(n, h // size, size, w // size, size).permute(0, 1, 3, 2, 4).reshape(-1, size, size)


def extract_patches(
    images: Tensor | np.ndarray, labels: Tensor | np.ndarray, priors: Tensor | np.ndarray | None, size: int
) -> PatchSet:
    """Every non-overlapping ``size`` x ``size`` patch of (N, H, W) slices, labels and priors.

    Order: slice by slice, then row-major over the patch grid (matches ``positions``).
    """
    img = _as_tensor(images, "images")
    lab = _as_tensor(labels, "labels")
    pri = None if priors is None else _as_tensor(priors, "priors")
    for name, other in (("labels", lab), ("priors", pri)):
        if other is not None and other.shape != img.shape:
            raise DataError(f"extract_patches: {name} {tuple(other.shape)} differ from images {tuple(img.shape)}")
    n, h, w = img.shape
    if size < 1 or h % size or w % size:
        raise ConfigError(f"extract_patches: {h}x{w} slices are not divisible into {size}x{size} patches")
    nh, nw = h // size, w // size
    k = torch.arange(n).repeat_interleave(nh * nw)
    i = torch.arange(nh).repeat_interleave(nw).repeat(n) * size
    j = torch.arange(nw).repeat(n * nh) * size
    return PatchSet(
        images=_cut(img, size),
        labels=_cut(lab, size),
        priors=None if pri is None else _cut(pri, size),
        positions=torch.stack([k, i, j], dim=1).to(torch.int64),
    )


def area_ratio(label_patches: Tensor) -> Tensor:
    """Eq. 7, ``mu = A / C``: the fraction of each patch's pixels that are annotated (label > 0)."""
    if label_patches.ndim < 2:
        raise DataError(f"area_ratio: expected (M, h, w) patches, got {tuple(label_patches.shape)}")
    fg = (label_patches > 0).flatten(1).to(torch.float32)
    return fg.mean(dim=1)


def select_patches(label_patches: Tensor, mu: float = 0.3) -> Tensor:
    """Indices (int64) of the patches kept by Algorithm 1: area ratio >= ``mu`` (lower is discarded)."""
    if not 0.0 <= mu <= 1.0:
        raise ConfigError(f"area threshold mu must lie in [0, 1], got {mu}")
    return torch.nonzero(area_ratio(label_patches) >= mu, as_tuple=False).flatten()


__all__ = [
    "PATCH_MODES",
    "check_patch_mode",
    "space_to_depth",
    "level_patches",
    "patch_grid",
    "patch_grid_inverse",
    "level_patch_sizes",
    "PatchSet",
    "extract_patches",
    "area_ratio",
    "select_patches",
]
