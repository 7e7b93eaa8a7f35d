"""Decode-once image store: every image as uint8 1xRxR in a memory-mapped array, keyed by its inputs.

Images are decoded under the policy of `decode.py`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import socket
import sys
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from pipelines.data.decode import DECODE_ERRORS, RESIZE_POLICIES, decode_image
from pipelines.errors import RareganError
from pipelines.runs import atomic_write_text, file_lock

FORMAT_VERSION = 1  # bump when decode.py's policy changes: it is part of the cache key
_TMP_MARK = ".tmp-"
SPACE_MARGIN = 16 * 2**20  # bytes kept free beyond the store itself (metadata, other writers)
# temp files name their machine: on a shared file system only this machine's dead builds are cleaned
_HOST = hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()


def _decode_chunk(
    tmp: str, shape: tuple, start: int, paths: list[str], resize: str
) -> tuple | None:
    """Decode `paths` into rows start.. of the memmap at `tmp`; (path, reason) on the first failure."""
    arr = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=shape)
    try:
        for k, p in enumerate(paths):
            try:
                if os.path.getsize(p) == 0:
                    return p, "the file is empty (0 bytes)"
                arr[start + k, 0] = decode_image(p, shape[-1], resize)
            except FileNotFoundError:
                return p, "the file is missing"
            except DECODE_ERRORS as e:
                return p, f"it cannot be decoded as an image ({type(e).__name__}: {e})"
        arr.flush()
    finally:
        del arr
    return None


class Store:
    """A built store: `array` is the (N, 1, R, R) uint8 memmap, row i holds `paths[i]`."""

    def __init__(self, data_path: Path, meta: dict, built: bool = False) -> None:
        self.data_path = Path(data_path)
        self.key: str = meta["key"]
        self.size: int = int(meta["size"])
        self.resize: str = meta["resize"]
        self.paths: list[str] = list(meta["paths"])
        self.created: str = meta["created"]
        self.built = built  # True when this call decoded the images (False: reopened from cache)
        self.content_key: str = ""  # set by build_store: the key of the files' content (store_key)
        self._array: np.memmap | None = None
        self._view: np.ndarray | None = None  # plain-ndarray view of the memmap: faster indexing
        self._index: dict[str, int] | None = None
        self._pixel_key: str | None = meta.get("pixels")  # kept by an earlier process

    @property
    def pixel_key(self) -> str:
        """A hash of every decoded pixel, in row order: what the images hold at this size and
        resize policy, wherever the files lie. It changes when a file's content changes even at the
        same byte size (which `content_key` cannot see). Computed once per store (~1 s per GB) and
        kept in the store's JSON (rewritten whole: a built store's pixels never change; a rebuild
        writes a JSON without it), so a sweep's many processes read it instead of hashing a full
        CheXpert store each."""
        if self._pixel_key is None:
            digest = hashlib.blake2b(digest_size=12)
            flat = self.view.reshape(len(self), -1)
            for start in range(0, len(self), 4096):
                digest.update(np.ascontiguousarray(flat[start : start + 4096]).data)
            self._pixel_key = digest.hexdigest()
            meta_path = self.data_path.with_suffix(".json")
            with contextlib.suppress(OSError, ValueError):  # a read-only cache: hashed next time
                meta = json.loads(meta_path.read_text())
                if meta.get("key") == self.key:
                    atomic_write_text(meta_path, json.dumps({**meta, "pixels": self._pixel_key}))
        return self._pixel_key

    def _open(self) -> None:
        shape = (len(self.paths), 1, self.size, self.size)
        self._array = np.memmap(self.data_path, dtype=np.uint8, mode="r", shape=shape)
        self._view = self._array.view(np.ndarray)

    @property
    def array(self) -> np.memmap:
        """The (N, 1, R, R) uint8 array, opened read-only on first use (also in each worker)."""
        if self._array is None:
            self._open()
        return self._array

    @property
    def view(self) -> np.ndarray:
        """The same read-only data as `array`, as a plain ndarray (cheaper to index)."""
        if self._view is None:
            self._open()
        return self._view

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.view[i].copy()

    def index_of(self, path: str | Path) -> int:
        """Row of `path` (compared as an absolute path); KeyError when it is not in the store."""
        if self._index is None:
            self._index = {}
            for i, p in enumerate(self.paths):
                self._index.setdefault(p, i)
        return self._index[os.path.abspath(path)]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None, "_view": None, "_index": None}

    def __repr__(self) -> str:
        return f"Store(n={len(self)}, size={self.size}, resize={self.resize!r}, key={self.key!r})"


def store_key(paths: Sequence[str], size: int, resize: str) -> tuple[str, list[str], str]:
    """Cache key of (file list in order, each file's size and mtime, R, policy), the abs paths, and
    a content key that stays the same for a copy of the files elsewhere (the files' byte sizes in
    order, R, policy): the cache key finds a store on this machine, the content key goes into run
    fingerprints, so that a run or a sweep's cell records stay current on another machine."""
    abspaths = [os.path.abspath(p) for p in paths]
    files = []
    for p in abspaths:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise RareganError(
                f"image file {p} does not exist; restore it or remove its row"
            ) from None
        files.append((p, st.st_size, st.st_mtime_ns))
    head = {"v": FORMAT_VERSION, "size": size, "resize": resize}
    blob = json.dumps({**head, "files": files})
    content = json.dumps({**head, "bytes": [f[1] for f in files]})
    return _digest(blob), abspaths, _digest(content)


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _open_cached(cache_dir: Path, key: str, n: int, size: int) -> Store | None:
    """The committed store for `key`, or None when it is absent or incomplete."""
    meta_path, data_path = cache_dir / f"{key}.json", cache_dir / f"{key}.u8"
    try:
        meta = json.loads(meta_path.read_text())
        ok = meta.get("key") == key and meta.get("n") == n and meta.get("size") == size
        if ok and data_path.stat().st_size == n * size * size:
            return Store(data_path, meta)
    except (OSError, ValueError, KeyError):
        pass
    return None


def check_free_space(folder: Path, needed: int) -> None:
    """Refuse (one line) when `folder`'s disk has less than `needed` bytes plus a margin free."""
    free = shutil.disk_usage(folder).free
    if free < needed + SPACE_MARGIN:
        raise RareganError(
            f"not enough disk space in {folder}: the image store needs {needed} bytes "
            f"(+{SPACE_MARGIN} margin), {free} free; free space or give another --cache"
        )


def _clean_stale(cache_dir: Path, key: str) -> None:
    """Remove temp files of `key` left by builds on this machine whose process is gone."""
    for tmp in cache_dir.glob(f"{key}.*{_TMP_MARK}*"):
        pid, *rest = tmp.name.rsplit(_TMP_MARK, 1)[1].split(".")
        host = rest[1] if len(rest) > 1 else _HOST  # older temp names carry no machine
        if host == _HOST and pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _unwritable(cache_dir: Path, err: OSError) -> RareganError:
    """The one-line error for a cache folder that cannot be written."""
    return RareganError(
        f"cannot write the image store in {cache_dir} ({err.strerror or err}); "
        "give a writable cache directory"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pool(workers: int) -> ProcessPoolExecutor:
    """Process pool; fork where available (workers only run PIL and numpy, never torch)."""
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx)


def _decode_all(
    tmp: Path, shape: tuple, paths: list[str], resize: str, workers: int, progress: bool
):
    """Fill the memmap at `tmp`; (path, reason) of the first failure, else None."""
    n = len(paths)
    chunk = max(8, min(256, math.ceil(n / (max(workers, 1) * 8))))
    starts = range(0, n, chunk)
    done = 0

    def tick(k: int) -> None:
        nonlocal done
        done += k
        if progress:
            print(f"\rstore: decoded {done}/{n} images", end="", file=sys.stderr, flush=True)

    try:
        if workers <= 1 or n <= chunk:
            for s in starts:
                failure = _decode_chunk(str(tmp), shape, s, paths[s : s + chunk], resize)
                if failure:
                    return failure
                tick(len(paths[s : s + chunk]))
            return None
        pool = _pool(workers)
        try:
            pending = {
                pool.submit(_decode_chunk, str(tmp), shape, s, paths[s : s + chunk], resize): s
                for s in starts
            }
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    s = pending.pop(fut)
                    failure = fut.result()
                    if failure:
                        return failure
                    tick(len(paths[s : s + chunk]))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # on a failure: drop the queued chunks
        return None
    finally:
        if progress:
            print(file=sys.stderr, flush=True)


def build_store(
    paths: Sequence[str],
    size: int,
    resize: str = "pad",
    cache_dir: Path = Path("runs/store"),
    workers: int = 2,
    progress: bool = True,
) -> Store:
    """Decode `paths` once to a cached uint8 (N, 1, size, size) memmap, or reopen the cached one."""
    if resize not in RESIZE_POLICIES:
        raise RareganError(f"resize policy {resize!r} is unknown; use one of {RESIZE_POLICIES}")
    if not isinstance(size, int | np.integer) or size < 1:
        raise RareganError(f"image size {size!r} is invalid; give a positive number of pixels")
    size = int(size)
    if len(paths) == 0:
        raise ValueError("build_store needs at least one image path")
    cache_dir = Path(cache_dir)
    key, abspaths, content = store_key(paths, size, resize)
    n = len(abspaths)
    store = _open_cached(cache_dir, key, n, size)
    if store is None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _unwritable(cache_dir, e) from None
        # processes asking for the same store at once (a sweep's cells, on one or several
        # machines) decode it once: the others wait here, then reopen what the first committed
        with file_lock(cache_dir / f"{key}.lock"):
            store = _open_cached(cache_dir, key, n, size)
            if store is None:
                store = _build(cache_dir, key, abspaths, size, resize, workers, progress)
    store.content_key = content
    return store


def _build(
    cache_dir: Path,
    key: str,
    abspaths: list[str],
    size: int,
    resize: str,
    workers: int,
    progress: bool,
) -> Store:
    """Decode into temp files beside the store, then commit them by renames (the JSON last)."""
    n = len(abspaths)
    tag = f"{_TMP_MARK}{os.getpid()}.{os.urandom(4).hex()}.{_HOST}"
    tmp_data, tmp_meta = cache_dir / f"{key}.u8{tag}", cache_dir / f"{key}.json{tag}"
    try:
        _clean_stale(cache_dir, key)
        check_free_space(cache_dir, n * size * size)
        with open(tmp_data, "wb") as f:
            f.truncate(n * size * size)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp_data.unlink()
        raise _unwritable(cache_dir, e) from None
    try:  # any failure below (a full disk included) removes both temp files
        shape = (n, 1, size, size)
        failure = _decode_all(tmp_data, shape, abspaths, resize, workers, progress)
        if failure:
            path, reason = failure
            raise RareganError(f"image file {path}: {reason}; fix or remove that file and its row")
        with open(tmp_data, "rb+") as f:
            os.fsync(f.fileno())
        created = datetime.now(UTC).isoformat(timespec="seconds")
        meta = {"key": key, "version": FORMAT_VERSION, "size": size, "resize": resize}
        meta |= {"n": n, "created": created, "paths": abspaths}
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_data, cache_dir / f"{key}.u8")
        os.replace(tmp_meta, cache_dir / f"{key}.json")  # the commit point: json last
    except BaseException as e:
        tmp_data.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
        if isinstance(e, OSError):  # e.g. the disk filled up while writing
            raise RareganError(
                f"cannot write the image store in {cache_dir} ({e.strerror or e}); "
                "free disk space or give another --cache"
            ) from None
        raise
    return Store(cache_dir / f"{key}.u8", meta, built=True)


class StoreDataset(torch.utils.data.Dataset):
    """Rows of a store with optional labels: (uint8 1xRxR tensor, float32 label vector)."""

    def __init__(self, store: Store, rows: np.ndarray, labels: np.ndarray | None = None) -> None:
        self.store = store
        self.rows = np.asarray(rows, dtype=np.int64)
        if self.rows.ndim != 1:
            raise ValueError(f"rows must be 1-D store indices, got shape {self.rows.shape}")
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= len(store)):
            raise ValueError(f"rows must lie in [0, {len(store)}) for this store")
        self.labels = None if labels is None else np.asarray(labels, dtype=np.float32)
        self._no_label = torch.zeros(0, dtype=torch.float32)
        if self.labels is not None and (
            self.labels.ndim != 2 or len(self.labels) != len(self.rows)
        ):
            raise ValueError(
                f"labels must be (n, L) with n={len(self.rows)}, got {self.labels.shape}"
            )

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(self.store.view[self.rows[i]].copy())
        if self.labels is None:
            return image, self._no_label
        return image, torch.from_numpy(self.labels[i].copy())
