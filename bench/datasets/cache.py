"""The on-disk slice cache: preprocessed, network-sized slices of every case along every plane.

Why a cache: training reads random slices for 100 epochs; decoding a NIfTI, windowing, filtering
and resizing a 512x512x500 volume on every read would dominate the run. Each case is prepared
once per (data set, data root, input size, preprocessing) and then read as memory maps.

Layout (``cache_dir_for`` picks ``<cache>/<dataset>-<root hash>/<input_size>px-<fingerprint>/``)::

    cache.json                       version, data set, input_size, preprocess config
    <case>/meta.json                 original (Z, Y, X) shape, spacing, affine, slice_fit, z-score
                                     statistics, per-plane per-slice liver / lesion pixel counts,
                                     the source files' sizes, mtimes and hashes and their fingerprint
    <case>/<plane>_image.npy         (N, S, S) float16 preprocessed slices
    <case>/<plane>_label.npy         (N, S, S) uint8 0/1/2 labels (nearest-neighbour resize)

Why ``.npy`` and not TIFF: ``np.load(mmap_mode="r")`` maps the file with no decoding, so a batch
touches only its own slices' pages and DataLoader workers share the page cache; the header is
trivial (shape, dtype), so a writer can stream slices into it in order. Multi-page TIFF would
need a tifffile decode per page (or uncompressed, contiguous strips to be memory-mappable at
all) and brings nothing the benchmark uses. float16 halves the disk and page-cache footprint of
float32; z-scored values lie within a few units, where float16 keeps ~3 significant digits.

Bound to its sources: every prepare compares each cached case's recorded source fingerprint
(`bench.datasets.fingerprint`) with its files now; a changed case is prepared again and a warning
line says so (``case 3: source changed (segmentation-3.nii.gz changed), re-prepared``). A CT with
NaN or infinite voxels is refused at prepare, naming the file and the count: one such voxel would
make the whole case's z-score statistics (and every cached slice) NaN, and there is no fill rule
a reader could not be surprised by.

Atomic and resumable: a case is written into ``<case>.tmp-<pid>/`` and renamed into place when
all its files are complete, so a killed prepare never leaves a half case; a rerun removes temp
folders of dead processes and skips complete cases.

Memory (a LiTS-sized 512x512x500 int16 case, 262 MB): preprocessing runs in axial slabs (a
streaming pass for the z-score statistics, then window -> median -> z-score per slab, appended
to a float16 temp ``.npy``); the HU volume is released before plane slicing, which reads the
temp file as a memory map in chunks and appends each plane's output through a sequential
``.npy`` writer (plain file writes: unlike writes into a memory map, they do not keep the written
pages in this process's resident set). No whole-volume float32/float64 copy is ever made;
``benchmarks/prepare.py`` measures peak RSS and throughput.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from bench.atomic import OLD_MARK, TMP_MARK, pid_alive, remove_stale_tmp, replace_dir, space_errors, write_json
from bench.config import PLANE_AXIS, PLANES, PreprocessConfig, Profile, RunConfig
from bench.datasets import get_dataset
from bench.datasets.base import DatasetAdapter, check_case_id, natural_key
from bench.datasets.fingerprint import describe_change, fingerprint_of, source_entries
from bench.datasets.planes import FITS, check_resample, num_slices, scaled_shape, slice_shape, slice_spacing, volume_to_slices
from bench.datasets.preprocess import hu_window, median_filter_slices, window_zscore, zscore
from bench.datasets.splits import load_or_create_splits
from bench.errors import ConfigError, DataError
from bench.paths import dataset_cache_root, splits_path
from bench.progress import progress

CACHE_VERSION = 1
CACHE_FILE = "cache.json"
META_FILE = "meta.json"
PREP_FILE = "volume_prep.npy"  # the float16 preprocessed volume, only inside a case's temp folder
# Elements per working chunk (8 MB of float32): large enough for vectorised speed, small against the
# volume even with the ~10 slab-sized temporaries of the median alive at once.
CHUNK_ELEMENTS = 2 * 1024 * 1024


# ---------------------------------------------------------------- naming


def cache_fingerprint(input_size: int, preprocess: PreprocessConfig,
                      label_options: Mapping[str, Any] | None = None) -> str:
    """Short hash of what changes the cached arrays (input size, preprocessing, cache version, and
    the adapter's label options away from their defaults, e.g. 3D-IRCADb ``include_cysts``).

    Default label options add nothing to the hash, so caches prepared before the option existed
    stay valid; ``include_cysts=True`` lands in another folder, never mixing the two label definitions.
    """
    content: dict[str, Any] = {"input_size": int(input_size), "preprocess": dataclasses.asdict(preprocess),
                               "version": CACHE_VERSION}
    if label_options:
        content["labels"] = dict(sorted(label_options.items()))
    blob = json.dumps(content, sort_keys=True).encode()
    return hashlib.sha1(blob).hexdigest()[:10]


def cache_dir_for(
    cache_root: str | Path, dataset: str, data_root: str | Path, input_size: int, preprocess: PreprocessConfig,
    label_options: Mapping[str, Any] | None = None,
) -> Path:
    """``<cache>/<dataset>-<root hash>/<input_size>px-<fingerprint>``: profiles never share arrays.

    ``label_options``: the adapter's `label_fingerprint()` (``{}`` for the default labels). The
    folder name is for humans; `SliceCache` reads what the arrays are from ``cache.json``.
    """
    fp = cache_fingerprint(input_size, preprocess, label_options)
    return dataset_cache_root(cache_root, dataset, data_root) / f"{int(input_size)}px-{fp}"


def image_path(cache_dir: Path, case_id: str, plane: str) -> Path:
    return Path(cache_dir) / case_id / f"{plane}_image.npy"


def label_path(cache_dir: Path, case_id: str, plane: str) -> Path:
    return Path(cache_dir) / case_id / f"{plane}_label.npy"


def _check_planes(planes: Iterable[str]) -> tuple[str, ...]:
    planes = tuple(planes)
    bad = [p for p in planes if p not in PLANES]
    if bad or not planes:
        raise ConfigError(f"unknown plane(s) {bad or planes} (known: {', '.join(PLANES)})")
    return tuple(p for p in PLANES if p in planes)  # canonical order, no duplicates


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


# ---------------------------------------------------------------- read side


class SliceCache:
    """Read access to a prepared cache folder: memory-mapped slices and per-slice foreground counts."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.dir = Path(cache_dir)
        self.info = _read_json(self.dir / CACHE_FILE)
        try:
            if int(self.info["version"]) != CACHE_VERSION:
                raise DataError(f"{self.dir / CACHE_FILE}: cache version {self.info['version']} (expected {CACHE_VERSION})")
            self.input_size = int(self.info["input_size"])
            self.preprocess = PreprocessConfig(**self.info["preprocess"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{self.dir / CACHE_FILE}: malformed ({exc})") from None
        self._meta: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"SliceCache({str(self.dir)!r}, input_size={self.input_size})"

    def case_ids(self) -> list[str]:
        """Complete cases (a ``meta.json`` is written last), in natural order."""
        if not self.dir.is_dir():
            return []
        ids = [p.name for p in self.dir.iterdir() if p.is_dir() and TMP_MARK not in p.name and (p / META_FILE).is_file()]
        return sorted(ids, key=natural_key)

    def meta(self, case_id: str) -> dict[str, Any]:
        if case_id not in self._meta:
            path = self.dir / case_id / META_FILE
            if not path.is_file():
                raise DataError(f"{path}: case {case_id!r} is not in the cache (run: bench data prepare)")
            self._meta[case_id] = _read_json(path)
        return self._meta[case_id]

    def planes(self, case_id: str) -> list[str]:
        return list(self.meta(case_id)["planes"])

    def has(self, case_id: str, planes: Iterable[str] = PLANES) -> bool:
        """Whether ``case_id`` is complete for every plane in ``planes`` (at this cache version)."""
        path = self.dir / case_id / META_FILE
        if not path.is_file():
            return False
        try:
            meta = self.meta(case_id)
        except DataError:
            return False
        return meta.get("version") == CACHE_VERSION and set(planes) <= set(meta.get("planes", ()))

    def _open(self, case_id: str, plane: str, kind: str) -> np.memmap:
        meta = self.meta(case_id)
        if plane not in meta["planes"]:
            raise DataError(
                f"{self.dir / case_id}: no {plane} slices cached (have {', '.join(meta['planes'])}; "
                f"run: bench data prepare --planes {plane})"
            )
        path = (image_path if kind == "image" else label_path)(self.dir, case_id, plane)
        dtype = np.float16 if kind == "image" else np.uint8
        expected = (int(meta["slices"][plane]["n"]), self.input_size, self.input_size)
        try:
            arr = np.load(path, mmap_mode="r")
        except FileNotFoundError:
            raise DataError(f"{path}: missing from a complete cache case (delete {path.parent} and prepare again)") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable ({str(exc).splitlines()[0]})") from None
        if arr.shape != expected or arr.dtype != dtype:
            raise DataError(f"{path}: {arr.dtype}{arr.shape}, expected {np.dtype(dtype)}{expected}")
        return arr

    def images(self, case_id: str, plane: str) -> np.memmap:
        """(N, S, S) float16 preprocessed slices (read-only memory map)."""
        return self._open(case_id, plane, "image")

    def labels(self, case_id: str, plane: str) -> np.memmap:
        """(N, S, S) uint8 labels 0/1/2 (read-only memory map)."""
        return self._open(case_id, plane, "label")

    def slice_table(self, case_ids: Sequence[str], plane: str) -> pd.DataFrame:
        """One row per slice: ``case, index, liver_px, lesion_px`` from the metadata (no array reads)."""
        frames = []
        for case in case_ids:
            meta = self.meta(case)
            if plane not in meta["planes"]:
                raise DataError(f"{self.dir / case}: no {plane} slices cached (run: bench data prepare --planes {plane})")
            counts = meta["slices"][plane]
            n = int(counts["n"])
            frames.append(pd.DataFrame({
                "case": [case] * n,
                "index": np.arange(n, dtype=np.int64),
                "liver_px": np.asarray(counts["liver_px"], dtype=np.int64),
                "lesion_px": np.asarray(counts["lesion_px"], dtype=np.int64),
            }))
        if not frames:
            return pd.DataFrame({"case": pd.Series(dtype=str), "index": pd.Series(dtype=np.int64),
                                 "liver_px": pd.Series(dtype=np.int64), "lesion_px": pd.Series(dtype=np.int64)})
        return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------- preprocessing in slabs


def _median(slab: np.ndarray, size: int) -> np.ndarray:
    return median_filter_slices(slab, size)


def _slab_len(shape_rest: tuple[int, ...]) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, int(np.prod(shape_rest))))


def _integer_window(dtype: np.dtype, cfg: PreprocessConfig) -> bool:
    """Whether the window can be applied in ``dtype`` itself: integer CT, integral bounds it can hold."""
    if dtype.kind not in "iu" or not (float(cfg.hu_min).is_integer() and float(cfg.hu_max).is_integer()):
        return False
    info = np.iinfo(dtype)
    return info.min <= int(cfg.hu_min) and int(cfg.hu_max) <= info.max


def _window(slab: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """`preprocess.hu_window`, kept in the integer type for integer CT with an integral window.

    Exact (integers within the window are the same numbers in float32), and the median then
    moves half the bytes of float32.
    """
    if _integer_window(slab.dtype, cfg):
        return np.clip(slab, int(cfg.hu_min), int(cfg.hu_max))
    return hu_window(slab, cfg.hu_min, cfg.hu_max)


def window_statistics(image: np.ndarray, cfg: PreprocessConfig) -> tuple[float, float]:
    """Mean and (population) sd of the HU-windowed volume, streamed over axial slabs.

    Integer CT: exact integer sums of values and squares. Float CT: per-slab float64 moments
    merged with Chan et al.'s parallel update. Either way the result matches the two-pass
    `np.mean`/`np.std` of `preprocess.zscore` to rounding, without a whole-volume float copy.
    """
    step = _slab_len(image.shape[1:])
    slabs = (_window(image[z0 : z0 + step], cfg) for z0 in range(0, image.shape[0], step))
    if _integer_window(image.dtype, cfg):
        n, s1, s2 = 0, 0, 0
        for w in slabs:
            flat = w.ravel()
            n += flat.size
            s1 += int(flat.sum(dtype=np.int64))
            s2 += int(np.einsum("i,i->", flat, flat, dtype=np.int64))
        if n == 0:
            return 0.0, 0.0
        var = (n * s2 - s1 * s1) / (n * n)  # exact integers up to this one division
        return s1 / n, float(np.sqrt(max(var, 0.0)))
    n_tot, mean_tot, m2_tot = 0, 0.0, 0.0
    for w in slabs:
        w = w.astype(np.float32, copy=False)
        n = w.size
        if n == 0:
            continue
        mean = float(w.mean(dtype=np.float64))
        m2 = float(np.square(w - np.float32(mean), dtype=np.float64).sum())
        delta = mean - mean_tot
        total = n_tot + n
        mean_tot += delta * n / total
        m2_tot += m2 + delta * delta * n_tot * n / total
        n_tot = total
    if n_tot == 0:
        return 0.0, 0.0
    return mean_tot, float(np.sqrt(m2_tot / n_tot))


class NpyWriter:
    """Streams an array of known shape into a ``.npy`` file, first-axis chunk after chunk.

    Plain sequential writes keep the written pages out of this process's resident memory (a
    writable memory map would hold them until unmapped); the row count is checked on close.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype | type) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize  # named when the disk is full
        self._f = open(self.path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        with space_errors(self.path, self.nbytes):
            np.lib.format.write_array_header_1_0(self._f, header)

    def write(self, chunk: np.ndarray) -> None:
        chunk = np.ascontiguousarray(chunk, dtype=self.dtype)
        if chunk.shape[1:] != self.shape[1:] or self.rows + chunk.shape[0] > self.shape[0]:
            raise ValueError(f"{self.path}: chunk {chunk.shape} does not fit {self.shape} after {self.rows} rows")
        with space_errors(self.path, self.nbytes):  # disk full or ulimit -f: one line naming the file
            chunk.tofile(self._f)
        self.rows += chunk.shape[0]

    def close(self) -> None:
        with space_errors(self.path, self.nbytes):
            self._f.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path}: wrote {self.rows} of {self.shape[0]} rows")

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            with contextlib.suppress(OSError):  # flushing a full disk fails again: keep the first error
                self._f.close()


def preprocess_to_npy(image: np.ndarray, cfg: PreprocessConfig, path: Path) -> dict[str, float]:
    """`preprocess.preprocess_volume` in axial slabs, written as float16 (Z, Y, X) to ``path``.

    The median runs on windowed HU before the z-score (in int16 for integer CT): both window and
    z-score are monotone non-decreasing, and a median commutes with such maps, so the result
    equals the paper's order (window -> z-score -> median) exactly, at a fraction of the cost.
    Returns the z-score statistics and the volume's minimum (the pad value of its slices).
    """
    if not cfg.zscore:
        mean, std = 0.0, 1.0
    elif cfg.zscore_stats == "window":
        mean, std = window_zscore(cfg)
    else:
        mean, std = window_statistics(image, cfg)
    vmin = np.inf
    step = _slab_len(image.shape[1:])
    with NpyWriter(path, image.shape, np.float16) as out:
        for z0 in range(0, image.shape[0], step):
            w = _median(_window(image[z0 : z0 + step], cfg), cfg.median_size)
            w16 = (zscore(w, mean, std) if cfg.zscore else w).astype(np.float16)
            if w16.size:
                vmin = min(vmin, float(w16.min()))
            out.write(w16)
    return {"mean": mean, "std": std, "min": float(vmin) if np.isfinite(vmin) else 0.0}


def _plane_chunks(volume: np.ndarray, plane: str, size: int) -> Iterable[np.ndarray]:
    """Sub-volumes holding consecutive slices of ``plane`` (a slice depends only on its own voxels)."""
    axis = PLANE_AXIS[plane]
    n = volume.shape[axis]
    per_slice = max(size * size, int(np.prod(volume.shape)) // max(n, 1))
    step = max(1, CHUNK_ELEMENTS // per_slice)
    for start in range(0, n, step):
        index = [slice(None)] * 3
        index[axis] = slice(start, start + step)
        yield volume[tuple(index)]


def write_plane(
    prep: np.ndarray, label: np.ndarray, plane: str, size: int, fit: str, pad_value: float, folder: Path,
    spacing: tuple[float, float, float] | None = None, target_mm: float = 0.0,
) -> dict[str, Any]:
    """Write one plane's image and label stacks into ``folder``; returns its per-slice foreground counts."""
    n = num_slices(prep.shape, plane)
    h, w = slice_shape(prep.shape, plane)
    # Padding alone copies values: stay in float16. A resize interpolates: do it in float32.
    if fit == "spacing":
        resized = scaled_shape((h, w), slice_spacing(spacing, plane), target_mm) != (h, w)
    else:
        resized = (max(h, w), max(h, w)) != (size, size) if fit == "pad" else (h, w) != (size, size)
    work_dtype = np.float32 if resized else np.float16
    liver: list[int] = []
    lesion: list[int] = []
    with NpyWriter(folder / f"{plane}_image.npy", (n, size, size), np.float16) as out:
        for chunk in _plane_chunks(prep, plane, size):
            # Copy the chunk out of the (read-only) map first: the plane reordering inside
            # volume_to_slices is then a transpose within a few MB instead of strided reads over
            # the whole volume (3x faster for sagittal slices), and torch gets writable memory.
            sl = volume_to_slices(np.array(chunk, dtype=work_dtype), plane, size, fit, "linear", pad_value,
                                  spacing, target_mm)
            out.write(sl)
    with NpyWriter(folder / f"{plane}_label.npy", (n, size, size), np.uint8) as out:
        for chunk in _plane_chunks(label, plane, size):
            sl = volume_to_slices(np.array(chunk), plane, size, fit, "nearest", 0.0, spacing, target_mm)
            liver += np.count_nonzero(sl, axis=(1, 2)).tolist()  # label >= 1
            lesion += np.count_nonzero(sl == 2, axis=(1, 2)).tolist()
            out.write(sl)
    return {"n": n, "liver_px": liver, "lesion_px": lesion}


# ---------------------------------------------------------------- write side


def remove_stale_temp(cache_dir: Path) -> list[Path]:
    """Clean ``*.tmp-<pid>`` leftovers of prepares that died (live writers' folders are kept).

    A complete case moved aside as ``<case>.old.tmp-<pid>`` by `bench.atomic.replace_dir` (its writer
    killed between the two renames) is renamed back when ``<case>`` is missing; every other
    leftover (a half-written case, an aside copy whose new case made it into place) is deleted
    (`bench.atomic.remove_stale_tmp`). Returns the leftover paths handled either way.
    """
    restored = []
    if cache_dir.is_dir():
        for p in cache_dir.iterdir():
            if TMP_MARK not in p.name:
                continue
            stem, pid_text = p.name.rsplit(TMP_MARK, 1)
            if pid_text.isdigit() and pid_alive(int(pid_text)):
                continue
            if stem.endswith(OLD_MARK) and (p / META_FILE).is_file():  # complete: moved aside, not half-written
                original = p.with_name(stem[: -len(OLD_MARK)])
                if original.name and not original.exists():
                    os.replace(p, original)  # the only copy of a complete case: put it back
                    restored.append(p)
    return restored + remove_stale_tmp(cache_dir)


def _cache_info(adapter: DatasetAdapter, input_size: int, preprocess: PreprocessConfig) -> dict[str, Any]:
    return {
        "version": CACHE_VERSION,
        "dataset": adapter.describe(),
        "input_size": int(input_size),
        "preprocess": dataclasses.asdict(preprocess),
        "label_options": adapter.label_fingerprint(),
        "layout": "<case>/<plane>_image.npy (N,S,S) float16, <case>/<plane>_label.npy (N,S,S) uint8, <case>/meta.json",
    }


def _ensure_cache_info(cache_dir: Path, info: dict[str, Any]) -> None:
    path = cache_dir / CACHE_FILE
    if path.is_file():
        old = _read_json(path)
        for key in ("version", "input_size", "preprocess", "label_options"):
            if old.get(key, {} if key == "label_options" else None) != info[key]:
                raise DataError(f"{path}: {key} {old.get(key)!r} differs from the requested {info[key]!r}")
        return
    write_json(path, info)


def source_change(adapter: DatasetAdapter, meta: Mapping[str, Any], case_id: str) -> str | None:
    """Why a cached case no longer matches its source files (None: it does).

    Cheap: files whose size and mtime equal the recorded ones keep their recorded hash
    (`bench.datasets.fingerprint.source_entries`).
    """
    if "source_fingerprint" not in meta:
        return "no source fingerprint recorded (prepared by an older version)"
    recorded = meta.get("sources") or {}
    current = source_entries(adapter.source_files(case_id), adapter.root, recorded)
    if fingerprint_of(current) == meta["source_fingerprint"]:
        return None
    return describe_change(recorded, current)


def missing_cases(cache_dir: str | Path, case_ids: Iterable[str], planes: Iterable[str] = PLANES,
                  adapter: DatasetAdapter | None = None) -> list[str]:
    """Cases not yet complete for all of ``planes``, and (given the ``adapter``) cases whose source
    files changed since they were cached: what `prepare_cache` would write."""
    planes = _check_planes(planes)
    cache_dir = Path(cache_dir)
    out = []
    for cid in case_ids:
        meta_path = cache_dir / cid / META_FILE
        try:
            meta = _read_json(meta_path) if meta_path.is_file() else None
        except DataError:
            meta = None
        if meta is None or meta.get("version") != CACHE_VERSION or not set(planes) <= set(meta.get("planes", ())):
            out.append(cid)
        elif adapter is not None and source_change(adapter, meta, cid) is not None:
            out.append(cid)
    return out


def count_nonfinite(image: np.ndarray) -> int:
    """NaN and infinite voxels of a volume, counted in axial slabs (no whole-volume boolean copy)."""
    if image.dtype.kind not in "fc":
        return 0
    step = _slab_len(image.shape[1:])
    return sum(int(np.count_nonzero(~np.isfinite(image[z0 : z0 + step]))) for z0 in range(0, image.shape[0], step))


def prepare_case(
    adapter: DatasetAdapter, cache_dir: Path, case_id: str, input_size: int, preprocess: PreprocessConfig,
    planes: Sequence[str] = PLANES, known_sources: Mapping[str, Any] | None = None,
) -> Path:
    """Load, preprocess and slice one case into ``<cache_dir>/<case_id>``, atomically (see module doc).

    ``known_sources``: the source entries of the case's previous meta.json (hashes reused for files
    whose size and mtime did not change).
    """
    planes = _check_planes(planes)
    check_case_id(case_id, adapter.root)  # "", "." or ".." would make `final` the cache itself or its parent
    final = cache_dir / case_id
    tmp = cache_dir / f"{case_id}{TMP_MARK}{os.getpid()}"
    try:  # mkdir inside the try: an interrupt right after it must still remove the folder
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        # fingerprinted before the read: a file changed while it is read is noticed by the next prepare
        sources = source_entries(adapter.source_files(case_id), adapter.root, known_sources)
        case = adapter.load(case_id)
        if case.label is None:
            raise DataError(f"{case.meta.get('source') or case_id}: case {case_id} has no segmentation; the slice cache needs labels")
        bad = count_nonfinite(case.image)
        if bad:
            where = case.meta.get("ct") or case.meta.get("source") or case_id
            raise DataError(f"{where}: {bad} NaN/infinite voxel(s) in the CT of case {case_id}; refusing to prepare it "
                            f"(one such voxel makes the whole case NaN): fix the file or remove the case")
        image, label = case.image, case.label
        if preprocess.slice_fit == "spacing":  # a wrong voxel spacing is refused before gigabytes are allocated
            check_resample(image.shape, case.spacing, planes, preprocess.spacing_mm, case.meta.get("source") or case_id)
        meta: dict[str, Any] = {
            "version": CACHE_VERSION,
            "case": case_id,
            "shape": list(image.shape),
            "spacing": list(case.spacing),
            "affine": None if case.affine is None else np.asarray(case.affine, dtype=float).tolist(),
            "source_dtype": str(image.dtype),
            "source": case.meta.get("source"),
            "input_size": int(input_size),
            "slice_fit": preprocess.slice_fit,
            "sources": sources,
            "source_fingerprint": fingerprint_of(sources),
        }
        del case  # the HU volume is freed as soon as it is preprocessed
        stats = preprocess_to_npy(image, preprocess, tmp / PREP_FILE)
        del image
        meta["zscore"] = {"mean": stats["mean"], "std": stats["std"]}
        meta["pad_value"] = stats["min"]
        prep = np.load(tmp / PREP_FILE, mmap_mode="r")
        slices = {}
        for plane in planes:
            slices[plane] = write_plane(prep, label, plane, input_size, preprocess.slice_fit, stats["min"], tmp,
                                        tuple(meta["spacing"]), preprocess.spacing_mm)
        del prep
        (tmp / PREP_FILE).unlink()
        meta["planes"] = list(planes)
        meta["slices"] = slices
        write_json(tmp / META_FILE, meta)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def prepare_cache(
    adapter: DatasetAdapter,
    cache_dir: Path,
    input_size: int,
    preprocess: PreprocessConfig,
    planes: Sequence[str] = PLANES,
    case_ids: Sequence[str] | None = None,
    progress: bool = True,
) -> SliceCache:
    """Prepare every missing case (all of ``case_ids``, default the adapter's) and open the cache.

    A case already complete for ``planes`` is skipped; a case cached for fewer planes is prepared
    again with the union of its planes and ``planes``.
    """
    planes = _check_planes(planes)
    if input_size < 1:
        raise ConfigError(f"input_size must be positive, got {input_size}")
    if not preprocess.hu_min < preprocess.hu_max:
        raise ConfigError(f"HU window [{preprocess.hu_min}, {preprocess.hu_max}] is empty")
    if preprocess.slice_fit not in FITS:
        raise ConfigError(f"unknown slice_fit {preprocess.slice_fit!r} (known: {', '.join(FITS)})")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp(cache_dir)
    _ensure_cache_info(cache_dir, _cache_info(adapter, input_size, preprocess))
    ids = list(adapter.case_ids() if case_ids is None else case_ids)
    todo = missing_cases(cache_dir, ids, planes)
    changed: dict[str, str] = {}
    for cid in ids:
        if cid in todo:
            continue
        why = source_change(adapter, _read_json(cache_dir / cid / META_FILE), cid)
        if why is not None:
            changed[cid] = why
            todo.append(cid)
    todo.sort(key=ids.index)
    with _progress(progress, f"prepare {adapter.name or 'data'} at {input_size}px", len(todo)) as advance:
        for cid in todo:
            have: list[str] = []
            known: dict[str, Any] = {}
            meta_path = cache_dir / cid / META_FILE
            if meta_path.is_file():
                with contextlib.suppress(DataError):
                    meta = _read_json(meta_path)
                    if meta.get("version") == CACHE_VERSION:
                        have = list(meta.get("planes", ()))
                        known = meta.get("sources") or {}
            prepare_case(adapter, cache_dir, cid, input_size, preprocess, _check_planes(set(have) | set(planes)),
                         known_sources=known)
            advance(cid)
            if cid in changed:
                warnings.warn(f"case {cid}: source changed ({changed[cid]}), re-prepared in {cache_dir}", stacklevel=2)
    return SliceCache(cache_dir)


@contextlib.contextmanager
def _progress(enabled: bool, title: str, total: int):  # type: ignore[no-untyped-def]
    """Per prepared case: a bar on a terminal, one plain line in a log (`bench.progress`)."""
    if total == 0:
        yield lambda case_id: None
        return
    with progress(title, total, enabled) as bar:
        done = [0]

        def advance(case_id: str) -> None:
            done[0] += 1
            bar.step()
            bar.say(f"case {case_id} ({done[0]}/{total})")

        try:
            yield advance
        except BaseException:
            bar.hide()  # on an error or an interrupt its one line stands alone
            raise


# ---------------------------------------------------------------- the one call runs make


def prepare_dataset(
    dataset: str,
    root: str | Path | None,
    cache: str | Path,
    profile: Profile,
    splits_file: str | Path | None = None,
    planes: Sequence[str] = PLANES,
    progress: bool = True,
    folds: int = 0,
    fold: int | None = None,
    include_cysts: bool = False,
) -> tuple[SliceCache, dict[str, list[str]]]:
    """Resolve the data set, prepare its cache for ``profile`` and load or create its split.

    The split lives beside the data set's caches (`bench.paths.splits_path`), made with seed 0:
    it belongs to the data set, not to a run, so every model, plane, profile and run seed is
    scored on the same patients. ``splits_file`` (``--splits``) replaces it for this call only.
    ``folds`` adds K cross-validation folds to the split file; ``fold`` returns that fold's split.
    ``include_cysts`` (3D-IRCADb) changes the labels, hence the cache folder, not the split.
    """
    adapter = get_dataset(dataset, root=root or None, include_cysts=include_cysts)
    cache_dir = cache_dir_for(cache, dataset, adapter.root, profile.input_size, profile.preprocess,
                              adapter.label_fingerprint())
    ids = adapter.case_ids()
    slice_cache = prepare_cache(adapter, cache_dir, profile.input_size, profile.preprocess, planes, ids, progress)
    splits = load_or_create_splits(
        splits_path(cache, dataset, adapter.root), ids, seed=0, given=Path(splits_file) if splits_file else None,
        folds=folds, fold=fold,
    )
    return slice_cache, splits


def open_or_prepare(cfg: RunConfig, progress: bool = True,
                    profile: Profile | None = None) -> tuple[SliceCache, dict[str, list[str]]]:
    """The cache (every case, all three planes) and the split a run uses; prepares what is missing.

    ``profile`` (default: the run's) names the slice grid: a lesion run on the liver ROI reads a
    finer grid (`bench.models.lesion_roi.data_profile`); the split is the data set's either way.
    """
    return prepare_dataset(cfg.dataset, cfg.root or None, cfg.cache, profile or cfg.profile, cfg.splits or None, PLANES,
                           progress, fold=cfg.fold, include_cysts=cfg.include_cysts)
