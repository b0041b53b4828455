"""A CPU-scale comparison of the paper's method with its baselines, on real Fashion-MNIST; resumable.

Not the paper's setting: a thin ResNet-18 (width 8), a balanced 10,000-image training subset (8,900 train /
1,100 validation), 8 epochs per training cycle for every method, the paper's MNIST recipe otherwise (batch 32,
SGD lr 0.1 momentum 0.9 weight decay 5e-4, cosine, label smoothing 0.1), the full 10,000-image test set,
seeds 42, 123 and 456. Methods: dense; progressive at 0.744 (the paper's MNIST target) and 0.9; cubic 0.9
(GMP); oneshot, snip, random 0.9; imp 0.9 with 3 rounds; and the ticket test of each seed's progressive 0.9
mask, from the donor's initialisation and from a random one.

Runs jobs two at a time with one thread each (faster than one job on two threads on a 2-core machine). Every
job is one training command of this project; rerunning this script skips finished runs and resumes killed
ones from their checkpoints, so it continues where it stopped. Then:

    python aggregate.py study/results -o study/table.md --plot study

    python study/run_study.py                      # about 45 minutes on the project's 2-core CPU machine
    python study/run_study.py --dry-run            # print the commands
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
SEEDS = (42, 123, 456)
COMMON = ("--dataset", "fashion-mnist", "--data-dir", DATA, "--no-download", "--width", "8", "--epochs", "8",
          "--train-subset", "10000", "--device", "cpu")


def jobs(out: str) -> tuple[list[list[str]], list[list[str]]]:
    """(first-phase commands, ticket commands that need the first phase's progressive 0.9 runs)."""
    base = [sys.executable]
    first, tickets = [], []
    for seed in SEEDS:
        common = [*COMMON, "--seed", str(seed), "--out", out]
        first += [  # the imp runs first: four cycles each, so the two workers finish together
            base + ["train_baseline.py", "--method", "imp", "--target-sparsity", "0.9", "--rounds", "3", *common],
            base + ["train_dense.py", *common],
            base + ["train_mnist.py", "--target-sparsity", "0.744", *common],
            base + ["train_mnist.py", "--target-sparsity", "0.9", *common],
            base + ["train_mnist.py", "--target-sparsity", "0.9", "--schedule", "cubic", *common],
            *[base + ["train_baseline.py", "--method", m, "--target-sparsity", "0.9", *common]
              for m in ("oneshot", "snip", "random")],
        ]
        donor = os.path.join(out, "fashion-mnist", "progressive-0.9", f"seed{seed}.json")
        tickets += [base + ["train_baseline.py", "--method", "ticket", "--reinit", r, "--mask-from", donor, *common]
                    for r in ("donor", "random")]
    first.sort(key=lambda cmd: "imp" not in cmd)  # stable: imp jobs of every seed first
    return first, tickets


def run_job(cmd: list[str], log_dir: str) -> int:
    name = "_".join(a for a in cmd[1:] if not a.startswith("-") and "/" not in a)[:120]
    with open(os.path.join(log_dir, name + ".log"), "a") as log:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        t0 = time.time()
        rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    print(f"[{time.strftime('%H:%M:%S')}] rc={rc} {time.time() - t0:6.0f}s  {' '.join(cmd[1:6])} ... "
          f"seed {cmd[cmd.index('--seed') + 1]}", flush=True)
    return rc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join("study", "results"), help="results folder (under the repo)")
    parser.add_argument("--workers", type=int, default=2, help="jobs at a time, one thread each")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    args = parser.parse_args()
    if not os.path.isdir(DATA):
        print(f"run_study.py: error: {DATA} not found; apt-get install dataset-fashion-mnist", file=sys.stderr)
        return 2
    first, tickets = jobs(args.out)
    if args.dry_run:
        print("\n".join(" ".join(cmd[1:]) for cmd in first + tickets))
        return 0
    log_dir = os.path.join(ROOT, args.out, "logs")
    os.makedirs(log_dir, exist_ok=True)
    failed = 0
    for phase in (first, tickets):
        with ThreadPoolExecutor(args.workers) as pool:
            failed += sum(rc != 0 for rc in pool.map(lambda cmd: run_job(cmd, log_dir), phase))
    print(f"done: {len(first) + len(tickets) - failed} jobs finished, {failed} failed (logs in {os.path.relpath(log_dir, ROOT)})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
