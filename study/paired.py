"""Paired differences between any two labels of a study at one target, with Holm over the pairs asked for.

aggregate.py compares every group with dense and with the paper's schedule; a study's report sometimes asks
another question ("is SNIP above random-ERK here?"). This answers it from the same JSON with the same statistics
(harness/stats.py: the per-seed differences, a two-sided paired t-test, Holm over the pairs given), for groups
of one folder (one recipe) that hold the same seeds. Torch-free.

    python study/paired.py study/fourth/results/recipesnip --arch lenet300 --target 0.98 snip:random-erk grasp:random-erk
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import aggregate  # noqa: E402
from harness import stats  # noqa: E402


def groups_at(folder: str, target: float, arch: str | None) -> dict[str, dict]:
    """label -> {"seeds": [...], "acc": [...]} (sorted by seed) for every group of ``folder`` (of network
    ``arch``, if given) at ``target`` (dense: at any target)."""
    out = {}
    for group in aggregate.group_results(aggregate.load_results([folder], strict=True)):
        first = group[0]
        if first["method"] != "dense" and abs(first["target_sparsity"] - target) > 1e-9 or \
                arch is not None and first["config"].get("arch") != arch:
            continue
        label = first["config"].get("label") or first["label"]
        if label in out:
            raise SystemExit(f"paired.py: error: two groups are labelled {label!r} in {folder}: give --arch, "
                             f"or one recipe's folder")
        runs = sorted(group, key=lambda r: r["seed"])
        out[label] = {"seeds": [r["seed"] for r in runs], "acc": [r["test_accuracy"] for r in runs]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder")
    p.add_argument("pairs", nargs="+", help="A:B, each the label of a group (A - B is reported)")
    p.add_argument("--target", type=float, required=True)
    p.add_argument("--arch", help="only this network's groups")
    args = p.parse_args(argv)
    found = groups_at(args.folder, args.target, args.arch)
    rows = []
    for pair in args.pairs:
        a, _, b = pair.partition(":")
        missing = [x for x in (a, b) if x not in found]
        if missing:
            p.error(f"no group labelled {missing[0]!r} at {args.target:g}; there are {', '.join(sorted(found))}")
        rows.append((a, b, stats.paired_difference(found[a], found[b])))
    holm = stats.holm_adjust([None if d is None else d[2] for _, _, d in rows])
    print(f"| A | B | seeds | A - B, pp (mean ± sd) | p (paired t) | Holm over {len(rows)} |\n|---|---|---|---|---|---|")
    for (a, b, d), h in zip(rows, holm):
        cells = ("not paired: the seeds differ", "", "") if d is None else \
            (f"{d[0]:+.2f} ± {d[1]:.2f}", f"{d[2]:.2g}", f"{h:.2g}")
        print(f"| {a} | {b} | {len(found[a]['seeds'])} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
