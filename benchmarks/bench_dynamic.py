"""What one RigL or SET mask update costs next to the training steps between two updates, on this machine.

For each method: the harness's run of ResNet-18 on synthetic data (paper's recipe for --dataset) at the target
sparsity with an ERK mask; one training step (forward, backward, SGD step), timed --repeats times; then one
mask update (dynamic.DynamicSparse.after_backward on an update step: dense-gradient scores or random ones,
drop and grow in every layer, optimizer state zeroed), timed --repeats times on fresh gradients. The figure
that matters is the update's share of the --update-every steps it is amortised over (README: at most 1%).

    python benchmarks/bench_dynamic.py --width 64
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import config, data, devices, loop, methods  # noqa: E402
from harness.run import Run, make_run  # noqa: E402
import train_baseline  # noqa: E402
from bench_train import cpu_model, sync  # noqa: E402


def make(args, method: str, device: torch.device) -> Run:
    images = config.PAPER_RECIPES[args.dataset].batch_size * 4
    cfg = loop.parse(train_baseline.SCRIPT, [  # the command line's own path to a run's config
        "--dataset", args.dataset, "--method", method, "--width", str(args.width), "--seed", "0", "--dummy",
        "--val-fraction", "0", "--train-subset", str(images), "--device", device.type,
        "--target-sparsity", str(args.target)])
    run = make_run(devices.resolve_precision(cfg, device), methods.create(cfg), device, {"checkpoint": ""})
    run.method.start_round(run, 0)
    return run


def one_step(run: Run, x, y, step: int, update: bool) -> float:
    """Seconds of one training step; with ``update``, of the mask update after its backward pass instead."""
    sync(run.device)
    t0 = time.perf_counter()
    run.method.start_step(run, step)
    loop.forward_backward(run, x, y)
    if update:
        sync(run.device)
        t0 = time.perf_counter()
        run.method.after_backward(run, step)
        sync(run.device)
        return time.perf_counter() - t0
    run.optimizer.step()
    sync(run.device)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar10", choices=tuple(config.PAPER_RECIPES))
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = devices.pick_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(f"{args.dataset}, ResNet-18 width {args.width}, target {args.target} (ERK), {device}, {where}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, median of {args.repeats}")
    for name in ("rigl", "set"):
        run = make(args, name, device)
        x, y = next(iter(data.iterate_batches(*run.data.train, run.config.batch_size, run.data.eval_transform)))
        every = run.method.options.update_every
        one_step(run, x, y, 1, update=False)  # warm-up
        step_s = statistics.median(one_step(run, x, y, 1, update=False) for _ in range(args.repeats))
        update_s = statistics.median(one_step(run, x, y, every, update=True) for _ in range(args.repeats))
        print(f"  {name}: training step {1000 * step_s:8.1f} ms, mask update {1000 * update_s:8.1f} ms = "
              f"{100 * update_s / (every * step_s):.3f}% of the {every} steps between updates")


if __name__ == "__main__":
    main()
