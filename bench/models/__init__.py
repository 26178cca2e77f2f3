"""Model registry: every network the benchmark trains, by name (``bench ls models``).

Output convention (used by every model, the losses, the engine and the metrics)
------------------------------------------------------------------------------
A model maps a batch of slices ``(B, 1, H, W)`` float to ``(B, 1, H, W)`` **logits**: one
output channel per task, binary, read through a sigmoid (probability = ``sigmoid(logit)``,
foreground where it is >= 0.5). A task is ``liver`` or ``lesion``; liver and lesion are
*separate* models trained in separate steps, as in the paper (section 2: "separate liver and
liver lesions segmentations steps"), so no model ever predicts both classes at once and no
softmax over classes is needed. The cascade ("ours") keeps the same outer contract.

Recipes and prerequisites
-------------------------
A `ModelSpec` declares *how* its model trains (``recipe``: ``slices`` = one network on full
slices, the baselines; ``cascade`` = the proposed method's stages and Algorithm 1) and *which
runs must exist first* (``needs``: the lesion cascade needs the same-plane liver cascade). The
engine maps a recipe name to its training code and asks `requirements` for the run graph, so no
code outside a spec branches on a model's name or kind. `requirements` adds the one rule every
model shares: a fused row needs its three planes. A spec with ``liver_prior=True`` (the
baselines) takes ``model.liver_prior`` on the lesion task (`bench.models.liver_prior`): its
build wraps the network with the liver cascade's prior and its ``needs`` names that liver run.

Registering a model::

    @register_model("mynet", description="one line for bench ls", input_multiple=32)
    def build_mynet(cfg: RunConfig) -> torch.nn.Module: ...
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from typing import Callable, Literal

import torch

from bench.config import PLANES, RunConfig, get_profile
from bench.errors import ConfigError
from bench.registry import Registry

Recipe = Literal["slices", "cascade"]
RECIPES: tuple[str, ...] = ("slices", "cascade")


@dataclass(frozen=True)
class ModelSpec:
    """What the registry holds for one model name.

    ``count`` lets a model whose trainable parts are not one ``nn.Module`` (the cascade: two
    networks) report its own parameter total; when None, the module from ``build`` is counted.
    ``needs(cfg)`` lists the runs this run reads (beyond its own data); ``input_multiple(cfg)``
    the number its input side must be a multiple of (checked before any training time is spent).
    ``liver_prior``: the model takes ``model.liver_prior`` (`bench.models.liver_prior`); others refuse it.
    """

    name: str
    build: Callable[[RunConfig], torch.nn.Module]
    recipe: Recipe = "slices"
    description: str = ""
    count: Callable[[RunConfig], int] | None = None
    needs: Callable[[RunConfig], list[RunConfig]] | None = None
    input_multiple: Callable[[RunConfig], int] | None = None
    relative_cost: float = 1.0  # training time relative to SegNet's (scheduling only: longest first)
    liver_prior: bool = False


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(
    name: str,
    recipe: Recipe = "slices",
    description: str = "",
    count: Callable[[RunConfig], int] | None = None,
    needs: Callable[[RunConfig], list[RunConfig]] | None = None,
    input_multiple: Callable[[RunConfig], int] | None = None,
    relative_cost: float = 1.0,
    liver_prior: bool = False,
) -> Callable[[Callable[[RunConfig], torch.nn.Module]], Callable[[RunConfig], torch.nn.Module]]:
    """Decorator for a build function ``RunConfig -> nn.Module``; returns the function unchanged."""
    if recipe not in RECIPES:
        raise ConfigError(f"model {name!r}: unknown recipe {recipe!r} (known: {', '.join(RECIPES)})")

    def decorator(build: Callable[[RunConfig], torch.nn.Module]) -> Callable[[RunConfig], torch.nn.Module]:
        doc = (build.__doc__ or "").strip()
        text = description or (doc.splitlines()[0] if doc else "")
        MODELS.add(name, ModelSpec(name=name, build=build, recipe=recipe, description=text, count=count,
                                   needs=needs, input_multiple=input_multiple, relative_cost=relative_cost,
                                   liver_prior=liver_prior), help=text)
        return build

    return decorator


def get_model_spec(name: str) -> ModelSpec:
    return MODELS.get(name)


def requirements(cfg: RunConfig) -> list[RunConfig]:
    """The runs that must be complete before ``cfg`` can run.

    Fused: its three planes. A matched training budget: the reference model's run on the same
    data, plane, task, seed and fold (its recorded optimiser steps are the budget). Then the
    model's own needs (the lesion cascade: the liver cascade).
    """
    if cfg.plane == "fused":
        return [replace(cfg, plane=p) for p in PLANES]
    spec = MODELS.get(cfg.model)
    out = [budget_reference(cfg)] if cfg.profile.train.budget == "matched" else []
    return out + (list(spec.needs(cfg)) if spec.needs is not None else [])


def budget_reference(cfg: RunConfig) -> RunConfig:
    """The run whose steps a ``train.budget=matched`` run gets: the reference model, trained by epochs.

    It is the reference's plain run on the same data, plane, task, seed and fold: the baseline-only
    model fields (a liver prior, the normalisation, width, encoder; `bench.config.BASELINE_ONLY_FIELDS`)
    return to the profile's values, so ``unet --set model.liver_prior=crop --set model.norm=batch`` is
    matched to the very "ours" run the plain U-Net is matched to.
    """
    from bench.config import without_baseline_fields
    from bench.paths import seed_tag

    train = replace(cfg.profile.train, budget="epochs")
    profile = without_baseline_fields(replace(cfg.profile, train=train))
    ref = replace(cfg, model=cfg.profile.train.budget_reference, profile=profile, tag="")
    tag = seed_tag(ref.model, "", ref.seed, ref.fold)
    return replace(ref, tag=tag if tag != ref.model else "")


def check_run_config(cfg: RunConfig) -> None:
    """Refuse, in one line, a config the model cannot run (unknown model, input size, options), or
    one whose prerequisite runs could not run (checked the same way, before any time is spent)."""
    spec = MODELS.get(cfg.model)
    if cfg.profile.train.budget == "matched":
        reference = MODELS.get(cfg.profile.train.budget_reference).name
        if reference == cfg.model:
            raise ConfigError(f"train.budget=matched: {cfg.model} is the budget reference (train.budget_reference); "
                              f"it trains by its own epochs")
    multiple = spec.input_multiple(cfg) if spec.input_multiple is not None else 1
    if cfg.profile.input_size % multiple:
        raise ConfigError(f"input_size={cfg.profile.input_size}: {cfg.model} needs a multiple of {multiple}")
    from bench.models.crf import require_crf

    require_crf(cfg.profile.cascade.crf)
    prior = cfg.profile.model.liver_prior
    if prior != "none" and not spec.liver_prior:
        takers = ", ".join(n for n in MODELS.names() if MODELS.get(n).liver_prior)
        raise ConfigError(f"model.liver_prior={prior}: {cfg.model} takes no liver prior (a setting of the lesion "
                          f"baselines: {takers}; ours reads its liver through cascade.lesion_prior)")
    for dep in requirements(cfg):  # e.g. the liver cascade behind a liver prior, at this input size
        check_run_config(dep)


def build_model(cfg: RunConfig) -> torch.nn.Module:
    """Build ``cfg.model`` for ``cfg`` (random init unless the profile names local encoder weights)."""
    spec = MODELS.get(cfg.model)
    model = spec.build(cfg)
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model {cfg.model!r}: build returned {type(model).__name__}, not a torch.nn.Module")
    return model


def count_parameters(name: str, profile: str = "paper") -> int:
    """Number of parameters of model ``name`` at a profile (paper: the published sizes).

    The module is built on the ``meta`` device, so no memory is allocated and no weights are
    initialised: counting the 29 M-parameter SegNet costs milliseconds. A spec with its own
    ``count`` (the cascade) is asked instead. Local encoder weights named by the profile are
    not loaded (they do not change the count).
    """
    spec = MODELS.get(name)
    prof = get_profile(profile)
    if prof.model.encoder_weights:
        from dataclasses import replace

        prof = replace(prof, model=replace(prof.model, encoder_weights=""))
    cfg = RunConfig(model=name, profile=prof, device="cpu")
    if spec.count is not None:  # the spec's own counter chooses its device
        return int(spec.count(cfg))
    with torch.device("meta"):
        module = spec.build(cfg)
    return sum(p.numel() for p in module.parameters())


def _register_builtin() -> None:
    """Import the built-in models for their ``@register_model`` side effect."""
    for module in ("baselines", "segnet", "cascade"):
        importlib.import_module(f"bench.models.{module}")


_register_builtin()

__all__ = ["MODELS", "ModelSpec", "register_model", "get_model_spec", "requirements", "check_run_config", "build_model",
           "count_parameters"]
