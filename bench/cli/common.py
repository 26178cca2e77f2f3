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


def parse_int_list(text: str, flag: str, example: str = "0,1,2") -> list[int]:
    """A comma-separated list of integers given to ``flag``; a bad or empty one is a one-line error."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected comma-separated integers, e.g. {example}") from None
    if not values:
        raise ConfigError(f"{flag} {text!r}: name at least one value")
    return values


def parse_planes(text: str, flag: str = "--planes", allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Comma-separated plane names given to ``flag`` (default: the three planes); an empty list (``","``)
    or an unknown name is a one-line error, checked before anything runs."""
    from bench.config import PLANES

    allowed = allowed or PLANES
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise ConfigError(f"{flag} {text!r}: name at least one plane ({', '.join(allowed)})")
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ConfigError(f"{flag} {text!r}: unknown plane(s) {', '.join(bad)} (known: {', '.join(allowed)})")
    return tuple(dict.fromkeys(names))


def check_device(device: str) -> str:
    """``--device`` is checked on every call, also when nothing needs to run (a finished run, a dry plan):
    a misspelt device must not pass because no tensor was made this time."""
    from bench.devices import resolve_device

    resolve_device(device)
    return device


def parse_seeds(seed: int, seeds: str | None) -> list[int]:
    return parse_int_list(seeds, "--seeds") if seeds else [seed]


def build_run_config(model: str, plane: str, task: str, dataset: str, root: str | None, profile: str | None,
                     seed: int, device: str, results: str, cache: str, splits: str | None,
                     overrides: list[str] | None, tag: str = "", fold: int | None = None) -> RunConfig:
    from bench.datasets import DATASETS
    from bench.models import check_run_config, get_model_spec
    from bench.paths import seed_tag

    get_model_spec(model)  # unknown model -> "did you mean"
    DATASETS.get(dataset)
    check_device(device)
    if root:  # stored absolute: a run must not read other data when called from another folder
        from pathlib import Path

        root = str(Path(root).expanduser().resolve())
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
