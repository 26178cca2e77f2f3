"""TP/FP/FN/TN counts: the single source every score, reduction and table is computed from.

Why counts first (smp ``metrics/functional.py``, nnU-Net ``evaluate_predictions.py``): per-case
means, global (summed) scores, DDP all-reduce and later re-analysis all follow from four integers
per case and class, so no metric is ever computed twice in two different ways.

How: one pass over the volume, in cache-sized chunks that reuse a few uint8 buffers, so no int64
or one-hot copy of the volume is ever made. On CUDA (and in `confusion_matrix`) a small confusion
matrix (rows = reference, columns = prediction) comes from ``torch.bincount`` of ``ref * C + pred``
formed in uint8. On the CPU, where torch.bincount is a slow scalar loop, vectorised byte counting
(numpy ``count_nonzero`` on the same memory, zero-copy from CPU tensors) gives the same integers;
on a 512x512x200 pair it runs at about the speed of numpy summing both arrays
(``benchmarks/metrics.py``). Classes:

* liver  = label >= 1 (liver including lesions, the LiTS scoring rule)
* lesion = label == 2

All sums are int64 on the device and returned as Python ints, so totals over many cases never
overflow (volumes have far more than 2**31 voxels summed over a data set).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from bench.devices import resolve_device
from bench.errors import DataError

ArrayLike = np.ndarray | torch.Tensor

LABEL_CLASSES = ("liver", "lesion")

# Voxels per step: CPU chunks stay in L2 cache and reuse the same buffers (measured on 2 cores:
# 2**18 is the sweet spot, 2**16 is ~30 % slower); on CUDA the whole volume is one launch.
CPU_CHUNK = 1 << 18
CUDA_CHUNK = 1 << 28


@dataclass(frozen=True)
class Counts:
    """Confusion counts of one binary task on one case (or summed over cases)."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.tp, self.fp, self.fn, self.tn)

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)


def _to_tensor(x: ArrayLike, device: torch.device) -> torch.Tensor:
    """Zero-copy where possible: a contiguous flat tensor, bool viewed as uint8."""
    if isinstance(x, np.ndarray):
        if x.dtype == np.bool_:
            x = x.view(np.uint8)
        elif x.dtype.kind == "u" and x.dtype.itemsize > 1:  # uint16/32/64: torch support is partial
            x = x.astype(np.int64)
        with warnings.catch_warnings():  # read-only memmaps (nibabel) are never written here
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        t = x.detach()
        if t.dtype == torch.bool:
            t = t.view(torch.uint8) if t.is_contiguous() else t.to(torch.uint8)
    else:
        raise TypeError(f"expected a numpy array or torch tensor, got {type(x).__name__}")
    return t.to(device, non_blocking=True).reshape(-1)


def _chunk_as_uint8(chunk: torch.Tensor, num_classes: int, out: torch.Tensor, check: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return the chunk as uint8 (``out`` reused when a cast is needed) and its max for the range check."""
    if chunk.dtype == torch.uint8:
        return chunk, (chunk.max() if check else None)
    if chunk.is_floating_point():
        if check and not torch.equal(chunk, chunk.trunc()):
            raise DataError("label/mask values must be whole numbers (got fractional values: probabilities?)")
    low, high = torch.aminmax(chunk)
    if check and bool(low < 0):
        raise DataError(f"label/mask values must be >= 0 (got {low.item()})")
    # Clamp before the cast so e.g. 258 cannot wrap to a valid label; the max reports it.
    out.copy_(chunk.clamp(max=255))
    return out, (high if check else None)


def confusion_matrix(
    pred: ArrayLike,
    ref: ArrayLike,
    num_classes: int = 3,
    device: str | torch.device | None = None,
    check: bool = True,
    chunk: int | None = None,
) -> torch.Tensor:
    """(C, C) int64 tensor on ``device``: entry [r, p] = voxels with reference r and prediction p.

    ``pred`` and ``ref`` are label maps (or 0/1 masks with ``num_classes=2``) of the same shape,
    numpy or torch, any integer/bool dtype. ``check`` raises `DataError` for values outside
    ``0..num_classes-1`` (one device sync at the end; a value of e.g. 3 is never miscounted).
    """
    if tuple(pred.shape) != tuple(ref.shape):
        raise DataError(f"prediction shape {tuple(pred.shape)} differs from reference shape {tuple(ref.shape)}")
    if not 2 <= num_classes <= 15:
        raise ValueError(f"num_classes must be in 2..15 (uint8 code), got {num_classes}")
    dev = resolve_device(device, pred, ref)
    p = _to_tensor(pred, dev)
    r = _to_tensor(ref, dev)
    n = p.numel()
    size = chunk or (CUDA_CHUNK if dev.type == "cuda" else CPU_CHUNK)
    size = max(1, min(size, n))
    code = torch.empty(size, dtype=torch.uint8, device=dev)
    cast_p = torch.empty(size, dtype=torch.uint8, device=dev) if p.dtype != torch.uint8 else None
    cast_r = torch.empty(size, dtype=torch.uint8, device=dev) if r.dtype != torch.uint8 else None
    cc = num_classes * num_classes
    acc = torch.zeros(cc, dtype=torch.int64, device=dev)
    highs: list[torch.Tensor] = []
    for start in range(0, n, size):
        stop = min(n, start + size)
        m = stop - start
        pc, hp = _chunk_as_uint8(p[start:stop], num_classes, cast_p[:m] if cast_p is not None else code[:m], check)
        rc, hr = _chunk_as_uint8(r[start:stop], num_classes, cast_r[:m] if cast_r is not None else code[:m], check)
        buf = code[:m]
        # ref * C + pred in uint8; values stay <= 255 for valid labels (C <= 15).
        torch.mul(rc, num_classes, out=buf)
        buf.add_(pc)
        hist = torch.bincount(buf, minlength=cc)
        acc += hist[:cc]
        if check:
            highs.append(torch.maximum(hp, hr))
    if check and highs:
        high = int(torch.stack(highs).max())
        if high >= num_classes:
            raise DataError(f"label value {high} outside 0..{num_classes - 1}")
    return acc.view(num_classes, num_classes)


def task_counts_from_confusion(cm: torch.Tensor | np.ndarray) -> np.ndarray:
    """(..., 3, 3) label confusion -> (..., 2, 4) int64 [liver, lesion] x [tp, fp, fn, tn].

    Vectorised over leading axes (e.g. one matrix per case) so the accumulator and the single-case
    path share this one definition of the LiTS classes.
    """
    m = torch.as_tensor(cm)
    if m.shape[-2:] != (3, 3):
        raise ValueError(f"expected (..., 3, 3) confusion matrices, got {tuple(m.shape)}")
    liver = _binary_from_groups(m, fg=[1, 2])
    lesion = _binary_from_groups(m, fg=[2])
    return torch.stack([liver, lesion], dim=-2).cpu().numpy().astype(np.int64)


def binary_counts_from_confusion(cm: torch.Tensor | np.ndarray) -> np.ndarray:
    """(..., 2, 2) binary confusion -> (..., 4) int64 [tp, fp, fn, tn]."""
    m = torch.as_tensor(cm)
    return _binary_from_groups(m, fg=[1]).cpu().numpy().astype(np.int64)


def _binary_from_groups(m: torch.Tensor, fg: Sequence[int]) -> torch.Tensor:
    c = m.shape[-1]
    is_fg = torch.zeros(c, dtype=torch.bool, device=m.device)
    is_fg[list(fg)] = True
    ref_fg = m[..., is_fg, :]
    ref_bg = m[..., ~is_fg, :]
    tp = ref_fg[..., :, is_fg].sum((-1, -2))
    fn = ref_fg[..., :, ~is_fg].sum((-1, -2))
    fp = ref_bg[..., :, is_fg].sum((-1, -2))
    tn = ref_bg[..., :, ~is_fg].sum((-1, -2))
    return torch.stack([tp, fp, fn, tn], dim=-1)


def _flat_numpy(x: ArrayLike) -> np.ndarray:
    """A flat numpy view (zero-copy for contiguous arrays and CPU tensors; bool viewed as uint8)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.view(torch.uint8) if (x.dtype == torch.bool and x.is_contiguous()) else x
        x = x.numpy()
    a = np.ascontiguousarray(x).reshape(-1)
    return a.view(np.uint8) if a.dtype == np.bool_ else a


def _np_chunk_uint8(chunk: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, int]:
    """The chunk as uint8 and its maximum; non-uint8 input is range-checked, then cast into ``out``."""
    if chunk.dtype == np.uint8:
        return chunk, int(chunk.max())
    if chunk.dtype.kind == "f" and not np.array_equal(chunk, np.trunc(chunk)):
        raise DataError("label/mask values must be whole numbers (got fractional values: probabilities?)")
    if chunk.dtype.kind not in "biuf":
        raise DataError(f"label/mask dtype {chunk.dtype} is not numeric")
    low, high = chunk.min(), chunk.max()
    if low < 0:
        raise DataError(f"label/mask values must be >= 0 (got {low})")
    np.copyto(out, np.minimum(chunk, 255), casting="unsafe")  # clamp first: 258 must not wrap to 2
    return out, int(high)


def _cpu_task_counts(pred: ArrayLike, ref: ArrayLike, num_classes: int, chunk: int | None = None) -> np.ndarray:
    """CPU counts by SIMD byte counting: (2, 4) [liver, lesion] for labels, (1, 4) for binary masks.

    Why not torch.bincount on the CPU: it is a scalar loop whose increments of the same bin
    form a dependency chain, so a volume that is mostly background counts at ~1.5 ns/voxel;
    numpy's ``count_nonzero`` and uint8 ``minimum``/shift run vectorised on cache-sized chunks
    (measured in benchmarks/metrics.py). On 0/1/2 maps: liver tp = #(min(p, r) >= 1), lesion tp =
    #(min(p, r) == 2), marginals from #(x >= 1) and #(x >> 1); one pass over memory.
    """
    p = _flat_numpy(pred)
    r = _flat_numpy(ref)
    n = p.size
    size = max(1, min(chunk or CPU_CHUNK, n))
    b_min = np.empty(size, np.uint8)
    b_tmp = np.empty(size, np.uint8)
    cast_p = np.empty(size, np.uint8) if p.dtype != np.uint8 else None
    cast_r = np.empty(size, np.uint8) if r.dtype != np.uint8 else None
    # [n_p>=1, n_r>=1, n_both>=1, n_p==2, n_r==2, n_both==2] as Python ints (no overflow)
    tot = [0, 0, 0, 0, 0, 0]
    high = 0
    for start in range(0, n, size):
        stop = min(n, start + size)
        m = stop - start
        pc, hp = _np_chunk_uint8(p[start:stop], cast_p[:m] if cast_p is not None else b_tmp[:m])
        rc, hr = _np_chunk_uint8(r[start:stop], cast_r[:m] if cast_r is not None else b_tmp[:m])
        high = max(high, hp, hr)
        both = np.minimum(pc, rc, out=b_min[:m])
        tot[0] += int(np.count_nonzero(pc))
        tot[1] += int(np.count_nonzero(rc))
        tot[2] += int(np.count_nonzero(both))
        if num_classes == 3:
            t = b_tmp[:m]
            tot[3] += int(np.count_nonzero(np.right_shift(pc, 1, out=t)))
            tot[4] += int(np.count_nonzero(np.right_shift(rc, 1, out=t)))
            tot[5] += int(np.count_nonzero(np.right_shift(both, 1, out=t)))
    if n and high >= num_classes:
        raise DataError(f"label value {high} outside 0..{num_classes - 1}")

    def row(n_p: int, n_r: int, tp: int) -> list[int]:
        fp, fn = n_p - tp, n_r - tp
        return [tp, fp, fn, n - tp - fp - fn]

    rows = [row(tot[0], tot[1], tot[2])]
    if num_classes == 3:
        rows.append(row(tot[3], tot[4], tot[5]))
    return np.array(rows, dtype=np.int64)


def _check_shapes(pred: ArrayLike, ref: ArrayLike) -> None:
    if tuple(pred.shape) != tuple(ref.shape):
        raise DataError(f"prediction shape {tuple(pred.shape)} differs from reference shape {tuple(ref.shape)}")


def binary_counts(pred: ArrayLike, ref: ArrayLike, device: str | torch.device | None = None) -> Counts:
    """Counts of one task from two binary masks (bool or 0/1, numpy or torch, any device)."""
    _check_shapes(pred, ref)
    dev = resolve_device(device, pred, ref)
    if dev.type == "cpu":
        row = _cpu_task_counts(pred, ref, 2)[0].tolist()
    else:
        row = binary_counts_from_confusion(confusion_matrix(pred, ref, 2, dev)).tolist()
    return Counts(*row)


def label_counts(pred: ArrayLike, ref: ArrayLike, device: str | torch.device | None = None) -> dict[str, Counts]:
    """{"liver": Counts, "lesion": Counts} from two 0/1/2 label maps in one pass over the volume.

    CPU: vectorised byte counting (`_cpu_task_counts`); other devices: `confusion_matrix`
    (torch.bincount, fast there). Both give identical integers (tested against each other).
    """
    _check_shapes(pred, ref)
    dev = resolve_device(device, pred, ref)
    if dev.type == "cpu":
        both = _cpu_task_counts(pred, ref, 3).tolist()
    else:
        both = task_counts_from_confusion(confusion_matrix(pred, ref, 3, dev)).tolist()
    return {name: Counts(*both[i]) for i, name in enumerate(LABEL_CLASSES)}


class CountAccumulator:
    """Per-case counts accumulated on the device, slice batch by slice batch (training validation).

    ``mode="labels"``: inputs are 0/1/2 maps, classes liver and lesion. ``mode="binary"``: inputs
    are 0/1 masks of one task, class ``task``. ``add`` never synchronises with the host (one
    bincount per batch, case index folded into the code), so validation costs no per-slice round
    trip. ``confusion`` is a plain (n_cases, C, C) int64 tensor: all-reduce it for DDP
    (``torch.distributed.all_reduce(acc.confusion)``) before calling `counts`.
    """

    def __init__(self, n_cases: int, mode: str = "labels", task: str = "liver", device: str | torch.device | None = None):
        if mode not in ("labels", "binary"):
            raise ValueError(f"mode must be 'labels' or 'binary', got {mode!r}")
        if n_cases < 1:
            raise ValueError("n_cases must be >= 1")
        self.mode = mode
        self.num_classes = 3 if mode == "labels" else 2
        self.classes: tuple[str, ...] = LABEL_CLASSES if mode == "labels" else (task,)
        self.device = resolve_device(device)
        self.n_cases = n_cases
        c = self.num_classes
        self.confusion = torch.zeros((n_cases, c, c), dtype=torch.int64, device=self.device)
        self._bad = torch.zeros((), dtype=torch.bool, device=self.device)

    def add(self, case_index: int | Sequence[int] | torch.Tensor, pred: ArrayLike, ref: ArrayLike) -> None:
        """Add a batch: ``pred``/``ref`` (B, ...) with one case index per item, or one int for all."""
        if tuple(pred.shape) != tuple(ref.shape):
            raise DataError(f"prediction shape {tuple(pred.shape)} differs from reference shape {tuple(ref.shape)}")
        p, frac_p = _as_long(pred, self.device)
        r, frac_r = _as_long(ref, self.device)
        for frac in (frac_p, frac_r):
            if frac is not None:
                self._bad |= frac
        if p.numel() == 0:
            return
        c = self.num_classes
        total = self.n_cases * c * c
        if isinstance(case_index, (int, np.integer)):
            if not 0 <= int(case_index) < self.n_cases:
                raise IndexError(f"case index {case_index} outside 0..{self.n_cases - 1}")
            offset: torch.Tensor | int = int(case_index) * c * c
            bad_idx = None
        else:
            idx = torch.as_tensor(case_index, dtype=torch.int64, device=self.device).reshape(-1)
            if idx.numel() != p.shape[0]:
                raise ValueError(f"{idx.numel()} case indices for a batch of {p.shape[0]}")
            offset = (idx * (c * c)).view(-1, *([1] * (p.dim() - 1)))
            bad_idx = (idx < 0).any() | (idx >= self.n_cases).any()
        # Validity is recorded on the device and checked once in counts(): no per-batch sync.
        lp, hp = torch.aminmax(p)
        lr, hr = torch.aminmax(r)
        bad = (torch.minimum(lp, lr) < 0) | (torch.maximum(hp, hr) >= c)
        self._bad |= bad if bad_idx is None else (bad | bad_idx)
        code = (r * c + p + offset).clamp_(0, total - 1)
        self.confusion += torch.bincount(code.reshape(-1), minlength=total)[:total].view(self.n_cases, c, c)

    def counts(self) -> dict[str, np.ndarray]:
        """{class: (n_cases, 4) int64 [tp, fp, fn, tn]} on the host (the one sync)."""
        if bool(self._bad):
            raise DataError(
                f"a batch had a value outside 0..{self.num_classes - 1} (or fractional, or a case index "
                f"outside 0..{self.n_cases - 1}): pass thresholded masks/labels"
            )
        if self.mode == "labels":
            both = task_counts_from_confusion(self.confusion)
            return {name: both[:, i, :] for i, name in enumerate(self.classes)}
        return {self.classes[0]: binary_counts_from_confusion(self.confusion)}

    def reset(self) -> None:
        self.confusion.zero_()
        self._bad.zero_()


def _as_long(x: ArrayLike, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """int64 on ``device`` plus, for float input (0./1. training targets), a device flag for fractions."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x.view(np.uint8) if x.dtype == np.bool_ else x))
    t = x.detach().to(device)
    frac = None
    if t.is_floating_point():
        frac = (t != t.trunc()).any()
    return t.to(torch.int64), frac


def sum_counts(items: Iterable[Counts]) -> Counts:
    total = Counts(0, 0, 0, 0)
    for c in items:
        total = total + c
    return total
