"""A fair comparison (issue 12): one post-processing rule with raw scores kept, a matched budget."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from bench.config import override
from bench.engine.scheduler import execute, plan
from bench.paths import run_dir
from tests.conftest import tiny_config

CASCADE = {"profile.train.epochs": 1, "profile.train.steps_per_epoch": 2, "profile.cascade.max_reiterations": 1,
           "profile.cascade.reiter_epochs": 1, "profile.cascade.reiter_stop": "none",
           "profile.cascade.reiter_patch_levels": (1,), "profile.cascade.area_threshold": 0.1,
           "profile.cascade.loc_epochs": 1}


def test_post_and_raw_scores_differ_only_by_the_rule(tmp_path):
    from bench.config import RunConfig, get_profile
    from bench.engine.evaluate import score_case, score_case_variants

    ref = np.zeros((6, 12, 12), bool)
    ref[1:5, 2:8, 2:8] = True
    prob = np.where(ref, 0.9, 0.1).astype(np.float32)
    prob[0, 10, 10] = 0.8  # a stray voxel: the largest-component rule removes it
    for model in ("unet", "ours"):  # the same rule for every model
        cfg = RunConfig(model=model, profile=get_profile("smoke"))
        v = score_case_variants(prob, ref, cfg, torch.device("cpu"))
        assert v["raw"]["fp"] == 1 and v["post"]["fp"] == 0 and v["post"] == score_case(prob, ref, cfg, torch.device("cpu"))
        off = override(cfg, {"profile.postprocess.liver": "none"})
        assert score_case_variants(prob, ref, off, torch.device("cpu"))["post"]["fp"] == 1


def test_matched_budget_gives_the_baseline_the_cascades_steps(tmp_path, tiny_phantom):
    ours = tiny_config(tmp_path, tiny_phantom, "ours", **CASCADE)
    unet = override(replace(ours, model="unet"), {"profile.train.budget": "matched"})
    jobs = plan([unet])
    assert [j.cfg.model for j in jobs] == ["ours", "unet"]  # the reference is trained first
    execute(jobs, progress=False, say=lambda line: None)
    ref = json.loads((run_dir(ours) / "config.json").read_text())["budget"]
    got = json.loads((run_dir(unet) / "config.json").read_text())["budget"]
    assert ref["steps"] > 2  # localizer + tuner + reiteration: more than one baseline epoch
    assert got["steps"] == ref["steps"] and got["matched_to"]["steps"] == ref["steps"]
    assert set(ref["stages"]) == {"localizer", "tuner", "reiter1"}
    for folder in (run_dir(ours), run_dir(unet)):  # both score files, the same cases
        post, raw = pd.read_csv(folder / "per_case.csv"), pd.read_csv(folder / "per_case_raw.csv")
        assert list(post["case"]) == list(raw["case"])


def test_the_reference_cannot_match_itself(tmp_path, tiny_phantom):
    from bench.errors import ConfigError
    from bench.models import check_run_config

    cfg = override(tiny_config(tmp_path, tiny_phantom, "ours"), {"profile.train.budget": "matched"})
    with pytest.raises(ConfigError, match="budget reference"):
        check_run_config(cfg)
