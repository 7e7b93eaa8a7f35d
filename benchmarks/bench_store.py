"""Store benchmark: build throughput, random reads vs decoding each time, hashing and duplicate search.

Run: .venv/bin/python benchmarks/bench_store.py [--quick]
Data: Kermany pediatric pneumonia JPEGs (Kermany, Zhang, Goldbaum 2018, doi:10.17632/rscbjbr9sj.2,
CC BY 4.0) from ../shared/data (or $RAREGAN_SHARED_DATA).
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from cli_args import bench_args  # benchmarks/ is on the path when a script runs
from PIL import Image

from pipelines.data.decode import decode_image
from pipelines.data.leakage import find_cross_split_duplicates, phash, pixel_digest
from pipelines.data.store import StoreDataset, build_store

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RAREGAN_SHARED_DATA", REPO.parent / "shared" / "data"))


def timed(fn):
    """(result, wall seconds, this process's CPU seconds) of fn()."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - start, time.process_time() - cpu


def bench_store(paths: list[str], size: int, workers: int, reads: int) -> np.ndarray:
    """Build, reopen and random-read; returns the store array (in memory) for the hash benchmark."""
    with tempfile.TemporaryDirectory() as cache:
        store, t_build, _ = timed(
            lambda: build_store(paths, size, cache_dir=Path(cache), workers=workers, progress=False)
        )
        reopened, t_open, _ = timed(
            lambda: build_store(paths, size, cache_dir=Path(cache), progress=False)
        )
        assert not reopened.built
        print(
            f"build: {len(paths)} images at R={size} with {workers} workers in {t_build:.2f} s "
            f"= {len(paths) / t_build:.0f} images/s; reopen from cache {t_open * 1e3:.0f} ms"
        )
        idx = np.random.default_rng(0).integers(0, len(paths), reads)
        dataset = StoreDataset(store, np.arange(len(paths)))
        _, t_store, c_store = timed(lambda: [dataset[int(i)] for i in idx])
        n_dec = max(1, reads // 10)  # the first tenth of the same random indices
        _, t_dec, c_dec = timed(lambda: [decode_image(paths[int(i)], size) for i in idx[:n_dec]])
        store_rate, dec_rate = reads / t_store, n_dec / t_dec
        cpu_ratio = (reads / c_store) / (n_dec / c_dec)
        print(
            f"random reads: StoreDataset {store_rate:.0f} images/s, decode+resize each time "
            f"{dec_rate:.0f} images/s -> {store_rate / dec_rate:.0f}x wall, {cpu_ratio:.0f}x CPU time"
        )
        return np.array(store.array)


def bench_hashes(images: np.ndarray) -> np.ndarray:
    """phash + digest + duplicate search on the real set; returns the hashes."""
    hashes, t_hash, _ = timed(lambda: phash(images))
    digests, t_dig, _ = timed(lambda: pixel_digest(images))
    splits = np.random.default_rng(0).choice(["train", "val", "test"], len(images))
    pairs, t_find, _ = timed(lambda: find_cross_split_duplicates(hashes, digests, splits, 4))
    print(
        f"leakage on {len(images)} images: phash {t_hash:.3f} s, digests {t_dig:.3f} s, "
        f"duplicate search {t_find:.3f} s ({len(pairs)} cross-split pairs at distance <= 4)"
    )
    return hashes


def bench_scale(real: np.ndarray, n: int) -> None:
    """Banded search on n synthetic hashes: uniform bits, and bits as skewed as the real ones."""
    rng = np.random.default_rng(0)
    freq = np.unpackbits(real.view(np.uint8)).reshape(-1, 64).mean(axis=0)
    splits = rng.choice(["train", "val", "test"], n)
    for name, p in [("uniform bits", np.full(64, 0.5)), ("real bit frequencies", freq)]:
        bits = rng.random((n, 64)) < p
        hashes = np.packbits(bits, axis=1, bitorder="big").view(">u8")[:, 0].astype(np.uint64)
        digests = np.arange(n).astype("S16")
        pairs, t, cpu = timed(
            lambda h=hashes, d=digests: find_cross_split_duplicates(h, d, splits, 4)
        )
        print(
            f"duplicate search on {n} hashes ({name}): {t:.2f} s wall, {cpu:.2f} s CPU, "
            f"{len(pairs)} pairs"
        )


def bench_draft(path: str, size: int, copies: int) -> None:
    """JPEG draft() on a big (2320x2828) radiograph JPEG: speed and difference vs a full decode."""
    big = Image.open(path).convert("L").resize((2320, 2828), Image.BICUBIC)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "big.jpeg"
        buf = io.BytesIO()
        big.save(buf, "JPEG", quality=90)
        target.write_bytes(buf.getvalue())
        fast, t_fast, _ = timed(lambda: [decode_image(target, size) for _ in range(copies)])
        full, t_full, _ = timed(
            lambda: [decode_image(target, size, draft=False) for _ in range(copies)]
        )
    diff = np.abs(fast[0].astype(int) - full[0])
    print(
        f"JPEG draft at R={size} on 2320x2828: {t_full / t_fast:.2f}x faster, "
        f"mean |diff| {diff.mean():.2f}, max {diff.max()} gray levels"
    )


def main() -> None:
    """Run the benchmark and print its figures."""
    args = bench_args(__doc__, size=128, workers=2)
    n = 300 if args.quick else 1000
    files = sorted((DATA / "chest_xray/train").glob("*/*.jpeg"))
    paths = [str(p) for p in files[:: max(1, len(files) // n)][:n]]
    images = bench_store(paths, args.size, args.workers, reads=2000 if args.quick else 10000)
    hashes = bench_hashes(images)
    bench_scale(hashes, 50_000 if args.quick else 224_316)
    for size in (64, 256) if not args.quick else (256,):
        bench_draft(paths[0], size, copies=3 if args.quick else 10)


if __name__ == "__main__":
    main()
