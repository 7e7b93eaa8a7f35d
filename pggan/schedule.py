"""Progressive schedule: a pure function of the number of real images shown so far.

Phases, in order: stable(level 0), fade(1), stable(1), ..., fade(L), stable(L). Each lasts
``kimg_per_phase`` thousand images (the last stable phase ``final_kimg`` if given). During a fade
alpha ramps linearly from 0 to 1; otherwise alpha is 1. Being pure, resuming at a count gives
exactly the state an uninterrupted run had there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def levels(resolution: int) -> int:
    """Levels of a PGGAN growing 4 px → `resolution` px by doubling; ValueError unless a power of two ≥ 4."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 4:
        raise ValueError(f"resolution {resolution!r} is not a power of two >= 4")
    if resolution & (resolution - 1):
        raise ValueError(f"resolution {resolution} is not a power of two >= 4")
    return int(math.log2(resolution)) - 1


@dataclass(frozen=True)
class Phase:
    """The training state at one image count."""

    level: int
    alpha: float
    batch_size: int
    index: int
    name: str  # "fade" or "stable"
    resolution: int
    done: bool = False


@dataclass(frozen=True)
class Schedule:
    """Phase lengths (thousands of images, floats allowed) and batch size per resolution (px)."""

    resolution: int = 64
    kimg_per_phase: float = 600.0
    batch_per_resolution: dict[int, int] = field(default_factory=dict)
    default_batch: int = 16
    final_kimg: float | None = None

    def __post_init__(self) -> None:
        """Validate the configuration."""
        levels(self.resolution)
        if not self.kimg_per_phase > 0:
            raise ValueError(f"kimg_per_phase must be > 0, got {self.kimg_per_phase}")
        if self.final_kimg is not None and not self.final_kimg > 0:
            raise ValueError(f"final_kimg must be > 0, got {self.final_kimg}")
        for res, batch in {**self.batch_per_resolution, "default": self.default_batch}.items():
            if int(batch) < 1:
                raise ValueError(f"batch size for resolution {res} must be >= 1, got {batch}")
        bad = [r for r in self.batch_per_resolution if int(r) not in self.resolutions]
        if bad:
            raise ValueError(
                f"batch_per_resolution has resolutions {bad} not in {self.resolutions}"
            )

    @property
    def n_levels(self) -> int:
        """Number of resolutions 4 .. resolution."""
        return int(math.log2(self.resolution)) - 1

    @property
    def resolutions(self) -> list[int]:
        """Resolutions in px, one per level."""
        return [4 * 2**k for k in range(self.n_levels)]

    @property
    def n_phases(self) -> int:
        """Stable phase of level 0, then a fade and a stable phase per further level."""
        return 2 * self.n_levels - 1

    def batch_size(self, level: int) -> int:
        """Batch size at a level (from its resolution, else the default)."""
        table = {int(r): int(b) for r, b in self.batch_per_resolution.items()}
        return table.get(4 * 2**level, self.default_batch)

    @property
    def max_batch(self) -> int:
        """Largest batch over all levels (what the dataloader should yield)."""
        return max(self.batch_size(k) for k in range(self.n_levels))

    def phase_level_name(self, index: int) -> tuple[int, str]:
        """Level and name of phase ``index``."""
        if index == 0:
            return 0, "stable"
        return (index + 1) // 2, ("fade" if index % 2 else "stable")

    def phase_images(self, index: int) -> int:
        """Length of phase ``index`` in images."""
        last = index == self.n_phases - 1
        kimg = self.final_kimg if last and self.final_kimg is not None else self.kimg_per_phase
        return max(1, round(kimg * 1000))

    def phase_start(self, index: int) -> int:
        """Image count at which phase ``index`` begins."""
        return sum(self.phase_images(i) for i in range(index))

    @property
    def total_images(self) -> int:
        """Images shown over the whole schedule (its end)."""
        return self.phase_start(self.n_phases)

    def at(self, images_seen: int) -> Phase:
        """The phase, level, alpha and batch size after ``images_seen`` real images."""
        if images_seen < 0:
            raise ValueError(f"images_seen must be >= 0, got {images_seen}")
        start = 0
        for index in range(self.n_phases):
            length = self.phase_images(index)
            if images_seen < start + length:
                level, name = self.phase_level_name(index)
                alpha = (images_seen - start) / length if name == "fade" else 1.0
                return Phase(level, alpha, self.batch_size(level), index, name, 4 * 2**level)
            start += length
        level = self.n_levels - 1
        last = self.n_phases - 1
        return Phase(level, 1.0, self.batch_size(level), last, "stable", self.resolution, True)

    def total_steps(self, world_size: int = 1) -> int:
        """Training steps to the end when each step shows ``batch * world_size`` images."""
        seen, steps = 0, 0
        for index in range(self.n_phases):
            level, _ = self.phase_level_name(index)
            per_step = self.batch_size(level) * world_size
            end = self.phase_start(index + 1)
            if seen < end:
                n = -(-(end - seen) // per_step)
                seen, steps = seen + n * per_step, steps + n
        return steps
