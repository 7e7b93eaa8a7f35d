"""A finished classifier run's figures, drawn once after its test evaluation."""

from __future__ import annotations

import numpy as np

from pipelines.classifier.evaluation import N_BINS
from pipelines.classifier.plots import (
    confusion_png,
    gradcam_grid,
    label_distribution_png,
    prediction_grid,
    reliability_png,
    roc_curves,
)


def run_figures(run, module, test, preds, metrics, label_names, task, classes, prepared) -> None:
    """A finished classifier run's figures: ROC curves, reliability diagram, confusion matrix and
    label distribution (single-label tasks), a prediction grid, Grad-CAM overlays for the rare
    classes."""

    y = preds[label_names].to_numpy(np.float64)
    scores = preds[[f"score:{n}" for n in label_names]].to_numpy()
    roc_curves(run / "roc_curves.png", y, scores, label_names, highlight=classes)
    reliability_png(run / "calibration.png", y, scores, label_names, N_BINS)
    if task != "multilabel":
        cm = np.asarray(metrics["confusion"]["data"])
        confusion_png(run / "confusion.png", cm, label_names, "test confusion matrix")
        dist = metrics["distribution"]
        label_distribution_png(
            run / "label_distribution.png",
            [dist[n]["true_n"] for n in label_names],
            [dist[n]["pred_n"] for n in label_names],
            label_names,
            "test: true vs predicted",
        )
    images = prepared.store.view[test["row"].to_numpy()[:32]]
    top = scores[:32].argmax(axis=1)
    if task == "multilabel":
        truth = [
            ", ".join(n for n, v in zip(label_names, row, strict=True) if v > 0.5) or "none"
            for row in y[:32]
        ]
        correct = [y[i, top[i]] > 0.5 for i in range(len(top))]
    else:
        truth = [label_names[int(np.nanargmax(row))] for row in y[:32]]
        correct = [label_names[t] == tr for t, tr in zip(top, truth, strict=True)]
    prediction_grid(
        run / "test_predictions.png",
        images,
        truth,
        [label_names[t] for t in top],
        correct,
        "test images: predicted / true",
    )
    # a head without one logit per class (CORN's K-1 for K grades): explain log P(class)
    per_class = module.task.num_outputs(len(label_names)) == len(label_names)
    explain = None if per_class else (lambda z: module.task.scores(z).clamp_min(1e-12).log())
    for cls in classes:
        j = label_names.index(cls)
        pos = np.flatnonzero(y[:, j] > 0.5)
        pick = pos[np.argsort(-scores[pos, j])][:8]
        if len(pick):
            gradcam_grid(
                run / f"gradcam_{cls.replace(' ', '_')}.png",
                module.model,
                prepared.store.view[test["row"].to_numpy()[pick]],
                j,
                lambda x: module.preprocess(x),
                f"Grad-CAM{'' if per_class else ' of log P(' + cls + ')'}: top-scored {cls} "
                "test positives",
                outputs=explain,
            )
