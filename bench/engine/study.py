"""The whole study behind Tables 3-8: every model x plane x task, the fused rows, the ablations.

``bench demo`` runs it on the phantom at the ``demo`` profile and writes the report; CI's golden
check runs it at the ``golden`` profile into a temporary folder and compares the tables. Runs
already finished in ``results`` are reused, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from bench.config import PLANES, RunConfig, get_profile

MODELS_IN_TABLES = ("segnet", "unet", "deeplabv3", "ours")


@dataclass(frozen=True)
class StudyPlan:
    models: tuple[str, ...] = MODELS_IN_TABLES
    planes: tuple[str, ...] = PLANES
    tasks: tuple[str, ...] = ("liver", "lesion")
    # the lesion step is run on these planes only (the demo keeps 2-CPU time under 20 minutes with
    # the axial plane; Table 8's other planes then show as missing cells with the command to fill them)
    lesion_planes: tuple[str, ...] = PLANES
    ablations: tuple[str, ...] = ("patch-level", "loss", "iterations")
    fused: bool = True


def run_study(profile: str, results: str, dataset: str = "phantom", root: str = "", cache: str = "cache",
              seeds: tuple[int, ...] = (0,), device: str = "cpu", plan: StudyPlan = StudyPlan(),
              progress: bool = True, console: Console | None = None) -> dict[str, float]:
    """Train/evaluate everything the tables need; returns seconds per phase."""
    from dataclasses import replace

    from bench.ablations import run_ablation
    from bench.cli.common import seed_tag
    from bench.engine.evaluate import evaluate_fused
    from bench.engine.run import train_run
    from bench.paths import run_dir

    console = console or Console()
    prof = get_profile(profile)
    timings: dict[str, float] = {}
    for seed in seeds:
        for task in plan.tasks:
            t0 = time.perf_counter()
            planes = plan.planes if task == "liver" else tuple(p for p in plan.planes if p in plan.lesion_planes)
            for model in plan.models:
                for plane in planes:
                    cfg = RunConfig(model=model, plane=plane, task=task, dataset=dataset, root=root, seed=seed,
                                    device=device, results=results, cache=cache, profile=prof,
                                    tag=seed_tag(model, "", seed) if seed else "")
                    t_run = time.perf_counter()
                    folder = train_run(cfg, progress=progress)
                    console.print(f"  {task:6s} {model:9s} {plane:8s} seed {seed}: {folder} ({time.perf_counter() - t_run:.0f} s)")
                if plan.fused and set(PLANES) <= set(planes):
                    fused_cfg = replace(cfg, plane="fused")
                    if not (run_dir(fused_cfg) / "summary.json").exists():
                        evaluate_fused(fused_cfg, progress=progress)
            timings[f"train+evaluate {task} seed {seed}"] = time.perf_counter() - t0
        for name in plan.ablations:
            t0 = time.perf_counter()
            base = RunConfig(model="ours", dataset=dataset, root=root, seed=seed, device=device, results=results,
                             cache=cache, profile=prof, tag=seed_tag("ours", "", seed) if seed else "")
            for label, folder in run_ablation(name, base, progress=progress):
                console.print(f"  ablation {name} {label} seed {seed}: {folder}")
            timings[f"ablation {name} seed {seed}"] = time.perf_counter() - t0
    return timings
