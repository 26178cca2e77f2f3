"""Fixed inputs of the *exact* golden layer: label volumes and float16 probability volumes, no training.

Why: the training golden layer depends on how a tiny model converges on a given CPU; the exact
layer must not. It feeds committed, seeded inputs through the real evaluation and report code
(thresholding, post-processing, counting, scores, reductions, the NaN rule, soft-voting fusion,
Tables 3-8, the paired comparison), so any machine reproduces its tables to the last bits and a
changed metric, split, fusion or reduction shows up as a mismatch.

What ``results/golden/exact/inputs/`` holds (written by `write_inputs`, read by `read_inputs`):

* ``index.json``        format, seed, data set and profile names the runs claim, case ids, the
                        runs (tag, model, task, planes, seed, config overrides) and the edge cases;
* ``splits_final.json`` train/val/test by patient (the format of `bench.datasets.splits`);
* ``reiteration.csv``   the iterations-ablation run's per-iteration rows (Table 5's input: in a real
                        run they come from training, so here they are fixed numbers), with the patch
                        counts and self-label Dice per patch size a real run records;
* ``reiteration_native.csv`` the same for the patch-scale ablation's ``native`` run;
* ``<case>.npz``        one per patient: ``label`` uint8 (Z, Y, X) 0/1/2, ``spacing`` (z, y, x) mm and
                        one float16 probability volume per (task, run tag, plane), key
                        ``<task>__<tag>__<plane>`` for the val and test patients (the train patients'
                        files hold the label only: nothing scores them). Zip entries carry a fixed
                        date, so regenerating unchanged inputs changes no byte.

Every run also carries the training budget its config.json records (``budget`` in index.json:
steps, epochs and seconds per stage, fixed numbers here), so the tables' budget provenance and
the ``runs`` frame are pinned too. Beside the default runs, the extra seeds and the registered
ablations, two runs exist for the fairness rows: U-Net on the lesion task with the liver prior
(``model.liver_prior=channel``, three planes: Table 8's "+ liver prior" column and its fused row)
and U-Net liver axial with ``train.budget=matched`` (a second experiment beside the default-tagged
epochs run, which the tables must keep choosing).

Deliberate edge cases (each is what a regression would change): probabilities exactly at 0.5 and
one float16 step either side (the threshold is ``> 0.5``); per-voxel plane triples whose soft vote
differs from a majority vote and from a max (and one whose mean is exactly 0.5); stray components
that the cascade's post-processing removes (largest 3-D component for the liver, components under
``min_component_voxels`` for lesions), including a liver cut in two and a true lesion too small to
survive; lesion-free patients where a model predicts nothing (empty/empty: NaN, excluded and
counted), only what post-processing removes, or false lesions (an empty reference: NaN under
``evaluate.empty_reference=nan``, counted, judged by its false-positive voxels and lesions in
Table 8's lesion-free rows); a patient with a lesion and an empty prediction
(Dice 0, counted); a collapsed plane that soft voting outvotes; a second seed for two runs (sd over
seeds); anisotropic spacings (surface metrics in mm).

Determinism: only integer arithmetic, IEEE-exact operations (+, -, *, /, sqrt) applied element-wise
and seeded PCG64 draws are used (no exp/log, no float reductions), so the generator gives the same
arrays on any CPU. Regenerate (only when this generator changes on purpose)::

    python -m bench.golden.inputs --regenerate results/golden/exact/inputs
    python -m bench.golden.inputs --verify results/golden/exact/inputs   # exit 1 if they differ
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
from scipy import ndimage

from bench.ablations import ABLATIONS, variant_config
from bench.atomic import atomic_path, write_json, write_text
from bench.config import PLANES, RunConfig, get_profile
from bench.datasets.splits import read_splits
from bench.errors import DataError

FORMAT = 1
SEED = 2017
SHAPE = (16, 24, 24)  # (Z, Y, X)
DATASET = "golden"  # the data set name the exact layer's runs carry (Table 6 shows it as its own row)
PROFILE = "paper"  # the profile whose post-processing and ablation defaults the runs use
CASES = tuple(f"g{i:02d}" for i in range(1, 9))
SPLIT = {"train": ["g01", "g02"], "val": ["g03", "g04", "g05"], "test": ["g06", "g07", "g08"]}
# The golden inputs' own fixed model list, declared here once and deliberately NOT read from the
# registry: the exact layer pins every cell, so registering a model (UNet++, a plug-in) must not
# change it; these are the paper's four models, whose synthetic predictions (PROFILES below) the
# frozen expected tables were made from. Tables show a model without paper numbers only where it
# has runs, so the golden tables keep exactly these columns.
MODELS = ("segnet", "unet", "deeplabv3", "ours")
TASKS = ("liver", "lesion")
INDEX = "index.json"
SPLITS_FILE = "splits_final.json"
REITERATION = "reiteration.csv"
REITERATION_NATIVE = "reiteration_native.csv"  # the patch-scale ablation's native run
GENERATOR = "python -m bench.golden.inputs --regenerate results/golden/exact/inputs"

# Per model: boundary bias (voxels; < 0 under-segments), smooth-noise amplitude, plane-slab artefact
# strength, number of stray components. Quality ordering mimics the paper (segnet < unet < deeplabv3 < ours).
QUALITY: dict[str, dict[str, float]] = {
    "segnet": dict(bias=-0.9, noise=2.0, slab=3.0, stray=2),
    "unet": dict(bias=0.3, noise=1.4, slab=2.0, stray=1),
    "deeplabv3": dict(bias=-0.3, noise=1.0, slab=1.5, stray=1),
    "ours": dict(bias=0.0, noise=0.7, slab=1.0, stray=1),
}
# Extra runs beside the default (tag = model) runs; ablation variants are added from the registry.
EXTRA_SEEDS = (("unet", 1), ("ours", 1))
ABLATION_QUALITY = {  # by the overridden field's value; the worse, the more the ablation hurts
    "patch_levels=1": dict(bias=-1.0, noise=1.6, slab=2.0, stray=1),
    "patch_levels=2": dict(bias=-0.5, noise=1.2, slab=1.5, stray=1),
    "multilevel_loss=False": dict(bias=0.7, noise=1.3, slab=1.5, stray=1),
    "reiter_stop=none": dict(bias=0.1, noise=0.8, slab=1.0, stray=1),
    "liver_prior=channel": dict(bias=0.1, noise=1.0, slab=1.5, stray=1),  # U-Net given ours' liver prior
    "budget=matched": dict(bias=0.2, noise=1.2, slab=1.8, stray=1),  # U-Net trained ours' optimiser steps
}
# Runs beside the default ones and the registered ablations: (tag, model, task, planes, overrides)
FAIRNESS_RUNS = (
    ("unet~liver_prior=channel", "unet", "lesion", PLANES, (("profile.model.liver_prior", "channel"),)),
    ("unet~budget=matched", "unet", "liver", ("axial",), (("profile.train.budget", "matched"),)),
)
# Training budget per run (config.json ``budget``): optimiser steps per stage; seconds = steps x rate
BASELINE_STEPS = 400
OURS_STAGES = {"localizer": 400, "tuner": 400}
REITER_STEPS = 217  # per reiteration: two for a plateau-stopped run, seven with reiter_stop=none
SECONDS_PER_STEP = {"ours": 0.5, "segnet": 0.25, "unet": 0.25, "deeplabv3": 0.375}
# (task, model, case) whose prediction is empty on every plane: no stray component, no probe
EMPTY_PREDICTIONS = {("lesion", "segnet", "g05")}
HALF_STEP_BELOW = float(np.float16(0.5) - np.float16(2.0**-12))  # 0.499755859375: background
HALF_STEP_ABOVE = float(np.float16(0.5) + np.float16(2.0**-11))  # 0.50048828125: foreground
# (p_a, p_b, p_c) over the three planes -> soft vote / majority / max:
FUSION_PROBES = (
    (0.25, 0.5, 0.75),  # mean exactly 0.5: background / background / foreground
    (0.4, 0.4, 0.75),  # mean 0.5166: foreground / background / foreground
    (0.2, 0.2, 0.9),  # mean 0.4333: background / background / foreground
    (0.6, 0.6, 0.1),  # mean 0.4333: background / foreground / foreground
)
EDGE_CASES = (
    "probabilities exactly 0.5 (background) and one float16 step either side (0.499755859375 background, "
    "0.50048828125 foreground) on prediction boundaries in every volume",
    "fusion probes: plane triples whose soft vote differs from majority vote and max, one with mean exactly 0.5",
    "stray components in every model's liver and lesion maps; the cascade ('ours') removes them by post-processing",
    "g06: ours' liver cut in two by a low-probability slab; the largest 3-D component keeps one part",
    "g08: a true lesion of 7 voxels, below min_component_voxels: the cascade's post-processing deletes it",
    "g04, g07: no lesion in the reference; unet predicts none and ours only components that post-processing "
    "removes (empty/empty: Dice NaN, excluded and counted); segnet/deeplabv3 predict false lesions (empty "
    "reference: Dice NaN under evaluate.empty_reference=nan, excluded and counted; Table 8's lesion-free rows "
    "give their false-positive voxels and lesions)",
    "g05: a lesion in the reference; segnet predicts none on any plane and ours only a 7-voxel component "
    "(empty prediction after post-processing: Dice 0, counted)",
    "g08: segnet's sagittal liver collapses (far too small); the fused vote outvotes it",
    "a second seed for unet and ours liver axial: sd over seeds, per-case Dice averaged over seeds in the paired table",
    "anisotropic spacings (z 1-5 mm, y/x 0.6-0.8 mm): surface metrics in mm",
    "fairness runs: U-Net lesion with ours' liver prior (Table 8's '+ liver prior' column, fused row, paired row); "
    "U-Net liver axial with train.budget=matched beside its default-tagged epochs run, which the tables keep",
    "every run records a training budget (steps, epochs, seconds per stage): Tables 7/8's budget provenance and "
    "the runs frame",
)


@dataclass(frozen=True)
class RunSpec:
    """One run of the exact layer: what `bench.golden.exact` turns into a results folder."""

    tag: str
    model: str
    task: str
    planes: tuple[str, ...]
    seed: int = 0
    overrides: tuple[tuple[str, Any], ...] = ()
    reiteration: str = ""  # file in the inputs folder copied as the run's reiteration.csv
    budget: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)  # config.json "budget"

    def key(self, plane: str) -> str:
        """The npz key of this run's probability volume on ``plane``."""
        return f"{self.task}__{self.tag}__{plane}"

    def to_json(self) -> dict[str, Any]:
        return {"tag": self.tag, "model": self.model, "task": self.task, "planes": list(self.planes),
                "seed": self.seed, "overrides": {k: v for k, v in self.overrides}, "reiteration": self.reiteration,
                "budget": dict(self.budget)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str) -> "RunSpec":
        try:
            return cls(tag=str(data["tag"]), model=str(data["model"]), task=str(data["task"]),
                       planes=tuple(str(p) for p in data["planes"]), seed=int(data.get("seed", 0)),
                       overrides=tuple((str(k), v) for k, v in dict(data.get("overrides", {})).items()),
                       reiteration=str(data.get("reiteration", "")), budget=dict(data.get("budget") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{source}: malformed run entry {data!r} ({exc})") from None


@dataclass
class GoldenInputs:
    """The inputs folder, read and checked: runs, split, reiteration rows, cases (loaded on demand)."""

    root: Path
    index: dict[str, Any]
    runs: list[RunSpec]
    splits: dict[str, list[str]]
    case_files: dict[str, Path] = field(default_factory=dict)

    def case(self, case_id: str) -> dict[str, np.ndarray]:
        """{"label", "spacing", <volume keys>} of one case; a DataError names a missing or corrupt file."""
        path = self.case_files.get(case_id)
        if path is None:
            raise DataError(f"{self.root}: no input file for case {case_id!r} ({case_id}.npz)")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: unreadable golden input ({exc})") from None
        for key in ("label", "spacing"):
            if key not in arrays:
                raise DataError(f"{path}: lacks {key!r}")
        if arrays["label"].ndim != 3 or arrays["spacing"].shape != (3,):
            raise DataError(f"{path}: label must be (Z, Y, X) and spacing (3,), got {arrays['label'].shape} "
                            f"and {arrays['spacing'].shape}")
        return arrays

    def volume(self, arrays: Mapping[str, np.ndarray], case_id: str, run: RunSpec, plane: str) -> np.ndarray:
        """One probability volume as float32 (float16 widens exactly), checked against the label's shape."""
        key = run.key(plane)
        if key not in arrays:
            raise DataError(f"{self.case_files[case_id]}: lacks the probability volume {key!r} "
                            f"(regenerate: {GENERATOR})")
        vol = arrays[key]
        if vol.shape != arrays["label"].shape:
            raise DataError(f"{self.case_files[case_id]}: {key!r} has shape {vol.shape}, label {arrays['label'].shape}")
        return vol.astype(np.float32)


# ---------------------------------------------------------------- reading


def read_inputs(root: str | Path) -> GoldenInputs:
    """Read and check an inputs folder (a `DataError`/`ConfigError` names the file at fault)."""
    root = Path(root)
    index_path = root / INDEX
    if not index_path.is_file():
        raise DataError(f"{index_path} not found; write the inputs with `{GENERATOR}`")
    try:
        index = json.loads(index_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{index_path}: unreadable ({exc})") from None
    if index.get("format") != FORMAT:
        raise DataError(f"{index_path}: format {index.get('format')!r}, this code reads {FORMAT}")
    for key in ("dataset", "profile", "runs"):
        if key not in index:
            raise DataError(f"{index_path}: lacks {key!r}")
    runs = [RunSpec.from_json(r, str(index_path)) for r in index["runs"]]
    case_files = {p.stem: p for p in sorted(root.glob("*.npz"))}
    splits = read_splits(root / SPLITS_FILE, case_ids=list(case_files))
    for run in runs:
        if run.reiteration and not (root / run.reiteration).is_file():
            raise DataError(f"{index_path}: run {run.tag!r} names {run.reiteration}, which is not in {root}")
    return GoldenInputs(root=root, index=index, runs=runs, splits=splits, case_files=case_files)


# ---------------------------------------------------------------- generation


def run_specs() -> list[RunSpec]:
    """Default runs (every model x task, three planes), extra seeds, the registered ablation variants (once
    per tag: a variant equal to an earlier one is the same run) and the fairness runs, each with its budget."""
    runs = [RunSpec(tag=m, model=m, task=t, planes=PLANES) for t in TASKS for m in MODELS]
    runs += [RunSpec(tag=f"{m}~seed{s}", model=m, task="liver", planes=("axial",), seed=s) for m, s in EXTRA_SEEDS]
    profile = get_profile(PROFILE)
    seen = {(r.tag, r.task) for r in runs}
    for name in ABLATIONS.names():
        ab = ABLATIONS.get(name)
        if ab.models != ("ours",):  # the baselines' ablations (norm, capacity) have no fixed inputs here: their
            continue  # tables read the same select_runs as Table 7, tested on fixture frames (tests/test_norm.py)
        base = RunConfig(model=ab.models[0], plane=ab.plane, task=ab.task, dataset=DATASET, profile=profile)
        for _label, overrides in ab.variants:
            cfg = variant_config(base, overrides)
            if cfg.run_tag == base.run_tag or (cfg.run_tag, ab.task) in seen:
                continue  # the default run, or a variant an earlier ablation already has (same config, same folder)
            seen.add((cfg.run_tag, ab.task))
            changed = {k.rsplit(".", 1)[-1]: v for k, v in overrides if _field(cfg, k) != _field(base, k)}
            reiteration = ""
            if "reiter_stop" in changed:
                reiteration = REITERATION_NATIVE if changed.get("patch_scale") == "native" else REITERATION
            runs.append(RunSpec(tag=cfg.run_tag, model=ab.models[0], task=ab.task, planes=(ab.plane,),
                                overrides=tuple(overrides), reiteration=reiteration))
    runs += [RunSpec(tag=tag, model=model, task=task, planes=planes, overrides=overrides)
             for tag, model, task, planes, overrides in FAIRNESS_RUNS]
    return [replace(r, budget=_budget(r)) for r in runs]


def _budget(run: RunSpec) -> dict[str, Any]:
    """The config.json ``budget`` a real run of this spec records (`bench.engine.recipe.budget`), fixed numbers:
    ours trains localizer, tuner and its reiterations; a baseline one stage ("model"), by its own epochs
    (fewer steps than ours) or, with train.budget=matched, exactly ours' steps on that plane."""
    overrides = dict(run.overrides)
    if run.model == "ours":
        n_reiter = 7 if overrides.get("profile.cascade.reiter_stop") == "none" else 2
        steps = {**OURS_STAGES, **{f"reiter{i}": REITER_STEPS for i in range(1, n_reiter + 1)}}
    else:
        steps = {"model": sum(OURS_STAGES.values()) + 2 * REITER_STEPS
                 if overrides.get("profile.train.budget") == "matched" else BASELINE_STEPS}
    rate = SECONDS_PER_STEP[run.model]
    stages = {name: {"epochs": max(1, n // 100), "steps": n, "seconds": round(n * rate, 3)} for name, n in steps.items()}
    out: dict[str, Any] = {"stages": stages, "steps": sum(steps.values()),
                           "epochs": sum(s["epochs"] for s in stages.values()),
                           "seconds": round(sum(s["seconds"] for s in stages.values()), 3)}
    if overrides.get("profile.train.budget") == "matched":
        ref = f"{DATASET}/{run.task}/ours/{run.planes[0]}"  # the reference run, as a run id below the results
        out["matched_to"] = {"run": ref, "steps": out["steps"], "epochs": stages["model"]["epochs"]}
    return out


def _field(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _rng(*parts: Any) -> np.random.Generator:
    """A PCG64 stream per (seed, name): stable across runs, machines and Python hash seeds."""
    return np.random.default_rng([SEED] + [zlib.crc32(str(p).encode()) for p in parts])


def _box3(a: np.ndarray) -> np.ndarray:
    """Sum over the 3x3x3 neighbourhood (edges replicated), in integers: exact on any machine."""
    p = np.pad(a.astype(np.int64), 1, mode="edge")
    out = np.zeros(a.shape, dtype=np.int64)
    z, y, x = a.shape
    for dz in range(3):
        for dy in range(3):
            for dx in range(3):
                out += p[dz : dz + z, dy : dy + y, dx : dx + x]
    return out


def _sphere(shape: tuple[int, ...], center: tuple[float, ...], radius: float) -> np.ndarray:
    """Signed field radius - distance (voxels; > 0 inside the sphere)."""
    zz, yy, xx = np.indices(shape, dtype=np.float64)
    d2 = (zz - center[0]) ** 2 + (yy - center[1]) ** 2 + (xx - center[2]) ** 2
    return radius - np.sqrt(d2)


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    """> 0 inside (>= 1 at the boundary), < 0 outside (<= -1 next to it); -8 everywhere if ``mask`` is empty."""
    if not mask.any():
        return np.full(mask.shape, -8.0)
    return ndimage.distance_transform_edt(mask) - ndimage.distance_transform_edt(~mask)


def reference(case: str) -> tuple[np.ndarray, np.ndarray, list[tuple[tuple[float, ...], float]]]:
    """(label uint8 (Z, Y, X), spacing (z, y, x) mm, lesion spheres) of one synthetic patient."""
    rng = _rng("reference", case)
    z, y, x = SHAPE
    center = (7.5 + rng.integers(-1, 2), 11.5 + rng.integers(-1, 2), 11.0 + rng.integers(-1, 2))
    radii = (5.0 + rng.integers(0, 3) / 2, 7.0 + rng.integers(0, 3) / 2, 6.5 + rng.integers(0, 3) / 2)
    zz, yy, xx = np.indices(SHAPE, dtype=np.float64)
    r2 = ((zz - center[0]) / radii[0]) ** 2 + ((yy - center[1]) / radii[1]) ** 2 + ((xx - center[2]) / radii[2]) ** 2
    liver = r2 <= 1.0
    lobe = (center[0] + 1, center[1] + 4, center[2] + 6)  # a lobe towards +x (the image's left lobe)
    liver |= _sphere(SHAPE, lobe, 3.5) > 0
    label = liver.astype(np.uint8)
    lesions: list[tuple[tuple[float, ...], float]] = []
    n_lesions = {"g04": 0, "g07": 0, "g05": 1}.get(case, 1 + int(rng.integers(0, 3)))
    core = np.argwhere(ndimage.distance_transform_edt(liver) >= 3.0)
    for i in range(n_lesions):
        c = tuple(float(v) for v in core[int(rng.integers(0, len(core)))])
        r = 2.2 if case == "g05" else 1.6 + int(rng.integers(0, 5)) / 4
        lesions.append((c, r))
    if case == "g08":  # a true lesion below min_component_voxels (7 voxels)
        c = tuple(float(v) for v in core[len(core) // 3])
        lesions.append((c, 1.0))
    for c, r in lesions:
        label[(_sphere(SHAPE, c, r) >= 0) & liver] = 2
    spacing = np.array([(1.0, 2.5, 5.0)[int(rng.integers(0, 3))], 0.6 + int(rng.integers(0, 3)) / 10, 0.0])
    spacing[2] = spacing[1]
    return label, spacing, lesions


def _noise(rng: np.random.Generator) -> np.ndarray:
    """Smooth noise, sd ~0.5 voxel, from integers: exact on any machine."""
    return _box3(rng.integers(-4, 5, size=SHAPE)) / 27.0


def _field_for(run: RunSpec, case: str, plane: str, label: np.ndarray, quality: Mapping[str, float]) -> np.ndarray:
    """The signed score field (voxels, > 0 = predicted) of one run, case and plane before probes."""
    rng = _rng("field", run.tag, run.task, case, plane, run.seed)
    mask = label >= 1 if run.task == "liver" else label == 2
    s = _signed_distance(mask) + quality["bias"] + quality["noise"] * _noise(rng)
    axis = PLANES.index(plane)
    for _ in range(2):  # slice artefacts of this plane: two slices under- or over-segmented
        index = int(rng.integers(2, SHAPE[axis] - 2))
        sl = [slice(None)] * 3
        sl[axis] = slice(index, index + 1)
        s[tuple(sl)] += quality["slab"] * (1.0 if rng.integers(0, 2) else -1.0)
    liver = label >= 1
    for _ in range(int(quality["stray"])):
        if run.task == "liver":  # a blob away from the liver (stomach-like), 19-33 voxels
            far = np.argwhere(ndimage.distance_transform_edt(~liver) >= 4.0)
            c = tuple(float(v) for v in far[int(rng.integers(0, len(far)))])
            radius = 1.5 if rng.integers(0, 2) else 2.0
        else:  # a false lesion inside the liver: < 20 voxels for ours, larger for baselines
            core = np.argwhere(ndimage.distance_transform_edt(liver) >= 2.0)
            c = tuple(float(v) for v in core[int(rng.integers(0, len(core)))])
            radius = 1.0 if run.model == "ours" else 2.0
        if run.task == "lesion" and run.model == "unet" and case in ("g04", "g07"):
            continue  # unet: no false lesion on the lesion-free patients (empty/empty)
        s = np.maximum(s, _sphere(SHAPE, c, radius) + 0.5)
    if run.model == "ours" and run.task == "liver" and case == "g06" and run.tag == "ours":
        cut = int(np.argwhere(liver)[:, 2].max()) - 4  # a low-probability slab across the lobe
        s[:, :, cut : cut + 1] = np.minimum(s[:, :, cut : cut + 1], -1.5)
    if (run.task, run.model, case) in EMPTY_PREDICTIONS:
        return np.full(SHAPE, -3.0)
    if run.task == "lesion" and case == "g05" and run.model == "ours":
        lesion_center = tuple(float(v) for v in np.argwhere(label == 2).mean(axis=0).round())
        s = np.maximum(np.minimum(s, -3.0), _sphere(SHAPE, lesion_center, 1.0) + 0.5)  # 7 voxels: removed
    if run.task == "liver" and run.model == "segnet" and case == "g08" and plane == "sagittal":
        s = s - 4.0  # a collapsed plane
    return s


def _probability(s: np.ndarray) -> np.ndarray:
    """p = 0.5 + s / 2 clipped to [0, 1] and rounded to a multiple of 1/32 (exact in float16).

    The transition spans about two voxels, like a trained network's sigmoid at an organ boundary,
    and keeps the files small (most voxels are exactly 0 or 1)."""
    p = np.clip(0.5 + s / 2.0, 0.0, 1.0)
    return np.round(p * 32.0) / 32.0


def run_volumes(run: RunSpec, case: str, label: np.ndarray) -> dict[str, np.ndarray]:
    """float16 probability volumes of one run on one case, keyed by `RunSpec.key`."""
    quality = QUALITY[run.model] if run.tag in MODELS or "~seed" in run.tag else _ablation_quality(run)
    probs = {p: _probability(_field_for(run, case, p, label, quality)) for p in run.planes}
    rng = _rng("probes", run.tag, run.task, case, run.seed)
    # near-threshold values on prediction boundaries, independently per plane
    for plane, p in probs.items():
        edge = np.argwhere((p > 0.3) & (p < 0.7))
        if len(edge):
            pick = edge[rng.choice(len(edge), size=min(len(edge), 12), replace=False)]
            values = np.array([0.5, HALF_STEP_BELOW, HALF_STEP_ABOVE])[rng.integers(0, 3, size=len(pick))]
            p[tuple(pick.T)] = values
    if len(run.planes) == 3 and (run.task, run.model, case) not in EMPTY_PREDICTIONS:  # fusion probes on the reference boundary shell, the same voxels on every plane
        mask = label >= 1 if run.task == "liver" else label == 2
        sd = _signed_distance(mask)
        shell = np.argwhere((np.abs(sd) <= 1.5) & (np.abs(sd) > 0))
        if len(shell):
            pick = shell[rng.choice(len(shell), size=min(len(shell), 8 * len(FUSION_PROBES)), replace=False)]
            for i, voxel in enumerate(pick):
                triple = np.array(FUSION_PROBES[i % len(FUSION_PROBES)])[rng.permutation(3)]
                for plane, value in zip(PLANES, triple):
                    probs[plane][tuple(voxel)] = value
    return {run.key(plane): probs[plane].astype(np.float16) for plane in run.planes}


def _ablation_quality(run: RunSpec) -> Mapping[str, float]:
    for marker, quality in ABLATION_QUALITY.items():
        if marker in run.tag:
            return quality
    return QUALITY[run.model]


def reiteration_rows(kind: str = "zoom") -> list[dict[str, Any]]:
    """Per-iteration rows of an Algorithm 1 run that records every iteration, 6 decimals.

    ``zoom`` (Table 5's input; the iterations ablation and the patch-scale ablation's zoom run): Val/Test
    mean scores per N = 0..7 rising, then flat. ``native`` (the patch-scale ablation's native run): a
    steeper rise from the same N = 0. Both carry what a real run records beside: the training set size,
    the patch set P (counts per size: 512 px input, levels 1-3 -> 256/128/64 px, cut once) and the
    self-labels' Dice per size (from N = 1: the labels the iteration trains on).
    """
    rng = _rng("reiteration") if kind == "zoom" else _rng("reiteration", kind)
    label_rng = _rng("selflabel", kind)
    rise = {"zoom": 0.05, "native": 0.07}[kind]
    patches = {256: 40, 128: 160, 64: 480}
    rows = []
    for n in range(8):
        gain = 1.0 - 0.5**n
        label_dice = {k: round(0.78 + 0.12 * gain - 0.02 * level + int(label_rng.integers(-20, 21)) / 10000, 6)
                      for level, k in enumerate(patches)}
        for split, offset in (("val", 0.0), ("test", -0.012)):
            jitter = int(rng.integers(-30, 31)) / 10000
            dice = round(0.86 + offset + rise * gain + jitter, 6)
            row = {"iteration": n, "split": split,
                   "accuracy": round(0.955 + 0.02 * gain + jitter / 4, 6), "dice": dice,
                   "miou": round((1.0 + dice / (2.0 - dice)) / 2.0, 6), "n_train_samples": 120 + 48 * n}
            row["patches"] = sum(patches.values()) if n else 0
            for k, count in patches.items():
                row[f"patches_{k}px"] = count if n else None
            for k, value in label_dice.items():
                row[f"selflabel_dice_{k}px"] = value if n else None
            rows.append(row)
    return rows


def generate() -> Iterator[tuple[str, Any]]:
    """(file name, content) of every input file: dicts -> JSON, lists of rows -> CSV, dicts of arrays -> npz."""
    runs = run_specs()
    index = {
        "format": FORMAT,
        "seed": SEED,
        "generator": GENERATOR,
        "shape": list(SHAPE),
        "dataset": DATASET,
        "profile": PROFILE,
        "cases": list(CASES),
        "runs": [r.to_json() for r in runs],
        "edge_cases": list(EDGE_CASES),
        "probability": "p = 0.5 + s/2 on a signed score field s (voxels), clipped, rounded to 1/32, float16; "
                       "foreground when p > 0.5",
    }
    yield INDEX, index
    yield SPLITS_FILE, dict(SPLIT)
    yield REITERATION, reiteration_rows("zoom")
    yield REITERATION_NATIVE, reiteration_rows("native")
    scored = set(SPLIT["val"]) | set(SPLIT["test"])
    for case in CASES:
        label, spacing, _ = reference(case)
        arrays: dict[str, np.ndarray] = {"label": label, "spacing": spacing}
        if case in scored:  # train patients are never scored: their label suffices for the split check
            for run in runs:
                arrays.update(run_volumes(run, case, label))
        yield f"{case}.npz", arrays


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An .npz np.load reads, with fixed zip dates (byte-stable when the arrays are unchanged)."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            for name in sorted(arrays):
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, buf.getvalue(), compresslevel=9)


def _csv_text(rows: list[dict[str, Any]]) -> str:
    return pd.DataFrame(rows).to_csv(index=False)


def write_inputs(root: str | Path) -> list[Path]:
    """(Re)write every input file under ``root``; stale .npz files of cases no longer generated are removed."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in generate():
        path = root / name
        if name.endswith(".npz"):
            _write_npz(path, content)
        elif name.endswith(".csv"):
            write_text(path, _csv_text(content))
        else:
            write_json(path, content)
        written.append(path)
    for stale in set(root.glob("*.npz")) - set(written):
        stale.unlink()
    return written


def verify_inputs(root: str | Path) -> list[str]:
    """Differences between the files under ``root`` and a fresh generation (empty = identical)."""
    root = Path(root)
    problems = []
    for name, content in generate():
        path = root / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif name.endswith(".npz"):
            with np.load(path, allow_pickle=False) as data:
                have = {k: data[k] for k in data.files}
            for key in sorted(set(have) | set(content)):
                if key not in have or key not in content:
                    problems.append(f"{path}: {key} only in {'the file' if key in have else 'the generator'}")
                elif have[key].dtype != content[key].dtype or not np.array_equal(have[key], content[key]):
                    problems.append(f"{path}: {key} differs")
        elif name.endswith(".csv"):
            if not pd.read_csv(path).equals(pd.read_csv(io.StringIO(_csv_text(content)))):
                problems.append(f"{path}: differs")
        elif json.loads(path.read_text()) != json.loads(json.dumps(content)):
            problems.append(f"{path}: differs")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.golden.inputs", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--regenerate", metavar="DIR", help="write the inputs into DIR")
    group.add_argument("--verify", metavar="DIR", help="compare DIR with a fresh generation; exit 1 if they differ")
    args = parser.parse_args(argv)
    if args.regenerate:
        files = write_inputs(args.regenerate)
        size = sum(p.stat().st_size for p in files)
        print(f"golden inputs: {len(files)} files, {size / 1024:.0f} KiB -> {args.regenerate}")
        return 0
    problems = verify_inputs(args.verify)
    for p in problems:
        print(p)
    print(f"golden inputs {'differ from' if problems else 'match'} the generator ({args.verify})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
