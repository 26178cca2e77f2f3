"""Checkpoints that hold data only: model/optimizer state, progress counters, RNG states, config.

Why ``weights_only``: ``torch.load`` of an arbitrary pickle can run code, and users evaluate,
predict and resume from results folders they did not write. Every value saved here is a tensor,
a number, a string or a container of those (numpy's RNG state is stored as a tensor), so loading
with ``weights_only=True`` works, and a file carrying a pickled callable is refused in one line.
"""

from __future__ import annotations

import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.atomic import atomic_path
from bench.errors import DataError


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) generator states as tensors, numbers and tuples."""
    version, keys, gauss = random.getstate()
    name, np_keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "keys": torch.tensor(keys, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(k) for k in py["keys"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (a kill mid-save leaves the previous file intact)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


RESUME_KEYS = ("model", "optimizer", "scaler", "history", "rng", "loop")  # what `--resume` reads from last.pt


def load_checkpoint(path: Path, device: torch.device | str = "cpu", require: tuple[str, ...] = ("model",)) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a missing, corrupt or code-carrying file is one line.

    Any file that is not one of our checkpoints (empty, text, another tool's zip, a bare state
    dict, a checkpoint without the ``require``d entries) is one line naming it: torch's loader
    answers such files with EOFError, KeyError, IndexError or RuntimeError, none of them a message.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found (train the model first)")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing: one line only
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise DataError(f"{path}: refused: the checkpoint holds Python objects other than tensors and plain "
                        f"values (loading it could run code)") from None
    except Exception as exc:  # noqa: BLE001  (any failure of the loader means: not a readable checkpoint)
        first = (str(exc).strip().splitlines() or [""])[0]
        raise DataError(f"{path}: not a checkpoint (unreadable: {type(exc).__name__}"
                        f"{': ' + first if first else ''})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise DataError(f"{path}: not a liverbench checkpoint (no model state)")
    missing = [k for k in require if k not in state]
    if missing:
        raise DataError(f"{path}: not a complete liverbench checkpoint (no {', '.join(missing)})")
    return state


def load_weights(model: nn.Module, path: Path, device: torch.device | str = "cpu") -> nn.Module:
    """Load a checkpoint's model state into ``model`` (one line if it belongs to another architecture)."""
    state = load_checkpoint(path, device)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError, KeyError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{path}: weights do not fit this model ({first})") from None
    return model
