"""``bench predict MODEL --input CT --output MASK``: segment a new CT with trained runs.

The CT (NIfTI file or DICOM folder) is preprocessed with the run's own saved preprocessing,
predicted along each requested plane, fused by soft voting when there are several, thresholded
at 0.5, post-processed like the run, and written as a NIfTI on the input's grid and affine.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from bench.cli import app
from bench.cli.common import build_run_config, parse_planes
from bench.cli.paths_check import output_not_input, writable_file
from bench.errors import ConfigError
from bench.paths import RESULTS_ENV


@app.command("predict")
def predict(
    model: str = typer.Argument(..., help="a trained model: {models}"),
    input: Path = typer.Option(..., "--input", help="CT as .nii/.nii.gz or a DICOM folder"),
    output: Path = typer.Option(..., "--output", help="mask to write (.nii.gz)"),
    planes: str = typer.Option("axial", "--planes", help="comma-separated planes, e.g. axial,coronal,sagittal (fused by soft voting)"),
    task: str = typer.Option("liver", "--task", help="liver | lesion | both (both writes 0/1/2)"),
    dataset: str = typer.Option("phantom", "--dataset", help="the data set the runs were trained on: {datasets}"),
    device: str = typer.Option("auto", "--device"),
    results: str = typer.Option("results", "--results", envvar=RESULTS_ENV, help="results root"),
    tag: str = typer.Option("", "--tag"),
) -> None:
    """Segment one CT volume with trained runs and write a NIfTI mask."""
    # before anything slow is imported or read: never overwrite the input, fail before predicting
    output_not_input(output, input)
    if not output.name.lower().endswith((".nii", ".nii.gz")):
        raise ConfigError(f"--output {output}: the mask is written as NIfTI; end the name in .nii or .nii.gz")
    writable_file(output, "--output")
    from bench.engine.predict import predict_file  # lazy: torch

    plane_list = parse_planes(planes)
    tasks = ["liver", "lesion"] if task == "both" else [task]
    cfgs = {t: [build_run_config(model, p, t, dataset, None, None, 0, device, results, "cache", None, None, tag)
                for p in plane_list] for t in tasks}
    out = predict_file(input, output, cfgs, say=lambda text: Console().print(f"using {text}", highlight=False,
                                                                               soft_wrap=True, markup=False))
    Console().print(f"[green]wrote[/green] {out}")
