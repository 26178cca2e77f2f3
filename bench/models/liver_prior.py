"""Lesion baselines given the cascade's liver prior (``model.liver_prior``): "cascade" vs "architecture".

Why: "ours" segments lesions with its liver cascade's predicted liver mask as a prior
(`bench.models.cascade.LesionCascade`, ``cascade.lesion_prior=liver_mask``), while a baseline
segments lesions from whole slices, so Table 8 mixes two effects (real data: U-Net lesion Dice
0.00, ours 0.078). This setting gives a baseline the *same* prior, from the same trained liver
cascade that ours reads (the "ours" liver run of the same plane, seed, fold, profile and data,
`liver_prior_run`); the scheduler trains it first. Values:

* ``none``    the plain baseline (one CT channel);
* ``channel`` ``net(cat(x, liver_mask(x)))``: the liver cascade's predicted liver mask as a
              second input channel, exactly the prior `LesionCascade` gives ours with
              ``cascade.lesion_prior=liver_mask`` (`CascadeNet.lesion_prior`);
* ``crop``    with ``cascade.lesion_roi="box"`` (cpu, demo, smoke): the network sees exactly the
              liver-box window ours' lesion tuner sees, on the same finer grid, cut by the one
              function `bench.models.lesion_roi.LesionRoi` from the same liver cascade's mask, and
              its prediction is pasted back the same way (background outside the box). With
              ``lesion_roi="none"`` (paper): ``net(where(box, x, min(x)))``, the slice masked to
              that mask's boxes (ours' ``cascade.lesion_prior=liver_box``, same margin and minimum
              area) on the slice's own grid. One channel either way.

Rules: only the lesion task has a liver prior; ``liver_prior != none`` with ``task=liver`` is
refused in one line (`liver_prior_run`), as it is on a model whose spec does not take it ("ours"
reads its liver through ``cascade.lesion_prior``; `bench.models.check_run_config`).

`LiverPriorNet` holds the trained liver cascade (frozen: no gradients, always in eval mode) and
the baseline network. Its ``state_dict`` holds both, so a run's ``best.pt`` rebuilds with
`bench.models.build_model` and evaluates and predicts like any model; ``forward(x)`` computes the
prior from the slice. Training (`bench.engine.slices`) precomputes the priors once per case with
the cascade's own function and passes them as ``forward(x, prior)``.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Callable

import torch
from torch import Tensor, nn

from bench.config import RunConfig, without_baseline_fields
from bench.errors import ConfigError
from bench.models.lesion_roi import LesionRoi, lesion_cut, upsample_mask
from bench.models.roi import prior_from_liver
from bench.models.spec import liver_prior_model
from bench.paths import seed_tag

# model.liver_prior -> (the LesionCascade prior it equals, input channels of the baseline network)
MODES: dict[str, tuple[str, int]] = {"channel": ("liver_mask", 2), "crop": ("liver_box", 1)}

NetBuilder = Callable[..., nn.Module]  # (cfg, in_channels=1) -> the baseline network


class LiverPriorNet(nn.Module):
    """A baseline network fed the liver cascade's prior: ``forward(x (B,1,H,W)) -> (B,1,H,W)`` logits."""

    def __init__(self, liver: nn.Module, net: nn.Module, mode: str, cut: LesionRoi | None = None) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"model.liver_prior={mode!r}: a LiverPriorNet needs one of {', '.join(MODES)}")
        if cut is not None and mode != "crop":
            raise ConfigError(f"model.liver_prior={mode}: only 'crop' cuts the liver ROI")
        self.liver = liver.requires_grad_(False).eval()  # a prerequisite's weights: never trained here
        self.net = net
        self.mode = mode
        self.cut = cut

    @property
    def prior_kind(self) -> str:
        """The ``cascade.lesion_prior`` this mode equals (``liver_mask`` | ``liver_box``)."""
        return MODES[self.mode][0]

    def train(self, mode: bool = True) -> "LiverPriorNet":
        """Train mode reaches the baseline network only: the liver cascade stays in eval mode."""
        super().train(mode)
        self.liver.eval()
        return self

    def prior(self, x: Tensor) -> Tensor:
        """(B,1,H,W) 0/1 prior of the liver cascade (`CascadeNet.lesion_prior`), in x's dtype."""
        return self.liver.lesion_prior(x, self.prior_kind)

    def inputs(self, x: Tensor, prior: Tensor) -> Tensor:
        """What the baseline network sees: (x, prior) as two channels, or x masked to the box."""
        prior = prior.to(device=x.device, dtype=x.dtype)
        if self.mode == "channel":
            return torch.cat([x, prior], dim=1)
        floor = x.amin(dim=(-2, -1), keepdim=True)
        return torch.where(prior > 0, x, floor)

    def prior_of_liver(self, logits: Tensor) -> Tensor:
        """The prior of liver logits (`CascadeNet.lesion_prior`'s rule, the liver cascade's margin and area)."""
        cc = self.liver.cfg
        return prior_from_liver(logits, self.prior_kind, cc.box_margin, cc.box_min_area)

    def forward(self, x: Tensor, prior: Tensor | None = None) -> Tensor:
        """Logits; ``prior`` (precomputed with `prior`, as training does) skips the liver cascade.

        With ``cut``: ``x`` without ``prior`` is a batch of fine slices (the ROI is cut, predicted
        and pasted back); with ``prior`` it is a batch of ROI crops already (training reads them
        from `bench.engine.roi_cache`), which the network sees as they are.
        """
        if self.cut is not None:
            if prior is not None:
                return self.net(x)
            return self.cut.forward(x, self.liver, self.prior_of_liver, lambda image, _prior: self.net(image))
        return self.net(self.inputs(x, self.prior(x) if prior is None else prior))

    def roi(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(prior, liver probability)`` for figures, as `LesionCascade.roi` gives them."""
        if self.cut is not None:
            rois = self.cut.inputs(x, self.liver, self.prior_of_liver)
            liver = upsample_mask(torch.sigmoid(rois.liver_logits), self.cut.geo.fine)
            return self.cut.boxes(rois.windows, x.device).to(x.dtype), liver
        with torch.no_grad():
            liver = torch.sigmoid(self.liver(x))
        return self.prior(x), liver


def liver_prior_run(cfg: RunConfig) -> list[RunConfig]:
    """The liver run whose cascade gives ``cfg``'s prior (a spec's ``needs``); [] without a prior.

    It is ours' own liver run for ``cfg``'s plane, seed, fold, data and profile: the tag is what
    ``bench train ours`` and the study give that seed and fold (`bench.paths.seed_tag`: ``""``
    at seed 0 without a fold, else ``ours~seedK~foldI``), never derived from the baseline's own
    tag (``unet+liver~seed1`` needs ``ours~seed1``); ``model.liver_prior`` is reset to none (and
    every other baseline-only model field, e.g. ``model.norm``, to the profile's value:
    `bench.config.without_baseline_fields`), so the config, and with it the fingerprint, is
    exactly the plain "ours" run's (whose ``train.budget`` is ``epochs`` when it is the budget
    reference: a ``train.budget=matched`` baseline with a liver prior reads the same liver run). A liver prior on
    the liver task is refused here in one line (``check_run_config`` and the scheduler ask first).
    """
    mode = cfg.profile.model.liver_prior
    if mode == "none":
        return []
    if cfg.task != "lesion":
        raise ConfigError(f"model.liver_prior={mode} is for --task lesion only (the prior is the liver cascade's "
                          f"liver mask); the {cfg.task} task takes model.liver_prior=none")
    source = liver_prior_model()  # the model declaring provides_liver_prior (ours)
    tag = seed_tag(source, "", cfg.seed, cfg.fold)
    profile = without_baseline_fields(cfg.profile)  # liver_prior=none, and the baselines' norm, width... reset
    if profile.train.budget_reference == source:  # the budget reference trains by its own epochs
        profile = replace(profile, train=replace(profile.train, budget="epochs"))
    return [replace(cfg, model=source, task="liver", tag="" if tag == source else tag, profile=profile)]


def with_liver_prior(make: NetBuilder, build_liver: Callable[[RunConfig], nn.Module]) -> Callable[[RunConfig], nn.Module]:
    """Turn a baseline's ``make(cfg, in_channels=1)`` into its registered build function.

    ``model.liver_prior=none`` builds the network as before; otherwise a `LiverPriorNet` around
    the structure of the liver cascade (``build_liver`` of `liver_prior_run`'s config: the
    registry's `bench.models.build_model`, passed in so this module imports no model; its weights
    come from that run at training, from ``best.pt`` at evaluation) and the network with the
    mode's input channels. `bench.models.register_model` applies it to every spec declaring the
    ``liver_prior`` capability.
    """

    @functools.wraps(make)
    def build(cfg: RunConfig) -> nn.Module:
        mode = cfg.profile.model.liver_prior
        if mode == "none":
            return make(cfg)
        (liver_cfg,) = liver_prior_run(cfg)
        return LiverPriorNet(build_liver(liver_cfg), make(cfg, in_channels=MODES[mode][1]), mode, lesion_cut(cfg))

    return build


__all__ = ["MODES", "LiverPriorNet", "liver_prior_run", "with_liver_prior"]
