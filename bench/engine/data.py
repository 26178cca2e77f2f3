"""Training batches streamed from the on-disk slice cache.

The cache holds memory-mapped (N, S, S) arrays per case and plane, so the training set is never
held in memory: a batch reads only its own slices. Sampling is a pure function of (seed, epoch)
so that ``--resume`` after a kill replays exactly the batches an uninterrupted run would see,
and data-parallel ranks take disjoint strided shares of the same global order.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from bench.datasets.base import task_mask
from bench.errors import ConfigError


class SliceDataset(Dataset):
    """Slices of ``case_ids`` along one plane; returns dict(image (1,S,S), target (1,S,S)[, prior]).

    ``extra`` maps a name to a function (case, plane) -> (N, S, S) array (e.g. box priors, or
    self-labels); its slices are returned under that name. Rows come from the cache's slice
    table, so foreground sampling needs no array reads.
    """

    def __init__(self, cache, case_ids: Sequence[str], plane: str, task: str,
                 extra: dict[str, Callable[[str, str], np.ndarray]] | None = None) -> None:
        self.cache = cache
        self.plane = plane
        self.task = task
        self.extra = extra or {}
        self.table: pd.DataFrame = cache.slice_table(list(case_ids), plane).reset_index(drop=True)
        column = "liver_px" if task == "liver" else "lesion_px"
        self.foreground = self.table[column].to_numpy() > 0
        self._arrays: dict[tuple[str, str], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.table)

    @property
    def side(self) -> int:
        """Item side in pixels (the cache's input size)."""
        return int(self.cache.input_size)

    def _array(self, kind: str, case: str) -> np.ndarray:
        key = (kind, case)
        if key not in self._arrays:
            if kind == "image":
                self._arrays[key] = self.cache.images(case, self.plane)
            elif kind == "label":
                self._arrays[key] = self.cache.labels(case, self.plane)
            else:
                self._arrays[key] = self.extra[kind](case, self.plane)
        return self._arrays[key]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = self.table.iloc[int(i)]
        case, index = str(row["case"]), int(row["index"])
        image = np.asarray(self._array("image", case)[index], dtype=np.float32)
        label = np.asarray(self._array("label", case)[index])
        item = {
            "image": torch.from_numpy(image)[None],
            "target": torch.from_numpy(task_mask(label, self.task).astype(np.float32))[None],
        }
        for name in self.extra:
            item[name] = torch.from_numpy(np.asarray(self._array(name, case)[index], dtype=np.float32))[None]
        return item

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_arrays"] = {}  # memmaps reopen lazily in each worker
        return state


def epoch_order(n_items: int, foreground: np.ndarray, epoch: int, seed: int, steps: int, batch_size: int,
                foreground_fraction: float) -> np.ndarray:
    """Global sample order of one epoch, a pure function of its arguments.

    ``steps == 0``: a permutation of every slice. ``steps > 0``: ``steps * batch_size`` draws,
    a ``foreground_fraction`` share of them from slices that contain the task's foreground
    (LiTS volumes are mostly slices without liver; without this a short budget learns "empty").
    """
    rng = np.random.default_rng([seed, epoch])
    if steps <= 0:
        return rng.permutation(n_items)
    total = steps * batch_size
    fg_idx = np.flatnonzero(foreground)
    n_fg = int(round(total * foreground_fraction)) if len(fg_idx) else 0
    picks = [rng.choice(n_items, size=total - n_fg, replace=n_items < total - n_fg)]
    if n_fg:
        picks.append(rng.choice(fg_idx, size=n_fg, replace=len(fg_idx) < n_fg))
    order = np.concatenate(picks)
    return rng.permutation(order)


def mixed_order(dataset: "Joined", share: float, epoch: int, seed: int, steps: int, batch_size: int,
                foreground_fraction: float) -> np.ndarray:
    """An epoch over `Joined` parts where the parts after the first get a fixed ``share`` of the draws.

    Algorithm 1's X u P: when the patches far outnumber the slices, a uniform draw over the union
    would train almost only on patches and the network would lose the full-slice view it is used
    with at inference. Here the slices keep their own epoch (`epoch_order`, with its foreground
    rule) and the patches add ``share / (1 - share)`` as many draws, uniformly.
    """
    first = len(dataset.datasets[0])
    slices = epoch_order(first, dataset.foreground[:first], epoch, seed, steps, batch_size, foreground_fraction)
    n_rest = len(dataset) - first
    n_extra = int(round(len(slices) * share / (1.0 - share))) if n_rest else 0
    rng = np.random.default_rng([seed, epoch, 2])
    extra = first + rng.choice(n_rest, size=n_extra, replace=n_rest < n_extra) if n_extra else np.zeros(0, int)
    return rng.permutation(np.concatenate([slices, extra]))


class EpochBatches(torch.utils.data.Sampler):
    """Batch sampler over `epoch_order`, sharded by rank for data-parallel training.

    The global batch is ``batch_size``; each of ``world`` ranks takes ``batch_size // world``
    items of every global batch, so N processes see exactly the batches one process would.
    """

    def __init__(self, dataset: SliceDataset, batch_size: int, seed: int, steps: int, foreground_fraction: float,
                 rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise ConfigError(f"train.batch_size={batch_size} is not divisible by {world} processes")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.steps = steps
        self.fraction = foreground_fraction
        self.rank = rank
        self.world = world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[np.ndarray]:
        share = float(getattr(self.dataset, "second_share", 0.0) or 0.0)
        if share > 0:
            order = mixed_order(self.dataset, share, self.epoch, self.seed, self.steps, self.batch_size, self.fraction)
        else:
            order = epoch_order(len(self.dataset), self.dataset.foreground, self.epoch, self.seed, self.steps,
                                self.batch_size, self.fraction)
        groups = getattr(self.dataset, "size_groups", None)
        if groups is None:
            batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        else:
            batches = _batches_by_group(order, np.asarray(groups), self.batch_size,
                                        np.random.default_rng([self.seed, self.epoch, 1]))
        batches = [b for b in batches if len(b) == self.batch_size or (len(b) >= 2 and self.world == 1)]
        per_rank = self.batch_size // self.world
        return [b[self.rank * per_rank : (self.rank + 1) * per_rank] if len(b) == self.batch_size else b
                for b in batches]

    def __iter__(self):
        for batch in self._batches():
            yield batch.tolist()

    def __len__(self) -> int:
        return len(self._batches())


def _batches_by_group(order: np.ndarray, groups: np.ndarray, batch_size: int,
                      rng: np.random.Generator) -> list[np.ndarray]:
    """Batches that never mix groups (items of one size), in a seeded random order of batches."""
    batches = []
    for g in np.unique(groups[order]):
        members = order[groups[order] == g]  # the epoch order within the group
        batches += [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class Joined(torch.utils.data.ConcatDataset):
    """Datasets in one index space (Algorithm 1's X u P) that keeps the sampler's foreground flags.

    Parts whose items have different sides (patches at their native size) get ``size_groups``, so
    `EpochBatches` batches each side separately; parts of one side batch as one set.
    """

    def __init__(self, parts: Sequence[Dataset], second_share: float = 0.0) -> None:
        """``second_share`` > 0: the parts after the first get that share of each epoch (`mixed_order`)."""
        super().__init__([p for p in parts if len(p)])
        self.second_share = second_share if len(self.datasets) > 1 and len(parts[0]) else 0.0
        self.foreground = np.concatenate([np.asarray(p.foreground, dtype=bool) for p in self.datasets])
        sides = [int(getattr(p, "side", 0)) for p in self.datasets]
        self.size_groups = None
        if len(set(sides)) > 1:
            self.size_groups = np.concatenate([np.full(len(p), side) for p, side in zip(self.datasets, sides)])


def make_loader(dataset: SliceDataset, sampler: EpochBatches, num_workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
    )
