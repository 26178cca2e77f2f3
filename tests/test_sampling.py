"""Algorithm 1's batches: patches of several sizes never share a batch, and their share is set."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from bench.engine.data import EpochBatches, Joined


class Items(Dataset):
    def __init__(self, n: int, side: int, foreground: bool = True) -> None:
        self.n, self.side = n, side
        self.foreground = np.full(n, foreground)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.zeros(1, self.side, self.side)}


def test_native_patch_sizes_are_batched_apart_and_resume_replays_the_order():
    joined = Joined([Items(40, 64), Items(300, 32), Items(200, 16)])
    sampler = EpochBatches(joined, batch_size=4, seed=0, steps=50, foreground_fraction=0.5)
    sizes = joined.size_groups
    batches = list(sampler)
    assert len(batches) >= 49
    assert all(len({int(sizes[i]) for i in b}) == 1 for b in batches)  # one size per batch
    assert list(EpochBatches(joined, 4, 0, 50, 0.5)) == batches  # a pure function of (seed, epoch)


def test_patch_share_keeps_the_slices_in_the_epoch():
    slices, patches = Items(40, 64, foreground=False), Items(2000, 64)
    uniform = EpochBatches(Joined([slices, patches]), 8, 0, 100, 0.0)
    mixed = EpochBatches(Joined([slices, patches], second_share=0.25), 8, 0, 100, 0.0)

    def slice_share(sampler):
        drawn = np.concatenate([np.asarray(b) for b in sampler])
        return float((drawn < 40).mean())

    assert slice_share(uniform) < 0.05  # the union read literally: patches crowd the slices out
    assert abs(slice_share(mixed) - 0.75) < 0.02  # 25 % patches on top of the slices' own epoch


def test_augmentation_moves_masks_with_the_image_and_repeats_on_resume():
    from bench.engine.augment import augment_batch

    image = torch.full((3, 1, 32, 32), -1.0)
    image[:, :, 8:24, 8:24] = 2.0
    target = (image > 0).float()
    batch = {"image": image, "target": target, "prior": target.clone()}
    a = augment_batch(batch, seed=0, epoch=3, step=7)
    b = augment_batch(batch, seed=0, epoch=3, step=7)
    c = augment_batch(batch, seed=0, epoch=3, step=8)
    assert all(torch.equal(a[k], b[k]) for k in batch)  # a pure function of (seed, epoch, step)
    assert not torch.equal(a["image"], c["image"])
    assert set(torch.unique(a["target"]).tolist()) <= {0.0, 1.0} and torch.equal(a["target"], a["prior"])
    # the mask follows the square: where the (gain/offset-shifted) image is bright, the target is on
    inside = a["target"] > 0
    assert (a["image"][inside] > a["image"][~inside].max() - 1.0).float().mean() > 0.95
    assert not torch.equal(a["target"], target)  # something moved
