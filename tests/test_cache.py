"""The slice cache: exact round trips, equality with the whole-volume preprocessing, atomic and resumable writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from bench.config import PLANES, PreprocessConfig, RunConfig, get_profile
from bench.datasets import cache as cache_mod
from bench.datasets import get_dataset
from bench.datasets.cache import (
    SliceCache,
    cache_dir_for,
    missing_cases,
    open_or_prepare,
    prepare_cache,
    preprocess_to_npy,
    window_statistics,
)
from bench.datasets.phantom import write_phantom
from bench.datasets.planes import slices_to_volume, volume_to_slices
from bench.datasets.preprocess import median3x3_slices, median_filter_slices, preprocess_volume
from bench.errors import ConfigError, DataError
from bench.paths import splits_path

PAD = PreprocessConfig()  # paper preprocessing, slice_fit "pad"


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory):
    """Three 32x32 cases of 24 slices: coronal/sagittal slices (24 x 32) need padding, no resize."""
    root = tmp_path_factory.mktemp("phantom")
    write_phantom(root, cases=3, size=32, slices=24, seed=1)
    return root


@pytest.fixture
def adapter(phantom_root):
    return get_dataset("phantom", root=phantom_root)


def case_dirs(cache_dir):
    return sorted(p.name for p in cache_dir.iterdir() if p.is_dir())


# ---------------------------------------------------------------- preprocessing pieces


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_fast_median_equals_scipy(dtype):
    rng = np.random.default_rng(0)
    for shape in [(3, 17, 23), (2, 1, 5), (1, 4, 1), (2, 2, 2)]:
        a = rng.integers(-4, 4, size=shape).astype(dtype)  # many ties
        assert np.array_equal(median3x3_slices(a), ndimage.median_filter(a, size=(1, 3, 3), mode="nearest")), shape
    b = rng.normal(size=(4, 20, 9)).astype(dtype)
    assert np.array_equal(median3x3_slices(b), ndimage.median_filter(b, size=(1, 3, 3), mode="nearest"))
    assert np.array_equal(median_filter_slices(b, 3), median3x3_slices(b))


def test_window_statistics_match_numpy(monkeypatch):
    monkeypatch.setattr(cache_mod, "CHUNK_ELEMENTS", 100)  # many slabs
    rng = np.random.default_rng(1)
    image = rng.integers(-1000, 1000, size=(9, 11, 13)).astype(np.int16)
    windowed = np.clip(image.astype(np.float64), -100, 200)
    mean, std = window_statistics(image, PAD)
    assert mean == pytest.approx(windowed.mean(), rel=1e-10)
    assert std == pytest.approx(windowed.std(), rel=1e-10)


@pytest.mark.parametrize(
    "cfg", [PAD, PreprocessConfig(median_size=0), PreprocessConfig(zscore=False), PreprocessConfig(median_size=5)]
)
def test_slab_preprocessing_equals_whole_volume(tmp_path, monkeypatch, adapter, cfg):
    monkeypatch.setattr(cache_mod, "CHUNK_ELEMENTS", 32 * 32 * 5)  # 5-slice slabs
    image = adapter.load("0").image
    stats = preprocess_to_npy(image, cfg, tmp_path / "p.npy")
    got = np.load(tmp_path / "p.npy")
    ref = preprocess_volume(image, cfg).astype(np.float16)
    assert got.dtype == np.float16 and got.shape == image.shape
    np.testing.assert_allclose(got.astype(np.float32), ref.astype(np.float32), rtol=0, atol=2e-3)
    assert stats["min"] == pytest.approx(float(got.min()))


# ---------------------------------------------------------------- round trips


def test_prepare_round_trip_pad(tmp_path, adapter):
    cache = prepare_cache(adapter, tmp_path / "c", 32, PAD, progress=False)
    assert cache.case_ids() == ["0", "1", "2"]
    assert cache.input_size == 32 and cache.preprocess == PAD
    for cid in cache.case_ids():
        case = adapter.load(cid)
        meta = cache.meta(cid)
        assert tuple(meta["shape"]) == case.image.shape == (24, 32, 32)
        assert meta["spacing"] == pytest.approx(list(case.spacing))
        assert np.allclose(meta["affine"], case.affine)
        assert meta["slice_fit"] == "pad" and meta["planes"] == list(PLANES)
        ref = preprocess_volume(case.image, PAD)
        for plane in PLANES:
            labels = cache.labels(cid, plane)
            images = cache.images(cid, plane)
            assert isinstance(labels, np.memmap) and isinstance(images, np.memmap)
            assert labels.dtype == np.uint8 and images.dtype == np.float16
            n = {"axial": 24, "coronal": 32, "sagittal": 32}[plane]
            assert labels.shape == images.shape == (n, 32, 32)
            back = slices_to_volume(np.array(labels), plane, case.image.shape, "pad", "nearest")
            assert np.array_equal(back, case.label), plane
            expected = volume_to_slices(ref, plane, 32, "pad", "linear").astype(np.float16)
            np.testing.assert_allclose(np.array(images, dtype=np.float32), expected.astype(np.float32), atol=2e-3)
            # per-slice counts in the metadata match the arrays
            table = cache.slice_table([cid], plane)
            assert list(table.columns) == ["case", "index", "liver_px", "lesion_px"]
            assert table["liver_px"].tolist() == (np.array(labels) >= 1).sum(axis=(1, 2)).tolist()
            assert table["lesion_px"].tolist() == (np.array(labels) == 2).sum(axis=(1, 2)).tolist()
    info = json.loads((tmp_path / "c" / "cache.json").read_text())
    assert info["input_size"] == 32 and info["preprocess"]["slice_fit"] == "pad" and info["dataset"]["dataset"] == "phantom"


def test_prepare_round_trip_resize_square(tmp_path):
    root = tmp_path / "cube"
    write_phantom(root, cases=1, size=24, slices=24, seed=2)
    adapter = get_dataset("phantom", root=root)
    cfg = PreprocessConfig(slice_fit="resize")
    cache = prepare_cache(adapter, tmp_path / "c", 24, cfg, progress=False)
    label = adapter.load("0").label
    for plane in PLANES:
        back = slices_to_volume(np.array(cache.labels("0", plane)), plane, label.shape, "resize", "nearest")
        assert np.array_equal(back, label)


def test_slice_table_spans_cases(tmp_path, adapter):
    cache = prepare_cache(adapter, tmp_path / "c", 16, PAD, planes=("coronal",), progress=False)
    table = cache.slice_table(["0", "2"], "coronal")
    assert len(table) == 64 and table["case"].tolist()[:1] == ["0"] and table["case"].tolist()[-1] == "2"
    assert table["liver_px"].sum() > 0 and (table["liver_px"] >= table["lesion_px"]).all()
    assert cache.slice_table([], "coronal").empty
    with pytest.raises(DataError, match="no axial slices"):
        cache.images("0", "axial")
    with pytest.raises(DataError, match="not in the cache"):
        cache.meta("7")


# ---------------------------------------------------------------- atomicity and resume


def test_crash_mid_case_leaves_no_half_case_and_rerun_completes(tmp_path, adapter, monkeypatch):
    real = cache_mod.write_plane
    calls = {"n": 0}

    def crash_after_first_plane(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_mod, "write_plane", crash_after_first_plane)
    cdir = tmp_path / "c"
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare_cache(adapter, cdir, 16, PAD, progress=False)
    assert case_dirs(cdir) == []  # the first case failed half-way: nothing of it remains
    assert SliceCache(cdir).case_ids() == []

    monkeypatch.setattr(cache_mod, "write_plane", real)
    cache = prepare_cache(adapter, cdir, 16, PAD, progress=False)
    assert cache.case_ids() == ["0", "1", "2"] and case_dirs(cdir) == ["0", "1", "2"]


def test_stale_temp_of_a_killed_prepare_is_removed(tmp_path, adapter):
    cdir = tmp_path / "c"
    stale = cdir / f"1{cache_mod.TMP_MARK}999999999"  # what a SIGKILLed writer leaves behind
    stale.mkdir(parents=True)
    (stale / "axial_image.npy").write_bytes(b"half")
    junk = cdir / f"2{cache_mod.TMP_MARK}12x"  # not a pid: removed too
    junk.mkdir()
    live = cdir / f"2{cache_mod.TMP_MARK}{os.getppid()}"  # a running writer's folder is left alone
    live.mkdir()
    prepare_cache(adapter, cdir, 16, PAD, case_ids=["0"], progress=False)
    assert case_dirs(cdir) == ["0", live.name]


def test_rerun_skips_complete_cases(tmp_path, adapter, monkeypatch):
    cdir = tmp_path / "c"
    prepare_cache(adapter, cdir, 16, PAD, case_ids=["0", "1"], progress=False)
    stamp = (cdir / "0" / "meta.json").stat().st_mtime_ns
    loaded = []
    real_load = type(adapter).load

    def counting_load(self, case_id):
        loaded.append(case_id)
        return real_load(self, case_id)

    monkeypatch.setattr(type(adapter), "load", counting_load)
    assert missing_cases(cdir, ["0", "1", "2"]) == ["2"]
    prepare_cache(adapter, cdir, 16, PAD, progress=False)
    assert loaded == ["2"]
    assert (cdir / "0" / "meta.json").stat().st_mtime_ns == stamp


def test_adding_planes_reprepares_with_the_union(tmp_path, adapter):
    cdir = tmp_path / "c"
    prepare_cache(adapter, cdir, 16, PAD, planes=("sagittal",), case_ids=["0"], progress=False)
    assert missing_cases(cdir, ["0"], ("axial",)) == ["0"]
    assert missing_cases(cdir, ["0"], ("sagittal",)) == []
    cache = prepare_cache(adapter, cdir, 16, PAD, planes=("axial",), case_ids=["0"], progress=False)
    assert cache.planes("0") == ["axial", "sagittal"]
    assert case_dirs(cdir) == ["0"]


def test_mismatched_or_corrupt_cache_json(tmp_path, adapter):
    cdir = tmp_path / "c"
    prepare_cache(adapter, cdir, 16, PAD, case_ids=["0"], progress=False)
    with pytest.raises(DataError, match="cache.json"):
        prepare_cache(adapter, cdir, 24, PAD, case_ids=["0"], progress=False)
    (cdir / "cache.json").write_text("{broken")
    with pytest.raises(DataError, match="cache.json"):
        SliceCache(cdir)


def test_bad_arguments(tmp_path, adapter):
    with pytest.raises(ConfigError, match="plane"):
        prepare_cache(adapter, tmp_path / "c", 16, PAD, planes=("oblique",), progress=False)
    with pytest.raises(ConfigError, match="slice_fit"):
        prepare_cache(adapter, tmp_path / "c", 16, PreprocessConfig(slice_fit="crop"), progress=False)


def test_corrupt_array_is_a_data_error(tmp_path, adapter):
    cdir = tmp_path / "c"
    cache = prepare_cache(adapter, cdir, 16, PAD, planes=("axial",), case_ids=["0"], progress=False)
    np.save(cdir / "0" / "axial_label.npy", np.zeros((3, 16, 16), np.uint8))
    with pytest.raises(DataError, match="axial_label.npy"):
        cache.labels("0", "axial")


# ---------------------------------------------------------------- naming, runs, CLI


def test_cache_dir_depends_on_size_and_preprocessing(tmp_path):
    a = cache_dir_for("cache", "phantom", tmp_path, 64, PAD)
    assert a == cache_dir_for("cache", "phantom", tmp_path, 64, PreprocessConfig())
    assert a != cache_dir_for("cache", "phantom", tmp_path, 32, PAD)
    assert a != cache_dir_for("cache", "phantom", tmp_path, 64, PreprocessConfig(median_size=0))
    assert a.parent != cache_dir_for("cache", "phantom", tmp_path / "other", 64, PAD).parent
    # label options: the default labels keep the folder of caches made before the option existed
    assert a == cache_dir_for("cache", "phantom", tmp_path, 64, PAD, {})
    cysts = cache_dir_for("cache", "ircadb", tmp_path, 64, PAD, {"include_cysts": True})
    assert cysts != cache_dir_for("cache", "ircadb", tmp_path, 64, PAD, {}) and cysts.parent == \
        cache_dir_for("cache", "ircadb", tmp_path, 64, PAD).parent  # same data set folder: one split


def test_open_or_prepare_for_a_run(tmp_path, phantom_root):
    cfg = RunConfig(model="unet", dataset="phantom", root=str(phantom_root), cache=str(tmp_path / "cache"),
                    profile=get_profile("golden"))
    cache, splits = open_or_prepare(cfg, progress=False)
    assert cache.case_ids() == ["0", "1", "2"] and cache.input_size == cfg.profile.input_size
    assert all(cache.planes(c) == list(PLANES) for c in cache.case_ids())
    assert {k: len(v) for k, v in splits.items()} == {"train": 1, "val": 1, "test": 1}
    path = splits_path(cfg.cache, "phantom", phantom_root)
    assert json.loads(path.read_text())["train"] == splits["train"]
    again, splits2 = open_or_prepare(cfg, progress=False)  # reuses both
    assert splits2 == splits and again.dir == cache.dir


def test_cli_phantom_and_prepare(tmp_path):
    from bench.cli import app

    runner = CliRunner()
    out = tmp_path / "ph"
    res = runner.invoke(app, ["data", "phantom", str(out), "--cases", "2", "--size", "16", "--slices", "8", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "wrote 2 phantom case(s)" in res.output
    assert json.loads((out / "phantom.json").read_text())["seed"] == 3

    cache = tmp_path / "cache"
    args = ["data", "prepare", "--root", str(out), "--cache", str(cache), "--profile", "golden"]
    res = runner.invoke(app, args + ["--planes", "axial,coronal"])
    assert res.exit_code == 0, res.output
    assert "2 case(s), 2 prepared now" in res.output and "train 1, val 1, test 0" in res.output
    res = runner.invoke(app, args + ["--planes", "axial"])
    assert res.exit_code == 0 and "0 prepared now" in res.output

    given = tmp_path / "mine.json"
    given.write_text(json.dumps({"train": ["1"], "val": [], "test": ["0"]}))
    res = runner.invoke(app, args + ["--splits", str(given), "--set", "preprocess.median_size=0"])
    assert res.exit_code == 0, res.output
    assert "train 1, val 0, test 1" in res.output and "2 prepared now" in res.output  # another fingerprint

    res = runner.invoke(app, args + ["--planes", "oblique"])
    assert isinstance(res.exception, ConfigError)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": ["9"], "val": [], "test": []}))
    res = runner.invoke(app, args + ["--splits", str(bad)])
    assert isinstance(res.exception, ConfigError) and "bad.json" in str(res.exception)
