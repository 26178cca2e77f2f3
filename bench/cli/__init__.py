"""The ``bench`` command line (Typer). Thin: parse flags, build a config, call the engine.

Each verb lives in its own module and registers itself on ``app``; user errors
(`bench.errors.BenchError`) print as one red line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

from bench.errors import BenchError

app = typer.Typer(
    name="bench",
    help="Benchmark CT liver and liver-lesion segmentation (paper re-creation + SegNet/U-Net/DeepLabV3).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



@app.callback()
def _root() -> None:
    """liverbench: train, evaluate and report CT liver / lesion segmentation benchmarks."""


# Modules that add their commands to `app` when imported.
_COMMAND_MODULES = ("ls", "data", "score", "train", "evaluate", "predict", "ablate", "report", "demo")

for _name in _COMMAND_MODULES:
    importlib.import_module(f"bench.cli.{_name}")


def main() -> None:
    """Console entry point with one-line errors."""
    try:
        code = app(standalone_mode=False)  # returns (not raises) a typer.Exit's code in this mode
    except BenchError as exc:
        from rich.console import Console

        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)
