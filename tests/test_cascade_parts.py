"""The cascade's building blocks (paper 3.3-3.9) at toy size: shapes, switches, Grad-CAM, ROI, patches."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from bench.config import CascadeConfig, RunConfig, get_profile
from bench.errors import ConfigError, DataError
from bench.models.cascade import (
    CascadeNet,
    LesionCascade,
    build_cascade,
    build_localizer,
    build_tuner,
    count_cascade_parameters,
    count_localizer_parameters,
    prior_from_liver,
    validate_cascade_config,
)
from bench.models.crf import crf_available
from bench.models.gradcam import grad_cam
from bench.models.localization import LocalizationNet
from bench.models.losses import MultiLevelLoss, bce_dice_loss
from bench.models.patches import (
    PATCH_MODES,
    area_ratio,
    extract_patches,
    level_patch_sizes,
    level_patches,
    patch_grid,
    patch_grid_inverse,
    select_patches,
    space_to_depth,
)
from bench.models.roi import box_prior, heat_to_prob, roi_from_heatmap
from bench.models.tuning import PAPER_TUNING_PARAMS, TuningNet, count_tuning_parameters

TINY = CascadeConfig(base_channels=4, loc_base_channels=4, dilation_rates=(1, 2), aspp_rates=(1, 2))
needs_crf = pytest.mark.skipif(not crf_available(), reason="pydensecrf2 not installed")


def _squares(n: int, gen: torch.Generator, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy slices with one bright square each; the square is the target."""
    x = torch.randn(n, 1, size, size, generator=gen) * 0.3
    y = torch.zeros(n, 1, size, size)
    for i in range(n):
        side = int(torch.randint(8, 13, (1,), generator=gen))
        r, c = torch.randint(0, size - side, (2,), generator=gen).tolist()
        x[i, 0, r : r + side, c : c + side] += 2.0
        y[i, 0, r : r + side, c : c + side] = 1.0
    return x, y


# ---------------------------------------------------------------- localization network + Grad-CAM


def test_localizer_shapes_and_layer_names() -> None:
    net = LocalizationNet(base=4, depth=4)
    assert set(net.gradcam_layers()) == {"bottleneck", "decoder1", "decoder2", "decoder3", "decoder4"}
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 1, 32, 32)
    with pytest.raises(ConfigError, match="divisible by 16"):
        net(torch.randn(1, 1, 24, 24))


def test_grad_cam_is_higher_inside_the_bright_square() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = LocalizationNet(base=8, depth=2, dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(40):
        x, y = _squares(8, gen)
        loss = bce_dice_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    x, y = _squares(4, gen)  # new images
    net.train()
    layer = net.gradcam_layers()["decoder2"]
    with torch.no_grad():  # callers run it without autograd
        heat = grad_cam(net, x, "decoder2")
    assert heat.shape == (4, 1, 32, 32)
    assert float(heat.min()) >= 0.0 and float(heat.max()) <= 1.0
    inside = (heat * y).sum((1, 2, 3)) / y.sum((1, 2, 3))
    outside = (heat * (1 - y)).sum((1, 2, 3)) / (1 - y).sum((1, 2, 3))
    assert bool((inside > outside + 0.3).all()), (inside, outside)
    # no side effects: hook removed, training mode restored, weight gradients untouched
    assert len(layer._forward_hooks) == 0
    assert net.training
    assert all(p.grad is None for p in net.parameters())


def test_grad_cam_all_zero_stays_zero_and_unknown_layer() -> None:
    net = LocalizationNet(base=4, depth=2, dropout=0.0).eval()
    with torch.no_grad():
        for p in net.bottleneck.parameters():
            p.zero_()  # bottleneck activations are ReLU(GroupNorm(0)) = 0
    heat = grad_cam(net, torch.randn(2, 1, 16, 16), "bottleneck")
    assert torch.equal(heat, torch.zeros_like(heat))
    with pytest.raises(ConfigError, match="decoder1"):
        grad_cam(net, torch.randn(1, 1, 16, 16), "decoder9")


def test_grad_cam_target_mask_and_logits() -> None:
    torch.manual_seed(1)
    net = LocalizationNet(base=4, depth=2)
    x = torch.randn(2, 1, 16, 16)
    mask = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    mask[:, :, :8] = True
    heat, logits = grad_cam(net, x, "decoder1", target_mask=mask, return_logits=True)
    assert heat.shape == logits.shape == (2, 1, 16, 16)
    assert not logits.requires_grad
    net.eval()
    assert torch.allclose(logits, net(x), atol=1e-6)


# ---------------------------------------------------------------- ROI and box prior


def test_heat_to_prob_sends_threshold_to_half() -> None:
    heat = torch.tensor([0.0, 0.15, 0.3, 0.65, 1.0])
    assert heat_to_prob(heat, 0.3).tolist() == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_roi_threshold() -> None:
    heat = torch.zeros(1, 1, 8, 8)
    heat[0, 0, 2:4, 2:4] = 0.5
    heat[0, 0, 5, 5] = 0.2
    roi = roi_from_heatmap(heat, 0.3)
    assert roi.dtype == torch.bool and int(roi.sum()) == 4
    with pytest.raises(ConfigError):
        roi_from_heatmap(heat, 1.5)
    with pytest.raises(ConfigError, match="needs the slices"):
        roi_from_heatmap(heat, 0.3, crf=True)


@needs_crf
def test_crf_snaps_the_roi_to_the_bright_region() -> None:
    """A heat blob offset from a bright square: the bilateral term pulls the ROI onto the square."""
    rng = np.random.default_rng(0)
    image = rng.normal(0, 0.2, (1, 1, 32, 32)).astype(np.float32)
    image[..., 8:24, 8:24] += 2.0
    heat = np.full((1, 1, 32, 32), 0.2, dtype=np.float32)
    heat[..., 6:20, 6:20] = 0.7
    heat_t, image_t = torch.from_numpy(heat), torch.from_numpy(image)
    truth = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    truth[..., 8:24, 8:24] = True
    plain = roi_from_heatmap(heat_t, 0.3)
    refined = roi_from_heatmap(heat_t, 0.3, crf=True, images=image_t)
    assert refined.shape == plain.shape and refined.dtype == torch.bool
    errors = lambda m: int((m ^ truth).sum())  # noqa: E731
    assert errors(refined) < errors(plain) / 4


def test_box_prior_on_a_constructed_mask() -> None:
    mask = torch.zeros(2, 1, 20, 20, dtype=torch.bool)
    mask[0, 0, 5:8, 4:10] = True  # 18 px component
    mask[0, 0, 6, 7:9] = False  # a hole does not change the box
    mask[0, 0, 15, 15] = True  # 1 px speckle: below min_area (0.01 * 400 = 4 px)
    mask[0, 0, 0:3, 18:20] = True  # touches the corner: growth is clipped
    prior = box_prior(mask, margin=0.1, min_area=0.01)  # grow by 2 px each side
    assert prior.dtype == torch.float32 and prior.shape == mask.shape
    expected = torch.zeros(20, 20)
    expected[3:10, 2:12] = 1.0
    expected[0:5, 16:20] = 1.0
    assert torch.equal(prior[0, 0], expected)
    assert torch.equal(prior[1, 0], torch.zeros(20, 20))  # empty ROI -> empty prior
    diagonal = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    diagonal[0, 0, 1, 1] = diagonal[0, 0, 2, 2] = True  # 8-connected: one component, one box
    assert int(box_prior(diagonal, 0.0, 0.0).sum()) == 4
    with pytest.raises(ConfigError):
        box_prior(mask, margin=-1.0, min_area=0.0)


# ---------------------------------------------------------------- patches (3.4 and Algorithm 1)


def test_patch_grid_order_shapes_and_inverse() -> None:
    x = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 2, 4, 4)
    grid = patch_grid(x, 2)
    assert grid.shape == (2, 2 * 4, 2, 2)
    assert torch.equal(grid[0, 1], x[0, 0, 0:2, 2:4])  # channel 0, patch row 0, column 1
    assert torch.equal(grid[1, 6], x[1, 1, 2:4, 0:2])  # channel 1, patch row 1, column 0
    assert torch.equal(patch_grid_inverse(grid, 2, 4, 4), x)
    assert torch.equal(patch_grid(x, 4), x)  # a patch the size of the map: one patch
    assert patch_grid(torch.zeros(1, 1, 8, 4), (4, 2)).shape == (1, 4, 4, 2)
    with pytest.raises(ConfigError):
        patch_grid(x, 3)
    assert level_patch_sizes(512, (1, 2, 3)) == [256, 128, 64]


def _numbered(b: int, c: int, h: int, w: int) -> torch.Tensor:
    """Image whose every value is unique and says where it is: b*1e6 + c*1e4 + row*100 + col."""
    bi, ci, ri, wi = torch.meshgrid(torch.arange(b), torch.arange(c), torch.arange(h), torch.arange(w), indexing="ij")
    return (bi * 1_000_000 + ci * 10_000 + ri * 100 + wi).to(torch.float64)


def _expected_pixel(mode: str, level: int, k: int, u: int, v: int, h: int, w: int) -> tuple[int, int, int]:
    """(input channel, row, column) that output channel k at feature position (u, v) must hold."""
    f = 2**level
    c, rest = divmod(k, f * f)
    i, j = divmod(rest, f)
    if mode == "tile":  # tile (i, j) of the feature map's size, offset (u, v) inside it
        return c, i * (h // f) + u, j * (w // f) + v
    return c, u * f + i, v * f + j  # unshuffle: the f x f block under (u, v)


def test_level_patches_hand_made_4x4() -> None:
    x = _numbered(1, 1, 4, 4)  # value = row * 100 + col
    tile, unshuffle = level_patches(x, 1, "tile"), level_patches(x, 1, "unshuffle")
    assert tile.shape == unshuffle.shape == (1, 4, 2, 2)
    # channel 1 = (i, j) = (0, 1); at (u, v) = (1, 0)
    assert tile[0, 1, 1, 0] == 102  # tile: pixel (0*2 + 1, 1*2 + 0) = (1, 2)
    assert unshuffle[0, 1, 1, 0] == 201  # unshuffle: pixel (1*2 + 0, 0*2 + 1) = (2, 1)
    # channel 2 = (1, 0) at (0, 1)
    assert tile[0, 2, 0, 1] == 201  # tile: pixel (1*2 + 0, 0*2 + 1) = (2, 1)
    assert unshuffle[0, 2, 0, 1] == 102  # unshuffle: pixel (0*2 + 1, 1*2 + 0) = (1, 2)
    # the four values stacked at one feature position: far apart (tile) vs one 2x2 block (unshuffle)
    assert tile[0, :, 0, 0].tolist() == [0, 2, 200, 202]
    assert unshuffle[0, :, 0, 0].tolist() == [0, 1, 100, 101]


@pytest.mark.parametrize("mode", PATCH_MODES)
@pytest.mark.parametrize("shape", [(16, 16), (16, 24), (24, 8)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_level_patches_every_channel_holds_its_pixel(mode: str, shape: tuple[int, int]) -> None:
    h, w = shape
    x = _numbered(2, 2, h, w)
    for level in (1, 2, 3):
        out = level_patches(x, level, mode)
        f = 2**level
        assert out.shape == (2, 2 * f * f, h // f, w // f)
        for b in range(2):
            for k in range(out.shape[1]):
                for u in range(out.shape[2]):
                    for v in range(out.shape[3]):
                        c, r, col = _expected_pixel(mode, level, k, u, v, h, w)
                        assert out[b, k, u, v] == b * 1_000_000 + c * 10_000 + r * 100 + col, (level, k, u, v)
    assert torch.equal(level_patches(x, 0, mode), x)  # level 0: the image itself


def test_level_patches_rejects_bad_input() -> None:
    x = torch.zeros(1, 1, 12, 12)
    with pytest.raises(ConfigError, match="tile, unshuffle"):
        level_patches(x, 1, "tiles")
    with pytest.raises(ConfigError, match="divisible"):
        level_patches(x, 3, "unshuffle")  # 12 is not divisible by 8
    with pytest.raises(ConfigError, match="divisible"):
        space_to_depth(x, 5)


def test_extract_and_select_patches() -> None:
    labels = torch.zeros(2, 8, 8, dtype=torch.uint8)
    labels[0, 0:4, 0:4] = 1  # patch (0,0,0): ratio 1.0 -> kept
    labels[0, 0:2, 4:6] = 1  # patch (0,0,4): 4/16 = 0.25 -> dropped
    labels[1, 4:6, 4:7] = 1  # patch (1,4,4): 6/16 = 0.375 -> kept
    labels[1, 0, 0] = 2  # lesion label counts as annotated: 1/16 -> dropped
    images = torch.randn(2, 8, 8)
    priors = torch.ones(2, 8, 8)
    ps = extract_patches(images, labels, priors, 4)
    p_img, p_lab, p_pri, pos = ps  # unpacks like a tuple
    assert p_img.shape == p_lab.shape == p_pri.shape == (8, 4, 4) and ps.num_patches == 8
    assert pos[5].tolist() == [1, 0, 4]
    for k in range(8):
        n, r, c = pos[k].tolist()
        assert torch.equal(p_img[k], images[n, r : r + 4, c : c + 4])
    assert area_ratio(p_lab).tolist() == pytest.approx([1.0, 0.25, 0.0, 0.0, 1 / 16, 0.0, 0.0, 0.375])
    keep = select_patches(p_lab, 0.3)
    assert keep.tolist() == [0, 7]
    kept = ps.select(0.3)
    assert [tuple(p) for p in kept.positions.tolist()] == [(0, 0, 0), (1, 4, 4)]
    assert extract_patches(images.numpy(), labels.numpy(), None, 8).priors is None
    with pytest.raises(ConfigError):
        extract_patches(images, labels, None, 3)
    with pytest.raises(DataError):
        extract_patches(images, labels[:1], None, 4)


# ---------------------------------------------------------------- tuning network


SWITCHES = [
    {},
    {"patch_levels": 0},
    {"patch_levels": 1},
    {"patch_levels": 2},
    {"convbox": False},
    {"aspp": False},
    {"residual": False},
    {"deep_supervision": False, "multilevel_loss": False},
]


@pytest.mark.parametrize("switch", SWITCHES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "all-on")
def test_tuning_net_switches_forward_backward(switch: dict) -> None:
    cfg = replace(TINY, **switch)
    torch.manual_seed(0)
    net = TuningNet(cfg, dropout=0.2)
    x = torch.randn(2, 1, 32, 32)
    prior = torch.zeros(2, 1, 32, 32)
    prior[:, :, 8:24, 8:24] = 1.0
    y = (torch.rand(2, 1, 32, 32) > 0.7).float()
    outs = net(x, prior)
    if cfg.deep_supervision:
        assert [tuple(o.shape[-2:]) for o in outs] == [(4, 4), (8, 8), (16, 16), (32, 32)]
    else:
        assert len(outs) == 1 and outs[0].shape == (2, 1, 32, 32)
    loss = MultiLevelLoss(enabled=cfg.multilevel_loss)(outs, y)
    loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)  # every parameter is used
    assert len(net.patch_proj) == cfg.patch_levels
    net.eval()
    assert net.predict(x, prior).shape == (2, 1, 32, 32)


def test_tuning_net_input_sizes_and_padding() -> None:
    net = TuningNet(TINY).eval()
    for size in (64, 16, 8, 24):
        x = torch.randn(1, 1, size, size)
        outs = net(x, torch.ones(1, 1, size, size))
        assert outs[-1].shape == (1, 1, size, size)
        assert [o.shape[-1] for o in outs] == [-(-size // s) for s in (8, 4, 2, 1)]
    assert net(torch.randn(1, 1, 32, 16), torch.ones(1, 1, 32, 16))[-1].shape == (1, 1, 32, 16)


def test_convbox_uses_the_prior_only_when_on() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 1, 32, 32)
    full, empty = torch.ones(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)
    on = TuningNet(TINY).eval()
    assert not torch.allclose(on.predict(x, full), on.predict(x, empty))
    off = TuningNet(replace(TINY, convbox=False)).eval()
    assert torch.equal(off.predict(x, full), off.predict(x, None))
    with pytest.raises(ConfigError, match="box prior"):
        on(x, None)
    with pytest.raises(ConfigError, match="box prior"):
        on(x, full[:, 0])  # (B, H, W) is not (B, 1, H, W)


@pytest.mark.parametrize("mode", PATCH_MODES)
@pytest.mark.parametrize("size", [(32, 48), (20, 28), (24, 24)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_tuning_net_patch_modes_forward_backward(mode: str, size: tuple[int, int]) -> None:
    """Both patch modes train, on sides divisible by 16 or not (padded), square or not; and the
    tensor each level's patch conv receives is exactly the mode's arrangement of the (padded) image."""
    h, w = size
    torch.manual_seed(0)
    net = TuningNet(replace(TINY, patch_mode=mode), dropout=0.2)
    seen: dict[int, torch.Tensor] = {}
    for level in (1, 2, 3):
        net.patch_proj[str(level)].register_forward_pre_hook(
            lambda _m, args, level=level: seen.__setitem__(level, args[0].detach().clone()))
    x = torch.randn(2, 1, h, w, dtype=torch.float32)
    prior = torch.zeros(2, 1, h, w)
    prior[:, :, 4:16, 4:16] = 1.0
    outs = net(x, prior)
    assert outs[-1].shape == (2, 1, h, w)
    MultiLevelLoss()(outs, (torch.rand(2, 1, h, w) > 0.7).float()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    padded = torch.nn.functional.pad(x, (0, -w % 16, 0, -h % 16), mode="replicate")
    ph, pw = padded.shape[-2:]
    for level, got in seen.items():
        f = 2**level
        assert got.shape == (2, f * f, ph // f, pw // f)
        for k in range(0, f * f, max(1, f * f // 8)):
            for u, v in ((0, 0), (ph // f - 1, pw // f - 1), (1 % (ph // f), 0)):
                _, r, col = _expected_pixel(mode, level, k, u, v, ph, pw)
                assert got[1, k, u, v] == padded[1, 0, r, col], (level, k, u, v)


def test_patch_modes_same_parameters_different_function() -> None:
    paper = get_profile("paper").cascade
    assert count_tuning_parameters(paper) == count_tuning_parameters(replace(paper, patch_mode="unshuffle"))
    torch.manual_seed(0)
    tile = TuningNet(TINY).eval()
    unshuffle = TuningNet(replace(TINY, patch_mode="unshuffle")).eval()
    unshuffle.load_state_dict(tile.state_dict())  # same parameter names and shapes
    x, prior = torch.randn(1, 1, 32, 32), torch.ones(1, 1, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(tile.predict(x, prior), unshuffle.predict(x, prior))
        off = replace(TINY, patch_levels=0)
        a, b = TuningNet(off).eval(), TuningNet(replace(off, patch_mode="unshuffle")).eval()
        b.load_state_dict(a.state_dict())
        assert torch.equal(a.predict(x, prior), b.predict(x, prior))  # no patches: the mode is moot


@pytest.mark.parametrize("norm, layer", [("group", torch.nn.GroupNorm), ("batch", torch.nn.BatchNorm2d),
                                         ("none", None)])
def test_cascade_norm_reaches_both_networks(norm: str, layer: type | None) -> None:
    cfg = _run_cfg(norm=norm)
    for net in (build_localizer(cfg), build_tuner(cfg)):
        norm_types = (torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm)
        norms = {type(m) for m in net.modules() if isinstance(m, norm_types)}
        if layer is None:
            assert not norms
        else:
            assert norms and all(issubclass(k, layer) for k in norms)
        assert all(m.bias is not None for m in net.modules() if isinstance(m, torch.nn.Conv2d)) == (norm == "none")


def test_batch_norm_tuner_trains_at_batch_one_on_a_16px_patch() -> None:
    """cascade.norm=batch: a 16x16 patch has a 1x1 bottleneck; at batch 1 plain BatchNorm raises."""
    torch.manual_seed(0)
    net = TuningNet(replace(TINY, norm="batch")).train()
    outs = net(torch.randn(1, 1, 16, 16), torch.ones(1, 1, 16, 16))
    MultiLevelLoss()(outs, torch.ones(1, 1, 16, 16)).backward()
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.BatchNorm2d(4).train()(torch.randn(1, 4, 1, 1))


def test_single_value_safe_batchnorm() -> None:
    from bench.models.cascade_blocks import SingleValueSafeBatchNorm2d

    bn = SingleValueSafeBatchNorm2d(3).train()
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(4.0)
    x = torch.full((1, 3, 1, 1), 5.0)
    assert torch.allclose(bn(x), torch.full_like(x, 2.0), atol=1e-3)  # (5 - 1) / sqrt(4)
    assert bn.running_mean.tolist() == [1.0] * 3  # a single value does not update the statistics
    bn(torch.randn(2, 3, 4, 4) + 10)
    assert bn.running_mean.min() > 1.5  # ordinary batches do


def test_cascade_config_rejects_unknown_patch_mode_and_norm() -> None:
    with pytest.raises(ConfigError, match=r"patch_mode='tiles' is not one of tile, unshuffle; did you mean tile\?"):
        CascadeConfig(patch_mode="tiles")
    with pytest.raises(ConfigError, match=r"norm='bn' is not one of group, batch, none"):
        CascadeConfig(norm="bn")
    with pytest.raises(ConfigError, match="patch_mode"):
        TuningNet(replace(TINY, patch_mode="shuffle"))
    with pytest.raises(ConfigError, match="norm"):
        build_localizer(_run_cfg(norm="layer"))


def test_tuning_net_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="patch_levels"):
        TuningNet(replace(TINY, patch_levels=4))
    with pytest.raises(ConfigError, match="dilation_rates"):
        TuningNet(replace(TINY, dilation_rates=()))


def test_parameter_count_near_the_paper() -> None:
    n = count_tuning_parameters(get_profile("paper").cascade)
    print(f"tuning network at the paper profile: {n:,} parameters (paper: {PAPER_TUNING_PARAMS:,})")
    assert abs(n - PAPER_TUNING_PARAMS) / PAPER_TUNING_PARAMS < 0.10
    small = count_tuning_parameters(replace(get_profile("paper").cascade, patch_levels=0))
    assert small < n  # patches widen the input of levels 1-3


# ---------------------------------------------------------------- the cascade


def _run_cfg(task: str = "liver", **cascade: object) -> RunConfig:
    prof = get_profile("smoke")
    prof = replace(prof, cascade=replace(prof.cascade, **cascade))
    return RunConfig(model="ours", task=task, profile=prof, device="cpu")


def test_cascade_end_to_end_at_64() -> None:
    torch.manual_seed(0)
    cfg = _run_cfg()
    model = build_cascade(cfg)
    assert isinstance(model, CascadeNet)
    x = torch.randn(2, 1, 64, 64)
    model.eval()
    with torch.no_grad():
        logits = model(x)
        prior, heat = model.roi(x)
        again = model.forward_with_prior(x, prior)
    assert logits.shape == prior.shape == heat.shape == (2, 1, 64, 64)
    assert set(prior.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(logits, again)
    # training the tuner: side outputs + multi-level loss, gradients reach the tuner only
    model.train()
    outs = model.tuner(x, prior)
    MultiLevelLoss(True)(outs, (torch.rand(2, 1, 64, 64) > 0.5).float()).backward()
    assert all(p.grad is None for p in model.localizer.parameters())


def test_cascade_without_foreground_gives_empty_prior() -> None:
    model = build_cascade(_run_cfg()).eval()
    with torch.no_grad():
        model.localizer.head.bias.fill_(-50.0)  # the localizer predicts nothing
    prior, heat = model.roi(torch.randn(2, 1, 64, 64))
    assert float(prior.sum()) == 0.0 and float(heat.sum()) == 0.0


@needs_crf
def test_cascade_with_crf_runs() -> None:
    model = build_cascade(_run_cfg(crf=True)).eval()
    prior, _ = model.roi(torch.randn(1, 1, 64, 64))
    assert prior.shape == (1, 1, 64, 64)


def test_cascade_without_convbox_skips_the_localizer() -> None:
    model = build_cascade(_run_cfg(convbox=False)).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model.tuner.predict(x, None))


def test_lesion_cascade() -> None:
    torch.manual_seed(0)
    for mode in ("liver_mask", "liver_box"):
        model = build_cascade(_run_cfg(task="lesion", lesion_prior=mode, lesion_roi="none")).eval()  # whole slices
        assert isinstance(model, LesionCascade)
        x = torch.randn(1, 1, 64, 64)
        with torch.no_grad():
            prior = model.lesion_prior(x)
            assert model(x).shape == (1, 1, 64, 64)
        assert torch.equal(prior, model.roi(x)[0])
        assert torch.equal(prior, model.liver.lesion_prior(x, mode))  # the engine asks the liver cascade
        assert set(prior.unique().tolist()) <= {0.0, 1.0}
    assert any(k.startswith("liver.localizer.") for k in model.state_dict())


def test_prior_from_liver_modes() -> None:
    logits = torch.full((1, 1, 16, 16), -5.0)
    logits[0, 0, 4:8, 4:6] = 5.0
    mask = prior_from_liver(logits, "liver_mask", 0.0, 0.0)
    assert int(mask.sum()) == 8
    boxes = prior_from_liver(logits, "liver_box", 0.125, 0.0)  # grown by 2 px
    assert int(boxes.sum()) == 8 * 6
    with pytest.raises(ConfigError):
        prior_from_liver(logits, "liver", 0.0, 0.0)


def test_validate_cascade_config() -> None:
    validate_cascade_config(CascadeConfig())
    with pytest.raises(ConfigError, match="deep_supervision"):
        validate_cascade_config(CascadeConfig(deep_supervision=False))
    with pytest.raises(ConfigError, match="gradcam_layer"):
        validate_cascade_config(CascadeConfig(gradcam_layer="decoder0"))
    with pytest.raises(ConfigError, match="lesion_prior"):
        validate_cascade_config(CascadeConfig(lesion_prior="boxes"))


def test_registered_as_ours() -> None:
    from bench.models import MODELS, build_model, count_parameters

    spec = MODELS.get("ours")
    assert spec.recipe == "cascade"
    cfg = _run_cfg()
    assert isinstance(build_model(cfg), CascadeNet)
    assert isinstance(build_localizer(cfg), LocalizationNet) and isinstance(build_tuner(cfg), TuningNet)
    paper = RunConfig(model="ours", profile=get_profile("paper"), device="cpu")
    assert count_parameters("ours", "paper") == count_cascade_parameters(paper)
    assert count_cascade_parameters(paper) == count_localizer_parameters(paper) + count_tuning_parameters(
        paper.profile.cascade
    )
