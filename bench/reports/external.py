"""External predictions in the report (``bench report --external NAME=PRED_DIR``): nnU-Net or any tool.

Why here: a folder of 3-D label maps from another method is scored on exactly the patients the
report's own runs were scored on, through the same counts, scores and writer
(`bench.metrics`), and then shown in Tables 7/8 and in the paired comparison beside our runs,
marked as external, so "ours vs nnU-Net" is one table with one evaluation policy.

Rules:

* Patients: the data set, root and cyst setting come from the scoped runs' saved config.json,
  the split from the same splits file the runs used (their ``--splits`` file, else the data
  set's ``splits_final.json`` beside the cache); val and test patients are scored (train never).
  The runs must agree on these; a report over runs with different roots or splits is an error.
* Names, labels, geometry and missing predictions: the rules of the prediction source
  (`bench.metrics.split_folder`): our case id or its nnU-Net identifier; 0/1/2 LiTS labels unless
  a ``dataset.json`` of a ``bench data export --task liver`` (Table 7 only) or ``--task lesion``
  (Table 8 only) says otherwise; each file on its reference's grid, no resampling; a val/test
  patient without a prediction is scored as an empty prediction and counted (as ``bench score``
  does); a split with no prediction at all is left out (its cells are missing, with a note) -
  e.g. ``nnUNetv2_predict`` on imagesTs gives the test patients only.
* Scoring and writing: the one pipeline (`bench.metrics.pipeline`), the same as ``bench score``
  and ``bench evaluate``.

The scored files are written like a run's (per_case.csv, metrics.csv, summary.json) under
``<report>/external/<NAME>/``; the rows join the collected results as pseudo-runs with run ids
``external:<NAME>/<task>``, which no selection of our own runs ever picks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from bench.config import load_run_config
from bench.datasets import get_dataset
from bench.datasets.splits import read_splits
from bench.errors import ConfigError, DataError
from bench.metrics.pipeline import evaluate_source
from bench.metrics.scorer import ScoreOptions
from bench.metrics.split_folder import SCORED_SPLITS, SplitFolderSource, label_rule, prediction_files
from bench.paths import splits_path
from bench.reports.collect import CONFIG_COLUMNS, METRIC_COLUMNS, VARIANTS, Results
from bench.reports.select import ReportOptions, resolve_scope

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class External:
    """One external prediction folder as the tables see it."""

    name: str
    folder: Path
    tasks: tuple[str, ...]
    out_dir: Path
    n_cases: dict[str, int] = field(default_factory=dict)  # split -> scored patients
    missing: dict[str, list[str]] = field(default_factory=dict)  # split -> patients without a prediction
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.name} (external)"

    def run_id(self, task: str) -> str:
        return f"external:{self.name}/{task}"

    def runs(self, task: str) -> pd.DataFrame:
        """The pseudo-run selecting this folder's rows for ``task`` (for `metric_stats`/`per_case_dice`)."""
        return pd.DataFrame({"run_id": [self.run_id(task)], "seed": [0]})

    def provenance(self) -> str:
        missing = {s: len(c) for s, c in self.missing.items() if c}
        text = f"{self.label}: {self.folder} (scored files: {self.out_dir})"
        return text + (f"; scored as empty (no prediction): {missing}" if missing else "")


def parse_external(specs: Sequence[str]) -> list[tuple[str, Path]]:
    """``["nnunet=/preds", ...]`` -> [(name, folder)]; a bad spec is a one-line ConfigError."""
    out: list[tuple[str, Path]] = []
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"--external {spec!r}: expected NAME=PRED_DIR")
        name, folder = (part.strip() for part in spec.split("=", 1))
        if not _NAME.match(name):
            raise ConfigError(f"--external {spec!r}: NAME must be letters, digits, '_', '-', '.', '+' (got {name!r})")
        if name in {n for n, _ in out}:
            raise ConfigError(f"--external: the name {name!r} is given twice")
        path = Path(folder).resolve()  # absolute: it is written into the tables' provenance
        if not path.is_dir():
            raise DataError(f"--external {name}: prediction folder {path} does not exist")
        out.append((name, path))
    return out


@dataclass(frozen=True)
class _Source:
    dataset: str
    root: str
    splits_file: Path
    include_cysts: bool
    lesion_match: str = "overlap"  # the runs' profile.evaluate: the external folder is scored under the same rule
    lesion_connectivity: int = 3
    empty_reference: str = "nan"


def report_source(results: Results, options: ReportOptions) -> _Source:
    """Data set, root, split file and cyst setting shared by the report's scoped runs."""
    scope = resolve_scope(results, options)
    runs = results.runs
    runs = runs[(runs["dataset"] == scope.dataset) & (runs["profile"] == scope.profile)]
    if runs.empty:
        raise DataError(f"--external: no runs of {scope.dataset}/{scope.profile} in {results.root} to take patients from")
    sources: dict[_Source, list[str]] = {}
    for run_dir, run_id in zip(runs["run_dir"], runs["run_id"]):
        cfg = load_run_config(Path(run_dir) / "config.json")
        adapter_root = get_dataset(cfg.dataset, root=cfg.root or None, include_cysts=cfg.include_cysts).root
        split_file = Path(cfg.splits) if cfg.splits else splits_path(cfg.cache, cfg.dataset, adapter_root)
        ev = cfg.profile.evaluate
        key = _Source(cfg.dataset, str(Path(adapter_root).resolve()), split_file.resolve(), bool(cfg.include_cysts),
                      ev.lesion_match, ev.lesion_connectivity, ev.empty_reference)
        sources.setdefault(key, []).append(run_id)
    if len(sources) > 1:
        listed = "; ".join(f"root {k.root}, split {k.splits_file}, cysts {k.include_cysts}, lesion match "
                           f"{k.lesion_match}/{k.lesion_connectivity}, empty reference {k.empty_reference} ({len(v)} runs, e.g. {v[0]})"
                           for k, v in sources.items())
        raise DataError(f"--external: the report's runs disagree on their patients ({listed}); narrow with --dataset/--profile")
    return next(iter(sources))


def score_external(name: str, folder: Path, results: Results, options: ReportOptions, out_dir: Path,
                   progress: Callable[[str], None] | None = None) -> External:
    """Score one prediction folder on the report's val/test patients; write and return it (module doc).

    The report's face of the one pipeline: the patients and rules come from the runs (`report_source`),
    the cases from `bench.metrics.split_folder.SplitFolderSource`, the rest from `evaluate_source`.
    """
    source = report_source(results, options)
    tasks, one_is_lesion = label_rule(folder)
    adapter = get_dataset(source.dataset, root=source.root, include_cysts=source.include_cysts)
    if not source.splits_file.is_file():
        raise DataError(f"--external {name}: the runs' split file {source.splits_file} is missing "
                        "(run the report where the runs' cache is)")
    splits = read_splits(source.splits_file, adapter.case_ids())
    scoring = ScoreOptions(lesion_match=source.lesion_match, lesion_connectivity=source.lesion_connectivity,
                           empty_reference=source.empty_reference, device="cpu")
    ext = External(name, folder, tasks, out_dir)
    ext.notes += _split_mismatch(results, options, splits, name)
    wanted = [c for s in SCORED_SPLITS for c in splits[s]]
    files = prediction_files(folder, wanted)
    if not files:
        shown = ", ".join(wanted[:5])
        raise DataError(f"--external {name}: no prediction in {folder} matches a val/test patient ({shown}; "
                        "names: <case>.nii.gz, segmentation-N.nii.gz or an nnU-Net export's identifiers)")
    cases = SplitFolderSource(ext.label, adapter, splits, files, tasks, one_is_lesion, SCORED_SPLITS, progress)
    for split, n in cases.skipped.items():
        ext.notes.append(f"{ext.label}: no prediction for the {n} {split} patient(s); its {split} cells are missing")
    ext.missing, ext.n_cases = cases.missing, cases.n_cases
    evaluate_source(cases, out_dir, scoring,
                    extra={"external": {"name": name, "predictions": str(folder.resolve()), "tasks": list(tasks),
                                        "dataset": source.dataset, "root": source.root,
                                        "splits_file": str(source.splits_file), "include_cysts": source.include_cysts,
                                        "n_missing": {s: len(c) for s, c in ext.missing.items()},
                                        "missing": ext.missing}})
    for split, missing in ext.missing.items():
        if missing:
            ext.notes.append(f"{ext.label}: {len(missing)} {split} patient(s) without a prediction, scored as empty: "
                             f"{', '.join(missing)}")
    return ext


def _split_mismatch(results: Results, options: ReportOptions, splits: dict[str, list[str]], name: str) -> list[str]:
    """A note when the runs' per_case.csv scored other val/test patients than the split file lists
    (e.g. a split file re-made after the runs): the external folder follows the file."""
    scope = resolve_scope(results, options)
    pc = results.per_case
    if pc.empty or "run_id" not in pc:
        return []
    ours = pc[(pc["dataset"] == scope.dataset) & (pc["profile"] == scope.profile) & ~pc["run_id"].str.startswith("external:")]
    notes = []
    for split in SCORED_SPLITS:
        scored = set(ours.loc[ours["split"] == split, "case"])
        if scored and scored != set(splits[split]):
            notes.append(f"{name} (external): the runs scored {split} patients {sorted(scored)}, the split file lists "
                         f"{sorted(splits[split])}; the external folder is scored on the split file's")
    return notes


def _attach(frame: pd.DataFrame, ext: External, task: str, scope_dataset: str, scope_profile: str) -> pd.DataFrame:
    values = {"dataset": scope_dataset, "task": task, "model": f"external:{ext.name}", "tag": ext.name,
              "plane": "3d", "seed": 0, "profile": scope_profile, "run_id": ext.run_id(task),
              "run_dir": str(ext.out_dir), "config_key": f"external:{ext.name}"}
    for key in CONFIG_COLUMNS:
        frame[key] = values.get(key, pd.NA)
    return frame


def add_externals(results: Results, specs: Sequence[str], options: ReportOptions, out_dir: str | Path,
                  progress: Callable[[str], None] | None = None) -> Results:
    """Score every ``NAME=PRED_DIR`` and add its rows (read back from the written files) to ``results``."""
    scope = resolve_scope(results, options)
    metrics, per_case = [results.metrics], [results.per_case]
    for name, folder in parse_external(specs):
        ext = score_external(name, folder, results, options, Path(out_dir) / "external" / name, progress)
        m = pd.read_csv(ext.out_dir / "metrics.csv")
        pc = pd.read_csv(ext.out_dir / "per_case.csv", dtype={"case": str})
        for task in ext.tasks:
            # the tool's own output, post-processed by nobody here: the same rows under both score
            # variants, so --scores post and --scores raw both show the folder as it was given
            for variant in VARIANTS:
                metrics.append(_attach(m[m["class"] == task][list(METRIC_COLUMNS)].assign(variant=variant), ext,
                                       task, scope.dataset, scope.profile))
                per_case.append(_attach(pc[pc["class"] == task].assign(variant=variant), ext, task, scope.dataset,
                                        scope.profile))
        ext.notes.append(f"{ext.label}: scored as given (no post-processing applied by bench); the same numbers "
                         f"under --scores post and raw")
        results.externals.append(ext)
        results.notes.extend(ext.notes)
    results.metrics = _concat(metrics)
    results.per_case = _concat(per_case)
    return results


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The collected frame (``frames[0]``) with the external rows appended, dtypes as `collect` makes them."""
    parts = [f for f in frames if not f.empty]
    if not parts:
        return frames[0]
    out = pd.concat(parts, ignore_index=True)
    for col in ("value", "n_cases", "n_excluded", "dice"):
        if col in out.columns:
            out[col] = pd.to_numeric(out[col], errors="coerce")
    for col in ("split", "class", "aggregation", "metric", "case", "variant"):
        if col in out.columns:
            out[col] = out[col].astype(str)
    return out
