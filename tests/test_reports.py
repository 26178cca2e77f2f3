"""Reports: collection, Tables 3-8 (+ paired), writers, figures, golden check and the `bench report` CLI.

Fixture run folders are written in the RESULTS_FORMAT with configs built from the real
dataclasses (`RunConfig`, `override`, `get_profile`, `to_dict`), so a change in the saved
config shape breaks these tests rather than the reports in the field.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.config import RunConfig, get_profile, override, to_dict
from bench.errors import ConfigError, DataError
from bench.paths import run_dir
from bench.reports import paper
from bench.reports.collect import collect_per_case, collect_reiterations, collect_results, load_results
from bench.reports.select import ReportOptions, resolve_scope
from bench.reports.tables import TABLES, bootstrap_ci, build_tables, parse_table_spec
from bench.reports.writers import format_cell, parse_formats, to_latex, to_markdown, write_table

PROFILE = "demo"
VAL_CASES = ["p01", "p02"]
TEST_CASES = ["p03", "p04", "p05"]
QUALITY = {"segnet": 0.70, "unet": 0.78, "deeplabv3": 0.82, "ours": 0.90}


def make_config(model: str, results: Path, *, plane: str = "axial", task: str = "liver", dataset: str = "phantom",
                seed: int = 0, tag: str = "", changes: dict | None = None) -> RunConfig:
    cfg = RunConfig(model=model, plane=plane, task=task, dataset=dataset, seed=seed, tag=tag,
                    results=str(results), profile=get_profile(PROFILE))
    return override(cfg, changes or {})


def default_budget(model: str) -> dict:
    """What a run records in config.json ``budget`` (`bench.engine.recipe.budget`): ours three stages, a
    baseline one."""
    steps = {"localizer": 400, "tuner": 400, "reiter1": 434} if model == "ours" else {"model": 400}
    rate = 0.5 if model == "ours" else 0.75
    stages = {k: {"epochs": 2, "steps": v, "seconds": v * rate} for k, v in steps.items()}
    return {"stages": stages, "steps": sum(steps.values()), "epochs": 2 * len(steps),
            "seconds": sum(s["seconds"] for s in stages.values())}


def _write_scores(folder: Path, pc: pd.DataFrame, task: str, suffix: str = "") -> None:
    """per_case<suffix>.csv and metrics<suffix>.csv (means of per_case; global = mean + 0.001)."""
    pc.to_csv(folder / f"per_case{suffix}.csv", index=False)
    mrows = []
    for split, part in pc.groupby("split"):
        n_excl = int(part["dice"].isna().sum())
        for agg in ("mean", "global"):
            for metric in ("accuracy", "dice", "iou", "miou"):
                value = part[metric].mean() if part[metric].notna().any() else math.nan
                if agg == "global" and not math.isnan(value):
                    value = min(1.0, value + 0.001)
                mrows.append(dict(split=split, **{"class": task}, aggregation=agg, metric=metric, value=value,
                                  n_cases=len(part), n_excluded=n_excl))
    pd.DataFrame(mrows).to_csv(folder / f"metrics{suffix}.csv", index=False)


def _case_row(split: str, case: str, task: str, d: float) -> dict:
    return dict(split=split, case=case, **{"class": task}, tp=10, fp=1, fn=1, tn=100,
                accuracy=0.95 + 0.04 * (d if not math.isnan(d) else 0), dice=d,
                iou=d / (2 - d) if not math.isnan(d) else math.nan,
                miou=(1 + d / (2 - d)) / 2 if not math.isnan(d) else math.nan)


def write_run(results: Path, model: str, *, plane: str = "axial", task: str = "liver", dataset: str = "phantom",
              seed: int = 0, tag: str = "", changes: dict | None = None, dice: dict | None = None,
              nan_split: str | None = None, reiteration: int | None = None, examples: bool = False,
              status: str = "complete", raw_gain: float | None = 0.02, budget: dict | None | str = "default",
              patch_sizes: tuple[int, ...] = ()) -> Path:
    """One run folder: config.json, per_case.csv, metrics.csv (means of per_case), optional extras.

    ``dice`` maps case id -> Dice (defaults to a model-quality level plus a seeded jitter);
    ``nan_split`` makes every case of that split empty-vs-empty (Dice NaN, excluded); ``raw_gain``:
    the raw scores (per_case_raw.csv, metrics_raw.csv) are each case's Dice minus it (None: no raw
    files, as before raw scores were stored); ``budget``: config.json ``budget`` ("default":
    `default_budget`, None: none recorded); ``patch_sizes``: reiteration.csv also records the patch
    set and self-label Dice per size.
    """
    cfg = make_config(model, results, plane=plane, task=task, dataset=dataset, seed=seed, tag=tag, changes=changes)
    folder = run_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    saved = {"config": to_dict(cfg), "git": "unknown", "versions": {"python": "3"}, "device": "cpu",
             "wall_time_s": {"train": 1.0, "evaluate": 0.5}, "parameters": 1000, "inference_s_per_slice": 0.01,
             "status": status}
    if budget == "default":
        budget = default_budget(model) if plane != "fused" else None
    if budget is not None:
        saved["budget"] = budget
    (folder / "config.json").write_text(json.dumps(saved))
    rng = np.random.default_rng(zlib.crc32(f"{model}/{plane}/{task}/{seed}/{tag}".encode()))
    base = QUALITY.get(model, 0.8) + 0.01 * cfg.profile.cascade.patch_levels - (0.0 if cfg.profile.cascade.multilevel_loss else 0.05)
    rows, raw = [], []
    for split, cases in (("val", VAL_CASES), ("test", TEST_CASES)):
        for case in cases:
            d = (dice or {}).get(case, float(np.clip(base + rng.normal(0, 0.02), 0, 1)))
            if split == nan_split:
                d = math.nan
            rows.append(_case_row(split, case, task, d))
            if raw_gain is not None:
                raw.append(_case_row(split, case, task, d - raw_gain if not math.isnan(d) else d))
    _write_scores(folder, pd.DataFrame(rows), task)
    if raw_gain is not None:
        _write_scores(folder, pd.DataFrame(raw), task, "_raw")
    if reiteration is not None:
        rr = []
        for i in range(reiteration + 1):
            for s in ("val", "test"):
                row = dict(iteration=i, split=s, accuracy=0.9 + 0.01 * i, dice=0.8 + 0.02 * i + (0.01 if s == "test" else 0),
                           miou=0.7 + 0.02 * i, n_train_samples=10 * (i + 1))
                if patch_sizes:
                    row["patches"] = 0 if i == 0 else sum(10 * (k + 1) for k in range(len(patch_sizes)))
                    for k, size in enumerate(patch_sizes):
                        row[f"patches_{size}px"] = math.nan if i == 0 else 10 * (k + 1)
                        row[f"selflabel_dice_{size}px"] = math.nan if i == 0 else round(0.7 + 0.01 * i - 0.05 * k, 4)
                rr.append(row)
        pd.DataFrame(rr).to_csv(folder / "reiteration.csv", index=False)
    if examples:
        shape = (2, 16, 16)
        img = rng.normal(size=shape).astype(np.float32)
        gt = np.zeros(shape, np.uint8)
        gt[:, 4:12, 4:12] = 1
        np.savez(folder / "examples.npz", image=img, ground_truth=gt, roi=np.roll(gt, 1, axis=1),
                 prediction=np.roll(gt, 1, axis=2), case=np.array(["p03", "p04"]))
    return folder


def full_study(results: Path) -> Path:
    """Every model on every plane + fused for both tasks, the three ablations, one extra seed of ours axial."""
    for task in ("liver", "lesion"):
        for model in ("segnet", "unet", "deeplabv3", "ours"):
            for plane in ("axial", "coronal", "sagittal", "fused"):
                write_run(results, model, plane=plane, task=task,
                          reiteration=2 if (model == "ours" and plane == "axial") else None,
                          examples=(model == "ours" and plane == "axial"))
    write_run(results, "ours", seed=1, tag="ours~seed1")
    for level in (1, 2):
        write_run(results, "ours", tag=f"ours~patch_levels={level}", changes={"profile.cascade.patch_levels": level})
    write_run(results, "ours", tag="ours~multilevel_loss=false", changes={"profile.cascade.multilevel_loss": False})
    write_run(results, "ours", tag="ours~iterations", reiteration=7,
              changes={"profile.cascade.reiter_stop": "none", "profile.cascade.max_reiterations": 7})
    return results


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return full_study(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def study_res(study):
    """The full study collected once (table builders are pure: they never modify it)."""
    return load_results(study)


def cell(result, **where) -> pd.Series:
    f = result.frame
    mask = np.ones(len(f), bool)
    for k, v in where.items():
        mask &= (f[k] == v).to_numpy()
    rows = f[mask]
    assert len(rows) == 1, f"{where}: {len(rows)} rows"
    return rows.iloc[0]


# ---------------------------------------------------------------- paper numbers


def test_paper_numbers_transcribed_and_cross_consistent():
    assert paper.TABLE3[("accuracy", 2)] == 0.952 and paper.TABLE3[("miou", 3)] == 0.907
    assert paper.TABLE5[(5, "miou", "val")] == 0.97  # printed as 0,9700 (inconsistent with Table 3; kept)
    assert paper.TABLE8[("sagittal", "segnet", "test", "dice")] == 0.4539
    assert len(paper.TABLE7) == len(paper.TABLE8) == 3 * 4 * 2 * 3
    # Table 3 level 3, Table 4 "With" and Table 6 LiTS are the same model as Table 7/8 ours axial Val
    for metric in paper.METRICS:
        t7 = paper.TABLE7[("axial", "ours", "val", metric)]
        assert paper.TABLE3[(metric, 3)] == pytest.approx(t7)
        assert paper.TABLE4[(metric, True)] == pytest.approx(t7)
        assert paper.TABLE6[("liver", "lits", metric)] == pytest.approx(t7)
        assert paper.TABLE6[("lesion", "lits", metric)] == paper.TABLE8[("axial", "ours", "val", metric)]
    assert math.isnan(paper.lookup(7, ("fused", "ours", "val", "dice")))


# ---------------------------------------------------------------- --tables / --format parsing


@pytest.mark.parametrize("spec,expected", [("3-8", [3, 4, 5, 6, 7, 8]), ("3,5,7", [3, 5, 7]), ("7", [7]),
                                           (" 4 - 5 , 8", [4, 5, 8]), ("7,7,3", [3, 7]),
                                           ("patch-scale,3,Patch-Mode", [3, "patch-mode", "patch-scale"]),
                                           ("postprocess", ["postprocess"]), ("paired,7", [7, "paired"])])
def test_parse_table_spec(spec, expected):
    assert parse_table_spec(spec) == expected


@pytest.mark.parametrize("spec", ["9", "x", "", "8-3", "2-4", "3,,4", "3-", "patch_mode", "patch-mod", "3-patch"])
def test_parse_table_spec_rejects(spec):
    with pytest.raises(ConfigError) as err:
        parse_table_spec(spec)
    assert "\n" not in str(err.value)


def test_parse_table_spec_names_the_close_table():
    with pytest.raises(ConfigError, match="did you mean patch-mode"):
        parse_table_spec("3,patch-mod")


def test_parse_formats():
    assert parse_formats("md,csv,tex") == ["md", "csv", "tex"]
    with pytest.raises(ConfigError):
        parse_formats("md,pdf")


# ---------------------------------------------------------------- collection


def test_collect_reads_config_not_folder_names(tmp_path):
    folder = write_run(tmp_path, "unet", plane="coronal", task="lesion")
    # a misleading folder name must not matter: meaning comes from config.json
    moved = tmp_path / "phantom" / "liver" / "ours" / "axial"
    moved.parent.mkdir(parents=True)
    folder.rename(moved)
    df = collect_results(tmp_path)
    assert set(df["model"]) == {"unet"} and set(df["plane"]) == {"coronal"} and set(df["task"]) == {"lesion"}
    expected = {"dataset", "task", "model", "tag", "plane", "seed", "profile", "patch_levels", "multilevel_loss",
                "reiter_stop", "max_reiterations", "patch_mode", "patch_scale", "patch_share", "reiter_lr_scale",
                "liver_prior", "postprocess", "budget_rule", "run_dir", "split", "class", "aggregation", "metric",
                "value", "n_cases", "n_excluded", "variant"}
    assert expected <= set(df.columns)
    assert len(df) == 2 * 2 * 4 * 2  # splits x aggregations x metrics x (post, raw)
    assert set(df["postprocess"]) == {"min_size>=20"} and set(df["liver_prior"]) == {"none"}


def test_collect_skips_partial_folders_with_notes(tmp_path):
    write_run(tmp_path, "unet")
    write_run(tmp_path, "segnet", status="running")
    broken = write_run(tmp_path, "deeplabv3")
    (broken / "metrics.csv").write_text("not,a\nmetrics")
    (tmp_path / "phantom" / "liver" / "stray").mkdir()  # no config.json: not a run
    bad = tmp_path / "phantom" / "liver" / "bad" / "axial"
    bad.mkdir(parents=True)
    (bad / "config.json").write_text("{not json")
    res = load_results(tmp_path)
    assert set(res.runs["model"]) == {"unet", "deeplabv3"}
    assert set(res.variant("post").metrics["model"]) == {"unet"}  # deeplabv3's metrics_raw.csv is intact
    text = " ".join(res.notes)
    assert "status 'running'" in text and "lacks column" in text and "config.json unreadable" in text
    assert not collect_per_case(tmp_path).empty and collect_reiterations(tmp_path).empty


def test_collect_missing_root_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_results(tmp_path / "nope")


# ---------------------------------------------------------------- tables


def test_table7_layout_paper_columns_and_seeds(study_res):
    res = study_res
    t7 = TABLES.get("7")(res, ReportOptions())
    f = t7.frame
    assert len(f) == 4 * 3 * 4 * 2  # plane rows x metrics x models x splits
    c = cell(t7, group="Axial Plane", row="Dice", col_group="Ours", col="Val")
    assert c["n_seeds"] == 2 and c["status"] == "ok" and not math.isnan(c["sd"])
    seeds = res.metrics[(res.metrics["model"] == "ours") & (res.metrics["plane"] == "axial")
                        & (res.metrics["task"] == "liver") & (res.metrics["patch_levels"] == 3)
                        & (res.metrics["multilevel_loss"]) & (res.metrics["reiter_stop"] == "plateau")
                        & (res.metrics["split"] == "val") & (res.metrics["metric"] == "dice")
                        & (res.metrics["aggregation"] == "mean") & (res.metrics["variant"] == "post")]["value"]
    assert len(seeds) == 2 and c["ours"] == pytest.approx(seeds.mean())
    assert c["paper"] == 0.9511 and c["diff"] == pytest.approx(c["ours"] - 0.9511)
    fused = cell(t7, group="Fused (soft voting)", row="Dice", col_group="U-Net", col="Test")
    assert fused["status"] == "ok" and math.isnan(fused["paper"]) and math.isnan(fused["diff"])
    assert t7.provenance["seeds"] == [0, 1] and t7.provenance["split_sizes"] == {"val": 2, "test": 3}
    assert t7.provenance["dataset"] == "phantom" and t7.provenance["profile"] == PROFILE
    assert "ours~patch_levels=1/axial" not in " ".join(t7.provenance["runs"])  # ablation variants are not Table 7
    md = to_markdown(t7)
    assert "| Metric | SegNet Val | SegNet Test |" in md and "**Axial Plane**" in md and "(paper 0.9511, " in md
    assert "±" in md and "reference and prediction both empty" in md and "evaluate.empty_reference=nan" in md


def test_global_aggregation_differs(study_res):
    res = study_res
    mean = cell(TABLES.get("7")(res, ReportOptions()), group="Axial Plane", row="Dice", col_group="U-Net", col="Val")
    glob = cell(TABLES.get("7")(res, ReportOptions(aggregation="global")), group="Axial Plane", row="Dice",
                col_group="U-Net", col="Val")
    assert glob["ours"] == pytest.approx(mean["ours"] + 0.001)
    with pytest.raises(ConfigError):
        ReportOptions(aggregation="median")


def test_ablation_tables_select_by_config(study_res):
    res = study_res
    t3 = TABLES.get("3")(res, ReportOptions())
    assert list(t3.frame["col"].unique()) == ["Level-1 32", "Level-2 16", "Level-3 8"]
    d1 = cell(t3, row="Dice", col="Level-1 32")
    d3 = cell(t3, row="Dice", col="Level-3 8")
    assert d1["runs"] == "phantom/liver/ours~patch_levels=1/axial" and d3["n_seeds"] == 2
    assert d1["paper"] == 0.9301 and cell(t3, row="Average Accuracy", col="Level-2 16")["paper"] == 0.952
    t4 = TABLES.get("4")(res, ReportOptions())
    assert cell(t4, row="Dice", col="Without")["runs"] == "phantom/liver/ours~multilevel_loss=false/axial"
    assert cell(t4, row="mIoU", col="With")["paper"] == 0.907
    t5 = TABLES.get("5")(res, ReportOptions())
    assert len(t5.frame) == 8 * 3 * 2
    n7 = cell(t5, row="N = 7", col_group="Dice", col="Test")
    assert n7["ours"] == pytest.approx(0.8 + 0.14 + 0.01) and n7["paper"] == 0.9202
    assert t5.frame["runs"].str.contains("ours~iterations").all()


def test_table5_falls_back_to_default_run(tmp_path):
    write_run(tmp_path, "ours", reiteration=2)
    t5 = TABLES.get("5")(load_results(tmp_path), ReportOptions())
    assert cell(t5, row="N = 2", col_group="mIoU", col="Val")["status"] == "ok"
    assert cell(t5, row="N = 5", col_group="mIoU", col="Val")["status"] == "missing"
    assert any("bench ablate iterations" in n for n in t5.notes)
    assert any("stopped after N = 2" in n for n in t5.notes)


def test_table6_lists_paper_datasets_as_missing(study_res):
    t6 = TABLES.get("6")(study_res, ReportOptions())
    assert list(t6.frame["row"].unique()) == ["LiTS", "3D IRCADB", "phantom"]
    assert cell(t6, group="Liver", row="phantom", col="Dice")["status"] == "ok"
    irc = cell(t6, group="Lesion", row="3D IRCADB", col="Dice")
    assert irc["status"] == "missing" and irc["paper"] == 0.9417
    assert "bench train ours --plane axial --task lesion --dataset ircadb --root PATH" in " ".join(t6.notes)
    assert "— (paper 0.9417)" in to_markdown(t6)


def test_missing_runs_and_nan_cells_do_not_crash(tmp_path):
    write_run(tmp_path, "ours", nan_split="test")
    write_run(tmp_path, "unet", plane="coronal")
    res = load_results(tmp_path)
    tables = build_tables(res, [3, 4, 5, 6, 7, 8], ReportOptions())
    assert [t.name for t in tables] == ["table3", "table4", "table5", "table6", "table7", "table8",
                                        "lesion-detection", "paired", "postprocess"]
    t7 = tables[4]
    nan = cell(t7, group="Axial Plane", row="Dice", col_group="Ours", col="Test")
    assert nan["status"] == "nan" and nan["n_excluded"] == 3
    assert format_cell(nan) == "NaN (3 excluded) (paper 0.9465)"
    miss = cell(t7, group="Sagittal Plane", row="Dice", col_group="SegNet", col="Val")
    assert miss["status"] == "missing" and format_cell(miss) == "— (paper 0.7690)"
    assert f"bench train segnet --plane sagittal --dataset phantom --profile {PROFILE}" in t7.notes
    assert "bench evaluate ours --plane fused --dataset phantom" in t7.notes  # evaluate takes no --profile
    t8 = tables[5]
    assert (t8.frame["status"] == "missing").all()
    assert f"bench train segnet --plane coronal --task lesion --dataset phantom --profile {PROFILE}" in t8.notes
    t3 = tables[0]
    assert any(f"bench ablate patch-level --dataset phantom --profile {PROFILE}" in n for n in t3.notes)
    for t in tables:  # every table renders in every format
        assert to_markdown(t) and to_latex(t).count(r"\begin{tabular}") <= 1


def test_seed_with_all_cases_excluded_is_not_counted(tmp_path):
    write_run(tmp_path, "ours", nan_split="test")
    write_run(tmp_path, "ours", seed=1, tag="ours~seed1", dice=dict.fromkeys(TEST_CASES + VAL_CASES, 0.8))
    t7 = TABLES.get("7")(load_results(tmp_path), ReportOptions())
    c = cell(t7, group="Axial Plane", row="Dice", col_group="Ours", col="Test")
    assert c["status"] == "ok" and c["ours"] == pytest.approx(0.8) and c["n_seeds"] == 1
    assert cell(t7, group="Axial Plane", row="Dice", col_group="Ours", col="Val")["n_seeds"] == 2
    tex = format_cell(c, tex=True)
    assert tex == r"0.8000 {\scriptsize (paper 0.9465, -0.1465)}"

def test_empty_results_build_every_table(tmp_path):
    res = load_results(tmp_path)
    for t in build_tables(res, parse_table_spec("3-8"), ReportOptions()):
        assert set(t.frame["status"]) <= {"missing"}
        assert to_markdown(t)


def test_scope_prefers_most_runs_and_honours_filters(tmp_path):
    write_run(tmp_path, "unet")
    write_run(tmp_path, "ours")
    write_run(tmp_path, "unet", dataset="lits")
    res = load_results(tmp_path)
    scope = resolve_scope(res, ReportOptions())
    assert (scope.dataset, scope.profile) == ("phantom", PROFILE) and "lits" in scope.reason
    assert resolve_scope(res, ReportOptions(dataset="lits")).dataset == "lits"
    t7 = TABLES.get("7")(res, ReportOptions(dataset="lits"))
    assert cell(t7, group="Axial Plane", row="Dice", col_group="U-Net", col="Val")["status"] == "ok"
    assert cell(t7, group="Axial Plane", row="Dice", col_group="Ours", col="Val")["status"] == "missing"
    assert any("--dataset lits --root PATH" in n for n in t7.notes)


# ---------------------------------------------------------------- paired comparison


def test_bootstrap_ci_seeded_and_covers_mean():
    d = np.array([0.1, 0.2, 0.05, 0.15, 0.12])
    lo, hi = bootstrap_ci(d)
    assert lo < d.mean() < hi and (lo, hi) == bootstrap_ci(d)
    assert bootstrap_ci(np.array([0.3, 0.3])) == (pytest.approx(0.3), pytest.approx(0.3))
    assert all(math.isnan(x) for x in bootstrap_ci(np.array([])))


def test_paired_matches_cases_and_averages_seeds(tmp_path):
    write_run(tmp_path, "ours", dice={"p01": 0.9, "p02": 0.8, "p03": 0.9, "p04": 0.7, "p05": 0.6})
    write_run(tmp_path, "ours", seed=1, tag="ours~seed1",
              dice={"p01": 0.7, "p02": 0.8, "p03": 0.9, "p04": 0.9, "p05": math.nan})
    write_run(tmp_path, "unet", dice={"p01": 0.5, "p02": 0.5, "p03": 0.5, "p04": 0.5, "p05": math.nan})
    t = TABLES.get("paired")(load_results(tmp_path), ReportOptions())
    val = cell(t, group="Liver axial", row="Ours − U-Net", col="Val")
    assert val["ours"] == pytest.approx(0.3) and val["n_cases"] == 2 and val["n_seeds"] == 2
    test = cell(t, group="Liver axial", row="Ours − U-Net", col="Test")
    # p05: ours mean over seeds = 0.6 (NaN seed ignored), unet NaN -> excluded
    assert test["ours"] == pytest.approx(np.mean([0.4, 0.3])) and test["n_excluded"] == 1
    assert test["ci_low"] <= test["ours"] <= test["ci_high"]
    assert "[+" in format_cell(test) and "(n=2)" in format_cell(test)
    assert len(t.frame) == 2  # only comparisons with per-case data on both sides


# ---------------------------------------------------------------- writers


def test_write_all_formats(study_res, tmp_path):
    t = TABLES.get("7")(study_res, ReportOptions())
    paths = write_table(t, tmp_path, ["md", "csv", "tex"])
    assert {p.name for p in paths} == {"table7.md", "table7.csv", "table7.tex", "table7.provenance.json"}
    csv = pd.read_csv(tmp_path / "table7.csv")
    assert {"ours", "paper", "diff", "sd", "n_seeds", "status"} <= set(csv.columns) and len(csv) == len(t.frame)
    tex = (tmp_path / "table7.tex").read_text()
    assert r"\multicolumn{2}{c}{SegNet}" in tex and r"$\pm$" in tex and "% policy:" in tex
    assert json.loads((tmp_path / "table7.provenance.json").read_text())["provenance"]["seeds"] == [0, 1]


# ---------------------------------------------------------------- figures and the whole report


def test_figures_written_and_non_empty(study_res, tmp_path):
    from bench.reports.figures import write_figures

    paths, notes = write_figures(study_res, ReportOptions(), tmp_path)
    names = {p.name for p in paths}
    assert names == {"fig16_reiterations.png", "fig17_liver.png", "fig18_lesion.png", "dice_boxplot_liver.png",
                     "dice_boxplot_lesion.png"} and notes == []
    for p in paths:
        assert p.stat().st_size > 1000 and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_skip_with_notes_when_inputs_missing(tmp_path):
    from bench.reports.figures import write_figures

    results = tmp_path / "results"
    folder = write_run(results, "ours", examples=True)
    np.savez(folder / "examples.npz", image=np.zeros((1, 4, 4)))  # truncated: no masks
    paths, notes = write_figures(load_results(results), ReportOptions(), tmp_path / "figs")
    assert {p.name for p in paths} == {"dice_boxplot_liver.png"}
    text = " ".join(notes)
    assert "fig16 skipped" in text and "lacks ground_truth" in text and "fig18 skipped" in text
    assert "dice_boxplot_lesion skipped" in text


def test_build_report_writes_tables_figures_index(study, tmp_path):
    from bench.reports.report import build_report

    out = build_report(study, out=tmp_path / "rep", tables="3,7")
    files = {p.name for p in out.iterdir()}
    assert {"table3.md", "table3.csv", "table3.tex", "table7.md", "paired.md", "index.md", "figures"} <= files
    assert "table4.md" not in files
    index = (out / "index.md").read_text()
    assert "## Table 3." in index and "## Table 7." in index and "![Fig. 16" in index
    assert "(figures/fig17_liver.png)" in index and "Paired per-case" in index


# ---------------------------------------------------------------- golden tables


def _golden(tmp_path, res) -> Path:
    from bench.golden.manifest import write_golden
    from bench.golden.study import DEFAULT_COMMAND
    from bench.golden.train import DEFAULT_TOLERANCES

    golden = tmp_path / "golden"
    tables = build_tables(res, [3, 4, 5, 6, 7, 8], ReportOptions(), with_paired=False)
    write_golden(golden, tables, command=DEFAULT_COMMAND,
                 report_options={"aggregation": "mean", "dataset": None, "profile": None}, source="test",
                 tolerances=DEFAULT_TOLERANCES)
    return golden


def _perturb(study: Path, tmp_path: Path, delta: float) -> Path:
    """A copy of the study whose unet axial liver val mean Dice is moved by ``delta``."""
    import shutil

    copy = tmp_path / "perturbed"
    shutil.copytree(study, copy)
    path = copy / "phantom" / "liver" / "unet" / "axial" / "metrics.csv"
    m = pd.read_csv(path)
    sel = (m["split"] == "val") & (m["metric"] == "dice") & (m["aggregation"] == "mean")
    m.loc[sel, "value"] += delta
    m.to_csv(path, index=False)
    return copy


def test_golden_roundtrip_passes_and_manifest_explains_tolerances(study_res, tmp_path):
    from bench.golden.compare import compare_tables
    from bench.golden.manifest import read_manifest

    golden = _golden(tmp_path, study_res)
    manifest = read_manifest(golden)
    assert manifest["tables"] == ["3", "4", "5", "6", "7", "8"] and "{results}" in manifest["command"]
    assert all(spec["why"] for spec in manifest["tolerances"].values())
    assert manifest["tolerances"]["n_cases"]["abs"] == 0
    again = build_tables(study_res, [3, 4, 5, 6, 7, 8], ReportOptions(), with_paired=False)
    assert compare_tables(golden, again) == []


def test_golden_detects_perturbation_beyond_tolerance_only(study, study_res, tmp_path):
    from bench.golden.compare import compare_tables

    golden = _golden(tmp_path, study_res)
    within = build_tables(load_results(_perturb(study, tmp_path / "a", 0.015)), [3, 4, 5, 6, 7, 8],
                          ReportOptions(), False)
    assert compare_tables(golden, within) == []
    where = dict(group="Axial Plane", row="Dice", col_group="U-Net", col="Val")
    original = build_tables(study_res, [7], ReportOptions(), False)[0]
    assert cell(within[4], **where)["ours"] == pytest.approx(cell(original, **where)["ours"] + 0.015)
    beyond = build_tables(load_results(_perturb(study, tmp_path / "b", 0.05)), [3, 4, 5, 6, 7, 8],
                          ReportOptions(), False)
    mismatches = compare_tables(golden, beyond)
    assert {(m.table, m.key, m.column) for m in mismatches} == {
        ("table7", ("Axial Plane", "Dice", "U-Net", "Val"), "ours"),
        ("table7", ("Axial Plane", "Dice", "U-Net", "Val"), "diff"),
    }
    text = str(next(m for m in mismatches if m.column == "ours"))
    assert text.startswith("table7 [Axial Plane / Dice / U-Net / Val] ours: golden 0.") and "> tol 0.02" in text


def test_golden_missing_vs_present_and_nan(tmp_path):
    from bench.golden.compare import compare_frames

    base = pd.DataFrame([dict(group="", row="Dice", col_group="", col="Val", metric="dice", ours=math.nan,
                              status="nan", n_cases=2)])
    tol = {"ours": {"abs": 0.02, "why": "t"}, "n_cases": {"abs": 0, "why": "t"}}
    assert compare_frames("t", base, base.copy(), tol) == []  # NaN == NaN
    filled = base.assign(ours=0.5, status="ok")
    kinds = {m.column for m in compare_frames("t", base, filled, tol)}
    assert kinds == {"status", "ours"}
    assert [m.column for m in compare_frames("t", base, base.iloc[:0], tol)] == ["(cell)"]
    assert [m.column for m in compare_frames("t", base, base.assign(n_cases=3), tol)] == ["n_cases"]


# ---------------------------------------------------------------- CLI


def test_cli_report_writes_everything(study, tmp_path):
    from typer.testing import CliRunner

    from bench.cli import app

    out = tmp_path / "rep"
    r = CliRunner().invoke(app, ["report", "--results", str(study), "--tables", "3,5", "--format", "md,csv",
                                 "--out", str(out), "--aggregation", "global"])
    assert r.exit_code == 0, r.output
    assert (out / "table3.md").is_file() and (out / "table5.csv").is_file() and not (out / "table3.tex").exists()
    assert "aggregation: global" in (out / "table3.md").read_text() and "index.md" in r.output
    bad = CliRunner().invoke(app, ["report", "--results", str(study), "--tables", "9"])
    assert isinstance(bad.exception, ConfigError)


def test_cli_check_fails_beyond_tolerance_and_updates_only_on_request(study, tmp_path):
    from typer.testing import CliRunner

    from bench.cli import app

    runner = CliRunner()
    golden = tmp_path / "golden"
    missing = runner.invoke(app, ["report", "--check", str(golden), "--results", str(study)])
    assert isinstance(missing.exception, DataError) and not golden.exists()
    made = runner.invoke(app, ["report", "--check", str(golden), "--results", str(study), "--update-golden"])
    assert made.exit_code == 0, made.output
    before = (golden / "table7.csv").read_text()
    ok = runner.invoke(app, ["report", "--check", str(golden), "--results", str(study)])
    assert ok.exit_code == 0 and "golden check OK" in ok.output
    bad = runner.invoke(app, ["report", "--check", str(golden), "--results", str(_perturb(study, tmp_path, 0.05))])
    assert bad.exit_code == 1 and "MISMATCH" in bad.output and "Axial Plane / Dice / U-Net / Val" in bad.output
    assert (golden / "table7.csv").read_text() == before  # a failed check never rewrites golden files
    lonely = runner.invoke(app, ["report", "--update-golden"])
    assert isinstance(lonely.exception, ConfigError)


def test_cli_check_runs_the_study_built_from_the_manifest_fields(study, study_res, tmp_path):
    """Without --results the check runs this package's ``bench demo`` with the manifest's validated fields
    (`GoldenStudy.argv`), never the manifest's text; here the run is recorded and stands in a prebuilt study."""
    import subprocess
    import sys
    import textwrap

    from cli_run import bench_env

    golden = _golden(tmp_path, study_res)
    record = tmp_path / "argv.json"
    code = textwrap.dedent(f"""
        import json, shutil
        from bench.golden import train
        def _run(argv, text, env, timeout, log):
            json.dump(argv, open({str(record)!r}, "w"))
            shutil.copytree({str(study)!r}, argv[argv.index("--results") + 1])
        train._run = _run
        from bench.cli import main
        main()
    """)
    proc = subprocess.run([sys.executable, "-c", code, "check", str(golden)], capture_output=True, text=True,
                          env=bench_env(), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "golden check OK (train layer)" in proc.stdout
    argv = json.loads(record.read_text())
    assert argv[:4] == [sys.executable, "-m", "bench", "demo"] and argv[argv.index("--profile") + 1] == "golden"
    assert argv[-3:-1] == ["--no-report", "--results"] and "{results}" not in argv


