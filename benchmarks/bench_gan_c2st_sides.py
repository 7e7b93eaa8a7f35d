"""How many images a side the two-sample test needs, and whose images a GAN's samples resemble.

`gan-eval`'s C2ST uses as many images a side as the GAN had training originals (52 for Kermany viral
at 100 %): the small CNN then learns from about 83 images per fold and misses differences it finds
with more. This script repeats the C2ST of finished GAN runs at a chosen number per side, and sets
the samples of the rare class against held-out real images of another class as well, beside the same
test between the two real classes: a label-conditional GAN whose rare-class samples only looked like
the abundant class would pass the first test more easily and fail to separate from that class.

A run may be given as one of its sampled sets, `RUN/synth-kimg…-n256-s0` (what `gan-eval --checkpoint`
leaves): the samples of an earlier checkpoint; `RUN/synth-last-raw-n256-s0` (`gan-eval --raw-generator`)
those of the raw generator, without the moving average. Give a whole run first: its `heldout.csv` is read.
`--control RUN …` adds GANs of another class, their samples taken as they are: a transfer source
against the held-out images of the rare class says what fine-tuning on the rare images bought.

Each run must have sampled images (`gan-eval` leaves `synth-n*`; a conditional run's rows say the
class) and a `heldout.csv`; `--other-from RUN` takes the other class's held-out images from a run that
lists them (a conditional run on both classes). Same seed and subsampling for every run, so the rows
are comparable; the intervals are the C2ST folds' 95 % t-intervals (Lopez-Paz & Oquab 2017).

    python benchmarks/bench_gan_c2st_sides.py --runs RUN [RUN …] --cls viral --other bacterial
        --other-from RUN [--per-side 100]

`--memorizer` adds a yardstick: the first run's own training originals (`positives.csv`), drawn with
replacement to as many images as its samples, i.e. a GAN that only copies what it saw. When a test has
more images a side than the GAN had originals, the CNN can learn those few images themselves and
recognise their copies in its test folds; the memorizer's AUC says how far that alone takes it.

`--blur SIGMA` blurs every image, real and synthetic alike, with a Gaussian of that standard
deviation in pixels before the test: a diagnostic of what the CNN keys on. When blurring (σ = 1 px
removes little but pixel-scale texture: upsampling checkerboards, noise, JPEG blocks) moves the
samples' AUC much closer to the real-vs-real line, fine texture gives them away; when it does not,
their shapes and intensities do. It is not a fairer score: the protocol's C2ST is the unblurred one.

`--noise SIGMA` adds white Gaussian noise of that many grey levels (of 255) to the samples only, and
`--spectrum` prints each set's radially averaged power spectrum as a ratio to the held-out real images
of the class: whether samples lack (ratio < 1) or carry extra (> 1) power at each spatial frequency,
and whether restoring the missing high-frequency power with grain alone brings their C2ST down.

The images drawn matter more than the fold intervals say (at 100 a side one GAN scored 0.77 to 0.90
over three draws): `--draws D` repeats every test on D draws (seeds SEED to SEED + D - 1) and prints
the mean AUC and its range.

`--quick` without runs is a smoke run of the script: a tiny conditional GAN (16 px, Fracture and
Lung Lesion) on phantoms in a temporary folder, 20 a side.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.data.synthetic import load_synthetic  # noqa: E402
from pipelines.fidelity.c2st import c2st  # noqa: E402
from pipelines.fidelity.eval_run import stored_images  # noqa: E402


def class_images(
    run: Path, cls: str, size: int, cache: Path, listing: str = "heldout.csv"
) -> np.ndarray:
    """The held-out real images of `cls` a run lists (val/test positives of patients it never
    saw), or with `listing` "positives.csv" the training originals it learned from."""
    rows = pd.read_csv(run / listing)
    if cls not in rows:
        sys.exit(f"{run / listing} has no column {cls!r}: use --other-from a run that lists it")
    return stored_images(rows[rows[cls] > 0.5], size, cache)


def memorizer(run: Path, cls: str, n: int, size: int, cache: Path, seed: int) -> np.ndarray:
    """`n` copies of the run's training originals of `cls`, drawn with replacement: a GAN that
    only reproduces the images it saw."""
    originals = class_images(run, cls, size, cache, "positives.csv")
    return originals[np.random.default_rng(seed).integers(len(originals), size=n)]


SAMPLED_SET = re.compile(r"synth-n(\d+)-s\d+")


def set_size(folder: Path) -> tuple[int, str]:
    """A sampled set's image count from its name (`synth-n256-s0` → 256), then its name."""
    return int(SAMPLED_SET.fullmatch(folder.name).group(1)), folder.name


def samples(run: Path, cls: str | None) -> np.ndarray:
    """The run's sampled images of `cls` (all of them for an unconditional run, or with cls None);
    `run` may also name one sampled set (`RUN/synth-kimg…`: an earlier checkpoint's samples)."""
    # the largest set (`synth-n256-s0` over a sweep's `synth-n33-s1`: names sort as text, not as n)
    sets = [f for f in run.glob("synth-n*") if SAMPLED_SET.fullmatch(f.name)]  # not synth-normal-…
    synth = [run] if run.name.startswith("synth-") else sorted(sets, key=set_size)
    if not synth:
        sys.exit(f"{run} has no sampled set (synth-n*): run `raregan gan-eval --run {run}` first")
    rows, images = load_synthetic(synth[-1], [])
    images = images[(rows[cls] > 0.5).to_numpy()] if cls in rows else images
    if len(images) < 2:
        sys.exit(f"{run} has {len(images)} sampled image(s) of {cls!r}: pass it as --control")
    return images


TINY_GAN = """gan:
  resolution: 16
  channels: [16, 16, 8]
  latent_dim: 16
  kimg_per_phase: 0.06
  batch_per_resolution: {4: 8, 8: 8, 16: 8}
"""


def smoke_run(tmp: Path) -> Path:
    """A tiny finished and sampled conditional GAN (Fracture + Lung Lesion) on fresh phantoms."""
    from pipelines.data.phantoms import write_phantoms

    root = write_phantoms(
        tmp / "phantoms", n=300, size=32, seed=1, prevalence={"Fracture": 0.4, "Lung Lesion": 0.4}
    )
    (tmp / "tiny.yaml").write_text(TINY_GAN)
    run, raregan = tmp / "gan", [sys.executable, "-m", "pipelines"]
    common = ["--cache", str(tmp / "store")]
    gan = ["gan", "--data", str(root), "--class", "Fracture", "Lung Lesion", "--no-progress"]
    gan += ["--config", str(tmp / "tiny.yaml"), "--out", str(run), *common]
    for cmd in (gan, ["gan-eval", "--run", str(run), "--n", "120", "--no-heldout", *common]):
        subprocess.run([*raregan, *cmd], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return run


def take(images: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` images drawn without replacement (all when there are fewer)."""
    return images[np.sort(rng.choice(len(images), min(n, len(images)), replace=False))]


def blurred(images: np.ndarray, sigma: float) -> np.ndarray:
    """(N, 1, R, R) uint8 images after a Gaussian blur of `sigma` px in each image's plane."""
    if sigma <= 0:
        return images
    out = scipy.ndimage.gaussian_filter(images.astype(np.float32), (0, 0, sigma, sigma))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def noised(images: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """(N, 1, R, R) uint8 images plus white Gaussian noise of `sigma` grey levels, rounded, clipped."""
    if sigma <= 0:
        return images
    noise = np.random.default_rng(seed).normal(0.0, sigma, images.shape)
    return np.clip(np.rint(images + noise), 0, 255).astype(np.uint8)


def radial_power(images: np.ndarray) -> np.ndarray:
    """Mean power spectrum of (N, 1, R, R) images, each less its own mean, over rings of integer
    radius 0 .. R/2 - 1 (cycles per image)."""
    x = images[:, 0].astype(np.float64) / 255.0
    power = np.abs(np.fft.fft2(x - x.mean(axis=(1, 2), keepdims=True))) ** 2
    size = x.shape[-1]
    f = np.fft.fftfreq(size, 1.0 / size)
    radius = np.rint(np.hypot(f[:, None], f[None, :])).astype(int)
    ring = radius < size // 2
    total = np.bincount(radius[ring], weights=power.mean(0)[ring], minlength=size // 2)
    return total / np.bincount(radius[ring], minlength=size // 2)


def bands(size: int) -> list[tuple[int, int]]:
    """Bands of spatial frequency (cycles per image, inclusive) below the Nyquist ring of `size` px."""
    edges = [(1, 4), (5, 8), (9, 16), (17, 24), (25, 31), (32, 63)]
    return [(lo, min(hi, size // 2 - 1)) for lo, hi in edges if lo < size // 2]


def spectrum_line(name: str, images: np.ndarray, reference: np.ndarray) -> str:
    """The images' power over the reference's, per band of spatial frequency (cycles per image)."""
    ratio = radial_power(images) / radial_power(reference)
    cells = " ".join(f"{ratio[lo : hi + 1].mean():9.2f}" for lo, hi in bands(images.shape[-1]))
    return f"  {name:<44} {cells}"


def line(
    name: str, a: np.ndarray, b: np.ndarray, n: int, seed: int, blur: float = 0.0, draws: int = 1
) -> str:
    """One C2ST at up to n a side (both sides blurred by `blur` px first), as a printed line; with
    several `draws` (seeds seed, seed + 1, …: other images of each set, other folds) their mean AUC
    and range."""
    out = []
    for s in range(seed, seed + draws):
        rng = np.random.default_rng(s)
        out.append(c2st(blurred(take(a, n, rng), blur), blurred(take(b, n, rng), blur), seed=s))
    r, aucs = out[0], [r["auc"] for r in out]
    if draws == 1:
        return f"  {name:<44} {r['auc']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]  n = {r['n_per_side']}"
    spread = f"{np.mean(aucs):.3f} ({min(aucs):.3f} to {max(aucs):.3f})"
    return f"  {name:<44} {spread}  n = {r['n_per_side']}"


def main() -> None:
    """Print, per run, its samples against both classes' held-out images; then the real baseline."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, nargs="+", help="finished GAN runs")
    ap.add_argument("--cls", help="the rare class the GANs learned")
    ap.add_argument("--other", help="another class of the data")
    ap.add_argument("--other-from", type=Path, help="a run whose heldout.csv lists --other")
    ap.add_argument("--per-side", type=int, default=100, help="images a side (default 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--blur",
        type=float,
        default=0.0,
        help="Gaussian blur (px) of every image first: diagnostic",
    )
    ap.add_argument(
        "--draws",
        type=int,
        default=1,
        help="repeat each test on this many draws of the images (seeds SEED on): mean and range",
    )
    ap.add_argument(
        "--noise", type=float, default=0.0, help="white noise (grey levels) added to the samples"
    )
    ap.add_argument(
        "--spectrum", action="store_true", help="power spectra over the held-out real images'"
    )
    ap.add_argument(
        "--control",
        type=Path,
        nargs="*",
        default=[],
        help="GAN runs of another class (a transfer source) tested as they are, as a yardstick",
    )
    ap.add_argument(
        "--memorizer",
        action="store_true",
        help="add the first run's training originals copied to its sample count, as a yardstick",
    )
    ap.add_argument(
        "--rare-only",
        action="store_true",
        help="each run's samples against the rare class's held-out images only (the other class "
        "serves the real-vs-real line alone): half the tests",
    )
    ap.add_argument("--quick", action="store_true", help="20 a side: a smoke run of the script")
    args = ap.parse_args()
    n = 20 if args.quick else args.per_side
    if args.quick and not args.runs:
        with tempfile.TemporaryDirectory() as tmp:
            args.runs, args.cls, args.other = [smoke_run(Path(tmp))], "Fracture", "Lung Lesion"
            measure(args, n, Path(tmp) / "store")
        return
    if not (args.runs and args.cls and args.other):
        ap.error("--runs, --cls and --other are needed (or --quick alone for a smoke run)")
    measure(args, n, REPO / "runs" / "store")


def measure(args: argparse.Namespace, n: int, cache: Path) -> None:
    """The C2ST lines of every run and the real-vs-real line."""
    raw = {run: samples(run, args.cls) for run in args.runs}  # each set read once
    raw |= {run: samples(run, None) for run in args.control}
    fakes = {run: noised(images, args.noise, args.seed) for run, images in raw.items()}
    size = fakes[args.runs[0]].shape[-1]
    held = class_images(args.runs[0], args.cls, size, cache)
    other = class_images(args.other_from or args.runs[0], args.other, size, cache)
    if args.spectrum:
        head = " ".join(f"{f'{lo}-{hi}':>9}" for lo, hi in bands(size))
        print(f"power over held-out real {args.cls}'s, all images, per band (cycles per image):")
        print(f"  {'':<44} {head}")
        for run, fake in fakes.items():
            print(spectrum_line(f"{run.name} samples", raw[run], held))
            if args.noise > 0:
                print(spectrum_line(f"  the same plus noise of {args.noise:g}", fake, held))
        print(spectrum_line(f"held-out real {args.other}", other, held))
    blur = f", every image blurred (Gaussian, {args.blur:g} px)" if args.blur > 0 else ""
    if args.noise > 0:
        blur += f", samples plus white noise of {args.noise:g} grey levels"
    what = (
        "[95 % CI over 5 folds]"
        if args.draws == 1
        else f"mean (range) over {args.draws} draws of the images, each the mean of 5 folds"
    )
    print(f"C2ST AUC {what}, up to {n} a side, seed {args.seed}{blur} (0.5: indistinguishable)")
    test = {"n": n, "seed": args.seed, "blur": args.blur, "draws": max(1, args.draws)}
    for run, fake in fakes.items():
        of = f"of {args.cls}" if run in args.runs else "of its own class, a control"
        name = f"{run.parent.name}/{run.name}" if run.name.startswith("synth-") else run.name
        print(f"{name} ({len(fake)} samples {of}):")
        print(line(f"samples vs held-out real {args.cls}", fake, held, **test))
        if not args.rare_only:
            print(line(f"samples vs held-out real {args.other}", fake, other, **test))
    if args.memorizer:
        first = args.runs[0]
        copies = memorizer(first, args.cls, len(fakes[first]), size, cache, args.seed)
        print(f"{first.name}'s training originals, copied to {len(copies)} (a memorizer):")
        print(line(f"copies vs held-out real {args.cls}", copies, held, **test))
        if not args.rare_only:
            print(line(f"copies vs held-out real {args.other}", copies, other, **test))
    print("real images:")
    print(line(f"held-out {args.cls} vs held-out {args.other}", held, other, **test))


if __name__ == "__main__":
    main()
