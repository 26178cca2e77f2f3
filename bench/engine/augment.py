"""Training-time augmentation (``train.augment``): random scale, rotation and intensity per slice.

Why these and no more: with a handful of training patients (3D-IRCADb has 20, a cross-validation
fold on two real patients has one) a network learns one patient's size, pose and contrast. A
random zoom (0.8-1.25x), a small in-plane rotation (+-10 degrees) and a mild intensity scale and
shift of the z-scored slice (+-10 %, +-0.1) cover what differs between patients and scanners,
while keeping the anatomy plausible: no flips (the liver is on the patient's right in every
scan, and the cascade's box prior would lose that).

Image, target and prior get the same geometric transform (bilinear for the image, nearest for
masks, background outside). The draws come from a generator seeded by (run seed, epoch, step),
so a resumed run repeats exactly the transforms an uninterrupted one would have used, and the
global random state is untouched.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

SCALE = (0.8, 1.25)
ROTATION_DEG = 10.0
INTENSITY_SCALE = 0.1
INTENSITY_SHIFT = 0.1
MASK_KEYS = ("target", "prior")


def augment_batch(batch: dict[str, torch.Tensor], seed: int, epoch: int, step: int) -> dict[str, torch.Tensor]:
    """A new batch dict with every (B, 1, H, W) entry transformed consistently per sample."""
    image = batch["image"]
    b = image.shape[0]
    state = np.random.SeedSequence([int(seed), int(epoch), int(step), 0xA06]).generate_state(1, dtype=np.uint64)[0]
    gen = torch.Generator().manual_seed(int(state) & (2**63 - 1))
    log_lo, log_hi = math.log(SCALE[0]), math.log(SCALE[1])
    zoom = torch.exp(torch.empty(b).uniform_(log_lo, log_hi, generator=gen))
    angle = torch.empty(b).uniform_(-ROTATION_DEG, ROTATION_DEG, generator=gen) * math.pi / 180.0
    gain = 1.0 + torch.empty(b).uniform_(-INTENSITY_SCALE, INTENSITY_SCALE, generator=gen)
    offset = torch.empty(b).uniform_(-INTENSITY_SHIFT, INTENSITY_SHIFT, generator=gen)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # output -> input sampling: inverse zoom
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros(b)], 1), torch.stack([sin, cos, torch.zeros(b)], 1)], 1)
    theta = theta.to(device=image.device, dtype=torch.float32)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    out = dict(batch)
    background = image.flatten(1).amin(dim=1).view(-1, 1, 1, 1)  # the window floor of each slice
    moved = F.grid_sample(image.float() - background, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False) + background
    out["image"] = (moved * gain.view(-1, 1, 1, 1).to(moved) + offset.view(-1, 1, 1, 1).to(moved)).to(image.dtype)
    for key in MASK_KEYS:
        if key in batch:
            m = batch[key]
            out[key] = F.grid_sample(m.float(), grid, mode="nearest", padding_mode="zeros",
                                     align_corners=False).to(m.dtype)
    return out
