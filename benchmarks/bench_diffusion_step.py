"""Diffusion training step: MONAI's DiffusionModelUNet vs diffusers' UNet2DModel at the same size.

Why the diffusion kind is built on MONAI (pipelines/generators/diffusion/): this measures one
ε-prediction training step (64 px, one channel, batch 16, AdamW) of both libraries' UNets at the
same channels (32-64-128-128, one residual block per level, self-attention at the coarsest level),
in fp32 and under bf16 autocast, interleaved in rounds on one machine, and DDIM sampling time of
raregan's sampler. diffusers is not a dependency: `pip install diffusers==0.42.1` to compare; without
it only MONAI's figures print.

    python benchmarks/bench_diffusion_step.py [--quick] [--rounds 2] [--steps 10]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

CHANNELS = (32, 64, 128, 128)


def monai_unet() -> torch.nn.Module:
    from pipelines.config import DEFAULTS
    from pipelines.generators.diffusion import make_unet

    return make_unet(dict(DEFAULTS["diffusion"], channels=list(CHANNELS)))


def diffusers_unet() -> torch.nn.Module | None:
    try:
        from diffusers import UNet2DModel
    except ImportError:
        return None
    return UNet2DModel(
        sample_size=64,
        in_channels=1,
        out_channels=1,
        block_out_channels=CHANNELS,
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=16,
        attention_head_dim=32,
    )


def step_rate(net, forward, bf16: bool, steps: int, batch: int = 16) -> float:
    """Images per second of `steps` training steps (after two warm-up steps)."""
    opt = torch.optim.AdamW(net.parameters(), lr=2e-4)
    x = torch.randn(batch, 1, 64, 64)
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        t = torch.randint(0, 1000, (batch,))
        noise = torch.randn_like(x)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = forward(net, x + noise, t)
        loss = F.mse_loss(out.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 steps per round, 1 round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    steps, rounds = (2, 1) if args.quick else (args.steps, args.rounds)
    torch.manual_seed(0)
    nets = {
        "MONAI DiffusionModelUNet": (monai_unet(), lambda n, x, t: n(x, t)),
        "diffusers UNet2DModel": (diffusers_unet(), lambda n, x, t: n(x, t).sample),
    }
    rates: dict[tuple[str, str], list[float]] = {}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 64 px, batch 16")
    for name, (net, _) in nets.items():
        if net is None:
            print(f"{name}: not installed (pip install diffusers==0.42.1 to compare)")
        else:
            print(f"{name}: {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters")
    for _ in range(rounds):  # interleaved: the machine's drift hits every variant alike
        for name, (net, forward) in nets.items():
            if net is None:
                continue
            for precision in ("fp32", "bf16"):
                rate = step_rate(net, forward, precision == "bf16", steps)
                rates.setdefault((name, precision), []).append(rate)
    for (name, precision), values in rates.items():
        shown = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:26s} {precision}: {shown} img/s (rounds)")
    if len({name for name, _ in rates}) == 2:
        for precision in ("fp32", "bf16"):
            a = max(rates["MONAI DiffusionModelUNet", precision])
            b = max(rates["diffusers UNet2DModel", precision])
            print(f"{precision}: MONAI / diffusers = {a / b:.2f} (best round each)")
    from pipelines.config import DEFAULTS
    from pipelines.generators.diffusion import DiffusionSampler

    hp = dict(DEFAULTS["diffusion"], channels=list(CHANNELS))
    sampler = DiffusionSampler(nets["MONAI DiffusionModelUNet"][0], hp, progress=False)
    n = 16 if args.quick else 64
    start = time.perf_counter()
    sampler.sample(n, seed=0)
    seconds = time.perf_counter() - start
    print(
        f"DDIM sampling ({hp['sample_steps']} steps, {sampler.steps} used): {n} images in "
        f"{seconds:.1f} s = {n / seconds:.2f} img/s → 1,000 samples ≈ {1000 / (n / seconds) / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
