"""Model registry: every network the benchmark trains, by name (``bench ls models``).

Output convention (used by every model, the losses, the engine and the metrics)
------------------------------------------------------------------------------
A model maps a batch of slices ``(B, 1, H, W)`` float to ``(B, 1, H, W)`` **logits**: one
output channel per task, binary, read through a sigmoid (probability = ``sigmoid(logit)``,
foreground where it is >= 0.5). A task is ``liver`` or ``lesion``; liver and lesion are
*separate* models trained in separate steps, as in the paper (section 2: "separate liver and
liver lesions segmentations steps"), so no model ever predicts both classes at once and no
softmax over classes is needed. The cascade ("ours") keeps the same outer contract.

Kinds
-----
``standard``  trained on full slices by ``bench.engine.train`` (SegNet, U-Net, DeepLabV3).
``cascade``   the proposed method; trained by its own engine (localization + tuning networks
              and reiterative patch training) but still built through `build_model`.

Registering a model::

    @register_model("mynet", description="one line for bench ls")
    def build_mynet(cfg: RunConfig) -> torch.nn.Module: ...
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import torch

from bench.config import RunConfig, get_profile
from bench.errors import ConfigError
from bench.registry import Registry

KINDS = ("standard", "cascade")


@dataclass(frozen=True)
class ModelSpec:
    """What the registry holds for one model name.

    ``count`` lets a model whose trainable parts are not one ``nn.Module`` (the cascade: two
    networks) report its own parameter total; when None, the module from ``build`` is counted.
    """

    name: str
    build: Callable[[RunConfig], torch.nn.Module]
    kind: str = "standard"
    description: str = ""
    count: Callable[[RunConfig], int] | None = None


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(
    name: str,
    kind: str = "standard",
    description: str = "",
    count: Callable[[RunConfig], int] | None = None,
) -> Callable[[Callable[[RunConfig], torch.nn.Module]], Callable[[RunConfig], torch.nn.Module]]:
    """Decorator for a build function ``RunConfig -> nn.Module``; returns the function unchanged."""
    if kind not in KINDS:
        raise ConfigError(f"model {name!r}: unknown kind {kind!r} (known: {', '.join(KINDS)})")

    def decorator(build: Callable[[RunConfig], torch.nn.Module]) -> Callable[[RunConfig], torch.nn.Module]:
        doc = (build.__doc__ or "").strip()
        text = description or (doc.splitlines()[0] if doc else "")
        MODELS.add(name, ModelSpec(name=name, build=build, kind=kind, description=text, count=count), help=text)
        return build

    return decorator


def get_model_spec(name: str) -> ModelSpec:
    return MODELS.get(name)


def build_model(cfg: RunConfig) -> torch.nn.Module:
    """Build ``cfg.model`` for ``cfg`` (random init unless the profile names local encoder weights)."""
    spec = MODELS.get(cfg.model)
    model = spec.build(cfg)
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model {cfg.model!r}: build returned {type(model).__name__}, not a torch.nn.Module")
    return model


def count_parameters(name: str, profile: str = "paper") -> int:
    """Number of parameters of model ``name`` at a profile (paper: the published sizes).

    The module is built on the ``meta`` device, so no memory is allocated and no weights are
    initialised: counting the 29 M-parameter SegNet costs milliseconds. A spec with its own
    ``count`` (the cascade) is asked instead. Local encoder weights named by the profile are
    not loaded (they do not change the count).
    """
    spec = MODELS.get(name)
    prof = get_profile(profile)
    if prof.model.encoder_weights:
        from dataclasses import replace

        prof = replace(prof, model=replace(prof.model, encoder_weights=""))
    cfg = RunConfig(model=name, profile=prof, device="cpu")
    if spec.count is not None:  # the spec's own counter chooses its device
        return int(spec.count(cfg))
    with torch.device("meta"):
        module = spec.build(cfg)
    return sum(p.numel() for p in module.parameters())


def _register_builtin() -> None:
    """Import the built-in models for their ``@register_model`` side effect.

    ``cascade`` is written separately; while it does not exist yet the others still register.
    Any other import failure (a bug inside a module) is raised, never hidden.
    """
    for module in ("baselines", "segnet", "cascade"):
        full = f"bench.models.{module}"
        try:
            importlib.import_module(full)
        except ModuleNotFoundError as exc:
            if module != "cascade" or exc.name != full:
                raise


_register_builtin()

__all__ = ["MODELS", "ModelSpec", "register_model", "get_model_spec", "build_model", "count_parameters"]
