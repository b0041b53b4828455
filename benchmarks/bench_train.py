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
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import data  # noqa: E402
import experiment  # noqa: E402
import pruning  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar10", choices=tuple(experiment.PAPER_RECIPES))
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--images", type=int, default=512, help="training images to time")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    recipe = experiment.PAPER_RECIPES[args.dataset]
    device = experiment.pick_device(args.device)
    precision = "bf16" if device.type == "cuda" else "fp32"
    config = {"seed": 0, "batch_size": recipe.batch_size, "width": args.width, "method": "progressive"}
    d = data.prepare_data(args.dataset, dummy=True, val_fraction=0.0, train_subset=args.images, device=device)
    model, params = experiment.build_model(config, d.in_channels, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    experiment.train_one_epoch(model, optimizer, criterion, d, config, 0, device, precision)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    experiment.train_one_epoch(model, optimizer, criterion, d, config, 1, device, precision)
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = args.images / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    pruning.global_magnitude_prune(params, 0.4, optimizer=optimizer)
    prune_s = time.perf_counter() - t0
    n_train = round(data.DATASETS[args.dataset].train_size * (1 - 0.11))
    epoch_s = n_train / rate
    print(f"{args.dataset}, ResNet-18 width {args.width}, batch {recipe.batch_size}, {device} {precision}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"  training: {rate:.0f} images/s over {args.images} images")
    print(f"  one pruning update: {1000 * prune_s:.0f} ms ({100 * prune_s / epoch_s:.3f}% of an epoch)")
    print(f"  estimate: {epoch_s / 60:.1f} min per epoch of {n_train} images, "
          f"{recipe.epochs * epoch_s / 3600:.1f} h for {recipe.epochs} epochs (excl. validation)")


if __name__ == "__main__":
    main()
