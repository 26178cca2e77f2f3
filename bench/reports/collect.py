"""Results folder -> tidy pandas DataFrames, reading the meaning of every run from its config.json.

Folder names are for humans (RESULTS_FORMAT.md): a run's model, task, plane, seed and ablation
settings come from the saved `RunConfig`, so a renamed or re-tagged folder still lands in the
right table cell. Collection never crashes on a half-written results tree: a folder without
config.json is not a run, a run whose status is not ``complete`` or whose CSV is unreadable is
skipped, and every skip is recorded as a note that the report prints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.config import (PROFILES, CascadeConfig, ModelConfig, RunConfig, fingerprint, run_config_from_dict,
                          without_baseline_fields)
from bench.datasets.binding import binding_change, replicate_split_key
from bench.errors import BenchError, DataError
from bench.metrics.results import metrics_table, summarize
from bench.models import MODELS

# Run-level columns copied onto every collected row (the brief's list, plus a few helpers).
CONFIG_COLUMNS = (
    "dataset", "task", "model", "tag", "plane", "seed", "profile", "patch_levels", "multilevel_loss",
    "reiter_stop", "max_reiterations", "patch_mode", "patch_scale", "patch_share", "reiter_lr_scale", "liver_prior",
    "norm", "width", "encoder_depth", "normalisation", "postprocess", "empty_reference", "budget_rule", "input_size",
    "fold",
    "tag_base", "data_root", "split_key", "config_key", "run_id", "run_dir",
)
# What a run spent on training, from config.json ``budget`` (`bench.engine.recipe.budget`): run-level
# columns of ``Results.runs`` only. NaN/"" for a run recorded before budgets were (or a fused run:
# it trains nothing; its planes carry the budget).
BUDGET_COLUMNS = ("budget_steps", "budget_epochs", "budget_seconds", "budget_stages", "budget_matched_to",
                  "budget_reference")
METRIC_COLUMNS = ("split", "class", "aggregation", "metric", "value", "n_cases", "n_excluded")
# scores after the run's post-processing (metrics.csv, per_case.csv) and without it (*_raw.csv)
VARIANTS = ("post", "raw")
_VARIANT_SUFFIX = {"post": "", "raw": "_raw"}
REITER_COLUMNS = ("iteration", "split", "accuracy", "dice", "miou")
PER_CASE_REQUIRED = ("split", "case", "class", "dice")

# The fields ablations vary: the cascade fields the paper ablates (Tables 3-5), the ones this toolkit
# adds (patch mode and scale, Algorithm 1's patch share and learning rate; their tables are
# "patch-mode" and "patch-scale"), the lesion baselines' liver prior (Table 8's "+ liver prior"
# columns), the baselines' normalisation and capacity (`bench ablate norm`, `bench ablate capacity`). A run is a
# *default* run when all of them equal the defaults of its named profile; a variant differs in one of them, so a
# plain cell never picks a variant (a BatchNorm U-Net is never averaged with a GroupNorm one as a seed).
ABLATED_FIELDS = ("patch_levels", "multilevel_loss", "reiter_stop", "max_reiterations", "patch_mode", "patch_scale",
                  "patch_share", "reiter_lr_scale", "liver_prior", "norm", "width", "encoder_depth")
# the profile section of each ablated field (default: cascade)
_FIELD_SECTION = {"liver_prior": "model", "norm": "model", "width": "model", "encoder_depth": "model"}

# Fields that do not change what a run measures: two runs differing only in these (and the seed)
# are repeats of one experiment and are averaged as seeds. The data root, the split and the tag are
# not here: they enter `experiment_key` as the recorded absolute root, the patient lists' hash and
# the tag without its ~seedK/~foldI suffix (`replicate_identity`).
_NON_EXPERIMENT_FIELDS = dict(seed=0, fold=None, tag="", results="", cache="", device="", root="", splits="")
# anywhere in the tag: a variant's fold runs are tagged e.g. ``unet~fold0~norm=batch`` (the study appends the
# variant after `bench.paths.seed_tag`), and must pool into one experiment as ``unet~fold0`` and ``unet~fold1`` do
_SEED_FOLD_SUFFIX = re.compile(r"~(?:seed|fold)\d+(?=~|$)")


@dataclass
class Results:
    """Everything a report needs from one results folder, as tidy frames, plus collection notes."""

    root: str
    runs: pd.DataFrame  # one row per complete run (CONFIG_COLUMNS + status/has_* flags)
    metrics: pd.DataFrame  # one row per (run, split, class, aggregation, metric)
    per_case: pd.DataFrame  # one row per (run, split, case, class); score columns as in per_case.csv
    reiterations: pd.DataFrame  # one row per (run, iteration, split)
    notes: list[str] = field(default_factory=list)
    folds: dict[str, str] = field(default_factory=dict)  # pooled run id -> each fold's run and test numbers

    def variant(self, name: str) -> "Results":
        """The same results with the scores of one variant: ``post`` (post-processed) or ``raw``."""
        if name not in VARIANTS:
            raise ValueError(f"unknown score variant {name!r} (known: {', '.join(VARIANTS)})")
        pick = (lambda f: f[f["variant"] == name].reset_index(drop=True) if "variant" in f.columns else f)
        return dataclasses.replace(self, metrics=pick(self.metrics), per_case=pick(self.per_case))
    # external prediction folders (`bench.reports.external.External`, ``bench report --external``); their
    # rows are in ``metrics``/``per_case`` under run ids ``external:<name>/<task>``, never in ``runs``
    externals: list[Any] = field(default_factory=list)


def ablation_defaults(profile_name: str) -> dict[str, Any]:
    """The ablated fields at their defaults for a named profile (dataclass defaults if unknown)."""
    profile = PROFILES.get(profile_name) if profile_name in PROFILES else None
    sections = {"cascade": profile.cascade if profile else CascadeConfig(),
                "model": profile.model if profile else ModelConfig()}
    return {name: getattr(sections[_FIELD_SECTION.get(name, "cascade")], name) for name in ABLATED_FIELDS}


def postprocess_rule(cfg: RunConfig) -> str:
    """The run's post-processing for its task, as the tables print it: ``largest``, ``min_size>=20``, ``none``."""
    pp = cfg.profile.postprocess
    mode = pp.mode(cfg.task)
    return f"min_size>={pp.min_voxels}" if mode == "min_size" else mode


def replicate_identity(cfg: RunConfig, data: dict[str, Any] | None) -> dict[str, str]:
    """What, beside the config, runs must share to be seeds of one experiment (issue 20).

    ``tag_base``: the run's tag without the ``~seedK``/``~foldI`` suffix `bench.paths.seed_tag` adds
    (two ``--tag`` values are two experiments, never "n seeds: 2"); ``data_root``: the absolute root
    recorded at training (``data.root``; a run recorded before bindings: its config's root);
    ``split_key``: the hash of its patient lists (fold runs: of the folds), "" when not recorded.
    """
    return {
        "tag_base": _SEED_FOLD_SUFFIX.sub("", cfg.run_tag),
        "data_root": str(data.get("root", "")) if data else cfg.root,
        "split_key": replicate_split_key(data, cfg.fold) if data else cfg.splits,
    }


def normalisation_rule(cfg: RunConfig) -> str:
    """The config field that sets the run's normalisation, as the tables print it: ``model.norm=group`` for a
    baseline, ``cascade.norm=group`` for a model trained by the cascade recipe (ours)."""
    return f"cascade.norm={cfg.profile.cascade.norm}" if _is_cascade(cfg) else f"model.norm={cfg.profile.model.norm}"


def _is_cascade(cfg: RunConfig) -> bool:
    """The run's model trains by the cascade recipe (ours): its normalisation is cascade.norm, not model.norm."""
    return cfg.model in MODELS and MODELS.get(cfg.model).recipe == "cascade"


def experiment_key(cfg: RunConfig, data: dict[str, Any] | None = None) -> str:
    """Fingerprint of what a run measures: equal for runs that differ only by seed (and fold) and paths,
    and share tag, data root and split (`replicate_identity`)."""
    blob = json.dumps([fingerprint(dataclasses.replace(cfg, **_NON_EXPERIMENT_FIELDS)), replicate_identity(cfg, data)],
                      sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def _run_row(cfg: RunConfig, run_id: str, run_dir: Path, data: dict[str, Any] | None = None) -> dict[str, Any]:
    cascade = cfg.profile.cascade
    # the baseline-only model fields of a cascade run are read at the profile's values: ours never reads them,
    # and a config.json written before a field existed holds the dataclass default (model.norm=batch), not the
    # cpu profile's group, which would drop the run from the plain cells
    model = (without_baseline_fields(cfg.profile) if _is_cascade(cfg) else cfg.profile).model
    return {
        "dataset": cfg.dataset,
        "task": cfg.task,
        "model": cfg.model,
        "tag": cfg.run_tag,
        "plane": cfg.plane,
        "seed": int(cfg.seed),
        "profile": cfg.profile.name,
        "patch_levels": int(cascade.patch_levels),
        "multilevel_loss": bool(cascade.multilevel_loss),
        "reiter_stop": str(cascade.reiter_stop),
        "max_reiterations": int(cascade.max_reiterations),
        "patch_mode": str(cascade.patch_mode),
        "patch_scale": str(cascade.patch_scale),
        "patch_share": float(cascade.patch_share),
        "reiter_lr_scale": float(cascade.reiter_lr_scale),
        "liver_prior": str(model.liver_prior),
        "norm": str(model.norm),
        "width": float(model.width),
        "encoder_depth": int(model.encoder_depth),
        "normalisation": normalisation_rule(cfg),
        "postprocess": postprocess_rule(cfg),
        "empty_reference": str(cfg.profile.evaluate.empty_reference),  # the rule its scores were computed under
        "budget_rule": str(cfg.profile.train.budget),
        "input_size": int(cfg.profile.input_size),
        "fold": -1 if cfg.fold is None else int(cfg.fold),
        **replicate_identity(cfg, data),
        "config_key": experiment_key(cfg, data),
        "run_id": run_id,
        "run_dir": str(run_dir),
    }


def budget_row(saved: dict[str, Any], cfg: RunConfig, root: Path) -> dict[str, Any]:
    """BUDGET_COLUMNS of one run from its config.json ``budget`` (NaN/"" where nothing is recorded).

    ``budget_stages`` is "stage steps, ..." in training order (``localizer 400, tuner 400, reiter1 434``);
    ``budget_matched_to`` names the reference run (its run id below ``root`` when it lies there) and
    its steps, for a ``train.budget=matched`` run.
    """
    spent = saved.get("budget") if isinstance(saved.get("budget"), dict) else {}
    stages = spent.get("stages") if isinstance(spent.get("stages"), dict) else {}

    def number(value: Any) -> float:
        try:
            return float(value)
        except (TypeError, ValueError):
            return float("nan")

    matched = spent.get("matched_to") if isinstance(spent.get("matched_to"), dict) else {}
    ref = ""
    if matched:
        ref = _run_id_of(str(matched.get("run", "")), root) or "?"
        if matched.get("steps") is not None:
            ref += f" ({int(number(matched['steps'])):,} steps)"
    return {
        "budget_steps": number(spent.get("steps")),
        "budget_epochs": number(spent.get("epochs")),
        "budget_seconds": number(spent.get("seconds")),
        "budget_stages": ", ".join(f"{name} {int(number(s.get('steps'))):,}" for name, s in stages.items()
                                   if isinstance(s, dict)),
        "budget_matched_to": ref,
        "budget_reference": str(cfg.profile.train.budget_reference) if cfg.profile.train.budget == "matched" else "",
    }


def _parameters(saved: dict[str, Any]) -> float:
    """The trainable parameters config.json records (`bench.engine.runner`); NaN where none is recorded."""
    try:
        return float(saved.get("parameters"))
    except (TypeError, ValueError):
        return float("nan")


def _run_id_of(path: str, root: Path) -> str:
    """A run folder path as its run id below ``root`` (a relative path is taken as one already)."""
    if not path:
        return ""
    p = Path(path)
    for base in (root, root.resolve()):
        for candidate in (p, p.resolve()):
            try:
                return candidate.relative_to(base).as_posix()
            except ValueError:
                continue
    return p.as_posix()


def _iter_config_files(root: Path):
    """config.json files below ``root`` (sorted), not descending into checkpoints or temp folders."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "checkpoints" and ".tmp-" not in d)
        if "config.json" in filenames:
            yield Path(dirpath) / "config.json"


def _read_csv(path: Path, required: tuple[str, ...], notes: list[str], run_id: str) -> pd.DataFrame | None:
    """Read one CSV of a run; a missing, unreadable or incomplete file becomes a note, never a crash."""
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, dtype={"case": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        notes.append(f"{run_id}: {path.name} unreadable ({type(exc).__name__}); ignored")
        return None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        notes.append(f"{run_id}: {path.name} lacks column(s) {', '.join(missing)}; ignored")
        return None
    return frame


def _attach(frame: pd.DataFrame, row: dict[str, Any]) -> pd.DataFrame:
    for key in CONFIG_COLUMNS:
        frame[key] = row[key]
    return frame


def _empty(columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def load_results(results_root: str | os.PathLike) -> Results:
    """Collect every complete run below ``results_root`` into tidy frames (see `Results`)."""
    root = Path(results_root)
    if not root.is_dir():
        raise DataError(f"results folder {root} does not exist")
    notes: list[str] = []
    runs: list[dict[str, Any]] = []
    metrics, per_case, reiter = [], [], []
    fingerprints: dict = {}  # source fingerprints per (data set, root), computed once for all runs
    for config_path in _iter_config_files(root):
        run_dir = config_path.parent
        run_id = run_dir.relative_to(root).as_posix()
        try:
            saved = json.loads(config_path.read_text())
            cfg = run_config_from_dict(saved["config"])
        except (json.JSONDecodeError, KeyError, TypeError, BenchError, OSError) as exc:
            notes.append(f"{run_id}: config.json unreadable ({type(exc).__name__}: {exc}); skipped")
            continue
        status = saved.get("status", "missing")
        if status != "complete":
            notes.append(f"{run_id}: status {status!r}, not 'complete'; skipped")
            continue
        data = saved.get("data") if isinstance(saved.get("data"), dict) else None
        if data is not None:
            _check_binding(run_id, cfg, data, fingerprints, root)
        row = _run_row(cfg, run_id, run_dir, data)
        budget = budget_row(saved, cfg, root)
        if not (run_dir / "metrics.csv").is_file():
            notes.append(f"{run_id}: no metrics.csv; its cells show as missing")
        m = pc = None
        for variant, suffix in _VARIANT_SUFFIX.items():
            mv = _read_csv(run_dir / f"metrics{suffix}.csv", METRIC_COLUMNS, notes, run_id)
            if mv is not None:
                mv = mv[mv["class"] == cfg.task][list(METRIC_COLUMNS)].assign(variant=variant)
                metrics.append(_attach(mv, row))
                m = mv if m is None else m
            pv = _read_csv(run_dir / f"per_case{suffix}.csv", PER_CASE_REQUIRED, notes, run_id)
            if pv is not None:
                per_case.append(_attach(pv[pv["class"] == cfg.task].assign(variant=variant), row))
                pc = pv if pc is None else pc
        rt = _read_csv(run_dir / "reiteration.csv", REITER_COLUMNS, notes, run_id)
        if rt is not None:
            reiter.append(_attach(rt, row))
        examples = run_dir / "examples.npz"
        row.update(
            **budget,
            parameters=_parameters(saved),
            has_metrics=m is not None,
            has_per_case=pc is not None,
            has_reiteration=rt is not None,
            examples=str(examples) if examples.is_file() else "",
        )
        runs.append(row)
    _refuse_mixed_roots(runs, root)
    run_cols = CONFIG_COLUMNS + BUDGET_COLUMNS + ("parameters", "has_metrics", "has_per_case", "has_reiteration", "examples")
    results = Results(
        root=str(root),
        runs=pd.DataFrame(runs, columns=list(run_cols)) if runs else _empty(run_cols),
        metrics=_concat(metrics, CONFIG_COLUMNS + METRIC_COLUMNS + ("variant",), numeric=("value", "n_cases", "n_excluded")),
        per_case=_concat(per_case, CONFIG_COLUMNS + PER_CASE_REQUIRED + ("variant",), numeric=("dice",)),
        reiterations=_concat(reiter, CONFIG_COLUMNS + REITER_COLUMNS, numeric=REITER_COLUMNS[:1] + REITER_COLUMNS[2:]),
        notes=notes,
    )
    return pool_folds(results)


def _check_binding(run_id: str, cfg: RunConfig, data: dict[str, Any], fingerprints: dict, root: Path) -> None:
    """A run whose data changed since it was scored is refused: a report never mixes results of other data."""
    change = binding_change(data, cfg, Path(str(data.get("root", ""))), Path(str(data.get("split_file", ""))),
                            fingerprints, split_required=False)
    if change is not None:
        raise DataError(f"{root / run_id}: {change}; its scores belong to other data (bench evaluate --rescore it, "
                        f"retrain it with --force, or move it out of {root})")


def _refuse_mixed_roots(runs: list[dict[str, Any]], root: Path) -> None:
    """Runs of one data set trained on different data roots are never one table: refused, naming both.

    Runs recorded before bindings (no ``data`` in config.json) carry no absolute root and are not compared.
    """
    by_dataset: dict[str, dict[str, list[str]]] = {}
    for row in runs:
        if Path(str(row["data_root"])).is_absolute():
            by_dataset.setdefault(row["dataset"], {}).setdefault(row["data_root"], []).append(row["run_id"])
    for dataset, roots in sorted(by_dataset.items()):
        if len(roots) > 1:
            shown = ", ".join(f"{r} ({len(ids)} run(s), e.g. {sorted(ids)[0]})" for r, ids in sorted(roots.items()))
            raise DataError(f"{root}: {dataset} runs trained on {len(roots)} data roots: {shown}; a report compares "
                            f"runs on one data set: give each data root its own --results folder")


def pool_folds(results: Results) -> Results:
    """Cross-validation: the fold runs of one experiment and seed become one pooled run.

    Its per-case rows are every fold's rows (each patient is a test patient in exactly one fold,
    so the test mean is the mean over all patients and the global score sums all their counts);
    its metrics are recomputed from those rows by the one reduction (`bench.metrics.results`), its
    reiteration rows are the mean over folds. Each fold's run and test numbers are kept in
    ``Results.folds`` for the tables' provenance. Validation rows are pooled the same way (a
    patient may validate several folds).
    """
    runs = results.runs
    if runs.empty or not (runs["fold"] >= 0).any():
        return results
    folded = runs[runs["fold"] >= 0]
    keep = runs[runs["fold"] < 0]
    new_runs, metrics, per_case, reiter = [keep], [results.metrics[results.metrics["run_id"].isin(keep["run_id"])]], \
        [results.per_case[results.per_case["run_id"].isin(keep["run_id"])]], \
        [results.reiterations[results.reiterations["run_id"].isin(keep["run_id"])]]
    for (_, _), group in folded.groupby(["config_key", "seed"], sort=True):
        group = group.sort_values("fold")
        first = group.iloc[0]
        pooled_id = f"{first['run_id']} (folds {', '.join(str(int(f)) for f in group['fold'])})"
        row = first.to_dict()
        row.update(run_id=pooled_id, fold=-1, tag=str(first["tag"]).rsplit("~fold", 1)[0],
                   has_reiteration=bool(group["has_reiteration"].all()), **_pooled_budget(group))
        pc = results.per_case[results.per_case["run_id"].isin(group["run_id"])]
        lines = []
        for _, fold_run in group.iterrows():
            test = pc[(pc["run_id"] == fold_run["run_id"]) & (pc["split"] == "test") & (pc["variant"] == "post")]
            dice = pd.to_numeric(test["dice"], errors="coerce")
            lines.append(f"fold {int(fold_run['fold'])}: {fold_run['run_id']}, test {', '.join(test['case'])}: "
                         f"Dice {dice.mean():.4f}")
        results.folds[pooled_id] = "; ".join(lines)
        pc = pc.assign(run_id=pooled_id)
        per_case.append(pc)
        for variant in VARIANTS:
            part = pc[pc["variant"] == variant]
            if not part.empty and {"tp", "fp", "fn", "tn"} <= set(part.columns):
                table = metrics_table(summarize(part.drop(columns=[c for c in CONFIG_COLUMNS + ("variant",)
                                                                   if c in part.columns]), row["empty_reference"]))
                table = table[table["class"] == row["task"]].assign(variant=variant)
                metrics.append(_attach(table.copy(), {**row}))
        rt = results.reiterations[results.reiterations["run_id"].isin(group["run_id"])]
        if not rt.empty:
            mean = rt.groupby(["iteration", "split"], as_index=False)[reiteration_value_columns(rt)].mean()
            reiter.append(_attach(mean, {**row}))
        new_runs.append(pd.DataFrame([row]))
    results.runs = pd.concat(new_runs, ignore_index=True)
    results.metrics = _concat([m for m in metrics if not m.empty], CONFIG_COLUMNS + METRIC_COLUMNS + ("variant",),
                              numeric=("value", "n_cases", "n_excluded"))
    results.per_case = _concat([p for p in per_case if not p.empty], CONFIG_COLUMNS + PER_CASE_REQUIRED + ("variant",),
                               numeric=("dice",))
    results.reiterations = _concat([r for r in reiter if not r.empty], CONFIG_COLUMNS + REITER_COLUMNS,
                                   numeric=REITER_COLUMNS[:1] + REITER_COLUMNS[2:])
    return results


def reiteration_value_columns(frame: pd.DataFrame) -> list[str]:
    """The per-iteration numbers of reiteration.csv: the scores, ``n_train_samples``, ``patches``,
    ``patches_<size>px`` and ``selflabel_dice_<size>px`` (whichever the run wrote)."""
    skip = set(CONFIG_COLUMNS) | {"iteration", "split", "variant"}
    return [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]


def _pooled_budget(group: pd.DataFrame) -> dict[str, Any]:
    """A pooled cross-validation run's budget: the mean over its folds (each fold trains on its own)."""
    out: dict[str, Any] = {c: pd.to_numeric(group[c], errors="coerce").mean()
                           for c in ("budget_steps", "budget_epochs", "budget_seconds")}
    k = len(group)
    stages = sorted(set(group["budget_stages"]))
    out["budget_stages"] = (f"mean of {k} folds; fold 0: {stages[0]}" if len(stages) > 1 else stages[0]) if stages else ""
    matched = sorted(set(group["budget_matched_to"]) - {""})
    out["budget_matched_to"] = "; ".join(matched)
    return out


def _concat(frames: list[pd.DataFrame], columns: tuple[str, ...], numeric: tuple[str, ...]) -> pd.DataFrame:
    if not frames:
        return _empty(columns)
    out = pd.concat(frames, ignore_index=True)
    for col in numeric:
        out[col] = pd.to_numeric(out[col], errors="coerce")
    for col in ("split", "class", "aggregation", "metric", "case", "variant"):
        if col in out.columns:
            out[col] = out[col].astype(str)
    return out


def collect_results(results_root: str | os.PathLike) -> pd.DataFrame:
    """One row per (run, split, class, aggregation, metric); collection notes in ``.attrs['notes']``."""
    res = load_results(results_root)
    res.metrics.attrs["notes"] = list(res.notes)
    return res.metrics


def collect_per_case(results_root: str | os.PathLike) -> pd.DataFrame:
    """One row per (run, split, case, class) from per_case.csv, with the run's config columns."""
    res = load_results(results_root)
    res.per_case.attrs["notes"] = list(res.notes)
    return res.per_case


def collect_reiterations(results_root: str | os.PathLike) -> pd.DataFrame:
    """One row per (run, iteration, split) from reiteration.csv, with the run's config columns."""
    res = load_results(results_root)
    res.reiterations.attrs["notes"] = list(res.notes)
    return res.reiterations
