"""``bench score PRED_DIR GT_DIR``: evaluate any folder of NIfTI label maps against references.

Predictions from any tool (nnU-Net, TotalSegmentator, ``bench predict``) go through the same
counts, scores and writer as our own runs (rules in `bench.metrics.folder`). Output goes to
``--out`` (default ``./score-<name of PRED_DIR>``): per_case.csv, metrics.csv, summary.json, with
Accuracy, Dice, IoU, mIoU, VOE and RVD per case and class, and with ``--surface`` the distances
HD95, ASSD, MSSD, RMSD (mm) and NSD (the LiTS metric set plus MONAI's); the lesion class also gets
lesion detection (`bench.metrics.lesions`: lesion-wise recall, precision, F1, false-positive lesions,
recall by size) under ``--lesion-match`` / ``--lesion-connectivity``. ``--empty-reference`` sets the
overlap scores of a case whose reference is empty (a lesion-free patient): ``nan`` (default, left
out of the mean and counted; its false positives judge it) or ``zero`` (nnU-Net's Dice 0).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from bench.cli import app
from bench.cli.paths_check import writable_dir
from bench.config import EMPTY_REFERENCE_RULES, LESION_MATCHES
from bench.errors import ConfigError


@app.command("score")
def score(
    pred_dir: Path = typer.Argument(..., help="folder of predicted label maps (.nii / .nii.gz; 0/1/2)"),
    gt_dir: Path = typer.Argument(..., help="folder of reference label maps (LiTS segmentation-N or identical names)"),
    task: str = typer.Option("both", "--task", help="liver | lesion | both"),
    out: Path = typer.Option(None, "--out", help="output folder (default ./score-<name of PRED_DIR>)"),
    surface: bool = typer.Option(False, "--surface", help="also HD95, surface Dice (NSD), ASSD, MSSD, RMSD in mm; slower"),
    tolerance: float = typer.Option(1.0, "--tolerance", help="NSD tolerance in mm (with --surface)"),
    connectivity: int = typer.Option(1, "--connectivity", help="surface voxels (with --surface): 1 = face "
                                     "neighbours (MONAI), 2 = faces + edges (the LiTS script's 18-neighbourhood)"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda: where voxels are counted"),
    lesion_match: str = typer.Option("overlap", "--lesion-match", help="lesion detection (lesion class): overlap "
                                     "= a reference lesion is found when a predicted component touches it; iou50 = "
                                     "its overlap group's IoU > 0.5 (LiTS' strict rule)"),
    lesion_connectivity: int = typer.Option(3, "--lesion-connectivity", help="3-D neighbourhood of a lesion's "
                                            "components: 1 = 6 faces, 2 = 18, 3 = 26 (default)"),
    empty_reference: str = typer.Option("nan", "--empty-reference", help="a case whose reference is empty for a "
                                        "class (a lesion-free patient): nan = Dice/IoU/mIoU/VOE NaN, left out of the "
                                        "mean and counted, judged by its false positives; zero = Dice 0 (nnU-Net)"),
) -> None:
    """Score NIfTI predictions against references matched by case id; prints the table."""
    out_dir = out if out is not None else Path.cwd() / f"score-{Path(pred_dir).resolve().name}"
    writable_dir(out_dir, "--out")
    from bench.metrics.folder import TASK_CHOICES, score_folders  # lazy: pandas, torch
    from bench.metrics.results import print_summary  # lazy: pandas, torch

    if task not in TASK_CHOICES:
        raise ConfigError(f"unknown --task {task!r} (known: {', '.join(TASK_CHOICES)})")
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ConfigError(f"unknown --device {device!r} (known: auto, cpu, cuda)")
    if lesion_match not in LESION_MATCHES:
        raise ConfigError(f"unknown --lesion-match {lesion_match!r} (known: {', '.join(LESION_MATCHES)})")
    if empty_reference not in EMPTY_REFERENCE_RULES:
        raise ConfigError(f"unknown --empty-reference {empty_reference!r} (known: {', '.join(EMPTY_REFERENCE_RULES)})")
    if lesion_connectivity not in (1, 2, 3):
        raise ConfigError(f"--lesion-connectivity must be 1, 2 or 3, got {lesion_connectivity}")
    err = Console(stderr=True)
    console = Console()

    def warn(msg: str) -> None:
        err.print(f"[yellow]warning:[/yellow] {msg}", highlight=False, soft_wrap=True)

    if Path(pred_dir).resolve() == Path(gt_dir).resolve():
        warn(f"{pred_dir} and {gt_dir} are the same folder: every case is scored against itself "
             f"(Dice 1 wherever the reference is not empty)")
    result = score_folders(pred_dir, gt_dir, out_dir, task=task, surface=surface, tolerance_mm=tolerance,
                           device=device, warn=warn, connectivity=connectivity, lesion_match=lesion_match,
                           lesion_connectivity=lesion_connectivity, empty_reference=empty_reference)
    print_summary(result.summary, title=f"bench score: {Path(pred_dir).name} vs {Path(gt_dir).name}", console=console)
    if result.missing:
        console.print(f"[yellow]{len(result.missing)} missing prediction(s) scored as empty[/yellow]", highlight=False)
    console.print(f"wrote {out_dir}/per_case.csv, metrics.csv, summary.json", highlight=False, soft_wrap=True)
