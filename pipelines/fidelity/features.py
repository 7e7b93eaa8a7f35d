"""Feature spaces for GAN evaluation: a seeded random conv net, or a trained classifier's trunk.

Every feature net here takes uint8 images (N, 1, R, R) and normalizes them itself, the same way
for real and synthetic images, so that the two sets are always compared on equal terms.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torchvision
from torch import nn

from pipelines.errors import RareganError

# classify.Classifier's default normalization (x / 255 - mean) / std, used for bare classifiers.
CLASSIFIER_MEAN = 0.449
CLASSIFIER_STD = 0.226


def as_images(images: np.ndarray | torch.Tensor, name: str = "images") -> torch.Tensor:
    """Check a uint8 (N, 1, R, R) image array (or (N, R, R)) and return it as a CPU tensor."""
    if not isinstance(images, torch.Tensor):
        arr = np.asarray(images)
        if arr.dtype != np.uint8:
            raise RareganError(
                f"{name} must be uint8 images (N, 1, R, R), got dtype {arr.dtype} and shape "
                f"{arr.shape}; pass 1-channel uint8 images (the store's arrays or GAN samples)"
            )
        images = torch.from_numpy(arr.copy())
    t = images.unsqueeze(1) if images.ndim == 3 else images
    if t.dtype != torch.uint8 or t.ndim != 4 or t.shape[1] != 1:
        raise RareganError(
            f"{name} must be uint8 images (N, 1, R, R), got dtype {t.dtype} and shape "
            f"{tuple(t.shape)}; pass 1-channel uint8 images (the store's arrays or GAN samples)"
        )
    if t.shape[0] < 2:
        raise RareganError(f"{name} has {t.shape[0]} image(s); GAN metrics need at least 2")
    return t.cpu()


class FeatureNet(nn.Module):
    """uint8 (N, 1, R, R) → float x / 255 → (x - mean) / std → `trunk` → features (N, D)."""

    def __init__(self, trunk: nn.Module, mean: float, std: float, name: str):
        super().__init__()
        self.trunk = trunk
        self.mean = float(mean)
        self.std = float(std)
        self.feature_space = name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features (N, D) of a uint8 (or already [0, 1] float) batch."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        out = self.trunk((x - self.mean) / self.std)
        return out.mean(dim=(2, 3)) if out.ndim == 4 else out.flatten(1)


def random_feature_net(size: int, seed: int = 0, dim: int = 256) -> FeatureNet:
    """A fixed, seeded, randomly initialised conv net: a weak but offline, reproducible feature space.

    (conv3x3 → ReLU → 2x2 average pool) until the map is 4 px (16 channels, doubling per stage
    up to `dim`), then conv3x3 to `dim` channels,
    ReLU and global average pooling; inputs scaled to [-1, 1]. Nothing is trained: random
    features keep much of an image set's statistics (intensity, texture, edges at several
    scales), enough to rank sets and to see collapse, but they are not Inception features, so
    the numbers are comparable only between runs with the same size, seed and dim.
    """
    if size < 4 or dim < 1:
        raise ValueError(f"random_feature_net needs size >= 4 and dim >= 1, got {size}, {dim}")
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    c, width = 1, 16
    for _ in range(max(0, int(math.log2(size)) - 2)):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2)]
        c, width = width, min(2 * width, dim)
    layers += [nn.Conv2d(c, dim, 3, padding=1), nn.ReLU()]
    trunk = nn.Sequential(*layers)
    with torch.no_grad():
        for m in trunk.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=gen)
                m.bias.zero_()
    trunk.requires_grad_(False)
    net = FeatureNet(trunk, 0.5, 0.5, f"random-conv(size={size}, seed={seed}, dim={dim})")
    net.num_features = dim
    return net.eval()


class _LinearInputHook(nn.Module):
    """Runs `model` and returns the input of its layer `layer` (the penultimate features)."""

    def __init__(self, model: nn.Module, layer: nn.Module):
        super().__init__()
        self.model = model
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The tensor that enters `layer` during a forward pass of `model`."""
        seen: list[torch.Tensor] = []
        handle = self.layer.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        if not seen:
            raise ValueError(f"{type(self.layer).__name__} was not called by the model's forward")
        return seen[-1]


def _trunk(model: nn.Module) -> nn.Module:
    """The part of a classifier that yields its penultimate features (pooled by FeatureNet)."""
    if isinstance(getattr(model, "backbone", None), nn.Module) and hasattr(model, "head"):
        return model.backbone  # classify.models.Net: the backbone already returns (N, F)
    if isinstance(model, torchvision.models.DenseNet):
        return nn.Sequential(model.features, nn.ReLU())  # DenseNet applies ReLU after norm5
    if isinstance(model, torchvision.models.ResNet):
        return nn.Sequential(*[m for n, m in model.named_children() if n not in ("avgpool", "fc")])
    if isinstance(model, torchvision.models.VGG):
        return model.features
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear classifier to take features before")
    return _LinearInputHook(model, linears[-1])


def classifier_feature_net(
    model: nn.Module, mean: float | None = None, std: float | None = None
) -> FeatureNet:
    """Wrap a trained classifier so that it returns its penultimate (pooled) features.

    Accepts a `classify.Classifier` (its `.model` and its own mean/std), a `classify.models.Net`
    (its backbone), torchvision DenseNet (features → ReLU), ResNet (all before avgpool/fc) and
    VGG (features), each followed by global average pooling; any other model falls back to a
    forward hook on the input of its last `nn.Linear`. Real and synthetic uint8 images are both
    normalized as (x / 255 - mean) / std with the classifier's training mean/std (default
    classify.Classifier's 0.449 / 0.226).
    """
    hparams = getattr(model, "hparams", None)
    if isinstance(getattr(model, "model", None), nn.Module) and hparams is not None:
        mean = hparams.get("mean", CLASSIFIER_MEAN) if mean is None else mean
        std = hparams.get("std", CLASSIFIER_STD) if std is None else std
        model = model.model
    mean = CLASSIFIER_MEAN if mean is None else mean
    std = CLASSIFIER_STD if std is None else std
    name = getattr(model, "arch", None) or type(model).__name__
    return FeatureNet(_trunk(model), mean, std, f"classifier:{name}").eval()


def features(
    net: nn.Module, images_uint8: np.ndarray | torch.Tensor, batch: int = 128
) -> np.ndarray:
    """Features (N, D) as float64 of uint8 images, in eval mode without gradients, on net's device."""
    images = as_images(images_uint8)
    param = next(iter(net.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = net.training
    net.eval()
    out = []
    try:
        with torch.inference_mode():
            for i in range(0, images.shape[0], batch):
                f = net(images[i : i + batch].to(device))
                out.append(f.reshape(f.shape[0], -1).double().cpu())
    finally:
        net.train(was_training)
    return torch.cat(out).numpy()
