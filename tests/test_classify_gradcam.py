"""Grad-CAM localizes a known evidence region; overlays are RGB uint8."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from classify.gradcam import default_layer, gradcam, overlay
from classify.models import build_model


class _Bright(nn.Module):
    """logit 0 = mean brightness above 0.5 (evidence lives where the image is bright)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([-0.5, 0.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def test_cam_highlights_the_evidence_region() -> None:
    x = torch.zeros(2, 1, 16, 16)
    x[0, 0, 2:6, 3:7] = 1.0
    x[1, 0, 10:14, 9:13] = 1.0
    model = _Bright().train()
    cam = gradcam(model, x, 0, layer=model.conv)
    assert cam.shape == (2, 16, 16) and cam.min() >= 0 and cam.max() <= 1
    assert model.training  # mode restored
    for i, (r, c) in enumerate([(2, 3), (10, 9)]):
        inside = cam[i, r : r + 4, c : c + 4]
        assert inside.min() == pytest.approx(1.0) and cam[i].sum() == pytest.approx(16.0)
    dark = gradcam(model, x, torch.tensor([1, 1]), layer=model.conv)  # logit 1: dark evidence
    assert dark[0, 2:6, 3:7].max() == 0.0 and dark[0, 12, 0] == pytest.approx(1.0)


def test_default_layers_and_bad_target() -> None:
    net = build_model("cnn5", 3).eval()
    assert default_layer(net) is net.backbone.blocks[-1][2]
    cam = gradcam(net, torch.randn(2, 1, 32, 32), torch.tensor([0, 2]))
    assert cam.shape == (2, 32, 32) and torch.isfinite(cam).all()
    with pytest.raises(ValueError, match=r"target_index must be in \[0, 3\)"):
        gradcam(net, torch.randn(2, 1, 32, 32), 3)
    resnet = build_model("resnet18", 2)
    assert default_layer(resnet) is resnet.backbone.layer4


def test_ordinal_head_explains_a_grade_through_its_probabilities() -> None:
    """CORN has K-1 logits for K grades: grade 4 of 5 is no logit, but log P(grade 4) is an
    output; its map equals that of the model wrapped to output the log-probabilities."""
    from classify.tasks import Ordinal

    task, net = Ordinal("corn"), build_model("cnn5", 4).eval()
    x = torch.randn(3, 1, 32, 32)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        gradcam(net, x, 4)
    log_p = lambda z: task.scores(z).clamp_min(1e-12).log()  # noqa: E731
    cam = gradcam(net, x, 4, outputs=log_p)

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, inp):
            return log_p(self.net(inp))

    wrapped = Wrapped().eval()
    assert cam.shape == (3, 32, 32) and cam.amax() > 0
    assert torch.allclose(cam, gradcam(wrapped, x, 4, layer=default_layer(net)), atol=1e-6)


def test_overlay_blends_gray_and_colormap() -> None:
    img = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    cam = np.linspace(0, 1, 64).reshape(8, 8)
    rgb = overlay(img, cam)
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    plain = overlay(torch.from_numpy(img)[None], torch.from_numpy(cam), alpha=0.0)
    assert (plain == img[..., None]).all()
    hot, cold = overlay(img, np.ones((8, 8)), alpha=1.0), overlay(img, np.zeros((8, 8)), alpha=1.0)
    assert hot[0, 0, 0] > hot[0, 0, 2] and cold[0, 0, 2] > cold[0, 0, 0]  # jet: red high, blue low
    with pytest.raises(ValueError, match="same"):
        overlay(img, np.zeros((4, 4)))
