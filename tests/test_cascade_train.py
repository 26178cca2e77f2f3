"""The cascade end to end on a tiny phantom: stages, Algorithm 1, lesion step, three planes fused."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import torch

from bench.engine.runner import run as train_run
from bench.paths import run_dir
from tests.conftest import tiny_config

CASCADE = {"profile.train.epochs": 1, "profile.train.steps_per_epoch": 2, "profile.cascade.max_reiterations": 1,
           "profile.cascade.reiter_epochs": 1, "profile.cascade.reiter_stop": "none",
           "profile.cascade.reiter_patch_levels": (1,), "profile.cascade.area_threshold": 0.1}
# 16x16 patches of a 32x32 phantom slice hold at most ~16% liver: mu = 0.1 keeps some (the paper uses 0.3 at 512)


def test_reiteration_grows_training_set_and_records_every_iteration(tmp_path, tiny_phantom):
    cfg = tiny_config(tmp_path, tiny_phantom, "ours", **CASCADE)
    folder = train_run(cfg, progress=False)
    reiter = pd.read_csv(folder / "reiteration.csv")
    assert sorted(reiter["iteration"].unique()) == [0, 1]
    assert set(reiter["split"]) == {"val", "test"}
    sizes = reiter.groupby("iteration")["n_train_samples"].first()
    assert sizes[1] > sizes[0]  # X u P: the kept patches joined the slices
    assert reiter[["accuracy"]].notna().all().all()
    patches = folder / "reiteration"
    assert (patches / "patches-16" / "selflabel.npy").exists()
    assert {"patches", "patches_16px", "selflabel_dice_16px"} <= set(reiter.columns)
    assert reiter.loc[reiter["iteration"] == 1, "patches"].iloc[0] > 0
    history = pd.read_csv(folder / "history.csv")
    assert {"localizer", "tuner", "reiter1"} <= set(history["stage"])
    assert (history.groupby("stage", sort=False)["epoch"].first() == 1).all()  # each stage counts from 1
    assert (folder / "progress.png").is_file()
    record = json.loads((folder / "config.json").read_text())
    assert record["status"] == "complete" and record["training"]["reiteration"]["iterations_run"] == 1
    assert 0.0 <= record["training"]["roi_coverage"] <= 1.0
    # the saved model is the whole cascade and runs on a slice
    from bench.engine.evaluate import load_predictor

    predict, model = load_predictor(cfg, torch.device("cpu"))
    assert predict(torch.zeros(2, 1, 32, 32)).shape == (2, 1, 32, 32)
    assert (folder / "examples.npz").exists()


def test_plateau_stop_reads_validation_only(tmp_path, tiny_phantom):
    from bench.engine import reiterate as reiterate_mod

    cfg = tiny_config(tmp_path, tiny_phantom, "ours", **{**CASCADE, "profile.cascade.max_reiterations": 3,
                                                          "profile.cascade.reiter_stop": "plateau"})
    seen = []
    real = reiterate_mod.split_scores

    def scripted(tuner, dataset, ctx):
        scores = real(tuner, dataset, ctx)
        split = "val" if dataset is not None and len(seen) % 2 == 0 else "test"
        seen.append(split)
        # validation never improves after N = 0; test would (it must be ignored)
        if split == "val":
            scores["dice"] = 0.5 if len(seen) == 1 else 0.4
        else:
            scores["dice"] = 0.9
        return scores

    reiterate_mod.split_scores = scripted
    try:
        folder = train_run(cfg, progress=False)
    finally:
        reiterate_mod.split_scores = real
    reiter = pd.read_csv(folder / "reiteration.csv")
    assert reiter["iteration"].max() == 1  # N = 1 did not improve validation: stop
    assert json.loads((folder / "config.json").read_text())["training"]["reiteration"]["best_iteration"] == 0


def test_lesion_cascade_trains_liver_first_then_fused(tmp_path, tiny_phantom):
    import pytest

    from bench.engine.evaluate import evaluate_fused
    from bench.engine.scheduler import execute, plan
    from bench.errors import DataError

    base = tiny_config(tmp_path, tiny_phantom, "ours", **{**CASCADE, "profile.cascade.max_reiterations": 0})
    lesion = replace(base, task="lesion")
    with pytest.raises(DataError, match="needs .*liver"):  # the runner alone does not train prerequisites
        train_run(lesion, progress=False)
    jobs = plan([lesion])  # the scheduler does: liver first
    assert [j.cfg.task for j in jobs] == ["liver", "lesion"] and jobs[1].needs == {jobs[0].key}
    execute(jobs, progress=False, say=lambda line: None)
    assert (run_dir(replace(base, task="liver")) / "config.json").exists()
    per_case = pd.read_csv(run_dir(lesion) / "per_case.csv")
    assert set(per_case["class"]) == {"lesion"}
    for plane in ("coronal", "sagittal"):
        train_run(replace(base, plane=plane), progress=False)
    fused = evaluate_fused(replace(base, plane="fused"), progress=False)
    assert (fused / "metrics.csv").exists()


def test_slice_self_labels_are_each_patchs_window_of_the_whole_slice_prediction(tmp_path):
    """self_label_source='slice': a kept patch's label is cut from the prediction on its whole slice, at the
    patch's own position (checked against the image: the stored patch is the slice's window there)."""
    import numpy as np

    from bench.engine.reiterate import PatchSet, cut_patches, refresh_self_labels

    rng = np.random.default_rng(0)
    images = {c: rng.normal(size=(3, 32, 32)).astype(np.float32) for c in ("a", "b")}
    labels = {c: np.zeros((3, 32, 32), np.uint8) for c in ("a", "b")}
    labels["a"][1, 2:20, 4:30] = 1
    labels["b"][2, 10:32, 0:18] = 1

    class Cache:
        def images(self, case, plane):
            return images[case]

        def labels(self, case, plane):
            return labels[case]

    counts = cut_patches(Cache(), ["a", "b"], "axial", "liver", [16], 0.3, lambda c, p: np.ones((3, 32, 32), np.uint8),
                         tmp_path)
    assert counts[16] > 0
    # a "network" whose whole-slice prediction is a pattern no patch could produce on its own
    pattern = {c: (np.add.outer(np.arange(32), np.arange(32)) % 3 == k).astype(np.float32)[None].repeat(3, 0)
               for k, c in enumerate(("a", "b"))}
    calls = []

    def slice_probs(case: int, slices):
        calls.append((case, tuple(int(s) for s in slices)))
        return torch.from_numpy(pattern["ab"[case]][slices])

    ps = PatchSet(tmp_path / "patches-16", 16)
    quality = refresh_self_labels(lambda image, prior: torch.zeros_like(image), [ps], 0.5, "slice",
                                  torch.device("cpu"), slice_probs=slice_probs)
    where = np.load(tmp_path / "patches-16" / "where.npy")
    got = np.load(tmp_path / "patches-16" / "selflabel.npy")
    for k, (case, z, y, x) in enumerate(where):
        name = "ab"[case]
        assert np.array_equal(np.asarray(ps.image[k], np.float32), images[name][z, y:y + 16, x:x + 16].astype(np.float16))
        assert np.array_equal(got[k], pattern[name][z, y:y + 16, x:x + 16].astype(np.uint8))
    assert sorted(calls) == [(0, (1,)), (1, (2,))]  # each needed slice predicted once
    assert 0.0 <= quality[16] < 1.0
    # the oracle source gives the truth back, the per-patch source predicts the patches themselves
    assert refresh_self_labels(lambda i, p: i, [ps], 0.5, "ground_truth", torch.device("cpu"))[16] == 1.0
