"""One evaluation pipeline: a prediction source -> the one scorer -> the one writer.

Why: a trained run on one plane, the fused planes (`bench evaluate`, `bench.engine.sources`), a
folder of NIfTI label maps (`bench score`, `bench.metrics.folder.FolderSource`) and an external
tool's folder scored on a data set's patients (`bench report --external`,
`bench.metrics.split_folder.SplitFolderSource`) differ only in where each case's prediction comes
from. A source yields `CasePrediction`s; `score_source` scores every case through the one scorer
(`bench.metrics.scorer`) and `write_scored` writes per_case/metrics/summary through the one writer
(`bench.metrics.results.write_evaluation`) under the one policy (`ScoreOptions.policy`, written in
`bench.metrics.policy`). The verbs are thin faces: each picks a source and calls `evaluate_source`
(or the two steps, when it acts between them).

A source declares its *variants*: the prediction sets it offers per case, each written as its own
set of files. A run offers ``post`` (after the run's post-processing, the main files) and ``raw``
(the thresholded probabilities, ``*_raw``), each with its post-processing rule in the policy; a
folder offers its label maps as given. The sources live in this layer (or the engine's run
sources use this protocol), so reports and engine share it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np
import pandas as pd

from bench.metrics.results import read_per_case, write_evaluation
from bench.metrics.scorer import ScoreOptions, keyed, score_label_maps, score_masks

SPLIT_ORDER = {"val": 0, "test": 1}  # a run's per_case.csv: validation rows first


@dataclass(frozen=True)
class Variant:
    """One prediction set of a source: its file suffix ("" = the main files) and what it adds to the policy."""

    name: str
    suffix: str = ""
    policy: Mapping[str, Any] = field(default_factory=dict)


AS_GIVEN = (Variant("given"),)  # a folder's label maps, scored as they are (no post-processing here)


@dataclass(frozen=True)
class CasePrediction:
    """One case ready to score: its prediction per variant, its reference and spacing.

    ``label_maps`` sources give 0/1/2 label maps (reference and predictions), scored for every
    class in one counting pass; mask sources give binary masks of their one class. Two variants
    may hold the same array (a run without post-processing): it is scored once.
    ``files``: (prediction file or None, reference file) where files were read (nnU-Net's summary).
    """

    split: str
    case: str
    reference: np.ndarray
    predictions: Mapping[str, np.ndarray]
    spacing: tuple[float, float, float] | None
    files: tuple[str | None, str] | None = None


class PredictionSource(Protocol):
    """Where predictions come from; everything after it (scoring, writing, policy) is shared."""

    description: str  # what is scored, for progress lines and provenance (e.g. "unet liver axial")
    classes: tuple[str, ...]  # the classes scored: ("liver",), ("lesion",) or both
    label_maps: bool  # 0/1/2 label maps (True) or binary masks of ``classes[0]`` (False)
    with_splits: bool  # summary.json per split (runs, external folders) or one set of cases (bench score)
    variants: tuple[Variant, ...]

    def cases(self) -> Iterator[CasePrediction]:
        """The cases in writing order (a source may announce each one to its own progress callback)."""
        ...


Rows = dict[str, list[dict[str, Any]]]  # variant name -> per_case.csv rows


def score_prediction(item: CasePrediction, classes: Sequence[str], label_maps: bool,
                     options: ScoreOptions) -> dict[str, dict[str, dict[str, Any]]]:
    """{variant: {class: row}} of one case through the one scorer (a shared array is scored once)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    done: dict[int, dict[str, dict[str, Any]]] = {}
    for variant, pred in item.predictions.items():
        if id(pred) not in done:
            if label_maps:
                done[id(pred)] = score_label_maps(pred, item.reference, classes, item.spacing, options)
            else:
                done[id(pred)] = {classes[0]: score_masks(classes[0], pred, item.reference, item.spacing, options)}
        out[variant] = done[id(pred)]
    return out


@dataclass
class Scored:
    """Every case's rows per variant, and the files they were read from (where a source names them)."""

    rows: Rows
    case_files: dict[str, tuple[str | None, str]] = field(default_factory=dict)


def score_source(source: PredictionSource, options: ScoreOptions,
                 on_case: Callable[[CasePrediction, dict[str, dict[str, dict[str, Any]]]], None] | None = None
                 ) -> Scored:
    """Score every case of ``source``; ``on_case(case, {variant: {class: row}})`` after each (progress lines)."""
    scored = Scored({v.name: [] for v in source.variants})
    for item in source.cases():
        by_variant = score_prediction(item, source.classes, source.label_maps, options)
        for variant, rows in by_variant.items():
            scored.rows[variant] += keyed(rows, item.case, item.split)
        if item.files is not None:
            scored.case_files[item.case] = item.files
        if on_case is not None:
            on_case(item, by_variant)
    return scored


def merge_splits(folder: Path, rows: pd.DataFrame, scored: Iterable[str], suffix: str = "") -> pd.DataFrame:
    """New rows for the scored splits plus the existing rows of every other split (``bench evaluate --split``)."""
    path = Path(folder) / f"per_case{suffix}.csv"
    if not path.is_file():
        return rows
    old = read_per_case(path)
    kept = old[~old["split"].isin(list(scored))]
    if kept.empty:
        return rows
    return pd.concat([kept, rows], ignore_index=True)


def write_scored(out_dir: str | Path, rows: Rows, variants: Sequence[Variant], classes: Sequence[str],
                 options: ScoreOptions, with_splits: bool = True, extra: Mapping[str, Any] | None = None,
                 keep_other_splits: Iterable[str] | None = None,
                 case_files: Mapping[str, tuple[str | None, str | None]] | None = None) -> dict[str, Any]:
    """Write each variant's files through the one writer; returns the main set's summary.

    ``keep_other_splits``: the splits just scored; the rows of every other split already in the
    folder are kept (a run's re-evaluation of one split), validation rows first. ``extra``: top-level
    summary.json keys of the main set (a folder's missing cases, an external tool's provenance).
    """
    summary: dict[str, Any] = {}
    for variant in variants:
        frame: Any = rows[variant.name]
        if keep_other_splits is not None:
            frame = merge_splits(Path(out_dir), pd.DataFrame(frame), keep_other_splits, variant.suffix)
            frame = frame.sort_values("split", key=lambda s: s.map(SPLIT_ORDER), kind="stable")
        policy = options.policy(classes)
        policy.update(variant.policy)
        written = write_evaluation(out_dir, frame, with_splits=with_splits, policy=policy,
                                   extra=extra if not variant.suffix else None, suffix=variant.suffix,
                                   case_files=(case_files or None) if not variant.suffix else None)
        if not variant.suffix:
            summary = written
    return summary


def evaluate_source(source: PredictionSource, out_dir: str | Path, options: ScoreOptions,
                    extra: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
                    keep_other_splits: Iterable[str] | None = None,
                    on_case: Callable[[CasePrediction, dict[str, dict[str, dict[str, Any]]]], None] | None = None
                    ) -> dict[str, Any]:
    """The pipeline: score every case of ``source`` and write its files into ``out_dir``; the main summary.

    ``extra`` may be a function, called once every case is scored (what a source learned on the way).
    """
    scored = score_source(source, options, on_case)
    return write_scored(out_dir, scored.rows, source.variants, source.classes, options, source.with_splits,
                        extra() if callable(extra) else extra, keep_other_splits, scored.case_files)
