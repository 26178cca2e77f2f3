"""Patient-level train/val/test splits, saved once per data set as ``splits_final.json``.

Why by patient: neighbouring slices of one patient are nearly identical, so a slice-level split
puts the same anatomy in train and test and inflates every score. Why saved: every run (every
model, plane, seed and ablation) on a data set must see the same patients, so the split is made
once, written beside the cache (`bench.paths.splits_path`) and reused, like nnU-Net's
``splits_final.json``. The split seed is therefore a property of the data set (0 by default),
not of the run seed: run seeds change initialisation and batch order, never the test patients.

File format (also accepted from ``--splits FILE``)::

    {"train": ["0", "3", ...], "val": [...], "test": [...],      # the default split
     "folds": [{"train": [...], "val": [...], "test": [...]}, ...]}   # optional, see below
    # other keys are kept and ignored

Cross-validation (`make_folds`, ``bench data prepare --folds K``), the standard protocol on small
CT sets: patients are shuffled with the split seed and cut into K near-equal test parts; fold i
tests on part i, validates on part i+1 (mod K) and trains on the rest. Every patient is a test
patient exactly once, so a report over all folds scores every patient once. When taking part
i+1 for validation would leave no training patient (K = 2 with two patients), the fold has no
validation patients and its runs keep their last epoch (the documented empty-validation rule).
K equal to the number of patients is leave-one-patient-out. Adding ``folds`` keeps the file's
train/val/test valid, so runs without ``--fold`` are unaffected.

Small data sets (fractions 0.7/0.2/0.1): a split whose fraction is positive gets at least one
case while there are cases to give, filled in the order train, val, test; so 1 case -> 1/0/0,
2 -> 1/1/0, 3 -> 1/1/1, 10 -> 7/2/1, 131 (LiTS) -> 92/26/13.
"""

from __future__ import annotations

import json
import math
import warnings
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


def make_folds(case_ids: Iterable[str], k: int, seed: int = 0) -> list[dict[str, list[str]]]:
    """K patient-level folds (module docstring): test part i, validation part i+1, training the rest."""
    ids = sorted({str(c) for c in case_ids}, key=natural_key)
    if not 2 <= k <= len(ids):
        raise ConfigError(f"--folds {k}: needs 2 <= K <= the number of patients ({len(ids)})")
    order = np.random.default_rng(seed).permutation(len(ids))
    parts = [[ids[i] for i in part] for part in np.array_split(order, k)]
    folds = []
    for i in range(k):
        test, val = parts[i], parts[(i + 1) % k]
        rest = [c for c in ids if c not in test]
        if len(rest) - len(val) < 1:  # no training patient would be left: validate on nobody
            val = []
        train = [c for c in rest if c not in val]
        folds.append({name: sorted(v, key=natural_key) for name, v in (("train", train), ("val", val), ("test", test))})
    return folds


def _check_split(data: Any, case_ids: Iterable[str] | None, source: str) -> dict[str, list[str]]:
    """One train/val/test mapping: lists of ids, no case twice, a non-empty train list, known ids."""
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


def validate_splits(data: Any, case_ids: Iterable[str] | None, source: str | Path) -> dict[str, list[str]]:
    """Check a loaded splits object; every problem is a `ConfigError` naming ``source``.

    Rules: a JSON object with list-of-string ``train``, ``val`` and ``test``; no case twice;
    a non-empty train list; with ``case_ids``, every listed case must exist in the data set.
    Cases of the data set missing from the file are simply not used (a deliberate subset).
    Optional ``folds``: a list of such mappings (each checked the same way). Returns the default
    split; `fold_split` reads a fold.
    """
    ids = None if case_ids is None else [str(c) for c in case_ids]
    out = _check_split(data, ids, str(source))
    folds = data.get("folds")
    if folds is not None:
        if not isinstance(folds, list) or not folds:
            raise ConfigError(f"{source}: 'folds' must be a non-empty list of train/val/test objects")
        out["folds"] = [_check_split(f, ids, f"{source} fold {i}") for i, f in enumerate(folds)]  # type: ignore[assignment]
    return out


def fold_split(splits: dict[str, Any], fold: int | None, source: str | Path) -> dict[str, list[str]]:
    """The train/val/test of ``fold`` (None: the default split); a missing fold names the file and the fix."""
    if fold is None:
        return {k: list(splits[k]) for k in SPLITS}
    folds = splits.get("folds") or []
    if not folds:
        raise ConfigError(f"{source}: no cross-validation folds; create them with bench data prepare --folds K")
    if not 0 <= fold < len(folds):
        raise ConfigError(f"--fold {fold}: {source} has folds 0..{len(folds) - 1}")
    return {k: list(folds[fold][k]) for k in SPLITS}


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
    fractions: Sequence[float] = DEFAULT_FRACTIONS, folds: int = 0, fold: int | None = None,
) -> dict[str, list[str]]:
    """The data set's split (or one of its folds): ``given`` if passed (validated, not copied), else
    ``path`` if it exists, else new.

    A given file is used as is and does not replace the data set's ``splits_final.json``, so one
    experiment with a custom split never changes the split of later default runs. ``folds`` = K
    adds K cross-validation folds to the data set's file (or checks that it has K already).

    Cases added to the data root after its split was saved sit in no split: they are not used,
    and a warning naming them says so (`unsplit_cases`). The split is not redone on its own,
    since that would change the test patients of every earlier run.
    """
    ids = [str(c) for c in case_ids]
    source = Path(given) if given is not None else Path(path)
    if given is not None:
        splits = read_splits(given, ids)
        if folds and len(splits.get("folds") or []) != folds:
            raise ConfigError(f"{given}: --folds {folds} asked for, the file has {len(splits.get('folds') or [])}")
    else:
        path = Path(path)
        if path.exists():
            splits = read_splits(path, ids)
            have = len(splits.get("folds") or [])
            if folds and have and have != folds:
                raise ConfigError(f"{path}: already holds {have} folds, not {folds} (delete the file to re-split; "
                                  f"runs made on the old folds would no longer match)")
            if folds and not have:
                data = json.loads(path.read_text())
                data["folds"] = make_folds(ids, folds, seed=int(data.get("seed", seed)))
                write_json(path, data)
                splits = read_splits(path, ids)
        else:
            splits = make_splits(ids, seed=seed, fractions=fractions)
            data = {**splits, "seed": seed, "fractions": list(fractions)}
            if folds:
                data["folds"] = make_folds(ids, folds, seed=seed)
            write_json(path, data)
            splits = read_splits(path, ids)
    unused = unsplit_cases(splits, ids) if given is None and fold is None else []
    if unused:  # a given file may be a deliberate subset: no warning
        shown = ", ".join(unused[:10]) + (f" (+{len(unused) - 10} more)" if len(unused) > 10 else "")
        warn_once(f"{source}: {len(unused)} case(s) of the data set are in no split and are not used: {shown} "
                  f"(added after the split was made, or left out of an edited split; delete {source.name} to "
                  f"re-split, which changes the test set, or pass --splits FILE)")
    return fold_split(splits, fold, source)


_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """A data-set warning printed once per process (every run of a study loads the same split)."""
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=3)
