"""The package's layering, checked from the source: no upward import, no import circle, no sideways import.

cli > golden > (reports, engine) > (ablations, metrics, models, datasets) > plumbing (config, paths,
atomic, errors, devices, progress, plugins) > registry. The golden check sits above both the reports and the
engine because it uses both; reports and engine share a layer and never import each other (a report
is built from a results folder, not from the code that wrote it). Every ``import``/``from ...
import`` is counted, including the ones inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bench"
LAYERS = {
    "bench": 0, "bench.registry": 0,
    "bench.errors": 0,
    "bench.atomic": 1, "bench.config": 1, "bench.paths": 1, "bench.devices": 1, "bench.progress": 1,
    "bench.plugins": 1, "bench.gitinfo": 1,
    "bench.datasets": 2, "bench.metrics": 2, "bench.models": 2, "bench.ablations": 2,
    "bench.reports": 3, "bench.engine": 3,
    "bench.golden": 4,
    "bench.cli": 5, "bench.__main__": 5,
}
# packages of one layer that must not import each other (in either direction)
APART = (("bench.engine", "bench.reports"),)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> int | None:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    return None


def imports(path: Path) -> set[str]:
    """The bench modules a file imports (``from bench.x import y`` counts y when it is a module)."""
    known = {module_name(p) for p in PACKAGE.rglob("*.py")}
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("bench")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bench") and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known}
    return {m for m in out if m in known}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) - {module_name(p)} for p in PACKAGE.rglob("*.py")}


def test_every_module_has_a_layer() -> None:
    assert [m for m in graph() if layer(m) is None] == []


def test_no_import_from_a_lower_layer_to_a_higher_one() -> None:
    upward = [f"{m} -> {d}" for m, deps in graph().items() for d in deps if layer(d) > layer(m)]
    assert upward == []


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def sideways(g: dict[str, set[str]]) -> list[str]:
    """Imports between packages `APART` keeps apart."""
    pairs = {frozenset(p) for p in APART}
    return [f"{m} -> {d}" for m, deps in g.items() for d in deps
            if frozenset((_package(m), _package(d))) in pairs and _package(m) != _package(d)]


def test_no_import_between_engine_and_reports() -> None:
    assert sideways(graph()) == []


def test_the_golden_check_is_above_reports_and_engine() -> None:
    assert layer("bench.golden.check") > max(layer("bench.reports.tables"), layer("bench.engine.evaluate"))
    assert layer("bench.cli.check") > layer("bench.golden.check")
    assert not [m for m in graph() if m.startswith(("bench.engine.golden", "bench.reports.golden"))]


def test_the_checker_sees_a_sideways_import(tmp_path) -> None:
    """The gate can fail: an engine module importing the reports (and the reverse) is reported."""
    fake = tmp_path / "x.py"
    fake.write_text("from bench.reports.tables import build_tables\n")
    assert sideways({"bench.engine.fake": imports(fake)}) == ["bench.engine.fake -> bench.reports.tables"]
    fake.write_text("def f():\n    import bench.engine.evaluate\n")
    assert sideways({"bench.reports.fake": imports(fake)}) == ["bench.reports.fake -> bench.engine.evaluate"]
    assert sideways({"bench.golden.fake": imports(fake)}) == []


def test_no_import_circle() -> None:
    g = graph()
    # a package's own __init__ importing its plugins by name (importlib) is not an edge; only code is
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(trail[trail.index(dep):] + [dep] if dep in trail else [node, dep])
            elif dep not in state:
                visit(dep, trail + [dep])
        state[node] = 2

    for start in sorted(g):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_the_checker_sees_an_upward_import(tmp_path) -> None:
    """The gate can fail: a metrics module importing the engine is reported."""
    fake = tmp_path / "x.py"
    fake.write_text("def f():\n    from bench.engine.runner import run\n")
    assert "bench.engine.runner" in imports(fake)
    assert layer("bench.engine.runner") > layer("bench.metrics.scores")
