"""A finished PGGAN run's generator: its EMA weights, or those of one of its final-phase checkpoints
(synthetic sets of any generator kind: pipelines/generators/synth.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from pggan import Generator, Schedule
from pipelines.errors import RareganError
from pipelines.runs import finished_summary

LABEL_ROWS = ("gan", "copy_real")


def load_generator(
    run: Path, device: torch.device | str = "cpu", checkpoint: Path | None = None, raw: bool = False
) -> tuple[Generator, dict]:
    """The EMA generator of a finished GAN run on `device` (or the one stored in `checkpoint`, see
    checkpoint_generator; `raw` takes that checkpoint's raw generator, last.ckpt by default), and
    the run's summary (with a "checkpoint" entry for a checkpoint)."""
    run = Path(run)
    summary = finished_summary(run, "GAN")
    if raw and checkpoint is None:
        checkpoint = Path("last.ckpt")  # the finished run keeps only G_ema outside its checkpoints
    if checkpoint is not None:
        G, summary["checkpoint"] = checkpoint_generator(run, checkpoint, raw)
        return G.to(device).eval(), summary
    try:
        saved = torch.load(run / "generator_ema.pt", map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many kinds for a damaged file
        raise RareganError(
            f"cannot read {run / 'generator_ema.pt'} ({type(err).__name__}); retrain the GAN"
        ) from None
    return _generator(saved["hparams"], saved["state_dict"]).to(device).eval(), summary


def _generator(hp: dict, state: dict) -> Generator:
    """A Generator built from a PGGAN module's hyperparameters, with `state` loaded."""
    G = Generator(
        hp["resolution"], hp["channels"], hp["latent_dim"], hp["label_dim"], hp["img_channels"],
        resample=hp.get("resample", "nearest"),  # runs from before resample existed: nearest
    )  # fmt: skip
    G.load_state_dict(state)
    return G


def checkpoint_path(run: Path, checkpoint: Path | str) -> Path:
    """A checkpoint file as given, or by its name in the run's checkpoints folder."""
    path = Path(checkpoint)
    if not path.is_file() and (Path(run) / "checkpoints" / path.name).is_file():
        path = Path(run) / "checkpoints" / path.name
    if not path.is_file():
        have = sorted(q.name for q in (Path(run) / "checkpoints").glob("*.ckpt"))
        raise RareganError(
            f"checkpoint {checkpoint} not found; {run}/checkpoints holds {', '.join(have) or 'none'}"
        )
    return path


def checkpoint_generator(
    run: Path, checkpoint: Path | str, raw: bool = False
) -> tuple[Generator, dict]:
    """The EMA generator stored in a training checkpoint of `run` (`raw`: the raw generator that
    training moves, whose moving average G_ema is; what the average buys), and where it was: name,
    kimg and training minutes. Only a checkpoint of the final stable phase (full resolution, no
    fade) samples images like the finished run's; any other is a user error naming its phase."""
    path = checkpoint_path(run, checkpoint)
    prefix = "G." if raw else "G_ema."
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        hp, state = saved["hyper_parameters"], saved["pggan_state"]
        weights = {
            k[len(prefix) :]: v for k, v in saved["state_dict"].items() if k.startswith(prefix)
        }
    except Exception as err:  # a damaged or foreign file: many kinds of error
        raise RareganError(
            f"cannot read the GAN checkpoint {path} ({type(err).__name__}); give a .ckpt from "
            f"{run}/checkpoints"
        ) from None
    schedule = Schedule(
        hp["resolution"], hp["kimg_per_phase"], dict(hp["batch_per_resolution"] or {}),
        hp["default_batch"], hp["final_kimg"],
    )  # fmt: skip
    seen = state["images_seen"]
    phase = schedule.at(seen)
    if not phase.done and (phase.level < schedule.n_levels - 1 or phase.name != "stable"):
        raise RareganError(
            f"checkpoint {path.name} is at {seen / 1000:g} kimg, in the {phase.name} phase at "
            f"{phase.resolution} px; only checkpoints of the final {hp['resolution']} px stable "
            f"phase (from {schedule.phase_start(schedule.n_phases - 1) / 1000:g} kimg) can be sampled"
        )
    where = {
        "name": path.name,
        "kimg": (seen - state.get("images_start", 0)) / 1000,  # trained in this run (transfer)
        "train_minutes": round(state.get("train_seconds", float("nan")) / 60, 2),
        **({"generator": "raw"} if raw else {}),
    }
    return _generator(hp, weights), where
