"""Turn per-seed result JSON files into the paper's tables: mean ± sd over seeds, sparse vs dense, sweeps.

Reads only the JSON files the training scripts write (recursively under the given folders). Runs that share
everything but the seed form a group; runs whose configs differ are never averaged together, and the table
shows what tells such groups apart.

examples:
  python aggregate.py results/
  python aggregate.py results/ --ddof 0              # population sd, as the paper's notebooks printed
  python aggregate.py results/ --format latex -o table.tex
  python aggregate.py results/ --plot figures/
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import statistics
import sys
from collections import defaultdict

SCHEMA = 1
REQUIRED = ("schema", "dataset", "method", "seed", "target_sparsity", "final_sparsity", "test_accuracy",
            "params_prunable", "params_nonzero", "config")
# Config entries that never split groups: the seed (what we average over), and where/how a run was done.
NOT_GROUPING = {"seed", "out", "force", "data_dir", "no_download", "device", "compile"}
# Entries that differ between a pruned run and its dense baseline by design.
PRUNING_ONLY = {"method", "script", "target_sparsity", "schedule"}


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


def read_result(path: str) -> dict:
    """One validated result, or AggregateError naming the file and the problem."""
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise AggregateError(f"{path}: cannot read ({e})") from None
    except ValueError as e:
        raise AggregateError(f"{path}: not valid JSON ({e}); a partial or interrupted write?") from None
    if not isinstance(result, dict):
        raise AggregateError(f"{path}: not a result object")
    missing = [k for k in REQUIRED if k not in result]
    if missing:
        raise AggregateError(f"{path}: missing key(s) {', '.join(missing)}")
    if result["schema"] != SCHEMA:
        raise AggregateError(f"{path}: unknown schema version {result['schema']!r} (this script reads {SCHEMA})")
    if not isinstance(result["test_accuracy"], (int, float)) or not isinstance(result["config"], dict):
        raise AggregateError(f"{path}: test_accuracy must be a number and config an object")
    result["_path"] = path
    return result


def load_results(paths: list[str], strict: bool) -> list[dict]:
    """Every readable result under ``paths``; bad files are warned about and skipped (or fatal if strict)."""
    results = []
    for path in find_result_files(paths):
        try:
            results.append(read_result(path))
        except AggregateError as e:
            if strict:
                raise
            print(f"warning: skipping {e}", file=sys.stderr)
    if not results:
        raise AggregateError(f"no result files found under {', '.join(paths)}")
    return results


# ----------------------------------------------------------------------------------------------------------
# Grouping and statistics

def group_key(result: dict) -> tuple:
    config = {k: v for k, v in result["config"].items() if k not in NOT_GROUPING}
    config.update(dataset=result["dataset"], method=result["method"], target_sparsity=result["target_sparsity"])
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in config.items()))


def group_results(results: list[dict]) -> list[list[dict]]:
    """Groups of runs identical but for the seed; a duplicated seed is reported and counted once."""
    groups = defaultdict(list)
    for r in results:
        groups[group_key(r)].append(r)
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
    """The grouping config entries that are not the same in every group (shown so groups can be told apart)."""
    keys = [dict(group_key(g[0])) for g in groups]
    shown = {"dataset", "method", "target_sparsity", "script"}
    names = sorted({k for d in keys for k in d} - shown)
    # A key only some groups have (e.g. the schedule, which dense runs lack) counts only if it varies there.
    return [k for k in names if len({d[k] for d in keys if k in d}) > 1]


def mean_sd(values: list[float], ddof: int) -> tuple[float, float | None]:
    """Mean and sd (ddof 1: sample, 0: population); sd is None for a single value."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, statistics.stdev(values) if ddof == 1 else statistics.pstdev(values)


def summarize(group: list[dict], ddof: int, config_keys: list[str]) -> dict:
    acc = [r["test_accuracy"] for r in group]
    mean, sd = mean_sd(acc, ddof)
    first = group[0]
    config = dict(group_key(first))
    return {
        "dataset": first["dataset"], "method": first["method"], "target_sparsity": first["target_sparsity"],
        "sparsity": statistics.fmean(r["final_sparsity"] for r in group), "n": len(group),
        "seeds": [r["seed"] for r in group], "acc_mean": mean, "acc_sd": sd, "acc_min": min(acc),
        "acc_max": max(acc), "acc_var_sample": statistics.variance(acc) if len(acc) > 1 else None,
        "nonzero": statistics.fmean(r["params_nonzero"] for r in group), "prunable": first["params_prunable"],
        "wall_time_s": statistics.fmean(r.get("wall_time_s") or 0.0 for r in group),
        "config": ", ".join(f"{k}={json.loads(config[k])}" for k in config_keys if k in config),
        "recipe": tuple((k, v) for k, v in group_key(first) if k not in PRUNING_ONLY),
        "runs": group,
    }


def welch_p_value(m1: float, v1: float, n1: int, m2: float, v2: float, n2: int) -> float | None:
    """Two-sided p-value of Welch's t-test from means, sample variances and sizes; None if undefined."""
    se2 = v1 / n1 + v2 / n2
    if n1 < 2 or n2 < 2 or se2 <= 0:
        return None
    t = (m1 - m2) / math.sqrt(se2)
    df = se2 ** 2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
    return regularized_incomplete_beta(df / (df + t * t), df / 2.0, 0.5)  # = P(|T_df| >= |t|)


def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b) by Lentz's continued fraction (converges fast for x < (a+1)/(a+b+2); else by symmetry)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - regularized_incomplete_beta(1.0 - x, b, a)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * f / a


# ----------------------------------------------------------------------------------------------------------
# Tables: lists of rows (dicts of raw values), formatted per output format

def main_table(summaries: list[dict]) -> list[dict]:
    return [{
        "dataset": s["dataset"], "method": s["method"], "target_sparsity": s["target_sparsity"],
        "sparsity": s["sparsity"], "n": s["n"], "seeds": " ".join(map(str, s["seeds"])),
        "acc_mean": s["acc_mean"], "acc_sd": s["acc_sd"], "acc_min": s["acc_min"], "acc_max": s["acc_max"],
        "nonzero": s["nonzero"], "prunable": s["prunable"], "wall_time_s": s["wall_time_s"], "config": s["config"],
    } for s in summaries]


def comparison_table(summaries: list[dict]) -> list[dict]:
    """Each pruned group against the dense group of the same dataset and recipe."""
    dense = {(s["dataset"], s["recipe"]): s for s in summaries if s["method"] == "dense"}
    rows = []
    for s in summaries:
        base = dense.get((s["dataset"], s["recipe"]))
        if s["method"] == "dense" or base is None:
            continue
        rows.append({
            "dataset": s["dataset"], "target_sparsity": s["target_sparsity"], "config": s["config"],
            "sparse_acc": s["acc_mean"], "sparse_n": s["n"], "dense_acc": base["acc_mean"], "dense_n": base["n"],
            "delta_pp": s["acc_mean"] - base["acc_mean"], "nonzero": s["nonzero"], "prunable": s["prunable"],
            "param_reduction": 1.0 - s["nonzero"] / s["prunable"],
            "welch_p": welch_p_value(s["acc_mean"], s["acc_var_sample"] or 0.0, s["n"],
                                     base["acc_mean"], base["acc_var_sample"] or 0.0, base["n"]),
        })
    return rows


def sweep_table(summaries: list[dict]) -> list[dict]:
    """Accuracy vs sparsity for recipes that were run at several target sparsities."""
    by_recipe = defaultdict(list)
    for s in summaries:
        by_recipe[(s["dataset"], s["recipe"])].append(s)
    rows = []
    for (dataset, _), members in sorted(by_recipe.items(), key=lambda item: item[0][0]):
        targets = {s["target_sparsity"] for s in members if s["method"] != "dense"}
        if len(targets) < 2:
            continue
        for s in sorted(members, key=lambda s: s["sparsity"]):
            rows.append({"dataset": dataset, "method": s["method"], "target_sparsity": s["target_sparsity"],
                         "sparsity": s["sparsity"], "n": s["n"], "acc_mean": s["acc_mean"], "acc_sd": s["acc_sd"],
                         "config": s["config"]})
    return rows


def fmt_acc(mean: float, sd: float | None) -> str:
    return f"{mean:.2f}" if sd is None else f"{mean:.2f} ± {sd:.2f}"


def _target(row: dict) -> str:
    return "–" if row["method"] == "dense" else f"{100 * row['target_sparsity']:.1f}%"


def fmt_params(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def display_rows(name: str, rows: list[dict]) -> list[dict]:
    """Human-readable columns for Markdown and LaTeX."""
    if name == "main":
        return [{"dataset": r["dataset"], "method": r["method"], "target": _target(r),
                 "sparsity": f"{100 * r['sparsity']:.2f}%", "n": str(r["n"]), "seeds": r["seeds"],
                 "test acc (%)": fmt_acc(r["acc_mean"], r["acc_sd"]),
                 "min–max": f"{r['acc_min']:.2f}–{r['acc_max']:.2f}",
                 "nonzero / prunable": f"{fmt_params(r['nonzero'])} / {fmt_params(r['prunable'])}",
                 "wall time": f"{r['wall_time_s'] / 60:.1f} min", "config": r["config"]} for r in rows]
    if name == "comparison":
        return [{"dataset": r["dataset"], "target": f"{100 * r['target_sparsity']:.1f}%",
                 "sparse acc (n)": f"{r['sparse_acc']:.2f} ({r['sparse_n']})",
                 "dense acc (n)": f"{r['dense_acc']:.2f} ({r['dense_n']})", "Δ (pp)": f"{r['delta_pp']:+.2f}",
                 "parameters": f"{fmt_params(r['prunable'])} → {fmt_params(r['nonzero'])} "
                               f"(-{100 * r['param_reduction']:.1f}%)",
                 "Welch p": "–" if r["welch_p"] is None else f"{r['welch_p']:.3g}", "config": r["config"]}
                for r in rows]
    return [{"dataset": r["dataset"], "method": r["method"], "target": _target(r),
             "sparsity": f"{100 * r['sparsity']:.2f}%", "n": str(r["n"]),
             "test acc (%)": fmt_acc(r["acc_mean"], r["acc_sd"]), "config": r["config"]} for r in rows]


TITLES = {"main": "Test accuracy of the final model over seeds", "comparison": "Pruned vs dense (same recipe)",
          "sweep": "Accuracy vs sparsity"}


def render_markdown(tables: dict[str, list[dict]], note: str) -> str:
    parts = [note]
    for name, rows in tables.items():
        if not rows:
            continue
        shown = _drop_empty_config(display_rows(name, rows))
        header = list(shown[0])
        lines = [f"### {TITLES[name]}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row[h] for h in header) + " |" for row in shown]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def render_latex(tables: dict[str, list[dict]], note: str) -> str:
    escape = lambda s: (s.replace("\\", r"\textbackslash{}").replace("%", r"\%").replace("_", r"\_")  # noqa: E731
                        .replace("&", r"\&").replace("#", r"\#").replace("±", r"$\pm$").replace("→", r"$\to$")
                        .replace("Δ", r"$\Delta$").replace("–", "--"))
    parts = [f"% {note}"]
    for name, rows in tables.items():
        if not rows:
            continue
        shown = _drop_empty_config(display_rows(name, rows))
        header = list(shown[0])
        lines = [f"% {TITLES[name]}", r"\begin{tabular}{" + "l" * len(header) + "}", r"\hline",
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
# Plots

def plot_figures(summaries: list[dict], folder: str) -> list[str]:
    """accuracy_vs_sparsity.png and training_curves.png in ``folder``; returns the paths written."""
    import matplotlib
    matplotlib.use("Agg")  # headless; set here, not at import, so importing this module changes nothing
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (integer epoch ticks)

    os.makedirs(folder, exist_ok=True)
    datasets = sorted({s["dataset"] for s in summaries})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for s in (s for s in summaries if s["dataset"] == dataset):
            ax.errorbar(100 * s["sparsity"], s["acc_mean"], yerr=s["acc_sd"] or 0.0, fmt="o", capsize=4,
                        label=f"{_label(s)}, n={s['n']}")
        ax.set(title=dataset, xlabel="sparsity of prunable weights (%)", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    paths = [os.path.join(folder, "accuracy_vs_sparsity.png")]
    fig.tight_layout()
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)

    fig, (ax_acc, ax_sp) = plt.subplots(1, 2, figsize=(11, 4))
    for s in summaries:
        for ax, key in ((ax_acc, "val_accuracy"), (ax_sp, "sparsity")):
            histories = [r["history"] for r in s["runs"] if "history" in r]
            _band(ax, histories, key, f"{s['dataset']} {_label(s)}", scale=100 if key == "sparsity" else 1)
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy (mean ± sd)")
    ax_sp.set(xlabel="epoch", ylabel="sparsity (%)", title="sparsity during training")
    for ax in (ax_acc, ax_sp):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    paths.append(os.path.join(folder, "training_curves.png"))
    fig.tight_layout()
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths


def _label(s: dict) -> str:
    label = s["method"] if s["method"] == "dense" else f"{s['method']} {100 * s['target_sparsity']:.1f}%"
    return label + (f" ({s['config']})" if s["config"] else "")


def _band(ax, histories: list[list[dict]], key: str, label: str, scale: float) -> None:
    """Mean line with a ± sd band over runs, epoch by epoch (epochs where every run has a value)."""
    length = min((len(h) for h in histories), default=0)
    epochs, means, sds = [], [], []
    for e in range(length):
        values = [h[e].get(key) for h in histories]
        if any(v is None for v in values):
            continue
        mean, sd = mean_sd([scale * v for v in values], ddof=1)
        epochs.append(e + 1)
        means.append(mean)
        sds.append(sd or 0.0)
    if not epochs:
        return
    line, = ax.plot(epochs, means, label=label)
    ax.fill_between(epochs, [m - s for m, s in zip(means, sds)], [m + s for m, s in zip(means, sds)],
                    color=line.get_color(), alpha=0.2)


# ----------------------------------------------------------------------------------------------------------

def build_tables(results: list[dict], ddof: int) -> tuple[list[dict], dict[str, list[dict]]]:
    groups = group_results(results)
    keys = distinguishing_config(groups)
    summaries = [summarize(g, ddof, keys) for g in groups]
    tables = {"main": main_table(summaries), "comparison": comparison_table(summaries), "sweep": sweep_table(summaries)}
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
    args = parser.parse_args(argv)
    try:
        summaries, tables = build_tables(load_results(args.paths, args.strict), args.ddof)
        note = (f"Mean ± {'sample' if args.ddof == 1 else 'population'} sd (ddof={args.ddof}) over seeds of the "
                f"final model's test accuracy. Welch's t-test: two-sided, sample variances, exact t distribution "
                f"(own implementation, no SciPy).")
        text = RENDERERS[args.format](tables, note)
        if args.output:
            with open(args.output, "w") as f:
                f.write(text)
        else:
            sys.stdout.write(text)
        if args.plot:
            for path in plot_figures(summaries, args.plot):
                print(f"wrote {path}", file=sys.stderr)
    except AggregateError as e:
        print(f"aggregate.py: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"aggregate.py: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
