"""progress.png per run and the report's links to it (issue 21, item 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.reports.collect import Results
from bench.engine.curves import progress_figure, write_progress
from bench.paths import PROGRESS
from bench.reports.report import training_curves


def _history() -> pd.DataFrame:
    rows = []
    for stage, epochs in (("localizer", 3), ("tuner", 4), ("reiter1", 2)):
        rows += [{"stage": stage, "epoch": e, "train_loss": 1.0 / e, "val_dice": 0.2 * e / epochs, "seconds": 1.0}
                 for e in range(1, epochs + 1)]
    return pd.DataFrame(rows)


def _pixels(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    return imread(str(path))


def test_curve_per_stage_is_drawn_and_depends_on_the_history(tmp_path: Path) -> None:
    history = _history()
    (tmp_path / "a").mkdir()
    history.to_csv(tmp_path / "a" / "history.csv", index=False)
    first = write_progress(tmp_path / "a" / "history.csv", "ours liver axial")
    assert first == tmp_path / "a" / PROGRESS and first.read_bytes()[:4] == b"\x89PNG"
    changed = history.assign(val_dice=history["val_dice"][::-1].to_numpy())
    second = progress_figure(changed, tmp_path / "b.png", "ours liver axial")
    a, b = _pixels(first), _pixels(second)
    assert a.shape == b.shape and not np.array_equal(a, b)  # the curves are drawn from the data
    assert not list(tmp_path.glob("**/*.tmp*"))  # written atomically: no temp file left


def test_no_epoch_no_figure(tmp_path: Path) -> None:
    assert progress_figure(pd.DataFrame(columns=["stage", "epoch", "train_loss", "val_dice"]), tmp_path / "p.png") is None
    assert not (tmp_path / "p.png").exists()


def test_report_index_links_each_runs_curves(tmp_path: Path) -> None:
    run_a, run_b = tmp_path / "results/phantom/liver/unet/axial", tmp_path / "results/phantom/liver/ours/axial"
    for folder in (run_a, run_b):
        folder.mkdir(parents=True)
    progress_figure(_history(), run_a / PROGRESS)
    runs = pd.DataFrame({"run_id": ["phantom/liver/unet/axial", "phantom/liver/ours/axial"],
                         "run_dir": [str(run_a), str(run_b)]})
    empty = pd.DataFrame()
    results = Results(str(tmp_path / "results"), runs, empty, empty, empty)
    lines = training_curves(results, tmp_path / "results" / "report")
    assert "[`phantom/liver/unet/axial`](../phantom/liver/unet/axial/progress.png)" in "\n".join(lines)
    assert "ours" not in "\n".join(lines)  # a run without a curve is not linked


def test_data_phantom_prints_plain_progress_lines_without_a_tty(tmp_path: Path) -> None:
    """stdout is a pipe here: one flushed line per case (rich would draw nothing until the end)."""
    from tests.cli_run import bench

    proc = bench("data", "phantom", str(tmp_path / "ph"), "--cases", "2", "--size", "32", "--slices", "8",
                 cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("phantom ")]
    assert len(lines) >= 2 and lines[0].startswith("phantom 1/2 ") and lines[1].startswith("phantom 2/2 "), proc.stdout
