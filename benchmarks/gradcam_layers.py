"""Which Grad-CAM layer gives the best box prior? Measured on VALIDATION patients only.

The paper does not say which layer of the localization network its Grad-CAMs come from. This
script takes a trained liver cascade run (its localizer, ``checkpoints/localizer-best.pt``) and,
for every layer `bench.config.GRADCAM_LAYERS` names, computes the box priors of the run's
validation patients and reports

* coverage: the share of the reference liver inside the boxes (a box that cuts the organ
  cannot be repaired by the tuning network: ConvBox multiplies the skip features by the gate);
* box area: the share of the slice the boxes cover (a box over the whole slice carries no
  location information);
* slices without a box that contain liver (a missed slice is missed by the whole cascade).

The default is the layer with the smallest box area among those whose coverage is at least
0.98 (`choose`). Test patients are never read. Usage::

    python benchmarks/gradcam_layers.py RUN_FOLDER [RUN_FOLDER ...] [--split train]

``--split train`` measures on the run's training patients instead: for a data set without a
validation patient (two-patient leave-one-out), still never the test patient, but optimistic, since
the localizer was fitted to those very slices.

e.g. ``results/phantom/liver/ours/axial`` after ``make demo``, or a real-data run folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.config import GRADCAM_LAYERS, run_config_from_dict  # noqa: E402

MIN_COVERAGE = 0.98


def measure(folder: Path, split: str = "val") -> list[dict]:
    from bench.datasets.base import task_mask
    from bench.datasets.cache import open_or_prepare
    from bench.engine.checkpoint import load_weights
    from bench.engine.infer import predict_slices
    from bench.models.cascade import CascadeNet, build_localizer, build_tuner

    cfg = run_config_from_dict(json.loads((folder / "config.json").read_text())["config"])
    cache, splits = open_or_prepare(cfg, progress=False)
    if split == "test":
        raise SystemExit("the layer is never chosen on test patients")
    if not splits[split]:
        raise SystemExit(f"{folder}: no {split} patients (a data set without validation patients: --split train)")
    localizer = load_weights(build_localizer(cfg), folder / "checkpoints" / "localizer-best.pt").eval()
    rows = []
    for layer in GRADCAM_LAYERS:
        cascade_cfg = replace(cfg.profile.cascade, gradcam_layer=layer)
        net = CascadeNet(localizer, build_tuner(cfg), cascade_cfg).eval()
        inside = total = boxed = pixels = missed = 0
        for case in splits[split]:
            prior = predict_slices(lambda x: net.roi(x)[0], cache.images(case, cfg.plane), 16, "cpu").numpy() > 0
            truth = task_mask(np.asarray(cache.labels(case, cfg.plane)), "liver")
            inside += int((truth & prior).sum())
            total += int(truth.sum())
            boxed += int(prior.sum())
            pixels += prior.size
            missed += int((truth.any(axis=(1, 2)) & ~prior.any(axis=(1, 2))).sum())
        rows.append({"run": str(folder), "layer": layer, "coverage": inside / max(total, 1),
                     "box_area": boxed / max(pixels, 1), "liver_slices_without_box": missed,
                     "patients": len(splits[split]), "split": split})
    return rows


def choose(rows: list[dict]) -> str:
    """Smallest boxes among the layers that keep >= MIN_COVERAGE of the liver (else the best coverage)."""
    ok = [r for r in rows if r["coverage"] >= MIN_COVERAGE]
    if ok:
        return min(ok, key=lambda r: r["box_area"])["layer"]
    return max(rows, key=lambda r: r["coverage"])["layer"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="liver cascade run folders (ours, liver)")
    parser.add_argument("--split", choices=("val", "train"), default="val",
                        help="patients to measure on (never test); train only where there is no validation patient")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for folder in args.runs:
        rows = measure(folder, args.split)
        print(f"\n{folder} ({rows[0]['patients']} {args.split} patients)")
        print(f"{'layer':12s} {'coverage':>9s} {'box area':>9s} {'liver slices w/o box':>21s}")
        for r in rows:
            print(f"{r['layer']:12s} {r['coverage']:9.3f} {r['box_area']:9.3f} {r['liver_slices_without_box']:21d}")
        print(f"chosen: {choose(rows)} (smallest boxes with coverage >= {MIN_COVERAGE})")


if __name__ == "__main__":
    main()
