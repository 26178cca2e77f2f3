"""Whole-volume prediction for files outside any data set (``bench predict``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.config import RunConfig
from bench.errors import DataError


def read_ct(path: Path) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float, float], str]:
    """(image HU (Z,Y,X), affine, spacing, kind) from a NIfTI file or a DICOM folder/zip."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: input not found")
    if path.is_dir() or path.suffix.lower() == ".zip":
        from bench.datasets.dicom import read_dicom_series

        image, spacing, affine = read_dicom_series(path)
        return image, affine, spacing, "dicom"
    if path.name.endswith((".nii", ".nii.gz")):
        from bench.datasets.nifti import load_nifti_zyx

        image, spacing, affine = load_nifti_zyx(path)
        return image, affine, spacing, "nifti"
    raise DataError(f"{path}: expected a .nii/.nii.gz file or a DICOM folder")


def predict_volume_probs(image_hu: np.ndarray, cfg: RunConfig, device: torch.device,
                         spacing: tuple[float, float, float] | None = None, source: object = "input") -> np.ndarray:
    """Probability volume (Z,Y,X) of one plane run on a raw HU volume (the run's own preprocessing)."""
    from bench.datasets.preprocess import preprocess_volume
    from bench.engine.evaluate import load_predictor
    from bench.engine.infer import predict_volume
    from bench.engine.precision import Precision

    from bench.models.lesion_roi import data_profile

    predict, _ = load_predictor(cfg, device)
    grid = data_profile(cfg)  # the slice grid the model predicts on (finer for a liver-ROI lesion run)
    if grid.preprocess.slice_fit == "spacing" and spacing is not None:  # refused before allocating
        from bench.datasets.planes import check_resample

        check_resample(image_hu.shape, spacing, [cfg.plane], grid.preprocess.spacing_mm, source)
    pre = preprocess_volume(image_hu, grid.preprocess)
    return predict_volume(predict, pre, cfg.plane, grid.input_size, grid.preprocess.slice_fit,
                          cfg.profile.train.batch_size, device,
                          precision=Precision.for_device(device, cfg.profile.train), spacing=spacing,
                          target_mm=grid.preprocess.spacing_mm)


def predict_file(input_path: Path, output_path: Path, cfgs_by_task: dict[str, list[RunConfig]],
                 say: Callable[[str], None] = print) -> Path:
    """Predict each task with its plane runs (soft voting over planes) and write one label map.

    ``say`` gets one line per run used (its folder and checkpoint); an input far outside the
    geometry a run was trained on (`bench.engine.geometry.far_from_training`) is a one-line warning.
    """
    from bench.datasets.nifti import save_nifti_zyx
    from bench.devices import resolve_device
    from bench.engine.sources import postprocess_rule
    from bench.engine.infer import fuse_soft, postprocess
    from bench.engine.records import stored_config

    image, affine, spacing, kind = read_ct(input_path)
    if affine is None:
        affine = np.diag([spacing[0], spacing[1], spacing[2], 1.0])
    label = np.zeros(image.shape, dtype=np.uint8)
    for task in ("liver", "lesion"):
        if task not in cfgs_by_task:
            continue
        stored = [stored_config(c) for c in cfgs_by_task[task]]
        for c in stored:
            _name_run(c, input_path, image.shape, spacing, say)
        device = resolve_device(stored[0].device)
        probs = fuse_soft([predict_volume_probs(image, c, device, spacing, input_path) for c in stored])
        mode, min_voxels = postprocess_rule(stored[0])
        mask = postprocess(probs > 0.5, mode, min_voxels)
        value = 1 if task == "liver" or len(cfgs_by_task) == 1 else 2
        label[mask] = value
    # a NIfTI input gets the mask back in its own axis order, affine and qform/sform codes
    save_nifti_zyx(output_path, label, affine, like=Path(input_path) if kind == "nifti" else None)
    return Path(output_path)


def _name_run(cfg: RunConfig, input_path: Path, shape: tuple[int, ...], spacing: tuple[float, float, float],
              say: Callable[[str], None]) -> None:
    """Say which run and checkpoint predict ``cfg``; warn when the input is far from its training data."""
    import warnings

    from bench.engine.geometry import GEOMETRY_KEY, far_from_training
    from bench.engine.records import read_record
    from bench.paths import checkpoint_path, run_dir

    record = read_record(run_dir(cfg))
    say(f"{cfg.task} {cfg.plane}: run {run_dir(cfg)} (checkpoint {checkpoint_path(cfg)}, "
        f"fingerprint {record.get('fingerprint', '?')})")
    why = far_from_training(record.get(GEOMETRY_KEY), shape, spacing, cfg.plane)
    if why:
        warnings.warn(f"{input_path}: {why} ({run_dir(cfg)})", stacklevel=2)
