"""A liverbench model plug-in: LinkNet (Chaurasia & Culurciello 2017) from segmentation-models-pytorch.

Load it without installing anything::

    BENCH_PLUGINS=examples/plugins/linknet.py bench train linknet --profile smoke
    bench --plugin examples/plugins/linknet.py ls models

Importing this file registers the model; that is all a plug-in does. See README.md here.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import nn

from bench.config import RunConfig
from bench.models import register_model


@register_model(
    "linknet",
    label="LinkNet",
    description="LinkNet (smp Linknet, ResNet encoder; example plug-in)",
    capabilities={"liver_prior"},  # bench wraps it with the liver prior for model.liver_prior=channel|crop
    input_multiple=lambda cfg: 32,  # five stride-2 stages: refused before training at other sizes
)
def build_linknet(cfg: RunConfig, in_channels: int = 1) -> nn.Module:
    """``RunConfig -> nn.Module``: (B, in_channels, H, W) slices -> (B, 1, H, W) logits, random init."""
    m = cfg.profile.model  # the baselines' config section: encoder, width, dropout, encoder_weights
    return smp.Linknet(encoder_name=m.encoder, encoder_weights=None, in_channels=in_channels, classes=1)
