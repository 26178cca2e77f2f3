"""No back and forth on the main path (issue 19 item 4): per run, the config is checked once and its
requirements computed once; the runner hands its trained model and open cache to evaluation.

The counts are taken by wrapping the real functions wherever a ``bench`` module holds them (so the
spies work whether a module imports at its top or inside a function).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.cli_run import bench_env
from tests.conftest import tiny_config

FAST = {"profile.train.epochs": 1, "profile.train.steps_per_epoch": 2}

# run in a subprocess: wraps the check and the requirements, then runs the CLI as ``bench`` would
COUNTING_CLI = """
import atexit, collections, json, sys
import bench.models, bench.engine.scheduler, bench.engine.runner, bench.cli.common, bench.cli.train
from bench.paths import run_dir
calls = collections.Counter()
for name in ("check_run_config", "requirements"):
    orig = getattr(bench.models, name)
    def counted(cfg, *args, _orig=orig, _name=name, **kwargs):
        calls[_name + " " + str(run_dir(cfg))] += 1
        return _orig(cfg, *args, **kwargs)
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("bench") and getattr(module, name, None) is orig:
            setattr(module, name, counted)
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(json.dumps(calls)))
sys.argv = ["bench"] + sys.argv[2:]
from bench.cli import main
main()
"""


def spy(monkeypatch: pytest.MonkeyPatch, module, name: str) -> list:
    """Record every call of ``module.name`` made through any bench module that holds it."""
    orig = getattr(module, name)
    calls: list = []

    def wrapped(*args, **kwargs):
        calls.append(args)
        return orig(*args, **kwargs)

    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("bench") and getattr(mod, name, None) is orig:
            monkeypatch.setattr(mod, name, wrapped)
    return calls


@pytest.mark.parametrize("plane, runs", [
    ("axial", {"axial"}),
    # three planes trained, then the fused row: the run graph with prerequisites (about a minute)
    pytest.param("fused", {"axial", "coronal", "sagittal", "fused"}, marks=pytest.mark.slow),
])
def test_bench_train_checks_each_run_once_and_computes_its_requirements_once(tmp_path, tiny_phantom, plane, runs):
    """``bench train unet --plane PLANE``: every run it makes is checked once, its requirements computed once
    (the previous code checked a plane run twice and computed its requirements four times)."""
    counts = tmp_path / "counts.json"
    script = tmp_path / "counting_cli.py"
    script.write_text(COUNTING_CLI)
    proc = subprocess.run(
        [sys.executable, str(script), str(counts), "train", "unet", "--plane", plane, "--dataset", "phantom",
         "--root", str(tiny_phantom), "--profile", "smoke", "--cache", str(tmp_path / "cache"), "--results",
         str(tmp_path / "results"), "--device", "cpu", "--set", "input_size=32", "--set", "train.epochs=1",
         "--set", "train.steps_per_epoch=1", "--set", "train.val_max_cases=1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=bench_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    calls = Counter(json.loads(counts.read_text()))
    folders = {key.split(" ", 1)[1] for key in calls}
    assert {Path(f).name for f in folders} == runs
    for folder in folders:
        assert calls[f"check_run_config {folder}"] == 1, dict(calls)
        assert calls[f"requirements {folder}"] == 1, dict(calls)


def test_a_direct_run_checks_its_graph_once(tmp_path, tiny_phantom, monkeypatch):
    """`bench.engine.runner.run` called without a plan (tests, scripts) checks and plans by itself, once."""
    import bench.models
    from bench.engine.runner import run
    from bench.paths import run_dir

    checks = spy(monkeypatch, bench.models, "check_run_config")
    needs = spy(monkeypatch, bench.models, "requirements")
    cfg = tiny_config(tmp_path, tiny_phantom, "unet", **FAST)
    run(cfg, progress=False, evaluate=False)
    assert [run_dir(c) for (c, *_) in checks] == [run_dir(cfg)]
    assert [run_dir(c) for (c, *_) in needs] == [run_dir(cfg)]


def test_the_runner_hands_its_model_and_cache_to_evaluation(tmp_path, tiny_phantom, monkeypatch):
    """Training then evaluating reads no best.pt, no config.json back and opens the cache once; the
    scores equal those of a later `bench evaluate` that rebuilds the model from best.pt."""
    import bench.datasets.cache
    import bench.engine.checkpoint
    import bench.engine.evaluate
    import bench.engine.records
    from bench.engine.evaluate import evaluate_plane
    from bench.engine.runner import run

    opened = spy(monkeypatch, bench.datasets.cache, "open_or_prepare")
    loaded = spy(monkeypatch, bench.engine.checkpoint, "load_weights")
    rebuilt = spy(monkeypatch, bench.engine.evaluate, "load_predictor")
    reread = spy(monkeypatch, bench.engine.records, "stored_config")
    cfg = tiny_config(tmp_path, tiny_phantom, "unet", **FAST)
    folder = run(cfg, progress=False)
    assert (len(opened), len(loaded), len(rebuilt), len(reread)) == (1, 0, 0, 0)
    in_memory = pd.read_csv(folder / "per_case.csv")
    evaluate_plane(cfg, progress=False)  # the other face: model from best.pt, cache opened
    assert (len(opened), len(loaded), len(rebuilt), len(reread)) == (2, 1, 1, 1)
    pd.testing.assert_frame_equal(pd.read_csv(folder / "per_case.csv"), in_memory)


def test_a_channels_last_model_is_evaluated_in_the_default_layout(tmp_path, tiny_phantom):
    """Training on CUDA leaves the model channels_last; the handed-over model is put back in the
    layout a model loaded from best.pt has, so both give the same numbers."""
    from bench.engine.evaluate import predictor
    from bench.models import build_model

    model = build_model(tiny_config(tmp_path, tiny_phantom, "unet")).to(memory_format=torch.channels_last)
    assert not all(p.is_contiguous() for p in model.parameters() if p.dim() == 4)  # as training leaves it
    _, ready = predictor(model.train(), torch.device("cpu"))
    assert all(p.is_contiguous() for p in ready.parameters() if p.dim() == 4) and not ready.training
