"""The GAN's data order: an endless, seeded, resumable stream of training batches (per rank under DDP)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

DATA_ORDER = "data_order"  # the checkpoint's entry for the sampler's position


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 without torch.distributed)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def class_repeats(labels: np.ndarray, balance: float) -> np.ndarray | None:
    """How often each of N images comes in one pass, (N,) ints ≥ 1, so that class c is drawn in
    proportion to n_c^(1 - balance) (Kang et al. 2020's class-balanced sampling, p_c ∝ n_c^q with
    q = 1 - balance): 1 draws every class about equally often; 0 keeps the data's proportions
    (None: each image once, the sampler's plain pass).

    `labels` (N, K) are multi-hot; an image counts for its rarest positive class (the first class
    when it has none). Repeats are (n_max / n_c)^balance rounded to whole copies.
    """
    if balance <= 0:
        return None
    counts = labels.sum(axis=0)
    per_class = np.rint((counts.max() / np.maximum(counts, 1)) ** balance).clip(min=1)
    rarest = np.where(labels > 0.5, counts, np.inf).argmin(axis=1)
    return per_class[rarest].astype(np.int64)


class ResumableSampler(Sampler[int]):
    """Endless shuffled passes over `n` items; pass e's order is a pure function of (seed, e).

    With `repeats` (one count per item) a pass holds item i repeats[i] times, shuffled together.
    The stream is cut into global batches of `batch` items per rank (rank r takes the r-th slice),
    and `position` (items all ranks consumed) restores the exact order after a resume.
    """

    def __init__(self, n: int, batch: int, seed: int, repeats: np.ndarray | None = None):
        super().__init__()
        self.items = None if repeats is None else np.repeat(np.arange(n), repeats)
        self.n = n if repeats is None else len(self.items)
        self.batch, self.seed = batch, seed
        self.position = 0

    def order(self, epoch: int) -> list[int]:
        """The item order of pass `epoch`."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=gen)
        return perm.tolist() if self.items is None else self.items[perm.numpy()].tolist()

    def __iter__(self) -> Iterator[int]:
        """Items from `position` on, this rank's slice of each global batch."""
        rank, world = rank_and_world()
        start, epoch, order = self.position + rank * self.batch, -1, []
        while True:
            for pos in range(start, start + self.batch):
                if pos // self.n != epoch:
                    epoch = pos // self.n
                    order = self.order(epoch)
                yield order[pos % self.n]
            start += world * self.batch

    def state(self, position: int) -> dict:
        """The pass and index within it at stream `position`."""
        return {"epoch": position // self.n, "index": position % self.n}

    def load_state(self, state: dict) -> None:
        """Continue from a saved pass and index."""
        self.position = state["epoch"] * self.n + state["index"]


class DataOrder(pl.Callback):
    """Saves the sampler's position in each checkpoint and restores it on resume."""

    def __init__(self, sampler: ResumableSampler):
        self.sampler = sampler

    def on_save_checkpoint(self, trainer, module, checkpoint: dict) -> None:
        """Every step consumed one batch per rank."""
        items = module.steps * trainer.world_size * self.sampler.batch
        checkpoint[DATA_ORDER] = self.sampler.state(items)

    def on_load_checkpoint(self, trainer, module, checkpoint: dict) -> None:
        """Restore the position (from the step count for checkpoints made before it was saved)."""
        steps = checkpoint["pggan_state"]["steps"]
        old = self.sampler.state(steps * trainer.world_size * self.sampler.batch)
        self.sampler.load_state(checkpoint.get(DATA_ORDER, old))


def loader(
    images: np.ndarray,
    batch: int,
    seed: int,
    labels: np.ndarray | None = None,
    repeats: np.ndarray | None = None,
) -> DataLoader:
    """Endless loader of [-1, 1] float batches (with their labels if given) in a resumable order,
    each image `repeats` times per pass if given (class_repeats)."""
    tensors = [torch.from_numpy(np.ascontiguousarray(images))]
    if labels is not None:
        tensors.append(torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32)))
    data = TensorDataset(*tensors)
    sampler = ResumableSampler(len(data), batch, seed, repeats)

    def collate(items):
        x = torch.stack([it[0] for it in items]).float().div_(127.5).sub_(1.0)
        return x if labels is None else (x, torch.stack([it[1] for it in items]))

    return DataLoader(data, batch_size=batch, sampler=sampler, collate_fn=collate, drop_last=True)
