"""The proposed method ("ours"), paper 3.3-3.9: localization network -> Grad-CAM ROI -> tuning network.

Inference for one batch of slices ``x`` (B, 1, H, W), `CascadeNet.forward`::

  localizer(x) --Grad-CAM at cfg.gradcam_layer--> heat (B,1,H,W) in [0,1]
    -> heat >= cfg.gradcam_threshold (-> dense CRF when cfg.crf)           ROI mask
    -> filled boxes of its components (cfg.box_margin, cfg.box_min_area)   box prior
    -> tuner(x, prior), top output                                          logits (B,1,H,W)

Training is not done here: `bench.engine.cascade` trains the localizer, computes the priors
with `CascadeNet.roi`, trains the tuner on (slice, prior) with its list of side outputs
(``tuner(x, prior)``) and runs Algorithm 1. The pieces are exposed for that: ``localizer``,
``tuner``, `CascadeNet.roi`, `CascadeNet.forward_with_prior`.

Lesion task (paper section 2: liver and lesions are separate steps): `LesionCascade` wraps a
trained liver `CascadeNet`; its prior for the lesion tuner is the liver cascade's predicted mask
(``lesion_prior="liver_mask"``) or that mask's boxes (``"liver_box"``).

Choice: when the localizer predicts no foreground at all on a slice, its ROI is empty (heat set
to 0) instead of the Grad-CAM of "every pixel", which after per-slice normalisation to [0, 1]
would always exceed the threshold somewhere and put a box on slices without the organ.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from bench.config import GRADCAM_LAYERS, LESION_PRIORS, CascadeConfig, RunConfig
from bench.errors import ConfigError
from bench.models import get_model_spec, register_model
from bench.models.cards import BATCHNORM_NOTE, ModelCard, module_rows
from bench.models.cascade_blocks import check_norm
from bench.models.crf import require_crf
from bench.models.gradcam import grad_cam
from bench.models.lesion_roi import LesionRoi, lesion_cut, upsample_mask
from bench.models.localization import LocalizationNet
from bench.models.roi import box_prior, prior_from_liver, roi_from_heatmap  # noqa: F401  (prior_from_liver re-exported)
from bench.models.tuning import (
    PAPER_TUNING_NON_TRAINABLE,
    PAPER_TUNING_PARAMS,
    PAPER_TUNING_TRAINABLE,
    TuningNet,
    count_tuning_parameters,
)

LOCALIZER_DEPTH = 4


def validate_cascade_config(cfg: CascadeConfig) -> None:
    """Before a network is built: the config's cross-field rules, and the optional CRF package."""
    cfg.consistency()
    require_crf(cfg.crf)


class CascadeNet(nn.Module):
    """Liver cascade: ``forward(x (B,1,H,W)) -> (B,1,H,W)`` logits (see the module docstring)."""

    def __init__(self, localizer: LocalizationNet, tuner: TuningNet, cfg: CascadeConfig,
                 empty_roi_without_foreground: bool = True) -> None:
        super().__init__()
        validate_cascade_config(cfg)
        self.localizer = localizer
        self.tuner = tuner
        self.cfg = cfg
        self.empty_roi_without_foreground = empty_roi_without_foreground

    def heatmap(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Grad-CAM heat (B,1,H,W) in [0, 1] and the localizer's logits (both detached)."""
        heat, logits = grad_cam(self.localizer, x, self.cfg.gradcam_layer, return_logits=True)
        if self.empty_roi_without_foreground:
            found = (logits > 0).flatten(1).any(dim=1).view(-1, 1, 1, 1)
            heat = heat * found
        return heat, logits

    def roi(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(prior, heat)``: the box prior (B,1,H,W) float in x's dtype and the Grad-CAM heat."""
        heat, _ = self.heatmap(x)
        mask = roi_from_heatmap(heat, self.cfg.gradcam_threshold, crf=self.cfg.crf, images=x)
        prior = box_prior(mask, self.cfg.box_margin, self.cfg.box_min_area).to(device=x.device, dtype=x.dtype)
        return prior, heat

    def forward_with_prior(self, x: Tensor, prior: Tensor | None) -> Tensor:
        """Tuner's full-resolution logits for a given prior (None only when ConvBox is off)."""
        return self.tuner.predict(x, prior)

    def forward(self, x: Tensor) -> Tensor:
        if not self.tuner.use_convbox:  # the prior would be ignored: skip the localizer
            return self.tuner.predict(x, None)
        prior, _ = self.roi(x)
        return self.forward_with_prior(x, prior)

    def lesion_prior(self, x: Tensor, mode: str | None = None, margin: float | None = None,
                     min_area: float | None = None) -> Tensor:
        """Prior (B,1,H,W) for a lesion tuner from this liver cascade's prediction (logit > 0).

        ``liver_mask``: the predicted liver mask itself; ``liver_box``: its boxes (`box_prior`).
        Defaults come from this cascade's config.
        """
        mode = self.cfg.lesion_prior if mode is None else mode
        margin = self.cfg.box_margin if margin is None else margin
        min_area = self.cfg.box_min_area if min_area is None else min_area
        if mode not in LESION_PRIORS:
            raise ConfigError(f"unknown cascade.lesion_prior {mode!r} (known: {', '.join(LESION_PRIORS)})")
        with torch.no_grad():
            logits = self(x)
        return prior_from_liver(logits, mode, margin, min_area).to(x.dtype)


class LesionCascade(nn.Module):
    """Lesion step: a trained liver `CascadeNet` gives the ROI, a second tuning network finds lesions.

    With ``cut`` (``cascade.lesion_roi="box"``, `bench.models.lesion_roi.LesionRoi`) ``forward``
    takes slices of the finer ROI grid: the liver cascade runs on their coarse view, and the
    tuner sees only each slice's liver box (with the liver prior cropped alike); without it, the
    tuner sees whole slices on the liver grid with the liver prior.
    """

    def __init__(self, liver: CascadeNet, tuner: TuningNet, cfg: CascadeConfig, cut: LesionRoi | None = None) -> None:
        super().__init__()
        validate_cascade_config(cfg)
        self.liver = liver
        self.tuner = tuner
        self.cfg = cfg
        self.cut = cut

    def prior_of_liver(self, logits: Tensor) -> Tensor:
        """The lesion tuner's prior from liver logits (``cascade.lesion_prior``, box margin and area)."""
        return prior_from_liver(logits, self.cfg.lesion_prior, self.cfg.box_margin, self.cfg.box_min_area)

    def lesion_prior(self, x: Tensor, mode: str | None = None, margin: float | None = None,
                     min_area: float | None = None) -> Tensor:
        """Prior (B,1,H,W) for the lesion tuner (`CascadeNet.lesion_prior` of the liver cascade)."""
        mode = self.cfg.lesion_prior if mode is None else mode
        margin = self.cfg.box_margin if margin is None else margin
        min_area = self.cfg.box_min_area if min_area is None else min_area
        return self.liver.lesion_prior(x, mode, margin, min_area)

    def roi(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(prior, liver probability)``, the lesion counterpart of `CascadeNet.roi` (for figures).

        With ``cut``: the ROI boxes and the liver probability, both on the fine grid of ``x``.
        """
        if self.cut is not None:
            rois = self.cut.inputs(x, self.liver, self.prior_of_liver)
            liver = upsample_mask(torch.sigmoid(rois.liver_logits), self.cut.geo.fine)
            return self.cut.boxes(rois.windows, x.device).to(x.dtype), liver
        with torch.no_grad():
            logits = self.liver(x)
        prior = prior_from_liver(logits, self.cfg.lesion_prior, self.cfg.box_margin, self.cfg.box_min_area)
        return prior.to(x.dtype), torch.sigmoid(logits)

    def forward_with_prior(self, x: Tensor, prior: Tensor | None) -> Tensor:
        return self.tuner.predict(x, prior)

    def forward(self, x: Tensor) -> Tensor:
        if self.cut is not None:
            return self.cut.forward(x, self.liver, self.prior_of_liver, self.tuner.predict)
        return self.forward_with_prior(x, self.lesion_prior(x))


# ---------------------------------------------------------------- building and registration


def build_localizer(cfg: RunConfig) -> LocalizationNet:
    """The localization network of ``cfg``'s profile (cascade.loc_base_channels, cascade.norm, model.dropout)."""
    check_norm(cfg.profile.cascade.norm)
    return LocalizationNet(
        in_channels=1, base=cfg.profile.cascade.loc_base_channels, depth=LOCALIZER_DEPTH,
        dropout=cfg.profile.model.dropout, norm=cfg.profile.cascade.norm,
    )


def build_tuner(cfg: RunConfig) -> TuningNet:
    """The tuning network of ``cfg``'s profile (cascade.*, including patch_mode and norm; model.dropout)."""
    validate_cascade_config(cfg.profile.cascade)
    return TuningNet(cfg.profile.cascade, in_channels=1, dropout=cfg.profile.model.dropout)


def build_liver_cascade(cfg: RunConfig) -> CascadeNet:
    return CascadeNet(build_localizer(cfg), build_tuner(cfg), cfg.profile.cascade)


def build_cascade(cfg: RunConfig) -> nn.Module:
    """Proposed cascade: localization net + Grad-CAM box prior + tuning net (paper 3.3-3.9)."""
    liver = build_liver_cascade(cfg)
    if cfg.task == "lesion":  # the same-plane liver cascade's weights are part of the lesion model
        return LesionCascade(liver, build_tuner(cfg), cfg.profile.cascade, lesion_cut(cfg))
    return liver


def count_cascade_parameters(cfg: RunConfig) -> int:
    """Trainable parameters of the liver cascade: localization + tuning network.

    This is the honest size to set beside the baselines (both networks run at inference). The
    paper's 38,059,141 (3.4) is the tuning network's Keras summary alone; compare it with
    `bench.models.tuning.count_tuning_parameters`.
    """
    return count_localizer_parameters(cfg) + count_tuning_parameters(cfg.profile.cascade)


def count_localizer_parameters(cfg: RunConfig) -> int:
    with torch.device("meta"):
        net = build_localizer(cfg)
    return sum(p.numel() for p in net.parameters())


def liver_cascade_of(cfg: RunConfig) -> list[RunConfig]:
    """A lesion cascade reads its ROI from the same-plane liver cascade (same tag, profile, seed)."""
    return [replace(cfg, task="liver")] if cfg.task == "lesion" else []


NORM_DESCRIPTIONS = {
    "group": "GroupNorm (no running statistics: 0 non-trainable); cascade.norm=batch reproduces BatchNorm statistics",
    "batch": f"{BATCHNORM_NOTE}; cascade.norm=batch",
    "none": "none (cascade.norm=none: convolutions carry a bias instead; 0 non-trainable)",
}


def cascade_card(cfg: RunConfig) -> ModelCard:
    """Card of "ours": localizer, tuning network and the tuning network's parts (`TUNING_PARTS`).

    The paper's Keras summary (3.4) is set beside the tuning network at the paper profile (it
    gives no figure for the localizer). A lesion run (``task=lesion``) adds its second tuning
    network; the liver cascade it reads its ROI from is the liver run's.
    """
    cc = cfg.profile.cascade
    validate_cascade_config(cc)
    with torch.device("meta"):
        localizer = build_localizer(cfg)
        tuners = {"tuning network": build_tuner(cfg)}
        if cfg.task == "lesion":
            tuners["lesion tuning network"] = build_tuner(cfg)
    rows = module_rows({"localizer": localizer}, localizer)
    paper = cfg.profile.name == "paper"
    for name, tuner in tuners.items():
        (row,) = module_rows({name: tuner}, tuner)
        if paper:
            row = replace(row, paper_total=PAPER_TUNING_PARAMS, paper_trainable=PAPER_TUNING_TRAINABLE,
                          paper_non_trainable=PAPER_TUNING_NON_TRAINABLE)
        rows += [row] + module_rows(tuner.parts(), tuner, level=1)
    notes = [f"patch mode: cascade.patch_mode={cc.patch_mode} (same parameters in both modes)"]
    if paper:
        notes.append(f"paper figures: the tuning network's Keras summary (3.4: {PAPER_TUNING_PARAMS:,} total = "
                     f"{PAPER_TUNING_TRAINABLE:,} trainable + {PAPER_TUNING_NON_TRAINABLE:,} non-trainable "
                     "BatchNorm statistics); none is given for the localizer")
    aspp = next((r for r in rows if r.level == 1 and r.name == "ASPP"), None)
    if cc.norm == "batch" and aspp is not None:
        notes.append(f"the ASPP alone holds {aspp.non_trainable:,} BatchNorm statistics "
                     f"(the paper's non-trainable count: {PAPER_TUNING_NON_TRAINABLE:,})")
    description = get_model_spec(cfg.model).description
    return ModelCard(cfg.model, cfg.profile.name, description, NORM_DESCRIPTIONS[cc.norm], tuple(rows), tuple(notes))


register_model(
    "ours", label="Ours", role="proposed", recipe="cascade", config_section="cascade", card=cascade_card,
    capabilities={"provides_liver_prior"},  # its liver run is the baselines' liver prior and the lesion ROI
    description="proposed cascade: localizer + Grad-CAM box prior + patch/ConvBox/ASPP tuning net",
    count=count_cascade_parameters,
    needs=liver_cascade_of,
    input_multiple=lambda cfg: 2**LOCALIZER_DEPTH,
    relative_cost=3.0,
)(build_cascade)


__all__ = [
    "GRADCAM_LAYERS",
    "LESION_PRIORS",
    "validate_cascade_config",
    "prior_from_liver",
    "CascadeNet",
    "LesionCascade",
    "build_localizer",
    "build_tuner",
    "build_liver_cascade",
    "build_cascade",
    "count_cascade_parameters",
    "count_localizer_parameters",
    "cascade_card",
]
