"""Helpers the benchmark scripts share."""

from __future__ import annotations

import csv
from pathlib import Path


def write_rows(path: str | Path, rows: list[dict]) -> None:
    """One CSV of benchmark rows (header from the first row)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
