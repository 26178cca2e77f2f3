"""Whole-volume prediction for files outside any data set (``bench predict``)."""

from __future__ import annotations

from pathlib import Path

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
                         spacing: tuple[float, float, float] | None = None) -> np.ndarray:
    """Probability volume (Z,Y,X) of one plane run on a raw HU volume (the run's own preprocessing)."""
    from bench.datasets.preprocess import preprocess_volume
    from bench.engine.evaluate import load_predictor
    from bench.engine.infer import predict_volume
    from bench.engine.precision import Precision

    from bench.models.lesion_roi import data_profile

    predict, _ = load_predictor(cfg, device)
    grid = data_profile(cfg)  # the slice grid the model predicts on (finer for a liver-ROI lesion run)
    pre = preprocess_volume(image_hu, grid.preprocess)
    return predict_volume(predict, pre, cfg.plane, grid.input_size, grid.preprocess.slice_fit,
                          cfg.profile.train.batch_size, device,
                          precision=Precision.for_device(device, cfg.profile.train), spacing=spacing,
                          target_mm=grid.preprocess.spacing_mm)


def predict_file(input_path: Path, output_path: Path, cfgs_by_task: dict[str, list[RunConfig]]) -> Path:
    """Predict each task with its plane runs (soft voting over planes) and write one label map."""
    from bench.datasets.nifti import save_nifti_zyx
    from bench.devices import resolve_device
    from bench.engine.evaluate import postprocess_rule
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
        device = resolve_device(stored[0].device)
        probs = fuse_soft([predict_volume_probs(image, c, device, spacing) for c in stored])
        mode, min_voxels = postprocess_rule(stored[0])
        mask = postprocess(probs > 0.5, mode, min_voxels)
        value = 1 if task == "liver" or len(cfgs_by_task) == 1 else 2
        label[mask] = value
    # a NIfTI input gets the mask back in its own axis order, affine and qform/sform codes
    save_nifti_zyx(output_path, label, affine, like=Path(input_path) if kind == "nifti" else None)
    return Path(output_path)
