"""``--config FILE`` (TOML / YAML / JSON, or a run's config.json) and the BENCH_* roots (issue 21, item 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli.common import build_run_config
from bench.config import to_dict
from bench.errors import ConfigError
from tests.cli_run import assert_one_line_error, bench

SETS = ["train.lr=0.003", "cascade.patch_levels=2", "cascade.dilation_rates=1,2", "train.augment=true",
        "postprocess.liver=none", "include_cysts=false"]
TOML = """
[train]
lr = 0.003
augment = true

[cascade]
patch_levels = 2
dilation_rates = [1, 2]

[postprocess]
liver = "none"
"""
YAML = """
train: {lr: 0.003, augment: true}
cascade.patch_levels: 2
cascade: {dilation_rates: [1, 2]}
postprocess.liver: none
include_cysts: false
"""
JSON = json.dumps({"train.lr": 0.003, "train.augment": True, "cascade": {"patch_levels": 2, "dilation_rates": [1, 2]},
                   "postprocess": {"liver": "none"}})


def _cfg(tmp_path: Path, overrides=None, config=None, given=(), seed=0, fold=None, profile="smoke", tag=""):
    return build_run_config("ours", "axial", "liver", "phantom", str(tmp_path / "data"), profile, seed, "cpu",
                            str(tmp_path / "results"), str(tmp_path / "cache"), None, overrides, tag, fold,
                            config, given)


@pytest.mark.parametrize("suffix,text", [(".toml", TOML), (".yaml", YAML), (".json", JSON)])
def test_a_file_equals_the_same_set_flags(tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"settings{suffix}"
    path.write_text(text)
    by_set = _cfg(tmp_path, overrides=SETS)
    by_file = _cfg(tmp_path, config=path)
    assert to_dict(by_file) == to_dict(by_set)
    assert by_file.profile.train.lr == 0.003 and by_file.profile.cascade.dilation_rates == (1, 2)
    assert to_dict(by_file) != to_dict(_cfg(tmp_path))  # the file did change something


def test_set_and_given_flags_win_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('seed = 3\nplane = "coronal"\nprofile = "demo"\n[train]\nlr = 0.003\n')
    cfg = _cfg(tmp_path, overrides=["train.lr=0.005"], config=path, profile=None)
    assert (cfg.profile.train.lr, cfg.seed, cfg.plane, cfg.profile.name) == (0.005, 3, "coronal", "demo")
    given = _cfg(tmp_path, config=path, given={"seed", "plane"}, seed=1, profile="smoke")
    assert (given.seed, given.plane, given.profile.name) == (1, "axial", "smoke")  # --profile given: it wins


def test_a_runs_record_is_a_config_that_reproduces_it(tmp_path: Path) -> None:
    original = _cfg(tmp_path, overrides=["train.lr=0.002", "cascade.aspp_rates=3,5", "model.dropout=0.1"], seed=2,
                    fold=1, profile="demo", tag="mine")
    assert original.tag == "mine~seed2~fold1"
    record = tmp_path / "config.json"
    record.write_text(json.dumps({"config": to_dict(original), "status": "complete", "git": "x"}))
    # the same command, its settings from the record: every profile field and run field comes back
    again = _cfg(tmp_path, config=record, profile=None)
    assert to_dict(again) == to_dict(original)
    # and the record of the reproduced run reproduces it again (a fixed point)
    record.write_text(json.dumps({"config": to_dict(again)}))
    assert to_dict(_cfg(tmp_path, config=record, profile=None)) == to_dict(original)


def test_flags_typed_or_from_the_environment_are_the_given_ones(monkeypatch) -> None:
    import typer

    from bench.cli import app
    from bench.cli.common import given_flags

    monkeypatch.setenv("BENCH_CACHE", "somewhere")
    cmd = typer.main.get_command(app).commands["train"]
    ctx = cmd.make_context("train", ["unet", "--results", "r", "--seeds", "0,1", "--config", "x.toml"])
    assert given_flags(ctx) == {"model", "results", "seeds", "seed", "config", "cache"}


@pytest.mark.parametrize("text,needle", [
    ("[train]\nlrr = 0.1\n", "train.lrr"),                      # unknown key, named
    ("[train]\nlr = -1.0\n", "train.lr"),                       # value out of range, named
    ("[cascade]\nnorm = \"batchy\"\n", "cascade.norm"),          # not one of the choices
    ("[train]\nepochs = 2.5\n", "train.epochs"),                # a fraction for an integer
    ("[train\nlr = 1\n", "not valid TOML"),                      # broken file
])
def test_bad_files_are_one_line_errors_naming_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        _cfg(tmp_path, config=path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_cli_refuses_a_bad_file_and_code_in_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlrr = 0.1\n")
    proc = bench("train", "unet", "--profile", "smoke", "--device", "cpu", "--config", str(bad), cwd=tmp_path)
    assert_one_line_error(proc, "bad.toml", "train.lrr")
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"train: !!python/object/apply:os.system ['touch {marker}']\n")
    proc = bench("train", "unet", "--profile", "smoke", "--device", "cpu", "--config", str(evil), cwd=tmp_path)
    assert_one_line_error(proc, "evil.yaml", "not valid YAML")
    assert not marker.exists()  # the file's code never ran
    with pytest.raises(ConfigError, match="missing.toml"):
        _cfg(tmp_path, config=tmp_path / "missing.toml")


@pytest.mark.slow
def test_a_run_made_with_config_equals_the_run_made_with_set(tmp_path: Path, tiny_phantom: Path) -> None:
    """Two real (toy) trainings through the console script: the same config.json config section."""
    common = ["train", "unet", "--profile", "smoke", "--device", "cpu", "--root", str(tiny_phantom),
              "--cache", str(tmp_path / "cache")]
    sets = ["--set", "train.epochs=1", "--set", "train.steps_per_epoch=1", "--set", "train.lr=0.003"]
    settings = tmp_path / "s.toml"
    settings.write_text("[train]\nepochs = 1\nsteps_per_epoch = 1\nlr = 0.003\n")
    a = bench(*common, "--results", str(tmp_path / "a"), *sets, cwd=tmp_path)
    b = bench(*common, "--results", str(tmp_path / "b"), "--config", str(settings), cwd=tmp_path)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    rec_a = json.loads((tmp_path / "a/phantom/liver/unet/axial/config.json").read_text())["config"]
    rec_b = json.loads((tmp_path / "b/phantom/liver/unet/axial/config.json").read_text())["config"]
    rec_a.pop("results"), rec_b.pop("results")
    assert rec_a == rec_b
    c = bench(*common, "--results", str(tmp_path / "c"), "--config", str(tmp_path / "a/phantom/liver/unet/axial/config.json"),
              cwd=tmp_path)
    assert c.returncode == 0, c.stderr
    rec_c = json.loads((tmp_path / "c/phantom/liver/unet/axial/config.json").read_text())["config"]
    rec_c.pop("results")
    assert rec_c == rec_a


def test_environment_roots(tmp_path: Path) -> None:
    """BENCH_RESULTS / BENCH_CACHE are the defaults of --results / --cache; a flag wins (help says so)."""
    import os
    import subprocess
    import sys

    from tests.cli_run import bench_env

    env = {**bench_env(), "BENCH_RESULTS": str(tmp_path / "envres"), "BENCH_CACHE": str(tmp_path / "envcache"),
           "BENCH_DATA": str(tmp_path / "envdata")}
    code = ("import sys; from bench.cli import app, main; import typer, click\n"
            "cmd = typer.main.get_command(app).commands['train']\n"
            "ctx = cmd.make_context('train', sys.argv[1:])\n"
            "from bench.paths import DEFAULT_DATA_ROOT\n"
            "print(ctx.params['results'], ctx.params['cache'], DEFAULT_DATA_ROOT)\n")
    out = subprocess.run([sys.executable, "-c", code, "unet"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.split() == [str(tmp_path / "envres"), str(tmp_path / "envcache"), str(tmp_path / "envdata")], out.stderr
    out = subprocess.run([sys.executable, "-c", code, "unet", "--results", "flag"], env=env, capture_output=True,
                         text=True, cwd=tmp_path)
    assert out.stdout.split()[0] == "flag"
    # documented in --help (docs/cli.md is that help, kept current by test_cli_docs)
    reference = (Path(__file__).resolve().parents[1] / "docs/cli.md").read_text()
    assert all(name in reference for name in ("BENCH_RESULTS", "BENCH_CACHE", "BENCH_DATA"))
