"""File size of the final model: a plain state_dict vs pruning.compact_state_dict, at several sparsities.

ResNet-18 (CIFAR-10 shape, width 64 unless --width), pruned globally by magnitude from its initialisation
(the size depends only on how many weights survive, not on which), pruning made permanent, then saved both
ways with torch.save. Also checks that the compact file expands back bit-exactly.

    python benchmarks/bench_checkpoint.py [--width 64]
"""

import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import pruning  # noqa: E402
from harness.networks import ResNet18  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args()
    print(f"ResNet-18 width {args.width}, fp32, torch {torch.__version__}")
    print(f"{'sparsity':>9} {'plain':>10} {'compact':>10} {'ratio':>7}  round trip")
    with tempfile.TemporaryDirectory() as tmp:
        for sparsity in (0.0, 0.5, 0.744, 0.796, 0.9, 0.95):
            torch.manual_seed(0)
            model = ResNet18(width=args.width)
            params = pruning.prunable_parameters(model)
            pruning.global_magnitude_prune(params, sparsity)
            pruning.make_pruning_permanent(params)
            plain, compact = os.path.join(tmp, "plain.pt"), os.path.join(tmp, "compact.pt")
            torch.save(model.state_dict(), plain)
            torch.save(pruning.compact_state_dict(model.state_dict()), compact)
            back = pruning.expand_state_dict(torch.load(compact, weights_only=True))
            exact = all(torch.equal(back[k], v) for k, v in model.state_dict().items())
            a, b = os.path.getsize(plain), os.path.getsize(compact)
            print(f"{100 * sparsity:8.1f}% {a / 1e6:8.2f} MB {b / 1e6:8.2f} MB {b / a:7.3f}  "
                  f"{'bit-exact' if exact else 'DIFFERS'}")


if __name__ == "__main__":
    main()
