"""DenseNet-121 training img/s on the CPU: fp32 vs bf16 autocast, NCHW vs channels_last, side by side.

The Classifier trains channels_last (its default since bf16 came in); the NCHW variants convert it
back, so "fp32 NCHW" is the training step as it was before. Target (issue: DenseNet-121 fast enough
on CPU): the default bf16 step ≥ 1.8× fp32 NCHW where the CPU computes bf16 natively (AVX512-BF16 or AMX). The script says whether this CPU does; without it oneDNN emulates bf16 and the
ratio falls far below 1, which is why `classify.precision: auto` trains in fp32 there. The loss is
computed in fp32 in every variant. Random 1-channel images (the speed does not depend on content).
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cli_args import bench_args  # noqa: E402

from classify import Classifier  # noqa: E402
from pipelines.machine import cpu_bf16  # noqa: E402


def img_per_s(variant: str, size: int, batch: int, steps: int) -> float:
    """Optimizer steps of DenseNet-121 on random images under one variant; img/s after 2 warm-ups."""
    torch.manual_seed(0)
    module = Classifier("densenet121", ["a", "b"], "multilabel")
    x = torch.rand(batch, 1, size, size)
    y = (torch.rand(batch, 2) > 0.5).float()
    nchw = variant.endswith("NCHW")
    if nchw:
        module.model = module.model.to(memory_format=torch.contiguous_format)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    cast = torch.autocast("cpu", torch.bfloat16) if variant.startswith("bf16") else nullcontext()
    module.train()
    start = None
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        with cast:
            z = module.preprocess(x, augment=False)  # channels_last
            logits = module.model(z.contiguous() if nchw else z)
        loss = module.task.loss(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    """Print img/s per variant and the ratios to fp32 (interleaved rounds, median of rounds)."""
    args = bench_args(__doc__, size=64, batch=32)
    steps, rounds = (2, 1) if args.quick else (8, 2)
    variants = ["fp32 NCHW", "fp32 channels_last", "bf16 NCHW", "bf16 channels_last"]
    print(
        f"CPU native bf16 (AVX512-BF16 or AMX): {cpu_bf16()}; torch threads {torch.get_num_threads()}"
    )
    seen = {v: [] for v in variants}
    for _ in range(rounds):  # interleaved, so load on the machine hits every variant alike
        for v in variants:
            seen[v].append(img_per_s(v, args.size, args.batch, steps))
    med = {v: sorted(r)[len(r) // 2] for v, r in seen.items()}
    base = med["fp32 NCHW"]
    for v in variants:
        runs = ", ".join(f"{r:.1f}" for r in seen[v])
        print(f"{v:>20}: {med[v]:7.1f} img/s (rounds: {runs}); × {med[v] / base:.2f} fp32 NCHW")
    print("target: bf16 channels_last (the training default) ≥ 1.8× fp32 NCHW where bf16 is native")


if __name__ == "__main__":
    main()
