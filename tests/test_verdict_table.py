"""The real-data verdict table: per patient, pooled over folds, lesion Dice on lesion-bearing patients only.

A two-fold study is written like a real one (config.json from the real dataclasses with the study's fold and
variant tags, per_case.csv and metrics.csv through the one writer from voxel and lesion counts): fold 0 tests
the lesion-bearing patient p03, fold 1 the lesion-free patient p04. Then collected and tabulated by the
report code, and once through ``bench report --tables verdict``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bench.metrics.lesions import LESION_COUNT_COLUMNS
from bench.metrics.results import case_rows, write_evaluation
from bench.reports.collect import load_results
from bench.reports.select import ReportOptions
from bench.reports.tables import TABLES, parse_table_spec
from tests.cli_run import bench
from tests.test_reports import cell, write_run

LESION_FREE, LESION_BEARING = "p04", "p03"


def fold_run(results: Path, model: str, task: str, fold: int, case: str, counts: tuple[int, int, int, int], *,
             assd: float | None = None, lesions: dict | None = None, prior: str = "") -> None:
    """One fold's run testing one patient; its tag as the study writes it (``unet~fold0~liver_prior=crop``)."""
    tag = f"{model}~fold{fold}" + (f"~liver_prior={prior}" if prior else "")
    changes = {"fold": fold, **({"profile.model.liver_prior": prior} if prior else {})}
    folder = write_run(results, model, task=task, tag=tag, changes=changes, raw_gain=None)
    rows = case_rows(case, {task: counts}, split="test", surface={task: {"assd": assd}} if assd is not None else None)
    if lesions is not None:
        rows[0].update({k: 0 for k in LESION_COUNT_COLUMNS})
        rows[0].update(lesions)
    write_evaluation(folder, pd.DataFrame(rows))


def lesion_counts(n_ref: int, n_det: int, n_pred: int, n_match: int, big: int, big_det: int) -> dict:
    return dict(n_ref_lesions=n_ref, n_detected=n_det, n_pred_lesions=n_pred, n_pred_matched=n_match,
                fp_lesions=n_pred - n_match, ref_lt10=n_ref - big, det_lt10=n_det - big_det, ref_gt20=big,
                det_gt20=big_det)


def study(results: Path) -> None:
    # liver: ours with ASSD (evaluated --surface), U-Net without; Dice p03 0.9 / p04 0.8 and 0.7 / 0.6
    fold_run(results, "ours", "liver", 0, LESION_BEARING, (90, 10, 10, 1000), assd=2.0)
    fold_run(results, "ours", "liver", 1, LESION_FREE, (80, 20, 20, 1000), assd=4.0)
    fold_run(results, "unet", "liver", 0, LESION_BEARING, (70, 30, 30, 1000))
    fold_run(results, "unet", "liver", 1, LESION_FREE, (60, 40, 40, 1000))
    # lesion: p03 has 3 reference lesions (1 > 20 mm); p04 none, so only false positives
    fold_run(results, "ours", "lesion", 0, LESION_BEARING, (30, 10, 30, 1000),
             lesions=lesion_counts(3, 1, 2, 1, 1, 1))
    fold_run(results, "ours", "lesion", 1, LESION_FREE, (0, 500, 0, 1000), lesions=lesion_counts(0, 0, 4, 0, 0, 0))
    fold_run(results, "unet", "lesion", 0, LESION_BEARING, (10, 0, 50, 1000), prior="crop",
             lesions=lesion_counts(3, 2, 2, 2, 1, 0))
    fold_run(results, "unet", "lesion", 1, LESION_FREE, (0, 7, 0, 1000), prior="crop",
             lesions=lesion_counts(0, 0, 1, 0, 0, 0))


def verdict_cell(table, row: str, col: str) -> pd.Series:
    return cell(table, row=row, col_group=col)


def test_lesion_dice_and_false_positives_by_patient_kind(tmp_path: Path) -> None:
    study(tmp_path)
    table = TABLES.get("verdict")(load_results(tmp_path), ReportOptions())
    # lesion Dice: only p03 (2*30 / (60 + 40) = 0.6); p04's Dice 0 (500 false-positive voxels) never enters
    dice = verdict_cell(table, "Dice, lesion-bearing patients (mean)", "Ours")
    assert math.isclose(dice["ours"], 0.6) and dice["n_cases"] == 1
    assert verdict_cell(table, "Lesion-bearing patients", "Ours")["ours"] == 1
    assert verdict_cell(table, "Lesion-free patients", "Ours")["ours"] == 1
    # false positives: only the lesion-free patient p04
    assert verdict_cell(table, "FP voxels / lesion-free patient", "Ours")["ours"] == 500
    assert verdict_cell(table, "FP lesions / lesion-free patient", "Ours")["ours"] == 4
    # recall pooled from counts: 1 of 3 reference lesions, the one > 20 mm found
    assert math.isclose(verdict_cell(table, "Lesion-wise recall (pooled)", "Ours")["ours"], 1 / 3)
    assert verdict_cell(table, "Reference lesions", "Ours")["ours"] == 3
    assert verdict_cell(table, "Recall > 20 mm", "Ours")["ours"] == 1.0
    # the crop baseline's fold runs (tags unet~fold0~liver_prior=crop, unet~fold1~...) pool into one column
    crop = "U-Net + liver crop"
    assert math.isclose(verdict_cell(table, "Dice, lesion-bearing patients (mean)", crop)["ours"], 20 / 70)
    assert verdict_cell(table, "FP voxels / lesion-free patient", crop)["ours"] == 7
    assert math.isclose(verdict_cell(table, "Lesion-wise recall (pooled)", crop)["ours"], 2 / 3)
    assert verdict_cell(table, "Recall > 20 mm", crop)["ours"] == 0.0
    # a lesion-free patient has no per-patient lesion Dice row
    lesion = table.frame[table.frame["group"] == "Axial Plane: lesion"]
    assert set(lesion.loc[lesion["row"].str.startswith("Dice, patient"), "row"]) == {f"Dice, patient {LESION_BEARING}"}


def test_liver_per_patient_assd_and_missing_cells(tmp_path: Path) -> None:
    study(tmp_path)
    table = TABLES.get("verdict")(load_results(tmp_path), ReportOptions())
    liver = table.frame[table.frame["group"] == "Axial Plane: liver"]

    def value(row: str, col: str) -> pd.Series:
        part = liver[(liver["row"] == row) & (liver["col_group"] == col)]
        assert len(part) == 1, (row, col)
        return part.iloc[0]

    assert math.isclose(value("Dice (mean over patients)", "Ours")["ours"], 0.85)
    assert math.isclose(value(f"Dice, patient {LESION_BEARING}", "Ours")["ours"], 0.9)
    assert math.isclose(value(f"Dice, patient {LESION_FREE}", "U-Net")["ours"], 0.6)
    assert math.isclose(value("ASSD, mm (mean over patients)", "Ours")["ours"], 3.0)
    assert value(f"ASSD, mm, patient {LESION_FREE}", "Ours")["ours"] == 4.0
    # U-Net was evaluated without --surface: missing, the note names the command
    assert value("ASSD, mm (mean over patients)", "U-Net")["status"] == "missing"
    assert any("bench evaluate unet --plane axial --surface" in n for n in table.notes), table.notes
    # the liver-prior baseline has no liver run: missing with the "(ours' liver)" note
    assert value("Dice (mean over patients)", "U-Net + liver crop")["status"] == "missing"
    assert any("U-Net + liver crop" in n and "(ours' liver)" in n for n in table.notes)
    # each column labelled with its normalisation and parameter count
    labels = dict(zip(table.frame["col_group"], table.frame["col"]))
    assert labels["Ours"] == "(cascade.norm=group, 1,000 parameters)"
    assert labels["U-Net"] == "(model.norm=batch, 1,000 parameters)"


def test_named_only(tmp_path: Path) -> None:
    assert parse_table_spec("3-8,verdict")[-1] == "verdict"
    from bench.reports.tables import table_names

    assert "verdict" not in table_names(load_results(tmp_path), [7, 8], ReportOptions())


def test_bench_report_tables_verdict(tmp_path: Path) -> None:
    study(tmp_path / "results")
    proc = bench("report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "report"), "--tables",
                 "verdict", "--no-figures", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (tmp_path / "report" / "verdict.md").read_text()
    assert "Real-data verdict" in text and "| FP voxels / lesion-free patient |" in text
    assert "500" in text and "bench evaluate unet --plane axial --surface" in text
