"""Building blocks shared by the localization and tuning networks (paper 3.3-3.7).

Normalisation
-------------
The paper's Keras summary (3,072 non-trainable parameters = running mean and variance of
1,536 BatchNorm channels) fits BatchNorm only in a DeepLabV3 ASPP of width 256 (six branches
x 256 channels); its convolution blocks appear to have no normalisation at all. We normalise
every convolution with **GroupNorm** by default instead: the paper trains with batch 4, and
Algorithm 1 trains on patches down to 16x16, where the bottleneck is 1x1 and BatchNorm's
batch statistics are unreliable (and undefined for a batch of one). GroupNorm behaves the same
in training and evaluation, so the self-labels Algorithm 1 predicts and the Grad-CAMs do not
depend on the mode. ``norm="batch"`` and ``norm="none"`` (the paper's apparent choice for the
conv blocks) are available for comparison.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from bench.errors import ConfigError

NORMS = ("group", "batch", "none")


def group_count(channels: int) -> int:
    """GroupNorm groups: up to 32, at least 4 channels per group (1 group for tiny widths)."""
    return math.gcd(channels, max(1, min(32, channels // 4)))


def norm_layer(channels: int, norm: str = "group") -> nn.Module:
    if norm == "group":
        return nn.GroupNorm(group_count(channels), channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ConfigError(f"unknown normalisation {norm!r} (known: {', '.join(NORMS)})")


class ConvNormAct(nn.Sequential):
    """conv (k x k, dilation d, 'same' padding) -> norm -> ReLU. Bias only without a norm."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, dilation: int = 1, norm: str = "group") -> None:
        padding = dilation * (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, padding=padding, dilation=dilation, bias=norm == "none"),
            norm_layer(out_ch, norm),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Module):
    """U-Net block: conv3x3-norm-ReLU, dropout, conv3x3-norm-ReLU (dropout as in Keras U-Nets)."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0, norm: str = "group") -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_ch, out_ch, norm=norm)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = ConvNormAct(out_ch, out_ch, norm=norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.drop(self.conv1(x)))


class ResidualBlock(nn.Module):
    """Paper Fig. 11: two 3x3 convs with an identity (or 1x1 projection) shortcut, ReLU after the sum."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0, norm: str = "group") -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_ch, out_ch, norm=norm)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Sequential(
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=norm == "none"), norm_layer(out_ch, norm)
        )
        if in_ch == out_ch:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=norm == "none"), norm_layer(out_ch, norm))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv2(self.drop(self.conv1(x))) + self.shortcut(x))


def conv_block(in_ch: int, out_ch: int, residual: bool, dropout: float, norm: str) -> nn.Module:
    return (ResidualBlock if residual else DoubleConv)(in_ch, out_ch, dropout=dropout, norm=norm)


def check_divisible(x: Tensor, multiple: int, what: str) -> None:
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ConfigError(f"{what}: input {h}x{w} must have sides divisible by {multiple}")


def param_count(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "NORMS",
    "group_count",
    "norm_layer",
    "ConvNormAct",
    "DoubleConv",
    "ResidualBlock",
    "conv_block",
    "check_divisible",
    "param_count",
]
