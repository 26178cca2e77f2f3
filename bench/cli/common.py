"""Shared CLI plumbing: the options every run-level verb takes, and flags -> RunConfig."""

from __future__ import annotations

from dataclasses import replace

from bench.config import RunConfig, get_profile, override, parse_overrides
from bench.errors import ConfigError

def default_profile(dataset: str, device: str = "auto") -> str:
    """``demo`` on the phantom; on real CT ``paper`` where CUDA will be used, else the CPU-sized ``cpu``."""
    if dataset == "phantom":
        return "demo"
    if device == "cpu":
        return "cpu"
    import torch

    return "paper" if torch.cuda.is_available() else "cpu"


def parse_seeds(seed: int, seeds: str | None) -> list[int]:
    if not seeds:
        return [seed]
    try:
        return [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {seeds!r}: expected comma-separated integers, e.g. 0,1,2") from None


def build_run_config(model: str, plane: str, task: str, dataset: str, root: str | None, profile: str | None,
                     seed: int, device: str, results: str, cache: str, splits: str | None,
                     overrides: list[str] | None, tag: str = "", fold: int | None = None) -> RunConfig:
    from bench.datasets import DATASETS
    from bench.models import check_run_config, get_model_spec
    from bench.paths import seed_tag

    get_model_spec(model)  # unknown model -> "did you mean"
    DATASETS.get(dataset)
    prof = get_profile(profile or default_profile(dataset, device))
    cfg = RunConfig(model=model, plane=plane, task=task, dataset=dataset, root=root or "", seed=seed, device=device,
                    results=results, cache=cache, splits=splits or "", tag=tag, profile=prof)
    if fold is not None:
        cfg = override(cfg, {"fold": fold})
    if overrides:
        cfg = override(cfg, parse_overrides(overrides))
    if cfg.seed != 0 or cfg.fold is not None:
        cfg = replace(cfg, tag=seed_tag(cfg.model, tag, cfg.seed, cfg.fold))
    check_run_config(cfg)  # e.g. an input size the model cannot take, before any time is spent
    return cfg
