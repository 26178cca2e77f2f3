"""The training golden layer: its study (a small ``bench demo``) run on CPU, its tables, its default tolerances.

The study's results move with anything that changes float summation order (kernel set, thread
count) and with the seed, so this layer is compared within tolerances a calibration measured
(`bench.golden.calibrate`, `bench.golden.spread`), recorded with their reasons in its manifest.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from bench.errors import BenchError
from bench.golden.manifest import MANIFEST, report_options
from bench.golden.study import DEFAULT_STUDY, RESULTS, GoldenStudy, parse_study
from bench.reports.collect import load_results
from bench.reports.tables import TableResult, build_tables


_WHY_METRIC = (
    "uncalibrated default of a training layer written from one run (--update-golden on a folder without a "
    "calibration): a converged model's case Dice moves by ~0.01 when a different CPU, kernel set or thread "
    "count flips boundary pixels; 0.02 allows that while still catching a broken model, a swapped split or a "
    "lost case (each moves Dice by >= 0.05). `bench check DIR --calibrate` replaces it with a tolerance "
    "measured over seeds, kernel sets and thread counts"
)
DEFAULT_TOLERANCES: dict[str, dict[str, Any]] = {
    "ours": {"abs": 0.02, "why": _WHY_METRIC},
    "ours:accuracy": {"abs": 0.01, "why": "accuracy is dominated by the ~90% background voxels, so the same "
                      "boundary flips that move Dice by 0.02 move accuracy by well under 0.01"},
    "diff": {"abs": 0.02, "why": "ours - paper: the paper's value is a constant, so it moves exactly as 'ours'"},
    "diff:accuracy": {"abs": 0.01, "why": "ours - paper for accuracy: as 'ours:accuracy'"},
    "sd": {"abs": 0.02, "why": "sd over seeds is a difference of seed values, each within the 'ours' tolerance"},
    "paper": {"abs": 0.0, "why": "constants transcribed from the paper (bench/reports/paper.py): any change "
              "is an edit of the transcription and must be deliberate"},
    "n_cases": {"abs": 0, "why": "case counts follow from the seeded patient-level split: exact"},
    "n_excluded": {"abs": 0, "why": "cases with empty reference and empty prediction: a change means the "
                   "data, the split or the model's empty predictions changed"},
    "n_seeds": {"abs": 0, "why": "the number of runs behind a cell is fixed by the command: exact"},
}



def study_env(env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment for a study run: on CPU (every machine runs the golden study on CPU),
    with ``env``'s variables set (a string) or removed (None): a calibration's kernel set and thread count."""
    out = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    for name, value in (env or {}).items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def _run(argv: list[str], text: str, env: dict[str, str], timeout: float | None, log: str | os.PathLike | None) -> None:
    """Run ``argv`` (no shell), output to the terminal or ``log``; a failure is a one-line `BenchError`."""
    try:
        if log is None:
            proc = subprocess.run(argv, env=env, timeout=timeout)
        else:
            with open(log, "w") as out:
                proc = subprocess.run(argv, env=env, timeout=timeout, stdout=out, stderr=subprocess.STDOUT)
    except subprocess.TimeoutExpired:
        raise BenchError(f"golden study timed out after {timeout} s: {text}") from None
    if proc.returncode != 0:
        where = f" (output in {log})" if log is not None else ""
        raise BenchError(f"golden study failed with exit status {proc.returncode}: {text}{where}")


def run_study(study: GoldenStudy, results_dir: str | os.PathLike, timeout: float | None = None,
              env: Mapping[str, str | None] | None = None, log: str | os.PathLike | None = None) -> str:
    """Run the study (`GoldenStudy.argv`: this package's ``bench demo``, no shell) into ``results_dir``, on CPU;
    returns the command as run (for the record). ``env`` and ``log`` as in `study_env` and `_run`."""
    text = study.command().replace(RESULTS, shlex.quote(str(results_dir)))
    _run(study.argv(str(results_dir)), text, study_env(env), timeout, log)
    return text


def train_tables(folder: Path, manifest: Mapping[str, Any] | None, results: str | None, work: Path, numbers: Sequence[int],
                 options: Mapping[str, Any], say: Callable[[str], None]) -> tuple[list[TableResult], str, str]:
    """(tables, where they came from, the study command) of a training layer: its study run into ``work``
    (or the results in ``results``), then the tables. The manifest's command is parsed into its fields,
    never executed (`bench.golden.study`)."""
    study = parse_study(manifest["command"], f"{folder / MANIFEST}: field 'command'") if manifest else DEFAULT_STUDY
    if results is not None:
        root, source = Path(results), f"tables built from --results {results}"
    else:
        root = work / "results"
        say(f"golden: running {study.command().replace(RESULTS, str(root))}")
        source = f"ran: {run_study(study, root)}"
    tables = build_tables(load_results(root), list(numbers), report_options(options), with_paired=False)
    return tables, source, study.command()
