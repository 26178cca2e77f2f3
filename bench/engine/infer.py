"""Volume inference glue: per-plane probability volumes, plane fusion and 3-D post-processing.

Why here and not in each model: every model (baselines and the cascade) is a per-slice
probability function; turning it into a 3-D probability volume on the case's own grid, fusing
the three planes and cleaning the mask is the same for all of them, so it is written once.

* `predict_slices`  batched, ``torch.no_grad`` unless the function needs gradients (Grad-CAM);
* `predict_volume`  slice along a plane at the network input size, predict, and put the slices
                     back on the original grid with the exact inverse geometry
                     (`bench.datasets.planes`), bilinear for probabilities;
* `fuse_soft`       soft voting: the voxel-wise mean of the planes' probabilities (paper Eq. 8);
* `fuse_majority`   hard majority vote of the thresholded planes, for comparison only (the paper
                     argues soft voting lets one plane fail without harm where the others agree);
* `postprocess`     3-D connected components (paper Fig. 13): keep the largest, or drop
                     components below a voxel count.

Threshold convention everywhere: foreground when probability > 0.5.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage

from bench.config import PLANES, POSTPROCESS_MODES
from bench.datasets.planes import slices_to_volume, volume_to_slices
from bench.engine.precision import Precision
from bench.errors import ConfigError

ProbFn = Callable[..., torch.Tensor]
THRESHOLD = 0.5


def predict_slices(
    prob_fn: ProbFn,
    slices: np.ndarray | torch.Tensor,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    grad: bool = False,
    out_device: str | torch.device = "cpu",
    extras: Sequence[np.ndarray | torch.Tensor] = (),
    precision: Precision | None = None,
) -> torch.Tensor:
    """(N, H, W) inputs -> (N, H, W) float32 outputs on ``out_device``: the one slice-prediction loop.

    Every caller goes through here: box priors (Grad-CAM, ``grad=True``), evaluation, ``bench
    predict`` and Algorithm 1's self-labels. ``prob_fn`` receives (B, 1, H, W) float32 on
    ``device`` followed by one (B, 1, H, W) tensor per array in ``extras`` (e.g. the box priors
    aligned with the slices) and returns (B, 1, H, W) or (B, H, W). Inputs may be memory maps of
    any dtype: only one batch is ever converted. ``precision`` adds autocast (AMP on CUDA).
    ``grad=True`` keeps autograd on (for functions that differentiate internally); the returned
    values are detached either way.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if np.ndim(slices) != 3:
        raise ValueError(f"expected slices (N, H, W), got shape {tuple(np.shape(slices))}")
    shape = tuple(int(v) for v in np.shape(slices))
    for extra in extras:
        if tuple(np.shape(extra)) != shape:
            raise ValueError(f"extra input of shape {tuple(np.shape(extra))} does not match slices {shape}")
    out = torch.empty(shape, dtype=torch.float32, device=out_device)
    context = torch.enable_grad() if grad else torch.no_grad()
    autocast = precision.autocast() if precision is not None else contextlib.nullcontext()
    with context, autocast:
        for start in range(0, shape[0], batch_size):
            stop = min(start + batch_size, shape[0])
            x, *more = (_batch(a, start, stop, device) for a in (slices, *extras))
            p = prob_fn(x, *more)
            if p.dim() == 4:
                if p.shape[1] != 1:
                    raise ValueError(f"prob_fn returned {p.shape[1]} channels; expected 1")
                p = p[:, 0]
            if tuple(p.shape) != (stop - start,) + shape[1:]:
                raise ValueError(f"prob_fn returned shape {tuple(p.shape)} for input {tuple(x.shape)}")
            out[start:stop] = p.detach().float().to(out_device)
    return out


def _batch(array: np.ndarray | torch.Tensor, start: int, stop: int, device: str | torch.device) -> torch.Tensor:
    """Rows ``start:stop`` as a (B, 1, H, W) float32 tensor on ``device`` (only this batch is copied)."""
    part = array[start:stop]
    t = part if isinstance(part, torch.Tensor) else torch.from_numpy(np.asarray(part, dtype=np.float32))
    return t.to(device=device, dtype=torch.float32)[:, None]


def predict_volume(
    prob_fn: ProbFn,
    volume: np.ndarray,
    plane: str,
    input_size: int,
    fit: str = "pad",
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    grad: bool = False,
    precision: Precision | None = None,
    spacing: tuple[float, float, float] | None = None,
    target_mm: float = 0.0,
) -> np.ndarray:
    """Probability volume (Z, Y, X) float32 on the grid of the preprocessed ``volume`` (Z, Y, X).

    Slices are cut along ``plane``, fitted to ``input_size`` (``fit``: pad | resize, padding with the
    volume's minimum as at training), predicted, and mapped back by the exact inverse geometry.
    """
    if plane not in PLANES:
        raise ConfigError(f"unknown plane {plane!r} (known: {', '.join(PLANES)})")
    if volume.ndim != 3:
        raise ValueError(f"expected a (Z, Y, X) volume, got shape {volume.shape}")
    slices = volume_to_slices(np.asarray(volume, dtype=np.float32), plane, input_size, fit, mode="linear",
                              spacing=spacing, target_mm=target_mm)
    probs = predict_slices(prob_fn, slices, batch_size, device, grad, precision=precision)
    back = slices_to_volume(probs, plane, tuple(volume.shape), fit, mode="linear", spacing=spacing, target_mm=target_mm)
    return np.ascontiguousarray(back.numpy(), dtype=np.float32)


def _stack(volumes: Sequence[np.ndarray | torch.Tensor]) -> tuple[list, bool]:
    if len(volumes) == 0:
        raise ValueError("no probability volumes to fuse")
    shapes = {tuple(v.shape) for v in volumes}
    if len(shapes) != 1:
        raise ValueError(f"probability volumes differ in shape: {sorted(shapes)}")
    return list(volumes), isinstance(volumes[0], torch.Tensor)


def fuse_soft(prob_volumes: Sequence[np.ndarray | torch.Tensor]) -> np.ndarray | torch.Tensor:
    """Soft voting (Eq. 8): the voxel-wise mean of the planes' probabilities (float32, input kind)."""
    vols, is_torch = _stack(prob_volumes)
    if is_torch:
        acc = torch.zeros_like(vols[0], dtype=torch.float32)
        for v in vols:
            acc += v.float()
        return acc / len(vols)
    acc = np.zeros(vols[0].shape, dtype=np.float32)
    for v in vols:
        acc += v
    acc /= np.float32(len(vols))
    return acc


def fuse_majority(
    prob_volumes: Sequence[np.ndarray | torch.Tensor], threshold: float = THRESHOLD
) -> np.ndarray | torch.Tensor:
    """Hard majority vote: foreground where more than half of the planes say p > threshold (bool)."""
    vols, is_torch = _stack(prob_volumes)
    need = len(vols) // 2 + 1
    if is_torch:
        votes = torch.zeros(vols[0].shape, dtype=torch.uint8, device=vols[0].device)
        for v in vols:
            votes += v > threshold
        return votes >= need
    votes = np.zeros(vols[0].shape, dtype=np.uint8)
    for v in vols:
        votes += np.asarray(v) > threshold
    return votes >= need


def postprocess(mask: np.ndarray, mode: str = "none", min_voxels: int = 0, connectivity: int = 1) -> np.ndarray:
    """3-D connected-component clean-up of a binary mask (paper Fig. 13); returns bool.

    ``largest`` keeps the largest component (the liver is one organ); ``min_size`` removes
    components with fewer than ``min_voxels`` voxels (lesions can be many). ``connectivity``:
    1 = faces (6-neighbourhood, nnU-Net's choice), 2 = + edges, 3 = + corners (26).
    """
    if mode not in POSTPROCESS_MODES:
        raise ConfigError(f"unknown postprocess mode {mode!r} (known: {', '.join(POSTPROCESS_MODES)})")
    m = np.asarray(mask).astype(bool, copy=False)
    if mode == "none" or not m.any():
        return m
    if not 1 <= connectivity <= m.ndim:
        raise ConfigError(f"connectivity must be in 1..{m.ndim}, got {connectivity}")
    box = ndimage.find_objects(m.astype(np.uint8))[0]  # label only the bounding box: much faster
    crop = m[box]
    labels, n = ndimage.label(crop, structure=ndimage.generate_binary_structure(m.ndim, connectivity))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    if mode == "largest":
        keep = np.zeros(n + 1, dtype=bool)
        keep[int(np.argmax(sizes))] = True
    else:
        keep = sizes >= max(int(min_voxels), 0)
        keep[0] = False
    out = np.zeros_like(m)
    out[box] = keep[labels]
    return out
