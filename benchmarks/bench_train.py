"""Training throughput of the harness on the current machine, and what it implies for the paper's runs.

Times experiment.train_one_epoch (augmentation, forward, backward, SGD step) over a few hundred synthetic
images with the paper's recipe, and one pruning update, then extrapolates to a full epoch and a full run.
The extrapolation is an estimate, printed as such.

    python benchmarks/bench_train.py --dataset cifar10 --width 64 --images 512
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import config  # noqa: E402
import data  # noqa: E402
import experiment  # noqa: E402
import methods  # noqa: E402
import pruning  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar10", choices=tuple(config.PAPER_RECIPES))
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--images", type=int, default=512, help="training images to time")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = experiment.pick_device(args.device)
    cfg = config.Config(dataset=args.dataset, method="progressive", width=args.width, seed=0, dummy=True,
                        val_fraction=0.0, train_subset=args.images, device=device.type)
    cfg = experiment.resolve_precision(methods.resolve(config.with_recipe_defaults(cfg)), device)
    run = experiment.make_run(cfg, device, {"checkpoint": ""})  # no checkpoint: a fresh run
    experiment.train_one_epoch(run, 0)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    experiment.train_one_epoch(run, 1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = args.images / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    pruning.global_magnitude_prune(run.params, 0.4, optimizer=run.optimizer)
    prune_s = time.perf_counter() - t0
    n_train = round(data.DATASETS[args.dataset].train_size * (1 - 0.11))
    epoch_s = n_train / rate
    recipe = config.PAPER_RECIPES[args.dataset]
    print(f"{args.dataset}, ResNet-18 width {args.width}, batch {recipe.batch_size}, {device} {cfg.precision}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"  training: {rate:.0f} images/s over {args.images} images")
    print(f"  one pruning update: {1000 * prune_s:.0f} ms ({100 * prune_s / epoch_s:.3f}% of an epoch)")
    print(f"  estimate: {epoch_s / 60:.1f} min per epoch of {n_train} images, "
          f"{recipe.epochs * epoch_s / 3600:.1f} h for {recipe.epochs} epochs (excl. validation)")


if __name__ == "__main__":
    main()
