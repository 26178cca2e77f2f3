"""`bench report --external NAME=PRED_DIR`: another tool's 3-D predictions scored on the runs' own patients,
in Tables 7/8 and the paired comparison; predictions from `bench predict` and hand-written nnU-Net names."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from bench.datasets import get_dataset
from bench.datasets.nifti import load_nifti_zyx, save_nifti_zyx
from bench.datasets.nnunet import LABELS, nnunet_case_id
from bench.datasets.splits import read_splits
from bench.errors import ConfigError, DataError
from bench.metrics.counts import label_counts
from bench.metrics.scores import scores_from_counts
from bench.paths import run_dir, splits_path
from bench.reports.collect import load_results
from bench.reports.external import add_externals, parse_external
from bench.reports.select import ReportOptions
from bench.reports.tables import build_tables
from tests.conftest import tiny_config


def _bench(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def study(tiny_phantom: Path, tmp_path_factory) -> dict:
    """A real toy U-Net run (axial liver, evaluated on the val and test patients), the same run filed as
    "ours" (reports read the model from config.json), and the split it used."""
    from bench.engine.runner import run as train_run

    work = tmp_path_factory.mktemp("external")
    cfg = tiny_config(work, tiny_phantom, "unet", **{"profile.train.epochs": 1, "profile.train.steps_per_epoch": 1})
    train_run(cfg, progress=False)  # quality is irrelevant here: only the scoring path is under test
    src = run_dir(cfg)
    ours = src.parent.parent / "ours" / "axial"
    shutil.copytree(src, ours, ignore=shutil.ignore_patterns("checkpoints"))
    record = json.loads((ours / "config.json").read_text())
    record["config"]["model"] = "ours"
    (ours / "config.json").write_text(json.dumps(record))
    split = read_splits(splits_path(cfg.cache, "phantom", tiny_phantom))
    return {"work": work, "cfg": cfg, "split": split, "root": tiny_phantom,
            "adapter": get_dataset("phantom", root=tiny_phantom)}


def _direct(pred_file: Path, case) -> dict[str, float]:
    pred, _, _ = load_nifti_zyx(pred_file)
    counts = label_counts(pred.astype(np.uint8), case.label)
    return {cls: scores_from_counts(*counts[cls].as_tuple())["dice"] for cls in ("liver", "lesion")}


def _hand_prediction(case) -> np.ndarray:
    """A plausible imperfect 0/1/2 map: the liver eroded once, lesions kept."""
    liver = ndimage.binary_erosion(case.label >= 1)
    out = liver.astype(np.uint8)
    out[(case.label == 2) & liver] = 2
    return out


def _write_hand_folder(study: dict, folder: Path, labels: dict | None, transform=lambda a: a) -> dict[str, Path]:
    """nnU-Net output naming (<identifier>.nii.gz) in the source files' orientation, + an optional dataset.json."""
    folder.mkdir(parents=True)
    files = {}
    for cid in study["split"]["val"] + study["split"]["test"] + study["split"]["train"][:1]:
        case = study["adapter"].load(cid)
        path = folder / f"{nnunet_case_id(cid)}.nii.gz"
        save_nifti_zyx(path, transform(_hand_prediction(case)), case.affine, like=case.meta["source"])
        files[cid] = path
    if labels is not None:
        (folder / "dataset.json").write_text(json.dumps({"labels": labels, "file_ending": ".nii.gz"}))
    return files


def _cells(frame: pd.DataFrame, **where) -> pd.DataFrame:
    for k, v in where.items():
        frame = frame[frame[k] == v]
    return frame


def test_bench_predict_and_nnunet_named_folders_join_tables_7_8_and_the_paired_comparison(study: dict) -> None:
    from bench.engine.predict import predict_file

    work, cfg, split, adapter = study["work"], study["cfg"], study["split"], study["adapter"]
    val, test = split["val"][0], split["test"][0]
    # 1) written by `bench predict` (its engine call, predict_file; one LiTS name, one identical name)
    pred_p = work / "pred_bench"
    predict_file(Path(adapter.load(test).meta["source"]), pred_p / f"segmentation-{test}.nii.gz", {"liver": [cfg]})
    predict_file(Path(adapter.load(val).meta["source"]), pred_p / f"{val}.nii.gz", {"liver": [cfg]})
    # 2) written by hand with nnU-Net names and nnUNetv2_predict's dataset.json
    hand = _write_hand_folder(study, work / "pred_nnunet", LABELS["both"])
    out = work / "report"
    proc = _bench("report", "--results", cfg.results, "--tables", "7,8", "--format", "md,csv", "--no-figures",
                  "--out", out, "--external", f"mine={pred_p}", "--external", f"nnU-Net={work / 'pred_nnunet'}",
                  cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "mine (external)" in proc.stdout and "nnU-Net (external)" in proc.stdout
    t7 = pd.read_csv(out / "table7.csv")
    t8 = pd.read_csv(out / "table8.csv")
    paired = pd.read_csv(out / "paired.csv")
    ours_pc = pd.read_csv(run_dir(cfg).parent.parent / "ours" / "axial" / "per_case.csv", dtype={"case": str})
    for name, files in (("mine", {val: pred_p / f"{val}.nii.gz", test: pred_p / f"segmentation-{test}.nii.gz"}),
                        ("nnU-Net", hand)):
        label = f"{name} (external)"
        scored = pd.read_csv(out / "external" / name / "per_case.csv", dtype={"case": str})
        assert set(scored["split"]) == {"val", "test"} and set(scored["case"]) == {val, test}  # never train
        for split_name, cid in (("val", val), ("test", test)):
            direct = _direct(files[cid], adapter.load(cid))
            row = _cells(scored, case=cid, **{"class": "liver"})
            assert row["dice"].item() == pytest.approx(direct["liver"], rel=1e-9)  # per_case.csv keeps 10 digits
            cell = _cells(t7, col_group=label, col=split_name.capitalize(), metric="dice")
            assert cell["group"].item() == "Fused (soft voting)" and cell["status"].item() == "ok"
            assert cell["ours"].item() == pytest.approx(direct["liver"], rel=1e-9)
            diff = _cells(paired, group="Liver axial", row=f"Ours − {label}", split=split_name)
            ours_dice = _cells(ours_pc, case=cid)["dice"].item()
            assert diff["ours"].item() == pytest.approx(ours_dice - direct["liver"], abs=1e-8)
        assert not _cells(t7, col_group=label, group="Axial Plane").shape[0]  # no plane: fused rows only
    # bench predict's volumes are the run's own predictions: scored externally they match its per_case.csv
    unet_pc = pd.read_csv(run_dir(cfg) / "per_case.csv", dtype={"case": str})
    mine = pd.read_csv(out / "external" / "mine" / "per_case.csv", dtype={"case": str})
    for cid in (val, test):
        assert _cells(mine, case=cid, **{"class": "liver"})["dice"].item() == pytest.approx(
            _cells(unet_pc, case=cid)["dice"].item(), abs=0.02)
    lesion = _cells(t8, col_group="nnU-Net (external)", col="Test", metric="dice")
    expect = _direct(hand[test], adapter.load(test))["lesion"]
    assert lesion["ours"].item() == pytest.approx(expect, rel=1e-9, nan_ok=True)
    assert lesion["status"].item() == ("nan" if np.isnan(expect) else "ok")
    md = (out / "table7.md").read_text()
    assert "nnU-Net (external)" in md and str(work / "pred_nnunet") in md  # its folder in the provenance
    summary = json.loads((out / "external" / "nnU-Net" / "summary.json").read_text())
    assert summary["external"]["predictions"] == str((work / "pred_nnunet").resolve())


def test_label_conventions_missing_splits_and_bad_input(study: dict, tmp_path: Path) -> None:
    cfg, adapter, split = study["cfg"], study["adapter"], study["split"]
    options = ReportOptions()
    test = split["test"][0]
    # an export with --task lesion: 1 means lesion; it feeds Table 8 only
    lesion_files = _write_hand_folder(study, tmp_path / "lesion", LABELS["lesion"],
                                      transform=lambda a: (a == 2).astype(np.uint8))
    _write_hand_folder(study, tmp_path / "liver", LABELS["liver"],
                       transform=lambda a: (a >= 1).astype(np.uint8))
    res = add_externals(load_results(cfg.results), [f"les={tmp_path / 'lesion'}", f"liv={tmp_path / 'liver'}"],
                        options, tmp_path / "out")
    les, liv = res.externals
    assert les.tasks == ("lesion",) and liv.tasks == ("liver",)
    t7, t8 = build_tables(res, [7, 8], options, with_paired=False)
    assert "les (external)" not in set(t7.frame["col_group"]) and "les (external)" in set(t8.frame["col_group"])
    assert "liv (external)" in set(t7.frame["col_group"]) and "liv (external)" not in set(t8.frame["col_group"])
    # the folder is scored as given: the same cells under --scores raw as under post (it has no raw variant)
    raw7 = build_tables(res, [7], ReportOptions(scores="raw"), with_paired=False)[0]
    for frame in (t7.frame, raw7.frame):
        assert _cells(frame, col_group="liv (external)")["status"].eq("ok").all()
    assert list(_cells(raw7.frame, col_group="liv (external)")["ours"]) == list(
        _cells(t7.frame, col_group="liv (external)")["ours"])
    scored = pd.read_csv(tmp_path / "out" / "external" / "les" / "per_case.csv", dtype={"case": str})
    case = adapter.load(test)
    expect = label_counts(_hand_prediction(case), case.label)["lesion"]
    row = _cells(scored, case=test, **{"class": "lesion"})
    assert (row.tp.item(), row.fp.item(), row.fn.item()) == expect.as_tuple()[:3]
    # test predictions only (nnUNetv2_predict on imagesTs): val cells missing, with a note
    only_test = tmp_path / "only_test"
    only_test.mkdir()
    shutil.copy(lesion_files[test], only_test / lesion_files[test].name)
    res = add_externals(load_results(cfg.results), [f"t={only_test}"], options, tmp_path / "out2")
    t7 = build_tables(res, [7], options, with_paired=False)[0]
    assert _cells(t7.frame, col_group="t (external)", col="Val")["status"].eq("missing").all()
    assert _cells(t7.frame, col_group="t (external)", col="Test")["status"].eq("ok").all()
    assert any("no prediction for the 1 val patient" in n for n in res.notes)
    # runs that scored other patients than the split file lists (a split re-made after them) get a note
    res = load_results(cfg.results)
    res.per_case.loc[res.per_case["split"] == "test", "case"] = "not-in-the-split"
    res = add_externals(res, [f"t={only_test}"], options, tmp_path / "out6")
    assert any("the runs scored test patients ['not-in-the-split']" in n for n in res.notes)
    # a prediction on another grid names both files; so does another shape
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    affine = case.affine.copy()
    affine[:3, 3] += 7.0
    save_nifti_zyx(shifted / f"{test}.nii.gz", case.label, affine)
    with pytest.raises(DataError, match=rf"shifted/{test}.nii.gz: voxel grid .* reference .*segmentation-{test}"):
        add_externals(load_results(cfg.results), [f"s={shifted}"], options, tmp_path / "out3")
    small = tmp_path / "small"
    small.mkdir()
    save_nifti_zyx(small / f"{test}.nii.gz", case.label[:-1], case.affine)
    with pytest.raises(DataError, match=rf"small/{test}.nii.gz: shape .* reference .*segmentation-{test}"):
        add_externals(load_results(cfg.results), [f"s={small}"], options, tmp_path / "out4")
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    save_nifti_zyx(unrelated / "patient-x.nii.gz", case.label, case.affine)
    with pytest.raises(DataError, match="no prediction .* matches a val/test patient"):
        add_externals(load_results(cfg.results), [f"u={unrelated}"], options, tmp_path / "out5")
    for spec, err in (("nodir", ConfigError), ("a=/no/such/folder", DataError), ("bad name=.", ConfigError)):
        with pytest.raises(err):
            parse_external([spec])
    with pytest.raises(ConfigError, match="given twice"):
        parse_external([f"x={tmp_path}", f"x={tmp_path}"])
    assert not (tmp_path / "out3").exists() and not (tmp_path / "out4").exists()  # nothing half-written


def test_console_errors_are_one_line(study: dict, tmp_path: Path) -> None:
    cfg, adapter, split = study["cfg"], study["adapter"], study["split"]
    test = split["test"][0]
    case = adapter.load(test)
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    affine = case.affine.copy()
    affine[:3, 3] += 7.0
    save_nifti_zyx(shifted / f"{test}.nii.gz", case.label, affine)
    proc = _bench("report", "--results", cfg.results, "--tables", "7", "--no-figures", "--out", tmp_path / "o",
                  "--external", f"s={shifted}", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("error:") == 1 and f"{test}.nii.gz" in proc.stderr and "segmentation-" in proc.stderr
    proc = _bench("report", "--check", tmp_path / "golden", "--external", f"s={shifted}", cwd=tmp_path)
    assert proc.returncode == 2 and "--external is not part of the golden check" in proc.stderr


def test_evaluate_surface_writes_the_lits_distance_columns(study: dict) -> None:
    """`bench evaluate --surface` (engine's score_case -> surface_metrics) writes all five distances."""
    cfg = study["cfg"]
    proc = _bench("evaluate", "unet", "--plane", "axial", "--dataset", "phantom", "--root", study["root"],
                  "--results", cfg.results, "--cache", cfg.cache, "--device", "cpu", "--surface", cwd=study["work"])
    assert proc.returncode == 0, proc.stderr
    folder = run_dir(cfg)
    pc = pd.read_csv(folder / "per_case.csv")
    assert list(pc.columns)[-7:] == ["voe", "rvd", "hd95", "nsd", "assd", "mssd", "rmsd"]
    for _, row in pc.iterrows():
        if row.tp > 0:  # both masks non-empty: every distance finite and ordered
            assert 0 <= row.assd <= row.rmsd <= row.mssd and row.hd95 <= row.mssd
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["policy"]["surface"]["tolerance_mm"] == 1.0 and "assd" in summary["policy"]["surface"]
    assert "surface distances" in proc.stdout


def test_the_external_face_scores_through_the_one_pipeline(study: dict, tmp_path: Path, monkeypatch) -> None:
    """``--external`` picks a source (`bench.metrics.split_folder.SplitFolderSource`); the pipeline's one
    per-case scorer sees every val/test patient, in the split file's order, and nothing else scores."""
    import bench.metrics.pipeline as pipeline

    seen: list[tuple[str, str]] = []
    real = pipeline.score_prediction

    def spy(item, *args, **kwargs):
        seen.append((item.split, item.case))
        return real(item, *args, **kwargs)

    monkeypatch.setattr(pipeline, "score_prediction", spy)
    _write_hand_folder(study, tmp_path / "tool", None)
    res = add_externals(load_results(study["cfg"].results), [f"tool={tmp_path / 'tool'}"], ReportOptions(),
                        tmp_path / "out")
    split = study["split"]
    assert seen == [("val", c) for c in split["val"]] + [("test", c) for c in split["test"]]
    scored = pd.read_csv(tmp_path / "out" / "external" / "tool" / "per_case.csv", dtype={"case": str})
    assert list(zip(scored["split"], scored["case"]))[::2] == seen  # liver and lesion rows per case
    assert res.externals[0].n_cases == {"val": len(split["val"]), "test": len(split["test"])}
