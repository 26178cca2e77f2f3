"""``make bench``: every speed figure side by side in one run, written to one CSV.

U-Net and "ours" (its tuning network, the stage that dominates training): training slices/s of
our engine vs a bare PyTorch loop on the same model, inference slices/s, peak GPU memory; then
the metric engine's throughput (benchmarks/metrics.py). At the paper input size (512) on CUDA;
on a CPU at 64x64, which it says, since 512x512 training on 2 cores says nothing useful.

    python benchmarks/run_all.py [--out results/bench/bench.csv] [--steps N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/bench/bench.csv")
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import train_step

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"device: {device}" + ("" if cuda else " (no GPU: small size, for comparison only)"))
    rows = []
    for model in ("unet", "ours"):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        argv = ["--model", model, "--repeats", str(args.repeats)] + (["--steps", str(args.steps)] if args.steps else [])
        for r in train_step.main(argv):
            r["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
            rows.append(r)
    print("\nmetric engine (512x512x200 label pair):")
    metrics = subprocess.run([sys.executable, str(HERE / "metrics.py"), "--repeats", "3"], capture_output=True, text=True)
    print(metrics.stdout[-3000:])
    from common import write_rows

    out = Path(args.out)
    write_rows(out, rows)
    print(f"\n{'model':6s} {'size':>5s} {'engine/s':>9s} {'bare/s':>8s} {'ratio':>6s} {'infer/s':>8s} {'peak MiB':>9s}")
    for r in rows:
        print(f"{r['model']:6s} {r['size']:5d} {r['engine_slices_s']:9.1f} {r['bare_slices_s']:8.1f} {r['ratio']:6.2f} "
              f"{r['inference_slices_s']:8.1f} {r['peak_gpu_mib']:9.0f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
