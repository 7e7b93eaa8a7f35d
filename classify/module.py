"""The Lightning module for classification: uint8 batches in, per-label scores out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torchmetrics import Metric
from torchmetrics.classification import BinaryAUROC

from classify.augment import StandardAugment
from classify.models import build_model, freeze_blocks
from classify.tasks import make_task

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def warmup_cosine(epoch: int, warmup_epochs: int, max_epochs: int) -> float:
    """LR factor: linear warm-up over `warmup_epochs`, then cosine annealing to 0 at max_epochs."""
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    progress = (epoch - warmup_epochs) / max(1, max_epochs - warmup_epochs)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class ClassCounts(Metric):
    """Positives and negatives per label (targets 1 / 0; -1 ignored), summed across DDP ranks."""

    full_state_update = False

    def __init__(self, n_labels: int):
        super().__init__()
        self.add_state("pos", torch.zeros(n_labels), dist_reduce_fx="sum")
        self.add_state("neg", torch.zeros(n_labels), dist_reduce_fx="sum")

    def update(self, target: torch.Tensor) -> None:
        """Count a batch of integer targets (N, L)."""
        self.pos += (target == 1).sum(dim=0)
        self.neg += (target == 0).sum(dim=0)

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(positives, negatives) per label."""
        return self.pos, self.neg


class Classifier(pl.LightningModule):
    """Classifier over `label_names` for a task kind; batches are (uint8 (N,1,R,R), float (N,L)[, idx]).

    Images are scaled to [0, 1], augmented (training only, `augment` = StandardAugment kwargs, None
    for no augmentation), then normalized with `mean`/`std`. Validation logs `val_loss` and
    `val_auc` (macro AUC over the labels with both classes present in the whole validation set,
    gathered across DDP ranks by torchmetrics) and `val_auc/<label>`. `predict_step` returns the
    scores (N, L), or {"index", "scores"} when the batch carries sample indices. Reload a
    checkpoint with `Classifier.load_from_checkpoint(path, pretrained=None)` so that the original
    weights file is not needed.
    """

    def __init__(
        self,
        model_name: str = "densenet121",
        label_names: Sequence[str] = ("positive",),
        task: str = "multilabel",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: str = "adam",
        warmup_epochs: int = 0,
        max_epochs: int = 10,
        augment: dict | None = None,
        pos_weight: Sequence[float] | None = None,
        head: str | None = None,
        pretrained: str | Path | None = None,
        freeze: int = 0,
        mean: float = 0.449,
        std: float = 0.226,
        ordinal: str = "corn",
        seed: int = 0,
        studied: Sequence[str] = (),
    ):
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {list(OPTIMIZERS)}")
        if std <= 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.save_hyperparameters()
        self.label_names = list(label_names)
        n_labels = len(self.label_names)
        self.task = make_task(task, pos_weight, ordinal)
        self.model = build_model(
            model_name, self.task.num_outputs(n_labels), 1, head, pretrained, freeze=0
        )
        # channels_last: oneDNN's bf16 convolutions and GPU tensor cores run fastest in NHWC
        # (DenseNet-121 trains 1.87x fp32 in bf16 + channels_last on an AVX512-BF16 CPU, 1.59x without)
        self.model = self.model.to(memory_format=torch.channels_last)
        self._frozen = freeze_blocks(self.model, freeze)
        self.augment = None if augment is None else StandardAugment(**{"seed": seed, **augment})
        # Two AUCs on purpose: torchmetrics here (it accumulates on device and syncs across DDP ranks
        # inside the training loop, for selection only); classify.metrics for every reported number
        # (Mann-Whitney with patient bootstrap weights, so CIs resample patients, not images).
        self.val_auroc = torch.nn.ModuleList(BinaryAUROC(ignore_index=-1) for _ in range(n_labels))
        self.val_counts = ClassCounts(n_labels)

    def setup(self, stage: str) -> None:
        """Give every DDP rank its own augmentation stream."""
        if self.augment is not None:
            self.augment.reseed(self.hparams.seed + self.global_rank)

    def train(self, mode: bool = True) -> Classifier:
        """Switch mode; frozen blocks stay in eval so their BatchNorm statistics stay fixed."""
        super().train(mode)
        for m in getattr(self, "_frozen", []):
            m.eval()
        return self

    def on_train_epoch_start(self) -> None:
        """Lightning does not call train() itself: put the frozen blocks back in eval here."""
        self.train()

    def preprocess(self, images: torch.Tensor, augment: bool = False) -> torch.Tensor:
        """uint8 (or [0, 1] float) images → augmented (optional) and normalized float."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if augment and self.augment is not None:
            x = self.augment(x)
        x = (x - self.hparams.mean) / self.hparams.std
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of uint8 images (N, 1, R, R)."""
        return self.model(self.preprocess(images))

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Loss on an augmented batch."""
        images, labels = batch[0], batch[1]
        logits = self.model(self.preprocess(images, augment=True))
        loss = self.task.loss(logits.float(), labels)  # fp32 loss under bf16/AMP autocast
        self.log(
            "train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels)
        )
        return loss

    def _auc_targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Integer targets for torchmetrics: -1 (ignored) where unknown; whole rows if single-label."""
        unknown = torch.isnan(labels)
        if self.task.kind != "multilabel":
            unknown = unknown.any(dim=1, keepdim=True).expand_as(labels)
        target = (torch.nan_to_num(labels) > 0.5).long()
        return torch.where(unknown, torch.full_like(target, -1), target)

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        """Accumulate scores for the epoch's AUC; log the loss."""
        images, labels = batch[0], batch[1]
        logits = self(images)
        loss = self.task.loss(logits, labels)
        scores = self.task.scores(logits).float()
        target = self._auc_targets(labels)
        for j, metric in enumerate(self.val_auroc):
            metric.update(scores[:, j], target[:, j])
        self.val_counts.update(target)
        self.log(
            "val_loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(labels)
        )

    def on_validation_epoch_end(self) -> None:
        """Log per-label AUC and the macro AUC over labels with both classes present."""
        pos, neg = self.val_counts.compute()  # synced across DDP ranks
        valid = ((pos > 0) & (neg > 0)).reshape(-1).tolist()  # same on all ranks
        aucs = []
        for name, metric, ok in zip(self.label_names, self.val_auroc, valid, strict=True):
            if ok:  # computing a label without both classes would fail or give a fake value
                aucs.append(metric.compute().float())
                self.log(f"val_auc/{name}", aucs[-1])
            metric.reset()
        nan = torch.tensor(float("nan"), device=self.device)
        self.log("val_auc", torch.stack(aucs).mean() if aucs else nan, prog_bar=True)
        # the rare classes under study: selection must see them, not only the common labels
        scored = dict(
            zip([n for n, ok in zip(self.label_names, valid, strict=True) if ok], aucs, strict=True)
        )
        studied = [scored[n] for n in self.hparams.studied if n in scored]
        self.log(
            "val_auc_studied",
            torch.stack(studied).mean() if studied else nan,
            prog_bar=bool(studied),
        )
        self.val_counts.reset()

    def predict_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor | dict:
        """Scores (N, L); with an index in the batch, {"index": idx, "scores": scores}."""
        scores = self.task.scores(self(batch[0])).float()
        if len(batch) > 2:
            return {"index": batch[2], "scores": scores}
        return scores

    def configure_optimizers(self) -> dict:
        """Adam/AdamW on the trainable parameters, per-epoch warm-up + cosine schedule."""
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        opt = OPTIMIZERS[hp.optimizer](params, lr=hp.lr, weight_decay=hp.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda e: warmup_cosine(e, hp.warmup_epochs, hp.max_epochs)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
