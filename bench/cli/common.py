"""Shared CLI plumbing: the options every run-level verb takes, and flags -> RunConfig."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Collection

from bench.cli.config_file import base_profile, read_config_file
from bench.config import PLANES, RunConfig, get_profile, override, parse_overrides
from bench.errors import ConfigError
from bench.paths import seed_tag

# the rule below in words, for help text (`bench.cli.helptext`'s {default_profile})
DEFAULT_PROFILE_RULE = "demo on the phantom; on real CT paper where CUDA is used, else cpu"


def default_profile(dataset: str, device: str = "auto") -> str:
    """``demo`` on the phantom; on real CT ``paper`` where CUDA will be used, else the CPU-sized ``cpu``."""
    if dataset == "phantom":
        return "demo"
    if device == "cpu":
        return "cpu"
    import torch  # lazy: torch

    return "paper" if torch.cuda.is_available() else "cpu"


def parse_int_list(text: str, flag: str, example: str = "0,1,2") -> list[int]:
    """A comma-separated list of integers given to ``flag``; a bad or empty one is a one-line error."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected comma-separated integers, e.g. {example}") from None
    if not values:
        raise ConfigError(f"{flag} {text!r}: name at least one value")
    return values


def parse_planes(text: str, flag: str = "--planes", allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Comma-separated plane names given to ``flag`` (default: the three planes); an empty list (``","``)
    or an unknown name is a one-line error, checked before anything runs."""
    allowed = allowed or PLANES
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise ConfigError(f"{flag} {text!r}: name at least one plane ({', '.join(allowed)})")
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ConfigError(f"{flag} {text!r}: unknown plane(s) {', '.join(bad)} (known: {', '.join(allowed)})")
    return tuple(dict.fromkeys(names))


def check_device(device: str) -> str:
    """``--device`` is checked on every call, also when nothing needs to run (a finished run, a dry plan):
    a misspelt device must not pass because no tensor was made this time."""
    from bench.devices import resolve_device  # lazy: torch

    resolve_device(device)
    return device


def parse_seeds(seed: int, seeds: str | None) -> list[int]:
    return parse_int_list(seeds, "--seeds") if seeds else [seed]


def given_flags(ctx: Any) -> frozenset[str]:
    """The parameters of a click/typer context set on the command line or by an environment variable.

    They win over a ``--config`` file (`build_run_config`); ``--seeds`` fixes ``seed`` too.
    """
    # compared by name: typer may carry its own copy of click's ParameterSource enum
    names = {name for name in ctx.params
             if getattr(ctx.get_parameter_source(name), "name", None) in ("COMMANDLINE", "ENVIRONMENT")}
    return frozenset(names | ({"seed"} if "seeds" in names else set()))


def _as_set_value(value: Any) -> str:
    """A typed value from a config file written as ``--set`` would take it, so both take one path and one check."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(_as_set_value(v) for v in value)
    return str(value)  # repr of a float is exact: 0.001 -> "0.001"


def _base_tag(tag: str, seed: int, fold: int | None) -> str:
    """A stored tag without the ``~seedK``/``~foldI`` that `seed_tag` adds (so a record's tag is not suffixed twice)."""
    if fold is not None:
        tag = tag.removesuffix(f"~fold{fold}")
    return tag.removesuffix(f"~seed{seed}") if seed else tag


def build_run_config(model: str, plane: str, task: str, dataset: str, root: str | None, profile: str | None,
                     seed: int, device: str, results: str, cache: str, splits: str | None,
                     overrides: list[str] | None, tag: str = "", fold: int | None = None,
                     config_file: str | Path | None = None, given: Collection[str] = (),
                     check: bool = True) -> RunConfig:
    """Flags, a ``--config`` file and ``--set`` overrides -> one checked RunConfig.

    ``check=False`` leaves `bench.models.check_run_config` to the caller's scheduler
    (`bench.engine.scheduler.plan` checks every run it plans, once), before any run starts.

    Precedence, lowest first: the profile, the config file, flags in ``given`` (typed on the command
    line or from an environment variable), ``--set``. File values go through the ``--set`` path
    (`_as_set_value`, `override`), so both accept the same keys and refuse the same values.
    """
    from bench.datasets import DATASETS  # lazy: numpy, nibabel, scipy
    changes: dict[str, str] = {}
    file_profile = None
    if config_file:
        raw = read_config_file(config_file)
        file_profile = base_profile(raw, config_file)
        changes = {k: _as_set_value(v) for k, v in raw.items() if "." in k or k not in given}
    dataset = changes.get("dataset", dataset)
    DATASETS.get(dataset)
    prof = get_profile(profile or file_profile or default_profile(dataset, changes.get("device", device)))
    cfg = RunConfig(model=model, plane=plane, task=task, dataset=dataset, root=root or "", seed=seed, device=device,
                    results=results, cache=cache, splits=splits or "", tag=tag, profile=prof)
    if changes:
        try:
            cfg = override(cfg, changes)
        except ConfigError as exc:
            raise ConfigError(f"{config_file}: {exc}") from None
    if fold is not None:
        cfg = override(cfg, {"fold": fold})
    if overrides:
        cfg = override(cfg, parse_overrides(overrides))
    if cfg.root:  # stored absolute: a run must not read other data when called from another folder
        cfg = replace(cfg, root=str(Path(cfg.root).expanduser().resolve()))
    from bench.models import check_run_config, get_model_spec  # lazy: torch, after the cheap checks

    check_device(cfg.device)  # also when nothing will run (a finished run is reused)

    get_model_spec(cfg.model)  # unknown model -> "did you mean"
    if cfg.seed != 0 or cfg.fold is not None:
        cfg = replace(cfg, tag=seed_tag(cfg.model, _base_tag(cfg.tag, cfg.seed, cfg.fold), cfg.seed, cfg.fold))
    if check:
        check_run_config(cfg)  # e.g. an input size the model cannot take, before any time is spent
    return cfg
