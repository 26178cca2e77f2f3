"""Surface metrics in millimetres, all from one surface-distance pass: HD95, NSD, ASSD, MSSD, RMSD.

Why these definitions: surfaces and distances follow MONAI (``compute_hausdorff_distance``,
``compute_surface_dice``, ``compute_average_surface_distance``; voxel surfaces, no sub-voxel
areas), so numbers can be compared with MONAI-based papers and are checked against MONAI and an
independent scipy distance-transform implementation in the tests; the three LiTS distances follow
the LiTS paper (Bilic et al., Medical Image Analysis 84, 2023, after Heimann et al. 2009):

* surface S(A) of a mask = mask voxels with a background neighbour (``mask ^ erosion(mask)``);
  outside the volume counts as background. ``connectivity=1`` (default): face neighbours, the
  cross structure MONAI erodes with. ``connectivity=2``: face and edge neighbours (the
  18-neighbourhood of Heimann et al. and of the LiTS evaluation script's ``Surface`` class, which
  finds a few more surface voxels on oblique boundaries); ``bench score --connectivity 2``
  reproduces the LiTS script's surfaces.
* d(v, S) = Euclidean distance between voxel centres, scaled by the case's own spacing
  (z, y, x mm), found with a KD-tree over surface voxels (exact, no dense distance transform).
  ``d_pr`` = d(s, S(ref)) for every s in S(pred), ``d_rp`` the other way.
* HD95  = max(95th percentile of d_pr, 95th percentile of d_rp), linear interpolation (MONAI).
* NSD(tau) = (#d_pr <= tau + #d_rp <= tau) / (|S(pred)| + |S(ref)|)  (MONAI compute_surface_dice).
* ASSD  = (sum d_pr + sum d_rp) / (|S(pred)| + |S(ref)|): the mean over the UNION of both surface
  point sets, as the LiTS paper (and its script) defines it and as MONAI's
  ``compute_average_surface_distance(symmetric=True)`` computes it (it concatenates both directed
  distance sets). Not medpy's ``assd``, which averages the two directed means (different when the
  surfaces have different sizes).
* MSSD  = max(max d_pr, max d_rp): the symmetric Hausdorff distance (MONAI
  ``compute_hausdorff_distance`` without percentile).
* RMSD  = sqrt((sum d_pr^2 + sum d_rp^2) / (|S(pred)| + |S(ref)|)), over the same union.

NSD's default tolerance is 1 mm (the FLARE challenges' organ setting); pass another with
``tolerance_mm`` (``bench score --tolerance``). For speed everything runs on the bounding box of
the union of both masks plus a one-voxel margin, which changes no distance.

Empty masks (declared policy, also in `bench.metrics.results.evaluation_policy`): both empty ->
every surface metric NaN (excluded, like Dice); exactly one empty -> hd95, assd, mssd and rmsd NaN
(no finite distance exists; excluded from the mean and counted per metric) and nsd 0.0 (no
surface agrees). (The LiTS script assigns a large constant instead; a NaN that is counted keeps
means finite and honest.)
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from bench.metrics.scores import SURFACE_METRICS

DEFAULT_TOLERANCE_MM = 1.0
DEFAULT_CONNECTIVITY = 1
# cKDTree query threads; -1 = every core (benchmarks/metrics.py passes 1 for a single-thread figure)
DEFAULT_WORKERS = -1
_DISTANCE_KEYS = ("hd95", "assd", "mssd", "rmsd")  # NaN when exactly one mask is empty


def _as_bool(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(bool, copy=False)


def _surfaces(pred: np.ndarray, ref: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """Surface-voxel coordinates (index units) of both masks, on the cropped union box."""
    union = pred | ref
    box = ndimage.find_objects(union.view(np.uint8))[0]
    return _edge_coords(pred[box], connectivity), _edge_coords(ref[box], connectivity)


def _neighbour_offsets(ndim: int, connectivity: int) -> list[tuple[int, ...]]:
    """Offsets of the neighbours of ``scipy.ndimage.generate_binary_structure(ndim, connectivity)``."""
    return [o for o in itertools.product((-1, 0, 1), repeat=ndim) if 0 < sum(map(abs, o)) <= connectivity]


def _edge_coords(mask: np.ndarray, connectivity: int = DEFAULT_CONNECTIVITY) -> np.ndarray:
    """Coordinates of voxels with a background neighbour (outside counts as background).

    Equivalent to ``mask ^ scipy.ndimage.binary_erosion(mask, generate_binary_structure(ndim,
    connectivity))``, written as one shifted AND per neighbour, which is ~20x faster on a
    liver-sized box.
    """
    padded = np.pad(mask, 1, constant_values=False)
    interior = mask.copy()
    for offset in _neighbour_offsets(mask.ndim, connectivity):
        neighbour = tuple(slice(1 + o, 1 + o + n) for o, n in zip(offset, mask.shape))
        interior &= padded[neighbour]
    return np.argwhere(mask & ~interior).astype(np.float64)


def _check(p: np.ndarray, r: np.ndarray, spacing: Sequence[float], connectivity: int) -> None:
    if p.shape != r.shape:
        raise ValueError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    if len(spacing) != p.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {p.ndim}-D mask")
    if not 1 <= connectivity <= p.ndim:
        raise ValueError(f"connectivity must be in 1..{p.ndim}, got {connectivity}")


def surface_distances(
    pred: np.ndarray | torch.Tensor,
    ref: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
    connectivity: int = DEFAULT_CONNECTIVITY,
    workers: int = DEFAULT_WORKERS,
) -> tuple[np.ndarray, np.ndarray] | None:
    """(d_pr, d_rp): pred->ref and ref->pred surface distances in mm; None when either mask is empty."""
    p = _as_bool(pred)
    r = _as_bool(ref)
    _check(p, r, spacing, connectivity)
    if not p.any() or not r.any():
        return None
    sp, sr = _surfaces(p, r, connectivity)
    scale = np.asarray(spacing, dtype=np.float64)
    sp *= scale
    sr *= scale
    d_pr = cKDTree(sr, leafsize=32).query(sp, k=1, workers=workers)[0]
    d_rp = cKDTree(sp, leafsize=32).query(sr, k=1, workers=workers)[0]
    return d_pr, d_rp


# ---------------------------------------------------------------- one function per metric


def hd95_from_distances(d_pr: np.ndarray, d_rp: np.ndarray) -> float:
    """max of the two directed 95th percentiles (linear interpolation), mm."""
    return max(float(np.percentile(d_pr, 95)), float(np.percentile(d_rp, 95)))


def nsd_from_distances(d_pr: np.ndarray, d_rp: np.ndarray, tolerance_mm: float = DEFAULT_TOLERANCE_MM) -> float:
    """Share of both surfaces within ``tolerance_mm`` of the other surface, 0..1."""
    within = int(np.count_nonzero(d_pr <= tolerance_mm) + np.count_nonzero(d_rp <= tolerance_mm))
    return within / float(d_pr.size + d_rp.size)


def assd_from_distances(d_pr: np.ndarray, d_rp: np.ndarray) -> float:
    """Mean over the union of both surfaces' distances (LiTS ASSD; MONAI symmetric ASD), mm."""
    return (float(d_pr.sum(dtype=np.float64)) + float(d_rp.sum(dtype=np.float64))) / float(d_pr.size + d_rp.size)


def mssd_from_distances(d_pr: np.ndarray, d_rp: np.ndarray) -> float:
    """Maximum symmetric surface distance = Hausdorff distance, mm."""
    return max(float(d_pr.max()), float(d_rp.max()))


def rmsd_from_distances(d_pr: np.ndarray, d_rp: np.ndarray) -> float:
    """Root mean square over the union of both surfaces' distances (LiTS RMSD), mm."""
    squares = float(np.dot(d_pr, d_pr)) + float(np.dot(d_rp, d_rp))
    return math.sqrt(squares / float(d_pr.size + d_rp.size))


def surface_metrics(
    pred: np.ndarray | torch.Tensor,
    ref: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    connectivity: int = DEFAULT_CONNECTIVITY,
    workers: int = DEFAULT_WORKERS,
) -> dict[str, float]:
    """{"hd95", "nsd", "assd", "mssd", "rmsd"} of one binary task on one case, from one distance pass.

    Distances in mm, nsd in 0..1; empty-mask policy in the module docstring.
    """
    if tolerance_mm < 0:
        raise ValueError(f"tolerance must be >= 0 mm, got {tolerance_mm}")
    p = _as_bool(pred)
    r = _as_bool(ref)
    _check(p, r, spacing, connectivity)
    if not p.any() and not r.any():
        return {k: math.nan for k in SURFACE_METRICS}
    dist = surface_distances(p, r, spacing, connectivity, workers)
    if dist is None:
        return {**{k: math.nan for k in _DISTANCE_KEYS}, "nsd": 0.0}
    d_pr, d_rp = dist
    return {
        "hd95": hd95_from_distances(d_pr, d_rp),
        "nsd": nsd_from_distances(d_pr, d_rp, tolerance_mm),
        "assd": assd_from_distances(d_pr, d_rp),
        "mssd": mssd_from_distances(d_pr, d_rp),
        "rmsd": rmsd_from_distances(d_pr, d_rp),
    }


def hd95(pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, spacing: Sequence[float]) -> float:
    return surface_metrics(pred, ref, spacing)["hd95"]


def nsd(
    pred: np.ndarray | torch.Tensor,
    ref: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> float:
    return surface_metrics(pred, ref, spacing, tolerance_mm)["nsd"]


def assd(pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, spacing: Sequence[float]) -> float:
    return surface_metrics(pred, ref, spacing)["assd"]


def mssd(pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, spacing: Sequence[float]) -> float:
    return surface_metrics(pred, ref, spacing)["mssd"]


def rmsd(pred: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, spacing: Sequence[float]) -> float:
    return surface_metrics(pred, ref, spacing)["rmsd"]
