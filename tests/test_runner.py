"""A run is one thing: locks, resume checks, safe folders and merged evaluations (issue 15), through
the runner and through the console script as users call it."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.engine.runner import run
from bench.errors import ConfigError, DataError
from bench.paths import checkpoint_dir, run_dir
from tests.conftest import tiny_config

FAST = {"profile.train.epochs": 1, "profile.train.steps_per_epoch": 2}


def bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def one_line_error(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode == code, proc.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


def cli_flags(tmp_path: Path, root: Path) -> list[str]:
    return ["--dataset", "phantom", "--root", str(root), "--profile", "smoke", "--cache", str(tmp_path / "cache"),
            "--results", str(tmp_path / "results"), "--device", "cpu", "--set", "input_size=32",
            "--set", "train.epochs=1", "--set", "train.steps_per_epoch=2", "--set", "train.val_max_cases=1"]


def test_tag_cannot_reach_outside_results(tmp_path, tiny_phantom):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    line = one_line_error(bench("train", "unet", *cli_flags(tmp_path, tiny_phantom), "--tag", "../../../victim",
                                "--force", cwd=tmp_path))
    assert "tag" in line and "safe folder name" in line
    assert (victim / "keep.txt").read_text() == "precious"
    for bad in ("", ".", ".."):
        if bad:
            with pytest.raises(ConfigError, match="safe folder name"):
                tiny_config(tmp_path, tiny_phantom, "unet", tag=bad)


def test_resume_with_a_changed_setting_is_refused_naming_the_field(tmp_path, tiny_phantom):
    cfg = tiny_config(tmp_path, tiny_phantom, "unet", **FAST)
    run(cfg, progress=False, evaluate=False)
    record_path = run_dir(cfg) / "config.json"
    record = json.loads(record_path.read_text())
    record["status"] = "training"  # as if killed mid-training
    record_path.write_text(json.dumps(record))
    changed = replace(cfg, profile=replace(cfg.profile, train=replace(cfg.profile.train, lr=3e-3)))
    with pytest.raises(ConfigError, match=r"another config \(train\.lr 0\.001 -> 0\.003\)"):
        run(changed, resume=True, progress=False)
    # the unchanged config resumes
    run(cfg, resume=True, progress=False)
    assert json.loads(record_path.read_text())["status"] == "complete"


def test_checkpoint_of_another_config_is_not_resumed_silently(tmp_path, tiny_phantom):
    """Even without a record (an older run folder), the checkpoint's own config is compared."""
    cfg = tiny_config(tmp_path, tiny_phantom, "unet", **FAST)
    run(cfg, progress=False, evaluate=False)
    (run_dir(cfg) / "config.json").unlink()
    changed = replace(cfg, profile=replace(cfg.profile, train=replace(cfg.profile.train, lr=3e-3)))
    with pytest.raises(ConfigError, match="cannot resume.*train.lr"):
        run(changed, resume=True, progress=False)


def test_second_writer_is_refused_while_a_run_holds_the_folder(tmp_path, tiny_phantom):
    from bench.engine.runlock import run_lock

    cfg = tiny_config(tmp_path, tiny_phantom, "unet", **FAST)
    folder = run_dir(cfg)
    with run_lock(folder):
        proc = bench("train", "unet", *cli_flags(tmp_path, tiny_phantom), cwd=tmp_path)
    line = one_line_error(proc)
    assert "being written by another bench process" in line and str(__import__("os").getpid()) in line
    with run_lock(folder):  # released when its holder ends
        pass


def test_leftover_temp_files_of_dead_writers_are_removed(tmp_path, tiny_phantom):
    cfg = tiny_config(tmp_path, tiny_phantom, "unet", **FAST)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    leftover = checkpoint_dir(cfg) / f"best.pt.tmp-{dead}"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a checkpoint")
    run(cfg, progress=False)
    assert not leftover.exists()


def test_evaluating_one_split_keeps_the_other_splits_rows(tmp_path, tiny_phantom):
    cfg = tiny_config(tmp_path, tiny_phantom, "unet", **FAST)
    folder = run(cfg, progress=False)
    before = pd.read_csv(folder / "per_case.csv")
    assert set(before["split"]) == {"val", "test"}
    proc = bench("evaluate", "unet", "--split", "val", "--dataset", "phantom", "--root", str(tiny_phantom),
                 "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache"), "--device", "cpu",
                 cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = pd.read_csv(folder / "per_case.csv")
    pd.testing.assert_frame_equal(after.sort_values(["split", "case"]).reset_index(drop=True),
                                  before.sort_values(["split", "case"]).reset_index(drop=True))
    line = one_line_error(bench("evaluate", "unet", "--split", "train", "--dataset", "phantom", "--root",
                                str(tiny_phantom), "--results", str(tmp_path / "results"), cwd=tmp_path))
    assert "expected val, test or all" in line


@pytest.mark.parametrize("override, words", [
    ("train.lr=-0.01", "lr=-0.01 must be > 0"),
    ("train.batch_size=0", "batch_size=0 must be >= 1"),
    ("train.batch_size=-1", "batch_size=-1 must be >= 1"),
    ("train.foreground_fraction=2", "foreground_fraction=2.0 must be in [0, 1]"),
    ("train.epochs=0", "epochs=0 must be >= 1"),
    ("train.patience=-1", "patience=-1 must be >= 1"),
    ("train.steps_per_epoch=-1", "steps_per_epoch=-1 must be >= 0"),
    ("cascade.reiter_stop=plateu", "not one of plateau, none; did you mean plateau?"),
    ("train=5", "is a group of settings"),
    ("model=foo", "'model' is a group of settings"),
    ("input_size=50", "deeplabv3 needs a multiple of 16"),
])
def test_nonsense_settings_are_one_line(tmp_path, override, words):
    model = "deeplabv3" if override.startswith("input_size") else "unet"
    proc = bench("train", model, "--profile", "smoke", "--set", override, "--results", str(tmp_path / "r"),
                 "--cache", str(tmp_path / "c"), cwd=tmp_path)
    assert words in one_line_error(proc)
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_another_models_folder_is_refused_with_resume(tmp_path, tiny_phantom):
    flags = cli_flags(tmp_path, tiny_phantom)
    assert bench("train", "segnet", *flags, "--tag", "mine", cwd=tmp_path).returncode == 0
    line = one_line_error(bench("train", "unet", *flags, "--tag", "mine", "--resume", cwd=tmp_path))
    assert "holds a run with another config (model 'segnet' -> 'unet'" in line


def test_missing_run_is_one_line_for_evaluate_and_predict(tmp_path, tiny_phantom):
    line = one_line_error(bench("evaluate", "unet", "--plane", "coronal", "--dataset", "phantom", "--root",
                                str(tiny_phantom), "--results", str(tmp_path / "results"), cwd=tmp_path))
    assert "no run here" in line
    ct = sorted(tiny_phantom.glob("volume-*.nii*"))[0]
    line = one_line_error(bench("predict", "unet", "--input", str(ct), "--output", str(tmp_path / "m.nii.gz"),
                                "--results", str(tmp_path / "results"), cwd=tmp_path))
    assert "no run here" in line


def test_checkpoint_carrying_code_is_refused(tmp_path, tiny_phantom):
    """weights_only loading: a checkpoint with a pickled callable never runs it."""
    cfg = tiny_config(tmp_path, tiny_phantom, "unet", **FAST)
    folder = run(cfg, progress=False)
    marker = tmp_path / "pwned"
    state = torch.load(checkpoint_dir(cfg) / "best.pt", weights_only=True)
    state["payload"] = Exploit(str(marker))
    torch.save(state, checkpoint_dir(cfg) / "best.pt")
    from bench.engine.evaluate import evaluate_plane

    with pytest.raises(DataError, match="refused"):
        evaluate_plane(cfg, progress=False)
    line = one_line_error(bench("evaluate", "unet", "--dataset", "phantom", "--root", str(tiny_phantom),
                                "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache"),
                                cwd=tmp_path))
    assert "refused" in line and not marker.exists()
    assert folder.exists()


class Exploit:
    """Unpickling this calls ``open(path, 'w')``: what a malicious checkpoint would do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_worker_prints_bench_warnings_as_one_line(monkeypatch, capfd):
    """Scheduler workers do not run the CLI entry point; their bench warnings must still be one line
    (a real-data study printed 'cascade.py:68: UserWarning: ...' plus the source line)."""
    import warnings

    import bench.engine.runner as runner
    import bench.engine.scheduler as scheduler
    from bench.config import RunConfig, get_profile, to_dict
    from bench.engine.scheduler import _run_job

    def warn_like_the_engine(cfg, **kwargs):
        warnings.warn_explicit("no validation patients; keeping the last epoch", UserWarning,
                               filename=runner.__file__, lineno=1)
        warnings.warn_explicit("from another package", UserWarning, filename="/elsewhere/pkg.py", lineno=7)

    monkeypatch.setattr(scheduler, "run", warn_like_the_engine)  # the name the scheduler calls
    monkeypatch.setenv("BENCH_PROGRESS", "")  # restored afterwards: a worker sets it to plain
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            _run_job(to_dict(RunConfig(model="unet", profile=get_profile("smoke"), device="cpu")), 1, False, False,
                     False)  # threads=1: as in a worker process
    finally:
        torch.set_num_threads(threads)
    err = capfd.readouterr().err
    assert "warning: no validation patients; keeping the last epoch" in err
    assert "runner.py" not in err and "UserWarning: no validation" not in err
    assert "warning: from another package" not in err  # other packages' warnings keep Python's own handling
