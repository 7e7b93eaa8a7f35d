"""Runs on disk: one folder per run, atomic writes, and a DONE marker written last."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml

from pipelines.errors import RareganError

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
