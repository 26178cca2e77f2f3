"""Evaluation metrics: counts first (counts.py), scores and reductions from counts (scores.py),
surface distances (surface.py), and the one results writer (results.py)."""

from bench.metrics.counts import (
    CountAccumulator,
    Counts,
    binary_counts,
    confusion_matrix,
    label_counts,
)
from bench.metrics.scores import METRICS, reduce_cases, scores_from_counts

__all__ = [
    "CountAccumulator",
    "Counts",
    "METRICS",
    "binary_counts",
    "confusion_matrix",
    "label_counts",
    "reduce_cases",
    "scores_from_counts",
]
