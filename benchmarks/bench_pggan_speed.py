"""PGGAN training speed on CPU at the reference config; prints img/s, ms/step, FLOP utilization.

Reference config: 64 px, channels 128-128-128-64-32, latent 128, batch 16, 1 channel, WGAN-GP
every step, minibatch stddev, EMA, fully grown (level for 64 px, alpha = 1). The step timed is
``pggan.module.PGGAN.training_step`` run by a Lightning Trainer. ``--baseline`` also times a
straightforward port of the same algorithm (separate real/fake passes, upsample-then-conv,
NCHW, D weight gradients in the G step) under the same load, for an honest speed-up figure.

    python benchmarks/bench_pggan_speed.py [--quick] [--steps N] [--baseline] [--threads N] [--nchw]
        [--bf16] [--zoo PATH]

``--bf16`` also times the module under bf16 autocast (gan.precision bf16) where the CPU has native
bf16; elsewhere it says so and measures nothing (emulated bf16 is many times slower).

``--zoo PATH`` also times, in the same run, the PGAN of facebookresearch/pytorch_GAN_zoo (a checkout
at PATH, outside this project; nothing of it is copied here) at the same config: its
``ProgressiveGAN.optimizeParameters`` with WGAN-GP, epsilon-drift, minibatch stddev and its EMA,
grown to 64 px with alpha 0 (its convention for "fully grown"). Its Adam betas are passed as a tuple
of floats (current torch refuses its list), nothing else of it is changed. The ratios printed are
this project's median img/s over the zoo's (the issue's target: bf16 >= 2.0x the zoo).

The raregan CLI keeps freed blocks of up to 32 MiB in glibc's heap (``pipelines/machine.py``); this
script does the same before timing the module. With ``--zoo`` the zoo is timed twice, with glibc's
default allocator (as its own scripts run) and with the CLI's setting, so the ratios say how much is
the setting and how much the step.

OpenMP threads that spin while waiting starve each other when other processes share the cores
(a 2.3M-parameter Adam step took 0.9 s instead of 12 ms here), so this script sets
OMP_WAIT_POLICY=PASSIVE unless the environment already sets it (ACTIVE to compare).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the torch import
import statistics
import sys
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from pggan.ema import update_ema
from pggan.module import PGGAN
from pggan.networks import Discriminator, Generator
from pipelines.machine import cpu_bf16, reuse_freed_memory

CHANNELS, RES, BATCH, LATENT = [128, 128, 128, 64, 32], 64, 16, 128


def peak_gflops(repeats: int = 5) -> tuple[float, float]:
    """Best fp32 GFLOP/s of a 2048^2 matmul (MKL) and of a large 3x3 conv (oneDNN)."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    mm = 2 * n**3 / min(_timed(lambda: a @ b) for _ in range(repeats + 1)) / 1e9
    x, w = torch.randn(32, 128, 32, 32), torch.randn(128, 128, 3, 3)
    x, w = (
        x.contiguous(memory_format=torch.channels_last),
        w.contiguous(memory_format=torch.channels_last),
    )
    flops = 2 * 32 * 128 * 128 * 9 * 32 * 32
    conv = flops / min(_timed(lambda: F.conv2d(x, w, padding=1)) for _ in range(repeats + 1)) / 1e9
    return mm, conv


def _timed(fn) -> float:
    """Wall seconds of one call."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class FlopCount(TorchDispatchMode):
    """Sums FLOPs of every dispatched op (FlopCounterMode's formulas, no module tracking)."""

    def __init__(self):
        super().__init__()
        self.flops, self.registry = 0, FlopCounterMode(display=False).flop_registry

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = self.registry.get(func._overloadpacket)
        if count is not None:
            self.flops += count(*args, **kwargs, out_val=out)
        return out


class StepTimer(pl.Callback):
    """Times every training batch; counts the FLOPs of batch ``flop_batch``."""

    def __init__(self, flop_batch: int):
        self.times: list[float] = []
        self.flop_batch, self.flops, self._fc = flop_batch, 0, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # noqa: D102
        if batch_idx == self.flop_batch:
            self._fc = FlopCount()
            self._fc.__enter__()
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: D102
        self.times.append(time.perf_counter() - self._t)
        if self._fc is not None:
            self._fc.__exit__(None, None, None)
            self.flops, self._fc = self._fc.flops, None


def bench_module(
    steps: int, warmup: int, channels_last: bool, precision: str = "32"
) -> tuple[list[float], int]:
    """Per-step seconds after warm-up and FLOPs of one step, for the Lightning module."""
    module = PGGAN(RES, CHANNELS, LATENT, default_batch=BATCH, kimg_per_phase=1000.0,
                   channels_last=channels_last, precision=precision)  # fmt: skip
    module.images_seen = module.schedule.phase_start(module.schedule.n_phases - 1)
    assert module.phase.level == 4 and module.phase.alpha == 1.0
    n = steps + warmup + 1
    data = TensorDataset(torch.rand(n * BATCH, 1, RES, RES) * 2 - 1)
    timer = StepTimer(flop_batch=warmup)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=n, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer],
    )  # fmt: skip
    trainer.fit(module, DataLoader(data, batch_size=BATCH))
    return timer.times[warmup + 1 :], timer.flops


def bench_baseline(steps: int, warmup: int) -> tuple[list[float], int]:
    """Per-step seconds and FLOPs of a straightforward port of the same algorithm."""
    torch.manual_seed(0)
    G, D = Generator(RES, CHANNELS, LATENT, fused_up=False), Discriminator(RES, CHANNELS)
    G_ema = Generator(RES, CHANNELS, LATENT, fused_up=False).requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.99), eps=1e-8)
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.99), eps=1e-8)
    times, counter = [], FlopCount()
    for i in range(steps + warmup + 1):
        if i == warmup:
            counter.__enter__()
        t = time.perf_counter()
        reals = torch.rand(BATCH, 1, RES, RES) * 2 - 1
        fakes = G(torch.randn(BATCH, LATENT)).detach()
        real_s, fake_s = D(reals), D(fakes)
        eps = torch.rand(BATCH, 1, 1, 1)
        mixed = (reals + (fakes - reals) * eps).requires_grad_(True)
        (grad,) = torch.autograd.grad(D(mixed).sum(), mixed, create_graph=True)
        gp = (grad.flatten(1).norm(dim=1) - 1).square().mean()
        d_loss = fake_s.mean() - real_s.mean() + 10 * gp + 1e-3 * real_s.square().mean()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = -D(G(torch.randn(BATCH, LATENT))).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        update_ema(G_ema, G, 0.999)
        float(d_loss), float(g_loss)  # the per-step host syncs such ports do for logging
        if i == warmup:
            counter.__exit__(None, None, None)
        elif i > warmup:
            times.append(time.perf_counter() - t)
    return times, counter.flops


def bench_zoo(path: Path, steps: int, warmup: int) -> tuple[list[float], int]:
    """Per-step seconds and FLOPs of pytorch_GAN_zoo's PGAN step at the reference config."""
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    from models.progressive_gan import ProgressiveGAN  # the zoo checkout's, not ours

    class ZooPGAN(ProgressiveGAN):  # its optimizers with betas as a tuple of floats
        def getOptimizerD(self):  # noqa: N802
            params = [p for p in self.netD.parameters() if p.requires_grad]
            return torch.optim.Adam(params, betas=(0.0, 0.99), lr=self.config.learningRate)

        def getOptimizerG(self):  # noqa: N802
            params = [p for p in self.netG.parameters() if p.requires_grad]
            return torch.optim.Adam(params, betas=(0.0, 0.99), lr=self.config.learningRate)

    torch.manual_seed(0)
    gan = ZooPGAN(dimLatentVector=LATENT, depthScale0=CHANNELS[0], miniBatchStdDev=True,
                  lambdaGP=10.0, epsilonD=0.001, dimOutput=1, useGPU=False)  # fmt: skip
    for depth in CHANNELS[1:]:
        gan.addScale(depth)
    for net in (gan.getOriginalG(), gan.getOriginalD(), gan.avgG):  # its updateAlpha needs a GPU
        net.setNewAlpha(0.0)
    assert gan.getSize() == (RES, RES)
    times, counter = [], FlopCount()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecated add_(Number, Tensor) in the EMA
        for i in range(steps + warmup + 1):
            reals = torch.rand(BATCH, 1, RES, RES) * 2 - 1
            if i == warmup:
                counter.__enter__()
            t = time.perf_counter()
            gan.optimizeParameters(reals)
            if i == warmup:
                counter.__exit__(None, None, None)
            elif i > warmup:
                times.append(time.perf_counter() - t)
    return times, counter.flops


def report(name: str, times: list[float], flops: int, peak: float) -> float:
    """Print throughput and utilization figures; return the median img/s."""
    best, med = min(times), statistics.median(times)
    line = f"{name:<28} best {BATCH / best:6.2f} img/s ({best * 1e3:7.1f} ms/step)"
    line += f"  median {BATCH / med:6.2f} img/s ({med * 1e3:7.1f} ms/step)"
    if flops:
        gfs = flops / best / 1e9
        line += (
            f"  {flops / 1e9:.1f} GFLOP/step, {gfs:.1f} GFLOP/s = {100 * gfs / peak:.0f}% of peak"
        )
    print(line, flush=True)
    return BATCH / med


def main() -> None:
    """Parse flags, run, print."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 20, quick 5)")
    ap.add_argument("--baseline", action="store_true", help="also time the unoptimized port")
    ap.add_argument("--nchw", action="store_true", help="module without channels_last")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    ap.add_argument(
        "--bf16", action="store_true", help="also time the module under bf16 autocast (native only)"
    )
    ap.add_argument(
        "--zoo", type=Path, default=None, help="a pytorch_GAN_zoo checkout: time its PGAN step too"
    )
    args = ap.parse_args()
    if args.zoo is not None and not (args.zoo / "models" / "progressive_gan.py").is_file():
        ap.error(
            f"--zoo {args.zoo}: no models/progressive_gan.py there (a pytorch_GAN_zoo checkout)"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps or (5 if args.quick else 20)
    warmup = 2
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
        f"load average before {os.getloadavg()[0]:.2f}"
    )
    mm, conv = peak_gflops()
    peak = max(mm, conv)
    print(f"measured peak fp32: matmul {mm:.1f}, conv3x3 {conv:.1f} GFLOP/s (using the larger)")
    medians = {}
    if args.zoo is not None:  # before the allocator setting, as the zoo's own scripts run
        medians["zoo"] = report("pytorch_GAN_zoo PGAN", *bench_zoo(args.zoo, steps, warmup), peak)
    print(f"glibc keeps freed blocks up to 32 MiB (as the raregan CLI): {reuse_freed_memory()}")
    if args.zoo is not None:
        times, flops = bench_zoo(args.zoo, steps, warmup)
        medians["zoo, same allocator"] = report("pytorch_GAN_zoo PGAN, same", times, flops, peak)
    times, flops = bench_module(steps, warmup, channels_last=not args.nchw)
    medians["fp32"] = report("pggan module", times, flops, peak)
    if args.bf16 and cpu_bf16():
        medians["bf16"] = report(
            "pggan module, bf16", *bench_module(steps, warmup, not args.nchw, "bf16"), peak
        )
    elif args.bf16:  # emulated bf16 is many times slower than fp32 (bench_classify_bf16.py)
        print("pggan module, bf16: not measured: this CPU has no native bf16 (AVX512-BF16/AMX)")
    if args.baseline:
        report("straightforward port", *bench_baseline(steps, warmup), peak)
    for zoo in ("zoo", "zoo, same allocator"):
        for name in ("fp32", "bf16"):
            if zoo in medians and name in medians:
                ratio = medians[name] / medians[zoo]
                print(f"pggan module {name} / {zoo} (median img/s): {ratio:.2f}x")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
