"""Tables 3-8 (and the paired per-case comparison) as pure functions of the collected results.

Each builder takes a `Results` bundle (tidy frames from `collect.load_results`) and
`ReportOptions`, and returns a `TableResult`: a tidy frame with one row per table cell
(ours, sd over seeds, the paper's number, the difference, counts, status), its provenance and
notes. Builders read files of no kind and write nothing, so they are tested on fixture frames;
`bench.reports.writers` renders a `TableResult` as Markdown, CSV or LaTeX in the paper's layout.

A cell is ``ok`` (a number), ``nan`` (runs exist but every case was excluded) or ``missing``
(no run yet); a missing cell never raises, it adds the command that would produce it to the notes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from bench.errors import ConfigError
from bench.registry import Registry
from bench.reports import paper
from bench.reports.collect import Results, ablation_defaults
from bench.reports.select import ANY, CellStats, ReportOptions, Scope, metric_stats, resolve_scope, seed_stats, select_runs

CELL_COLUMNS = (
    "table", "group", "row", "col_group", "col", "metric", "split", "ours", "sd", "n_seeds", "paper", "diff",
    "ci_low", "ci_high", "n_cases", "n_excluded", "status", "runs",
)
METRIC_LABELS = {"accuracy": "Accuracy", "dice": "Dice", "miou": "mIoU"}
MODEL_LABELS = {"segnet": "SegNet", "unet": "U-Net", "deeplabv3": "DeepLabV3", "ours": "Ours"}
BASELINES = ("segnet", "unet", "deeplabv3")
SPLIT_LABELS = {"val": "Val", "test": "Test"}
PLANE_ROWS = ("axial", "coronal", "sagittal", "fused")
DATASET_LABELS = {"lits": "LiTS", "ircadb": "3D IRCADB"}
POLICY = (
    "Accuracy, Dice, mIoU (mean of background and foreground IoU, Eq. 12) per 3-D case; a case with an "
    "empty reference and an empty prediction has Dice/IoU/mIoU = NaN, is excluded from means and counted "
    "(n_excluded); 'mean' = mean over cases, 'global' = from summed TP/FP/FN/TN"
)
TABLE_NUMBERS = (3, 4, 5, 6, 7, 8)
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


def parse_table_spec(spec: str) -> list[int]:
    """``"3-8"`` -> [3..8], ``"3,5,7"`` -> [3, 5, 7], ``"7"`` -> [7]; anything else is a ConfigError."""
    out: set[int] = set()
    known = f"{TABLE_NUMBERS[0]}-{TABLE_NUMBERS[-1]}"
    parts = [p.strip() for p in str(spec).split(",")]
    if not parts or any(not p for p in parts):
        raise ConfigError(f"--tables {spec!r}: expected e.g. 3-8, 3,5,7 or 7")
    for part in parts:
        m = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", part)
        if not m:
            raise ConfigError(f"--tables {spec!r}: {part!r} is not a table number or range (tables {known})")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if hi < lo:
            raise ConfigError(f"--tables {spec!r}: range {part!r} runs backwards")
        for n in range(lo, hi + 1):
            if n not in TABLE_NUMBERS:
                raise ConfigError(f"--tables {spec!r}: the paper's tables are {known}, not {n}")
            out.add(n)
    return sorted(out)


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
             ci_high: float = math.nan) -> None:
        diff = stats.ours - paper_value if stats.status == "ok" and not math.isnan(paper_value) else math.nan
        rec = dict(
            table=self.name, group=group, row=row, col_group=col_group, col=col, metric=metric, split=split,
            ours=stats.ours, sd=stats.sd, n_seeds=stats.n_seeds, paper=paper_value, diff=diff,
            ci_low=ci_low, ci_high=ci_high, n_cases=stats.n_cases, n_excluded=stats.n_excluded,
            status=stats.status, runs=" ".join(stats.runs),
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
            policy=POLICY,
        )
        if not used.empty and "input_size" in used:
            prov.setdefault("input_size", sorted({int(v) for v in used["input_size"]}))
        n_missing = int((frame["status"] == "missing").sum())
        n_nan = int((frame["status"] == "nan").sum())
        if n_missing:
            self.note(f"{n_missing} cell(s) marked '—' have no run yet; the commands above produce them")
        if n_nan:
            self.note(f"{n_nan} cell(s) are NaN: every case of that split was excluded (empty reference and prediction)")
        return TableResult(self.name, self.title, frame, prov, list(self.notes), self.row_header)


def _flags(dataset: str, profile: str) -> str:
    root = "" if dataset == "phantom" else " --root PATH"
    return f" --dataset {dataset}{root} --profile {profile}"


def train_command(model: str, task: str, plane: str, dataset: str, profile: str) -> str:
    """The command that produces a missing default run (fused: evaluate after the three planes)."""
    task_flag = f" --task {task}" if task != "liver" else ""
    if plane == "fused":
        return f"bench evaluate {model} --plane fused{task_flag}{_flags(dataset, profile)}"
    return f"bench train {model} --plane {plane}{task_flag}{_flags(dataset, profile)}"


def ablate_command(study: str, dataset: str, profile: str) -> str:
    return f"bench ablate {study}{_flags(dataset, profile)}"


# ---------------------------------------------------------------- Tables 3 and 4 (ablations)


def _ablation_table(results: Results, options: ReportOptions, *, number: int, title: str, field_name: str,
                    values: list[Any], labels: list[str], col_group: str, study: str) -> TableResult:
    scope = resolve_scope(results, options)
    t = _Table(f"table{number}", title, scope, options)
    defaults = ablation_defaults(scope.profile)
    for metric in paper.METRICS:
        row = ("Average " if metric == "accuracy" else "") + METRIC_LABELS[metric]
        for value, label in zip(values, labels):
            runs, notes = select_runs(results, dataset=scope.dataset, profile=scope.profile, model="ours",
                                      task="liver", plane="axial", fixed={field_name: value})
            for n in notes:
                t.note(n)
            t.use(runs)
            stats = metric_stats(results, runs, "val", metric, options.aggregation)
            if stats.status == "missing":
                if value == defaults[field_name]:
                    t.note(f"{label}: {train_command('ours', 'liver', 'axial', scope.dataset, scope.profile)}")
                else:
                    t.note(f"{label}: {ablate_command(study, scope.dataset, scope.profile)}")
            t.cell("", row, col_group, label, metric, "val", stats, paper.lookup(number, (metric, value)))
    return t.finish(task="liver", planes=["axial"], split="val", model="ours",
                    selection=f"ours, liver, axial, by cascade.{field_name}; other ablated fields at profile defaults")


@TABLES.register("3", help="Table 3: impact of the patch level (ours, liver, axial, Val)")
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
def table4(results: Results, options: ReportOptions) -> TableResult:
    """Table 4: single loss on the final output vs the weighted multi-level loss (Eq. 4-6)."""
    return _ablation_table(results, options, number=4, field_name="multilevel_loss", values=[False, True],
                           labels=["Without", "With"], col_group="Custom Loss Function", study="loss",
                           title="Table 4. Effects of multi-level custom loss function (Axial plane)")


# ---------------------------------------------------------------- Table 5 (reiterations)


@TABLES.register("5", help="Table 5: metrics per reiteration N (ours, liver, axial, Val/Test)")
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
                if data is None or data.empty:
                    stats = CellStats()
                else:
                    rows = data[(data["iteration"] == n_iter) & (data["split"] == split)]
                    rows = rows.drop_duplicates("run_id", keep="last")
                    stats = seed_stats(rows[metric], tuple(sorted(rows["run_id"])))
                t.cell("", f"N = {n_iter}", METRIC_LABELS[metric], SPLIT_LABELS[split], metric, split, stats,
                       paper.lookup(5, (n_iter, metric, split)))
    return t.finish(task="liver", planes=["axial"], model="ours", aggregation="mean (reiteration.csv)",
                    selection="ours, liver, axial, cascade.reiter_stop = none (else the default run)")


def reiteration_runs(results: Results, scope: Scope) -> tuple[pd.DataFrame, list[str]]:
    """Runs whose reiteration.csv feeds Table 5 / Fig. 16: the iterations ablation, else the default run."""
    common = dict(dataset=scope.dataset, profile=scope.profile, model="ours", task="liver", plane="axial")
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
def table6(results: Results, options: ReportOptions) -> TableResult:
    """Table 6: ours on each data set present (the paper's two always listed), liver and lesion, Val."""
    scope = resolve_scope(results, options)
    t = _Table("table6", "Table 6. Performance comparison on data sets (ours, axial, Val)", None, options,
               row_header="Dataset")
    present = sorted(set(results.runs["dataset"])) if not results.runs.empty else []
    datasets = ["lits", "ircadb"] + [d for d in present if d not in ("lits", "ircadb")]
    profiles: dict[str, str] = {}
    for task in ("liver", "lesion"):
        for ds in datasets:
            profile = _profile_for(results, ds, options.profile, scope.profile)
            runs, notes = select_runs(results, dataset=ds, profile=profile, model="ours", task=task, plane="axial")
            for n in notes:
                t.note(n)
            t.use(runs)
            if not runs.empty:
                profiles[ds] = profile
            for metric, label in zip(paper.METRICS, ("Acc", "Dice", "mIoU")):
                stats = metric_stats(results, runs, "val", metric, options.aggregation)
                if stats.status == "missing":
                    t.note(f"{DATASET_LABELS.get(ds, ds)} {task}: {train_command('ours', task, 'axial', ds, profile)}")
                t.cell(task.capitalize(), DATASET_LABELS.get(ds, ds), "", label, metric, "val", stats,
                       paper.lookup(6, (task, ds, metric)))
    return t.finish(dataset=datasets, profile=profiles or scope.profile, task=["liver", "lesion"], planes=["axial"],
                    split="val", model="ours", selection="ours, axial, default ablation fields; one row per data set")


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


def _model_table(results: Results, options: ReportOptions, number: int, task: str, title: str) -> TableResult:
    scope = resolve_scope(results, options)
    t = _Table(f"table{number}", title, scope, options)
    for plane in PLANE_ROWS:
        group = f"{plane.capitalize()} Plane" if plane != "fused" else FUSED_GROUP
        for metric in paper.METRICS:
            for model in paper.MODELS:
                runs, notes = select_runs(results, dataset=scope.dataset, profile=scope.profile, model=model,
                                          task=task, plane=plane)
                for n in notes:
                    t.note(n)
                t.use(runs)
                for split in paper.SPLITS:
                    stats = metric_stats(results, runs, split, metric, options.aggregation)
                    if stats.status == "missing":
                        t.note(train_command(model, task, plane, scope.dataset, scope.profile))
                    t.cell(group, METRIC_LABELS[metric], MODEL_LABELS[model], SPLIT_LABELS[split], metric, split,
                           stats, paper.lookup(number, (plane, model, split, metric)))
    t.note("the fused rows (soft voting of the three planes, Eq. 8) have no counterpart in the paper")
    externals = _external_cells(t, results, options, task)
    extra = {"external": externals} if externals else {}
    return t.finish(task=task, planes=list(PLANE_ROWS), split=["val", "test"],
                    selection="model x plane, ablation fields at profile defaults", **extra)


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


@TABLES.register("7", help="Table 7: liver, SegNet/U-Net/DeepLabV3/ours x planes + fused, Val/Test")
def table7(results: Results, options: ReportOptions) -> TableResult:
    """Table 7: liver segmentation, four models, three planes and the fused volume, Val and Test."""
    return _model_table(results, options, 7, "liver", "Table 7. Liver segmentation: baselines and ours per plane")


@TABLES.register("8", help="Table 8: lesion, SegNet/U-Net/DeepLabV3/ours x planes + fused, Val/Test")
def table8(results: Results, options: ReportOptions) -> TableResult:
    """Table 8: lesion segmentation, four models, three planes and the fused volume, Val and Test."""
    return _model_table(results, options, 8, "lesion", "Table 8. Lesion segmentation: baselines and ours per plane")


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
def paired(results: Results, options: ReportOptions) -> TableResult:
    """Ours vs each baseline on the same data set/task/plane/split: mean per-case Dice difference, 95% CI."""
    scope = resolve_scope(results, options)
    t = _Table("paired", "Paired per-case comparison: Dice(ours) − Dice(baseline)", scope, options,
               row_header="Comparison")
    skipped = 0
    for task in ("liver", "lesion"):
        for plane in PLANE_ROWS:
            ours_runs, notes = select_runs(results, dataset=scope.dataset, profile=scope.profile, model="ours",
                                           task=task, plane=plane)
            for n in notes:
                t.note(n)
            for baseline in BASELINES:
                base_runs, notes = select_runs(results, dataset=scope.dataset, profile=scope.profile,
                                               model=baseline, task=task, plane=plane)
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
                    stats, lo, hi = _paired_stats(a, b, ours_runs, base_runs)
                    t.cell(f"{task.capitalize()} {plane}", f"Ours − {MODEL_LABELS[baseline]}", "",
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
                    t.cell(f"{task.capitalize()} {plane}", f"Ours − {ext.label}", "", SPLIT_LABELS[split],
                           "dice_diff", split, stats, ci_low=lo, ci_high=hi)
    if skipped:
        t.note(f"{skipped} (task, plane, baseline, split) comparison(s) skipped: per_case.csv missing on one side")
    t.note(f"cases matched by id, per-case Dice averaged over seeds first; cases NaN on either side are excluded "
           f"(n_excluded); 95% percentile bootstrap over cases, {BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}; "
           f"sd = sd of the per-case differences")
    extra = {"external": [e.provenance() for e in results.externals]} if results.externals else {}
    return t.finish(task=["liver", "lesion"], planes=list(PLANE_ROWS), split=["val", "test"], metric="dice",
                    selection="default runs of ours and of each baseline (as Tables 7/8); external folders "
                              "(bench report --external) against ours at every plane", **extra)


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


def build_tables(results: Results, numbers: list[int], options: ReportOptions,
                 with_paired: bool = True) -> list[TableResult]:
    """The requested tables in order, plus the paired comparison when Tables 7 or 8 are asked for."""
    from bench.reports.select import SCORE_TEXT

    results = results.variant(options.scores)
    out = [TABLES.get(str(n))(results, options) for n in numbers]
    if with_paired and any(n in (7, 8) for n in numbers):
        out.append(TABLES.get("paired")(results, options))
    for table in out:  # cross-validation: each fold's run and test numbers behind a pooled cell
        table.provenance["scores"] = SCORE_TEXT[options.scores]
        folds = {rid: results.folds[rid] for rid in table.provenance.get("runs", []) if rid in results.folds}
        if folds:
            table.provenance["folds"] = folds
    return out
