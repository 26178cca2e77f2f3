"""``progress.png`` beside every run's history.csv: training loss and validation Dice per epoch.

nnU-Net users look at a fold's ``progress.png`` first; ours shows the same two curves from
history.csv (columns stage, epoch, train_loss, val_dice, seconds; epochs 1-based, as the log
prints them). A cascade trains several stages in turn (localizer, tuner, reiter1..k: each starts
again at epoch 1), so the x axis counts every epoch of the run in training order and each stage
is its own coloured segment, named in the legend. Drawn on an Agg canvas (no pyplot, no display),
small and at low resolution: it is written once per run and must stay cheap; written atomically.
It lives with the engine that writes history.csv; the report links the file by its name
(``bench.paths.PROGRESS``) and never imports this module (reports and engine stay apart).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.atomic import atomic_path
from bench.paths import PROGRESS


def progress_figure(history: pd.DataFrame, path: str | Path, title: str = "") -> Path | None:
    """Draw loss and validation Dice per epoch (per stage) into ``path``; None when there is no epoch."""
    if history.empty or not {"stage", "epoch", "train_loss", "val_dice"} <= set(history.columns):
        return None
    frame = history.reset_index(drop=True)
    x = pd.Series(range(1, len(frame) + 1))
    fig = Figure(figsize=(8, 3.2))
    FigureCanvasAgg(fig)
    loss_ax, dice_ax = fig.subplots(1, 2)
    for i, stage in enumerate(dict.fromkeys(frame["stage"])):
        rows = frame.index[frame["stage"] == stage]
        color = f"C{i % 10}"
        loss_ax.plot(x[rows], frame.loc[rows, "train_loss"], marker=".", color=color, label=str(stage))
        dice_ax.plot(x[rows], frame.loc[rows, "val_dice"], marker=".", color=color, label=str(stage))
    loss_ax.set(xlabel="epoch (all stages in training order)", ylabel="training loss", title="loss")
    dice_ax.set(xlabel="epoch (all stages in training order)", ylabel="validation Dice (mean per case)",
                title="validation Dice", ylim=(0, 1))
    dice_ax.legend(fontsize="small", loc="lower right")
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=72)
    return Path(path)


def write_progress(history_csv: str | Path, title: str = "") -> Path | None:
    """``progress.png`` beside a run's history.csv (the file the runner just wrote)."""
    history_csv = Path(history_csv)
    return progress_figure(pd.read_csv(history_csv), history_csv.with_name(PROGRESS), title)
