"""`raregan gan`: train a progressive-growing GAN on one class's training positives (resumable)."""

from __future__ import annotations

import argparse
import math
import os

from pipelines.commands.common import (
    add_data_arguments,
    folder_arg,
    moved_flag,
    non_negative_int,
    positive_float,
    print_data_notes,
    run_options,
)
from pipelines.commands.settings import resolve_config
from pipelines.errors import RareganError
from pipelines.runs import run_path

# the command's own flags that set a config key: flag (or what run() derives from one) → (section, key)
CONFIG_FLAGS = {
    "kimg": ("gan", "kimg_per_phase"),
    "init_from": ("gan", "init_from"),
    "freeze_d": ("gan", "freeze_d"),
    "train_seed": ("gan", "seed"),
    "conditional": ("gan", "conditional"),
    "augment_cfg": ("gan", "augment"),
    "generator": ("generator", "kind"),
}

# the same flags for the diffusion kind (pipelines/generators/diffusion/)
DIFFUSION_FLAGS = {
    "kimg": ("diffusion", "kimg"),
    "init_from": ("diffusion", "init_from"),
    "train_seed": ("diffusion", "seed"),
    "generator": ("generator", "kind"),
}
GAN_ONLY = ("freeze_d", "augment", "augment_p", "unconditional")

NAME = "gan"
HELP = (
    "train a generator (the PGGAN, or --generator diffusion) on a class's train positives (after "
    "the filter bank); checkpoints, samples, resume"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Data options plus class, fraction, config, output and devices."""
    add_data_arguments(parser, "fraction", "config", "kimg", run=True)
    parser.add_argument(
        "--class",
        dest="classes",
        nargs="+",
        required=True,
        metavar="CLASS",
        help="the rare class to learn; several classes train one label-conditional GAN "
        "(one GAN of them pooled with --unconditional) or diffusion model (pooled with --set "
        "diffusion.conditional=false)",
    )
    parser.add_argument(
        "--generator",
        choices=["pggan", "diffusion"],
        help="the kind of generator (generator.kind, default pggan); --kimg, --train-seed and "
        "--init-from set the diffusion section's kimg, seed and init_from for diffusion",
    )
    parser.add_argument(
        "--out",
        type=folder_arg,
        help="run folder (default runs/<dataset>/gan/<class>-f<fraction>-split<split seed>)",
    )
    parser.add_argument(
        "--train-seed",
        type=non_negative_int,
        help="seed of the GAN's initialization, latents and data order (gan.seed, default 0)",
    )
    parser.add_argument(
        "--export-source",
        type=folder_arg,
        metavar="DIR",
        help="once the run is done, write it to DIR as a transfer source to commit (its weights "
        "without optimizer state, ≤ 25 MB, and what it learned from), for --init-from elsewhere",
    )
    parser.add_argument(
        "--no-filters",
        action="store_true",
        help="train on the positives alone, without the filter bank (the gan_nofilter arm's GAN)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=positive_float,
        metavar="KIMG",
        help="thousands of images between checkpoints (default: gan.checkpoint_every_kimg, "
        "at most a fifth of the schedule, so every run writes several)",
    )
    parser.add_argument(
        "--unconditional",
        action="store_true",
        help="with several classes: one GAN of their images pooled, without labels (gan.conditional "
        "false), e.g. a source for --init-from; it cannot draw one class",
    )
    parser.add_argument(
        "--init-from",
        metavar="RUN",
        help="fine-tune: start from this finished GAN run (same architecture, trained on an "
        "abundant class) and train only the final phase, gan.final_kimg (gan.init_from)",
    )
    # research knobs, now config keys (hidden; they still work, with a note, for one release)
    moved_flag(parser, "--freeze-d", "gan.freeze_d", type=int, metavar="N")
    moved_flag(
        parser,
        "--augment",
        "gan.augment.policy",
        metavar="POLICY",
        also=f"; alone it also sets gan.augment.p={DEFAULT_P}",
    )
    moved_flag(
        parser,
        "--augment-p",
        "gan.augment.p",
        type=augment_p_arg,
        metavar="P|adaptive",
        also="; adaptive is --set gan.augment.adaptive=true",
    )


# p of --augment alone. Not adaptive: with this WGAN-GP critic the overfitting signal stayed under
# ADA's target on 52 Kermany viral images, and an adaptive p stayed under 0.16 (README).
DEFAULT_P = 0.5


def augment_p_arg(text: str) -> float | str:
    """An argparse type: "adaptive" or a probability in [0, 1]."""
    if text == "adaptive":
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1] or adaptive, not {text!r}")
    return value


def augment_overrides(args: argparse.Namespace, cfg: dict) -> dict:
    """The gan.augment keys --augment and --augment-p set (--augment alone: p = DEFAULT_P when the
    config leaves p at 0)."""
    over: dict = {}
    if args.augment is not None:
        if args.augment.strip() == "none":  # off: no policy, and no p left without one
            over.update(policy="", p=0.0, adaptive=False)
        else:
            over["policy"] = args.augment
    if args.augment_p == "adaptive":
        over["adaptive"] = True
    elif args.augment_p is not None:
        over.update(p=args.augment_p, adaptive=False)
    aug = cfg["gan"]["augment"]  # a p without a policy: refused when the config is resolved
    if over.get("policy") and args.augment_p is None and aug["p"] == 0 and not aug["adaptive"]:
        over["p"] = DEFAULT_P
    return over


def gan_run_name(classes: list[str], fraction: float, seed: int, filters: bool = True) -> str:
    """Folder name of a GAN run: class(es), fraction, the data split seed (which fixes the fraction)
    and, without the filter bank, "-nofilter"."""
    from pipelines.gan.run import class_tag

    return f"{class_tag(classes)}-f{fraction:g}-split{seed}" + ("" if filters else "-nofilter")


def run(args: argparse.Namespace) -> int:
    """Prepare the data, then train or resume the GAN; print where its outputs are."""
    from pipelines.data.prepare import prepare  # torch and Lightning load only when a run starts
    from pipelines.gan.transfer import transfer_source
    from pipelines.generators import config_kind, train

    args.conditional = False if args.unconditional else None
    if args.generator == "diffusion":
        return run_diffusion(args)
    cfg, spec = resolve_config(args, CONFIG_FLAGS, size_from=("gan", "resolution"))
    if config_kind(cfg) == "diffusion":  # the config names the kind: its own flags and sizes
        return run_diffusion(args)
    args.augment_cfg = augment_overrides(args, cfg) or None
    if args.augment_cfg:  # resolved again with the policy in place: validates it
        cfg, spec = resolve_config(args, CONFIG_FLAGS, size_from=("gan", "resolution"))
    transfer_source(cfg)  # a source that is not a finished GAN run: refused before any work
    if args.no_filters:  # (an empty list is no override: config_overrides skips it)
        cfg["filters"]["names"] = []
    prepared = prepare(spec, progress=not args.no_progress)
    print_data_notes(prepared)
    out = args.out or run_path(
        args.runs,
        prepared.dataset_name,
        "gan",
        gan_run_name(args.classes, args.fraction, spec.seed, not args.no_filters),
    )
    strategy = "ddp_find_unused_parameters_true" if args.strategy == "ddp" else args.strategy
    opts = run_options(args, strategy)
    train(prepared, args.classes, args.fraction, cfg, out, opts, args.checkpoint_every)
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) != 0:
        return 0  # DDP worker: rank 0 reports
    print(
        f"GAN for {' + '.join(args.classes)} done: {out} (samples/final.png, loss_curve.png, {out / 'generator_ema.pt'})"
    )
    if args.export_source:
        from pipelines.gan.transfer import export_source

        export_source(out, args.export_source)
        print(f"transfer source written to {args.export_source} (--init-from {args.export_source})")
    return 0


def run_diffusion(args: argparse.Namespace) -> int:
    """`raregan gan --generator diffusion`: train or resume the diffusion model of the class."""
    from pipelines.data.prepare import prepare
    from pipelines.generators import train

    given = [f"--{k.replace('_', '-')}" for k in GAN_ONLY if getattr(args, k, None)]
    if given:
        raise RareganError(
            f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for the PGGAN; the diffusion "
            "model has none of it (drop it, or --generator pggan)"
        )
    cfg, spec = resolve_config(args, DIFFUSION_FLAGS, size_from=("diffusion", "resolution"))
    if args.no_filters:
        cfg["filters"]["names"] = []
    prepared = prepare(spec, progress=not args.no_progress)
    print_data_notes(prepared)
    name = gan_run_name(args.classes, args.fraction, spec.seed, not args.no_filters)
    out = args.out or run_path(args.runs, prepared.dataset_name, "gan", f"{name}-diffusion")
    train(prepared, args.classes, args.fraction, cfg, out, run_options(args), args.checkpoint_every)
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) != 0:
        return 0
    print(f"diffusion model for {' + '.join(args.classes)} done: {out} (samples/final.png)")
    if args.export_source:
        from pipelines.generators.diffusion import export_source

        export_source(out, args.export_source)
        print(f"transfer source written to {args.export_source} (--init-from {args.export_source})")
    return 0
