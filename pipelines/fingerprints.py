"""What made a run, and whether it may be reused: fingerprints (settings flattened to dotted keys
and a hash of them), the refusal of runs made by other settings, and `--redo`, which removes only
what raregan wrote in its own run folders."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import RareganError
from pipelines.runs import DONE, OWNER, is_done, write_json, write_yaml

FINGERPRINT = "fingerprint.json"


class StaleRunError(RareganError):
    """A run folder made by other settings than the ones asked for now."""


def _flat(obj, prefix: str = "") -> dict:
    """Nested dicts flattened to dotted keys; lists and scalars kept as values."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: obj}


def fingerprint(**parts) -> dict:
    """What made a run: its settings flattened to dotted keys, and an id (hash) of all of them."""
    flat = json.loads(json.dumps(_flat(parts), sort_keys=True, default=str))
    digest = hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:16]
    return {"id": digest, "settings": flat}


# What raregan writes at the top of a run folder (fnmatch patterns). `--redo` removes these and
# nothing else: a user's own file placed in a run folder survives it (tests/test_user_folders.py
# checks that a finished GAN and classifier run hold nothing outside this list).
RUN_ENTRIES = (
    FINGERPRINT, "config.yaml", DONE, "ERROR", OWNER, "summary.json", "metrics.json",
    "checkpoints", "logs", "tensorboard", "samples", "eval", "eval-*", "synth-*", "external-*",
    "fold[0-9]*", "generator_ema.pt", "heldout.csv", "positives.csv", "losses.csv",
    "loss_curve.png", "predictions.csv", "train_val_ids.csv", "roc_curves.png", "calibration.png",
    "confusion.png", "label_distribution.png", "test_predictions.png", "gradcam_*.png",
    "cv_folds.csv", "cv_summary.json", "qwk_table.csv", "qwk_table.md", "images", "synthetic.csv",
    "source.json", "ratio-*",
    ".*.tmp", ".*.tmp-*", ".*.old-*", ".probe-*",
)  # fmt: skip


def raregan_entries(run: Path) -> tuple[list[Path], list[Path]]:
    """The entries at the top of `run` that raregan writes, and the others (a user's), sorted."""
    mine, others = [], []
    for entry in sorted(Path(run).iterdir()):
        owned = any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in RUN_ENTRIES)
        (mine if owned else others).append(entry)
    return mine, others


def clear_run(run: Path) -> list[Path]:
    """Remove what raregan wrote in its run folder `run` (the fingerprint last); the entries kept.

    Only a folder holding raregan's fingerprint is cleared (a user error otherwise)."""
    run = Path(run)
    if not (run / FINGERPRINT).is_file():
        raise StaleRunError(f"{run} holds no {FINGERPRINT}: raregan did not make it")
    mine, others = raregan_entries(run)
    for entry in sorted(mine, key=lambda e: e.name == FINGERPRINT):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)
    if not others:
        with contextlib.suppress(OSError):
            run.rmdir()
    return others


def check_fingerprint(run: Path, fp: dict, redo: bool = False) -> bool:
    """True when `run` may be reused or resumed under `fp`; a StaleRunError naming the keys that
    differ otherwise. With `redo`, what raregan wrote in a run made by other settings is removed
    instead (False). A non-empty folder raregan did not make (no fingerprint) is refused, with or
    without `redo`: raregan never deletes it (and a sweep stops there rather than write into it)."""
    run = Path(run)
    path = run / FINGERPRINT
    if not run.exists() or not any(run.iterdir()):
        return True
    if not path.is_file():
        raise StaleRunError(
            f"{run} is a folder raregan did not make (no {FINGERPRINT}); raregan never deletes "
            "it, with or without --redo: choose another --out / --name"
        )
    old = json.loads(path.read_text())
    if old["id"] == fp["id"] or not differing_keys(old["settings"], fp["settings"]):
        return True  # the same settings (a run made before some keys were recorded included)
    if redo:
        kept = clear_run(run)
        if kept:
            names = ", ".join(e.name for e in kept[:4]) + (" …" if len(kept) > 4 else "")
            print(f"--redo: kept {len(kept)} entries raregan did not write in {run} ({names})")
        return False
    refuse_stale(run, old["settings"], fp["settings"])
    return False


# Keys fingerprints gained after runs and committed records were made: compared only when the
# earlier run recorded them (its settings were what they were; it just did not say). And keys that
# left the fingerprints because they cannot change results: never compared.
ADDED_LATER = ("pixels", "classes")
DROPPED = ("classify.num_workers",)


def differing_keys(before: dict, now: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """The settings that differ between an earlier run's fingerprint and now's (sorted), less the
    keys starting with `ignore`, the keys added later that the earlier run did not record, and the
    keys that left the fingerprints."""
    return sorted(
        k
        for k in set(before) | set(now)
        if before.get(k, "—") != now.get(k, "—")
        and not k.startswith(ignore + DROPPED)
        and not (k in ADDED_LATER and k not in before)
    )


def refuse_stale(
    run: Path, before: dict, now: dict, recorded: bool = True, ignore: tuple[str, ...] = ()
) -> None:
    """A StaleRunError naming the settings that differ (`differing_keys`)."""
    keys = differing_keys(before, now, ignore)
    if recorded and not keys:
        return
    shown = ", ".join(f"{k}: {before.get(k, '—')} → {now.get(k, '—')}" for k in keys[:4])
    more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
    what = f"other settings ({shown}{more})" if recorded else "an older raregan (no fingerprint)"
    raise StaleRunError(
        f"{run} was made by {what}; choose another --name / --out, or pass --redo to replace it"
    )


def write_fingerprint(run: Path, fp: dict) -> None:
    """Record what made the run (first of all its files)."""
    write_json(Path(run) / FINGERPRINT, fp)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def frame_id(frame, columns: list[str] | None = None) -> str:
    """A short content hash of (some columns of) a table, row order included."""
    import pandas as pd

    part = frame if columns is None else frame[columns]
    return hashlib.sha256(
        pd.util.hash_pandas_object(part, index=False).values.tobytes()
    ).hexdigest()[:16]


def read_fingerprint(folder: Path) -> dict | None:
    """The fingerprint a run or output folder recorded (id and settings); None before fingerprints."""
    path = Path(folder) / FINGERPRINT
    return json.loads(path.read_text()) if path.is_file() else None


def run_id(folder: Path) -> str:
    """The fingerprint id of a run or output folder (its resolved path for one made before fingerprints)."""
    fp = read_fingerprint(folder)
    return fp["id"] if fp else f"path:{Path(folder).resolve()}"


@dataclass
class RunOptions:
    """How a training run is carried out, not what it computes (so not in its fingerprint)."""

    resume: bool = False  # continue an interrupted run from its last checkpoint
    redo: bool = False  # replace a run made by other settings instead of refusing it
    devices: int | str = 1
    strategy: str = "auto"
    accelerator: str = "auto"
    progress: bool = True


def reuse_or_start(run: Path, fp: dict, ckpt: Path, opts: RunOptions, kind: str) -> bool | None:
    """None when `run` is finished under fingerprint `fp` (reuse it); else whether to resume it
    from `ckpt`. Refuses a run made by other settings (StaleRunError, or replaced with `redo`), an
    unfinished run without `resume`, and `resume` without a checkpoint."""
    resume = check_fingerprint(run, fp, opts.redo) and opts.resume  # False: it was just deleted
    if is_done(run):
        return None
    if ckpt.exists() and not resume:
        raise RareganError(
            f"{run} holds an unfinished {kind} run; pass --resume to continue it, --redo to start "
            "over, or choose another --out"
        )
    if resume and not ckpt.exists():
        raise RareganError(f"cannot resume: no checkpoint at {ckpt}; start without --resume")
    return resume


def open_run(run: Path, fp: dict, config: dict) -> None:
    """Create the run folder with what made it, first of all: its fingerprint and resolved config."""
    Path(run).mkdir(parents=True, exist_ok=True)
    write_fingerprint(run, fp)
    write_yaml(Path(run) / "config.yaml", config)
