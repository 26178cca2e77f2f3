"""The one scorer: every prediction source's case goes through `score_masks` / `score_label_maps`.

Why: a trained run's plane, the fused planes (`bench evaluate`), a folder of NIfTI label maps
(`bench score`) and an external tool's folder (`bench report --external`) differ only in where the
predicted volume comes from. What is computed from it - counts, the scores from counts, surface
distances, lesion detection - and under which declared rules (`ScoreOptions.policy`) is the same,
so each source adapts its volumes to (prediction, reference, spacing) and calls this module; the
rows go to the one writer, `bench.metrics.results.write_evaluation`.

A row holds, per class: tp/fp/fn/tn and the scores from them (`bench.metrics.scores`); with
``surface`` the distances in mm (`bench.metrics.surface`); for the lesion class the lesion-wise
counts (`bench.metrics.lesions`: components, detected, false-positive lesions, size bins).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from bench.datasets.base import task_mask
from bench.metrics.counts import Counts, binary_counts, label_counts
from bench.metrics.lesions import DEFAULT_CONNECTIVITY as LESION_CONNECTIVITY
from bench.metrics.lesions import DEFAULT_MATCH, check_rule, lesion_detection
from bench.metrics.policy import evaluation_policy
from bench.metrics.scores import DEFAULT_EMPTY_REFERENCE, check_empty_reference, scores_from_counts
from bench.metrics.surface import DEFAULT_CONNECTIVITY, DEFAULT_TOLERANCE_MM, surface_metrics

LESION_CLASS = "lesion"  # the class lesion detection applies to


@dataclass(frozen=True)
class ScoreOptions:
    """What is scored beyond counts, and under which rules (all of it lands in the policy).

    ``connectivity``: surface voxels' neighbourhood; ``lesion_connectivity``: lesion components'.
    ``empty_reference``: the overlap scores of an empty reference (``nan`` | ``zero``, `bench.metrics.scores`).
    ``device``: where voxels are counted (None = where the arrays live / the default device).
    """

    surface: bool = False
    tolerance_mm: float = DEFAULT_TOLERANCE_MM
    connectivity: int = DEFAULT_CONNECTIVITY
    lesion_match: str = DEFAULT_MATCH
    lesion_connectivity: int = LESION_CONNECTIVITY
    empty_reference: str = DEFAULT_EMPTY_REFERENCE
    device: str | torch.device | None = None

    def __post_init__(self) -> None:
        check_rule(self.lesion_match, self.lesion_connectivity)
        check_empty_reference(self.empty_reference)

    @classmethod
    def for_run(cls, cfg: Any, surface: bool = False, device: str | torch.device | None = None) -> "ScoreOptions":
        """The options a run's config declares (``profile.evaluate``)."""
        ev = cfg.profile.evaluate
        return cls(surface=surface, lesion_match=ev.lesion_match, lesion_connectivity=ev.lesion_connectivity,
                   empty_reference=ev.empty_reference, device=device)

    def policy(self, classes: Sequence[str]) -> dict[str, Any]:
        """The evaluation policy of results scored with these options (summary.json's ``policy``)."""
        lesion = (self.lesion_match, self.lesion_connectivity) if LESION_CLASS in classes else None
        return evaluation_policy(self.surface, self.tolerance_mm if self.surface else None,
                                 self.connectivity if self.surface else None, lesion=lesion,
                                 empty_reference=self.empty_reference)


def class_row(cls: str, pred: Any, ref: Any, spacing: Sequence[float] | None, options: ScoreOptions,
              counts: Counts | None = None) -> dict[str, Any]:
    """Counts, scores, (surface distances) and (lesion detection) of one class's binary masks on one case.

    ``counts``: already counted (a label map's one pass, `score_label_maps`); else counted here.
    """
    if counts is None:
        counts = binary_counts(pred, ref, device=options.device)
    row: dict[str, Any] = {"tp": counts.tp, "fp": counts.fp, "fn": counts.fn, "tn": counts.tn}
    row.update(scores_from_counts(counts.tp, counts.fp, counts.fn, counts.tn, options.empty_reference))
    if options.surface or cls == LESION_CLASS:
        if spacing is None:
            raise ValueError(f"scoring {cls} with surface distances or lesion detection needs the case's spacing")
        p, r = _numpy_bool(pred), _numpy_bool(ref)
        if options.surface:
            row.update(surface_metrics(p, r, spacing, options.tolerance_mm, options.connectivity))
        if cls == LESION_CLASS:
            row.update(lesion_detection(p, r, spacing, options.lesion_match, options.lesion_connectivity).as_dict())
    return row


def score_masks(cls: str, pred: Any, ref: Any, spacing: Sequence[float] | None,
                options: ScoreOptions) -> dict[str, Any]:
    """One class of one case from its two binary masks (a run's thresholded, post-processed plane or fusion)."""
    return class_row(cls, pred, ref, spacing, options)


def score_label_maps(pred: np.ndarray, ref: np.ndarray, classes: Sequence[str], spacing: Sequence[float] | None,
                     options: ScoreOptions) -> dict[str, dict[str, Any]]:
    """{class: row} of one case from two 0/1/2 label maps (a NIfTI folder, an external tool), one counting pass."""
    counts = label_counts(pred, ref, device=options.device)
    return {c: class_row(c, task_mask(pred, c), task_mask(ref, c), spacing, options, counts[c]) for c in classes}


def keyed(rows: Mapping[str, Mapping[str, Any]], case: str, split: str = "all") -> list[dict[str, Any]]:
    """per_case.csv rows (split, case, class first) from `score_label_maps` output."""
    return [{"split": split, "case": str(case), "class": cls, **row} for cls, row in rows.items()]


def _numpy_bool(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(bool, copy=False)
