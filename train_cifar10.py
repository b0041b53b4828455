"""ResNet-18 on CIFAR-10 with progressive global magnitude pruning: the paper's main experiment.

Recipe (defaults = paper): 200 epochs, batch 128, SGD lr 0.1 momentum 0.9 weight decay 5e-4, cosine annealing,
label smoothing 0.1, sparsity raised linearly at the start of each epoch from 0 to 0.796 at the last epoch.

examples:
  python train_cifar10.py --seed 42                                    # one paper run (GPU: see README)
  for s in 42 123 456 789 999; do python train_cifar10.py --seed $s; done
  python train_cifar10.py --width 16 --epochs 2 --train-subset 2000 --out results/try   # CPU smoke run
"""

from harness import loop

SCRIPT = loop.Script("train_cifar10.py", ("cifar10", "cifar100"), ("progressive",), __doc__)

if __name__ == "__main__":
    raise SystemExit(loop.main(SCRIPT))
