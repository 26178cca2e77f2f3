"""Which torch device a run, a count or a prediction uses: the one rule, written once.

``auto`` means CUDA when this machine has it, else the CPU; a tensor argument's own device wins
over ``auto`` (metrics counted where the predictions already are); asking for CUDA on a machine
without it is a one-line error rather than a crash deep inside a kernel.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.errors import ConfigError


def resolve_device(name: str | torch.device | None = "auto", *tensors: Any) -> torch.device:
    """``auto``/None: a tensor argument's device, else CUDA when present, else CPU; otherwise ``name``."""
    if name is None or str(name) == "auto":
        for t in tensors:
            if isinstance(t, torch.Tensor):
                return t.device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = str(name)
    if text != "cpu" and not text.startswith("cuda"):
        raise ConfigError(f"unknown device {text!r} (known: auto, cpu, cuda, cuda:N)")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {text}: CUDA is not available on this machine")
    try:
        return torch.device(text)
    except RuntimeError:
        raise ConfigError(f"unknown device {text!r} (known: auto, cpu, cuda, cuda:N)") from None
