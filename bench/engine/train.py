"""The training loop every model uses, the cascade's stages included.

One `fit`: batches streamed from the slice cache (`bench.engine.data`), Adam, AMP and
channels_last on CUDA (`bench.engine.precision`), optional gradient clipping, validation after
every epoch with the evaluation engine on whole validation *cases* (3-D Dice per case at the
cache's resolution, mean over cases — never slice Dice), early stopping on it, ``best``/``last``
checkpoints (`bench.engine.checkpoint`) holding model, optimizer, scaler, counters, RNG states and
the config. `fit` is written as its pieces: `train_step` (one optimiser step), `train_epoch`,
`validate`, `save_state`/`restore_state`, so each can be read and tested on its own.

Resume is exact: the sample order of an epoch is a pure function of (seed, epoch) and the RNG
states are restored from ``last``, so a killed run continued with ``--resume`` ends with the
same weights as an uninterrupted one (on the same machine and thread count). A checkpoint made
with another config is refused (the changed fields are named) instead of silently continued.

No validation patients (a given split with ``"val": []``): nothing can select an epoch, so the
documented rule is *the last epoch* (no early stopping), with a warning.

Data parallel: under ``torchrun`` each rank takes a strided share of every global batch
(`EpochBatches`), gradients are averaged by DistributedDataParallel, validation counts are
summed over ranks, and only rank 0 writes files or prints progress.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from bench.config import RunConfig, TrainConfig, changed_fields, describe_changes, to_dict
from bench.engine.augment import augment_batch
from bench.engine.checkpoint import RESUME_KEYS, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from bench.engine.data import EpochBatches, make_loader
from bench.engine.distributed import DistInfo, all_reduce_sum, unwrap
from bench.engine.precision import Precision
from bench.errors import ConfigError
from bench.metrics.counts import CountAccumulator
from bench.metrics.scores import case_mean, scores_from_counts
from bench.progress import progress as progress_bar

LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
PredictFn = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]


def set_seed(seed: int, deterministic: bool) -> None:
    # CPU max-unpooling (SegNet) is flagged as nondeterministic for CUDA's sake; not worth a line per step
    warnings.filterwarnings("ignore", message=".*does not have a deterministic implementation.*")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False


def to_device(batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in batch.items():
        value = value.to(device, non_blocking=True)
        if channels_last and value.dim() == 4:
            value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


# ---------------------------------------------------------------- validation


@torch.no_grad()
def validation_counts(model: nn.Module, predict: PredictFn, dataset, batch_size: int,
                      device: torch.device, precision: Precision, info: DistInfo, channels_last: bool = False,
                      threshold: float = 0.5) -> tuple[list[str], np.ndarray]:
    """Per-case [tp, fp, fn, tn] (n_cases, 4) of the thresholded prediction over every validation slice.

    Counting stays on the device (`CountAccumulator`: no host round trip per slice); each rank
    takes a strided share of the slices and the confusion tensor is summed over ranks, so the
    scores equal the single-process ones.
    """
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


# the empty-reference rule of model selection (`selection_dice`) and of Algorithm 1's per-iteration scores
SELECTION_EMPTY_REFERENCE = "zero"


def selection_dice(counts: np.ndarray) -> float:
    """The number epochs and iterations are selected on: mean per-case Dice (`case_mean`).

    When every case is excluded (no foreground in reference or prediction anywhere) the global
    Dice is used, and 1.0 when even that is undefined (nothing to find, nothing found).
    A validation patient with an empty reference and a non-empty prediction counts Dice 0 here
    (``empty_reference="zero"``), whatever the run's ``evaluate.empty_reference`` (a reporting rule):
    selection must see false positives on a lesion-free validation patient, which NaN would hide.
    """
    c = np.asarray(counts, dtype=np.float64)
    dice = scores_from_counts(c[:, 0], c[:, 1], c[:, 2], c[:, 3], empty_reference=SELECTION_EMPTY_REFERENCE)["dice"]
    mean = case_mean(dice)
    if math.isfinite(mean):
        return mean
    total = c.sum(axis=0)
    glob = float(scores_from_counts(total[0], total[1], total[2], total[3],
                                    empty_reference=SELECTION_EMPTY_REFERENCE)["dice"])
    return 1.0 if not math.isfinite(glob) else glob


# ---------------------------------------------------------------- the loop


@dataclass
class Stage:
    """One thing to fit: a model, its loss, its data and how to score it on validation."""

    name: str
    model: nn.Module
    loss: LossFn
    predict: PredictFn
    train_set: Any
    val_set: Any
    epochs: int
    checkpoint_dir: Path
    lr: float | None = None  # None = the profile's
    max_steps: int = 0  # > 0: stop after this many optimiser steps in all (a matched budget)
    best_name: str = ""
    last_name: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.best_name = self.best_name or f"{self.name}-best.pt"
        self.last_name = self.last_name or f"{self.name}-last.pt"

    @property
    def has_validation(self) -> bool:
        return self.val_set is not None and len(self.val_set) > 0


class StopTraining(Exception):
    """Raised by a hook to stop a run mid-way (tests use it to simulate a kill)."""


@dataclass
class LoopState:
    """What a checkpoint must restore for an exact resume, besides the weights."""

    epoch: int = 0  # the next epoch to run
    best_score: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    steps: int = 0


@dataclass
class Trainer:
    """Everything `fit` sets up once: the wrapped model, optimiser, scaler, batches, precision."""

    stage: Stage
    cfg: RunConfig
    device: torch.device
    info: DistInfo
    model: nn.Module
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    sampler: EpochBatches
    loader: torch.utils.data.DataLoader
    precision: Precision
    channels_last: bool

    @classmethod
    def build(cls, stage: Stage, cfg: RunConfig, device: torch.device, info: DistInfo) -> "Trainer":
        train = cfg.profile.train
        precision = Precision.for_device(device, train)
        channels_last = device.type == "cuda" and train.channels_last
        model = stage.model.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        train_model: nn.Module = torch.compile(model) if train.compile else model
        if info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            if device.type == "cuda":  # SyncBatchNorm has no CPU kernel; on gloo/CPU BN sees the rank's share
                train_model = nn.SyncBatchNorm.convert_sync_batchnorm(train_model)
            train_model = nn.parallel.DistributedDataParallel(train_model, device_ids=ids)
        sampler = EpochBatches(stage.train_set, train.batch_size, cfg.seed, train.steps_per_epoch,
                               train.foreground_fraction, info.rank, info.world)
        loader = make_loader(stage.train_set, sampler, train.num_workers, pin_memory=device.type == "cuda")
        return cls(stage, cfg, device, info, model, train_model, make_optimizer(model, train, stage.lr),
                   precision.scaler(), sampler, loader, precision, channels_last)

    def train_step(self, batch: dict[str, torch.Tensor], epoch: int, step: int = 0) -> torch.Tensor:
        """One optimiser step on one batch (augmented when ``train.augment``); returns the detached loss."""
        batch = to_device(batch, self.device, self.channels_last)
        if self.cfg.profile.train.augment:
            batch = augment_batch(batch, self.cfg.seed, epoch, step)
        self.optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast():
            loss = self.stage.loss(self.train_model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.stage.name}: loss became {loss.item()} at epoch {epoch}")
        self.scaler.scale(loss).backward()
        clip = self.cfg.profile.train.grad_clip
        if clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def train_epoch(self, epoch: int, state: LoopState, bar) -> float:
        """Every batch of one epoch; returns the mean training loss."""
        self.sampler.set_epoch(epoch)
        self.train_model.train()
        losses = []
        for batch in self.loader:
            if self.stage.max_steps and state.steps >= self.stage.max_steps:
                break
            losses.append(self.train_step(batch, epoch, state.steps))
            state.steps += 1
            bar.step()
        return float(torch.stack(losses).mean()) if losses else float("nan")

    def validate(self) -> float:
        """Validation Dice (`selection_dice`), NaN without validation patients."""
        if not self.stage.has_validation:
            return math.nan
        train = self.cfg.profile.train
        _, counts = validation_counts(self.model, self.stage.predict, self.stage.val_set, train.batch_size,
                                      self.device, self.precision, self.info, self.channels_last)
        return selection_dice(counts)

    def save_state(self, path: Path, state: LoopState) -> None:
        save_checkpoint(path, {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "loop": vars(state).copy(),
            "history": list(self.stage.history),
            "rng": rng_state(),
            "config": to_dict(self.cfg),
        })

    def restore_state(self, path: Path) -> LoopState:
        """Continue from ``last``: refused when the checkpoint was made with another config."""
        saved = load_checkpoint(path, self.device, require=RESUME_KEYS)
        changed = changed_fields(saved.get("config") or {}, to_dict(self.cfg))
        if changed:
            raise ConfigError(f"{path}: cannot resume: the checkpoint was made with another config "
                              f"({describe_changes(saved.get('config') or {}, to_dict(self.cfg), changed)}); "
                              f"rerun without --resume (or --force) to start over")
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scaler.load_state_dict(saved["scaler"])
        self.stage.history[:] = saved["history"]
        set_rng_state(saved["rng"])
        return LoopState(**saved["loop"])


def fit(stage: Stage, cfg: RunConfig, device: torch.device, info: DistInfo = DistInfo(), resume: bool = False,
        progress: bool = True, on_epoch_end: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train ``stage.model`` in place; on return it holds the selected (best-validation) weights.

    Returns a summary: best epoch, best validation Dice, epochs run, optimiser steps, seconds,
    stop reason.
    """
    trainer = Trainer.build(stage, cfg, device, info)
    patience = cfg.profile.train.patience
    ckpt_dir = Path(stage.checkpoint_dir)
    last_path, best_path = ckpt_dir / stage.last_name, ckpt_dir / stage.best_name
    state = trainer.restore_state(last_path) if resume and last_path.exists() else LoopState()
    if not stage.has_validation:
        warnings.warn(f"{cfg.run_tag} {cfg.plane} {stage.name}: no validation patients; keeping the last epoch "
                      f"(no early stopping)", stacklevel=2)

    stop_reason = "epochs" if stage.has_validation else "epochs (no validation: last epoch kept)"
    t0 = time.perf_counter()
    title = f"{cfg.model} {cfg.task} {cfg.plane} {stage.name}"
    with progress_bar(title, max(stage.epochs - state.epoch, 0) * max(len(trainer.sampler), 1),
                      progress and info.is_main) as bar:
        for epoch in range(state.epoch, stage.epochs):
            if state.best_epoch >= 0 and state.bad_epochs >= patience:
                stop_reason = "early stopping"
                break
            if stage.max_steps and state.steps >= stage.max_steps:
                stop_reason = f"budget of {stage.max_steps} steps"
                break
            t_epoch = time.perf_counter()
            train_loss = trainer.train_epoch(epoch, state, bar)
            val_dice = trainer.validate()
            improved = val_dice > state.best_score if stage.has_validation else True
            if improved:
                state.best_score, state.best_epoch, state.bad_epochs = val_dice, epoch, 0
            else:
                state.bad_epochs += 1
            state.epoch = epoch + 1
            seconds = time.perf_counter() - t_epoch
            # 1-based, as the log line below prints it
            stage.history.append({"stage": stage.name, "epoch": epoch + 1, "train_loss": train_loss,
                                  "val_dice": val_dice, "seconds": seconds})
            bar.say(f"epoch {epoch + 1}/{stage.epochs} loss {train_loss:.4f} val Dice {val_dice:.4f}")
            if info.is_main:
                if improved:
                    trainer.save_state(best_path, state)
                trainer.save_state(last_path, state)
            info.barrier()
            if on_epoch_end is not None:
                on_epoch_end(epoch)
    if best_path.exists():
        trainer.model.load_state_dict(load_checkpoint(best_path, device)["model"])
    best = state.best_score if math.isfinite(state.best_score) else math.nan
    # best_epoch 1-based like history.csv and the log (0: no epoch ran)
    return {"stage": stage.name, "best_epoch": state.best_epoch + 1, "best_val_dice": best,
            "epochs_run": len(stage.history), "steps": state.steps, "seconds": time.perf_counter() - t0,
            "stop": stop_reason}


def make_optimizer(model: nn.Module, train: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    lr = train.lr if lr is None else lr
    if train.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=train.weight_decay)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=train.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=train.weight_decay)
