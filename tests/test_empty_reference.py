"""The empty-reference rule (``evaluate.empty_reference``): a lesion-free patient is judged by its false positives.

Hand-made volumes: a lesion-bearing case whose lesion Dice is 0.8 (8 of 10 reference voxels found, 2 false
positives) and a lesion-free case (liver only) with 5 false-positive lesion voxels in 2 components. Under
``nan`` (the default) the lesion-free case's overlap scores are NaN, left out of the mean (0.8) and counted;
under ``zero`` (nnU-Net's convention) its Dice 0 enters the mean (0.4). Either way its false-positive voxels
and lesions are reported: in summary.json, in Table 8's lesion-free rows and by ``bench score``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bench.config import RunConfig, get_profile, override
from bench.errors import ConfigError
from bench.metrics.counts import label_counts
from bench.metrics.lesions import LESION_COUNT_COLUMNS
from bench.metrics.policy import evaluation_policy
from bench.metrics.results import case_rows, read_per_case, write_evaluation
from bench.metrics.scorer import ScoreOptions, keyed, score_label_maps
from bench.metrics.scores import reduce_cases, scores_from_counts
from bench.reports.collect import load_results
from bench.reports.report import _policy_text
from bench.reports.select import ReportOptions
from bench.reports.tables import TABLES
from tests.cli_run import assert_one_line_error, bench
from tests.test_reports import cell, write_run
from tests.test_verdict_table import lesion_counts

SHAPE = (6, 12, 12)  # (Z, Y, X)
SPACING = (2.0, 1.0, 1.0)


def bearing_case() -> tuple[np.ndarray, np.ndarray]:
    """(prediction, reference): 10 reference lesion voxels, 8 found, 2 false positives -> lesion Dice 0.8."""
    ref = np.zeros(SHAPE, np.uint8)
    ref[1:5, 2:10, 2:10] = 1
    ref[2, 4, 4:9] = 2
    ref[3, 4, 4:9] = 2
    pred = ref.copy()
    pred[3, 4, 7:9] = 1  # 2 reference voxels missed
    pred[3, 5, 4:6] = 2  # 2 false-positive voxels touching the lesion
    return pred, ref


def lesion_free_case() -> tuple[np.ndarray, np.ndarray]:
    """(prediction, reference): a liver without a lesion; 5 false-positive lesion voxels in 2 components."""
    ref = np.zeros(SHAPE, np.uint8)
    ref[1:5, 2:10, 2:10] = 1
    pred = ref.copy()
    pred[2, 3, 3:6] = 2
    pred[4, 8, 7:9] = 2
    return pred, ref


def lesion_counts_of(case: tuple[np.ndarray, np.ndarray]) -> tuple[int, int, int, int]:
    return label_counts(*case)["lesion"].as_tuple()


def test_lesion_free_case_is_nan_and_counted_or_zero() -> None:
    free = lesion_counts_of(lesion_free_case())
    bearing = lesion_counts_of(bearing_case())
    assert free[0] == free[2] == 0 and free[1] == 5  # empty reference, 5 false-positive voxels
    assert scores_from_counts(*bearing)["dice"] == pytest.approx(0.8)
    nan = scores_from_counts(*free)
    assert all(math.isnan(nan[m]) for m in ("dice", "iou", "miou", "voe", "rvd")), nan
    assert nan["accuracy"] == pytest.approx(free[3] / sum(free))  # accuracy stays defined
    zero = scores_from_counts(*free, empty_reference="zero")
    assert zero["dice"] == 0.0 and zero["iou"] == 0.0 and zero["voe"] == 1.0 and math.isnan(zero["rvd"])
    assert zero["miou"] == pytest.approx(0.5 * free[3] / (free[3] + 5))  # half the background IoU
    with pytest.raises(ValueError, match="empty-reference rule 'one'"):
        scores_from_counts(*free, empty_reference="one")
    table = np.array([bearing, free])
    red = reduce_cases(table)
    assert red["mean"]["dice"] == pytest.approx(0.8)  # the lesion-free case left out ...
    assert red["n_excluded"] == 1 and red["n_empty_reference"] == 1  # ... and counted
    red_zero = reduce_cases(table, empty_reference="zero")
    assert red_zero["mean"]["dice"] == pytest.approx(0.4)  # nnU-Net's convention: (0.8 + 0) / 2
    assert red_zero["n_excluded"] == 0 and red_zero["n_empty_reference"] == 1
    # the global score sums the counts: the lesion-free case's 5 false positives lower it under both rules
    assert red["global"]["dice"] == red_zero["global"]["dice"] == pytest.approx(16 / (16 + 2 + 5 + 2))
    # model selection keeps counting a lesion-free validation patient's false positives (Dice 0)
    from bench.engine.train import selection_dice

    assert selection_dice(table) == pytest.approx(0.4)


@pytest.mark.parametrize("rule, mean_dice, excluded", [("nan", 0.8, 1), ("zero", 0.4, 0)])
def test_writer_scores_under_the_recorded_rule_and_reports_false_positives(tmp_path: Path, rule: str,
                                                                          mean_dice: float, excluded: int) -> None:
    options = ScoreOptions(empty_reference=rule, device="cpu")
    rows = []
    for cid, case in (("c1", bearing_case()), ("c2", lesion_free_case())):
        rows += keyed(score_label_maps(*case, ("liver", "lesion"), SPACING, options), cid)
    summary = write_evaluation(tmp_path, rows, with_splits=False, policy=options.policy(("liver", "lesion")))
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["policy"]["empty_reference"] == rule and f"evaluate.empty_reference={rule}" in data["policy"]["text"]
    lesion = data["classes"]["lesion"]
    assert lesion["mean"]["dice"] == pytest.approx(mean_dice)
    assert lesion["n_excluded"] == excluded and lesion["n_empty_reference"] == 1
    # what judges the lesion-free case: its false-positive voxels and lesions
    assert lesion["empty_reference"] == {"n_cases": 1, "fp_voxels_per_case": 5.0, "fp_lesions_per_case": 2.0}
    assert data["classes"]["liver"]["n_empty_reference"] == 0 and summary["classes"]["lesion"]["n_cases"] == 2
    per_case = read_per_case(tmp_path / "per_case.csv", rule)
    free = per_case[(per_case["case"] == "c2") & (per_case["class"] == "lesion")].iloc[0]
    assert free["fp"] == 5 and free["fp_lesions"] == 2
    assert math.isnan(free["dice"]) if rule == "nan" else free["dice"] == 0.0
    # nnU-Net's schema keeps nnU-Net's own convention (Dice 0 for false positives on an empty reference)
    nnunet = json.loads((tmp_path / "summary_nnunet.json").read_text())
    dice = [c["metrics"]["2"]["Dice"] for c in nnunet["metric_per_case"]]
    assert dice[1] == 0.0 and dice[0] == pytest.approx(0.8)


def test_config_value_reaches_the_scorer_and_is_checked() -> None:
    cfg = RunConfig(model="unet", task="lesion", profile=get_profile("smoke"))
    assert ScoreOptions.for_run(cfg).empty_reference == "nan"  # the default
    zero = override(cfg, {"profile.evaluate.empty_reference": "zero"})
    options = ScoreOptions.for_run(zero)
    assert options.empty_reference == "zero" and options.policy(["lesion"])["empty_reference"] == "zero"
    with pytest.raises(ConfigError, match="evaluate.empty_reference"):
        override(cfg, {"profile.evaluate.empty_reference": "one"})
    assert evaluation_policy()["empty_reference"] == "nan"


def lesion_fold_study(results: Path, rule: str) -> None:
    """Ours, lesion, two folds as the real study: fold 0 tests the lesion-bearing p03 (Dice 0.6), fold 1 the
    lesion-free p04 (500 false-positive voxels in 4 components), scored under ``rule``."""
    for fold, case, counts, lesions in ((0, "p03", (30, 10, 30, 1000), lesion_counts(3, 1, 2, 1, 1, 1)),
                                        (1, "p04", (0, 500, 0, 1000), lesion_counts(0, 0, 4, 0, 0, 0))):
        folder = write_run(results, "ours", task="lesion", tag=f"ours~fold{fold}", raw_gain=None,
                           changes={"fold": fold, "profile.evaluate.empty_reference": rule})
        rows = case_rows(case, {"lesion": counts}, split="test")
        rows[0].update({k: 0 for k in LESION_COUNT_COLUMNS})
        rows[0].update(lesions)
        write_evaluation(folder, pd.DataFrame(rows), policy=evaluation_policy(empty_reference=rule))


@pytest.mark.parametrize("rule, dice, excluded", [("nan", 0.6, 1), ("zero", 0.3, 0)])
def test_table8_reports_lesion_free_patients_by_their_false_positives(tmp_path: Path, rule: str, dice: float,
                                                                     excluded: int) -> None:
    lesion_fold_study(tmp_path, rule)
    results = load_results(tmp_path)
    table = TABLES.get("8")(results, ReportOptions())

    def value(row: str) -> pd.Series:
        return cell(table, group="Axial Plane", row=row, col_group="Ours", col="Test")

    # the folds pool into one run whose mean is recomputed under the runs' rule
    assert value("Dice")["ours"] == pytest.approx(dice) and value("Dice")["n_excluded"] == excluded
    assert value("Lesion-free patients")["ours"] == 1
    assert value("FP voxels / lesion-free patient")["ours"] == 500
    assert value("FP lesions / lesion-free patient")["ours"] == 4
    assert value("FP voxels / lesion-free patient")["n_cases"] == 1
    assert f"evaluate.empty_reference={rule}" in table.provenance["policy"]
    assert f"evaluate.empty_reference={rule}" in _policy_text(results)  # the report's index states the runs' rule
    assert any("Lesion-free patients" in n for n in table.notes)
    # no lesion run (the training golden layer's liver-only study): the rows are not added
    liver_only = tmp_path / "liver-only"
    write_run(liver_only, "ours", task="liver")
    empty = TABLES.get("8")(load_results(liver_only), ReportOptions())
    assert set(empty.frame["row"]) == {"Accuracy", "Dice", "mIoU"} and (empty.frame["status"] == "missing").all()


def save(path: Path, array_zyx: np.ndarray) -> None:
    """A NIfTI label map; (Z, Y, X) stored as (X, Y, Z) with the spacing in the affine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([SPACING[2], SPACING[1], SPACING[0], 1.0])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array_zyx.transpose(2, 1, 0)), affine), str(path))


def test_bench_score_records_the_rule_in_summary_json(tmp_path: Path) -> None:
    for cid, (pred, ref) in (("c1", bearing_case()), ("c2", lesion_free_case())):
        save(tmp_path / "pred" / f"{cid}.nii.gz", pred)
        save(tmp_path / "gt" / f"{cid}.nii.gz", ref)
    for rule, mean_dice in (("nan", 0.8), ("zero", 0.4)):
        out = tmp_path / f"out-{rule}"
        extra = () if rule == "nan" else ("--empty-reference", rule)  # nan is the default
        proc = bench("score", "pred", "gt", "--task", "lesion", "--out", str(out), *extra, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["policy"]["empty_reference"] == rule and summary["inputs"]["empty_reference"] == rule
        lesion = summary["classes"]["lesion"]
        assert lesion["mean"]["dice"] == pytest.approx(mean_dice) and lesion["n_empty_reference"] == 1
        assert lesion["empty_reference"]["fp_voxels_per_case"] == 5.0
        assert "1 case(s) with an empty reference" in proc.stdout and "5.0 voxels, 2.00 lesions" in proc.stdout


def test_bench_score_refuses_an_unknown_rule(tmp_path: Path) -> None:
    pred, ref = bearing_case()
    save(tmp_path / "pred" / "c1.nii.gz", pred)
    save(tmp_path / "gt" / "c1.nii.gz", ref)
    bad = bench("score", "pred", "gt", "--empty-reference", "one", "--out", str(tmp_path / "bad"), cwd=tmp_path)
    assert_one_line_error(bad, "--empty-reference", "'one'")
    assert not (tmp_path / "bad" / "summary.json").exists()
