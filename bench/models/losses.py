"""Segmentation losses (paper 3.6, Eqs. 4-6), shared by the cascade and every baseline.

All functions take **logits** ``(B, 1, H, W)`` (the model output convention, see
`bench.models`) and a binary target of the same shape (any dtype; values 0/1). Working on
logits rather than probabilities lets BCE use the numerically stable
``binary_cross_entropy_with_logits``; the Dice term reads ``sigmoid(logits)``.

The baselines are trained with the same `bce_dice_loss` (alpha = beta = 1) so that the
comparison with the proposed method measures the architecture, not a better loss.

Multi-level loss indexing (the paper is ambiguous; our reading)
--------------------------------------------------------------
The paper: "for each layer i the loss is l_i = alpha*l_bce + beta*l_dice with alpha = N - i and
beta = i, and the top layer loss is l = sum_{i=2}^N l_i while N is the number of layers".
We read the *layers* as the levels of the decoder path counted from the bottom:

* i = 1 is the bottleneck, which has no side output (hence the sum starting at 2);
* i = 2 .. N are the decoder levels with a side output, deepest (coarsest) first, and i = N is
  the top, full-resolution output ("the model outputs the pixel-wise probability map in the top
  layer"); so N = (number of side outputs) + 1, i.e. 5 for the 4-level tuning network;
* weights: deepest side output alpha = N-2, beta = 2 ... top output alpha = 0, beta = N (pure
  Dice); deep, coarse levels lean on BCE, the top on Dice.

This reading uses every side output (none is computed only to be dropped) and keeps the
full-resolution output in its own loss; reading i = 1 as the top would drop it. The weights
are not normalised (their sum is (N-1)*N); Adam's update is invariant to a constant loss
scale, so this only matters for SGD-type optimisers. With a single output (no deep
supervision) the formula would degenerate to ``2 * Dice``; we refuse that combination rather
than silently train a third loss (set ``cascade.multilevel_loss=false``).

Targets for coarser side outputs are the label area-averaged to the side output's resolution
and thresholded at 0.5 (a majority vote per cell, like nnU-Net's nearest-neighbour
downsampling of deep-supervision targets, but not dependent on which pixel is sampled).
``target_mode="max"`` (a cell is foreground if any pixel is) is available for small lesions.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.errors import ConfigError

TARGET_MODES = ("area", "max")


def dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """Soft Dice loss, Eq. 5: ``1 - (2*sum(p*y) + s) / (sum(p) + sum(y) + s)`` per sample, then mean.

    Per-sample (not per-batch) sums keep a slice with a small organ from being drowned by a
    slice with a large one; the smoothing term ``s`` makes an empty target with an empty
    prediction cost 0 instead of 0/0.
    """
    probs = torch.sigmoid(logits.float())
    target = target.to(probs.dtype)
    dims = tuple(range(1, probs.ndim))
    inter = (probs * target).sum(dims)
    total = probs.sum(dims) + target.sum(dims)
    return (1.0 - (2.0 * inter + smooth) / (total + smooth)).mean()


def bce_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy, Eq. 4, averaged over every pixel of the batch."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.to(torch.float32))


def bce_dice_loss(logits: Tensor, target: Tensor, alpha: float = 1.0, beta: float = 1.0) -> Tensor:
    """``alpha * BCE + beta * Dice`` (Eq. 6 for one output); the loss every model is trained with."""
    _check_shapes(logits, target)
    loss = logits.new_zeros((), dtype=torch.float32)
    if alpha:
        loss = loss + alpha * bce_loss(logits, target)
    if beta:
        loss = loss + beta * dice_loss(logits, target)
    return loss


def downsample_target(target: Tensor, size: tuple[int, int], mode: str = "area") -> Tensor:
    """Binary label ``(B, 1, H, W)`` at a side output's resolution ``size`` (float 0/1).

    ``area``: fraction of foreground per cell >= 0.5 (majority vote); ``max``: any foreground.
    """
    target = target.to(torch.float32)
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    if mode == "area":
        return (F.adaptive_avg_pool2d(target, size) >= 0.5).to(torch.float32)
    if mode == "max":
        return F.adaptive_max_pool2d(target, size)
    raise ConfigError(f"unknown target downsampling mode {mode!r} (known: {', '.join(TARGET_MODES)})")


def multilevel_weights(n_sides: int) -> list[tuple[float, float]]:
    """``(alpha, beta)`` per side output, deepest first: side k (0-based) is layer i = k + 2.

    ``N = n_sides + 1`` (layer 1 is the bottleneck, without a side output);
    ``alpha_i = N - i``, ``beta_i = i``.
    """
    if n_sides < 2:
        raise ConfigError(
            f"the multi-level loss needs at least 2 side outputs, got {n_sides} "
            "(cascade.multilevel_loss=true needs cascade.deep_supervision=true)"
        )
    n = n_sides + 1
    return [(float(n - i), float(i)) for i in range(2, n + 1)]


def multilevel_loss(side_logits: Sequence[Tensor], target: Tensor, target_mode: str = "area") -> Tensor:
    """Paper Eq. 6 summed over decoder levels: ``sum_{i=2}^N (N-i)*BCE_i + i*Dice_i``, N = len + 1.

    ``side_logits`` are ordered deepest first; the last one is the full-resolution output and
    must match ``target``'s size. Each side output is compared with the label downsampled to
    its own resolution (`downsample_target`). See the module docstring for the indexing.
    """
    if not side_logits:
        raise ConfigError("multilevel_loss got no side outputs")
    _check_shapes(side_logits[-1], target)
    weights = multilevel_weights(len(side_logits))
    total = side_logits[-1].new_zeros((), dtype=torch.float32)
    for logits, (alpha, beta) in zip(side_logits, weights):
        level_target = downsample_target(target, tuple(logits.shape[-2:]), target_mode)
        total = total + bce_dice_loss(logits, level_target, alpha=alpha, beta=beta)
    return total


class MultiLevelLoss(torch.nn.Module):
    """The tuning network's loss; ``enabled=False`` is Table 4's "without" column.

    Called with the tuning network's list of side outputs (deepest first) or a single tensor.
    Disabled: ``bce_dice_loss`` (alpha = beta = 1) on the final, full-resolution output only,
    the side outputs being ignored.
    """

    def __init__(self, enabled: bool = True, target_mode: str = "area") -> None:
        super().__init__()
        if target_mode not in TARGET_MODES:
            raise ConfigError(f"unknown target downsampling mode {target_mode!r} (known: {', '.join(TARGET_MODES)})")
        self.enabled = enabled
        self.target_mode = target_mode

    def forward(self, outputs: Tensor | Sequence[Tensor], target: Tensor) -> Tensor:
        sides = [outputs] if isinstance(outputs, Tensor) else list(outputs)
        if self.enabled:
            return multilevel_loss(sides, target, self.target_mode)
        return bce_dice_loss(sides[-1], target)

    def extra_repr(self) -> str:
        return f"enabled={self.enabled}, target_mode={self.target_mode!r}"


def _check_shapes(logits: Tensor, target: Tensor) -> None:
    if logits.shape != target.shape:
        raise ConfigError(f"loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")


__all__ = [
    "dice_loss",
    "bce_loss",
    "bce_dice_loss",
    "downsample_target",
    "multilevel_weights",
    "multilevel_loss",
    "MultiLevelLoss",
]
