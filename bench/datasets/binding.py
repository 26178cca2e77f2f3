"""A run's data binding: the data root, split and source fingerprints its numbers were computed from.

Why: a run's scores mean something only for the data they came from. Training records (in the
run's config.json, key ``data``) the absolute data root, the slice cache, the split file (path,
SHA-256) with the exact patient lists and their hash, and every case's source fingerprint
(`bench.datasets.fingerprint`). `binding_change` compares a recorded binding with the data as it
is now and names the first difference in one line: the data root, the split's patients, or the
cases whose files changed. ``bench evaluate`` and ``bench report`` refuse on a difference
(`bench.engine.records.check_data_binding`, `bench.reports.collect`).

Split rule (a choice): a split file differs when the run's own patient lists differ; a rewrite
that keeps them (``bench data prepare --folds K`` adds folds to the file) is not a change. The
file's SHA-256 is recorded for provenance.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from bench.config import RunConfig
from bench.datasets import get_dataset
from bench.datasets.base import DatasetAdapter, natural_key
from bench.datasets.fingerprint import describe_change, fingerprint_of, source_entries
from bench.datasets.phantom import DEFAULT_ROOT
from bench.datasets.splits import fold_split, read_splits
from bench.errors import BenchError, ConfigError
from bench.paths import splits_path

SPLIT_NAMES = ("train", "val", "test")


def lists_hash(data: Any) -> str:
    """Short hash of JSON-able data (patient lists, folds), independent of the file's formatting."""
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def evaluation_root(cfg: RunConfig) -> Path:
    """The absolute data root a run's config reads from this working directory (never generating data)."""
    if cfg.root:
        return Path(cfg.root).expanduser().resolve()
    if cfg.dataset == "phantom":
        return Path(DEFAULT_ROOT).resolve()
    raise ConfigError(f"dataset {cfg.dataset!r} needs --root PATH")


def split_file(cfg: RunConfig, root: Path) -> Path:
    """The split file a run with ``cfg`` reads: ``--splits`` if given, else the data set's own beside the cache."""
    return Path(cfg.splits).resolve() if cfg.splits else splits_path(cfg.cache, cfg.dataset, root).resolve()


def _known_sources(cache_dir: Path | None, case_id: str) -> dict[str, Any]:
    """The cache's recorded source entries of a case (hash reuse), {} when there is none."""
    if cache_dir is None:
        return {}
    try:
        meta = json.loads((Path(cache_dir) / case_id / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    sources = meta.get("sources") if isinstance(meta, dict) else None
    return sources if isinstance(sources, dict) else {}


def case_fingerprints(adapter: DatasetAdapter, case_ids: Sequence[str], cache_dir: Path | None = None) -> dict[str, str]:
    """{case: source fingerprint} now (hashes reused from the cache's meta.json where files are untouched)."""
    return {cid: fingerprint_of(source_entries(adapter.source_files(cid), adapter.root, _known_sources(cache_dir, cid)))
            for cid in case_ids}


def data_binding(cfg: RunConfig, adapter: DatasetAdapter, cache_dir: Path, splits: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """What a run records in config.json ``data`` when it is trained (see the module docstring)."""
    root = Path(adapter.root).resolve()
    path = split_file(cfg, root)
    lists = {k: list(splits[k]) for k in SPLIT_NAMES}
    cases = sorted({c for k in SPLIT_NAMES for c in lists[k]}, key=natural_key)
    fps = case_fingerprints(adapter, cases, cache_dir)
    out: dict[str, Any] = {
        "root": str(root),
        "cache": str(Path(cache_dir).resolve()),
        "cache_fingerprint": lists_hash(fps),
        "split_file": str(path),
        "split_file_sha256": file_sha256(path) if path.is_file() else "",
        "split_hash": lists_hash(lists),
        "splits": lists,
        "cases": fps,
    }
    if cfg.fold is not None and path.is_file():
        out["folds_hash"] = lists_hash(read_splits(path).get("folds") or [])
    return out


def replicate_split_key(data: Mapping[str, Any], fold: int | None) -> str:
    """What runs must share to be seeds of one experiment: their patient lists (fold runs: the folds)."""
    return str(data.get("folds_hash") if fold is not None else data.get("split_hash"))


def _split_difference(recorded: Mapping[str, Sequence[str]], now: Mapping[str, Sequence[str]]) -> str:
    for name in SPLIT_NAMES:
        old, new = list(recorded.get(name, [])), list(now.get(name, []))
        if old != new:
            gone = [c for c in old if c not in new]
            came = [c for c in new if c not in old]
            detail = ", ".join(([f"+{', +'.join(came[:3])}"] if came else []) + ([f"-{', -'.join(gone[:3])}"] if gone else []))
            return f"{name} patients {detail or 'reordered'}"
    return ""


def binding_change(data: Mapping[str, Any], cfg: RunConfig, root: Path, split_path: Path,
                   fingerprints: dict[tuple[str, str, bool], dict[str, str]] | None = None,
                   split_required: bool = True) -> str | None:
    """How the data at ``root`` / ``split_path`` now differs from a recorded binding (None: it does not).

    One clause naming what changed: ``data root ...``, ``split file ...`` or ``case fingerprints ...``.
    ``fingerprints``: a memo shared over many runs of one report ({(dataset, root, cysts): {case: fp}}).
    ``split_required=False`` (the report): a deleted split file (it lives beside the cache) is not a
    change of the scores, which used the recorded lists; an evaluation would make a new one, so there
    it is refused.
    """
    recorded_root = str(data.get("root", ""))
    if str(root) != recorded_root:
        return f"data root changed: trained on {recorded_root}, this call reads {root}"
    if not root.is_dir():
        return f"data root {root} (recorded at training) is gone"
    if split_path.is_file():
        try:
            now = fold_split(read_splits(split_path), cfg.fold, split_path)
        except BenchError as exc:
            return f"split file {split_path} unreadable ({exc})"
        diff = _split_difference(data.get("splits") or {}, now)
        if diff:
            return f"split file {split_path} changed since training: {diff}"
    elif split_required:
        return f"split file {split_path} is missing (the run was trained with {data.get('split_file')})"
    recorded: dict[str, str] = dict(data.get("cases") or {})
    adapter = get_dataset(cfg.dataset, root=root, include_cysts=cfg.include_cysts)
    memo_key = (cfg.dataset, str(root), bool(cfg.include_cysts))
    memo = fingerprints.setdefault(memo_key, {}) if fingerprints is not None else {}
    present = set(adapter.case_ids())
    changed = []
    cache_dir = Path(data["cache"]) if data.get("cache") else None
    for cid in sorted(recorded, key=natural_key):
        if cid not in present:
            changed.append(f"{cid} (removed)")
            continue
        if cid not in memo:
            memo.update(case_fingerprints(adapter, [cid], cache_dir))
        if memo[cid] != recorded[cid]:
            old = _known_sources(cache_dir, cid)
            new = source_entries(adapter.source_files(cid), adapter.root, old)
            what = describe_change(old, new) if old and fingerprint_of(old) == recorded[cid] else "source files changed"
            changed.append(f"{cid} ({what})")
    if changed:
        more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
        return f"case fingerprints changed since training: {'; '.join(changed[:3])}{more}"
    return None
