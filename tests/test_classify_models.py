"""Model zoo: shapes, 1-channel stems, local ImageNet weights folded to gray, freezing, errors."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from classify.models import MODELS, build_model, convert_stem


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize(
    ("name", "size"),
    [("densenet121", 32), ("resnet18", 32), ("resnet50", 32), ("vgg16", 32), ("cnn5", 32)],
)
def test_every_model_maps_gray_batch_to_outputs(name: str, size: int) -> None:
    torch.manual_seed(0)
    net = build_model(name, num_outputs=3).eval()
    assert _first_conv(net).in_channels == 1
    with torch.no_grad():
        out = net(torch.randn(2, 1, size, size))
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()


def test_fc512_256_head_layout() -> None:
    net = build_model("cnn5", num_outputs=4, head="fc512-256")
    kinds = [type(m).__name__ for m in net.head]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout"] * 2 + ["Linear"]
    widths = [(m.in_features, m.out_features) for m in net.head if isinstance(m, nn.Linear)]
    assert widths == [(256, 512), (512, 256), (256, 4)]
    with pytest.raises(ValueError, match="unknown head"):
        build_model("cnn5", 2, head="mlp")


def test_pretrained_gray_stem_equals_rgb_model_on_replicated_gray(tmp_path) -> None:
    torch.manual_seed(1)
    rgb = torchvision.models.resnet18(weights=None)
    for m in rgb.modules():  # non-trivial BN statistics so eval mode matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "imagenet_resnet18.pt"
    torch.save(rgb.state_dict(), path)
    gray_net = build_model("resnet18", num_outputs=2, pretrained=path).eval()
    assert _first_conv(gray_net).in_channels == 1
    rgb.fc = nn.Identity()
    rgb.eval()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        ref = rgb(x.repeat(1, 3, 1, 1))
        got = gray_net.backbone(x)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_stem_conversion_keeps_bias_and_sums_weights() -> None:
    torch.manual_seed(2)
    rgb = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=True), nn.ReLU())
    gray = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=True), nn.ReLU())
    gray.load_state_dict(rgb.state_dict())
    convert_stem(gray, 1, sum_weights=True)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(gray(x), rgb(x.repeat(1, 3, 1, 1)), rtol=1e-5, atol=1e-6)


def test_pretrained_file_errors_name_the_file(tmp_path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(ValueError, match="nope.pt"):
        build_model("resnet18", 2, pretrained=missing)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="corrupt.pt"):
        build_model("resnet18", 2, pretrained=corrupt)
    state = torchvision.models.resnet18(weights=None).state_dict()
    del state["layer1.0.conv1.weight"]
    partial = tmp_path / "partial.pt"
    torch.save(state, partial)
    with pytest.raises(ValueError, match=r"partial\.pt.*layer1\.0\.conv1\.weight"):
        build_model("resnet18", 2, pretrained=partial)
    with pytest.raises(ValueError, match="cnn5 has no ImageNet weights"):
        build_model("cnn5", 2, pretrained=partial)


def _trainable(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def test_freeze_counts_trainable_parameters() -> None:
    net = build_model("resnet18", 2, freeze=2)
    b = net.backbone
    frozen = sum(p.numel() for m in (b.conv1, b.bn1, b.layer1) for p in m.parameters())
    total = sum(p.numel() for p in net.parameters())
    assert _trainable(net) == total - frozen
    all_frozen = build_model("cnn5", 2, freeze=5)
    assert _trainable(all_frozen) == sum(p.numel() for p in all_frozen.head.parameters())
    assert len(build_model("densenet121", 2).blocks()) == 5
    with pytest.raises(ValueError, match="freeze=6 out of range: cnn5 has 5 blocks"):
        build_model("cnn5", 2, freeze=6)


def test_unknown_model_lists_names() -> None:
    with pytest.raises(ValueError, match="densenet121, resnet18"):
        build_model("alexnet", 2)
    assert MODELS[0] == "densenet121"


def test_timm_models_need_timm() -> None:
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install timm"):
            build_model("xception", 2)
    else:
        net = build_model("xception", 2).eval()
        with torch.no_grad():
            assert net(torch.randn(2, 1, 64, 64)).shape == (2, 2)
