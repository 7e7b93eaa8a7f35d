"""Model zoo: torchvision/timm backbones with a 1-channel stem, a head, local weights, freezing.

Blocks used by `freeze=N` (the first N are frozen, in input-to-output order):

- densenet121: stem (conv0..pool0), dense block 1 + transition 1, 2 + t2, 3 + t3, 4 + norm5 (5).
- resnet18 / resnet50: stem (conv1, bn1), layer1, layer2, layer3, layer4 (5).
- vgg16: the five conv stages (each ends in a max-pool), then fc6, fc7 (7).
- cnn5: its five conv blocks (5).
- xception / nasnetalarge (timm): the model's top-level children in order.

The head is never frozen. Frozen BatchNorm layers keep their running statistics only if the
caller keeps those blocks in eval mode (`Classifier` does).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torchvision
from torch import nn

MODELS = ("densenet121", "resnet18", "resnet50", "vgg16", "cnn5", "xception", "nasnetalarge")
TIMM_MODELS = {"xception": ("legacy_xception", "xception"), "nasnetalarge": ("nasnetalarge",)}


class CNN5(nn.Module):
    """A 5-block conv baseline: (conv3x3 → BN → ReLU → max-pool) × 5, global average pool."""

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = (16, 32, 64, 128, 256)):
        super().__init__()
        blocks, c = [], in_channels
        for w in widths:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(c, w, 3, padding=1, bias=False),
                    nn.BatchNorm2d(w),
                    nn.ReLU(),
                    nn.MaxPool2d(2, ceil_mode=True),
                )
            )
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.num_features = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (N, C)."""
        return self.blocks(x).mean(dim=(2, 3))


class Net(nn.Module):
    """A backbone that returns pooled features (N, F) followed by a head (N, num_outputs)."""

    def __init__(self, arch: str, backbone: nn.Module, head: nn.Module, num_features: int):
        super().__init__()
        self.arch = arch
        self.backbone = backbone
        self.head = head
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_outputs) for a normalized float batch (N, C, H, W)."""
        return self.head(self.backbone(x))

    def blocks(self) -> list[list[nn.Module]]:
        """The freezable blocks of the backbone, input to output (see the module docstring)."""
        b = self.backbone
        if self.arch == "densenet121":
            f = b.features
            return [
                [f.conv0, f.norm0],
                [f.denseblock1, f.transition1],
                [f.denseblock2, f.transition2],
                [f.denseblock3, f.transition3],
                [f.denseblock4, f.norm5],
            ]
        if self.arch.startswith("resnet"):
            return [[b.conv1, b.bn1], [b.layer1], [b.layer2], [b.layer3], [b.layer4]]
        if self.arch == "vgg16":
            stages, cur = [], []
            for m in b.features:
                cur.append(m)
                if isinstance(m, nn.MaxPool2d):
                    stages.append(cur)
                    cur = []
            return [*stages, list(b.classifier[0:3]), list(b.classifier[3:6])]
        if self.arch == "cnn5":
            return [[blk] for blk in b.blocks]
        return [[m] for m in b.children()]


def make_head(num_features: int, num_outputs: int, head: str | None = None) -> nn.Module:
    """A linear layer, or `fcA-B-…`: (Linear → BN → ReLU → Dropout(0.5)) per width, then out."""
    if head in (None, "", "linear"):
        return nn.Linear(num_features, num_outputs)
    match = re.fullmatch(r"fc(\d+(?:-\d+)*)", head)
    if not match:
        raise ValueError(f"unknown head {head!r}; use None, 'linear' or e.g. 'fc512-256'")
    layers: list[nn.Module] = []
    c = num_features
    for width in (int(w) for w in match.group(1).split("-")):
        layers += [nn.Linear(c, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(0.5)]
        c = width
    layers.append(nn.Linear(c, num_outputs))
    return nn.Sequential(*layers)


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise ValueError(f"{type(model).__name__} has no Conv2d stem")


def convert_stem(model: nn.Module, in_channels: int, sum_weights: bool) -> None:
    """Replace the first conv by one taking `in_channels`; `sum_weights` folds RGB into gray."""
    name, conv = _first_conv(model)
    if conv.in_channels == in_channels:
        return
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
    )
    if sum_weights:
        if in_channels != 1:
            raise ValueError(f"pretrained weights convert to 1 input channel, not {in_channels}")
        with torch.no_grad():
            # conv(gray replicated to RGB) == conv with the RGB kernels summed over channels.
            new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    _set_module(model, name, new)


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ValueError(f"pretrained weights file {path} does not exist; give a local state dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt / not a torch file
        raise ValueError(f"pretrained weights file {path} cannot be read: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained weights file {path} is not a state dict of tensors")
    return state


def load_pretrained(model: nn.Module, path: str | Path, skip_prefix: str) -> None:
    """Load a local 3-channel state dict; keys under `skip_prefix` (the classifier) are optional."""
    path = Path(path)
    state = _load_state_dict(path)
    own = model.state_dict()
    keep = {k: v for k, v in state.items() if not k.startswith(skip_prefix)}
    missing = [k for k in own if k not in keep and not k.startswith(skip_prefix)]
    unexpected = [k for k in keep if k not in own]
    shapes = [k for k in keep if k in own and keep[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"pretrained weights file {path} does not match {type(model).__name__}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {shapes[:3]} "
            f"(of {len(missing)}/{len(unexpected)}/{len(shapes)}); "
            "give an ImageNet state dict of the same architecture"
        )
    model.load_state_dict(keep, strict=False)


def _torchvision_backbone(name: str) -> tuple[nn.Module, str, int]:
    """A 3-channel ImageNet architecture (weights=None), its classifier key prefix, feature size."""
    if name == "densenet121":
        return torchvision.models.densenet121(weights=None), "classifier.", 1024
    if name == "resnet18":
        return torchvision.models.resnet18(weights=None), "fc.", 512
    if name == "resnet50":
        return torchvision.models.resnet50(weights=None), "fc.", 2048
    if name == "vgg16":  # adaptive 7x7 pooling makes it run at 32-64 px
        return torchvision.models.vgg16(weights=None), "classifier.6.", 4096
    raise AssertionError(name)


def _drop_classifier(name: str, model: nn.Module) -> None:
    if name == "densenet121":
        model.classifier = nn.Identity()
    elif name.startswith("resnet"):
        model.fc = nn.Identity()
    else:
        model.classifier[6] = nn.Identity()


def _timm_backbone(name: str, pretrained: str | Path | None, in_channels: int) -> nn.Module:
    try:
        import timm
    except ImportError as exc:
        raise ValueError(f"model {name!r} needs timm: pip install timm") from exc
    arch = next((a for a in TIMM_MODELS[name] if timm.is_model(a)), None)
    if arch is None:
        raise ValueError(f"this timm version has no {name!r}; pip install --upgrade timm")
    if pretrained is None:
        return timm.create_model(arch, pretrained=False, num_classes=0, in_chans=in_channels)
    model = timm.create_model(arch, pretrained=False)
    load_pretrained(model, pretrained, skip_prefix=model.default_cfg.get("classifier", "fc") + ".")
    model.reset_classifier(0)
    convert_stem(model, in_channels, sum_weights=in_channels != 3)
    return model


def build_model(
    name: str = "densenet121",
    num_outputs: int = 1,
    in_channels: int = 1,
    head: str | None = None,
    pretrained: str | Path | None = None,
    freeze: int = 0,
) -> Net:
    """Build `name` with an `in_channels` stem and a head; never downloads (weights=None)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if name == "cnn5":
        if pretrained is not None:
            raise ValueError("cnn5 has no ImageNet weights; drop `pretrained` for cnn5")
        backbone: nn.Module = CNN5(in_channels)
        num_features = backbone.num_features
    elif name in TIMM_MODELS:
        backbone = _timm_backbone(name, pretrained, in_channels)
        num_features = backbone.num_features
    else:
        backbone, prefix, num_features = _torchvision_backbone(name)
        if pretrained is not None:
            load_pretrained(backbone, pretrained, skip_prefix=prefix)
        _drop_classifier(name, backbone)
        convert_stem(backbone, in_channels, sum_weights=pretrained is not None)
    net = Net(name, backbone, make_head(num_features, num_outputs, head), num_features)
    freeze_blocks(net, freeze)
    return net


def freeze_blocks(net: Net, n: int) -> list[nn.Module]:
    """Stop gradients through the first `n` blocks of `net`; return the frozen modules."""
    blocks = net.blocks()
    if not 0 <= n <= len(blocks):
        raise ValueError(f"freeze={n} out of range: {net.arch} has {len(blocks)} blocks")
    frozen = [m for block in blocks[:n] for m in block]
    for m in frozen:
        m.requires_grad_(False)
    return frozen
