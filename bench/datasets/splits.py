"""Patient-level train/val/test splits, saved once per data set as ``splits_final.json``.

Why by patient: neighbouring slices of one patient are nearly identical, so a slice-level split
puts the same anatomy in train and test and inflates every score. Why saved: every run (every
model, plane, seed and ablation) on a data set must see the same patients, so the split is made
once, written beside the cache (`bench.paths.splits_path`) and reused, like nnU-Net's
``splits_final.json``. The split seed is therefore a property of the data set (0 by default),
not of the run seed: run seeds change initialisation and batch order, never the test patients.

File format (also accepted from ``--splits FILE``)::

    {"train": ["0", "3", ...], "val": [...], "test": [...]}      # extra keys are kept, ignored

Small data sets (fractions 0.7/0.2/0.1): a split whose fraction is positive gets at least one
case while there are cases to give, filled in the order train, val, test; so 1 case -> 1/0/0,
2 -> 1/1/0, 3 -> 1/1/1, 10 -> 7/2/1, 131 (LiTS) -> 92/26/13.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from bench.atomic import write_json
from bench.datasets.base import natural_key
from bench.errors import ConfigError

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.7, 0.2, 0.1)
SPLITS_FILE = "splits_final.json"


def split_sizes(n: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> tuple[int, int, int]:
    """Case counts (train, val, test) for ``n`` cases: rounded fractions, at least one per used split."""
    fr = _check_fractions(fractions)
    if n < 0:
        raise ConfigError(f"cannot split {n} cases")
    wanted = [math.floor(f * n + 0.5) if f > 0 else 0 for f in fr]
    sizes = [0, 0, 0]
    left = n
    for i in range(3):  # minimums first, in priority order train, val, test
        if fr[i] > 0 and left > 0:
            sizes[i] = 1
            left -= 1
    for i in (1, 2):  # then val and test up to their rounded share
        extra = min(max(wanted[i] - sizes[i], 0), left)
        sizes[i] += extra
        left -= extra
    sizes[0] += left  # train (always used) takes the remainder
    return sizes[0], sizes[1], sizes[2]


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6 or fr[0] <= 0:
        raise ConfigError(f"split fractions {tuple(fractions)} must be three non-negative numbers summing to 1, train > 0")
    return fr  # type: ignore[return-value]


def make_splits(
    case_ids: Iterable[str], seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> dict[str, list[str]]:
    """Shuffle patients with ``seed`` and cut them into train/val/test (each list in natural order).

    The result depends only on the *set* of ids and the seed (ids are sorted before shuffling).
    """
    ids = sorted({str(c) for c in case_ids}, key=natural_key)
    if not ids:
        raise ConfigError("no cases to split")
    n_train, n_val, _ = split_sizes(len(ids), fractions)
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    parts = {
        "train": shuffled[:n_train],
        "val": shuffled[n_train : n_train + n_val],
        "test": shuffled[n_train + n_val :],
    }
    return {k: sorted(v, key=natural_key) for k, v in parts.items()}


def validate_splits(data: Any, case_ids: Iterable[str] | None, source: str | Path) -> dict[str, list[str]]:
    """Check a loaded splits object; every problem is a `ConfigError` naming ``source``.

    Rules: a JSON object with list-of-string ``train``, ``val`` and ``test``; no case twice;
    a non-empty train list; with ``case_ids``, every listed case must exist in the data set.
    Cases of the data set missing from the file are simply not used (a deliberate subset).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: splits must be a JSON object with train/val/test lists")
    out: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for name in SPLITS:
        if name not in data:
            raise ConfigError(f"{source}: missing the {name!r} list")
        items = data[name]
        if not isinstance(items, list) or not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in items):
            raise ConfigError(f"{source}: {name!r} must be a list of case ids")
        for c in map(str, items):
            if c in seen:
                where = "twice in" if seen[c] == name else f"in both {seen[c]!r} and"
                raise ConfigError(f"{source}: case {c!r} is {where} {name!r}")
            seen[c] = name
        out[name] = [str(c) for c in items]
    if not out["train"]:
        raise ConfigError(f"{source}: the 'train' list is empty")
    if case_ids is not None:
        known = {str(c) for c in case_ids}
        unknown = sorted(set(seen) - known, key=natural_key)
        if unknown:
            more = f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
            raise ConfigError(f"{source}: unknown case id(s) {', '.join(unknown[:5])}{more} not in the data set")
    return out


def read_splits(path: str | Path, case_ids: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Load and validate a splits file (`validate_splits`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: splits file not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    return validate_splits(data, case_ids, path)


def unsplit_cases(splits: dict[str, list[str]], case_ids: Iterable[str]) -> list[str]:
    """Case ids of the data set that appear in none of train/val/test (natural order)."""
    used = {c for name in SPLITS for c in splits.get(name, [])}
    return sorted({str(c) for c in case_ids} - used, key=natural_key)


def load_or_create_splits(
    path: str | Path, case_ids: Iterable[str], seed: int = 0, given: Path | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> dict[str, list[str]]:
    """The data set's split: ``given`` if passed (validated, not copied), else ``path`` if it exists, else new.

    A given file is used as is and does not replace the data set's ``splits_final.json``, so one
    experiment with a custom split never changes the split of later default runs.

    Cases added to the data root after its split was saved sit in no split: they are not used,
    and a `UserWarning` naming them says so (`unsplit_cases`). The split is not redone on its own,
    since that would change the test patients of every earlier run.
    """
    ids = [str(c) for c in case_ids]
    if given is not None:
        return read_splits(given, ids)  # a given file may be a deliberate subset: no warning
    path = Path(path)
    if path.exists():
        splits = read_splits(path, ids)
        unused = unsplit_cases(splits, ids)
        if unused:
            import warnings

            shown = ", ".join(unused[:10]) + (f" (+{len(unused) - 10} more)" if len(unused) > 10 else "")
            warnings.warn(f"{path}: {len(unused)} case(s) of the data set are in no split and are not used: {shown} "
                          f"(added after the split was made, or left out of an edited split; delete {path.name} to "
                          f"re-split, which changes the test set, or pass --splits FILE)", UserWarning, stacklevel=2)
        return splits
    splits = make_splits(ids, seed=seed, fractions=fractions)
    write_json(path, {**splits, "seed": seed, "fractions": list(fractions)})
    return splits
