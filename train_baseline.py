"""The baselines the paper compares against, in the same harness, data, seeds and budget as its method.

Methods (each cites its paper in methods.py):
  oneshot   train dense, prune once to the target at the start of --prune-epoch (default epochs // 2), keep training
  snip      prune at initialisation by |dL/dw * w| over --score-batches batches (default 1), train with the mask
  random    prune at initialisation with seeded random scores, train with the fixed mask
  imp       lottery tickets: dense round 0, then --rounds rounds of prune (global magnitude) + rewind to
            --rewind-epoch (default 0) + retrain; default rounds: smallest R with 0.8**R <= 1 - target
  ticket    retrain a finished pruned run's final mask (--mask-from) from --reinit donor | random
  progressive, dense   the paper's method and the dense baseline (as train_mnist.py / train_dense.py)
The GMP baseline (Zhu & Gupta 2017) is the progressive method with --schedule cubic.

Recipe defaults follow the dataset, as the other scripts (CIFAR: 200 epochs, batch 128, target 0.796;
(Fashion-)MNIST: 30 epochs, batch 32, target 0.744).

examples:
  python train_baseline.py --dataset cifar10 --method snip --seed 42
  python train_baseline.py --dataset mnist --method imp --rounds 3 --target-sparsity 0.9
  python train_baseline.py --dataset mnist --method ticket --reinit random \\
      --mask-from results/mnist/progressive-0.744/seed42.json
"""

import experiment

SCRIPT = experiment.Script("train_baseline.py", ("cifar10", "cifar100", "mnist", "fashion-mnist"),
                           ("oneshot", "snip", "random", "imp", "ticket", "progressive", "dense"), __doc__,
                           dataset_required=True)

if __name__ == "__main__":
    raise SystemExit(experiment.main(SCRIPT))
