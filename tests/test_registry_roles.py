"""Nothing names a model by hand: roles, capabilities and the ``default_baseline`` flag decide (issue 19, item 1).

A toy model registered the way a plug-in registers (``register_model`` with a role, capabilities and
the flag) must be planned by the study and the ablations, be the real-data demo's default and a
"+ liver prior" row, and appear in the tables' columns, with no other change; the model that gives
the liver prior, and the one Tables 3-6 are about, are asked of the registry too. Every test puts
the registry back as it found it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest
from torch import nn

from bench.config import RunConfig, get_profile, override
from bench.errors import ConfigError
from bench.models import MODELS, register_model
from bench.models.norm import apply_norm


class ToyNet(nn.Module):
    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 1, 1))

    def forward(self, x):
        return self.body(x)


def build_toynet(cfg: RunConfig, in_channels: int = 1) -> nn.Module:
    return apply_norm(ToyNet(in_channels), cfg)  # honours model.norm, as its "norm" capability promises


@pytest.fixture
def toynet() -> Iterator[str]:
    """A baseline declared as a plug-in would: liver prior and norm capabilities, flagged ``default_baseline``."""
    register_model("toynet", label="ToyNet", description="a toy plug-in baseline", capabilities={"liver_prior", "norm"},
                   default_baseline=True)(build_toynet)
    try:
        yield "toynet"
    finally:
        MODELS._items.pop("toynet", None)
        MODELS._help.pop("toynet", None)


def _targets(plan) -> list[RunConfig]:
    from bench.engine.study import study_targets

    return [cfg for _, cfg in study_targets("cpu", "res", "phantom", "", "cache", (0,), "cpu", plan)]


def test_a_registered_default_baseline_is_planned_everywhere(toynet: str) -> None:
    from bench.engine.study import StudyPlan, prior_baselines, real_data_models

    assert real_data_models() == ("unet", "toynet", "ours")  # bench demo's default on real CT, in table order
    assert prior_baselines() == ("unet", "toynet")
    plan = StudyPlan(models=real_data_models(), planes=("axial",), lesion_planes=("axial",), ablations=("norm",),
                     fused=False, budget="epochs")
    got = {(c.model, c.task, c.profile.model.liver_prior, c.run_tag) for c in _targets(plan)}
    assert ("toynet", "lesion", "crop", "toynet~liver_prior=crop") in got  # its "+ liver prior" row
    assert ("toynet", "liver", "none", "toynet~norm=batch") in got  # the norm ablation's variants of it
    assert ("toynet", "liver", "none", "toynet") in got
    every = {(c.model, c.profile.model.liver_prior) for c in _targets(StudyPlan(
        planes=("axial",), tasks=("lesion",), lesion_planes=("axial",), ablations=(), fused=False, budget="epochs"))}
    assert {("toynet", "none"), ("toynet", "crop"), ("unet", "crop")} <= every  # the phantom study: every model
    assert ("segnet", "crop") not in every  # a liver-prior taker not flagged default gets no prior row by default
    from bench.ablations import ABLATIONS

    assert ABLATIONS.get("norm").models == ("segnet", "unet", "deeplabv3", "toynet", "unetpp")  # rank, then name
    assert ABLATIONS.get("loss").models == ("ours",)  # the paper's ablations: the proposed model


def test_the_plugged_baseline_is_in_the_norm_table_and_table_8(tmp_path: Path, toynet: str) -> None:
    from bench.reports.collect import load_results
    from bench.reports.select import ReportOptions
    from bench.reports.tables import TABLES
    from tests.test_reports import cell, write_run

    results = tmp_path / "results"
    write_run(results, "toynet", dice={c: 0.1 for c in ("p01", "p02", "p03", "p04", "p05")})
    write_run(results, "toynet", tag="toynet~norm=group", changes={"profile.model.norm": "group"})
    write_run(results, "toynet", task="lesion", tag="toynet~liver_prior=crop",
              changes={"profile.model.liver_prior": "crop"})
    write_run(results, "ours")
    res = load_results(results)
    norm = TABLES.get("norm")(res, ReportOptions())
    assert cell(norm, row="Dice", col_group="ToyNet, batch (as published)", col="Val")["ours"] == pytest.approx(0.1)
    assert cell(norm, row="Dice", col_group="ToyNet, group (matched)", col="Val")["status"] == "ok"
    assert cell(norm, row="Dice", col_group="Ours (reference)", col="Val")["status"] == "ok"
    t8 = TABLES.get("8")(res, ReportOptions())
    assert {"ToyNet", "ToyNet + liver crop"} <= set(t8.frame["col_group"])


def test_the_liver_prior_comes_from_the_model_declaring_it(toynet: str) -> None:
    """Move the capability to another model and the baselines' prior (and the lesion ROI) follow it."""
    from bench.models import liver_prior_model, requirements
    from bench.models.lesion_roi import uses_roi

    crop = override(RunConfig(model="unet", task="lesion", profile=get_profile("cpu")),
                    {"profile.model.liver_prior": "crop"})
    assert liver_prior_model() == "ours"
    assert [(c.model, c.task) for c in requirements(crop) if c.model != "unet"] == [("ours", "liver")]
    ours = MODELS._items["ours"]
    register_model("toysource", label="ToySource", capabilities={"provides_liver_prior"})(build_toynet)
    try:
        with pytest.raises(ConfigError, match="exactly one model with capability provides_liver_prior, found 2: toysource, ours"):
            liver_prior_model()
        MODELS._items["ours"] = replace(ours, capabilities=frozenset())
        assert liver_prior_model() == "toysource"
        assert [(c.model, c.task) for c in requirements(crop) if c.model != "unet"] == [("toysource", "liver")]
        lesion = RunConfig(model="toysource", task="lesion", profile=get_profile("cpu"))
        assert uses_roi(lesion) and not uses_roi(replace(lesion, model="ours"))
    finally:
        MODELS._items["ours"] = ours
        MODELS._items.pop("toysource", None)
        MODELS._help.pop("toysource", None)


def test_tables_3_to_6_are_of_the_proposed_model(tmp_path: Path) -> None:
    """Table 6 selects the runs of the spec with role ``proposed``, whatever its name."""
    from bench.reports.collect import load_results
    from bench.reports.select import ReportOptions
    from bench.reports.tables import TABLES
    from tests.test_reports import cell, write_run

    results = tmp_path / "results"
    write_run(results, "mycascade", dice={c: 0.5 for c in ("p01", "p02", "p03", "p04", "p05")})
    ours = MODELS._items["ours"]
    register_model("mycascade", label="MyCascade", role="proposed", recipe="cascade", config_section="cascade")(
        ours.build)
    MODELS._items["ours"] = replace(ours, role="baseline")
    try:
        t6 = TABLES.get("6")(load_results(results), ReportOptions(dataset="phantom"))
        assert cell(t6, group="Liver", row="phantom", col="Dice")["ours"] == pytest.approx(0.5)
        assert t6.provenance["model"] == "mycascade"
    finally:
        MODELS._items["ours"] = ours
        MODELS._items.pop("mycascade", None)
        MODELS._help.pop("mycascade", None)


def test_the_flag_and_the_capability_are_checked_when_registering() -> None:
    build = lambda cfg: nn.Identity()  # noqa: E731
    with pytest.raises(ConfigError, match="default_baseline=True needs role 'baseline'"):
        register_model("never-d", role="proposed", default_baseline=True)(build)
    with pytest.raises(ConfigError, match="unknown capability 'liver_prior_source'"):
        register_model("never-e", capabilities={"liver_prior_source"})(build)
    assert not {"never-d", "never-e"} & set(MODELS.names())


def test_the_budget_reference_default_is_the_proposed_model() -> None:
    """``train.budget_reference`` is a config value (the config layer cannot ask the registry): every built-in
    profile's default must be the model the registry calls proposed."""
    from bench.config import PROFILES
    from bench.models import proposed_model

    assert {get_profile(p).train.budget_reference for p in PROFILES.names()} == {proposed_model()}


PLUGGED = '''
from torch import nn

from bench.models import register_model


@register_model("toynet", label="ToyNet", capabilities={"liver_prior", "norm"}, default_baseline=True)
def build_toynet(cfg, in_channels: int = 1):
    return nn.Conv2d(in_channels, 1, 1)
'''


def test_demo_help_states_its_defaults_from_the_registry(tmp_path: Path) -> None:
    from tests.cli_run import bench

    (tmp_path / "toynet.py").write_text(PLUGGED)
    proc = bench("--plugin", str(tmp_path / "toynet.py"), "demo", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = " ".join(proc.stdout.replace("│", " ").split())
    assert "unet,toynet,ours on real data" in text and "lesion: unet,toynet also with these" in text
