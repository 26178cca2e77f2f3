"""The CLI as users call it: one-line errors, and train -> evaluate -> report wiring."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app


def _bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_unknown_model_is_one_line_with_suggestion(tmp_path):
    proc = _bench("train", "unte", "--plane", "axial", cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "did you mean unet" in lines[0] and "Traceback" not in proc.stderr


def test_missing_root_names_the_path(tmp_path):
    proc = _bench("data", "prepare", "--dataset", "lits", "--root", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert proc.returncode == 2 and "nowhere" in proc.stderr and "Traceback" not in proc.stderr


def test_train_ours_then_evaluate_and_report_via_cli(tmp_path, tiny_phantom):
    runner = CliRunner()
    common = ["--dataset", "phantom", "--root", str(tiny_phantom), "--results", str(tmp_path / "results"),
              "--cache", str(tmp_path / "cache"), "--device", "cpu"]
    train = runner.invoke(app, ["train", "ours", "--plane", "axial", "--profile", "smoke", *common,
                                "--set", "input_size=32", "--set", "train.epochs=1", "--set", "train.steps_per_epoch=2",
                                "--set", "cascade.max_reiterations=0"])
    assert train.exit_code == 0, train.output
    folder = tmp_path / "results" / "phantom" / "liver" / "ours" / "axial"
    assert json.loads((folder / "config.json").read_text())["config"]["profile"]["cascade"]["max_reiterations"] == 0
    evaluate = runner.invoke(app, ["evaluate", "ours", "--plane", "axial", "--split", "test", *common[:2],
                                   "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache"),
                                   "--device", "cpu"])
    assert evaluate.exit_code == 0, evaluate.output
    report = runner.invoke(app, ["report", "--results", str(tmp_path / "results"), "--tables", "7", "--format", "md"])
    assert report.exit_code == 0, report.output
    table = (tmp_path / "results" / "report" / "table7.md").read_text()
    assert "Ours" in table and "bench train segnet" in table  # a missing baseline says how to make it


@pytest.mark.slow
def test_unet_learns_the_phantom_at_the_demo_profile(tmp_path):
    """Issue 4's learning check: U-Net liver Dice on the phantom's test cases above 0.8 (demo profile)."""
    proc = _bench("train", "unet", "--plane", "axial", "--profile", "demo", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "results/phantom/liver/unet/axial/summary.json").read_text())
    assert summary["splits"]["test"]["classes"]["liver"]["mean"]["dice"] > 0.8
