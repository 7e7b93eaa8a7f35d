"""Does OMP_WAIT_POLICY matter for a training step, alone and when another job shares the cores?

OpenMP threads that spin while they wait for work keep their core busy. Alone that saves a wake-up
per parallel region; beside another process on the same cores the spinning threads take the time the
other one needs. This script times one workload (the diffusion model's training step: MONAI's UNet
of `diffusion.channels`, batch 16, 64 px, bf16 autocast where native, AdamW, with the CLI's
allocator setting) in fresh processes, under each policy:

- alone: one process;
- shared: two identical processes started together on the same cores (each with every core's
  threads, as two raregan commands would run).

It prints seconds per step (median over the timed steps) per case and the ratio shared / alone, so
"what running a second job costs" is a measured number per policy. Run it on a quiet machine:

    python benchmarks/bench_omp_wait.py [--steps 20] [--policies unset PASSIVE ACTIVE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(steps: int, warmup: int, threads: int | None) -> None:
    """Time `steps` training steps after `warmup`; print one JSON line of per-step seconds."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    sys.path.insert(0, str(ROOT))
    from pipelines.machine import cpu_bf16, reuse_freed_memory

    reuse_freed_memory()  # as the raregan CLI does
    bf16 = cpu_bf16()
    step = diffusion_step()
    times = []
    for k in range(warmup + steps):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            step()
        if k >= warmup:
            times.append(time.perf_counter() - started)
    print(json.dumps({"times": times, "bf16": bf16, "threads": torch.get_num_threads()}))


def diffusion_step():
    """One closure: a DDPM training step of the default UNet (pipelines/config.py), batch 16."""
    import torch
    import torch.nn.functional as F

    from pipelines.config import DEFAULTS
    from pipelines.generators.diffusion.net import make_unet

    torch.manual_seed(0)
    unet = make_unet(DEFAULTS["diffusion"], 0)
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-4)
    x = torch.randn(16, 1, 64, 64)
    t = torch.randint(0, 1000, (16,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(unet(x, t).float(), x)
        loss.backward()
        opt.step()

    return step


def run_case(
    policy: str, steps: int, warmup: int, copies: int, threads: int | None = None
) -> list[list[float]]:
    """`copies` worker processes started together under `policy` (each with `threads` torch
    threads; default every core's); each one's step times."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy != "unset":
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, __file__, "--worker", "--steps", str(steps)]
    cmd += ["--warmup", str(warmup)] + (["--threads", str(threads)] if threads else [])
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(copies)
    ]
    out = []
    for p in procs:
        text, _ = p.communicate()
        if p.returncode != 0:
            sys.exit(f"worker failed ({policy}, {copies} copies)")
        out.append(json.loads(text.strip().splitlines()[-1])["times"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--policies", nargs="+", default=["unset", "PASSIVE"])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.steps, args.warmup, args.threads)
    print(f"diffusion training step, {args.steps} timed steps after {args.warmup}; "
          f"{os.cpu_count()} cores; median s/step")  # fmt: skip
    print(f"{'OMP_WAIT_POLICY':<16} {'alone':>8} {'shared (each)':>14} {'shared / alone':>15}")
    solo = {}
    for policy in args.policies:
        alone = solo[policy] = statistics.median(run_case(policy, args.steps, args.warmup, 1)[0])
        shared = [statistics.median(t) for t in run_case(policy, args.steps, args.warmup, 2)]
        each = " / ".join(f"{s:.3f}" for s in shared)
        print(f"{policy:<16} {alone:>8.3f} {each:>14} {statistics.mean(shared) / alone:>14.2f}×")
    # two jobs at once, each given half the cores: what a sweep gains from running cells in pairs
    half = max(1, (os.cpu_count() or 2) // 2)
    policy = "unset" if "unset" in solo else args.policies[0]
    pair = [statistics.median(t) for t in run_case(policy, args.steps, args.warmup, 2, half)]
    each = " / ".join(f"{s:.3f}" for s in pair)
    print(f"two processes with {half} thread(s) each ({policy}): {each} s/step; together "
          f"{2 * solo[policy] / statistics.mean(pair):.2f}× the steps per second of one alone")  # fmt: skip


if __name__ == "__main__":
    main()
