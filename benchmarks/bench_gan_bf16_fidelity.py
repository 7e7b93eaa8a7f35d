"""Does bf16 cost the GAN fidelity? The cpu-results GAN trained in fp32 and in bf16, same seed and kimg.

Real data: Kermany chest_xray (Kermany, Zhang, Goldbaum 2018, doi:10.17632/rscbjbr9sj.2, CC BY 4.0),
viral pneumonia made rare (`--rarefy viral=0.05`), by default 100 % of the training patients (the 52
viral images of the GAN issue, x4 with the filter bank). Both GANs go through `raregan gan` with
`gan.precision` forced to 32 and to bf16 (same config, split, seed and 36-kimg schedule), then
`raregan gan-eval` measures each against the held-out real viral images: C2ST AUC with its 95 %
t-interval over 5 folds, held-out FID/KID, precision/recall, MS-SSIM. Target (issue: bf16 where the
CPU has it): the bf16 numbers within the noise of the fp32 ones; the C2ST interval is the noise this
script can state, so it prints whether each C2ST lies in the other's interval. With several
`--seeds` (GAN seeds, the same for both precisions) it also sets the fp32-vs-bf16 difference beside
the seed-to-seed spread within each precision, the noise that one GAN per precision cannot show.
Finished GANs under `--runs` are reused, so an interrupted run continues. Needs a CPU with native
bf16.

    python benchmarks/bench_gan_bf16_fidelity.py [--fraction F] [--seeds S …] [--classifier CKPT]
        [--runs DIR]
        [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.machine import cpu_bf16  # noqa: E402


def raregan(*args: str) -> None:
    """Run one raregan command from the repository root; its output is not shown."""
    cmd = [sys.executable, "-m", "pipelines", *args]
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)


def train_and_eval(precision: str, seed: int, args: argparse.Namespace) -> tuple[dict, dict]:
    """summary.json and eval.json of the GAN trained at `precision` ("32" or "bf16") and `seed`."""
    cfg = yaml.safe_load((REPO / "configs" / "cpu-results.yaml").read_text())
    cfg["gan"].update(precision=precision, seed=seed)
    if args.quick:  # a smoke run of the script, not a measurement
        cfg["gan"].update(kimg_per_phase=0.05, final_kimg=0.1, checkpoint_every_kimg=0.1)
    args.runs.mkdir(parents=True, exist_ok=True)
    config = args.runs / f"cpu-results-{precision}-s{seed}.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run = args.runs / f"viral-f{args.fraction:g}-{precision}-s{seed}"
    cmd = ["gan", "--data", str(args.data), "--rarefy", "viral=0.05", "--class", "viral"]
    cmd += ["--fraction", str(args.fraction), "--config", str(config), "--out", str(run)]
    cmd += ["--no-progress", "--cache", str(REPO / "runs" / "store")]
    raregan(*cmd)
    evaluate = ["gan-eval", "--run", str(run), "--cache", str(REPO / "runs" / "store")]
    if args.classifier is not None:
        evaluate += ["--classifier", str(args.classifier)]
    raregan(*evaluate)
    summary = json.loads((run / "summary.json").read_text())
    return summary, json.loads((run / "eval" / "eval.json").read_text())


METRICS = {  # name: how to read it from eval.json
    "C2ST AUC": lambda ev: ev["c2st"]["auc"],
    "FID held-out": lambda ev: ev["fid_heldout"],
    "precision": lambda ev: ev["precision"],
    "recall": lambda ev: ev["recall"],
    "MS-SSIM": lambda ev: ev["diversity"]["ms_ssim_fake"],
}


def row(precision: str, seed: int, summary: dict, ev: dict) -> str:
    """One GAN's line: budget, time and every fidelity number."""
    c, d = ev["c2st"], ev["diversity"]
    return (
        f"{precision:>5} seed {seed}: {summary['kimg']:g} kimg in {summary['train_minutes']:.1f} min, "
        f"{summary['positives']} originals; C2ST AUC {c['auc']:.3f} "
        f"[{c['ci_low']:.3f}, {c['ci_high']:.3f}]; FID held-out {ev['fid_heldout']:.1f}, "
        f"KID {ev['kid_heldout']:.4f} ± {ev['kid_heldout_std']:.4f}; precision "
        f"{ev['precision']:.2f}, recall {ev['recall']:.2f}; MS-SSIM {d['ms_ssim_fake']:.3f} "
        f"(real {d['ms_ssim_real']:.3f})"
    )


def main() -> None:
    """Train (or reuse) the GANs, measure them, print a row each, then fp32 vs bf16 per metric."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "chest_xray")
    ap.add_argument("--fraction", type=float, default=100)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="GAN seeds (default 0 1)")
    ap.add_argument("--quick", action="store_true", help="a 0.5-kimg smoke run of the script")
    ap.add_argument(
        "--classifier", type=Path, default=None,
        help="classifier checkpoint whose features define FID and precision/recall "
        "(default: gan-eval's labelled random-feature fallback)",
    )  # fmt: skip
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "bench-gan-bf16")
    args = ap.parse_args()
    if not cpu_bf16():
        sys.exit("this CPU has no native bf16 (AVX512-BF16/AMX): the bf16 GAN would train in fp32")
    seeds = list(dict.fromkeys(args.seeds))
    runs = {(p, s): train_and_eval(p, s, args) for s in seeds for p in ("32", "bf16")}
    print(f"Kermany viral (rarefied to 5 %), fraction {args.fraction:g} %, cpu-results GAN")
    print(f"features: {runs['32', seeds[0]][1]['feature_space']}")
    for (precision, seed), (summary, ev) in runs.items():
        print(row(precision, seed, summary, ev))
    base = runs["32", seeds[0]][1]["c2st_real_baseline"]
    if base:
        print(
            f"real vs real C2ST AUC {base['auc']:.3f} [{base['ci_low']:.3f}, {base['ci_high']:.3f}]"
        )
    for seed in seeds:
        a, b = runs["32", seed][1]["c2st"], runs["bf16", seed][1]["c2st"]
        print(
            f"seed {seed}: bf16 C2ST inside fp32's 95 % CI: {a['ci_low'] <= b['auc'] <= a['ci_high']}; "
            f"fp32 C2ST inside bf16's: {b['ci_low'] <= a['auc'] <= b['ci_high']}"
        )
    if len(seeds) > 1:
        print(
            "per metric, mean over seeds [min, max]; fp32 − bf16 beside the seed spread within each"
        )
        for name, get in METRICS.items():
            values = {p: [get(runs[p, s][1]) for s in seeds] for p in ("32", "bf16")}
            mean = {p: sum(v) / len(v) for p, v in values.items()}
            spread = max(max(v) - min(v) for v in values.values())
            gap = mean["32"] - mean["bf16"]
            print(
                f"  {name:<13} fp32 {mean['32']:.3f} [{min(values['32']):.3f}, "
                f"{max(values['32']):.3f}]  bf16 {mean['bf16']:.3f} [{min(values['bf16']):.3f}, "
                f"{max(values['bf16']):.3f}]  fp32 − bf16 {gap:+.3f}, largest seed spread "
                f"{spread:.3f}: {'within' if abs(gap) <= spread else 'beyond'} it"
            )
    minutes = {p: sum(runs[p, s][0]["train_minutes"] for s in seeds) for p in ("32", "bf16")}
    print(f"bf16 wall-clock speed-up of the whole GAN runs: {minutes['32'] / minutes['bf16']:.2f}x")


if __name__ == "__main__":
    main()
