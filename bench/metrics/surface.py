"""Surface metrics in millimetres: HD95 and normalised surface Dice (NSD) at a tolerance.

Why these definitions: they follow MONAI's ``compute_hausdorff_distance(percentile=95)`` and
``compute_surface_dice`` (voxel surfaces, no sub-voxel areas), so numbers can be compared with
MONAI-based papers and checked against MONAI in the tests:

* surface of a mask = mask voxels with a background face-neighbour (``mask ^ erosion(mask)``
  with the cross structure; outside the volume counts as background);
* distances are Euclidean between surface-voxel centres, scaled by the case spacing (z, y, x mm),
  found with a KD-tree over surface voxels (exact, and no dense distance transform);
* HD95 = max(95th percentile of pred->ref distances, 95th percentile of ref->pred distances),
  percentiles with linear interpolation;
* NSD(tau) = (#pred-surface voxels within tau of the ref surface + #ref-surface voxels within tau
  of the pred surface) / (#pred-surface + #ref-surface voxels).

Default tolerance 1 mm (the FLARE challenges' organ setting); pass another with ``tolerance_mm``
(``bench score --tolerance``). For speed everything runs on the bounding box of the union of both
masks plus a one-voxel margin, which changes no distance.

Empty masks (declared policy): both empty -> hd95 NaN, nsd NaN (excluded, like Dice);
exactly one empty -> hd95 NaN (no finite distance exists; excluded and counted) and nsd 0.0
(no surface agrees).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

DEFAULT_TOLERANCE_MM = 1.0


def _as_bool(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(bool, copy=False)


def _surfaces(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Surface-voxel coordinates (index units) of both masks, on the cropped union box."""
    union = pred | ref
    box = ndimage.find_objects(union.view(np.uint8))[0]
    return _edge_coords(pred[box]), _edge_coords(ref[box])


def _edge_coords(mask: np.ndarray) -> np.ndarray:
    """Coordinates of voxels with a background face-neighbour (outside counts as background).

    Equivalent to ``mask ^ scipy.ndimage.binary_erosion(mask)`` with the default cross
    structure, written as 2 x ndim shifted ANDs, which is ~20x faster on a liver-sized box.
    """
    padded = np.pad(mask, 1, constant_values=False)
    core = tuple(slice(1, -1) for _ in range(mask.ndim))
    interior = mask.copy()
    for axis in range(mask.ndim):
        for shift in (0, 2):
            neighbour = list(core)
            neighbour[axis] = slice(shift, shift + mask.shape[axis])
            interior &= padded[tuple(neighbour)]
    return np.argwhere(mask & ~interior).astype(np.float64)


def surface_distances(
    pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray] | None:
    """(pred->ref, ref->pred) surface distances in mm; None when either mask is empty."""
    p = _as_bool(pred)
    r = _as_bool(ref)
    if p.shape != r.shape:
        raise ValueError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    if len(spacing) != p.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {p.ndim}-D mask")
    if not p.any() or not r.any():
        return None
    sp, sr = _surfaces(p, r)
    scale = np.asarray(spacing, dtype=np.float64)
    sp *= scale
    sr *= scale
    d_pr = cKDTree(sr, leafsize=32).query(sp, k=1, workers=-1)[0]
    d_rp = cKDTree(sp, leafsize=32).query(sr, k=1, workers=-1)[0]
    return d_pr, d_rp


def surface_metrics(
    pred: np.ndarray | torch.Tensor,
    ref: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> dict[str, float]:
    """{"hd95": mm, "nsd": 0..1} of one binary task on one case (policy in the module docstring)."""
    if tolerance_mm < 0:
        raise ValueError(f"tolerance must be >= 0 mm, got {tolerance_mm}")
    p = _as_bool(pred)
    r = _as_bool(ref)
    if p.shape != r.shape:
        raise ValueError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    if not p.any() and not r.any():
        return {"hd95": math.nan, "nsd": math.nan}
    dist = surface_distances(p, r, spacing)
    if dist is None:
        return {"hd95": math.nan, "nsd": 0.0}
    d_pr, d_rp = dist
    hd95 = max(float(np.percentile(d_pr, 95)), float(np.percentile(d_rp, 95)))
    within = int((d_pr <= tolerance_mm).sum() + (d_rp <= tolerance_mm).sum())
    nsd = within / float(d_pr.size + d_rp.size)
    return {"hd95": hd95, "nsd": nsd}


def hd95(pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, spacing: Sequence[float]) -> float:
    return surface_metrics(pred, ref, spacing)["hd95"]


def nsd(
    pred: np.ndarray | torch.Tensor,
    ref: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> float:
    return surface_metrics(pred, ref, spacing, tolerance_mm)["nsd"]
