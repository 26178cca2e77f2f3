"""Building blocks shared by the localization and tuning networks (paper 3.3-3.7).

Normalisation (``cascade.norm``: group | batch | none, both networks)
--------------------------------------------------------------------
The paper's Keras summary (3,072 non-trainable parameters = running mean and variance of
1,536 BatchNorm channels) fits BatchNorm in a DeepLabV3 ASPP of width 256 only (six BatchNorms
x 256 channels; other layouts could sum to 1,536 channels too, but not BatchNorm after every
convolution); its convolution blocks appear to have no normalisation at all. Measured with
``cascade.norm=batch`` at the paper profile (`bench ls models --detail --set cascade.norm=batch`):
our ASPP alone holds exactly those 3,072 statistics; BatchNorm after every convolution gives
18,672 in the tuning network (and 5,888 in the localizer). We normalise every convolution with
**GroupNorm** by default instead: the paper trains with batch 4, and Algorithm 1 trains on
patches down to 16x16, where the bottleneck is 1x1 and BatchNorm's batch statistics are
unreliable (and undefined for a batch of one). GroupNorm behaves the same in training and
evaluation, so the self-labels Algorithm 1 predicts and the Grad-CAMs do not depend on the
mode. ``norm="batch"`` (the paper's layer type; `SingleValueSafeBatchNorm2d`, so a batch of one
1x1 map does not crash) and ``norm="none"`` (the paper's apparent choice for the conv blocks;
convolutions then carry a bias) are there for comparison. GroupNorm and BatchNorm have the same
two affine parameters per channel, so the trainable counts differ only by the ASPP's pooling
branch, which is DeepLabV3's conv-BN under BatchNorm (+256 at the paper profile).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from bench.errors import ConfigError

NORMS = ("group", "batch", "none")


def check_norm(norm: str) -> None:
    """One-line `ConfigError` for a ``cascade.norm`` outside `NORMS`."""
    if norm not in NORMS:
        raise ConfigError(f"unknown cascade.norm {norm!r} (known: {', '.join(NORMS)})")


def group_count(channels: int) -> int:
    """GroupNorm groups: up to 32, at least 4 channels per group (1 group for tiny widths)."""
    return math.gcd(channels, max(1, min(32, channels // 4)))


class SingleValueSafeBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that survives a training batch with one value per channel.

    A (1, C, 1, 1) batch -- the ASPP image-pooling branch at batch 1, or a 1x1 bottleneck of a
    16x16 patch at batch 1 -- has no batch statistics; plain BatchNorm raises there. That batch is
    normalised with the running statistics (as in eval mode) and leaves them unchanged; every
    other batch is plain BatchNorm (same parameters, buffers and state-dict keys).
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def norm_layer(channels: int, norm: str = "group") -> nn.Module:
    """``cascade.norm``: GroupNorm, BatchNorm (batch-1-safe) or nothing after a convolution."""
    check_norm(norm)
    if norm == "group":
        return nn.GroupNorm(group_count(channels), channels)
    if norm == "batch":
        return SingleValueSafeBatchNorm2d(channels)
    return nn.Identity()


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


def running_stat_count(module: nn.Module) -> int:
    """BatchNorm running statistics counted as Keras counts them: mean + variance, 2 per channel.

    In PyTorch they are buffers, not parameters (``module.parameters()`` never sees them), and
    each BatchNorm also holds a ``num_batches_tracked`` counter, which Keras has no counterpart
    for and which is not counted here. GroupNorm and Identity contribute 0.
    """
    return sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None
    )


__all__ = [
    "NORMS",
    "check_norm",
    "SingleValueSafeBatchNorm2d",
    "group_count",
    "norm_layer",
    "ConvNormAct",
    "DoubleConv",
    "ResidualBlock",
    "conv_block",
    "check_divisible",
    "param_count",
    "running_stat_count",
]
