"""Time writing phantoms: 2,000 films at 128 px (the `make phantoms` default); --quick: 300."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pipelines.data.phantoms import write_phantoms


def main() -> None:
    """Write a phantom set into a temporary folder and print wall time, CPU time and images/s."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="300 images instead of 2,000")
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    n = 300 if args.quick else 2000
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        root = write_phantoms(Path(tmp), n=n, size=args.size, seed=0)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        mb = sum(p.stat().st_size for p in root.rglob("*.jpg")) / 2**20
    print(
        f"phantoms: {n} images at {args.size} px in {wall:.1f} s wall ({n / wall:.0f} images/s), "
        f"{cpu:.1f} s CPU ({n / cpu:.0f} images/s per core), {mb:.1f} MiB of JPEG"
    )


if __name__ == "__main__":
    main()
