"""Issue 15: never destroy what the user did not ask to destroy, and one line for every misuse.

CLI cases run ``bench`` in a subprocess (`bench` from test_cli_exits); the cache's restore logic
is tested directly with a failing rename and with a leftover of a killed writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.datasets.base import check_case_id
from bench.errors import ConfigError, DataError
from cli_run import assert_one_line_error, bench


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): (_digest(p) if p.is_file() else "dir") for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def small_phantom(tmp_path_factory) -> Path:
    from bench.datasets.phantom import write_phantom

    root = tmp_path_factory.mktemp("guard-phantom")
    write_phantom(root, cases=3, size=32, slices=12, seed=2)
    return root


# ---------------------------------------------------------------- predict never overwrites its input


def test_predict_refuses_to_overwrite_its_input(tmp_path, small_phantom):
    ct = tmp_path / "ct.nii.gz"
    ct.write_bytes((small_phantom / "volume-0.nii.gz").read_bytes())
    (tmp_path / "link.nii.gz").symlink_to(ct)
    os.link(ct, tmp_path / "hard.nii.gz")
    dicom = tmp_path / "dicom"
    dicom.mkdir()
    (dicom / "image_0").write_bytes(b"stand-in slice")
    before = _digest(ct)
    for output in ("ct.nii.gz", "./sub/../ct.nii.gz", str(ct), "link.nii.gz", "hard.nii.gz"):
        proc = bench("predict", "unet", "--input", "ct.nii.gz", "--output", output, "--device", "cpu", cwd=tmp_path)
        assert_one_line_error(proc, "refusing to overwrite the input", str(Path(output)))
    proc = bench("predict", "unet", "--input", "dicom", "--output", "dicom/mask.nii.gz", cwd=tmp_path)
    assert_one_line_error(proc, "inside the input DICOM folder")
    assert _digest(ct) == before and sorted(p.name for p in dicom.iterdir()) == ["image_0"]
    assert_one_line_error(bench("predict", "unet", "--input", "ct.nii.gz", "--output", "mask.png", cwd=tmp_path),
                          "mask.png", ".nii")


# ---------------------------------------------------------------- unwritable or invalid output folders


def test_unwritable_or_invalid_output_paths_are_one_line(tmp_path, small_phantom):
    (tmp_path / "afile").write_text("in the way")
    cases = [
        (["train", "unet", "--results", "afile", "--root", str(small_phantom)], "--results afile", "not a folder"),
        (["train", "unet", "--cache", "afile/c", "--root", str(small_phantom)], "--cache afile/c", "is a file"),
        (["evaluate", "unet", "--results", "afile/r"], "--results afile/r", "is a file"),
        (["data", "prepare", "--root", str(small_phantom), "--cache", "afile"], "--cache afile", "not a folder"),
        (["data", "prepare", "--root", str(small_phantom), "--cache", ""], "--cache", "empty path"),
        (["data", "phantom", "afile/ph"], "afile/ph", "is a file"),
        (["score", str(small_phantom), str(small_phantom), "--out", "afile"], "--out afile", "not a folder"),
        (["report", "--results", str(tmp_path), "--out", "afile/x"], "--out afile/x", "is a file"),
        (["predict", "unet", "--input", str(small_phantom / "volume-0.nii.gz"), "--output", "afile/m.nii.gz"],
         "--output afile/m.nii.gz", "not a folder"),
        (["ablate", "loss", "--results", "afile"], "--results afile", "not a folder"),
    ]
    for args, *needles in cases:
        assert_one_line_error(bench(*args, cwd=tmp_path), *needles)
    assert (tmp_path / "afile").read_text() == "in the way"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no folder was created on the way


@pytest.mark.skipif(os.access("/sys", os.W_OK) and not Path("/sys/kernel").is_dir(), reason="needs a read-only /sys")
def test_read_only_location_is_refused_before_any_work(tmp_path):
    if subprocess.run(["touch", "/sys/.bench-probe"], capture_output=True).returncode == 0:
        pytest.skip("/sys is writable here")
    assert_one_line_error(bench("data", "prepare", "--cache", "/sys/bench-cache", cwd=tmp_path),
                          "--cache /sys/bench-cache", "cannot write")


def test_paths_check_helpers(tmp_path):
    from bench.cli.paths_check import output_not_input, writable_dir, writable_file

    assert writable_dir(tmp_path / "new" / "deeper", "--results") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    with pytest.raises(ConfigError, match="is a folder"):
        writable_file(tmp_path, "--output")
    output_not_input(tmp_path / "mask.nii.gz", tmp_path / "ct.nii.gz")  # different files: fine
    (tmp_path / "dicom").mkdir()
    output_not_input(tmp_path / "dicom-mask.nii.gz", tmp_path / "dicom")  # beside the folder, not inside it
    with pytest.raises(ConfigError, match="inside the input DICOM folder"):
        output_not_input(tmp_path / "dicom" / "sub" / "m.nii.gz", tmp_path / "dicom")


# ---------------------------------------------------------------- case ids from data roots


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a\\b", " 1", "3Dircadb1.1.tmp-42"])
def test_unsafe_case_ids_are_refused(bad):
    with pytest.raises(DataError, match="not a usable folder name"):
        check_case_id(bad, "/data/root")


@pytest.mark.parametrize("good", ["3Dircadb1.1", "0", "131", "liver_3"])
def test_safe_case_ids_pass(good):
    assert check_case_id(good, "/data/root") == good


def _fake_ircadb_patient(folder: Path) -> Path:
    """Enough of a 3D-IRCADb patient folder for the adapter to take it as one (ids come before any read)."""
    (folder / "PATIENT_DICOM").mkdir(parents=True)
    (folder / "PATIENT_DICOM" / "image_0").write_bytes(b"x")
    (folder / "MASKS_DICOM.zip").write_bytes(b"x")
    return folder


def test_prepare_inside_a_patient_folder_is_refused_and_the_cache_untouched(tmp_path):
    patient = _fake_ircadb_patient(tmp_path / "3Dircadb1.1")
    cache = tmp_path / "cache"
    (cache / "ircadb-00000000" / "64px-x" / "3Dircadb1.1").mkdir(parents=True)
    (cache / "ircadb-00000000" / "64px-x" / "3Dircadb1.1" / "meta.json").write_text("{}")
    before = _tree(cache)
    proc = bench("data", "prepare", "--dataset", "ircadb", "--root", ".", "--cache", str(cache), "--profile", "smoke",
                 cwd=patient)
    assert_one_line_error(proc, "case id ''", f"--root {patient.resolve()}")
    from bench.datasets import get_dataset

    with pytest.raises(DataError, match=r"3Dircadb1.1/PATIENT_DICOM/..: case id '..' is not a usable folder name"):
        get_dataset("ircadb", root=tmp_path / "3Dircadb1.1" / "PATIENT_DICOM" / "..").case_ids()
    assert _tree(cache) == before and not [p for p in cache.rglob("*") if ".tmp-" in p.name]


# ---------------------------------------------------------------- a cache case moved aside is never lost


def _complete_case(folder: Path, marker: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"marker": marker}))
    return folder


def test_failed_rename_puts_the_old_case_back(tmp_path, monkeypatch):
    import bench.atomic as atomic_mod

    final = _complete_case(tmp_path / "7", "old")
    tmp = _complete_case(tmp_path / f"7.tmp-{os.getpid()}", "new")
    real_replace = os.replace
    calls = []

    def flaky(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if Path(src) == tmp:
            raise OSError(28, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic_mod.os, "replace", flaky)
    with pytest.raises(OSError, match="No space left"):
        atomic_mod.replace_dir(tmp, final)
    monkeypatch.setattr(atomic_mod.os, "replace", real_replace)
    assert json.loads((final / "meta.json").read_text()) == {"marker": "old"}  # restored
    assert calls[0] == ("7", f"7.old.tmp-{os.getpid()}")  # it really was moved aside first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["7", f"7.tmp-{os.getpid()}"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_moved_aside_case_is_restored_or_removed(tmp_path):
    from bench.datasets.cache import remove_stale_temp

    dead = _dead_pid()
    _complete_case(tmp_path / f"3.old.tmp-{dead}", "only copy")  # killed between the two renames
    _complete_case(tmp_path / "4", "new")
    _complete_case(tmp_path / f"4.old.tmp-{dead}", "superseded")  # killed after the second rename
    _complete_case(tmp_path / f"5.tmp-{dead}", "half written")
    _complete_case(tmp_path / f"6.old.tmp-{os.getpid()}", "a live writer's")
    (tmp_path / f"8.old.tmp-{dead}").mkdir()  # a half-written case whose id is "8.old": no meta.json
    handled = remove_stale_temp(tmp_path)
    assert len(handled) == 4 and not (tmp_path / "8").exists()
    assert json.loads((tmp_path / "3" / "meta.json").read_text()) == {"marker": "only copy"}
    assert json.loads((tmp_path / "4" / "meta.json").read_text()) == {"marker": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3", "4", f"6.old.tmp-{os.getpid()}"]


# ---------------------------------------------------------------- a case in no split


def test_case_added_after_the_split_is_warned_about(tmp_path, small_phantom):
    """The data set's split was saved with cases 0-2; case 17 was added to the root afterwards."""
    from bench.atomic import write_json
    from bench.datasets import get_dataset
    from bench.paths import splits_path

    root = tmp_path / "ph"
    root.mkdir()
    for p in small_phantom.iterdir():
        (root / p.name).write_bytes(p.read_bytes())
    saved = {"train": ["0"], "val": ["1"], "test": ["2"], "seed": 0}
    write_json(splits_path(tmp_path / "cache", "phantom", get_dataset("phantom", root=root).root), saved)
    for kind in ("volume", "segmentation"):
        (root / f"{kind}-17.nii.gz").write_bytes((root / f"{kind}-0.nii.gz").read_bytes())
    proc = bench("data", "prepare", "--root", str(root), "--cache", "cache", "--profile", "smoke", "--planes", "axial",
                 cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "1 case(s) of the data set are in no split and are not used: 17 " in warnings[0]
    assert warnings[0].startswith("warning: ") and "Traceback" not in proc.stderr
    assert "splits" in proc.stdout and "train 1, val 1, test 1" in proc.stdout  # the split itself is unchanged


# ---------------------------------------------------------------- bad input files stay one line (issue 15, first paragraph)


@pytest.fixture
def lits_with_truncated_volume(tmp_path, small_phantom) -> Path:
    root = tmp_path / "lits"
    root.mkdir()
    for name in ("volume-0.nii.gz", "segmentation-0.nii.gz", "segmentation-1.nii.gz"):
        (root / name).write_bytes((small_phantom / name).read_bytes())
    whole = (small_phantom / "volume-1.nii.gz").read_bytes()
    (root / "volume-1.nii.gz").write_bytes(whole[: len(whole) // 2])  # a truncated download
    return root


def test_bad_input_file_in_prepare_is_one_line_and_leaves_no_half_case(tmp_path, lits_with_truncated_volume):
    proc = bench("data", "prepare", "--dataset", "lits", "--root", str(lits_with_truncated_volume), "--cache", "cache",
                 "--profile", "smoke", cwd=tmp_path)
    assert_one_line_error(proc, "volume-1.nii.gz", "truncated or corrupt")
    assert not [p for p in (tmp_path / "cache").rglob("*") if ".tmp-" in p.name]
    cases = [p for p in (tmp_path / "cache").glob("*/*/*") if p.is_dir()]
    assert [p.name for p in cases] == ["0"] and (cases[0] / "meta.json").is_file()  # the good case is kept, whole


def test_bad_input_file_in_predict_is_one_line(tmp_path, lits_with_truncated_volume):
    proc = bench("predict", "unet", "--input", str(lits_with_truncated_volume / "volume-1.nii.gz"), "--output",
                 "m.nii.gz", "--device", "cpu", cwd=tmp_path)
    assert_one_line_error(proc, "volume-1.nii.gz", "truncated or corrupt")
    assert not (tmp_path / "m.nii.gz").exists()
