"""The lesion stage's liver ROI (bench/models/lesion_roi.py): geometry, exact inverse, one cut for all."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from bench.config import RunConfig, get_profile, override
from bench.errors import ConfigError
from bench.models.lesion_roi import (
    BACKGROUND_LOGIT,
    LesionRoi,
    RoiGeometry,
    Window,
    crop_roi,
    data_profile,
    paste_roi,
    roi_geometry,
    roi_window,
    uses_roi,
)

GEO = RoiGeometry(size=16, fine=32, margin=1, min_area=0.0)  # zoom 2


def _mask(r0: int, r1: int, c0: int, c1: int, size: int = 16) -> np.ndarray:
    m = np.zeros((size, size), dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def test_window_is_the_grown_liver_box_on_the_fine_grid():
    w = roi_window(_mask(4, 8, 5, 11), GEO)
    # box rows 4..8 grown by 1 -> 3..9, zoom 2 -> 6..18; cols 5..11 -> 4..12 -> 8..24
    assert (w.r0, w.r1, w.c0, w.c1) == (6, 18, 8, 24)
    assert w.side == 16  # the box fits in the input: the window is the input size, no resampling
    assert w.top == 6 - (16 - 12) // 2 and w.left == 8  # centred on the box
    assert w.top <= w.r0 and w.r1 <= w.top + w.side and w.left <= w.c0 and w.c1 <= w.left + w.side
    # the margin is clipped at the slice's edge
    w = roi_window(_mask(0, 3, 14, 16), GEO)
    assert (w.r0, w.c1) == (0, 32)


def test_a_box_larger_than_the_input_widens_the_window_never_cuts_the_box():
    w = roi_window(_mask(1, 15, 2, 12), GEO)  # grown 0..16 x 1..13 -> fine 0..32 x 2..26
    assert (w.r0, w.r1, w.c0, w.c1) == (0, 32, 2, 26) and w.side == 32 and (w.top, w.left) == (0, -2)


def test_no_predicted_liver_means_no_window_and_speckle_is_ignored():
    assert roi_window(np.zeros((16, 16), bool), GEO) is None
    geo = replace(GEO, min_area=0.01)  # 0.01 * 256 = 2.56 px
    assert roi_window(_mask(3, 4, 3, 5), geo) is None  # a 2-px component is speckle
    assert roi_window(_mask(3, 5, 3, 5), geo) is not None


def test_label_round_trip_is_exact_inside_the_box_and_background_outside():
    rng = np.random.default_rng(0)
    label = torch.from_numpy(rng.integers(0, 3, (32, 32)).astype(np.uint8))
    w = roi_window(_mask(4, 8, 5, 11), GEO)
    roi = crop_roi(label, w, GEO.size, "nearest")
    assert roi.shape == (16, 16) and roi.dtype == torch.uint8
    back = paste_roi(roi, w, GEO.fine, 0, "nearest")
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[w.r0:w.r1, w.c0:w.c1] = True
    assert torch.equal(back[inside], label[inside])
    assert not back[~inside].any()
    # probabilities (linear) too: a pure crop and paste at W == S
    p = torch.from_numpy(rng.random((32, 32)).astype(np.float32))
    assert torch.equal(paste_roi(crop_roi(p, w, 16), w, 32)[inside], p[inside])


def test_integer_zoom_out_round_trip_is_exact_on_block_constant_labels():
    rng = np.random.default_rng(1)
    w = Window(r0=2, r1=30, c0=4, c1=28, top=0, left=0, side=32)  # W = 2 S
    blocks = rng.integers(0, 3, (16, 16)).astype(np.uint8)
    label = torch.from_numpy(np.kron(blocks, np.ones((2, 2), np.uint8)))  # constant on the 2x2 blocks
    roi = crop_roi(label, w, 16, "nearest")
    assert torch.equal(roi, torch.from_numpy(blocks))
    back = paste_roi(roi, w, 32, 0, "nearest")
    assert torch.equal(back[2:30, 4:28], label[2:30, 4:28]) and back.sum() == label[2:30, 4:28].sum()


def test_window_beyond_the_slice_is_padded_with_the_slice_minimum():
    img = torch.arange(32 * 32, dtype=torch.float32).reshape(32, 32) + 5.0
    w = Window(r0=0, r1=8, c0=0, c1=8, top=-4, left=-6, side=16)
    roi = crop_roi(img, w, 16)
    assert torch.equal(roi[4:, 6:], img[:12, :10]) and torch.all(roi[:4] == 5.0) and torch.all(roi[:, :6] == 5.0)


# ---------------------------------------------------------------- profiles and runs


def _cfg(model: str, task: str = "lesion", profile: str = "cpu", **sets) -> RunConfig:
    return override(RunConfig(model=model, task=task, profile=get_profile(profile)), sets)


def test_cpu_profile_cuts_at_1_mm_and_demo_zooms_2x_paper_keeps_whole_slices():
    ours = _cfg("ours")
    grid = data_profile(ours)
    assert (grid.input_size, grid.preprocess.spacing_mm) == (384, 1.0)
    assert roi_geometry(ours.profile) == RoiGeometry(128, 384, 3, ours.profile.cascade.box_min_area)
    assert data_profile(_cfg("ours", profile="demo")).input_size == 128
    assert data_profile(_cfg("ours", profile="paper")) == get_profile("paper")
    # the liver stage, a plain baseline and the channel prior keep the liver grid; the crop prior gets ours' cut
    assert data_profile(_cfg("ours", task="liver")) == get_profile("cpu")
    assert not uses_roi(_cfg("unet")) and not uses_roi(_cfg("unet", **{"profile.model.liver_prior": "channel"}))
    crop = _cfg("unet", **{"profile.model.liver_prior": "crop"})
    fine = data_profile(crop)
    assert uses_roi(crop) and (fine.input_size, fine.preprocess) == (grid.input_size, grid.preprocess)  # one cache
    assert roi_geometry(crop.profile) == roi_geometry(ours.profile)


def test_a_roi_grid_coarser_than_the_liver_grid_is_refused():
    with pytest.raises(ConfigError, match="coarser than the liver grid"):
        data_profile(_cfg("ours", **{"profile.cascade.lesion_roi_spacing_mm": 4.0}))
    with pytest.raises(ConfigError):
        _cfg("ours", profile="demo", **{"profile.cascade.lesion_roi_zoom": 0.5})


# ---------------------------------------------------------------- one cut for ours and the crop baseline


def _models(size: int = 32):
    """ours' lesion cascade and U-Net + crop prior, sharing one liver cascade's weights (smoke profile)."""
    from bench.models import build_model

    sets = {"profile.input_size": size}
    ours = build_model(_cfg("ours", profile="smoke", **sets)).eval()
    unet = build_model(_cfg("unet", profile="smoke", **sets, **{"profile.model.liver_prior": "crop"})).eval()
    unet.liver.load_state_dict(ours.liver.state_dict())
    return ours, unet


def _liver_logits(x: torch.Tensor) -> torch.Tensor:
    """A stand-in liver cascade: liver where the coarse slice is bright (a known, slice-dependent mask)."""
    return (x - 0.5) * 10.0


def test_ours_and_the_crop_baseline_see_the_identical_crop_of_the_same_prior():
    ours, unet = _models()
    assert ours.cut.geo == unet.cut.geo == RoiGeometry(32, 64, 3, ours.cfg.box_min_area)
    for model in (ours, unet):
        model.liver.forward = _liver_logits  # the same prior for both, known to the test
    x = torch.zeros(3, 1, 64, 64)
    x[0, 0, 10:30, 20:50] = 1.0  # a liver-bright block
    x[1, 0, 40:60, 4:20] = 1.0
    x[:, 0] += 0.01 * torch.randn(64, 64)  # texture, so equal crops cannot be equal by accident
    # slice 2: no liver
    seen: dict[str, torch.Tensor] = {}
    ours.tuner.predict = lambda image, prior: (seen.__setitem__("ours", image.clone()), image[:, :1] * 0 + 3.0)[1]
    unet.net.forward = lambda image: (seen.__setitem__("unet", image.clone()), image * 0 + 3.0)[1]
    with torch.no_grad():
        out_ours, out_unet = ours(x), unet(x)
    assert seen["ours"].shape == (2, 1, 32, 32) and torch.equal(seen["ours"], seen["unet"])
    assert torch.equal(out_ours, out_unet)
    assert torch.all(out_ours[2] == BACKGROUND_LOGIT)  # the slice without liver: empty lesion prediction
    rois = ours.cut.inputs(x, _liver_logits, ours.prior_of_liver)
    for i, out in ((0, out_ours[0, 0]), (1, out_ours[1, 0])):
        w = rois.windows[i]
        assert torch.allclose(out[w.r0:w.r1, w.c0:w.c1], torch.tensor(3.0))  # inside the box: the network's answer
        assert (out > 2.9).sum() == (w.r1 - w.r0) * (w.c1 - w.c0)  # outside: background
        assert torch.all((out == BACKGROUND_LOGIT) | (out > 2.9))
    # the liver prior ours' tuner receives is cut with the same window
    assert torch.equal(rois.priors[0, 0], crop_roi(torch.nn.functional.interpolate(
        ours.prior_of_liver(_liver_logits(torch.nn.functional.avg_pool2d(x, 2))), scale_factor=2)[0, 0],
        rois.windows[0], 32, "nearest"))


def test_a_batch_without_any_liver_never_calls_the_lesion_network():
    ours, _ = _models()
    ours.liver.forward = lambda x: torch.full_like(x, -5.0)
    ours.tuner.predict = lambda image, prior: pytest.fail("called without a ROI")
    with torch.no_grad():
        out = ours(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 1, 64, 64) and torch.all(out == BACKGROUND_LOGIT)


def test_the_roi_cache_holds_exactly_the_crops_inference_cuts(tmp_path):
    """Training crops (bench.engine.roi_cache) are the inference crops, slices without liver skipped."""
    from bench.engine.roi_cache import RoiCache, write_case

    rng = np.random.default_rng(2)
    images = (0.1 * rng.normal(size=(4, 64, 64))).astype(np.float16)
    images[0, 10:30, 20:40] += 3  # fits: a pure crop
    images[2, 30:60, 5:60] += 3  # wider than the input: the window grows to 55+ px, resized to 32
    labels = np.zeros((4, 64, 64), np.uint8)
    labels[0, 12:28, 22:38] = 1
    labels[0, 15:20, 30:35] = 2
    labels[3, 5:8, 5:8] = 2  # a lesion on a slice without predicted liver: outside the ROI

    class Source:
        def images(self, case, plane):
            return images

        def labels(self, case, plane):
            return labels

    cut = LesionRoi(RoiGeometry(32, 64, 2, 0.0))

    def liver(x):
        return (x - 1.5) * 10.0

    def prior(logits):
        return (logits > 0).float()

    write_case(Source(), "7", "axial", "lesion", cut, liver, prior, tmp_path, torch.device("cpu"))
    cache = RoiCache(tmp_path, 32)
    rois = cut.inputs(torch.from_numpy(images.astype(np.float32))[:, None], liver, prior)
    assert rois.keep == [0, 2]
    assert np.array_equal(cache.windows("7", "axial")[:, 0], [0, 2])
    assert [tuple(r[1:]) for r in cache.windows("7", "axial")] == [tuple(rois.windows[i]) for i in (0, 2)]
    assert np.array_equal(cache.images("7", "axial"), rois.images[:, 0].numpy().astype(np.float16))
    assert np.array_equal(cache.priors("7", "axial"), rois.priors[:, 0].numpy().astype(np.uint8))
    assert rois.windows[0].side == 32 and rois.windows[2].side > 32  # the wide slice was cut coarser
    table = cache.slice_table(["7"], "axial")
    assert list(table["lesion_px"]) == [25, 0] and list(table["index"]) == [0, 1]
    assert cache.coverage(["7"], "axial") == pytest.approx(25 / 34)  # the missed slice's 9 px count against it


def test_a_liver_cascade_that_finds_no_liver_anywhere_stops_the_lesion_run_in_one_line(tmp_path):
    from types import SimpleNamespace

    from bench.engine.roi_cache import roi_context
    from bench.errors import DataError

    images = np.zeros((3, 64, 64), np.float16)

    class Source:
        def images(self, case, plane):
            return images

        def labels(self, case, plane):
            return np.zeros((3, 64, 64), np.uint8)

    info = SimpleNamespace(is_main=True, barrier=lambda: None)
    cfg = _cfg("ours", profile="smoke", **{"profile.input_size": 32, "results": str(tmp_path)})
    ctx = SimpleNamespace(cfg=cfg, cache=Source(), splits={"train": ["0"], "val": ["1"], "test": []},
                          info=info, device=torch.device("cpu"))
    cut = LesionRoi(roi_geometry(cfg.profile))

    def prior(logits):
        return (logits > 0).float()

    with pytest.raises(DataError, match="no liver on any training slice"):
        roi_context(ctx, cut, torch.nn.Identity(), prior)  # logits = the zero image: no liver
    images[1, 10:40, 10:40] = 1.0  # one slice with liver: the run goes on
    import shutil

    from bench.paths import run_dir

    shutil.rmtree(run_dir(cfg) / "roi")  # the cut of the liver-less cascade is not reused

    with pytest.raises(TypeError):  # past the guard: the SimpleNamespace is no dataclass to replace
        roi_context(ctx, cut, torch.nn.Identity(), prior)
