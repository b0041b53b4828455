"""The third study (issue 23): the authors' extended paper's networks at 90-99% sparsity, full size, full data.

Real Fashion-MNIST: all 60,000 training images (the harness's split: 53,400 train / 6,600 validation), the
10,000 test images, fp32, the paper's MNIST recipe (SGD lr 0.1 momentum 0.9 weight decay 5e-4, cosine, label
smoothing 0.1, left-right flips) for 30 epochs (the paper's MNIST budget), except:

  - batch 100 (SNIP's LeNet batch) instead of 32: at batch 32 LeNet-300-100 is overhead-bound (1,669 tiny
    steps per epoch); 534 steps per epoch, 16,020 in all;
  - LeNet-5-Caffe at lr 0.01 (Caffe's LeNet solver): with no nonlinearity between its convolutions it
    diverged in the first epoch at lr 0.1 and 0.05 (training loss NaN; 0.02 trained).

The LeNets see the 28x28 images as stored (no resize). Methods (windowed: an event every 50 steps, the ramp
ending at 75% of training, 240 events):

  progressive                         the paper's schedule as published: linear, one event per epoch, to the last
  progressive[-cubic]-every50-end0.75 linear and cubic, windowed
  snip, grasp                         at initialisation, one global ranking (one batch of 100 images)
  random-erk                          a random mask, ERK layer budgets
  rigl, set                           dynamic sparse training, ERK
  imp                                 3 rounds, rewinding to init (0.98 only)

LeNet-300-100: 5 seeds, 0.90/0.95/0.98/0.99, dense once per seed. LeNet-5-Caffe at 0.99: dense, the paper's
schedule and windowed cubic on 3 seeds; snip, grasp and rigl on 2 (42, 123).

Cut for the 600 CPU-minute budget, in the issue's order, planned from the first 69 runs (199 CPU-minutes: a
LeNet-300 run 1-3.5 minutes of one core with two jobs sharing the machine, a LeNet-5 run 18-23): the VGG-19
column (width 8, 10,000-image subset, 8 epochs: 15 runs), LeNet-5's third seed for snip, grasp and rigl (about
60 minutes), and oneshot (20 LeNet-300 runs). set runs last; it is the next cut if the budget runs out.

The sweeps run in the order below (what the report needs most first), two jobs at a time with one thread each;
rerunning skips finished runs and resumes killed ones. Then:

    python aggregate.py study/third/results -o study/third/table.md --plot study/third

    python study/run_third.py                  # several hours on the project's 2-core CPU machine
    python study/run_third.py --dry-run        # print the commands
"""

import os

from run_study import DATA, run_sweeps

DATA_FLAGS = ["--dataset", "fashion-mnist", "--data-dir", DATA, "--no-download"]
LENET300 = [*DATA_FLAGS, "--arch", "lenet300", "--epochs", "30", "--batch-size", "100"]
LENET5 = [*DATA_FLAGS, "--arch", "lenet5", "--epochs", "30", "--batch-size", "100", "--lr", "0.01"]
JOBS = ["--jobs", "2", "--devices", "cpu"]
FIVE, THREE, TWO = (["--seeds", seeds, *JOBS] for seeds in ("42,123,456,789,999", "42,123,456", "42,123"))
ALL = ["--targets", "0.9,0.95,0.98,0.99"]
WINDOW = ["--set", "prune_every=50", "--set", "prune_end=0.75"]
SWEEPS = [
    (["--methods", "dense,progressive", *ALL, *FIVE], LENET300),
    (["--methods", "progressive", *ALL, *WINDOW, "--set", "schedule=linear,cubic", *FIVE], LENET300),
    (["--methods", "dense,progressive", "--targets", "0.99", *THREE], LENET5),
    (["--methods", "progressive", "--targets", "0.99", *WINDOW, "--set", "schedule=cubic", *THREE], LENET5),
    (["--methods", "snip,grasp,rigl", *ALL, *FIVE], LENET300),
    (["--methods", "random", *ALL, "--set", "distribution=erk", *FIVE], LENET300),
    (["--methods", "snip,grasp,rigl", "--targets", "0.99", *TWO], LENET5),
    (["--methods", "imp", "--targets", "0.98", "--set", "rounds=3", *FIVE], LENET300),
    (["--methods", "set", *ALL, *FIVE], LENET300),
]

if __name__ == "__main__":
    raise SystemExit(run_sweeps(SWEEPS, os.path.join("study", "third", "results"), __doc__))
