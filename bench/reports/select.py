"""Which runs feed a table cell: selection by saved config values, seed grouping, and the scope.

One rule serves every table and figure, so a cell in Table 7 and the box plot beside it always
come from the same runs: filter by (data set, profile, model, task, plane), require every
ablated cascade field not named by the cell to be at its profile default, then keep one
*experiment* (runs equal in everything but the seed and paths: config, tag, data root and split;
`bench.reports.collect.replicate_identity`). Several experiments can survive
(e.g. a re-tagged run with another learning rate); the one holding the default-tagged run wins,
else the largest, and a note says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import ConfigError
from bench.reports.collect import ABLATED_FIELDS, Results, ablation_defaults

AGGREGATIONS = ("mean", "global")
SCORE_VARIANTS = ("post", "raw")
SCORE_TEXT = {
    "post": "after post-processing (largest 3-D component for the liver, components of at least min_voxels "
            "for lesions; the same rule for every model)",
    "raw": "without post-processing (the thresholded probabilities as predicted)",
}
ANY = object()  # a fixed ablation value that matches anything (e.g. max_reiterations for Table 5)


@dataclass(frozen=True)
class ReportOptions:
    """How tables are built: aggregation over cases, which scores (post-processed or raw), and an
    optional (data set, profile) filter."""

    aggregation: str = "mean"
    dataset: str | None = None
    profile: str | None = None
    scores: str = "post"  # post: after the run's post-processing (one rule for every model) | raw

    def __post_init__(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"unknown aggregation {self.aggregation!r} (known: {', '.join(AGGREGATIONS)})")
        if self.scores not in SCORE_VARIANTS:
            raise ConfigError(f"unknown scores {self.scores!r} (known: {', '.join(SCORE_VARIANTS)})")


@dataclass(frozen=True)
class Scope:
    """The (data set, profile) a table reports, and why it was chosen."""

    dataset: str
    profile: str
    reason: str


def resolve_scope(results: Results, options: ReportOptions) -> Scope:
    """The filtered (data set, profile), or the pair with the most runs when a filter is left open."""
    runs = results.runs
    if options.dataset is not None:
        runs = runs[runs["dataset"] == options.dataset]
    if options.profile is not None:
        runs = runs[runs["profile"] == options.profile]
    if runs.empty:
        dataset = options.dataset or "phantom"
        profile = options.profile or "demo"
        return Scope(dataset, profile, "no matching runs; scope taken from the filters/defaults")
    counts = runs.groupby(["dataset", "profile"]).size().reset_index(name="n")
    counts = counts.sort_values(["n", "dataset", "profile"], ascending=[False, True, True])
    top = counts.iloc[0]
    reason = "given by --dataset/--profile"
    if options.dataset is None or options.profile is None:
        reason = f"the (data set, profile) with the most runs ({int(top['n'])})"
        others = [f"{r.dataset}/{r.profile} ({r.n})" for r in counts.iloc[1:].itertuples()]
        if others:
            reason += f"; also present: {', '.join(others)} (choose with --dataset/--profile)"
    return Scope(str(top["dataset"]), str(top["profile"]), reason)


def select_runs(
    results: Results,
    *,
    dataset: str,
    profile: str,
    model: str,
    task: str,
    plane: str,
    fixed: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """The runs of one experiment for a cell (one row per seed), and notes on the choice."""
    fixed = dict(fixed or {})
    runs = results.runs
    sel = runs[
        (runs["dataset"] == dataset)
        & (runs["profile"] == profile)
        & (runs["model"] == model)
        & (runs["task"] == task)
        & (runs["plane"] == plane)
    ]
    if sel.empty:
        return sel, []
    defaults = ablation_defaults(profile)
    for name in ABLATED_FIELDS:
        want = fixed.get(name, defaults[name])
        if want is ANY:
            continue
        sel = sel[sel[name] == want]
    if sel.empty:
        return sel, []
    groups = sel.groupby("config_key", sort=True)
    if groups.ngroups == 1:
        return sel, []

    def rank(item: tuple[str, pd.DataFrame]) -> tuple[int, int, str]:
        key, frame = item
        return (int(not (frame["tag"] == model).any()), -len(frame), key)

    ranked = sorted(groups, key=rank)
    key, chosen = ranked[0]
    dropped = sorted(set(sel["run_id"]) - set(chosen["run_id"]))
    why = ("it holds the default-tagged run, the one `bench train`/`bench demo` write" if (chosen["tag"] == model).any()
           else "none holds the default-tagged run; it has the most seeds")
    note = (
        f"{model}/{task}/{plane}: {groups.ngroups} differently configured experiments match; "
        f"used {', '.join(sorted(chosen['run_id']))} ({why}), not {', '.join(dropped)}"
        f"{_differences(chosen, [frame for _, frame in ranked[1:]])}"
    )
    return chosen, [note]


# collected config columns that tell experiments apart (the rest: identity, paths, the fingerprint)
_SHOWN_DIFFERENCES = ("tag_base", "data_root", "split_key", "budget_rule", "postprocess", "input_size",
                      "patch_levels", "multilevel_loss", "reiter_stop", "max_reiterations", "patch_mode",
                      "patch_scale", "patch_share", "reiter_lr_scale", "liver_prior", "norm", "width",
                      "encoder_depth")


def _differences(chosen: pd.DataFrame, others: list[pd.DataFrame]) -> str:
    """"; they differ in train.budget (epochs vs matched): ..." for the selection note."""
    diffs = []
    for col in _SHOWN_DIFFERENCES:
        if col not in chosen.columns:
            continue
        mine = sorted({str(v) for v in chosen[col]})
        theirs = sorted({str(v) for f in others for v in f[col]} - set(mine))
        if theirs:
            diffs.append(f"{col} ({'/'.join(mine)} vs {'/'.join(theirs)})")
    if not diffs:
        return "; they differ in config values the tables do not show (compare their config.json)"
    text = "; they differ in " + ", ".join(diffs)
    if any(d.startswith("budget_rule") for d in diffs):
        text += (": a matched-budget run and an epochs-budget run are different experiments (train.budget is part "
                 "of the experiment), never averaged as seeds")
    return text


@dataclass
class CellStats:
    """A cell's value over seeds: mean, sd (NaN for one seed), counts and status ok|nan|missing."""

    ours: float = math.nan
    sd: float = math.nan
    n_seeds: int = 0
    n_cases: float = math.nan
    n_excluded: float = math.nan
    status: str = "missing"
    runs: tuple[str, ...] = ()


def seed_stats(values: pd.Series, run_ids: list[str] | tuple[str, ...] = ()) -> CellStats:
    """Mean and sd over seeds of per-run values; all-NaN -> status ``nan``; empty -> ``missing``."""
    vals = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    if vals.size == 0:
        return CellStats(runs=tuple(run_ids))
    finite = vals[np.isfinite(vals)]
    if finite.size == 0:
        return CellStats(n_seeds=int(vals.size), status="nan", runs=tuple(run_ids))
    sd = float(np.std(finite, ddof=1)) if finite.size > 1 else math.nan
    # n_seeds counts the seeds behind the number: a seed whose cases were all excluded adds nothing
    return CellStats(ours=float(np.mean(finite)), sd=sd, n_seeds=int(finite.size), status="ok", runs=tuple(run_ids))


def metric_stats(results: Results, runs: pd.DataFrame, split: str, metric: str, aggregation: str) -> CellStats:
    """The cell statistic of ``metric`` on ``split`` over the given runs (one value per run = seed)."""
    if runs.empty:
        return CellStats()
    m = results.metrics
    rows = m[
        m["run_id"].isin(runs["run_id"])
        & (m["split"] == split)
        & (m["aggregation"] == aggregation)
        & (m["metric"] == metric)
    ]
    if rows.empty:
        return CellStats()
    rows = rows.drop_duplicates("run_id", keep="last")
    stats = seed_stats(rows["value"], tuple(sorted(rows["run_id"])))
    stats.n_cases = float(rows["n_cases"].max())
    stats.n_excluded = float(rows["n_excluded"].max())
    return stats
