"""ResNet-18 (1-channel stem) on MNIST or Fashion-MNIST with progressive global magnitude pruning.

Recipe (defaults = paper): 30 epochs, batch 32, SGD lr 0.1 momentum 0.9 weight decay 5e-4, cosine annealing,
label smoothing 0.1, sparsity raised linearly at the start of each epoch from 0 to 0.744 at the last epoch.
Images are resized to 32x32 and, as in the paper, randomly flipped left-right (--no-hflip turns that off).

examples:
  python train_mnist.py --seed 42
  python train_mnist.py --dataset fashion-mnist --data-dir /usr/share/datasets/fashion-mnist
  python train_mnist.py --dataset fashion-mnist --data-dir /usr/share/datasets/fashion-mnist \\
      --width 8 --epochs 3 --train-subset 3000 --out results/quickstart      # a few minutes on a CPU
"""

from harness import loop

SCRIPT = loop.Script("train_mnist.py", ("mnist", "fashion-mnist"), ("progressive",), __doc__)

if __name__ == "__main__":
    raise SystemExit(loop.main(SCRIPT))
