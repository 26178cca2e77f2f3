"""The model registry's data: one `ModelSpec` per model, and the queries everything else asks it.

Why a module of its own: the helpers that implement a capability (`bench.models.liver_prior`,
`bench.models.lesion_roi`) must ask the registry which model provides the liver prior
(`liver_prior_model`), and `bench.models` imports them to register a model; here the registry
imports no model code, so neither side imports the other. `bench.models` re-exports everything
below; import from there.

The queries (`model_names`, `proposed_model`, `models_with`, `default_baselines`,
`liver_prior_model`) are how the study, the ablations, the tables, the figures and the CLI help
name models: by role, capability or flag, never by a hand-written list, so a model a plug-in
registers with the right declarations is picked up everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

from bench.config import RunConfig
from bench.errors import ConfigError
from bench.registry import Registry

if TYPE_CHECKING:
    import torch

Role = Literal["baseline", "proposed"]
ROLES: tuple[str, ...] = ("baseline", "proposed")
# capability -> what declaring it promises (``bench ls models`` shows them)
CAPABILITIES: dict[str, str] = {
    "liver_prior": "takes model.liver_prior on the lesion task (the liver cascade's prior)",
    "norm": "honours model.norm (batch | group | instance)",
    "provides_liver_prior": "its liver run gives the other lesion models' liver prior and lesion ROI (one model)",
}
DEFAULT_RANK = 100


@dataclass(frozen=True)
class ModelSpec:
    """What the registry holds for one model name.

    ``label``: its name in tables and figures (default: the name). ``role``: ``baseline`` or
    ``proposed`` (the model the paper proposes: last column, the paired table's reference).
    ``config_section``: the `bench.config.Profile` field its knobs live in (``model``:
    width/dropout/encoder; ``cascade``: the proposed method's). ``rank``: column order among
    models of its role (lower first; ties by name). ``card``: its own parameter card
    (`bench.models.cards`), else the generic one. ``count`` lets a model whose trainable parts
    are not one ``nn.Module`` (the cascade: two networks) report its own parameter total; when
    None, the module from ``build`` is counted. ``needs(cfg)`` lists the runs this run reads
    (beyond its own data); ``input_multiple(cfg)`` the number its input side must be a multiple
    of (checked before any training time is spent). ``default_baseline``: a baseline a study
    schedules where it runs fewer than all models (`default_baselines`; U-Net).
    """

    name: str
    build: Callable[[RunConfig], torch.nn.Module]
    recipe: str = "slices"
    description: str = ""
    label: str = ""
    role: Role = "baseline"
    config_section: str = "model"
    capabilities: frozenset[str] = field(default_factory=frozenset)
    card: Callable[[RunConfig], Any] | None = None
    rank: int = DEFAULT_RANK
    count: Callable[[RunConfig], int] | None = None
    needs: Callable[[RunConfig], list[RunConfig]] | None = None
    input_multiple: Callable[[RunConfig], int] | None = None
    relative_cost: float = 1.0  # training time relative to SegNet's (scheduling only: longest first)
    default_baseline: bool = False
    module: str = ""  # where it was registered (bench ls models, error messages)

    @property
    def liver_prior(self) -> bool:
        """The model takes ``model.liver_prior`` (capability ``liver_prior``)."""
        return "liver_prior" in self.capabilities

    @property
    def display(self) -> str:
        return self.label or self.name


MODELS: Registry[ModelSpec] = Registry("model")

def model_order(name: str) -> tuple[bool, float, str]:
    """Sort key of tables and studies: baselines before the proposed model, then rank, then name.
    A name no spec holds (runs of a plug-in not loaded now) sorts after the registered baselines."""
    if name in MODELS:
        spec = MODELS.get(name)
        return (spec.role == "proposed", float(spec.rank), name)
    return (False, float("inf"), name)


def model_names(role: str | None = None) -> list[str]:
    """Registered model names in table order (`model_order`), optionally of one role."""
    names = [n for n in MODELS.names() if role is None or MODELS.get(n).role == role]
    return sorted(names, key=model_order)


def model_label(name: str) -> str:
    """A model's display label (tables, figures); the name itself for an unregistered one."""
    return MODELS.get(name).display if name in MODELS else name


def proposed_model() -> str:
    """The name of the one model with role ``proposed`` (the paper's method)."""
    names = model_names("proposed")
    if len(names) != 1:
        raise ConfigError(f"expected exactly one proposed model, found {len(names)}: {', '.join(names) or 'none'}")
    return names[0]


def models_with(capability: str, role: str | None = None) -> list[str]:
    """Registered models declaring ``capability`` (a `CAPABILITIES` key), in table order, optionally of one role."""
    if capability not in CAPABILITIES:
        raise ConfigError(f"unknown capability {capability!r} (known: {', '.join(CAPABILITIES)})")
    return [n for n in model_names(role) if capability in MODELS.get(n).capabilities]


def default_baselines() -> list[str]:
    """The baselines flagged ``default_baseline`` (U-Net), in table order: what a study schedules where it
    runs fewer than all models (the real-data demo, the lesion study's "+ liver prior" rows)."""
    return [n for n in model_names("baseline") if MODELS.get(n).default_baseline]


def liver_prior_model() -> str:
    """The one model declaring ``provides_liver_prior`` (the cascade): its liver run is every lesion model's
    liver prior and the lesion ROI's source."""
    names = models_with("provides_liver_prior")
    if len(names) != 1:
        raise ConfigError(f"expected exactly one model with capability provides_liver_prior, found {len(names)}: "
                          f"{', '.join(names) or 'none'}")
    return names[0]


def get_model_spec(name: str) -> ModelSpec:
    return MODELS.get(name)



__all__ = ["Role", "ROLES", "CAPABILITIES", "DEFAULT_RANK", "ModelSpec", "MODELS", "model_order", "model_names",
           "model_label", "proposed_model", "models_with", "default_baselines", "liver_prior_model", "get_model_spec"]
