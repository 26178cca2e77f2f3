"""U-Net and DeepLabV3 baselines (paper Tables 7/8, refs [20] and [22]) via segmentation-models-pytorch.

Why smp: it is the reference PyTorch implementation most readers know, so a baseline number
here is easy to reproduce elsewhere. Both models take one CT channel and give one channel of
logits (see `bench.models` for the convention).

Choices the paper leaves open (also listed in README "Reproduction notes"):

* Encoder: ``cfg.profile.model.encoder`` (resnet34 at the paper profile, resnet18 at the small
  ones); smp cannot scale an encoder's width, so small profiles pick a smaller encoder.
  Weights are never downloaded: the encoder starts random (``encoder_weights=None``) unless
  ``model.encoder_weights`` names a local ``.pth`` state dict, which is then loaded into it
  (`load_encoder_weights`; a 3-channel first convolution is summed to 1 channel, smp's rule;
  with ``model.liver_prior=channel`` the prior's extra input channel starts at zero, so the
  loaded filters see the CT exactly as in the one-channel baseline).
* ``model.width`` scales the decoders: U-Net ``decoder_channels = (256,128,64,32,16) * width``,
  DeepLabV3 ``decoder_channels = 256 * width`` (each at least 8).
* ``model.encoder_depth`` (5 = published) keeps that many encoder stages; the unused deeper stages
  of a ResNet encoder (``layer4``, then ``layer3``) are removed, since smp keeps their weights
  although its forward never reaches them (`trim_encoder`). With ``model.width`` it sets the
  baselines' capacity (U-Net at about ours' parameter count: `bench ablate capacity`). U-Net uses
  the first ``encoder_depth`` decoder channel counts; DeepLabV3 keeps depth 5 (its head reads the
  deepest stage at the output stride) and refuses another value.
* ``model.norm`` (batch | group | instance): `bench.models.norm.apply_norm`, the last step of
  each build (module docstring there).
* Dropout (Table 2: 0.2, ``model.dropout``):
  - U-Net: ``Dropout2d`` on the deepest encoder feature map, i.e. "at the end of the
    contracting path", where Ronneberger et al. 2015 put theirs; smp's Unet has no dropout.
  - DeepLabV3: the dropout that DeepLabV3 already has after the ASPP projection (smp default
    0.5) is set to ``model.dropout``; nothing is added.
* DeepLabV3 keeps the published head: output stride 8, ASPP rates (12, 24, 36) (the DeepLabV3
  rates for stride 8). At 64x64 input the feature map is 8x8, so the dilated branches see
  mostly padding; that is the architecture, not a bug, and it still trains.
* The ASPP image-pooling branch normalises a 1x1 map; with batch 1 in train mode BatchNorm has
  one value per channel and PyTorch refuses. That branch's BatchNorm falls back to its running
  statistics for such a batch (`bench.models.cascade_blocks.SingleValueSafeBatchNorm2d`), so a
  last batch of one slice cannot crash training. The ResNet encoders themselves still need
  batch >= 2 in train mode when the input is 32x32 (their last stage is 1x1 there); eval mode
  works with any batch.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPPPooling
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from segmentation_models_pytorch.encoders import get_encoder_names
from torch import nn

from bench.config import ModelConfig, RunConfig
from bench.errors import ConfigError
from bench.models import register_model
from bench.models.cascade_blocks import SingleValueSafeBatchNorm2d
from bench.models.norm import apply_norm

UNET_DECODER_CHANNELS = (256, 128, 64, 32, 16)
DEEPLAB_DECODER_CHANNELS = 256
MIN_CHANNELS = 8

# smp < 0.5 calls ``decoder(*features)``, later versions ``decoder(features)``.
_DECODER_VARARGS = any(
    p.kind is inspect.Parameter.VAR_POSITIONAL for p in inspect.signature(UnetDecoder.forward).parameters.values()
)


def scaled(channels: int, width: float) -> int:
    """Channel count ``channels * width``, never below 8 (narrower layers stop learning)."""
    return max(MIN_CHANNELS, int(round(channels * width)))


def check_model_config(model: ModelConfig, name: str) -> None:
    """Reject widths and dropout rates that would build a broken network, naming the field."""
    if not model.width > 0:
        raise ConfigError(f"model {name!r}: model.width must be > 0, got {model.width}")
    if not 0.0 <= model.dropout < 1.0:
        raise ConfigError(f"model {name!r}: model.dropout must be in [0, 1), got {model.dropout}")


def _check_encoder(encoder: str, name: str) -> None:
    known = get_encoder_names()
    if encoder in known or encoder.startswith("tu-"):
        return
    close = difflib.get_close_matches(encoder, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"model {name!r}: unknown smp encoder {encoder!r}{hint}")


# ---------------------------------------------------------------- encoder weights


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Accept a bare state dict, ``{"state_dict": ...}``/``{"model": ...}``, and keys prefixed
    ``module.`` (DataParallel) or ``encoder.`` (a whole smp model saved)."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"encoder weights {path}: not a state dict of tensors")
    state = dict(obj)
    for prefix in ("module.", "encoder."):
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    if any(k.startswith("encoder.") for k in state):  # whole model: keep the encoder part
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    return state


def _first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A grey or RGB first convolution for ``in_channels`` inputs: channel 0 (the CT) gets the
    sum over the file's channels (smp's rule for one channel); any further channel (a liver
    prior) starts at zero."""
    ct = weight.sum(dim=1, keepdim=True)
    return torch.cat([ct, ct.new_zeros((ct.shape[0], in_channels - 1) + tuple(ct.shape[2:]))], dim=1)


def load_encoder_weights(encoder: nn.Module, path_str: str) -> None:
    """Load a local ``.pth`` state dict into ``encoder`` (strict=False, reported).

    Missing file, unreadable file, a shape mismatch or no matching tensor at all are
    `ConfigError`s naming the file; tensors the file lacks keep their random values and are
    listed in a warning, as are keys the encoder does not have (e.g. a classifier's ``fc.*``).
    """
    path = Path(path_str).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"encoder weights {path}: no such file (nothing is downloaded; give a local .pth state dict)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors have many types; all mean "not a readable state dict"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"encoder weights {path}: cannot read ({type(exc).__name__}: {first})") from None
    state = _unwrap_state_dict(obj, path)
    own = encoder.state_dict()
    for key, value in list(state.items()):
        target = own.get(key)
        if target is None:
            continue
        if value.ndim == 4 and target.ndim == 4 and value.shape[1] in (1, 3) and value.shape[1] != target.shape[1]:
            value = _first_conv(value, target.shape[1])
            state[key] = value
        if value.shape != target.shape:
            raise ConfigError(
                f"encoder weights {path}: {key} has shape {tuple(value.shape)}, "
                f"the encoder expects {tuple(target.shape)}"
            )
    if not any(key in own for key in state):
        raise ConfigError(f"encoder weights {path}: no tensor name matches this encoder (e.g. {next(iter(state))})")
    result = nn.Module.load_state_dict(encoder, state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} encoder tensors missing, kept random ({', '.join(missing[:4])}"
                         + (", ..." if len(missing) > 4 else "") + ")")
        if unexpected:
            parts.append(f"{len(unexpected)} keys ignored ({', '.join(unexpected[:4])}"
                         + (", ..." if len(unexpected) > 4 else "") + ")")
        warnings.warn(f"encoder weights {path}: " + "; ".join(parts), UserWarning, stacklevel=2)


def trim_encoder(encoder: nn.Module, depth: int, name: str, encoder_name: str) -> None:
    """Remove a ResNet encoder's stages beyond ``depth`` (smp keeps them, unused); refuse other encoders."""
    if depth >= 5:
        return
    stages = [f"layer{k}" for k in range(depth, 5)]  # layer k feeds stage k + 1 (stage 1 is conv1)
    if not all(isinstance(getattr(encoder, s, None), nn.Module) for s in stages):
        raise ConfigError(f"model {name!r}: model.encoder_depth={depth} needs a ResNet encoder (layer1-layer4), "
                          f"not {encoder_name!r}")
    for stage in stages:
        delattr(encoder, stage)


def _maybe_load_encoder(model: nn.Module, cfg: RunConfig) -> None:
    if cfg.profile.model.encoder_weights:
        load_encoder_weights(model.encoder, cfg.profile.model.encoder_weights)


# ---------------------------------------------------------------- U-Net


class UNet(smp.Unet):
    """smp ``Unet`` plus ``Dropout2d`` on the deepest encoder features (end of the contracting path).

    Parameter names are exactly smp's (the dropout has none), so smp checkpoints load unchanged.
    """

    def __init__(self, dropout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bottleneck_dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "check_input_shape") and not torch.jit.is_tracing():
            self.check_input_shape(x)
        features = list(self.encoder(x))
        features[-1] = self.bottleneck_dropout(features[-1])
        decoded = self.decoder(*features) if _DECODER_VARARGS else self.decoder(features)
        return self.segmentation_head(decoded)


@register_model("unet", label="U-Net", rank=20, capabilities={"liver_prior", "norm"}, default_baseline=True,
                description="U-Net [20] (smp Unet, ResNet encoder, dropout at the bottleneck)", relative_cost=1.3)
def build_unet(cfg: RunConfig, in_channels: int = 1) -> nn.Module:
    m = cfg.profile.model
    check_model_config(m, "unet")
    _check_encoder(m.encoder, "unet")
    model = UNet(
        dropout=m.dropout,
        encoder_name=m.encoder,
        encoder_weights=None,
        in_channels=in_channels,
        classes=1,
        encoder_depth=m.encoder_depth,
        decoder_channels=tuple(scaled(c, m.width) for c in UNET_DECODER_CHANNELS[:m.encoder_depth]),
    )
    trim_encoder(model.encoder, m.encoder_depth, "unet", m.encoder)
    _maybe_load_encoder(model, cfg)
    return apply_norm(model, cfg)


# ---------------------------------------------------------------- DeepLabV3


def _patch_aspp(model: nn.Module, dropout: float) -> None:
    """Set the ASPP projection dropout and make the pooling branch's BatchNorm batch-1 safe."""
    dropouts = [mod for mod in model.decoder.modules() if isinstance(mod, nn.Dropout)]
    pools = [mod for mod in model.decoder.modules() if isinstance(mod, ASPPPooling)]
    if len(dropouts) != 1 or len(pools) != 1:  # smp changed its ASPP: fail loudly, not silently
        raise RuntimeError(f"unexpected smp DeepLabV3 ASPP: {len(dropouts)} dropouts, {len(pools)} pooling branches")
    dropouts[0].p = dropout
    pool = pools[0]
    for idx, child in enumerate(pool):
        if isinstance(child, nn.BatchNorm2d):
            safe = SingleValueSafeBatchNorm2d(child.num_features, eps=child.eps, momentum=child.momentum)
            safe.load_state_dict(child.state_dict())
            pool[idx] = safe


@register_model("deeplabv3", label="DeepLabV3", rank=30, capabilities={"liver_prior", "norm"},
                description="DeepLabV3 [22] (smp, ResNet encoder, output stride 8, ASPP 12/24/36)",
                input_multiple=lambda cfg: cfg.profile.model.output_stride, relative_cost=1.5)
def build_deeplabv3(cfg: RunConfig, in_channels: int = 1) -> nn.Module:
    m = cfg.profile.model
    check_model_config(m, "deeplabv3")
    _check_encoder(m.encoder, "deeplabv3")
    if m.encoder_depth != 5:
        raise ConfigError(f"model 'deeplabv3': model.encoder_depth={m.encoder_depth}; DeepLabV3 keeps 5 (its ASPP "
                          f"reads the deepest stage; scale it with model.width)")
    model = smp.DeepLabV3(
        encoder_name=m.encoder,
        encoder_weights=None,
        in_channels=in_channels,
        classes=1,
        decoder_channels=scaled(DEEPLAB_DECODER_CHANNELS, m.width),
        encoder_output_stride=m.output_stride,
    )
    _patch_aspp(model, m.dropout)
    _maybe_load_encoder(model, cfg)
    return apply_norm(model, cfg)
