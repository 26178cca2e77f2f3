"""Metric speed: our counts + scores vs a read-only floor, numpy bincount, MONAI and medpy, one run.

On a 512x512x200 pair of 0/1/2 label volumes (a liver ellipsoid with a lesion; the prediction is
shifted and speckled) it times, best of ``--repeats``:

* ours      `label_counts` (one pass, uint8 code, torch.bincount) + `scores_from_counts`, both
            classes, on the CPU; on CUDA also with the volumes already on the GPU;
* floor     numpy reading both arrays once: ``a.sum(); b.sum()`` (the issue's floor) and, for
            reference, ``np.count_nonzero`` (a SIMD byte scan, the memory-bandwidth bound);
* alt.      our `confusion_matrix` on the CPU (chunked uint8 code + torch.bincount), the path
            CUDA uses, kept to show why the CPU path counts bytes instead;
* numpy     ``np.bincount(ref.astype(int64) * 3 + pred)`` (the straightforward vectorised way);
* MONAI     DiceMetric + MeanIoU (include_background=False) on one-hot float tensors, one-hot
            conversion included (how MONAI is used on label maps);
* medpy     ``medpy.metric.binary.dc`` on both classes, when medpy is installed;
* surface   `surface_metrics` (one surface-distance pass -> HD95, NSD, ASSD, MSSD, RMSD) on both
            classes at a LiTS-like spacing of 1.0 x 0.78 x 0.78 mm, timed once, KD-tree queries on
            ``--surface-workers`` threads (default 1: the single-thread cost). It is opt-in per run
            (``--surface``); the count path above never pays for it.

Targets (2-core CPU): ours <= 3x the sum floor and >= 30x faster than MONAI's DiceMetric. The
surface pass has no target; its cost is reported so users know what ``--surface`` adds per case.

    python benchmarks/metrics.py [--shape 200 512 512] [--repeats 5] [--no-monai] [--no-surface] [--csv out.csv]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.metrics.counts import label_counts  # noqa: E402
from bench.metrics.scores import scores_from_counts  # noqa: E402


def make_pair(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pred, ref) uint8 label maps with realistic structure (large liver, small lesion, speckle)."""
    z, y, x = shape
    zz, yy, xx = np.ogrid[:z, :y, :x]
    ref = np.zeros(shape, np.uint8)
    ref[((zz - z / 2) / (0.35 * z)) ** 2 + ((yy - 0.49 * y) / (0.3 * y)) ** 2 + ((xx - 0.5 * x) / (0.33 * x)) ** 2 < 1] = 1
    ref[((zz - z / 2) / (0.1 * z)) ** 2 + ((yy - 0.45 * y) / (0.06 * y)) ** 2 + ((xx - 0.58 * x) / (0.05 * x)) ** 2 < 1] = 2
    pred = np.roll(ref, 3, axis=2)
    rng = np.random.default_rng(seed)
    speckle = rng.random(shape, dtype=np.float32) < 0.002
    pred[speckle] = rng.integers(0, 3, int(speckle.sum()), dtype=np.uint8)
    return np.ascontiguousarray(pred), ref


def best_of(fn: Callable[[], Any], repeats: int, sync: bool = False) -> tuple[float, Any]:
    out = fn()  # warm-up (allocator, lazy imports, CUDA context)
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times), out


def ours(pred: Any, ref: Any, device: str) -> dict[str, dict[str, float]]:
    counts = label_counts(pred, ref, device=device)
    return {cls: scores_from_counts(*c.as_tuple()) for cls, c in counts.items()}


def numpy_bincount(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.bincount((ref.astype(np.int64) * 3 + pred).ravel(), minlength=9).reshape(3, 3)


def monai_dice_iou(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from monai.metrics import DiceMetric, MeanIoU

    def one_hot(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a).long()
        return torch.nn.functional.one_hot(t, 3).permute(3, 0, 1, 2)[None].float()

    p, r = one_hot(pred), one_hot(ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dice = DiceMetric(include_background=False, reduction="none")(p, r)
        iou = MeanIoU(include_background=False, reduction="none")(p, r)
    return dice.numpy(), iou.numpy()


def medpy_dc(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float] | None:
    try:
        from medpy.metric.binary import dc
    except ImportError:
        return None
    return dc(pred >= 1, ref >= 1), dc(pred == 2, ref == 2)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(200, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-monai", action="store_true", help="skip MONAI (it needs ~4 GB at full size)")
    parser.add_argument("--no-surface", action="store_true", help="skip the surface-distance timing")
    parser.add_argument("--surface-workers", type=int, default=1, help="KD-tree query threads (-1 = all cores)")
    parser.add_argument("--csv", default="")
    args = parser.parse_args(argv)
    shape = tuple(args.shape)
    pred, ref = make_pair(shape)  # type: ignore[arg-type]
    print(f"pair {shape} uint8, {pred.size / 1e6:.1f} M voxels each; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; best of {args.repeats}")
    rows: list[dict[str, Any]] = []

    def record(name: str, seconds: float, device: str = "cpu") -> None:
        rows.append({"method": name, "device": device, "shape": "x".join(map(str, shape)), "ms": seconds * 1e3})
        print(f"  {name:44s} {device:5s} {seconds * 1e3:9.1f} ms")

    t_sum, _ = best_of(lambda: (pred.sum(), ref.sum()), args.repeats)
    record("floor: numpy a.sum(); b.sum()", t_sum)
    t_nz, _ = best_of(lambda: (np.count_nonzero(pred), np.count_nonzero(ref)), args.repeats)
    record("floor: numpy count_nonzero(a), (b)", t_nz)
    t_ours, s_ours = best_of(lambda: ours(pred, ref, "cpu"), args.repeats)
    record("ours: label_counts + scores (liver, lesion)", t_ours)
    from bench.metrics.counts import confusion_matrix

    t_bc, _ = best_of(lambda: confusion_matrix(pred, ref, 3, "cpu"), max(1, args.repeats // 2))
    record("alternative: torch.bincount of uint8 code", t_bc)
    t_np, cm = best_of(lambda: numpy_bincount(pred, ref), max(1, args.repeats // 2))
    record("numpy bincount of int64 ref*3+pred", t_np)
    # correctness against the numpy confusion matrix, so a fast wrong answer cannot pass
    liver_tp = int(cm[1:, 1:].sum())
    lesion_tp = int(cm[2, 2])
    expected_liver = 2 * liver_tp / (2 * liver_tp + int(cm[0, 1:].sum()) + int(cm[1:, 0].sum()))
    expected_lesion = 2 * lesion_tp / (2 * lesion_tp + int(cm[:2, 2].sum()) + int(cm[2, :2].sum()))
    assert abs(s_ours["liver"]["dice"] - expected_liver) < 1e-12, "liver Dice differs from numpy"
    assert abs(s_ours["lesion"]["dice"] - expected_lesion) < 1e-12, "lesion Dice differs from numpy"
    t_monai = None
    if not args.no_monai:
        t_monai, (dice_m, _) = best_of(lambda: monai_dice_iou(pred, ref), 1)
        record("MONAI DiceMetric + MeanIoU (one-hot incl.)", t_monai)
        # MONAI scores label 1 and label 2 separately; label 2 is our lesion class exactly
        assert abs(float(dice_m[0, 1]) - s_ours["lesion"]["dice"]) < 1e-5, "lesion Dice differs from MONAI"
    if medpy_dc(pred[:2], ref[:2]) is not None:
        t_medpy, _ = best_of(lambda: medpy_dc(pred, ref), 1)
        record("medpy dc (liver, lesion)", t_medpy)
    else:
        print("  medpy: not installed (skipped)")
    if torch.cuda.is_available():
        t_gpu_h2d, _ = best_of(lambda: ours(pred, ref, "cuda"), args.repeats, sync=True)
        record("ours: from host arrays (incl. copy to GPU)", t_gpu_h2d, "cuda")
        pg, rg = torch.from_numpy(pred).cuda(), torch.from_numpy(ref).cuda()
        t_gpu, _ = best_of(lambda: ours(pg, rg, "cuda"), args.repeats, sync=True)
        record("ours: volumes already on the GPU", t_gpu, "cuda")
    t_surface = None
    if not args.no_surface:
        from bench.metrics.surface import surface_metrics

        spacing = (1.0, 0.78, 0.78)

        def surface_both(p: np.ndarray) -> dict[str, dict[str, float]]:
            return {cls: surface_metrics(mask(p), mask(ref), spacing, workers=args.surface_workers)
                    for cls, mask in (("liver", lambda a: a >= 1), ("lesion", lambda a: a == 2))}

        # the speckled prediction puts ~0.1 M stray surface voxels all over the volume (a worst case for
        # the KD-tree: far points); the same shift without speckle is what a decent model gives
        for label, p in (("speckled pair", pred), ("shift only", np.ascontiguousarray(np.roll(ref, 3, axis=2)))):
            t0 = time.perf_counter()
            surf = surface_both(p)
            seconds = time.perf_counter() - t0
            t_surface = seconds if t_surface is None else t_surface
            record(f"surface (5 distances, 2 classes), {label}", seconds)
            for cls, values in surf.items():
                print(f"    {cls}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()))
            assert 0.0 < surf["liver"]["assd"] <= surf["liver"]["rmsd"] <= surf["liver"]["mssd"], "distance order"
    print(f"ours / sum floor = {t_ours / t_sum:.2f}x (target <= 3x); "
          f"ours / count_nonzero floor = {t_ours / t_nz:.2f}x")
    if t_monai is not None:
        print(f"MONAI / ours = {t_monai / t_ours:.0f}x (target >= 30x)")
    if t_surface is not None:
        print(f"surface pass (both classes, speckled pair) = {t_surface:.1f} s, {t_surface / t_ours:.0f}x the "
              "count path (only with --surface)")
    if args.csv:
        from common import write_rows

        write_rows(args.csv, rows)
    return rows


if __name__ == "__main__":
    main()
