"""Does unstructured sparsity run faster on a CPU? LeNet-300-100's final models, dense vs torch.sparse CSR.

For each final model file given (the third study's LeNet-300-100 runs at 0.98 and 0.99), inference latency of
the model as trained (dense weight matrices holding the zeros) against the same model with each linear layer's
weight as a ``torch.sparse`` CSR matrix (``Tensor.to_sparse_csr()``, ``y = W x + b`` by ``torch.sparse.addmm``),
at batch 1 and 256: the median of interleaved runs, beside the MAC ratio that the tables report. The outputs
are checked equal to the dense model's within float tolerance (the sums run in another order).

    python benchmarks/bench_sparse_inference.py study/third/results/fashion-mnist/lenet300-*-0.98/seed42.model.pt
"""

import argparse
import os
import platform
import sys
import time
import warnings

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from harness import networks  # noqa: E402
import pruning  # noqa: E402
from interleave import interleaved_medians  # noqa: E402


class CSRLinear(nn.Module):
    """``nn.Linear`` with its weight stored as a CSR matrix."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore")
            self.weight = linear.weight.detach().to_sparse_csr()
        self.bias = linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sparse.addmm(self.bias.unsqueeze(1), self.weight, x.t()).t()  # W x^T + b, as Linear


def load(path: str) -> nn.Module:
    net = networks.build_network("lenet300", 1, 10, None)
    net.load_state_dict(pruning.expand_state_dict(torch.load(path, weights_only=True)))
    return net.eval()


def as_csr(net: nn.Module) -> nn.Module:
    sparse = networks.build_network("lenet300", 1, 10, None).eval()
    for name in ("fc1", "fc2", "fc3"):
        setattr(sparse, name, CSRLinear(getattr(net, name)))
    return sparse


def timer(net: nn.Module, x: torch.Tensor, inner: int):
    def run() -> float:
        t0 = time.perf_counter()
        for _ in range(inner):
            net(x)
        return (time.perf_counter() - t0) / inner
    return run


@torch.inference_mode()
def bench(path: str, repeats: int) -> None:
    dense = load(path)
    sparse = as_csr(dense)
    weights = [getattr(dense, n).weight for n in ("fc1", "fc2", "fc3")]
    total, nonzero = sum(w.numel() for w in weights), sum(int((w != 0).sum()) for w in weights)
    print(f"{path}: {nonzero:,}/{total:,} weights nonzero ({1 - nonzero / total:.2%} sparse); "
          f"MACs {nonzero / total:.3f}x dense (weights only)")
    for batch in (1, 256):
        x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(sparse(x), dense(x), rtol=1e-4, atol=1e-5), "CSR outputs differ from the dense model's"
        inner = 2000 if batch == 1 else 50
        runs = {"dense": timer(dense, x, inner), "csr": timer(sparse, x, inner)}
        for run in runs.values():
            run()  # warm-up
        times = interleaved_medians(runs, repeats)
        d, c = times["dense"], times["csr"]
        print(f"  batch {batch:>3}: dense {1e6 * d:8.1f} us, CSR {1e6 * c:8.1f} us per batch: CSR is "
              f"{d / c:.2f}x the dense speed ({'faster' if c < d else 'slower'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="final model files (seed*.model.pt) of LeNet-300-100 runs")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    print(f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for path in args.models:
        bench(path, args.repeats)


if __name__ == "__main__":
    main()
