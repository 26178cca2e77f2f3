"""The whole study behind Tables 3-8: every model x plane x task, the fused rows, the ablations.

``bench demo`` runs it on the phantom at the ``demo`` profile and writes the report; CI's golden
check runs it at the ``golden`` profile into a temporary folder and compares the tables. Runs
already finished in ``results`` are reused, so an interrupted demo continues where it stopped.

The study is a small job graph (the lesion cascade needs the same-plane liver cascade, a fused
row needs its three planes, an ablation variant equal to the default *is* the default run) run
by ``workers`` processes with ``cores // workers`` threads each: small CPU convolutions scale
poorly over threads, so two single-thread runs side by side finish sooner than two runs in turn.
Each run is seeded by its own config, so results do not depend on the scheduling order (they do
depend on the thread count, which is why CI's golden command fixes ``--workers``).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field

from rich.console import Console

from bench.config import PLANES, RunConfig, get_profile, run_config_from_dict, to_dict

MODELS_IN_TABLES = ("segnet", "unet", "deeplabv3", "ours")


@dataclass(frozen=True)
class StudyPlan:
    models: tuple[str, ...] = MODELS_IN_TABLES
    planes: tuple[str, ...] = PLANES
    tasks: tuple[str, ...] = ("liver", "lesion")
    # the lesion step is run on these planes only (the demo keeps 2-CPU time near 20 minutes with
    # the axial plane; Table 8's other planes then show as missing cells with the command to fill them)
    lesion_planes: tuple[str, ...] = PLANES
    ablations: tuple[str, ...] = ("patch-level", "loss", "iterations")
    fused: bool = True


@dataclass
class Job:
    kind: str  # "train" | "fused"
    cfg: RunConfig
    label: str
    needs: set[str] = field(default_factory=set)  # keys of jobs that must finish first

    @property
    def key(self) -> str:
        from bench.paths import run_dir

        return str(run_dir(self.cfg))


def plan_jobs(profile: str, results: str, dataset: str, root: str, cache: str, seeds: tuple[int, ...], device: str,
              plan: StudyPlan) -> list[Job]:
    """Every run and fused evaluation of the study, deduplicated by results folder, with dependencies."""
    from bench.ablations import ABLATIONS, variant_config
    from bench.cli.common import seed_tag

    prof = get_profile(profile)
    jobs: dict[str, Job] = {}

    def add(job: Job) -> Job:
        return jobs.setdefault(job.key, job)

    for seed in seeds:
        def config(model: str, plane: str, task: str) -> RunConfig:
            return RunConfig(model=model, plane=plane, task=task, dataset=dataset, root=root, seed=seed, device=device,
                             results=results, cache=cache, profile=prof, tag=seed_tag(model, "", seed) if seed else "")

        for task in plan.tasks:
            planes = plan.planes if task == "liver" else tuple(p for p in plan.planes if p in plan.lesion_planes)
            for model in plan.models:
                plane_keys = set()
                for plane in planes:
                    job = Job("train", config(model, plane, task), f"{task:6s} {model:9s} {plane:8s} seed {seed}")
                    if model == "ours" and task == "lesion":
                        job.needs.add(add(Job("train", config(model, plane, "liver"),
                                              f"liver  {model:9s} {plane:8s} seed {seed}")).key)
                    plane_keys.add(add(job).key)
                if plan.fused and set(PLANES) <= set(planes):
                    add(Job("fused", config(model, "fused", task), f"{task:6s} {model:9s} fused    seed {seed}",
                            needs=plane_keys))
        for name in plan.ablations:
            ablation = ABLATIONS.get(name)
            base = config(ablation.model, ablation.plane, ablation.task)
            for label, overrides in ablation.variants:
                add(Job("train", variant_config(base, overrides), f"ablation {name} {label} seed {seed}"))
    return list(jobs.values())


def _run_job(kind: str, cfg_dict: dict, threads: int, progress: bool) -> float:
    """One job in a worker process (also called inline when there is one worker)."""
    import torch

    from bench.engine.evaluate import evaluate_fused
    from bench.engine.run import train_run
    from bench.paths import run_dir

    if threads:
        torch.set_num_threads(threads)
    cfg = run_config_from_dict(cfg_dict)
    t0 = time.perf_counter()
    if kind == "train":
        train_run(cfg, progress=progress)
    elif not (run_dir(cfg) / "summary.json").exists():
        evaluate_fused(cfg, progress=progress)
    return time.perf_counter() - t0


def default_workers(device: str) -> int:
    """Two single-thread workers on a CPU with at least two cores; one process on a GPU."""
    if device != "cpu":
        return 1
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def run_study(profile: str, results: str, dataset: str = "phantom", root: str = "", cache: str = "cache",
              seeds: tuple[int, ...] = (0,), device: str = "cpu", plan: StudyPlan = StudyPlan(),
              progress: bool = True, console: Console | None = None, workers: int = 0) -> dict[str, float]:
    """Train/evaluate everything the tables need; returns seconds per phase (prepare, jobs, total)."""
    from bench.datasets.cache import open_or_prepare

    console = console or Console()
    workers = workers or default_workers(device)
    jobs = plan_jobs(profile, results, dataset, root, cache, seeds, device, plan)
    t0 = time.perf_counter()
    open_or_prepare(jobs[0].cfg, progress=progress)  # the cache is built once, before any worker starts
    timings = {"prepare": time.perf_counter() - t0}
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 0
    done: set[str] = set()
    pending = {job.key: job for job in jobs}
    t1 = time.perf_counter()
    if workers == 1:
        for job in _ordered(jobs):
            seconds = _run_job(job.kind, to_dict(job.cfg), 0, progress)
            console.print(f"  {job.label}: {_short(job)} ({seconds:.0f} s)", highlight=False)
    else:
        import multiprocessing

        running: dict[Future, Job] = {}
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            while pending or running:
                # longest first: the tail is then short jobs filling the gaps, not one long run alone
                for key, job in sorted(pending.items(), key=lambda kv: -_cost(kv[1])):
                    if len(running) >= workers:
                        break
                    if job.needs <= done:
                        running[pool.submit(_run_job, job.kind, to_dict(job.cfg), threads, False)] = job
                        del pending[key]
                if not running:
                    raise RuntimeError(f"study jobs wait on each other: {sorted(pending)}")
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = running.pop(future)
                    seconds = future.result()  # a failed run stops the study with its own error
                    done.add(job.key)
                    console.print(f"  {job.label}: {_short(job)} ({seconds:.0f} s)", highlight=False)
    timings["runs"] = time.perf_counter() - t1
    return timings


_RELATIVE_COST = {"segnet": 1.0, "unet": 1.3, "deeplabv3": 1.5, "ours": 2.2}


def _cost(job: Job) -> float:
    """Rough relative run time, for scheduling only (measured on the demo profile on 2 CPU cores)."""
    if job.kind == "fused":
        return 0.2
    cost = _RELATIVE_COST.get(job.cfg.model, 1.5)
    if job.cfg.model == "ours":
        cost += 0.25 * job.cfg.profile.cascade.max_reiterations
    return cost


def _ordered(jobs: list[Job]) -> list[Job]:
    """Jobs in an order that respects their dependencies (the plan order, dependencies first)."""
    done: set[str] = set()
    out: list[Job] = []
    pending = list(jobs)
    while pending:
        ready = [j for j in pending if j.needs <= done]
        if not ready:
            raise RuntimeError("study jobs wait on each other")
        for job in ready:
            out.append(job)
            done.add(job.key)
        pending = [j for j in pending if j.key not in done]
    return out


def _short(job: Job) -> str:
    return job.key
