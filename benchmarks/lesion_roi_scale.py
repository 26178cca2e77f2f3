"""Which physical scale should the lesion ROI have? Measured on an inner split of a TRAINING patient.

The paper zooms the lesion network into the liver ROI but gives no scale for it; the ``cpu``
profile's ``cascade.lesion_roi_spacing_mm`` (1.5 mm) was chosen by principle (an integer zoom of
the 3 mm liver grid). The two real 3D-IRCADb patients give no validation patient with liver
tumours (patient 7's only tumour is extrahepatic), so the choice is made on an inner split of
patient 1, which is always a training patient in the real study's questions that matter:

* patient 1 is cut along z into two slabs at ``--cut`` (88: tumours 1-2, 54 and 24 mm, lie in
  slices 48-86; tumours 3-7, 9-27 mm, in slices 88-123; no tumour straddles the cut);
* train: the upper slab + patient 7 (``--extra-train``); inner validation: the lower slab;
* for each scale, the toolkit's own commands train ours' liver cascade once and the lesion stage
  once per scale (``bench train ours --task lesion --set cascade.lesion_roi_spacing_mm=S``), whose
  closing evaluation scores the inner-validation slab (lesion Dice, lesion-wise recall by size).

The slabs are written as a LiTS-layout folder (``volume-N.nii.gz``) under ``--work``, never in the
repository. A slab is not a patient (the same liver, scanner and contrast on both sides of the
cut), so the numbers are optimistic for a new patient; they rank scales, nothing more. Usage::

    python benchmarks/lesion_roi_scale.py --root ../shared/data/3dircadb1 --work /tmp/roi-scale \\
        [--scales 3.0,1.5,1.0] [--profile cpu]

3.0 mm at ``cpu`` is the liver grid itself (zoom 1: the ROI is cut but not magnified).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.datasets.ircadb import IrcadbDataset  # noqa: E402
from bench.datasets.nifti import save_nifti_zyx  # noqa: E402

TRAIN_ID, VAL_ID, EXTRA_ID = "1", "2", "7"


def _affine(case) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The case's voxel-to-world affine (z, y, x), or its spacing alone when the source has none."""
    return np.asarray(case.affine if case.affine is not None else np.diag(list(case.spacing) + [1.0]), float)


def write_slabs(root: Path, patient: str, cut: int, extra: str | None, out: Path) -> dict[str, list[str]]:
    """patient's two z-slabs (and ``extra`` whole) as LiTS files; returns the split lists.

    Files already there are kept (a rerun adds seeds or scales to the same runs: rewritten files
    would change the data fingerprint the finished runs are bound to).
    """
    train = [TRAIN_ID] + ([EXTRA_ID] if extra else [])
    splits = {"train": train, "val": [], "test": [VAL_ID]}
    if all((out / f"{kind}-{cid}.nii.gz").is_file() for cid in train + [VAL_ID] for kind in ("volume", "segmentation")):
        return splits
    out.mkdir(parents=True, exist_ok=True)
    ds = IrcadbDataset(root)
    case = ds.load(patient)
    affine = _affine(case)
    lower_affine = affine.copy()
    lower_affine[:3, 3] = affine[:3, :3] @ np.array([cut, 0, 0]) + affine[:3, 3]
    parts = {TRAIN_ID: (case.image[:cut], case.label[:cut], affine),
             VAL_ID: (case.image[cut:], case.label[cut:], lower_affine)}
    for cid, (image, label, aff) in parts.items():
        save_nifti_zyx(out / f"volume-{cid}.nii.gz", image, aff)
        save_nifti_zyx(out / f"segmentation-{cid}.nii.gz", label, aff)
    if extra:
        e = ds.load(extra)
        eaff = _affine(e)
        save_nifti_zyx(out / f"volume-{EXTRA_ID}.nii.gz", e.image, eaff)
        save_nifti_zyx(out / f"segmentation-{EXTRA_ID}.nii.gz", e.label, eaff)
    return splits


def bench(*args: str) -> None:
    cmd = [sys.executable, "-m", "bench", *args]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True)


def lesion_row(results: Path, tag: str) -> dict:
    """The inner-validation slab's lesion scores from the evaluation `bench train` ends with."""
    folder = results / "lits" / "lesion" / tag / "axial"
    summary = json.loads((folder / "summary.json").read_text())
    cls = summary["splits"]["test"]["classes"]["lesion"]
    det = cls.get("lesion_detection", {})
    return {"dice": cls["mean"]["dice"], **{k: v for k, v in det.items() if not isinstance(v, dict)}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="3D-IRCADb folder (3Dircadb1.N patients)")
    p.add_argument("--patient", default="3Dircadb1.1")
    p.add_argument("--extra-train", default="3Dircadb1.7", help="a whole patient added to training ('' for none)")
    p.add_argument("--cut", type=int, default=88)
    p.add_argument("--scales", default="3.0,1.5,1.0")
    p.add_argument("--seeds", default="0", help="e.g. 0,1: one liver and one lesion run per scale and seed")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--work", required=True)
    p.add_argument("--set", action="append", default=[], help="more overrides for every run")
    a = p.parse_args()
    work = Path(a.work).resolve()
    data, results, cache = work / "data", work / "results", work / "cache"
    splits = write_slabs(Path(a.root), a.patient, a.cut, a.extra_train or None, data)
    split_file = work / "splits.json"
    split_file.write_text(json.dumps(splits))
    common = ["--dataset", "lits", "--root", str(data), "--profile", a.profile, "--splits", str(split_file),
              "--results", str(results), "--cache", str(cache), "--device", "cpu", "--plane", "axial"]
    extra = [x for s in a.set for x in ("--set", s)]
    t0 = time.time()
    rows = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        for scale in [float(s) for s in a.scales.split(",")]:
            tag = f"ours~roi={scale:g}mm" + (f"~seed{seed}" if seed else "")
            t = time.time()
            bench("train", "ours", "--task", "lesion", *common, *extra, "--seed", str(seed),
                  "--set", f"cascade.lesion_roi_spacing_mm={scale}", "--tag", tag)
            rows.append({"scale_mm": scale, "seed": seed, "minutes": (time.time() - t) / 60, **lesion_row(results, tag)})
    print(f"\n{len(rows)} liver + lesion runs in {(time.time() - t0) / 60:.1f} min; inner validation = "
          f"{a.patient} slices >= {a.cut}")
    store = work / "lesion_roi_scale.json"  # rows of earlier invocations (other seeds) are kept
    done = [r for r in (json.loads(store.read_text()) if store.is_file() else [])
            if (r["scale_mm"], r["seed"]) not in {(x["scale_mm"], x["seed"]) for x in rows}]
    rows = sorted(done + rows, key=lambda r: (-r["scale_mm"], r["seed"]))
    store.write_text(json.dumps(rows, indent=1))
    keys = ["scale_mm", "seed", "dice", "lesion_recall", "lesion_precision", "fp_lesions_per_case"]
    keys += sorted(k for r in rows for k in r if k.startswith("lesion_recall_") and k not in keys)
    keys = list(dict.fromkeys(keys + ["minutes"]))
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r.get(k, float('nan')):.3f}" if isinstance(r.get(k), float) else str(r.get(k, "-"))
                         for k in keys))
    for scale in sorted({r["scale_mm"] for r in rows}, reverse=True):
        mine = [r for r in rows if r["scale_mm"] == scale]
        print(f"{scale:g} mm, mean of {len(mine)} seed(s): lesion Dice {np.mean([r['dice'] for r in mine]):.3f}, "
              f"recall {np.mean([r['lesion_recall'] for r in mine]):.2f}, "
              f"FP lesions {np.mean([r['fp_lesions_per_case'] for r in mine]):.1f}")

if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
