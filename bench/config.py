"""Configuration as data: frozen dataclasses, saved beside every run.

A `Profile` bundles everything that sets the scale of an experiment (input size, epochs,
widths); a `RunConfig` is one training/evaluation run (model, plane, task, data, seed) plus
its profile. Ablations and CLI flags are *overrides* (``"cascade.patch_levels=1"``) applied
with `override`, never subclasses per setting (the nnU-Net ``Trainer_Xepochs`` pattern to avoid).

Profiles
--------
``paper``  Table 2 of the paper: Adam, lr 1e-4, dropout 0.2, batch 4, 100 epochs, early
           stopping patience 50, 512x512 input, patches 256/128/64, ASPP 6/12/18, <= 7 reiterations.
``demo``   the same code sized so ``make demo`` trains every model on three planes on 2 CPU cores.
``smoke``  toy size (64x64, a few steps) for tests.
``golden`` the smallest deterministic run whose tables CI compares with ``results/golden``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from bench.errors import ConfigError
from bench.registry import Registry

PLANES = ("axial", "coronal", "sagittal")
PLANE_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}  # axis of the (Z, Y, X) volume sliced


@dataclass(frozen=True)
class PreprocessConfig:
    """Paper 3.2. ``slice_fit``: how a non-square slice meets the square network input.

    ``resize`` stretches each slice to input_size x input_size (every pixel used, aspect lost);
    ``pad`` pads to a square with the background value first (aspect kept). The paper only says
    slices are fed at 512x512 (axial LiTS slices already are); we default to ``pad`` so coronal
    and sagittal anatomy keeps its shape.
    """

    hu_min: float = -100.0
    hu_max: float = 200.0
    zscore: bool = True
    median_size: int = 3  # 3x3 median per axial slice; 0 or 1 turns it off
    slice_fit: str = "pad"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (paper Table 2 at the ``paper`` profile)."""

    optimizer: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 4
    epochs: int = 100
    patience: int = 50  # early stopping on validation Dice (epochs without improvement)
    steps_per_epoch: int = 0  # 0 = one pass over the training slices
    foreground_fraction: float = 0.0  # >0: share of each batch drawn from slices with foreground
    val_max_cases: int = 0  # 0 = every validation case
    amp: bool = True  # only acts on CUDA (bf16 where supported, fp16 + scaler otherwise)
    channels_last: bool = True  # only acts on CUDA
    compile: bool = False
    num_workers: int = 0
    deterministic: bool = True
    augment: bool = False  # random flips and small intensity shifts on training slices


@dataclass(frozen=True)
class ModelConfig:
    """Architecture knobs shared by the baselines. ``width`` scales channel counts (1.0 = published)."""

    encoder: str = "resnet34"
    encoder_weights: str = ""  # "" = random init (nothing is downloaded); a local .pth path loads it
    width: float = 1.0
    dropout: float = 0.2
    # DeepLabV3 encoder output stride: 8 is the published setting (smp's default); 16 halves its
    # cost at small inputs (DeepLabV3's own training setting), used by the CPU-sized profiles.
    output_stride: int = 8


@dataclass(frozen=True)
class CascadeConfig:
    """The proposed method ("ours"), paper 3.3-3.10; each component can be switched off for ablations."""

    base_channels: int = 64  # tuning-network width at level 0 (64 -> ~38 M parameters at 512)
    loc_base_channels: int = 32  # localization network width at level 0
    loc_epochs: int = 0  # 0 = the profile's epochs
    dilation_rates: tuple[int, ...] = (1, 2, 4, 8)  # parallel dilated convs in the first layer
    residual: bool = True
    patch_levels: int = 3  # levels 1..k receive image patches (Table 3); 0 = none
    convbox: bool = True
    aspp: bool = True
    aspp_rates: tuple[int, ...] = (6, 12, 18)
    deep_supervision: bool = True
    multilevel_loss: bool = True  # Eq. 4-6; False = single BCE+Dice on the final output (Table 4)
    # Grad-CAM layer: "bottleneck" | "decoder1" (deepest) .. "decoder4" (full resolution). The paper does
    # not say. Measured on the demo's trained localizer (2 test patients): boxes from decoder3 covered
    # 100% of the liver at 11% of the slice; decoder2 99-100% at 16%; decoder1 36-54%; the bottleneck
    # 0-9%; decoder4 nothing: behind it is only the 1x1 head, so its CAM is the logit map minus the
    # head's bias, which the ReLU zeroes when the bias is positive.
    gradcam_layer: str = "decoder3"
    gradcam_threshold: float = 0.3  # on the [0, 1]-normalised heat-map
    crf: bool = False  # dense CRF refinement of the thresholded ROI (needs pydensecrf2)
    box_margin: float = 0.05  # boxes grow by this fraction of the slice side on each edge
    box_min_area: float = 0.002  # ROI components smaller than this fraction of the slice are ignored
    box_prior_train: str = "gradcam"  # "gradcam" (as at inference) | "ground_truth" (BB-UNet style)
    lesion_prior: str = "liver_mask"  # lesion task: prior from the liver cascade: liver_mask | liver_box
    area_threshold: float = 0.3  # mu = A / C (Eq. 7); patches below it are discarded
    max_reiterations: int = 7
    reiter_stop: str = "plateau"  # "plateau": stop when validation Dice stops improving; "none": run all
    reiter_epochs: int = 0  # fine-tuning epochs per reiteration; 0 = max(1, epochs // 4)
    reiter_patch_levels: tuple[int, ...] = (1, 2, 3)  # levels whose patch size feeds Algorithm 1
    self_label_threshold: float = 0.5  # predicted probability -> self-label
    self_label_source: str = "prediction"  # "prediction" (Algorithm 1, S) | "ground_truth"
    postprocess: str = "largest"  # liver: keep the largest 3-D component; lesion uses min_size
    min_component_voxels: int = 20


@dataclass(frozen=True)
class Profile:
    name: str
    input_size: int
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    cascade: CascadeConfig = field(default_factory=CascadeConfig)
    postprocess: str = "none"  # baselines: none | largest | min_size (the cascade has its own)


@dataclass(frozen=True)
class RunConfig:
    """One run: what is trained on which data, at which profile. Saved as config.json."""

    model: str
    plane: str = "axial"
    task: str = "liver"
    dataset: str = "phantom"
    root: str = ""  # "" = the data set's default (the phantom writes one under data/)
    seed: int = 0
    device: str = "auto"
    results: str = "results"
    cache: str = "cache"
    splits: str = ""  # a given splits_final.json; "" = make/reuse the one beside the cache
    tag: str = ""  # results folder name; "" = the model name (ablation variants add a suffix)
    include_cysts: bool = False  # 3D-IRCADb: liver cysts count as lesions (own cache folder); --include-cysts
    profile: Profile = field(default_factory=lambda: get_profile("smoke"))

    def __post_init__(self) -> None:
        if self.plane not in PLANES + ("fused",):
            raise ConfigError(f"unknown plane {self.plane!r} (known: {', '.join(PLANES + ('fused',))})")
        if self.task not in ("liver", "lesion"):
            raise ConfigError(f"unknown task {self.task!r} (known: liver, lesion)")

    @property
    def run_tag(self) -> str:
        return self.tag or self.model


PROFILES: Registry[Profile] = Registry("profile")

PROFILES.add(
    "paper",
    Profile(name="paper", input_size=512),
    help="Table 2: Adam 1e-4, dropout 0.2, batch 4, 100 epochs, patience 50, 512x512",
)
PROFILES.add(
    "demo",
    Profile(
        name="demo",
        input_size=64,
        train=TrainConfig(lr=2e-3, batch_size=16, epochs=6, patience=50, steps_per_epoch=25,
                          foreground_fraction=0.5, val_max_cases=2),
        model=ModelConfig(encoder="resnet18", width=0.25, output_stride=16),
        cascade=CascadeConfig(base_channels=16, loc_base_channels=8, loc_epochs=4, max_reiterations=2,
                              reiter_epochs=1, dilation_rates=(1, 2, 4), aspp_rates=(2, 4, 6)),
    ),
    help="make demo: 64x64, 6 epochs of 25 steps; the whole study on 2 CPU cores",
)
PROFILES.add(
    "smoke",
    Profile(
        name="smoke",
        input_size=64,
        train=TrainConfig(lr=1e-3, batch_size=4, epochs=2, patience=50, steps_per_epoch=3, val_max_cases=1),
        model=ModelConfig(encoder="resnet18", width=0.125, output_stride=16),
        cascade=CascadeConfig(base_channels=8, loc_base_channels=4, max_reiterations=1, reiter_epochs=1,
                              dilation_rates=(1, 2), aspp_rates=(2, 4, 6)),
    ),
    help="tests: 64x64, 2 epochs of 3 steps",
)
PROFILES.add(
    "golden",
    Profile(
        name="golden",
        input_size=32,
        # enough steps that predictions leave the 0.5 boundary (tables stable to float noise)
        train=TrainConfig(lr=3e-3, batch_size=4, epochs=3, patience=50, steps_per_epoch=6,
                          foreground_fraction=0.5, val_max_cases=1),
        model=ModelConfig(encoder="resnet18", width=0.125, output_stride=16),
        cascade=CascadeConfig(base_channels=8, loc_base_channels=4, max_reiterations=2, reiter_epochs=1,
                              dilation_rates=(1, 2), aspp_rates=(1, 2, 3), reiter_patch_levels=(1,),
                              # a 16x16 quarter of a 32x32 slice holds <= ~16% liver: mu = 0.1 keeps
                              # some patches so CI exercises Algorithm 1's patch path
                              area_threshold=0.1),
    ),
    help="CI golden tables: the smallest deterministic study (32x32)",
)


def get_profile(name: str) -> Profile:
    return PROFILES.get(name)


# ---------------------------------------------------------------- overrides


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Turn a CLI string into the field's type (bool, int, float, str, tuple[...])."""
    if not isinstance(value, str):
        return value
    origin = typing.get_origin(annotation)
    try:
        if annotation is bool or annotation == "bool":
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation is int or annotation == "int":
            return int(value)
        if annotation is float or annotation == "float":
            return float(value)
        if origin is tuple or (isinstance(annotation, str) and annotation.startswith("tuple")):
            inner = value.strip("()[] ")
            if not inner:
                return ()
            item_type = float if "float" in str(annotation) else int
            if "str" in str(annotation):
                item_type = str
            return tuple(item_type(v.strip()) for v in inner.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"override {key}={value!r}: cannot read as {annotation}") from None
    return value


def override(obj: Any, changes: dict[str, Any]) -> Any:
    """Return a copy of a (nested) frozen dataclass with dotted keys replaced.

    ``override(run, {"profile.cascade.patch_levels": 1})``. Unknown keys are an error that
    names the closest field, so a misspelt ablation never silently trains the default.
    """
    for key, value in changes.items():
        obj = _override_one(obj, key.split("."), value, key)
    return obj


def _override_one(obj: Any, parts: list[str], value: Any, full_key: str) -> Any:
    import difflib

    names = {f.name: f for f in fields(obj)}
    head = parts[0]
    if head not in names:
        close = difflib.get_close_matches(head, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown config field {full_key!r}{hint}")
    hints = typing.get_type_hints(type(obj))
    if len(parts) == 1:
        return replace(obj, **{head: _coerce(value, hints[head], full_key)})
    child = getattr(obj, head)
    if not is_dataclass(child):
        raise ConfigError(f"config field {'.'.join(parts[:1])!r} in {full_key!r} has no sub-fields")
    return replace(obj, **{head: _override_one(child, parts[1:], value, full_key)})


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """``["train.lr=1e-3", "cascade.crf=true"]`` -> dict; a profile-relative key gets ``profile.``."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        key = key.strip()
        if key.split(".")[0] in {f.name for f in fields(Profile)} and not key.startswith("profile."):
            key = "profile." + key
        out[key] = value.strip()
    return out


# ---------------------------------------------------------------- (de)serialisation


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def _from_dict(cls: Any, data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        hint = hints[f.name]
        if is_dataclass(hint) and isinstance(value, dict):
            value = _from_dict(hint, value)
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def run_config_from_dict(data: dict[str, Any]) -> RunConfig:
    return _from_dict(RunConfig, data)


def load_run_config(path: str | Path) -> RunConfig:
    return run_config_from_dict(json.loads(Path(path).read_text())["config"])


def fingerprint(obj: Any, drop: tuple[str, ...] = ()) -> str:
    """Short stable hash of a config (minus fields that do not change results, e.g. device)."""
    import hashlib

    data = to_dict(obj)
    for key in drop:
        data.pop(key, None)
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:10]
