"""The calibrated training golden layer: the calibration arithmetic, the tool, and a check that can fail.

The training study itself runs once, in ``make test``'s ``bench check results/golden``;
nothing here trains. The calibration arithmetic is tested on synthetic table frames; the tool
(``bench check DIR --calibrate``) end to end through the console script with a stand-in study
(`golden_fake_study.py`: the real result writers, counts that move with seed, kernel set and
threads, one cell that collapses for one seed); the committed layer against its own calibration
files. A gate is only a gate if it fails on a planted defect: a golden cell moved beyond its
tolerance exits 1; within it, or in an excluded cell, exits 0.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from cli_run import assert_one_line_error, bench, bench_env

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "results" / "golden" / "train"
FAKE = Path(__file__).resolve().parent / "golden_fake_study.py"
KEYS = ("group", "row", "col_group", "col")


# ---------------------------------------------------------------- the arithmetic, on synthetic tables


def _table(values: dict[str, tuple]) -> pd.DataFrame:
    """A tidy table: cell name -> (metric, ours, status, n_excluded); paper 0.9 where the metric is dice."""
    rows = []
    for name, (metric, ours, status, n_excluded) in values.items():
        paper = 0.9 if metric == "dice" else math.nan
        rows.append(dict(table="table7", group="Axial Plane", row=metric, col_group=name, col="Val", metric=metric,
                         split="val", ours=ours, sd=math.nan, n_seeds=1, paper=paper, diff=ours - paper,
                         n_cases=3, n_excluded=n_excluded, status=status, runs=f"phantom/liver/{name}/axial"))
    return pd.DataFrame(rows)


def _conditions() -> dict[str, dict[str, pd.DataFrame]]:
    a = {"A": ("dice", 0.80, "ok", 0), "B": ("dice", 0.70, "ok", 0), "C": ("accuracy", 0.990, "ok", 0),
         "D": ("dice", 0.80, "ok", 0), "E": ("dice", 0.60, "ok", 0), "F": ("dice", 0.50, "ok", 0),
         "G": ("dice", 0.55, "ok", 0), "H": ("dice", math.nan, "nan", 1), "M": ("dice", math.nan, "missing", 0)}
    b = dict(a, A=("dice", 0.81, "ok", 0), B=("dice", 0.72, "ok", 0), C=("accuracy", 0.991, "ok", 0),
             D=("dice", 0.50, "ok", 0), E=("dice", 0.61, "ok", 1), F=("dice", math.nan, "nan", 3))
    c = dict(a, A=("dice", 0.805, "ok", 0), B=("dice", 0.71, "ok", 0), D=("dice", 0.79, "ok", 0))
    del c["G"]
    return {"s0": {"table7": _table(a)}, "s1": {"table7": _table(b)}, "s2": {"table7": _table(c)}}


def test_spread_tolerance_and_exclusion_on_synthetic_tables():
    from bench.golden.spread import FLOOR, SAFETY_FACTOR, UNSTABLE_SPREAD, calibrate

    cal, cells, spreads = calibrate(_conditions())
    assert sorted(cells["condition"].unique()) == ["s0", "s1", "s2"] and len(cells) == 9 + 9 + 8
    spread = {r["col_group"]: r for _, r in spreads.iterrows()}
    assert spread["A"]["spread_ours"] == pytest.approx(0.01) and spread["B"]["spread_ours"] == pytest.approx(0.02)
    assert spread["H"]["spread_ours"] == 0 and spread["M"]["spread_ours"] == 0  # NaN everywhere: NaN equals NaN
    assert math.isinf(spread["F"]["spread_ours"])

    # tolerance = safety x the largest spread over the stable cells of that column and metric + floor
    tol = cal.tolerances
    assert tol["ours:dice"]["abs"] == pytest.approx(SAFETY_FACTOR * 0.02 + FLOOR)
    assert tol["diff:dice"]["abs"] == pytest.approx(SAFETY_FACTOR * 0.02 + FLOOR)  # ours - a constant
    assert tol["ours:accuracy"]["abs"] == pytest.approx(SAFETY_FACTOR * 0.001 + FLOOR)
    assert tol["sd:dice"]["abs"] == pytest.approx(FLOOR)  # one seed per condition: sd NaN everywhere
    assert "0.02" in tol["ours:dice"]["why"] and "table7 [Axial Plane / dice / B / Val]" in tol["ours:dice"]["why"]
    assert tol["paper"]["abs"] == 0 and all(tol[c]["abs"] == 0 for c in ("n_cases", "n_excluded", "n_seeds"))
    assert cal.column_spread["ours:dice"]["stable_cells"] == 4  # A, B, H, M

    # unstable cells: value spread beyond the threshold, a count or status that varies, NaN in some
    # conditions only, a cell present in some conditions only - each with its reason
    excluded = {e["key"][2]: e for e in cal.excluded}
    assert set(excluded) == {"D", "E", "F", "G"}
    assert excluded["D"]["reason"] == f"ours spread 0.3 > {UNSTABLE_SPREAD:g}; diff spread 0.3 > {UNSTABLE_SPREAD:g}"
    assert excluded["D"]["spread"]["ours"] == pytest.approx(0.3) and excluded["D"]["range"]["ours"] == [0.5, 0.8]
    assert excluded["E"]["reason"] == "n_excluded varies: 0..1"  # a value spread of 0.01 alone would be stable
    assert "status varies: ok in 2, nan in 1" in excluded["F"]["reason"]
    assert "ours NaN in 1 of 3 conditions" in excluded["F"]["reason"] and excluded["F"]["spread"]["ours"] is None
    assert excluded["G"]["reason"] == "present in 2 of 3 conditions"
    assert all(e["table"] == "table7" and len(e["key"]) == 4 for e in cal.excluded)


def test_threshold_and_constants_are_parameters():
    from bench.golden.spread import calibrate, derive

    cal, _, spreads = calibrate(_conditions(), safety=3.0, floor=0.01)
    assert cal.tolerances["ours:dice"]["abs"] == pytest.approx(3 * 0.02 + 0.01)
    assert cal.constants["safety_factor"]["value"] == 3.0 and cal.constants["floor"]["why"]
    looser = derive(spreads, 3, unstable=0.5)  # D's 0.3 spread is now stable and sets the dice tolerance
    assert {e["key"][2] for e in looser.excluded} == {"E", "F", "G"}
    assert looser.tolerances["ours:dice"]["abs"] == pytest.approx(2 * 0.3 + 0.002)
    with pytest.raises(Exception, match="at least 2 conditions"):
        calibrate({"only": _conditions()["s0"]})


def test_compare_skips_excluded_cells_but_still_needs_them():
    from bench.golden.compare import compare_frames

    golden = _table({"A": ("dice", 0.80, "ok", 0), "D": ("dice", 0.80, "ok", 0)})
    tol = {"ours:dice": {"abs": 0.05}, "n_excluded": {"abs": 0}}
    skip = {("Axial Plane", "dice", "D", "Val")}
    moved = _table({"A": ("dice", 0.80, "ok", 0), "D": ("dice", math.nan, "nan", 2)})
    assert compare_frames("table7", golden, moved, tol, excluded=skip) == []
    assert {m.column for m in compare_frames("table7", golden, moved, tol)} == {"status", "ours", "n_excluded"}
    gone = compare_frames("table7", golden, moved.iloc[:1], tol, excluded=skip)
    assert [(m.key[2], m.column) for m in gone] == [("D", "(cell)")]  # an excluded cell must still exist
    beyond = compare_frames("table7", golden, _table({"A": ("dice", 0.86, "ok", 0), "D": ("dice", 0.1, "ok", 0)}),
                            tol, excluded=skip)
    assert [(m.key[2], m.column) for m in beyond] == [("A", "ours")]


# ---------------------------------------------------------------- conditions: seeds, kernel sets, threads


def test_conditions_pin_threads_through_workers_and_keep_the_reference_verbatim():
    from bench.golden.calibrate import conditions_for
    from bench.errors import ConfigError
    from bench.golden.study import DEFAULT_COMMAND

    two = conditions_for(DEFAULT_COMMAND, (0, 1, 2), ("native", "avx2"), (1, 2), cores=2)
    assert len(two) == 12 and len({c.name for c in two}) == 12
    ref = two[0]
    assert ref.name == "seed0-native-1t" and ref.command == DEFAULT_COMMAND  # what --check runs on 2 cores
    assert ref.env == {"ATEN_CPU_CAPABILITY": None, "ONEDNN_MAX_CPU_ISA": None, "OMP_NUM_THREADS": None,
                       "MKL_NUM_THREADS": None}
    by = {c.name: c for c in two}
    two_threads = shlex.split(by["seed1-avx2-2t"].command)
    assert two_threads[two_threads.index("--workers") + 1] == "1" and two_threads[-2:] == ["--seeds", "1"]
    assert two_threads[two_threads.index("--ablations") + 1] == ""  # the empty ablation list survives quoting
    assert by["seed1-avx2-2t"].env == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                                       "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    assert "--seeds" not in by["seed0-avx2-1t"].command and by["seed0-avx2-1t"].env["OMP_NUM_THREADS"] is None

    # 16 cores: 1 thread = 16 workers, 2 threads = 8; the command's own --workers 2 (8 threads) is the reference
    sixteen = conditions_for(DEFAULT_COMMAND, (0,), ("native",), (1, 2), cores=16)
    assert [c.name for c in sixteen] == ["seed0-native-8t", "seed0-native-1t", "seed0-native-2t"]
    assert sixteen[0].command == DEFAULT_COMMAND and not sixteen[0].pinned
    assert "--workers 16" in sixteen[1].command and "--workers 8" in sixteen[2].command
    assert sixteen[2].env["OMP_NUM_THREADS"] is None  # worker processes get cpu_count // workers threads

    for bad, match in ((dict(kernels=("native", "avx512")), "unknown kernel set 'avx512'"),
                       (dict(threads=(1, 3)), "--threads 3: this machine has 2 core"),
                       (dict(command=DEFAULT_COMMAND.replace("--workers 2", "--seeds 0,1")), "one seed"),
                       (dict(command="bench demo --profile golden"), "{results}")):
        args = dict(command=DEFAULT_COMMAND, seeds=(0,), kernels=("native",), threads=(1,), cores=2) | bad
        with pytest.raises(ConfigError, match=match):
            conditions_for(**args)


def test_a_condition_sets_and_removes_environment_variables_for_its_run_only(tmp_path, monkeypatch):
    from bench.errors import BenchError
    from bench.golden.train import _run, study_env

    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    env = study_env({"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": None})
    code = ("import os, sys, json; json.dump({k: os.environ.get(k) for k in ('ATEN_CPU_CAPABILITY', "
            "'ONEDNN_MAX_CPU_ISA', 'OMP_NUM_THREADS', 'CUDA_VISIBLE_DEVICES')}, open(sys.argv[1], 'w'))")
    out, log = tmp_path / "env.json", tmp_path / "run.log"
    _run([sys.executable, "-c", code, str(out)], "env probe", env, None, log)
    assert json.loads(out.read_text()) == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                                           "OMP_NUM_THREADS": None, "CUDA_VISIBLE_DEVICES": ""}
    assert os.environ["OMP_NUM_THREADS"] == "7"  # this process's environment is untouched
    with pytest.raises(BenchError, match=r"exit status 3: exit probe \(output in "):
        _run([sys.executable, "-c", "import sys; sys.exit(3)"], "exit probe", env, None, log)


def test_the_study_runs_this_packages_entry_point_with_validated_fields():
    """What a study runs is built by the code: this interpreter, ``-m bench demo``, the fields; never the text."""
    from bench.golden.study import DEFAULT_COMMAND, DEFAULT_STUDY, parse_study

    assert parse_study(DEFAULT_COMMAND, "m") == DEFAULT_STUDY and DEFAULT_STUDY.command() == DEFAULT_COMMAND
    argv = DEFAULT_STUDY.with_condition(1, 2).argv("/tmp/r")
    assert argv[:4] == [sys.executable, "-m", "bench", "demo"]
    assert argv[4:] == ["--profile", "golden", "--models", "unet,ours", "--planes", "axial", "--tasks", "liver",
                        "--ablations", "", "--budget", "epochs", "--workers", "1", "--no-report", "--results",
                        "/tmp/r", "--seeds", "2"]


# ---------------------------------------------------------------- the tool end to end, then the check


def _cell(frame: pd.DataFrame, **where: str) -> pd.Series:
    sel = pd.Series(True, index=frame.index)
    for k, v in where.items():
        sel &= frame[k] == v
    assert sel.sum() == 1, where
    return sel


# The stand-in study replaces `bench demo` in the argv the code builds (its options are the demo's; it ignores
# those it does not use): a test seam in the test's own process, not a way for a folder to run something.
STAND_IN = textwrap.dedent(f"""
    import sys
    from bench.golden import study
    _argv = study.GoldenStudy.argv
    study.GoldenStudy.argv = lambda self, results: [sys.executable, {str(FAKE)!r}, *_argv(self, results)[4:]]
    from bench.cli import main
    main()
""")


def bench_stand_in(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``bench ARGS`` with the stand-in study in place of the training study."""
    return subprocess.run([sys.executable, "-c", STAND_IN, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=bench_env())


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """A layer calibrated through the CLI over 2 seeds x native kernels x 1 thread (the stand-in study; every
    condition costs a process start), and the reference condition's results, prebuilt for ``--results``."""
    tmp = tmp_path_factory.mktemp("golden-train")
    layer = tmp / "train"
    proc = bench_stand_in("check", str(layer), "--calibrate", "--seeds", "0,1", "--kernels", "native", "--threads",
                          "1", "--tables", "3-7", cwd=tmp)
    results = tmp / "reference-results"  # the reference condition's results, as the check would build them
    built = subprocess.run([sys.executable, str(FAKE), "--workers", "2", "--results", str(results)],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    return layer, results, proc


def test_calibrate_writes_tables_tolerances_exclusions_and_its_record(calibrated):
    layer, _, proc = calibrated
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("golden calibrated (train layer): 2 conditions, ")
    manifest = json.loads((layer / "manifest.json").read_text())
    cal = manifest["calibration"]
    assert manifest["layer"] == "train" and manifest["tables"] == ["3", "4", "5", "6", "7"]
    assert [c["name"] for c in cal["conditions"]] == ["seed0-native-1t", "seed1-native-1t"]
    assert cal["conditions"][0]["reference"] and cal["conditions"][0]["command"] == manifest["command"]
    assert all(c["threads_recorded"] == [1] for c in cal["conditions"])
    assert cal["conditions"][1]["command"].endswith("--seeds 1") and cal["conditions"][1]["env"] == {}
    assert cal["conditions"][0]["env_removed"] == ["ATEN_CPU_CAPABILITY", "MKL_NUM_THREADS", "OMP_NUM_THREADS",
                                                   "ONEDNN_MAX_CPU_ISA"]
    assert cal["machine"]["capabilities"]["native"]
    assert cal["command"].startswith("bench check ") and "--calibrate --seeds 0,1" in cal["command"]
    assert cal["meets_minimum"]["value"] is False  # 2 seeds, 1 kernel set, 1 thread count
    assert cal["date"] and cal["versions"]["torch"] and cal["safety_factor"]["why"]
    # the collapsing test patient makes ours' test Dice and mIoU unstable; nothing else
    excluded = {(e["table"], tuple(e["key"])) for e in manifest["excluded"]}
    assert excluded == {("table7", ("Axial Plane", "Dice", "Ours", "Test")),
                        ("table7", ("Axial Plane", "mIoU", "Ours", "Test"))}
    assert all("ours spread" in e["reason"] and e["spread"]["ours"] > 0.1 for e in manifest["excluded"])
    tol = manifest["tolerances"]
    assert 0.002 < tol["ours:dice"]["abs"] < 0.02 and tol["ours:dice"]["why"].startswith("calibrated: 2 x ")
    assert cal["column_spread"]["ours:dice"]["tolerance"] == pytest.approx(tol["ours:dice"]["abs"], abs=1e-6)
    cells = pd.read_csv(layer / "calibration" / "cells.csv")
    assert sorted(cells["condition"].unique()) == sorted(c["name"] for c in cal["conditions"])
    assert (layer / "calibration" / "spread.csv").is_file() and (layer / "table7.csv").is_file()
    assert "golden check" not in proc.stdout  # calibrating is not checking


def _check(layer: Path, results: Path) -> subprocess.CompletedProcess:
    return bench("check", str(layer), "--results", str(results), cwd=layer.parent)


def test_check_passes_then_fails_beyond_tolerance_only(calibrated, tmp_path):
    import shutil

    layer, results, _ = calibrated
    ok = _check(layer, results)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip().endswith("(2 unstable cell(s) not compared)")

    copy = shutil.copytree(layer, tmp_path / "train")
    tol = json.loads((copy / "manifest.json").read_text())["tolerances"]["ours:dice"]["abs"]
    path = copy / "table7.csv"
    golden = pd.read_csv(path, keep_default_na=False, dtype=str)
    where = dict(group="Axial Plane", row="Dice", col_group="U-Net", col="Val")
    for delta, code in ((0.5 * tol, 0), (tol + 0.002, 1)):
        frame = golden.copy()
        sel = _cell(frame, **where)
        frame.loc[sel, "ours"] = repr(float(frame.loc[sel, "ours"].iloc[0]) + delta)
        frame.to_csv(path, index=False)
        proc = _check(copy, results)
        if code == 0:
            assert proc.returncode == 0, proc.stdout + proc.stderr
            continue
        line = assert_one_line_error(proc, "golden check failed", "1 difference", "(train)", code=1)
        assert str(copy) in line
        (mismatch,) = [m for m in proc.stdout.splitlines() if m.startswith("MISMATCH")]
        assert mismatch.startswith("MISMATCH train: table7 [Axial Plane / Dice / U-Net / Val] ours: golden ")
        assert f"> tol {tol:g}" in mismatch


def test_an_excluded_cell_never_fails_but_must_exist(calibrated, tmp_path):
    import shutil

    layer, results, _ = calibrated
    copy = shutil.copytree(layer, tmp_path / "train")
    path = copy / "table7.csv"
    golden = pd.read_csv(path, keep_default_na=False, dtype=str)
    sel = _cell(golden, group="Axial Plane", row="Dice", col_group="Ours", col="Test")
    frame = golden.copy()
    frame.loc[sel, ["ours", "diff", "status", "n_excluded"]] = ["0.01", "-0.9", "nan", "2"]
    frame.to_csv(path, index=False)
    proc = _check(copy, results)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    golden[~sel].to_csv(path, index=False)
    proc = _check(copy, results)
    assert proc.returncode == 1 and "table7 [Axial Plane / Dice / Ours / Test]: absent in golden, present now" in \
        proc.stdout


def test_update_golden_keeps_the_calibration(calibrated, tmp_path):
    import shutil

    layer, results, _ = calibrated
    copy = shutil.copytree(layer, tmp_path / "train")
    before = json.loads((copy / "manifest.json").read_text())
    proc = bench("check", str(copy), "--results", str(results), "--update-golden", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = json.loads((copy / "manifest.json").read_text())
    for key in ("tolerances", "excluded", "calibration", "command", "tables"):
        assert after[key] == before[key], key
    assert (copy / "calibration" / "cells.csv").is_file()


def test_calibration_options_are_checked(tmp_path):
    assert_one_line_error(bench("report", "--seeds", "0,1", cwd=tmp_path), "--seeds is a calibration option")
    assert_one_line_error(bench("report", "--calibrate", str(REPO / "results" / "golden" / "exact"), cwd=tmp_path),
                          "--calibrate is for a training layer")
    assert_one_line_error(bench("report", "--calibrate", str(tmp_path / "t"), "--threads", "1,x", cwd=tmp_path),
                          "--threads '1,x'")
    assert_one_line_error(bench("report", "--calibrate", str(tmp_path / "t"), "--check", "x", cwd=tmp_path),
                          "--calibrate runs the layer's study itself")
    # the same checks through `bench check`, and the alias spelling is what was recorded before
    assert_one_line_error(bench("check", str(tmp_path / "t"), "--seeds", "0,1", cwd=tmp_path),
                          "--seeds is a calibration option")
    assert_one_line_error(bench("check", str(REPO / "results" / "golden" / "exact"), "--calibrate", cwd=tmp_path),
                          "--calibrate is for a training layer")
    assert_one_line_error(bench("check", str(tmp_path / "t"), "--calibrate", "--results", "r", cwd=tmp_path),
                          "--calibrate runs the layer's study itself")


# ---------------------------------------------------------------- the committed layer is its calibration


def test_committed_train_layer_matches_its_calibration_files():
    """The manifest's tolerances and excluded cells are what the calibration arithmetic gives for the stored
    spreads, and the golden tables are the reference condition's cells."""
    from bench.golden.spread import derive

    manifest = json.loads((TRAIN / "manifest.json").read_text())
    cal = manifest["calibration"]
    assert manifest["layer"] == "train" and manifest["command"] == cal["study_command"]
    assert "--profile golden" in manifest["command"] and cal["conditions"][0]["reference"]
    spreads = pd.read_csv(TRAIN / cal["files"]["spread"], keep_default_na=False,
                          dtype={k: str for k in KEYS + ("metric", "structural")})
    spreads = spreads.replace({"": math.nan}).fillna({k: "" for k in KEYS + ("metric", "structural")})
    again = derive(spreads, len(cal["conditions"]), cal["safety_factor"]["value"], cal["floor"]["value"],
                   cal["unstable_spread"]["value"])
    assert {k: v["abs"] for k, v in again.tolerances.items()} == {k: v["abs"] for k, v in
                                                                 manifest["tolerances"].items()}
    assert [(e["table"], e["key"], e["reason"]) for e in again.excluded] == [
        (e["table"], e["key"], e["reason"]) for e in manifest["excluded"]]
    cells = pd.read_csv(TRAIN / cal["files"]["cells"], keep_default_na=False, dtype=str)
    reference = cells[cells["condition"] == cal["reference"]]
    for name in manifest["tables"]:
        golden = pd.read_csv(TRAIN / f"table{name}.csv", keep_default_na=False, dtype=str)
        ref = reference[reference["table"] == f"table{name}"]
        assert len(ref) == len(golden)
        assert list(ref["ours"]) == list(golden["ours"]) and list(ref["status"]) == list(golden["status"])


def test_committed_train_layer_fails_beyond_each_tolerance():
    """Every stable compared cell of the committed layer, moved just beyond its column's tolerance, is a
    mismatch; moved within it, or any excluded cell moved by 0.5, is not."""
    from bench.golden.compare import compare_tables, excluded_keys, tolerance_for

    manifest = json.loads((TRAIN / "manifest.json").read_text())
    skip = excluded_keys(manifest)
    golden = {f"table{n}": pd.read_csv(TRAIN / f"table{n}.csv", keep_default_na=False, dtype=str)
              for n in manifest["tables"]}
    assert compare_tables(TRAIN, golden) == []
    n_checked = 0
    for name, frame in golden.items():
        for i, row in frame.iterrows():
            key = tuple(row[k] for k in KEYS)
            if row["status"] != "ok":
                continue
            tol = tolerance_for(manifest["tolerances"], "ours", row["metric"])
            value = float(row["ours"])
            for delta, expect in ((0.9 * tol, 0), (tol + 1e-6, 0 if key in skip.get(name, ()) else 1),
                                  (0.5, 0 if key in skip.get(name, ()) else 1)):
                moved = dict(golden)
                moved[name] = frame.copy()
                moved[name].loc[i, "ours"] = repr(value + delta)
                found = [m for m in compare_tables(TRAIN, moved) if m.column == "ours"]
                assert len(found) == expect, (name, key, delta, found)
            n_checked += 1
    assert n_checked >= 30  # the U-Net and ours cells of Tables 3-7 (33 in the committed layer)
