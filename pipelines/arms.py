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

Light on purpose (no torch, no pandas): the command line's help reads it.
"""

from __future__ import annotations

GENERATOR_KINDS = (
    "pggan",
    "diffusion",
)  # generator.kind: pipelines/generators.KINDS has their modules
ARMS = ("none", "standard", "filters", "gan_nofilter", "gan", "gan_standard", "synth_only")
ARMS += ("diffusion", "diffusion_standard")
# the generator variant each synthetic arm's images come from ("filters": trained after the filter
# bank; "nofilter": on the positives alone)
GAN_VARIANT = {
    "gan": "filters",
    "gan_standard": "filters",
    "gan_nofilter": "nofilter",
    "synth_only": "filters",
    "diffusion": "diffusion",
    "diffusion_standard": "diffusion",
}
# the generator kind (generator.kind) of each variant's units: PGGAN unless named here
VARIANT_KIND = {"diffusion": "diffusion"}
SYNTH_ARMS = tuple(a for a in ARMS if a in GAN_VARIANT)  # real rows (or fewer) + synthetic sets
AUGMENT_ARMS = (
    "standard",
    "gan_standard",
    "diffusion_standard",
)  # standard augmentation (rotation, crop)
