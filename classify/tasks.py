"""Losses, scores and predictions per task kind; labels are float (N, L) with NaN = unknown.

- multilabel: one logit per label, BCE-with-logits over the known entries; scores = sigmoid.
- multiclass / binary: one-hot labels (exactly one 1 per row), CE on the argmax; scores = softmax.
  Rows with a NaN or without a 1 are left out of the loss.
- ordinal: one-hot labels in grade order. CORN (Shi et al. 2022, "Deep neural networks for rank-
  consistent ordinal regression based on conditional probabilities"): K-1 logits, logit k models
  P(y > k | y > k-1) and is trained only on the samples with y > k-1. Or plain CE (`method="ce"`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

TASK_KINDS = ("multilabel", "multiclass", "binary", "ordinal")


def _zero(logits: torch.Tensor) -> torch.Tensor:
    """A zero loss that keeps the graph (no known entries in the batch)."""
    return logits.sum() * 0.0


class Task:
    """The interface: outputs, loss, per-label scores and predictions for one task kind."""

    kind = "base"

    def num_outputs(self, n_labels: int) -> int:
        """Number of logits for `n_labels` label columns."""
        return n_labels

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scalar training loss."""
        raise NotImplementedError

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-label scores (N, L) aligned with the label names."""
        raise NotImplementedError

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Class indices (N,) or multi-hot (N, L)."""
        raise NotImplementedError


class MultiLabel(Task):
    """Independent sigmoid per label; NaN labels are masked out of the loss."""

    kind = "multilabel"

    def __init__(self, pos_weight: Sequence[float] | torch.Tensor | None = None):
        self.pos_weight = None if pos_weight is None else torch.as_tensor(pos_weight).float()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean BCE-with-logits over the known (non-NaN) entries."""
        logits = logits.float()
        known = ~torch.isnan(labels)
        if not known.any():
            return _zero(logits)
        pw = None if self.pos_weight is None else self.pos_weight.to(logits.device)
        per = F.binary_cross_entropy_with_logits(
            logits, torch.nan_to_num(labels, nan=0.0).float(), pos_weight=pw, reduction="none"
        )
        return per[known].mean()

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Sigmoid probabilities (N, L)."""
        return torch.sigmoid(logits.float())

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Multi-hot (N, L) at probability 0.5."""
        return (logits > 0).long()


def class_targets(labels: torch.Tensor) -> torch.Tensor:
    """Argmax of one-hot rows; -100 (ignored) for rows with a NaN or without a positive."""
    valid = ~torch.isnan(labels).any(dim=1) & (torch.nan_to_num(labels) > 0.5).any(dim=1)
    target = torch.nan_to_num(labels, nan=-1.0).argmax(dim=1)
    return torch.where(valid, target, torch.full_like(target, -100))


class MultiClass(Task):
    """Softmax over one-hot classes (binary is the two-class case)."""

    kind = "multiclass"

    def __init__(self, kind: str = "multiclass"):
        self.kind = kind

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the argmax class; unknown rows ignored."""
        target = class_targets(labels)
        if not (target >= 0).any():
            return _zero(logits)
        return F.cross_entropy(logits.float(), target, ignore_index=-100)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (N, L)."""
        return torch.softmax(logits.float(), dim=1)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Class index (N,)."""
        return logits.argmax(dim=1)


def corn_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CORN loss: BCE of task k on samples with y >= k, label y > k; mean over all such terms."""
    logits = logits.float()
    keep = target >= 0
    logits, target = logits[keep], target[keep]
    k = torch.arange(logits.shape[1], device=logits.device)
    subset = target[:, None] >= k[None, :]
    if not subset.any():
        return _zero(logits)
    label = (target[:, None] > k[None, :]).float()
    per = F.binary_cross_entropy_with_logits(logits, label, reduction="none")
    return per[subset].mean()


def corn_grade_probs(logits: torch.Tensor) -> torch.Tensor:
    """P(y = k) for k = 0..K-1 (N, K) from CORN's K-1 conditional logits."""
    above = torch.cumprod(torch.sigmoid(logits.float()), dim=1)  # P(y > k), non-increasing
    ones = torch.ones_like(above[:, :1])
    zeros = torch.zeros_like(above[:, :1])
    return torch.cat([ones, above], dim=1) - torch.cat([above, zeros], dim=1)


class Ordinal(Task):
    """Ordinal grades: CORN head (K-1 logits) or plain CE (K logits)."""

    kind = "ordinal"

    def __init__(self, method: str = "corn"):
        if method not in ("corn", "ce"):
            raise ValueError(f"ordinal method must be 'corn' or 'ce', not {method!r}")
        self.method = method

    def num_outputs(self, n_labels: int) -> int:
        """K-1 logits for CORN, K for CE."""
        if n_labels < 2:
            raise ValueError(f"an ordinal task needs at least 2 grades, got {n_labels}")
        return n_labels - 1 if self.method == "corn" else n_labels

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CORN or CE loss on the argmax grade of one-hot labels."""
        target = class_targets(labels)
        if self.method == "corn":
            return corn_loss(logits, target)
        if not (target >= 0).any():
            return _zero(logits)
        return F.cross_entropy(logits.float(), target, ignore_index=-100)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Probability of each grade (N, K)."""
        if self.method == "corn":
            return corn_grade_probs(logits)
        return torch.softmax(logits.float(), dim=1)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Grade (N,): CORN counts P(y > k) > 0.5 (rank-consistent); CE takes the argmax."""
        if self.method == "corn":
            return (torch.cumprod(torch.sigmoid(logits.float()), dim=1) > 0.5).sum(dim=1)
        return logits.argmax(dim=1)


def make_task(
    kind: str,
    pos_weight: Sequence[float] | torch.Tensor | None = None,
    ordinal: str = "corn",
) -> Task:
    """The Task for `kind` (multilabel, multiclass, binary, ordinal)."""
    if kind == "multilabel":
        return MultiLabel(pos_weight)
    if pos_weight is not None:
        raise ValueError(f"pos_weight applies to multilabel tasks only, not {kind!r}")
    if kind in ("multiclass", "binary"):
        return MultiClass(kind)
    if kind == "ordinal":
        return Ordinal(ordinal)
    raise ValueError(f"unknown task {kind!r}; choose one of {', '.join(TASK_KINDS)}")
