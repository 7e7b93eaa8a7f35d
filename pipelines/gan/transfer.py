"""Transfer (gan.init_from): the finished GAN run a GAN starts from, checked for what it learned
from (never this run's val/test images, nor images outside its fraction), and its weights loaded."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pipelines.errors import RareganError
from pipelines.fingerprints import file_sha256, read_fingerprint
from pipelines.gan.outputs import CKPT, HELDOUT, POSITIVES, read_checkpoint
from pipelines.runs import data_folder, is_done, source_runs, staged_dir, write_json

if TYPE_CHECKING:
    from pggan import PGGAN
    from pipelines.data.prepare import Prepared

# With gan.ema_continue, a fine-tune that ends with more of the source in its average than this
# gets a note: its samples then lean toward the source's class (measured in
# docs/results/gan-finetune-ema-kermany-viral: 61 % left after 8 kimg, as bacterial as viral; 8 %
# after 40 kimg, viral).
SOURCE_SHARE_NOTE = 0.25


def transfer_source(cfg: dict) -> Path | None:
    """The finished GAN run gan.init_from names (None when unset); a user error unless it is one."""
    source = cfg["gan"]["init_from"]
    if source is None:
        return None
    run = Path(source)
    if not (run / CKPT).is_file() or not is_done(run):
        raise RareganError(
            f"gan.init_from: {run} is not a finished GAN run (it needs DONE and {CKPT}); "
            "train the GAN to start from first (raregan gan --class ABUNDANT_CLASS)"
        )
    settings = (read_fingerprint(run) or {}).get("settings", {})  # same weights, other function
    theirs, mine = settings.get("gan.resample", "nearest"), cfg["gan"]["resample"]
    if theirs != mine:
        raise RareganError(
            f"gan.init_from: {run} is a GAN with gan.resample {theirs}, this one {mine}; give "
            "one trained with the same gan.resample"
        )
    return run


def check_source_images(source: Path, prepared: Prepared, fraction: float, seed: int) -> None:
    """Refuse (one line) a GAN to start from whose training images, or those of a GAN it started
    from in turn, this run may not learn from: images of this data's validation or test split (the
    scores would be of images the GAN saw), training images outside this fraction (the GAN would
    bring the classifier images its fraction leaves out), or images of this data that the run
    leaves out (--rarefy). An image is this data's by its resolved path, or, for a source trained on
    a copy of the data by the same folder name (moved since), by its image id. Images of another
    data set are the user's choice of pretraining."""
    frame = prepared.records.frame
    ids = frame["image_id"].astype(str)
    by_path = {os.path.realpath(p): i for p, i in zip(frame["path"], ids, strict=True)}
    split_of = dict(zip(ids, frame["split"], strict=True))
    allowed = set(prepared.train_fraction(fraction, seed)["image_id"].astype(str))
    root = Path(prepared.records.root)
    inside = tuple(os.path.join(r, "") for r in {os.path.realpath(root), os.path.abspath(root)})
    for run in source_runs({"init_from": str(source)}):
        if not (run / POSITIVES).is_file():
            raise RareganError(
                f"gan.init_from: {run} does not list the images it learned from ({POSITIVES}), so "
                "it cannot be checked against this run's test split; train it again with raregan gan"
            )
        same_name = data_folder(run) == root.name
        held, outside, left_out = [], [], []
        for path, image_id in pd.read_csv(run / POSITIVES)[["path", "image_id"]].itertuples(
            index=False
        ):
            iid = by_path.get(os.path.realpath(path)) or (str(image_id) if same_name else None)
            split = split_of.get(iid)
            if split in ("val", "test"):
                held.append(path)
            elif split == "train" and iid not in allowed:
                outside.append(path)
            elif split is None and (same_name or os.path.abspath(path).startswith(inside)):
                left_out.append(path)
        if held:
            why = (
                f"{len(held)} image(s) of this run's validation/test split (e.g. {held[0]}), so "
                "it would be scored on images it saw; train it with this run's split: the same "
                "data, --seed and --rarefy, and --resplit for both where val is carved per class"
            )
        elif outside:
            why = (
                f"{len(outside)} training image(s) outside the {fraction:g} % fraction (e.g. "
                f"{outside[0]}), which a run at that fraction may not learn from; train it with "
                f"--fraction {fraction:g} or smaller"
            )
        elif left_out:
            why = (
                f"{len(left_out)} image(s) this run's data leaves out (e.g. {left_out[0]}; "
                "--rarefy drops them); train it with the same --rarefy"
            )
        else:
            continue
        raise RareganError(f"gan.init_from: {run} learned from {why}")


def start_from(module: PGGAN, source: Path) -> None:
    """Load the weights of GAN run `source` into `module` (its checkpoint read once, a user error
    if damaged or of another architecture) and move it to its final phase; with ema_continue, a
    note when the fine-tune is too short for its average to leave the source (SOURCE_SHARE_NOTE)."""
    state = read_checkpoint(source / CKPT)
    try:
        module.start_from(state["state_dict"])
    except ValueError as err:
        raise RareganError(
            f"gan.init_from: {source} is a GAN of another architecture ({err}); give one trained "
            "with the same gan.resolution, channels, latent_dim and number of classes"
        ) from None
    share = module.ema_source_share()
    if share is not None and share > SOURCE_SHARE_NOTE:
        hp, schedule = module.hparams, module.schedule
        kimg = schedule.phase_images(schedule.n_phases - 1) / 1000
        print(
            f"raregan: note: gan.ema_continue: after this {kimg:g}-kimg fine-tune the "
            f"source's generator still makes up {share:.0%} of the averaged one (ema_beta "
            f"{hp.ema_beta:g} per step), so its samples lean toward the source's class; a longer "
            f"gan.final_kimg lets the average follow the fine-tune",
            file=sys.stderr,
        )


# A transfer source committed beside the results it serves must stay small (a Git repository's
# files): its weights without optimizer state are about 14 MB for the wide 64 px architecture.
EXPORT_MAX_BYTES = 25 * 1024 * 1024
# what a fine-tune, its checks and a gan-eval of the source read from a source run
EXPORTED = ("fingerprint.json", "config.yaml", "summary.json", POSITIVES, HELDOUT,
            "generator_ema.pt", "samples/final.png", "DONE")  # fmt: skip


def export_source(run: Path, out: Path, max_bytes: int = EXPORT_MAX_BYTES) -> Path:
    """A finished GAN run as a transfer source that outlives its machine: its G, D and G_ema
    weights (no optimizer state), what it learned from (positives.csv) and what made it
    (fingerprint, config), written to `out` (an output of raregan's own, replaced only when it is
    one) and at most `max_bytes`. A fine-tune from `out` is the fine-tune from `run`: the same
    weights and the same fingerprint id, so records name it alike."""
    import torch

    run, out = Path(run), Path(out)
    if not (run / CKPT).is_file() or not is_done(run):
        raise RareganError(f"{run} is not a finished GAN run (it needs DONE and {CKPT})")
    state = read_checkpoint(run / CKPT)
    keep = {k: state[k] for k in ("state_dict", "pggan_state", "hyper_parameters", "hparams_name")}
    keep["pytorch-lightning_version"] = state.get("pytorch-lightning_version")

    def weights(tmp: Path) -> Path:
        (tmp / CKPT).parent.mkdir(parents=True)
        torch.save(keep, tmp / CKPT)
        return tmp / CKPT

    return write_exported(run, out, weights, max_bytes)


def write_exported(run: Path, out: Path, weights, max_bytes: int = EXPORT_MAX_BYTES) -> Path:
    """Write run `run`'s EXPORTED files and what `weights(tmp)` writes (the file it returns: the
    weights a fine-tune loads) to `out` as a transfer source, with source.json (the run's
    fingerprint id, the weights' SHA-256, the size); refused over `max_bytes`."""
    with staged_dir(out, "gan-source") as tmp:
        loaded = weights(tmp)
        for name in EXPORTED:
            if (run / name).is_file():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run / name, tmp / name)
        size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        if size > max_bytes:
            raise RareganError(
                f"the exported source would be {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} "
                "MiB a committed source may take; keep its run folder instead"
            )
        write_json(tmp / "source.json", {
            "fingerprint": (read_fingerprint(run) or {}).get("id"),
            "exported_from": str(run),
            "checkpoint_sha256": file_sha256(loaded),
            "bytes": size,
        })  # fmt: skip
    return out
