"""A golden folder is data: it cannot run a program, loosen its own check, or end the check in a traceback.

Each case is a crafted layer checked through the console script (issue 20, items 4 and 6): a manifest
whose command would write a file (the file must not appear), the exact layer's tolerance set to 1e9
beside a moved cell (which the old code passed, "within 1e-9"), an unknown manifest field, a
malformed golden CSV, a malformed tolerance. Every refusal is one line, exit 2, naming the file.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cli_run import assert_one_line_error, bench

REPO = Path(__file__).resolve().parents[1]
EXACT = REPO / "results" / "golden" / "exact"
FAKE = Path(__file__).resolve().parent / "golden_fake_study.py"


@pytest.fixture(scope="module")
def train_layer(tmp_path_factory) -> tuple[Path, Path]:
    """A training layer written from the stand-in study's results (no training), and those results."""
    tmp = tmp_path_factory.mktemp("golden-guards")
    results = tmp / "results"
    made = subprocess.run([sys.executable, str(FAKE), "--results", str(results)], capture_output=True, text=True,
                          timeout=120)
    assert made.returncode == 0, made.stderr
    layer = tmp / "train"
    proc = bench("check", str(layer), "--results", str(results), "--tables", "3-7", "--update-golden", cwd=tmp)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ok = bench("check", str(layer), "--results", str(results), cwd=tmp)
    assert ok.returncode == 0 and "golden check OK (train layer)" in ok.stdout, ok.stdout + ok.stderr
    return layer, results


def _copy(layer: Path, tmp_path: Path) -> tuple[Path, dict]:
    copy = shutil.copytree(layer, tmp_path / layer.name)
    return copy, json.loads((copy / "manifest.json").read_text())


def _save(layer: Path, manifest: dict) -> None:
    (layer / "manifest.json").write_text(json.dumps(manifest))  # json writes NaN as NaN, as a crafted file may


# ---------------------------------------------------------------- a folder cannot run anything


@pytest.mark.parametrize("command", [
    "{python} -c \"open({marker!r}, 'w').write('ran')\" {{results}}",
    "sh -c 'echo ran > {marker}' {{results}}",
], ids=["python", "shell"])
def test_a_manifest_command_cannot_run_a_program(train_layer, tmp_path, command):
    layer, _ = train_layer
    copy, manifest = _copy(layer, tmp_path)
    marker = tmp_path / "written-by-the-manifest"
    manifest["command"] = command.format(python=sys.executable, marker=str(marker))
    _save(copy, manifest)
    proc = bench("check", str(copy), cwd=tmp_path, timeout=120)  # no --results: the old code ran the command
    assert_one_line_error(proc, str(copy / "manifest.json"), "field 'command'")
    assert not marker.exists()


def test_a_command_that_differs_from_the_one_built_from_its_fields_is_refused():
    """Text the code would not build (order, another flag, another data root) is refused, not reinterpreted."""
    from bench.errors import DataError
    from bench.golden.study import DEFAULT_COMMAND, parse_study

    for text, why in [
        (DEFAULT_COMMAND.replace("--profile golden --models", "--models"), "differs from the command"),
        (DEFAULT_COMMAND + " --root /elsewhere", "not allowed: '--root'"),
        (DEFAULT_COMMAND.replace("--profile golden", "--profile nope"), "unknown profile 'nope'"),
        (DEFAULT_COMMAND.replace("unet,ours", "unet,rm"), "unknown model 'rm'"),
        (DEFAULT_COMMAND.replace("--workers 2", "--workers 2 --workers 3"), "repeated: '--workers'"),
        (DEFAULT_COMMAND.replace("{results}", "/tmp/x"), "--results must be {results}"),
        ("python -m bench demo", "must start with `bench demo`"),
    ]:
        with pytest.raises(DataError, match="manifest.json: field 'command': ") as info:
            parse_study(text, "manifest.json: field 'command'")
        assert why in str(info.value), (text, str(info.value))


# ---------------------------------------------------------------- a folder cannot loosen its own check


def test_exact_layer_tolerance_is_a_constant_of_the_code(tmp_path):
    """Tolerance 1e9 in the manifest beside a cell moved by 0.5: refused (the old code passed it "within 1e-9")."""
    layer = shutil.copytree(EXACT, tmp_path / "exact")
    path = layer / "table7.csv"
    frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    row = (frame["group"] == "Axial Plane") & (frame["row"] == "Dice") & (frame["col_group"] == "U-Net") & (
        frame["col"] == "Val")
    frame.loc[row, "ours"] = repr(float(frame.loc[row, "ours"].iloc[0]) + 0.5)
    frame.to_csv(path, index=False)
    manifest = json.loads((layer / "manifest.json").read_text())
    manifest["tolerances"]["*"]["abs"] = 1e9
    _save(layer, manifest)
    proc = bench("check", str(layer), cwd=tmp_path, timeout=300)
    line = assert_one_line_error(proc, str(layer / "manifest.json"), "field 'tolerances.*'", "constants")
    assert "1e-09" in line and "1000000000.0" in line


@pytest.mark.parametrize("change", [
    {"compare": {"keys": ["group", "row", "col_group", "col"], "exact": []}},
    {"run_before": "rm -rf results"},
], ids=["compare-exact", "unknown-field"])
def test_exact_manifest_fields_beyond_the_code_are_refused(tmp_path, change):
    layer = tmp_path / "exact"
    shutil.copytree(EXACT, layer, ignore=shutil.ignore_patterns("inputs"))  # refused before the inputs are read
    manifest = json.loads((layer / "manifest.json").read_text())
    _save(layer, {**manifest, **change})
    proc = bench("check", str(layer), cwd=tmp_path, timeout=120)
    assert_one_line_error(proc, str(layer / "manifest.json"), f"field {next(iter(change))!r}"
                          if next(iter(change)) != "run_before" else "unknown field 'run_before'")


# ---------------------------------------------------------------- malformed files: one line, exit 2


@pytest.mark.parametrize("value", ["wide", -0.1, math.nan, 1e9, 0.25],
                         ids=["text", "negative", "nan", "huge", "above-what-a-calibration-can-give"])
def test_malformed_calibrated_tolerance_is_refused(train_layer, tmp_path, value):
    layer, results = train_layer
    copy, manifest = _copy(layer, tmp_path)
    manifest["tolerances"]["ours:dice"] = value if isinstance(value, dict) else {"abs": value, "why": "crafted"}
    _save(copy, manifest)
    proc = bench("check", str(copy), "--results", str(results), cwd=tmp_path)
    assert_one_line_error(proc, str(copy / "manifest.json"), "field 'tolerances.ours:dice'")


@pytest.mark.parametrize("text", [
    "group,row,col_group,col,ours\na,b,c,d,0.5\na,b,c,d,0.5,1,2,3\n",
    "a,b\n1,2\n",
], ids=["ragged-row", "no-key-columns"])
def test_malformed_golden_csv_is_one_line(train_layer, tmp_path, text):
    layer, results = train_layer
    copy, _ = _copy(layer, tmp_path)
    (copy / "table7.csv").write_text(text)
    proc = bench("check", str(copy), "--results", str(results), cwd=tmp_path)
    assert_one_line_error(proc, str(copy / "table7.csv"), "malformed golden table")


def test_a_manifest_that_is_not_an_object_is_one_line(train_layer, tmp_path):
    layer, results = train_layer
    copy, _ = _copy(layer, tmp_path)
    (copy / "manifest.json").write_text("[1, 2]")
    proc = bench("check", str(copy), "--results", str(results), cwd=tmp_path)
    assert_one_line_error(proc, str(copy / "manifest.json"), "a manifest is a JSON object")


def test_every_malformed_field_and_file_names_itself(train_layer, tmp_path):
    """The same validation in-process, over more shapes than the console cases above (each refusal a DataError
    naming the file and the field; the console turns a DataError into one line, exit 2)."""
    from bench.errors import DataError
    from bench.golden.compare import read_golden_csv
    from bench.golden.manifest import read_manifest

    layer, _ = train_layer
    copy, manifest = _copy(layer, tmp_path)
    exact = json.loads((EXACT / "manifest.json").read_text())
    cases = [
        (manifest, {"tolerances": {**manifest["tolerances"], "ours:dice": {"abs": math.inf}}}, "'tolerances.ours:dice'"),
        (manifest, {"tolerances": {**manifest["tolerances"], "ours:dice": {"abs": True}}}, "'tolerances.ours:dice'"),
        (manifest, {"tolerances": {**manifest["tolerances"], "ours:dice": {"abs": None}}}, "'tolerances.ours:dice'"),
        (manifest, {"tolerances": {**manifest["tolerances"], "ours:dice": 0.1}}, "'tolerances.ours:dice'"),
        (manifest, {"tolerances": {**manifest["tolerances"], "ours:dice": {"abs": 0.1, "run": "x"}}},
         "'tolerances.ours:dice'"),
        (manifest, {"excluded": [{"table": "table7", "key": "x"}]}, "field 'excluded'"),
        (manifest, {"report_options": {"aggregation": "median"}}, "field 'report_options'"),
        (manifest, {"tables": ["7", "paired"]}, "field 'tables'"),
        (manifest, {"layer": "other"}, "field 'layer'"),
        (manifest, {"builder": "x"}, "unknown field 'builder'"),
        (exact, {"command": "python -m bench.golden.exact --inputs {inputs} --results /tmp/x"}, "field 'command'"),
        (exact, {"tolerances": {**exact["tolerances"], "tp": {"abs": 1}}}, "field 'tolerances.tp'"),
        (exact, {"tables": exact["tables"][:-1]}, "field 'tables'"),
        (exact, {"calibration": {}}, "unknown field 'calibration'"),
    ]
    for base, change, needle in cases:
        _save(copy, {**base, **change})
        with pytest.raises(DataError, match="manifest.json: ") as info:
            read_manifest(copy)
        assert needle in str(info.value) and len(str(info.value).splitlines()) == 1, (change, str(info.value))
    for text in ("group,row,col_group,col,ours\n\"unterminated,a,b,c,0.5\n", "group,row,col_group,col\na,b,c,d,e,f\n",
                 "", "\x00\xff\xfe"):
        path = tmp_path / "table7.csv"
        path.write_bytes(text.encode("latin-1"))
        with pytest.raises(DataError, match="table7.csv: malformed golden table"):
            read_golden_csv(path)
