"""Which matters for the paper's method at 90%: pruning granularity or a recovery window? Resumable.

The first study's setting (run_study.py: real Fashion-MNIST, width 8, balanced 10,000-image subset, 8 epochs,
the paper's MNIST recipe, seeds 42/123/456), target 0.9, four schedules of the same budget:

  progressive                          the paper's: one event at the start of each epoch (8 events), linear
  progressive --prune-every 25         linear, an event every 25 steps, still ending at the start of the last epoch
  ... --prune-end 0.75                 linear, every 25 steps, ending at 75% of training (a recovery window)
  ... --schedule cubic --prune-end 0.75   GMP's cubic ramp, same events

plus dense. 279 steps per epoch (8,900 images, batch 32), so every 25 steps is 80 events, the last at step 1953, or
68, the last at step 1674 (of 2232). Then:

    python aggregate.py study/schedules/results -o study/schedules/table.md --plot study/schedules

    python study/run_schedules.py              # 35 minutes on the project's 2-core CPU machine (shared)
    python study/run_schedules.py --dry-run    # print the commands
"""

import os

from run_study import run_sweeps

SWEEPS = [
    ["--methods", "dense,progressive", "--targets", "0.9"],
    ["--methods", "progressive", "--targets", "0.9", "--set", "prune_every=25"],
    ["--methods", "progressive", "--targets", "0.9", "--set", "prune_every=25", "--set", "prune_end=0.75",
     "--set", "schedule=linear,cubic"],
]

if __name__ == "__main__":
    raise SystemExit(run_sweeps(SWEEPS, os.path.join("study", "schedules", "results"), __doc__))
