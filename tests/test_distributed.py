"""Data parallel on CPU (gloo): validation counts are summed over ranks so metrics equal one process.

Two processes with the same global batch see the same batches as one process (each rank takes
half of every global batch); the validation counts are all-reduced, so, given the same weights,
the scores are identical. Training itself is equal up to BatchNorm: on CPU there is no
SyncBatchNorm, so each rank normalises its half batch (on CUDA the engine converts to
SyncBatchNorm) — hence a tolerance for the trained run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import torch
import torch.multiprocessing as mp

from tests.conftest import tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _validate_worker(rank: int, world: int, port: int, cfg_dict: dict, state_path: str, out_path: str) -> None:
    import torch.distributed as dist

    from bench.config import run_config_from_dict
    from bench.datasets.cache import open_or_prepare
    from bench.engine.data import SliceDataset
    from bench.engine.train import DistInfo, Precision, validation_counts
    from bench.models import build_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    cfg = run_config_from_dict(cfg_dict)
    cache, splits = open_or_prepare(cfg, progress=False)
    model = build_model(cfg)
    model.load_state_dict(torch.load(state_path, weights_only=True))
    dataset = SliceDataset(cache, splits["val"] + splits["test"], cfg.plane, cfg.task)
    _, counts = validation_counts(model, lambda m, b: torch.sigmoid(m(b["image"])), dataset, 4,
                                  torch.device("cpu"), Precision(torch.device("cpu"), False), DistInfo(rank, world))
    if rank == 0:
        np.save(out_path, counts)
    dist.destroy_process_group()


def test_validation_counts_all_reduced_equal_single_process(tmp_path, tiny_phantom):
    from bench.config import to_dict
    from bench.datasets.cache import open_or_prepare
    from bench.models import build_model

    cfg = tiny_config(tmp_path, tiny_phantom, "unet")
    open_or_prepare(cfg, progress=False)
    torch.manual_seed(0)
    state = tmp_path / "state.pt"
    torch.save(build_model(cfg).state_dict(), state)
    outs = []
    for world in (1, 2):
        out = tmp_path / f"counts{world}.npy"
        mp.spawn(_validate_worker, args=(world, _free_port(), to_dict(cfg), str(state), str(out)), nprocs=world)
        outs.append(np.load(out))
    assert outs[0].sum() > 0
    np.testing.assert_array_equal(outs[0], outs[1])


def test_two_process_training_matches_one_process(tmp_path, tiny_phantom):
    """``torchrun --nproc_per_node 2 -m bench train`` vs one process, same global batch."""
    args = ["train", "segnet", "--plane", "axial", "--dataset", "phantom", "--root", str(tiny_phantom),
            "--profile", "smoke", "--device", "cpu", "--set", "input_size=32", "--set", "train.epochs=2",
            "--set", "train.steps_per_epoch=3", "--set", "train.batch_size=4"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    results = {}
    for world in (1, 2):
        res = tmp_path / f"results{world}"
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}",
               f"--master_port={_free_port()}", "-m", "bench", *args, "--results", str(res),
               "--cache", str(tmp_path / f"cache{world}")]
        subprocess.run(cmd, check=True, env=env, cwd=tmp_path, capture_output=True, timeout=600)
        folder = res / "phantom" / "liver" / "segnet" / "axial"
        assert json.loads((folder / "config.json").read_text())["world_size"] == world
        results[world] = pd.read_csv(folder / "per_case.csv").set_index(["split", "case"])
    # BatchNorm sees half batches per rank on CPU (no SyncBatchNorm kernel): scores agree to a tolerance
    diff = (results[1]["dice"] - results[2]["dice"]).abs().max()
    assert diff < 0.15, diff
