"""PGGAN Lightning module: real learning on a toy distribution, exact resume, schedule control."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from pggan.module import PGGAN, prepare_reals
from pggan.sample import generate

SIZE = 16


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny nets on shared cores: one thread avoids OpenMP contention (10x slower otherwise)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def discs(n: int, seed: int) -> torch.Tensor:
    """Bright discs (radius 3-5) at random positions on a dark background, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    cy, cx = (torch.rand(2, n, 1, 1, generator=g) * 8 + 4).unbind(0)
    r = torch.rand(n, 1, 1, generator=g) * 2 + 3
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    inside = (yy - cy).square() + (xx - cx).square() <= r.square()
    return (inside.float() * 2 - 1).unsqueeze(1)


def make_module(**kw) -> PGGAN:
    base = dict(resolution=SIZE, channels=[32, 16, 8], latent_dim=16, kimg_per_phase=0.2,
                batch_per_resolution={4: 16, 8: 16, 16: 16}, seed=0)  # fmt: skip
    return PGGAN(**{**base, **kw})


def trainer(tmp_path, **kw) -> pl.Trainer:
    base = dict(accelerator="cpu", devices=1, max_epochs=1000, logger=False,
                enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    return pl.Trainer(**{**base, **kw})


def loader(n: int = 256, seed: int = 1) -> DataLoader:
    return DataLoader(TensorDataset(discs(n, seed)), batch_size=32, shuffle=False)


def _distances(module: PGGAN, reals: torch.Tensor) -> tuple[float, float]:
    """Brightness gap and 1-D Wasserstein distance of pixel values, EMA samples vs reals."""
    fake = generate(module.G_ema, reals.shape[0], seed=5).float() / 127.5 - 1
    gap = (fake.mean() - reals.mean()).abs().item()
    w1 = (fake.flatten().sort().values - reals.flatten().sort().values).abs().mean().item()
    return gap, w1


@pytest.mark.parametrize("resample", ["nearest", "lowpass"])
def test_fit_learns_toy_distribution_and_stops_at_schedule_end(tmp_path, resample):
    torch.manual_seed(0)
    batch = {4: 32, 8: 32, 16: 32}
    module = make_module(kimg_per_phase=1.0, lr=3e-4, batch_per_resolution=batch, resample=resample)
    assert module.G.resample == module.D.resample == module.G_ema.resample == resample
    reals = discs(256, seed=9)
    before = _distances(module, reals)
    tr = trainer(tmp_path)
    tr.fit(module, loader())
    after = _distances(module, reals)
    assert module.phase.done and module.images_seen >= module.schedule.total_images
    assert module.steps == module.schedule.total_steps()  # stopped exactly at the end
    # Seen on this config (156 steps, about 20 s on 1 core): nearest gap 0.39 -> 0.03, W1 0.42 ->
    # 0.19; lowpass (its smoother edges learn the binary discs' brightness more slowly) gap 0.43 ->
    # 0.17, W1 0.49 -> 0.21.
    gap_ratio = 0.3 if resample == "nearest" else 0.6
    assert after[0] < gap_ratio * before[0], (before, after)
    assert after[1] < 0.6 * before[1], (before, after)
    logged = tr.callback_metrics
    assert {"d_loss", "g_loss", "gp", "level", "alpha", "kimg"} <= set(logged)
    assert logged["level"].item() == 2.0


ADAPTIVE = dict(augment_policy="translation,cutout,color,affine", augment_p=0.5,
                augment_adaptive=True, augment_speed_kimg=1.0)  # fmt: skip


@pytest.mark.parametrize(
    "k, extra", [(4, {}), (5, ADAPTIVE)], ids=["plain", "adaptive-augment-mid-interval"]
)
def test_checkpoint_resume_gives_identical_training(tmp_path, k, extra):
    """k batches, save, resume for k more == 2k uninterrupted (across a level change); with
    adaptive augmentation the checkpoint falls inside an interval of the p heuristic."""
    ref = make_module(kimg_per_phase=0.03, **extra)
    trainer(tmp_path, max_epochs=2, limit_train_batches=k).fit(ref, loader())

    first = make_module(kimg_per_phase=0.03, **extra)
    tr1 = trainer(tmp_path, max_epochs=1, limit_train_batches=k)
    tr1.fit(first, loader())
    ckpt = tmp_path / "mid.ckpt"
    tr1.save_checkpoint(ckpt)
    assert first.phase.level < ref.phase.level  # a level change happens after the checkpoint

    resumed = make_module(kimg_per_phase=0.03, **extra)
    with torch.no_grad():  # scramble the weights: all state must come from the checkpoint
        for p in resumed.parameters():
            p.add_(1.0)
    trainer(tmp_path, max_epochs=2, limit_train_batches=k).fit(resumed, loader(), ckpt_path=ckpt)
    assert resumed.images_seen == ref.images_seen and resumed.steps == ref.steps == 2 * k
    for (name, a), b in zip(ref.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    if extra:
        assert first.ada.steps == 1 and first.ada.p != 0.5  # mid-interval, p already moved
        assert resumed.ada.state_dict() == ref.ada.state_dict()
        assert ref.ada.p != first.ada.p  # p moved again after the checkpoint


def test_augmented_training_logs_p_and_keeps_the_default_unaugmented(tmp_path):
    module = make_module(kimg_per_phase=0.03, **ADAPTIVE)
    tr = trainer(tmp_path, max_epochs=1, limit_train_batches=4)
    tr.fit(module, loader())
    logged = tr.callback_metrics
    assert logged["aug_p"].item() == 0.5  # the p of the last step, before it moved
    assert module.aug_p != 0.5 and all(torch.isfinite(logged[k]) for k in ("d_loss", "g_loss"))
    plain = make_module(kimg_per_phase=0.03)
    tr = trainer(tmp_path, max_epochs=1, limit_train_batches=1)
    tr.fit(plain, loader())
    assert plain.aug_p == 0.0 and "aug_p" not in tr.callback_metrics


def test_fixed_p_augmentation_changes_training_but_p_zero_does_not(tmp_path):
    runs = {}
    for name, extra in {"off": {}, "p0": dict(augment_policy="color", augment_p=0.0),
                        "p1": dict(augment_policy="color", augment_p=1.0)}.items():  # fmt: skip
        module = make_module(kimg_per_phase=0.03, **extra)
        trainer(tmp_path, max_epochs=1, limit_train_batches=2).fit(module, loader())
        runs[name] = module.G.dense.weight.detach()
    assert torch.equal(runs["off"], runs["p0"]) and not torch.equal(runs["off"], runs["p1"])


def test_bf16_autocast_step_keeps_losses_and_penalty_gradient_in_fp32(tmp_path, monkeypatch):
    """The bf16 path forced on a CPU without native bf16 (emulated: slow, so one tiny step)."""
    module = make_module(kimg_per_phase=0.03, precision="bf16", **ADAPTIVE)
    seen = {"conv": set(), "grad": set()}
    module.D.register_forward_hook(lambda m, i, out: seen["conv"].add(out.dtype))
    grad = torch.autograd.grad

    def recording_grad(outputs, inputs, *args, **kwargs):
        out = grad(outputs, inputs, *args, **kwargs)
        seen["grad"].update(g.dtype for g in out)
        return out

    monkeypatch.setattr(torch.autograd, "grad", recording_grad)
    tr = trainer(tmp_path, max_epochs=1, limit_train_batches=1)
    tr.fit(module, loader())
    assert seen["conv"] == {torch.bfloat16} and seen["grad"] == {torch.float32}
    logged = tr.callback_metrics
    assert all(torch.isfinite(logged[k]) and logged[k].dtype == torch.float32
               for k in ("d_loss", "g_loss", "gp"))  # fmt: skip
    params = [*module.G.parameters(), *module.D.parameters(), *module.G_ema.parameters()]
    assert all(p.dtype == torch.float32 for p in params)
    with pytest.raises(ValueError, match="precision"):
        make_module(precision="fp16")


def test_optimizer_state_reset_at_each_new_level(tmp_path):
    module = make_module(kimg_per_phase=0.03)
    trainer(tmp_path, max_epochs=1, limit_train_batches=9).fit(module, loader())
    level = module.phase.level
    assert level > 0
    s = module.schedule
    steps_at_level, seen = 0, 0
    while seen < module.images_seen:
        p = s.at(seen)
        steps_at_level = steps_at_level + 1 if p.level == level else 0
        seen += p.batch_size
    opt_g, opt_d = module.optimizers(use_pl_optimizer=False)
    for opt, param in ((opt_g, module.G.dense.weight), (opt_d, module.D.dense.weight)):
        assert int(opt.state[param]["step"]) == steps_at_level


def test_prepare_reals_area_downsamples_and_blends():
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    full = prepare_reals(x, 8, 1.0)
    torch.testing.assert_close(full, x.unfold(2, 2, 2).unfold(3, 2, 2).mean(dim=(-1, -2)))
    half = prepare_reals(x, 8, 0.25)
    coarse = full.unfold(2, 2, 2).unfold(3, 2, 2).mean(dim=(-1, -2))
    coarse = coarse.repeat_interleave(2, 2).repeat_interleave(2, 3)
    torch.testing.assert_close(half, 0.75 * coarse + 0.25 * full)


def test_prepare_reals_lowpass_resamples_as_g_and_d_do():
    """Under lowpass the reals at lower levels are binomially filtered, never box-averaged, and a
    fade blends in their lowpass-upsampled coarser version (as G's output fades)."""
    from pggan.layers import downsample, upsample

    x = torch.rand(2, 1, 16, 16) * 2 - 1
    full = prepare_reals(x, 4, 1.0, "lowpass")
    torch.testing.assert_close(full, downsample(downsample(x, 2, "lowpass"), 2, "lowpass"))
    assert not torch.allclose(full, prepare_reals(x, 4, 1.0))
    half = prepare_reals(x, 8, 0.25, "lowpass")
    eight = downsample(x, 2, "lowpass")
    coarse = upsample(downsample(eight, 2, "lowpass"), "lowpass")
    torch.testing.assert_close(half, 0.75 * coarse + 0.25 * eight)


def test_training_step_resamples_the_reals_as_its_networks_do(tmp_path, monkeypatch):
    import pggan.module

    seen = []

    def recording(x, resolution, alpha, resample="nearest"):
        seen.append(resample)
        return prepare_reals(x, resolution, alpha, resample)

    monkeypatch.setattr(pggan.module, "prepare_reals", recording)
    module = make_module(resample="lowpass")
    trainer(tmp_path, max_epochs=1, limit_train_batches=2).fit(module, loader())
    assert seen == ["lowpass", "lowpass"]
    with pytest.raises(ValueError, match="use one of nearest, lowpass"):
        prepare_reals(torch.zeros(1, 1, 8, 8), 4, 1.0, "Lowpass")


def test_label_conditional_fit_runs_on_image_label_batches(tmp_path):
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).repeat(48, 1)
    data = DataLoader(TensorDataset(discs(96, 3), labels), batch_size=32)
    module = make_module(label_dim=2, kimg_per_phase=0.03)
    trainer(tmp_path, max_epochs=1, limit_train_batches=3).fit(module, data)
    assert module.steps == 3 and module.images_seen == 48
    z = torch.randn(2, 16)
    a = module.G_ema(z, 1, 1.0, labels[:2])
    b = module.G_ema(z, 1, 1.0, labels[:2].flip(1))
    assert not torch.allclose(a, b)


def test_label_conditional_gan_learns_what_each_label_looks_like(tmp_path):
    """Label [1, 0]: dark images with a bright disc; [0, 1]: the negatives (bright, dark disc)."""
    x = discs(256, 4)
    x[128:] = -x[128:]  # image means: about -0.6 for the first label, +0.6 for the second
    labels = torch.zeros(256, 2)
    labels[:128, 0], labels[128:, 1] = 1.0, 1.0
    data = DataLoader(TensorDataset(x, labels), batch_size=32, shuffle=True,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    torch.manual_seed(0)
    batch = {4: 32, 8: 32, 16: 32}
    module = make_module(label_dim=2, kimg_per_phase=3.0, batch_per_resolution=batch)
    trainer(tmp_path).fit(module, data)
    assert module.phase.done
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).repeat_interleave(64, 0)
    fake = generate(module.G_ema, 128, seed=7, labels=y).float() / 127.5 - 1
    means = fake.mean(dim=(1, 2, 3))
    # Seen: -0.52 and +0.54, every sample on its label's side (an unconditional GAN: ~0 and ~0).
    assert means[:64].mean() < -0.3 and means[64:].mean() > 0.3, means
    assert (means[:64] < 0).float().mean() > 0.9 and (means[64:] > 0).float().mean() > 0.9


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_steps_on_cuda(tmp_path):
    """A few PGGAN training steps on the GPU: weights on CUDA, finite losses, images counted."""
    module = make_module()
    t = trainer(tmp_path, accelerator="gpu", limit_train_batches=4, max_epochs=1)
    t.fit(module, loader(128))
    assert next(module.G.parameters()).is_cuda and next(module.G_ema.parameters()).is_cuda
    assert module.images_seen == 4 * 16 and module.steps == 4
    assert all(torch.isfinite(v) for k, v in t.callback_metrics.items() if k.endswith("loss"))


def test_start_from_takes_the_source_weights_and_trains_only_the_final_phase(tmp_path):
    source = make_module(seed=3)
    trainer(tmp_path, max_epochs=1, limit_train_batches=3).fit(source, loader())
    module = make_module(final_kimg=0.1)
    module.start_from(source.state_dict())
    for net in ("G", "D", "G_ema"):
        mine, theirs = getattr(module, net).state_dict(), getattr(source, net).state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    last = module.schedule.n_phases - 1
    assert module.images_seen == module.images_start == module.schedule.phase_start(last)
    assert module.phase.level == 2 and module.phase.alpha == 1.0
    tr = trainer(tmp_path)
    tr.fit(module, loader())
    assert module.phase.done
    trained = module.images_seen - module.images_start
    assert 100 <= trained < 100 + 16  # final_kimg 0.1, whole batches of 16
    assert tr.callback_metrics["level"].item() == 2.0


def test_ema_continue_keeps_the_sources_average_instead_of_restarting_its_ramp(tmp_path):
    # A fresh run ramps the EMA decay from 0.1 to forget its random start, and so does a plain
    # fine-tune; with ema_continue a fine-tune averages on from the source's G_ema at the paper's
    # decay from its first step (and on resume).
    source = make_module(seed=3)
    trainer(tmp_path, max_epochs=1, limit_train_batches=3).fit(source, loader())
    plain = make_module(final_kimg=0.1)
    plain.start_from(source.state_dict())
    assert make_module().ema_decay() == pytest.approx(0.1) == plain.ema_decay()
    module = make_module(final_kimg=0.1, ema_continue=True)
    module.start_from(source.state_dict())
    assert module.ema_decay() == 0.999
    ema_before = {k: v.clone() for k, v in module.G_ema.state_dict().items()}
    trainer(tmp_path, max_steps=1).fit(module, loader())
    moved = [
        (module.G_ema.state_dict()[k] - v).abs().max() / (module.G.state_dict()[k] - v).abs().max()
        for k, v in ema_before.items()
        if not torch.equal(module.G.state_dict()[k], v)
    ]
    assert moved and max(moved) < 0.01  # G_ema moved 1/1000 of the way to G, not 9/10
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    resumed = make_module(final_kimg=0.1, ema_continue=True)
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.ema_decay() == 0.999


def test_start_from_refuses_another_architecture():
    wider = make_module(channels=[32, 16, 16])
    with pytest.raises(
        ValueError,
        match=r"G.blocks.1.conv1.weight: this GAN has \(8, 16, 3, 3\), the source \(16, 16",
    ):
        make_module().start_from(wider.state_dict())
    larger = make_module(
        resolution=32, channels=[32, 16, 8, 8]
    )  # same levels plus one: extra weights
    with pytest.raises(ValueError, match=r"G.blocks.2.conv1.weight: this GAN has none, the source"):
        make_module().start_from(larger.state_dict())


def test_freeze_d_keeps_the_highest_levels_of_d_fixed(tmp_path):
    source = make_module(seed=3)
    module = make_module(final_kimg=0.05, freeze_d=1)
    module.start_from(source.state_dict())
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer(tmp_path).fit(module, loader())
    after = module.state_dict()
    frozen = ("D.from_rgb.2.", "D.blocks.1.")  # 16 px: its fromRGB and its 16 → 8 px block
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not {k for k in changed if k.startswith(frozen)}
    assert any(k.startswith("D.blocks.0.") for k in changed)  # the level below still learns
    assert any(k.startswith("G.blocks.1.") for k in changed) and "D.dense.weight" in changed
    with pytest.raises(ValueError, match=r"freeze_d must be in \[0, 2\]"):
        make_module(freeze_d=3)
