"""Training throughput of the harness next to a bare training step of the same model, on this machine.

The harness figure is harness.train_one_epoch on synthetic data with the paper's recipe: augmentation,
the pruning reparametrisation (masks at 40%), forward, backward, SGD step, loss and accuracy bookkeeping. The
bare figure is the same ResNet-18 and batch size, fed one fixed pre-made batch, with only forward, loss,
backward and step, in each memory layout. The ratio of the harness to the bare step in the harness's layout
(contiguous on the CPU unless --channels-last; channels_last on CUDA) is what the harness costs beyond the
model itself.
The harness is also timed with a no-op per-step hook (both of method.Method's hooks, called every step) to
show what the hook call costs. All are timed in turn, --repeats times, and each figure is a median; the
extrapolation to a full run is an estimate. Last, one pruning update and one epoch-end mask-dynamics record
(record.track_mask_dynamics: a ranking of every weight) are timed against an epoch.

    python benchmarks/bench_train.py --dataset cifar10 --width 64 --images 512
"""

import argparse
import os
import platform
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import config  # noqa: E402
import data  # noqa: E402
import devices  # noqa: E402
import harness  # noqa: E402
import pruning  # noqa: E402
import record  # noqa: E402
from model import ResNet18  # noqa: E402


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def harness_setup(args, device: torch.device) -> tuple[harness.Run, "callable"]:
    """The harness on synthetic data, masks at 40%, warmed up; and a function timing one epoch of it."""
    script = harness.Script("bench_train.py", tuple(config.PAPER_RECIPES), ("progressive",), "")
    cfg = harness.parse(script, ["--dataset", args.dataset, "--width", str(args.width), "--seed", "0", "--dummy",
                                 "--val-fraction", "0", "--train-subset", str(args.images), "--device", device.type])
    run = harness.make_run(devices.resolve_precision(cfg, device), device, {"checkpoint": ""})  # "": a fresh run
    pruning.global_magnitude_prune(run.params, 0.4, optimizer=run.optimizer)
    epochs = iter(range(10**6))
    no_op = lambda run, step: None  # noqa: E731

    def one_epoch(hook: bool) -> float:
        run.method.start_step = run.method.after_backward = no_op if hook else None  # no schedule: masks fixed
        sync(device)
        t0 = time.perf_counter()
        harness.train_one_epoch(run, next(epochs))
        sync(device)
        return time.perf_counter() - t0
    one_epoch(False)  # warm-up
    return run, one_epoch


def bare_setup(args, device: torch.device, channels_last: bool, precision: str):
    """The same model and batch size, one fixed batch, only forward/loss/backward/step; warmed up."""
    spec, recipe = data.DATASETS[args.dataset], config.PAPER_RECIPES[args.dataset]
    torch.manual_seed(0)
    model = ResNet18(spec.in_channels, spec.num_classes, args.width).to(device)
    x = torch.randn(recipe.batch_size, spec.in_channels, 32, 32, device=device)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, spec.num_classes, (recipe.batch_size,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    steps = max(1, args.images // recipe.batch_size)

    def one_pass() -> float:
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            with devices.autocast(device, precision):
                loss = loss_fn(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        return (time.perf_counter() - t0) * args.images / (steps * recipe.batch_size)  # per args.images
    one_pass()  # warm-up
    return one_pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar10", choices=tuple(config.PAPER_RECIPES))
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--images", type=int, default=512, help="training images per timed pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per figure (median reported)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = devices.pick_device(args.device)
    run, time_epoch = harness_setup(args, device)
    bare = {cl: bare_setup(args, device, cl, run.config.precision) for cl in (False, True)}
    times = {"harness": [], "hooked": [], False: [], True: []}
    for _ in range(args.repeats):  # interleaved, so that drift of a noisy machine hits all alike
        times["harness"].append(time_epoch(False))
        times["hooked"].append(time_epoch(True))
        for cl in (False, True):
            times[cl].append(bare[cl]())
    rate = args.images / statistics.median(times["harness"])
    same_layout = devices.channels_last(run.config, device)
    bare_rate = args.images / statistics.median(times[same_layout])  # the bare step in the harness's layout
    layout = "channels_last" if same_layout else "contiguous"
    recipe = config.PAPER_RECIPES[args.dataset]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(f"{args.dataset}, ResNet-18 width {args.width}, batch {recipe.batch_size}, {device} {run.config.precision}, "
          f"{where}, {torch.get_num_threads()} threads, torch {torch.__version__}, median of {args.repeats} "
          f"interleaved passes of {args.images} images")
    print(f"  bare step, contiguous:     {args.images / statistics.median(times[False]):8.0f} images/s")
    print(f"  bare step, channels_last:  {args.images / statistics.median(times[True]):8.0f} images/s")
    print(f"  harness ({layout}): {rate:8.0f} images/s = {rate / bare_rate:.3f}x the bare step in that layout")
    hooked = args.images / statistics.median(times["hooked"])
    print(f"  harness + no-op per-step hooks: {hooked:8.0f} images/s = {hooked / rate:.3f}x the harness without")
    n_train = round(data.DATASETS[args.dataset].train_size * (1 - 0.11))
    epoch_s = n_train / rate
    for what, work in (("one pruning update", lambda: pruning.global_magnitude_prune(run.params, 0.5, run.optimizer)),
                       ("one mask-dynamics record", lambda: record.track_mask_dynamics(run, 2, 10))):
        sync(device)
        t0 = time.perf_counter()
        work()
        sync(device)
        seconds = time.perf_counter() - t0
        print(f"  {what}: {1000 * seconds:.0f} ms ({100 * seconds / epoch_s:.3f}% of an epoch)")
    print(f"  estimate: {epoch_s / 60:.1f} min per epoch of {n_train} images, "
          f"{recipe.epochs * epoch_s / 3600:.1f} h for {recipe.epochs} epochs (excl. validation)")


if __name__ == "__main__":
    main()
