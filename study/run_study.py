"""The study: every method family at 0.8, 0.9 and 0.95 sparsity, at one budget, on real Fashion-MNIST; resumable.

Not the paper's setting: a thin ResNet-18 (width 8), a balanced 10,000-image training subset (8,900 train /
1,100 validation), 8 epochs per training cycle for every method (279 steps per epoch, 2,232 in all), the paper's
MNIST recipe otherwise (batch 32, SGD lr 0.1 momentum 0.9 weight decay 5e-4, cosine, label smoothing 0.1), the
full 10,000-image test set, seeds 42, 123 and 456, fp32. At each target:

  progressive                 the paper's schedule as published: linear, one event at the start of each epoch
  progressive-every25-end0.75 linear, an event every 25 steps, the ramp ending at 75% of training (68 events)
  progressive-cubic-every25-end0.75   GMP's cubic ramp, the same 68 events
  oneshot, snip, random       global ranking (snip and random also with --distribution erk)
  rigl, set                   dynamic sparse training, ERK, from a random mask at the target

plus dense once, and at 0.9 imp (3 rounds, rewinding to init) and the ticket test of the best progressive
variant's masks (progressive-every25-end0.75, each seed's own), from the donor's init and from a random one.
Oneshot and random (global) run at 0.9 only: at 0.8 and 0.95 they were cut for time.

A spec on top of sweep.py: the sweeps below run in turn, two jobs at a time with one thread each (faster than
one job on two threads on a 2-core machine). Rerunning skips finished runs and resumes killed ones. Then:

    python aggregate.py study/results -o study/table.md --plot study

    python study/run_study.py                  # about 3 hours from nothing on the project's 2-core CPU machine
    python study/run_study.py --dry-run        # print the commands
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import sweep  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
SETTING = ["--dataset", "fashion-mnist", "--data-dir", DATA, "--no-download", "--width", "8", "--epochs", "8",
           "--train-subset", "10000"]
GRID = ["--seeds", "42,123,456", "--jobs", "2", "--devices", "cpu"]
WINDOW = ["--set", "prune_every=25", "--set", "prune_end=0.75"]  # 68 events: 25 steps apart, ramp ends at 75%
BEST = "progressive-every25-end0.75"  # the ticket test's donor: the best progressive variant at 0.9
SWEEPS = [  # in the order they ran; the first three were finished before (see README)
    ["--methods", "snip,random,rigl,set", "--targets", "0.9"],
    ["--methods", "snip,random", "--targets", "0.9", "--set", "distribution=erk"],
    ["--methods", "imp", "--targets", "0.9", "--set", "rounds=3"],
    ["--methods", "dense,progressive,oneshot", "--targets", "0.9"],
    ["--methods", "progressive", "--targets", "0.9", *WINDOW, "--set", "schedule=linear,cubic"],
    ["--methods", "ticket", "--targets", "0.9", "--set", "reinit=donor,random", "--donor", BEST],
    ["--methods", "progressive,rigl,set", "--targets", "0.8,0.95"],
    ["--methods", "snip,random", "--targets", "0.8,0.95", "--set", "distribution=erk"],
    ["--methods", "progressive", "--targets", "0.8,0.95", *WINDOW],
    ["--methods", "snip", "--targets", "0.8,0.95"],
    ["--methods", "progressive", "--targets", "0.8,0.95", *WINDOW, "--set", "schedule=cubic"],
    # cut for the time budget (12 runs, about 25 minutes): oneshot and random (global) at 0.8 and 0.95
]


def run_sweeps(sweeps: list, default_out: str, description: str, data: str = DATA,
               missing: str = "apt-get install dataset-fashion-mnist") -> int:
    """Run (or with --dry-run, print) each sweep in turn; 0, 1 if a run failed, or the code of a sweep that
    stopped (usage, Ctrl-C). A sweep is its sweep.py flags (this study's GRID and SETTING added) or a
    (flags, setting) pair: grid flags and run flags of its own. ``data``: the folder the runs read (relative
    to the repository root), and ``missing`` what to do when it is absent."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=default_out, help="results folder (under the repo)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    args = parser.parse_args()
    os.chdir(ROOT)
    if not os.path.isdir(data) and not args.dry_run:
        print(f"error: {data} not found; {missing}", file=sys.stderr)
        return 2
    failed = 0
    for spec in sweeps:
        flags, setting = spec if isinstance(spec, tuple) else ([*spec, *GRID], SETTING)
        code = sweep.main([*flags, *(["--dry-run"] if args.dry_run else []), "--", *setting, "--out", args.out])
        if code not in (0, 1):  # 1: some runs failed (the summary names them); the next sweeps still run
            return code
        failed = failed or code
    return failed


if __name__ == "__main__":
    raise SystemExit(run_sweeps(SWEEPS, os.path.join("study", "results"), __doc__))
