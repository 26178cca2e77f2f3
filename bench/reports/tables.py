"""Tables 3-8 (the paired per-case comparison, the post-processing and patch ablations) as pure
functions of the collected results.

Each builder takes a `Results` bundle (tidy frames from `collect.load_results`) and
`ReportOptions`, and returns a `TableResult`: a tidy frame with one row per table cell
(ours, sd over seeds, the paper's number, the difference, counts, status), its provenance and
notes. Builders read files of no kind and write nothing, so they are tested on fixture frames;
`bench.reports.writers` renders a `TableResult` as Markdown, CSV or LaTeX in the paper's layout.

A cell is ``ok`` (a number), ``nan`` (runs exist but every case was excluded) or ``missing``
(no run yet); a missing cell never raises, it adds the command that would produce it to the notes.

Beyond the paper's tables: ``paired`` (ours minus each baseline, per case) and ``postprocess``
(every model's Dice without and with the one post-processing rule) are built beside Tables 7/8;
``patch-mode`` and ``patch-scale`` (this toolkit's ablations of 3.4 and Algorithm 1) beside
Tables 3 and 5 when their runs exist, or when named (``bench report --tables patch-mode``).
Where the paper's printed mIoU is in fact its foreground IoU (`paper.miou_is_foreground_iou`),
the cell also carries our foreground IoU (``ours_fg_iou``) and ``diff`` compares that.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from bench.ablations import ABLATIONS
from bench.errors import ConfigError
from bench.metrics.lesions import SIZE_BIN_LABELS, SIZE_BINS, pooled
from bench.metrics.policy import TABLE_POLICY, lesion_policy_text, table_policy
from bench.metrics.scores import is_empty_reference
from bench.models import MODELS, model_label, model_names, model_order, proposed_model
from bench.registry import Registry
from bench.reports import paper
from bench.reports.collect import Results, ablation_defaults
from bench.reports.select import (
    ANY, SCORE_TEXT, CellStats, ReportOptions, Scope, metric_stats, resolve_scope, seed_stats, select_runs,
)

CELL_COLUMNS = (
    "table", "group", "row", "col_group", "col", "metric", "split", "ours", "sd", "n_seeds", "paper",
    "paper_fg_iou", "ours_fg_iou", "diff", "ci_low", "ci_high", "n_cases", "n_excluded", "status", "runs",
)
METRIC_LABELS = {"accuracy": "Accuracy", "dice": "Dice", "miou": "mIoU"}
SPLIT_LABELS = {"val": "Val", "test": "Test"}
PLANE_ROWS = ("axial", "coronal", "sagittal", "fused")
DATASET_LABELS = {"lits": "LiTS", "ircadb": "3D IRCADB"}
TABLE_NUMBERS = (3, 4, 5, 6, 7, 8)
# reading order of every table a report can hold; an ablation table of this toolkit follows the paper
# table it extends, and is built with it when its runs exist (`table_names`)
TABLE_ORDER = ("3", "patch-mode", "4", "5", "patch-scale", "6", "7", "norm", "capacity", "8", "lesion-detection",
               "paired", "postprocess", "verdict")
COMPANIONS = {"3": ("patch-mode",), "5": ("patch-scale",), "7": ("norm", "capacity")}
FG_NOTE = (
    "mIoU cells with 'paper X = fg IoU': the paper's printed mIoU equals the foreground IoU D/(2-D) of its own Dice "
    "for that cell (within {tol}; bench.reports.paper.miou_is_foreground_iou), while our mIoU is Eq. 12 with C = 2 "
    "(mean of background and foreground IoU); for these cells 'fg IoU' is our foreground IoU (ours_fg_iou, the 'iou' "
    "metric) and the difference is fg IoU minus the paper's number"
)
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass
class TableResult:
    """One table: tidy cells (CELL_COLUMNS, in display order), provenance and notes."""

    name: str  # file stem: table3 ... table8, paired
    title: str
    frame: pd.DataFrame
    provenance: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    row_header: str = "Metric"  # the paper's label over the row names


TableBuilder = Callable[[Results, ReportOptions], TableResult]
TABLES: Registry[TableBuilder] = Registry("table")


def scored(builder: TableBuilder) -> TableBuilder:
    """A builder that reads one score variant: it is given the results of ``options.scores`` only
    (post-processed or raw), however it is called; the post-processing table, reading both, is not."""

    @functools.wraps(builder)
    def build(results: Results, options: ReportOptions) -> TableResult:
        return builder(results.variant(options.scores), options)

    return build


def parse_table_spec(spec: str) -> list[int | str]:
    """``"3-8"`` -> [3..8], ``"3,5,7"`` -> [3, 5, 7], ``"7"`` -> [7], table names (``"patch-mode"``,
    ``"patch-scale"``, ``"paired"``, ``"postprocess"``) as themselves after the numbers:
    ``"3,patch-mode"`` -> [3, "patch-mode"]. Anything else is a one-line ConfigError."""
    numbers: set[int] = set()
    names: list[str] = []
    known = f"{TABLE_NUMBERS[0]}-{TABLE_NUMBERS[-1]}"
    named = [n for n in TABLE_ORDER if not n.isdigit()] + [n for n in TABLES.names()
                                                          if not n.isdigit() and n not in TABLE_ORDER]
    parts = [p.strip() for p in str(spec).split(",")]
    if not parts or any(not p for p in parts):
        raise ConfigError(f"--tables {spec!r}: expected e.g. 3-8, 3,5,7, 7 or a table name ({', '.join(named)})")
    for part in parts:
        if part.lower() in named:
            if part.lower() not in names:
                names.append(part.lower())
            continue
        m = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", part)
        if not m:
            close = difflib.get_close_matches(part.lower(), named, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"--tables {spec!r}: {part!r} is not a table number, range or name "
                              f"(tables {known}, {', '.join(named)}){hint}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if hi < lo:
            raise ConfigError(f"--tables {spec!r}: range {part!r} runs backwards")
        for n in range(lo, hi + 1):
            if n not in TABLE_NUMBERS:
                raise ConfigError(f"--tables {spec!r}: the paper's tables are {known}, not {n}")
            numbers.add(n)
    return sorted(numbers) + [n for n in named if n in names]


# ---------------------------------------------------------------- building blocks


class _Table:
    """Accumulates cells, runs used and notes for one table; `finish` makes the TableResult."""

    def __init__(self, name: str, title: str, scope: Scope | None, options: ReportOptions,
                 row_header: str = "Metric") -> None:
        self.name, self.title, self.scope, self.options = name, title, scope, options
        self.row_header = row_header
        self.cells: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.used = pd.DataFrame()

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def use(self, runs: pd.DataFrame) -> None:
        if not runs.empty:
            self.used = pd.concat([self.used, runs], ignore_index=True)

    def cell(self, group: str, row: str, col_group: str, col: str, metric: str, split: str,
             stats: CellStats, paper_value: float = math.nan, ci_low: float = math.nan,
             ci_high: float = math.nan, fg: CellStats | None = None) -> None:
        """One cell; ``fg`` (our foreground IoU) marks a paper mIoU that is a foreground IoU: the
        difference is then taken against it (`paper.miou_is_foreground_iou`)."""
        ours_fg = fg.ours if fg is not None and fg.status == "ok" else math.nan
        compared = ours_fg if fg is not None else (stats.ours if stats.status == "ok" else math.nan)
        diff = compared - paper_value if not (math.isnan(paper_value) or math.isnan(compared)) else math.nan
        rec = dict(
            table=self.name, group=group, row=row, col_group=col_group, col=col, metric=metric, split=split,
            ours=stats.ours, sd=stats.sd, n_seeds=stats.n_seeds, paper=paper_value, paper_fg_iou=fg is not None,
            ours_fg_iou=ours_fg, diff=diff, ci_low=ci_low, ci_high=ci_high, n_cases=stats.n_cases,
            n_excluded=stats.n_excluded, status=stats.status, runs=" ".join(stats.runs),
        )
        self.cells.append(rec)

    def finish(self, **provenance: Any) -> TableResult:
        frame = pd.DataFrame(self.cells, columns=list(CELL_COLUMNS))
        used = self.used.drop_duplicates("run_id") if not self.used.empty else self.used
        sizes: dict[str, Any] = {}
        for split in ("val", "test"):
            n = sorted({int(v) for v in frame.loc[frame["split"] == split, "n_cases"].dropna()})
            if n:
                sizes[split] = n[0] if len(n) == 1 else n
        prov: dict[str, Any] = {"table": self.title}
        if self.scope is not None:
            prov.update(dataset=self.scope.dataset, profile=self.scope.profile, scope=self.scope.reason)
        prov.update(provenance)
        prov.update(
            aggregation=provenance.get("aggregation", self.options.aggregation),
            split_sizes=sizes or "n/a",
            seeds=sorted({int(s) for s in used["seed"]}) if not used.empty else [],
            n_seeds=int(frame["n_seeds"].max()) if len(frame) and frame["n_seeds"].notna().any() else 0,
            runs=sorted(used["run_id"]) if not used.empty else [],
            policy=self._policy(used),
        )
        if not used.empty and "input_size" in used:
            prov.setdefault("input_size", sorted({int(v) for v in used["input_size"]}))
        if frame["paper_fg_iou"].astype(bool).any():
            self.note(FG_NOTE.format(tol=paper.FG_IOU_TOLERANCE))
        n_missing = int((frame["status"] == "missing").sum())
        n_nan = int((frame["status"] == "nan").sum())
        if n_missing:
            self.note(f"{n_missing} cell(s) marked '—' have no run yet; the commands above produce them")
        if n_nan:
            self.note(f"{n_nan} cell(s) are NaN: no case of that split to average (every case excluded by the "
                      f"empty-mask rules, or no patient of the kind the row counts)")
        return TableResult(self.name, self.title, frame, prov, list(self.notes), self.row_header)

    def _policy(self, used: pd.DataFrame) -> str:
        """The policy paragraph under the used runs' empty-reference rule (config ``evaluate.empty_reference``)."""
        rules = sorted(set(used["empty_reference"].dropna())) if "empty_reference" in used.columns else []
        if len(rules) > 1:
            self.note(f"the runs were scored under different empty-reference rules ({', '.join(rules)}: "
                      f"evaluate.empty_reference): their lesion means are not comparable; re-score them under one")
        return table_policy(rules[0]) if len(rules) == 1 else TABLE_POLICY


def _flags(dataset: str, profile: str) -> str:
    root = "" if dataset == "phantom" else " --root PATH"
    return f" --dataset {dataset}{root} --profile {profile}"


def train_command(model: str, task: str, plane: str, dataset: str, profile: str, *,
                  sets: Sequence[tuple[str, Any]] = (), tag: str = "") -> str:
    """The command that produces a missing run (fused: evaluate after the three planes).

    ``sets``/``tag``: a variant's config overrides (``--set KEY=VALUE``) and results folder
    (``--tag``). ``bench evaluate`` takes no ``--profile`` or ``--set``: a fused row is read from
    its three planes' saved configs, found by model, task, tag and data set.
    """
    task_flag = f" --task {task}" if task != "liver" else ""
    tag_flag = f" --tag {tag}" if tag else ""
    if plane == "fused":
        root = "" if dataset == "phantom" else " --root PATH"
        return f"bench evaluate {model} --plane fused{task_flag}{tag_flag} --dataset {dataset}{root}"
    set_flags = "".join(f" --set {key}={_flag_value(value)}" for key, value in sets)
    return f"bench train {model} --plane {plane}{task_flag}{set_flags}{tag_flag}{_flags(dataset, profile)}"


def _flag_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def ablate_command(study: str, dataset: str, profile: str) -> str:
    return f"bench ablate {study}{_flags(dataset, profile)}"


# ---------------------------------------------------------------- Tables 3 and 4 (ablations)


def _proposed() -> str:
    """The proposed model (`bench.models.proposed_model`, the spec with role ``proposed``): the one model of
    Tables 3-6, Fig. 16-18 and the ablations of its method, and the reference column of the others."""
    return proposed_model()


def _ablation_table(results: Results, options: ReportOptions, *, number: int, title: str, field_name: str,
                    values: list[Any], labels: list[str], col_group: str, study: str) -> TableResult:
    scope = resolve_scope(results, options)
    t = _Table(f"table{number}", title, scope, options)
    defaults = ablation_defaults(scope.profile)
    ours = _proposed()
    for metric in paper.METRICS:
        row = ("Average " if metric == "accuracy" else "") + METRIC_LABELS[metric]
        for value, label in zip(values, labels):
            runs, notes = select_runs(results, dataset=scope.dataset, profile=scope.profile, model=ours,
                                      task="liver", plane="axial", fixed={field_name: value})
            for n in notes:
                t.note(n)
            t.use(runs)
            stats = metric_stats(results, runs, "val", metric, options.aggregation)
            if stats.status == "missing":
                if value == defaults[field_name]:
                    t.note(f"{label}: {train_command(ours, 'liver', 'axial', scope.dataset, scope.profile)}")
                else:
                    t.note(f"{label}: {ablate_command(study, scope.dataset, scope.profile)}")
            key = (metric, value)
            t.cell("", row, col_group, label, metric, "val", stats, paper.lookup(number, key),
                   fg=_fg_stats(number, key, results, runs, "val", options.aggregation))
    return t.finish(task="liver", planes=["axial"], split="val", model=ours,
                    selection=f"{ours}, liver, axial, by cascade.{field_name}; other ablated fields at profile defaults")


@TABLES.register("3", help="Table 3: impact of the patch level (ours, liver, axial, Val)")
@scored
def table3(results: Results, options: ReportOptions) -> TableResult:
    """Table 3: Accuracy/Dice/mIoU for patches fed at levels 1..k, k = 1, 2, 3 (Val, axial)."""
    scope = resolve_scope(results, options)
    sizes = results.runs.loc[results.runs["profile"] == scope.profile, "input_size"]
    size = int(sizes.iloc[0]) if len(sizes) else 512
    labels = [f"Level-{k} {size // 2 ** k}" for k in (1, 2, 3)]
    res = _ablation_table(results, options, number=3, field_name="patch_levels", values=[1, 2, 3], labels=labels,
                          col_group="Patch Level", study="patch-level",
                          title="Table 3. Impact of patch level on segmentation performance (Axial plane)")
    res.provenance["patch_sizes"] = f"input {size} px: level k patches are {size}/2^k px (paper: 512 -> 256/128/64)"
    return res


@TABLES.register("4", help="Table 4: effect of the multi-level custom loss (ours, liver, axial, Val)")
@scored
def table4(results: Results, options: ReportOptions) -> TableResult:
    """Table 4: single loss on the final output vs the weighted multi-level loss (Eq. 4-6)."""
    return _ablation_table(results, options, number=4, field_name="multilevel_loss", values=[False, True],
                           labels=["Without", "With"], col_group="Custom Loss Function", study="loss",
                           title="Table 4. Effects of multi-level custom loss function (Axial plane)")


# ---------------------------------------------------------------- Table 5 (reiterations)


@TABLES.register("5", help="Table 5: metrics per reiteration N (ours, liver, axial, Val/Test)")
@scored
def table5(results: Results, options: ReportOptions) -> TableResult:
    """Table 5 from reiteration.csv of the iterations ablation run (reiter_stop = none)."""
    scope = resolve_scope(results, options)
    t = _Table("table5", "Table 5. Effects of iterations in the reiterative learning (Axial plane)", scope, options,
               row_header="Iter")
    runs, notes = reiteration_runs(results, scope)
    for n in notes:
        t.note(n)
    t.use(runs)
    data = results.reiterations[results.reiterations["run_id"].isin(runs["run_id"])] if not runs.empty else None
    iterations = set(range(8))
    if data is not None and not data.empty:
        iterations |= {int(i) for i in data["iteration"].dropna()}
        ran = sorted({int(i) for i in data["iteration"].dropna()})
        if ran and ran[-1] < 7:
            t.note(f"our run stopped after N = {ran[-1]} (max_reiterations/plateau stop of profile "
                   f"{scope.profile}); rows beyond it are '—' (paper ran N = 0..7)")
    for n_iter in sorted(iterations):
        for metric in paper.METRICS:
            for split in paper.SPLITS:
                stats = _iteration_stats(data, n_iter, split, metric)
                key = (n_iter, metric, split)
                fg = _iteration_stats(data, n_iter, split, "iou") if paper.miou_is_foreground_iou(5, key) else None
                t.cell("", f"N = {n_iter}", METRIC_LABELS[metric], SPLIT_LABELS[split], metric, split, stats,
                       paper.lookup(5, key), fg=fg)
    ours = _proposed()
    return t.finish(task="liver", planes=["axial"], model=ours, aggregation="mean (reiteration.csv)",
                    selection=f"{ours}, liver, axial, cascade.reiter_stop = none (else the default run)")


def _iteration_stats(data: pd.DataFrame | None, iteration: int, split: str, column: str) -> CellStats:
    """One reiteration.csv value over seeds (missing where the runs or the column are absent)."""
    if data is None or data.empty or column not in data.columns:
        return CellStats()
    rows = data[(data["iteration"] == iteration) & (data["split"] == split)].drop_duplicates("run_id", keep="last")
    return seed_stats(rows[column], tuple(sorted(rows["run_id"])))


def _fg_stats(number: int, key: tuple, results: Results, runs: pd.DataFrame, split: str,
              aggregation: str) -> CellStats | None:
    """Our foreground IoU for a paper mIoU cell that is a foreground IoU; None for every other cell."""
    if not paper.miou_is_foreground_iou(number, key):
        return None
    return metric_stats(results, runs, split, "iou", aggregation)


def reiteration_runs(results: Results, scope: Scope) -> tuple[pd.DataFrame, list[str]]:
    """Runs whose reiteration.csv feeds Table 5 / Fig. 16: the iterations ablation, else the default run."""
    common = dict(dataset=scope.dataset, profile=scope.profile, model=_proposed(), task="liver", plane="axial")
    runs, notes = select_runs(results, **common, fixed={"reiter_stop": "none", "max_reiterations": ANY})
    runs = runs[runs["has_reiteration"].astype(bool)] if not runs.empty else runs
    if not runs.empty:
        return runs, notes
    runs, notes = select_runs(results, **common)
    runs = runs[runs["has_reiteration"].astype(bool)] if not runs.empty else runs
    if not runs.empty:
        return runs, notes + [
            "no iterations-ablation run (reiter_stop = none); using the default run, which stops at the "
            f"validation plateau — {ablate_command('iterations', scope.dataset, scope.profile)} runs all N"
        ]
    return runs, notes + [f"no reiteration.csv: {ablate_command('iterations', scope.dataset, scope.profile)}"]


# ---------------------------------------------------------------- Table 6 (data sets)


@TABLES.register("6", help="Table 6: LiTS vs 3D-IRCADb (ours, axial, Val), liver and lesion")
@scored
def table6(results: Results, options: ReportOptions) -> TableResult:
    """Table 6: ours on each data set present (the paper's two always listed), liver and lesion, Val."""
    scope = resolve_scope(results, options)
    t = _Table("table6", "Table 6. Performance comparison on data sets (ours, axial, Val)", None, options,
               row_header="Dataset")
    present = sorted(set(results.runs["dataset"])) if not results.runs.empty else []
    datasets = ["lits", "ircadb"] + [d for d in present if d not in ("lits", "ircadb")]
    profiles: dict[str, str] = {}
    ours = _proposed()
    for task in ("liver", "lesion"):
        for ds in datasets:
            profile = _profile_for(results, ds, options.profile, scope.profile)
            runs, notes = select_runs(results, dataset=ds, profile=profile, model=ours, task=task, plane="axial")
            for n in notes:
                t.note(n)
            t.use(runs)
            if not runs.empty:
                profiles[ds] = profile
            for metric, label in zip(paper.METRICS, ("Acc", "Dice", "mIoU")):
                stats = metric_stats(results, runs, "val", metric, options.aggregation)
                if stats.status == "missing":
                    t.note(f"{DATASET_LABELS.get(ds, ds)} {task}: {train_command(ours, task, 'axial', ds, profile)}")
                key = (task, ds, metric)
                t.cell(task.capitalize(), DATASET_LABELS.get(ds, ds), "", label, metric, "val", stats,
                       paper.lookup(6, key), fg=_fg_stats(6, key, results, runs, "val", options.aggregation))
    return t.finish(dataset=datasets, profile=profiles or scope.profile, task=["liver", "lesion"], planes=["axial"],
                    split="val", model=ours, selection=f"{ours}, axial, default ablation fields; one row per data set")


def _profile_for(results: Results, dataset: str, wanted: str | None, fallback: str) -> str:
    """The given profile, else the one with most runs on ``dataset`` (Table 6 spans data sets)."""
    if wanted is not None:
        return wanted
    runs = results.runs[results.runs["dataset"] == dataset]
    if runs.empty:
        return fallback
    counts = runs.groupby("profile").size().sort_index()
    return str(counts.idxmax())


# ---------------------------------------------------------------- Tables 7 and 8 (models x planes)


@dataclass(frozen=True)
class ModelColumn:
    """One model column of Tables 7/8 (and a row of the paired/postprocess tables): which runs feed it."""

    model: str
    label: str
    fixed: tuple[tuple[str, Any], ...] = ()  # ablated fields this column fixes (e.g. liver_prior=channel)
    in_paper: bool = True  # the paper has a number for it
    sets: tuple[tuple[str, Any], ...] = ()  # --set overrides of the command that makes a missing run
    tag: str = ""  # --tag of that command

    def select(self, results: Results, scope: Scope, task: str, plane: str) -> tuple[pd.DataFrame, list[str]]:
        return select_runs(results, dataset=scope.dataset, profile=scope.profile, model=self.model, task=task,
                           plane=plane, fixed=dict(self.fixed))

    def command(self, task: str, plane: str, scope: Scope) -> str:
        return train_command(self.model, task, plane, scope.dataset, scope.profile, sets=self.sets, tag=self.tag)


# model.liver_prior values -> the column label's suffix (see bench/models/liver_prior.py)
LIVER_PRIORS = {"channel": "liver prior", "crop": "liver crop"}


def prior_column(model: str, mode: str) -> ModelColumn:
    """A lesion baseline given ours' liver prior (``model.liver_prior``): Table 8's "+ liver prior" columns."""
    return ModelColumn(model, f"{model_label(model)} + {LIVER_PRIORS[mode]}", (("liver_prior", mode),), False,
                       sets=(("model.liver_prior", mode),), tag=f"{model}~liver_prior={mode}")


def _present(results: Results, scope: Scope, task: str) -> set[tuple[str, Any]]:
    """(model, liver_prior) of every run of ``task`` in the scope."""
    runs = results.runs
    if runs.empty:
        return set()
    mine = runs[(runs["dataset"] == scope.dataset) & (runs["profile"] == scope.profile) & (runs["task"] == task)]
    return set(zip(mine["model"], mine["liver_prior"]))


def model_columns(results: Results, scope: Scope, task: str, *, all_priors: bool = False) -> list[ModelColumn]:
    """The models of Tables 7/8, in the registry's order (`bench.models.model_order`: baselines,
    then the proposed model), then (lesion) each liver-prior baseline with the prior.

    A model the paper prints (`paper.has_values`) always has its column (a missing cell names the
    command that fills it); any other registered model (UNet++, a plug-in) has one where its runs
    exist in the scope, with "-" in the paper columns; so does a model with runs whose plug-in is
    not loaded now (labelled by its name). The liver-prior columns: ``channel`` for the paper's
    baselines always when ``all_priors`` (Table 8 shows the row, missing with its command), else,
    like ``crop`` and every other model's, only where such a run exists in the scope.
    """
    present = _present(results, scope, task)
    with_runs = {model for model, _ in present}
    names = [m for m in model_names() if paper.has_values(m) or m in with_runs]
    names += [m for m in with_runs if m not in MODELS]
    names.sort(key=model_order)
    columns = [ModelColumn(m, model_label(m), in_paper=paper.has_values(m)) for m in names]
    if task != "lesion":
        return columns
    takers = [m for m in model_names() if MODELS.get(m).liver_prior]
    for mode in LIVER_PRIORS:
        for model in takers:
            if (all_priors and mode == "channel" and paper.has_values(model)) or (model, mode) in present:
                columns.append(prior_column(model, mode))
    return columns


def _model_table(results: Results, options: ReportOptions, number: int, task: str, title: str) -> TableResult:
    scope = resolve_scope(results, options)
    t = _Table(f"table{number}", title, scope, options)
    columns = model_columns(results, scope, task, all_priors=True)
    used: dict[str, list[pd.DataFrame]] = {}
    free_rows = False  # Table 8's lesion-free rows were added
    for plane in PLANE_ROWS:
        group = f"{plane.capitalize()} Plane" if plane != "fused" else FUSED_GROUP
        selected = {}
        for col in columns:
            runs, notes = col.select(results, scope, task, plane)
            for n in notes:
                t.note(n)
            t.use(runs)
            used.setdefault(col.label, []).append(runs)
            selected[col.label] = runs
        for metric in paper.METRICS:
            for col in columns:
                runs = selected[col.label]
                for split in paper.SPLITS:
                    stats = metric_stats(results, runs, split, metric, options.aggregation)
                    if stats.status == "missing":
                        t.note(col.command(task, plane, scope))
                    key = (plane, col.model, split, metric)
                    value = paper.lookup(number, key) if col.in_paper else math.nan
                    fg = _fg_stats(number, key, results, runs, split, options.aggregation) if col.in_paper else None
                    t.cell(group, METRIC_LABELS[metric], col.label, SPLIT_LABELS[split], metric, split, stats, value,
                           fg=fg)
        # lesion-free patients: no overlap score (empty-reference rule), their false positives; where lesion runs
        # exist (a table without any keeps the paper's layout of missing cells)
        if task == "lesion" and any(not runs.empty for runs in selected.values()):
            free_rows = True
            for key, label in LESION_FREE_ROWS:
                for col in columns:
                    for split in paper.SPLITS:
                        stats = lesion_patient_stats(_split_rows(results, selected[col.label], split), key)
                        t.cell(group, label, col.label, SPLIT_LABELS[split], key, split, stats)
    if free_rows:
        t.note("a lesion-free patient (empty lesion reference) has no lesion Dice/mIoU under evaluate.empty_reference="
               "nan (NaN, left out of the mean and counted in n_excluded; under =zero its Dice is 0 in the mean); "
               "the rows 'Lesion-free patients', 'FP voxels / lesion-free patient' and 'FP lesions / lesion-free "
               "patient' judge it by its false positives (per_case.csv fp and fp_lesions, mean over those patients)")
    t.note("the fused rows (soft voting of the three planes, Eq. 8) have no counterpart in the paper")
    extra = [c.label for c in columns if not c.in_paper and not c.fixed]
    if extra:
        t.note(f"not in the paper (no paper numbers beside them): {', '.join(extra)}")
    if any(c.fixed for c in columns):
        t.note("'+ liver prior' columns: the baseline given the liver cascade's predicted liver mask as a second input "
               "channel (model.liver_prior=channel; '+ liver crop': the slice cut to that mask's boxes, =crop), the "
               "very prior ours segments lesions in, from ours' own liver run; beside the plain baseline they "
               "separate the cascade from the architecture. The paper has no such rows")
    frames = {label: pd.concat(parts, ignore_index=True) for label, parts in used.items()}
    for line in budget_notes(frames):
        t.note(line)
    rules = postprocess_provenance(frames)
    if isinstance(rules, dict):
        t.note(f"the models' post-processing differs ({'; '.join(f'{k}: {v}' for k, v in rules.items())}): the "
               f"comparison is not under one rule; see the postprocess table for every model without it")
    models = model_provenance(frames)
    kinds = {text.split(",")[0].split("=")[-1] for text in models.values()}
    if len(kinds) > 1:
        t.note(f"the models are not under one normalisation ({', '.join(sorted(kinds))}): the comparison measures it "
               f"too; `bench ablate norm` runs every baseline under BatchNorm and GroupNorm (the norm table)")
    externals = _external_cells(t, results, options, task)
    extra = {"external": externals} if externals else {}
    return t.finish(task=task, planes=list(PLANE_ROWS), split=["val", "test"],
                    selection="model x plane, ablation fields (and model.liver_prior, model.norm, model.width, "
                              "model.encoder_depth) at profile defaults; '+ liver prior' columns: model.liver_prior fixed",
                    budget=budget_provenance(frames), postprocessing=rules, models=models, **extra)


def model_text(runs: pd.DataFrame) -> str:
    """One column's normalisation and trainable parameters (config.json ``parameters``), e.g.
    ``model.norm=group, 12,451,753 parameters``; several values are all listed."""
    norms = sorted({str(v) for v in runs.get("normalisation", pd.Series(dtype=str)) if str(v)}) or ["?"]
    params = sorted({int(v) for v in pd.to_numeric(runs.get("parameters", pd.Series(dtype=float)),
                                                   errors="coerce").dropna()})
    counts = " / ".join(f"{v:,}" for v in params) + " parameters" if params else "parameters not recorded"
    return f"{' / '.join(norms)}, {counts}"


def model_provenance(frames: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Column label -> `model_text` of its (trained, not fused) runs, for columns with runs."""
    out = {}
    for label, runs in frames.items():
        trained = runs[runs["plane"] != "fused"] if not runs.empty else runs
        if not trained.empty:
            out[label] = model_text(trained)
    return out


# ---------------------------------------------------------------- budgets and post-processing in the provenance


def _fmt_count(value: float) -> str:
    return f"{value:,.0f}"


def budget_text(runs: pd.DataFrame) -> str:
    """One column's training budget per plane, planes with the same budget together:
    ``axial, coronal, sagittal: 1,234 steps (localizer 400, tuner 400, reiter1 434), 612 s``.

    From each run's config.json ``budget`` (`bench.reports.collect.budget_row`); several seeds: their
    mean; a ``train.budget=matched`` run names its reference. Fused runs train nothing and are skipped.
    """
    if runs.empty or "budget_steps" not in runs.columns:
        return "no run"
    texts: dict[str, list[str]] = {}
    for plane in PLANES_TRAINED:
        r = runs[runs["plane"] == plane].drop_duplicates("run_id")
        if r.empty:
            continue
        steps = pd.to_numeric(r["budget_steps"], errors="coerce")
        if steps.isna().all():
            texts.setdefault("no budget recorded (config.json predates budget records)", []).append(plane)
            continue
        text = f"{_fmt_count(steps.mean())} steps"
        stages = sorted({str(v) for v in r["budget_stages"] if str(v)})
        matched = sorted({str(v) for v in r["budget_matched_to"] if str(v)})
        if matched:
            text += f" (train.budget=matched to {'; '.join(matched)})"
        elif len(stages) == 1 and "," in stages[0]:
            text += f" ({stages[0]})"
        elif len(stages) > 1:
            text += f" (stages: {' | '.join(stages)})"
        seconds = pd.to_numeric(r["budget_seconds"], errors="coerce")
        if seconds.notna().any():
            text += f", {_fmt_count(seconds.mean())} s"
        if len(r) > 1:
            text += f" (mean of {len(r)} runs)"
        texts.setdefault(text, []).append(plane)
    if not texts:
        return "fused only (its planes carry the budget)"
    return " / ".join(f"{', '.join(planes)}: {text}" for text, planes in texts.items())


PLANES_TRAINED = ("axial", "coronal", "sagittal")


def budget_provenance(frames: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Column label -> `budget_text` of the runs behind it, for columns with runs."""
    return {label: budget_text(runs) for label, runs in frames.items() if not runs.empty}


def budget_notes(frames: dict[str, pd.DataFrame], reference: str = "Ours") -> list[str]:
    """A note naming every column whose optimiser steps differ from ours' on a plane by more than 1%."""
    ref = frames.get(reference, pd.DataFrame())
    if ref.empty or "budget_steps" not in ref.columns:
        return []

    def steps(runs: pd.DataFrame, plane: str) -> float:
        values = pd.to_numeric(runs.loc[runs["plane"] == plane, "budget_steps"], errors="coerce")
        return float(values.mean()) if values.notna().any() else math.nan

    differ: dict[tuple[str, str, str, str], list[str]] = {}
    same = 0
    for label, runs in frames.items():
        if label == reference or runs.empty:
            continue
        for plane in PLANES_TRAINED:
            a, b = steps(runs, plane), steps(ref, plane)
            if math.isnan(a) or math.isnan(b):
                continue
            if abs(a - b) > 0.01 * b:
                rule = "/".join(sorted(set(runs.loc[runs["plane"] == plane, "budget_rule"].astype(str))))
                differ.setdefault((label, _fmt_count(a), _fmt_count(b), rule), []).append(plane)
            else:
                same += 1
    if differ:
        listed = "; ".join(f"{label} {a} vs {b} ({', '.join(planes)}; train.budget={rule})"
                           for (label, a, b, rule), planes in differ.items())
        return [f"training budgets differ from ours' optimiser steps: {listed}. With train.budget=epochs each model "
                f"trains its own epochs; --set train.budget=matched gives a model ours' steps (early stopping can "
                f"still end it sooner); the provenance's budget line lists every column's"]
    return [f"every compared column trained within 1% of ours' optimiser steps on its plane ({same} plane(s))"] if same else []


def postprocess_provenance(frames: dict[str, pd.DataFrame]) -> str | dict[str, str]:
    """The post-processing rule behind each column: one line when every model has the same."""
    rules = {label: "/".join(sorted(set(runs["postprocess"].astype(str))))
             for label, runs in frames.items() if not runs.empty and "postprocess" in runs.columns}
    if not rules:
        return "n/a (no runs)"
    if len(set(rules.values())) == 1:
        return f"{next(iter(rules.values()))}, the same for every model (profile.postprocess)"
    return rules


FUSED_GROUP = "Fused (soft voting)"


def _external_cells(t: _Table, results: Results, options: ReportOptions, task: str) -> list[str]:
    """Cells of each ``--external`` folder feeding ``task``: a 3-D prediction has no plane, so it
    stands as its own column in the fused rows, labelled "NAME (external)"; returns provenance lines."""
    lines = []
    for ext in results.externals:
        if task not in ext.tasks:
            continue
        runs = ext.runs(task)
        for metric in paper.METRICS:
            for split in paper.SPLITS:
                stats = metric_stats(results, runs, split, metric, options.aggregation)
                t.cell(FUSED_GROUP, METRIC_LABELS[metric], ext.label, SPLIT_LABELS[split], metric, split, stats)
        lines.append(ext.provenance())
        t.note(f"{ext.label}: 3-D predictions from {ext.folder}, scored by the same engine on the same val/test "
               f"patients as our runs (bench report --external); no plane, so shown beside the fused rows")
    return lines


@TABLES.register("7", help="Table 7: liver, the registered models x planes + fused, Val/Test")
@scored
def table7(results: Results, options: ReportOptions) -> TableResult:
    """Table 7: liver segmentation, the models (`model_columns`), three planes and the fused volume, Val and Test."""
    return _model_table(results, options, 7, "liver", "Table 7. Liver segmentation: baselines and ours per plane")


@TABLES.register("8", help="Table 8: lesion, the registered models x planes + fused, Val/Test")
@scored
def table8(results: Results, options: ReportOptions) -> TableResult:
    """Table 8: lesion segmentation, the models (`model_columns`), three planes and the fused volume, Val and Test."""
    return _model_table(results, options, 8, "lesion", "Table 8. Lesion segmentation: baselines and ours per plane")


# ---------------------------------------------------------------- lesion detection beside Table 8

# (per-case column or pooled key, row label): scores pooled from counts summed over a run's cases, then
# the reference lesions behind them (`bench.metrics.lesions`)
DETECTION_ROWS: tuple[tuple[str, str], ...] = (
    ("lesion_recall", "Recall"), ("lesion_precision", "Precision"), ("lesion_f1", "F1"),
    ("fp_lesions_per_case", "FP lesions / case"),
    *((f"lesion_recall_{n}", f"Recall {SIZE_BIN_LABELS[n]}") for n, _, _ in SIZE_BINS),
    ("n_ref_lesions", "Lesions"),
    *((f"ref_{n}", f"Lesions {SIZE_BIN_LABELS[n]}") for n, _, _ in SIZE_BINS),
)


def detection_stats(results: Results, runs: pd.DataFrame, split: str, key: str) -> CellStats:
    """``key`` of the pooled lesion detection of each run (seed) on ``split``, then mean and sd over seeds.

    n_cases = the patients pooled; n_excluded (overall recall only) = those without a reference lesion
    (their recall is undefined, their false-positive lesions count). A size bin without lesions is NaN. Runs scored before lesion detection existed
    have no lesion columns: missing, with the command to re-score in the notes.
    """
    pc = results.per_case
    if runs.empty or pc.empty or "n_ref_lesions" not in pc.columns:
        return CellStats()
    rows = pc[pc["run_id"].isin(runs["run_id"]) & (pc["split"] == split) & (pc["class"] == "lesion")]
    per_run = {rid: pooled(part) for rid, part in rows.groupby("run_id")}
    per_run = {rid: p for rid, p in per_run.items() if p and p["n_cases"]}
    if not per_run:
        return CellStats()
    stats = seed_stats(pd.Series([p[key] for p in per_run.values()], dtype=float), tuple(sorted(per_run)))
    stats.n_cases = float(max(p["n_cases"] for p in per_run.values()))
    stats.n_excluded = float(max(p["n_cases_without_lesion"] for p in per_run.values())) if key == "lesion_recall" else 0.0
    return stats


@TABLES.register("lesion-detection", help="Lesion detection beside Table 8: lesion-wise recall, precision, F1, "
                                          "FP lesions per case, recall per size bin (LiTS' analysis), every model x plane")
@scored
def lesion_detection_table(results: Results, options: ReportOptions) -> TableResult:
    """Lesion-wise detection (Bilic et al. 2023's analysis) per model column and plane, Val and Test."""
    scope = resolve_scope(results, options)
    t = _Table("lesion-detection", "Lesion detection: lesion-wise recall, precision and false positives per plane",
               scope, options)
    columns = model_columns(results, scope, "lesion", all_priors=True)
    unscored: set[str] = set()
    for plane in PLANE_ROWS:
        group = f"{plane.capitalize()} Plane" if plane != "fused" else FUSED_GROUP
        selected = {}
        for col in columns:
            runs, _ = col.select(results, scope, "lesion", plane)
            t.use(runs)
            selected[col.label] = runs
        for key, label in DETECTION_ROWS:
            for col in columns:
                for split in paper.SPLITS:
                    stats = detection_stats(results, selected[col.label], split, key)
                    if stats.status == "missing" and not selected[col.label].empty:
                        unscored.add(col.label)
                    elif stats.status == "missing":
                        t.note(col.command("lesion", plane, scope))
                    t.cell(group, label, col.label, SPLIT_LABELS[split], key, split, stats)
    for ext in results.externals:
        if "lesion" in ext.tasks:
            for key, label in DETECTION_ROWS:
                for split in paper.SPLITS:
                    t.cell(FUSED_GROUP, label, ext.label, SPLIT_LABELS[split], key, split,
                           detection_stats(results, ext.runs("lesion"), split, key))
    if unscored:
        t.note(f"runs without lesion-detection columns in per_case.csv (scored before it existed): "
               f"{', '.join(sorted(unscored))}; re-score them with bench evaluate")
    t.note("counts first: each run's recall, precision and F1 come from its lesion counts summed over the split's "
           "patients (not a mean of per-patient ratios); 'FP lesions / case' = unmatched predicted components per "
           "patient; patients without a reference lesion (n_excluded) add false positives but no recall; the "
           "paper has no such table (LiTS' best lesion-wise recall: 0.458-0.554, Bilic et al. 2023)")
    return t.finish(task="lesion", planes=list(PLANE_ROWS), split=["val", "test"],
                    detection=("each run's profile.evaluate (lesion_match, lesion_connectivity; its summary.json "
                               "policy states them); by default: " + lesion_policy_text("overlap", 3)),
                    selection="as Table 8: model x plane, ablation fields (and model.liver_prior) at profile defaults")


# ---------------------------------------------------------------- paired per-case comparison


def bootstrap_ci(diffs: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over cases (seeded: the same input gives the same CI)."""
    diffs = np.asarray(diffs, dtype=float)
    if diffs.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diffs.size, size=(resamples, diffs.size))
    means = diffs[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def per_case_dice(results: Results, runs: pd.DataFrame, split: str) -> pd.Series:
    """Per-case Dice on ``split`` averaged over the runs (seeds) first; index = case id, NaN kept."""
    pc = results.per_case
    if runs.empty or pc.empty:
        return pd.Series(dtype=float)
    rows = pc[pc["run_id"].isin(runs["run_id"]) & (pc["split"] == split)]
    if rows.empty:
        return pd.Series(dtype=float)
    return rows.groupby("case")["dice"].mean()


@TABLES.register("paired", help="Paired per-case Dice: ours minus each baseline, bootstrap 95% CI")
@scored
def paired(results: Results, options: ReportOptions) -> TableResult:
    """Ours vs each baseline on the same data set/task/plane/split: mean per-case Dice difference, 95% CI."""
    scope = resolve_scope(results, options)
    t = _Table("paired", "Paired per-case comparison: Dice(ours) − Dice(baseline)", scope, options,
               row_header="Comparison")
    proposed = proposed_model()  # the paper's method: every other column is compared with it
    ours = model_label(proposed)
    skipped = 0
    frames: dict[tuple[str, str], list[pd.DataFrame]] = {}
    for task in ("liver", "lesion"):
        others = [c for c in model_columns(results, scope, task) if c.model != proposed]
        for plane in PLANE_ROWS:
            ours_runs, notes = select_runs(results, dataset=scope.dataset, profile=scope.profile, model=proposed,
                                           task=task, plane=plane)
            for n in notes:
                t.note(n)
            for col in others:
                base_runs, notes = col.select(results, scope, task, plane)
                for n in notes:
                    t.note(n)
                for split in paper.SPLITS:
                    a = per_case_dice(results, ours_runs, split)
                    b = per_case_dice(results, base_runs, split)
                    if a.empty or b.empty:
                        skipped += 1
                        continue
                    t.use(ours_runs)
                    t.use(base_runs)
                    frames.setdefault((task, ours), []).append(ours_runs)
                    frames.setdefault((task, col.label), []).append(base_runs)
                    stats, lo, hi = _paired_stats(a, b, ours_runs, base_runs)
                    t.cell(f"{task.capitalize()} {plane}", f"{ours} − {col.label}", "",
                           SPLIT_LABELS[split], "dice_diff", split, stats, ci_low=lo, ci_high=hi)
            for ext in results.externals:
                if task not in ext.tasks:
                    continue
                for split in paper.SPLITS:
                    a = per_case_dice(results, ours_runs, split)
                    b = per_case_dice(results, ext.runs(task), split)
                    if a.empty or b.empty:
                        skipped += 1
                        continue
                    t.use(ours_runs)
                    stats, lo, hi = _paired_stats(a, b, ours_runs, ext.runs(task))
                    t.cell(f"{task.capitalize()} {plane}", f"{ours} − {ext.label}", "", SPLIT_LABELS[split],
                           "dice_diff", split, stats, ci_low=lo, ci_high=hi)
    if skipped:
        t.note(f"{skipped} (task, plane, baseline, split) comparison(s) skipped: per_case.csv missing on one side")
    if any(label.endswith(tuple(LIVER_PRIORS.values())) for _, label in frames):
        t.note("'Ours − X + liver prior': both segment lesions inside the same liver cascade's mask, so the "
               "difference is the architecture's; 'Ours − X' adds the cascade's prior to it")
    joined = {f"{task} {label}": pd.concat(parts, ignore_index=True) for (task, label), parts in frames.items()}
    for task in ("liver", "lesion"):
        mine = {label: pd.concat(parts, ignore_index=True) for (t_, label), parts in frames.items() if t_ == task}
        for line in budget_notes(mine):
            t.note(f"{task}: {line}")
    t.note(f"cases matched by id, per-case Dice averaged over seeds first; cases NaN on either side are excluded "
           f"(n_excluded); 95% percentile bootstrap over cases, {BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}; "
           f"sd = sd of the per-case differences")
    extra = {"external": [e.provenance() for e in results.externals]} if results.externals else {}
    return t.finish(task=["liver", "lesion"], planes=list(PLANE_ROWS), split=["val", "test"], metric="dice",
                    selection="default runs of ours and of each baseline (as Tables 7/8), and each lesion baseline "
                              "with the liver prior where its runs exist; external folders (bench report --external) "
                              "against ours at every plane",
                    budget=budget_provenance(joined), postprocessing=_rules_by_task(frames), **extra)


def _paired_stats(a: pd.Series, b: pd.Series, runs_a: pd.DataFrame, runs_b: pd.DataFrame
                  ) -> tuple[CellStats, float, float]:
    """Mean per-case Dice difference a - b over the cases both score, its sd and bootstrap 95% CI."""
    joined = pd.concat([a.rename("ours"), b.rename("base")], axis=1, join="inner")
    diffs = (joined["ours"] - joined["base"]).dropna().to_numpy()
    n_excl = int(len(joined) - diffs.size)
    stats = CellStats(n_seeds=max(len(runs_a), len(runs_b)), n_cases=float(diffs.size),
                      n_excluded=float(n_excl), status="ok" if diffs.size else "nan",
                      runs=tuple(sorted(set(runs_a["run_id"]) | set(runs_b["run_id"]))))
    if diffs.size:
        stats.ours = float(diffs.mean())
        stats.sd = float(diffs.std(ddof=1)) if diffs.size > 1 else math.nan
    lo, hi = bootstrap_ci(diffs)
    return stats, lo, hi


# ---------------------------------------------------------------- post-processing ablation (raw vs post)


@TABLES.register("postprocess", help="Dice without and with the one post-processing rule: every model, task, plane")
def postprocess_table(results: Results, options: ReportOptions) -> TableResult:
    """Every model's Val/Test Dice without post-processing (raw), with it (post) and the difference.

    Reads both score variants itself, so it must get the unfiltered results (`build_tables` does
    that); ``--scores`` does not apply. Rows as Tables 7/8 select them (plus the lesion baselines
    with the liver prior where their runs exist), so "ours without post-processing" and every
    baseline without it stand side by side. The difference is taken per run (seed), then averaged.
    """
    scope = resolve_scope(results, options)
    raw, post = results.variant("raw"), results.variant("post")
    t = _Table("postprocess", "Post-processing ablation: Dice without and with the one rule, every model", scope,
               options, row_header="Model")
    frames: dict[tuple[str, str], list[pd.DataFrame]] = {}
    no_raw: set[str] = set()
    for task in ("liver", "lesion"):
        columns = model_columns(results, scope, task)
        for plane in PLANE_ROWS:
            group = f"{task.capitalize()} {plane}"
            for col in columns:
                runs, notes = col.select(results, scope, task, plane)
                for n in notes:
                    t.note(n)
                t.use(runs)
                frames.setdefault((task, col.label), []).append(runs)
                for split in paper.SPLITS:
                    without = metric_stats(raw, runs, split, "dice", options.aggregation)
                    with_ = metric_stats(post, runs, split, "dice", options.aggregation)
                    if with_.status == "missing" and runs.empty:
                        t.note(col.command(task, plane, scope))
                    elif without.status == "missing" and with_.status != "missing":
                        no_raw |= set(runs["run_id"])
                    label = SPLIT_LABELS[split]
                    t.cell(group, col.label, label, "without", "dice", split, without)
                    t.cell(group, col.label, label, "with", "dice", split, with_)
                    t.cell(group, col.label, label, "with − without", "dice_diff", split,
                           _variant_difference(post, raw, runs, split, options.aggregation))
    if no_raw:
        t.note(f"no metrics_raw.csv (evaluated before raw scores were stored; bench evaluate again to add them): "
               f"{', '.join(sorted(no_raw))}")
    t.note("'without': the thresholded prediction as the network gives it; 'with': after the run's post-processing "
           "(liver: the largest 3-D component; lesion: components of at least min_voxels; profile.postprocess, the "
           "same rule for every model); 'with − without' per run, then the mean (± sd) over seeds")
    return t.finish(task=["liver", "lesion"], planes=list(PLANE_ROWS), split=["val", "test"], metric="dice",
                    scores="both: without (metrics_raw.csv) and with (metrics.csv) post-processing; --scores does "
                           "not apply to this table",
                    selection="the runs of Tables 7/8 (default ablation fields), and each lesion baseline with the "
                              "liver prior where its runs exist",
                    postprocessing=_rules_by_task(frames))


def _rules_by_task(frames: dict[tuple[str, str], list[pd.DataFrame]]) -> dict[str, Any]:
    """Task -> `postprocess_provenance` of that task's columns (the rule differs by task)."""
    out: dict[str, Any] = {}
    for task in ("liver", "lesion"):
        mine = {label: pd.concat(parts, ignore_index=True) for (t, label), parts in frames.items() if t == task}
        if any(not f.empty for f in mine.values()):
            out[task] = postprocess_provenance(mine)
    return out or {"": "n/a (no runs)"}


def _variant_difference(post: Results, raw: Results, runs: pd.DataFrame, split: str, aggregation: str) -> CellStats:
    """Post minus raw Dice per run (seed), then mean and sd over the runs that have both."""
    values = {}
    for name, res in (("post", post), ("raw", raw)):
        m = res.metrics
        rows = m[m["run_id"].isin(runs["run_id"]) & (m["split"] == split) & (m["aggregation"] == aggregation)
                 & (m["metric"] == "dice")] if not runs.empty else m.iloc[:0]
        values[name] = rows.drop_duplicates("run_id", keep="last").set_index("run_id")
    both = values["post"].index.intersection(values["raw"].index)
    if both.empty:
        return CellStats()
    diff = values["post"].loc[both, "value"] - values["raw"].loc[both, "value"]
    stats = seed_stats(diff, tuple(sorted(both)))
    stats.n_cases = float(values["post"].loc[both, "n_cases"].max())
    stats.n_excluded = float(values["post"].loc[both, "n_excluded"].max())
    return stats


# ---------------------------------------------------------------- this toolkit's ablations (patch mode, patch scale)


@dataclass(frozen=True)
class VariantTable:
    """An ablation of ours (liver, axial) in the Table 3 layout: Val and Test per variant of one field."""

    name: str
    title: str
    field_name: str  # the ablated cascade field (a `collect.ABLATED_FIELDS` entry)
    values: tuple[Any, ...]
    fixed: tuple[tuple[str, Any], ...] = ()  # further fields every variant has (e.g. reiter_stop = none)
    per_iteration: bool = False  # also Algorithm 1's iterations from reiteration.csv
    notes: tuple[str, ...] = ()


PATCH_MODE = VariantTable(
    name="patch-mode", title="Ablation: multi-level patch mode, tiles vs space-to-depth (ours, liver, axial)",
    field_name="patch_mode", values=("tile", "unshuffle"),
    notes=("tile: the image cut into tiles of the level's feature-map size, stacked as channels (section 3.4 read "
           "literally; a channel's pixel can be far from the feature it joins); unshuffle: the 2^l x 2^l block under "
           "each feature position (pixel_unshuffle, spatially coherent). The paper does not say which it "
           "implemented, so no paper value stands beside either",))
PATCH_SCALE = VariantTable(
    name="patch-scale", title="Ablation: Algorithm 1's patches zoomed to the input size vs at native size "
                              "(ours, liver, axial, every iteration)",
    field_name="patch_scale", values=("zoom", "native"), fixed=(("reiter_stop", "none"), ("max_reiterations", ANY)),
    per_iteration=True,
    notes=("zoom: each patch resized to the network input (the network trains on magnified anatomy it never sees at "
           "inference); native: each patch at its own size, batched by size (the tuning net is fully convolutional). "
           "Both run every iteration (cascade.reiter_stop = none) and keep the best validation iteration",
           "per-iteration rows are reiteration.csv: 3-D per-case means at the network input resolution (the final "
           "rows are the evaluation at the original resolution); 'patches': the patch set P the iteration trains on "
           "(with the per-size counts); 'self-label Dice': its labels S against the patches' ground truth, global "
           "over the patches of that size (test scores are recorded, never used for the stop or the selection)"))
VARIANT_TABLES = {spec.name: spec for spec in (PATCH_MODE, PATCH_SCALE)}


def variant_ran(results: Results, scope: Scope, spec: VariantTable) -> bool:
    """Whether a run of ``spec``'s non-default variant exists in the scope (then the table joins the report)."""
    runs = results.runs
    if runs.empty:
        return False
    default = ablation_defaults(scope.profile)[spec.field_name]
    mine = runs[(runs["dataset"] == scope.dataset) & (runs["profile"] == scope.profile) & (runs["model"] == _proposed())
                & (runs["task"] == "liver") & (runs["plane"] == "axial")]
    return bool((mine[spec.field_name] != default).any())


def variant_table(results: Results, options: ReportOptions, spec: VariantTable) -> TableResult:
    """The Table 3 layout over ``spec.values`` (Val and Test), then, for Algorithm 1's ablations, its iterations."""
    results = results.variant(options.scores)
    scope = resolve_scope(results, options)
    t = _Table(spec.name, spec.title, scope, options)
    defaults = ablation_defaults(scope.profile)
    selected: dict[str, pd.DataFrame] = {}
    ours = _proposed()
    for value in spec.values:
        label = str(value)
        runs, notes = select_runs(results, dataset=scope.dataset, profile=scope.profile, model=ours, task="liver",
                                  plane="axial", fixed={spec.field_name: value, **dict(spec.fixed)})
        for n in notes:
            t.note(n)
        t.use(runs)
        selected[label] = runs
        if runs.empty:
            plain = value == defaults[spec.field_name] and not spec.fixed
            t.note(f"{label}: " + (train_command(ours, "liver", "axial", scope.dataset, scope.profile) if plain
                                   else ablate_command(spec.name, scope.dataset, scope.profile)))
    group = "Final model" if spec.per_iteration else ""
    for metric in paper.METRICS:
        row = ("Average " if metric == "accuracy" else "") + METRIC_LABELS[metric]
        for label, runs in selected.items():
            for split in paper.SPLITS:
                stats = metric_stats(results, runs, split, metric, options.aggregation)
                t.cell(group, row, label, SPLIT_LABELS[split], metric, split, stats)
    if spec.per_iteration:
        _iteration_rows(t, results, selected, int(defaults["max_reiterations"]))
    for n in spec.notes:
        t.note(n)
    fixed = ", ".join(f"cascade.{k} = {'any' if v is ANY else v}" for k, v in spec.fixed)
    return t.finish(task="liver", planes=["axial"], split=["val", "test"], model=ours,
                    default=f"cascade.{spec.field_name} = {defaults[spec.field_name]} (profile {scope.profile})",
                    selection=f"{ours}, liver, axial, by cascade.{spec.field_name}" + (f"; {fixed}" if fixed else "")
                              + "; other ablated fields at profile defaults")


_SIZE_COLUMN = re.compile(r"patches_(\d+)px")


def _iteration_rows(t: _Table, results: Results, selected: dict[str, pd.DataFrame], max_default: int) -> None:
    """Per iteration N and variant: Val/Test Dice and the patch set's size (reiteration.csv); then per N and
    patch size: that size's patches and the Dice of their self-labels."""
    rt = results.reiterations
    data = {label: rt[rt["run_id"].isin(runs["run_id"])] for label, runs in selected.items() if not runs.empty}
    data = {label: d for label, d in data.items() if not d.empty}
    for label, runs in selected.items():
        if not runs.empty and label not in data:
            t.note(f"{label}: no reiteration.csv in {', '.join(sorted(runs['run_id']))}")
    iterations = sorted({int(i) for d in data.values() for i in d["iteration"].dropna()}) or list(range(max_default + 1))
    sizes = sorted({int(m.group(1)) for d in data.values() for c in d.columns if (m := _SIZE_COLUMN.fullmatch(c))},
                   reverse=True)
    for n in iterations:
        for label in selected:
            d = data.get(label)
            for split in paper.SPLITS:
                t.cell(ITERATION_GROUP, f"N = {n}", label, SPLIT_LABELS[split], "dice", split,
                       _iteration_stats(d, n, split, "dice"))
            stats = _iteration_stats(d, n, "val", "patches")  # one value per iteration: the val row carries it
            if stats.status == "ok":
                t.cell(ITERATION_GROUP, f"N = {n}", label, "patches", "patches", "train", stats)
    for n in iterations:
        for size in sizes:
            for label in selected:
                d = data.get(label)
                for column, col in ((f"patches_{size}px", "patches"), (f"selflabel_dice_{size}px", "self-label Dice")):
                    stats = _iteration_stats(d, n, "val", column)
                    if stats.status == "ok":  # N = 0 trains on no patch: no row
                        t.cell(SIZE_GROUP, f"N = {n}, {size} px", label, col, column, "train", stats)


ITERATION_GROUP = "Per iteration (reiteration.csv)"
SIZE_GROUP = "Per iteration and patch size: Algorithm 1's patches P and self-labels S"


def _spec_builder(table: Callable[[Results, ReportOptions, Any], TableResult], spec: Any) -> TableBuilder:
    """A registered builder for one spec of a table family (variant, baseline variant), titled by the spec."""
    def build(results: Results, options: ReportOptions) -> TableResult:
        return table(results, options, spec)

    build.__doc__ = spec.title
    return build


TABLES.add("patch-mode", _spec_builder(variant_table, PATCH_MODE),
           help="Ablation (not in the paper): patch mode tile vs unshuffle (ours, liver, axial, Val/Test)")
TABLES.add("patch-scale", _spec_builder(variant_table, PATCH_SCALE),
           help="Ablation (not in the paper): Algorithm 1's patches zoom vs native, every iteration (ours, liver, axial)")


# ---------------------------------------------------------------- the baselines' ablations (normalisation, capacity)


@dataclass(frozen=True)
class BaselineVariants:
    """Baselines under variants of their model fields (liver, axial), each variant its own column, ours beside.

    Every column is a distinct experiment (its ablated fields fixed, `select_runs`), so "as published" and
    "matched" are shown side by side and never averaged as seeds."""

    name: str  # also the ablation (`bench.ablations.ABLATIONS`) whose runs the table shows
    title: str
    variants: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]  # (label, ablated fields it fixes)
    notes: tuple[str, ...] = ()

    @property
    def models(self) -> tuple[str, ...]:
        """The ablation's models (a registry query there: the norm table's are every baseline declaring ``norm``)."""
        return ABLATIONS.get(self.name).models


NORM_TABLE = BaselineVariants(
    name="norm", title="Ablation: normalisation, each baseline as published (BatchNorm) and matched to ours "
                       "(GroupNorm) (liver, axial)",
    variants=(("batch (as published)", (("norm", "batch"),)), ("group (matched)", (("norm", "group"),))),
    notes=("model.norm=batch: the architecture as published; model.norm=group: every BatchNorm replaced by GroupNorm "
           "with the cascade's group size (bench/models/norm.py), the normalisation ours uses (cascade.norm=group). "
           "The trainable parameters are the same under both; BatchNorm adds its running statistics",))
CAPACITY_TABLE = BaselineVariants(
    name="capacity", title="Ablation: U-Net as configured vs at about ours' parameter count (liver, axial)",
    variants=(("as configured", ()), ("ours-size", (("encoder_depth", 4), ("width", 0.25)))),
    notes=("ours-size: model.encoder_depth=4 (ResNet layer4 removed) and model.width=0.25, sized at the cpu profile "
           "to about ours' parameter count (3.10 M vs 2.98 M); the Parameters row is each run's config.json count",))
BASELINE_VARIANT_TABLES = {spec.name: spec for spec in (NORM_TABLE, CAPACITY_TABLE)}


def baseline_variant_ran(results: Results, scope: Scope, name: str) -> bool:
    """Whether a run of a non-default variant of ``name``'s table exists in the scope."""
    spec = BASELINE_VARIANT_TABLES[name]
    runs = results.runs
    if runs.empty:
        return False
    defaults = ablation_defaults(scope.profile)
    mine = runs[(runs["dataset"] == scope.dataset) & (runs["profile"] == scope.profile) & runs["model"].isin(spec.models)
                & (runs["task"] == "liver") & (runs["plane"] == "axial")]
    return any(((mine[k] == v).any() if v != defaults[k] else False) for _, fixed in spec.variants for k, v in fixed)


def baseline_variant_table(results: Results, options: ReportOptions, spec: BaselineVariants) -> TableResult:
    """Val/Test Accuracy, Dice, mIoU and the parameter count per (baseline, variant), then ours for reference."""
    results = results.variant(options.scores)
    scope = resolve_scope(results, options)
    t = _Table(spec.name, spec.title, scope, options)
    defaults = ablation_defaults(scope.profile)
    columns: list[tuple[str, str, dict[str, Any], tuple[tuple[str, Any], ...]]] = []
    for model in spec.models:
        for label, fixed in spec.variants:
            columns.append((model, f"{model_label(model)}, {label}", dict(fixed), fixed))
    ours = _proposed()
    columns.append((ours, f"{model_label(ours)} (reference)", {}, ()))
    frames = {}
    for model, label, fixed, sets in columns:
        runs, notes = select_runs(results, dataset=scope.dataset, profile=scope.profile, model=model, task="liver",
                                  plane="axial", fixed=fixed)
        for n in notes:
            t.note(n)
        t.use(runs)
        frames[label] = runs
        if runs.empty:
            plain = all(defaults[k] == v for k, v in sets)
            t.note(f"{label}: " + (train_command(model, "liver", "axial", scope.dataset, scope.profile) if plain
                                   else ablate_command(spec.name, scope.dataset, scope.profile)))
    for metric in paper.METRICS:
        row = ("Average " if metric == "accuracy" else "") + METRIC_LABELS[metric]
        for model, label, _, _ in columns:
            for split in paper.SPLITS:
                t.cell("", row, label, SPLIT_LABELS[split], metric, split,
                       metric_stats(results, frames[label], split, metric, options.aggregation))
    for model, label, _, _ in columns:  # one count per column: the Val cell carries it, as the patch counts do
        runs = frames[label]
        t.cell("", "Parameters", label, "Val", "parameters", "train",
               seed_stats(runs["parameters"], tuple(sorted(runs["run_id"]))) if not runs.empty else CellStats())
    for n in spec.notes:
        t.note(n)
    return t.finish(task="liver", planes=["axial"], split=["val", "test"], models=model_provenance(frames),
                    budget=budget_provenance(frames),
                    selection="per column: the model with the variant's fields fixed, every other ablated field at "
                              f"profile {scope.profile}'s defaults (model.norm={defaults['norm']}, "
                              f"model.width={defaults['width']:g}, model.encoder_depth={defaults['encoder_depth']})")


TABLES.add("norm", _spec_builder(baseline_variant_table, NORM_TABLE),
           help="Ablation (not in the paper): every baseline under BatchNorm (as published) and GroupNorm (liver, axial)")
TABLES.add("capacity", _spec_builder(baseline_variant_table, CAPACITY_TABLE),
           help="Ablation (not in the paper): U-Net as configured vs at about ours' parameter count (liver, axial)")


# ---------------------------------------------------------------- the report's tables


def table_names(results: Results, numbers: Sequence[int | str], options: ReportOptions,
                with_paired: bool = True) -> list[str]:
    """The tables to build, in reading order (`TABLE_ORDER`): those asked for, the paired and post-processing
    comparisons with Tables 7/8 (``with_paired``), and each toolkit ablation with its paper table (patch-mode
    with 3, patch-scale with 5) when a run of its non-default variant exists."""
    wanted = [str(n) for n in numbers]
    for name in wanted:
        TABLES.get(name)  # an unknown name: one line with "did you mean"
    chosen = set(wanted)
    if any(n in chosen for n in COMPANIONS):
        scope = resolve_scope(results, options)
        for parent, companions in COMPANIONS.items():
            if parent in chosen:
                chosen |= {c for c in companions if (variant_ran(results, scope, VARIANT_TABLES[c])
                                                     if c in VARIANT_TABLES else baseline_variant_ran(results, scope, c))}
    if with_paired and chosen & {"7", "8"}:
        chosen |= {"paired", "postprocess"}
    if with_paired and "8" in chosen:
        chosen.add("lesion-detection")
    order = list(TABLE_ORDER) + sorted(n for n in chosen if n not in TABLE_ORDER)
    return [n for n in order if n in chosen]


def build_tables(results: Results, numbers: Sequence[int | str], options: ReportOptions,
                 with_paired: bool = True) -> list[TableResult]:
    """The requested tables in reading order, with their companions (`table_names`).

    Every builder gets the unfiltered results: each reads the scores ``options.scores`` names
    (post-processed or raw; `scored`) except the post-processing table, which reads both.
    """
    out = [TABLES.get(n)(results, options) for n in table_names(results, numbers, options, with_paired)]
    for table in out:  # cross-validation: each fold's run and test numbers behind a pooled cell
        table.provenance.setdefault("scores", SCORE_TEXT[options.scores])
        folds = {rid: results.folds[rid] for rid in table.provenance.get("runs", []) if rid in results.folds}
        if folds:
            table.provenance["folds"] = folds
    return out



# ---------------------------------------------------------------- the real-data verdict (issue 18)


def verdict_columns(results: Results, scope: Scope, plane: str) -> list[ModelColumn]:
    """The verdict table's columns on ``plane``, in reading order, each with a liver or lesion run there: per
    baseline, as published (the norm ablation's ``model.norm=batch`` run, where batch is not the profile's
    normalisation) then as Tables 7/8 select it (`model_columns`); then the '+ liver prior' baselines; then ours."""
    plain: dict[str, ModelColumn] = {}
    for task in ("liver", "lesion"):
        for col in model_columns(results, scope, task):
            plain.setdefault(col.label, col)
    ours = proposed_model()
    bases = [c for c in plain.values() if c.model != ours and not c.fixed]
    published = {}
    if ablation_defaults(scope.profile)["norm"] != "batch":
        published = {m: ModelColumn(m, f"{model_label(m)} as published", (("norm", "batch"),), False,
                                    sets=(("model.norm", "batch"),), tag=f"{m}~norm=batch") for m in NORM_TABLE.models}
    ordered: list[ModelColumn] = []
    for col in bases:
        if col.model in published:
            ordered.append(published.pop(col.model))
        ordered.append(col)
    ordered += list(published.values())
    ordered += [c for c in plain.values() if c.fixed] + [c for c in plain.values() if c.model == ours]
    return [c for c in ordered if any(not c.select(results, scope, task, plane)[0].empty for task in ("liver", "lesion"))]


def _no_liver_run(col: ModelColumn) -> bool:
    """A '+ liver prior' baseline segments lesions in ours' liver: it has no liver run of its own."""
    return bool(dict(col.fixed).get("liver_prior"))


def _split_rows(results: Results, runs: pd.DataFrame, split: str) -> pd.DataFrame:
    """The per-case rows of ``runs`` (pooled over folds: every fold's test patients) on ``split``."""
    pc = results.per_case
    if runs.empty or pc.empty:
        return pc.iloc[:0]
    return pc[pc["run_id"].isin(runs["run_id"]) & (pc["split"] == split)]


def case_mean_stats(rows: pd.DataFrame, column: str) -> CellStats:
    """Mean of per-case ``column`` over each run's cases (NaN cases excluded and counted), then mean and sd over
    the runs (seeds); missing when no row carries the column."""
    if rows.empty or column not in rows.columns:
        return CellStats()
    values = pd.to_numeric(rows[column], errors="coerce")
    per_run = values.groupby(rows["run_id"]).mean()
    stats = seed_stats(per_run, tuple(sorted(per_run.index)))
    stats.n_cases = float(rows.groupby("run_id")["case"].nunique().max())
    stats.n_excluded = float(values.isna().groupby(rows["run_id"]).sum().max())
    return stats


def lesion_bearing(rows: pd.DataFrame) -> pd.Series:
    """Cases whose reference has lesion voxels (tp + fn > 0): the only ones a lesion Dice is averaged over; the
    others are the empty references of `bench.metrics.scores.is_empty_reference`."""
    tp, fn = (pd.to_numeric(rows[c], errors="coerce") for c in ("tp", "fn"))
    counted = tp.notna() & fn.notna()  # a row without counts bears no known lesion
    return counted & pd.Series(~is_empty_reference(tp, fn), index=rows.index)


# (key, row label): the lesion-free patients of a lesion run and what judges them (Table 8 and the verdict table)
LESION_FREE_ROWS: tuple[tuple[str, str], ...] = (
    ("count_free_patients", "Lesion-free patients"),
    ("count_fp_voxels", "FP voxels / lesion-free patient"),
    ("count_fp_lesions", "FP lesions / lesion-free patient"),
)


def lesion_patient_stats(rows: pd.DataFrame, key: str) -> CellStats:
    """Lesion-bearing or lesion-free patients of each run (``count_lesion_patients`` / ``count_free_patients``),
    or the mean false-positive voxels / lesions per lesion-free patient (``count_fp_voxels`` / ``count_fp_lesions``,
    per_case.csv's fp and fp_lesions), then mean and sd over the runs (seeds).

    A lesion-free patient has no lesion overlap score under ``evaluate.empty_reference=nan``; these are its numbers.
    NaN (not missing) when the runs have no lesion-free patient; missing when no per-case counts exist.
    """
    if rows.empty or "tp" not in rows.columns:
        return CellStats()
    bearing = lesion_bearing(rows)
    if key in ("count_lesion_patients", "count_free_patients"):
        part = rows[bearing] if key == "count_lesion_patients" else rows[~bearing]
        n = part.groupby("run_id")["case"].nunique().reindex(sorted(set(rows["run_id"])), fill_value=0)
        return seed_stats(n.astype(float), tuple(n.index))
    column = {"count_fp_voxels": "fp", "count_fp_lesions": "fp_lesions"}[key]
    return case_mean_stats(rows[~bearing], column) if (~bearing).any() else _empty_stats(rows)


def surface_command(col: ModelColumn, plane: str, scope: Scope, runs: pd.DataFrame) -> str:
    """The command that adds ASSD (and the other surface distances) to a liver run's per_case.csv."""
    root = "" if scope.dataset == "phantom" else " --root PATH"
    tag = f" --tag {col.tag}" if col.tag else ""
    folded = runs["run_id"].astype(str).str.contains(r"\(folds ", regex=True).any()
    return (f"bench evaluate {col.model} --plane {plane}{tag} --surface --dataset {scope.dataset}{root}"
            + (" --fold K (for each fold K)" if folded else ""))


# (metric key, row label) per task; the per-patient rows follow each Dice and ASSD mean
VERDICT_ROWS: dict[str, tuple[tuple[str, str], ...]] = {
    "liver": (("dice", "Dice (mean over patients)"), ("assd", "ASSD, mm (mean over patients)")),
    "lesion": (("dice", "Dice, lesion-bearing patients (mean)"), ("count_lesion_patients", "Lesion-bearing patients"),
               ("lesion_recall", "Lesion-wise recall (pooled)"), ("n_ref_lesions", "Reference lesions"),
               ("lesion_recall_gt20", "Recall > 20 mm"), ("ref_gt20", "Reference lesions > 20 mm"),
               *LESION_FREE_ROWS[1:], LESION_FREE_ROWS[0]),
}
PATIENT_ROWS = {"dice": "Dice", "assd": "ASSD, mm"}


@TABLES.register("verdict", help="Real-data verdict (not in the paper): per model, Test, per patient: liver Dice and "
                                 "ASSD, lesion Dice on lesion-bearing patients, lesion-wise recall, false positives "
                                 "on lesion-free patients")
@scored
def verdict_table(results: Results, options: ReportOptions) -> TableResult:
    """What a real-data study can say, per model variant (issue 18): Test split, per patient (3-D case), pooled over
    the cross-validation folds as Tables 7/8 pool them.

    A lesion Dice is averaged over lesion-bearing patients only (tp + fn > 0): a patient without a liver lesion has
    no lesion Dice (it would be 0 for any false positive, measuring false positives inside a mean); it scores
    false-positive voxels and lesions instead. Lesion-wise recall is pooled from the per-case counts
    (`detection_stats`). A '+ liver prior' baseline has no liver run of its own: its liver cells are missing with
    that note. Liver ASSD needs runs evaluated with ``--surface``; else the cell is missing with the command.
    """
    scope = resolve_scope(results, options)
    t = _Table("verdict", "Real-data verdict: liver, lesions and false positives per model (Test, per patient)",
               scope, options)
    split = "test"
    frames: dict[str, list[pd.DataFrame]] = {}
    planes = [p for p in PLANES_TRAINED if verdict_columns(results, scope, p)] or ["axial"]
    for plane in planes:
        columns = verdict_columns(results, scope, plane)
        rows_of: dict[tuple[str, str], pd.DataFrame] = {}
        runs_of: dict[tuple[str, str], pd.DataFrame] = {}
        for col in columns:
            for task in ("liver", "lesion"):
                runs = results.runs.iloc[:0]
                if not (task == "liver" and _no_liver_run(col)):
                    runs, notes = col.select(results, scope, task, plane)
                    for n in notes:
                        t.note(n)
                    t.use(runs)
                    frames.setdefault((task, col.label), []).append(runs)
                    if runs.empty:
                        t.note(f"{col.label} {task}: {col.command(task, plane, scope)}")
                runs_of[(col.label, task)] = runs
                rows_of[(col.label, task)] = _split_rows(results, runs, split)
        for task in ("liver", "lesion"):
            group = f"{plane.capitalize()} Plane: {task}"
            all_rows = [rows_of[(c.label, task)] for c in columns if not rows_of[(c.label, task)].empty]
            joined = pd.concat(all_rows, ignore_index=True) if all_rows else pd.DataFrame(columns=["case", "tp", "fn"])
            if task == "lesion" and not joined.empty:
                joined = joined[lesion_bearing(joined)]  # a lesion-free patient has no lesion Dice row
            cases = sorted(set(joined["case"]))
            for key, row in VERDICT_ROWS[task]:
                for col in columns:
                    runs, rows = runs_of[(col.label, task)], rows_of[(col.label, task)]
                    stats = _verdict_stats(results, runs, rows, task, key, split)
                    if key == "assd" and stats.status == "missing" and not runs.empty:
                        t.note(f"{col.label} liver ASSD: {surface_command(col, plane, scope, runs)}")
                    t.cell(group, row, col.label, "", key, split, stats)
                if key not in PATIENT_ROWS:
                    continue
                for case in cases:
                    for col in columns:
                        rows = rows_of[(col.label, task)]
                        rows = rows[rows["case"] == case]
                        if task == "lesion" and not rows.empty:
                            rows = rows[lesion_bearing(rows)]
                        stats = case_mean_stats(rows, key)
                        if key == "assd" and stats.status != "ok":
                            stats = CellStats()
                        t.cell(group, f"{PATIENT_ROWS[key]}, patient {case}", col.label, "", key, split, stats)
    priors = list(dict.fromkeys(c.label for p in planes for c in verdict_columns(results, scope, p) if _no_liver_run(c)))
    if priors:
        t.note(f"{', '.join(priors)}: liver cells '—' (ours' liver): a '+ liver prior' baseline has no liver run of its "
               f"own; it segments lesions inside ours' predicted liver, so its liver is ours' column")
    t.note("per patient = one 3-D test case, pooled over the cross-validation folds (each patient is tested in one "
           "fold); a lesion Dice is averaged over lesion-bearing patients only (reference lesion voxels: tp + fn > 0); "
           "a lesion-free patient scores false-positive voxels (fp) and lesions (fp_lesions) instead; lesion-wise "
           "recall is pooled from the counts n_detected / n_ref_lesions summed over the patients, then averaged over "
           "seeds (bench/metrics/lesions.py)")
    for task in ("liver", "lesion"):
        mine = {label: pd.concat(parts, ignore_index=True) for (t_, label), parts in frames.items() if t_ == task}
        for line in budget_notes(mine):
            t.note(f"{task}: {line}")
    by_label: dict[str, list[pd.DataFrame]] = {}
    for (_, label), parts in frames.items():
        by_label.setdefault(label, []).extend(parts)
    joined_runs = {label: pd.concat(parts, ignore_index=True) for label, parts in by_label.items()}
    models = model_provenance(joined_runs)
    result = t.finish(task=["liver", "lesion"], planes=planes, split="test", models=models,
                      budget=budget_provenance(joined_runs), postprocessing=postprocess_provenance(joined_runs),
                      aggregation="mean over test patients (3-D cases), pooled over folds; recall pooled from counts",
                      selection="as Tables 7/8 (ablation fields at profile defaults); 'as published': the norm "
                                "ablation's model.norm=batch run; '+ liver prior': model.liver_prior fixed")
    # each column labelled with its normalisation and parameter count (as the norm table's Parameters row)
    result.frame["col"] = [f"({models[g]})" if g in models else "" for g in result.frame["col_group"]]
    return result


def _verdict_stats(results: Results, runs: pd.DataFrame, rows: pd.DataFrame, task: str, key: str,
                   split: str) -> CellStats:
    """One verdict cell over the runs (seeds) of a column (`VERDICT_ROWS`)."""
    if task == "liver":
        if key == "dice":
            return metric_stats(results, runs, split, "dice", "mean")
        stats = case_mean_stats(rows, key)  # ASSD: NaN in every row = not evaluated with --surface
        return stats if stats.status == "ok" else CellStats()
    if rows.empty or "tp" not in rows.columns:
        return CellStats()
    bearing = lesion_bearing(rows)
    if key == "dice":
        return case_mean_stats(rows[bearing], "dice") if bearing.any() else _empty_stats(rows)
    if key.startswith("count_"):
        return lesion_patient_stats(rows, key)
    return detection_stats(results, runs, split, key)


def _empty_stats(rows: pd.DataFrame) -> CellStats:
    """Runs scored, but no patient of the kind the row averages over: NaN, not missing."""
    return CellStats(n_seeds=int(rows["run_id"].nunique()), n_cases=0.0, n_excluded=0.0, status="nan",
                     runs=tuple(sorted(set(rows["run_id"]))))
