"""The arms of the experiment, in one table: what each trains on, and with which generator.

| arm | trains the classifier on | generator behind it |
|---|---|---|
| none | the fraction's real rows | — |
| standard | the real rows, with standard augmentation (rotation, crop) | — |
| filters | the real rows + the filter bank's copies of the rare classes' positives | — |
| gan_nofilter | the real rows + synthetic rows | GAN trained on the positives alone |
| gan | the real rows + synthetic rows | GAN trained after the filter bank |
| gan_standard | as gan, with standard augmentation | GAN trained after the filter bank |
| synth_only | the real rows less the rare classes' positives + synthetic rows (train on synthetic, test on real) | GAN trained after the filter bank |
| diffusion | the real rows + synthetic rows | diffusion model trained after the filter bank |
| diffusion_standard | as diffusion, with standard augmentation | diffusion model trained after the filter bank |
| gan_ratio | the real rows + synthetic rows at the ratio (compare.ratio_grid × the real positives) whose classifier scored best on validation, per fraction and seed | GAN trained after the filter bank |
| gan_pretrain | the real rows only, starting from the gan arm's classifier (trained on real + synthetic rows): synthetic pretraining, then fine-tuning on real images | GAN trained after the filter bank (through the gan arm) |

Light on purpose (no torch, no pandas): the command line's help reads it.
"""

from __future__ import annotations

# generator.kind: pipelines/generators.KINDS has their modules
# each generator kind's config section (pipelines/generators.KINDS has their modules)
KIND_SECTION = {"pggan": "gan", "diffusion": "diffusion"}
GENERATOR_KINDS = tuple(KIND_SECTION)
ARMS = ("none", "standard", "filters", "gan_nofilter", "gan", "gan_standard", "synth_only")
ARMS += ("diffusion", "diffusion_standard", "gan_pretrain", "gan_ratio")
# the generator variant each synthetic arm's images come from ("filters": trained after the filter
# bank; "nofilter": on the positives alone)
GAN_VARIANT = {
    "gan": "filters",
    "gan_standard": "filters",
    "gan_nofilter": "nofilter",
    "synth_only": "filters",
    "diffusion": "diffusion",
    "diffusion_standard": "diffusion",
    "gan_ratio": "filters",
}
# the generator kind (generator.kind) of each variant's units: PGGAN unless named here
VARIANT_KIND = {"diffusion": "diffusion"}


def variant_kind(variant: str) -> str:
    """The generator kind a variant's units train (PGGAN unless VARIANT_KIND names another)."""
    return VARIANT_KIND.get(variant, "pggan")


def variant_section(variant: str) -> str:
    """The config section of a variant's generator kind ("gan", "diffusion")."""
    return KIND_SECTION[variant_kind(variant)]


SYNTH_ARMS = tuple(a for a in ARMS if a in GAN_VARIANT)  # real rows (or fewer) + synthetic sets
# arms that train the real rows from another arm's finished classifier of the same fraction and
# seed (synthetic pretraining, then fine-tuning on real images; RoentGen-v2, arXiv 2508.16783)
START_FROM_ARM = {"gan_pretrain": "gan"}
# arms that choose their synthetic ratio on validation (never on test) from compare.ratio_grid: one
# classifier per ratio, the one with the best validation score is the arm's (its test predictions)
RATIO_ARMS = ("gan_ratio",)
# standard augmentation (rotation, crop)
AUGMENT_ARMS = ("standard", "gan_standard", "diffusion_standard")


def sweep_only(arm: str) -> str | None:
    """Why `arm` can run only in a sweep (None when a single classifier run can train it)."""
    if arm in RATIO_ARMS:
        return (
            f"the {arm} arm trains one classifier per ratio of compare.ratio_grid and keeps the one "
            f"best on validation: run it in a sweep (compare --arms … {arm})"
        )
    if arm in START_FROM_ARM:
        return (
            f"the {arm} arm starts from the {START_FROM_ARM[arm]} arm's classifier of its fraction "
            f"and seed: run it in a sweep (compare --arms … {START_FROM_ARM[arm]} {arm})"
        )
    return None
