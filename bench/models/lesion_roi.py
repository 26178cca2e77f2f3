"""The lesion stage's region of interest: the liver box, at a finer physical scale than the liver stage.

Why: the paper's cascade finds the liver, then segments lesions "in the liver's ROI" (paper 1 and
3.3: the first network "reduce[s] the scope", the second tunes inside it). Run on the liver
stage's own grid (``cpu``: 128 px at 3 mm), a 54 mm tumour is 18 px and the lesion network sees
the whole abdomen. Here the lesion network sees only the liver box, on a grid ``zoom`` times
finer than the liver stage's, cut from a slice cache prepared at that finer grid (`roi_profile`),
so the extra pixels are real CT detail, not an upsampled 3 mm image.

One slice, ``cascade.lesion_roi="box"`` (`LesionRoi`)::

  fine slice x (Sf x Sf, Sf = round(S * zoom))    the run's data grid (`data_profile`)
    -> coarse view  (S x S, area average)          what the liver cascade was trained on
    -> liver cascade -> predicted liver mask (logit > 0)
    -> `roi_window`: bounding box of the mask's components of at least ``box_min_area`` of the
       slice (as ``liver_box`` priors), grown by ``lesion_roi_margin`` liver-grid pixels,
       in fine pixels; a square window of side W = max(S, box height, box width) centred on it
    -> `crop_roi`: the window cut from the fine slice (beyond the slice: the slice's minimum,
       the value padding uses everywhere), resized to S x S when W > S
    -> lesion network (ours: the lesion tuning net with the liver prior cropped the same way;
       a baseline with ``model.liver_prior=crop``: the network alone)
    -> `paste_roi`: back to the window (W x W), into the fine slice; outside the box: background.

Choices the paper leaves open (also in README "Reproduction notes"):

* **Per slice, not per case.** Each slice's box is its own liver cross-section, so a small
  section at the dome or the tip is not diluted in a case-wide box, and inference stays a
  per-slice function like every other model's (`bench.engine.infer.predict_slices`).
* **Scale**: ``cpu`` fits slices by spacing (3 mm); the ROI grid is ``lesion_roi_spacing_mm``
  (1 mm: zoom 3, an integer, so fine and liver grids nest; a 54 mm tumour is 54 px). Chosen on
  an inner split of training patient 3D-IRCADb 1 (upper slab + patient 7 train, lower slab with
  five 9-27 mm tumours validates; `benchmarks/lesion_roi_scale.py`, two seeds): 1 mm found all
  five tumours in both seeds with 3 false-positive lesions; 1.5 mm 0/5 and 5/5 (3 and 12 FP);
  3 mm (no zoom) 1/5 twice. Lesion Dice was about 0.04 at every scale, so the scale is chosen
  by lesion-wise recall. A liver box wider than 128 mm is resized to the input (below). Profiles that fit by pad/resize
  have no single mm per pixel: the ROI grid is ``lesion_roi_zoom`` times the liver grid
  (demo/smoke: 2, the phantom's native 128 px). The paper profile keeps the old behaviour
  (``lesion_roi="none"``): its 512 px already are the scan's native pixels, and a finer grid
  would only upsample.
* **A box larger than the input**: the window grows to the box (W > S) and is resized to the
  input, a coarser spacing for that slice only (at most 1 * 384/128 = 3 mm at ``cpu``, never
  coarser than the liver stage). Chosen over tiles: one network pass per slice, the whole
  liver section (its boundary is the context that tells a lesion from the next organ) in view,
  training and inference cut alike. The exact inverse holds for W == S (a pure crop and paste)
  and for integer ratios W / S on block-constant labels (tests/test_lesion_roi.py).
* **No predicted liver on a slice**: no window; the lesion prediction there is empty
  (background). Training skips such slices (`bench.engine.roi_cache`), as inference cannot
  see them either; the lesion voxels they hold are the liver cascade's misses, counted in the
  run's ``roi_coverage``.
* **Margin** in liver-grid pixels (3 = 9 mm at ``cpu``): the liver cascade's boundary errors
  are a few of its pixels, and a lesion at the liver's edge must stay inside the box.

One function computes the ROI for everyone (`LesionRoi.inputs`): ours (`bench.models.cascade.
LesionCascade`) and a baseline with ``model.liver_prior=crop`` (`bench.models.liver_prior`) cut
the identical window from the identical liver prior, so Table 8 separates "the cascade's lesion
network" from "the liver prior".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bench.config import Profile, RunConfig
from bench.errors import ConfigError
from bench.models.roi import slice_boxes
from bench.models.spec import liver_prior_model

BACKGROUND_LOGIT = -1.0e4  # sigmoid -> exactly 0 in float32: "background outside the box"


class Window(NamedTuple):
    """One slice's ROI on the fine grid: the grown liver box (half-open) and the square window around it."""

    r0: int
    r1: int
    c0: int
    c1: int
    top: int
    left: int
    side: int


@dataclass(frozen=True)
class RoiGeometry:
    """Sizes of the ROI pipeline: liver-grid side ``size``, fine-grid side ``fine``, margin, minimum area."""

    size: int
    fine: int
    margin: int
    min_area: float

    @property
    def zoom(self) -> float:
        return self.fine / self.size


def roi_zoom(profile: Profile) -> float:
    """Fine grid / liver grid: spacing ratio at ``slice_fit=spacing``, else ``cascade.lesion_roi_zoom``."""
    cc, pre = profile.cascade, profile.preprocess
    if pre.slice_fit == "spacing":
        return pre.spacing_mm / cc.lesion_roi_spacing_mm
    return cc.lesion_roi_zoom


def uses_roi(cfg: RunConfig) -> bool:
    """Whether ``cfg``'s lesion model works on the liver ROI: the model whose liver run gives the prior
    (capability ``provides_liver_prior``: ours, `bench.models.liver_prior_model`), or a baseline with the crop prior."""
    if cfg.task != "lesion" or cfg.profile.cascade.lesion_roi == "none":
        return False
    return cfg.model == liver_prior_model() or cfg.profile.model.liver_prior == "crop"


def roi_geometry(profile: Profile) -> RoiGeometry:
    """The ROI sizes of a profile (a zoom below 1 is refused: the ROI must not be coarser than the liver)."""
    zoom = roi_zoom(profile)
    if zoom < 1.0:
        raise ConfigError(f"the lesion ROI grid is coarser than the liver grid (zoom {zoom:g}); set "
                          "cascade.lesion_roi_spacing_mm <= preprocess.spacing_mm or cascade.lesion_roi_zoom >= 1")
    cc = profile.cascade
    return RoiGeometry(profile.input_size, int(round(profile.input_size * zoom)), cc.lesion_roi_margin,
                       cc.box_min_area)


def roi_profile(profile: Profile) -> Profile:
    """The profile of the fine slice cache: the same preprocessing at ``zoom`` times the liver grid."""
    geo = roi_geometry(profile)
    pre = profile.preprocess
    if pre.slice_fit == "spacing":
        pre = replace(pre, spacing_mm=profile.cascade.lesion_roi_spacing_mm)
    return replace(profile, input_size=geo.fine, preprocess=pre)


def lesion_cut(cfg: RunConfig) -> "LesionRoi | None":
    """The ROI cut of ``cfg``'s lesion model, or None where it sees whole slices (`uses_roi`)."""
    return LesionRoi(roi_geometry(cfg.profile)) if uses_roi(cfg) else None


def data_profile(cfg: RunConfig) -> Profile:
    """The profile whose slice cache and slice geometry a run's model reads (fine for ROI runs)."""
    return roi_profile(cfg.profile) if uses_roi(cfg) else cfg.profile


def roi_record(cfg: RunConfig) -> dict:
    """What config.json records of a ROI run's cut (the settings are in the profile; this is what they meant)."""
    geo = roi_geometry(cfg.profile)
    fine = roi_profile(cfg.profile)
    spacing = fine.preprocess.spacing_mm if fine.preprocess.slice_fit == "spacing" else None
    return {"grid": f"{geo.fine} px" + (f" at {spacing:g} mm" if spacing else f" ({geo.zoom:g}x the liver grid)"),
            "zoom": geo.zoom, "input": geo.size, "margin_liver_px": geo.margin, "min_area": geo.min_area,
            "per": "slice", "larger_box": "window grows to the box, resized to the input (coarser for that slice)",
            "no_liver": "no window: empty lesion prediction; not trained on"}


# ---------------------------------------------------------------- geometry


def roi_window(liver: np.ndarray, geo: RoiGeometry) -> Window | None:
    """The window of one (S, S) liver mask on the fine grid, or None where no liver was predicted."""
    boxes = slice_boxes(np.asarray(liver, dtype=bool), 0.0, geo.min_area)
    if not boxes:
        return None
    s, m = geo.size, geo.margin
    r0 = max(0, min(b[0] for b in boxes) - m)
    r1 = min(s, max(b[1] for b in boxes) + m)
    c0 = max(0, min(b[2] for b in boxes) - m)
    c1 = min(s, max(b[3] for b in boxes) + m)
    z = geo.zoom
    fr0, fc0 = int(np.floor(r0 * z)), int(np.floor(c0 * z))
    fr1, fc1 = min(geo.fine, int(np.ceil(r1 * z))), min(geo.fine, int(np.ceil(c1 * z)))
    side = max(geo.size, fr1 - fr0, fc1 - fc0)
    top = fr0 - (side - (fr1 - fr0)) // 2
    left = fc0 - (side - (fc1 - fc0)) // 2
    return Window(fr0, fr1, fc0, fc1, top, left, side)


def roi_windows(liver: Tensor | np.ndarray, geo: RoiGeometry) -> list[Window | None]:
    """`roi_window` of every slice of a (B, 1, S, S) or (B, S, S) liver mask."""
    arr = liver.detach().cpu().numpy() if isinstance(liver, Tensor) else np.asarray(liver)
    if arr.ndim == 4:
        arr = arr[:, 0]
    return [roi_window(a > 0, geo) for a in arr]


def _resize(x: Tensor, side: int, mode: str) -> Tensor:
    """(1, 1, h, w) -> (1, 1, side, side): nearest for labels, bilinear (antialiased when shrinking) otherwise."""
    if x.shape[-1] == side and x.shape[-2] == side:
        return x
    if mode == "nearest":
        return F.interpolate(x.float(), size=(side, side), mode="nearest-exact").to(x.dtype)
    shrink = side < x.shape[-1]
    return F.interpolate(x.float(), size=(side, side), mode="bilinear", align_corners=False, antialias=shrink)


def crop_roi(fine: Tensor, window: Window, size: int, mode: str = "linear", pad_value: float | None = None) -> Tensor:
    """One fine (Sf, Sf) slice -> the window's (size, size) input. Beyond the slice: ``pad_value``
    (default: the slice's minimum for images, 0 for labels)."""
    if pad_value is None:
        pad_value = float(fine.min()) if (mode == "linear" and fine.numel()) else 0.0
    h, w = fine.shape[-2:]
    t, l, s = window.top, window.left, window.side
    part = F.pad(fine[None, None], (-l, l + s - w, -t, t + s - h), value=pad_value)  # negative = crop
    return _resize(part, size, mode)[0, 0].to(fine.dtype if mode == "nearest" else part.dtype)


def paste_roi(roi: Tensor, window: Window | None, fine: int, fill: float = 0.0, mode: str = "linear") -> Tensor:
    """A (size, size) ROI output -> the (fine, fine) slice: the window's values inside the box, ``fill`` outside."""
    out = torch.full((fine, fine), fill, dtype=roi.dtype, device=roi.device)
    if window is None:
        return out
    back = _resize(roi[None, None], window.side, mode)[0, 0].to(out.dtype)
    r0, r1, c0, c1 = window.r0, window.r1, window.c0, window.c1
    out[r0:r1, c0:c1] = back[r0 - window.top : r1 - window.top, c0 - window.left : c1 - window.left]
    return out


def coarse_view(fine: Tensor, size: int) -> Tensor:
    """(B, 1, Sf, Sf) fine slices -> (B, 1, S, S) on the liver grid (area average; 2x2 means at zoom 2)."""
    if fine.shape[-1] == size:
        return fine
    return F.interpolate(fine, size=(size, size), mode="area")


def upsample_mask(mask: Tensor, fine: int) -> Tensor:
    """(B, 1, S, S) liver-grid mask -> (B, 1, Sf, Sf) by nearest neighbour (each liver pixel a zoom x zoom block)."""
    if mask.shape[-1] == fine:
        return mask
    return F.interpolate(mask.float(), size=(fine, fine), mode="nearest-exact").to(mask.dtype)


# ---------------------------------------------------------------- the one ROI function

LiverFn = Callable[[Tensor], Tensor]  # (B, 1, S, S) liver-grid slices -> (B, 1, S, S) liver logits
PriorFn = Callable[[Tensor], Tensor]  # (B, 1, S, S) liver logits -> (B, 1, S, S) prior for the lesion net


@dataclass
class RoiInputs:
    """What the lesion network sees for a batch of fine slices: crops, cropped priors, windows."""

    images: Tensor  # (B', 1, S, S): the slices with a window only
    priors: Tensor  # (B', 1, S, S)
    windows: list[Window | None]  # one per input slice
    keep: list[int]  # indices of the input slices with a window
    liver_logits: Tensor  # (B, 1, S, S) on the liver grid


class LesionRoi:
    """The ROI cut (module docstring) for one geometry; ``liver`` gives liver logits on the liver grid."""

    def __init__(self, geo: RoiGeometry) -> None:
        self.geo = geo

    def inputs(self, x: Tensor, liver: LiverFn, prior: PriorFn) -> RoiInputs:
        """Liver prediction on the coarse view, windows, and the cropped images and priors."""
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[-1] != self.geo.fine or x.shape[-2] != self.geo.fine:
            raise ConfigError(f"the lesion ROI expects (B, 1, {self.geo.fine}, {self.geo.fine}) fine slices, "
                              f"got {tuple(x.shape)}")
        with torch.no_grad():
            logits = liver(coarse_view(x, self.geo.size))
        windows = roi_windows(logits > 0, self.geo)
        fine_prior = upsample_mask(prior(logits).to(x.dtype), self.geo.fine)
        keep = [i for i, w in enumerate(windows) if w is not None]
        s = self.geo.size
        images = torch.stack([crop_roi(x[i, 0], windows[i], s) for i in keep])[:, None] if keep else x.new_zeros(0, 1, s, s)
        priors = (torch.stack([crop_roi(fine_prior[i, 0], windows[i], s, "nearest") for i in keep])[:, None]
                  if keep else x.new_zeros(0, 1, s, s))
        return RoiInputs(images, priors.to(x.dtype), windows, keep, logits)

    def paste(self, logits: Tensor, rois: RoiInputs, batch: int) -> Tensor:
        """(B', 1, S, S) ROI logits -> (B, 1, Sf, Sf) on the fine grid; background logit outside the boxes."""
        out = torch.full((batch, 1, self.geo.fine, self.geo.fine), BACKGROUND_LOGIT, dtype=torch.float32,
                         device=logits.device)
        for j, i in enumerate(rois.keep):
            out[i, 0] = paste_roi(logits[j, 0].float(), rois.windows[i], self.geo.fine, BACKGROUND_LOGIT)
        return out

    def forward(self, x: Tensor, liver: LiverFn, prior: PriorFn, net: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """Fine-grid logits of ``net(roi images, roi priors)`` for a batch of fine slices."""
        rois = self.inputs(x, liver, prior)
        logits = net(rois.images, rois.priors) if rois.keep else rois.images.new_zeros(0, 1, self.geo.size, self.geo.size)
        return self.paste(logits, rois, x.shape[0])

    def boxes(self, windows: list[Window | None], device: torch.device | None = None) -> Tensor:
        """(B, 1, Sf, Sf) 0/1 masks of the windows' boxes (the ROI as figures show it)."""
        out = torch.zeros(len(windows), 1, self.geo.fine, self.geo.fine, device=device)
        for i, w in enumerate(windows):
            if w is not None:
                out[i, 0, w.r0:w.r1, w.c0:w.c1] = 1.0
        return out


__all__ = ["BACKGROUND_LOGIT", "Window", "RoiGeometry", "roi_zoom", "uses_roi", "roi_geometry", "roi_profile",
           "lesion_cut", "data_profile", "roi_record", "roi_window", "roi_windows", "crop_roi", "paste_roi", "coarse_view", "upsample_mask",
           "RoiInputs", "LesionRoi"]
