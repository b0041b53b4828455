"""Cost of pruning.global_magnitude_prune on the paper's ResNet-18, printed for the current machine.

Prints: one mask update on ResNet-18 (11.2M prunable weights) next to a bare torch.kthvalue over the same
number of values; process memory growth over the 200 scheduled updates of a CIFAR-10 run (and, for
contrast, what torch.nn.utils.prune.global_unstructured adds per call); one update of a 20M+ weight model.

    python benchmarks/bench_pruning.py [--device cpu|cuda] [--repeats 5]
    python benchmarks/bench_pruning.py --gpt2       # attach_masks and an update on GPT-2 small's config
"""

import argparse
import ctypes
import os
import sys
import time

import torch
from torch import nn
from torch.nn.utils import prune

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import pruning  # noqa: E402
from harness.networks import ResNet18  # noqa: E402


def rss_mb(trim: bool = True) -> float:
    """Resident memory of this process now (Linux), in MB.

    With trim, glibc first returns freed heap pages to the OS (malloc_trim), so the figure counts memory
    still held, not blocks the allocator keeps cached after the large temporaries of an update.
    """
    if trim:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # not glibc: the raw figure then includes allocator caching
            pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of fn() over repeats, synchronising on CUDA."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def update_and_kthvalue(params: list, device: torch.device, repeats: int) -> tuple[int, float, float]:
    """(prunable count, median seconds of one mid-schedule update, of a bare torch.kthvalue over as many
    values): the update starts from 40%, part of the network already pruned."""
    n = sum(pruning._tensor_of(m, name).numel() for m, name in params)
    pruning.global_magnitude_prune(params, 0.40)
    targets = iter([0.40 + 0.004 * (i + 1) for i in range(repeats + 1)])
    t_update = timed(lambda: pruning.global_magnitude_prune(params, next(targets)), device, repeats)
    values = torch.randn(n, device=device)
    return n, t_update, timed(lambda: torch.kthvalue(values, n // 2), device, repeats)


def bench_update_vs_kthvalue(device: torch.device, repeats: int) -> None:
    model = ResNet18().to(device)
    n, t_update, t_kth = update_and_kthvalue(pruning.prunable_parameters(model), device, repeats)
    print(f"ResNet-18, {n:,} prunable weights, {device.type}, {torch.get_num_threads()} threads")
    print(f"  one global_magnitude_prune update : {1000 * t_update:8.1f} ms")
    print(f"  bare torch.kthvalue, same count   : {1000 * t_kth:8.1f} ms")
    print(f"  ratio                             : {t_update / t_kth:8.2f}x  (bound: <= 1.5x)")


def bench_memory_growth(device: torch.device, epochs: int = 200, torch_calls: int = 5) -> None:
    model = ResNet18().to(device)
    params = pruning.prunable_parameters(model)
    pruning.global_magnitude_prune(params, 0.0)  # reparametrise once, then measure only the updates
    before, before_raw = rss_mb(), rss_mb(trim=False)
    for epoch in range(epochs):
        pruning.global_magnitude_prune(params, pruning.sparsity_schedule("linear", epoch, epochs, 0.796))
    grown_raw, grown = rss_mb(trim=False) - before_raw, rss_mb() - before
    print(f"Memory growth over {epochs} scheduled updates (0 -> 0.796): {grown:+.1f} MB RSS held "
          f"(bound: < 50 MB); {grown_raw:+.1f} MB before malloc_trim (allocator cache, varies run to run)")
    if device.type != "cpu":
        return
    ref = ResNet18()
    ref_params = pruning.prunable_parameters(ref)
    prune.global_unstructured(ref_params, pruning_method=prune.L1Unstructured, amount=0)
    before = rss_mb()
    for _ in range(torch_calls):
        prune.global_unstructured(ref_params, pruning_method=prune.L1Unstructured, amount=1000)
    per_call = (rss_mb() - before) / torch_calls
    print(f"  for contrast, torch's global_unstructured: {per_call:+.1f} MB per call "
          f"(~{per_call * epochs / 1024:.1f} GB over {epochs} calls)")


def bench_big_model(device: torch.device) -> None:
    big = nn.Sequential(nn.Linear(4096, 4096), nn.Linear(4096, 1024)).to(device)  # 20,971,520 weights
    params = pruning.prunable_parameters(big)
    n = sum(m.weight.numel() for m, _ in params)
    pruning.global_magnitude_prune(params, 0.1)
    t = timed(lambda: pruning.global_magnitude_prune(params, 0.5), device, 1)
    print(f"{n:,}-weight model (> 2**24): one update in {1000 * t:.1f} ms, "
          f"sparsity {pruning.global_sparsity(params):.4f}")


def bench_gpt2_small(device: torch.device, repeats: int) -> None:
    """GPT-2 small's config (124M parameters, built from config, no download): attach_masks and one update,
    each against a bare torch.kthvalue over the pruned count (transformers' Conv1D matrices; the head is tied
    to the token embedding, which stays dense)."""
    import warnings
    import transformers
    transformers.logging.set_verbosity_error()
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config()).to(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tied head, left dense: said once, not per run
        params = pruning.prunable_parameters(model)
    t0 = time.perf_counter()
    pruning.attach_masks(params)
    t_attach = time.perf_counter() - t0
    n, t_update, t_kth = update_and_kthvalue(params, device, repeats)
    print(f"GPT-2 small config, {n:,} prunable weights in {len(params)} Conv1D matrices, {device.type}")
    print(f"  attach_masks (once)               : {1000 * t_attach:8.1f} ms ({t_attach / t_kth:.2f}x kthvalue)")
    print(f"  one global_magnitude_prune update : {1000 * t_update:8.1f} ms ({t_update / t_kth:.2f}x kthvalue; "
          f"bound: <= 1.5x)")
    print(f"  bare torch.kthvalue, same count   : {1000 * t_kth:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--gpt2", action="store_true", help="only GPT-2 small's config (needs transformers)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.gpt2:
        bench_gpt2_small(device, args.repeats)
        return
    bench_update_vs_kthvalue(device, args.repeats)
    bench_memory_growth(device)
    bench_big_model(device)


if __name__ == "__main__":
    main()
