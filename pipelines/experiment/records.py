"""Cell records: the small, self-describing files a finished sweep cell leaves in its results folder.

A record is `<cell id>.json` (what the cell is, the fingerprint of what made it, its numbers) and
its side files named after it: a classifier's test predictions (`.csv.gz`: image id, patient, every
label and score), a GAN unit's small image grids (`.png`). The side files are written first and the
JSON, which holds their SHA-256, last and atomically: a record exists exactly when its cell
finished, and a side file that does not match its JSON is refused. Tables, plots and the report are
rebuilt from records alone, so records are what a sweep commits and what it grows, on any machine.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

import pandas as pd

from pipelines.errors import RareganError
from pipelines.runs import atomic_write_bytes, write_json

VERSION = 1
PREDICTIONS = ".csv.gz"


@cache
def code_version() -> str:
    """The code that makes a record: raregan's version and, in a git checkout, its commit (with
    "+changes" when tracked files differ from it). Shown in the report, never used for staleness."""
    try:
        version = metadata.version("raregan")
    except metadata.PackageNotFoundError:
        version = "unknown"
    repo = Path(__file__).resolve().parents[2]
    git = ["git", "-C", str(repo)]
    try:
        commit = subprocess.run(
            [*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10
        )
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return version
    if commit.returncode != 0:
        return version
    return f"{version}+g{commit.stdout.strip()}" + ("+changes" if changed.stdout.strip() else "")


def record_path(folder: Path, cell_id: str) -> Path:
    """Where the record of a cell lives: `<folder>/<cell id>.json`."""
    return Path(folder) / f"{cell_id}.json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_record(folder: Path, record: dict, files: dict[str, bytes] | None = None) -> Path:
    """Write the side files (suffix → bytes), then the JSON with their hashes; its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    listed = {}
    for suffix, data in (files or {}).items():
        name = f"{record['id']}{suffix}"
        atomic_write_bytes(folder / name, data)
        listed[suffix] = {"name": name, "sha256": _sha256(data)}
    path = record_path(folder, record["id"])
    record = {**record, "version": VERSION, "code": record.get("code") or code_version()}
    write_json(path, {**record, "files": listed})
    return path


def record_digest(record: dict) -> str:
    """A short hash of what a cell's training produced (its summary, evaluation, synthetic set and
    metrics, not the settings that describe it): another training of the same cell, even by the
    same settings, gives another digest."""
    made = {k: record.get(k) for k in ("summary", "eval", "synthetic", "metrics")}
    return _sha256(json.dumps(made, sort_keys=True, default=str).encode())[:16]


def read_record(folder: Path, cell_id: str) -> dict | None:
    """A cell's record with its side files checked against their hashes; None when there is none."""
    path = record_path(folder, cell_id)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RareganError(
            f"{path}: not a readable cell record ({err}); delete it and run that cell again"
        ) from None
    if not isinstance(record, dict) or record.get("id") != cell_id or "fingerprint" not in record:
        raise RareganError(
            f"{path}: not the record of cell {cell_id}; delete it and run that cell again"
        )
    for item in record.get("files", {}).values():
        side = path.parent / item["name"]
        if not side.is_file() or _sha256(side.read_bytes()) != item["sha256"]:
            raise RareganError(
                f"{side}: missing or not the file its record {path.name} was written with; "
                "copy a cell's record files together, or delete them and run that cell again"
            )
    return record


def side_file(folder: Path, record: dict, suffix: str) -> Path | None:
    """The path of a record's side file by suffix, None when the record has none."""
    item = record.get("files", {}).get(suffix)
    return Path(folder) / item["name"] if item else None


def remove_record(folder: Path, cell_id: str) -> None:
    """Delete a cell's record: the JSON first (the cell is then not done), then its side files."""
    path = record_path(folder, cell_id)
    if not path.is_file():
        return
    try:
        files = json.loads(path.read_text(encoding="utf-8")).get("files", {})
    except ValueError:
        files = {}
    path.unlink()
    for item in files.values():
        (Path(folder) / item["name"]).unlink(missing_ok=True)


def predictions_bytes(run: Path) -> bytes:
    """A classifier run's test predictions, less the machine's image paths, as gzip'd CSV bytes.

    The CSV text is the run's own (values as written), and the gzip header carries no time, so the
    same predictions always give the same bytes."""
    frame = pd.read_csv(Path(run) / "predictions.csv", dtype={"image_id": str, "patient": str})
    text = frame.drop(columns=["path"], errors="ignore").to_csv(index=False)
    return gzip.compress(text.encode("utf-8"), mtime=0)


def read_json(path: Path) -> dict:
    """A JSON file of a run (metrics, eval, summary, fingerprint) as a dict."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
