"""The ``bench`` command line (Typer). Thin: parse flags, build a config, call the engine.

Each verb lives in its own module and registers itself on ``app``. Exit statuses (0 ok, 1 failed
check, 2 user error, 130/143 interrupted) and one-line errors are `bench.cli.exits`'s job.
"""

from __future__ import annotations

import importlib
import sys
from typing import List, Optional

import typer
from typer.core import TyperGroup

from bench.cli.exits import run
from bench.cli.helptext import install
from bench.cli.version import version_line


class BenchGroup(TyperGroup):
    """The root command: every (sub)command's help fills its registry lists when shown (`bench.cli.helptext`)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        install(self)


app = typer.Typer(
    name="bench",
    cls=BenchGroup,
    help="Benchmark CT liver and liver-lesion segmentation (paper re-creation + baselines; bench ls models).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="print the package version and git commit, then exit"),
    plugin: Optional[List[str]] = typer.Option(
        None, "--plugin", metavar="MODULE_OR_FILE.py",
        help="load models from a module or .py file (repeatable; also BENCH_PLUGINS=a:b, entry points liverbench.models)",
    ),
) -> None:
    """liverbench: train, evaluate and report CT liver / lesion segmentation benchmarks.

    ``--plugin`` is global (``bench --plugin mynet.py train mynet``): every verb that reads the
    model registry (train, evaluate, predict, ablate, demo, report, ls) sees the same models, and
    one option is simpler than one per verb. It only records the plug-in in ``BENCH_PLUGINS``
    (`bench.plugins.add_to_environment`); the registry imports it when first needed, so
    ``--help`` stays fast and worker processes inherit it.
    """
    if plugin:
        from bench.plugins import add_to_environment  # lazy: importlib.metadata; a plug-in loads when a command needs the registry

        add_to_environment(plugin)


# Modules that add their commands to `app` when imported.
_COMMAND_MODULES = ("ls", "data", "score", "train", "evaluate", "predict", "ablate", "report", "check", "demo")

for _name in _COMMAND_MODULES:
    importlib.import_module(f"bench.cli.{_name}")


def main() -> None:
    """Console entry point (``bench``, ``python -m bench``): exit status and one-line errors per `bench.cli.exits`."""
    sys.exit(run(app))
