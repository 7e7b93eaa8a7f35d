"""What more GAN compute buys: C2ST, held-out FID and precision/recall against kimg for one GAN run.

Trains (or reuses, or resumes) a GAN with `raregan gan` and the arguments after `--`, then runs
`raregan gan-eval --checkpoint` on every kept checkpoint of its final stable phase, plus the
finished generator, and prints one table line per checkpoint: kimg, training minutes on this
machine, C2ST AUC with its fold t-interval beside real-vs-real, held-out FID, precision and recall
beside their real baselines, MS-SSIM. The table is also written to <run>/budget.md and budget.csv,
and C2ST and FID against kimg are drawn in <run>/budget.png.
Give the run a config with a long final phase (gan.final_kimg), frequent checkpoints and a large
gan.keep_checkpoints so that there are several points to compare, e.g.

    python benchmarks/bench_gan_budget.py --every 4 --classifier runs/.../best.ckpt -- \\
        --data ../shared/data/chest_xray --rarefy viral=0.05 --class viral --no-filters \\
        --config budget.yaml --out runs/chest_xray/gan-budget/plain

A conditional GAN (`--class A B` after `--`) is measured on one class with `--studied A`.

--quick: a 16 px GAN on 400 phantoms (40 % Fracture) in a temporary folder, the `make bench` smoke.
"""

from __future__ import annotations

import argparse
import atexit
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.cli import main  # noqa: E402
from pipelines.errors import RareganError  # noqa: E402
from pipelines.experiment.ablation import markdown, row_of  # noqa: E402
from pipelines.fidelity.eval_run import eval_current, evaluate_gan_run  # noqa: E402
from pipelines.gan.synth import checkpoint_generator  # noqa: E402
from pipelines.generators.synth import samples_for  # noqa: E402

QUICK_CONFIG = """
gan:
  resolution: 16
  channels: [16, 16, 8]
  latent_dim: 16
  kimg_per_phase: 0.06
  final_kimg: 0.3
  batch_per_resolution: {4: 8, 8: 8, 16: 8}
  checkpoint_every_kimg: 0.1
  keep_checkpoints: 10
"""


def final_phase_checkpoints(run: Path, every: float) -> list[Path]:
    """The run's kimg-stamped checkpoints in its final stable phase, one per `every` kimg (the
    first at or past each multiple), then last.ckpt (the finished generator)."""
    picked, next_kimg = [], 0.0
    for path in sorted((run / "checkpoints").glob("kimg*.ckpt")):
        kimg = float(re.sub(r"^kimg", "", path.stem))
        if kimg + 1e-9 < next_kimg:
            continue
        try:
            checkpoint_generator(run, path)
        except RareganError:  # before the final phase
            continue
        picked.append(path)
        next_kimg = (int(kimg / every + 1e-9) + 1) * every
    return picked + [run / "checkpoints" / "last.ckpt"]


def budget_table(
    run: Path,
    every: float,
    n: int,
    classifier: Path | None,
    cache: Path,
    studied: str | None = None,
) -> pd.DataFrame:
    """Evaluate (or reuse the evaluation of) each picked checkpoint; one row per checkpoint. Of a
    conditional GAN the figures are those of its `studied` class (about `n` samples of it)."""
    rows = []
    if studied:
        n = samples_for(run, [studied], n)
    for ckpt in final_phase_checkpoints(run, every):
        folder = f"eval-{ckpt.stem}"
        if not eval_current(run / folder / "eval.json", classifier):
            evaluate_gan_run(
                run, n=n, classifier=classifier, cache=cache, heldout="require", checkpoint=ckpt
            )
        row = row_of(run, ckpt.stem, 0, folder, cls=studied)
        rows.append({**row, "variant": f"{row['kimg']:.1f} kimg", "seeds": 1})
    return pd.DataFrame(rows)


def budget_plot(table: pd.DataFrame, path: Path) -> None:
    """C2ST AUC with its interval and the real-vs-real line, and held-out FID beside its real
    baseline, against kimg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    k = table["kimg"]
    err = [table["c2st_auc"] - table["c2st_low"], table["c2st_high"] - table["c2st_auc"]]
    left.errorbar(k, table["c2st_auc"], yerr=err, marker="o", capsize=3, label="GAN samples")
    left.axhline(table["c2st_real"].iloc[0], color="gray", ls="--", label="real vs real")
    left.set(xlabel="kimg", ylabel="C2ST AUC (95 % CI)", ylim=(0.4, 1.02), title="C2ST")
    right.plot(k, table["fid_heldout"], marker="o", label="GAN samples")
    right.axhline(table["fid_real"].iloc[0], color="gray", ls="--", label="real vs real")
    right.set(xlabel="kimg", ylabel="FID vs held-out reals", title="held-out FID")
    for ax in (left, right):
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main_bench(argv: list[str]) -> int:
    """Parse, train or reuse the run, evaluate its checkpoints, print and write the table."""
    ours, gan_args = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 16 px smoke run on phantoms")
    parser.add_argument(
        "--every", type=float, default=4.0, help="kimg between evaluated checkpoints"
    )
    parser.add_argument("--n", type=int, default=256, help="samples per evaluation")
    parser.add_argument("--classifier", type=Path, help="classifier checkpoint for FID features")
    parser.add_argument(
        "--studied",
        metavar="CLS",
        help="a conditional GAN (--class A B …): measure class CLS alone (its held-out images)",
    )
    args = parser.parse_args(ours)
    if args.quick:
        from pipelines.data.phantoms import write_phantoms

        tmp = Path(tempfile.mkdtemp(prefix="bench-gan-budget-"))
        atexit.register(shutil.rmtree, tmp, True)
        root = write_phantoms(
            tmp / "phantoms", n=400, size=64, seed=1, prevalence={"Fracture": 0.4}
        )
        (tmp / "quick.yaml").write_text(QUICK_CONFIG)
        gan_args = ["--data", str(root), "--class", "Fracture", "--config", str(tmp / "quick.yaml"),
                    "--out", str(tmp / "run"), "--cache", str(tmp / "store"), "--no-progress"]  # fmt: skip
        args.every, args.n = 0.06, 48
    known = argparse.ArgumentParser(add_help=False)
    known.add_argument("--out", type=Path, required=True)
    known.add_argument("--cache", type=Path, default=Path("runs/store"))
    where, _ = known.parse_known_args(gan_args)
    if main(["gan", *gan_args]) != 0:
        return 2
    table = budget_table(where.out, args.every, args.n, args.classifier, where.cache, args.studied)
    text = markdown(table)
    print(text)
    table.to_csv(where.out / "budget.csv", index=False)
    (where.out / "budget.md").write_text(text, encoding="utf-8")
    budget_plot(table, where.out / "budget.png")
    print(f"written to {where.out / 'budget.md'}; feature space: {table['feature_space'].iloc[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main_bench(sys.argv[1:]))
