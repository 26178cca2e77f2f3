"""The training engine every model uses, the cascade's stages included.

One `fit` loop: batches streamed from the slice cache (`bench.engine.data`), Adam, AMP and
channels_last on CUDA (bf16 where the GPU supports it, fp16 with a gradient scaler otherwise),
validation after every epoch with the evaluation engine on whole validation *cases* (3-D Dice
per case at the cache's resolution, mean over cases — never slice Dice), early stopping on it,
``best``/``last`` checkpoints holding model, optimizer, scaler, epoch, RNG states and config.

Resume is exact: the sample order of an epoch is a pure function of (seed, epoch) and the RNG
states are restored from ``last``, so a killed run continued with ``--resume`` ends with the
same weights as an uninterrupted one (on the same machine and thread count).

Data parallel: under ``torchrun`` each rank takes a strided share of every global batch
(`EpochBatches`), gradients are averaged by DistributedDataParallel, validation counts are
summed over ranks, and only rank 0 writes files or draws progress bars.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from bench.config import RunConfig, TrainConfig, to_dict
from bench.engine.data import EpochBatches, SliceDataset, make_loader
from bench.errors import ConfigError

LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
PredictFn = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]


# ---------------------------------------------------------------- distributed helpers


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group ``torchrun`` describes in the environment (no-op for one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    info = DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    return info


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


# ---------------------------------------------------------------- precision


@dataclass(frozen=True)
class Precision:
    """Autocast settings: AMP only on CUDA; bf16 where supported, otherwise fp16 with a scaler."""

    device: torch.device
    enabled: bool
    dtype: torch.dtype = torch.float32

    @classmethod
    def for_device(cls, device: torch.device, train: TrainConfig) -> "Precision":
        if device.type != "cuda" or not train.amp:
            return cls(device, False)
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return cls(device, True, dtype)

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)


def set_seed(seed: int, deterministic: bool) -> None:
    import warnings

    # CPU max-unpooling (SegNet) is flagged as nondeterministic for CUDA's sake; not worth a line per step
    warnings.filterwarnings("ignore", message=".*does not have a deterministic implementation.*")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- validation


def to_device(batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in batch.items():
        value = value.to(device, non_blocking=True)
        if channels_last and value.dim() == 4:
            value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


@torch.no_grad()
def validation_counts(model: nn.Module, predict: PredictFn, dataset: SliceDataset, batch_size: int,
                      device: torch.device, precision: Precision, info: DistInfo, channels_last: bool = False,
                      threshold: float = 0.5) -> tuple[list[str], np.ndarray]:
    """Per-case [tp, fp, fn, tn] (n_cases, 4) of the thresholded prediction over every validation slice.

    Counting stays on the device (`CountAccumulator`: no host round trip per slice); each rank
    takes a strided share of the slices and the confusion tensor is summed over ranks, so the
    scores equal the single-process ones.
    """
    from bench.metrics.counts import CountAccumulator

    was_training = model.training
    model.eval()
    cases = list(dict.fromkeys(dataset.table["case"].tolist()))
    case_index = {c: i for i, c in enumerate(cases)}
    row_case = torch.tensor([case_index[c] for c in dataset.table["case"]], dtype=torch.long)
    acc = CountAccumulator(len(cases), mode="binary", task=dataset.task, device=device)
    indices = np.arange(len(dataset))[info.rank :: info.world]
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        batch = torch.utils.data.default_collate([dataset[int(i)] for i in chunk])
        batch = to_device(batch, device, channels_last)
        with precision.autocast():
            probs = predict(model, batch)
        acc.add(row_case[chunk].to(device), probs.float() > threshold, batch["target"] > 0.5)
    all_reduce_sum(acc.confusion, info)
    model.train(was_training)
    return cases, acc.counts()[dataset.task]


def dice_for_selection(counts: np.ndarray) -> float:
    """Mean per-case Dice (NaN cases excluded); the global Dice when every case is excluded."""
    from bench.metrics.scores import scores_from_counts

    c = np.asarray(counts, dtype=np.float64)
    dice = np.asarray(scores_from_counts(c[:, 0], c[:, 1], c[:, 2], c[:, 3])["dice"], dtype=float)
    if np.isfinite(dice).any():
        return float(np.nanmean(dice))
    total = c.sum(axis=0)
    glob = float(scores_from_counts(total[0], total[1], total[2], total[3])["dice"])
    return 1.0 if not np.isfinite(glob) else glob


# ---------------------------------------------------------------- the loop


@dataclass
class Stage:
    """One thing to fit: a model, its loss, its data and how to score it on validation."""

    name: str
    model: nn.Module
    loss: LossFn
    predict: PredictFn
    train_set: SliceDataset
    val_set: SliceDataset | None
    epochs: int
    checkpoint_dir: Path
    lr: float | None = None  # None = the profile's
    best_name: str = ""
    last_name: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.best_name = self.best_name or f"{self.name}-best.pt"
        self.last_name = self.last_name or f"{self.name}-last.pt"


class StopTraining(Exception):
    """Raised by a hook to stop a run mid-way (tests use it to simulate a kill)."""


def fit(stage: Stage, cfg: RunConfig, device: torch.device, info: DistInfo = DistInfo(), resume: bool = False,
        progress: bool = True, on_epoch_end: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train ``stage.model`` in place; on return it holds the best-validation weights.

    Returns a summary: best epoch, best validation Dice, epochs run, seconds, stop reason.
    """
    train = cfg.profile.train
    precision = Precision.for_device(device, train)
    channels_last = device.type == "cuda" and train.channels_last
    model = stage.model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_model: nn.Module = model
    if train.compile:
        train_model = torch.compile(train_model)
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        if device.type == "cuda":  # SyncBatchNorm has no CPU kernel; on gloo/CPU BN sees the rank's share
            train_model = nn.SyncBatchNorm.convert_sync_batchnorm(train_model)
        train_model = nn.parallel.DistributedDataParallel(train_model, device_ids=ids)
    optimizer = make_optimizer(model, train, stage.lr)
    scaler = precision.scaler()
    sampler = EpochBatches(stage.train_set, train.batch_size, cfg.seed, train.steps_per_epoch,
                           train.foreground_fraction, info.rank, info.world)
    loader = make_loader(stage.train_set, sampler, train.num_workers, pin_memory=device.type == "cuda")
    ckpt_dir = Path(stage.checkpoint_dir)
    last_path, best_path = ckpt_dir / stage.last_name, ckpt_dir / stage.best_name

    start_epoch, best_score, best_epoch, bad_epochs = 0, -math.inf, -1, 0
    if resume and last_path.exists():
        state = torch.load(last_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch = state["epoch"] + 1
        best_score, best_epoch, bad_epochs = state["best_score"], state["best_epoch"], state["bad_epochs"]
        stage.history[:] = state["history"]
        set_rng_state(state["rng"])

    stop_reason = "epochs"
    t0 = time.perf_counter()
    bar = _progress(progress and info.is_main)
    with bar:
        task = bar.add_task(f"{cfg.model} {cfg.plane} {stage.name}", total=max(stage.epochs - start_epoch, 0) * max(len(sampler), 1))
        for epoch in range(start_epoch, stage.epochs):
            if best_epoch >= 0 and bad_epochs >= train.patience:
                stop_reason = "early stopping"
                break
            t_epoch = time.perf_counter()
            sampler.set_epoch(epoch)
            train_model.train()
            losses = []
            for batch in loader:
                batch = to_device(batch, device, channels_last)
                optimizer.zero_grad(set_to_none=True)
                with precision.autocast():
                    loss = stage.loss(train_model, batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{stage.name}: loss became {loss.item()} at epoch {epoch}")
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(loss.detach())
                bar.update(task, advance=1, description=f"{cfg.model} {cfg.plane} {stage.name} e{epoch} loss {loss.item():.3f}")
            train_loss = float(torch.stack(losses).mean()) if losses else float("nan")
            if stage.val_set is not None:
                _, counts = validation_counts(model, stage.predict, stage.val_set, train.batch_size, device, precision,
                                              info, channels_last)
                val_dice = dice_for_selection(counts)
            else:
                val_dice = -train_loss
            improved = val_dice > best_score
            if improved:
                best_score, best_epoch, bad_epochs = val_dice, epoch, 0
            else:
                bad_epochs += 1
            seconds = time.perf_counter() - t_epoch
            stage.history.append({"stage": stage.name, "epoch": epoch, "train_loss": train_loss,
                                  "val_dice": val_dice, "seconds": seconds})
            bar.update(task, description=f"{cfg.model} {cfg.plane} {stage.name} e{epoch} loss {train_loss:.3f} val Dice {val_dice:.3f}")
            if info.is_main:
                if improved:
                    save_checkpoint(best_path, model, optimizer, scaler, epoch, best_score, best_epoch, bad_epochs, stage, cfg)
                save_checkpoint(last_path, model, optimizer, scaler, epoch, best_score, best_epoch, bad_epochs, stage, cfg)
            if info.enabled:
                dist.barrier()
            if on_epoch_end is not None:
                on_epoch_end(epoch)
    if best_path.exists():
        model.load_state_dict(torch.load(best_path, map_location=device, weights_only=False)["model"])
    return {"stage": stage.name, "best_epoch": best_epoch, "best_val_dice": best_score,
            "epochs_run": len(stage.history), "seconds": time.perf_counter() - t0, "stop": stop_reason}


def make_optimizer(model: nn.Module, train: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    lr = train.lr if lr is None else lr
    if train.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=train.weight_decay)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=train.weight_decay)
    if train.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=train.weight_decay)
    raise ConfigError(f"unknown optimizer {train.optimizer!r} (known: adam, adamw, sgd)")


def save_checkpoint(path: Path, model: nn.Module, optimizer, scaler, epoch: int, best_score: float, best_epoch: int,
                    bad_epochs: int, stage: Stage, cfg: RunConfig) -> None:
    from bench.atomic import atomic_path

    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "best_score": best_score,
        "best_epoch": best_epoch,
        "bad_epochs": bad_epochs,
        "history": list(stage.history),
        "rng": rng_state(),
        "config": to_dict(cfg),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_weights(model: nn.Module, path: Path, device: torch.device | str = "cpu") -> nn.Module:
    from bench.errors import DataError

    if not Path(path).exists():
        raise DataError(f"{path}: checkpoint not found (train the model first)")
    state = torch.load(path, map_location=device, weights_only=False)
    model.load_state_dict(state["model"])
    return model


class _NullProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass


def _progress(enabled: bool):
    if not enabled:
        return _NullProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=False)
