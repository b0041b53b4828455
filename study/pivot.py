"""A study's results as one table per network: methods down, target sparsities across (what the study pages show).

Each cell is computed by aggregate.py's own code from the result JSON, so a page that embeds this output says
exactly what ``aggregate.py`` says. A page embeds it between ``<!-- pivot: FOLDER -->`` and ``<!-- /pivot -->``
lines; ``--update`` rewrites every such block of a page from its folder, and tests/test_study.py checks that
each block is what this script makes of its folder now.

    python study/pivot.py study/third/results             # print
    python study/pivot.py --update docs/study.md          # refresh the page's blocks
"""

from __future__ import annotations

import os
import re
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import aggregate  # noqa: E402
from harness import results  # noqa: E402

BLOCK = re.compile(r"^<!-- pivot: (\S+) -->\n(.*?)^<!-- /pivot -->$", re.M | re.S)
PAPER = f"{results.PAPER_METHOD} (the paper's schedule)"


def _paired(row: dict, ref: str) -> str:
    """Paired difference over seeds, mean ± sd, with its Holm-adjusted p; '' where there is no such pair."""
    delta = row.get(f"{ref}_paired_delta_pp")
    if delta is None:
        return ""
    return f"{delta:+.2f} ± {row[f'{ref}_paired_sd']:.2f} (Holm {row[f'{ref}_paired_holm_p']:.2g})"


def _label(label: str) -> str:
    return {results.DENSE: "dense (no pruning)", results.PAPER_METHOD: PAPER}.get(label, label)


def _render(title: str, cells: dict, targets: list[float]) -> list[str]:
    """One Markdown table: a row per label (in first-seen order), a column per target; rows with no cell left
    out, and the table too if none is left."""
    cells = {label: row for label, row in cells.items() if any(row.values())}
    if not cells:
        return []
    head = ["label", *(f"{100 * t:g}%" for t in targets)]
    lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for label, by_target in cells.items():
        lines.append("| " + " | ".join([_label(label), *(by_target.get(t, "") for t in targets)]) + " |")
    return [*lines, ""]


def pivot(paths: list[str]) -> str:
    summaries, tables = aggregate.build_tables(aggregate.load_results(paths, strict=True), ddof=1)
    out = []
    for net in sorted({(s["dataset"], s["arch"]) for s in summaries}):
        mine = [s for s in summaries if (s["dataset"], s["arch"]) == net]
        targets = sorted({s["target_sparsity"] for s in mine if s["method"] != results.DENSE})
        order = sorted({s["label"] for s in mine}, key=lambda lab: (lab != results.DENSE, lab != results.PAPER_METHOD, lab))
        acc, vs_dense, vs_paper, cost = ({lab: {} for lab in order} for _ in range(4))
        for s in mine:  # dense sits in every column: it is the reference at each target
            for t in (targets if s["method"] == results.DENSE else [s["target_sparsity"]]):
                acc[s["label"]][t] = f"{aggregate.fmt_acc(s['acc_mean'], s['acc_sd'])} ({s['n']})"
            if s["method"] != results.DENSE:
                cost[s["label"]][s["target_sparsity"]] = " / ".join(
                    f"{x:.3g}x" if x is not None else "–" for x in (s["training_cycles"], s["inference_x"]))
        for row in tables["comparison"]:
            if (row["dataset"], row["arch"]) == net:
                vs_dense[row["label"]][row["target_sparsity"]] = _paired(row, results.DENSE)
                vs_paper[row["label"]][row["target_sparsity"]] = _paired(row, results.PAPER_METHOD)
        drop = {results.DENSE}  # the reference itself
        out += [f"### {net[1]} on {net[0]}", ""]
        out += _render("Test accuracy of the final model (%), mean ± sd (seeds)", acc, targets)
        out += _render("Paired difference vs dense, pp (mean ± sd over seeds; Holm-adjusted p)",
                       {k: v for k, v in vs_dense.items() if k not in drop}, targets)
        out += _render("Paired difference vs the paper's schedule, pp (mean ± sd over seeds; Holm-adjusted p)",
                       {k: v for k, v in vs_paper.items() if k not in drop | {results.PAPER_METHOD}}, targets)
        out += _render("MACs vs dense: training (the whole cycle) / inference (the final model)", cost, targets)
    return "\n".join(out)


def update(page: str) -> int:
    """Rewrite each pivot block of ``page`` (folders relative to the repository root); how many there were."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(page) as f:
        text = f.read()
    new, count = BLOCK.subn(lambda m: f"<!-- pivot: {m[1]} -->\n{pivot([os.path.join(root, m[1])])}"
                                      f"<!-- /pivot -->", text)
    if count == 0:
        raise aggregate.AggregateError(f"{page} has no '<!-- pivot: FOLDER -->' ... '<!-- /pivot -->' block")
    results.atomic_write(page, lambda f: f.write(new.encode()))
    return count


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] == "--update" and len(args) != 2:
        print("usage: python study/pivot.py RESULTS_FOLDER... | --update PAGE.md", file=sys.stderr)
        return 2
    try:
        if args[0] == "--update":
            print(f"{args[1]}: {update(args[1])} block(s) rewritten", file=sys.stderr)
        else:
            sys.stdout.write(pivot(args))
    except (aggregate.AggregateError, results.ResultError, OSError) as e:
        print(f"pivot.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
