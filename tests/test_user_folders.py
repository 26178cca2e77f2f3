"""Guards for users' folders (issue 20 item 5), through the console script in a subprocess.

A phantom folder written with other parameters is never regenerated silently; a second nnU-Net
data set id in one ``--out`` is refused unless asked; ``bench predict`` names what it used and
warns when the input is far from what the model was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

from cli_run import assert_one_line_error, bench

TOY = ("--size", "16", "--slices", "8")


def _files(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


def test_train_refuses_to_regenerate_a_default_phantom_written_with_other_parameters(tmp_path):
    """The issue's case: `bench data phantom data/phantom --cases 10` then `bench train` silently made 16 cases."""
    proc = bench("data", "phantom", "data/phantom", "--cases", "2", *TOY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    before = _files(tmp_path / "data" / "phantom")
    for args in (["train", "unet", "--profile", "smoke"], ["data", "prepare", "--profile", "smoke"]):
        line = assert_one_line_error(bench(*args, cwd=tmp_path), "data/phantom", "cases 2 (wanted 16)",
                                     "--root data/phantom")
        assert "refusing to regenerate" in line
    assert _files(tmp_path / "data" / "phantom") == before
    assert not (tmp_path / "results").exists()


def test_phantom_command_refuses_other_parameters_unless_forced(tmp_path):
    out = tmp_path / "ph"
    assert bench("data", "phantom", "ph", "--cases", "2", *TOY, cwd=tmp_path).returncode == 0
    before = _files(out)
    same = bench("data", "phantom", "ph", "--cases", "2", *TOY, cwd=tmp_path)  # same parameters: nothing to do
    assert same.returncode == 0 and "nothing written" in same.stdout and _files(out) == before
    assert_one_line_error(bench("data", "phantom", "ph", "--cases", "3", *TOY, cwd=tmp_path), "ph", "cases 2 (wanted 3)",
                          "--force")
    assert_one_line_error(bench("data", "phantom", "ph", "--cases", "2", "--seed", "4", *TOY, cwd=tmp_path),
                          "seed 0 (wanted 4)")
    assert _files(out) == before
    forced = bench("data", "phantom", "ph", "--cases", "3", *TOY, "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "note: generating phantom 3 case(s)" in forced.stderr and "cases 2 (wanted 3)" in forced.stderr
    assert json.loads((out / "phantom.json").read_text())["cases"] == 3


def test_phantom_never_writes_into_a_folder_it_did_not_write(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    for extra in ([], ["--force"]):
        assert_one_line_error(bench("data", "phantom", "mine", "--cases", "1", *TOY, *extra, cwd=tmp_path),
                              "mine", "no phantom.json", "refusing")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_unfinished_phantom_is_regenerated_with_a_line(tmp_path):
    out = tmp_path / "ph"
    assert bench("data", "phantom", "ph", "--cases", "2", *TOY, cwd=tmp_path).returncode == 0
    record = json.loads((out / "phantom.json").read_text())
    (out / "phantom.json").write_text(json.dumps({**record, "cases": 5, "complete": False}))  # a killed run
    proc = bench("data", "phantom", "ph", "--cases", "2", *TOY, cwd=tmp_path)
    assert proc.returncode == 0 and "unfinished phantom" in proc.stderr, proc.stderr
    assert json.loads((out / "phantom.json").read_text())["complete"] is True


def test_export_refuses_a_second_folder_with_the_same_dataset_id(tmp_path):
    """`--task liver` after a `both` export wrote a second Dataset501_* that nnU-Net cannot resolve."""
    assert bench("data", "phantom", "ph", "--cases", "3", *TOY, cwd=tmp_path).returncode == 0
    common = ("data", "export", "--format", "nnunet", "--dataset", "phantom", "--root", "ph", "--out", "raw",
              "--cache", "c")
    first = bench(*common, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert_one_line_error(bench(*common, "--task", "liver", cwd=tmp_path), "Dataset501_phantom_both",
                          "data set id 501", "--dataset-id", "--force")
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["Dataset501_phantom_both"]
    other_id = bench(*common, "--task", "liver", "--dataset-id", "502", cwd=tmp_path)
    assert other_id.returncode == 0, other_id.stderr
    forced = bench(*common, "--task", "liver", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["Dataset501_phantom_liver",
                                                                     "Dataset502_phantom_liver"]
    # another tool's data set with our id is never replaced, even with --force
    (tmp_path / "raw" / "Dataset502_theirs").mkdir()
    (tmp_path / "raw" / "Dataset502_theirs" / "dataset.json").write_text(json.dumps({"name": "theirs"}))
    assert_one_line_error(bench(*common, "--task", "lesion", "--dataset-id", "502", "--force", cwd=tmp_path),
                          "Dataset502_theirs", "not exported by liverbench")
    assert (tmp_path / "raw" / "Dataset502_theirs" / "dataset.json").is_file()
