"""The GPU path in one prepared check: GPU tests, PGGAN and DenseNet-121 throughput, a timed real GAN run.

    python benchmarks/gpu_check.py OUT [--dry-run] [--data PATH] [--gan-seconds S]

Writes OUT/summary.json and OUT/summary.txt (also printed), OUT/tests.log, OUT/gan.log,
OUT/gan_samples.png and OUT/gan_eval.json, and the GAN run under OUT/work/. Sections:
  tests      pytest -m gpu (the tests that skip without CUDA)
  pggan      PGGAN training img/s, FLOPs per step (FlopCounterMode's formulas) and utilization
             against the GPU's dense bf16/fp16 peak, at the reference config and the paper's 256 px
             stage, fp32 and bf16 autocast (gan.precision bf16; the penalty's gradient stays fp32)
  classify   DenseNet-121 training img/s at 224 px, batch 64, fp32 and bf16 autocast, through the
             store + DataLoader workers vs one in-memory batch, and their ratio (target >= 0.9)
  gan        `raregan gan` on the Kermany viral positives (--rarefy viral=0.05) at 128 px, its
             --kimg sized from the measured throughput to end near --gan-seconds; then `gan-eval`
Each in-process step records its peak GPU memory (torch.cuda.max_memory_allocated, reset first).
`--dry-run` runs every section at tiny sizes (16-32 px, 2-3 steps, a GAN of a few seconds) on
whatever device there is, and skips what needs CUDA with a line saying so. The data default is
shared/data/chest_xray inside the checkout (how it travels to a lent GPU machine), else
../shared/data/chest_xray beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from bench_classify_datapath import steps_per_second  # noqa: E402
from gpu_timing import (  # noqa: E402
    Timed,
    peak_memory_gib,
    peak_tflops,
    reset_memory,
    sync,
    utilization,
)
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from pipelines.machine import run_device  # noqa: E402

SECTIONS = ("env", "tests", "pggan", "classify", "gan")
REF = dict(resolution=64, channels=[128, 128, 128, 64, 32], latent=128, batch=16)
GAN_CHANNELS_128 = [128, 128, 128, 128, 64, 32]  # 4 ... 128 px, the reference plan one level up


# ---- PGGAN throughput --------------------------------------------------------------------------
def bench_pggan(
    resolution: int,
    channels: list[int],
    latent: int,
    batch: int,
    steps: int,
    warmup: int = 2,
    precision: str = "32",
) -> dict:
    """img/s, FLOPs per step, utilization and peak memory of the fully grown PGGAN training step
    (`precision` "32" or "bf16": the module's autocast of G and D)."""
    from pggan.module import PGGAN

    module = PGGAN(
        resolution, channels, latent, default_batch=batch, kimg_per_phase=1e6, precision=precision
    )
    module.images_seen = module.schedule.phase_start(module.schedule.n_phases - 1)
    n = steps + warmup + 1
    data = TensorDataset(torch.rand(n * batch, 1, resolution, resolution) * 2 - 1)
    timer = Timed(warmup)
    reset_memory()
    trainer = pl.Trainer(
        accelerator="auto", devices=1, max_epochs=1, limit_train_batches=n, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer],
    )  # fmt: skip
    trainer.fit(module, DataLoader(data, batch_size=batch, pin_memory=torch.cuda.is_available()))
    seconds = (timer.end - timer.start) / timer.n if timer.n else float("nan")
    return {
        "resolution": resolution,
        "channels": channels,
        "batch": batch,
        "precision": "fp32" if precision == "32" else precision,
        "steps_timed": timer.n,
        "img_s": batch / seconds,
        "ms_step": seconds * 1e3,
        "gflop_step": timer.flops / 1e9,
        **utilization(timer.flops, seconds),
        "peak_mem_gib": peak_memory_gib(),
    }


def section_pggan(dry: bool) -> dict:
    """The reference config and the paper's 256 px stage, fp32 and (on a bf16 GPU) bf16."""
    paper = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())["gan"]
    if dry:
        ref = dict(resolution=16, channels=[32, 16, 8], latent=16, batch=4)
        big = dict(resolution=32, channels=[32, 32, 16, 8], latent=32, batch=4)
        steps = 2
    else:
        ref = REF
        big = dict(
            resolution=paper["resolution"],
            channels=paper["channels"],
            latent=paper["latent_dim"],
            batch=paper["batch_per_resolution"][paper["resolution"]],
        )
        steps = 20
    out = {}
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    for name, cfg in (("reference", ref), ("paper_256", big)):
        out[name] = bench_pggan(**cfg, steps=steps)
        if bf16:
            out[f"{name}_bf16"] = bench_pggan(**cfg, steps=steps, precision="bf16")
    if not bf16:
        out["note"] = "bf16 not measured: no CUDA device with native bf16 here"
    return out


# ---- DenseNet-121 throughput -------------------------------------------------------------------
def classifier_img_s(batches, steps: int, bf16: bool, label_names: list[str], task: str) -> dict:
    """Train DenseNet-121 `steps` steps (after 2 warm-up) on (uint8 images, labels) batches."""
    from classify import Classifier

    torch.manual_seed(0)
    module = Classifier("densenet121", label_names, task, augment={}).to(run_device()).train()
    reset_memory()
    img_s = steps_per_second(module, batches, steps, augment=False, bf16=bf16, lr=1e-4, sync=sync)
    return {"img_s": img_s, "peak_mem_gib": peak_memory_gib()}


def section_classify(data: Path, dry: bool) -> dict:
    """Store + DataLoader workers vs one in-memory batch, fp32 and bf16 autocast."""
    from pipelines.data import load_records
    from pipelines.data.store import StoreDataset, build_store

    size, batch, steps, workers = (32, 2, 1, 0) if dry else (224, 64, 20, 8)
    rec = load_records(data)
    n = (steps + 2) * batch
    paths = rec.frame["path"].tolist()[: 2 * n]
    store = build_store(paths, size, cache_dir=REPO / "runs" / "store", progress=False)
    labels = rec.labels[: len(store)]
    rows = np.arange(len(store))
    x = torch.from_numpy(np.ascontiguousarray(store.view[rows[:batch]]))
    y = torch.from_numpy(labels[:batch].copy())
    cuda = torch.cuda.is_available()
    out = {"size": size, "batch": batch, "steps": steps, "workers": workers}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        if bf16 and not cuda:
            out[name] = {"status": "skipped", "reason": "bf16 autocast timed on CUDA only"}
            continue
        loader = DataLoader(
            StoreDataset(store, rows, labels), batch_size=batch, shuffle=True,
            num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0, drop_last=True,
        )  # fmt: skip
        memory = classifier_img_s(
            iter(lambda: (x, y), None), steps, bf16, rec.label_names, rec.task
        )
        real = classifier_img_s(iter(loader), steps, bf16, rec.label_names, rec.task)
        out[name] = {
            "in_memory_img_s": memory["img_s"],
            "datapath_img_s": real["img_s"],
            "ratio": real["img_s"] / memory["img_s"],
            "peak_mem_gib": max(memory["peak_mem_gib"] or 0, real["peak_mem_gib"] or 0) or None,
        }
    return out


# ---- a real GAN run through the CLI ------------------------------------------------------------
def section_gan(data: Path, out: Path, dry: bool, seconds: float, ref_img_s: float | None) -> dict:
    """`raregan gan` sized to end near `seconds`, then `raregan gan-eval`; sample grid and numbers."""
    from pggan.schedule import Schedule

    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    if dry:
        gan = dict(resolution=16, channels=[16, 16, 8], latent_dim=16)
    else:
        gan = dict(resolution=128, channels=GAN_CHANNELS_128, latent_dim=128)
    # A rough, cautious rate for the whole schedule: a third of the 64 px reference step's img/s
    # (lower phases are cheaper, the 128 px ones dearer); the summary records the wall time.
    rate = ref_img_s / 3 if ref_img_s else (10.0 if dry else 300.0)
    phases = Schedule(gan["resolution"], 1.0).n_phases
    kimg = max(round(seconds * rate / phases / 1e3, 3), 0.004)
    cfg = {"data": {"size": gan["resolution"]}, "gan": {**gan, "kimg_per_phase": kimg}}
    (work / "gan.yaml").write_text(yaml.safe_dump(cfg))
    run, ev = work / "gan", work / "gan_eval"
    common = [sys.executable, "-m", "pipelines"]
    cmd = common + [
        "gan", "--data", str(data), "--rarefy", "viral=0.05", "--class", "viral",
        "--size", str(gan["resolution"]), "--config", str(work / "gan.yaml"),
        "--kimg", str(kimg), "--out", str(run), "--no-progress", "--redo",
    ]  # fmt: skip
    t = time.perf_counter()
    with open(out / "gan.log", "w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=1.5 * seconds + 90)
        wall = time.perf_counter() - t
        if done.returncode:
            raise RuntimeError(f"raregan gan exited {done.returncode}; see gan.log")
        shutil.rmtree(ev, ignore_errors=True)
        cmd = common + [
            "gan-eval",
            "--run",
            str(run),
            "--n",
            "48" if dry else "256",  # C2ST needs >= 20 samples a side
            "--out",
            str(ev),
        ]
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=600)
        if done.returncode:
            raise RuntimeError(f"raregan gan-eval exited {done.returncode}; see gan.log")
    shutil.copy(run / "samples" / "final.png", out / "gan_samples.png")
    shutil.copy(ev / "eval.json", out / "gan_eval.json")
    report = json.loads((ev / "eval.json").read_text())
    numbers = {k: v for k, v in report.items() if isinstance(v, int | float)}
    for key in ("c2st", "c2st_real_baseline"):  # the headline fidelity figure and its baseline
        if isinstance(report.get(key), dict):
            numbers[f"{key}_auc"] = report[key]["auc"]
    return {
        "resolution": gan["resolution"],
        "channels": gan["channels"],
        "kimg_per_phase": kimg,
        "phases": phases,
        "budget_s": seconds,
        "wall_s": wall,
        "kimg_total": kimg * phases,
        "eval": numbers or report,
        "peak_mem_gib": None,  # a subprocess: not measured here
    }


# ---- tests -------------------------------------------------------------------------------------
def section_tests(out: Path) -> dict:
    """pytest -m gpu over the suite; counts from its last line."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    (out / "tests.log").write_text(done.stdout + done.stderr)
    last = (done.stdout.strip().splitlines() or [""])[-1]
    counts = {k: 0 for k in ("passed", "failed", "skipped", "error")}
    for part in last.replace(" in ", ", ").split(", "):
        num, _, word = part.strip().partition(" ")
        if num.isdigit() and word.rstrip("s") in counts:
            counts[word.rstrip("s")] = int(num)
    return {"returncode": done.returncode, "line": last, **counts}


# ---- driver ------------------------------------------------------------------------------------
def env() -> dict:
    """Versions and the device."""
    cuda = torch.cuda.is_available()
    return {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "cuda": torch.version.cuda if cuda else None,
        "peak_tflops_bf16_dense": peak_tflops(),
        "gpu_figures_measured": cuda,
    }


def fmt(x, spec: str = ".1f") -> str:
    """A number, or '—' for None."""
    return "—" if x is None else format(x, spec)


def summary_text(res: dict) -> str:
    """The one-screen human summary."""
    e = res["env"]
    lines = [f"gpu_check ({'dry run' if res['dry_run'] else 'full'}): torch {e.get('torch')}, "
             f"{e.get('device')}, peak {fmt(e.get('peak_tflops_bf16_dense'), '.0f')} TFLOP/s, "
             f"wall {res['wall_s']:.0f} s"]  # fmt: skip
    for name in SECTIONS[1:]:
        sec = res[name]
        if sec.get("status") != "ok":
            lines.append(f"[{name}] {sec.get('status')}: {sec.get('reason', '')}")
            continue
        if name == "tests":
            lines.append(f"[tests] pytest -m gpu: {sec['line']}")
        elif name == "pggan":
            if "note" in sec:
                lines.append(f"[pggan] {sec['note']}")
            for key in [k for k in sec if k.startswith(("reference", "paper_256"))]:
                s = sec[key]
                lines.append(
                    f"  {key:<14} {s['resolution']} px batch {s['batch']}: {fmt(s['img_s'])} img/s, "
                    f"{fmt(s['ms_step'])} ms/step, {fmt(s['gflop_step'])} GFLOP/step, "
                    f"{fmt(s['tflops'], '.2f')} TFLOP/s = "
                    f"{fmt(s['utilization'] and 100 * s['utilization'])}% of peak, "
                    f"peak mem {fmt(s['peak_mem_gib'], '.2f')} GiB"
                )
        elif name == "classify":
            lines.append(f"[classify] densenet121 {sec['size']} px batch {sec['batch']}, "
                         f"{sec['workers']} workers (target ratio >= 0.9)")  # fmt: skip
            for key in ("fp32", "bf16"):
                s = sec[key]
                if "ratio" not in s:
                    lines.append(f"  {key}: skipped: {s['reason']}")
                    continue
                lines.append(
                    f"  {key}: data path {fmt(s['datapath_img_s'])} img/s vs in-memory "
                    f"{fmt(s['in_memory_img_s'])} img/s = {s['ratio']:.2f}x, "
                    f"peak mem {fmt(s['peak_mem_gib'], '.2f')} GiB"
                )
        elif name == "gan":
            first = ("c2st_auc", "c2st_real_baseline_auc")
            items = sorted(sec["eval"].items(), key=lambda kv: kv[0] not in first)
            ev = ", ".join(f"{k} {fmt(v, '.3g')}" for k, v in items[:6])
            lines.append(
                f"[gan] {sec['resolution']} px, {sec['kimg_total']:.3g} kimg in {sec['wall_s']:.0f} s "
                f"(budget {sec['budget_s']:.0f} s); gan_samples.png; eval: {ev}"
            )
    return "\n".join(lines) + "\n"


def run_section(res: dict, name: str, fn, needs_cuda: bool = False) -> None:
    """Run one section into res[name], recording a skip or an error instead of stopping."""
    t = time.perf_counter()
    if needs_cuda and not torch.cuda.is_available():
        res[name] = {"status": "skipped", "reason": "no CUDA device (needs a GPU)"}
        return
    try:
        res[name] = {"status": "ok", **fn()}
    except Exception as err:  # one broken section must not hide the others
        res[name] = {"status": "error", "reason": f"{type(err).__name__}: {err}",
                     "traceback": traceback.format_exc()}  # fmt: skip
    res[name]["seconds"] = time.perf_counter() - t


def default_data() -> Path:
    """shared/data/chest_xray in the checkout when there, else ../shared/data/chest_xray."""
    inside = REPO / "shared" / "data" / "chest_xray"
    return inside if inside.is_dir() else REPO.parent / "shared" / "data" / "chest_xray"


def main(argv: list[str] | None = None) -> dict:
    """Parse flags, run every section, write summary.json and summary.txt, print the summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output folder")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes, any device, < 1 min")
    ap.add_argument("--data", type=Path, default=default_data(), help="Kermany chest_xray root")
    ap.add_argument("--gan-seconds", type=float, default=None, help="GAN budget (240; dry 3)")
    args = ap.parse_args(argv)
    dry, out = args.dry_run, args.out
    out.mkdir(parents=True, exist_ok=True)
    seconds = args.gan_seconds or (3.0 if dry else 240.0)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    elif dry:  # tiny nets on shared cores: one thread avoids OpenMP contention
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"  # the CLI subprocesses too
    start = time.perf_counter()
    res: dict = {"dry_run": dry, "env": env()}
    if dry and not torch.cuda.is_available():
        res["tests"] = {"status": "skipped", "reason": "no CUDA device: the gpu tests skip"}
    else:
        run_section(res, "tests", lambda: section_tests(out), needs_cuda=not dry)
    run_section(res, "pggan", lambda: section_pggan(dry), needs_cuda=not dry)
    if not args.data.is_dir():
        for name in ("classify", "gan"):
            res[name] = {"status": "skipped", "reason": f"no data at {args.data} (--data)"}
    else:
        run_section(res, "classify", lambda: section_classify(args.data, dry), needs_cuda=not dry)
        ref = res["pggan"].get("reference", {}).get("img_s")
        gan = lambda: section_gan(args.data, out, dry, seconds, ref)  # noqa: E731
        run_section(res, "gan", gan, needs_cuda=not dry)
    res["wall_s"] = time.perf_counter() - start
    text = summary_text(res)
    (out / "summary.json").write_text(json.dumps(res, indent=2, default=str))
    (out / "summary.txt").write_text(text)
    print(text, end="", flush=True)
    return res


if __name__ == "__main__":
    main()
