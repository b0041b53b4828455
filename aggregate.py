"""Turn per-seed result JSON files into the paper's tables: mean ± sd over seeds, training cost, each method
against dense and against the paper's method at the same target, sweeps, plots.

Reads only the JSON files the training scripts write (recursively under the given folders), through
harness/results.py: no torch. Runs that share everything but the seed form a group; runs whose configs differ
(precision included) are never averaged together, and the table shows what tells such groups apart.

examples:
  python aggregate.py results/
  python aggregate.py results/ --ddof 0              # population sd, as the paper's notebooks printed
  python aggregate.py results/ --format latex -o table.tex
  python aggregate.py results/ --plot figures/
  python aggregate.py results/ --published           # beside the numbers other papers published
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import sys
from collections import defaultdict

from harness import published, results, stats


class AggregateError(Exception):
    """Bad input; one line for the user, exit code 2."""


# ----------------------------------------------------------------------------------------------------------
# Reading

def find_result_files(paths: list[str]) -> list[str]:
    files = []
    for path in paths:
        if os.path.isfile(path):
            files.append(path)
        elif os.path.isdir(path):
            for root, _, names in os.walk(path):
                files += [os.path.join(root, n) for n in names if n.endswith(".json") and not n.startswith(".tmp-")]
        else:
            raise AggregateError(f"{path} does not exist")
    return sorted(files)


def load_results(paths: list[str], strict: bool) -> list[dict]:
    """Every readable result under ``paths``; bad files are warned about and skipped (or fatal if strict)."""
    found = []
    for path in find_result_files(paths):
        try:
            found.append(results.read_result(path))
        except results.ResultError as e:
            if strict:
                raise AggregateError(str(e)) from None
            print(f"warning: skipping {e}", file=sys.stderr)
    if not found:
        raise AggregateError(f"no result files found under {', '.join(paths)}")
    return found


# ----------------------------------------------------------------------------------------------------------
# Grouping and statistics

def group_results(found: list[dict]) -> list[list[dict]]:
    """Groups of runs identical but for the seed; a duplicated seed is reported and counted once."""
    groups = defaultdict(list)
    for r in found:
        groups[results.group_key(r)].append(r)
    out = []
    for key in sorted(groups):
        seen = {}
        for r in groups[key]:
            if r["seed"] in seen:
                print(f"warning: seed {r['seed']} appears twice in one group ({seen[r['seed']]['_path']} and "
                      f"{r['_path']}); counting only the first", file=sys.stderr)
            else:
                seen[r["seed"]] = r
        out.append(sorted(seen.values(), key=lambda r: r["seed"]))
    return out


def distinguishing_config(groups: list[list[dict]]) -> list[str]:
    """The config entries to show so that groups can be told apart: recipe entries that are not the same in
    every group, and method options that differ between groups of the same label and target."""
    keys = [dict(results.group_key(g[0])) for g in groups]
    labels = [(g[0]["label"], g[0]["target_sparsity"]) for g in groups]
    shown = {"dataset", "arch", "method", "target_sparsity"}
    names = sorted({k for d in keys for k in d} - shown)

    def varies(k: str, members: list[int]) -> bool:  # an entry a group lacks is None ("null")
        return len({keys[i].get(k, "null") for i in members}) > 1
    everyone = list(range(len(groups)))
    same_label = [[i for i in everyone if labels[i] == lab] for lab in set(labels)]
    return [k for k in names if (varies(k, everyone) if k in results.RECIPE_FIELDS else
                                 any(varies(k, members) for members in same_label))]


def recipe_title(group: list[dict], recipe_keys: list[str]) -> str:
    """The recipe entries that tell this group's recipe from the others' ('' when the results hold one; an
    entry this group leaves at None is not named)."""
    config = dict(results.group_key(group[0]))
    return ", ".join(f"{k}={json.loads(config[k])}" for k in recipe_keys if k in config)


def summarize(group: list[dict], ddof: int, config_keys: list[str]) -> dict:
    acc = [r["test_accuracy"] for r in group]
    mean, sd = stats.mean_sd(acc, ddof)
    first = group[0]
    config = dict(results.group_key(first))
    return {
        "dataset": first["dataset"], "arch": first["config"]["arch"], "method": first["method"], "label": first["label"],
        "target_sparsity": first["target_sparsity"],
        "sparsity": statistics.fmean(r["final_sparsity"] for r in group), "n": len(group),
        "seeds": [r["seed"] for r in group], "acc": acc, "acc_mean": mean, "acc_sd": sd, "acc_min": min(acc),
        "acc_max": max(acc), "nonzero": statistics.fmean(r["params_nonzero"] for r in group),
        "prunable": first["params_prunable"], "epochs_trained": statistics.fmean(r["epochs_trained"] for r in group),
        "wall_time_s": statistics.fmean(r.get("wall_time_s") or 0.0 for r in group),
        "config": ", ".join(f"{k}={json.loads(config.get(k, 'null'))}" for k in config_keys),
        "recipe": results.recipe_key(first), "runs": group, "overlap": mean_overlaps(group),
        "inference_x": mean_of(group, lambda r: r["inference_macs"]["macs_nonzero"] / r["inference_macs"]["macs_dense"]),
        "training_cycles": mean_of(group, lambda r: r["training_cost"]["cycles"]),
    }


def mean_of(group: list[dict], value) -> float | None:
    """The mean of ``value(run)`` over the group; None if any run lacks it (results written before it existed)."""
    try:
        return statistics.fmean(value(r) for r in group)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def mean_overlaps(group: list[dict]) -> dict[str, float]:
    """Per fraction of training (0.1, 0.25, 0.5): the mean over runs of the early would-be final mask's overlap
    with the final mask; only fractions every run recorded (none for dense runs or older results)."""
    per_run = [r.get("early_mask_overlap") or {} for r in group]
    common = set.intersection(*(set(o) for o in per_run))
    return {f: statistics.fmean(o[f]["overlap"] for o in per_run) for f in sorted(common, key=float)}


# ----------------------------------------------------------------------------------------------------------
# Tables: lists of rows (dicts of raw values), formatted per output format

def main_table(summaries: list[dict]) -> list[dict]:
    return [{
        "recipe": s["recipe_title"], "dataset": s["dataset"], "arch": s["arch"], "label": s["label"], "method": s["method"],
        "target_sparsity": s["target_sparsity"], "sparsity": s["sparsity"], "n": s["n"], "seeds": " ".join(map(str, s["seeds"])),
        "acc_mean": s["acc_mean"], "acc_sd": s["acc_sd"], "acc_min": s["acc_min"], "acc_max": s["acc_max"],
        "nonzero": s["nonzero"], "prunable": s["prunable"], "epochs_trained": s["epochs_trained"],
        "wall_time_s": s["wall_time_s"], "inference_x": s["inference_x"], "training_cycles": s["training_cycles"],
        "config": s["config"], **{f"overlap_{f}": s["overlap"].get(f) for f in OVERLAP_FRACTIONS},
    } for s in summaries]


def _fmt_x(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}x"


OVERLAP_FRACTIONS = ("0.1", "0.25", "0.5")  # record.EARLY_MASK_FRACTIONS, as written in the JSON


def _fmt_overlaps(row: dict) -> str:
    values = [row[f"overlap_{f}"] for f in OVERLAP_FRACTIONS]
    return "–" if all(v is None for v in values) else " / ".join("–" if v is None else f"{v:.2f}" for v in values)


def comparison_table(summaries: list[dict]) -> list[dict]:
    """Each pruned group against the dense group and the paper's method at the same target, same recipe."""
    def reference(s: dict, method: str, label: str, target: float) -> dict | None:
        return next((o for o in summaries if o["dataset"] == s["dataset"] and o["recipe"] == s["recipe"]
                     and o["method"] == method and o["label"] == label and o["target_sparsity"] == target), None)

    rows = []
    for s in summaries:
        if s["method"] == results.DENSE:
            continue
        dense = reference(s, results.DENSE, results.DENSE, 0.0)
        paper = reference(s, results.PAPER_METHOD, results.PAPER_METHOD, s["target_sparsity"])
        paper = None if paper is s else paper
        if dense is None and paper is None:
            continue
        row = {"recipe": s["recipe_title"], "dataset": s["dataset"], "arch": s["arch"], "label": s["label"],
               "method": s["method"], "target_sparsity": s["target_sparsity"],
               "config": s["config"], "acc": s["acc_mean"], "n": s["n"], "epochs_trained": s["epochs_trained"],
               "inference_x": s["inference_x"], "training_cycles": s["training_cycles"],
               "nonzero": s["nonzero"], "prunable": s["prunable"], "param_reduction": 1.0 - s["nonzero"] / s["prunable"]}
        for name, ref in ((results.DENSE, dense), (results.PAPER_METHOD, paper)):
            row[f"{name}_acc"] = ref and ref["acc_mean"]
            row[f"{name}_n"] = ref and ref["n"]
            row[f"delta_{name}_pp"] = ref and s["acc_mean"] - ref["acc_mean"]
            row[f"{name}_welch_p"] = ref and stats.welch_p_value(s["acc"], ref["acc"])
            paired = ref and stats.paired_difference(s, ref)
            for key, value in zip(("paired_delta_pp", "paired_sd", "paired_p"), paired or (None, None, None)):
                row[f"{name}_{key}"] = value
        rows.append(row)
    for name in (results.DENSE, results.PAPER_METHOD):  # one family per reference and test: every target, method
        for test, holm in (("welch", f"{name}_holm_p"), ("paired", f"{name}_paired_holm_p")):
            for row, p in zip(rows, stats.holm_adjust([row[f"{name}_{test}_p"] for row in rows])):
                row[holm] = p
    return rows


def sweep_table(summaries: list[dict]) -> list[dict]:
    """Accuracy vs sparsity for recipes that were run at several target sparsities."""
    by_recipe = defaultdict(list)
    for s in summaries:
        by_recipe[(s["dataset"], s["recipe"])].append(s)
    rows = []
    for (dataset, _), members in sorted(by_recipe.items(), key=lambda item: item[0][0]):
        targets = {s["target_sparsity"] for s in members if s["method"] != results.DENSE}
        if len(targets) < 2:
            continue
        for s in sorted(members, key=lambda s: (s["sparsity"], s["label"])):
            rows.append({"recipe": s["recipe_title"], "dataset": dataset, "arch": s["arch"], "label": s["label"],
                         "method": s["method"],
                         "target_sparsity": s["target_sparsity"],
                         "sparsity": s["sparsity"], "n": s["n"], "acc_mean": s["acc_mean"], "acc_sd": s["acc_sd"],
                         "config": s["config"]})
    return rows


def fmt_acc(mean: float, sd: float | None) -> str:
    return f"{mean:.2f}" if sd is None else f"{mean:.2f} ± {sd:.2f}"


def _target(row: dict) -> str:
    return "–" if row["method"] == results.DENSE else f"{100 * row['target_sparsity']:.1f}%"


def fmt_params(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def _fmt_delta(row: dict, name: str) -> str:
    if row[f"delta_{name}_pp"] is None:
        return "–"
    p, holm = row[f"{name}_welch_p"], row[f"{name}_holm_p"]
    return (f"{row[f'delta_{name}_pp']:+.2f} (p {'–' if p is None else f'{p:.2g}'}"
            f"{'' if holm is None else f', Holm {holm:.2g}'})")


def _fmt_paired(row: dict, name: str) -> str:
    if row[f"{name}_paired_delta_pp"] is None:
        return "–"
    sd, p, holm = row[f"{name}_paired_sd"], row[f"{name}_paired_p"], row[f"{name}_paired_holm_p"]
    return (f"{row[f'{name}_paired_delta_pp']:+.2f} ± {sd:.2f} (p {'–' if p is None else f'{p:.2g}'}"
            f"{'' if holm is None else f', Holm {holm:.2g}'})")


def display_rows(name: str, rows: list[dict]) -> list[dict]:
    """Human-readable columns for Markdown and LaTeX."""
    if name == "main":
        return [{"dataset": r["dataset"], "arch": r["arch"], "label": r["label"], "target": _target(r),
                 "sparsity": f"{100 * r['sparsity']:.2f}%", "n": str(r["n"]), "seeds": r["seeds"],
                 "test acc (%)": fmt_acc(r["acc_mean"], r["acc_sd"]),
                 "min–max": f"{r['acc_min']:.2f}–{r['acc_max']:.2f}",
                 "nonzero / prunable": f"{fmt_params(r['nonzero'])} / {fmt_params(r['prunable'])}",
                 "epochs trained": f"{r['epochs_trained']:g}", "training MACs (× dense cycle)": _fmt_x(r["training_cycles"]),
                 "inference MACs (× dense)": _fmt_x(r["inference_x"]), "wall time": f"{r['wall_time_s'] / 60:.1f} min",
                 "final-mask overlap at 10/25/50%": _fmt_overlaps(r), "config": r["config"]} for r in rows]
    if name == "comparison":
        return [{"dataset": r["dataset"], "arch": r["arch"], "label": r["label"], "target": f"{100 * r['target_sparsity']:.1f}%",
                 "test acc (n)": f"{r['acc']:.2f} ({r['n']})", "epochs trained": f"{r['epochs_trained']:g}",
                 "training MACs (× dense cycle)": _fmt_x(r["training_cycles"]),
                 "inference MACs (× dense)": _fmt_x(r["inference_x"]),
                 f"Δ vs {results.DENSE}, pp (Welch p, Holm)": _fmt_delta(r, results.DENSE),
                 f"Δ vs {results.PAPER_METHOD}, pp (Welch p, Holm)": _fmt_delta(r, results.PAPER_METHOD),
                 f"paired Δ vs {results.DENSE}, pp (mean ± sd over seeds; p, Holm)": _fmt_paired(r, results.DENSE),
                 f"paired Δ vs {results.PAPER_METHOD}, pp (mean ± sd over seeds; p, Holm)":
                     _fmt_paired(r, results.PAPER_METHOD),
                 "parameters": f"{fmt_params(r['prunable'])} → {fmt_params(r['nonzero'])} "
                               f"(-{100 * r['param_reduction']:.1f}%)", "config": r["config"]}
                for r in rows]
    if name == "published":
        return [{"dataset": r["dataset"], "arch": r["arch"], "label": r["label"], "target": _target(r),
                 "ours (n)": f"{fmt_acc(r['acc_mean'], r['acc_sd'])} ({r['n']})",
                 "published": fmt_acc(r["published"], r["published_sd"]), "Δ, pp": f"{r['delta_pp']:+.2f}",
                 "source": r["source"], "setting differs": r["differs"] or "no (in what the source states)",
                 "their note": r["note"] or "–", "config": r["config"]} for r in rows]
    return [{"dataset": r["dataset"], "arch": r["arch"], "label": r["label"], "target": _target(r),
             "sparsity": f"{100 * r['sparsity']:.2f}%", "n": str(r["n"]),
             "test acc (%)": fmt_acc(r["acc_mean"], r["acc_sd"]), "config": r["config"]} for r in rows]


TITLES = {"main": "Test accuracy of the final model over seeds, and training cost",
          "comparison": f"Against dense and {results.PAPER_METHOD} (same recipe and target)",
          "sweep": "Accuracy vs sparsity",
          "published": "Against the published figures (same dataset, network, method and target)"}


def sections(tables: dict[str, list[dict]]):
    """(table name, title, rows) per table and recipe: results of several recipes get a table each, the recipe
    entries that tell them apart in its title."""
    for name, rows in tables.items():
        by_recipe: dict[str, list[dict]] = {}
        for row in rows:
            by_recipe.setdefault(row.get("recipe", ""), []).append(row)
        for recipe, members in by_recipe.items():
            yield name, TITLES[name] + (f"; recipe: {recipe}" if recipe else ""), members


def render_markdown(tables: dict[str, list[dict]], note: str) -> str:
    parts = [note]
    for name, title, rows in sections(tables):
        shown = _drop_empty_config(display_rows(name, rows))
        header = list(shown[0])
        lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row[h] for h in header) + " |" for row in shown]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def render_latex(tables: dict[str, list[dict]], note: str) -> str:
    escape = lambda s: (s.replace("\\", r"\textbackslash{}").replace("%", r"\%").replace("_", r"\_")  # noqa: E731
                        .replace("&", r"\&").replace("#", r"\#").replace("±", r"$\pm$").replace("→", r"$\to$")
                        .replace("Δ", r"$\Delta$").replace("–", "--"))
    parts = [f"% {note}"]
    for name, title, rows in sections(tables):
        shown = _drop_empty_config(display_rows(name, rows))
        header = list(shown[0])
        lines = [f"% {title}", r"\begin{tabular}{" + "l" * len(header) + "}", r"\hline",
                 " & ".join(escape(h) for h in header) + r" \\", r"\hline"]
        lines += [" & ".join(escape(row[h]) for h in header) + r" \\" for row in shown]
        lines += [r"\hline", r"\end{tabular}"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def render_csv(tables: dict[str, list[dict]], note: str) -> str:
    """One block per table (its own header, a 'table' column first), blocks separated by an empty line."""
    buf = io.StringIO()
    first = True
    for name, rows in tables.items():
        if not rows:
            continue
        if not first:
            buf.write("\n")
        first = False
        writer = csv.DictWriter(buf, fieldnames=["table", *rows[0]], lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({"table": name, **{k: "" if v is None else v for k, v in row.items()}})
    return buf.getvalue()


def render_json(tables: dict[str, list[dict]], note: str) -> str:
    return json.dumps({"note": note, "tables": tables}, indent=1) + "\n"


RENDERERS = {"markdown": render_markdown, "latex": render_latex, "csv": render_csv, "json": render_json}


def _drop_empty_config(rows: list[dict]) -> list[dict]:
    if all(not r["config"] for r in rows):
        return [{k: v for k, v in r.items() if k != "config"} for r in rows]
    return rows


# ----------------------------------------------------------------------------------------------------------

def build_tables(found: list[dict], ddof: int, published_rows: list[dict] | None = None
                 ) -> tuple[list[dict], dict[str, list[dict]]]:
    groups = group_results(found)
    keys = distinguishing_config(groups)
    recipe_keys = [k for k in keys if k in results.RECIPE_FIELDS]  # in the tables' titles, not their rows
    summaries = [{**summarize(g, ddof, [k for k in keys if k not in recipe_keys]), "recipe_title": recipe_title(g, recipe_keys)}
                 for g in groups]
    summaries.sort(key=lambda s: (s["recipe_title"], s["dataset"], s["arch"], s["target_sparsity"], s["label"],
                                  s["config"]))  # by recipe, dataset, then sparsity: dense first
    tables = {"main": main_table(summaries), "comparison": comparison_table(summaries), "sweep": sweep_table(summaries)}
    if published_rows is not None:
        tables["published"] = published.comparison(summaries, published_rows)
    return summaries, tables


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit code 2, instead of usage + error
        print(f"aggregate.py: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="result folders (searched recursively) or JSON files")
    parser.add_argument("--ddof", type=int, choices=(0, 1), default=1,
                        help="sd convention: 1 = sample sd (default), 0 = population sd (the paper's notebooks)")
    parser.add_argument("--format", choices=tuple(RENDERERS), default="markdown")
    parser.add_argument("-o", "--output", help="write the tables to this file instead of stdout")
    parser.add_argument("--plot", metavar="DIR", help="also write PNG figures to DIR")
    parser.add_argument("--strict", action="store_true", help="a bad result file is an error, not a warning")
    parser.add_argument("--published", nargs="?", const=published.DEFAULT, metavar="CSV",
                        help="also set each group beside the figures other papers published for the same dataset, "
                             "network, method and target (default: docs/published.csv)")
    args = parser.parse_args(argv)
    try:
        rows = None if args.published is None else published.load(args.published)
        summaries, tables = build_tables(load_results(args.paths, args.strict), args.ddof, rows)
        note = (f"Mean ± {'sample' if args.ddof == 1 else 'population'} sd (ddof={args.ddof}) over seeds of the "
                f"final model's test accuracy. Welch's t-test: two-sided, unequal variances (scipy.stats.ttest_ind); "
                f"paired: the per-seed differences where both groups hold the same seeds (the same initialisation "
                f"and data order), two-sided paired t-test (scipy.stats.ttest_rel); Holm: each test's p adjusted "
                f"over every comparison in the table against the same reference. "
                f"Epochs trained: every epoch of every round, the training cost.")
        text = RENDERERS[args.format](tables, note)
        if args.output:  # atomically: a table is never left half-written over the previous one
            results.atomic_write(args.output, lambda f: f.write(text.encode()))
        else:
            sys.stdout.write(text)
        if args.plot:
            from harness import plots  # matplotlib only when asked for
            for path in plots.plot_figures(summaries, args.plot):
                print(f"wrote {path}", file=sys.stderr)
    except (AggregateError, published.PublishedError) as e:
        print(f"aggregate.py: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"aggregate.py: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
