"""The baselines the paper compares against, in the same harness, data, seeds and budget as its method.

Every method of harness/methods.py (each cites its paper there):
{methods}
The GMP baseline (Zhu & Gupta 2017) is the progressive method with --schedule cubic.

Recipe defaults follow the dataset, as the other scripts (CIFAR: 200 epochs, batch 128, target 0.796;
(Fashion-)MNIST: 30 epochs, batch 32, target 0.744).

examples:
  python train_baseline.py --dataset cifar10 --method snip --seed 42
  python train_baseline.py --dataset mnist --method imp --rounds 3 --target-sparsity 0.9
  python train_baseline.py --dataset mnist --method progressive --target-sparsity 0.9 --prune-every 100 \\
      --prune-end 0.75
  python train_baseline.py --dataset mnist --method ticket --reinit random \\
      --mask-from results/mnist/progressive-0.744/seed42.json
"""

from harness import loop, methods

SCRIPT = loop.Script("train_baseline.py", ("cifar10", "cifar100", "mnist", "fashion-mnist"),
                        tuple(methods.METHODS), __doc__.replace("{methods}", methods.describe(tuple(methods.METHODS))),
                           dataset_required=True)

if __name__ == "__main__":
    raise SystemExit(loop.main(SCRIPT))
