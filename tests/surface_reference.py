"""An independent implementation of the surface and volume metrics, for the tests only.

Written from the definitions (LiTS paper, MONAI docs) with different machinery from
`bench.metrics.surface`: surfaces by ``scipy.ndimage.binary_erosion`` on the whole (uncropped)
volume, distances by exact Euclidean distance transforms with ``sampling=spacing`` read at the
surface voxels (no KD-tree, no cropping), volumes by ``np.sum`` of the masks (no counts).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage


def surface(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def directed(src: np.ndarray, dst: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance (mm) from every voxel of surface ``src`` to the nearest voxel of surface ``dst``."""
    edt = ndimage.distance_transform_edt(~dst, sampling=tuple(float(s) for s in spacing))
    return np.asarray(edt[src], dtype=np.float64)


def reference_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 1.0,
                      connectivity: int = 1) -> dict[str, float]:
    """hd95, nsd, assd, mssd, rmsd, voe, rvd of two boolean masks (NaN rules as declared by bench)."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    n_p, n_r = int(pred.sum()), int(ref.sum())
    inter, union = int((pred & ref).sum()), int((pred | ref).sum())
    out = {
        "voe": 1.0 - inter / union if union else math.nan,
        "rvd": (n_p - n_r) / n_r if n_r else math.nan,
    }
    if n_p == 0 and n_r == 0:
        return {**out, **{k: math.nan for k in ("hd95", "nsd", "assd", "mssd", "rmsd")}}
    if n_p == 0 or n_r == 0:
        return {**out, "hd95": math.nan, "nsd": 0.0, "assd": math.nan, "mssd": math.nan, "rmsd": math.nan}
    sp, sr = surface(pred, connectivity), surface(ref, connectivity)
    a, b = directed(sp, sr, spacing), directed(sr, sp, spacing)
    both = np.concatenate([a, b])
    return {
        **out,
        "hd95": max(np.percentile(a, 95), np.percentile(b, 95)),
        "nsd": float((both <= tolerance_mm).sum()) / both.size,
        "assd": float(both.mean()),
        "mssd": float(both.max()),
        "rmsd": math.sqrt(float((both ** 2).mean())),
    }
