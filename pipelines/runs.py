"""Runs on disk: one folder per run, atomic writes, and a DONE marker written last."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from pipelines.errors import RareganError

if TYPE_CHECKING:
    import pytorch_lightning as pl

DONE = "DONE"


def ensure_writable(path: Path) -> Path:
    """Create `path` as a folder, or a user error naming it when that is impossible."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".probe-", delete=True)
        probe.close()
    except OSError as err:
        raise RareganError(
            f"cannot write to output folder {path}: {err.strerror or err}; choose another --out"
        ) from None
    return path


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old one or the whole new one, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_checkpoint_atomic(
    trainer: pl.Trainer, path: Path, save: Callable[[Path], None] | None = None
) -> None:
    """Save a checkpoint to a temp file, then rename; a failed save keeps the previous one.

    `save(tmp)` writes the file (default: the trainer's save_checkpoint). Every rank calls Lightning's
    save (it synchronizes the ranks); only rank 0 writes and renames.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    if trainer.is_global_zero:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        (save or trainer.save_checkpoint)(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        kept = (
            f"the previous checkpoint {path} is kept" if path.exists() else "no checkpoint was kept"
        )
        raise RareganError(
            f"could not write checkpoint {path}: {err.strerror or err}; {kept}"
        ) from None


def keep_stamped(last: Path, prefix: str, stamp: str, keep: int) -> Path:
    """Keep checkpoint `last` also as `<prefix><stamp>.ckpt` beside it (a hard link, or a copy
    where links fail) and delete those of the same prefix beyond the newest `keep` (stamps sort
    by age); the stamped path."""
    stamped = last.with_name(f"{prefix}{stamp}.ckpt")
    stamped.unlink(missing_ok=True)
    try:
        os.link(last, stamped)
    except OSError:
        shutil.copyfile(last, stamped)
    for old in sorted(last.parent.glob(f"{prefix}*.ckpt"))[:-keep]:
        old.unlink(missing_ok=True)
    return stamped


@contextlib.contextmanager
def file_lock(path: Path, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock (flock) on the file `path` for the block, then remove the file.

    Yields False, holding nothing, when another process has it and `wait` is off; True where the
    file system has no locks. A waiter whose file was removed by the holder locks the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fh = open(path, "a")  # noqa: SIM115 (closed below, after the block)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            fh.close()
            yield False
            return
        except OSError as err:
            fh.close()
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            yield True
            return
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fh.fileno()), os.stat(path)):
                break
        fh.close()  # the holder before us removed this file: lock the one now at `path`
    try:
        yield True
    finally:
        path.unlink(missing_ok=True)  # removed while still held, so no one locks a stale file
        fh.close()


def atomic_write_text(path: Path, text: str) -> None:
    """Atomic write of a text file (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj) -> None:
    """Atomic write of pretty JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_yaml(path: Path, obj) -> None:
    """Atomic write of YAML (a run's resolved config)."""
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def is_done(path: Path) -> bool:
    """True when the run folder holds its DONE marker."""
    return (Path(path) / DONE).is_file()


def finished_summary(run: Path, what: str) -> dict:
    """The summary of a finished run of a generator (`what`: "GAN", "diffusion"); a user error
    naming the run when it does not exist or is not finished."""
    run = Path(run)
    if not run.exists():
        raise RareganError(f"{what} run folder {run} does not exist; check the --run path")
    if not is_done(run):
        raise RareganError(
            f"{what} run {run} is not finished (no DONE marker); train or resume it first"
        )
    return json.loads((run / "summary.json").read_text())


def mark_done(path: Path, summary: dict | None = None) -> None:
    """Write the DONE marker (optionally with a summary), last of all."""
    write_json(Path(path) / DONE, summary or {})


OWNER = ".raregan-output"
# outputs written before the OWNER file existed: DONE beside the command's own table
LEGACY_SIGNATURE = {
    "filters": "expanded.csv",
    "synth": "synthetic.csv",
    "gan-eval": "eval.json",
    "evaluate": "predictions.csv",
}


def check_replaceable(out: Path, kind: str) -> None:
    """A user error unless `out` is absent, an empty folder, or a previous output of `raregan kind`."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if out.is_dir() and not out.is_symlink():
        if not any(out.iterdir()):
            return
        marker = out / OWNER
        if (
            marker.is_file()
            and marker.read_text(encoding="utf-8", errors="replace").strip() == kind
        ):
            return
        legacy = LEGACY_SIGNATURE.get(kind)
        if not marker.exists() and legacy and is_done(out) and (out / legacy).is_file():
            return
    what = "folder" if out.is_dir() else "file"
    raise RareganError(
        f"--out {out} is an existing {what} that raregan {kind} did not write; refusing to replace it "
        "(choose a new --out, or remove it yourself)"
    )


@contextlib.contextmanager
def staged_dir(out: Path, kind: str) -> Iterator[Path]:
    """Yield a fresh temp folder beside `out`; on success it replaces `out`, on failure it vanishes.

    `out` is replaced only when it is absent, empty, or a previous output of the same command
    (`kind`, recorded in its OWNER file): a user's own file or folder is never deleted.
    """
    out = Path(out)
    check_replaceable(out, kind)
    parent = ensure_writable(out.parent if out.parent != Path("") else Path("."))
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.tmp-"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; outputs follow the user's umask
        (tmp / OWNER).write_text(kind + "\n", encoding="utf-8")
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        check_replaceable(out, kind)  # it may have appeared while we worked
        old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def run_path(root: Path, dataset: str, stage: str, name: str) -> Path:
    """runs/<dataset>/<stage>/<name>/ (the layout the design card fixes)."""
    return Path(root) / dataset / stage / name


def loggers(run: Path) -> list:
    """A CSV logger writing a new part per (re)start, so a resume never erases history; TensorBoard if installed."""
    import pytorch_lightning as pl  # imported here: Lightning is slow to import

    part = f"part{len(list((run / 'logs').glob('part*')))}"
    out = [pl.loggers.CSVLogger(run, name="logs", version=part)]
    try:
        import tensorboard  # noqa: F401

        out.append(pl.loggers.TensorBoardLogger(run, name="tensorboard", version=part))
    except ImportError:
        pass
    return out


def merged_logs(run: Path):
    """All log parts in order; steps replayed after a resume replace those logged before the crash."""
    import pandas as pd

    parts = [
        pd.read_csv(p)
        for p in sorted(
            (run / "logs").glob("part*/metrics.csv"), key=lambda p: int(p.parent.name[4:])
        )
    ]
    parts = [p for p in parts if len(p)]
    merged = []
    for k, part in enumerate(parts):
        nxt = parts[k + 1]["step"].min() if k + 1 < len(parts) else float("inf")
        merged.append(part[part["step"] < nxt])
    return pd.concat(merged, ignore_index=True) if merged else pd.DataFrame()


def source_runs(summary: dict) -> list[Path]:
    """The GAN runs a run was fine-tuned from (gan.init_from), nearest first, followed back."""
    out: list[Path] = []
    while (source := summary.get("init_from")) and Path(source) not in out:
        out.append(Path(source))
        path = Path(source) / "summary.json"
        summary = json.loads(path.read_text()) if path.is_file() else {}
    return out


def data_folder(run: Path) -> str:
    """The name of the data folder a GAN run was trained on, from its config ("" if unknown)."""
    path = Path(run) / "config.yaml"
    saved = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    return Path(str(saved.get("run", {}).get("data", ""))).name
