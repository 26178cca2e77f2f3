"""Registry, config overrides and atomic writes: the plumbing every command relies on."""

from __future__ import annotations

import json
import os

import pytest

from bench.atomic import atomic_path, remove_stale_tmp, write_json
from bench.config import (PROFILES, RunConfig, fingerprint, get_profile, override, parse_overrides,
                          run_config_from_dict, to_dict)
from bench.errors import ConfigError
from bench.registry import Registry


def test_registry_duplicate_is_an_error_and_unknown_suggests():
    reg: Registry[int] = Registry("thing")
    reg.add("unet", 1)
    reg.add("segnet", 2)
    with pytest.raises(ConfigError, match="already registered"):
        reg.add("unet", 3)
    with pytest.raises(ConfigError, match="did you mean unet"):
        reg.get("unte")
    assert reg.names() == ["segnet", "unet"] and "unet" in reg and len(reg) == 2


def test_registry_decorator_keeps_object():
    reg: Registry = Registry("fn")

    @reg.register("f", help="first line\nsecond")
    def f():
        return 1

    assert reg.get("f") is f and reg.help("f") == "first line"


def test_paper_profile_matches_table_2():
    p = get_profile("paper")
    assert (p.input_size, p.train.lr, p.train.batch_size, p.train.epochs, p.train.patience, p.model.dropout) == \
        (512, 1e-4, 4, 100, 50, 0.2)
    assert p.train.optimizer == "adam"
    assert p.cascade.aspp_rates == (6, 12, 18) and p.cascade.max_reiterations == 7
    assert p.cascade.area_threshold == 0.3
    assert set(PROFILES.names()) >= {"paper", "demo", "smoke", "golden"}


def test_overrides_coerce_types_and_reject_unknown_fields():
    cfg = RunConfig(model="ours", profile=get_profile("paper"))
    new = override(cfg, parse_overrides(["cascade.patch_levels=1", "train.lr=3e-4", "cascade.crf=true",
                                         "cascade.aspp_rates=2,4", "seed=5"]))
    assert new.profile.cascade.patch_levels == 1 and new.profile.train.lr == 3e-4
    assert new.profile.cascade.crf is True and new.profile.cascade.aspp_rates == (2, 4)
    assert new.seed == 5 and cfg.profile.cascade.patch_levels == 3  # original untouched (frozen)
    with pytest.raises(ConfigError, match="did you mean patch_levels"):
        override(cfg, {"profile.cascade.patch_level": 1})
    with pytest.raises(ConfigError, match="cannot read"):
        override(cfg, parse_overrides(["train.lr=fast"]))
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["train.lr"])


def test_config_round_trips_through_json_and_fingerprint_ignores_device():
    cfg = override(RunConfig(model="unet", profile=get_profile("demo")), {"profile.cascade.aspp_rates": (1, 2)})
    again = run_config_from_dict(json.loads(json.dumps(to_dict(cfg))))
    assert again == cfg
    from dataclasses import replace

    drop = ("device", "results", "cache")
    assert fingerprint(cfg, drop) == fingerprint(replace(cfg, device="cuda"), drop)
    assert fingerprint(cfg, drop) != fingerprint(replace(cfg, seed=1), drop)


def test_bad_plane_or_task_is_a_config_error():
    with pytest.raises(ConfigError, match="plane=.oblique. is not one of"):
        RunConfig(model="unet", plane="oblique")
    with pytest.raises(ConfigError, match="task=.kidney. is not one of"):
        RunConfig(model="unet", task="kidney")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["out.json"]
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # the pid of a process that has exited
    (tmp_path / f"x.npy.tmp-{dead}").write_text("stale")
    (tmp_path / f"y.npy.tmp-{os.getpid()}").write_text("a live writer's")
    assert [p.name for p in remove_stale_tmp(tmp_path)] == [f"x.npy.tmp-{dead}"]
    assert (tmp_path / f"y.npy.tmp-{os.getpid()}").exists()
