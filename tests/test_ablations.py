"""Ablations are config overrides through the normal path; the default variant is the default run."""

from __future__ import annotations

import pytest

from bench.ablations import ABLATIONS, ablation_targets, variant_config
from bench.config import RunConfig, get_profile
from bench.errors import ConfigError


def base() -> RunConfig:
    return RunConfig(model="ours", profile=get_profile("demo"))


def test_registered_ablations_feed_tables_3_to_5():
    assert {ABLATIONS.get(n).table for n in ("patch-level", "loss", "iterations")} == {3, 4, 5}
    with pytest.raises(ConfigError, match="did you mean"):
        ABLATIONS.get("patch-levels")


def test_variant_equal_to_default_reuses_the_default_folder():
    cfg = base()
    same = variant_config(cfg, (("profile.cascade.patch_levels", 3),))
    assert same == cfg and same.run_tag == "ours"
    other = variant_config(cfg, (("profile.cascade.patch_levels", 1),))
    assert other.profile.cascade.patch_levels == 1 and other.run_tag == "ours~patch_levels=1"
    loss = variant_config(cfg, (("profile.cascade.multilevel_loss", False),))
    assert loss.run_tag == "ours~multilevel_loss=False"


def test_ablation_targets_are_override_lists_on_the_ablation_base():
    out = ablation_targets("patch-level", base())
    assert [label for label, _ in out] == ["level-1", "level-2", "level-3"]
    assert [c.profile.cascade.patch_levels for _, c in out] == [1, 2, 3]
    assert all(c.plane == "axial" and c.task == "liver" for _, c in out)
    assert [c.run_tag for _, c in out] == ["ours~patch_levels=1", "ours~patch_levels=2", "ours"]
    (_, cfg), = ablation_targets("iterations", base())
    assert cfg.profile.cascade.reiter_stop == "none" and cfg.profile.cascade.max_reiterations == 7


def test_study_plan_dedupes_default_variant_and_orders_dependencies():
    from bench.engine.scheduler import plan
    from bench.engine.study import StudyPlan, study_targets
    from bench.models import model_names

    jobs = plan(study_targets("demo", "res", "phantom", "", "cache", (0,), "cpu", StudyPlan(lesion_planes=("axial",))))
    keys = [j.key for j in jobs]
    assert len(keys) == len(set(keys))
    trains = [j for j in jobs if j.cfg.plane != "fused"]
    n = len(model_names())  # the study plans every registered model (the paper's four and UNet++)
    # n models x 3 planes liver + n lesion axial + U-Net + liver crop (lesion axial) + new ablation variants
    # (levels 1, 2; no multi-level loss; N=0..7)
    assert {j.cfg.model for j in trains} == set(model_names()) and n >= 5
    assert len(trains) == 3 * n + n + 1 + 4
    fused = [j for j in jobs if j.cfg.plane == "fused"]
    assert len(fused) == n and all(len(j.needs) == 3 for j in fused)  # lesion has one plane: no fused row
    lesion_ours = next(j for j in trains if j.cfg.task == "lesion" and j.cfg.model == "ours")
    liver_ours = next(j for j in trains if j.cfg.task == "liver" and j.cfg.model == "ours" and j.cfg.plane == "axial"
                      and j.cfg.run_tag == "ours")
    assert lesion_ours.needs == {liver_ours.key}
    order = [j.key for j in jobs]  # the plan's order respects every dependency
    assert order.index(liver_ours.key) < order.index(lesion_ours.key)
    assert all(order.index(n) < order.index(j.key) for j in fused for n in j.needs)


def test_study_matches_every_baseline_budget_to_ours_and_orders_ours_first():
    """The study's default budget: baselines train ours' optimiser steps (the reference run is planned first);
    ours itself trains by its epochs; --budget epochs leaves every model at its own epochs."""
    from bench.engine.scheduler import plan
    from bench.engine.study import StudyPlan, study_targets
    from bench.errors import ConfigError

    matched = StudyPlan(models=("unet", "segnet", "ours"), planes=("axial",), ablations=(), lesion_planes=("axial",))
    jobs = plan(study_targets("smoke", "res", "phantom", "", "cache", (0,), "cpu", matched))
    budgets = {(j.cfg.model, j.cfg.task): j.cfg.profile.train.budget for j in jobs}
    assert budgets == {("unet", "liver"): "matched", ("segnet", "liver"): "matched", ("ours", "liver"): "epochs",
                       ("unet", "lesion"): "matched", ("segnet", "lesion"): "matched", ("ours", "lesion"): "epochs"}
    key = {(j.cfg.model, j.cfg.task): j.key for j in jobs}
    order = [j.key for j in jobs]
    for task in ("liver", "lesion"):
        unet = next(j for j in jobs if (j.cfg.model, j.cfg.task) == ("unet", task))
        assert key[("ours", task)] in unet.needs  # the reference's recorded steps are the budget
        assert order.index(key[("ours", task)]) < order.index(key[("unet", task)])
    epochs = plan(study_targets("smoke", "res", "phantom", "", "cache", (0,), "cpu",
                                StudyPlan(models=("unet", "ours"), planes=("axial",), ablations=(), budget="epochs")))
    assert {j.cfg.profile.train.budget for j in epochs} == {"epochs"}
    with pytest.raises(ConfigError, match="matched or epochs"):
        study_targets("smoke", "res", "phantom", "", "cache", (0,), "cpu", StudyPlan(budget="steps"))
