"""Patient-level cross-validation (issue 11): folds in the split file, --fold on runs, pooled reports,
and a split without validation patients."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import pandas as pd
import pytest

from bench.datasets.splits import fold_split, load_or_create_splits, make_folds, read_splits
from bench.errors import ConfigError

IDS = [str(i) for i in range(20)]


@pytest.mark.parametrize("k", [2, 5, 20])
def test_every_patient_is_tested_exactly_once_and_never_trained_on_in_its_fold(k):
    folds = make_folds(IDS, k, seed=0)
    assert len(folds) == k
    tested = [c for f in folds for c in f["test"]]
    assert sorted(tested, key=int) == IDS  # each patient a test patient exactly once
    for f in folds:
        assert not set(f["test"]) & (set(f["train"]) | set(f["val"])) and not set(f["train"]) & set(f["val"])
        assert set(f["train"]) | set(f["val"]) | set(f["test"]) == set(IDS) and f["train"]
    if k == 20:  # leave-one-patient-out: one test patient, one validation patient
        assert all(len(f["test"]) == 1 and len(f["val"]) == 1 for f in folds)


def test_two_patients_leave_one_out_has_no_validation():
    folds = make_folds(["1", "7"], 2)
    assert [f["test"] for f in folds] == [["1"], ["7"]] or [f["test"] for f in folds] == [["7"], ["1"]]
    assert all(f["val"] == [] and len(f["train"]) == 1 for f in folds)
    with pytest.raises(ConfigError, match="--folds 3"):
        make_folds(["1", "7"], 3)


def test_folds_extend_the_split_file_compatibly(tmp_path):
    path = tmp_path / "splits_final.json"
    default = load_or_create_splits(path, IDS, seed=0)
    fold1 = load_or_create_splits(path, IDS, seed=0, folds=5, fold=1)
    data = json.loads(path.read_text())
    assert {k: data[k] for k in ("train", "val", "test")} == default  # the default split is unchanged
    assert len(data["folds"]) == 5 and fold1 == data["folds"][1]
    assert load_or_create_splits(path, IDS, seed=0) == default  # runs without --fold read the same
    with pytest.raises(ConfigError, match="already holds 5 folds, not 4"):
        load_or_create_splits(path, IDS, seed=0, folds=4)
    with pytest.raises(ConfigError, match="--fold 7: .* has folds 0..4"):
        fold_split(read_splits(path, IDS), 7, path)
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(default))
    with pytest.raises(ConfigError, match="bench data prepare --folds K"):
        load_or_create_splits(tmp_path / "x.json", IDS, given=plain, fold=0)


def test_fold_runs_pool_into_one_row_per_model_with_each_folds_numbers(tmp_path, tiny_phantom):
    """Two folds of a 4-patient phantom (no validation patients: the last-epoch rule), pooled."""
    from bench.datasets.cache import prepare_dataset
    from bench.engine.scheduler import execute, plan
    from bench.paths import seed_tag
    from bench.reports.collect import load_results
    from bench.reports.select import ReportOptions
    from bench.reports.tables import build_tables
    from tests.conftest import tiny_config

    base = tiny_config(tmp_path, tiny_phantom, "unet", **{"profile.train.epochs": 1, "profile.train.steps_per_epoch": 2})
    prepare_dataset(base.dataset, base.root, base.cache, base.profile, progress=False, folds=2)
    cfgs = [replace(base, fold=f, tag=seed_tag("unet", "", 0, f)) for f in (0, 1)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        execute(plan(cfgs), progress=False, say=lambda line: None)
    assert any("no validation patients; keeping the last epoch" in str(w.message) for w in caught)
    res = load_results(base.results)
    assert list(res.runs["run_id"]) == ["phantom/liver/unet~fold0/axial (folds 0, 1)"]
    test = res.per_case[(res.per_case["split"] == "test") & (res.per_case["variant"] == "post")]
    assert sorted(test["case"]) == sorted(str(c) for c in range(4))  # every patient, once
    table7 = build_tables(res, [7], ReportOptions(dataset="phantom", profile="smoke"))[0]
    cell = table7.frame[(table7.frame["col_group"] == "U-Net") & (table7.frame["metric"] == "dice")
                        & (table7.frame["split"] == "test") & (table7.frame["group"] == "Axial Plane")].iloc[0]
    assert cell["n_cases"] == 4 and cell["status"] == "ok"
    assert abs(cell["ours"] - pd.to_numeric(test["dice"]).mean()) < 1e-9  # the mean over all test patients
    folds = table7.provenance["folds"]["phantom/liver/unet~fold0/axial (folds 0, 1)"]
    assert "fold 0:" in folds and "fold 1:" in folds and "Dice" in folds


def test_folds_through_the_console_script(tmp_path, tiny_phantom):
    import subprocess
    import sys

    def bench(*args):
        return subprocess.run([sys.executable, "-m", "bench", *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)

    common = ["--dataset", "phantom", "--root", str(tiny_phantom), "--cache", str(tmp_path / "cache"),
              "--profile", "smoke"]
    made = bench("data", "prepare", *common, "--folds", "4", "--set", "input_size=32")
    assert made.returncode == 0, made.stderr
    assert made.stdout.count("fold ") == 4 and "leave" not in made.stderr
    wrong = bench("train", "unet", *common, "--fold", "4", "--set", "input_size=32", "--results", str(tmp_path / "r"))
    lines = [line for line in wrong.stderr.splitlines() if line.strip()]
    assert wrong.returncode == 2 and len(lines) == 1 and "--fold 4" in lines[0] and "folds 0..3" in lines[0]
