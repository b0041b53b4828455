"""The second study (issue 17), in progress: every method family at 0.8, 0.9 and 0.95 on the first study's
setting (real Fashion-MNIST, width 8, balanced 10,000-image subset, 8 epochs, seeds 42/123/456). Resumable.

The 0.9 runs that the first study (study/results) and the schedules study (study/schedules/results) already
made are not repeated here: dense, per-epoch progressive, oneshot, snip and random (global), imp, tickets, and
linear / cubic every 25 steps ending at 0.75 (68 pruning events). This spec adds the ERK baselines, RigL and
SET at 0.9, and every method at 0.8 and 0.95. Not yet aggregated or reported.

    python study/run_sparsities.py              # about 2 hours on the project's 2-core CPU machine
    python study/run_sparsities.py --dry-run    # print the commands
"""

import os

from run_study import run_sweeps

WINDOW = ["--set", "prune_every=25", "--set", "prune_end=0.75", "--set", "schedule=linear,cubic"]
SWEEPS = [
    ["--methods", "snip,random", "--targets", "0.9", "--set", "distribution=erk"],
    ["--methods", "rigl,set", "--targets", "0.9"],
    ["--methods", "progressive,oneshot,snip,random,rigl,set", "--targets", "0.8,0.95"],
    ["--methods", "snip,random", "--targets", "0.8,0.95", "--set", "distribution=erk"],
    ["--methods", "progressive", "--targets", "0.8,0.95", *WINDOW],
]

if __name__ == "__main__":
    raise SystemExit(run_sweeps(SWEEPS, os.path.join("study", "sparsities", "results"), __doc__))
