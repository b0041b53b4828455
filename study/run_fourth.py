"""The fourth study (issue 32): the real MNIST digits, full size, each baseline against its own paper's table.

Real MNIST (``python fetch_mnist.py``: LeCun's four files, checked), the LeNets at full size on the 28x28
images as stored, fp32, the 10,000 test images. Two recipes (config.RECIPES), each in its own results folder:

  recipesnip   SNIP's published MNIST recipe: SGD momentum 0.9, batch 100, weight decay 5e-4, lr 0.1 times 0.1
               at step 25,000, no augmentation, no label smoothing, 10% held out (54,000 train / 6,000
               validation); a budget of 30,000 steps (55.6 epochs; SNIP states none, its code's default is 10k)
  recipepaper  the paper's MNIST recipe (cosine, label smoothing 0.1, left-right flips, 11% held out) at batch
               100 and 30 epochs (16,020 steps), as the third study ran it on Fashion-MNIST

LeNet-5-Caffe runs at lr 0.01 (SNIP's 0.1 is stated for every network, but ours diverged at 0.1 in the first
epoch of a dense run, training loss NaN, as on Fashion-MNIST in the third study; Caffe's LeNet solver uses 0.01).

Methods: dense; snip and grasp (one batch of 100, one global ranking); random-erk; rigl (ERK); the paper's
schedule as published (progressive: linear, one event per epoch, the target at the last epoch's start); the
windowed cubic ramp (an event every 50 steps, ending at 75% of training). In the issue's order, the long
LeNet-5 sweep last:

  1. LeNet-300-100 at 98%, 5 seeds, SNIP's recipe: dense, snip, grasp, random-erk, rigl, progressive, windowed
  2. LeNet-300-100 at 98%, 5 seeds, the paper's recipe: dense, snip, progressive, windowed
  3. LeNet-300-100 at 90/95/99%, 3 seeds, SNIP's recipe: snip, progressive, windowed
  4. LeNet-5-Caffe at 99%, 3 seeds, SNIP's recipe: dense, snip, progressive, windowed
  5. LeNet-300-100 at 98%, 5 seeds, the paper's recipe: grasp, random-erk (is the third study's "SNIP and GraSP
     below random-ERK" Fashion-MNIST's or the paper's recipe's? added after the first 94 runs)

Two jobs at a time with one thread each; rerunning skips finished runs and resumes killed ones. Then:

    python aggregate.py study/fourth/results -o study/fourth/table.md --plot study/fourth --published

    python fetch_mnist.py && python study/run_fourth.py      # 435 CPU-minutes: about 3.6 hours on the 2-core machine
    python study/run_fourth.py --dry-run                      # print the commands
"""

import os

from run_study import run_sweeps

DATA = os.path.join("data")  # fetch_mnist.py's default: data/MNIST/raw
LENET300 = ["--dataset", "mnist", "--data-dir", DATA, "--no-download", "--arch", "lenet300"]
LENET300_PAPER = [*LENET300, "--batch-size", "100", "--epochs", "30"]
SNIP, PAPER = ["--set", "recipe=snip"], ["--set", "recipe=paper"]  # each recipe's runs in their own folder
LENET5 = ["--dataset", "mnist", "--data-dir", DATA, "--no-download", "--arch", "lenet5", "--lr", "0.01"]
JOBS = ["--jobs", "2", "--devices", "cpu"]
FIVE, THREE = (["--seeds", seeds, *JOBS] for seeds in ("42,123,456,789,999", "42,123,456"))
WINDOW = ["--set", "prune_every=50", "--set", "prune_end=0.75", "--set", "schedule=cubic"]
SWEEPS = [
    (["--methods", "dense,snip,grasp,rigl,progressive", "--targets", "0.98", *SNIP, *FIVE], LENET300),
    (["--methods", "random", "--targets", "0.98", "--set", "distribution=erk", *SNIP, *FIVE], LENET300),
    (["--methods", "progressive", "--targets", "0.98", *WINDOW, *SNIP, *FIVE], LENET300),
    (["--methods", "dense,snip,progressive", "--targets", "0.98", *PAPER, *FIVE], LENET300_PAPER),
    (["--methods", "progressive", "--targets", "0.98", *WINDOW, *PAPER, *FIVE], LENET300_PAPER),
    (["--methods", "snip,progressive", "--targets", "0.9,0.95,0.99", *SNIP, *THREE], LENET300),
    (["--methods", "progressive", "--targets", "0.9,0.95,0.99", *WINDOW, *SNIP, *THREE], LENET300),
    (["--methods", "dense,snip,progressive", "--targets", "0.99", *SNIP, *THREE], LENET5),
    (["--methods", "progressive", "--targets", "0.99", *WINDOW, *SNIP, *THREE], LENET5),
    # added after the first 94 runs: is "below random-ERK" (the third study) the dataset's or the recipe's?
    (["--methods", "grasp", "--targets", "0.98", *PAPER, *FIVE], LENET300_PAPER),
    (["--methods", "random", "--targets", "0.98", "--set", "distribution=erk", *PAPER, *FIVE], LENET300_PAPER),
]

if __name__ == "__main__":
    raise SystemExit(run_sweeps(SWEEPS, os.path.join("study", "fourth", "results"), __doc__, data=DATA,
                                missing="python fetch_mnist.py fetches the real MNIST digits there"))
