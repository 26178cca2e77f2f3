"""Patient-level splits: deterministic, disjoint, small-N rules, splits_final.json reuse and validation."""

from __future__ import annotations

import json

import pytest

from bench.datasets.splits import load_or_create_splits, make_splits, read_splits, split_sizes
from bench.errors import ConfigError

IDS = [str(i) for i in range(20)]


@pytest.mark.parametrize(
    "n, expected",
    [(1, (1, 0, 0)), (2, (1, 1, 0)), (3, (1, 1, 1)), (4, (2, 1, 1)), (5, (3, 1, 1)), (9, (6, 2, 1)),
     (10, (7, 2, 1)), (20, (14, 4, 2)), (131, (92, 26, 13))],
)
def test_split_sizes(n, expected):
    assert split_sizes(n) == expected
    assert sum(split_sizes(n)) == n


def test_zero_fraction_gets_no_case_and_bad_fractions_fail():
    assert split_sizes(5, (0.8, 0.2, 0.0)) == (4, 1, 0)
    for bad in ((0.5, 0.5, 0.5), (0.0, 0.5, 0.5), (0.7, 0.3), (1.2, -0.1, -0.1)):
        with pytest.raises(ConfigError):
            split_sizes(10, bad)


def test_deterministic_and_disjoint():
    a = make_splits(IDS, seed=0)
    b = make_splits(list(reversed(IDS)), seed=0)  # input order does not matter
    assert a == b
    assert make_splits(IDS, seed=1) != a
    members = a["train"] + a["val"] + a["test"]
    assert sorted(members, key=int) == IDS and len(set(members)) == len(IDS)
    assert [len(a[k]) for k in ("train", "val", "test")] == [14, 4, 2]
    assert a["train"] == sorted(a["train"], key=int)  # natural order inside each split


def test_small_data_sets():
    assert make_splits(["a"]) == {"train": ["a"], "val": [], "test": []}
    two = make_splits(["a", "b"])
    assert len(two["train"]) == len(two["val"]) == 1 and two["test"] == []
    three = make_splits(["a", "b", "c"])
    assert all(len(three[k]) == 1 for k in ("train", "val", "test"))
    with pytest.raises(ConfigError):
        make_splits([])


def test_create_then_reuse(tmp_path):
    path = tmp_path / "ds" / "splits_final.json"
    made = load_or_create_splits(path, IDS, seed=0)
    assert path.is_file() and made == make_splits(IDS, seed=0)
    stored = json.loads(path.read_text())
    assert stored["seed"] == 0 and stored["train"] == made["train"]
    # an edited file is reused as is (never silently regenerated)
    custom = {"train": ["0", "1"], "val": ["2"], "test": ["3"]}
    path.write_text(json.dumps(custom))
    with pytest.warns(UserWarning, match=r"16 case\(s\) of the data set are in no split and are not used: 4, 5"):
        assert load_or_create_splits(path, IDS, seed=0) == custom
    assert load_or_create_splits(path, IDS, seed=5) == custom  # the seed only matters when creating (warned once)


def test_case_added_after_the_split_is_warned_about_once_by_name(tmp_path):
    import warnings

    path = tmp_path / "splits_final.json"
    load_or_create_splits(path, ["1", "2", "3", "4"], seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("error")  # nothing to say while every case is in a split
        load_or_create_splits(path, ["1", "2", "3", "4"], seed=0)
    assert caught == []
    with pytest.warns(UserWarning) as record:
        got = load_or_create_splits(path, ["1", "2", "3", "4", "10"], seed=0)
    assert len(record) == 1 and "1 case(s)" in str(record[0].message) and ": 10 (" in str(record[0].message)
    assert "10" not in {c for name in ("train", "val", "test") for c in got[name]}  # not silently re-split


def test_given_file_is_used_and_not_copied(tmp_path):
    path = tmp_path / "splits_final.json"
    given = tmp_path / "mine.json"
    given.write_text(json.dumps({"train": [0, 1, 2], "val": [3], "test": [], "note": "ints are read as ids"}))
    got = load_or_create_splits(path, IDS, given=given)
    assert got == {"train": ["0", "1", "2"], "val": ["3"], "test": []}
    assert not path.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"train": ["0"], "val": []}), "missing the 'test'"),
        (json.dumps({"train": "0", "val": [], "test": []}), "list of case ids"),
        (json.dumps({"train": ["0"], "val": ["0"], "test": []}), "in both 'train' and 'val'"),
        (json.dumps({"train": ["0", "0"], "val": [], "test": []}), "twice"),
        (json.dumps({"train": ["0", "99"], "val": [], "test": []}), "unknown case id"),
        (json.dumps({"train": [], "val": ["0"], "test": []}), "'train' list is empty"),
    ],
)
def test_bad_files_name_the_file(tmp_path, content, message):
    bad = tmp_path / "bad_splits.json"
    bad.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        read_splits(bad, IDS)
    assert str(bad) in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="bad_splits.json"):
        load_or_create_splits(tmp_path / "splits_final.json", IDS, given=bad)


def test_missing_given_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_or_create_splits(tmp_path / "s.json", IDS, given=tmp_path / "nope.json")
