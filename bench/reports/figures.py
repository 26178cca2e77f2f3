"""Figures (PNG): Fig. 16 (metrics per reiteration), Figs. 17/18 (CT, ground truth, ROI, tuned
segmentation) and a per-case Dice box plot per model and plane.

Drawn with matplotlib's object API on an Agg canvas (never pyplot), so reports render on a
headless CI machine and never change the backend of a caller's session. Every figure uses the
same run selection as the tables beside it (`bench.reports.select`); a figure whose inputs are
missing is skipped with a note saying how to produce them, never an error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.atomic import atomic_path
from bench.models import model_label, model_order, proposed_model
from bench.reports import paper
from bench.reports.collect import Results
from bench.reports.select import ReportOptions, Scope, resolve_scope, select_runs
from bench.reports.tables import (
    METRIC_LABELS, PLANE_ROWS, ablate_command, per_case_dice, reiteration_runs, train_command,
)

EXAMPLE_KEYS = ("image", "ground_truth", "roi", "prediction")
EXAMPLE_TITLES = ("(a) CT slice", "(b) ground truth", "(c) ROI (localization)", "(d) tuned segmentation")
MAX_EXAMPLE_ROWS = 4


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def fig_reiterations(results: Results, scope: Scope, path: Path) -> tuple[Path | None, list[str]]:
    """Fig. 16: Accuracy, Dice and mIoU against reiteration N, Val and Test (paper's curves dashed)."""
    runs, notes = reiteration_runs(results, scope)
    if runs.empty:
        return None, [f"fig16 skipped: no reiteration.csv ({ablate_command('iterations', scope.dataset, scope.profile)})"]
    data = results.reiterations[results.reiterations["run_id"].isin(runs["run_id"])]
    fig = Figure(figsize=(12, 3.6))
    for i, metric in enumerate(paper.METRICS):
        ax = fig.add_subplot(1, 3, i + 1)
        for split, color in (("val", "tab:blue"), ("test", "tab:orange")):
            part = data[data["split"] == split].groupby("iteration")[metric]
            mean, sd = part.mean(), part.std(ddof=1)
            if mean.empty:
                continue
            ax.errorbar(mean.index, mean.values, yerr=sd.fillna(0).values, marker="o", color=color,
                        capsize=3, label=f"ours {split.capitalize()}")
            ref = [(n, v) for (n, m, s), v in paper.TABLE5.items() if m == metric and s == split]
            ax.plot(*zip(*sorted(ref)), linestyle="--", color=color, alpha=0.5, label=f"paper {split.capitalize()}")
        ax.set_title(METRIC_LABELS[metric])
        ax.set_xlabel("reiteration N")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8)
    fig.suptitle(f"Fig. 16: metrics per reiteration (ours, liver, axial; {scope.dataset}/{scope.profile}; "
                 f"runs: {', '.join(sorted(runs['run_id']))})", fontsize=9)
    return _save(fig, path), notes


def _load_examples(path: str) -> dict[str, np.ndarray] | str:
    """The four example stacks of an examples.npz, or a reason it cannot be drawn."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in EXAMPLE_KEYS if k not in npz.files]
            if missing:
                return f"{path} lacks {', '.join(missing)}"
            arrays = {k: np.asarray(npz[k]) for k in EXAMPLE_KEYS}
            cases = np.asarray(npz["case"]).astype(str) if "case" in npz.files else None
    except (OSError, ValueError) as exc:
        return f"{path} unreadable ({type(exc).__name__})"
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or arrays["image"].ndim != 3 or arrays["image"].shape[0] == 0:
        return f"{path}: arrays must share one (N, H, W) shape, got {sorted(shapes)}"
    if cases is not None and len(cases) == arrays["image"].shape[0]:
        arrays["case"] = cases
    return arrays


def fig_examples(results: Results, scope: Scope, task: str, path: Path, figure_no: int) -> tuple[Path | None, list[str]]:
    """Figs. 17/18: one row per example slice of the proposed model's run (ours): CT, ground truth, ROI, tuned
    segmentation."""
    ours = proposed_model()
    chosen = None
    for plane in ("axial", "coronal", "sagittal"):
        runs, _ = select_runs(results, dataset=scope.dataset, profile=scope.profile, model=ours, task=task,
                              plane=plane)
        runs = runs[runs["examples"] != ""] if not runs.empty else runs
        if not runs.empty:
            chosen = runs.sort_values("seed").iloc[0]
            break
    name = f"fig{figure_no}"
    if chosen is None:
        return None, [f"{name} skipped: no examples.npz in an {ours} {task} run "
                      f"({train_command(ours, task, 'axial', scope.dataset, scope.profile)})"]
    arrays = _load_examples(chosen["examples"])
    if isinstance(arrays, str):
        return None, [f"{name} skipped: {arrays}"]
    n = min(MAX_EXAMPLE_ROWS, arrays["image"].shape[0])
    fig = Figure(figsize=(10, 2.6 * n))
    for r in range(n):
        for c, (key, title) in enumerate(zip(EXAMPLE_KEYS, EXAMPLE_TITLES)):
            ax = fig.add_subplot(n, 4, r * 4 + c + 1)
            img = arrays[key][r]
            # masks on a fixed [0, 1] scale so an empty mask is black, not a rescaled blank
            scale = {} if key == "image" else {"vmin": 0.0, "vmax": max(1.0, float(np.nanmax(img)))}
            ax.imshow(img, cmap="gray", interpolation="nearest", **scale)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0 and "case" in arrays:
                ax.set_ylabel(str(arrays["case"][r]), fontsize=8)
    fig.suptitle(f"Fig. {figure_no}: {task} ({chosen['run_id']})", fontsize=10)
    return _save(fig, path), []


def fig_dice_boxplot(results: Results, scope: Scope, task: str, path: Path) -> tuple[Path | None, list[str]]:
    """Per-case test Dice (seeds averaged per case) of each model with runs (registry order), one panel per plane present."""
    panels: list[tuple[str, list[str], list[np.ndarray]]] = []
    for plane in PLANE_ROWS:
        labels, data = [], []
        for model in sorted(set(results.runs["model"]) if not results.runs.empty else (), key=model_order):
            runs, _ = select_runs(results, dataset=scope.dataset, profile=scope.profile, model=model, task=task,
                                  plane=plane)
            dice = per_case_dice(results, runs, "test").dropna()
            if len(dice):
                labels.append(model_label(model))
                data.append(dice.to_numpy())
        if data:
            panels.append((plane, labels, data))
    if not panels:
        return None, [f"dice_boxplot_{task} skipped: no per_case.csv with test cases for task {task}"]
    fig = Figure(figsize=(3.2 * len(panels) + 0.8, 3.6))
    for i, (plane, labels, data) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, fontsize=8)
        for j, values in enumerate(data):  # the cases themselves: test sets are small
            ax.scatter(np.full(values.size, j + 1.0), values, s=8, alpha=0.6, color="k", zorder=3)
        ax.set_title(plane, fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3, axis="y")
        if i == 0:
            ax.set_ylabel("per-case Dice (test)")
    fig.suptitle(f"Per-case Dice, {task} ({scope.dataset}/{scope.profile})", fontsize=10)
    return _save(fig, path), []


def write_figures(results: Results, options: ReportOptions, out_dir: str | os.PathLike) -> tuple[list[Path], list[str]]:
    """All figures into ``out_dir``; returns the files written and notes on the ones skipped."""
    out = Path(out_dir)
    scope = resolve_scope(results, options)
    jobs = [
        lambda: fig_reiterations(results, scope, out / "fig16_reiterations.png"),
        lambda: fig_examples(results, scope, "liver", out / "fig17_liver.png", 17),
        lambda: fig_examples(results, scope, "lesion", out / "fig18_lesion.png", 18),
        lambda: fig_dice_boxplot(results, scope, "liver", out / "dice_boxplot_liver.png"),
        lambda: fig_dice_boxplot(results, scope, "lesion", out / "dice_boxplot_lesion.png"),
    ]
    written, notes = [], []
    for job in jobs:
        path, job_notes = job()
        notes += job_notes
        if path is not None:
            written.append(path)
    return written, notes

