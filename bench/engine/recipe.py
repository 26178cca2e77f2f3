"""How a model trains: a registry of recipes, named by each model's spec (`bench.models.ModelSpec.recipe`).

Two recipes exist: ``slices`` (`bench.engine.slices`: one network on full slices, the
baselines) and ``cascade`` (`bench.engine.cascade`: localizer, box priors, tuning network,
Algorithm 1). Recipe names are declared here only, by registration (`BUILTIN_RECIPE_MODULES`
are imported by `get_recipe`, not by a side-effect import elsewhere); a spec names one, and an
unknown name is refused in one line by `get_recipe` before any run starts (the scheduler asks
for every planned run). The runner looks the recipe up by the name the spec gives, so no engine
code branches on which model it trains. A recipe gets a `TrainContext` and returns `Trained`: the
model exactly as `bench.models.build_model` builds it, with the selected weights loaded, so
evaluation and prediction treat every model alike.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from bench.config import RunConfig
from bench.engine.distributed import DistInfo
from bench.errors import ConfigError
from bench.registry import Registry


@dataclass
class TrainContext:
    """Everything a recipe needs: the run, its data (cache + patient split), device and flags."""

    cfg: RunConfig
    cache: Any  # bench.datasets.cache.SliceCache
    splits: dict[str, list[str]]
    device: torch.device
    info: DistInfo = field(default_factory=DistInfo)
    resume: bool = False
    progress: bool = True

    @property
    def val_ids(self) -> list[str]:
        """Validation patients used for selection (``train.val_max_cases`` caps them; 0 = all)."""
        cases = list(self.splits["val"])
        limit = self.cfg.profile.train.val_max_cases
        return cases[:limit] if limit else cases


@dataclass
class Trained:
    """A recipe's result: the model (selected weights), the per-epoch history, per-stage summaries."""

    model: torch.nn.Module
    history: list[dict[str, Any]]
    stages: dict[str, dict[str, Any]]  # stage name -> fit summary (epochs, steps, seconds, best epoch, ...)
    extra: dict[str, Any] = field(default_factory=dict)  # recipe-specific facts for config.json


Recipe = Callable[[TrainContext], Trained]
RECIPES: Registry[Recipe] = Registry("recipe")
BUILTIN_RECIPE_MODULES = ("bench.engine.slices", "bench.engine.cascade")  # each registers its recipe


def get_recipe(name: str, model: str = "") -> Recipe:
    """The recipe ``name`` (importing the built-in recipe modules first); unknown: one-line ConfigError."""
    for module in BUILTIN_RECIPE_MODULES:
        importlib.import_module(module)
    try:
        return RECIPES.get(name)
    except ConfigError as exc:
        raise ConfigError(f"model {model!r}: {exc}" if model else str(exc)) from None


def budget(stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The training budget a run spent: optimiser steps, epochs and seconds per stage and in total.

    Recorded in every run's config.json and shown in the tables' provenance, so a comparison
    states what each model was given (`train.budget=matched` equalises the steps).
    """
    per_stage = {name: {"epochs": int(s.get("epochs_run", 0)), "steps": int(s.get("steps", 0)),
                        "seconds": round(float(s.get("seconds", 0.0)), 3)} for name, s in stages.items()}
    return {"stages": per_stage,
            "steps": sum(s["steps"] for s in per_stage.values()),
            "epochs": sum(s["epochs"] for s in per_stage.values()),
            "seconds": round(sum(s["seconds"] for s in per_stage.values()), 3)}
