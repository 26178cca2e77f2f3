"""Training throughput: our engine (`bench.engine.train.fit`) vs a bare PyTorch loop, side by side.

Both loops train the same model (same batch, input size, AMP/channels_last settings) on the same
cached slices for the same number of steps; the bare loop reads pre-loaded tensors (no sampler,
no checkpointing, no validation), so it is the floor the engine is held to (target: >= 0.9x).
Also reports inference slices/s at the profile's input size. On a CPU it runs at a small size
and says so; on CUDA at 512x512 (the paper's input).

    python benchmarks/train_step.py [--model unet] [--size 512] [--steps 30] [--batch 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.config import RunConfig, get_profile, override  # noqa: E402


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet")
    parser.add_argument("--size", type=int, default=0, help="input size (default 512 on CUDA, 64 on CPU)")
    parser.add_argument("--steps", type=int, default=0, help="timed steps (default 100 on CUDA, 60 on CPU)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--csv", default="")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    size = args.size or (512 if cuda else 64)
    steps = args.steps or (100 if cuda else 60)  # long enough that the per-epoch checkpoint write is amortised as in real epochs
    profile = "paper" if cuda else "smoke"
    if not cuda:
        print(f"[cpu] no GPU here: measuring at {size}x{size}, profile {profile}; figures are for comparison only")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(args.model, profile, size, args.batch, steps, tmp, device)
        cache, splits = _data(cfg)
        for rep in range(args.repeats):
            ours = _time_engine(cfg, cache, splits, device)
            bare = _time_bare(cfg, cache, splits, device)
            rows.append({"model": args.model, "device": _device_name(device), "size": size, "batch": args.batch,
                         "steps": steps, "repeat": rep, "engine_slices_s": ours, "bare_slices_s": bare,
                         "ratio": ours / bare})
            print(f"{args.model} {size}px batch {args.batch}: engine {ours:.1f} slices/s, bare {bare:.1f} slices/s, "
                  f"ratio {ours / bare:.2f}")
        inf = _time_inference(cfg, device)
        print(f"{args.model} inference {size}px: {inf:.1f} slices/s (paper: 100 slices/s on a 16 GB GPU)")
        for r in rows:
            r["inference_slices_s"] = inf
    best = max(r["ratio"] for r in rows)
    print(f"engine / bare (best of {args.repeats}): {best:.2f} (target >= 0.90)")
    if args.csv:
        from common import write_rows

        write_rows(args.csv, rows)
    return rows


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _config(model: str, profile: str, size: int, batch: int, steps: int, tmp: str, device: torch.device) -> RunConfig:
    cfg = RunConfig(model=model, results=str(Path(tmp) / "results"), cache=str(Path(tmp) / "cache"),
                    root=str(Path(tmp) / "phantom"), device=device.type, profile=get_profile(profile))
    return override(cfg, {"profile.input_size": size, "profile.train.batch_size": batch,
                          "profile.train.steps_per_epoch": steps, "profile.train.epochs": 1,
                          "profile.train.val_max_cases": 1})


def _data(cfg: RunConfig):
    from bench.datasets.cache import open_or_prepare
    from bench.datasets.phantom import write_phantom

    write_phantom(cfg.root, cases=3, size=max(128, cfg.profile.input_size), slices=24, seed=0)
    return open_or_prepare(cfg)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _trained_parts(cfg: RunConfig):
    """(model, loss(model, batch)) of what ``fit`` trains: the model itself, or for "ours" its
    tuning network with the multi-level loss on (slice, box prior) — the expensive stage."""
    from bench.models import build_model, get_model_spec
    from bench.models.losses import MultiLevelLoss, bce_dice_loss

    if get_model_spec(cfg.model).recipe == "cascade":
        from bench.models.cascade import build_tuner

        loss = MultiLevelLoss(enabled=cfg.profile.cascade.multilevel_loss)
        return build_tuner(cfg), lambda m, b: loss(m(b["image"], b["prior"]), b["target"])
    return build_model(cfg), lambda m, b: bce_dice_loss(m(b["image"]), b["target"])


def _time_engine(cfg: RunConfig, cache, splits, device: torch.device) -> float:
    import numpy as np

    from bench.engine.data import SliceDataset
    from bench.engine.train import Stage, fit

    model, loss = _trained_parts(cfg)
    extra = {"prior": lambda case, plane: np.ones(cache.labels(case, plane).shape, dtype=np.uint8)}
    train_set = SliceDataset(cache, splits["train"], cfg.plane, cfg.task, extra=extra)
    stage = Stage(name="bench", model=model, loss=loss, predict=lambda m, b: torch.sigmoid(m(b["image"])),
                  train_set=train_set, val_set=None, epochs=1, checkpoint_dir=Path(cfg.results) / "ckpt")
    # the first one-epoch fit warms up (allocator, cuDNN autotune); the second is timed. Both include
    # what an epoch of the engine costs: sampling, cache reads, collation, the checkpoint write.
    fit(stage, cfg, device, progress=False)
    _sync(device)
    t0 = time.perf_counter()
    fit(stage, cfg, device, progress=False)
    _sync(device)
    return cfg.profile.train.steps_per_epoch * cfg.profile.train.batch_size / (time.perf_counter() - t0)


def _time_bare(cfg: RunConfig, cache, splits, device: torch.device) -> float:
    from bench.engine.precision import Precision

    train = cfg.profile.train
    model, loss_fn = _trained_parts(cfg)
    model = model.to(device)
    channels_last = device.type == "cuda" and train.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    precision = Precision.for_device(device, train)
    scaler = precision.scaler()
    opt = torch.optim.Adam(model.parameters(), lr=train.lr)
    case = splits["train"][0]
    images = torch.from_numpy(cache.images(case, "axial")[: train.batch_size].astype("float32"))[:, None].to(device)
    target = (torch.from_numpy(cache.labels(case, "axial")[: train.batch_size].astype("float32")) >= 1).float()[:, None].to(device)
    prior = torch.ones_like(target)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    batch = {"image": images, "target": target, "prior": prior}
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        with precision.autocast():
            loss = loss_fn(model, batch)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(3):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(train.steps_per_epoch):
        step()
    _sync(device)
    return train.steps_per_epoch * train.batch_size / (time.perf_counter() - t0)


@torch.no_grad()
def _time_inference(cfg: RunConfig, device: torch.device, batch: int = 32, repeats: int = 5) -> float:
    from bench.engine.precision import Precision
    from bench.models import build_model

    model = build_model(cfg).to(device).eval()
    precision = Precision.for_device(device, cfg.profile.train)
    x = torch.randn(batch if device.type == "cuda" else 8, 1, cfg.profile.input_size, cfg.profile.input_size, device=device)
    if device.type == "cuda" and cfg.profile.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with precision.autocast():
        model(x)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(x)
        _sync(device)
    return repeats * x.shape[0] / (time.perf_counter() - t0)


if __name__ == "__main__":
    main()
