"""``bench data phantom OUT``, ``bench data prepare`` and ``bench data export``.

``phantom`` makes the synthetic data set; ``prepare`` fills the slice cache (training prepares what
it needs by itself; ``prepare`` exists so the slow step, decoding and slicing every volume of a
real data set, can run once, ahead of time, with a progress bar); ``export --format nnunet`` writes
any data set with our patient split as an nnU-Net v2 raw data set (`bench.datasets.nnunet`).
"""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional

import typer
from rich.console import Console

from bench.cli import app
from bench.cli.common import default_profile
from bench.cli.paths_check import writable_dir
from bench.config import PLANES, get_profile, load_run_config, override, parse_overrides
from bench.errors import ConfigError
from bench.paths import CACHE_ENV, run_dir, splits_path
from bench.progress import progress

if TYPE_CHECKING:
    from bench.config import RunConfig

data_app = typer.Typer(help="Data sets: generate the phantom, prepare the slice cache and the split.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _planes(values: list[str] | None) -> tuple[str, ...]:
    if not values:
        return PLANES
    names = [v.strip() for item in values for v in item.split(",") if v.strip()]
    bad = [n for n in names if n not in PLANES]
    if bad:
        raise ConfigError(f"unknown plane(s) {', '.join(bad)} (known: {', '.join(PLANES)})")
    return tuple(p for p in PLANES if p in names)


def cysts_override(overrides: list[str] | None, include_cysts: bool) -> list[str] | None:
    """``--include-cysts`` as the config override ``include_cysts=true`` (`RunConfig.include_cysts`)."""
    return [*(overrides or []), "include_cysts=true"] if include_cysts else overrides


def check_cysts(cfg: "RunConfig") -> None:
    """``bench evaluate`` scores a run with its saved config: the cyst flag must agree with it."""
    path = run_dir(cfg, "axial" if cfg.plane == "fused" else cfg.plane) / "config.json"
    if not path.is_file():
        return  # evaluate itself says that the run is missing
    try:
        stored = load_run_config(path).include_cysts
    except (ValueError, KeyError, TypeError):
        return  # a corrupt record is reported by evaluate itself
    if stored != cfg.include_cysts:
        flag = "with" if stored else "without"
        raise ConfigError(f"{path}: the run was trained {flag} --include-cysts; evaluate it {flag} the flag")


@contextlib.contextmanager
def case_progress(title: str, total: int) -> Iterator[Callable[[object], None]]:
    """A per-case tick: a bar on a terminal, one plain ``title k/total case (s)`` line per case in a log
    (nohup, CI, a pipe), so a long export is never silent until its end (`bench.progress`)."""
    with progress(title, total) as bar:
        done = itertools.count(1)

        def tick(case: object) -> None:
            bar.step()
            bar.say(f"{next(done)}/{total} {case}")

        yield tick


def _default_phantom() -> None:
    """Generate the default phantom (data/phantom) with progress when it is missing.

    `bench.datasets.phantom.ensure_phantom` says so in a line and refuses a data/phantom written
    with other parameters (never regenerates a user's folder silently).
    """
    from bench.datasets import phantom as ph  # lazy: numpy, nibabel, scipy

    hint = ph.default_root_hint()
    state, _ = ph.check_phantom_target(ph.DEFAULT_ROOT, ph.DEFAULT_CASES, ph.DEFAULT_SIZE, ph.DEFAULT_SLICES,
                                       ph.DEFAULT_SEED, hint=hint)  # refused before a bar is drawn
    if state == "current":
        return
    with case_progress(f"phantom -> {ph.DEFAULT_ROOT}", ph.DEFAULT_CASES) as tick:
        ph.ensure_phantom(ph.DEFAULT_ROOT, ph.DEFAULT_CASES, ph.DEFAULT_SIZE, ph.DEFAULT_SLICES, ph.DEFAULT_SEED,
                          on_case=lambda i, case: tick(case.id), hint=hint)


@data_app.command("phantom")
def phantom(
    out: Path = typer.Argument(..., help="folder to write volume-N.nii.gz + segmentation-N.nii.gz + phantom.json"),
    cases: int = typer.Option(10, "--cases", min=1, help="number of patients"),
    size: int = typer.Option(128, "--size", min=16, help="in-plane voxels (field of view fixed at 409.6 mm)"),
    slices: int = typer.Option(48, "--slices", min=8, help="axial slices (240 mm craniocaudal)"),
    seed: int = typer.Option(0, "--seed", help="data set seed (case i uses a seed derived from it and i)"),
    force: bool = typer.Option(False, "--force", help="replace a phantom written with other parameters "
                               "(a folder not written by bench data phantom is never touched)"),
) -> None:
    """Write a synthetic abdominal CT data set in the LiTS layout (never over a folder it did not write)."""
    writable_dir(out, "OUT")
    from bench.datasets.phantom import MANIFEST, check_phantom_target, describe_phantom, ensure_phantom, phantom_spacing  # lazy: numpy, nibabel, scipy

    console = Console()
    hint = "pass --force to replace it, or choose another folder"
    state, _ = check_phantom_target(out, cases, size, slices, seed, force, hint)  # refused before progress starts
    if state == "current":
        console.print(f"{out} already holds phantom {describe_phantom(cases, size, slices, seed)}; nothing written",
                      highlight=False, soft_wrap=True)
        return
    with case_progress("phantom", cases) as tick:
        ensure_phantom(out, cases=cases, size=size, slices=slices, seed=seed, force=force,
                       on_case=lambda i, case: tick(case.id), hint=hint,
                       say=(lambda text: None) if state == "new" else None)
    sz, sy, sx = phantom_spacing(size, slices)
    console.print(
        f"wrote {cases} phantom case(s) {slices}x{size}x{size} (spacing {sz:g} x {sy:g} x {sx:g} mm, seed {seed}) "
        f"to {out} ({MANIFEST})",
        highlight=False, soft_wrap=True,
    )


@data_app.command("prepare")
def prepare(
    dataset: str = typer.Option("phantom", "--dataset", help="{datasets} (bench ls datasets)"),
    root: Optional[str] = typer.Option(None, "--root", help="data set folder (phantom: generated under $BENCH_DATA/phantom, default data/phantom)"),
    cache: str = typer.Option("cache", "--cache", envvar=CACHE_ENV, help="cache root folder"),
    profile: Optional[str] = typer.Option(None, "--profile", help="{profiles}: sets input size and preprocessing (default: {default_profile})"),
    splits: Optional[str] = typer.Option(None, "--splits", help="use this splits_final.json (validated) instead of the data set's own"),
    planes: Optional[List[str]] = typer.Option(None, "--planes", help="axial,coronal,sagittal (default: all three)"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="profile override, e.g. --set preprocess.slice_fit=resize"),
    folds: int = typer.Option(0, "--folds", help="add K patient-level cross-validation folds to the split file "
                              "(K = number of patients: leave-one-patient-out)"),
    include_cysts: bool = typer.Option(False, "--include-cysts", help="ircadb: liver cysts count as lesions "
                                       "(cached in their own folder)"),
) -> None:
    """Preprocess and slice every case into the on-disk cache; make or check the patient split."""
    writable_dir(cache, "--cache")
    from bench.datasets import DATASETS, get_dataset  # lazy: numpy, nibabel, scipy
    DATASETS.get(dataset)
    chosen = _planes(planes)
    if dataset == "phantom" and not root:
        _default_phantom()
    prof = get_profile(profile or default_profile(dataset))
    if set_:
        prof = override(prof, {k.removeprefix("profile."): v for k, v in parse_overrides(set_).items()})
    adapter = get_dataset(dataset, root=root or None, include_cysts=include_cysts)
    ids = adapter.case_ids()  # a bad root or case id fails here, before the cache (and torch) is imported
    from bench.datasets.cache import cache_dir_for, missing_cases, prepare_dataset  # lazy: numpy, nibabel, scipy

    cache_dir = cache_dir_for(cache, dataset, adapter.root, prof.input_size, prof.preprocess, adapter.label_fingerprint())
    todo = missing_cases(cache_dir, ids, chosen, adapter)  # also cases whose source files changed
    slice_cache, split = prepare_dataset(dataset, str(adapter.root), cache, prof, splits, chosen, progress=True,
                                         folds=folds, include_cysts=include_cysts)
    console = Console()
    console.print(
        f"cache {slice_cache.dir}: {len(ids)} case(s), {len(todo)} prepared now, planes {', '.join(chosen)}, "
        f"{prof.input_size}x{prof.input_size} (profile {prof.name})" + (", cysts as lesions" if include_cysts else ""),
        highlight=False, soft_wrap=True,
    )
    source = splits or splits_path(cache, dataset, adapter.root)
    counts = ", ".join(f"{k} {len(split[k])}" for k in ("train", "val", "test"))
    console.print(f"splits {source}: {counts}", highlight=False, soft_wrap=True)
    if folds:
        from bench.datasets.splits import read_splits  # lazy: numpy, nibabel, scipy

        for i, f in enumerate(read_splits(source).get("folds", [])):
            console.print(f"  fold {i}: train {len(f['train'])}, val {len(f['val'])}, test {', '.join(f['test'])}",
                          highlight=False, soft_wrap=True)


@data_app.command("export")
def export(
    format: str = typer.Option(..., "--format", help="nnunet (an nnU-Net v2 raw data set)"),
    dataset: str = typer.Option(..., "--dataset", help="{datasets} (bench ls datasets)"),
    out: Path = typer.Option(..., "--out", help="folder to write DatasetXXX_Name/ into (e.g. $nnUNet_raw)"),
    root: Optional[str] = typer.Option(None, "--root", help="data set folder (phantom: generated under $BENCH_DATA/phantom, default data/phantom)"),
    task: str = typer.Option("both", "--task", help="both (0/1/2) | liver (0/1) | lesion (0/1)"),
    dataset_id: int = typer.Option(501, "--dataset-id", help="nnU-Net data set id (1..999)"),
    name: Optional[str] = typer.Option(None, "--name", help="nnU-Net data set name (default <dataset>_<task>)"),
    cache: str = typer.Option("cache", "--cache", envvar=CACHE_ENV, help="cache root: where the data set's splits_final.json lives"),
    splits: Optional[str] = typer.Option(None, "--splits", help="use this splits_final.json (validated) instead"),
    include_cysts: bool = typer.Option(False, "--include-cysts", help="ircadb: liver cysts count as lesions"),
    force: bool = typer.Option(False, "--force", help="replace an existing DatasetXXX_Name folder, and an earlier "
                               "export with the same id under another name (nnU-Net needs one folder per id)"),
) -> None:
    """Write a data set and our patient split as an nnU-Net v2 raw data set (test patients -> imagesTs)."""
    from bench.datasets import DATASETS, get_dataset  # lazy: numpy, nibabel, scipy
    from bench.datasets.nnunet import EXPORT_FORMATS, TASKS, check_export_target, default_export_name, export_nnunet  # lazy: numpy, nibabel, scipy
    from bench.datasets.splits import load_or_create_splits  # lazy: numpy, nibabel, scipy
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"unknown --format {format!r} (known: {', '.join(EXPORT_FORMATS)})")
    if task not in TASKS:
        raise ConfigError(f"unknown --task {task!r} (known: {', '.join(TASKS)})")
    DATASETS.get(dataset)
    if dataset == "phantom" and not root:
        _default_phantom()
    adapter = get_dataset(dataset, root=root or None, include_cysts=include_cysts)
    ids = adapter.case_ids()
    check_export_target(out, dataset_id, name or default_export_name(adapter.name, task), force)  # before the bar
    source = Path(splits) if splits else splits_path(cache, dataset, adapter.root)
    split = load_or_create_splits(splits_path(cache, dataset, adapter.root), ids, seed=0,
                                  given=Path(splits) if splits else None)
    n = sum(len(split[k]) for k in ("train", "val", "test"))
    with case_progress(f"export {dataset} -> nnU-Net", n) as tick:
        result = export_nnunet(adapter, split, out, task=task, dataset_id=dataset_id, name=name,
                               splits_source=str(source.resolve()), force=force, on_case=tick)
    console = Console()
    for note in result.notes:
        Console(stderr=True).print(f"[yellow]note:[/yellow] {note}", highlight=False, soft_wrap=True)
    folder = result.folder.resolve()
    console.print(
        f"wrote {folder}: imagesTr/labelsTr {len(result.train) + len(result.val)} (train {len(result.train)}, "
        f"val {len(result.val)}), imagesTs/labelsTs {len(result.test)} (our test patients, in no fold), "
        f"labels {result.dataset_json['labels']}; split from {source.resolve()}",
        highlight=False, soft_wrap=True,
    )
    did = int(folder.name[len("Dataset"):len("Dataset") + 3])
    # our test patients are in imagesTs; with none (e.g. two patients: 1 train, 1 val) only fold 0's
    # validation predictions exist, so the hint must not send the user to predict an empty folder
    predict = (f"nnUNetv2_predict -i {folder / 'imagesTs'} -o PRED -d {did} -c 3d_fullres -f 0; " if result.test else
               "(imagesTs is empty: no test patient in this split; PRED = the fold's validation folder, "
               f"$nnUNet_results/{folder.name}/nnUNetTrainer__nnUNetPlans__3d_fullres/fold_0/validation); ")
    console.print(
        "next: export nnUNet_raw=" + str(folder.parent) + f"; nnUNetv2_plan_and_preprocess -d {did} "
        f"--verify_dataset_integrity (nnU-Net 2.8.1 copies splits_final.json to $nnUNet_preprocessed/"
        f"{folder.name}/; if yours does not, copy it there by hand); nnUNetv2_train {did} 3d_fullres 0; "
        + predict + "bench report --external nnunet=PRED",
        highlight=False, soft_wrap=True,
    )
