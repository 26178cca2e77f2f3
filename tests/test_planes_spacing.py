"""slice_fit="spacing": slices at a fixed mm per pixel, so anatomy has one scale across patients."""

from __future__ import annotations

import numpy as np
import pytest

from bench.datasets.planes import slices_to_volume, volume_to_slices


def ball(shape, spacing, radius_mm):
    grids = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    return (sum(g**2 for g in grids) <= radius_mm**2).astype(np.uint8)


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_same_ball_has_the_same_size_in_the_input_whatever_the_spacing(plane):
    """A 40 mm ball in a 0.57 mm and in a 0.78 mm scan (1.6 mm slices) covers the same input pixels."""
    areas = []
    for spacing, shape in (((1.6, 0.57, 0.57), (80, 240, 240)), ((1.6, 0.78, 0.78), (80, 176, 176))):
        vol = ball(shape, spacing, 40.0)
        slices = volume_to_slices(vol, plane, 64, "spacing", "nearest", 0.0, spacing, target_mm=2.0)
        areas.append(int(slices.max(axis=0).sum()))  # the largest cross-section, in input pixels
    expected = np.pi * (40.0 / 2.0) ** 2  # pi r^2 at 2 mm per pixel
    assert all(abs(a - expected) / expected < 0.08 for a in areas), areas


def test_pure_padding_round_trips_exactly_and_pixel_fit_squashes():
    spacing = (2.0, 1.0, 1.0)
    vol = np.random.default_rng(0).integers(0, 3, size=(10, 20, 30)).astype(np.uint8)
    # target 1 mm on y/x: axial slices are only padded, so the labels come back bit for bit
    axial = volume_to_slices(vol, "axial", 32, "spacing", "nearest", 0.0, spacing, target_mm=1.0)
    back = slices_to_volume(axial, "axial", vol.shape, "spacing", "nearest", spacing, 1.0)
    np.testing.assert_array_equal(back, vol)
    # coronal slices (z, x): z is stretched to 20 rows at 1 mm (true proportions), pad mode keeps 10
    coronal = volume_to_slices(vol, "coronal", 32, "spacing", "nearest", 0.0, spacing, target_mm=1.0)
    ones = volume_to_slices(np.ones_like(vol), "coronal", 32, "spacing", "nearest", 0.0, spacing, target_mm=1.0)
    assert coronal.shape == (20, 32, 32) and ones[0].any(axis=1).sum() == 20 and ones[0].any(axis=0).sum() == 30
    back = slices_to_volume(coronal, "coronal", vol.shape, "spacing", "nearest", spacing, 1.0)
    np.testing.assert_array_equal(back, vol)  # 2x nearest up, then down: exact


def test_what_a_crop_cuts_off_comes_back_as_background():
    spacing = (1.0, 1.0, 1.0)
    probs = np.ones((4, 40, 40), dtype=np.float32)
    fitted = volume_to_slices(probs, "axial", 32, "spacing", "linear", 0.0, spacing, target_mm=1.0)
    assert fitted.shape == (4, 32, 32) and fitted.min() == 1.0  # the centre 32 x 32 of 40 x 40
    back = slices_to_volume(fitted, "axial", probs.shape, "spacing", "linear", spacing, 1.0)
    assert back[:, 4:36, 4:36].min() == 1.0 and back[:, :4].max() == 0.0 and back[:, :, 36:].max() == 0.0


def test_spacing_fit_needs_a_target():
    from bench.config import RunConfig, get_profile, override
    from bench.errors import ConfigError

    with pytest.raises(ConfigError, match="spacing_mm > 0"):
        override(RunConfig(model="unet", profile=get_profile("smoke")), {"profile.preprocess.slice_fit": "spacing"})


def test_window_statistics_give_the_same_organ_the_same_value_in_every_patient():
    """The same 110 HU liver in a tight and a wide field of view: per-patient z-scores disagree,
    the window's fixed statistics do not (and the cache applies the same numbers as predict)."""
    from bench.config import PreprocessConfig
    from bench.datasets.cache import preprocess_to_npy
    from bench.datasets.preprocess import preprocess_volume

    def scan(fov_air: int) -> np.ndarray:
        vol = np.full((4, 40 + 2 * fov_air, 40 + 2 * fov_air), -1000, dtype=np.int16)
        vol[:, fov_air:fov_air + 40, fov_air:fov_air + 40] = 40  # soft tissue
        vol[:, fov_air + 10:fov_air + 30, fov_air + 10:fov_air + 30] = 110  # liver
        return vol

    def liver_value(vol: np.ndarray, cfg: PreprocessConfig) -> float:
        out = preprocess_volume(vol, cfg)
        return float(out[0, out.shape[1] // 2, out.shape[2] // 2])

    patient, window = PreprocessConfig(median_size=0), PreprocessConfig(median_size=0, zscore_stats="window")
    tight, wide = scan(2), scan(30)
    assert abs(liver_value(tight, patient) - liver_value(wide, patient)) > 0.5
    assert liver_value(tight, window) == liver_value(wide, window) == pytest.approx((110 - 50) / 75)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        stats = preprocess_to_npy(wide, window, Path(tmp) / "v.npy")
        cached = np.load(Path(tmp) / "v.npy")
    assert (stats["mean"], stats["std"]) == (50.0, 75.0)
    np.testing.assert_allclose(cached.astype(np.float32), preprocess_volume(wide, window), atol=2e-3)
