"""One call that turns a results folder into the report: tables (md/csv/tex), figures and index.md.

Used by ``bench report`` and at the end of ``bench demo``; index.md shows every table with its
provenance and notes, then every figure, so one file answers "what did this study find".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from bench.atomic import write_text
from bench.metrics.policy import TABLE_POLICY, table_policy
from bench.paths import PROGRESS
from bench.reports.collect import Results, load_results
from bench.reports.figures import write_figures
from bench.reports.select import SCORE_TEXT, ReportOptions, resolve_scope
from bench.reports.tables import TableResult, build_tables, parse_table_spec
from bench.reports.writers import FORMATS, to_markdown, write_table

FIGURE_CAPTIONS = {
    "fig16_reiterations.png": "Fig. 16: metrics per reiteration (ours, liver, axial), Val and Test; paper dashed",
    "fig17_liver.png": "Fig. 17: liver: CT slice, ground truth, localization ROI, tuned segmentation",
    "fig18_lesion.png": "Fig. 18: lesion: CT slice, ground truth, localization ROI, tuned segmentation",
    "dice_boxplot_liver.png": "Per-case test Dice per model and plane, liver",
    "dice_boxplot_lesion.png": "Per-case test Dice per model and plane, lesion",
}


@dataclass
class ReportOutput:
    """What a report run wrote, and the notes it printed into index.md."""

    out_dir: Path
    tables: list[TableResult]
    files: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def index(self) -> Path:
        return self.out_dir / "index.md"


def training_curves(results: Results, out_dir: Path) -> list[str]:
    """index.md's links to every run's training curves (``progress.png`` beside its history.csv)."""
    if results.runs.empty or "run_dir" not in results.runs.columns:
        return []
    links = []
    for run_id, run_dir in sorted(zip(results.runs["run_id"], results.runs["run_dir"])):
        figure = Path(run_dir) / PROGRESS
        if figure.is_file():
            links.append(f"- [`{run_id}`]({Path(os.path.relpath(figure, out_dir)).as_posix()})")
    if not links:
        return []
    return ["## Training curves", "", "Loss and validation Dice per epoch of every run (per stage for the cascade):",
            "", *links, ""]


def _policy_text(results: Results) -> str:
    """The policy paragraph under the runs' empty-reference rule (each table's provenance states its own)."""
    runs = results.runs
    rules = sorted(set(runs["empty_reference"].dropna())) if "empty_reference" in runs.columns else []
    if len(rules) > 1:
        return f"{TABLE_POLICY} (the runs use different empty-reference rules: {', '.join(rules)})"
    return table_policy(rules[0]) if rules else TABLE_POLICY


def index_markdown(results: Results, options: ReportOptions, tables: list[TableResult], figures: list[Path],
                   notes: list[str], out_dir: Path) -> str:
    """index.md: scope and policy, a contents list, every table (with provenance/notes), every figure."""
    scope = resolve_scope(results, options)
    lines = [
        "# liverbench report", "",
        f"- results: `{results.root}` ({len(results.runs)} complete runs)",
        f"- scope: data set `{scope.dataset}`, profile `{scope.profile}` — {scope.reason}",
        f"- aggregation: {options.aggregation} over cases",
        f"- scores: {SCORE_TEXT[options.scores]} (--scores; the post-processing table shows both)",
        f"- evaluation policy: {_policy_text(results)}", "",
        "## Contents", "",
    ]
    lines += [f"- {t.title} (`{t.name}.*`)" for t in tables]
    lines += [f"- {FIGURE_CAPTIONS.get(p.name, p.name)} (`{p.relative_to(out_dir).as_posix()}`)" for p in figures]
    lines.append("")
    for t in tables:
        lines += [to_markdown(t), ""]
    if figures:
        lines += ["## Figures", ""]
        for p in figures:
            caption = FIGURE_CAPTIONS.get(p.name, p.name)
            lines += [f"### {caption}", "", f"![{caption}]({p.relative_to(out_dir).as_posix()})", ""]
    lines += training_curves(results, out_dir)
    if notes:
        lines += ["## Collection and figure notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def write_report(results: Results, out_dir: str | os.PathLike, numbers: Sequence[int | str], formats: Sequence[str],
                 options: ReportOptions, figures: bool = True) -> ReportOutput:
    """Build the tables (and figures) from collected results and write them with index.md into ``out_dir``.

    ``numbers``: paper table numbers and table names (`parse_table_spec`); the companions of those
    asked for join them (`bench.reports.tables.table_names`): the paired and post-processing
    comparisons with Tables 7/8, the patch-mode/patch-scale ablations with Tables 3/5 when run.
    """
    out = Path(out_dir)
    tables = build_tables(results, list(numbers), options)
    report = ReportOutput(out, tables, notes=list(results.notes))
    for t in tables:
        report.files += write_table(t, out, list(formats))
    if figures:
        report.figures, fig_notes = write_figures(results.variant(options.scores), options, out / "figures")
        report.notes += fig_notes
    write_text(out / "index.md", index_markdown(results, options, tables, report.figures, report.notes, out))
    report.files += report.figures + [out / "index.md"]
    return report


def build_report(results: str | os.PathLike = "results", out: str | os.PathLike | None = None, tables: str = "3-8",
                 formats: Sequence[str] = FORMATS, options: ReportOptions | None = None,
                 figures: bool = True) -> Path:
    """Read ``results``, write the report into ``out`` (default ``<results>/report``); returns the folder."""
    out_dir = Path(out) if out is not None else Path(results) / "report"
    report = write_report(load_results(results), out_dir, parse_table_spec(tables), formats,
                          options or ReportOptions(), figures=figures)
    return report.out_dir
