"""The report's fairness rows (issue 12): raw vs post-processed scores, training budgets, lesion baselines
with the liver prior, the patch-mode/patch-scale ablations and the paper's mIoU cells that are a
foreground IoU. Fixture run folders are written as in tests/test_reports.py (real config dataclasses)."""

from __future__ import annotations

import io
import math
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.paths import run_dir
from bench.reports import paper
from bench.reports.collect import load_results
from bench.reports.select import ReportOptions
from bench.reports.tables import TABLES, build_tables, table_names
from bench.reports.writers import format_cell, to_latex, to_markdown
from tests.test_reports import PROFILE, TEST_CASES, VAL_CASES, cell, full_study, make_config, write_run

PRIOR = {"profile.model.liver_prior": "channel"}
NATIVE = {"profile.cascade.patch_scale": "native", "profile.cascade.reiter_stop": "none"}
ITERATIONS = {"profile.cascade.reiter_stop": "none", "profile.cascade.max_reiterations": 7}


def _bench(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def _metric(res, run_id: str, split: str, metric: str, variant: str = "post") -> float:
    m = res.metrics
    rows = m[(m["run_id"] == run_id) & (m["split"] == split) & (m["metric"] == metric)
             & (m["aggregation"] == "mean") & (m["variant"] == variant)]
    assert len(rows) == 1
    return float(rows["value"].iloc[0])


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return full_study(tmp_path_factory.mktemp("results"))


# ---------------------------------------------------------------- the paper's mIoU that is a foreground IoU


def test_the_rule_marks_the_twelve_ours_cells_within_the_gap():
    expected = {
        (3, ("miou", 3)), (4, ("miou", False)), (4, ("miou", True)), (6, ("liver", "lits", "miou")),
        (6, ("lesion", "lits", "miou")), (7, ("axial", "ours", "val", "miou")), (7, ("axial", "ours", "test", "miou")),
        (7, ("coronal", "ours", "test", "miou")), (7, ("sagittal", "ours", "val", "miou")),
        (8, ("axial", "ours", "val", "miou")), (8, ("coronal", "ours", "val", "miou")),
        (8, ("sagittal", "ours", "val", "miou")),
    }
    assert set(paper.foreground_iou_cells()) == expected
    assert paper.foreground_iou(0.9511) == pytest.approx(0.9068, abs=1e-4)
    # the distances of marked and unmarked cells are separated: 0.0011 at most, 0.0068 at least
    marked = [abs(paper.lookup(n, k) - paper.foreground_iou(paper.lookup(n, paper._dice_key(k)))) for n, k in expected]
    others = [abs(v - paper.foreground_iou(t[paper._dice_key(k)]))
              for n, t in paper.PAPER_TABLES.items() for k, v in t.items() if "miou" in k and (n, k) not in expected]
    assert max(marked) < 0.0012 and min(others) > 0.0067 and paper.FG_IOU_TOLERANCE < min(others)
    # a tighter tolerance drops the two 0.0011 cells; a Dice or fused key is never marked
    assert not paper.miou_is_foreground_iou(7, ("coronal", "ours", "test", "miou"), tolerance=0.001)
    assert not paper.miou_is_foreground_iou(7, ("axial", "ours", "val", "dice"))
    assert not paper.miou_is_foreground_iou(7, ("fused", "ours", "val", "miou"))


def test_marked_cells_compare_our_foreground_iou(study):
    res = load_results(study)
    t7 = TABLES.get("7")(res, ReportOptions())
    ours = cell(t7, group="Axial Plane", row="mIoU", col_group="Ours", col="Val")
    runs = ours["runs"].split()
    fg = np.mean([_metric(res, r, "val", "iou") for r in runs])
    miou = np.mean([_metric(res, r, "val", "miou") for r in runs])
    assert len(runs) == 2 and bool(ours["paper_fg_iou"]) and ours["paper"] == 0.907
    assert ours["ours"] == pytest.approx(miou) and ours["ours_fg_iou"] == pytest.approx(fg) and fg < miou
    assert ours["diff"] == pytest.approx(fg - 0.907)  # like with like, not our C = 2 mIoU
    base = cell(t7, group="Axial Plane", row="mIoU", col_group="U-Net", col="Val")
    assert not base["paper_fg_iou"] and math.isnan(base["ours_fg_iou"])
    assert base["diff"] == pytest.approx(base["ours"] - base["paper"])
    unmarked = cell(t7, group="Coronal Plane", row="mIoU", col_group="Ours", col="Val")  # 0.0073 away: kept as mIoU
    assert not unmarked["paper_fg_iou"] and unmarked["diff"] == pytest.approx(unmarked["ours"] - 0.8976)
    text = format_cell(ours)
    assert text.startswith(f"{ours['ours']:.4f} ± ") and f"(fg IoU {fg:.4f}; paper 0.9070 = fg IoU, {fg - 0.907:+.4f})" in text
    assert any("paper X = fg IoU" in n and "0.002" in n for n in t7.notes)
    assert r"= fg IoU" in to_latex(t7) and "= fg IoU" in to_markdown(t7)
    # the other tables with a marked cell: 3 (level 3), 4 (both), 6 (LiTS rows: no run here, still marked)
    t3 = TABLES.get("3")(res, ReportOptions())
    assert cell(t3, row="mIoU", col="Level-3 8")["paper_fg_iou"] and not cell(t3, row="mIoU", col="Level-1 32")["paper_fg_iou"]
    t4 = TABLES.get("4")(res, ReportOptions())
    assert cell(t4, row="mIoU", col="Without")["paper_fg_iou"] and cell(t4, row="mIoU", col="With")["paper_fg_iou"]
    t6 = TABLES.get("6")(res, ReportOptions())
    lits = cell(t6, group="Liver", row="LiTS", col="mIoU")
    assert lits["paper_fg_iou"] and lits["status"] == "missing" and format_cell(lits) == "— (paper 0.9070 = fg IoU)"
    # read back from CSV ("True"/"False" strings) the cell renders the same
    back = pd.read_csv(io.StringIO(t7.frame.to_csv(index=False)))
    row = back[(back["group"] == "Axial Plane") & (back["row"] == "mIoU") & (back["col_group"] == "Ours")
               & (back["col"] == "Val")].iloc[0]
    assert format_cell(row) == text


# ---------------------------------------------------------------- raw vs post-processed


def test_postprocess_table_reads_both_variants_whatever_scores_the_report_shows(tmp_path):
    write_run(tmp_path, "ours", raw_gain=0.05)
    write_run(tmp_path, "unet", raw_gain=-0.01)  # post-processing can cost Dice too
    write_run(tmp_path, "segnet", raw_gain=None)  # evaluated before raw scores were stored
    res = load_results(tmp_path)
    tables = {t.name: t for t in build_tables(res, [7], ReportOptions(scores="raw"))}
    assert list(tables) == ["table7", "paired", "postprocess"]
    pp = tables["postprocess"]
    post = _metric(res, "phantom/liver/ours/axial", "val", "dice")
    where = dict(group="Liver axial", row="Ours", col_group="Val")
    assert cell(pp, **where, col="with")["ours"] == pytest.approx(post)
    assert cell(pp, **where, col="without")["ours"] == pytest.approx(post - 0.05)
    assert cell(pp, **where, col="with − without")["ours"] == pytest.approx(0.05)
    assert cell(pp, group="Liver axial", row="U-Net", col_group="Test", col="with − without")["ours"] == pytest.approx(-0.01)
    seg = cell(pp, group="Liver axial", row="SegNet", col_group="Val", col="without")
    assert seg["status"] == "missing" and cell(pp, group="Liver axial", row="SegNet", col_group="Val", col="with")["status"] == "ok"
    assert any("no metrics_raw.csv" in n and "phantom/liver/segnet/axial" in n for n in pp.notes)
    assert pp.provenance["scores"].startswith("both") and tables["table7"].provenance["scores"].startswith("without")
    # Table 7 shows the raw scores it was asked for
    assert cell(tables["table7"], group="Axial Plane", row="Dice", col_group="Ours", col="Val")["ours"] == \
        pytest.approx(post - 0.05)
    assert pp.provenance["postprocessing"] == {"liver": "largest, the same for every model (profile.postprocess)"}
    md = to_markdown(pp)
    assert "| Model | Val without | Val with | Val with − without |" in md and "+0.0500 (n=2)" in md


def test_postprocess_rule_differing_between_models_is_said(tmp_path):
    write_run(tmp_path, "ours")
    write_run(tmp_path, "unet", changes={"profile.postprocess.liver": "none"})
    t7 = TABLES.get("7")(load_results(tmp_path), ReportOptions())
    assert t7.provenance["postprocessing"] == {"U-Net": "none", "Ours": "largest"}
    assert any("post-processing differs" in n and "not under one rule" in n for n in t7.notes)


# ---------------------------------------------------------------- budgets


def test_budget_in_the_provenance_and_unmatched_budgets_in_a_note(tmp_path):
    write_run(tmp_path, "ours")
    write_run(tmp_path, "unet")  # by its own epochs: 400 steps
    ours_dir = run_dir(make_config("ours", tmp_path))
    matched = {"stages": {"model": {"epochs": 4, "steps": 1234, "seconds": 500.0}}, "steps": 1234, "epochs": 4,
               "seconds": 500.0, "matched_to": {"run": str(ours_dir), "steps": 1234, "epochs": 4}}
    write_run(tmp_path, "deeplabv3", changes={"profile.train.budget": "matched"}, budget=matched)
    write_run(tmp_path, "segnet", budget=None)  # recorded before budgets were
    res = load_results(tmp_path)
    runs = res.runs.set_index("model")
    assert runs.loc["ours", "budget_steps"] == 1234 and runs.loc["ours", "budget_stages"] == "localizer 400, tuner 400, reiter1 434"
    assert runs.loc["deeplabv3", "budget_rule"] == "matched" and runs.loc["deeplabv3", "budget_reference"] == "ours"
    assert runs.loc["deeplabv3", "budget_matched_to"] == "phantom/liver/ours/axial (1,234 steps)"
    assert math.isnan(runs.loc["segnet", "budget_steps"]) and runs.loc["segnet", "budget_stages"] == ""
    t7 = TABLES.get("7")(res, ReportOptions())
    budget = t7.provenance["budget"]
    assert budget["Ours"] == "axial: 1,234 steps (localizer 400, tuner 400, reiter1 434), 617 s"
    assert budget["U-Net"] == "axial: 400 steps, 300 s"
    assert budget["DeepLabV3"] == "axial: 1,234 steps (train.budget=matched to phantom/liver/ours/axial (1,234 steps)), 500 s"
    assert budget["SegNet"] == "axial: no budget recorded (config.json predates budget records)"
    (note,) = [n for n in t7.notes if n.startswith("training budgets differ")]
    assert "U-Net 400 vs 1,234 (axial; train.budget=epochs)" in note and "DeepLabV3" not in note and "SegNet" not in note
    paired = TABLES.get("paired")(res, ReportOptions())
    assert paired.provenance["budget"]["liver U-Net"] == "axial: 400 steps, 300 s"
    assert any(n.startswith("liver: training budgets differ") for n in paired.notes)
    assert "budget: " in to_markdown(t7)


def test_matched_budget_everywhere_is_said(tmp_path):
    write_run(tmp_path, "ours")
    same = {"stages": {"model": {"epochs": 4, "steps": 1236, "seconds": 500.0}}, "steps": 1236, "epochs": 4,
            "seconds": 500.0, "matched_to": {"run": "elsewhere/ours/axial", "steps": 1234}}
    write_run(tmp_path, "unet", changes={"profile.train.budget": "matched"}, budget=same)
    t7 = TABLES.get("7")(load_results(tmp_path), ReportOptions())
    assert "every compared column trained within 1% of ours' optimiser steps on its plane (1 plane(s))" in t7.notes
    assert "matched to elsewhere/ours/axial (1,234 steps)" in t7.provenance["budget"]["U-Net"]


def test_selection_between_an_epochs_and_a_matched_budget_run(tmp_path):
    matched = {"profile.train.budget": "matched"}
    # the study's run holds the default tag: the epochs one here ...
    a = tmp_path / "a"
    write_run(a, "ours")
    write_run(a, "unet", dice=dict.fromkeys(VAL_CASES + TEST_CASES, 0.7))
    write_run(a, "unet", tag="unet~budget=matched", changes=matched, dice=dict.fromkeys(VAL_CASES + TEST_CASES, 0.9))
    t7 = TABLES.get("7")(load_results(a), ReportOptions())
    c = cell(t7, group="Axial Plane", row="Dice", col_group="U-Net", col="Val")
    assert c["runs"] == "phantom/liver/unet/axial" and c["ours"] == pytest.approx(0.7)
    (note,) = [n for n in t7.notes if n.startswith("unet/liver/axial: 2 differently configured")]
    assert "default-tagged run" in note and "budget_rule (epochs vs matched)" in note and "never averaged" in note
    # ... the matched one here (a study run with --set train.budget=matched writes the default tag)
    b = tmp_path / "b"
    write_run(b, "ours")
    write_run(b, "unet", changes=matched, dice=dict.fromkeys(VAL_CASES + TEST_CASES, 0.9))
    write_run(b, "unet", tag="unet~epochs", dice=dict.fromkeys(VAL_CASES + TEST_CASES, 0.7))
    c = cell(TABLES.get("7")(load_results(b), ReportOptions()), group="Axial Plane", row="Dice", col_group="U-Net",
             col="Val")
    assert c["runs"] == "phantom/liver/unet/axial" and c["ours"] == pytest.approx(0.9)
    # neither has the default tag: the experiment with more seeds, and the note says why
    c_dir = tmp_path / "c"
    write_run(c_dir, "unet", tag="unet~m", changes=matched)
    write_run(c_dir, "unet", tag="unet~m~seed1", seed=1, changes=matched)
    write_run(c_dir, "unet", tag="unet~e")
    t7 = TABLES.get("7")(load_results(c_dir), ReportOptions())
    assert cell(t7, group="Axial Plane", row="Dice", col_group="U-Net", col="Val")["n_seeds"] == 2
    assert any("none holds the default-tagged run; it has the most seeds" in n for n in t7.notes)


# ---------------------------------------------------------------- lesion baselines with the liver prior


@pytest.fixture(scope="module")
def lesion(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lesion")
    for model in ("ours", "unet", "segnet"):
        write_run(root, model, task="lesion")
    write_run(root, "unet", task="lesion", tag="unet~liver_prior=channel", changes=PRIOR,
              dice=dict.fromkeys(VAL_CASES + TEST_CASES, 0.6))
    write_run(root, "deeplabv3", task="lesion", tag="deeplabv3~liver_prior=crop",
              changes={"profile.model.liver_prior": "crop"})
    write_run(root, "unet", task="liver")
    return root


def test_table8_has_liver_prior_columns_and_plain_cells_never_pick_them(lesion):
    res = load_results(lesion)
    assert set(res.runs["liver_prior"]) == {"none", "channel", "crop"}
    t8 = TABLES.get("8")(res, ReportOptions())
    groups = list(dict.fromkeys(t8.frame["col_group"]))
    assert groups == ["SegNet", "U-Net", "DeepLabV3", "Ours", "SegNet + liver prior", "U-Net + liver prior",
                      "DeepLabV3 + liver prior", "DeepLabV3 + liver crop"]
    plain = cell(t8, group="Axial Plane", row="Dice", col_group="U-Net", col="Val")
    prior = cell(t8, group="Axial Plane", row="Dice", col_group="U-Net + liver prior", col="Val")
    assert plain["runs"] == "phantom/lesion/unet/axial" and prior["runs"] == "phantom/lesion/unet~liver_prior=channel/axial"
    assert prior["ours"] == pytest.approx(0.6) and math.isnan(prior["paper"]) and not prior["paper_fg_iou"]
    assert cell(t8, group="Axial Plane", row="Dice", col_group="DeepLabV3", col="Val")["status"] == "missing"
    assert cell(t8, group="Axial Plane", row="Dice", col_group="DeepLabV3 + liver crop", col="Val")["status"] == "ok"
    missing = cell(t8, group="Axial Plane", row="Dice", col_group="SegNet + liver prior", col="Val")
    assert missing["status"] == "missing" and format_cell(missing) == "—"
    assert (f"bench train segnet --plane axial --task lesion --set model.liver_prior=channel "
            f"--tag segnet~liver_prior=channel --dataset phantom --profile {PROFILE}") in t8.notes
    assert ("bench evaluate unet --plane fused --task lesion --tag unet~liver_prior=channel --dataset phantom"
            in t8.notes)
    assert any("'+ liver prior' columns" in n and "no such rows" in n for n in t8.notes)
    assert "U-Net + liver prior" in t8.provenance["budget"]
    t7 = TABLES.get("7")(res, ReportOptions())
    assert not any("liver prior" in g for g in t7.frame["col_group"])  # the liver task has no prior
    paired = TABLES.get("paired")(res, ReportOptions())
    rows = set(paired.frame.loc[paired.frame["group"] == "Lesion axial", "row"])
    assert {"Ours − U-Net", "Ours − U-Net + liver prior", "Ours − DeepLabV3 + liver crop"} <= rows
    assert "Ours − SegNet + liver prior" not in rows  # no run: no comparison
    assert any("the difference is the architecture's" in n for n in paired.notes)
    pp = TABLES.get("postprocess")(res, ReportOptions())
    assert set(pp.frame.loc[pp.frame["group"] == "Lesion axial", "row"]) == {
        "SegNet", "U-Net", "DeepLabV3", "Ours", "U-Net + liver prior", "DeepLabV3 + liver crop"}


def test_a_prior_run_alone_leaves_the_plain_cell_missing(tmp_path):
    write_run(tmp_path, "unet", task="lesion", tag="unet~liver_prior=channel", changes=PRIOR)
    t8 = TABLES.get("8")(load_results(tmp_path), ReportOptions())
    assert cell(t8, group="Axial Plane", row="Dice", col_group="U-Net", col="Val")["status"] == "missing"
    assert cell(t8, group="Axial Plane", row="Dice", col_group="U-Net + liver prior", col="Val")["status"] == "ok"


def test_the_suggested_commands_parse_and_make_the_missing_run(lesion, tmp_path):
    """Every command a note suggests is accepted by the CLI's parser; the liver-prior one builds the very run
    that fills its cell; and the fused one, run through the console script, gets past option parsing."""
    import typer

    from bench.cli import app
    from bench.cli.common import build_run_config
    from bench.reports.select import select_runs

    res = load_results(lesion)
    commands = set()
    for t in build_tables(res, [3, 4, 5, 6, 7, 8, "patch-mode", "patch-scale"], ReportOptions()):
        for n in t.notes:
            for part in n.split(": "):
                if part.startswith("bench "):
                    commands.add(part)
    assert any(c.startswith("bench train") for c in commands) and any(c.startswith("bench evaluate") for c in commands)
    assert any(c.startswith("bench ablate patch-scale") for c in commands)
    group = typer.main.get_command(app)
    parsed = {}
    for line in sorted(commands):
        args = shlex.split(line)[1:]
        with group.make_context("bench", list(args)) as ctx:
            sub = group.get_command(ctx, args[0])
            parsed[line] = sub.make_context(args[0], list(args[1:])).params  # raises on an unknown option
    line = next(c for c in commands if "segnet" in c and "liver_prior" in c and c.startswith("bench train")
                and "--plane axial" in c)
    p = parsed[line]
    cfg = build_run_config(p["model"], p["plane"], p["task"], p["dataset"], p["root"], p["profile"], p["seed"], "cpu",
                           str(lesion), "cache", None, p["set_"], p["tag"])
    assert cfg.profile.model.liver_prior == "channel" and cfg.run_tag == "segnet~liver_prior=channel"
    write_run(lesion, "segnet", task="lesion", tag=cfg.run_tag, changes=PRIOR)  # that run, as training would leave it
    try:
        res = load_results(lesion)
        runs, _ = select_runs(res, dataset="phantom", profile=PROFILE, model="segnet", task="lesion", plane="axial",
                              fixed={"liver_prior": "channel"})
        assert list(runs["run_id"]) == ["phantom/lesion/segnet~liver_prior=channel/axial"]
    finally:
        import shutil

        shutil.rmtree(lesion / "phantom" / "lesion" / "segnet~liver_prior=channel")
    fused = next(c for c in commands if c.startswith("bench evaluate unet --plane fused --task lesion --tag unet~"))
    proc = _bench(*shlex.split(fused)[1:], "--results", tmp_path / "empty", "--cache", tmp_path / "cache",
                  "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 2 and "needs all three planes" in proc.stderr and "No such option" not in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- patch mode and patch scale


@pytest.fixture(scope="module")
def patches(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("patches")
    write_run(root, "ours")
    write_run(root, "ours", tag="ours~patch_mode=unshuffle", changes={"profile.cascade.patch_mode": "unshuffle"},
              dice=dict.fromkeys(VAL_CASES + TEST_CASES, 0.97))
    write_run(root, "ours", tag="ours~reiter_stop=none", changes=ITERATIONS, reiteration=7, patch_sizes=(16, 8))
    write_run(root, "ours", tag="ours~patch_scale=native,reiter_stop=none", changes=NATIVE, reiteration=3,
              patch_sizes=(16, 8), dice=dict.fromkeys(VAL_CASES + TEST_CASES, 0.93))
    return root


def test_patch_ablations_join_their_paper_table_when_run(patches, tmp_path):
    res = load_results(patches)
    assert table_names(res, [3, 4, 5, 7], ReportOptions()) == ["3", "patch-mode", "4", "5", "patch-scale", "7",
                                                               "paired", "postprocess"]
    assert table_names(res, [4, 7], ReportOptions(), with_paired=False) == ["4", "7"]
    write_run(tmp_path, "ours", reiteration=2)
    plain = load_results(tmp_path)
    assert table_names(plain, [3, 5], ReportOptions()) == ["3", "5"]  # no variant run: not added ...
    tables = build_tables(plain, ["patch-mode", "patch-scale"], ReportOptions())  # ... unless asked for
    mode, scale = tables
    assert cell(mode, row="Dice", col_group="tile", col="Val")["status"] == "ok"
    assert cell(mode, row="Dice", col_group="unshuffle", col="Val")["status"] == "missing"
    assert f"unshuffle: bench ablate patch-mode --dataset phantom --profile {PROFILE}" in mode.notes
    assert f"zoom: bench ablate patch-scale --dataset phantom --profile {PROFILE}" in scale.notes
    assert (scale.frame["status"] == "missing").all()


def test_patch_mode_table(patches):
    res = load_results(patches)
    t = TABLES.get("patch-mode")(res, ReportOptions())
    tile = cell(t, row="Dice", col_group="tile", col="Test")
    un = cell(t, row="Dice", col_group="unshuffle", col="Test")
    assert tile["runs"] == "phantom/liver/ours/axial" and un["runs"] == "phantom/liver/ours~patch_mode=unshuffle/axial"
    assert un["ours"] == pytest.approx(0.97) and math.isnan(un["paper"])
    assert len(t.frame) == 3 * 2 * 2 and t.provenance["default"] == f"cascade.patch_mode = tile (profile {PROFILE})"
    # the plain tables never pick the unshuffle run
    for name in ("3", "7"):
        assert "unshuffle" not in " ".join(TABLES.get(name)(res, ReportOptions()).frame["runs"])


def test_patch_scale_table_final_and_per_iteration(patches):
    res = load_results(patches)
    t = TABLES.get("patch-scale")(res, ReportOptions())
    zoom = cell(t, group="Final model", row="Dice", col_group="zoom", col="Val")
    native = cell(t, group="Final model", row="Dice", col_group="native", col="Val")
    assert zoom["runs"] == "phantom/liver/ours~reiter_stop=none/axial"
    assert native["runs"] == "phantom/liver/ours~patch_scale=native,reiter_stop=none/axial"
    assert native["ours"] == pytest.approx(0.93)
    it = "Per iteration (reiteration.csv)"
    assert cell(t, group=it, row="N = 3", col_group="native", col="Val")["ours"] == pytest.approx(0.86)
    assert cell(t, group=it, row="N = 3", col_group="native", col="Test")["ours"] == pytest.approx(0.87)
    assert cell(t, group=it, row="N = 5", col_group="native", col="Val")["status"] == "missing"  # ran N = 0..3
    assert cell(t, group=it, row="N = 7", col_group="zoom", col="Val")["ours"] == pytest.approx(0.94)
    assert cell(t, group=it, row="N = 0", col_group="zoom", col="patches")["ours"] == 0
    assert cell(t, group=it, row="N = 2", col_group="zoom", col="patches")["ours"] == 30
    sizes = "Per iteration and patch size: Algorithm 1's patches P and self-labels S"
    small = cell(t, group=sizes, row="N = 2, 8 px", col_group="native", col="self-label Dice")
    assert small["ours"] == pytest.approx(0.67) and small["metric"] == "selflabel_dice_8px" and small["split"] == "train"
    assert cell(t, group=sizes, row="N = 1, 16 px", col_group="zoom", col="patches")["ours"] == 10
    assert not (t.frame["row"] == "N = 0, 16 px").any()  # N = 0 trains on no patch
    md = to_markdown(t)
    assert "| Metric | zoom Val | zoom Test | zoom patches | zoom self-label Dice | native Val |" in md
    assert "| N = 1, 16 px |  |  | 10 | 0.7100 |" in md
    assert to_latex(t).count(r"\begin{tabular}") == 1
    # Table 5 reads the iterations run only (patch_scale at its default)
    t5 = TABLES.get("5")(res, ReportOptions())
    assert set(t5.frame["runs"]) == {"phantom/liver/ours~reiter_stop=none/axial"}


def test_folds_pool_budgets_and_the_new_reiteration_columns(tmp_path):
    for fold in (0, 1):
        budget = {"stages": {"tuner": {"epochs": 1, "steps": 100 * (fold + 1), "seconds": 10.0}}, "steps": 100 * (fold + 1),
                  "epochs": 1, "seconds": 10.0 * (fold + 1)}
        write_run(tmp_path, "ours", tag=f"ours~fold{fold}", changes={"fold": fold}, reiteration=1, patch_sizes=(16,),
                  budget=budget)
    res = load_results(tmp_path)
    (pooled,) = res.runs.itertuples()
    assert pooled.budget_steps == 150 and pooled.budget_seconds == 15 and "mean of 2 folds" in pooled.budget_stages
    rt = res.reiterations
    assert {"patches", "patches_16px", "selflabel_dice_16px"} <= set(rt.columns)
    assert rt.loc[(rt["iteration"] == 1) & (rt["split"] == "val"), "selflabel_dice_16px"].item() == pytest.approx(0.71)


# ---------------------------------------------------------------- the CLI


def test_cli_report_accepts_table_names_and_rejects_a_misspelt_one(patches, tmp_path):
    out = tmp_path / "rep"
    proc = _bench("report", "--results", patches, "--tables", "patch-scale,7", "--scores", "raw", "--no-figures",
                  "--format", "md,csv", "--out", out)
    assert proc.returncode == 0, proc.stderr
    names = {p.name for p in out.iterdir()}
    assert {"patch-scale.md", "table7.md", "paired.md", "postprocess.md", "index.md"} <= names
    assert "table3.md" not in names and "patch-mode.md" not in names
    index = (out / "index.md").read_text()
    assert "- scores: without post-processing" in index and "## Ablation: Algorithm 1's patches" in index
    assert pd.read_csv(out / "postprocess.csv")["status"].eq("ok").any()
    bad = _bench("report", "--results", patches, "--tables", "3,patch-mod", "--out", tmp_path / "bad")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "did you mean patch-mode" in bad.stderr
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
