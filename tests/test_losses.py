"""Losses (paper Eqs. 4-6): values on hand-made examples, multi-level weights and targets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench.errors import ConfigError
from bench.models.losses import (
    MultiLevelLoss,
    bce_dice_loss,
    bce_loss,
    dice_loss,
    downsample_target,
    multilevel_loss,
    multilevel_weights,
)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_dice_loss_matches_eq5_by_hand() -> None:
    # sample 0: p = [0.8, 0.2, 0.5, 0.5], y = [1, 0, 1, 0]
    probs = torch.tensor([[0.8, 0.2, 0.5, 0.5]])
    logits = torch.logit(probs).reshape(1, 1, 2, 2)
    target = torch.tensor([1.0, 0.0, 1.0, 0.0]).reshape(1, 1, 2, 2)
    inter = 0.8 + 0.5
    total = (0.8 + 0.2 + 0.5 + 0.5) + 2.0
    expected = 1 - (2 * inter + 1) / (total + 1)
    assert dice_loss(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_dice_loss_is_per_sample_mean() -> None:
    logits = torch.full((2, 1, 4, 4), -20.0)
    logits[0] = 20.0  # sample 0 predicts everything, target everything -> ~0
    target = torch.zeros(2, 1, 4, 4)
    target[0] = 1.0
    # sample 1: empty prediction, empty target -> 1 - 1/1 = 0 thanks to the smoothing
    assert dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    target[1, 0, 0, 0] = 1.0  # sample 1 misses one pixel: 1 - 1/(1+1) = 0.5
    assert dice_loss(logits, target).item() == pytest.approx(0.25, abs=1e-4)


def test_bce_dice_weights() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8)
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    bce = F.binary_cross_entropy(torch.sigmoid(logits), target)
    dice = dice_loss(logits, target)
    assert bce_loss(logits, target).item() == pytest.approx(bce.item(), rel=1e-5)
    assert bce_dice_loss(logits, target, alpha=2.0, beta=3.0).item() == pytest.approx(
        2 * bce.item() + 3 * dice.item(), rel=1e-5
    )
    assert bce_dice_loss(logits, target).item() == pytest.approx(bce.item() + dice.item(), rel=1e-5)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ConfigError):
        bce_dice_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4))


def test_multilevel_weights_follow_alpha_n_minus_i_beta_i() -> None:
    # 4 side outputs -> N = 5 layers (layer 1 = bottleneck): i = 2..5
    assert multilevel_weights(4) == [(3.0, 2.0), (2.0, 3.0), (1.0, 4.0), (0.0, 5.0)]
    assert multilevel_weights(2) == [(1.0, 2.0), (0.0, 3.0)]
    with pytest.raises(ConfigError, match="deep_supervision"):
        multilevel_weights(1)


def test_multilevel_loss_on_hand_made_example() -> None:
    """3 side outputs (8x8, 16x16, 32x32 top) -> N = 4: l = (2 bce + 2 dice)_8 + (1 bce + 3 dice)_16 + 4 dice_32."""
    torch.manual_seed(1)
    target = torch.zeros(2, 1, 32, 32)
    target[:, :, 8:24, 4:20] = 1.0
    sides = [torch.randn(2, 1, s, s) for s in (8, 16, 32)]
    t8 = downsample_target(target, (8, 8))
    t16 = downsample_target(target, (16, 16))
    bce = lambda lg, t: F.binary_cross_entropy(torch.sigmoid(lg), t)  # noqa: E731
    expected = (
        2.0 * bce(sides[0], t8)
        + 2.0 * dice_loss(sides[0], t8)
        + 1.0 * bce(sides[1], t16)
        + 3.0 * dice_loss(sides[1], t16)
        + 4.0 * dice_loss(sides[2], target)
    )
    assert multilevel_loss(sides, target).item() == pytest.approx(expected.item(), rel=1e-5)
    grid = torch.zeros(8, 8)
    grid[2:6, 1:5] = 1.0  # the 16x16 square at 1/4 resolution
    assert torch.equal(t8[0, 0], grid)


def test_downsample_target_modes() -> None:
    target = torch.zeros(1, 1, 4, 4)
    target[0, 0, 0, 0] = 1.0  # one pixel of the top-left 2x2 cell
    target[0, 0, 2:4, 2:4] = 1.0  # the whole bottom-right cell
    target[0, 0, 0, 2:4] = 1.0  # half of the top-right cell
    area = downsample_target(target, (2, 2), "area")[0, 0]
    assert area.tolist() == [[0.0, 1.0], [0.0, 1.0]]
    mx = downsample_target(target, (2, 2), "max")[0, 0]
    assert mx.tolist() == [[1.0, 1.0], [0.0, 1.0]]
    with pytest.raises(ConfigError):
        downsample_target(target, (2, 2), "nearest")


def test_multilevel_switch() -> None:
    torch.manual_seed(2)
    target = (torch.rand(2, 1, 16, 16) > 0.7).float()
    sides = [torch.randn(2, 1, 4, 4), torch.randn(2, 1, 8, 8), torch.randn(2, 1, 16, 16, requires_grad=True)]
    off = MultiLevelLoss(enabled=False)
    assert off(sides, target).item() == pytest.approx(bce_dice_loss(sides[-1], target).item(), rel=1e-6)
    assert off(sides[-1], target).item() == pytest.approx(bce_dice_loss(sides[-1], target).item(), rel=1e-6)
    on = MultiLevelLoss(enabled=True)
    loss = on(sides, target)
    assert loss.item() == pytest.approx(multilevel_loss(sides, target).item(), rel=1e-6)
    loss.backward()
    assert sides[-1].grad is not None and torch.isfinite(sides[-1].grad).all()
    with pytest.raises(ConfigError):
        on(sides[-1], target)  # one output: the multi-level loss is undefined
