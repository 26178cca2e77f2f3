"""The exact golden layer: committed inputs -> real evaluation/report code -> tables compared to 1e-9.

A gate is only a gate if it fails on a planted defect, so each defect below is planted and the
check is run the way CI runs it, through the console script in a subprocess, expecting exit 1:
a metric formula change, a swapped split, a lost case, a changed fusion, a moved golden cell.
The unmodified check passes, identically under the native, AVX2 and default CPU kernel sets.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
EXACT = REPO / "results" / "golden" / "exact"
TIMEOUT = 600


def _bench(args: list[str], code: str | None = None, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess:
    """``python -m bench ARGS`` (the console script's entry point), or ``python -c CODE ARGS``."""
    argv = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "bench", *args]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, **(env or {})),
                          timeout=TIMEOUT)


def _patched(module: str, name: str, definition: str) -> str:
    """Code for ``python -c``: replace ``module.name`` by ``_bad`` everywhere it is bound, count its calls,
    then run the CLI. Modules imported later (the engine is imported lazily) bind the patched function."""
    return textwrap.dedent(f"""
        import atexit, sys
        import {module} as _target
        _orig = _target.{name}
        _calls = [0]
    """) + textwrap.dedent(definition) + textwrap.dedent(f"""
        def _counted(*args, **kwargs):
            _calls[0] += 1
            return _bad(*args, **kwargs)
        _target.{name} = _counted
        for _m in list(sys.modules.values()):
            if getattr(_m, "{name}", None) is _orig:
                setattr(_m, "{name}", _counted)
        atexit.register(lambda: print("patched calls:", _calls[0], file=sys.stderr))
        from bench.cli import main
        main()
    """)


def _calls(proc: subprocess.CompletedProcess) -> int:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("patched calls:")]
    assert lines, proc.stderr
    return int(lines[-1].split(":")[1])


def _mismatches(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stdout.splitlines() if line.startswith("MISMATCH")]


def _failed(proc: subprocess.CompletedProcess) -> None:
    """Exit 1, mismatch lines first, then exactly one verdict line for the layer."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("golden check failed (exact layer): "), lines[-1]
    assert "Traceback" not in proc.stderr
    n = int(lines[-1].split(": ")[1].split()[0])
    assert n == len(_mismatches(proc)) > 0
    assert all(line.startswith("MISMATCH") for line in lines[:-1])


def _golden_cells() -> int:
    manifest = json.loads((EXACT / "manifest.json").read_text())
    names = [f"table{t}" if str(t).isdigit() else t for t in manifest["tables"]]
    return sum(len(pd.read_csv(EXACT / f"{n}.csv")) for n in names)


def _copy_layer(tmp_path: Path) -> Path:
    layer = tmp_path / "exact"
    shutil.copytree(EXACT, layer)
    return layer


# ---------------------------------------------------------------- passes, identically on every kernel set


@pytest.mark.parametrize("verb,kernels", [
    (["check"], {}),
    (["report", "--check"], {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}),  # the alias scripts use
    (["check"], {"ATEN_CPU_CAPABILITY": "default"}),
], ids=["native", "avx2-report-alias", "default"])
def test_unmodified_exact_layer_passes_on_every_kernel_set(verb, kernels):
    """``bench check`` and its alias ``bench report --check`` print the same verdict on every kernel set."""
    proc = _bench([*verb, "results/golden/exact"], env=kernels)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines() == [
        f"golden check OK (exact layer): {_golden_cells()} cells (tables 3, patch-mode, 4, 5, patch-scale, 6, 7, 8, "
        f"lesion-detection, paired, postprocess, cases, metrics, runs) "
        f"equal to results/golden/exact (counts exact, other numbers within 1e-9, text equal)"]


# ---------------------------------------------------------------- planted defects: exit 1


def test_metric_formula_change_fails():
    """Dice with FP counted twice, in the one function every score comes from."""
    bad = """
        def _bad(tp, fp, fn, tn, empty_reference="nan"):
            import numpy as np
            out = _orig(tp, fp, fn, tn, empty_reference)
            t, f, n = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn))
            with np.errstate(divide="ignore", invalid="ignore"):  # NaN where the empty rules make it NaN
                dice = np.where(np.isnan(out["dice"]), np.nan, 2.0 * t / (2.0 * t + 2.0 * f + n))
            out["dice"] = float(dice) if np.ndim(dice) == 0 else dice
            return out
    """
    proc = _bench(["check", "results/golden/exact"],
                  code=_patched("bench.metrics.scores", "scores_from_counts", bad))
    _failed(proc)
    assert _calls(proc) > 0  # the patched function is the one the check's code path calls
    lines = _mismatches(proc)
    assert any("table7 [Axial Plane / Dice / SegNet / Val] ours" in line for line in lines)
    assert any(line.startswith("MISMATCH exact: cases [") and "] dice:" in line for line in lines)
    assert any(line.startswith("MISMATCH exact: metrics [") and " / global / dice] value" in line for line in lines)
    # only what depends on Dice moved: no accuracy, IoU or mIoU cell
    assert not [line for line in lines if "ccuracy" in line or "iou" in line.lower()]


def test_changed_lesion_matching_rule_fails():
    """Lesion detection scored under the strict IoU rule while the runs declare 'overlap': only the lesion
    detection columns, metrics rows and table move."""
    bad = """
        def _bad(pred, ref, spacing, match="overlap", connectivity=3):
            return _orig(pred, ref, spacing, "iou50", connectivity)
    """
    proc = _bench(["report", "--check", "results/golden/exact"],
                  code=_patched("bench.metrics.lesions", "lesion_detection", bad))
    _failed(proc)
    assert _calls(proc) > 0
    lines = _mismatches(proc)
    assert any(line.startswith("MISMATCH exact: lesion-detection [") and "/ Recall /" in line for line in lines)
    assert any(line.startswith("MISMATCH exact: cases [") and "] n_detected:" in line for line in lines)
    assert not [line for line in lines if "dice" in line.lower() or line.startswith("MISMATCH exact: table")]


def test_changed_fusion_fails():
    """Soft voting (mean) replaced by the voxel-wise max: only the fused rows may move."""
    bad = """
        def _bad(prob_volumes):
            import numpy as np
            return np.maximum.reduce([np.asarray(v, dtype=np.float32) for v in prob_volumes])
    """
    proc = _bench(["check", "results/golden/exact"], code=_patched("bench.engine.infer", "fuse_soft", bad))
    _failed(proc)
    assert _calls(proc) > 0
    lines = _mismatches(proc)
    assert all("fused" in line.lower() for line in lines), [l for l in lines if "fused" not in l.lower()][:3]
    assert any("table7 [Fused (soft voting) / Dice / U-Net / Val]" in line for line in lines)


def _blocks(proc: subprocess.CompletedProcess) -> dict[str, tuple[str, list[str]]]:
    """Layer folder name -> (its verdict line, the mismatch lines printed before it)."""
    out, pending = {}, []
    for line in proc.stdout.strip().splitlines():
        if line.startswith("MISMATCH"):
            pending.append(line)
            continue
        assert line.startswith("golden check "), line
        folder = line.split(" vs ")[-1] if " vs " in line else line.split(" equal to ")[1].split(" (")[0]
        out[Path(folder).name] = (line, pending)
        pending = []
    assert not pending
    return out


def _check_layers(root: Path, names: list[str]) -> dict[str, tuple[str, list[str]]]:
    """``bench check ROOT`` on a folder of layers: exit 1, one verdict per layer, in folder order."""
    proc = _bench(["check", str(root)])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    blocks = _blocks(proc)
    assert list(blocks) == names
    return blocks


def _assert_failed(block: tuple[str, list[str]]) -> list[str]:
    verdict, lines = block
    assert verdict.startswith(f"golden check failed (exact layer): {len(lines)} difference(s)") and lines
    return lines


def test_moved_golden_cell_fails_and_every_layer_below_the_folder_is_checked(tmp_path):
    """A folder holding two layers, one unmodified and one with a golden cell moved by 0.5: each gets its own
    verdict line, the mismatch lines come before the failing one, the process exits 1."""
    root = tmp_path / "golden"
    shutil.copytree(EXACT, root / "a-unmodified")
    moved = shutil.copytree(EXACT, root / "b-moved-cell")
    path = moved / "table7.csv"
    frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    row = (frame["group"] == "Axial Plane") & (frame["row"] == "Dice") & (frame["col_group"] == "U-Net") & (
        frame["col"] == "Val")
    assert row.sum() == 1
    frame.loc[row, "ours"] = repr(float(frame.loc[row, "ours"].iloc[0]) + 0.5)
    frame.to_csv(path, index=False)
    blocks = _check_layers(root, ["a-unmodified", "b-moved-cell"])
    verdict, lines = blocks["a-unmodified"]
    assert verdict.startswith("golden check OK (exact layer): ") and not lines
    (line,) = _assert_failed(blocks["b-moved-cell"])
    assert line.startswith("MISMATCH exact: table7 [Axial Plane / Dice / U-Net / Val] ours: golden ")
    assert "|diff| 0.5 > tol 1e-09" in line
    both = _bench(["check", str(root), "--results", str(tmp_path)])
    assert both.returncode == 2 and "name the layer folder" in both.stderr and "Traceback" not in both.stderr


def test_swapped_split_and_lost_case_fail(tmp_path):
    """Two layers with a planted input defect each: val and test patients swapped; a test patient lost
    (its file and its split entry)."""
    root = tmp_path / "golden"
    swapped = shutil.copytree(EXACT, root / "a-swapped-split")
    split_path = swapped / "inputs" / "splits_final.json"
    split = json.loads(split_path.read_text())
    split["val"], split["test"] = split["test"], split["val"]
    split_path.write_text(json.dumps(split))
    lost = shutil.copytree(EXACT, root / "b-lost-case")
    (lost / "inputs" / "g08.npz").unlink()
    split_path = lost / "inputs" / "splits_final.json"
    split = json.loads(split_path.read_text())
    split["test"].remove("g08")
    split_path.write_text(json.dumps(split))
    blocks = _check_layers(root, ["a-swapped-split", "b-lost-case"])
    lines = _assert_failed(blocks["a-swapped-split"])
    assert any("table7 [Axial Plane / Dice / Ours / Val] ours" in line for line in lines)
    lines = _assert_failed(blocks["b-lost-case"])
    assert any("table7 [Axial Plane / Dice / Ours / Test] n_cases: golden 3, now 2" in line for line in lines)
    assert any(line.startswith("MISMATCH exact: cases [golden/liver/ours/axial [post] / g08 / test / liver]: present in "
                               "golden, absent now") for line in lines)


def test_case_named_by_split_but_missing_is_a_one_line_input_error(tmp_path):
    layer = _copy_layer(tmp_path)
    (layer / "inputs" / "g08.npz").unlink()
    proc = _bench(["check", str(layer)])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "splits_final.json" in proc.stderr and "g08" in proc.stderr


def test_standalone_builder_and_update_reproduce_the_committed_layer(tmp_path):
    """The manifest's command writes a results tree of real-looking runs; --update-golden from it rewrites
    the layer (manifest included) with tables equal to the committed ones."""
    from bench.golden.compare import compare_tables

    layer = _copy_layer(tmp_path)
    for name in ("table7.csv", "cases.csv", "manifest.json"):
        (layer / name).unlink()
    command = json.loads((EXACT / "manifest.json").read_text())["command"]
    results = tmp_path / "results"
    argv = command.format(inputs=layer / "inputs", results=results).split()
    assert argv[:3] == ["python", "-m", "bench.golden.exact"]
    built = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, cwd=REPO, timeout=TIMEOUT)
    assert built.returncode == 0, built.stderr
    record = json.loads((results / "golden" / "liver" / "ours" / "axial" / "config.json").read_text())
    assert record["status"] == "complete" and record["fingerprint"] and record["config"]["profile"]["name"] == "paper"
    assert (results / "golden" / "liver" / "ours~reiter_stop=none" / "axial" / "reiteration.csv").is_file()
    assert json.loads((results / "golden" / "lesion" / "unet" / "fused" / "config.json").read_text())["fusion"]

    proc = _bench(["check", str(layer), "--results", str(results), "--update-golden"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("golden updated (exact layer): 15 files")
    manifest = json.loads((layer / "manifest.json").read_text())
    assert manifest["layer"] == "exact" and manifest["tolerances"]["*"]["abs"] == 1e-9
    assert manifest["tolerances"]["tp"]["abs"] == 0 and manifest["tolerances"]["*"]["why"]
    assert manifest["command"] == command and manifest["inputs"]["generator"]
    rewritten = {p.stem: pd.read_csv(p, keep_default_na=False, dtype=str) for p in layer.glob("*.csv")}
    assert len(rewritten) == 14 and compare_tables(EXACT, rewritten) == []


# ---------------------------------------------------------------- the inputs: reproducible and rich enough


def test_committed_inputs_are_what_the_generator_makes():
    from bench.golden.inputs import verify_inputs

    assert verify_inputs(EXACT / "inputs") == []
    total = sum(p.stat().st_size for p in (EXACT / "inputs").iterdir())
    assert total < 500 * 1024


def test_inputs_hold_the_deliberate_edge_cases():
    """Each edge case the layer exists to pin is really in the inputs (so regenerating cannot lose one)."""
    from bench.config import PLANES
    from bench.datasets.base import task_mask
    from bench.engine.infer import fuse_majority, fuse_soft, postprocess
    from bench.golden.inputs import read_inputs

    inputs = read_inputs(EXACT / "inputs")
    seen = dict(at_half=0, half_step_above=0, fused_at_half=0, soft_not_majority=0, soft_not_max=0,
                largest_removes=0, min_size_removes=0, empty_empty=0, empty_pred_only=0, anisotropic=0)
    for case in inputs.splits["val"] + inputs.splits["test"]:
        a = inputs.case(case)
        seen["anisotropic"] += int(len(set(a["spacing"].tolist())) > 1)
        lesion = task_mask(a["label"], "lesion")
        for run in inputs.runs:
            vols = {p: inputs.volume(a, case, run, p) for p in run.planes}
            for v in vols.values():
                seen["at_half"] += int((v == 0.5).sum())
                seen["half_step_above"] += int((v == np.float32(np.float16(0.50048828125))).sum())
                mask = v > 0.5
                if run.model == "ours" and run.task == "liver":
                    seen["largest_removes"] += int((postprocess(mask, "largest") != mask).any())
                if run.model == "ours" and run.task == "lesion":
                    kept = postprocess(mask, "min_size", 20)
                    seen["min_size_removes"] += int((kept != mask).any())
                    seen["empty_empty"] += int(mask.any() and not kept.any() and not lesion.any())
                if run.task == "lesion" and lesion.any() and not mask.any():
                    seen["empty_pred_only"] += 1
            if set(vols) == set(PLANES):
                stack = [vols[p] for p in PLANES]
                soft = fuse_soft(stack)
                seen["fused_at_half"] += int((soft == 0.5).sum())
                seen["soft_not_majority"] += int(((soft > 0.5) != fuse_majority(stack)).sum())
                seen["soft_not_max"] += int(((soft > 0.5) != (np.maximum.reduce(stack) > 0.5)).sum())
    assert all(n > 0 for n in seen.values()), seen


def test_golden_tables_show_the_nan_rule_and_seeds():
    cases = pd.read_csv(EXACT / "cases.csv")
    lesion = cases[cases["col"] == "lesion"]
    empty = lesion[(lesion["tp"] + lesion["fp"] + lesion["fn"]) == 0]
    assert len(empty) and empty["dice"].isna().all() and (empty["accuracy"] == 1.0).all()
    missed = lesion[(lesion["tp"] + lesion["fp"] == 0) & (lesion["fn"] > 0)]
    assert len(missed) and (missed["dice"] == 0).all()
    table8 = pd.read_csv(EXACT / "table8.csv")
    assert (table8["n_excluded"] > 0).any()
    table7 = pd.read_csv(EXACT / "table7.csv")
    assert (table7["n_seeds"] == 2).any() and table7.loc[table7["n_seeds"] == 2, "sd"].notna().all()
    paired = pd.read_csv(EXACT / "paired.csv")
    assert paired["ci_low"].notna().all() and (paired["ci_low"] <= paired["ours"]).all()


def test_golden_tables_pin_the_fairness_rows():
    """The exact layer covers what issue 12 added to the report: both score variants, the budgets, the liver-prior
    column, the paper's foreground-IoU cells and the patch ablations (so a change in any reaches a golden cell)."""
    table7 = pd.read_csv(EXACT / "table7.csv")
    marked = table7[table7["paper_fg_iou"]]
    assert set(marked["col_group"]) == {"Ours"} and len(marked) == 4 and marked["ours_fg_iou"].notna().all()
    assert (marked["diff"] - (marked["ours_fg_iou"] - marked["paper"])).abs().max() < 1e-12
    unet = table7[(table7["col_group"] == "U-Net") & (table7["group"] == "Axial Plane")]
    assert set(unet["runs"]) == {"golden/liver/unet/axial golden/liver/unet~seed1/axial"}  # not the matched run
    table8 = pd.read_csv(EXACT / "table8.csv")
    prior = table8[table8["col_group"] == "U-Net + liver prior"]
    # 4 plane groups x 2 splits x (3 paper metrics + 3 lesion-free rows: patients, FP voxels, FP lesions)
    assert len(prior) == 48 and prior["status"].eq("ok").all() and prior["paper"].isna().all()
    assert prior["metric"].str.startswith("count_").sum() == 24
    assert table8.loc[table8["col_group"] == "SegNet + liver prior", "status"].eq("missing").all()
    post = pd.read_csv(EXACT / "postprocess.csv")
    diff = post[post["col"] == "with − without"]
    assert diff["status"].eq("ok").all() and (diff["ours"].abs() > 0).any()
    assert "Ours − U-Net + liver prior" in set(pd.read_csv(EXACT / "paired.csv")["row"])
    runs = pd.read_csv(EXACT / "runs.csv", keep_default_na=False)
    matched = runs[runs["group"] == "golden/liver/unet~budget=matched/axial"].iloc[0]
    assert matched["budget_rule"] == "matched" and matched["budget_matched_to"] == "golden/liver/ours/axial (1,234 steps)"
    ours = runs[runs["group"] == "golden/liver/ours/axial"].iloc[0]
    assert ours["budget_stages"] == "localizer 400, tuner 400, reiter1 217, reiter2 217"
    scale = pd.read_csv(EXACT / "patch-scale.csv")
    assert {"patches_256px", "selflabel_dice_64px"} <= set(scale["metric"])
    assert set(pd.read_csv(EXACT / "patch-mode.csv")["col_group"]) == {"tile", "unshuffle"}
    table5 = pd.read_csv(EXACT / "table5.csv")
    assert set(table5["runs"]) == {"golden/liver/ours~reiter_stop=none/axial"}  # never the native run


# ---------------------------------------------------------------- the compare machinery with "*"


def test_wildcard_compare_covers_every_column_text_and_duplicates():
    from bench.golden.compare import compare_frames
    from bench.golden.exact import EXACT_TOLERANCES

    base = pd.DataFrame([dict(table="t", group="g", row="r", col_group="", col="Val", metric="dice", ours=0.5,
                              sd=math.nan, n_cases=3, status="ok", runs="a/b")])
    golden = pd.read_csv(io.StringIO(base.to_csv(index=False)), keep_default_na=False, dtype=str)
    assert compare_frames("t", golden, base, EXACT_TOLERANCES) == []
    assert compare_frames("t", golden, base.assign(ours=0.5 + 5e-10), EXACT_TOLERANCES) == []
    assert [m.column for m in compare_frames("t", golden, base.assign(ours=0.5 + 2e-9), EXACT_TOLERANCES)] == ["ours"]
    assert [m.column for m in compare_frames("t", golden, base.assign(runs="a/c"), EXACT_TOLERANCES)] == ["runs"]
    assert [m.column for m in compare_frames("t", golden, base.assign(sd=0.1), EXACT_TOLERANCES)] == ["sd"]
    assert [m.column for m in compare_frames("t", golden, base.assign(extra=1.0), EXACT_TOLERANCES)] == ["extra"]
    assert [m.column for m in compare_frames("t", golden, pd.concat([base, base]), EXACT_TOLERANCES)] == ["(key)"]
    # without "*" (a training layer) an unnamed column is not compared
    assert compare_frames("t", golden, base.assign(runs="a/c"), {"ours": {"abs": 0.02}}) == []
