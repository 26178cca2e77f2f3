"""The training golden layer: its study (a small ``bench demo``) run on CPU, its tables, its default tolerances.

The study's results move with anything that changes float summation order (kernel set, thread
count) and with the seed, so this layer is compared within tolerances a calibration measured
(`bench.golden.calibrate`, `bench.golden.spread`), recorded with their reasons in its manifest.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from bench.errors import BenchError, DataError
from bench.golden.manifest import report_options
from bench.reports.collect import load_results
from bench.reports.tables import TableResult, build_tables

# --workers is fixed: the thread count per run changes float summation order
DEFAULT_COMMAND = ('bench demo --profile golden --models unet,ours --planes axial --tasks liver --ablations "" '
                   '--budget epochs --workers 2 --no-report --results {results}')

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



def _bench_executable() -> str:
    """The ``bench`` script beside this interpreter (a venv not on PATH), else the one on PATH."""
    local = Path(sys.executable).parent / "bench"
    if local.is_file():
        return str(local)
    return shutil.which("bench") or "bench"


def run_golden_command(command: str, results_dir: str | os.PathLike, timeout: float | None = None,
                       env: Mapping[str, str | None] | None = None, log: str | os.PathLike | None = None) -> str:
    """Run the manifest's command with ``{results}`` replaced, on CPU; returns the command as run.

    ``env`` sets (a string) or removes (None) environment variables for this run only (a calibration's
    kernel set and thread count); ``log`` sends the command's output to that file instead of the terminal.
    """
    text = command.replace("{results}", shlex.quote(str(results_dir)))
    argv = shlex.split(text)
    if not argv:
        raise DataError("golden manifest command is empty")
    if argv[0] == "bench":
        argv[0] = _bench_executable()
    run_env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # the golden run is a CPU run on every machine
    for name, value in (env or {}).items():
        if value is None:
            run_env.pop(name, None)
        else:
            run_env[name] = value
    try:
        if log is None:
            proc = subprocess.run(argv, env=run_env, timeout=timeout)
        else:
            with open(log, "w") as out:
                proc = subprocess.run(argv, env=run_env, timeout=timeout, stdout=out, stderr=subprocess.STDOUT)
    except FileNotFoundError:
        raise BenchError(f"golden command not found: {argv[0]} (from {text!r})") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"golden command timed out after {timeout} s: {text}") from None
    if proc.returncode != 0:
        where = f" (output in {log})" if log is not None else ""
        raise BenchError(f"golden command failed with exit status {proc.returncode}: {text}{where}")
    return text


def train_tables(manifest: Mapping[str, Any] | None, results: str | None, work: Path, numbers: Sequence[int],
                 options: Mapping[str, Any], say: Callable[[str], None]) -> tuple[list[TableResult], str, str]:
    """(tables, where they came from, the study command) of a training layer: its study run into ``work``
    (or the results in ``results``), then the tables."""
    command = manifest["command"] if manifest else DEFAULT_COMMAND
    if results is not None:
        root, source = Path(results), f"tables built from --results {results}"
    else:
        root = work / "results"
        say(f"golden: running {command.replace('{results}', str(root))}")
        source = f"ran: {run_golden_command(command, root)}"
    tables = build_tables(load_results(root), list(numbers), report_options(options), with_paired=False)
    return tables, source, command
