"""A model is one plug-in: the registry's specs drive tables, studies and the CLI; plug-ins load
from a file, a module or an entry point (issue 19, items 1-3).

timm's tests/test_models.py pattern: the registry-wide checks iterate `model_names()`, so a model
is tested the day it is registered (UNet++ and any plug-in included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from bench.config import RunConfig, get_profile, override
from bench.errors import ConfigError
from bench.models import MODELS, build_model, get_model_spec, model_label, model_names, proposed_model, register_model
from cli_run import assert_one_line_error, bench

REPO = Path(__file__).resolve().parents[1]

MYNET = '''
"""A user's network, in a file outside the repository."""
from torch import nn

from bench.models import register_model


class MyNet(nn.Module):
    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 1, 1))

    def forward(self, x):
        return self.body(x)


@register_model("mynet", label="MyNet", description="a tiny user network", capabilities={"liver_prior"})
def build_mynet(cfg, in_channels: int = 1):
    return MyNet(in_channels)
'''

TOY = ["--set", "input_size=32", "--set", "train.epochs=1", "--set", "train.steps_per_epoch=2",
       "--set", "train.batch_size=4", "--set", "train.val_max_cases=1"]


# ---------------------------------------------------------------- the specs


def test_specs_declare_label_role_and_capabilities_once() -> None:
    assert proposed_model() == "ours" and get_model_spec("ours").role == "proposed"
    assert model_names()[-1] == "ours"  # the proposed model is the last column
    assert model_names()[:3] == ["segnet", "unet", "deeplabv3"]  # the paper's printed order (rank)
    assert "unetpp" in model_names("baseline")
    for name in model_names():
        spec = get_model_spec(name)
        assert spec.label and spec.description and spec.module.startswith("bench.models.")
    takers = {n for n in model_names() if get_model_spec(n).liver_prior}
    assert takers == {"segnet", "unet", "deeplabv3", "unetpp"}
    assert model_label("unetpp") == "UNet++" and model_label("not-registered") == "not-registered"


@pytest.mark.parametrize("name", [n for n in model_names() if get_model_spec(n).liver_prior])
def test_liver_prior_capability_wraps_build_and_adds_the_liver_run(name: str) -> None:
    """Declaring the capability is all a model does: the build is wrapped, the liver run needed."""
    from bench.models import requirements
    from bench.models.liver_prior import LiverPriorNet

    cfg = override(RunConfig(model=name, task="lesion", profile=get_profile("smoke")),
                   {"profile.model.liver_prior": "channel"})
    assert [(c.model, c.task) for c in requirements(cfg)] == [("ours", "liver")]
    model = build_model(cfg)
    assert isinstance(model, LiverPriorNet)
    first = next(m for m in model.net.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 2  # CT + the liver mask


@pytest.mark.parametrize("name", [n for n in model_names() if "norm" in get_model_spec(n).capabilities])
def test_norm_capability_is_honoured(name: str) -> None:
    """A spec declaring ``norm`` builds with no BatchNorm left under model.norm=group (bench.models.norm)."""
    cfg = override(RunConfig(model=name, profile=get_profile("smoke")), {"profile.model.norm": "group"})
    kinds = {type(m) for m in build_model(cfg).modules()}
    assert nn.GroupNorm in kinds and not any(issubclass(k, nn.BatchNorm2d) for k in kinds)


def test_registering_checks_role_capability_and_section() -> None:
    build = lambda cfg: nn.Identity()  # noqa: E731
    with pytest.raises(ConfigError, match="role 'winner'"):
        register_model("never-a", role="winner")(build)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown capability 'liver-prior'"):
        register_model("never-b", capabilities={"liver-prior"})(build)
    with pytest.raises(ConfigError, match="config_section 'modle'"):
        register_model("never-c", config_section="modle")(build)
    with pytest.raises(ConfigError, match="already registered"):
        register_model("unetpp")(build)
    with pytest.raises(ConfigError, match="did you mean unetpp"):
        get_model_spec("unetp")
    assert not {"never-a", "never-b", "never-c"} & set(MODELS.names())


def test_unknown_recipe_is_refused_when_planned() -> None:
    from dataclasses import replace

    from bench.engine.recipe import get_recipe
    from bench.engine.scheduler import plan

    with pytest.raises(ConfigError, match="unknown recipe 'slice'; did you mean slices"):
        get_recipe("slice", "mynet")
    spec = MODELS._items["unetpp"]
    MODELS._items["unetpp"] = replace(spec, recipe="slice")  # plant the defect: a spec naming no recipe
    try:
        with pytest.raises(ConfigError, match="model 'unetpp': unknown recipe 'slice'"):
            plan([RunConfig(model="unetpp", profile=get_profile("smoke"))])
    finally:
        MODELS._items["unetpp"] = spec


def test_card_comes_from_the_spec() -> None:
    from bench.models.cards import model_card

    assert get_model_spec("ours").card is not None
    assert any(r.name == "ASPP" for r in model_card("ours", "smoke").rows)  # the cascade's own card
    rows = {r.name for r in model_card("unetpp", "smoke").rows}
    assert {"encoder", "decoder", "segmentation_head"} <= rows  # the generic card


# ---------------------------------------------------------------- tables and study read the registry


def _runs_frame(models: list[str]) -> pd.DataFrame:
    return pd.DataFrame([{"dataset": "phantom", "profile": "smoke", "model": m, "task": "lesion", "liver_prior": "none"}
                         for m in models])


def test_table_columns_come_from_the_registry() -> None:
    from bench.reports.collect import Results
    from bench.reports.select import Scope
    from bench.reports.tables import model_columns

    scope = Scope(dataset="phantom", profile="smoke", reason="test")
    empty = pd.DataFrame()

    def bundle(runs: pd.DataFrame) -> Results:
        return Results(root="", runs=runs, metrics=empty, per_case=empty, reiterations=empty)

    def labels(models: list[str], task: str = "liver") -> list[str]:
        runs = _runs_frame(models).assign(task=task) if models else empty
        return [c.label for c in model_columns(bundle(runs), scope, task)]

    paper_models = ["SegNet", "U-Net", "DeepLabV3", "Ours"]
    assert labels([]) == paper_models  # no UNet++ column without its runs (the golden tables stay as they are)
    assert labels(["unetpp"]) == ["SegNet", "U-Net", "DeepLabV3", "UNet++", "Ours"]
    assert labels(["someplugin"]) == ["SegNet", "U-Net", "DeepLabV3", "someplugin", "Ours"]  # plug-in not loaded
    results = bundle(_runs_frame(["unetpp"]))
    cols = {c.label: c for c in model_columns(results, scope, "lesion", all_priors=True)}
    assert not cols["UNet++"].in_paper and cols["U-Net"].in_paper
    assert "U-Net + liver prior" in cols and "UNet++ + liver prior" not in cols  # paper baselines only, unless run


def test_study_plans_every_registered_model() -> None:
    from bench.engine.study import StudyPlan, study_targets

    plan = StudyPlan(planes=("axial",), tasks=("liver",), ablations=(), fused=False, budget="epochs")
    targets = study_targets("smoke", "res", "phantom", "", "cache", (0,), "cpu", plan)
    assert [cfg.model for _, cfg in targets] == model_names()
    with pytest.raises(ConfigError, match="did you mean unet"):
        study_targets("smoke", "res", "phantom", "", "cache", (0,), "cpu", StudyPlan(models=("unte",)))


@pytest.mark.slow
def test_every_registered_model_trains_evaluates_and_is_in_tables_7_and_8(tmp_path: Path, tiny_phantom: Path) -> None:
    """Registry-wide, end to end (timm's pattern): each model at toy size, liver and lesion, axial."""
    from bench.engine.study import StudyPlan, run_study
    from bench.reports.collect import load_results
    from bench.reports.select import ReportOptions
    from bench.reports.tables import build_tables

    overrides = (("profile.input_size", 32), ("profile.train.epochs", 1), ("profile.train.steps_per_epoch", 2),
                 ("profile.train.batch_size", 4), ("profile.train.val_max_cases", 1))  # no ablated field
    plan = StudyPlan(planes=("axial",), ablations=(), fused=False, budget="epochs", overrides=overrides)
    results = tmp_path / "results"
    run_study("smoke", str(results), root=str(tiny_phantom), cache=str(tmp_path / "cache"), plan=plan,
              progress=False, say=lambda line: None, workers=1)
    tables = {t.name: t.frame for t in build_tables(load_results(results), [7, 8], ReportOptions(), with_paired=False)}
    for number, table in (("7", tables["table7"]), ("8", tables["table8"])):
        axial = table[(table["group"] == "Axial Plane") & (table["metric"] == "dice")]
        for name in model_names():
            cells = axial[axial["col_group"] == model_label(name)]
            assert len(cells) == 2 and set(cells["status"]) <= {"ok", "nan"}, (number, name, cells)


# ---------------------------------------------------------------- plug-ins through the console script


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_model_in_a_file_outside_the_repository_trains_and_is_in_table_7(tmp_path: Path, tiny_phantom: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's check: BENCH_PLUGINS=/path/mynet.py; bench train mynet --profile smoke; bench report --tables 7."""
    monkeypatch.setenv("BENCH_PLUGINS", str(_write(tmp_path / "mynet.py", MYNET)))
    results = tmp_path / "results"
    common = ["--dataset", "phantom", "--root", str(tiny_phantom), "--results", str(results),
              "--cache", str(tmp_path / "cache"), "--device", "cpu"]
    train = bench("train", "mynet", "--profile", "smoke", *common, *TOY, cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-2000:]
    summary = json.loads((results / "phantom/liver/mynet/axial/summary.json").read_text())
    assert 0.0 <= summary["splits"]["test"]["classes"]["liver"]["mean"]["dice"] <= 1.0  # evaluated
    report = bench("report", "--results", str(results), "--tables", "7", "--format", "csv", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    cells = pd.read_csv(results / "report/table7.csv")
    mine = cells[(cells["col_group"] == "MyNet") & (cells["group"] == "Axial Plane")]
    assert len(mine) == 6 and set(mine["status"]) == {"ok"}  # 3 metrics x Val/Test, all computed
    assert mine["paper"].isna().all()  # no paper numbers: "-" in the paper columns
    assert set(cells["col_group"]) >= {"SegNet", "U-Net", "DeepLabV3", "Ours", "MyNet"}


def test_plugin_flag_lists_the_model(tmp_path: Path) -> None:
    _write(tmp_path / "mynet.py", MYNET)
    listed = bench("--plugin", str(tmp_path / "mynet.py"), "ls", "models", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "mynet" in listed.stdout and "MyNet" in listed.stdout and "bench_plugin_mynet" in listed.stdout
    helped = bench("--plugin", str(tmp_path / "mynet.py"), "train", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "mynet" in helped.stdout and "unetpp" in helped.stdout, helped.stderr[-2000:]


def test_module_plugin_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module name in BENCH_PLUGINS (an installed package's module) registers like a file."""
    from bench import plugins

    _write(tmp_path / "theirnet.py", MYNET.replace('"mynet", label="MyNet"', '"theirnet", label="TheirNet"'))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.ENV, "theirnet")
    assert plugins.load_plugins() == ["theirnet"]
    assert model_label("theirnet") == "TheirNet" and "theirnet" in model_names("baseline")
    plugins.add_to_environment([str(tmp_path / "theirnet.py"), "other.module"])  # --plugin: files made absolute
    assert plugins.env_plugins() == ["theirnet", str((tmp_path / "theirnet.py").resolve()), "other.module"]
    MODELS._items.pop("theirnet")
    plugins._loaded.pop("theirnet")


def test_example_plugin_builds_and_runs_forward() -> None:
    from bench import plugins

    example = str(REPO / "examples/plugins/linknet.py")
    try:
        plugins.load_plugin(example)
        assert get_model_spec("linknet").liver_prior
        model = build_model(RunConfig(model="linknet", profile=get_profile("smoke"))).eval()
        with torch.no_grad():
            y = model(torch.randn(1, 1, 64, 64))
        assert y.shape == (1, 1, 64, 64) and torch.isfinite(y).all()
        assert plugins.load_plugin(example) is not None  # loading twice registers nothing twice
    finally:  # the other tests of this process see the built-in registry only
        MODELS._items.pop("linknet", None)
        plugins._loaded.pop(example, None)


@pytest.mark.parametrize("body, needles", [
    ("raise ImportError('No module named mylib')", ("plugin", "cannot import", "No module named mylib")),
    ("def oops(:\n", ("plugin", "cannot import", "SyntaxError")),
    ("from bench.models import register_model\nregister_model('unet')(lambda cfg: None)",
     ("plugin", "model 'unet' is already registered")),
])
def test_bad_plugin_is_a_config_error_naming_it(tmp_path: Path, body: str, needles: tuple[str, ...]) -> None:
    from bench.plugins import load_plugin

    path = _write(tmp_path / "broken.py", body)
    with pytest.raises(ConfigError) as info:
        load_plugin(str(path), source="BENCH_PLUGINS")
    message = str(info.value)
    assert str(path) in message and "\n" not in message and all(n in message for n in needles), message
    with pytest.raises(ConfigError, match="plugin no_such_plugin_module .BENCH_PLUGINS.: cannot import"):
        load_plugin("no_such_plugin_module", source="BENCH_PLUGINS")


def test_bad_plugin_is_refused_in_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the console script: a plug-in taking a name, then a --plugin file that does not exist."""
    body = "from bench.models import register_model\nregister_model('unet')(lambda cfg: None)\n"
    monkeypatch.setenv("BENCH_PLUGINS", str(_write(tmp_path / "taken.py", body)))
    assert_one_line_error(bench("train", "unet", cwd=tmp_path), "plugin", "taken.py", "'unet' is already registered")
    assert_one_line_error(bench("--plugin", str(tmp_path / "nope.py"), "ls", "models", cwd=tmp_path),
                          "--plugin", "nope.py", "no such file")


def test_help_does_not_load_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plug-in is imported when a command needs the registry, never for ``bench --help`` (a broken one
    proves it); a verb's help that lists the models (``bench train --help``) imports the registry, and so
    its plug-ins (`test_plugin_flag_lists_the_model`)."""
    monkeypatch.setenv("BENCH_PLUGINS", str(_write(tmp_path / "broken.py", "raise ImportError('boom')")))
    for args, shown in ((("--help",), "Usage"), (("--plugin", str(tmp_path / "broken.py"), "--help"), "Usage"),
                        (("--version",), "liverbench")):
        t0 = time.perf_counter()
        proc = bench(*args, cwd=tmp_path)
        assert proc.returncode == 0 and shown in proc.stdout, (args, proc.stderr[-2000:])
        assert time.perf_counter() - t0 < 30
    probe = subprocess.run([sys.executable, "-c", "import sys, bench.cli; print('torch' in sys.modules)"],
                           env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert probe.stdout.strip() == "False", probe.stderr  # the CLI imports no torch (nor any plug-in) to parse
