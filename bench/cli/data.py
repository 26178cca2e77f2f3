"""``bench data phantom OUT`` and ``bench data prepare``: make the synthetic data set, fill the slice cache.

Training prepares what it needs by itself; ``prepare`` exists so the slow step (decoding and
slicing every volume of a real data set) can run once, ahead of time, with a progress bar.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from bench.cli import app

data_app = typer.Typer(help="Data sets: generate the phantom, prepare the slice cache and the split.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _planes(values: list[str] | None) -> tuple[str, ...]:
    from bench.config import PLANES
    from bench.errors import ConfigError

    if not values:
        return PLANES
    names = [v.strip() for item in values for v in item.split(",") if v.strip()]
    bad = [n for n in names if n not in PLANES]
    if bad:
        raise ConfigError(f"unknown plane(s) {', '.join(bad)} (known: {', '.join(PLANES)})")
    return tuple(p for p in PLANES if p in names)


def _default_phantom() -> None:
    """Generate the default phantom (data/phantom) with a progress bar when it is missing."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bench.datasets import phantom as ph

    if ph.phantom_is_current(ph.DEFAULT_ROOT, ph.DEFAULT_CASES, ph.DEFAULT_SIZE, ph.DEFAULT_SLICES, ph.DEFAULT_SEED):
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task(f"phantom -> {ph.DEFAULT_ROOT}", total=ph.DEFAULT_CASES)
        ph.ensure_phantom(ph.DEFAULT_ROOT, ph.DEFAULT_CASES, ph.DEFAULT_SIZE, ph.DEFAULT_SLICES, ph.DEFAULT_SEED,
                          on_case=lambda i, case: bar.update(task, advance=1))


@data_app.command("phantom")
def phantom(
    out: Path = typer.Argument(..., help="folder to write volume-N.nii.gz + segmentation-N.nii.gz + phantom.json"),
    cases: int = typer.Option(10, "--cases", min=1, help="number of patients"),
    size: int = typer.Option(128, "--size", min=16, help="in-plane voxels (field of view fixed at 409.6 mm)"),
    slices: int = typer.Option(48, "--slices", min=8, help="axial slices (240 mm craniocaudal)"),
    seed: int = typer.Option(0, "--seed", help="data set seed (case i uses a seed derived from it and i)"),
) -> None:
    """Write a synthetic abdominal CT data set in the LiTS layout."""
    from bench.cli.paths_check import writable_dir

    writable_dir(out, "OUT")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bench.datasets.phantom import phantom_spacing, write_phantom
    console = Console()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task("phantom", total=cases)
        manifest = write_phantom(out, cases=cases, size=size, slices=slices, seed=seed,
                                 on_case=lambda i, case: bar.update(task, advance=1))
    sz, sy, sx = phantom_spacing(size, slices)
    console.print(
        f"wrote {cases} phantom case(s) {slices}x{size}x{size} (spacing {sz:g} x {sy:g} x {sx:g} mm, seed {seed}) "
        f"to {out} ({manifest.name})",
        highlight=False, soft_wrap=True,
    )


@data_app.command("prepare")
def prepare(
    dataset: str = typer.Option("phantom", "--dataset", help="phantom | lits | ircadb (bench ls datasets)"),
    root: Optional[str] = typer.Option(None, "--root", help="data set folder (phantom: generated under data/)"),
    cache: str = typer.Option("cache", "--cache", help="cache root folder"),
    profile: Optional[str] = typer.Option(None, "--profile", help="sets input size and preprocessing (default: demo on the phantom, paper otherwise)"),
    splits: Optional[str] = typer.Option(None, "--splits", help="use this splits_final.json (validated) instead of the data set's own"),
    planes: Optional[List[str]] = typer.Option(None, "--planes", help="axial,coronal,sagittal (default: all three)"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="profile override, e.g. --set preprocess.slice_fit=resize"),
    folds: int = typer.Option(0, "--folds", help="add K patient-level cross-validation folds to the split file "
                              "(K = number of patients: leave-one-patient-out)"),
) -> None:
    """Preprocess and slice every case into the on-disk cache; make or check the patient split."""
    from bench.cli.paths_check import writable_dir

    writable_dir(cache, "--cache")
    from bench.cli.common import default_profile
    from bench.config import get_profile, override, parse_overrides
    from bench.datasets import DATASETS, get_dataset
    from bench.paths import splits_path

    DATASETS.get(dataset)
    chosen = _planes(planes)
    if dataset == "phantom" and not root:
        _default_phantom()
    prof = get_profile(profile or default_profile(dataset))
    if set_:
        prof = override(prof, {k.removeprefix("profile."): v for k, v in parse_overrides(set_).items()})
    adapter = get_dataset(dataset, root=root or None)
    ids = adapter.case_ids()  # a bad root or case id fails here, before the cache (and torch) is imported
    from bench.datasets.cache import cache_dir_for, missing_cases, prepare_dataset

    cache_dir = cache_dir_for(cache, dataset, adapter.root, prof.input_size, prof.preprocess)
    todo = missing_cases(cache_dir, ids, chosen)
    slice_cache, split = prepare_dataset(dataset, str(adapter.root), cache, prof, splits, chosen, progress=True,
                                         folds=folds)
    console = Console()
    console.print(
        f"cache {slice_cache.dir}: {len(ids)} case(s), {len(todo)} prepared now, planes {', '.join(chosen)}, "
        f"{prof.input_size}x{prof.input_size} (profile {prof.name})",
        highlight=False, soft_wrap=True,
    )
    source = splits or splits_path(cache, dataset, adapter.root)
    counts = ", ".join(f"{k} {len(split[k])}" for k in ("train", "val", "test"))
    console.print(f"splits {source}: {counts}", highlight=False, soft_wrap=True)
    if folds:
        from bench.datasets.splits import read_splits

        for i, f in enumerate(read_splits(source).get("folds", [])):
            console.print(f"  fold {i}: train {len(f['train'])}, val {len(f['val'])}, test {', '.join(f['test'])}",
                          highlight=False, soft_wrap=True)
