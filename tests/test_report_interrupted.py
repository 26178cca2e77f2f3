"""An interrupted ``bench report`` leaves no partial folder (issue 20, item 6).

The report is written into a temporary sibling and renamed onto its folder at the end
(`bench.atomic.staged_dir`). The signal is delivered deterministically: the console script runs with
the table writer wrapped so that, after the first table is written, the process sends itself SIGTERM
(what a user's kill does), through the real signal handler. Before: the folder is absent (a first
report) or holds an earlier report, which must survive unchanged; nothing ``.tmp-`` is left beside it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cli_run import assert_one_line_error, bench, bench_env

FAKE = Path(__file__).resolve().parent / "golden_fake_study.py"

KILL_AFTER_FIRST_TABLE = textwrap.dedent("""
    import os, signal
    from bench.reports import report
    _write_table = report.write_table
    def _then_killed(*args, **kwargs):
        out = _write_table(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return out
    report.write_table = _then_killed
    from bench.cli import main
    main()
""")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """Two runs' results (U-Net and ours, liver, axial) from the stand-in study: no training."""
    out = tmp_path_factory.mktemp("report-interrupted") / "results"
    made = subprocess.run([sys.executable, str(FAKE), "--results", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert made.returncode == 0, made.stderr
    return out


def _killed_report(results: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_TABLE, "report", "--results", str(results),
                           "--out", str(out), "--tables", "7", "--no-figures"], capture_output=True, text=True,
                          env=bench_env(), cwd=out.parent, timeout=300)


def test_interrupted_first_report_leaves_no_folder(results, tmp_path):
    out = tmp_path / "report"
    proc = _killed_report(results, out)
    assert proc.returncode == 143, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary sibling either


def test_interrupted_report_keeps_the_earlier_one_and_a_finished_one_replaces_it(results, tmp_path):
    out = tmp_path / "report"
    first = bench("report", "--results", str(results), "--out", str(out), "--tables", "7", "--no-figures",
                  cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.strip().endswith(f"-> {out / 'index.md'}") or str(out / "index.md") in first.stdout
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (out / "stale.md").write_text("from an older report")
    proc = _killed_report(results, out)
    assert proc.returncode == 143, proc.stdout + proc.stderr
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == {**before, Path("stale.md"): b"from an older report"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    again = bench("report", "--results", str(results), "--out", str(out), "--tables", "7", "--no-figures",
                  cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert not (out / "stale.md").exists() and (out / "table7.csv").is_file()  # replaced as a whole


def test_a_folder_that_is_not_a_report_is_not_replaced(results, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    proc = bench("report", "--results", str(results), "--out", str(out), "--tables", "7", "--no-figures",
                 cwd=tmp_path)
    assert_one_line_error(proc, f"--out {out}", "not a report folder")
    assert (out / "notes.txt").read_text() == "keep me" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
