"""Autocast settings shared by training and every prediction loop: AMP only on CUDA.

bf16 where the GPU supports it (no gradient scaler needed), fp16 with a scaler otherwise; on the
CPU everything runs in float32, so CPU results do not depend on an autocast policy.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from bench.config import TrainConfig


@dataclass(frozen=True)
class Precision:
    device: torch.device
    enabled: bool
    dtype: torch.dtype = torch.float32

    @classmethod
    def for_device(cls, device: torch.device, train: TrainConfig | None = None) -> "Precision":
        amp = train.amp if train is not None else True
        if device.type != "cuda" or not amp:
            return cls(device, False)
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return cls(device, True, dtype)

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)
