"""Slice a (Z, Y, X) volume along a plane to square network inputs, and put slices back.

Axial slices are ``volume[z]`` (Y, X), coronal ``volume[:, y]`` (Z, X), sagittal
``volume[:, :, x]`` (Z, Y). Each slice meets the square input either by ``resize`` (stretch)
or ``pad`` (centre-pad to a square, then resize; `PreprocessConfig.slice_fit`). The inverse,
`slices_to_volume`, undoes the resize and the padding with the same geometry, so a volume
whose slices are already square at the input size round-trips bit for bit, and any volume
comes back on its original grid (interpolated values for probabilities, nearest for labels).

``spacing`` fits by physical size instead: each slice is resampled to ``target_mm`` per pixel in
both directions (from the volume's own voxel spacing) and centre-padded, or centre-cropped, to
the input size. Every patient's anatomy then has the same scale in the network's input whatever
its pixel spacing (0.57 vs 0.78 mm in 3D-IRCADb), and coronal/sagittal slices keep their true
proportions (1.6 mm slices beside 0.6 mm pixels would otherwise squash the liver 2-3x along z).
What a crop cuts off comes back as background (probability 0).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bench.config import PLANE_AXIS
from bench.errors import DataError

FITS = ("resize", "pad", "spacing")

# The largest stack of resampled slices (voxels, float32: 256 MB) that ``slice_fit="spacing"`` may
# allocate for one plane. A real CT stays far below it (a 1000-slice 0.625 mm scan at 3 mm per
# pixel: 16 M voxels coronally); a wrong voxel spacing (1000 mm) would ask for gigabytes and be
# killed by the OS or swap for minutes, so it is refused first, naming the file (`check_resample`).
MAX_RESAMPLED_VOXELS = 64 * 2**20


def slice_shape(volume_shape: tuple[int, int, int], plane: str) -> tuple[int, int]:
    axis = PLANE_AXIS[plane]
    return tuple(s for i, s in enumerate(volume_shape) if i != axis)  # type: ignore[return-value]


def num_slices(volume_shape: tuple[int, int, int], plane: str) -> int:
    return volume_shape[PLANE_AXIS[plane]]


def to_plane_stack(volume: np.ndarray | torch.Tensor, plane: str) -> np.ndarray | torch.Tensor:
    """(Z, Y, X) -> (N, H, W) with N the sliced axis (a view where possible)."""
    axis = PLANE_AXIS[plane]
    if isinstance(volume, torch.Tensor):
        return volume.movedim(axis, 0)
    return np.moveaxis(volume, axis, 0)


def from_plane_stack(stack: np.ndarray | torch.Tensor, plane: str) -> np.ndarray | torch.Tensor:
    """(N, H, W) -> (Z, Y, X), the inverse of `to_plane_stack`."""
    axis = PLANE_AXIS[plane]
    if isinstance(stack, torch.Tensor):
        return stack.movedim(0, axis)
    return np.moveaxis(stack, 0, axis)


def _pad_amounts(h: int, w: int) -> tuple[int, int, int, int]:
    side = max(h, w)
    top = (side - h) // 2
    left = (side - w) // 2
    return top, side - h - top, left, side - w - left


def slice_spacing(spacing: tuple[float, float, float], plane: str) -> tuple[float, float]:
    """The (row, column) pixel spacing in mm of a ``plane`` slice of a volume with (z, y, x) ``spacing``."""
    axis = PLANE_AXIS[plane]
    return tuple(float(s) for i, s in enumerate(spacing) if i != axis)  # type: ignore[return-value]


def scaled_shape(shape_hw: tuple[int, int], spacing_hw: tuple[float, float], target_mm: float) -> tuple[int, int]:
    """A slice's (H, W) once resampled to ``target_mm`` per pixel (at least one pixel each way)."""
    if target_mm <= 0 or min(spacing_hw) <= 0:
        raise ValueError(f"slice_fit 'spacing' needs a positive target and spacing, got {target_mm}, {spacing_hw}")
    return tuple(max(1, int(round(n * s / target_mm))) for n, s in zip(shape_hw, spacing_hw))  # type: ignore[return-value]


def resampled_voxels(shape: tuple[int, int, int], spacing: tuple[float, float, float], plane: str,
                     target_mm: float) -> int:
    """Voxels of one plane's stack of slices resampled to ``target_mm`` per pixel (before pad or crop)."""
    sh, sw = scaled_shape(slice_shape(shape, plane), slice_spacing(spacing, plane), target_mm)
    return num_slices(shape, plane) * sh * sw


def check_resample(shape: tuple[int, int, int], spacing: tuple[float, float, float], planes: tuple[str, ...] | list[str],
                   target_mm: float, source: object) -> None:
    """Refuse, before allocating, a volume whose resampling would exceed `MAX_RESAMPLED_VOXELS` (one line naming it)."""
    if target_mm <= 0 or min(spacing) <= 0:
        return  # scaled_shape names a bad spacing itself
    for plane in planes:
        n = resampled_voxels(tuple(int(v) for v in shape), tuple(float(v) for v in spacing), plane, target_mm)
        if n > MAX_RESAMPLED_VOXELS:
            mm = " x ".join(f"{float(v):g}" for v in spacing)
            raise DataError(
                f"{source}: volume {'x'.join(str(int(v)) for v in shape)} at {mm} mm resampled to {target_mm:g} mm per "
                f"pixel makes {n * 4 / 2**30:.1f} GB of {plane} slices, over the limit of "
                f"{MAX_RESAMPLED_VOXELS * 4 / 2**30:.2f} GB (bench.datasets.planes.MAX_RESAMPLED_VOXELS); "
                f"check the file's voxel spacing")


def _centre(n: int, size: int) -> tuple[int, int]:
    """(before, after) padding of a length-n axis to ``size``; negative values mean cropping."""
    before = (size - n) // 2
    return before, size - n - before


def _pad_or_crop(x: torch.Tensor, size: int, value: float) -> torch.Tensor:
    (t, b), (l, r) = _centre(x.shape[-2], size), _centre(x.shape[-1], size)
    return F.pad(x, (l, r, t, b), value=value)  # F.pad crops with negative amounts


def fit_slices(stack: torch.Tensor, size: int, fit: str, mode: str, pad_value: float = 0.0,
               spacing_hw: tuple[float, float] | None = None, target_mm: float = 0.0) -> torch.Tensor:
    """(N, H, W) -> (N, size, size). ``mode``: "linear" for images/probabilities, "nearest" for labels."""
    if fit not in FITS:
        raise ValueError(f"unknown slice_fit {fit!r} (known: {', '.join(FITS)})")
    x = stack.unsqueeze(1)
    h, w = x.shape[-2:]
    if fit == "spacing":
        if spacing_hw is None:
            raise ValueError("slice_fit 'spacing' needs the slice's pixel spacing")
        sh, sw = scaled_shape((h, w), spacing_hw, target_mm)
        if x.shape[0] * sh * sw > MAX_RESAMPLED_VOXELS:  # the backstop of `check_resample` (callers name the file)
            raise DataError(f"{x.shape[0]} slices of {h}x{w} at {spacing_hw} mm resampled to {target_mm:g} mm would "
                            f"allocate {x.shape[0] * sh * sw * 4 / 2**30:.1f} GB (over MAX_RESAMPLED_VOXELS)")
        if (sh, sw) != (h, w):
            x = _resize(x, (sh, sw), mode)
        return _pad_or_crop(x, size, pad_value).squeeze(1)
    if fit == "pad" and h != w:
        top, bottom, left, right = _pad_amounts(h, w)
        x = F.pad(x, (left, right, top, bottom), value=pad_value)
    if x.shape[-2:] != (size, size):
        x = _resize(x, (size, size), mode)
    return x.squeeze(1)


def unfit_slices(stack: torch.Tensor, shape_hw: tuple[int, int], fit: str, mode: str = "linear",
                 spacing_hw: tuple[float, float] | None = None, target_mm: float = 0.0) -> torch.Tensor:
    """(N, size, size) -> (N, H, W): the exact inverse geometry of `fit_slices`."""
    h, w = shape_hw
    x = stack.unsqueeze(1)
    if fit == "spacing":
        if spacing_hw is None:
            raise ValueError("slice_fit 'spacing' needs the slice's pixel spacing")
        sh, sw = scaled_shape((h, w), spacing_hw, target_mm)
        (t, b), (l, r) = _centre(sh, x.shape[-2]), _centre(sw, x.shape[-1])
        x = F.pad(x, (-l, -r, -t, -b), value=0.0)  # undo the pad (crop) or the crop (pad with background)
        if (sh, sw) != (h, w):
            x = _resize(x, (h, w), mode)
        return x.squeeze(1)
    if fit == "pad" and h != w:
        side = max(h, w)
        if x.shape[-2:] != (side, side):
            x = _resize(x, (side, side), mode)
        top, _, left, _ = _pad_amounts(h, w)
        x = x[..., top : top + h, left : left + w]
    elif x.shape[-2:] != (h, w):
        x = _resize(x, (h, w), mode)
    return x.squeeze(1)


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if mode == "nearest":
        dtype = x.dtype
        return F.interpolate(x.float(), size=size, mode="nearest-exact").to(dtype)
    return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False).to(x.dtype if x.is_floating_point() else torch.float32)


def volume_to_slices(
    volume: np.ndarray, plane: str, size: int, fit: str = "pad", mode: str = "linear", pad_value: float | None = None,
    spacing: tuple[float, float, float] | None = None, target_mm: float = 0.0,
) -> np.ndarray:
    """(Z, Y, X) -> (N, size, size) along ``plane``. Images pad with their minimum, labels with 0.

    ``spacing`` (z, y, x mm) and ``target_mm`` are needed by ``fit="spacing"`` only.
    """
    t = torch.from_numpy(np.ascontiguousarray(to_plane_stack(volume, plane)))
    if pad_value is None:
        pad_value = float(t.min()) if (mode == "linear" and t.numel()) else 0.0
    hw = slice_spacing(spacing, plane) if spacing is not None else None
    return fit_slices(t, size, fit, mode, pad_value, hw, target_mm).numpy()


def slices_to_volume(
    slices: np.ndarray | torch.Tensor, plane: str, volume_shape: tuple[int, int, int], fit: str = "pad",
    mode: str = "linear", spacing: tuple[float, float, float] | None = None, target_mm: float = 0.0,
) -> np.ndarray | torch.Tensor:
    """(N, size, size) -> (Z, Y, X) on the original grid; returns the input's kind (numpy or torch)."""
    as_numpy = isinstance(slices, np.ndarray)
    t = torch.from_numpy(slices) if as_numpy else slices
    expected = num_slices(volume_shape, plane)
    if t.shape[0] != expected:
        raise ValueError(f"{plane}: {t.shape[0]} slices for a volume of shape {volume_shape} (expected {expected})")
    hw = slice_spacing(spacing, plane) if spacing is not None else None
    back = unfit_slices(t, slice_shape(volume_shape, plane), fit, mode, hw, target_mm)
    vol = from_plane_stack(back, plane).contiguous()
    return vol.numpy() if as_numpy else vol
