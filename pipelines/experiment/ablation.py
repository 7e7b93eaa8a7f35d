"""The GAN ablation: filter bank on/off × differentiable augmentation on/off, at one budget and
the same seeds, each GAN measured against real images it never saw (pipelines.fidelity.eval_run).
Conditional variants train one label-conditional GAN on the rare class and the classes named by
`condition_on` (the abundant classes of the same data set lend it their anatomy) and are measured
on the rare class alone.

This is the direct test of the filter claim at the GAN level (does filter pre-augmentation give a
better GAN?) and of data-efficient training, before any classifier is involved. Every GAN is a
resumable run folder reused when its fingerprint matches, so an ablation can be finished
piecewise; the table is rebuilt from the runs' eval.json files.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.data.prepare import Prepared
from pipelines.errors import RareganError
from pipelines.experiment.plan import variant_config
from pipelines.experiment.records import read_json
from pipelines.experiment.report import data_citation
from pipelines.fidelity.c2st import t_interval
from pipelines.fidelity.distances import space_label
from pipelines.fidelity.eval_run import eval_current, evaluate_gan_run
from pipelines.fidelity.metrics import near_copy_share
from pipelines.fingerprints import RunOptions
from pipelines.gan.run import CKPT, augment_on, check_condition_on, train_gan
from pipelines.generators.synth import samples_for
from pipelines.runs import atomic_write_text, is_done, write_json

# variant → (filter bank, differentiable augmentation, conditioned on other classes, classes
# drawn equally often)
VARIANTS = {
    "filters+augment": (True, True, False, False),
    "filters": (True, False, False, False),
    "augment": (False, True, False, False),
    "plain": (False, False, False, False),
    "filters+conditional": (True, False, True, False),
    "plain+conditional": (False, False, True, False),
    "filters+balanced": (True, False, True, True),
}
# the augmentation a variant gets when the config sets none: every op, each with p = 0.5 per image.
# Fixed, not adaptive: with this WGAN-GP critic (one D step per G step) the overfitting signal
# stayed under ADA's target on 52 Kermany viral images, so an adaptive p stayed under 0.16 for
# 12 kimg and the variant would have been the unaugmented GAN again.
DEFAULT_AUGMENT = {"policy": "translation,cutout,color,affine", "p": 0.5, "adaptive": False}
TIMING = "ablation_timing.json"  # wall time of the training this ablation ran (not of resumes)


@dataclass
class Ablation:
    """What to run: one class at one fraction, the variants, the GAN seeds, samples per GAN."""

    cls: str
    fraction: float
    variants: list[str]
    seeds: list[int]
    out: Path
    n: int = 256
    classifier: Path | None = None
    progress: bool = False
    redo: bool = False
    condition_on: tuple[str, ...] = ()  # the other classes of the conditional variants

    def classes(self, variant: str) -> list[str]:
        """The classes one GAN of `variant` learns: the rare one, then those it is conditioned on."""
        return [self.cls, *self.condition_on] if VARIANTS[variant][2] else [self.cls]

    def run_dir(self, variant: str, seed: int) -> Path:
        """Run folder of one GAN of the ablation."""
        return self.out / "runs" / f"{variant}-seed{seed}"


def check_variants(names: list[str], condition_on: list[str] | tuple = ()) -> list[str]:
    """The variant names, refused (one line) when one is unknown or a conditional one has no
    classes to be conditioned on."""
    for name in names:
        if name not in VARIANTS:
            raise RareganError(f"unknown GAN variant {name!r}; use {', '.join(VARIANTS)}")
        if VARIANTS[name][2] and not condition_on:
            raise RareganError(
                f"GAN variant {name!r} conditions on other classes: name them with --condition-on "
                "(e.g. the abundant classes of the same data)"
            )
    return list(dict.fromkeys(names))


def ablation_config(cfg: dict, variant: str, seed: int) -> dict:
    """The config of one variant and seed: the filter bank emptied or kept, the augmentation set
    off or on (the config's own policy when it has one, else DEFAULT_AUGMENT), the classes drawn
    in their proportions or balanced (the config's gan.class_balance when it sets one, else 1)."""
    filters, augment, _, balanced = VARIANTS[variant]
    out = variant_config(cfg, "filters" if filters else "nofilter")
    aug = dict(cfg["gan"]["augment"])
    if augment and not augment_on(aug):
        aug.update(DEFAULT_AUGMENT, target=aug["target"], speed_kimg=aug["speed_kimg"])
    elif not augment:
        aug.update(policy="", p=0.0, adaptive=False)
    balance = (cfg["gan"]["class_balance"] or 1.0) if balanced else 0.0
    gan = {**cfg["gan"], "augment": aug, "class_balance": balance, "seed": seed}
    return {**out, "gan": gan}


def train_one(ab: Ablation, prepared: Prepared, cfg: dict, variant: str, seed: int) -> dict:
    """Train (or reuse, or resume) one GAN of the ablation, evaluate it; its row of the table."""
    run = ab.run_dir(variant, seed)
    vcfg = ablation_config(cfg, variant, seed)
    opts = RunOptions(resume=(run / CKPT).exists(), redo=ab.redo, progress=ab.progress)
    trained = not is_done(run)
    start = time.perf_counter()
    train_gan(prepared, ab.classes(variant), ab.fraction, vcfg, run, opts)
    if trained:
        resumed = opts.resume
        write_json(
            run / TIMING, {"minutes": (time.perf_counter() - start) / 60, "resumed": resumed}
        )
    if not eval_current(run / "eval" / "eval.json", ab.classifier):
        cache = prepared.store.data_path.parent
        n = samples_for(run, [ab.cls], ab.n)
        evaluate_gan_run(
            run, n=n, seed=seed, classifier=ab.classifier, cache=cache, heldout="require"
        )
    return row_of(run, variant, seed, cls=ab.cls)


def row_of(
    run: Path, variant: str, seed: int, eval_dir: str = "eval", cls: str | None = None
) -> dict:
    """One GAN's figures from its run folder (its gan-eval output in `eval_dir`): budget, C2ST and
    its real baseline, held-out FID/KID and precision/recall beside their real baselines, near
    copies, diversity. An evaluated checkpoint gives its own kimg and training minutes. Of a
    conditional GAN the held-out figures are those of `cls` alone (near copies and diversity are
    over all its samples)."""
    ev, summary = read_json(run / eval_dir / "eval.json"), read_json(run / "summary.json")
    timing = read_json(run / TIMING) if (run / TIMING).is_file() else {}
    at = ev.get("checkpoint") or {}
    held = ev["per_class"][cls] if summary.get("conditional") else ev
    if held["c2st"] is None:
        raise RareganError(f"{run}: no held-out figures for {cls}: {held['heldout']['skipped']}")
    c2st, base = held["c2st"], held["c2st_real_baseline"] or {"auc": np.nan}
    pr = held["pr_real_baseline"] or {"precision": np.nan, "recall": np.nan}  # None: too few
    return {
        "variant": variant,
        "seed": seed,
        "kimg": at.get("kimg", summary["kimg"]),
        "train_minutes": at.get(
            "train_minutes", timing.get("minutes", summary.get("train_minutes", np.nan))
        ),
        "c2st_auc": c2st["auc"],
        "c2st_low": c2st["ci_low"],
        "c2st_high": c2st["ci_high"],
        "c2st_real": base["auc"],
        "c2st_n_per_side": c2st["n_per_side"],
        "fid_heldout": held["fid_heldout"],
        "fid_real": held["fid_real_baseline"],
        "kid_heldout": held["kid_heldout"],
        "kid_real": held["kid_real_baseline"],
        "precision": held["precision"],
        "recall": held["recall"],
        "precision_real": pr["precision"],
        "recall_real": pr["recall"],
        "near_copy_fraction": near_copy_share(ev),
        "ms_ssim": ev["diversity"]["ms_ssim_fake"],
        "ms_ssim_real": ev["diversity"]["ms_ssim_real"],
        "feature_space": space_label(ev["feature_space"]),
    }


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per variant: means over seeds; the C2ST interval is the folds' t-interval with one
    seed and the t-interval of the seed means with several (named in the `c2st_ci` column)."""
    out = []
    for variant, part in rows.groupby("variant", sort=False):
        line = {"variant": variant, "seeds": len(part)}
        line |= part.drop(columns=["variant", "seed", "feature_space"]).mean().to_dict()
        if len(part) > 1:
            _, line["c2st_low"], line["c2st_high"] = t_interval(part["c2st_auc"].tolist())
            line["c2st_ci"] = f"95 % t-interval over {len(part)} GAN seeds"
        else:
            line["c2st_ci"] = "95 % t-interval over 5 C2ST folds"
        line["feature_space"] = part["feature_space"].iloc[0]
        out.append(line)
    return pd.DataFrame(out)


def markdown(table: pd.DataFrame) -> str:
    """The summary table as Markdown, each figure beside its real-vs-real baseline."""
    head = (
        "| variant | seeds | kimg | min | C2ST AUC [95 % CI] | real vs real | FID held-out (real) "
        "| precision (real) | recall (real) | near copies | MS-SSIM (real) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r.variant} | {r.seeds} | {r.kimg:.1f} | {r.train_minutes:.1f} "
        f"| {r.c2st_auc:.3f} [{r.c2st_low:.3f}, {r.c2st_high:.3f}] | {r.c2st_real:.3f} "
        f"| {r.fid_heldout:.3g} ({r.fid_real:.3g}) | {r.precision:.2f} ({r.precision_real:.2f}) "
        f"| {r.recall:.2f} ({r.recall_real:.2f}) | {r.near_copy_fraction:.1%} | {r.ms_ssim:.3f} ({r.ms_ssim_real:.3f}) |"
        for r in table.itertuples()
    ]
    return head + "\n".join(lines) + "\n"


NOTE = (
    "C2ST: held-out AUC of a small CNN telling the GAN's samples from real images of the class it "
    "never saw (0.5: indistinguishable; Lopez-Paz & Oquab 2017); 'real vs real' is the same test "
    "between the GAN's own training images and those held-out images. FID and precision/recall "
    "(k = 3, Kynkäänniemi et al. 2019) in {space} space, held-out reals as reference, "
    "real-vs-real in brackets. Near copies: samples closer to a training image than real images "
    "are to each other. MS-SSIM: mean pairwise similarity of samples (higher: less diverse). "
    "min: wall minutes of training on this machine (summed over resumes)."
)
CONDITIONAL_NOTE = (
    " A `+conditional` variant is one label-conditional GAN on {cls} and {others} (their positives "
    "pooled, drawn in their proportions; `+balanced`: the same, each class drawn equally often); "
    "its held-out figures are those of its {cls} samples alone, its near copies and MS-SSIM are "
    "over all its samples."
)


def run_ablation(ab: Ablation, prepared: Prepared, cfg: dict, command: str) -> pd.DataFrame:
    """Train and evaluate every variant × seed (reusing finished runs), then write table.csv,
    runs.csv, table.md, one grid per variant and README.md into the ablation's folder."""
    check_condition_on(prepared.records.label_names, [ab.cls], ab.condition_on)
    rows = [
        train_one(ab, prepared, cfg, variant, seed) for variant in ab.variants for seed in ab.seeds
    ]
    runs = pd.DataFrame(rows)
    table = summarize(runs)
    ab.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(ab.out / "runs.csv", runs.to_csv(index=False))
    atomic_write_text(ab.out / "table.csv", table.to_csv(index=False))
    md = markdown(table)
    atomic_write_text(ab.out / "table.md", md)
    grids = []
    for variant in ab.variants:
        src = ab.run_dir(variant, ab.seeds[0]) / "samples" / "final.png"
        if src.is_file():
            shutil.copyfile(src, ab.out / f"grid-{variant}.png")
            grids.append(f"![{variant}](grid-{variant}.png)")
    others = ", ".join(ab.condition_on)
    conditional_note = CONDITIONAL_NOTE.format(cls=ab.cls, others=others)
    dataset = prepared.dataset_name
    source = "phantoms" if dataset == "phantoms" else prepared.records.source
    citation = data_citation({"source": source})
    readme = (
        f"# GAN ablation: {ab.cls}, {ab.fraction:g} % of train\n\n"
        f"Made by `{command}`.\n\n{md}\n{NOTE.format(space=table['feature_space'].iloc[0])}"
        + (conditional_note if any(VARIANTS[v][2] for v in ab.variants) else "")
        + "\n\n"
        + (f"Data: {citation}\n\n" if citation else "")
        + f"Final sample grid of each variant (seed {ab.seeds[0]}):\n\n"
        + "\n\n".join(grids)
        + "\n"
    )
    atomic_write_text(ab.out / "README.md", readme)
    return table
