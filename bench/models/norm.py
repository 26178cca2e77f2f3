"""The baselines' normalisation as a controlled variable (``model.norm``: batch | group | instance).

Why: SegNet, U-Net and DeepLabV3 are published with BatchNorm, the cascade ("ours") normalises with
GroupNorm (``cascade.norm=group``, `bench.models.cascade_blocks`). With few training patients,
BatchNorm's running statistics come from those patients only, and a held-out patient can fall
outside them (on two 3D-IRCADb patients, leave-one-out, U-Net's liver Dice was 0.04 / 0.006 under
BatchNorm while its weights were sound: re-estimating the statistics on the test patient lifted it
to 0.64 / 0.87). A comparison that leaves this open measures BatchNorm against GroupNorm as much
as the architectures, so every baseline builder ends with one call, `apply_norm(model, cfg)`, which
walks the built network and replaces every BatchNorm2d:

* ``batch``    nothing is replaced: each architecture as published (the ``paper`` profile's default).
* ``group``    ``GroupNorm(group_count(C), C)``: the cascade's own group size (up to 32 groups, at
               least 4 channels per group; `bench.models.cascade_blocks.group_count`), so baselines and
               ours are normalised the same way (the ``cpu`` profile's choice: independent of the batch
               and of the patient the statistics came from, the same in training and evaluation).
* ``instance`` ``InstanceNorm2d(C, affine=True)`` (no running statistics: per slice and channel).

Counts: the three layers hold the same two affine parameters per channel, so the *trainable*
count does not change; BatchNorm's running mean and variance (non-trainable, counted as Keras
does on the model card, `bench.models.cards`) disappear under group and instance.

A map with one value per channel (DeepLabV3's ASPP image-pooling branch, 1x1): instance statistics
of one value are undefined (PyTorch refuses it in training), and the normalised value is 0 in any
case, so `SingleValueInstanceNorm2d` returns the affine bias there, the value the formula gives in
the limit, in training and evaluation alike. GroupNorm normalises across the group's channels and
needs no special case.
"""

from __future__ import annotations

import typing

from torch import Tensor, nn

from bench.config import ModelConfig, RunConfig
from bench.models.cascade_blocks import group_count

NORMS: tuple[str, ...] = typing.get_args(typing.get_type_hints(ModelConfig)["norm"])


class SingleValueInstanceNorm2d(nn.InstanceNorm2d):
    """InstanceNorm2d(affine=True) that maps a 1x1 map to its bias instead of refusing it in training."""

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] * x.shape[-2] == 1:
            return self.bias.view(1, -1, 1, 1).to(x.dtype).expand_as(x)
        return super().forward(x)


def norm_like(bn: nn.BatchNorm2d, norm: str) -> nn.Module:
    """The ``norm`` layer replacing ``bn`` (same channels, device and dtype; fresh affine parameters)."""
    channels = bn.num_features
    kwargs = {"device": bn.weight.device, "dtype": bn.weight.dtype} if bn.weight is not None else {}
    if norm == "group":
        return nn.GroupNorm(group_count(channels), channels, eps=bn.eps, **kwargs)
    if norm == "instance":
        return SingleValueInstanceNorm2d(channels, eps=bn.eps, affine=True, track_running_stats=False, **kwargs)
    raise ValueError(f"model.norm={norm!r}: expected one of {', '.join(n for n in NORMS if n != 'batch')}")


def replace_batchnorm(model: nn.Module, norm: str) -> int:
    """Replace every BatchNorm2d in ``model`` (in place) by ``norm``'s layer; returns how many were replaced.

    ``norm="batch"`` replaces nothing. Subclasses of BatchNorm2d (the cascade's batch-1-safe one in
    DeepLabV3's ASPP) are replaced too.
    """
    if norm not in NORMS:
        raise ValueError(f"model.norm={norm!r}: expected one of {', '.join(NORMS)}")
    if norm == "batch":
        return 0
    targets = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if isinstance(child, nn.BatchNorm2d)]
    for parent, name, child in targets:
        setattr(parent, name, norm_like(child, norm))
    return len(targets)


def apply_norm(model: nn.Module, cfg: RunConfig) -> nn.Module:
    """``cfg.profile.model.norm`` applied to a freshly built baseline network; returns it (one line per builder)."""
    replace_batchnorm(model, cfg.profile.model.norm)
    return model


def norm_kinds(model: nn.Module) -> set[str]:
    """Which of batch / group / instance normalisation layers ``model`` holds (tests and cards)."""
    kinds = set()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            kinds.add("batch")
        elif isinstance(m, nn.GroupNorm):
            kinds.add("group")
        elif isinstance(m, nn.InstanceNorm2d):
            kinds.add("instance")
    return kinds


__all__ = ["NORMS", "SingleValueInstanceNorm2d", "norm_like", "replace_batchnorm", "apply_norm", "norm_kinds"]
