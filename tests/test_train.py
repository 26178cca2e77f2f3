"""Training engine on a tiny phantom: learning, checkpoints, exact resume, evaluate, predict."""

from __future__ import annotations

import json
from dataclasses import replace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from bench.engine.runner import run as train_run
from bench.paths import checkpoint_dir
from tests.conftest import tiny_config


@pytest.mark.parametrize("model", ["segnet", "unet", "deeplabv3"])
def test_baseline_trains_checkpoints_and_evaluates(tmp_path, tiny_phantom, model):
    cfg = tiny_config(tmp_path, tiny_phantom, model, **{"profile.train.epochs": 3, "profile.train.steps_per_epoch": 4})
    folder = train_run(cfg, progress=False)
    assert (checkpoint_dir(cfg) / "best.pt").exists() and (checkpoint_dir(cfg) / "last.pt").exists()
    history = pd.read_csv(folder / "history.csv")
    assert len(history) == 3 and history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert list(history["epoch"]) == [1, 2, 3]  # 1-based, as the log prints them
    assert (folder / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the run's training curves
    for name in ("per_case.csv", "metrics.csv", "summary.json", "config.json", "summary_nnunet_val.json",
                 "summary_nnunet_test.json"):
        assert (folder / name).exists(), name
    record = json.loads((folder / "config.json").read_text())
    assert record["status"] == "complete" and record["config"]["model"] == model
    assert {"git", "versions", "device", "wall_time_s", "inference_s_per_slice"} <= set(record)
    per_case = pd.read_csv(folder / "per_case.csv")
    assert set(per_case["split"]) == {"val", "test"} and set(per_case["class"]) == {"liver"}
    # counts cover the original grid of each case: 64 x 64 x 16 voxels
    assert ((per_case[["tp", "fp", "fn", "tn"]].sum(axis=1)) == 64 * 64 * 16).all()


def test_finished_run_is_reused_and_different_config_refused(tmp_path, tiny_phantom):
    cfg = tiny_config(tmp_path, tiny_phantom, "segnet", **{"profile.train.epochs": 1})
    folder = train_run(cfg, progress=False)
    stamp = (folder / "checkpoints" / "best.pt").stat().st_mtime_ns
    assert train_run(cfg, progress=False) == folder
    assert (folder / "checkpoints" / "best.pt").stat().st_mtime_ns == stamp
    from bench.errors import ConfigError

    with pytest.raises(ConfigError, match="another config"):
        train_run(replace(cfg, seed=7), progress=False)


def test_resume_after_kill_reaches_the_same_weights(tmp_path, tiny_phantom, monkeypatch):
    from bench.engine import slices as slices_mod
    from bench.engine import train as train_mod

    common = {"profile.train.epochs": 3, "profile.train.steps_per_epoch": 2}
    straight = tiny_config(tmp_path / "a", tiny_phantom, "unet", **common)
    train_run(straight, progress=False, evaluate=False)

    killed = tiny_config(tmp_path / "b", tiny_phantom, "unet", **common)
    real_fit = train_mod.fit

    def fit_then_die(stage, cfg, device, info=train_mod.DistInfo(), resume=False, progress=True, on_epoch_end=None):
        def die(epoch):
            if epoch == 1:
                raise train_mod.StopTraining("killed")
        return real_fit(stage, cfg, device, info, resume, progress, on_epoch_end=die)

    monkeypatch.setattr(slices_mod, "fit", fit_then_die)
    with pytest.raises(train_mod.StopTraining):
        train_run(killed, progress=False, evaluate=False)
    monkeypatch.setattr(slices_mod, "fit", real_fit)
    train_run(killed, resume=True, progress=False, evaluate=False)

    a = torch.load(checkpoint_dir(straight) / "last.pt", weights_only=True)
    b = torch.load(checkpoint_dir(killed) / "last.pt", weights_only=True)
    assert a["loop"]["epoch"] == b["loop"]["epoch"] == 3
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_evaluate_fused_names_missing_planes(tmp_path, tiny_phantom):
    from bench.engine.evaluate import evaluate_fused
    from bench.errors import DataError

    cfg = tiny_config(tmp_path, tiny_phantom, "segnet", **{"profile.train.epochs": 1})
    train_run(cfg, progress=False)
    with pytest.raises(DataError, match="missing: coronal, sagittal"):
        evaluate_fused(replace(cfg, plane="fused"), progress=False)


def test_fused_after_three_planes_and_predict_round_trip(tmp_path, tiny_phantom):
    from bench.engine.evaluate import evaluate_fused
    from bench.engine.predict import predict_file

    base = tiny_config(tmp_path, tiny_phantom, "segnet", **{"profile.train.epochs": 1})
    for plane in ("axial", "coronal", "sagittal"):
        train_run(replace(base, plane=plane), progress=False)
    folder = evaluate_fused(replace(base, plane="fused"), progress=False)
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary["splits"]) == {"val", "test"}
    assert json.loads((folder / "config.json").read_text())["config"]["plane"] == "fused"

    ct = sorted(tiny_phantom.glob("volume-*.nii*"))[0]
    out = tmp_path / "mask.nii.gz"
    cfgs = {"liver": [replace(base, plane=p) for p in ("axial", "coronal", "sagittal")]}
    predict_file(ct, out, cfgs)
    src, written = nib.load(str(ct)), nib.load(str(out))
    assert written.shape == src.shape
    np.testing.assert_allclose(written.affine, src.affine)
    assert set(np.unique(np.asarray(written.dataobj)).tolist()) <= {0, 1}
