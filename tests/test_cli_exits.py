"""Exit statuses you can script against (issue 10 item 1, issue 15 items 4 and 8), through the console script.

Every test runs ``bench`` in a subprocess, the way CI and users call it: typer's CliRunner
hid both the swallowed ``typer.Exit`` codes and the tracebacks of usage errors.
0 success/--help, 1 failed check, 2 user error (one line on stderr, no traceback),
130 SIGINT, 143 SIGTERM (one line, cleanup done, nothing half-written left).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cli_run import LAUNCHERS, assert_one_line_error, bench, bench_env


# ---------------------------------------------------------------- usage errors, --help, success


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_misspelt_verb_is_one_line_with_clicks_suggestion(tmp_path, launcher):
    line = assert_one_line_error(bench("trian", cwd=tmp_path, launcher=launcher), "No such command 'trian'",
                                 "Did you mean 'train'?")
    assert line.startswith("error: ")


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_unknown_option_is_one_line(tmp_path, launcher):
    proc = bench("predict", "unet", "--input", "x", "--output", "y", "--root", "z", cwd=tmp_path, launcher=launcher)
    assert_one_line_error(proc, "No such option: --root", "bench predict --help")


def test_misspelt_sub_verb_missing_argument_and_bad_value(tmp_path):
    assert_one_line_error(bench("data", "prepre", cwd=tmp_path), "No such command 'prepre'", "'prepare'")
    assert_one_line_error(bench("train", cwd=tmp_path), "Missing argument")
    assert_one_line_error(bench("data", "phantom", str(tmp_path / "p"), "--cases", "0", cwd=tmp_path), "--cases")
    assert not (tmp_path / "p").exists()


def test_unknown_model_and_unknown_name_are_user_errors(tmp_path):
    assert_one_line_error(bench("train", "unte", "--plane", "axial", cwd=tmp_path), "unknown model 'unte'", "unet")
    assert_one_line_error(bench("ls", "bogus", cwd=tmp_path), "unknown kind 'bogus'")


def test_help_and_success_exit_zero(tmp_path):
    for args in (["--help"], ["train", "--help"], ["data", "prepare", "--help"], ["ls", "ablations"]):
        proc = bench(*args, cwd=tmp_path)
        assert proc.returncode == 0 and proc.stderr == "", (args, proc.stderr)
    assert "Usage" in bench("--help", cwd=tmp_path).stdout


def test_bare_group_shows_help_and_exits_2_like_click(tmp_path):
    """``bench`` / ``bench data`` alone: the help, exit 2 (click >= 8.2: a missing command is a usage error)."""
    for args in ([], ["data"]):
        proc = bench(*args, cwd=tmp_path)
        assert proc.returncode == 2 and "Usage" in proc.stdout and "Traceback" not in proc.stderr


def test_bad_input_file_is_one_line(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "case.nii.gz").write_bytes(b"not a nifti at all")
    (tmp_path / "pred" / "case.nii.gz").write_bytes(b"not a nifti at all")
    assert_one_line_error(bench("score", "pred", "ref", "--out", "s", cwd=tmp_path), "case.nii.gz")


def test_traceback_only_on_request(tmp_path):
    """BENCH_TRACEBACK=1 shows the traceback of a user error (for bug reports); the status stays non-zero."""
    env = {**bench_env(), "BENCH_TRACEBACK": "1"}
    proc = subprocess.run([sys.executable, "-m", "bench", "ls", "bogus"], cwd=tmp_path, capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


# ---------------------------------------------------------------- golden check: exit 1 / exit 0


def _hand_made_results(root: Path) -> Path:
    """One complete U-Net axial liver run written with the real writers (no training): config.json,
    per_case.csv, metrics.csv and summary.json from per-case counts."""
    from bench.atomic import write_json
    from bench.config import RunConfig, get_profile, to_dict
    from bench.metrics.results import case_rows, write_evaluation
    from bench.paths import run_dir

    cfg = RunConfig(model="unet", plane="axial", task="liver", dataset="phantom", results=str(root),
                    profile=get_profile("smoke"))
    folder = run_dir(cfg)
    counts = {"v1": (80, 10, 12, 900), "v2": (60, 5, 30, 905), "t1": (70, 20, 5, 905), "t2": (90, 2, 2, 906)}
    rows = []
    for case, c in counts.items():
        rows += case_rows(case, {"liver": c}, split="val" if case.startswith("v") else "test")
    write_evaluation(folder, rows)
    write_json(folder / "config.json", {"config": to_dict(cfg), "status": "complete"})
    return root


def test_golden_check_passes_then_fails_on_a_moved_cell(tmp_path):
    results = _hand_made_results(tmp_path / "results")
    golden = tmp_path / "golden"
    made = bench("report", "--check", str(golden), "--results", str(results), "--tables", "7", "--update-golden",
                 cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    ok = bench("report", "--check", str(golden), "--results", str(results), cwd=tmp_path)
    assert ok.returncode == 0 and "golden check OK" in ok.stdout, ok.stdout + ok.stderr

    table = golden / "table7.csv"
    frame = pd.read_csv(table)
    row = frame.index[(frame["status"] == "ok") & (frame["metric"] == "dice") & (frame["split"] == "test")][0]
    frame.loc[row, "ours"] += 0.5
    frame.to_csv(table, index=False)
    bad = bench("report", "--check", str(golden), "--results", str(results), cwd=tmp_path)
    line = assert_one_line_error(bad, "golden check failed", "1 difference", code=1)
    assert str(golden) in line
    assert "MISMATCH" in bad.stdout and "U-Net" in bad.stdout


# ---------------------------------------------------------------- signals


@pytest.fixture(scope="module")
def signal_phantom(tmp_path_factory) -> Path:
    """Cases big enough (128x128x48) that a prepare spends a visible moment on each."""
    from bench.datasets.phantom import write_phantom

    root = tmp_path_factory.mktemp("sigphantom")
    write_phantom(root, cases=4, size=128, slices=48, seed=1)
    return root


def _temp_entries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name] if folder.exists() else []


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_prepare_exits_nonzero_and_leaves_no_half_case(tmp_path, signal_phantom, signum, code):
    cache = tmp_path / "cache"
    cmd = [*LAUNCHERS["python -m bench"], "data", "prepare", "--dataset", "phantom", "--root", str(signal_phantom),
           "--cache", str(cache), "--profile", "smoke"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=bench_env())
    deadline = time.monotonic() + 240
    try:
        while not any(p.is_dir() for p in _temp_entries(cache)):  # a case is being written right now
            assert proc.poll() is None, f"prepare ended before it could be interrupted: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no case temp folder appeared"
            time.sleep(0.002)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert lines == [f"interrupted ({signal.Signals(signum).name}); rerun the same command to continue "
                     f"(finished cases are kept)"], err
    assert err.strip().splitlines()[-1] == lines[0]
    assert _temp_entries(cache) == []  # the half-written case was removed on the way out
    for case_dir in (p for p in cache.glob("*/*/*") if p.is_dir()):
        assert (case_dir / "meta.json").is_file()  # every case left behind is complete
    if signum == signal.SIGINT:  # the rerun the message promises completes the cache (once is enough)
        again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=bench_env(), timeout=300)
        assert again.returncode == 0, again.stderr
        assert sorted(p.name for p in cache.glob("*/*/*") if p.is_dir()) == ["0", "1", "2", "3"]


def _children(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"  # a zombie has finished
    except OSError:
        return False


def test_sigterm_stops_a_studys_worker_processes(tmp_path, signal_phantom):
    """A killed `bench demo --workers 2` takes its training workers with it (they once trained on as orphans,
    and the parent waited for them inside ProcessPoolExecutor's exit)."""
    results = tmp_path / "res"
    cmd = [*LAUNCHERS["python -m bench"], "demo", "--root", str(signal_phantom), "--profile", "smoke", "--models",
           "unet,segnet", "--planes", "axial", "--tasks", "liver", "--ablations", "", "--budget", "epochs",
           "--workers", "2", "--no-report", "--results", str(results), "--cache", str(tmp_path / "cache")]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=bench_env())
    deadline = time.monotonic() + 240
    workers: set[int] = set()
    try:
        while len(workers) < 2:  # the pool's workers (and its resource tracker) have started
            assert proc.poll() is None, f"the study ended before it could be interrupted: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no worker processes appeared"
            workers = {c for c in _children(proc.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()}
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    time.sleep(1)
    assert [pid for pid in workers if _alive(pid)] == []
    # the workers were stopped, not waited for: neither run got as far as its evaluation
    assert sorted(results.rglob("metrics.csv")) == []


def test_interrupt_message_names_resume_for_train():
    from bench.cli.exits import interrupt_message

    assert interrupt_message(signal.SIGINT, ["train", "unet", "--plane", "axial"]) == (
        "interrupted (SIGINT); rerun with --resume to continue from the last checkpoint")
    assert interrupt_message(signal.SIGTERM, ["score", "a", "b"]) == "interrupted (SIGTERM)"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_children_keep_default_signal_behaviour():
    """DataLoader workers are forked with the handler installed: they must see KeyboardInterrupt on
    SIGINT (torch's worker loop swallows it quietly) and die on SIGTERM, not raise `Interrupted`."""
    from bench.cli.exits import Interrupted, signals_as_exceptions

    with signals_as_exceptions():
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                time.sleep(30)
            except KeyboardInterrupt:
                os._exit(7)
            except BaseException:
                os._exit(9)
            os._exit(0)
        time.sleep(0.5)
        os.kill(pid, signal.SIGINT)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                time.sleep(30)
            finally:
                os._exit(9)
        time.sleep(0.5)
        os.kill(pid, signal.SIGTERM)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == -signal.SIGTERM
        with pytest.raises(Interrupted) as caught:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        assert caught.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored on exit


def test_run_maps_every_outcome_to_its_status(capsys):
    """`bench.cli.exits.run` on a throwaway app: each way out of a command and its status and line."""
    import typer

    from bench.cli.exits import run
    from bench.errors import DataError

    app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)

    @app.command()
    def ok() -> None:
        print("fine")

    @app.command()
    def check(code: int) -> None:
        raise typer.Exit(code)

    @app.command()
    def user() -> None:
        raise DataError("first line\nsecond line")

    @app.command()
    def disk() -> None:
        raise PermissionError(13, "Permission denied", "/data/out/table.csv")

    @app.command()
    def abort() -> None:
        raise typer.Abort()

    @app.command()
    def bug() -> None:
        raise ZeroDivisionError("a real bug keeps its traceback")

    expected = {("ok",): (0, ""), ("check", "1"): (1, ""), ("check", "0"): (0, ""),
                ("user",): (2, "error: first line second line"),
                ("disk",): (2, "error: /data/out/table.csv: Permission denied"),
                ("abort",): (1, "error: aborted"), ("nope",): (2, "error: No such command 'nope'.")}
    for args, (code, line) in expected.items():
        assert run(app, list(args)) == code, args
        err = capsys.readouterr().err.strip()
        assert err.startswith(line) and len(err.splitlines()) <= 1, (args, err)
    with pytest.raises(ZeroDivisionError):
        run(app, ["bug"])
