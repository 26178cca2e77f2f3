"""Shared fixtures: a tiny phantom data set and run configs at toy size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.config import RunConfig, get_profile, override

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _one_thread_per_worker():
    """Tests run two xdist workers on two cores: one thread each avoids oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory) -> Path:
    """Four 64x64x16 phantom cases in the LiTS layout (splits 2/1/1)."""
    from bench.datasets.phantom import write_phantom

    root = tmp_path_factory.mktemp("phantom")
    write_phantom(root, cases=4, size=64, slices=16, seed=3)
    return root


def tiny_config(tmp_path: Path, root: Path, model: str = "unet", **changes) -> RunConfig:
    """A smoke-profile run on the tiny phantom writing under ``tmp_path``."""
    cfg = RunConfig(model=model, dataset="phantom", root=str(root), device="cpu", results=str(tmp_path / "results"),
                    cache=str(tmp_path / "cache"), profile=get_profile("smoke"))
    base = {"profile.input_size": 32, "profile.train.batch_size": 4, "profile.train.steps_per_epoch": 3,
            "profile.train.epochs": 2, "profile.train.val_max_cases": 1}
    base.update(changes)
    return override(cfg, base)
