"""Time the torch filter bank against a per-image scipy/scikit-image loop on real X-rays.

Usage: python benchmarks/bench_filters.py [--data ../shared/data] [--n 1000] [--quick]
Images: Kermany chest JPEGs and knee PNGs from the shared data (repeated if too few), resized to
128 px. Prints both times, the speed-up, the largest difference in gray levels and the load
average (on a shared machine compare speed-ups; absolute times move with the load).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import skimage.filters
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from filters import filter_bank, gaussian_params  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("RAREGAN_SHARED_DATA", REPO.parent / "shared" / "data"))


def load_images(root: Path, n: int, size: int) -> np.ndarray:
    """Half chest JPEGs, half knee PNGs, uint8 (n, size, size), cycling if there are too few."""
    chest = sorted((root / "chest_xray" / "train").glob("*/*.jpeg"))[: n // 2]
    knee = sorted((root / "knee_kl" / "train").glob("*/*.png"))[: n - len(chest)]
    paths = chest + knee
    if not paths:
        raise SystemExit(f"no chest_xray or knee_kl images under {root}; pass --data")
    out = []
    for path in paths[:n]:
        with Image.open(path) as im:
            out.append(np.asarray(im.convert("L").resize((size, size), Image.BILINEAR)))
    return np.stack([out[i % len(out)] for i in range(n)])


def reference_bank(images: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    """The same bank image by image with scipy.ndimage and skimage, stacked like filter_bank."""
    blurred, sharpened, eroded = [], [], []
    for im in images:
        blur = ndi.gaussian_filter(
            im.astype(np.float64), sigma, truncate=radius / sigma, mode="reflect"
        )
        blurred.append(np.clip(np.round(blur), 0, 255).astype(np.uint8))
        sharp = skimage.filters.unsharp_mask(im, radius=2.0, amount=1.0)
        sharpened.append(np.round(sharp * 255).astype(np.uint8))
        eroded.append(ndi.minimum_filter(im, 3, mode="reflect"))
    return np.concatenate([images, np.stack(blurred), np.stack(sharpened), np.stack(eroded)])


def best_time(fn, repeats: int) -> tuple[float, object]:
    """Best wall time over repeats (after one warm-up call) and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    """Parse arguments, run both implementations, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--quick", action="store_true", help="200 images, 1 repeat")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.n, args.repeats = min(args.n, 200), 1

    images = load_images(args.data, args.n, args.size)
    x = torch.from_numpy(images).unsqueeze(1).to(args.device)
    sigma, radius = gaussian_params(None, 5)

    def run_torch() -> torch.Tensor:
        out, _ = filter_bank(x)
        if out.is_cuda:
            torch.cuda.synchronize()
        return out

    t_ref, ref = best_time(lambda: reference_bank(images, sigma, radius), max(1, args.repeats - 2))
    timings = [(torch.get_num_threads(), *best_time(run_torch, args.repeats))]
    if args.device == "cpu" and torch.get_num_threads() > 1:  # the reference loop uses one core
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        timings.append((1, *best_time(run_torch, args.repeats)))
        torch.set_num_threads(threads)

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"images: {args.n} x {args.size}x{args.size} uint8 -> bank of {len(ref)} rows")
    print(f"load average (1, 5, 15 min): {load} on {os.cpu_count()} CPU(s)")
    print(f"scipy/skimage per-image loop : {t_ref:8.3f} s")
    for threads, seconds, ours in timings:
        diff = np.abs(ours.cpu()[:, 0].numpy().astype(np.int16) - ref.astype(np.int16))
        where = f"{args.device}, {threads} thread(s)" if args.device == "cpu" else args.device
        print(
            f"torch filter_bank ({where}) : {seconds:8.3f} s  speed-up {t_ref / seconds:5.1f}x  "
            f"max |diff| {int(diff.max())} gray level(s) ({(diff > 0).mean():.1e} of pixels)"
        )


if __name__ == "__main__":
    main()
