"""Issue 20, items 1-3: a run is bound to its data, the report knows what a replicate is, and numbers
that are not numbers are refused. Every case runs ``bench`` in a subprocess (the console script's
module), smoke profile, a 4-case 32x32 phantom; one run is trained for the module and shared (each
test that changes the data puts it back)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from cli_run import assert_one_line_error, bench

TRAIN = ["--profile", "smoke", "--device", "cpu", "--set", "input_size=32", "--set", "train.epochs=1",
         "--set", "train.steps_per_epoch=2", "--set", "train.val_max_cases=1"]
RUN = Path("results/phantom/liver/unet/axial")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A folder holding ``ph`` (the data), ``cache`` and ``results`` with one unet run, trained with the
    relative ``--root ph`` from inside the folder."""
    from bench.datasets.phantom import write_phantom

    home = tmp_path_factory.mktemp("bound")
    write_phantom(home / "ph", cases=4, size=32, slices=12, seed=5)
    proc = bench("train", "unet", "--root", "ph", *TRAIN, cwd=home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return home


def _record(home: Path) -> dict:
    return json.loads((home / RUN / "config.json").read_text())


# ---------------------------------------------------------------- 1. cache: a changed source is prepared again


def test_changed_source_is_reprepared_and_said(tmp_path):
    from bench.datasets.phantom import write_phantom

    write_phantom(tmp_path / "ph", cases=3, size=32, slices=12, seed=2)
    args = ["data", "prepare", "--root", "ph", "--cache", "cache", "--profile", "smoke", "--planes", "axial"]
    assert bench(*args, cwd=tmp_path).returncode == 0
    seg = tmp_path / "ph" / "segmentation-1.nii.gz"
    img = nib.load(seg)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), seg)  # the segmentation blanked
    proc = bench(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    said = [line for line in proc.stderr.splitlines() if "source changed" in line]
    assert said == [f"warning: case 1: source changed (segmentation-1.nii.gz changed), re-prepared in "
                    f"{next((tmp_path / 'cache').glob('phantom-*/64px-*')).relative_to(tmp_path)}"], proc.stderr
    assert "1 prepared now" in proc.stdout
    meta = json.loads(next((tmp_path / "cache").glob("phantom-*/64px-*/1/meta.json")).read_text())
    assert sum(meta["slices"]["axial"]["liver_px"]) == 0  # the cache holds the blank label now
    (tmp_path / "ph" / "volume-2.nii.gz").touch()  # same content, new mtime: not a change
    again = bench(*args, cwd=tmp_path)
    assert "0 prepared now" in again.stdout and "source changed" not in again.stderr


# ---------------------------------------------------------------- 3. NaN voxels, inf settings, choice flags


def test_nan_voxel_in_a_ct_is_refused_at_prepare(tmp_path):
    from bench.datasets.phantom import write_phantom

    write_phantom(tmp_path / "ph", cases=2, size=32, slices=12, seed=2)
    vol = tmp_path / "ph" / "volume-1.nii.gz"
    img = nib.load(vol)
    data = np.asarray(img.dataobj).astype(np.float32)
    data[3, 4, 5] = np.nan
    data[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(data, img.affine), vol)
    proc = bench("data", "prepare", "--dataset", "lits", "--root", "ph", "--cache", "cache", "--profile", "smoke",
                 "--planes", "axial", cwd=tmp_path)
    assert_one_line_error(proc, str(vol.relative_to(tmp_path)), "2 NaN/infinite voxel(s)", "case 1")
    assert not [p for p in (tmp_path / "cache").rglob("*") if ".tmp-" in p.name]
    assert [p.name for p in (tmp_path / "cache").glob("*/*/*") if p.is_dir()] == ["0"]


def test_non_finite_setting_is_refused_at_set(tmp_path):
    for value in ("inf", "-inf", "nan"):
        proc = bench("train", "unet", "--profile", "smoke", "--set", f"preprocess.hu_max={value}", "--results", "r",
                     "--cache", "c", cwd=tmp_path)
        assert_one_line_error(proc, "hu_max", "finite")
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


def test_choice_flags_are_checked_when_nothing_runs(trained):
    proc = bench("train", "unet", "--root", "ph", *[("tpu" if a == "cpu" else a) for a in TRAIN], cwd=trained)
    assert_one_line_error(proc, "unknown device 'tpu'")  # the run exists: nothing would have run
    for args in (["predict", "unet", "--input", "ph/volume-0.nii.gz", "--output", "m.nii.gz", "--planes", ","],
                 ["demo", "--root", "ph", "--planes", ",", "--profile", "smoke", "--results", "r2"],
                 ["demo", "--root", "ph", "--planes", "axial,oblique", "--profile", "smoke", "--results", "r2"]):
        assert_one_line_error(bench(*args, cwd=trained), "--planes")
    assert not (trained / "m.nii.gz").exists() and not (trained / "r2").exists()


# ---------------------------------------------------------------- 1. the run's record; evaluate refuses changed data


def test_run_records_its_absolute_root_split_and_fingerprints(trained):
    rec = _record(trained)
    data = rec["data"]
    assert rec["config"]["root"] == str((trained / "ph").resolve())  # typed relative, stored absolute
    assert data["root"] == str((trained / "ph").resolve())
    assert Path(data["split_file"]).is_file() and data["split_file_sha256"] == _digest(Path(data["split_file"]))
    split = json.loads(Path(data["split_file"]).read_text())
    assert data["splits"] == {k: split[k] for k in ("train", "val", "test")}
    assert sorted(data["cases"]) == ["0", "1", "2", "3"] and len(set(data["cases"].values())) == 4


def test_evaluate_from_another_folder_scores_the_same_data_and_refuses_another_root(trained, tmp_path):
    before = _digest(trained / RUN / "per_case.csv")
    flags = ["--results", str(trained / "results"), "--cache", str(trained / "cache"), "--device", "cpu"]
    shutil.copytree(trained / "ph", tmp_path / "ph")  # the same relative name, other data
    proc = bench("evaluate", "unet", "--root", "ph", *flags, cwd=tmp_path)
    assert_one_line_error(proc, f"--root {(tmp_path / 'ph').resolve()}", f"was trained on {(trained / 'ph').resolve()}")
    assert _digest(trained / RUN / "per_case.csv") == before  # nothing re-scored, nothing overwritten
    ok = bench("evaluate", "unet", *flags, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert _digest(trained / RUN / "per_case.csv") == before  # re-scored on its own data: the same numbers


def test_changed_case_is_refused_by_evaluate_train_and_report(trained):
    seg = trained / "ph" / "segmentation-3.nii.gz"
    saved = seg.read_bytes()
    before = _digest(trained / RUN / "per_case.csv")
    try:
        img = nib.load(seg)
        nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), seg)
        for args in (["evaluate", "unet", "--device", "cpu"], ["train", "unet", "--root", "ph", *TRAIN],
                     ["report", "--tables", "7", "--no-figures"]):
            assert_one_line_error(bench(*args, cwd=trained), "case fingerprints changed", "3 (segmentation-3.nii.gz changed)")
    finally:
        seg.write_bytes(saved)
    assert _digest(trained / RUN / "per_case.csv") == before and not (trained / "results" / "report").exists()


def test_edited_split_file_is_refused(trained):
    path = Path(_record(trained)["data"]["split_file"])
    saved = path.read_bytes()
    split = json.loads(saved)
    try:
        split["train"], split["test"] = split["test"], split["train"]  # a training patient scored as test
        path.write_text(json.dumps(split))
        line = assert_one_line_error(bench("evaluate", "unet", "--device", "cpu", cwd=trained), "split file",
                                     str(path), "changed since training")
        assert "train patients" in line
    finally:
        path.write_bytes(saved)
    assert bench("evaluate", "unet", "--device", "cpu", "--split", "val", cwd=trained).returncode == 0  # restored: fine


@pytest.mark.slow
def test_rescore_is_asked_for_and_recorded(trained):
    seg = trained / "ph" / "segmentation-3.nii.gz"
    saved = seg.read_bytes()
    try:
        img = nib.load(seg)
        nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), seg)
        assert_one_line_error(bench("evaluate", "unet", "--device", "cpu", "--rescore", "--split", "test", cwd=trained),
                              "--rescore", "every split")
        proc = bench("evaluate", "unet", "--device", "cpu", "--rescore", cwd=trained)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rec = _record(trained)
        assert rec["rescored"][-1]["changed"].startswith("case fingerprints changed since training: 3")
        test = pd.read_csv(trained / RUN / "per_case.csv", dtype={"case": str})
        assert test.loc[test["case"] == "3", "fn"].item() == 0  # scored on the blanked segmentation
    finally:
        seg.write_bytes(saved)
    assert bench("evaluate", "unet", "--device", "cpu", "--rescore", cwd=trained).returncode == 0  # bound again


# ---------------------------------------------------------------- 2. what a replicate is


def _copy_run(home: Path, tag: str, seed: int = 0, root: Path | None = None) -> Path:
    """The trained run copied as another run (another tag, seed or data root), as a second training would write it."""
    folder = home / "results" / "phantom" / "liver" / tag / "axial"
    shutil.copytree(home / RUN, folder, ignore=shutil.ignore_patterns("checkpoints"))
    rec = json.loads((folder / "config.json").read_text())
    rec["config"].update(tag=tag, seed=seed)
    if root is not None:
        rec["config"]["root"] = rec["data"]["root"] = str(root.resolve())
    (folder / "config.json").write_text(json.dumps(rec))
    return folder


def _n_seeds(report: Path) -> int:
    table = pd.read_csv(report / "table7.csv")
    cell = table[(table["col"].str.contains("Test")) & (table["metric"] == "dice") & (table["status"] == "ok")]
    return int(cell[cell["group"] == "Axial Plane"]["n_seeds"].max())


def test_runs_pool_as_seeds_only_when_all_but_the_seed_is_equal(trained, tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    shutil.copytree(trained / "results", home / "results", ignore=shutil.ignore_patterns("report"))
    seed1 = _copy_run(home, "unet~seed1", seed=1)
    proc = bench("report", "--tables", "7", "--no-figures", cwd=home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _n_seeds(home / "results" / "report") == 2  # a true replicate pools

    shutil.rmtree(seed1.parent)
    _copy_run(home, "mine", seed=0)  # same seed, another --tag: another experiment
    shutil.rmtree(home / "results" / "report")
    proc = bench("report", "--tables", "7", "--no-figures", cwd=home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _n_seeds(home / "results" / "report") == 1
    assert "differ in tag_base (unet vs mine)" in (home / "results" / "report" / "index.md").read_text()

    shutil.copytree(trained / "ph", tmp_path / "ph2")  # identical files, another data root
    _copy_run(home, "unet~seed2", seed=2, root=tmp_path / "ph2")
    shutil.rmtree(home / "results" / "report")
    line = assert_one_line_error(bench("report", "--tables", "7", "--no-figures", cwd=home), "2 data roots",
                                 str((tmp_path / "ph2").resolve()), str((trained / "ph").resolve()))
    assert "own --results" in line and not (home / "results" / "report").exists()
