"""Benchmark: peak memory and throughput of `prepare_cache` on one LiTS-sized case (512x512x500 int16).

Targets (issue 2, Performance): peak memory under 3x the volume (262 MB -> 786 MB) and at least
20 MB of input volume per second on one core.

How it measures:
* the case is a phantom generated at 128x128x125 and upsampled 4x per axis (nearest, then fresh
  12 HU noise per slab so the median filter sees CT-like data, not constant blocks), written as
  uncompressed ``volume-0.nii`` + ``segmentation-0.nii`` in a temp folder (the LiTS layout, read
  through the ``lits`` adapter);
* the prepare (paper preprocessing, input 512, all three planes) runs in a *child process* that
  does nothing else, pinned to one core with one thread per library; the child reports its
  ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (peak resident set, includes file-backed pages
  such as memory maps and shared libraries) and its RSS right after the imports, so both the
  absolute peak and the part the data adds (peak - imports; torch alone is ~0.6 GB here) are shown;
* throughput = input volume bytes (Z*Y*X*2) / wall time of `prepare_cache` (NIfTI read included;
  the file was just written, so it comes from the page cache, as on any second read).

Run: ``.venv/bin/python benchmarks/prepare.py`` (about a minute; ``--keep DIR`` keeps the files).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPE = (500, 512, 512)  # (Z, Y, X), a large LiTS volume
UPSAMPLE = 4
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build_case(root: Path, seed: int = 0) -> dict:
    """Write a 512x512x500 phantom case in the LiTS layout under ``root``."""
    import numpy as np

    from bench.datasets.nifti import save_nifti_zyx
    from bench.datasets.phantom import generate_case, lits_affine_zyx, phantom_spacing

    z, y, x = SHAPE
    small = generate_case(seed, size=y // UPSAMPLE, slices=z // UPSAMPLE)
    rng = np.random.default_rng(seed)
    image = np.empty(SHAPE, dtype=np.int16)
    label = np.empty(SHAPE, dtype=np.uint8)
    for k in range(small.image.shape[0]):  # one low-res slice -> UPSAMPLE full-res slices
        hu = np.repeat(np.repeat(small.image[k], UPSAMPLE, 0), UPSAMPLE, 1).astype(np.float32)
        lab = np.repeat(np.repeat(small.label[k], UPSAMPLE, 0), UPSAMPLE, 1)
        for j in range(UPSAMPLE):
            noisy = hu + rng.normal(0.0, 12.0, size=hu.shape).astype(np.float32)
            image[k * UPSAMPLE + j] = np.clip(np.rint(noisy), -1024, 3071)
            label[k * UPSAMPLE + j] = lab
    affine = lits_affine_zyx(SHAPE, phantom_spacing(y, z))
    save_nifti_zyx(root / "volume-0.nii", image, affine)
    save_nifti_zyx(root / "segmentation-0.nii", label, affine)
    return {"shape": list(SHAPE), "volume_mb": image.nbytes / 1e6, "liver_voxels": int((label >= 1).sum())}


def child(root: Path, cache_dir: Path) -> None:
    """Only the prepare: imports, then `prepare_cache`; prints one JSON line."""
    import resource

    from bench.config import get_profile
    from bench.datasets import get_dataset
    from bench.datasets.cache import prepare_cache

    rss_imports = _rss_mb()
    peak_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    adapter = get_dataset("lits", root=root)
    profile = get_profile("paper")
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    cache = prepare_cache(adapter, cache_dir, profile.input_size, profile.preprocess, progress=False)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out_mb = sum(p.stat().st_size for p in (cache_dir / "0").glob("*.npy")) / 1e6
    print(json.dumps({"rss_after_imports_mb": rss_imports, "peak_before_prepare_mb": peak_imports,
                      "peak_rss_mb": peak, "wall_s": wall, "cpu_s": cpu, "cases": cache.case_ids(), "output_mb": out_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="write the case and cache here and keep them")
    parser.add_argument("--child", nargs=2, type=Path, metavar=("ROOT", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    root, cache_dir = work / "lits", work / "cache"
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    built = build_case(root)
    print(f"built {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} int16 case ({built['volume_mb']:.0f} MB) in {time.perf_counter() - t0:.0f} s -> {root}")

    env = dict(os.environ, **{v: "1" for v in THREAD_VARS})
    cmd = [sys.executable, __file__, "--child", str(root), str(cache_dir)]
    if hasattr(os, "sched_setaffinity"):
        cmd = ["taskset", "-c", str(min(os.sched_getaffinity(0))), *cmd]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if res.returncode != 0:
        sys.exit(f"prepare child failed:\n{res.stderr}")
    m = json.loads(res.stdout.strip().splitlines()[-1])
    vol = built["volume_mb"]
    net = m["peak_rss_mb"] - m["rss_after_imports_mb"]
    print(f"prepare_cache (paper preprocessing, 512x512, 3 planes, 1 core): {m['wall_s']:.1f} s wall, {m['cpu_s']:.1f} s CPU")
    print(f"  throughput: {vol / m['wall_s']:.1f} MB of input volume per second (target >= 20)")
    print(f"  peak RSS (ru_maxrss, child): {m['peak_rss_mb']:.0f} MB = {m['peak_rss_mb'] / vol:.2f}x the volume")
    print(f"  of which imports (numpy, scipy, torch, nibabel): {m['rss_after_imports_mb']:.0f} MB")
    print(f"  peak above imports: {net:.0f} MB = {net / vol:.2f}x the volume (target < 3x)")
    print(f"  cache written: {m['output_mb']:.0f} MB for {vol:.0f} MB of input")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
