"""Lightning classifier: a short fit learns, predictions, frozen blocks, schedule, validation AUC."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from conftest import quiet_trainer
from torch.utils.data import DataLoader, TensorDataset

from classify.module import Classifier, warmup_cosine
from pipelines.machine import cpu_bf16


def _squares(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 noise images with a bright (label 1) or dark (label 0) 10-px square somewhere."""
    g = torch.Generator().manual_seed(seed)
    x = (100 + 20 * torch.randn(n, 1, size, size, generator=g)).clamp(0, 255)
    y = (torch.rand(n, generator=g) < 0.5).float()
    for i in range(n):
        r, c = torch.randint(0, size - 10, (2,), generator=g).tolist()
        x[i, 0, r : r + 10, c : c + 10] = 220.0 if y[i] else 20.0
    return x.to(torch.uint8), y[:, None]


def _trainer(epochs: int) -> pl.Trainer:
    return quiet_trainer(max_epochs=epochs, devices=1, deterministic=True)


def _mean_loss(module: Classifier, x: torch.Tensor, y: torch.Tensor) -> float:
    module.eval()
    with torch.no_grad():
        return module.task.loss(module(x), y).item()


def test_short_fit_separates_bright_from_dark_squares() -> None:
    pl.seed_everything(0, verbose=False)
    xt, yt = _squares(64, seed=1)
    xv, yv = _squares(48, seed=2)
    module = Classifier(
        "cnn5", ["bright"], "multilabel", lr=3e-3, max_epochs=3, augment={"degrees": 10.0}
    )
    before = _mean_loss(module, xt, yt)
    train = DataLoader(TensorDataset(xt, yt), batch_size=16, shuffle=True)
    val = DataLoader(TensorDataset(xv, yv), batch_size=16)
    trainer = _trainer(3)
    trainer.fit(module, train, val)
    assert trainer.callback_metrics["val_auc"].item() > 0.9
    assert trainer.callback_metrics["val_auc/bright"].item() > 0.9
    assert _mean_loss(module, xt, yt) < 0.5 * before
    idx = torch.arange(len(xv))
    preds = trainer.predict(module, DataLoader(TensorDataset(xv, yv, idx), batch_size=16))
    assert torch.equal(torch.cat([p["index"] for p in preds]), idx)
    scores = torch.cat([p["scores"] for p in preds])
    assert scores.shape == (48, 1) and ((scores >= 0) & (scores <= 1)).all()


def test_frozen_blocks_keep_weights_and_batchnorm_statistics() -> None:
    pl.seed_everything(0, verbose=False)
    x, y = _squares(32, seed=3)
    module = Classifier("cnn5", ["bright"], freeze=2, max_epochs=1)
    first = module.model.backbone.blocks[0]
    w0, mean0 = first[0].weight.clone(), first[1].running_mean.clone()
    last_mean0 = module.model.backbone.blocks[4][1].running_mean.clone()
    _trainer(1).fit(module, DataLoader(TensorDataset(x, y), batch_size=16))
    assert torch.equal(first[0].weight, w0) and torch.equal(first[1].running_mean, mean0)
    assert not torch.equal(module.model.backbone.blocks[4][1].running_mean, last_mean0)


def test_val_auc_macro_skips_single_class_labels_and_rows_with_nan() -> None:
    x, y = _squares(24, seed=4)
    labels = torch.cat([y, torch.zeros_like(y)], dim=1)  # second label: no positives
    labels[0, 0] = float("nan")
    module = Classifier("cnn5", ["bright", "never"], max_epochs=1)
    out = _trainer(1).validate(module, DataLoader(TensorDataset(x, labels), batch_size=8))[0]
    module.eval()
    with torch.no_grad():
        s = torch.sigmoid(module(x[1:]))[:, 0]
    from torchmetrics.functional.classification import binary_auroc

    assert out["val_auc"] == pytest.approx(binary_auroc(s, y[1:, 0].long()).item(), abs=1e-5)
    assert "val_auc/never" not in out and math.isfinite(out["val_loss"])


def test_ordinal_corn_validates_per_grade() -> None:
    x, y = _squares(30, seed=5)
    grades = torch.nn.functional.one_hot((y[:, 0] * 2).long() + torch.arange(30) % 2, 4).float()
    module = Classifier("cnn5", ["0", "1", "2", "3"], "ordinal", max_epochs=1)
    assert module.model.head.out_features == 3
    out = _trainer(1).validate(module, DataLoader(TensorDataset(x, grades), batch_size=10))[0]
    assert {"val_auc/0", "val_auc/1", "val_auc/2", "val_auc/3"} <= set(out)


def test_warmup_cosine_schedule() -> None:
    assert [warmup_cosine(e, 2, 10) for e in range(3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert warmup_cosine(6, 2, 10) == pytest.approx(0.5)
    assert warmup_cosine(9, 0, 10) < warmup_cosine(5, 0, 10) < warmup_cosine(0, 0, 10) == 1.0
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        Classifier("cnn5", ["a"], optimizer="sgd")


def test_trains_channels_last_with_the_logits_of_the_nchw_model() -> None:
    """The model and its input batches are NHWC (oneDNN's and tensor cores' fast layout); the
    layout changes no number beyond float rounding."""
    torch.manual_seed(0)
    module = Classifier("densenet121", ["a", "b"]).eval()
    x = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    z = module.preprocess(x)
    assert z.is_contiguous(memory_format=torch.channels_last)
    conv = next(
        p for p in module.model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] > 1
    )
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    with torch.no_grad():
        nhwc = module(x)
        module.model.to(memory_format=torch.contiguous_format)
        nchw = module.model(z.contiguous())
    torch.testing.assert_close(nhwc, nchw, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not cpu_bf16(), reason="needs a CPU with native bf16 (AVX512-BF16 or AMX)")
def test_bf16_fit_on_cpu_learns_like_fp32() -> None:
    """Lightning's bf16-mixed on a bf16 CPU (what classify.precision auto picks there) learns the
    squares, with the loss computed in fp32."""
    pl.seed_everything(0, verbose=False)
    xt, yt = _squares(64, seed=1)
    xv, yv = _squares(48, seed=2)
    module = Classifier("cnn5", ["bright"], lr=3e-3, max_epochs=4, augment={})
    trainer = quiet_trainer(max_epochs=4, devices=1, precision="bf16-mixed")
    trainer.fit(
        module,
        DataLoader(TensorDataset(xt, yt), batch_size=16, shuffle=True),
        DataLoader(TensorDataset(xv, yv), batch_size=16),
    )
    assert trainer.callback_metrics["train_loss"].dtype == torch.float32
    assert trainer.callback_metrics["val_auc"].item() > 0.9


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_mixed_precision_fit_on_gpu() -> None:
    pl.seed_everything(0, verbose=False)
    xt, yt = _squares(64, seed=1)
    xv, yv = _squares(32, seed=2)
    module = Classifier("cnn5", ["bright"], lr=3e-3, max_epochs=3, augment={})
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="gpu",
        devices=1,
        precision="16-mixed",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(
        module,
        DataLoader(TensorDataset(xt, yt), batch_size=16, shuffle=True),
        DataLoader(TensorDataset(xv, yv), batch_size=16),
    )
    assert trainer.callback_metrics["val_auc"].item() > 0.9


def test_selection_metric_sees_the_studied_classes() -> None:
    """val_auc_studied is the mean val AUC of the studied labels only (what selection watches)."""
    torch.manual_seed(0)
    x = torch.rand(48, 1, 16, 16)
    y = torch.stack([(x.mean((1, 2, 3)) > 0.5).float(), (torch.rand(48) > 0.5).float()], 1)
    module = Classifier("cnn5", ["bright", "noise"], "multilabel", studied=["noise"])
    trainer = quiet_trainer(max_epochs=1, devices=1)
    logged = trainer.validate(
        module, DataLoader(TensorDataset(x, y), batch_size=16), verbose=False
    )[0]
    assert logged["val_auc_studied"] == pytest.approx(logged["val_auc/noise"])
    assert logged["val_auc"] == pytest.approx(
        (logged["val_auc/noise"] + logged["val_auc/bright"]) / 2
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_autocast_step_on_gpu_lowers_the_loss() -> None:
    """One DenseNet-121 AdamW step per batch under bf16 autocast: finite loss, falling on a fixed batch."""
    torch.manual_seed(0)
    x, y = _squares(16, seed=3, size=64)
    module = Classifier("densenet121", ["bright"], lr=1e-3, augment={}).cuda().train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    x, y = x.cuda(), y.cuda()
    losses = []
    for _ in range(5):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = module.task.loss(module.model(module.preprocess(x, augment=False)), y)
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
