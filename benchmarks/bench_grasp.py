"""GraSP's scoring against a training step (issue 23: at most 3x one training step per score batch).

The harness's own GraSP (methods.Grasp.scores: the gradient pass and the Hessian-gradient pass over
``--score-batches`` class-balanced batches, BatchNorm statistics restored) on synthetic data, against one
training step of the same harness (forward, loss, backward, SGD step) at the same batch size. Medians of
interleaved runs.

    python benchmarks/bench_grasp.py --arch lenet300 --batch-size 100
    python benchmarks/bench_grasp.py --arch resnet18 --width 8 --batch-size 32 --score-batches 2
"""

import argparse
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from harness import config, devices, loop, methods, run as harness_run  # noqa: E402
from harness.run import Run  # noqa: E402
from interleave import interleaved_medians  # noqa: E402


def make_run(args) -> Run:
    script = loop.Script("bench_grasp.py", tuple(config.PAPER_RECIPES), ("grasp",), "")
    width = [] if args.width is None else ["--width", str(args.width)]
    cfg = loop.parse(script, ["--dataset", "fashion-mnist", "--arch", args.arch, *width, "--seed", "0", "--dummy",
                                 "--batch-size", str(args.batch_size), "--score-batches", str(args.score_batches),
                                 "--val-fraction", "0", "--train-subset", str(4 * args.batch_size * args.score_batches),
                                 "--device", "cpu"])
    return harness_run.make_run(devices.resolve_precision(cfg, torch.device("cpu")), methods.create(cfg), torch.device("cpu"),
                                {"checkpoint": ""})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="lenet300")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--score-batches", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    run = make_run(args)
    x, y = run.data.train[0][:args.batch_size], run.data.train[1][:args.batch_size]
    x = run.data.train_transform(x, torch.Generator().manual_seed(0))

    def score() -> float:
        t0 = time.perf_counter()
        run.method.scores(run)
        return time.perf_counter() - t0

    def step() -> float:
        t0 = time.perf_counter()
        loop.forward_backward(run, x, y)
        run.optimizer.step()
        return time.perf_counter() - t0
    score(), step()  # warm-up
    times = interleaved_medians({"score": score, "step": step}, args.repeats)
    s, t = times["score"], times["step"]
    per_batch = s / args.score_batches
    print(f"{args.arch}{'' if args.width is None else f' width {args.width}'}, batch {args.batch_size}, "
          f"{args.score_batches} score batch(es), {platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, median of {args.repeats}")
    print(f"  GraSP scoring {1000 * s:.1f} ms = {1000 * per_batch:.1f} ms per score batch; one training step "
          f"{1000 * t:.1f} ms; ratio {per_batch / t:.2f}x per score batch")


if __name__ == "__main__":
    main()
