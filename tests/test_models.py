"""Model registry and baselines. Every registered model is iterated (timm's tests/test_models.py
pattern), so a model is tested the day it is registered -- the cascade ("ours") included: its
module must honour the same (B, 1, H, W) -> (B, 1, H, W) logits contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.config import RunConfig, get_profile, override
from bench.errors import ConfigError
from bench.models import MODELS, ModelSpec, build_model, count_parameters, get_model_spec, model_names, register_model

BASELINES = tuple(model_names("baseline"))  # from the registry: UNet++ and any future baseline included
SMP_MODELS = ("unet", "deeplabv3")


def smoke_cfg(name: str, **changes: object) -> RunConfig:
    cfg = RunConfig(model=name, profile=get_profile("smoke"), device="cpu")
    return override(cfg, changes) if changes else cfg


def test_builtin_baselines_registered() -> None:
    for name in BASELINES:
        spec = get_model_spec(name)
        assert isinstance(spec, ModelSpec) and spec.recipe == "slices" and spec.description
    assert {get_model_spec(n).recipe for n in MODELS.names()} <= {"slices", "cascade"}


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("size", [64, 32])
def test_forward_backward_contract(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(smoke_cfg(name))
    assert isinstance(model, nn.Module)
    model.train()
    x = torch.randn(2, 1, size, size)
    y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 1, size, size)
    assert torch.isfinite(y).all()
    y.float().pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", MODELS.names())
def test_eval_batch_one(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(smoke_cfg(name)).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 1, 64, 64))
    assert y.shape == (1, 1, 64, 64) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", MODELS.names())
def test_count_parameters_smoke(name: str) -> None:
    n = count_parameters(name, "smoke")
    assert n > 0
    if get_model_spec(name).count is None:  # meta-device count == a real CPU build
        assert n == sum(p.numel() for p in build_model(smoke_cfg(name)).parameters())


@pytest.mark.parametrize(
    "name, low, high",
    [
        ("segnet", 29.0e6, 30.0e6),  # Badrinarayanan et al. report 29.5 M for SegNet
        ("unet", 23.0e6, 26.0e6),  # smp Unet + ResNet-34: 24.4 M
        ("deeplabv3", 24.0e6, 28.0e6),  # smp DeepLabV3 + ResNet-34: 26.0 M
    ],
)
def test_paper_profile_parameter_counts(name: str, low: float, high: float) -> None:
    assert low <= count_parameters(name, "paper") <= high


@pytest.mark.parametrize("name", BASELINES)
def test_width_scales_parameters(name: str) -> None:
    narrow = sum(p.numel() for p in build_model(smoke_cfg(name, **{"profile.model.width": 0.125})).parameters())
    wide = sum(p.numel() for p in build_model(smoke_cfg(name, **{"profile.model.width": 0.5})).parameters())
    assert narrow < wide


@pytest.mark.parametrize("name", BASELINES)
def test_dropout_rate_from_config(name: str) -> None:
    model = build_model(smoke_cfg(name, **{"profile.model.dropout": 0.3}))
    rates = {m.p for m in model.modules() if isinstance(m, (nn.Dropout, nn.Dropout2d))}
    assert rates == {0.3}


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("key, value", [("profile.model.width", 0.0), ("profile.model.dropout", 1.0)])
def test_bad_model_config_is_config_error(name: str, key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=key.split(".")[-1]):
        build_model(smoke_cfg(name, **{key: value}))


def test_unknown_names() -> None:
    with pytest.raises(ConfigError, match="did you mean unet"):
        build_model(RunConfig(model="unte"))
    with pytest.raises(ConfigError, match="resnet18"):
        build_model(smoke_cfg("unet", **{"profile.model.encoder": "resnet181"}))


def test_register_model_rejects_duplicates_and_bad_recipes() -> None:
    with pytest.raises(ConfigError, match="already registered"):
        register_model("unet")(lambda cfg: nn.Identity())
    with pytest.raises(ConfigError, match="recipe"):
        register_model("never-added", recipe="")  # a name the engine's registry checks when planned
                                                   # (tests/test_registry.py: unknown recipe)


def test_requirements_come_from_the_specs() -> None:
    from dataclasses import replace

    from bench.config import RunConfig, get_profile
    from bench.models import requirements

    lesion = RunConfig(model="ours", task="lesion", plane="coronal", profile=get_profile("smoke"))
    assert [(c.model, c.task, c.plane) for c in requirements(lesion)] == [("ours", "liver", "coronal")]
    assert requirements(replace(lesion, task="liver")) == []
    assert requirements(replace(lesion, model="unet")) == []  # a baseline needs nothing
    fused = requirements(replace(lesion, model="unet", plane="fused"))
    assert [c.plane for c in fused] == ["axial", "coronal", "sagittal"] and {c.task for c in fused} == {"lesion"}


def test_input_size_the_model_cannot_take_is_refused() -> None:
    from bench.config import RunConfig, get_profile, override
    from bench.models import check_run_config

    cfg = override(RunConfig(model="deeplabv3", profile=get_profile("smoke")), {"profile.input_size": 50})
    with pytest.raises(ConfigError, match="input_size=50: deeplabv3 needs a multiple of 16"):
        check_run_config(cfg)
    check_run_config(override(cfg, {"profile.input_size": 48}))
    assert "never-added" not in MODELS


def test_deeplabv3_trains_with_batch_one() -> None:
    """The ASPP image-pooling BatchNorm sees a 1x1 map; batch 1 must not crash in train mode."""
    torch.manual_seed(0)
    model = build_model(smoke_cfg("deeplabv3")).train()
    y = model(torch.randn(1, 1, 64, 64))
    y.mean().backward()
    assert y.shape == (1, 1, 64, 64) and torch.isfinite(y).all()


def test_segnet_unpools_by_indices_and_any_size() -> None:
    torch.manual_seed(0)
    model = build_model(smoke_cfg("segnet")).eval()
    seen: list[torch.Tensor] = []
    model.unpool.register_forward_hook(lambda mod, inp, out: seen.append(out))
    with torch.no_grad():
        y = model(torch.randn(1, 1, 50, 70))  # not divisible by 32: pre-pool sizes are restored
    assert y.shape == (1, 1, 50, 70)
    assert len(seen) == 5
    for out in seen:  # max-unpooling writes one value per 2x2 window (at the stored argmax)
        h, w = out.shape[-2] // 2 * 2, out.shape[-1] // 2 * 2
        windows = out[..., :h, :w].unfold(2, 2, 2).unfold(3, 2, 2)
        assert ((windows != 0).sum(dim=(-1, -2)) <= 1).all()
    with pytest.raises(ValueError, match="at least 32x32"):
        model(torch.randn(1, 1, 16, 16))


# ---------------------------------------------------------------- local encoder weights


@pytest.mark.parametrize("name", SMP_MODELS)
def test_local_encoder_weights_are_loaded(name: str, tmp_path) -> None:
    torch.manual_seed(1)
    source = build_model(smoke_cfg(name))
    path = tmp_path / "encoder.pth"
    torch.save(source.encoder.state_dict(), path)
    torch.manual_seed(2)
    loaded = build_model(smoke_cfg(name, **{"profile.model.encoder_weights": str(path)}))
    torch.manual_seed(2)
    fresh = build_model(smoke_cfg(name))
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[key], value), key
    assert any(
        not torch.equal(fresh.encoder.state_dict()[k], v) for k, v in source.encoder.state_dict().items()
    ), "seeds 1 and 2 gave identical encoders: the comparison above would prove nothing"


def test_whole_model_and_rgb_checkpoint(tmp_path) -> None:
    """A whole smp model (``encoder.`` keys) loads; an RGB first conv is summed to one channel;
    keys the encoder lacks (a classifier's fc.*) are reported, not fatal."""
    torch.manual_seed(1)
    source = build_model(smoke_cfg("unet"))
    whole = tmp_path / "whole.pth"
    torch.save({"state_dict": source.state_dict()}, whole)
    loaded = build_model(smoke_cfg("unet", **{"profile.model.encoder_weights": str(whole)}))
    assert torch.equal(loaded.encoder.conv1.weight, source.encoder.conv1.weight)

    rgb_state = dict(source.encoder.state_dict())
    rgb_state["conv1.weight"] = torch.randn(64, 3, 7, 7)
    rgb_state["fc.weight"] = torch.randn(10, 512)
    rgb = tmp_path / "rgb.pth"
    torch.save(rgb_state, rgb)
    with pytest.warns(UserWarning, match="fc.weight"):
        loaded = build_model(smoke_cfg("unet", **{"profile.model.encoder_weights": str(rgb)}))
    assert torch.allclose(loaded.encoder.conv1.weight, rgb_state["conv1.weight"].sum(1, keepdim=True))


def test_partial_encoder_weights_warn_missing(tmp_path) -> None:
    small = build_model(smoke_cfg("unet", **{"profile.model.encoder": "resnet18"}))
    path = tmp_path / "r18.pth"
    torch.save(small.encoder.state_dict(), path)
    with pytest.warns(UserWarning, match="missing, kept random"):
        build_model(smoke_cfg("unet", **{"profile.model.encoder": "resnet34", "profile.model.encoder_weights": str(path)}))


@pytest.mark.parametrize("name", SMP_MODELS)
def test_bad_encoder_weights_are_config_errors(name: str, tmp_path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(ConfigError, match="nope.pth"):
        build_model(smoke_cfg(name, **{"profile.model.encoder_weights": str(missing)}))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="garbage.pth"):
        build_model(smoke_cfg(name, **{"profile.model.encoder_weights": str(garbage)}))
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"foo.weight": torch.zeros(3)}, unrelated)
    with pytest.raises(ConfigError, match="no tensor name matches"):
        build_model(smoke_cfg(name, **{"profile.model.encoder_weights": str(unrelated)}))
    wrong = tmp_path / "resnet50.pth"
    torch.save(build_model(smoke_cfg(name, **{"profile.model.encoder": "resnet50"})).encoder.state_dict(), wrong)
    with pytest.raises(ConfigError, match="shape"):
        build_model(smoke_cfg(name, **{"profile.model.encoder_weights": str(wrong)}))

