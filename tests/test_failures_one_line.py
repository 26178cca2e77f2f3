"""Every failure one line (issue 20 item 6), through the console script in a subprocess.

Full disk / ``ulimit -f`` in prepare, train and predict; a best.pt that is not a checkpoint;
a voxel spacing that would need gigabytes; no ``.lock`` left by a failed command; no worker
left running when ``bench demo`` is SIGKILLed. Also `bench predict` naming its run (item 5).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_run import assert_one_line_error, bench, bench_env

TOY = ("--size", "16", "--slices", "8")
FAST = ("--profile", "smoke", "--set", "profile.train.epochs=1", "--set", "profile.train.steps_per_epoch=2",
        "--set", "profile.input_size=32", "--device", "cpu")


def _limited(limit_bytes: int, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``bench`` with ``ulimit -f`` (RLIMIT_FSIZE) set in the child: writes past it fail with EFBIG/SIGXFSZ."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.RLIM_INFINITY))

    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=bench_env(), preexec_fn=limit)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A toy phantom and one smoke U-Net run on it (1 epoch, 2 steps), trained through the CLI."""
    where = tmp_path_factory.mktemp("trained")
    assert bench("data", "phantom", "ph", "--cases", "3", *TOY, cwd=where).returncode == 0
    proc = bench("train", "unet", "--root", "ph", *FAST, "--cache", "c", "--results", "r", cwd=where)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return where


def _copy_run(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src / "r", dst / "r")
    shutil.copytree(src / "ph", dst / "ph")


RUN = Path("r/phantom/liver/unet/axial")


# ---------------------------------------------------------------- disk full / quota


def test_prepare_out_of_space_is_one_line_naming_the_file_and_size(tmp_path):
    assert bench("data", "phantom", "ph", "--cases", "2", *TOY, cwd=tmp_path).returncode == 0
    proc = _limited(20 * 1024, "data", "prepare", "--root", "ph", "--profile", "smoke", "--cache", "c",
                    "--planes", "axial", cwd=tmp_path)
    line = assert_one_line_error(proc, "cannot write", "file size limit exceeded", "axial_image.npy", "needs 64.0 KB")
    assert "c/" in line
    leftovers = [p for p in (tmp_path / "c").rglob("*") if ".tmp-" in p.name]
    assert leftovers == []


def test_train_out_of_space_is_one_line_naming_the_checkpoint(trained, tmp_path):
    # the trained folder's cache is complete (nothing to write there); the run goes to a new --results
    results = tmp_path / "r"
    proc = _limited(100 * 1024, "train", "unet", "--root", "ph", *FAST, "--cache", "c", "--results", str(results),
                    cwd=trained)
    assert_one_line_error(proc, str(tmp_path / RUN / "checkpoints"), "file size limit exceeded")
    assert not (tmp_path / RUN / ".lock").exists() and not list((tmp_path / RUN).rglob("*.tmp-*"))


def test_predict_out_of_space_is_one_line_naming_the_output(trained, tmp_path):
    _copy_run(trained, tmp_path)
    proc = _limited(1024, "predict", "unet", "--input", "ph/volume-0.nii.gz", "--output", "mask.nii", "--results", "r",
                    cwd=tmp_path)
    assert_one_line_error(proc, "mask.nii: cannot write", "file size limit exceeded", "needs 2.3 KB")
    assert not (tmp_path / "mask.nii").exists() and not list(tmp_path.glob("mask.nii.tmp-*"))


# ---------------------------------------------------------------- checkpoints that are not


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint"])
def test_best_pt_that_is_not_a_checkpoint_is_one_line(trained, tmp_path, content):
    _copy_run(trained, tmp_path)
    (tmp_path / RUN / "checkpoints" / "best.pt").write_bytes(content)
    proc = bench("predict", "unet", "--input", "ph/volume-0.nii.gz", "--output", "m.nii.gz", "--results", "r",
                 cwd=tmp_path)
    assert_one_line_error(proc, str(RUN / "checkpoints" / "best.pt"), "checkpoint")
    assert not (tmp_path / "m.nii.gz").exists()


# ---------------------------------------------------------------- predict names its run and warns


def test_predict_names_its_run_and_warns_far_from_training(trained, tmp_path):
    import nibabel as nib
    import numpy as np

    _copy_run(trained, tmp_path)
    same = bench("predict", "unet", "--input", "ph/volume-0.nii.gz", "--output", "a.nii.gz", "--results", "r",
                 cwd=tmp_path)
    assert same.returncode == 0, same.stderr
    assert f"run {RUN} (checkpoint {RUN / 'checkpoints' / 'best.pt'}" in same.stdout
    assert "warning" not in same.stderr
    # a 512x512 CT at 0.7 mm given to a model trained on 16-px phantom slices at 25.6 mm
    ct = np.random.default_rng(0).normal(0, 100, (512, 512, 2)).astype(np.int16)
    nib.save(nib.Nifti1Image(ct, np.diag([0.7, 0.7, 2.5, 1.0])), str(tmp_path / "ct.nii.gz"))
    far = bench("predict", "unet", "--input", "ct.nii.gz", "--output", "b.nii.gz", "--results", "r", cwd=tmp_path)
    assert far.returncode == 0, far.stderr
    warnings = [line for line in far.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, far.stderr
    assert "ct.nii.gz" in warnings[0] and "512x512 px at 0.7x0.7 mm" in warnings[0] and "16x16 px" in warnings[0]
    assert "run " in far.stdout


# ---------------------------------------------------------------- memory-sized inputs


def test_absurd_voxel_spacing_is_refused_before_allocating(tmp_path):
    import nibabel as nib

    assert bench("data", "phantom", "ph", "--cases", "3", "--size", "64", "--slices", "24", cwd=tmp_path).returncode == 0
    for name in ("volume-0.nii.gz", "segmentation-0.nii.gz"):
        img = nib.load(str(tmp_path / "ph" / name))
        affine = img.affine.copy()
        affine[:3, 2] *= 2000.0 / float(img.header.get_zooms()[2])  # 2000 mm between slices
        nib.save(nib.Nifti1Image(img.get_fdata().astype(img.get_data_dtype()), affine), str(tmp_path / "ph" / name))
    t0 = time.perf_counter()
    proc = bench("data", "prepare", "--root", "ph", "--profile", "cpu", "--cache", "c", cwd=tmp_path)
    assert_one_line_error(proc, "volume-0.nii.gz", "GB of", "over the limit", "MAX_RESAMPLED_VOXELS")
    assert time.perf_counter() - t0 < 60


# ---------------------------------------------------------------- no .lock left behind


def test_failed_evaluate_leaves_no_lock_or_empty_folders(tmp_path):
    assert bench("data", "phantom", "ph", "--cases", "3", *TOY, cwd=tmp_path).returncode == 0
    proc = bench("evaluate", "unet", "--root", "ph", "--cache", "c", "--results", "r", cwd=tmp_path)
    assert_one_line_error(proc, "no run here")
    assert not (tmp_path / "r").exists(), sorted(str(p) for p in (tmp_path / "r").rglob("*"))


def test_failed_evaluate_of_an_existing_run_leaves_no_lock(trained, tmp_path):
    _copy_run(trained, tmp_path)
    (tmp_path / RUN / "checkpoints" / "best.pt").write_bytes(b"")
    proc = bench("evaluate", "unet", "--root", "ph", "--cache", "c2", "--results", "r", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert not (tmp_path / RUN / ".lock").exists() and (tmp_path / RUN / "config.json").is_file()


# ---------------------------------------------------------------- SIGKILL of bench demo


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (its new parent has not reaped it yet)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_demo_leaves_no_workers(tmp_path):
    assert bench("data", "phantom", "ph", "--cases", "3", *TOY, cwd=tmp_path).returncode == 0
    parent = subprocess.Popen([sys.executable, "-m", "bench", "demo", "--root", "ph", "--profile", "smoke",
                               "--workers", "2", "--models", "unet", "--tasks", "liver", "--planes", "axial,coronal",
                               "--no-report", "--cache", "c", "--results", "r"],
                              cwd=tmp_path, env=bench_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and parent.poll() is None:
            workers = [p for p in _children(parent.pid) if b"spawn_main" in _cmdline(p)]
            if len(workers) >= 2:
                break
            time.sleep(0.2)
        assert len(workers) >= 2, "the demo did not start two workers"
        time.sleep(1.0)  # let the workers get going (past their initializer)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_running(p) for p in workers):
            time.sleep(0.1)
        alive = [p for p in workers if _running(p)]
        assert alive == [], f"workers {alive} outlived their SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        for p in workers:  # without the fix they would train on: end them here, by pid
            if _running(p):
                os.kill(p, signal.SIGKILL)
