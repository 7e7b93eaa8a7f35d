"""Progressive schedule: phase order, linear fade, totals, purity (resume at a count)."""

from __future__ import annotations

import pytest
import torch

from pggan.schedule import Schedule


def _sched(**kw):
    base = dict(resolution=32, kimg_per_phase=0.1, batch_per_resolution={4: 8, 32: 4})
    return Schedule(**{**base, **kw})


def _walk(s: Schedule, world_size: int = 1):
    """Phases seen stepping through the schedule as the trainer does."""
    seen, out = 0, []
    while not (p := s.at(seen)).done:
        out.append((seen, p))
        seen += p.batch_size * world_size
    return seen, out


def test_phase_order_and_lengths():
    s = _sched()
    assert s.n_levels == 4 and s.n_phases == 7 and s.resolutions == [4, 8, 16, 32]
    names = [s.phase_level_name(i) for i in range(s.n_phases)]
    assert names == [(0, "stable"), (1, "fade"), (1, "stable"), (2, "fade"), (2, "stable"),
                     (3, "fade"), (3, "stable")]  # fmt: skip
    assert s.total_images == 700
    assert s.at(0).name == "stable" and s.at(0).level == 0 and s.at(0).alpha == 1.0
    assert s.at(100).name == "fade" and s.at(100).level == 1 and s.at(100).alpha == 0.0
    assert s.at(699).level == 3 and not s.at(699).done
    assert s.at(700).done and s.at(10**9).done


def test_levels_monotonic_and_alpha_linear_in_fades():
    s = _sched()
    _, walk = _walk(s)
    levels = [p.level for _, p in walk]
    assert levels == sorted(levels) and levels[-1] == 3
    for seen in range(0, s.total_images):
        p = s.at(seen)
        if p.name == "fade":
            start = s.phase_start(p.index)
            assert p.alpha == pytest.approx((seen - start) / 100)
        else:
            assert p.alpha == 1.0
    fade = [s.at(n).alpha for n in range(100, 200)]
    assert fade[0] == 0.0 and fade[-1] == pytest.approx(0.99)
    assert all(b > a for a, b in zip(fade, fade[1:], strict=False))


def test_batch_sizes_and_max_batch():
    s = _sched()
    assert [s.batch_size(k) for k in range(4)] == [8, 16, 16, 4]
    assert s.max_batch == 16
    assert s.at(650).batch_size == 4 and s.at(650).resolution == 32
    assert Schedule(64, 1.0, {"64": 2}).batch_size(4) == 2  # YAML-style string keys


def test_total_steps_matches_walk_and_final_kimg():
    for world in (1, 2):
        s = _sched(final_kimg=0.25)
        seen, walk = _walk(s, world)
        assert s.total_steps(world) == len(walk)
        assert seen >= s.total_images == 850
    assert _sched().phase_images(6) == 100 and _sched(final_kimg=0.25).phase_images(6) == 250


def test_resume_at_count_gives_identical_state():
    s = _sched()
    _, walk = _walk(s)
    fresh = _sched()  # a new object, as after a restart
    for seen, phase in walk:
        assert fresh.at(seen) == phase


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(resolution=24), "power of two"),
        (dict(kimg_per_phase=0), "kimg_per_phase"),
        (dict(batch_per_resolution={64: 4}), r"\[64\]"),
        (dict(batch_per_resolution={8: 0}), "resolution 8"),
        (dict(final_kimg=-1.0), "final_kimg"),
    ],
)
def test_bad_config_names_the_value(kw, match):
    with pytest.raises(ValueError, match=match):
        _sched(**kw)
    with pytest.raises(ValueError, match="images_seen"):
        _sched().at(-1)


def test_paper_config_builds_its_pggan_and_schedule_without_training():
    """The paper preset: 4 → 256 px, Karras's channel plan, 600-kimg phases and a long final phase."""
    from pipelines.config import load_config
    from pipelines.gan.run import gan_module

    cfg = load_config("paper")
    module = gan_module(cfg)
    sched = module.schedule
    assert sched.resolutions == [4, 8, 16, 32, 64, 128, 256] and sched.n_phases == 13
    assert [sched.phase_images(i) for i in range(12)] == [600_000] * 12
    assert sched.phase_images(12) == 4_800_000 and sched.total_images == 12_000_000
    assert module.G(torch.randn(2, 512), 6, 1.0).shape == (2, 1, 256, 256)
    n_params = sum(p.numel() for p in module.G.parameters())
    assert 15e6 < n_params < 30e6, n_params  # Karras's 256 px generator at 1 channel: ~20 M
    assert sched.batch_size(6) == 16
