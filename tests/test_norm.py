"""Normalisation as a controlled variable (issue 18, item 1) and liver-prior runs at a matched budget (item 2).

``model.norm`` replaces every BatchNorm of a built baseline (bench/models/norm.py); the budget reference
and the liver prior's run drop the baseline-only fields; `bench ablate norm`/`capacity` and `bench demo`'s
"+ liver prior" lesion rows are planned; the report keeps "as published" and "matched" apart.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from bench.config import RunConfig, get_profile, override
from bench.models import build_model, check_run_config, requirements
from bench.models.cascade_blocks import group_count, running_stat_count
from bench.models.norm import NORMS, norm_kinds, replace_batchnorm
from tests.cli_run import LAUNCHERS, assert_one_line_error, bench

BASELINES = ("segnet", "unet", "deeplabv3")


def _cfg(model: str, profile: str = "smoke", **changes) -> RunConfig:
    cfg = RunConfig(model=model, device="cpu", profile=get_profile(profile))
    return override(cfg, {f"profile.{k.replace('__', '.')}": v for k, v in changes.items()}) if changes else cfg


# ---------------------------------------------------------------- the replacement


@pytest.mark.parametrize("model", BASELINES)
@pytest.mark.parametrize("norm", NORMS)
def test_every_baseline_builds_and_runs_under_each_norm(model: str, norm: str) -> None:
    torch.manual_seed(0)
    net = build_model(_cfg(model, model__norm=norm))
    plain = build_model(_cfg(model, model__norm="batch"))
    assert norm_kinds(net) == {norm}  # nothing of BatchNorm left under group/instance, and nothing else added
    trainable = sum(p.numel() for p in net.parameters())
    # the same two affine parameters per channel: the trainable count is unchanged; running statistics go
    assert trainable == sum(p.numel() for p in plain.parameters())
    assert running_stat_count(plain) > 0
    assert running_stat_count(net) == (running_stat_count(plain) if norm == "batch" else 0)
    if norm == "group":  # the cascade's group size (cascade_blocks.group_count)
        groups = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
        assert groups and all(m.num_groups == group_count(m.num_channels) for m in groups)
    x = torch.randn(2, 1, 64, 64)
    net.train()
    out = net(x)
    out.mean().backward()
    assert out.shape == (2, 1, 64, 64) and torch.isfinite(out).all()
    net.eval()
    with torch.no_grad():
        assert net(x[:1]).shape == (1, 1, 64, 64)


def test_replacement_counts_and_refuses_an_unknown_norm() -> None:
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.Sequential(nn.BatchNorm2d(16)))
    assert replace_batchnorm(net, "batch") == 0 and norm_kinds(net) == {"batch"}
    assert replace_batchnorm(net, "instance") == 2 and norm_kinds(net) == {"instance"}
    with pytest.raises(ValueError, match="model.norm"):
        replace_batchnorm(net, "layer")


def test_instance_norm_of_a_single_value_is_its_bias() -> None:
    """DeepLabV3's ASPP pooling branch is 1x1: instance statistics are undefined there (PyTorch refuses them in
    training); the layer gives the bias, in training and evaluation alike."""
    net = build_model(_cfg("deeplabv3", model__norm="instance")).train()
    pooled = [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]
    layer = pooled[-1]
    with torch.no_grad():
        layer.bias.fill_(0.25)
    y = layer(torch.randn(1, layer.num_features, 1, 1))
    assert torch.equal(y, torch.full_like(y, 0.25))


def test_profile_defaults_as_published_except_cpu() -> None:
    assert get_profile("paper").model.norm == "batch"  # each architecture as published
    assert get_profile("cpu").model.norm == "group"  # every model normalised as ours (cascade.norm=group)
    assert get_profile("cpu").cascade.norm == "group"
    for name in ("demo", "smoke", "golden"):  # the demo and the calibrated golden study are unchanged
        assert get_profile(name).model.norm == "batch" and get_profile(name).model.encoder_depth == 5


def test_a_bad_norm_is_one_line_through_the_console_script(tmp_path: Path) -> None:
    launcher = "console script" if "console script" in LAUNCHERS else "python -m bench"
    proc = bench("ls", "models", "--detail", "--profile", "smoke", "--set", "model.norm=layer", cwd=tmp_path,
                 launcher=launcher)
    assert_one_line_error(proc, "model.norm", "layer", "batch, group, instance")


def test_the_card_records_the_norm_and_the_count() -> None:
    from bench.models.cards import model_card

    batch = model_card("unet", "cpu", ["model.norm=batch"])
    group = model_card("unet", "cpu")
    assert group.normalisation.startswith("model.norm=group") and "GroupNorm" in group.normalisation
    assert batch.trainable == group.trainable and batch.non_trainable > 0 == group.non_trainable


# ---------------------------------------------------------------- capacity


def test_unet_can_be_sized_to_ours() -> None:
    from bench.models import count_parameters
    from bench.models.cards import model_card

    ours = count_parameters("ours", "cpu")
    published = model_card("unet", "cpu").trainable
    small = model_card("unet", "cpu", ["model.encoder_depth=4", "model.width=0.25"]).trainable
    assert published > 4 * ours  # 12.45 M vs 2.98 M
    assert abs(small - ours) < 0.1 * ours  # 3.10 M
    net = build_model(_cfg("unet", model__encoder_depth=4))
    assert not hasattr(net.encoder, "layer4")  # smp keeps the unused stage; it is removed, not just skipped
    assert net(torch.randn(2, 1, 64, 64)).shape == (2, 1, 64, 64)
    segnet = build_model(_cfg("segnet", model__encoder_depth=3))
    assert len(segnet.encoders) == 3 and segnet(torch.randn(1, 1, 40, 40)).shape == (1, 1, 40, 40)
    from bench.errors import ConfigError

    with pytest.raises(ConfigError, match="encoder_depth"):
        build_model(_cfg("deeplabv3", model__encoder_depth=4))
    with pytest.raises(ConfigError, match="ResNet"):
        build_model(_cfg("unet", model__encoder="mobilenet_v2", model__encoder_depth=4))


# ---------------------------------------------------------------- ablations


def test_norm_and_capacity_ablations_are_registered_and_planned() -> None:
    from bench.ablations import ABLATIONS, ablation_targets
    from bench.engine.scheduler import plan
    from bench.engine.study import StudyPlan, study_targets

    takers = BASELINES + ("unetpp",)  # every baseline declaring the norm capability, UNet++ included
    assert ABLATIONS.get("norm").models == takers  # in table order
    out = ablation_targets("norm", _cfg("ours", "cpu"))
    got = {(c.model, c.profile.model.norm, c.run_tag) for _, c in out}
    assert got == {(m, "batch", f"{m}~norm=batch") for m in takers} | {(m, "group", m) for m in takers}
    # at the paper profile "as published" is the default run and the matched one the variant
    paper = {(c.model, c.run_tag) for _, c in ablation_targets("norm", _cfg("ours", "paper"))}
    assert ("unet", "unet") in paper and ("unet", "unet~norm=group") in paper
    seed1 = {c.run_tag for _, c in ablation_targets("norm", replace_tag(_cfg("ours", "cpu"), "ours~seed1"))}
    assert "unet~seed1~norm=batch" in seed1 and "unet~seed1" in seed1
    jobs = plan(study_targets("cpu", "res", "phantom", "", "cache", (0,), "cpu",
                              StudyPlan(models=("unet", "ours"), planes=("axial",), tasks=("liver",),
                                        ablations=("norm", "capacity"))))
    runs = {(j.cfg.model, j.cfg.run_tag, j.cfg.profile.model.norm, j.cfg.profile.train.budget) for j in jobs}
    assert ("unet", "unet~norm=batch", "batch", "matched") in runs and ("unet", "unet", "group", "matched") in runs
    assert ("unet", "unet~encoder_depth=4,width=0.25", "group", "matched") in runs
    assert len([j for j in jobs if j.cfg.model == "ours"]) == 1  # every baseline variant matched to one ours run
    assert {j.cfg.model for j in jobs} == {"unet", "ours"}  # the norm ablation keeps to the study's models
    every = plan(study_targets("cpu", "res", "phantom", "", "cache", (0,), "cpu",
                               StudyPlan(models=("segnet", "ours"), planes=("axial",), tasks=("liver",),
                                         ablations=("capacity",))))
    assert ("unet", "unet~encoder_depth=4,width=0.25") in {(j.cfg.model, j.cfg.run_tag) for j in every}


def replace_tag(cfg: RunConfig, tag: str) -> RunConfig:
    from dataclasses import replace

    return replace(cfg, tag=tag, seed=1)


# ---------------------------------------------------------------- item 2: liver prior at a matched budget


@pytest.mark.parametrize("prior", ["channel", "crop"])
def test_a_liver_prior_run_at_a_matched_budget_reads_the_plain_ours_runs(prior: str) -> None:
    """Refused before the fix ("ours takes no liver prior": the budget reference kept the prior flag)."""
    from bench.engine.scheduler import plan
    from bench.engine.study import StudyPlan, study_targets

    cfg = _cfg("unet", "cpu", model__liver_prior=prior, train__budget="matched", model__norm="batch")
    cfg = override(cfg, {"task": "lesion"})
    check_run_config(cfg)
    plain = {j.key: j.cfg for j in plan(study_targets("cpu", "results", "phantom", "", "cache", (0,), "cpu",
                                                      StudyPlan(models=("ours",), planes=("axial",), ablations=(),
                                                                fused=False)))}
    mine = {j.key: j.cfg for j in plan([("x", override(cfg, {"device": "cpu"}))])}
    deps = {k: c for k, c in mine.items() if c.model == "ours"}
    assert {(c.task, c.profile.train.budget) for c in deps.values()} == {("liver", "epochs"), ("lesion", "epochs")}
    assert set(deps) <= set(plain) and all(plain[k] == deps[k] for k in deps)  # the very runs the study trains
    assert all(d.model == "ours" and d.profile.model == get_profile("cpu").model for d in requirements(cfg))


def test_demo_plans_plain_prior_and_ours_lesion_rows() -> None:
    from bench.engine.scheduler import plan
    from bench.engine.study import StudyPlan, study_targets

    jobs = plan(study_targets("cpu", "res", "ircadb", "/data", "cache", (0,), "cpu",
                              StudyPlan(models=("unet", "ours"), planes=("axial",), lesion_planes=("axial",),
                                        ablations=(), folds=2)))
    lesion = {(j.cfg.model, j.cfg.profile.model.liver_prior, j.cfg.fold) for j in jobs if j.cfg.task == "lesion"}
    assert lesion == {(m, p, f) for m, p in (("unet", "none"), ("unet", "crop"), ("ours", "none")) for f in (0, 1)}
    crop = next(j for j in jobs if j.cfg.profile.model.liver_prior == "crop" and j.cfg.fold == 1)
    assert crop.cfg.run_tag == "unet~fold1~liver_prior=crop" and crop.cfg.profile.train.budget == "matched"
    ours = {(j.cfg.task, j.cfg.fold): j.key for j in jobs if j.cfg.model == "ours"}
    assert crop.needs == {ours[("lesion", 1)], ours[("liver", 1)]}  # its budget and its liver prior
    none = plan(study_targets("cpu", "res", "ircadb", "/data", "cache", (0,), "cpu",
                              StudyPlan(models=("unet", "ours"), planes=("axial",), ablations=(), liver_priors=())))
    assert {j.cfg.profile.model.liver_prior for j in none} == {"none"}


def test_demo_refuses_an_unknown_liver_prior_in_one_line(tmp_path: Path) -> None:
    proc = bench("demo", "--liver-priors", "crop,mask", "--results", str(tmp_path / "r"), "--cache",
                 str(tmp_path / "c"), cwd=tmp_path)
    assert_one_line_error(proc, "--liver-priors", "'mask'", "channel, crop")
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------- the report


def test_report_keeps_as_published_and_matched_apart(tmp_path: Path) -> None:
    from bench.reports.collect import load_results
    from bench.reports.select import ReportOptions
    from bench.reports.tables import TABLES, table_names
    from bench.reports.writers import to_markdown
    from tests.test_reports import cell, write_run

    results = tmp_path / "results"
    high = {c: 0.9 for c in ("p01", "p02", "p03", "p04", "p05")}
    low = {c: 0.1 for c in high}
    write_run(results, "unet", dice=low)  # demo profile: batch is the default
    write_run(results, "unet", tag="unet~norm=group", changes={"profile.model.norm": "group"}, dice=high)
    write_run(results, "ours")
    res = load_results(results)
    opts = ReportOptions()
    t7 = TABLES.get("7")(res, opts)
    unet = cell(t7, group="Axial Plane", row="Dice", col_group="U-Net", col="Val")
    assert unet["ours"] == pytest.approx(0.1) and unet["n_seeds"] == 1  # never averaged with the GroupNorm run
    assert t7.provenance["models"]["U-Net"] == "model.norm=batch, 1,000 parameters"
    assert t7.provenance["models"]["Ours"].startswith("cascade.norm=group")
    assert any("not under one normalisation" in n for n in t7.notes)
    assert "norm" in table_names(res, [7], opts)
    norm = TABLES.get("norm")(res, opts)
    batch = cell(norm, row="Dice", col_group="U-Net, batch (as published)", col="Val")
    group = cell(norm, row="Dice", col_group="U-Net, group (matched)", col="Val")
    assert batch["ours"] == pytest.approx(0.1) and group["ours"] == pytest.approx(0.9)
    assert cell(norm, row="Parameters", col_group="U-Net, group (matched)", col="Val")["ours"] == 1000
    assert "1,000" in to_markdown(norm)
    assert cell(norm, row="Dice", col_group="SegNet, group (matched)", col="Val")["status"] == "missing"
    assert any("bench ablate norm" in n for n in norm.notes)


def test_an_ours_run_recorded_before_model_norm_stays_a_plain_cpu_run(tmp_path: Path) -> None:
    """A config.json without model.norm loads with the dataclass default (batch); ours never reads it, so its
    collected row takes the profile's value and stays in the plain cells of the cpu scope; a baseline keeps its own."""
    from bench.config import to_dict
    import json

    from bench.reports.collect import ablation_defaults, load_results

    for model in ("ours", "unet"):
        cfg = RunConfig(model=model, device="cpu", results=str(tmp_path), profile=get_profile("cpu"))
        data = to_dict(cfg)
        del data["profile"]["model"]["norm"]  # written before the field existed
        folder = tmp_path / "phantom" / "liver" / model / "axial"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"config": data, "status": "complete", "parameters": 5}))
    runs = load_results(tmp_path).runs.set_index("model")
    assert runs.loc["ours", "norm"] == ablation_defaults("cpu")["norm"] == "group"
    assert runs.loc["ours", "normalisation"] == "cascade.norm=group"
    assert runs.loc["unet", "norm"] == "batch" and runs.loc["unet", "normalisation"] == "model.norm=batch"
