"""The lesion-detection table beside Table 8: pooled from per-case lesion counts, per model and plane.

Run folders are written like real ones (config.json from the real dataclasses, per_case.csv through
the one writer with hand-made lesion counts), then collected and tabulated by the report code.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bench.metrics.lesions import LESION_COUNT_COLUMNS
from bench.metrics.results import write_evaluation
from bench.reports.collect import load_results
from bench.reports.select import ReportOptions
from bench.reports.tables import TABLES, parse_table_spec, table_names
from tests.test_reports import cell, write_run


def lesion_rows(split_cases: dict[str, dict[str, tuple[int, int, int, int, int]]]) -> pd.DataFrame:
    """per_case rows of the lesion class; counts per case: (ref lesions, detected, predicted, matched, ref > 20 mm)."""
    rows = []
    for split, cases in split_cases.items():
        for case, (n_ref, n_det, n_pred, n_match, big) in cases.items():
            row = {"split": split, "case": case, "class": "lesion", "tp": 5, "fp": 1, "fn": 1, "tn": 100}
            row.update({k: 0 for k in LESION_COUNT_COLUMNS})
            row.update(n_ref_lesions=n_ref, n_detected=n_det, n_pred_lesions=n_pred, n_pred_matched=n_match,
                       fp_lesions=n_pred - n_match, ref_lt10=n_ref - big, det_lt10=min(n_det, n_ref - big),
                       ref_gt20=big, det_gt20=n_det - min(n_det, n_ref - big))
            rows.append(row)
    return pd.DataFrame(rows)


def lesion_run(results: Path, model: str, seed: int, counts: dict) -> None:
    folder = write_run(results, model, task="lesion", seed=seed, tag=f"{model}~seed{seed}" if seed else "",
                       raw_gain=None)
    write_evaluation(folder, lesion_rows(counts))


def test_pooled_recall_over_cases_then_mean_over_seeds(tmp_path: Path) -> None:
    # seed 0: 3 of 4 lesions found (p01: 1/1, p02: no lesion, 2 false positives); seed 1: 1 of 4
    lesion_run(tmp_path, "ours", 0, {"val": {"p01": (1, 1, 1, 1, 0), "p02": (0, 0, 2, 0, 0)},
                                      "test": {"p03": (3, 2, 2, 2, 1)}})
    lesion_run(tmp_path, "ours", 1, {"val": {"p01": (1, 0, 0, 0, 0), "p02": (0, 0, 0, 0, 0)},
                                      "test": {"p03": (3, 1, 4, 1, 1)}})
    write_run(tmp_path, "unet", task="lesion")  # scored before lesion detection: no lesion columns
    res = load_results(tmp_path)
    table = TABLES.get("lesion-detection")(res, ReportOptions())
    recall = cell(table, group="Axial Plane", row="Recall", col_group="Ours", split="test")
    assert recall["ours"] == (2 / 3 + 1 / 3) / 2 and recall["n_seeds"] == 2  # pooled per seed, then mean
    val = cell(table, group="Axial Plane", row="Recall", col_group="Ours", split="val")
    assert val["ours"] == 0.5 and val["n_cases"] == 2 and val["n_excluded"] == 1  # p02 has no lesion
    fp = cell(table, group="Axial Plane", row="FP lesions / case", col_group="Ours", split="val")
    assert fp["ours"] == (2 / 2 + 0 / 2) / 2  # p02's false positives count although it has no lesion
    big = cell(table, group="Axial Plane", row="Recall > 20 mm", col_group="Ours", split="test")
    assert big["ours"] == 0.0  # lesion_rows counts the small lesions as found first: the big one never is
    small = cell(table, group="Axial Plane", row="Recall < 10 mm", col_group="Ours", split="test")
    assert small["ours"] == (2 / 2 + 1 / 2) / 2
    n_big = cell(table, group="Axial Plane", row="Lesions > 20 mm", col_group="Ours", split="test")
    assert n_big["ours"] == 1 and n_big["status"] == "ok"
    unet = cell(table, group="Axial Plane", row="Recall", col_group="U-Net", split="test")
    assert unet["status"] == "missing" and any("lesion-detection columns" in n for n in table.notes)
    segnet = cell(table, group="Axial Plane", row="Recall", col_group="SegNet", split="test")
    assert segnet["status"] == "missing" and any("bench train segnet" in n for n in table.notes)


def test_built_with_table_8_and_named_on_its_own(tmp_path: Path) -> None:
    res = load_results(tmp_path)
    assert parse_table_spec("lesion-detection,8") == [8, "lesion-detection"]
    assert table_names(res, [8], ReportOptions())[:2] == ["8", "lesion-detection"]
    assert "lesion-detection" not in table_names(res, [7], ReportOptions())
    assert "lesion-detection" not in table_names(res, [8], ReportOptions(), with_paired=False)


def test_recall_nan_when_no_patient_has_a_lesion(tmp_path: Path) -> None:
    lesion_run(tmp_path, "ours", 0, {"val": {"p01": (0, 0, 1, 0, 0)}, "test": {"p03": (0, 0, 0, 0, 0)}})
    table = TABLES.get("lesion-detection")(load_results(tmp_path), ReportOptions())
    val = cell(table, group="Axial Plane", row="Recall", col_group="Ours", split="val")
    assert val["status"] == "nan" and val["n_excluded"] == 1
    fp = cell(table, group="Axial Plane", row="FP lesions / case", col_group="Ours", split="val")
    assert fp["ours"] == 1.0 and not math.isnan(fp["ours"])


def test_a_lesion_run_is_evaluated_with_lesion_detection(tmp_path: Path, tiny_phantom: Path) -> None:
    """`run` (train + evaluate) on the tiny phantom: per_case.csv carries the lesion counts, the reference
    lesions are the reference's own components, and the declared rule (evaluate.lesion_match) is in the policy."""
    import json

    from bench.datasets import get_dataset
    from bench.engine.runner import run
    from bench.metrics.lesions import lesion_detection
    from tests.conftest import tiny_config

    cfg = tiny_config(tmp_path, tiny_phantom, "unet", task="lesion", **{
        "profile.train.epochs": 1, "profile.train.steps_per_epoch": 2, "profile.evaluate.lesion_match": "iou50"})
    folder = run(cfg, progress=False)
    pc = pd.read_csv(folder / "per_case.csv", dtype={"case": str})
    adapter = get_dataset("phantom", root=str(tiny_phantom))
    for _, row in pc.iterrows():
        case = adapter.load(row["case"])
        ref = case.mask("lesion")
        assert row["n_ref_lesions"] == lesion_detection(ref, ref, case.spacing).n_ref_lesions
        assert 0 <= row["n_detected"] <= row["n_ref_lesions"]
        assert row["fp_lesions"] == row["n_pred_lesions"] - row["n_pred_matched"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["policy"]["lesion_detection"]["match"] == "iou50"
    assert "lesion_detection" in summary["splits"]["test"]["classes"]["lesion"]
