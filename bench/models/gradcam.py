"""Seg-Grad-CAM (Vinogradova et al., AAAI 2020) for the localization network (paper 3.3, Fig. 6).

For a segmentation network the class score is a sum of pixel logits over a region of interest
M: ``y = sum_{p in M} logit_p``. Its gradient with respect to a layer's activations ``A^k``,
averaged over space, weights the channels: ``w_k = mean_{u,v} dy/dA^k_{uv}``, and the map is
``ReLU(sum_k w_k A^k)``, upsampled (bilinear) to the input size and divided by its per-sample
maximum so that every map lies in [0, 1] (a map that is zero everywhere stays zero).

M defaults to the pixels the model itself predicts as foreground (logit > 0), or every pixel
of a sample where it predicts none; a caller may pass its own ``target_mask``.

The map is always computed in **eval mode** (dropout off, so the map is deterministic; the
model's previous mode is restored) and under ``torch.enable_grad()``, so it works for callers
running under ``torch.no_grad()`` (not ``torch.inference_mode()``, whose tensors cannot enter
autograd). Gradients are taken with ``torch.autograd.grad`` with respect to the activations
only: the model's ``.grad`` fields are untouched, and the forward hook is removed even on error.
Samples in a batch do not interact (the networks use GroupNorm, or BatchNorm in eval mode), so
one backward pass gives every sample its own map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.errors import ConfigError


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    getter = getattr(model, "gradcam_layers", None)
    if getter is None:
        raise ConfigError(f"{type(model).__name__} has no gradcam_layers(); Grad-CAM needs named layers")
    return getter()


def grad_cam(
    model: nn.Module,
    x: Tensor,
    layer_name: str,
    target_mask: Tensor | None = None,
    return_logits: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Seg-Grad-CAM heat-map ``(B, 1, H, W)`` in [0, 1] of ``model`` on ``x`` at ``layer_name``.

    ``target_mask`` (broadcastable to the logits, bool or 0/1) replaces the predicted-foreground
    region M. With ``return_logits=True`` also returns the model's logits (detached), so a
    caller needs one forward pass for both.
    """
    layers = _layers(model)
    if layer_name not in layers:
        raise ConfigError(f"unknown Grad-CAM layer {layer_name!r} (known: {', '.join(layers)})")
    layer = layers[layer_name]
    store: dict[str, Tensor] = {}

    def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        store["act"] = output

    was_training = model.training
    handle = layer.register_forward_hook(hook)
    try:
        model.eval()
        with torch.enable_grad():
            # a leaf that requires grad keeps the graph alive even if the weights are frozen
            inp = x.detach().requires_grad_(True)
            logits = model(inp)
            acts = store["act"]
            if target_mask is None:
                region = logits > 0
                nothing = ~region.flatten(1).any(dim=1)
                region = region | nothing.view(-1, 1, 1, 1)
            else:
                region = target_mask.to(device=logits.device).bool().expand_as(logits)
            score = (logits * region).sum()
            (grads,) = torch.autograd.grad(score, acts)
    finally:
        handle.remove()
        model.train(was_training)
    with torch.no_grad():
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * acts).sum(dim=1, keepdim=True)).float()
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False).clamp_min(0)
        peak = cam.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
        heat = torch.where(peak > 0, cam / peak.clamp_min(torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))
    if return_logits:
        return heat, logits.detach()
    return heat


__all__ = ["grad_cam"]
