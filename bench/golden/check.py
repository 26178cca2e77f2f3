"""Check one golden layer: build its tables, compare them with its golden files, or rewrite them.

`check_layer` serves ``bench check DIR`` (and its alias ``bench report --check DIR``): the exact
layer's tables come from its committed inputs (`bench.golden.exact`), a training layer's from its
study (`bench.golden.train`); both are compared by `bench.golden.compare`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.golden.compare import Mismatch, compare_tables
from bench.golden.exact import EXACT_COMMAND, EXACT_TOLERANCES, exact_manifest, exact_tables
from bench.golden.manifest import MANIFEST, layer_kind, read_manifest, write_golden
from bench.golden.train import DEFAULT_TOLERANCES, train_tables


@dataclass
class LayerOutcome:
    """What checking (or updating) one layer found."""

    folder: Path
    layer: str  # exact | train
    n_cells: int
    names: list[str]
    source: str
    mismatches: list[Mismatch] = field(default_factory=list)
    updated: list[Path] = field(default_factory=list)
    excluded: int = 0  # cells a calibration found unstable: present on both sides, values not compared

    @property
    def ok(self) -> bool:
        return not self.mismatches


def check_layer(folder: str | Path, results: str | None = None, update: bool = False,
                numbers: Sequence[int] = (3, 4, 5, 6, 7, 8), options: dict[str, Any] | None = None,
                say: Callable[[str], None] = print) -> LayerOutcome:
    """Build one layer's tables and compare them with its golden files (or rewrite them when ``update``).

    ``numbers``/``options`` only shape a training layer being (re)written without a calibration; a check,
    and the rewrite of a calibrated layer (its tolerances and excluded cells are about those tables),
    use the manifest's own tables and report options; the exact layer always builds its full set.
    """
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
            tables, source, options = exact_tables(folder, results, Path(tmp))
            command, tolerances = EXACT_COMMAND, EXACT_TOLERANCES
        else:
            tables, source, command = train_tables(folder, manifest, results, Path(tmp), numbers, options, say)
            tolerances = manifest["tolerances"] if manifest else DEFAULT_TOLERANCES
    names = [t.name for t in tables]
    n_cells = sum(len(t.frame) for t in tables)
    if update:
        # a training layer keeps its calibration (tolerances, excluded cells) when only its tables are rewritten
        extra = exact_manifest(folder) if kind == "exact" else {
            "layer": "train", **{k: manifest[k] for k in ("calibration", "excluded", "update") if manifest and k in manifest}}
        files = write_golden(folder, tables, command=command, report_options=options, source=source,
                             tolerances=tolerances, extra=extra)
        return LayerOutcome(folder, kind, n_cells, names, source, updated=files)
    # the exact layer's tolerances are this code's constants, whatever a manifest says (it is refused anyway)
    return LayerOutcome(folder, kind, n_cells, names, source, mismatches=compare_tables(folder, tables, tolerances),
                        excluded=len((manifest or {}).get("excluded") or []))
