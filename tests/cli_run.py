"""Run ``bench`` the way users and CI do: a subprocess of the console script (or ``python -m bench``).

Shared by the CLI tests; typer's CliRunner is not used for status and stderr checks because it
hid both the swallowed ``typer.Exit`` codes and the tracebacks of usage errors.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CONSOLE_SCRIPT = Path(sys.executable).with_name("bench")
LAUNCHERS = {"python -m bench": [sys.executable, "-m", "bench"]}
if CONSOLE_SCRIPT.is_file():
    LAUNCHERS["console script"] = [str(CONSOLE_SCRIPT)]


def bench_env() -> dict[str, str]:
    """The subprocess imports this checkout's ``bench`` (also through the venv's console script)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("BENCH_TRACEBACK", None)
    env["COLUMNS"] = "200"
    return env


def bench(*args: str, cwd: Path, launcher: str = "python -m bench", timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*LAUNCHERS[launcher], *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=bench_env())


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    """Exit ``code``, exactly one non-empty line on stderr, no traceback; returns that line."""
    lines = stderr_lines(proc)
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
