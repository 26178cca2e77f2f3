"""Models from outside the repository: entry points, ``BENCH_PLUGINS`` and ``bench --plugin``.

A plug-in is a Python module (or a ``.py`` file) that registers models with
`bench.models.register_model` when imported; importing it is all the toolkit does. Three ways in,
loaded in this order when `bench.models` is first imported (after the built-in models, so a
plug-in may reuse their helpers):

1. the entry-point group ``liverbench.models`` of installed distributions (a user's package
   declares ``[project.entry-points."liverbench.models"] mynet = "mypkg.mynet"``);
2. ``BENCH_PLUGINS``: colon-separated module names or file paths (``/path/mynet.py``);
3. ``bench --plugin MODULE_OR_FILE.py`` (repeatable), which the CLI appends to ``BENCH_PLUGINS``
   (`add_to_environment`) rather than importing at once. Why: `bench --help` stays as fast as
   without plug-ins (nothing is imported until a command needs the registry), and the
   scheduler's worker processes inherit the environment, so they register the same models.

This module is on the ground floor (it imports no model) so that ``bench --plugin`` can record a
plug-in without importing the registry (torch); `bench.models` calls `load_plugins` at the end of
its own import. A plug-in that cannot be imported, or registers a taken name, is a `ConfigError` naming it: the
CLI prints one line and exits 2. A file is imported under a private module name
(``bench_plugin_<stem>``), so it cannot shadow a real package. The toolkit runs plug-in code
only because the user named it (an environment variable, a flag, an installed package); no
file the toolkit reads as data runs code.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from bench.errors import ConfigError

ENTRY_POINT_GROUP = "liverbench.models"
ENV = "BENCH_PLUGINS"

_loaded: dict[str, ModuleType] = {}  # plug-in reference -> module (loading twice registers nothing twice)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _is_file(ref: str) -> bool:
    return ref.endswith(".py") or os.sep in ref or "/" in ref


def _import_file(ref: str) -> ModuleType:
    path = Path(ref).expanduser()
    if not path.is_file():
        raise ConfigError(f"plugin {ref}: no such file")
    name = "bench_plugin_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"plugin {ref}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_plugin(ref: str, source: str = "") -> ModuleType:
    """Import one plug-in (module name or ``.py`` path); its ``@register_model`` calls register it.

    Any failure, including a model name that is already registered, is one `ConfigError` line
    naming the plug-in and where it came from (``source``)."""
    ref = ref.strip()
    if ref in _loaded:
        return _loaded[ref]
    where = f" ({source})" if source else ""
    try:
        module = _import_file(ref) if _is_file(ref) else importlib.import_module(ref)
    except ConfigError as exc:  # e.g. "model 'unet' is already registered", or no such file
        message = str(exc)
        raise ConfigError(message if message.startswith(f"plugin {ref}") else f"plugin {ref}{where}: {message}") from None
    except Exception as exc:  # an import error of any type means the same: this plug-in is unusable
        raise ConfigError(f"plugin {ref}{where}: cannot import ({_first_line(exc)})") from None
    _loaded[ref] = module
    return module


def env_plugins() -> list[str]:
    """The plug-ins named by ``BENCH_PLUGINS`` (colon-separated; empty entries ignored)."""
    return [p.strip() for p in os.environ.get(ENV, "").split(":") if p.strip()]


def add_to_environment(refs: list[str]) -> None:
    """``bench --plugin``: append to ``BENCH_PLUGINS`` (files made absolute, so workers started in
    another directory find them); loaded when the model registry is first imported."""
    current = env_plugins()
    for ref in refs:
        value = str(Path(ref).expanduser().resolve()) if _is_file(ref) else ref.strip()
        if _is_file(ref) and not Path(value).is_file():
            raise ConfigError(f"--plugin {ref}: no such file")
        if value and value not in current:
            current.append(value)
    os.environ[ENV] = ":".join(current)


def load_plugins() -> list[str]:
    """Load every plug-in: entry points of ``liverbench.models``, then ``BENCH_PLUGINS``. Returns their names."""
    names = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.value in _loaded:
            continue
        try:
            ep.load()  # "pkg.module" or "pkg.module:attr": importing the module registers its models
        except ConfigError as exc:
            raise ConfigError(f"plugin {ep.value} (entry point {ep.name} of {ENTRY_POINT_GROUP}): {exc}") from None
        except Exception as exc:
            raise ConfigError(f"plugin {ep.value} (entry point {ep.name} of {ENTRY_POINT_GROUP}): cannot import "
                              f"({_first_line(exc)})") from None
        _loaded[ep.value] = sys.modules.get(ep.module, ModuleType(ep.module))
        names.append(ep.value)
    for ref in env_plugins():
        load_plugin(ref, source=ENV)
        names.append(ref)
    return names


__all__ = ["ENTRY_POINT_GROUP", "ENV", "load_plugin", "load_plugins", "env_plugins", "add_to_environment"]
