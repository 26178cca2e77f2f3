"""Algorithm 1 (paper 3.8): reiterative patch-wise training on a self-labelled data set.

Step 1  choose the area threshold mu (Eq. 7, ``cascade.area_threshold``, default 0.3);
Step 2  for each level l in ``cascade.reiter_patch_levels`` cut every training slice into
        non-overlapping patches of side input_size / 2**l (256/128/64 at 512) and keep those whose
        annotated area A over patch area C reaches mu;
Step 3  (done before this module runs) the tuning network is trained on the full slices X, Y;
Step 4  predict the kept patches with the current network: S = p > ``self_label_threshold``;
Step 5  X = X u P and Y = Y u S;
Step 6  fine-tune on the enlarged set for ``reiter_epochs`` epochs;
Step 7  repeat from step 4 while validation Dice improves (``reiter_stop="plateau"``), at most
        ``max_reiterations`` times; ``reiter_stop="none"`` runs every iteration (Table 5).

Choices where the paper is silent (also in README "Reproduction notes"):
* The patch set P is cut once; each iteration *refreshes* its self-labels S with the newest
  network instead of appending duplicates, so the set grows from X to X u P at N = 1 and the
  labels improve with the network (appending stale copies would re-weight old mistakes).
* Scale (``cascade.patch_scale``): ``zoom`` feeds every patch resized to the network input size
  (homogeneous batches; the network sees anatomy magnified 2-8x, which it never sees at
  inference); ``native`` feeds each patch at its own size (the tuning network is fully
  convolutional), batched by size. A patch keeps the crop of its slice's box prior.
* mu uses the ground-truth area (the annotation, "A is the annotated area"), S the prediction.
* The stop rule reads validation only; test metrics are recorded per iteration but never used.
* Every iteration records what Algorithm 1 depends on: patches per size, the self-labels' Dice
  against the patches' ground truth (how good S is), validation and test Dice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from bench.atomic import atomic_path
from bench.datasets.base import task_mask
from bench.engine.data import Joined
from bench.engine.infer import predict_slices
from bench.engine.precision import Precision
from bench.engine.train import SELECTION_EMPTY_REFERENCE, Stage, fit, validation_counts
from bench.metrics.counts import binary_counts
from bench.metrics.scores import case_mean, scores_from_counts
from bench.models.patches import extract_patches, select_patches
from bench.paths import checkpoint_dir, reiteration_dir

PATCH_ARRAYS = ("image", "prior", "truth")
WHERE = "where.npy"  # per patch: (case index in the train list, slice index, row, column) of its corner


def patch_sizes(input_size: int, levels: tuple[int, ...], divisor: int) -> list[int]:
    """Patch sides for the requested levels that the tuning network can take (multiples of ``divisor``)."""
    sizes = []
    for level in levels:
        size = input_size // (2**level)
        if size >= divisor and size % divisor == 0 and input_size % size == 0:
            sizes.append(size)
    return sizes


def _group_dir(folder: Path, size: int) -> Path:
    return Path(folder) / f"patches-{size}"


def _resize(t: torch.Tensor, side: int, mode: str) -> torch.Tensor:
    """(N, 1, s, s) -> (N, 1, side, side): bilinear for images, nearest for masks."""
    if t.shape[-1] == side:
        return t
    if mode == "linear":
        return F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)
    return F.interpolate(t, size=(side, side), mode="nearest-exact")


class PatchSet(Dataset):
    """The kept patches of one size with their current self-labels, as memory maps in the run folder.

    Items look like `SliceDataset` items (image, target, prior), at ``side`` pixels (the input
    size in ``zoom`` mode, the patch's own size in ``native`` mode), so the training loop does
    not know it sees patches.
    """

    def __init__(self, folder: Path, side: int) -> None:
        self.folder = Path(folder)
        self.side = int(side)
        arrays = {name: np.load(self.folder / f"{name}.npy", mmap_mode="r") for name in PATCH_ARRAYS}
        self.image, self.prior, self.truth = arrays["image"], arrays["prior"], arrays["truth"]
        labels = self.folder / "selflabel.npy"
        self.selflabel = np.load(labels, mmap_mode="r") if labels.exists() else None
        self.foreground = np.ones(len(self.image), dtype=bool)  # kept patches hold >= mu foreground

    @property
    def size(self) -> int:
        return int(self.image.shape[-1]) if self.image.ndim == 3 else 0

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def _item(self, array: np.ndarray, i: int, mode: str) -> torch.Tensor:
        t = torch.from_numpy(np.asarray(array[i], dtype=np.float32))[None, None]
        return _resize(t, self.side, mode)[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        labels = self.selflabel if self.selflabel is not None else self.truth
        return {"image": self._item(self.image, i, "linear"), "target": self._item(labels, i, "nearest"),
                "prior": self._item(self.prior, i, "nearest")}


def cut_patches(cache, case_ids: list[str], plane: str, task: str, sizes: list[int], mu: float,
                prior_of: Callable[[str, str], np.ndarray], folder: Path) -> dict[int, int]:
    """Steps 1-2: write every kept patch (image, prior, ground truth) per size; returns {size: count}.

    Uses `bench.models.patches.select_patches` for the A / C >= mu rule (Eq. 7).
    """
    kept: dict[int, dict[str, list[np.ndarray]]] = {s: {n: [] for n in (*PATCH_ARRAYS, "where")} for s in sizes}
    for index, case in enumerate(case_ids):
        images = torch.from_numpy(np.asarray(cache.images(case, plane), dtype=np.float32))
        truth = torch.from_numpy(task_mask(np.asarray(cache.labels(case, plane)), task).astype(np.uint8))
        prior = torch.from_numpy(np.array(prior_of(case, plane), dtype=np.uint8))
        for size in sizes:
            p_img, p_truth, p_prior, positions = extract_patches(images, truth, prior, size)
            keep = select_patches(p_truth, mu)
            if len(keep):
                where = positions[keep].numpy().astype(np.int32)
                kept[size]["where"].append(np.concatenate([np.full((len(where), 1), index, np.int32), where], 1))
                kept[size]["image"].append(p_img[keep].numpy().astype(np.float16))
                kept[size]["truth"].append(p_truth[keep].numpy().astype(np.uint8))
                kept[size]["prior"].append(p_prior[keep].numpy().astype(np.uint8))
    counts = {}
    for size, parts in kept.items():
        group = _group_dir(folder, size)
        group.mkdir(parents=True, exist_ok=True)
        for name, chunks in parts.items():
            dtype = {"image": np.float16, "where": np.int32}.get(name, np.uint8)
            empty = (0, 4) if name == "where" else (0, size, size)
            array = np.concatenate(chunks) if chunks else np.zeros(empty, dtype=dtype)
            with atomic_path(group / f"{name}.npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, array)
            counts[size] = len(array)
    return counts


SlicePredictor = Callable[[int, np.ndarray], torch.Tensor]  # (case index, slice indices) -> (k, H, W) probabilities


def _slice_context_probs(ps: "PatchSet", slice_probs: SlicePredictor) -> torch.Tensor:
    """``self_label_source='slice'``: every patch's probabilities cropped from its whole slice's prediction.

    The network predicts the full slice, as at inference, and each patch takes its window of that map:
    the label then has the context and scale the network was trained on (a patch predicted on its own
    is seen magnified or without context, and its labels are far worse: README, Algorithm 1).
    """
    where = np.load(ps.folder / WHERE)
    out = torch.zeros((len(where), ps.size, ps.size), dtype=torch.float32)
    for case in np.unique(where[:, 0]):
        rows = np.flatnonzero(where[:, 0] == case)
        slices = np.unique(where[rows, 1])
        probs = slice_probs(int(case), slices)
        at = {int(z): k for k, z in enumerate(slices)}
        for r in rows:
            _, z, y, x = (int(v) for v in where[r])
            out[r] = probs[at[z], y:y + ps.size, x:x + ps.size]
    return out


def patch_sets(folder: Path, sizes: list[int], input_size: int, scale: str) -> list[PatchSet]:
    """One `PatchSet` per size (items at the input size when ``scale == "zoom"``, else native)."""
    return [PatchSet(_group_dir(folder, s), input_size if scale == "zoom" else s) for s in sizes]


@torch.no_grad()
def refresh_self_labels(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], sets: list[PatchSet],
                        threshold: float, source: str, device: torch.device, batch_size: int = 16,
                        slice_probs: SlicePredictor | None = None) -> dict[int, float]:
    """Step 4: S = the network's patch masks (or the ground truth with ``source='ground_truth'``).

    ``source='prediction'``: each patch is predicted on its own as it is trained (zoomed or native;
    `PatchSet.side`), the mask mapped back to the patch's size. ``source='slice'``: the patch's
    window of the network's prediction on its whole slice (``slice_probs``). Returns each size's
    self-label Dice against the patches' ground truth (global over the patches; NaN when a size has none).
    """
    quality = {}
    for ps in sets:
        truth = np.array(ps.truth, dtype=np.uint8)
        if source == "ground_truth" or not len(ps):
            labels = truth.copy()
        elif source == "slice":
            if slice_probs is None:
                raise ValueError("self_label_source='slice' needs the slice predictor")
            labels = (_slice_context_probs(ps, slice_probs) > threshold).numpy().astype(np.uint8)
        else:
            def as_trained(image: torch.Tensor, prior: torch.Tensor, side: int = ps.side) -> torch.Tensor:
                """Predict a batch of patches as they are trained (zoomed or native), back at their size."""
                probs = predict(_resize(image, side, "linear"), _resize(prior, side, "nearest"))
                return _resize(probs.float(), image.shape[-1], "linear")

            probs = predict_slices(as_trained, ps.image, batch_size, device, extras=[ps.prior])
            labels = (probs > threshold).numpy().astype(np.uint8)
        with atomic_path(ps.folder / "selflabel.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, labels)
        c = binary_counts(torch.from_numpy(labels), torch.from_numpy(truth), device="cpu")
        quality[ps.size] = (float(scores_from_counts(c.tp, c.fp, c.fn, c.tn, SELECTION_EMPTY_REFERENCE)["dice"])
                            if len(ps) else float("nan"))
    return quality


# ---------------------------------------------------------------- the iterations


def _train_slice_predictor(ctx: Any, tuner: "Tuner", data: "TunerData") -> SlicePredictor:
    """(train case index, slice indices) -> the tuner's probabilities on those whole slices, with their priors."""
    cases, plane = list(ctx.splits["train"]), ctx.cfg.plane

    def slice_probs(case: int, slices: np.ndarray) -> torch.Tensor:
        images = np.asarray(ctx.cache.images(cases[case], plane))[slices]
        prior = np.asarray(data.train_prior(cases[case], plane))[slices]
        return predict_slices(tuner.probabilities, images, ctx.cfg.profile.train.batch_size, ctx.device,
                              extras=[prior])

    return slice_probs


@dataclass
class Tuner:
    """The tuning network with what Algorithm 1 needs to fine-tune and score it."""

    model: torch.nn.Module
    loss: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]
    predict: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]  # batch -> probabilities
    probabilities: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (image, prior) -> probabilities


@dataclass
class TunerData:
    """Full slices X (train) with priors, and the validation / test sets scored per iteration."""

    train: Dataset
    val: Dataset
    test: Dataset
    train_prior: Callable[[str, str], np.ndarray]


@dataclass
class Reiteration:
    """Algorithm 1's outcome: one row per (iteration, split), the kept weights, fine-tuning history."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    best_iteration: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def iterations_run(self) -> int:
        return int(max((r["iteration"] for r in self.rows), default=0))


def split_scores(tuner: Tuner, dataset: Dataset, ctx) -> dict[str, float]:
    """Mean over cases of Accuracy, Dice, mIoU (3-D per case at the network input resolution).

    Its val Dice selects the iteration, so an empty reference scores as in `selection_dice` (Dice 0
    for any predicted voxel, ``SELECTION_EMPTY_REFERENCE``).
    """
    if len(dataset) == 0:
        return {"accuracy": float("nan"), "dice": float("nan"), "miou": float("nan")}
    precision = Precision.for_device(ctx.device, ctx.cfg.profile.train)
    _, counts = validation_counts(tuner.model, tuner.predict, dataset, ctx.cfg.profile.train.batch_size, ctx.device,
                                  precision, ctx.info)
    c = np.asarray(counts, dtype=np.float64)
    scores = scores_from_counts(c[:, 0], c[:, 1], c[:, 2], c[:, 3], SELECTION_EMPTY_REFERENCE)  # as selection_dice
    return {k: case_mean(scores[k]) for k in ("accuracy", "dice", "miou")}


def reiterate(ctx, tuner: Tuner, data: TunerData) -> Reiteration:
    """Algorithm 1 on a trained tuning network (steps 4-7); ``tuner.model`` ends at the last iteration run.

    Without validation patients nothing can be selected: every iteration runs and the last is
    kept (the documented rule for ``"val": []``).
    """
    cfg, cc = ctx.cfg, ctx.cfg.profile.cascade
    out = Reiteration()
    has_val = len(data.val) > 0

    def record(iteration: int, n_train: int, patches: dict[int, int], label_dice: dict[int, float]) -> float:
        scores = {}
        for split, dataset in (("val", data.val), ("test", data.test)):
            s = split_scores(tuner, dataset, ctx)
            out.rows.append({"iteration": iteration, "split": split, **s, "n_train_samples": n_train,
                             "patches": sum(patches.values()),
                             **{f"patches_{k}px": v for k, v in patches.items()},
                             **{f"selflabel_dice_{k}px": v for k, v in label_dice.items()}})
            scores[split] = s
        return scores["val"]["dice"]

    best_val = record(0, len(data.train), {}, {})
    out.best_state = {k: v.detach().clone() for k, v in tuner.model.state_dict().items()}
    sizes = patch_sizes(cfg.profile.input_size, cc.reiter_patch_levels, divisor=16)
    if cc.max_reiterations <= 0 or not sizes:
        return out
    folder = reiteration_dir(cfg)
    counts: dict[int, int] = {}
    if ctx.info.is_main:
        counts = cut_patches(ctx.cache, list(ctx.splits["train"]), cfg.plane, cfg.task, sizes, cc.area_threshold,
                             data.train_prior, folder)
    ctx.info.barrier()
    epochs = cc.reiter_epochs or max(1, cfg.profile.train.epochs // 4)
    for n in range(1, cc.max_reiterations + 1):
        sets = patch_sets(folder, sizes, cfg.profile.input_size, cc.patch_scale)
        label_dice: dict[int, float] = {}
        if ctx.info.is_main:
            tuner.model.eval()
            label_dice = refresh_self_labels(tuner.probabilities, sets, cc.self_label_threshold, cc.self_label_source,
                                             ctx.device, cfg.profile.train.batch_size,
                                             slice_probs=_train_slice_predictor(ctx, tuner, data))
        ctx.info.barrier()
        sets = patch_sets(folder, sizes, cfg.profile.input_size, cc.patch_scale)  # reopen with the new labels
        enlarged = Joined([data.train, *sets], second_share=cc.patch_share)
        stage = Stage(name=f"reiter{n}", model=tuner.model, loss=tuner.loss, predict=tuner.predict,
                      train_set=enlarged, val_set=data.val, epochs=epochs, checkpoint_dir=checkpoint_dir(cfg),
                      lr=cfg.profile.train.lr * cc.reiter_lr_scale)
        out.stages[stage.name] = fit(stage, cfg, ctx.device, ctx.info, resume=ctx.resume, progress=ctx.progress)
        out.history += stage.history
        val_dice = record(n, len(enlarged), {s.size: len(s) for s in sets} or counts, label_dice)
        if val_dice > best_val or not has_val:
            best_val, out.best_iteration = val_dice, n
            out.best_state = {k: v.detach().clone() for k, v in tuner.model.state_dict().items()}
        elif cc.reiter_stop == "plateau":
            break
    return out
