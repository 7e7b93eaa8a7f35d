"""`raregan gan-eval`: how close a GAN's samples are to real images of the class, each figure beside
what real images of the class score: C2ST, domain FID/KID, precision/recall, memorization, diversity."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.commands.common import add_sample_seed

NAME = "gan-eval"
HELP = (
    "measure a GAN run: C2ST AUC, domain FID/KID and precision/recall against held-out real images "
    "of its class, each beside its real-vs-real baseline; memorization, MS-SSIM diversity"
)
EPILOG = """\
what the numbers are (written to <out>/eval.json):
  c2st              held-out AUC of a small CNN trained to tell the samples from held-out real
                    images of the class (same number of each, 5 stratified folds): mean of 5 fold
                    AUCs with a 95 % t-interval, and accuracy; 0.5 = indistinguishable
                    (Lopez-Paz & Oquab 2017)
  c2st_real_baseline  the same test between the GAN's own training originals and the held-out
                    images: what real images of this class score against each other
  precision, recall k-NN manifold precision/recall (k = 3) against the held-out images, in the
                    FID/KID feature space (Kynkaanniemi et al. 2019); pr_real_baseline as above
  fid_heldout, kid_heldout  FID/KID against the held-out images; fid/kid_real_baseline as above
  fid, kid          FID/KID against what the GAN saw (its positives after the filter bank)
The held-out images are listed in the GAN run's heldout.csv (written when the GAN is trained);
a run without it skips these comparisons with one line, fewer than 20 is an error (--no-heldout
skips them)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The run, the samples, the feature space and the output folder."""
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--run", type=Path, required=True, help="a finished GAN run folder")
    parser.add_argument(
        "--synth", type=Path, help="a synthetic set of the run (default: sample --n new images)"
    )
    parser.add_argument(
        "--n", type=int, default=256, help="samples to draw when --synth is not given"
    )
    add_sample_seed(parser, "the generator's samples and of the statistics' draws")
    parser.add_argument(
        "--classifier",
        type=Path,
        help="classifier checkpoint whose features define FID/KID and precision/recall",
    )
    parser.add_argument(
        "--inception-weights", type=Path, help="local Inception FID weights (needs torch-fidelity)"
    )
    parser.add_argument(
        "--no-heldout",
        action="store_true",
        help="skip the comparisons with held-out real images (C2ST, precision/recall, baselines)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="evaluate this checkpoint of the run (a file, or its name in <run>/checkpoints) "
        "instead of the finished generator; it must be in the final stable phase",
    )
    parser.add_argument(
        "--raw-generator",
        action="store_true",
        help="evaluate the raw generator that training moves (at --checkpoint, default last.ckpt) "
        "instead of its moving average G_ema, which sampling uses: what the average buys",
    )
    parser.add_argument(
        "--guidance",
        type=float,
        metavar="G",
        help="a class-conditional diffusion model: sample at this classifier-free guidance "
        "(default: its training's; output <run>/eval-gG)",
    )
    parser.add_argument(
        "--out", type=Path, help="output folder (default <run>/eval, <run>/eval-<checkpoint>)"
    )
    parser.add_argument(
        "--cache", type=Path, default=Path("runs/store"), help="where decoded stores live"
    )


def c2st_text(report: dict) -> str:
    """ "C2ST AUC 0.87 [0.80, 0.94] vs real-vs-real 0.55 [0.47, 0.62]; precision …" or the reason it is missing."""
    c, base = report.get("c2st"), report.get("c2st_real_baseline")
    if c is None:
        return "no held-out comparisons"
    ours = (
        f"C2ST AUC {c['auc']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}] "
        f"({c['n_per_side']} per side, {c['method']}); precision {report['precision']:.2f}, "
        f"recall {report['recall']:.2f}; held-out FID {report['fid_heldout']:.4g}"
    )
    if base is None:
        return f"{ours}; {report['heldout']['baseline_skipped']}"
    pr = report["pr_real_baseline"]
    return (
        f"{ours}; real vs real: C2ST {base['auc']:.2f} [{base['ci_low']:.2f}, "
        f"{base['ci_high']:.2f}], precision {pr['precision']:.2f}, recall {pr['recall']:.2f}, "
        f"FID {report['fid_real_baseline']:.4g}"
    )


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the headline figures."""
    from pipelines.fidelity.distances import space_label  # torch loads when the command runs
    from pipelines.fidelity.eval_run import evaluate_gan_run

    report, nearest, out = evaluate_gan_run(
        args.run,
        args.synth,
        args.n,
        args.seed,
        args.classifier,
        args.inception_weights,
        args.out,
        args.cache,
        heldout="skip" if args.no_heldout else "require",
        checkpoint=args.checkpoint,
        raw=args.raw_generator,
        guidance=args.guidance,
    )
    skipped = report.get("heldout", {}).get("skipped")
    if skipped:
        print(f"raregan: note: {skipped}")
    n_copies = int(nearest["near_copy"].sum())
    at = report.get("checkpoint")
    raw = ", raw G" if at and at.get("generator") == "raw" else ""
    where = f" at {at['kimg']:g} kimg ({at['name']}{raw})" if at else ""
    print(
        f"{report['class']}{where}: {c2st_text(report)}; {space_label(report['feature_space'])} FID "
        f"{report['fid']:.4g}, KID {report['kid']:.3g} against the GAN's training images; "
        f"{n_copies} of {len(nearest)} samples flagged as near-copies of a training image; written to {out}"
    )
    tuned = "it"  # a fine-tuned GAN saw its sources' images too, followed back
    for source in report.get("memorization_sources", []):
        if "skipped" in source:
            seen = f"not checked ({source['skipped']})"
        elif "same_images_as" in source:
            seen = f"the same images as {source['same_images_as']}'s, checked above"
        else:
            seen = f"{source['n_near_copies']} of {len(nearest)} samples flagged as near-copies"
        print(f"  against the images of {source['run']}, which {tuned} was fine-tuned from: {seen}")
        tuned = Path(source["run"]).name
    return 0
