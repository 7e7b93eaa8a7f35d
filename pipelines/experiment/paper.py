"""The published baseline: Sundaram & Hulkund (2021) CheXpert AUCs per rare class, fraction and arm."""

from __future__ import annotations

CITATION = (
    "Sundaram S., Hulkund N. (2021). GAN-based Data Augmentation for Chest X-ray Classification. "
    "KDD 2021 Workshop on Applied Data Science for Healthcare (DSHealth). "
    "Numbers as in the authors' published figure code."
)

CAVEATS = (
    "single seed (no confidence intervals)",
    "the model was chosen on the test set",
    "test set = a 10 % patient hold-out of CheXpert train.csv, not valid.csv",
    "their code most likely attached class names in CSV order to outputs sorted alphabetically, so their "
    "'Lung Lesion / Pleural Other / Fracture' columns may belong to other classes; raregan carries labels "
    "by name and a test proves that column order cannot change results",
)

# AUC per class → fraction (%) → one value per arm of PAPER_ARMS.
PAPER_AUC = {
    "Lung Lesion": {
        1: (0.727, 0.728, 0.758),
        10: (0.790, 0.796, 0.803),
        50: (0.826, 0.822, 0.828),
        100: (0.835, 0.832, 0.834),
    },
    "Pleural Other": {
        1: (0.566, 0.550, 0.594),
        10: (0.632, 0.655, 0.670),
        50: (0.710, 0.696, 0.706),
        100: (0.721, 0.712, 0.727),
    },
    "Fracture": {
        1: (0.583, 0.601, 0.656),
        10: (0.700, 0.723, 0.742),
        50: (0.789, 0.780, 0.793),
        100: (0.811, 0.793, 0.807),
    },
}
PAPER_ARMS = ("none", "standard", "gan")  # the paper ran these arms; the order of the tuples above


def shows_paper(source: str | None) -> bool:
    """The paper's numbers are CheXpert's: shown beside CheXpert (and its phantom stand-in) only."""
    return source in ("chexpert", "phantoms")


def paper_auc(cls: str, fraction: float, arm: str) -> float | None:
    """The paper's AUC for one cell, or None where they have no number."""
    values = PAPER_AUC.get(cls, {}).get(int(fraction)) if float(fraction).is_integer() else None
    if values is None or arm not in PAPER_ARMS:
        return None
    return values[PAPER_ARMS.index(arm)]
