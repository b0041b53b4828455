"""The dense baseline: the same recipe, seeds and data as the pruned runs, with pruning off.

Recipe defaults follow the dataset: CIFAR-10 200 epochs, batch 128; (Fashion-)MNIST 30 epochs, batch 32;
SGD lr 0.1 momentum 0.9 weight decay 5e-4, cosine annealing, label smoothing 0.1.

examples:
  python train_dense.py --dataset cifar10 --seed 42
  python train_dense.py --dataset mnist --seed 42
"""

from harness import loop

SCRIPT = loop.Script("train_dense.py", ("cifar10", "cifar100", "mnist", "fashion-mnist"), ("dense",), __doc__,
                        dataset_required=True)

if __name__ == "__main__":
    raise SystemExit(loop.main(SCRIPT))
