"""A CPU-scale comparison of the paper's method with its baselines, on real Fashion-MNIST; resumable.

Not the paper's setting: a thin ResNet-18 (width 8), a balanced 10,000-image training subset (8,900 train /
1,100 validation), 8 epochs per training cycle for every method, the paper's MNIST recipe otherwise (batch 32,
SGD lr 0.1 momentum 0.9 weight decay 5e-4, cosine, label smoothing 0.1), the full 10,000-image test set,
seeds 42, 123 and 456. Methods: dense; progressive at 0.744 (the paper's MNIST target) and 0.9; cubic 0.9
(GMP); oneshot, snip, random 0.9; imp 0.9 with 3 rounds; and the ticket test of each seed's progressive 0.9
mask, from the donor's initialisation and from a random one.

A spec on top of sweep.py: the sweeps below run in turn, two jobs at a time with one thread each (faster than
one job on two threads on a 2-core machine). Rerunning skips finished runs and resumes killed ones. Then:

    python aggregate.py study/first/results -o study/first/table.md --plot study/first

    python study/run_first.py                       # about 60 minutes on the project's 2-core CPU machine
    python study/run_first.py --dry-run             # print the commands
"""

import os

from run_study import run_sweeps

SWEEPS = [
    ["--methods", "imp", "--targets", "0.9", "--set", "rounds=3"],  # first: four cycles each
    ["--methods", "dense,oneshot,snip,random", "--targets", "0.9"],
    ["--methods", "progressive", "--targets", "0.744,0.9"],
    ["--methods", "progressive", "--targets", "0.9", "--set", "schedule=cubic"],
    ["--methods", "ticket", "--targets", "0.9", "--set", "reinit=donor,random"],  # the progressive 0.9 masks
]


if __name__ == "__main__":
    raise SystemExit(run_sweeps(SWEEPS, os.path.join("study", "first", "results"), __doc__))
