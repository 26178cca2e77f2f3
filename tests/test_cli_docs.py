"""Help text and the CLI reference agree with the code by construction (issue 21, items 1-2)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_run import LAUNCHERS, bench, bench_env

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = "console script" if "console script" in LAUNCHERS else "python -m bench"


def _docs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli.docs", *args], cwd=ROOT, capture_output=True, text=True,
                          env=bench_env(), timeout=120)


def test_cli_reference_is_current_and_a_stale_one_fails(tmp_path: Path) -> None:
    fresh = _docs("--check", "docs/cli.md")
    assert fresh.returncode == 0, f"docs/cli.md is stale: run make docs ({fresh.stderr.strip()})"
    stale = tmp_path / "cli.md"
    stale.write_text((ROOT / "docs/cli.md").read_text().replace("--plane", "--plain", 1))
    proc = _docs("--check", str(stale))
    assert proc.returncode == 1 and "stale" in proc.stderr


def _listed(help_text: str, option: str) -> list[str]:
    """The ``a | b | c`` list on the help line of ``option`` (an option or an argument name)."""
    for line in help_text.splitlines():
        if line.startswith("│") and line.strip("│ *").startswith(option + " "):
            match = re.search(r"([\w.-]+(?: \| [\w.-]+)+)", line)
            assert match, line
            return match.group(1).split(" | ")
    raise AssertionError(f"{option} not in help:\n{help_text}")


def _names(module: str, attr: str) -> list[str]:
    import importlib

    return list(getattr(importlib.import_module(module), attr).names())


def test_help_lists_equal_the_registries(tmp_path: Path) -> None:
    profiles = _names("bench.config", "PROFILES")
    datasets = _names("bench.datasets", "DATASETS")
    ablations = _names("bench.ablations", "ABLATIONS")
    models = _names("bench.models", "MODELS")
    assert "cpu" in profiles and len(ablations) >= 5  # the lists the issue found short
    train = bench("train", "--help", cwd=tmp_path, launcher=LAUNCHER)
    assert train.returncode == 0, train.stderr
    assert _listed(train.stdout, "--profile") == profiles
    assert _listed(train.stdout, "--dataset") == datasets
    assert _listed(train.stdout, "model") == models
    assert "paper otherwise" not in train.stdout
    prepare = bench("data", "prepare", "--help", cwd=tmp_path, launcher=LAUNCHER)
    assert _listed(prepare.stdout, "--profile") == profiles
    ablate = bench("ablate", "--help", cwd=tmp_path, launcher=LAUNCHER)
    assert _listed(ablate.stdout, "name") == ablations
    assert "{" + "profiles}" not in ablate.stdout + train.stdout + prepare.stdout  # every placeholder filled


def test_no_placeholder_left_in_the_reference() -> None:
    text = (ROOT / "docs/cli.md").read_text()
    from bench.cli.helptext import REGISTRIES

    for name in [*REGISTRIES, "default_profile"]:
        assert "{" + name + "}" not in text


def test_version_prints_package_version_and_commit(tmp_path: Path) -> None:
    import bench as pkg

    proc = bench("--version", cwd=tmp_path, launcher=LAUNCHER)
    assert proc.returncode == 0, proc.stderr
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert re.fullmatch(rf"liverbench {re.escape(pkg.__version__)} \(git {head.stdout.strip()}(-dirty)?\)\n",
                        proc.stdout), proc.stdout


def test_version_outside_a_checkout_is_unknown(tmp_path: Path) -> None:
    from bench.gitinfo import git_hash

    pkg = tmp_path / "bench"
    pkg.mkdir()
    assert git_hash(package_dir=pkg) == "unknown"
