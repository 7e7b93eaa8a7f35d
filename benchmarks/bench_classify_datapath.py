"""Classifier training img/s through the real data path (store + augmentation + loader) vs in memory.

Real data: Kermany chest_xray (Kermany, Zhang, Goldbaum 2018, doi:10.17632/rscbjbr9sj.2, CC BY 4.0).
Both loops run the same Classifier (standard-arm augmentation on) for the same number of steps; the
only difference is where batches come from: StoreDataset over the memory-mapped store through a
DataLoader, or slices of one uint8 tensor already in memory. Target: the data path costs ≤ 10 %.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from classify import Classifier  # noqa: E402
from pipelines.data import load_records  # noqa: E402
from pipelines.data.store import StoreDataset, build_store  # noqa: E402
from pipelines.machine import mixed_precision  # noqa: E402


def steps_per_second(
    module: Classifier,
    batches,
    n_steps: int,
    augment: bool = True,
    bf16: bool = False,
    lr: float = 1e-3,
    sync=lambda: None,
) -> float:
    """Time n_steps optimizer steps over an iterator of (images, labels) on the module's device
    (bf16 autocast if asked; `sync` waits for queued GPU work); returns img/s after 2 warm-ups."""
    dev = next(module.parameters()).device
    opt = torch.optim.AdamW(module.parameters(), lr=lr)
    module.train()
    seen, start = 0, None
    for i, (images, labels) in enumerate(batches):
        if i == 2:  # warm-up steps excluded
            sync()
            start, seen = time.perf_counter(), 0
        images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            logits = module.model(module.preprocess(images, augment=augment))
        loss = module.task.loss(logits.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(images)
        if i + 1 >= n_steps + 2:
            break
    sync()
    return seen / (time.perf_counter() - start)


def main() -> None:
    """Print img/s of both paths and the data path's cost."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "chest_xray")
    ap.add_argument("--model", default="densenet121")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "32"])
    ap.add_argument("--quick", action="store_true", help="fewer steps")
    args = ap.parse_args()
    steps = 4 if args.quick else args.steps
    # bf16 where the CPU has it, as training resolves classify.precision
    bf16 = mixed_precision("cpu", args.precision, "--precision") == "bf16"
    rec = load_records(args.data)
    n = (steps + 2) * args.batch
    store = build_store(
        rec.frame["path"].tolist()[: n * 2],
        args.size,
        cache_dir=REPO / "runs" / "store",
        progress=False,
    )
    labels = rec.labels[: len(store)]
    rows = np.arange(len(store))
    torch.manual_seed(0)
    aug = {"hflip": 0.0, "degrees": 10.0, "scale": (0.8, 1.0)}
    make = lambda: Classifier(args.model, rec.label_names, rec.task, augment=aug)  # noqa: E731

    loader = DataLoader(
        StoreDataset(store, rows, labels),
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    real = steps_per_second(make(), iter(loader), steps, bf16=bf16)

    images = torch.from_numpy(np.ascontiguousarray(store.view[rows]))
    targets = torch.from_numpy(labels)
    order = torch.randperm(len(images))
    mem_batches = (
        (images[order[i : i + args.batch]], targets[order[i : i + args.batch]])
        for i in range(0, len(images), args.batch)
    )
    memory = steps_per_second(make(), mem_batches, steps, bf16=bf16)
    cost = 1 - real / memory
    print(
        f"{args.model} at {args.size} px, batch {args.batch}, {steps} steps, "
        f"{torch.get_num_threads()} threads, {'bf16 autocast' if bf16 else 'fp32'}"
    )
    print(f"in-memory tensor          : {memory:6.1f} img/s")
    print(f"store + augment + loader  : {real:6.1f} img/s ({args.workers} workers)")
    print(f"data path cost            : {100 * cost:+.1f} % (target <= 10 %)")


if __name__ == "__main__":
    main()
