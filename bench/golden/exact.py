"""The golden regression's layers: build a layer's tables, compare them with its committed ones.

``results/golden/`` holds one folder per layer, each with its own ``manifest.json``:

* ``exact`` - committed inputs (`bench.reports.golden_inputs`: label volumes and float16
  probability volumes, no training) turned into a results tree by `build_exact_results` through
  the code real runs use: `bench.engine.evaluate.score_case` (threshold > 0.5, the run config's
  post-processing, counts, scores, surface metrics), `bench.engine.infer.fuse_soft` (soft voting),
  `bench.metrics.results.write_evaluation` (per_case/metrics/summary, the reductions and the NaN
  rule) and `bench.engine.records.run_record` (config.json). The report code then collects it
  (`bench.reports.collect.load_results`) and builds Tables 3-8, the paired comparison and the
  per-case/per-run frames (`bench.reports.golden.result_frames`). Nothing here computes a metric,
  a reduction, a fusion or a post-processing step itself, so a change in any of them reaches the
  tables. Identical on any CPU: compared exactly (counts) or to 1e-9.
* ``train`` - the manifest's command (a training study: U-Net and the cascade, liver, axial, at the
  ``golden`` profile) makes the results; its tolerances per column and the cells it does not
  compare come from a calibration (`bench.engine.golden_calibrate`, ``bench report --calibrate``)
  and are recorded, with their reasons and the measured spread, in its manifest.

`check_layer` serves ``bench report --check`` (compare, or rewrite with ``--update-golden``).
Standalone, to look at the exact layer's results tree::

    python -m bench.engine.golden --inputs results/golden/exact/inputs --results /tmp/golden-exact
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from bench.config import PLANES, RunConfig, get_profile, override
from bench.engine.evaluate import score_case_variants, write_scores
from bench.engine.infer import fuse_soft
from bench.errors import BenchError
from bench.paths import run_dir
from bench.reports.golden_inputs import GoldenInputs, RunSpec, read_inputs

EXACT_COMMAND = "python -m bench.engine.golden --inputs {inputs} --results {results}"
EXACT_BUILDER = "bench.engine.golden.build_exact_results (run in-process by bench report --check)"
SCORED_SPLITS = ("val", "test")  # what `bench evaluate` scores; train patients are never scored


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
    from bench.atomic import write_json
    from bench.engine.records import run_fingerprint, run_record

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
    from bench.datasets.base import task_mask
    from bench.models import get_model_spec

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


@dataclass
class LayerOutcome:
    """What checking (or updating) one layer found."""

    folder: Path
    layer: str  # exact | train
    n_cells: int
    names: list[str]
    source: str
    mismatches: list = field(default_factory=list)
    updated: list[Path] = field(default_factory=list)
    excluded: int = 0  # cells a calibration found unstable: present on both sides, values not compared

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _report_options(options: dict[str, Any]):
    from bench.reports.select import ReportOptions

    return ReportOptions(**options)


def _exact_tables(folder: Path, results: str | None, work: Path) -> tuple[list, str, dict[str, Any]]:
    from bench.reports.collect import load_results
    from bench.reports.golden import EXACT_NAMES, result_frames
    from bench.reports.tables import build_tables

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
    tables = build_tables(res, numbers, _report_options(options), with_paired=True) + result_frames(res)
    return tables, source, options


def _train_tables(folder: Path, manifest: dict[str, Any] | None, results: str | None, work: Path,
                  numbers: Sequence[int], options: dict[str, Any], say: Callable[[str], None]
                  ) -> tuple[list, str, str]:
    from bench.reports.collect import load_results
    from bench.reports.golden import DEFAULT_COMMAND, run_golden_command
    from bench.reports.tables import build_tables

    command = manifest["command"] if manifest else DEFAULT_COMMAND
    if results is not None:
        root, source = Path(results), f"tables built from --results {results}"
    else:
        root = work / "results"
        say(f"golden: running {command.replace('{results}', str(root))}")
        source = f"ran: {run_golden_command(command, root)}"
    return build_tables(load_results(root), list(numbers), _report_options(options), with_paired=False), source, command


def check_layer(folder: str | Path, results: str | None = None, update: bool = False,
                numbers: Sequence[int] = (3, 4, 5, 6, 7, 8), options: dict[str, Any] | None = None,
                say: Callable[[str], None] = print) -> LayerOutcome:
    """Build one layer's tables and compare them with its golden files (or rewrite them when ``update``).

    ``numbers``/``options`` only shape a training layer being (re)written without a calibration; a check,
    and the rewrite of a calibrated layer (its tolerances and excluded cells are about those tables),
    use the manifest's own tables and report options; the exact layer always builds its full set.
    """
    from bench.reports.golden import (EXACT_TOLERANCES, MANIFEST, compare_tables, layer_kind, read_manifest,
                                      write_golden)

    folder = Path(folder)
    has_manifest = (folder / MANIFEST).is_file()
    manifest = read_manifest(folder) if has_manifest or not update else None
    kind = layer_kind(manifest, folder)
    options = dict(options or {"aggregation": "mean", "dataset": None, "profile": None})
    if manifest and (not update or "calibration" in manifest):  # a calibrated layer keeps its shape
        options = dict(manifest.get("report_options", options))
        numbers = [int(n) for n in manifest["tables"] if str(n).isdigit()]
    with tempfile.TemporaryDirectory(prefix=f"bench-golden-{kind}-") as tmp:
        if kind == "exact":
            tables, source, options = _exact_tables(folder, results, Path(tmp))
            command, tolerances = EXACT_COMMAND, EXACT_TOLERANCES
        else:
            tables, source, command = _train_tables(folder, manifest, results, Path(tmp), numbers, options, say)
            tolerances = manifest["tolerances"] if manifest else None
    names = [t.name for t in tables]
    n_cells = sum(len(t.frame) for t in tables)
    if update:
        # a training layer keeps its calibration (tolerances, excluded cells) when only its tables are rewritten
        extra = _exact_manifest(folder) if kind == "exact" else {
            "layer": "train", **{k: manifest[k] for k in ("calibration", "excluded", "update") if manifest and k in manifest}}
        files = write_golden(folder, tables, command=command, report_options=options, source=source,
                             tolerances=tolerances, extra=extra)
        return LayerOutcome(folder, kind, n_cells, names, source, updated=files)
    return LayerOutcome(folder, kind, n_cells, names, source, mismatches=compare_tables(folder, tables),
                        excluded=len((manifest or {}).get("excluded") or []))


def _exact_manifest(folder: Path) -> dict[str, Any]:
    from bench.reports.golden_inputs import GENERATOR

    index = read_inputs(folder / "inputs").index
    return {
        "layer": "exact",
        "builder": EXACT_BUILDER,
        "inputs": {"folder": "inputs", "generator": index.get("generator", GENERATOR), "seed": index.get("seed"),
                   "cases": index.get("cases"), "edge_cases": index.get("edge_cases")},
        "update": f"bench report --check {folder.as_posix()} --update-golden  (make golden LAYER=exact)",
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.engine.golden --inputs DIR --results DIR``: write the exact layer's results tree."""
    parser = argparse.ArgumentParser(prog="python -m bench.engine.golden", description=main.__doc__)
    parser.add_argument("--inputs", required=True, help="the exact layer's inputs folder")
    parser.add_argument("--results", required=True, help="results folder to write (bench report --results reads it)")
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
