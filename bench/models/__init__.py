"""Model registry: every network the benchmark trains, by name (``bench ls models``).

Output convention (used by every model, the losses, the engine and the metrics)
------------------------------------------------------------------------------
A model maps a batch of slices ``(B, 1, H, W)`` float to ``(B, 1, H, W)`` **logits**: one
output channel per task, binary, read through a sigmoid (probability = ``sigmoid(logit)``,
foreground where it is >= 0.5). A task is ``liver`` or ``lesion``; liver and lesion are
*separate* models trained in separate steps, as in the paper (section 2: "separate liver and
liver lesions segmentations steps"), so no model ever predicts both classes at once and no
softmax over classes is needed. The cascade ("ours") keeps the same outer contract.

A model is one plug-in
----------------------
One `ModelSpec` per model (`bench.models.spec`, re-exported here) holds everything the toolkit
knows about it: name, display label, role (``baseline`` or ``proposed``), build function, recipe
and prerequisites, the config section its knobs live in, capabilities, parameter card and table
order. Study planning, the ablations, Tables 3-8, figures, ``bench ls models`` and the CLI's help
and unknown-name errors read this registry by role, capability or flag (`proposed_model`,
`models_with`, `default_baselines`, `liver_prior_model`); no code outside a spec lists model names. The paper's published numbers stay in
`bench.reports.paper` (the transcription of the paper, diffable against the PDF), keyed by the
spec's name; a model without them shows "-" in the paper columns.

A model registers by its module being imported: every module of this package is imported
(`_register_builtin`: a new file here is found without editing any list), then the plug-ins
(`bench.plugins`: the ``liverbench.models`` entry points, ``BENCH_PLUGINS`` and
``bench --plugin``).

Recipes and prerequisites
-------------------------
A spec declares *how* its model trains (``recipe``, a name in the engine's recipe registry
`bench.engine.recipe.RECIPES`, where recipe names are declared: ``slices`` = one network on full
slices, the baselines; ``cascade`` = the proposed method's stages and Algorithm 1) and *which
runs must exist first* (``needs``: the lesion cascade needs the same-plane liver cascade). The
engine maps the recipe name to its training code and asks `requirements` for the run graph, so no
code outside a spec branches on a model's name or kind. `requirements` adds the one rule every
model shares: a fused row needs its three planes.

Capabilities (`CAPABILITIES`), declared once in the spec:

* ``liver_prior``: the model takes ``model.liver_prior`` on the lesion task
  (`bench.models.liver_prior`). Declaring it is all a baseline does: `register_model` wraps its
  ``build(cfg, in_channels=1)`` with the prior and adds the liver run to its ``needs``; a model
  without it refuses ``model.liver_prior`` in one line.
* ``norm``: the builder honours the normalisation switch ``model.norm`` (batch | group | instance);
  the ``norm`` ablation runs every baseline declaring it (`bench.ablations`).
* ``provides_liver_prior``: the model's liver run is the liver prior every other lesion model reads
  (``model.liver_prior``, `bench.models.liver_prior.liver_prior_run`) and the lesion ROI is cut
  from (`bench.models.lesion_roi.uses_roi`); its own lesion runs segment inside that ROI. Exactly
  one model declares it (`liver_prior_model`): the cascade ("ours").

One flag beside the capabilities, ``default_baseline``: the baseline(s) a study schedules where it
runs fewer than all models (`default_baselines`): ``bench demo`` on real data trains them and the
proposed model, and the lesion study's "+ liver prior" rows are theirs (`bench.engine.study`).
U-Net declares it.

Registering a model (the whole of ``bench/models/unetpp.py`` is an example)::

    @register_model("mynet", label="MyNet", description="one line for bench ls",
                    capabilities={"liver_prior"}, input_multiple=lambda cfg: 32)
    def build_mynet(cfg: RunConfig, in_channels: int = 1) -> torch.nn.Module: ...
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import fields, replace
from typing import Any, Callable, Iterable

import torch

from bench.config import PLANES, Profile, RunConfig, get_profile, without_baseline_fields
from bench.errors import ConfigError
from bench.models.crf import require_crf
from bench.models.liver_prior import liver_prior_run, with_liver_prior
from bench.models.spec import (CAPABILITIES, DEFAULT_RANK, MODELS, ROLES, ModelSpec, Role, default_baselines,
                               get_model_spec, liver_prior_model, model_label, model_names, model_order, models_with,
                               proposed_model)
from bench.paths import seed_tag


def _check_spec_fields(name: str, role: str, capabilities: frozenset[str], config_section: str,
                       default_baseline: bool = False) -> None:
    if role not in ROLES:
        raise ConfigError(f"model {name!r}: role {role!r} is not one of {', '.join(ROLES)}")
    unknown = sorted(capabilities - set(CAPABILITIES))
    if unknown:
        raise ConfigError(f"model {name!r}: unknown capability {unknown[0]!r} (known: {', '.join(CAPABILITIES)})")
    if default_baseline and role != "baseline":
        raise ConfigError(f"model {name!r}: default_baseline=True needs role 'baseline', not {role!r}")
    sections = {f.name for f in fields(Profile)}
    if config_section not in sections:
        raise ConfigError(f"model {name!r}: config_section {config_section!r} is not a profile section "
                          f"(e.g. model, cascade)")


def _combine_needs(*parts: Callable[[RunConfig], list[RunConfig]] | None) -> Callable[[RunConfig], list[RunConfig]] | None:
    present = [p for p in parts if p is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]

    def needs(cfg: RunConfig) -> list[RunConfig]:
        return [dep for part in present for dep in part(cfg)]

    return needs


def register_model(
    name: str,
    *,
    label: str = "",
    role: Role = "baseline",
    recipe: str = "slices",
    description: str = "",
    capabilities: Iterable[str] = (),
    config_section: str = "model",
    card: Callable[[RunConfig], Any] | None = None,
    rank: int = DEFAULT_RANK,
    count: Callable[[RunConfig], int] | None = None,
    needs: Callable[[RunConfig], list[RunConfig]] | None = None,
    input_multiple: Callable[[RunConfig], int] | None = None,
    relative_cost: float = 1.0,
    default_baseline: bool = False,
) -> Callable[[Callable[..., torch.nn.Module]], Callable[..., torch.nn.Module]]:
    """Decorator for a build function ``RunConfig -> nn.Module``; returns the function unchanged.

    With capability ``liver_prior`` the function is ``build(cfg, in_channels=1)`` and the
    registered build is it wrapped with the liver prior (`bench.models.liver_prior.with_liver_prior`),
    its ``needs`` extended by the liver run (`liver_prior_run`): the capability is declared once.
    A taken name is an error (`bench.registry.Registry`).
    """
    caps = frozenset(capabilities)
    _check_spec_fields(name, role, caps, config_section, default_baseline)
    if not isinstance(recipe, str) or not recipe:
        raise ConfigError(f"model {name!r}: recipe must be a recipe name, got {recipe!r}")

    def decorator(build: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
        doc = (build.__doc__ or "").strip()
        text = description or (doc.splitlines()[0] if doc else "")
        registered, all_needs = build, needs
        if "liver_prior" in caps:
            registered, all_needs = with_liver_prior(build, build_model), _combine_needs(liver_prior_run, needs)
        MODELS.add(name, ModelSpec(name=name, build=registered, recipe=recipe, description=text, label=label,
                                   role=role, config_section=config_section, capabilities=caps, card=card, rank=rank,
                                   count=count, needs=all_needs, input_multiple=input_multiple,
                                   relative_cost=relative_cost, default_baseline=default_baseline, module=getattr(build, "__module__", "") or ""),
                   help=text)
        return build

    return decorator


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
    train = replace(cfg.profile.train, budget="epochs")
    profile = without_baseline_fields(replace(cfg.profile, train=train))
    ref = replace(cfg, model=cfg.profile.train.budget_reference, profile=profile, tag="")
    tag = seed_tag(ref.model, "", ref.seed, ref.fold)
    return replace(ref, tag=tag if tag != ref.model else "")


def check_run_config(cfg: RunConfig, prerequisites: bool = True) -> None:
    """Refuse, in one line, a config the model cannot run (unknown model, input size, options), or
    one whose prerequisite runs could not run (checked the same way, before any time is spent).

    ``prerequisites=False`` checks ``cfg`` alone: a planner that walks the run graph itself
    (`bench.engine.scheduler.plan`, `bench.engine.runner.run`) checks each run once as it reaches
    it, so no config is checked twice and no run's requirements are computed twice.
    """
    spec = MODELS.get(cfg.model)
    if cfg.profile.train.budget == "matched":
        reference = MODELS.get(cfg.profile.train.budget_reference).name
        if reference == cfg.model:
            raise ConfigError(f"train.budget=matched: {cfg.model} is the budget reference (train.budget_reference); "
                              f"it trains by its own epochs")
    multiple = spec.input_multiple(cfg) if spec.input_multiple is not None else 1
    if cfg.profile.input_size % multiple:
        raise ConfigError(f"input_size={cfg.profile.input_size}: {cfg.model} needs a multiple of {multiple}")
    require_crf(cfg.profile.cascade.crf)
    prior = cfg.profile.model.liver_prior
    if prior != "none" and not spec.liver_prior:
        takers = ", ".join(n for n in model_names() if MODELS.get(n).liver_prior)
        raise ConfigError(f"model.liver_prior={prior}: {cfg.model} takes no liver prior (a setting of the lesion "
                          f"baselines: {takers}; {liver_prior_model()} reads its liver through cascade.lesion_prior)")
    if prerequisites:
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
        prof = replace(prof, model=replace(prof.model, encoder_weights=""))
    cfg = RunConfig(model=name, profile=prof, device="cpu")
    if spec.count is not None:  # the spec's own counter chooses its device
        return int(spec.count(cfg))
    with torch.device("meta"):
        module = spec.build(cfg)
    return sum(p.numel() for p in module.parameters())


# modules of this package that hold no model (helpers the models import); every other module is
# imported for its registrations, so a new model file needs no edit anywhere else
_HELPERS = frozenset({"cards", "cascade_blocks", "crf", "gradcam", "liver_prior", "localization", "losses", "patches",
                      "roi", "tuning", "norm", "lesion_roi", "spec"})


def _register_builtin() -> None:
    """Import the built-in model modules (every module of this package but the helpers) for their
    ``@register_model`` side effect, in name order (table order is the specs' ``rank``, not this)."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name not in _HELPERS and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_register_builtin()

from bench.plugins import load_plugins  # noqa: E402  (after the built-ins: a plug-in may import them)

load_plugins()

__all__ = ["MODELS", "ModelSpec", "CAPABILITIES", "register_model", "get_model_spec", "model_names", "model_label",
           "model_order", "proposed_model", "models_with", "default_baselines", "liver_prior_model", "requirements",
           "check_run_config", "build_model", "count_parameters"]
