"""Model cards: what a registered model is made of, counted (``bench ls models --detail``).

A card lists a model's parameters at one profile, split into its components (and, where a
model says so, each component's parts), trainable beside non-trainable, with the paper's
figure next to ours where the paper gives one, and the normalisation the model uses.

Counting rule
-------------
* **trainable**: parameters with ``requires_grad`` (every parameter here).
* **non-trainable**: frozen parameters plus **BatchNorm running statistics counted as Keras
  counts them: running mean + running variance, 2 per channel**. Keras lists those two as
  "non-trainable params" in its model summary (the paper's 3,072 are such statistics); PyTorch
  keeps them as buffers, which ``module.parameters()`` never sees. BatchNorm's
  ``num_batches_tracked`` counter has no Keras counterpart and is not counted. GroupNorm holds
  no running statistics, so a GroupNorm network has 0 non-trainable.
* **total** = trainable + non-trainable, the quantity Keras calls "Total params".

So the card's *trainable* column of a model equals `bench.models.count_parameters` (which
counts ``parameters()``), and its total can be larger for BatchNorm models (SegNet, the smp
baselines, ``cascade.norm=batch``).

Every network is built on the ``meta`` device (no memory, no initialisation; BatchNorm buffers
exist there with their shapes), so a card of the 47 M-parameter cascade costs well under a
second. Local encoder weights named by a profile are not loaded (they do not change a count).

Hooks
-----
A model without its own card gets the generic card: its module's top-level children as components
(smp: encoder, decoder, segmentation_head; SegNet: encoders, decoders, classifier). A model
whose structure says more names its card in its spec (``register_model(..., card=cascade_card)``
in `bench.models.cascade`): ``RunConfig -> ModelCard``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from bench.config import RunConfig, get_profile, override, parse_overrides
from bench.errors import ConfigError
from bench.models import get_model_spec
from bench.models.cascade_blocks import running_stat_count

BATCHNORM_NOTE = "BatchNorm (running mean + variance counted as non-trainable, 2 per channel, as Keras does)"


@dataclass(frozen=True)
class CardRow:
    """One line of a card: a component (``level`` 0) or a part of the component above it (1)."""

    name: str
    trainable: int
    non_trainable: int
    level: int = 0
    paper_total: int | None = None
    paper_trainable: int | None = None
    paper_non_trainable: int | None = None

    @property
    def total(self) -> int:
        return self.trainable + self.non_trainable

    @property
    def has_paper(self) -> bool:
        return self.paper_total is not None


@dataclass(frozen=True)
class ModelCard:
    """A model's parameter card at one profile (see the module docstring for the counting rule)."""

    model: str
    profile: str
    description: str
    normalisation: str
    rows: tuple[CardRow, ...]
    notes: tuple[str, ...] = ()

    def components(self) -> list[CardRow]:
        return [r for r in self.rows if r.level == 0]

    def row(self, name: str) -> CardRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"model card {self.model!r} has no row {name!r}")

    def parts(self, component: str) -> list[CardRow]:
        """The level-1 rows listed under ``component``."""
        out: list[CardRow] = []
        inside = False
        for r in self.rows:
            if r.level == 0:
                inside = r.name == component
            elif inside:
                out.append(r)
        return out

    @property
    def trainable(self) -> int:
        return sum(r.trainable for r in self.components())

    @property
    def non_trainable(self) -> int:
        return sum(r.non_trainable for r in self.components())

    @property
    def total(self) -> int:
        return self.trainable + self.non_trainable


# ---------------------------------------------------------------- counting


def count_module(module: nn.Module) -> tuple[int, int]:
    """``(trainable, non_trainable)`` of a module by the card's rule (module docstring)."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return trainable, frozen + running_stat_count(module)


def module_rows(parts: dict[str, nn.Module], whole: nn.Module, level: int = 0) -> list[CardRow]:
    """One row per part with anything to count, plus ``other`` for what no part holds.

    The parts must not share parameters; ``other`` keeps the rows summing to ``whole``'s count.
    """
    rows = []
    for name, part in parts.items():
        trainable, non_trainable = count_module(part)
        if trainable or non_trainable:
            rows.append(CardRow(name, trainable, non_trainable, level))
    whole_t, whole_n = count_module(whole)
    rest_t = whole_t - sum(r.trainable for r in rows)
    rest_n = whole_n - sum(r.non_trainable for r in rows)
    if rest_t < 0 or rest_n < 0:
        raise RuntimeError(f"model card: parts of {type(whole).__name__} overlap (they count more than the whole)")
    if rest_t or rest_n:
        rows.append(CardRow("other", rest_t, rest_n, level))
    return rows


def describe_normalisation(module: nn.Module) -> str:
    """The normalisation layers a module uses, in words (for baselines and the generic card)."""
    kinds = []
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        kinds.append(BATCHNORM_NOTE)
    if any(isinstance(m, nn.GroupNorm) for m in module.modules()):
        kinds.append("GroupNorm (no running statistics: 0 non-trainable)")
    if any(isinstance(m, nn.InstanceNorm2d) for m in module.modules()):
        kinds.append("InstanceNorm (affine, no running statistics: 0 non-trainable)")
    return "; ".join(kinds) or "none"


# ---------------------------------------------------------------- hooks and building

CardHook = Callable[[RunConfig], ModelCard]  # a spec's own card (`bench.models.ModelSpec.card`)


def card_config(name: str, profile: str = "paper", overrides: list[str] | None = None) -> RunConfig:
    """The RunConfig a card is computed for: model ``name`` at ``profile`` with ``KEY=VALUE`` overrides."""
    get_model_spec(name)  # unknown model -> "did you mean"
    prof = get_profile(profile)
    if prof.model.encoder_weights:  # not loaded for counting (same count, no file needed)
        prof = replace(prof, model=replace(prof.model, encoder_weights=""))
    cfg = RunConfig(model=name, profile=prof, device="cpu")
    if overrides:
        cfg = override(cfg, parse_overrides(overrides))
    return cfg


def generic_card(cfg: RunConfig) -> ModelCard:
    """Card of a single-module model: its top-level children as components."""
    spec = get_model_spec(cfg.model)
    with torch.device("meta"):
        module = spec.build(cfg)
    rows = module_rows(dict(module.named_children()), module)
    m = cfg.profile.model  # the baselines' knobs that change the count (bench.models.norm, .baselines)
    used = (f"model.norm={m.norm}, model.width={m.width:g}, model.encoder_depth={m.encoder_depth}: "
            f"{describe_normalisation(module)}")
    return ModelCard(cfg.model, cfg.profile.name, spec.description, used, tuple(rows))


def model_card(name: str, profile: str = "paper", overrides: list[str] | None = None) -> ModelCard:
    """Model ``name``'s card at ``profile`` (+ overrides); its spec's own card when it has one."""
    cfg = card_config(name, profile, overrides)
    hook = get_model_spec(name).card or generic_card
    card = hook(cfg)
    if not isinstance(card, ModelCard):
        raise ConfigError(f"model card hook of {name!r} returned {type(card).__name__}, not a ModelCard")
    return card


# ---------------------------------------------------------------- text


def _num(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _diff(ours: int, paper: int | None) -> str:
    return "" if not paper else f"{(ours - paper) / paper:+.1%}"


def format_card(card: ModelCard) -> str:
    """Plain fixed-width text of a card (no terminal-width wrapping, so numbers stay whole)."""
    head = ("component", "trainable", "non-trainable", "total", "paper total", "paper trainable",
            "paper non-trainable", "total vs paper")
    body = []
    for r in card.rows:
        body.append(("  " * r.level + r.name, _num(r.trainable), _num(r.non_trainable), _num(r.total),
                     _num(r.paper_total), _num(r.paper_trainable), _num(r.paper_non_trainable),
                     _diff(r.total, r.paper_total)))
    body.append(("total", _num(card.trainable), _num(card.non_trainable), _num(card.total), "", "", "", ""))
    show = [i for i in range(len(head)) if i < 4 or any(row[i] for row in body)]  # paper columns only if any
    widths = {i: max(len(head[i]), *(len(row[i]) for row in body)) for i in show}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(cells[i].ljust(widths[i]) if i == 0 else cells[i].rjust(widths[i]) for i in show).rstrip()

    rule = "  ".join("-" * widths[i] for i in show)
    out = [f"{card.model} -- {card.description}", f"profile: {card.profile}", line(head), rule]
    out += [line(row) for row in body[:-1]] + [rule, line(body[-1])]
    out.append(f"normalisation: {card.normalisation}")
    out += [f"note: {n}" for n in card.notes]
    return "\n".join(out)


__all__ = [
    "BATCHNORM_NOTE",
    "CardRow",
    "ModelCard",
    "count_module",
    "module_rows",
    "describe_normalisation",
    "card_config",
    "generic_card",
    "model_card",
    "format_card",
]
