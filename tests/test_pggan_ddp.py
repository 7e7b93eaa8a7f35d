"""PGGAN under DDP: 2 CPU processes (gloo), different data per rank, weights stay identical.

Slow (two Python processes start Lightning): marked ``slow``. Run as a script, this file is the
training program that Lightning's ``ddp`` launcher starts once per rank.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

STEPS = 5


def _train(out: Path) -> None:
    """Train a tiny PGGAN on 2 CPU ranks; each rank saves its final state."""
    import pytorch_lightning as pl
    from conftest import quiet_trainer
    from torch.utils.data import DataLoader, TensorDataset

    from pggan.module import PGGAN

    torch.set_num_threads(1)

    class SaveState(pl.Callback):
        def on_train_end(self, trainer, module):
            state = {k: v.clone() for k, v in module.state_dict().items()}
            torch.save(
                {"state": state, "images_seen": module.images_seen, "steps": module.steps},
                out / f"rank{trainer.global_rank}.pt",
            )

    module = PGGAN(16, [16, 8, 8], latent_dim=8, kimg_per_phase=0.02, default_batch=4, seed=0)
    torch.save(module.state_dict(), out / "init.pt")
    data = TensorDataset(
        torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    )
    trainer = quiet_trainer(
        devices=2,
        strategy="ddp_find_unused_parameters_true",
        max_epochs=1,
        limit_train_batches=STEPS,
        callbacks=[SaveState()],
        default_root_dir=out,
    )
    trainer.fit(module, DataLoader(data, batch_size=4, shuffle=False))


@pytest.mark.slow
def test_ddp_two_cpu_ranks_stay_in_sync(tmp_path):
    proc = subprocess.run(
        [sys.executable, __file__, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    init = torch.load(tmp_path / "init.pt")
    # Image count is global: batch 4 per rank, 2 ranks; the schedule crossed level 0 -> 1 -> 2.
    assert r0["images_seen"] == r1["images_seen"] == STEPS * 4 * 2
    assert r0["steps"] == r1["steps"] == STEPS
    moved = [k for k in init if not torch.equal(init[k], r0["state"][k])]
    assert any(k.startswith("G.") for k in moved) and any(k.startswith("D.") for k in moved)
    assert any(k.startswith("G_ema.") for k in moved)
    # Ranks saw different reals and latents: identical weights mean gradients were all-reduced.
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k


if __name__ == "__main__":
    _train(Path(sys.argv[1]))
