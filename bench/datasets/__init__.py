"""Data set adapters, one registry: ``get_dataset("lits", root=PATH)``.

Adapters: ``lits`` (NIfTI), ``ircadb`` (3D-IRCADb-01 DICOM, zipped or unpacked), ``phantom``
(a seeded synthetic abdominal CT written in the LiTS layout; the default, needs no download).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from bench.datasets.base import Case, DatasetAdapter, task_mask
from bench.errors import ConfigError
from bench.registry import Registry

DATASETS: Registry[type[DatasetAdapter]] = Registry("dataset")


def get_dataset(name: str, root: str | Path | None = None, include_cysts: bool | str = False,
                **options: Any) -> DatasetAdapter:
    """Instantiate a registered adapter; the phantom creates its default data when ``root`` is None.

    ``include_cysts`` (``--include-cysts``, `RunConfig.include_cysts`): count liver cysts as lesions;
    only adapters listing it in ``label_options`` (3D-IRCADb) accept it, the others raise.
    """
    cls = DATASETS.get(name)
    if include_cysts is True and "include_cysts" not in cls.label_options:
        raise ConfigError(f"--include-cysts (include_cysts) applies to data sets with cyst masks (ircadb), not {name!r}")
    if include_cysts is not False:  # True, or a text value the adapter parses ("true"/"false")
        options["include_cysts"] = include_cysts
    if root is None:
        default_root = getattr(cls, "default_root", None)
        if default_root is None:
            raise ConfigError(f"dataset {name!r} needs --root PATH")
        root = default_root()
    return cls(root, **options)


def _register_builtin() -> None:
    """Import the built-in adapters for their ``@DATASETS.register`` side effect."""
    for module in ("lits", "ircadb", "phantom"):
        importlib.import_module(f"bench.datasets.{module}")


_register_builtin()

__all__ = ["Case", "DatasetAdapter", "DATASETS", "get_dataset", "task_mask"]
