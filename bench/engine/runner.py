"""One run's life, owned in one place: status, lock, resume, train, evaluate, record.

`run(cfg)` serves every caller (``bench train``, ``bench ablate``, ``bench demo`` through the
scheduler, and the tests):

1. check the config against its model (`bench.models.check_run_config`) and compute the runs it
   needs (`bench.models.requirements`), unless the scheduler did both when it planned the run
   (it passes ``needs``): each happens once per run;
2. read the folder's status (`bench.engine.records.run_status`): a ``complete`` run with the
   same fingerprint is reused (unless ``force``); a folder holding *another* config is refused
   with the changed fields named (``--force`` replaces it, ``--results`` goes elsewhere), with or
   without ``--resume``;
3. take the folder's lock (`bench.engine.runlock`): a second writer is refused in one line;
4. train with the recipe its model spec names (`bench.engine.recipe.RECIPES`), after checking
   that the runs it needs are complete;
5. record (config.json: config, fingerprint, status, budget per stage, wall times, parameters,
   device, versions, git) and evaluate on val and test (`bench.engine.evaluate`), handing the
   trained model (selected weights, in memory) and the open slice cache to the evaluation instead
   of re-reading best.pt, config.json and the cache.

A fused "run" is an evaluation of its three plane runs (soft voting); it is complete while the
planes it was computed from are unchanged, and recomputed when one of them was retrained.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from bench.atomic import atomic_path
from bench.config import RunConfig, changed_fields, describe_changes, to_dict
from bench.errors import ConfigError, DataError
from bench.paths import HISTORY, checkpoint_dir, run_dir


def _refuse_other_config(cfg: RunConfig, folder: Path) -> None:
    from bench.engine.records import read_record

    try:
        old = read_record(folder)["config"]
        detail = describe_changes(old, to_dict(cfg), changed_fields(old, to_dict(cfg))) or "another config"
    except DataError:
        detail = "another config"
    raise ConfigError(f"{folder} holds a run with another config ({detail}); use --force to replace it "
                      f"or --results DIR")


def check_prerequisites(cfg: RunConfig, needs: Iterable[RunConfig]) -> None:
    """Every run ``cfg`` reads (``needs``: `bench.models.requirements`) must be complete (the scheduler runs them first)."""
    from bench.engine.records import run_status

    for dep in needs:
        if run_status(dep) != "complete":
            task = f" --task {dep.task}" if dep.task != "liver" else ""
            raise DataError(f"{run_dir(cfg)} needs {run_dir(dep)} first (bench train {dep.model} --plane {dep.plane}"
                            f"{task} --dataset {dep.dataset} ...; bench train plans it for you)")


def run(cfg: RunConfig, resume: bool = False, force: bool = False, progress: bool = True,
        evaluate: bool = True, needs: Sequence[RunConfig] | None = None) -> Path:
    """Train (or reuse) one plane run and evaluate it on val and test; a fused config is evaluated.

    ``needs``: the runs ``cfg`` reads, as `bench.engine.scheduler.plan` checked and computed them;
    None (a direct call): the config and its prerequisites are checked and the needs computed here.
    """
    from bench.engine.records import run_status

    if needs is None:
        needs = checked_requirements(cfg)
    folder = run_dir(cfg)
    status = run_status(cfg)
    if status == "complete" and not force and (cfg.plane != "fused" or _fused_current(cfg)):
        _check_bindings(cfg)  # a finished run on data that changed since is not "done"
        return folder
    if status == "different" and not force:
        _refuse_other_config(cfg, folder)
    if cfg.plane == "fused":
        return _run_fused(cfg, progress)
    return _train_plane(cfg, needs, resume=resume, clear=force or (status == "partial" and not resume),
                        progress=progress, evaluate=evaluate)


def checked_requirements(cfg: RunConfig) -> list[RunConfig]:
    """Check ``cfg`` and, recursively, the runs it needs (each once); return the runs it needs."""
    from bench.models import check_run_config, requirements

    check_run_config(cfg, prerequisites=False)
    needs = requirements(cfg)
    for dep in needs:
        checked_requirements(dep)
    return needs


def _train_plane(cfg: RunConfig, needs: Sequence[RunConfig], resume: bool, clear: bool, progress: bool,
                 evaluate: bool) -> Path:
    import torch

    from bench.atomic import write_json
    from bench.datasets.cache import open_or_prepare
    from bench.models.lesion_roi import data_profile
    from bench.devices import resolve_device
    from bench.engine.distributed import init_distributed
    from bench.engine.recipe import TrainContext, budget, get_recipe
    from bench.engine.records import run_data_binding, run_fingerprint, run_record, update_record
    from bench.engine.runlock import clear_folder, run_lock
    from bench.engine.train import set_seed
    from bench.models import get_model_spec

    folder = run_dir(cfg)
    device = resolve_device(cfg.device)
    info = init_distributed(device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    lock = run_lock(folder) if info.is_main else contextlib.nullcontext()
    with lock:
        if info.is_main:
            if clear:
                clear_folder(folder)
            _remove_dead_temp(cfg)
        info.barrier()
        check_prerequisites(cfg, needs)
        set_seed(cfg.seed, cfg.profile.train.deterministic)
        t0 = time.perf_counter()
        grid = data_profile(cfg)  # a lesion run on the liver ROI reads a finer slice grid
        if info.is_main:
            cache, splits = open_or_prepare(cfg, progress=progress, profile=grid)
        info.barrier()
        if not info.is_main:
            cache, splits = open_or_prepare(cfg, progress=False, profile=grid)
        t_prepare = time.perf_counter() - t0
        from bench.engine.geometry import GEOMETRY_KEY, training_geometry

        geometry = {GEOMETRY_KEY: training_geometry(cache, splits["train"])}  # compared by bench predict
        if info.is_main:
            write_json(folder / "config.json", run_record(cfg, device, fingerprint=run_fingerprint(cfg),
                                                          status="training", **geometry))
        recipe = get_recipe(get_model_spec(cfg.model).recipe, cfg.model)
        t1 = time.perf_counter()
        trained = recipe(TrainContext(cfg, cache, splits, device, info, resume=resume, progress=progress))
        wall = time.perf_counter() - t1
        if info.is_main:
            with atomic_path(folder / HISTORY) as tmp:  # a killed run never leaves half a history
                pd.DataFrame(trained.history).to_csv(tmp, index=False)
            from bench.engine.curves import write_progress

            write_progress(folder / HISTORY, title=f"{cfg.run_tag} {cfg.task} {cfg.plane}")
            spent = budget(trained.stages)
            if "budget_matched_to" in trained.extra:
                spent["matched_to"] = trained.extra.pop("budget_matched_to")
            record = run_record(cfg, device, fingerprint=run_fingerprint(cfg), status="trained",
                                wall_time_s={"prepare": t_prepare, "train": wall}, budget=spent,
                                training={**trained.stages, **trained.extra},
                                # trainable only: a frozen prerequisite (a baseline's liver prior) is not the model's
                                parameters=sum(p.numel() for p in trained.model.parameters() if p.requires_grad),
                                world_size=info.world, splits={k: len(v) for k, v in splits.items()},
                                data=run_data_binding(cfg, cache.dir, splits), **geometry)
            write_json(folder / "config.json", record)
        info.barrier()
        if evaluate and info.is_main:
            from bench.engine.evaluate import OpenRun, evaluate_plane

            evaluate_plane(cfg, progress=progress, trained=OpenRun(trained.model, cache, splits))
            update_record(folder, status="complete", finished=time.time())
    return folder


def _remove_dead_temp(cfg: RunConfig) -> None:
    """Leftovers (``*.tmp-PID``) of writers that died, e.g. a kill during a checkpoint save."""
    from bench.atomic import remove_stale_tmp

    for sub in (run_dir(cfg), checkpoint_dir(cfg)):
        remove_stale_tmp(sub)


# ---------------------------------------------------------------- fused rows


def _plane_stamps(cfg: RunConfig) -> dict[str, float | None]:
    from bench.config import PLANES
    from bench.engine.records import read_record

    stamps: dict[str, float | None] = {}
    for plane in PLANES:
        try:
            stamps[plane] = read_record(run_dir(cfg, plane)).get("finished")
        except DataError:
            stamps[plane] = None
    return stamps


def _fused_current(cfg: RunConfig) -> bool:
    """A fused result stays valid while its three plane runs are the ones it was computed from."""
    from bench.engine.records import read_record

    try:
        return read_record(run_dir(cfg)).get("sources_finished") == _plane_stamps(cfg)
    except DataError:
        return False


def _run_fused(cfg: RunConfig, progress: bool) -> Path:
    from bench.engine.evaluate import evaluate_fused
    from bench.engine.records import update_record
    from bench.engine.runlock import run_lock

    folder = run_dir(cfg)
    _check_bindings(cfg)
    with run_lock(folder):
        evaluate_fused(cfg, progress=progress)
        update_record(folder, sources_finished=_plane_stamps(cfg), finished=time.time(), **_axial_binding(cfg))
    return folder


def _check_bindings(cfg: RunConfig, rescore: bool = False) -> dict[str, str]:
    """`bench.engine.records.check_data_binding` of a plane run, or of the three planes of a fused one.

    A fused row is never re-scored over changed planes: each plane is re-scored first.
    Returns {plane: change} of the changes ``rescore`` accepted.
    """
    from bench.config import PLANES
    from bench.engine.records import check_data_binding

    if cfg.plane != "fused":
        change = check_data_binding(cfg, run_dir(cfg), rescore)
        return {cfg.plane: change} if change else {}
    for plane in PLANES:
        if (run_dir(cfg, plane) / "config.json").is_file():
            check_data_binding(cfg, run_dir(cfg, plane))
    return {}


def _axial_binding(cfg: RunConfig) -> dict:
    """A fused row's ``data``: its planes' binding (they were checked to agree with the data now)."""
    from bench.engine.records import read_record

    try:
        data = read_record(run_dir(cfg, "axial")).get("data")
    except DataError:
        return {}
    return {"data": data} if isinstance(data, dict) else {}


def evaluate(cfg: RunConfig, splits: Iterable[str] = ("val", "test"), surface: bool = False,
             progress: bool = True, rescore: bool = False) -> Path:
    """Re-evaluate a trained run (``bench evaluate``), holding its lock; other splits' rows are kept.

    It starts with the run's data binding (`bench.engine.records.check_data_binding`): changed data
    is refused, or with ``rescore`` scored as it is now (every split) and recorded.
    """
    from bench.engine.evaluate import evaluate_fused, evaluate_plane
    from bench.engine.records import record_rescore
    from bench.engine.runlock import run_lock

    splits = tuple(splits)
    if rescore and set(splits) != {"val", "test"}:
        raise ConfigError("--rescore scores the run on changed data: every split (drop --split), so no row of the "
                          "old data is kept")
    folder = run_dir(cfg)
    changes = _check_bindings(cfg, rescore)
    with run_lock(folder):
        if cfg.plane == "fused":
            evaluate_fused(cfg, splits, progress=progress, surface=surface)
            from bench.engine.records import update_record

            update_record(folder, **_axial_binding(cfg))
        else:
            evaluate_plane(cfg, splits, progress=progress, surface=surface)
            for change in changes.values():
                record_rescore(cfg, folder, change)
    return folder
