"""Lesion baselines with the cascade's liver prior (``model.liver_prior``): prerequisites, inputs, record.

The trained part shares one module fixture: the scheduler trains ours' liver cascade, then a
U-Net with the prior as a channel and one on the liver ROI crop (the smoke profile cuts it), at toy size,
while a global forward hook records every input the U-Nets see (training, validation,
evaluation).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from bench.config import PLANES, RunConfig, get_profile, override
from bench.errors import ConfigError
from bench.paths import run_dir
from tests.conftest import tiny_config

BASELINES = ("segnet", "unet", "deeplabv3")
FAST = {"profile.cascade.max_reiterations": 0}  # tiny_config: 2 epochs of 3 steps (a liver prior that is not all ones)


def _cli_cfg(model: str, task: str, seed: int = 0, fold: int | None = None, sets: list[str] | None = None,
             tag: str = "") -> RunConfig:
    """A config exactly as ``bench train`` makes it (seed and fold tags included)."""
    from bench.cli.common import build_run_config

    return build_run_config(model, "coronal", task, "phantom", "/data/x", "smoke", seed, "cpu", "res", "cache", None,
                            sets, tag, fold)


# ---------------------------------------------------------------- prerequisites (no training)


@pytest.mark.parametrize("seed,fold", [(0, None), (2, None), (0, 1), (3, 0)])
@pytest.mark.parametrize("tag", ["", "unet+liver"])
def test_needs_names_ours_liver_run_of_the_same_seed_and_fold(seed, fold, tag):
    from bench.engine.records import run_fingerprint
    from bench.models import requirements

    cfg = _cli_cfg("unet", "lesion", seed, fold, ["model.liver_prior=channel"], tag)
    (liver,) = requirements(cfg)
    plain_ours = _cli_cfg("ours", "liver", seed, fold)  # what `bench train ours` trains for that seed and fold
    assert liver == plain_ours  # same tag ("" at seed 0), plane, data, profile: the same run, not a look-alike
    assert run_dir(liver) == run_dir(plain_ours) and run_fingerprint(liver) == run_fingerprint(plain_ours)
    assert liver.profile.model.liver_prior == "none" and liver.plane == "coronal"
    assert cfg.run_tag != liver.run_tag  # the baseline's own tag never leaks into the liver run's
    assert requirements(_cli_cfg("unet", "lesion", seed, fold)) == []  # no prior: no prerequisite


def test_needs_matches_the_study_runs_of_ours():
    from bench.engine.study import StudyPlan, study_targets
    from bench.models import requirements

    plan = StudyPlan(models=("unet", "ours"), planes=("axial",), tasks=("liver", "lesion"), ablations=(), fused=False,
                     folds=2, liver_priors=())  # the plain baselines; their prior variants are made below
    targets = [cfg for _, cfg in study_targets("smoke", "res", "phantom", "", "cache", (0, 1), "cpu", plan)]
    ours_liver = {run_dir(c) for c in targets if c.model == "ours" and c.task == "liver"}
    variants = [override(c, {"profile.model.liver_prior": "channel"}) for c in targets
                if c.model == "unet" and c.task == "lesion"]
    # the study matches the baselines' budget to ours' lesion run; the prior's own need is ours' liver run
    liver_needs = [[r for r in requirements(v) if r.task == "liver"] for v in variants]
    assert len(variants) == 4 and all(len(n) == 1 for n in liver_needs)
    assert {run_dir(n[0]) for n in liver_needs} == ours_liver


def test_scheduler_trains_the_liver_cascade_first_and_shares_it(tmp_path):
    from bench.ablations import variant_config
    from bench.engine.scheduler import plan

    base = replace(tiny_config(tmp_path, tmp_path / "data", "deeplabv3", **FAST), task="lesion", seed=1,
                   tag="deeplabv3~seed1")
    channel = variant_config(base, (("profile.model.liver_prior", "channel"),))
    crop = variant_config(base, (("profile.model.liver_prior", "crop"),))
    jobs = plan([channel, crop, replace(channel, plane="fused")])
    keys = [j.key for j in jobs]
    liver = [j for j in jobs if j.cfg.model == "ours"]
    assert {j.cfg.task for j in liver} == {"liver"} and {j.cfg.run_tag for j in liver} == {"ours~seed1"}
    assert sorted(j.cfg.plane for j in liver) == sorted(PLANES)  # fused: three planes, each with its liver run
    for job in jobs:
        for need in job.needs:
            assert keys.index(need) < keys.index(job.key)  # dependencies first
    axial_liver = next(j.key for j in liver if j.cfg.plane == "axial")
    assert next(j for j in jobs if j.cfg == channel).needs == {axial_liver}
    assert next(j for j in jobs if j.cfg == crop).needs == {axial_liver}  # one liver run serves both variants
    assert channel.run_tag == "deeplabv3~seed1~liver_prior=channel"


# ---------------------------------------------------------------- refusals


def test_liver_prior_is_refused_where_it_means_nothing():
    from bench.models import check_run_config

    cfg = RunConfig(model="unet", profile=get_profile("smoke"))
    with pytest.raises(ConfigError, match=r"model.liver_prior=channel is for --task lesion only"):
        check_run_config(override(cfg, {"profile.model.liver_prior": "channel"}))
    with pytest.raises(ConfigError, match=r"ours takes no liver prior .*cascade.lesion_prior"):
        check_run_config(override(replace(cfg, model="ours", task="lesion"), {"profile.model.liver_prior": "crop"}))
    with pytest.raises(ConfigError, match=r"liver_prior='chanel' is not one of none, channel, crop; did you mean channel"):
        override(cfg, {"profile.model.liver_prior": "chanel"})
    for name in BASELINES:  # accepted on the lesion task
        check_run_config(override(replace(cfg, model=name, task="lesion"), {"profile.model.liver_prior": "channel"}))


def test_liver_task_refusal_is_one_line_through_the_console_script(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench", "train", "segnet", "--task", "liver", "--profile", "smoke",
                           "--set", "model.liver_prior=channel", "--results", str(tmp_path / "r")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and "model.liver_prior=channel is for --task lesion only" in lines[0]
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- the wrapper (no training)


def _wrapper(mode: str) -> torch.nn.Module:
    """The whole-slice variants (``cascade.lesion_roi=none``, the paper profile's); the liver-ROI crop:
    tests/test_lesion_roi.py."""
    from bench.models import build_model

    cfg = override(RunConfig(model="unet", task="lesion", profile=get_profile("smoke")),
                   {"profile.input_size": 32, "profile.model.liver_prior": mode, "profile.cascade.lesion_roi": "none"})
    return build_model(cfg)


def test_wrapper_feeds_the_network_the_liver_mask_or_the_boxed_slice():
    from bench.models.liver_prior import LiverPriorNet
    from bench.models.roi import box_prior

    torch.manual_seed(0)
    x = torch.randn(3, 1, 32, 32)
    prior = torch.zeros(3, 1, 32, 32)
    prior[:, :, 8:20, 5:30] = 1.0
    for mode in ("channel", "crop"):
        model = _wrapper(mode)
        assert isinstance(model, LiverPriorNet)
        assert not any(p.requires_grad for p in model.liver.parameters())
        assert all(p.requires_grad for p in model.net.parameters())
        model.train()
        assert model.net.training and not any(m.training for m in model.liver.modules())
        seen = []
        handle = model.net.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
        model.eval()
        with torch.no_grad():
            model(x, prior)
            model(x)  # the prior from the liver cascade itself
        handle.remove()
        liver_prior = model.liver.lesion_prior(x, "liver_mask" if mode == "channel" else "liver_box")
        if mode == "channel":
            assert torch.equal(seen[0], torch.cat([x, prior], 1))
            assert torch.equal(seen[1], torch.cat([x, liver_prior], 1))
        else:
            floor = x.amin(dim=(-2, -1), keepdim=True)
            assert torch.equal(seen[0][:, :, 8:20, 5:30], x[:, :, 8:20, 5:30])
            assert torch.equal(seen[0][:, :, :8], floor.expand(-1, -1, 8, 32))  # outside the box: the slice's floor
            assert torch.equal(seen[1], torch.where(liver_prior > 0, x, floor))
            assert torch.equal(liver_prior, box_prior(model.liver(x) > 0, 0.05, 0.002).to(x.dtype))


def test_encoder_weights_keep_the_ct_filters_and_start_the_prior_channel_at_zero(tmp_path):
    from bench.models import build_model

    base = override(RunConfig(model="unet", task="lesion", profile=get_profile("smoke")), {"profile.input_size": 32})
    plain = build_model(base)
    path = tmp_path / "enc.pth"
    torch.save(plain.encoder.state_dict(), path)
    model = build_model(override(base, {"profile.model.liver_prior": "channel",
                                        "profile.model.encoder_weights": str(path)}))
    first = model.net.encoder.conv1.weight
    assert first.shape[1] == 2
    assert torch.equal(first[:, :1], plain.encoder.conv1.weight) and not first[:, 1].any()


# ---------------------------------------------------------------- trained end to end


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_phantom):
    """ours' liver cascade, then U-Net lesion runs with ``channel`` and ``crop``; every U-Net input recorded."""
    from bench.ablations import variant_config
    from bench.engine.scheduler import execute, plan
    from bench.models.baselines import UNet

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("liver_prior")
    base = replace(tiny_config(tmp, tiny_phantom, "unet", **FAST), task="lesion")
    runs = {mode: variant_config(base, (("profile.model.liver_prior", mode),)) for mode in ("channel", "crop")}
    jobs = plan(list(runs.values()))
    seen: list[tuple[bool, torch.Tensor]] = []

    def record(module, args):
        if isinstance(module, UNet):
            seen.append((module.training, args[0].detach().clone()))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        execute(jobs, progress=False, say=lambda line: None)
    finally:
        handle.remove()
    return {"runs": runs, "jobs": jobs, "seen": seen, "liver": jobs[0].cfg}


def _slices_and_priors(run: RunConfig, liver_cfg: RunConfig, mode: str):
    """(images, priors) per case: the liver run's own cascade, as the lesion cascade would get it."""
    from bench.datasets.cache import open_or_prepare
    from bench.engine.infer import predict_slices
    from bench.engine.priors import load_liver_cascade
    from bench.models.cascade import LesionCascade, build_tuner

    from bench.models.lesion_roi import data_profile, lesion_cut

    cache, splits = open_or_prepare(run, progress=False, profile=data_profile(run))
    lesion_prior = "liver_mask" if mode == "channel" else "liver_box"
    cc = replace(run.profile.cascade, lesion_prior=lesion_prior)
    lesion = LesionCascade(load_liver_cascade(liver_cfg, torch.device("cpu")), build_tuner(run), cc).eval()
    cut = lesion_cut(run)  # crop: the liver ROI on the finer grid, as ours' lesion cascade cuts it
    out = {}
    for case in [c for part in splits.values() for c in part]:
        images = np.asarray(cache.images(case, run.plane), dtype=np.float32)
        if mode == "crop":
            assert cut is not None and images.shape[-1] == 2 * run.profile.input_size
            rois = cut.inputs(torch.from_numpy(images)[:, None], lesion.liver, lesion.prior_of_liver)
            out[case] = (rois.images[:, 0].numpy(), rois.priors[:, 0].numpy().astype(np.uint8))
            continue
        out[case] = (images, predict_slices(lesion.lesion_prior, images, 4).numpy().astype(np.uint8))
    return out


def test_the_liver_run_comes_first_and_the_record_names_it(trained):
    from bench.engine.records import read_record
    from bench.models import build_model

    jobs, liver = trained["jobs"], trained["liver"]
    assert [(j.cfg.model, j.cfg.task) for j in jobs] == [("ours", "liver"), ("unet", "lesion"), ("unet", "lesion")]
    assert liver.tag == "" and liver.profile.model.liver_prior == "none"
    liver_record = read_record(run_dir(liver))
    for mode, run in trained["runs"].items():
        record = read_record(run_dir(run))
        assert record["status"] == "complete" and record["config"]["profile"]["model"]["liver_prior"] == mode
        source = record["training"]["liver_prior"]
        assert source["run"] == str(run_dir(liver)) and source["fingerprint"] == liver_record["fingerprint"]
        assert source["finished"] == liver_record["finished"]
        model = build_model(run)
        assert record["parameters"] == sum(p.numel() for p in model.net.parameters())  # the liver cascade is not
        assert source["frozen_parameters"] == sum(p.numel() for p in model.liver.parameters()) > 0


def test_the_network_sees_exactly_the_liver_cascades_prior(trained):
    """Training, validation and evaluation inputs, bitwise, against the liver run's own cascade."""
    liver = trained["liver"]
    for mode, run in trained["runs"].items():
        data = _slices_and_priors(run, liver, mode)
        for case, (imgs, prior) in data.items():  # the priors (crop: the ROI crops) written for training
            if mode == "crop":
                roi = run_dir(run) / "roi" / case
                assert np.array_equal(np.load(roi / "axial_prior.npy"), prior), case
                assert np.array_equal(np.load(roi / "axial_image.npy"), imgs.astype(np.float16)), case
            else:
                assert np.array_equal(np.load(run_dir(run) / "priors" / f"{case}.npy"), prior), case
        priors = np.concatenate([p for _, p in data.values()])
        assert priors.any() and not priors.all()  # a prior that says something: the comparison has teeth
        if mode == "channel":
            expected = {img.tobytes(): p for imgs, ps in data.values() for img, p in zip(imgs, ps)}
            inputs = [(training, x) for training, x in trained["seen"] if x.shape[1] == 2]
        else:  # the liver-ROI crops, at training (read back as float16) and at evaluation (cut afresh)
            expected = {}
            for imgs, _ in data.values():
                expected.update({b.tobytes(): None for b in imgs})
                expected.update({b.astype(np.float16).astype(np.float32).tobytes(): None for b in imgs})
            inputs = [(training, x) for training, x in trained["seen"] if x.shape[1] == 1]
        assert {training for training, _ in inputs} == {True, False}  # training steps and evaluation both seen
        checked = 0
        for _, batch in inputs:
            for item in batch.numpy():
                if mode == "channel":
                    assert np.array_equal(item[1], expected[item[0].tobytes()])
                else:
                    assert item[0].tobytes() in expected
                checked += 1
        assert checked > 20


def test_trained_variant_evaluates_and_predicts_with_the_unchanged_code(trained, tiny_phantom, tmp_path):
    import nibabel as nib
    import pandas as pd

    from bench.engine.evaluate import load_predictor
    from bench.engine.predict import predict_file
    from bench.engine.runner import evaluate

    run = trained["runs"]["channel"]
    evaluate(run, splits=("test",), progress=False)
    per_case = pd.read_csv(run_dir(run) / "per_case.csv")
    assert set(per_case["class"]) == {"lesion"} and set(per_case["split"]) == {"val", "test"}
    predict, model = load_predictor(run, torch.device("cpu"))
    x = torch.from_numpy(_slices_and_priors(run, trained["liver"], "channel")["0"][0][:4, None])
    with torch.no_grad():
        assert torch.equal(predict(x), torch.sigmoid(model.net(torch.cat([x, model.prior(x)], 1))))
    out = predict_file(tiny_phantom / "volume-0.nii.gz", tmp_path / "pred.nii.gz", {"lesion": [run]})
    mask = np.asarray(nib.load(out).dataobj)
    assert mask.shape == nib.load(tiny_phantom / "volume-0.nii.gz").shape and set(np.unique(mask)) <= {0, 1}


def test_the_liver_roi_crop_run_evaluates_and_predicts_on_its_finer_grid(trained, tiny_phantom, tmp_path):
    """The crop variant predicts on the fine grid (data_profile) and comes back on the case's own grid."""
    import nibabel as nib
    import pandas as pd

    from bench.engine.evaluate import load_predictor
    from bench.engine.predict import predict_file
    from bench.engine.runner import evaluate
    from bench.models.lesion_roi import BACKGROUND_LOGIT, data_profile

    run = trained["runs"]["crop"]
    assert data_profile(run).input_size == 2 * run.profile.input_size
    evaluate(run, splits=("test",), progress=False)
    per_case = pd.read_csv(run_dir(run) / "per_case.csv")
    assert set(per_case["split"]) == {"val", "test"} and len(per_case) >= 2
    predict, model = load_predictor(run, torch.device("cpu"))
    from bench.datasets.cache import open_or_prepare

    fine = open_or_prepare(run, progress=False, profile=data_profile(run))[0]
    x = torch.from_numpy(np.asarray(fine.images("0", run.plane), dtype=np.float32)[:6, None])
    with torch.no_grad():
        logits = model(x)
    rois = model.cut.inputs(x, model.liver, model.prior_of_liver)
    outside = model.cut.boxes(rois.windows) == 0
    assert logits.shape == x.shape and rois.keep  # some slices with a liver box
    assert torch.all(logits[outside] == BACKGROUND_LOGIT) and not torch.all(logits[~outside] == BACKGROUND_LOGIT)
    out = predict_file(tiny_phantom / "volume-0.nii.gz", tmp_path / "pred.nii.gz", {"lesion": [run]})
    assert np.asarray(nib.load(out).dataobj).shape == nib.load(tiny_phantom / "volume-0.nii.gz").shape
