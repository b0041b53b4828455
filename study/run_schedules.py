"""Which matters for the paper's method at 90%: pruning granularity or a recovery window? Resumable.

The first study's setting (run_study.py: real Fashion-MNIST, width 8, balanced 10,000-image subset, 8 epochs,
the paper's MNIST recipe, seeds 42/123/456), target 0.9, four schedules of the same budget:

  progressive                          the paper's: one event at the start of each epoch (8 events), linear
  progressive --prune-every 25         linear, an event every 25 steps, still ending at the start of the last epoch
  ... --prune-end 0.75                 linear, every 25 steps, ending at 75% of training (a recovery window)
  ... --schedule cubic --prune-end 0.75   GMP's cubic ramp, same events

plus dense. 279 steps per epoch (8,900 images, batch 32), so every 25 steps is 79 events ending at step 1953, or
67 ending at step 1674 (of 2232). Then:

    python aggregate.py study/schedules/results -o study/schedules/table.md --plot study/schedules

    python study/run_schedules.py              # about 25 minutes on the project's 2-core CPU machine
    python study/run_schedules.py --dry-run    # print the commands
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from run_study import COMMON, DATA, ROOT, SEEDS, run_job

VARIANTS = ((), ("--prune-every", "25"), ("--prune-every", "25", "--prune-end", "0.75"),
            ("--prune-every", "25", "--prune-end", "0.75", "--schedule", "cubic"))


def jobs(out: str) -> list[list[str]]:
    cmds = []
    for seed in SEEDS:
        common = [*COMMON, "--seed", str(seed), "--out", out]
        cmds += [[sys.executable, "train_mnist.py", "--target-sparsity", "0.9", *v, *common] for v in VARIANTS]
        cmds.append([sys.executable, "train_dense.py", *common])
    return cmds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join("study", "schedules", "results"), help="results folder")
    parser.add_argument("--workers", type=int, default=2, help="jobs at a time, one thread each")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    args = parser.parse_args()
    if not os.path.isdir(DATA):
        print(f"run_schedules.py: error: {DATA} not found; apt-get install dataset-fashion-mnist", file=sys.stderr)
        return 2
    cmds = jobs(args.out)
    if args.dry_run:
        print("\n".join(" ".join(cmd[1:]) for cmd in cmds))
        return 0
    log_dir = os.path.join(ROOT, args.out, "logs")
    os.makedirs(log_dir, exist_ok=True)
    with ThreadPoolExecutor(args.workers) as pool:
        failed = sum(rc != 0 for rc in pool.map(lambda cmd: run_job(cmd, log_dir), cmds))
    print(f"done: {len(cmds) - failed} jobs finished, {failed} failed (logs in {os.path.relpath(log_dir, ROOT)})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
