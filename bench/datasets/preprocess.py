"""Paper 3.2 preprocessing as pure functions: HU window, z-score, 3x3 median filter.

`preprocess_volume` composes them as the profile says. The median runs per axial slice (the
acquisition plane; the paper's Eq. 2 is a 2-D filter), once per volume, before plane slicing,
so the three planes see the same voxels. Z-score statistics are taken over the whole windowed
volume (one mean and sd per patient), which keeps slices of one patient on a common scale.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bench.config import PreprocessConfig


def hu_window(image: np.ndarray, hu_min: float = -100.0, hu_max: float = 200.0) -> np.ndarray:
    """Clip to [hu_min, hu_max] as float32 (removes air, bone and irrelevant organs, Fig. 4)."""
    if hu_min >= hu_max:
        raise ValueError(f"HU window [{hu_min}, {hu_max}] is empty")
    return np.clip(image.astype(np.float32, copy=False), hu_min, hu_max)


def zscore(image: np.ndarray, mean: float | None = None, std: float | None = None) -> np.ndarray:
    """Eq. 1. A constant image maps to zeros (std 0 would divide by zero)."""
    image = image.astype(np.float32, copy=False)
    mean = float(image.mean(dtype=np.float64)) if mean is None else mean
    std = float(image.std(dtype=np.float64)) if std is None else std
    if std < 1e-6:
        return np.zeros_like(image)
    return (image - np.float32(mean)) / np.float32(std)


def median3x3_slices(slab: np.ndarray) -> np.ndarray:
    """Exact 3x3 median of every axial slice of a (k, Y, X) slab, edges replicated.

    Same result as scipy's ``median_filter(size=(1, 3, 3), mode="nearest")``, about
    7x faster: sort each vertical triple once, then the median of the nine is the median of
    (largest column minimum, median of column medians, smallest column maximum), all as
    whole-array minimum/maximum operations.
    """
    p = np.pad(slab, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = slab.shape[1:]
    a, b, c = p[:, :h], p[:, 1 : h + 1], p[:, 2 : h + 2]
    lo1, hi1 = np.minimum(a, b), np.maximum(a, b)
    lo, t = np.minimum(lo1, c), np.maximum(lo1, c)
    mid, hi = np.minimum(hi1, t), np.maximum(hi1, t)
    del lo1, hi1, t

    def cols(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return x[..., :w], x[..., 1 : w + 1], x[..., 2 : w + 2]

    def med3(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return np.maximum(np.minimum(x, y), np.minimum(np.maximum(x, y), z))

    l0, l1, l2 = cols(lo)
    h0, h1, h2 = cols(hi)
    max_lo = np.maximum(np.maximum(l0, l1), l2)
    min_hi = np.minimum(np.minimum(h0, h1), h2)
    return med3(max_lo, med3(*cols(mid)), min_hi)


def median_filter_slices(volume: np.ndarray, size: int = 3) -> np.ndarray:
    """Eq. 2 on every axial slice of a (Z, Y, X) volume (no smoothing across slices)."""
    if size <= 1:
        return volume
    if size == 3:
        return median3x3_slices(volume)
    return ndimage.median_filter(volume, size=(1, size, size), mode="nearest")


def window_zscore(cfg: PreprocessConfig) -> tuple[float, float]:
    """The fixed Eq. 1 statistics of ``zscore_stats="window"``: the window's centre and a quarter width."""
    return (cfg.hu_min + cfg.hu_max) / 2.0, (cfg.hu_max - cfg.hu_min) / 4.0


def preprocess_volume(image_hu: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Window -> z-score -> median, float32 (Z, Y, X)."""
    out = hu_window(image_hu, cfg.hu_min, cfg.hu_max)
    if cfg.zscore:
        out = zscore(out, *window_zscore(cfg)) if cfg.zscore_stats == "window" else zscore(out)
    return median_filter_slices(out, cfg.median_size)
