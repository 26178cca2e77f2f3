"""SegNet baseline (Badrinarayanan, Kendall & Cipolla 2015; paper ref [18], Tables 7/8).

Why written here rather than taken from a library: smp has no SegNet, and SegNet's defining
idea -- the decoder upsamples with the *max-pooling indices* stored by the encoder
(``MaxUnpool2d``), not with learned or bilinear upsampling -- is what the comparison is about.

Architecture (width 1.0 = the published network, about 29.4 M parameters with one input and
one output channel):

* Encoder: VGG16's 13 convolutions in 5 blocks (2-2-3-3-3), channels (64, 128, 256, 512, 512),
  each conv 3x3 + BatchNorm + ReLU; each block ends with a 2x2 max-pool that returns indices.
* Decoder: the mirror image. Each block first unpools with its encoder block's indices (and
  its pre-pool size, so odd sizes invert exactly), then has as many 3x3 conv+BN+ReLU as the
  encoder block; the last conv of a block narrows to the next block's channels. A final 1x1
  conv gives one channel of logits (the sigmoid convention of `bench.models`), in place of
  SegNet's softmax classifier over K classes.
* ``model.width`` scales every channel count (each at least 8). Five poolings need an input of
  at least 32x32 (then the deepest map is 1x1); any size >= 32 works, divisible or not.
* ``model.encoder_depth`` (5 = published) keeps the first that many blocks (and their mirrors);
  ``model.norm`` replaces the BatchNorms (`bench.models.norm.apply_norm`).
* Dropout (Table 2: 0.2, ``model.dropout``): ``Dropout2d`` where Bayesian SegNet (Kendall et
  al. 2015, "central" variant) puts it: after the three deepest encoder blocks (after their
  pooling) and after the three deepest decoder blocks. Bayesian SegNet uses p = 0.5; the paper
  fixes 0.2 for every model, so 0.2 it is.
* Initialisation: He (fan-out) for convolutions, as SegNet and torchvision's VGG use.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.config import RunConfig
from bench.models import register_model
from bench.models.baselines import check_model_config, scaled
from bench.models.norm import apply_norm

VGG16_BLOCKS = (2, 2, 3, 3, 3)  # convolutions per block
VGG16_CHANNELS = (64, 128, 256, 512, 512)
DROPOUT_BLOCKS = (2, 3, 4)  # 0-based: the three deepest blocks ("central" Bayesian SegNet)


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SegNet(nn.Module):
    """SegNet: VGG16 encoder, pooling-index decoder, one output channel of logits."""

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        width: float = 1.0,
        dropout: float = 0.2,
        blocks: tuple[int, ...] = VGG16_BLOCKS,
        channels: tuple[int, ...] = VGG16_CHANNELS,
    ) -> None:
        super().__init__()
        if len(blocks) != len(channels):
            raise ValueError("blocks and channels must have the same length")
        widths = [scaled(c, width) for c in channels]
        self.encoders = nn.ModuleList()
        cin = in_channels
        for n_convs, cout in zip(blocks, widths):
            layers: list[nn.Module] = []
            for i in range(n_convs):
                layers += _conv_bn_relu(cin if i == 0 else cout, cout)
            self.encoders.append(nn.Sequential(*layers))
            cin = cout
        self.decoders = nn.ModuleList()  # decoders[i] mirrors encoders[i]; run deepest first
        for i, (n_convs, c) in enumerate(zip(blocks, widths)):
            c_next = widths[i - 1] if i > 0 else widths[0]
            layers = []
            for j in range(n_convs):
                layers += _conv_bn_relu(c, c_next if j == n_convs - 1 else c)
            self.decoders.append(nn.Sequential(*layers))
        self.dropout_blocks = tuple(b for b in DROPOUT_BLOCKS if b < len(blocks))
        self.dropout = nn.Dropout2d(dropout)
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, stride=2)
        self.classifier = nn.Conv2d(widths[0], out_channels, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.BatchNorm2d):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        depth = len(self.encoders)
        if min(x.shape[-2:]) < 2**depth:
            raise ValueError(f"SegNet needs inputs of at least {2**depth}x{2**depth}, got {tuple(x.shape[-2:])}")
        stack: list[tuple[torch.Tensor, torch.Size]] = []
        for i, block in enumerate(self.encoders):
            x = block(x)
            size = x.shape[-2:]
            x, indices = self.pool(x)
            stack.append((indices, size))
            if i in self.dropout_blocks:
                x = self.dropout(x)
        for i in reversed(range(depth)):
            indices, size = stack[i]
            x = self.unpool(x, indices, output_size=size)
            x = self.decoders[i](x)
            if i in self.dropout_blocks:
                x = self.dropout(x)
        return self.classifier(x)


@register_model("segnet", label="SegNet", rank=10, capabilities={"liver_prior", "norm"},
                description="SegNet [18] (VGG16 encoder, max-unpooling decoder, 2015)")
def build_segnet(cfg: RunConfig, in_channels: int = 1) -> nn.Module:
    m = cfg.profile.model
    check_model_config(m, "segnet")
    depth = m.encoder_depth
    net = SegNet(in_channels=in_channels, out_channels=1, width=m.width, dropout=m.dropout,
                 blocks=VGG16_BLOCKS[:depth], channels=VGG16_CHANNELS[:depth])
    return apply_norm(net, cfg)
