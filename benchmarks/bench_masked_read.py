"""What pruning.py's masked read costs (issue 22): a training step, a mask update, memory over many updates.

1. A training step (forward, backward, SGD step with momentum) of torchvision's ResNet-50 (batch 32, 64x64
   images: 224x224 is minutes per step on a 2-core CPU) and a small VisionTransformer (batch 32, 32x32, 4
   layers, width 128), masks at 50%, with pruning.py's property against torch's own forward pre-hook (what
   pruning.py used before: ``weight = weight_orig * weight_mask`` recomputed by ``prune``'s hook at each
   forward of the module). Median of interleaved runs, so that drift of a busy machine hits both alike.
2. One mask update (``global_magnitude_prune`` by 5% more) against ``torch.kthvalue`` over the same weights.
3. Memory: the process's resident set and the count of live tensors after 200 updates, against after 10.

    python benchmarks/bench_masked_read.py [--repeats 7]
"""

import argparse
import gc
import os
import platform
import resource
import statistics
import sys
import time
import warnings

import torch
import torchvision
from torch import nn
from torch.nn.utils import prune

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import pruning  # noqa: E402
from interleave import interleaved_medians  # noqa: E402


def models() -> dict:
    return {"ResNet-50, batch 32, 64x64": (lambda: torchvision.models.resnet50(num_classes=10), (32, 3, 64, 64)),
            "ViT (4 layers, width 128), batch 32, 32x32":
                (lambda: torchvision.models.VisionTransformer(32, 4, 4, 4, 128, 256, num_classes=10), (32, 3, 32, 32))}


def with_masks(build, mechanism: str) -> tuple[nn.Module, list]:
    """The model with the same 50% masks, through pruning.py (property) or torch's own pre-hook."""
    torch.manual_seed(0)
    model = build()
    params = pruning.prunable_parameters(model)
    if mechanism == "property":
        pruning.global_magnitude_prune(params, 0.5)
    else:
        torch.manual_seed(1)
        for module, name in params:  # the same kind of mask, through torch's BasePruningMethod and its pre-hook
            prune.random_unstructured(module, name, amount=0.5)
            with torch.no_grad():  # as pruning.py did after an update: else a weight no forward of its own
                # module refreshes (MultiheadAttention.out_proj) keeps the graph of the first step and the
                # second backward fails (pytorch/pytorch 69353); this way it only stops learning
                setattr(module, name, getattr(module, name + "_orig") * getattr(module, name + "_mask"))
    return model, params


def step_timer(model: nn.Module, shape: tuple):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(*shape), torch.randint(0, 10, (shape[0],))

    def one_step() -> float:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        return time.perf_counter() - t0
    one_step()  # warm-up
    return one_step


def bench_steps(repeats: int) -> None:
    for label, (build, shape) in models().items():
        timers = {m: step_timer(with_masks(build, m)[0], shape) for m in ("property", "pre-hook")}
        times = interleaved_medians(timers, repeats)
        hook, prop = times["pre-hook"], times["property"]
        print(f"  {label}: torch pre-hook {1000 * hook:.0f} ms, property {1000 * prop:.0f} ms per step "
              f"({100 * (prop / hook - 1):+.1f}%)")


def bench_update(repeats: int) -> None:
    build, _ = models()["ResNet-50, batch 32, 64x64"]
    model, params = with_masks(build, "property")
    update, kth = [], []
    for i in range(repeats):
        weights = torch.cat([(m._parameters[n + "_orig"]).detach().reshape(-1) for m, n in params])
        t0 = time.perf_counter()
        torch.kthvalue(weights.abs(), weights.numel() // 2)
        kth.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pruning.global_magnitude_prune(params, 0.5 + 0.45 * (i + 1) / (repeats + 1))  # rising, below 0.95
        update.append(time.perf_counter() - t0)
    n = sum(m._buffers[n + "_mask"].numel() for m, n in params)
    u, k = statistics.median(update), statistics.median(kth)
    print(f"  one mask update over ResNet-50's {n:,} weights: {1000 * u:.0f} ms; torch.kthvalue over them "
          f"{1000 * k:.0f} ms; ratio {u / k:.2f}x")


def live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance() on a deprecated torch.distributed object warns
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def bench_memory() -> None:
    build, shape = models()["ViT (4 layers, width 128), batch 32, 32x32"]
    model, params = with_masks(build, "property")
    one_step = step_timer(model, (8, *shape[1:]))
    marks = {}
    for i in range(1, 201):
        pruning.global_magnitude_prune(params, 0.5 + 0.4 * i / 200)
        one_step()
        if i in (10, 200):
            marks[i] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, live_tensors())
    print(f"  200 updates, each with a training step (ViT): peak RSS {marks[10][0]:.0f} MiB after 10, "
          f"{marks[200][0]:.0f} MiB after 200; live tensors {marks[10][1]} after 10, {marks[200][1]} after 200")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    bench_steps(args.repeats)
    bench_update(args.repeats)
    bench_memory()


if __name__ == "__main__":
    main()
