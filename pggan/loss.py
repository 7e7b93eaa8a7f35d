"""WGAN-GP losses with the PGGAN drift term; all results stay on device (no host syncs).

Scores are taken in fp32 (``.float()``) so the losses stay fp32 when D runs under bf16 autocast;
the penalty's input gradient is fp32 too, as the interpolates it is taken at are.
"""

from __future__ import annotations

import torch
from torch import nn


def gradient_penalty(
    D: nn.Module,
    reals: torch.Tensor,
    fakes: torch.Tensor,
    level: int,
    alpha: float,
    labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean over samples of (||grad_x D(x)|| - 1)^2 at random real/fake interpolates x."""
    eps = torch.rand(
        reals.shape[0], 1, 1, 1, device=reals.device, dtype=reals.dtype, generator=generator
    )
    mixed = torch.lerp(reals.detach(), fakes.detach(), eps).requires_grad_(True)
    scores = D(mixed, level, alpha, labels).float()
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).square().mean()


def d_loss_wgan_gp(
    D: nn.Module,
    reals: torch.Tensor,
    fakes: torch.Tensor,
    level: int,
    alpha: float,
    labels: torch.Tensor | None = None,
    gp_lambda: float = 10.0,
    drift: float = 1e-3,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Critic loss E[D(fake)] - E[D(real)] + lambda*GP + drift*E[D(real)^2], and detached parts
    (wdist, gp, drift, and real_sign = E[sign(D(real) - mean D(fake))], the overfitting signal of
    adaptive augmentation: 0 when D cannot rank reals above fakes, 1 when it ranks every real above).

    Reals and fakes are scored in one concatenated pass (two minibatch-stddev segments so
    their groups never mix); the penalty needs its own pass for the input gradient.
    """
    n = reals.shape[0]
    if fakes.shape != reals.shape:
        raise ValueError(f"reals {tuple(reals.shape)} and fakes {tuple(fakes.shape)} differ")
    both_labels = None if labels is None else torch.cat([labels, labels])
    scores = D(torch.cat([reals, fakes.detach()]), level, alpha, both_labels, n_segments=2).float()
    real_scores, fake_scores = scores[:n], scores[n:]
    gp = gradient_penalty(D, reals, fakes, level, alpha, labels, generator)
    wdist = real_scores.mean() - fake_scores.mean()
    drift_term = real_scores.square().mean()
    loss = gp_lambda * gp - wdist + drift * drift_term
    parts = {"wdist": wdist.detach(), "gp": gp.detach(), "drift": drift_term.detach(),
             "real_sign": (real_scores - fake_scores.mean()).detach().sign().mean()}  # fmt: skip
    return loss, parts


def g_loss_wgan(
    D: nn.Module,
    fakes: torch.Tensor,
    level: int,
    alpha: float,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generator loss -E[D(G(z))]."""
    return -D(fakes, level, alpha, labels).float().mean()
