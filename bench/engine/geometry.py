"""What a run was trained on, geometrically, and whether a new input is far outside it.

Why: ``bench predict`` applies a run to any CT. A model trained on 128-px phantom slices at
3.2 mm per pixel, given a 512x512 CT at 0.7 mm, still returns a mask (70% of voxels "liver")
without a word. Training records the range of its training cases' voxel spacing and volume
shape (`training_geometry`, in the run's config.json as ``training_geometry``); prediction
compares the input with it (`far_from_training`) and warns in one line.

The rule (a choice; the paper has none): along the run's plane, each in-plane pixel spacing and
each slice side of the input must lie within [min / FAR_FACTOR, max * FAR_FACTOR] of the
training cases' range, with FAR_FACTOR = 2. Real CT varies within a factor of about 1.5 in
pixel spacing (0.57-0.98 mm in LiTS) and keeps 512 px, so a 2x excursion means another kind of data.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from bench.config import PLANE_AXIS

FAR_FACTOR = 2.0
GEOMETRY_KEY = "training_geometry"  # the run record's field (bench.engine.records)


def training_geometry(cache: Any, case_ids: Iterable[str]) -> dict[str, Any]:
    """Per-axis (z, y, x) min/max of the training cases' voxel spacing (mm) and volume shape, from the cache."""
    metas = [cache.meta(c) for c in case_ids]
    if not metas:
        return {"cases": 0}
    spacing = [[float(v) for v in m["spacing"]] for m in metas]
    shape = [[int(v) for v in m["shape"]] for m in metas]
    return {
        "cases": len(metas),
        "spacing_mm_min": [min(s[i] for s in spacing) for i in range(3)],
        "spacing_mm_max": [max(s[i] for s in spacing) for i in range(3)],
        "shape_min": [min(s[i] for s in shape) for i in range(3)],
        "shape_max": [max(s[i] for s in shape) for i in range(3)],
        "rule": f"predict warns when an in-plane spacing or slice side is outside [min/{FAR_FACTOR:g}, "
                f"max*{FAR_FACTOR:g}] of this range",
    }


def _range(lo: float, hi: float, fmt: str = "g") -> str:
    return f"{lo:{fmt}}" if lo == hi else f"{lo:{fmt}}-{hi:{fmt}}"


def far_from_training(geometry: dict[str, Any] | None, shape: Sequence[int], spacing: Sequence[float],
                      plane: str) -> str | None:
    """Why this (Z, Y, X) input is far from the training cases along ``plane`` (module rule), or None."""
    if not geometry or not geometry.get("cases"):
        return None
    axes = [i for i in range(3) if i != PLANE_AXIS[plane]]
    try:
        lo_mm, hi_mm = geometry["spacing_mm_min"], geometry["spacing_mm_max"]
        lo_px, hi_px = geometry["shape_min"], geometry["shape_max"]
        far = any(not (lo_mm[i] / FAR_FACTOR <= float(spacing[i]) <= hi_mm[i] * FAR_FACTOR) or
                  not (lo_px[i] / FAR_FACTOR <= int(shape[i]) <= hi_px[i] * FAR_FACTOR) for i in axes)
    except (KeyError, IndexError, TypeError, ValueError):
        return None  # a record without the geometry (older runs): nothing to compare with
    if not far:
        return None
    a, b = axes
    return (f"{plane} slices of {int(shape[a])}x{int(shape[b])} px at {float(spacing[a]):.3g}x{float(spacing[b]):.3g} mm, "
            f"but the run was trained on {_range(lo_px[a], hi_px[a])}x{_range(lo_px[b], hi_px[b])} px at "
            f"{_range(lo_mm[a], hi_mm[a], '.3g')}x{_range(lo_mm[b], hi_mm[b], '.3g')} mm (outside [0.5x, 2x] of that "
            f"range): the prediction may be meaningless")
