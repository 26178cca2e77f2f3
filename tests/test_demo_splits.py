"""``bench demo --splits``: a study on the user's own train/val/test patients (issue 18, item 4).

A user with a separate test patient (the real-CT protocol: train on several 3D-IRCADb or LiTS
patients, test on another) gives the split file to the whole study, not only to ``bench train``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.engine.study import StudyPlan, study_targets
from tests.cli_run import assert_one_line_error, bench

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "3dircadb1"


def test_every_study_run_reads_the_given_split_file(tmp_path: Path) -> None:
    splits = str(tmp_path / "my_splits.json")
    plan = StudyPlan(models=("unet", "ours"), planes=("axial",), tasks=("liver", "lesion"), ablations=(),
                     overrides=(("splits", splits),))
    targets = study_targets("smoke", str(tmp_path / "r"), "phantom", "", str(tmp_path / "c"), (0,), "cpu", plan)
    assert targets and {cfg.splits for _, cfg in targets} == {splits}
    plain = study_targets("smoke", str(tmp_path / "r"), "phantom", "", str(tmp_path / "c"), (0,), "cpu",
                          StudyPlan(models=("unet",), planes=("axial",), tasks=("liver",), ablations=()))
    assert {cfg.splits for _, cfg in plain} == {""}


def test_a_missing_split_file_is_one_line(tmp_path: Path) -> None:
    proc = bench("demo", "--profile", "smoke", "--splits", str(tmp_path / "nope.json"), "--results",
                 str(tmp_path / "r"), "--cache", str(tmp_path / "c"), cwd=tmp_path)
    assert_one_line_error(proc, "--splits", "nope.json")
    assert not (tmp_path / "data").exists() and not (tmp_path / "r" / "phantom").exists()


@pytest.mark.slow
@pytest.mark.skipif(not REAL.is_dir(), reason="real 3D-IRCADb data not present")
def test_real_patients_train_and_test_as_the_split_file_says(tmp_path: Path) -> None:
    splits = tmp_path / "my_splits.json"
    splits.write_text(json.dumps({"train": ["3Dircadb1.1"], "val": [], "test": ["3Dircadb1.7"]}))
    proc = bench("demo", "--dataset", "ircadb", "--root", str(REAL), "--profile", "smoke", "--models", "unet",
                 "--tasks", "liver", "--liver-priors", "", "--splits", str(splits), "--no-report",
                 "--results", str(tmp_path / "r"), "--cache", str(tmp_path / "c"), cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "r/ircadb/liver/unet/axial/config.json").read_text())
    assert record["data"]["splits"]["test"] == ["3Dircadb1.7"]
    assert record["data"]["splits"]["train"] == ["3Dircadb1.1"]


@pytest.mark.parametrize("flag, value, says", [("--planes", ",", "--planes"), ("--lesion-planes", ",", "--lesion-planes"),
                                              ("--models", "unet,foo", "foo"), ("--ablations", "foo", "foo"),
                                              ("--tasks", "livr", "livr")])
def test_a_bad_name_is_refused_before_any_data_is_written(tmp_path: Path, flag: str, value: str, says: str) -> None:
    proc = bench("demo", "--profile", "smoke", flag, value, "--results", str(tmp_path / "r"), "--cache",
                 str(tmp_path / "c"), cwd=tmp_path)
    assert_one_line_error(proc, says)
    assert not (tmp_path / "data").exists()
