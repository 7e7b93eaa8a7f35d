"""Generator kinds behind one interface: the experiment trains, samples and checks any of them alike.

A kind is named in config (`generator.kind`) and lives in one module listed in KINDS. Each module
provides:

- `SECTION`: its config section (`gan`, `diffusion`): resolution, seed, checkpoint interval …
- `train(prepared, classes, fraction, cfg, run, opts, checkpoint_every) -> Path`: train or resume the generator of
  the classes' train positives of the fraction in the run folder (fingerprinted, resumable, a
  progress bar, the last K checkpoints kept), leaving what every kind leaves: `fingerprint.json`,
  `config.yaml`, `positives.csv` (the real images it learned from), `heldout.csv` (the classes' val
  and test positives of patients it never saw), `summary.json` (with `generator`: the kind, and
  `init_from` when it started from another run), `samples/final.png`, and DONE last.
- `fingerprint(prepared, cfg, classes, fraction, rows, precision, source_id) -> dict`: what makes
  such a run, checked before reuse and by a sweep's record check.
- `precision(accelerator, setting) -> str`: the setting resolved on this machine ("bf16" or "32").
- `load(run, device, checkpoint, raw) -> (Sampler, summary)`: a finished run's sampler.

A Sampler has `resolution`, `label_dim` (0 unless label-conditional) and `sample(n, seed, labels)
-> uint8 tensor (n, 1, R, R)`: the same seed and weights give the same images. Synthetic sets
(`synth`), their evaluation (`gan-eval`) and the experiment's arms use only this interface, so
adding a kind touches its own module, this table, its config section and the arm table
(pipelines/arms.py).

Light on purpose: the kind's module (torch, its library) loads when it is used.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

from pipelines.arms import GENERATOR_KINDS, KIND_SECTION
from pipelines.errors import RareganError

if TYPE_CHECKING:
    import torch

KINDS = {"pggan": "pipelines.gan.kind", "diffusion": "pipelines.generators.diffusion"}
assert tuple(KINDS) == GENERATOR_KINDS  # the names config checks
DEFAULT = "pggan"  # runs made before generator.kind existed are PGGANs


class Sampler(Protocol):
    resolution: int
    label_dim: int

    def sample(self, n: int, seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
        """n images (n, 1, R, R) as uint8 on the CPU."""
        ...


def kind_module(kind: str) -> ModuleType:
    """The module of a generator kind; a user error naming the kinds for an unknown one."""
    if kind not in KINDS:
        raise RareganError(f"generator.kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
    return importlib.import_module(KINDS[kind])


def config_kind(cfg: dict) -> str:
    """The generator kind a config trains."""
    return (cfg.get("generator") or {}).get("kind", DEFAULT)


def run_kind(run: Path) -> str:
    """The generator kind of a run folder, from its summary or config (PGGAN before either said)."""
    run = Path(run)
    for name in ("summary.json", "DONE"):
        path = run / name
        if path.is_file():
            try:
                kind = json.loads(path.read_text() or "{}").get("generator")
            except ValueError:
                kind = None
            if kind:
                return kind
    return DEFAULT


def train(
    prepared, classes, fraction: float, cfg: dict, run: Path, opts=None, checkpoint_every=None
) -> Path:
    """Train (or resume) the generator `cfg` names in `run` (checkpoints every `checkpoint_every`
    kimg when given, else the kind's default)."""
    module = kind_module(config_kind(cfg))
    return module.train(prepared, classes, fraction, cfg, run, opts, checkpoint_every)


def fingerprint(prepared, cfg, classes, fraction, rows, precision="32", source_id=None) -> dict:
    """The fingerprint of the run the config's generator would make."""
    module = kind_module(config_kind(cfg))
    return module.fingerprint(prepared, cfg, classes, fraction, rows, precision, source_id)


def section(cfg: dict) -> str:
    """The name of the config section of the generator `cfg` names (its resolution, seed, …)."""
    kind = config_kind(cfg)
    if kind not in KIND_SECTION:
        kind_module(kind)  # the user error naming the kinds
    return KIND_SECTION[kind]


def load(run: Path, device="cpu", checkpoint: Path | None = None, raw: bool = False):
    """A finished run's sampler and summary, whatever its kind."""
    return kind_module(run_kind(run)).load(run, device, checkpoint, raw)
