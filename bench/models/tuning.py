"""The tuning network (paper 3.4-3.7, Figs. 8-12): image + box prior -> refined segmentation.

Layout for a 512x512 slice (``base_channels`` b = 64; widths b, 2b, 4b, 8b, 16b)::

  level 0  512  dilated stem (parallel 3x3 convs at cfg.dilation_rates, concat, 1x1) + block   -> b
  level 1  256  maxpool ‖ 1x1(patches of 256) -> block                                           -> 2b
  level 2  128  maxpool ‖ 1x1(patches of 128) -> block                                           -> 4b
  level 3   64  maxpool ‖ 1x1(patches of  64) -> block                                           -> 8b
  bottom    32  maxpool -> block -> ASPP (1x1, 3x3 at cfg.aspp_rates, image pooling; width 4b)   -> 4b
  decoder  64, 128, 256, 512: 2x2 up-conv, concat(skip * ConvBox gate), double conv, 1x1 side output

* **Blocks**: residual (Fig. 11) in the encoder and bottleneck when ``cfg.residual``, plain
  double convs otherwise; the decoder always uses double convs (the paper puts its residual
  blocks in the contracting path). Dropout ``dropout`` inside every block. Every conv is
  followed by ``cfg.norm`` (GroupNorm by default; `bench.models.cascade_blocks` says why).
* **Multi-level patches** (3.4, Table 3): at encoder level l <= ``cfg.patch_levels`` the original
  (padded) image is rearranged into 4**l channels at the level's feature-map size
  (`bench.models.patches.level_patches`: 4, 16, 64 channels at levels 1, 2, 3), mapped by a
  1x1 conv(-norm-ReLU) to the width of the pooled features ("the same features dimension as the
  output of previous layer") and concatenated with them; the level's block takes the doubled width.
  ``cfg.patch_mode`` chooses the arrangement: ``tile`` (the literal reading: tiles of the feature
  map's size stacked, spatially incoherent with the features) or ``unshuffle`` (space-to-depth:
  the 2**l x 2**l block under each feature position); see `bench.models.patches`. Both have the
  same parameters, so checkpoints and counts do not depend on the mode.
* **ConvBox** (Fig. 12, after BB-UNet): per skip level, the box prior is max-pooled to the level's
  resolution and passed through three 3x3 convs (1 -> h -> h -> width, h = max(4, width/16)) and a
  sigmoid;
  the resulting location map **multiplies** the skip features ("the intersection between the
  unpooled map ... and the location feature map"). Off: skips unchanged, the prior unused.
* **ASPP** (3.5, DeepLabV3): 1x1 branch, one 3x3 branch per rate, image-pooling branch, 1x1
  projection, dropout. With ``norm=batch`` the pooling branch is DeepLabV3's conv-BN-ReLU (its
  BatchNorm uses the running statistics for a batch of one, where batch statistics do not
  exist); with GroupNorm or none it is conv(+bias)-ReLU, unnormalised (a 1x1 map gives
  GroupNorm a handful of values per group).
* **Deep supervision** (3.6): a 1x1 conv side output at every decoder level. ``forward`` returns
  the side logits **deepest first, full resolution last** (4 tensors at H/8, H/4, H/2, H), or
  only the full-resolution one when ``cfg.deep_supervision`` is off. The prediction
  (`predict`) is the top, full-resolution output only ("the model outputs the pixel-wise
  probability map in the top layer"); the side outputs exist for the loss.
* **Input sizes**: any H, W. Sides not divisible by 16 are padded (image: edge replication,
  prior: zeros) and every output is cropped back (side output at scale s: ceil(H/s)), so
  Algorithm 1 may train on patches as small as 8x8; level l always sees 4**l image patches.

Parameter count at the paper profile (512, b = 64, everything on; `bench ls models --detail`,
which counts BatchNorm running statistics as non-trainable the way Keras does, 2 per channel)::

  cascade.norm      trainable    non-trainable  total
  group (default)   39,756,832   0              39,756,832
  batch             39,757,088   18,672         39,775,760
  none              39,747,752   0              39,747,752
  paper (3.4)       38,056,069   3,072          38,059,141

+4.5 % against the paper's total (the paper publishes no layer table, so an exact match is not
possible). Breakdown (group): dilated stem 19,328; encoder blocks 6,270,720; patch 1x1 convs
19,584; bottleneck block 14,686,208; ASPP (width 256) 7,932,672; ConvBoxes 209,820; up-convs
1,213,376; decoder blocks 9,404,160; side heads 964. The widths are the classic U-Net's
(64 ... 1024) and DeepLabV3's ASPP width (256). With ``norm=batch`` the ASPP alone holds
exactly 3,072 running statistics (six BatchNorms x 256 channels x 2), the paper's whole
non-trainable count, while BatchNorm everywhere gives 18,672: the paper's count is consistent
with BatchNorm in its ASPP only (other layouts could also sum to 1,536 channels). Most of the
excess in trainable parameters is the patch concatenation (levels 1-3 take twice the width:
+1.39 M; with ``patch_levels=0`` the count is 38,362,784, +0.8 %) and the residual shortcuts'
1x1 projections (+0.53 M). GroupNorm has the same two affine parameters per channel as
BatchNorm but no running statistics, hence 0 non-trainable. ConvBox's hidden width is
``max(4, width // 16)`` (the paper gives none).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.config import CascadeConfig
from bench.errors import ConfigError
from bench.models.cascade_blocks import ConvNormAct, DoubleConv, check_norm, conv_block, param_count
from bench.models.patches import check_patch_mode, level_patches

DEPTH = 4  # encoder levels 0..3 + bottleneck: 512 -> 256 -> 128 -> 64 -> 32
MAX_PATCH_LEVELS = DEPTH - 1
PAPER_TUNING_PARAMS = 38_059_141  # paper 3.4, total (trainable 38,056,069 + 3,072 BN statistics)
PAPER_TUNING_TRAINABLE = 38_056_069
PAPER_TUNING_NON_TRAINABLE = PAPER_TUNING_PARAMS - PAPER_TUNING_TRAINABLE  # 3,072
# The tuning network's parts, as its model card lists them: (label, attribute of TuningNet)
TUNING_PARTS = (
    ("dilated stem", "stem"),
    ("encoder blocks", "encoders"),
    ("patch convs", "patch_proj"),
    ("bottleneck", "bottleneck"),
    ("ASPP", "aspp"),
    ("ConvBoxes", "convbox"),
    ("up-convs", "ups"),
    ("decoder blocks", "decoders"),
    ("side heads", "heads"),
)


class DilatedStem(nn.Module):
    """First encoder layer: parallel 3x3 convs at several dilation rates (global context), concat, 1x1."""

    def __init__(self, in_ch: int, out_ch: int, rates: tuple[int, ...], norm: str) -> None:
        super().__init__()
        if not rates or any(r < 1 for r in rates):
            raise ConfigError(f"cascade.dilation_rates must be positive integers, got {rates}")
        self.branches = nn.ModuleList(ConvNormAct(in_ch, out_ch, 3, dilation=r, norm=norm) for r in rates)
        self.fuse = ConvNormAct(len(rates) * out_ch, out_ch, 1, norm=norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))


class ASPP(nn.Module):
    """DeepLabV3 atrous spatial pyramid pooling (paper 3.5, Figs. 9-10)."""

    def __init__(self, in_ch: int, out_ch: int, rates: tuple[int, ...], dropout: float, norm: str) -> None:
        super().__init__()
        if any(r < 1 for r in rates):
            raise ConfigError(f"cascade.aspp_rates must be positive integers, got {rates}")
        self.branches = nn.ModuleList(
            [ConvNormAct(in_ch, out_ch, 1, norm=norm)] + [ConvNormAct(in_ch, out_ch, 3, dilation=r, norm=norm) for r in rates]
        )
        if norm == "batch":  # DeepLabV3's pooling branch: conv-BN-ReLU (batch-1 safe, see norm_layer)
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvNormAct(in_ch, out_ch, 1, norm=norm))
        else:  # group/none: no norm on the pooled 1x1 map (GroupNorm would see a handful of values per group)
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, out_ch, 1), nn.ReLU(inplace=True))
        self.project = nn.Sequential(
            ConvNormAct((len(rates) + 2) * out_ch, out_ch, 1, norm=norm),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
        )

    def forward(self, x: Tensor) -> Tensor:
        feats = [branch(x) for branch in self.branches]
        feats.append(self.pool(x).expand(-1, -1, x.shape[-2], x.shape[-1]))
        return self.project(torch.cat(feats, dim=1))


class ConvBox(nn.Module):
    """Paper Fig. 12: max-pool the box prior to a level's resolution, three 3x3 convs, sigmoid gate."""

    def __init__(self, out_ch: int, hidden: int, scale: int, norm: str) -> None:
        super().__init__()
        self.pool: nn.Module = nn.MaxPool2d(scale) if scale > 1 else nn.Identity()
        self.convs = nn.Sequential(
            ConvNormAct(1, hidden, norm=norm),
            ConvNormAct(hidden, hidden, norm=norm),
            nn.Conv2d(hidden, out_ch, 3, padding=1),
        )

    def forward(self, prior: Tensor) -> Tensor:
        return torch.sigmoid(self.convs(self.pool(prior)))


class TuningNet(nn.Module):
    """The cascade's second network; see the module docstring for the layout and choices."""

    def __init__(self, cfg: CascadeConfig, in_channels: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        check_patch_mode(cfg.patch_mode)
        check_norm(cfg.norm)
        norm = cfg.norm
        if not 0 <= cfg.patch_levels <= MAX_PATCH_LEVELS:
            raise ConfigError(f"cascade.patch_levels must lie in 0..{MAX_PATCH_LEVELS}, got {cfg.patch_levels}")
        if cfg.base_channels < 1:
            raise ConfigError(f"cascade.base_channels must be >= 1, got {cfg.base_channels}")
        b = cfg.base_channels
        widths = [b * 2**level for level in range(DEPTH + 1)]
        self.cfg = cfg
        self.in_channels = in_channels
        self.widths = widths
        self.patch_levels = cfg.patch_levels
        self.patch_mode = cfg.patch_mode
        self.use_convbox = cfg.convbox
        self.deep_supervision = cfg.deep_supervision

        self.stem = DilatedStem(in_channels, widths[0], tuple(cfg.dilation_rates), norm)
        encoders = [conv_block(widths[0], widths[0], cfg.residual, dropout, norm)]
        patch_proj = {}
        for level in range(1, DEPTH):
            in_ch = widths[level - 1]
            if level <= cfg.patch_levels:
                patch_proj[str(level)] = ConvNormAct(in_channels * 4**level, widths[level - 1], 1, norm=norm)
                in_ch *= 2
            encoders.append(conv_block(in_ch, widths[level], cfg.residual, dropout, norm))
        self.encoders = nn.ModuleList(encoders)
        self.patch_proj = nn.ModuleDict(patch_proj)
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = conv_block(widths[DEPTH - 1], widths[DEPTH], cfg.residual, dropout, norm)
        if cfg.aspp:
            aspp_width = 4 * b
            self.aspp: nn.Module = ASPP(widths[DEPTH], aspp_width, tuple(cfg.aspp_rates), dropout, norm)
            bottom_ch = aspp_width
        else:
            self.aspp = nn.Identity()
            bottom_ch = widths[DEPTH]
        levels = list(range(DEPTH - 1, -1, -1))  # decoder order: deepest first
        self.convbox = nn.ModuleList(
            ConvBox(widths[lv], max(4, widths[lv] // 16), 2**lv, norm) for lv in levels
        ) if cfg.convbox else nn.ModuleList()
        ups, decoders = [], []
        prev = bottom_ch
        for lv in levels:
            ups.append(nn.ConvTranspose2d(prev, widths[lv], 2, stride=2))
            decoders.append(DoubleConv(2 * widths[lv], widths[lv], dropout, norm))
            prev = widths[lv]
        self.ups = nn.ModuleList(ups)
        self.decoders = nn.ModuleList(decoders)
        heads = levels if cfg.deep_supervision else [0]
        self.heads = nn.ModuleList(nn.Conv2d(widths[lv], 1, 1) for lv in heads)

    # ------------------------------------------------------------------ forward

    def _pad(self, image: Tensor, prior: Tensor | None) -> tuple[Tensor, Tensor | None, int, int]:
        h, w = image.shape[-2:]
        m = 2**DEPTH
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), mode="replicate")
            if prior is not None:
                prior = F.pad(prior, (0, pw, 0, ph), value=0.0)
        return image, prior, h, w

    def forward(self, image: Tensor, prior: Tensor | None = None) -> list[Tensor]:
        """Side-output logits, deepest first, last at full resolution ``(B, 1, H, W)``.

        ``prior`` (B, 1, H, W) is the box prior; it is required when ConvBox is on and ignored
        otherwise.
        """
        if image.ndim != 4 or image.shape[1] != self.in_channels:
            raise ConfigError(f"TuningNet: expected (B, {self.in_channels}, H, W) slices, got {tuple(image.shape)}")
        if self.use_convbox:
            expected = (image.shape[0], 1, *image.shape[-2:])
            if prior is None or tuple(prior.shape) != expected:
                got = None if prior is None else tuple(prior.shape)
                raise ConfigError(f"TuningNet with ConvBox needs a (B, 1, H, W) box prior like the image; got {got}")
            prior = prior.to(image.dtype)
        image, prior, h, w = self._pad(image, prior if self.use_convbox else None)

        skips = []
        x = self.encoders[0](self.stem(image))
        skips.append(x)
        for level in range(1, DEPTH):
            x = self.pool(x)
            if level <= self.patch_levels:
                patches = level_patches(image, level, self.patch_mode)
                x = torch.cat([x, self.patch_proj[str(level)](patches)], dim=1)
            x = self.encoders[level](x)
            skips.append(x)
        x = self.aspp(self.bottleneck(self.pool(x)))

        sides = []
        for k, (up, decoder) in enumerate(zip(self.ups, self.decoders)):
            skip = skips[DEPTH - 1 - k]
            if self.use_convbox:
                skip = skip * self.convbox[k](prior)
            x = decoder(torch.cat([up(x), skip], dim=1))
            if self.deep_supervision:
                sides.append(self.heads[k](x))
        if not self.deep_supervision:
            sides.append(self.heads[0](x))
        return [_crop(s, h, w, image.shape[-2]) for s in sides]

    def predict(self, image: Tensor, prior: Tensor | None = None) -> Tensor:
        """Full-resolution logits ``(B, 1, H, W)``: the top output."""
        return self.forward(image, prior)[-1]

    def parts(self) -> dict[str, nn.Module]:
        """The network's parts by `TUNING_PARTS` label (every parameter lies in exactly one)."""
        return {label: getattr(self, attr) for label, attr in TUNING_PARTS}


def _crop(side: Tensor, h: int, w: int, padded_h: int) -> Tensor:
    """Crop a side output of a padded input back to the unpadded extent at its own scale."""
    scale = padded_h // side.shape[-2]
    return side[..., : math.ceil(h / scale), : math.ceil(w / scale)]


def count_tuning_parameters(cfg: CascadeConfig, in_channels: int = 1, trainable_only: bool = True) -> int:
    """Number of parameters of ``TuningNet(cfg)``, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        net = TuningNet(cfg, in_channels=in_channels)
    return param_count(net, trainable_only)


__all__ = [
    "DEPTH",
    "MAX_PATCH_LEVELS",
    "PAPER_TUNING_PARAMS",
    "PAPER_TUNING_TRAINABLE",
    "PAPER_TUNING_NON_TRAINABLE",
    "TUNING_PARTS",
    "DilatedStem",
    "ASPP",
    "ConvBox",
    "TuningNet",
    "count_tuning_parameters",
]
