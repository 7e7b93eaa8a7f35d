"""Grad-CAM (Selvaraju et al. 2017): where in the image the target logit's evidence lies."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from classify.models import Net


def default_layer(model: nn.Module) -> nn.Module:
    """The last high-resolution feature layer per architecture (last Conv2d when unknown)."""
    if isinstance(model, Net):
        b = model.backbone
        if model.arch == "densenet121":
            return b.features  # output of norm5: the last dense block's feature map
        if model.arch.startswith("resnet"):
            return b.layer4
        if model.arch == "vgg16":
            return b.features[-2]  # last conv's ReLU, before the final max-pool
        if model.arch == "cnn5":
            return b.blocks[-1][2]  # last block's ReLU, before its max-pool
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer; pass `layer`")
    return convs[-1]


def gradcam(
    model: nn.Module,
    images: torch.Tensor,
    target_index: int | torch.Tensor,
    layer: nn.Module | None = None,
    outputs: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Class activation maps (N, H, W) in [0, 1] for normalized float images (N, C, H, W).

    `target_index` is the output to explain: one int for all images, or one per image; the outputs
    are the model's logits, or `outputs(logits)` (N, L) when given (e.g. the log-probability of
    each grade of an ordinal head whose logits are not one per class).
    Each map is ReLU(Σ_c mean(∂y/∂A_c) · A_c), upsampled to the input size and divided by its max
    (an all-zero map stays zero). The model runs in eval mode and is restored afterwards.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    layer = default_layer(model) if layer is None else layer
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = images.detach().float().requires_grad_(True)
            logits = model(x)
            logits = logits if outputs is None else outputs(logits)
            idx = torch.as_tensor(target_index, device=logits.device).long()
            idx = idx.expand(len(logits)) if idx.ndim == 0 else idx
            if idx.shape != (len(logits),) or (idx < 0).any() or (idx >= logits.shape[1]).any():
                raise ValueError(f"target_index must be in [0, {logits.shape[1]}) per image")
            act = captured[-1]
            score = logits.gather(1, idx[:, None]).sum()
            (grad,) = torch.autograd.grad(score, act)
    finally:
        handle.remove()
        model.train(was_training)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return (cam / peak).clamp(0.0, 1.0)


def overlay(
    image_uint8: np.ndarray | torch.Tensor, cam: np.ndarray | torch.Tensor, alpha: float = 0.4
) -> np.ndarray:
    """RGB uint8 (H, W, 3): the gray image blended with the CAM in matplotlib's `jet` colours."""
    from matplotlib import colormaps

    img = np.asarray(image_uint8.cpu() if torch.is_tensor(image_uint8) else image_uint8)
    heat = np.asarray(cam.detach().cpu() if torch.is_tensor(cam) else cam, dtype=np.float64)
    img = img.squeeze()
    heat = heat.squeeze()
    if img.ndim != 2 or img.shape != heat.shape:
        raise ValueError(f"image {img.shape} and cam {heat.shape} must be the same (H, W)")
    gray = np.repeat(img.astype(np.float64)[..., None], 3, axis=2)
    colour = colormaps["jet"](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    return np.clip((1 - alpha) * gray + alpha * colour, 0, 255).round().astype(np.uint8)
