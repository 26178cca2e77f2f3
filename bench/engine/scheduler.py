"""One dependency scheduler for ``bench train``, ``bench ablate`` and ``bench demo``.

`plan` turns the runs a command asks for into jobs: each requested run and, transitively, every
run it needs (`bench.models.requirements`: a lesion cascade needs the same-plane liver cascade,
a fused row its three planes), deduplicated by results folder — an ablation variant equal to the
default config *is* the default run. Planning is where each run's config is checked
(`bench.models.check_run_config`) and its requirements computed, once per run: the runner gets
both with the job and does neither again. `execute` runs them through `bench.engine.runner.run`,
dependencies first, in one process or in ``workers`` processes with ``cores // workers`` threads
each: small CPU convolutions scale poorly over threads, so two single-thread runs side by side
finish sooner than two runs in turn. Each run is seeded by its own config, so results do not
depend on the scheduling order (they do depend on the thread count).
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Iterable

from bench.config import RunConfig, run_config_from_dict, to_dict
from bench.paths import run_dir


@dataclass
class Job:
    """One run to make, the runs it waits for (by key; ``deps``: their configs), and whether the user asked for it."""

    cfg: RunConfig
    label: str
    needs: set[str] = field(default_factory=set)
    requested: bool = True
    deps: tuple[RunConfig, ...] | None = None  # set by `plan` (None: not planned, the runner plans it)

    @property
    def key(self) -> str:
        return str(run_dir(self.cfg))


def job_label(cfg: RunConfig) -> str:
    return f"{cfg.task:6s} {cfg.run_tag:9s} {cfg.plane:8s} seed {cfg.seed}"


def plan(targets: Iterable[RunConfig | tuple[str, RunConfig]]) -> list[Job]:
    """Jobs for the targets and everything they need, dependencies first (a label may come with a target).

    Every run is checked here (`bench.models.check_run_config`, before any run starts) and its
    requirements computed here, each once; a run reached twice is planned once.
    """
    from bench.engine.recipe import get_recipe
    from bench.models import check_run_config, get_model_spec, requirements

    jobs: dict[str, Job] = {}

    def add(cfg: RunConfig, label: str | None, requested: bool, trail: tuple[str, ...]) -> str:
        job = Job(cfg, label or job_label(cfg), requested=requested)
        if job.key in trail:
            raise RuntimeError(f"runs need each other: {' -> '.join(trail + (job.key,))}")
        if job.key in jobs:
            jobs[job.key].requested |= requested
            return job.key
        check_run_config(cfg, prerequisites=False)  # its prerequisites are checked as they are added below
        if cfg.plane != "fused":  # a spec naming no known recipe is refused before any run starts
            get_recipe(get_model_spec(cfg.model).recipe, cfg.model)
        job.deps = tuple(requirements(cfg))
        for dep in job.deps:
            job.needs.add(add(dep, None, False, trail + (job.key,)))
        jobs[job.key] = job  # inserted after its dependencies: the dict order is a valid order
        return job.key

    for target in targets:
        label, cfg = target if isinstance(target, tuple) else (None, target)
        add(cfg, label, True, ())
    return list(jobs.values())


def _run_job(cfg_dict: dict, threads: int, progress: bool, resume: bool, force: bool,
             deps: list[dict] | None = None) -> float:
    """One job in a worker process (also called inline when there is one worker).

    ``deps``: the configs of the runs it needs, as planned (None: the runner checks and computes them)."""
    import torch

    from bench.engine.runner import run
    from bench.progress import bench_warnings_one_line

    if threads:  # a worker process: bars from two processes on one terminal would garble each other
        torch.set_num_threads(threads)
        os.environ["BENCH_PROGRESS"] = "plain"
    t0 = time.perf_counter()
    # a worker process does not run the CLI's entry point, which installs the one-line format;
    # inline (threads == 0) the caller's own warning handling stays in charge
    with bench_warnings_one_line() if threads else contextlib.nullcontext():
        needs = None if deps is None else [run_config_from_dict(d) for d in deps]
        run(run_config_from_dict(cfg_dict), resume=resume, force=force, progress=progress, needs=needs)
    return time.perf_counter() - t0


def _deps(job: Job) -> list[dict] | None:
    """A job's planned prerequisites as plain dicts (what a worker process receives)."""
    return None if job.deps is None else [to_dict(d) for d in job.deps]


def cost(job: Job) -> float:
    """Rough relative run time, for scheduling only (longest first; a fused row is an evaluation)."""
    from bench.models import get_model_spec

    return 0.2 if job.cfg.plane == "fused" else get_model_spec(job.cfg.model).relative_cost


def default_workers(device: str) -> int:
    """Two single-thread workers on a CPU with at least two cores; one process on a GPU."""
    if device != "cpu":
        return 1
    return 2 if (os.cpu_count() or 1) >= 2 else 1


PARENT_POLL_S = 1.0  # how often a worker checks that its parent is alive (where prctl is unavailable too)


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the process that started it is gone, however it died.

    Why: a SIGKILLed ``bench demo`` runs no cleanup, and its workers would train on as orphans
    (holding run locks, CPU and memory). On Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` has the
    kernel kill the worker when its parent dies; a daemon thread polling the parent's pid covers
    other systems and the race where the parent died before prctl ran.
    """
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent:  # re-parented: the parent is gone
                os._exit(1)
            time.sleep(PARENT_POLL_S)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="bench-parent-watch", daemon=True).start()


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate the pool's worker processes and drop queued jobs.

    ``ProcessPoolExecutor.__exit__`` waits for running jobs: after an interrupt the parent would block
    until every worker finished its run, and a killed parent would leave them training as orphans. A
    terminated worker's half-written files are cleared by the runner's dead-process rule on the next run.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public handle on the workers
    for process in processes:
        if process.is_alive():
            process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(timeout=10)


def execute(jobs: list[Job], workers: int = 1, resume: bool = False, force: bool = False, progress: bool = True,
            say: Callable[[str], None] = print) -> float:
    """Run the jobs (``force`` and ``resume`` apply to the requested ones); returns the seconds taken."""
    t0 = time.perf_counter()
    if workers <= 1:
        for job in jobs:
            seconds = _run_job(to_dict(job.cfg), 0, progress, resume or not job.requested, force and job.requested,
                               _deps(job))
            say(f"  {job.label}: {job.key} ({seconds:.0f} s)")
        return time.perf_counter() - t0
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // workers)
    done: set[str] = set()
    pending = {job.key: job for job in jobs}
    running: dict[Future, Job] = {}
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))
    try:
        while pending or running:
            # longest first: the tail is then short jobs filling the gaps, not one long run alone
            for key, job in sorted(pending.items(), key=lambda kv: -cost(kv[1])):
                if len(running) >= workers:
                    break
                if job.needs <= done:
                    running[pool.submit(_run_job, to_dict(job.cfg), threads, progress, resume or not job.requested,
                                        force and job.requested, _deps(job))] = job
                    del pending[key]
            if not running:
                raise RuntimeError(f"jobs wait on each other: {sorted(pending)}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                seconds = future.result()  # a failed run stops the study with its own error
                done.add(job.key)
                say(f"  {job.label}: {job.key} ({seconds:.0f} s)")
    except BaseException:  # a failed run, Ctrl-C or SIGTERM: stop the workers too, none trains on unattended
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)
    return time.perf_counter() - t0
