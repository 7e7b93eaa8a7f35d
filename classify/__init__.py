"""Classifiers for X-ray labels: model zoo, tasks, augmentation, Lightning module, metrics, Grad-CAM.

A tensor-only leaf: it never reads images or CSVs (only user-given weight files).
`Classifier` (Lightning) is imported on first use, so metrics and models load without Lightning.
"""

from __future__ import annotations

from classify.augment import StandardAugment
from classify.gradcam import gradcam, overlay
from classify.metrics import (
    auc_with_ci,
    classification_report,
    paired_delta,
    per_label_report,
    quadratic_weighted_kappa,
)
from classify.models import MODELS, build_model
from classify.tasks import TASK_KINDS, Task, make_task

__all__ = [
    "MODELS",
    "TASK_KINDS",
    "Classifier",
    "StandardAugment",
    "Task",
    "auc_with_ci",
    "build_model",
    "classification_report",
    "gradcam",
    "make_task",
    "overlay",
    "paired_delta",
    "per_label_report",
    "quadratic_weighted_kappa",
]


def __getattr__(name: str) -> object:
    """Import the Lightning module lazily."""
    if name == "Classifier":
        from classify.module import Classifier

        return Classifier
    raise AttributeError(f"module 'classify' has no attribute {name!r}")
