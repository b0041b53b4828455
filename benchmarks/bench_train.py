"""Training throughput of the harness next to a bare training step of the same model, on this machine.

The harness figure is loop.train_one_epoch on synthetic data with the paper's recipe: augmentation,
the pruning reparametrisation (masks at 40%), forward, backward, SGD step, loss and accuracy bookkeeping. The
bare figure is the same network and batch size, fed one fixed pre-made batch, with only forward, loss,
backward and step, in each memory layout. The bare loop is what a plain PyTorch loop over the same training
tensors does (shuffle, gather, normalise, step; no augmentation) with the same masks (pruning.py's, at 40%):
the harness against it is what the harness costs beyond a plain loop training the same masked model. The ratio of the harness to the bare step in the harness's layout
(contiguous on the CPU unless --channels-last; channels_last on CUDA) is what the harness costs beyond the
model itself.
The harness is also timed with a no-op per-step hook (both of method.Method's hooks, called every step) to
show what the hook call costs. All are timed in turn, --repeats times, and each figure is a median; the
extrapolation to a full run is an estimate. Last, one pruning update and one epoch-end mask-dynamics record
(record.track_mask_dynamics: a ranking of every weight) are timed against an epoch.

    python benchmarks/bench_train.py --dataset cifar10 --width 64 --images 512
    python benchmarks/bench_train.py --dataset fashion-mnist --arch lenet300 --batch-size 100 --images 10000
"""

import argparse
import os
import platform
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import pruning  # noqa: E402
from harness import config, data, devices, loop, methods, networks, record  # noqa: E402
from harness.run import Run, make_run  # noqa: E402
from interleave import interleaved_medians  # noqa: E402


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def width_flags(args) -> list[str]:
    return [] if args.width is None else ["--width", str(args.width)]


def harness_setup(args, device: torch.device) -> tuple[Run, "callable"]:
    """The harness on synthetic data, masks at 40%, warmed up; and a function timing one epoch of it."""
    script = loop.Script("bench_train.py", tuple(config.PAPER_RECIPES), ("progressive",), "")
    cfg = loop.parse(script, ["--dataset", args.dataset, "--arch", args.arch, *width_flags(args), "--seed", "0",
                                 "--dummy", "--batch-size", str(args.batch_size),
                                 "--val-fraction", "0", "--train-subset", str(args.images), "--device", device.type])
    run = make_run(devices.resolve_precision(cfg, device), methods.create(cfg), device, {"checkpoint": ""})  # "": a fresh run
    pruning.global_magnitude_prune(run.params, 0.4, optimizer=run.optimizer)
    epochs = iter(range(10**6))
    no_op = lambda run, step: None  # noqa: E731

    def one_epoch(hook: bool) -> float:
        run.method.start_step = run.method.after_backward = no_op if hook else None  # no schedule: masks fixed
        sync(device)
        t0 = time.perf_counter()
        loop.train_one_epoch(run, next(epochs))
        sync(device)
        return time.perf_counter() - t0
    one_epoch(False)  # warm-up
    return run, one_epoch


def bare_setup(args, device: torch.device, channels_last: bool, precision: str):
    """The same model and batch size, one fixed batch, only forward/loss/backward/step; warmed up."""
    spec, batch = data.DATASETS[args.dataset], args.batch_size
    torch.manual_seed(0)
    net = networks.build_network(args.arch, spec.in_channels, spec.num_classes, args.width).to(device)
    size = networks.ARCHITECTURES[args.arch].input_size
    x = torch.randn(batch, spec.in_channels, size, size, device=device)
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, spec.num_classes, (batch,), device=device)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    steps = max(1, args.images // batch)

    def one_pass() -> float:
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            with devices.autocast(device, precision):
                loss = loss_fn(net(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        return (time.perf_counter() - t0) * args.images / (steps * batch)  # per args.images
    one_pass()  # warm-up
    return one_pass


def bare_loop_setup(args, run: Run):
    """A plain PyTorch loop over the harness's own training tensors: a shuffle, each batch gathered by index
    and normalised (no augmentation), forward, loss, backward, step; the same network with pruning.py's masks
    at 40%, as the harness trains it. Warmed up."""
    images, labels = run.data.train
    spec, device = data.DATASETS[args.dataset], run.device
    mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1)
    torch.manual_seed(0)
    net = networks.build_network(args.arch, spec.in_channels, spec.num_classes, args.width).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    params = pruning.prunable_parameters(net)
    pruning.attach_masks(params)
    pruning.global_magnitude_prune(params, 0.4, optimizer=opt)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)

    def one_pass() -> float:
        sync(device)
        t0 = time.perf_counter()
        order = torch.randperm(labels.shape[0], device=device)
        for start in range(0, labels.shape[0], args.batch_size):
            idx = order[start:start + args.batch_size]
            x = (images[idx].float() / 255 - mean) / std
            loss = loss_fn(net(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        return time.perf_counter() - t0
    one_pass()
    return one_pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar10", choices=tuple(config.PAPER_RECIPES))
    parser.add_argument("--arch", default="resnet18", choices=tuple(networks.ARCHITECTURES))
    parser.add_argument("--width", type=int, default=None, help="64 for the scalable networks")
    parser.add_argument("--batch-size", type=int, default=None, help="the dataset's paper recipe by default")
    parser.add_argument("--images", type=int, default=512, help="training images per timed pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per figure (median reported)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    args.batch_size = args.batch_size or config.PAPER_RECIPES[args.dataset].batch_size
    if networks.ARCHITECTURES[args.arch].scalable:
        args.width = args.width or config.DEFAULT_WIDTH
    device = devices.pick_device(args.device)
    run, time_epoch = harness_setup(args, device)
    same_layout = devices.channels_last(run.config, device)
    bare = {cl: bare_setup(args, device, cl, run.config.precision) for cl in (False, True)}
    bare["masked"] = bare_loop_setup(args, run)
    times = interleaved_medians({"harness": lambda: time_epoch(False), "hooked": lambda: time_epoch(True), **bare},
                                args.repeats)
    rate = args.images / times["harness"]
    bare_rate = args.images / times[same_layout]  # the bare step in the harness's layout
    masked_rate = args.images / times["masked"]
    layout = "channels_last" if same_layout else "contiguous"
    recipe = config.PAPER_RECIPES[args.dataset]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(f"{args.dataset}, {args.arch}{'' if args.width is None else f' width {args.width}'}, batch {args.batch_size}, {device} {run.config.precision}, "
          f"{where}, {torch.get_num_threads()} threads, torch {torch.__version__}, median of {args.repeats} "
          f"interleaved passes of {args.images} images")
    print(f"  bare step, contiguous:     {args.images / times[False]:8.0f} images/s")
    print(f"  bare step, channels_last:  {args.images / times[True]:8.0f} images/s")
    print(f"  bare loop over the same tensors, masks at 40% (pruning.py): {masked_rate:8.0f} images/s")
    print(f"  harness ({layout}, masks at 40%): {rate:8.0f} images/s = {rate / bare_rate:.3f}x the bare step in that "
          f"layout, {rate / masked_rate:.3f}x the bare loop")
    hooked = args.images / times["hooked"]
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
    print(f"  estimate: {epoch_s:.1f} s per epoch of {n_train} images, "
          f"{recipe.epochs * epoch_s / 3600:.1f} h for {recipe.epochs} epochs (excl. validation)")


if __name__ == "__main__":
    main()
