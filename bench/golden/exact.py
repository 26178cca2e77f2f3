"""The exact golden layer: committed inputs -> the real evaluation and report code -> tables, no training.

Its inputs (`bench.golden.inputs`: label volumes and float16 probability volumes) become a results
tree through the code real runs use: `bench.engine.evaluate.score_case_variants` (threshold > 0.5,
the run config's post-processing, counts, scores, surface metrics), `bench.engine.infer.fuse_soft`
(soft voting), the evaluation writer (per_case/metrics/summary, the reductions and the NaN rule) and
`bench.engine.records.run_record` (config.json). The report code then collects it
(`bench.reports.collect.load_results`) and builds Tables 3-8, the paired comparison and the
per-case/per-run frames (`result_frames`). Nothing here computes a metric, a reduction, a fusion or
a post-processing step itself, so a change in any of them reaches the tables. Identical on any
CPU: compared exactly (counts) or to 1e-9 (`EXACT_TOLERANCES`, a constant of this code: the
layer's manifest cannot loosen it).

This layer sits above the engine and the reports (it uses both), which never import each other.
Standalone, to look at the exact layer's results tree::

    python -m bench.golden.exact --inputs results/golden/exact/inputs --results /tmp/golden-exact
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bench.atomic import write_json
from bench.config import PLANES, RunConfig, get_profile, override
from bench.datasets.base import task_mask
from bench.engine.evaluate import score_case_variants, write_scores
from bench.engine.infer import fuse_soft
from bench.engine.records import run_fingerprint, run_record
from bench.errors import BenchError
from bench.golden.inputs import GENERATOR, GoldenInputs, RunSpec, read_inputs
from bench.golden.manifest import EXACT_BUILDER, EXACT_COMMAND, EXACT_NAMES, EXACT_TOLERANCES, KEY_COLUMNS, report_options
from bench.models import get_model_spec
from bench.paths import run_dir
from bench.reports.collect import CONFIG_COLUMNS, load_results
from bench.reports.tables import TableResult, build_tables

SCORED_SPLITS = ("val", "test")  # what `bench evaluate` scores; train patients are never scored



# run-level columns of the ``runs`` frame: what each run is and what it spent (paths and fingerprints left out:
# they differ between machines or change with any new config default)
RUN_FRAME_COLUMNS = ("model", "task", "plane", "tag", "seed", "profile", "patch_levels", "multilevel_loss",
                     "reiter_stop", "max_reiterations", "patch_mode", "patch_scale", "patch_share", "reiter_lr_scale",
                     "liver_prior", "postprocess", "empty_reference", "budget_rule", "budget_steps", "budget_epochs",
                     "budget_seconds", "budget_stages", "budget_matched_to", "budget_reference", "has_metrics", "has_per_case",
                     "has_reiteration")


def result_frames(results: Any) -> list[TableResult]:
    """The collected per-case rows, per-run metrics and runs as tidy keyed frames (exact-layer golden files).

    ``cases``: one row per (run, case, split, class) with TP/FP/FN/TN and every per-case score;
    ``metrics``: one row per (run, split, aggregation, metric) with value, n_cases, n_excluded; ``runs``:
    one row per run with its ablated fields, post-processing and training budget (`RUN_FRAME_COLUMNS`).
    They pin what the tables do not show (foreground IoU, surface metrics, the global reduction, each
    case's counts, the budgets behind the tables' provenance).
    """
    out = []
    run_cols = [c for c in CONFIG_COLUMNS if c != "run_id"]
    for name, frame, keys in (("cases", results.per_case, ("run_id", "case", "split", "class")),
                              ("metrics", results.metrics, ("run_id", "split", "aggregation", "metric"))):
        f = frame.drop(columns=[c for c in run_cols if c in frame.columns] + (["class"] if name == "metrics" else []))
        if "variant" in f.columns:  # post-processed and raw scores of one run are separate rows
            f = f.assign(run_id=f["run_id"] + " [" + f["variant"] + "]").drop(columns=["variant"])
        f = f.rename(columns=dict(zip(keys, KEY_COLUMNS)))
        rest = [c for c in f.columns if c not in KEY_COLUMNS]
        f = f[list(KEY_COLUMNS) + rest].sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)
        f.insert(0, "table", name)
        title = "per-case counts and scores of every run" if name == "cases" else "metrics.csv of every run"
        out.append(TableResult(name, title, f, {"table": title, "source": "bench.reports.collect.load_results"}))
    runs = results.runs
    rest = [c for c in RUN_FRAME_COLUMNS if c in runs.columns]
    f = runs[["run_id"] + rest].rename(columns={"run_id": "group"}).assign(row="", col_group="", col="")
    f = f[list(KEY_COLUMNS) + rest]
    f = f.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)
    f.insert(0, "table", "runs")
    title = "every run: ablated fields, post-processing, training budget"
    out.append(TableResult("runs", title, f, {"table": title, "source": "bench.reports.collect.load_results"}))
    return out



# ---------------------------------------------------------------- the exact layer's results tree


def _run_config(inputs: GoldenInputs, run: RunSpec, plane: str, results_root: Path, device: str) -> RunConfig:
    """The RunConfig a real run of this spec would save (profile and data set named by the inputs)."""
    cfg = RunConfig(model=run.model, plane=plane, task=run.task, dataset=str(inputs.index["dataset"]),
                    seed=run.seed, device=device, results=str(results_root), cache="",
                    splits=str(inputs.root / "splits_final.json"), tag="" if run.tag == run.model else run.tag,
                    profile=get_profile(str(inputs.index["profile"])))
    return override(cfg, dict(run.overrides))


def _write_run(cfg: RunConfig, rows: dict[str, list[dict[str, Any]]], device: torch.device, **record: Any) -> Path:
    """per_case/metrics/summary with and without post-processing (the one writer) and a complete config.json."""
    folder = run_dir(cfg)
    write_scores(folder, rows, SCORED_SPLITS, True, cfg)
    write_json(folder / "config.json", run_record(cfg, device, fingerprint=run_fingerprint(cfg), status="complete",
                                                  **record))
    return folder


def build_exact_results(inputs_dir: str | Path, results_root: str | Path, device: str = "cpu") -> list[Path]:
    """Turn the exact layer's inputs into a results tree shaped like real runs; returns the run folders.

    Each run spec of the inputs becomes one folder per plane (val and test patients scored, surface
    metrics included: the inputs carry anisotropic spacings), plus a fused folder when the run has
    all three planes (soft voting, scored with the axial run's config, as `bench evaluate --plane fused`).
    """
    inputs = read_inputs(inputs_dir)
    root = Path(results_root)
    dev = torch.device(device)
    cases = [(split, case) for split in SCORED_SPLITS for case in inputs.splits[split]]
    arrays = {case: inputs.case(case) for _, case in cases}
    folders: list[Path] = []
    for run in inputs.runs:
        get_model_spec(run.model)  # an unknown model is a clear error, as in a real run
        cfgs = {plane: _run_config(inputs, run, plane, root, device) for plane in run.planes}
        for plane, cfg in cfgs.items():
            rows: dict[str, list[dict[str, Any]]] = {"post": [], "raw": []}
            for split, case in cases:
                a = arrays[case]
                scores = score_case_variants(inputs.volume(a, case, run, plane), task_mask(a["label"], cfg.task), cfg,
                                             dev, tuple(float(v) for v in a["spacing"]), surface=True)
                for variant, row in scores.items():
                    rows[variant].append({"split": split, "case": case, "class": cfg.task, **row})
            folder = _write_run(cfg, rows, dev, golden_inputs=str(inputs.root),
                                splits={k: len(v) for k, v in inputs.splits.items()},
                                **({"budget": dict(run.budget)} if run.budget else {}))
            if run.reiteration:
                shutil.copyfile(inputs.root / run.reiteration, folder / "reiteration.csv")
            folders.append(folder)
        if set(PLANES) <= set(cfgs):
            base = cfgs["axial"]
            rows = {"post": [], "raw": []}
            for split, case in cases:
                a = arrays[case]
                probs = fuse_soft([inputs.volume(a, case, run, p) for p in PLANES])
                scores = score_case_variants(probs, task_mask(a["label"], base.task), base, dev,
                                             tuple(float(v) for v in a["spacing"]), surface=True)
                for variant, row in scores.items():
                    rows[variant].append({"split": split, "case": case, "class": base.task, **row})
            fused = replace(base, plane="fused")
            folders.append(_write_run(fused, rows, dev, sources=[str(run_dir(c)) for c in cfgs.values()],
                                      fusion="soft voting (Eq. 8)", golden_inputs=str(inputs.root)))
    return folders


# ---------------------------------------------------------------- one layer: build, compare or update


def exact_tables(folder: Path, results: str | None, work: Path) -> tuple[list[TableResult], str, dict[str, Any]]:
    """(tables, where they came from, report options) of the exact layer in ``folder``: built from its inputs
    into ``work`` (or read from ``results``), then Tables 3-8 with their companions and the frames."""
    inputs_dir = folder / "inputs"
    index = read_inputs(inputs_dir).index
    options = {"aggregation": "mean", "dataset": index["dataset"], "profile": index["profile"]}
    if results is not None:
        root, source = Path(results), f"tables built from --results {results}"
    else:
        root = work / "results"
        build_exact_results(inputs_dir, root)
        source = f"built in-process: {EXACT_COMMAND.format(inputs=inputs_dir, results='<temporary folder>')}"
    res = load_results(root)
    numbers = [int(n) for n in EXACT_NAMES if n.isdigit()]
    tables = build_tables(res, numbers, report_options(options), with_paired=True) + result_frames(res)
    return tables, source, options


def exact_manifest(folder: Path) -> dict[str, Any]:
    """The manifest keys that say how the exact layer in ``folder`` is built (written before the common ones)."""
    index = read_inputs(folder / "inputs").index
    return {
        "layer": "exact",
        "builder": EXACT_BUILDER,
        "inputs": {"folder": "inputs", "generator": index.get("generator", GENERATOR), "seed": index.get("seed"),
                   "cases": index.get("cases"), "edge_cases": index.get("edge_cases")},
        "update": f"bench check {folder.as_posix()} --update-golden  (make golden LAYER=exact)",
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.golden.exact --inputs DIR --results DIR``: write the exact layer's results tree."""
    parser = argparse.ArgumentParser(prog="python -m bench.golden.exact", description=main.__doc__)
    parser.add_argument("--inputs", required=True, help="the exact layer's inputs folder")
    parser.add_argument("--results", required=True, help="results folder to write (bench check --results reads it)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        folders = build_exact_results(args.inputs, args.results, args.device)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"golden exact: {len(folders)} run folders -> {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
