"""Volume inference glue: batching, exact plane round trips, fusion and connected components."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.engine.infer import fuse_majority, fuse_soft, postprocess, predict_slices, predict_volume
from bench.errors import ConfigError


def sigmoid_fn(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_predict_slices_batches_and_no_grad(batch_size: int) -> None:
    slices = torch.randn(7, 8, 8)
    calls = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32
        assert not torch.is_grad_enabled()
        return torch.sigmoid(x)

    out = predict_slices(fn, slices, batch_size=batch_size)
    assert out.shape == (7, 8, 8) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.sigmoid(slices))
    assert sum(calls) == 7 and max(calls) <= batch_size


def test_predict_slices_grad_flag_and_3d_output() -> None:
    w = torch.tensor(2.0, requires_grad=True)

    def fn(x: torch.Tensor) -> torch.Tensor:
        assert torch.is_grad_enabled()
        y = torch.sigmoid(w * x)
        (g,) = torch.autograd.grad(y.sum(), w, retain_graph=True)  # e.g. Grad-CAM differentiates inside
        assert torch.isfinite(g)
        return y[:, 0]  # (B, S, S) is accepted too

    out = predict_slices(fn, np.zeros((2, 4, 4), np.float32), grad=True)
    assert not out.requires_grad
    torch.testing.assert_close(out, torch.full((2, 4, 4), 0.5))


def test_predict_slices_rejects_wrong_output() -> None:
    with pytest.raises(ValueError, match="channels"):
        predict_slices(lambda x: torch.cat([x, x], 1), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        predict_slices(lambda x: x[:, 0, :2], torch.zeros(2, 4, 4))


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize("fit", ["pad", "resize"])
def test_predict_volume_square_slices_round_trip_exactly(plane: str, fit: str) -> None:
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(16, 16, 16)).astype(np.float32)
    probs = predict_volume(sigmoid_fn, volume, plane, input_size=16, fit=fit, batch_size=5)
    assert probs.shape == volume.shape and probs.dtype == np.float32
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-volume)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize("fit", ["pad", "resize"])
def test_predict_volume_any_shape_comes_back_on_its_grid(plane: str, fit: str) -> None:
    # A smooth volume and a point-wise function: resizing there and back changes values only a little,
    # and each voxel's probability must come from its own location (no flips, no axis swaps). With
    # ``pad`` the outermost voxels blend with the padding under bilinear resizing: compare the interior.
    z, y, x = np.meshgrid(np.linspace(-1, 1, 10), np.linspace(-1, 1, 24), np.linspace(-1, 1, 18), indexing="ij")
    volume = (2 * z + y - 0.5 * x).astype(np.float32)
    probs = predict_volume(sigmoid_fn, volume, plane, input_size=32, fit=fit)
    assert probs.shape == volume.shape
    expected = 1 / (1 + np.exp(-volume))
    inner = (slice(1, -1),) * 3
    assert np.abs(probs[inner] - expected[inner]).max() < 0.01  # a flip or swap would be off by ~0.5


def test_predict_volume_bad_plane() -> None:
    with pytest.raises(ConfigError, match="plane"):
        predict_volume(sigmoid_fn, np.zeros((4, 4, 4), np.float32), "oblique", 4)


def test_fuse_soft_is_the_mean_and_keeps_kind() -> None:
    a, b, c = (np.full((2, 3, 4), v, np.float32) for v in (0.9, 0.2, 0.4))
    fused = fuse_soft([a, b, c])
    assert isinstance(fused, np.ndarray) and fused.dtype == np.float32
    np.testing.assert_allclose(fused, 0.5, atol=1e-6)
    t = fuse_soft([torch.from_numpy(a), torch.from_numpy(b)])
    assert isinstance(t, torch.Tensor)
    torch.testing.assert_close(t, torch.full((2, 3, 4), 0.55))
    with pytest.raises(ValueError, match="shape"):
        fuse_soft([a, a[:1]])
    with pytest.raises(ValueError):
        fuse_soft([])


def test_soft_voting_differs_from_majority_where_one_plane_is_confident() -> None:
    # two planes slightly below the threshold, one very sure: soft voting says foreground, majority not
    planes = [np.full((1, 1, 2), p, np.float32) for p in (0.45, 0.45, 0.99)]
    planes[0][0, 0, 1] = planes[1][0, 0, 1] = 0.6  # second voxel: two of three above
    planes[2][0, 0, 1] = 0.0
    soft = fuse_soft(planes) > 0.5
    hard = fuse_majority(planes)
    assert soft.tolist() == [[[True, False]]]
    assert hard.tolist() == [[[False, True]]]
    assert fuse_majority([torch.from_numpy(p) for p in planes]).tolist() == [[[False, True]]]


def _blobs() -> np.ndarray:
    m = np.zeros((10, 12, 12), bool)
    m[1:6, 1:6, 1:6] = True  # 125 voxels
    m[8, 10, 10] = True  # 1 voxel
    m[7:9, 1:3, 8:10] = True  # 8 voxels
    m[6, 6, 6] = True  # touches the big box only at a corner: separate with 6-connectivity
    return m


def test_postprocess_largest_and_min_size() -> None:
    m = _blobs()
    largest = postprocess(m, "largest")
    assert largest.sum() == 125 and largest[1:6, 1:6, 1:6].all()
    sized = postprocess(m, "min_size", min_voxels=5)
    assert sized.sum() == 125 + 8 and not sized[8, 10, 10] and not sized[6, 6, 6]
    assert postprocess(m, "largest", connectivity=3).sum() == 126  # corner-connected voxel joins
    np.testing.assert_array_equal(postprocess(m, "none"), m)
    empty = np.zeros((3, 3, 3), bool)
    assert not postprocess(empty, "largest").any()
    with pytest.raises(ConfigError):
        postprocess(m, "biggest")
