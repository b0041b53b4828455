"""Inference MACs of the first study's committed results (which predate harness/flops.py), recomputed from their
per-layer nonzero counts; training compute where it can be derived (dense, and methods whose mask is fixed
from the first step: snip, random, ticket), "–" where the per-layer masks during training were not saved.

    python study/costs.py study/first/results
"""

import collections
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import flops  # noqa: E402
import pruning  # noqa: E402
from harness.networks import ResNet18  # noqa: E402

FIXED_MASK = ("snip", "random", "ticket")


def costs(result: dict) -> tuple[float, float | None]:
    """(inference MACs × dense, training MACs × one dense cycle or None) of one result."""
    model = ResNet18(in_channels=1, num_classes=10, width=result["config"]["width"])
    params = pruning.prunable_parameters(model)
    positions = flops.output_positions(model, params, (1, 32, 32))
    names = [row["name"] for row in result["per_layer"]]
    assert names == [f"{n}.weight" for n, m in model.named_modules() if any(m is p for p, _ in params)]
    dense = sum(row["total"] * pos for row, pos in zip(result["per_layer"], positions))
    nonzero = sum(row["nonzero"] * pos for row, pos in zip(result["per_layer"], positions))
    if result["method"] == "dense":
        return 1.0, 1.0
    if result["method"] not in FIXED_MASK:
        return nonzero / dense, None
    c = result["config"]
    train_images = round(c["train_subset"] * (1 - c["val_fraction"]))
    scoring = c["batch_size"] * (c.get("score_batches") or 0) * dense if result["method"] == "snip" else 0
    return nonzero / dense, (nonzero * train_images * c["epochs"] + scoring) / (dense * train_images * c["epochs"])


def main(folder: str) -> None:
    groups = collections.defaultdict(list)
    for path in sorted(Path(folder).rglob("seed*.json")):
        r = json.loads(path.read_text())
        groups[(r["label"], r["target_sparsity"])].append(costs(r))
    print("| method | target | inference MACs (× dense) | training MACs (× dense cycle) |\n| --- | --- | --- | --- |")
    for (label, target), values in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        inference = statistics.fmean(v[0] for v in values)
        training = None if any(v[1] is None for v in values) else statistics.fmean(v[1] for v in values)
        print(f"| {label} | {'–' if not target else f'{100 * target:.1f}%'} | {inference:.3f}x | "
              f"{'–' if training is None else f'{training:.3f}x'} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "study/first/results")
