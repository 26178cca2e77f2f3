"""Model cards (`bench ls models --detail`): parameters by component, trainable vs non-trainable."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from bench.config import RunConfig, get_profile
from bench.models import MODELS, build_model, count_parameters
from bench.models.cards import CardRow, ModelCard, format_card, model_card, module_rows
from bench.models.tuning import (
    PAPER_TUNING_NON_TRAINABLE,
    PAPER_TUNING_PARAMS,
    PAPER_TUNING_TRAINABLE,
    TUNING_PARTS,
    count_tuning_parameters,
)


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=300)


def _bn_statistics(module: torch.nn.Module) -> int:
    """Keras's non-trainable count written independently: 2 per BatchNorm channel."""
    return sum(2 * m.num_features for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))


def _assert_sums(card: ModelCard) -> None:
    comps = card.components()
    assert card.trainable == sum(r.trainable for r in comps)
    assert card.non_trainable == sum(r.non_trainable for r in comps)
    for comp in comps:
        parts = card.parts(comp.name)
        if parts:
            assert sum(p.trainable for p in parts) == comp.trainable, comp.name
            assert sum(p.non_trainable for p in parts) == comp.non_trainable, comp.name


def test_ours_at_the_paper_profile() -> None:
    card = model_card("ours", "paper")
    tuner = card.row("tuning network")
    assert (tuner.paper_total, tuner.paper_trainable, tuner.paper_non_trainable) == (38_059_141, 38_056_069, 3_072)
    assert PAPER_TUNING_PARAMS == PAPER_TUNING_TRAINABLE + PAPER_TUNING_NON_TRAINABLE
    assert tuner.trainable == count_tuning_parameters(get_profile("paper").cascade)
    assert tuner.non_trainable == 0 and "GroupNorm" in card.normalisation  # GroupNorm: no running statistics
    assert [p.name for p in card.parts("tuning network")] == [label for label, _ in TUNING_PARTS]
    assert [c.name for c in card.components()] == ["localizer", "tuning network"]
    _assert_sums(card)
    assert card.trainable == count_parameters("ours", "paper")
    text = format_card(card)
    line = next(ln for ln in text.splitlines() if ln.startswith("tuning network"))
    assert f"{tuner.total:,}" in line and "38,059,141" in line


def test_ours_with_batchnorm_counts_running_statistics_as_keras_does() -> None:
    group = model_card("ours", "paper")
    batch = model_card("ours", "paper", ["cascade.norm=batch"])
    cfg = RunConfig(model="ours", profile=get_profile("paper"), device="cpu")
    cfg = replace(cfg, profile=replace(cfg.profile, cascade=replace(cfg.profile.cascade, norm="batch")))
    from bench.models.cascade import build_localizer, build_tuner

    with torch.device("meta"):
        tuner, localizer = build_tuner(cfg), build_localizer(cfg)
    assert batch.row("tuning network").non_trainable == _bn_statistics(tuner) > 0
    assert batch.row("localizer").non_trainable == _bn_statistics(localizer) > 0
    # BatchNorm and GroupNorm have the same affine parameters; the ASPP's image-pooling branch gains
    # DeepLabV3's conv-BN (2 x 256 affine - 256 bias) under BatchNorm
    assert batch.row("tuning network").trainable - group.row("tuning network").trainable == 256
    assert batch.row("localizer").trainable == group.row("localizer").trainable
    aspp = next(p for p in batch.parts("tuning network") if p.name == "ASPP")
    assert aspp.non_trainable == PAPER_TUNING_NON_TRAINABLE  # 6 BatchNorms x 256 channels x 2
    assert batch.normalisation.startswith("BatchNorm")
    _assert_sums(batch)


def test_patch_mode_does_not_change_the_card() -> None:
    tile = model_card("ours", "smoke")
    unshuffle = model_card("ours", "smoke", ["cascade.patch_mode=unshuffle"])
    assert tile.rows == unshuffle.rows


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_card_at_smoke_sums_and_matches_a_real_build(name: str) -> None:
    card = model_card(name, "smoke")
    _assert_sums(card)
    assert card.components() and card.profile == "smoke"
    assert all(r.paper_total is None for r in card.rows)  # the paper's figure is for the paper profile
    assert card.trainable == count_parameters(name, "smoke")
    if name != "ours":  # a meta-device card equals the real CPU module's parameters and BN statistics
        cfg = RunConfig(model=name, profile=get_profile("smoke"), device="cpu")
        module = build_model(cfg)
        assert card.trainable == sum(p.numel() for p in module.parameters())
        assert card.non_trainable == _bn_statistics(module)
        assert card.non_trainable == sum(
            b.numel() for n, b in module.named_buffers() if n.endswith(("running_mean", "running_var")))


def test_lesion_card_adds_a_second_tuner() -> None:
    card = model_card("ours", "smoke", ["task=lesion"])
    assert [c.name for c in card.components()] == ["localizer", "tuning network", "lesion tuning network"]
    assert card.row("lesion tuning network").total == card.row("tuning network").total
    _assert_sums(card)


def test_module_rows_keep_the_sum_and_refuse_overlaps() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    rows = module_rows({"conv": net[0]}, net)  # the BatchNorm is in no part: an "other" row keeps the sum
    assert rows == [CardRow("conv", 20, 0), CardRow("other", 4, 4)]
    with pytest.raises(RuntimeError, match="overlap"):
        module_rows({"a": net, "b": net[0]}, net)


def test_cli_detail_shows_the_paper_figure_beside_ours() -> None:
    proc = _bench("ls", "models", "--detail")
    assert proc.returncode == 0, proc.stderr
    ours = count_tuning_parameters(get_profile("paper").cascade)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("tuning network"))
    assert f"{ours:,}" in line and "38,059,141" in line and "38,056,069" in line and "3,072" in line
    for name in MODELS.names():
        assert f"{name} -- " in proc.stdout
    assert "normalisation: GroupNorm (no running statistics: 0 non-trainable)" in proc.stdout


def test_cli_detail_smoke_profile_and_overrides() -> None:
    proc = _bench("ls", "models", "--detail", "--profile", "smoke", "--set", "cascade.norm=batch")
    assert proc.returncode == 0, proc.stderr
    assert "profile: smoke" in proc.stdout and "38,059,141" not in proc.stdout
    card = model_card("ours", "smoke", ["cascade.norm=batch"])
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("tuning network"))
    row = card.row("tuning network")
    assert line.split()[2:5] == [f"{row.trainable:,}", f"{row.non_trainable:,}", f"{row.total:,}"]


@pytest.mark.parametrize("args, needle", [
    (("--set", "cascade.norm=bn"), "override cascade.norm=bn: norm='bn' is not one of group, batch, none"),
    (("--set", "cascade.patch_mode=tiles"), "patch_mode='tiles' is not one of tile, unshuffle; did you mean tile?"),
])
def test_cli_detail_bad_flags_are_one_line(args: tuple[str, ...], needle: str) -> None:
    proc = _bench("ls", "models", "--detail", *args)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr
