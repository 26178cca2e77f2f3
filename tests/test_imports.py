"""Where imports sit: at the top of each module, so a module's first lines say what it depends on.

Two gates. ``bench --help`` (through the console script, in a subprocess) must not load a heavy
library: the CLI parses flags before it needs torch, and a user asking for help should not wait for
it. The price is a few imports kept inside functions; each says so with a ``# lazy: <reason>``
comment on its line, and every other function-level import is refused, so the structure cannot
quietly drift back into function bodies.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

from cli_run import CONSOLE_SCRIPT, LAUNCHERS, bench_env

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "bench"
# each of these costs a noticeable share of a second (torch several) to import; none is needed to parse
HEAVY = ("torch", "torchvision", "segmentation_models_pytorch", "timm", "monai", "nibabel", "pydicom", "scipy",
         "pandas", "matplotlib", "pydensecrf", "numpy", "SimpleITK", "skimage", "PIL")
LAZY_MARK = "# lazy:"


def _help_imports(pythonpath: Path) -> set[str]:
    """Top-level names of every module ``bench --help`` imports (``-X importtime`` via the environment,
    so the console script itself is what runs)."""
    launcher = LAUNCHERS.get("console script", LAUNCHERS["python -m bench"])
    env = {**bench_env(), "PYTHONPATH": str(pythonpath), "PYTHONPROFILEIMPORTTIME": "1"}
    proc = subprocess.run([*launcher, "--help"], cwd=pythonpath, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 and "Usage" in proc.stdout, proc.stderr[-2000:]
    names = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "bench.cli" in names, proc.stderr[-2000:]  # the profile saw the CLI itself
    return {name.split(".")[0] for name in names}


def test_help_loads_no_heavy_library() -> None:
    assert CONSOLE_SCRIPT.is_file() or "console script" not in LAUNCHERS
    assert sorted(_help_imports(REPO) & set(HEAVY)) == []


def test_the_help_gate_sees_a_heavy_import(tmp_path: Path) -> None:
    """The gate can fail: a copy of the package whose ``bench ls`` module imports torch at its top."""
    shutil.copytree(PACKAGE, tmp_path / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    ls = tmp_path / "bench" / "cli" / "ls.py"
    source = ls.read_text()
    ls.write_text(source.replace("from __future__ import annotations\n", "from __future__ import annotations\n\nimport torch\n", 1))
    assert "import torch" in ls.read_text()
    assert "torch" in _help_imports(tmp_path)


def unmarked_imports(path: Path) -> list[str]:
    """``file:line: statement`` for each import inside a function whose line lacks ``# lazy: <reason>``."""
    source = path.read_text()
    lines = source.splitlines()
    found: set[int] = set()
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found |= {node.lineno for node in ast.walk(fn) if isinstance(node, (ast.Import, ast.ImportFrom))}
    name = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
    return [f"{name}:{n}: {lines[n - 1].strip()}" for n in sorted(found)
            if not lines[n - 1].partition(LAZY_MARK)[2].strip()]


def test_imports_inside_functions_say_why() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert files
    assert [hit for p in files for hit in unmarked_imports(p)] == []


def test_the_import_gate_sees_an_unmarked_import(tmp_path: Path) -> None:
    """The gate can fail: an import inside a (nested) function without a reason is reported; one with
    ``# lazy:`` and a reason, and one at the top, are not; ``# lazy:`` with no reason is no reason."""
    fake = tmp_path / "fake.py"
    fake.write_text("import os\n\n\ndef f():\n    import json\n    from math import pi  # lazy: keeps json out\n"
                    "    def g():\n        import re  # lazy:\n        return re\n    return g\n")
    assert unmarked_imports(fake) == ["fake.py:5: import json", "fake.py:8: import re  # lazy:"]
