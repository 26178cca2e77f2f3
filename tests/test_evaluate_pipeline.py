"""One evaluation pipeline (issue 19 item 4): every prediction source goes through one scorer and one writer.

`bench score` (a folder pair), `bench report --external` (a tool's folder on a data set's split) and
`bench evaluate` (a trained run's plane, the fused planes) are faces that pick a source; the tests
spy on the pipeline's one scoring call and check that each face's cases pass through it, and that
a source written outside the toolkit gets the very files `bench score` writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import bench.metrics.pipeline as pipeline
from bench.metrics.folder import score_folders
from bench.metrics.pipeline import AS_GIVEN, CasePrediction, PredictionSource, Variant, evaluate_source
from bench.metrics.scorer import ScoreOptions

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def label_volume(seed: int, shape=(20, 16, 8)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.zeros(shape, np.uint8)
    x0, y0 = rng.integers(2, 5, 2)
    a[x0 : x0 + 12, y0 : y0 + 8, 1:7] = 1
    a[x0 + 3 : x0 + 6, y0 + 2 : y0 + 5, 2:5] = 2
    return a


@pytest.fixture()
def pairs(tmp_path: Path) -> tuple[Path, Path]:
    """Three reference label maps and predictions of two of them (one case missing)."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    for i in (1, 2, 3):
        ref = label_volume(i)
        nib.save(nib.Nifti1Image(ref, AFFINE), str(gt / f"segmentation-{i}.nii.gz"))
        if i != 3:
            nib.save(nib.Nifti1Image(np.roll(ref, i, axis=0), AFFINE), str(pred / f"segmentation-{i}.nii.gz"))
    return pred, gt


def spy_scorer(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the case id of every call of the pipeline's one per-case scoring function."""
    seen: list[str] = []
    real = pipeline.score_prediction

    def spy(item, *args, **kwargs):
        seen.append(item.case)
        return real(item, *args, **kwargs)

    monkeypatch.setattr(pipeline, "score_prediction", spy)
    return seen


def test_bench_score_is_a_face_of_the_pipeline(pairs, tmp_path, monkeypatch):
    seen = spy_scorer(monkeypatch)
    pred, gt = pairs
    result = score_folders(pred, gt, tmp_path / "out", device="cpu")
    assert seen == ["1", "2", "3"] and result.missing == ["3"]


@dataclass
class InMemoryTool:
    """A user's own source: label maps held in memory (e.g. a tool called from Python), no files."""

    arrays: dict[str, tuple[np.ndarray, np.ndarray]]
    description: str = "a tool in memory"
    classes: tuple[str, ...] = ("liver", "lesion")
    label_maps: bool = True
    with_splits: bool = False
    variants: tuple[Variant, ...] = AS_GIVEN

    def cases(self) -> Iterator[CasePrediction]:
        for case, (pred, ref) in self.arrays.items():
            yield CasePrediction("all", case, ref, {"given": pred}, (2.5, 0.8, 0.8))


def test_a_new_source_gets_the_files_bench_score_writes(pairs, tmp_path):
    """The protocol is the whole contract: the same volumes from another source give the same files."""
    from bench.metrics.folder import read_label_map

    pred, gt = pairs
    score_folders(pred, gt, tmp_path / "folder", device="cpu")
    arrays = {}
    for i in ("1", "2", "3"):
        ref, _, _ = read_label_map(gt / f"segmentation-{i}.nii.gz")
        p = read_label_map(pred / f"segmentation-{i}.nii.gz")[0] if i != "3" else np.zeros_like(ref)
        arrays[i] = (p, ref)
    source: PredictionSource = InMemoryTool(arrays)
    evaluate_source(source, tmp_path / "memory", ScoreOptions(device="cpu"))
    for name in ("per_case.csv", "metrics.csv"):
        assert (tmp_path / "memory" / name).read_bytes() == (tmp_path / "folder" / name).read_bytes()
    policy = json.loads((tmp_path / "memory" / "summary.json").read_text())["policy"]
    assert policy == json.loads((tmp_path / "folder" / "summary.json").read_text())["policy"]


def test_a_variant_shared_by_two_sets_is_scored_once_and_written_twice(tmp_path, monkeypatch):
    from bench.metrics import scorer

    ref = label_volume(4)
    mask = ref >= 1
    calls = []
    real = scorer.class_row

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(scorer, "class_row", counting)

    @dataclass
    class Run:
        description: str = "a run without post-processing"
        classes: tuple[str, ...] = ("liver",)
        label_maps: bool = False
        with_splits: bool = True
        variants: tuple[Variant, ...] = (Variant("post", "", {"postprocess": "none"}),
                                         Variant("raw", "_raw", {"postprocess": "none"}))

        def cases(self):
            yield CasePrediction("test", "7", ref >= 1, {"post": mask, "raw": mask}, (1.0, 1.0, 1.0))

    evaluate_source(Run(), tmp_path, ScoreOptions(device="cpu"))
    assert calls == ["liver"]
    post, raw = (pd.read_csv(tmp_path / f"per_case{s}.csv") for s in ("", "_raw"))
    pd.testing.assert_frame_equal(post, raw)
    assert post.loc[0, "dice"] == 1.0 and json.loads((tmp_path / "summary.json").read_text())["policy"]["postprocess"] == "none"


def test_a_runs_faces_go_through_the_pipeline(tmp_path, tiny_phantom, monkeypatch):
    """`bench evaluate` on a plane and on the fused planes: each val/test case is scored by the pipeline once."""
    from bench.engine.evaluate import evaluate_fused, evaluate_plane
    from bench.engine.runner import run
    from tests.conftest import tiny_config

    fast = {"profile.train.epochs": 1, "profile.train.steps_per_epoch": 1}
    cfgs = {p: tiny_config(tmp_path, tiny_phantom, "unet", plane=p, **fast) for p in ("axial", "coronal", "sagittal")}
    for cfg in cfgs.values():
        run(cfg, progress=False, evaluate=False)
    seen = spy_scorer(monkeypatch)
    evaluate_plane(cfgs["axial"], progress=False)
    per_case = pd.read_csv(Path(cfgs["axial"].results) / "phantom" / "liver" / "unet" / "axial" / "per_case.csv",
                           dtype={"case": str})
    assert seen == list(per_case["case"]) and len(seen) == 2  # one val and one test patient
    seen.clear()
    folder = evaluate_fused(cfgs["axial"], ("test",), progress=False)
    assert seen == list(pd.read_csv(folder / "per_case.csv", dtype={"case": str})["case"]) and len(seen) == 1
