"""The paper's ablations as registered lists of config overrides (never a subclass per setting).

Pure data: each variant is a set of overrides applied to the base run config
(`ablation_targets`); the engine's scheduler trains them like any run. A variant equal to the
default config *is* the default run (same folder), so it is reused rather than trained twice.
Tables read the varied field from each run's config.json, not from folder names.

Which models an ablation runs on is a registry query, not a list of names (`Ablation.models`):
the proposed model (Tables 3-5 and this toolkit's patch ablations), every baseline declaring a
capability (``norm``: each baseline under BatchNorm and GroupNorm), so a model a plug-in registers
with that capability is ablated with no edit here. The one exception is the capacity ablation,
whose "ours-size" field values are sized for U-Net's architecture (see below).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bench.config import RunConfig, override
from bench.registry import Registry


@dataclass(frozen=True)
class Ablation:
    """``variants``: (label, {dotted config key: value}) pairs; the table the results feed (a paper table's
    number or a report table's name). Every variant runs on each of `models`: the registered models of
    ``role`` (the proposed model for the paper's ablations) that declare ``capability`` (when given), or
    exactly ``only`` (an experiment sized for one architecture)."""

    name: str
    table: int | str
    description: str
    variants: tuple[tuple[str, tuple[tuple[str, object], ...]], ...]
    role: str = "proposed"
    capability: str = ""  # a `bench.models.CAPABILITIES` key
    only: tuple[str, ...] = ()
    plane: str = "axial"
    task: str = "liver"

    @property
    def models(self) -> tuple[str, ...]:
        """The models the variants run on, in table order, asked of the registry when the ablation is planned
        (plug-ins are loaded by then; imported here, not at the top, so ``bench --help`` does not load torch)."""
        if self.only:
            return self.only
        from bench.models import model_names, models_with  # lazy: bench.models imports torch; bench --help lists the ablations

        return tuple(models_with(self.capability, self.role) if self.capability else model_names(self.role))


ABLATIONS: Registry[Ablation] = Registry("ablation")

ABLATIONS.add("patch-level", Ablation(
    name="patch-level", table=3,
    description="Table 3: patches integrated up to level 1 (256), 2 (128), 3 (64); axial liver",
    variants=tuple((f"level-{k}", (("profile.cascade.patch_levels", k),)) for k in (1, 2, 3)),
), help="Table 3: patch levels 1/2/3 (axial, liver)")
ABLATIONS.add("loss", Ablation(
    name="loss", table=4,
    description="Table 4: without / with the multi-level loss; axial liver",
    variants=(("without", (("profile.cascade.multilevel_loss", False),)),
              ("with", (("profile.cascade.multilevel_loss", True),))),
), help="Table 4: single-output loss vs multi-level loss (axial, liver)")
ABLATIONS.add("iterations", Ablation(
    name="iterations", table=5,
    description="Table 5: reiterations N = 0..7 all recorded (no early stop), Val and Test; axial liver",
    variants=(("N=0..7", (("profile.cascade.reiter_stop", "none"), ("profile.cascade.max_reiterations", 7))),),
), help="Table 5: reiterations N = 0..7, Val and Test (axial, liver)")


ABLATIONS.add("patch-mode", Ablation(
    name="patch-mode", table=3,
    description="Patches at levels 1-3 as tiles (3.4 read literally) vs space-to-depth (spatially coherent); axial liver",
    variants=(("tile", (("profile.cascade.patch_mode", "tile"),)),
              ("unshuffle", (("profile.cascade.patch_mode", "unshuffle"),))),
), help="patch mode: tile vs unshuffle (axial, liver; Table 3 layout)")
ABLATIONS.add("patch-scale", Ablation(
    name="patch-scale", table=5,
    description="Algorithm 1's patches zoomed to the input size vs at their native size; all iterations, axial liver",
    variants=(("zoom", (("profile.cascade.patch_scale", "zoom"), ("profile.cascade.reiter_stop", "none"))),
              ("native", (("profile.cascade.patch_scale", "native"), ("profile.cascade.reiter_stop", "none")))),
), help="Algorithm 1 patch scale: zoom vs native, every iteration recorded (axial, liver)")


ABLATIONS.add("norm", Ablation(
    name="norm", table="norm",
    description="Every baseline as published (model.norm=batch) and under ours' normalisation (model.norm=group: "
                "GroupNorm, the cascade's group size); ours is the reference column; axial liver",
    variants=(("batch", (("profile.model.norm", "batch"),)),
              ("group", (("profile.model.norm", "group"),))),
    role="baseline", capability="norm",  # every baseline that honours model.norm (SegNet, U-Net, DeepLabV3, UNet++)
), help="normalisation: each baseline under BatchNorm (as published) and GroupNorm (matched to ours)")
ABLATIONS.add("capacity", Ablation(
    name="capacity", table="capacity",
    description="U-Net as configured vs at about ours' parameter count (4 encoder stages, decoder width 0.25: "
                "3.10 M at the cpu profile, ours 2.98 M); axial liver",
    variants=(("as configured", ()),
              ("ours-size", (("profile.model.encoder_depth", 4), ("profile.model.width", 0.25)))),
    # named, not queried: the ours-size values (4 encoder stages, width 0.25) are sized for U-Net's architecture;
    # another model would need its own values (the capacity table reads this, bench.reports.tables.CAPACITY_TABLE)
    only=("unet",),
), help="capacity: U-Net as configured vs at about ours' parameter count (sized at the cpu profile)")


def variant_config(base: RunConfig, overrides: tuple[tuple[str, object], ...]) -> RunConfig:
    """Apply a variant; a config that differs from the base gets its own results folder."""
    cfg = override(base, dict(overrides))
    if cfg == base:
        return cfg
    changed = ",".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in overrides
                       if _get(cfg, key) != _get(base, key))
    return replace(cfg, tag=f"{base.run_tag}~{changed}")


def _get(obj: object, dotted: str) -> object:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def ablation_targets(name: str, base: RunConfig) -> list[tuple[str, RunConfig]]:
    """(label, config) of every variant of an ablation on ``base`` (each of its models, its plane and task);
    with several models the label starts with the model's name."""
    ablation = ABLATIONS.get(name)
    out = []
    for model in ablation.models:
        cfg = replace(base, model=model, plane=ablation.plane, task=ablation.task)
        if base.tag and base.tag.startswith(base.model):  # a seed/fold tag (ours~seed1) follows the model
            cfg = replace(cfg, tag=model + base.tag[len(base.model):])
        prefix = f"{model} " if len(ablation.models) > 1 else ""
        out += [(f"{prefix}{label}", variant_config(cfg, overrides)) for label, overrides in ablation.variants]
    return out
