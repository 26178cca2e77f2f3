"""From a Grad-CAM heat-map to the tuning network's box prior (paper 3.3-3.4, Figs. 6 and 8).

heat-map (B, 1, H, W) in [0, 1]
  -> `roi_from_heatmap`: threshold (optionally refined by a dense CRF on the CT slice) -> ROI mask
  -> `box_prior`: filled bounding boxes of the ROI's connected components -> prior (B, 1, H, W)

The paper calls the tuner's second input a "Box prior filter" / "bounding filter" (after
BB-UNet, its ref. [21]): a binary image of boxes, not the ROI itself, so the tuner gets the
location and extent of the organ but must find its boundary on its own.

Choices the paper leaves open
-----------------------------
* Components are 8-connected, per 2-D slice; components smaller than ``min_area * H * W`` pixels
  are dropped (speckle in the thresholded heat-map would otherwise each get a box).
* Each box grows by ``round(margin * H)`` rows and ``round(margin * W)`` columns on every side
  (clipped to the slice), so an organ edge the coarse heat-map cut off stays inside the box.
* Overlapping boxes are merged by union (the prior is binary).
* **Empty ROI -> all-zero prior.** For the tuner this means "no organ located": its ConvBox gates
  become a constant learned from the slices without an organ, so it falls back to segmenting
  from the image alone and is expected to predict (almost) nothing. Training with Grad-CAM
  priors (``box_prior_train="gradcam"``) shows it such empty priors; this is why that is the
  default.
* For the CRF the heat is turned into a probability with `heat_to_prob`, a piecewise-linear map
  that sends the threshold to 0.5, so the CRF without pairwise terms reproduces the plain
  threshold and only the pairwise (image) terms change the ROI.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from bench.config import LESION_PRIORS
from bench.errors import ConfigError
from bench.models.crf import crf_refine

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _check_4d(x: Tensor, what: str) -> None:
    if x.ndim != 4 or x.shape[1] != 1:
        raise ConfigError(f"{what}: expected a (B, 1, H, W) tensor, got {tuple(x.shape)}")


def heat_to_prob(heat: Tensor, threshold: float) -> Tensor:
    """Piecewise-linear map [0, 1] -> [0, 1] with ``threshold -> 0.5`` (0 -> 0, 1 -> 1)."""
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"Grad-CAM threshold must lie in (0, 1), got {threshold}")
    heat = heat.clamp(0.0, 1.0)
    low = 0.5 * heat / threshold
    high = 0.5 + 0.5 * (heat - threshold) / (1.0 - threshold)
    return torch.where(heat < threshold, low, high)


def roi_from_heatmap(
    heat: Tensor, threshold: float, crf: bool = False, images: Tensor | None = None
) -> Tensor:
    """ROI mask ``(B, 1, H, W)`` bool: ``heat >= threshold``, or its dense-CRF refinement on ``images``."""
    _check_4d(heat, "roi_from_heatmap")
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"Grad-CAM threshold must lie in (0, 1), got {threshold}")
    if not crf:
        return heat >= threshold
    if images is None or tuple(images.shape) != tuple(heat.shape):
        got = None if images is None else tuple(images.shape)
        raise ConfigError(f"roi_from_heatmap(crf=True) needs the slices, shaped like the heat-map {tuple(heat.shape)}; got {got}")
    prob = heat_to_prob(heat.detach().float(), threshold).cpu().numpy()
    imgs = images.detach().float().cpu().numpy()
    out = np.stack([crf_refine(prob[b, 0], imgs[b, 0]) for b in range(prob.shape[0])])[:, None]
    return torch.from_numpy(out).to(heat.device)


def slice_boxes(mask: np.ndarray, margin: float, min_area: float) -> list[tuple[int, int, int, int]]:
    """Grown, clipped boxes ``(r0, r1, c0, c1)`` (half-open) of one 2-D mask's large enough components."""
    h, w = mask.shape
    labels, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    if count == 0:
        return []
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    pad_r, pad_c = int(round(margin * h)), int(round(margin * w))
    boxes = []
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None or areas[index] < min_area * h * w:
            continue
        rows, cols = found
        boxes.append(
            (max(0, rows.start - pad_r), min(h, rows.stop + pad_r), max(0, cols.start - pad_c), min(w, cols.stop + pad_c))
        )
    return boxes


def box_prior(mask: Tensor, margin: float, min_area: float) -> Tensor:
    """Binary box prior ``(B, 1, H, W)`` float32 (on ``mask``'s device) from an ROI mask.

    One filled box per 2-D connected component of at least ``min_area * H * W`` pixels, grown by
    ``margin`` of the slice side on each edge and clipped; an empty ROI gives an all-zero prior.
    """
    _check_4d(mask, "box_prior")
    if margin < 0:
        raise ConfigError(f"box margin must be >= 0, got {margin}")
    if not 0.0 <= min_area < 1.0:
        raise ConfigError(f"box min_area must lie in [0, 1), got {min_area}")
    arr = mask.detach().cpu().numpy().astype(bool)
    out = np.zeros(arr.shape, dtype=np.float32)
    for b in range(arr.shape[0]):
        for r0, r1, c0, c1 in slice_boxes(arr[b, 0], margin, min_area):
            out[b, 0, r0:r1, c0:c1] = 1.0
    return torch.from_numpy(out).to(mask.device)


def prior_from_liver(liver_logits: Tensor, mode: str, margin: float, min_area: float) -> Tensor:
    """Lesion prior from liver logits: the mask (logit > 0) or its boxes; float32 (B,1,H,W).

    Here, beside `box_prior`, so that the cascade and the baselines' liver prior
    (`bench.models.liver_prior`) share it without the liver prior importing the cascade."""
    liver = liver_logits > 0
    if mode == "liver_mask":
        return liver.to(torch.float32)
    if mode == "liver_box":
        return box_prior(liver, margin, min_area)
    raise ConfigError(f"unknown cascade.lesion_prior {mode!r} (known: {', '.join(LESION_PRIORS)})")


__all__ = ["heat_to_prob", "roi_from_heatmap", "slice_boxes", "box_prior", "prior_from_liver"]

