"""The whole study behind Tables 3-8: every model x plane x task, the fused rows, the ablations.

``bench demo`` runs it on the phantom at the ``demo`` profile and writes the report; CI's golden
check runs it at the ``golden`` profile into a temporary folder and compares the tables. The
study only says *which* runs the tables need (`study_targets`); the scheduler
(`bench.engine.scheduler`) adds what they need first, deduplicates and runs them. Runs already
finished in ``results`` are reused, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from bench.config import PLANES, RunConfig, get_profile
from bench.errors import ConfigError
from bench.paths import seed_tag


@dataclass(frozen=True)
class StudyPlan:
    # () = every registered model (`bench.models.model_names`: the paper's four, UNet++, plug-ins),
    # so a model added to the registry is in the demo study and its tables without naming it here
    models: tuple[str, ...] = ()
    planes: tuple[str, ...] = PLANES
    tasks: tuple[str, ...] = ("liver", "lesion")
    # the lesion step is run on these planes only (the demo keeps 2-CPU time near 20 minutes with
    # the axial plane; Table 8's other planes then show as missing cells with the command to fill them)
    lesion_planes: tuple[str, ...] = PLANES
    ablations: tuple[str, ...] = ("patch-level", "loss", "iterations")
    # lesion task: these baselines (those in ``models``) also run with each ``model.liver_prior`` mode here,
    # Table 8's "+ liver prior" columns beside the plain baseline and ours. None (default): the registry's
    # default baselines that take a liver prior (`prior_baselines`: U-Net); with crop, the slice cut to the
    # liver cascade's boxes (the same crop ours segments lesions in), one run per lesion plane
    prior_models: tuple[str, ...] | None = None
    liver_priors: tuple[str, ...] = ("crop",)
    fused: bool = True
    folds: int = 0  # K > 0: every run once per cross-validation fold (K = patients: leave-one-out)
    overrides: tuple[tuple[str, object], ...] = ()  # applied to every run
    # "matched": every model but the budget reference (train.budget_reference, ours) trains as many
    # optimiser steps as the reference's run on the same plane, task, seed and fold (issue 12: the
    # cascade's localizer + tuner + reiterations otherwise get more steps than a baseline's epochs);
    # "epochs": each model its own profile epochs (the golden study: cheaper, and its numbers are
    # calibrated that way)
    budget: str = "matched"


def prior_baselines() -> tuple[str, ...]:
    """The baselines a study runs with the liver prior by default: those flagged ``default_baseline`` that declare
    the ``liver_prior`` capability (`bench.models`; U-Net), in table order."""
    from bench.models import default_baselines, models_with  # lazy: torch; bench demo --help fills {prior_baselines}

    takers = set(models_with("liver_prior"))
    return tuple(m for m in default_baselines() if m in takers)


def real_data_models() -> tuple[str, ...]:
    """The models ``bench demo`` trains on real CT unless ``--models`` says otherwise: the default baselines
    (`bench.models.default_baselines`: U-Net) and the proposed model, in table order. On the phantom it is
    every registered model (an empty `StudyPlan.models`)."""
    from bench.models import default_baselines, proposed_model  # lazy: torch; bench demo --help fills {real_data_models}

    return (*default_baselines(), proposed_model())


def study_targets(profile: str, results: str, dataset: str, root: str, cache: str, seeds: tuple[int, ...],
                  device: str, plan: StudyPlan) -> list[tuple[str, RunConfig]]:
    """(label, config) of every run and fused row the tables need (the scheduler adds prerequisites)."""
    from bench.ablations import ABLATIONS, variant_config
    from bench.config import override

    if plan.budget not in ("matched", "epochs"):
        raise ConfigError(f"study budget {plan.budget!r}: expected matched or epochs")
    from bench.models import get_model_spec, model_names

    models = plan.models or tuple(model_names())
    prior_models = prior_baselines() if plan.prior_models is None else plan.prior_models
    for model in (*models, *prior_models):
        get_model_spec(model)  # unknown name -> "did you mean", before anything runs
    prof = get_profile(profile)
    targets: list[tuple[str, RunConfig]] = []
    folds: tuple[int | None, ...] = tuple(range(plan.folds)) if plan.folds else (None,)
    for seed in seeds:
        for fold in folds:
            def config(model: str, plane: str, task: str) -> RunConfig:
                cfg = RunConfig(model=model, plane=plane, task=task, dataset=dataset, root=root, seed=seed,
                                device=device, results=results, cache=cache, profile=prof, fold=fold)
                cfg = override(cfg, dict(plan.overrides)) if plan.overrides else cfg
                if plan.budget == "matched" and model != cfg.profile.train.budget_reference:
                    cfg = override(cfg, {"profile.train.budget": "matched"})
                tag = seed_tag(model, "", seed, fold)
                return override(cfg, {"tag": tag}) if tag != model else cfg

            where = f"seed {seed}" + (f" fold {fold}" if fold is not None else "")
            for task in plan.tasks:
                planes = plan.planes if task == "liver" else tuple(p for p in plan.planes if p in plan.lesion_planes)
                for model in models:
                    priors = plan.liver_priors if task == "lesion" and model in prior_models else ()
                    for variant in (None, *priors):  # the plain model, then each liver-prior variant
                        def make(plane: str, model: str = model, variant: str | None = variant) -> RunConfig:
                            cfg = config(model, plane, task)
                            return cfg if variant is None else variant_config(
                                cfg, (("profile.model.liver_prior", variant),))
                        name = model if variant is None else f"{model}+{variant}"
                        targets += [(f"{task:6s} {name:9s} {plane:8s} {where}", make(plane)) for plane in planes]
                        if plan.fused and set(PLANES) <= set(planes):
                            targets.append((f"{task:6s} {name:9s} fused    {where}", make("fused")))
            for name in plan.ablations:
                ablation = ABLATIONS.get(name)
                # an ablation of several models runs on those the study trains (--models unet,ours: U-Net's
                # norm variants only); one of a single model (ours' Tables 3-5) runs on it in any case
                mine = tuple(m for m in ablation.models if m in models) or ablation.models
                for model in (mine if len(ablation.models) > 1 else ablation.models):
                    base = config(model, ablation.plane, ablation.task)
                    targets += [(f"ablation {name} {model} {label} {where}", variant_config(base, overrides))
                                for label, overrides in ablation.variants]
    return targets


def run_study(profile: str, results: str, dataset: str = "phantom", root: str = "", cache: str = "cache",
              seeds: tuple[int, ...] = (0,), device: str = "cpu", plan: StudyPlan = StudyPlan(),
              progress: bool = True, say: Callable[[str], None] = print, workers: int = 0) -> dict[str, float]:
    """Train/evaluate everything the tables need; returns seconds per phase (prepare, runs)."""
    from bench.engine.scheduler import default_workers, execute, plan as plan_jobs

    from bench.datasets.cache import prepare_dataset

    jobs = plan_jobs(study_targets(profile, results, dataset, root, cache, seeds, device, plan))
    t0 = time.perf_counter()
    first = jobs[0].cfg  # the cache and the split (with its folds) are made once, before any worker starts
    prepare_dataset(first.dataset, first.root or None, first.cache, first.profile, first.splits or None,
                    progress=progress, folds=plan.folds)
    _prepare_roi_grids(jobs, first, progress)
    timings = {"prepare": time.perf_counter() - t0}
    timings["runs"] = execute(jobs, workers=workers or default_workers(device), progress=progress, say=say)
    return timings


def _prepare_roi_grids(jobs, first, progress: bool) -> None:
    """The finer slice grids of lesion runs on the liver ROI, prepared before workers start, like the first."""
    from bench.datasets.cache import prepare_dataset
    from bench.models.lesion_roi import data_profile

    done = [first.profile]
    for job in jobs:
        grid = data_profile(job.cfg)
        if grid not in done:
            done.append(grid)
            prepare_dataset(job.cfg.dataset, job.cfg.root or None, job.cfg.cache, grid, job.cfg.splits or None,
                            progress=progress, fold=job.cfg.fold, include_cysts=job.cfg.include_cysts)
