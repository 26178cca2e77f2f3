"""``--config FILE``: the settings of ``--set``, kept in a file (TOML, YAML or JSON).

Keys are those of ``--set``: a dotted key (``"train.lr" = 1e-3``) or the same key as nested
sections (``[train]`` / ``lr = 1e-3``); run fields (``seed``, ``plane``, ``include_cysts`` ...) sit
at the top level. ``profile = "cpu"`` picks the base profile as ``--profile`` does. A run's own
``config.json`` is a valid file too: its ``config`` section is read (the whole profile, written
out), so ``--config results/.../config.json`` reproduces that run.

Precedence, lowest first: the profile's defaults, the file, flags given on the command line,
``--set``. Values are checked exactly as ``--set`` values are (`bench.config.override`): an
unknown key or a bad value is one line naming the file and the key, exit 2.

Safety: files are parsed as data only (``tomllib``, ``json``, ``yaml.safe_load``); nothing in a
file can run code.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from bench.config import Profile
from bench.errors import ConfigError

try:
    import tomllib
except ImportError:  # Python 3.10: the same parser, as the tomli package
    import tomli as tomllib

SUFFIXES = (".toml", ".yaml", ".yml", ".json")


def _parse(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"{path}: unknown config file type {path.suffix or '(none)'!r} "
                          f"(use {', '.join(SUFFIXES)})")
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text)
        import yaml  # lazy: PyYAML, only for a .yaml config

        return yaml.safe_load(text)  # data only: no tags that construct objects
    except Exception as exc:  # noqa: BLE001 -- every parser's error becomes one line naming the file
        kind = {".toml": "TOML", ".json": "JSON"}.get(suffix, "YAML")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not valid {kind}: {first}") from None


def _flatten(data: dict[str, Any], prefix: str, out: dict[str, Any], path: Path) -> None:
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{path}: key {key!r} is not text")
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            _flatten(value, dotted + ".", out, path)
        else:
            if dotted in out:
                raise ConfigError(f"{path}: {dotted} is set twice")
            out[dotted] = value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The file's settings as dotted keys, profile fields prefixed ``profile.`` like `parse_overrides`'s.

    ``profile`` given as a name stays the key ``profile`` (the base profile); a run record's
    ``profile.name`` is kept too (the caller picks the base profile from it).
    """
    path = Path(path)
    data = _parse(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of settings at the top level")
    if isinstance(data.get("config"), dict):  # a run's config.json: its resolved config
        data = data["config"]
    flat: dict[str, Any] = {}
    _flatten(data, "", flat, path)
    profile_fields = {f.name for f in fields(Profile)}
    out: dict[str, Any] = {}
    for key, value in flat.items():
        head = key.split(".")[0]
        # "model" alone is the run's model name; model.<field> (and every other profile group) the profile's
        if head in profile_fields and head != "name" and (head != "model" or "." in key):
            key = "profile." + key
        out[key] = value
    return out


def base_profile(changes: dict[str, Any], path: str | Path) -> str | None:
    """The profile a file names (``profile = "cpu"`` or a record's ``profile.name``), removed from ``changes``."""
    name = changes.pop("profile", None)
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"{path}: profile must be a profile name or a [profile] section")
    return name or changes.get("profile.name")
