"""Slice a (Z, Y, X) volume along a plane to square network inputs, and put slices back.

Axial slices are ``volume[z]`` (Y, X), coronal ``volume[:, y]`` (Z, X), sagittal
``volume[:, :, x]`` (Z, Y). Each slice meets the square input either by ``resize`` (stretch)
or ``pad`` (centre-pad to a square, then resize; `PreprocessConfig.slice_fit`). The inverse,
`slices_to_volume`, undoes the resize and the padding with the same geometry, so a volume
whose slices are already square at the input size round-trips bit for bit, and any volume
comes back on its original grid (interpolated values for probabilities, nearest for labels).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bench.config import PLANE_AXIS

FITS = ("resize", "pad")


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


def fit_slices(stack: torch.Tensor, size: int, fit: str, mode: str, pad_value: float = 0.0) -> torch.Tensor:
    """(N, H, W) -> (N, size, size). ``mode``: "linear" for images/probabilities, "nearest" for labels."""
    if fit not in FITS:
        raise ValueError(f"unknown slice_fit {fit!r} (known: {', '.join(FITS)})")
    x = stack.unsqueeze(1)
    h, w = x.shape[-2:]
    if fit == "pad" and h != w:
        top, bottom, left, right = _pad_amounts(h, w)
        x = F.pad(x, (left, right, top, bottom), value=pad_value)
    if x.shape[-2:] != (size, size):
        x = _resize(x, (size, size), mode)
    return x.squeeze(1)


def unfit_slices(stack: torch.Tensor, shape_hw: tuple[int, int], fit: str, mode: str = "linear") -> torch.Tensor:
    """(N, size, size) -> (N, H, W): the exact inverse geometry of `fit_slices`."""
    h, w = shape_hw
    x = stack.unsqueeze(1)
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
    volume: np.ndarray, plane: str, size: int, fit: str = "pad", mode: str = "linear", pad_value: float | None = None
) -> np.ndarray:
    """(Z, Y, X) -> (N, size, size) along ``plane``. Images pad with their minimum, labels with 0."""
    t = torch.from_numpy(np.ascontiguousarray(to_plane_stack(volume, plane)))
    if pad_value is None:
        pad_value = float(t.min()) if (mode == "linear" and t.numel()) else 0.0
    return fit_slices(t, size, fit, mode, pad_value).numpy()


def slices_to_volume(
    slices: np.ndarray | torch.Tensor, plane: str, volume_shape: tuple[int, int, int], fit: str = "pad", mode: str = "linear"
) -> np.ndarray | torch.Tensor:
    """(N, size, size) -> (Z, Y, X) on the original grid; returns the input's kind (numpy or torch)."""
    as_numpy = isinstance(slices, np.ndarray)
    t = torch.from_numpy(slices) if as_numpy else slices
    expected = num_slices(volume_shape, plane)
    if t.shape[0] != expected:
        raise ValueError(f"{plane}: {t.shape[0]} slices for a volume of shape {volume_shape} (expected {expected})")
    back = unfit_slices(t, slice_shape(volume_shape, plane), fit, mode)
    vol = from_plane_stack(back, plane).contiguous()
    return vol.numpy() if as_numpy else vol
