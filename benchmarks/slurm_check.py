"""The cluster recipe of docs/usage.md, run for real on a one-node Slurm, and the two ways a cluster
ends a job: a preemption (scancel --full --signal=TERM) and a time limit (--time) on a GAN cell.

    python benchmarks/slurm_check.py [--install] [--log FILE]

--install (root, Debian): installs slurm-wlm and munge, writes a one-node slurm.conf
(SlurmctldHost = this host, auth/munge, proctrack/linuxproc, select/cons_tres) and starts munged,
slurmctld and slurmd. Then, in a scratch folder, on phantoms with a tiny config (32 px, cnn5):
1. the recipe as written: `--list-cells` gives P (cells without a GAN), G (GAN units) and N; three
   `sbatch --array` waves of `cell.sbatch` chained with `--dependency=afterok`, then `--collect`
   with `afterany`; every record and the collected report must be there;
2. a GAN cell preempted (SIGTERM to the whole job after its first checkpoint) and one stopped by
   its time limit: neither may leave a record or DONE; resubmitted alone, each resumes from its last
   checkpoint and ends with the same weights as an uninterrupted run of the same cell.
It stays out of CI (root, system packages); the suite keeps its own signal and concurrency tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY = """gan:
  resolution: 32
  channels: [16, 16, 8, 8]
  latent_dim: 16
  kimg_per_phase: {kimg}
  batch_per_resolution: {{4: 8, 8: 8, 16: 8, 32: 8}}
  checkpoint_every_kimg: {every}
classify: {{model: cnn5, epochs: 1, batch_size: 64}}
compare: {{n_boot: 100}}
"""
SLURM_CONF = """ClusterName=raregan
SlurmctldHost={host}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
TaskPlugin=task/none
KillWait=30
NodeName={host} CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""

LOG: list[str] = []


def say(text: str) -> None:
    LOG.append(text)
    print(text, flush=True)


def sh(cmd: str, check: bool = True) -> str:
    done = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and done.returncode:
        raise SystemExit(f"failed: {cmd}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout.strip()


def install() -> None:
    """A one-node Slurm with munge, started by hand (no systemd here)."""
    if not shutil.which("slurmctld"):
        sh(
            "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge"
        )
    host = socket.gethostname()
    for folder in (
        "/etc/slurm",
        "/var/spool/slurmctld",
        "/var/spool/slurmd",
        "/var/log/slurm",
        "/run/munge",
    ):
        os.makedirs(folder, exist_ok=True)
    Path("/etc/slurm/slurm.conf").write_text(SLURM_CONF.format(host=host, cpus=os.cpu_count()))
    sh("chown -R munge:munge /etc/munge /var/log/munge /var/lib/munge /run/munge")
    sh("chmod 700 /etc/munge /var/log/munge && chmod 400 /etc/munge/munge.key")
    # a socket file left by an earlier boot does not mean munged runs: ask it for a credential
    if subprocess.run("munge -n > /dev/null 2>&1", shell=True).returncode:
        sh("rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock /run/munge/munged.pid")
        sh("su munge -s /bin/sh -c munged")
    sh("pkill slurmctld; pkill slurmd; sleep 1; slurmctld && slurmd", check=False)
    for _ in range(60):
        if " idle " in f" {sh('sinfo -h -o %T', check=False)} ":
            break
        time.sleep(1)
    say(f"slurm: {sh('sinfo -h')}")


def wait_jobs(*ids: str, limit: float = 900) -> None:
    deadline = time.time() + limit
    while time.time() < deadline:
        if not sh(f"squeue -h -j {','.join(ids)}", check=False):
            return
        time.sleep(2)
    raise SystemExit(f"jobs {ids} still queued after {limit:.0f} s")


def job_states(job: str) -> str:
    return sh(f"sacct -n -X -j {job} -o State%20 2>/dev/null || true", check=False)


def recipe(tmp: Path, compare: list[str]) -> None:
    """docs/usage.md's three waves and collect, as written."""
    lines = sh(" ".join([*compare, "--list-cells"])).splitlines()[1:]
    ids = [line.split()[2] for line in lines]
    n = len(ids)
    p = sum(
        i.startswith("classify-")
        for i in ids[: next(k for k, i in enumerate(ids) if i.startswith("gan-"))]
    )
    g = sum(i.startswith("gan-") for i in ids)
    say(f"recipe: N={n} cells, P={p} without a GAN, G={g} GAN units")
    script = tmp / "cell.sbatch"
    script.write_text(
        "#!/bin/bash\n#SBATCH --array=0-0\n#SBATCH --cpus-per-task="
        + str(os.cpu_count())
        + "\n#SBATCH --output="
        + str(tmp / "slurm-%A_%a.out")
        + "\n"
        + " ".join(compare)
        + " --cell $SLURM_ARRAY_TASK_ID\n"
    )
    os.chdir(REPO)
    plain = sh(f"sbatch --parsable --array=0-{p - 1} {script}")
    gans = sh(f"sbatch --parsable --array={p}-{p + g - 1} --dependency=afterok:{plain} {script}")
    cells = sh(f"sbatch --parsable --array={p + g}-{n - 1} --dependency=afterok:{gans} {script}")
    wrap = " ".join([*compare, "--collect"])
    last = sh(
        f"sbatch --parsable --output={tmp}/collect.out --dependency=afterany:{cells} --wrap '{wrap}'"
    )
    start = time.time()
    wait_jobs(plain, gans, cells, last)
    records = sorted(p.stem for p in (tmp / "runs/phantoms/compare/sweep/cells").glob("*.json"))
    report = tmp / "runs/phantoms/compare/sweep/report.html"
    ok = records == sorted(ids) and report.is_file()
    say(
        f"recipe: {len(records)}/{n} records, report {'written' if report.is_file() else 'MISSING'}, "
        f"{time.time() - start:.0f} s: {'PASS' if ok else 'FAIL'}"
    )
    if not ok:
        raise SystemExit(f"missing records: {sorted(set(ids) - set(records))}")


def weights(run: Path) -> dict:
    import torch

    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)[
        "state_dict"
    ]


def interrupted(tmp: Path, compare: list[str], how: str) -> None:
    """A GAN cell ended by the cluster (`how`: preempt or timelimit), then resubmitted alone."""
    import torch

    runs = tmp / f"runs-{how}"
    argv = [a if a != str(tmp / "runs") else str(runs) for a in compare]
    gan_k = next(
        k
        for k, line in enumerate(sh(" ".join([*argv, "--list-cells"])).splitlines()[1:])
        if line.split()[2].startswith("gan-")
    )
    sh(" ".join([*argv, "--cell", "0"]))  # the none classifier it needs, here and now
    script = tmp / f"gan-{how}.sbatch"
    script.write_text(
        "#!/bin/bash\n#SBATCH --cpus-per-task="
        + str(os.cpu_count())
        + "\n#SBATCH --output="
        + str(tmp / f"{how}-%j.out")
        + "\n"
        + " ".join([*argv, "--cell", str(gan_k)])
        + "\n"
    )
    extra = "--time=1" if how == "timelimit" else ""
    job = sh(f"sbatch --parsable {extra} {script}")
    run = (
        next((runs / "phantoms" / "gan").glob("*"), None)
        if (runs / "phantoms" / "gan").exists()
        else None
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        run = (
            next((runs / "phantoms" / "gan").glob("*"), None)
            if (runs / "phantoms" / "gan").exists()
            else None
        )
        if run is not None and (run / "checkpoints" / "last.ckpt").exists():
            break
        time.sleep(0.5)
    if how == "preempt":
        sh(f"scancel --full --signal=TERM {job}")
    wait_jobs(job, limit=400)
    out = (tmp / f"{how}-{job}.out").read_text()
    record = runs / "phantoms/compare/sweep/cells" / "gan-Fracture-f100-s0.json"
    clean = not (run / "DONE").exists() and not record.exists()
    say(
        f"{how}: job {job} {job_states(job) or ''} — last line {out.strip().splitlines()[-1][:120]!r}; "
        f"no DONE, no record: {clean}"
    )
    if not clean:
        raise SystemExit(f"{how}: the cell left DONE or a record")
    again = sh(f"sbatch --parsable --wait {script}")
    same = weights(run).keys() == REFERENCE.keys() and all(
        torch.equal(weights(run)[k], REFERENCE[k]) for k in REFERENCE
    )
    say(
        f"{how}: resubmitted as job {again}: record {'written' if record.exists() else 'MISSING'}, "
        f"weights equal to the uninterrupted run's: {same}: {'PASS' if same and record.exists() else 'FAIL'}"
    )
    if not (same and record.exists()):
        raise SystemExit(f"{how}: the resumed cell differs from the uninterrupted one")


REFERENCE: dict = {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--install", action="store_true", help="install and start a one-node Slurm (root)"
    )
    ap.add_argument("--log", type=Path, help="also write the lines printed to this file")
    args = ap.parse_args()
    if args.install:
        install()
    from pipelines.data.phantoms import write_phantoms

    tmp = Path(tempfile.mkdtemp(prefix="raregan-slurm-"))
    prevalence = {"Fracture": 0.15, "Lung Lesion": 0.08, "Pleural Other": 0.06}
    data = write_phantoms(tmp / "phantoms", n=300, size=32, seed=0, prevalence=prevalence)
    raregan = f"{sys.executable} -m pipelines"

    def compare(cfg: Path, arms: str, fractions: str) -> list[str]:
        return [
            raregan,
            "compare",
            "--data",
            str(data),
            "--classes",
            "Fracture",
            "--fractions",
            fractions,
            "--arms",
            arms,
            "--seeds",
            "0",
            "--config",
            str(cfg),
            "--runs",
            str(tmp / "runs"),
            "--cache",
            str(tmp / "store"),
        ]

    quick = tmp / "quick.yaml"
    quick.write_text(TINY.format(kimg=0.05, every=0.05))
    recipe(tmp, compare(quick, "none standard gan", "50 100"))
    # the GAN cell of the interruption cases: about 2.5 min, well past a one-minute time limit (Slurm
    # checks limits every 30 s or so, and a cell that finishes first tests nothing)
    slow = tmp / "slow.yaml"
    slow.write_text(TINY.format(kimg=8.0, every=1.0))
    argv = compare(slow, "none gan", "100")
    ref_runs = tmp / "runs-reference"
    ref_argv = [a if a != str(tmp / "runs") else str(ref_runs) for a in argv]
    sh(" ".join([*ref_argv, "--cell", "0"]))
    start = time.time()
    sh(" ".join([*ref_argv, "--cell", "1"]))
    say(f"reference: the GAN cell uninterrupted in {time.time() - start:.0f} s")
    REFERENCE.update(weights(next((ref_runs / "phantoms" / "gan").glob("*"))))
    for how in ("preempt", "timelimit"):
        interrupted(tmp, argv, how)
    if args.log:
        args.log.write_text("\n".join(LOG) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
