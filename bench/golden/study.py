"""The training layer's study as data: a few validated fields, never a command line to execute.

A golden folder is data, so it must not be able to run anything (issue 20). Its manifest's
``command`` is therefore not executed: it is parsed, by a fixed grammar, into a `GoldenStudy`
(profile, models, planes, tasks, ablations, budget, workers, seeds: each a registered name or a
bounded integer), and the check then runs **this package's own entry point**,
``sys.executable -m bench demo`` with the argv `GoldenStudy.argv` builds, without a shell. The
text must be exactly what `GoldenStudy.command` renders from those fields, so the manifest shows
what runs; anything else (another program, a shell operator, an unknown or repeated flag, a
``--root`` that points the study at other data) is refused in one line naming the file and field.

The grammar (one order, every flag once; ``--seeds`` only where a calibration condition varies it)::

    bench demo --profile P --models M[,M] --planes PL[,PL] --tasks T[,T] --ablations "A[,A]"
               --budget epochs|matched --workers N --no-report --results {results} [--seeds S[,S]]
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, replace
from typing import Sequence

from bench.ablations import ABLATIONS
from bench.config import PLANES, PROFILES
from bench.errors import BenchError, ConfigError, DataError
from bench.models import get_model_spec

RESULTS = "{results}"
FIELDS = ("--profile", "--models", "--planes", "--tasks", "--ablations", "--budget", "--workers")
BUDGETS = ("epochs", "matched")
TASKS = ("liver", "lesion")
MAX_WORKERS = 256


@dataclass(frozen=True)
class GoldenStudy:
    """The study a training layer runs: ``bench demo`` with these fields, on the phantom, no report."""

    profile: str = "golden"
    models: tuple[str, ...] = ("unet", "ours")
    planes: tuple[str, ...] = ("axial",)
    tasks: tuple[str, ...] = ("liver",)
    ablations: tuple[str, ...] = ()
    budget: str = "epochs"
    workers: int = 2  # fixed: the thread count per run changes float summation order
    seeds: tuple[int, ...] | None = None  # None: the demo's default (seed 0), and no --seeds in the command

    def with_condition(self, workers: int, seed: int | None) -> "GoldenStudy":
        """The same study with another worker count and (unless None) one seed: a calibration condition."""
        return replace(self, workers=workers, seeds=self.seeds if seed is None else (seed,))

    def _values(self) -> list[str]:
        return [self.profile, ",".join(self.models), ",".join(self.planes), ",".join(self.tasks),
                ",".join(self.ablations), self.budget, str(self.workers)]

    def command(self) -> str:
        """The text a manifest records (``{results}`` where the check puts its temporary folder)."""
        parts = ["bench", "demo"]
        for flag, value in zip(FIELDS, self._values()):
            parts += [flag, value if value else '""']
        parts += ["--no-report", "--results", RESULTS]
        if self.seeds is not None:
            parts += ["--seeds", ",".join(map(str, self.seeds))]
        return " ".join(parts)

    def argv(self, results: str) -> list[str]:
        """What runs: this interpreter, this package's entry point, the validated fields; no shell."""
        out = [sys.executable, "-m", "bench", "demo"]
        for flag, value in zip(FIELDS, self._values()):
            out += [flag, value]
        out += ["--no-report", "--results", str(results)]
        if self.seeds is not None:
            out += ["--seeds", ",".join(map(str, self.seeds))]
        return out


def _names(text: str) -> tuple[str, ...]:
    return tuple(t for t in text.split(",") if t)


def _check_names(values: Sequence[str], known: Sequence[str], what: str) -> None:
    for v in values:
        if v not in known:
            raise ConfigError(f"unknown {what} {v!r} (known: {', '.join(known)})")


def _validate(study: GoldenStudy) -> None:
    """Every field a registered name or a bounded integer (a `ConfigError` saying which)."""
    PROFILES.get(study.profile)
    if not study.models or not study.planes or not study.tasks:
        raise ConfigError("--models, --planes and --tasks each need at least one name")
    for model in study.models:
        get_model_spec(model)
    _check_names(study.planes, (*PLANES, "fused"), "plane")
    _check_names(study.tasks, TASKS, "task")
    for name in study.ablations:
        ABLATIONS.get(name)
    _check_names((study.budget,), BUDGETS, "budget")
    if not 0 <= study.workers <= MAX_WORKERS:
        raise ConfigError(f"--workers {study.workers}: expected 0..{MAX_WORKERS}")
    if study.seeds is not None and (not study.seeds or any(s < 0 for s in study.seeds)):
        raise ConfigError(f"--seeds {study.seeds}: expected non-negative integers")


def parse_study(text: object, where: str, exact: bool = True, error: type[BenchError] = DataError) -> GoldenStudy:
    """The `GoldenStudy` a command text names, validated; ``exact``: the text must be its canonical rendering.

    ``where`` names the file and field (or the flag) in the one-line error, raised as ``error``.
    Parsing splits words (`shlex`), nothing more: no word of the text is ever executed.
    """
    def refuse(why: str) -> BenchError:
        return error(f"{where}: {why}; a golden study is `{GoldenStudy().command()}` with other registered "
                     f"names or numbers, nothing else")

    if not isinstance(text, str):
        raise refuse(f"expected a command text, got {type(text).__name__}")
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise refuse(f"unreadable ({exc})") from None
    if words[:2] != ["bench", "demo"]:
        raise refuse(f"must start with `bench demo`, not {' '.join(words[:2])!r}")
    given: dict[str, str] = {}
    flags = [*FIELDS, "--results", "--seeds"]
    i, no_report = 2, False
    while i < len(words):
        word = words[i]
        if word == "--no-report" and not no_report:
            no_report, i = True, i + 1
            continue
        if word not in flags or word in given:
            raise refuse(f"{'repeated' if word in given else 'not allowed'}: {word!r}")
        if i + 1 >= len(words):
            raise refuse(f"{word} needs a value")
        given[word], i = words[i + 1], i + 2
    if given.get("--results") != RESULTS:
        raise refuse(f"--results must be {RESULTS} (the check's temporary folder)")
    if not no_report:
        raise refuse("lacks --no-report (the study writes results only)")
    try:
        workers = int(given["--workers"]) if "--workers" in given else GoldenStudy.workers
        seeds = tuple(int(s) for s in _names(given["--seeds"])) if "--seeds" in given else None
    except ValueError:
        raise refuse("--workers and --seeds take integers") from None
    default = GoldenStudy()
    study = GoldenStudy(
        profile=given.get("--profile", default.profile), budget=given.get("--budget", default.budget),
        models=_names(given["--models"]) if "--models" in given else default.models,
        planes=_names(given["--planes"]) if "--planes" in given else default.planes,
        tasks=_names(given["--tasks"]) if "--tasks" in given else default.tasks,
        ablations=_names(given["--ablations"]) if "--ablations" in given else default.ablations,
        workers=workers, seeds=seeds)
    try:
        _validate(study)
    except ConfigError as exc:
        raise refuse(str(exc)) from None
    if exact and study.command() != text:
        raise refuse(f"differs from the command this code builds from its fields ({study.command()!r})")
    return study


DEFAULT_STUDY = GoldenStudy()
DEFAULT_COMMAND = DEFAULT_STUDY.command()
