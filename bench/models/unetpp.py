"""UNet++ baseline (Zhou et al. 2018) via segmentation-models-pytorch: a fifth baseline, not in the paper.

Why here: it is the proof that a model is one plug-in. This file is the whole addition; the
package imports it by itself (`bench.models._register_builtin`), and the study, Tables 7/8, the
paired and post-processing tables, figures, ``bench ls models`` and the registry-wide tests pick
it up from its spec. The paper has no UNet++ numbers, so its paper columns show "-".

Choices, as for U-Net (`bench.models.baselines`) so that the two differ by UNet++'s nested,
dense skip pathways only: encoder ``model.encoder`` with random initialisation
(``encoder_weights=None``; ``model.encoder_weights`` loads a local state dict), ``model.width``
scales smp's decoder channels ``(256, 128, 64, 32, 16)``, ``model.encoder_depth`` and ``model.norm``
act as on U-Net (`trim_encoder`, `bench.models.norm.apply_norm`), and the paper's dropout
(``model.dropout``, 0.2) is a ``Dropout2d`` on the deepest encoder features, where U-Net has it
(smp's UnetPlusPlus has none; its forward pass is U-Net's, `UNet.forward`).
"""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch as smp
from torch import nn

from bench.config import RunConfig
from bench.models import register_model
from bench.models.baselines import (UNET_DECODER_CHANNELS, UNet, _check_encoder, _maybe_load_encoder,
                                    check_model_config, scaled, trim_encoder)
from bench.models.norm import apply_norm


class UNetPlusPlus(smp.UnetPlusPlus):
    """smp ``UnetPlusPlus`` plus ``Dropout2d`` on the deepest encoder features (smp parameter names kept)."""

    def __init__(self, dropout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bottleneck_dropout = nn.Dropout2d(dropout)

    forward = UNet.forward  # encoder -> dropout on the deepest map -> decoder -> head


@register_model("unetpp", label="UNet++", capabilities={"liver_prior", "norm"}, relative_cost=1.6,
                description="UNet++ (smp UnetPlusPlus, ResNet encoder, dropout at the bottleneck; not in the paper)")
def build_unetpp(cfg: RunConfig, in_channels: int = 1) -> nn.Module:
    m = cfg.profile.model
    check_model_config(m, "unetpp")
    _check_encoder(m.encoder, "unetpp")
    model = UNetPlusPlus(dropout=m.dropout, encoder_name=m.encoder, encoder_weights=None, in_channels=in_channels,
                         classes=1, encoder_depth=m.encoder_depth,
                         decoder_channels=tuple(scaled(c, m.width) for c in UNET_DECODER_CHANNELS[:m.encoder_depth]))
    trim_encoder(model.encoder, m.encoder_depth, "unetpp", m.encoder)
    _maybe_load_encoder(model, cfg)
    return apply_norm(model, cfg)
