"""The localization network (paper 3.3, Fig. 5): a U-Net-like encoder-decoder trained on full slices.

Its only job in the cascade is to say *where* the organ is: its Grad-CAM (`bench.models.gradcam`)
at one chosen layer, thresholded (`bench.models.roi`), becomes the box prior of the tuning
network. Blocks are conv3x3-norm-ReLU, dropout, conv3x3-norm-ReLU; 2x2 max-pooling down,
2x2 transposed convolutions up, skip connections by concatenation, a 1x1 conv to one logit
channel. The paper names no widths; the default base of 32 keeps it lighter than the tuner
(it only needs a coarse answer).

Layer names for Grad-CAM (`gradcam_layers`): ``"bottleneck"`` and ``"decoder1"`` ..
``"decoder{depth}"`` where ``decoder1`` is the **deepest** decoder block (just above the
bottleneck, 1/8 resolution at depth 4) and ``decoder{depth}`` the full-resolution one. The paper
does not say which layer it used. Measured here (toy bright squares and 64x64 phantom slices,
GroupNorm localizer): the bottleneck's Seg-Grad-CAM is often all zero after the ReLU (40-65 % of
slices) and localizes poorly at a 4x4 bottleneck, while ``decoder{depth}`` (full resolution)
localizes reliably (its map is close to the network's own foreground evidence).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bench.errors import ConfigError
from bench.models.cascade_blocks import DoubleConv, check_divisible


class LocalizationNet(nn.Module):
    """U-Net-like localizer: ``(B, in_channels, H, W) -> (B, 1, H, W)`` logits; H, W divisible by 2**depth."""

    def __init__(
        self, in_channels: int = 1, base: int = 32, depth: int = 4, dropout: float = 0.2, norm: str = "group"
    ) -> None:
        super().__init__()
        if depth < 1 or base < 1:
            raise ConfigError(f"LocalizationNet: depth ({depth}) and base ({base}) must be >= 1")
        self.depth = depth
        widths = [base * 2**level for level in range(depth + 1)]
        self.widths = widths
        self.encoders = nn.ModuleList(
            DoubleConv(in_channels if level == 0 else widths[level - 1], widths[level], dropout, norm)
            for level in range(depth)
        )
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(widths[depth - 1], widths[depth], dropout, norm)
        # decoders[0] is the deepest ("decoder1"), decoders[-1] full resolution
        levels = list(range(depth - 1, -1, -1))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[lv + 1], widths[lv], 2, stride=2) for lv in levels)
        self.decoders = nn.ModuleList(DoubleConv(2 * widths[lv], widths[lv], dropout, norm) for lv in levels)
        self.head = nn.Conv2d(widths[0], 1, 1)

    def gradcam_layers(self) -> dict[str, nn.Module]:
        """Layers whose activations Grad-CAM can use, by the names `CascadeConfig.gradcam_layer` takes."""
        layers: dict[str, nn.Module] = {"bottleneck": self.bottleneck}
        for k, block in enumerate(self.decoders, start=1):
            layers[f"decoder{k}"] = block
        return layers

    def forward(self, x: Tensor) -> Tensor:
        check_divisible(x, 2**self.depth, "LocalizationNet")
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x if level == 0 else self.pool(x))
            skips.append(x)
        x = self.bottleneck(self.pool(x))
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = decoder(torch.cat([up(x), skip], dim=1))
        return self.head(x)


__all__ = ["LocalizationNet"]
