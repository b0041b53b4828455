"""The figures of aggregate.py's groups: accuracy against sparsity, training and inference cost, training curves
and mask dynamics, one colour per method family and one marker per variant in every plot. Torch-free;
matplotlib is imported when a figure is drawn, so importing this module changes nothing.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict

from harness import results, stats
from harness.config import DEFAULT_ARCH



def plot_figures(summaries: list[dict], folder: str) -> list[str]:
    """accuracy_vs_sparsity.png, accuracy_vs_cost.png, accuracy_vs_inference.png, training_curves.png and
    mask_dynamics.png in ``folder``; returns the paths."""
    import matplotlib
    matplotlib.use("Agg")  # headless; set here, not at import, so importing this module changes nothing
    import matplotlib.pyplot as plt

    os.makedirs(folder, exist_ok=True)
    styles = series_styles(summaries)
    costed = [s for s in summaries if s["training_cycles"] is not None]
    inferred = [s for s in summaries if s["inference_x"] is not None]
    figures = {
        "accuracy_vs_sparsity.png": plot_accuracy(summaries, styles, lambda s: 100 * (1 - s["sparsity"]),
                                                  "prunable weights left (%, log scale; sparser to the right)",
                                                  0.03, log_x=True),
        "accuracy_vs_cost.png": plot_accuracy(
            costed, styles, lambda s: s["training_cycles"],
            "training compute (MACs, × one dense training cycle)" + _left_out(summaries, costed), 0.0)
        if costed else plot_accuracy(summaries, styles, lambda s: s["epochs_trained"],
                                     "training cost (epochs trained, all rounds)", 0.2),
        "accuracy_vs_inference.png": plot_accuracy(
            inferred, styles, lambda s: s["inference_x"],
            "inference compute (MACs of the final model, × dense)" + _left_out(summaries, inferred), 0.0),
        "training_curves.png": plot_training_curves(summaries, styles),
        "mask_dynamics.png": plot_mask_dynamics(summaries, styles),
    }
    paths = []
    for name, fig in figures.items():
        paths.append(os.path.join(folder, name))
        fig.tight_layout()
        fig.savefig(paths[-1], dpi=120, bbox_inches="tight")  # legends sit outside the axes
        plt.close(fig)
    return paths


def _left_out(summaries: list[dict], shown: list[dict]) -> str:
    """An x-axis note naming the variants left out of a plot for want of the value it draws."""
    missing = sorted({_label(s) for s in summaries} - {_label(s) for s in shown})
    return f"; left out, written before MACs were recorded: {', '.join(missing)}" if missing else ""


MARKERS = "osD^vP*Xph<>"  # within one method family (one colour), each variant its own marker


def series_styles(summaries: list[dict]) -> dict[str, tuple[str, str]]:
    """(colour, marker) per variant, the same in every plot: one colour per method family, a marker per variant
    within the family, so no two variants share both; dense is drawn in black."""
    colours = {m: f"C{i % 10}" for i, m in enumerate(sorted({s["method"] for s in summaries} - {results.DENSE}))}
    styles, in_family = {}, defaultdict(int)
    for label, method in sorted({(_label(s), s["method"]) for s in summaries}):
        styles[label] = ("black", "") if method == results.DENSE else \
            (colours[method], MARKERS[in_family[method] % len(MARKERS)])
        in_family[method] += 1
    return styles


def plot_accuracy(summaries: list[dict], styles: dict, x_of, xlabel: str, dodge: float, log_x: bool = False):
    """Test accuracy (mean ± sd over seeds), one panel per dataset and network, one series per method variant
    through its targets; dense as a dashed line with its ± sd band. ``log_x``: a reversed log axis (for the
    weights left: 10%, 5%, 2%, 1% evenly spaced), the dodge a factor."""
    import matplotlib.pyplot as plt
    panels = sorted({(s["dataset"], s["arch"]) for s in summaries}) or [("", DEFAULT_ARCH)]
    fig, axes = plt.subplots(1, len(panels), figsize=(8.5 * len(panels), 6), squeeze=False)
    for ax, (dataset, arch) in zip(axes[0], panels):
        series = defaultdict(list)
        for s in summaries:
            if (s["dataset"], s["arch"]) == (dataset, arch):
                series[_label(s)].append(s)
        shared = {_setting(s) for members in series.values() for s in members}
        shared = shared.pop() if len(shared) == 1 else None  # one recipe in the panel: named once, in the title
        short = {label: members[0]["label"] if shared is not None else label for label, members in series.items()}
        for i, (label, members) in enumerate(sorted(series.items())):
            members.sort(key=x_of)
            if members[0]["method"] == results.DENSE:
                m, sd = members[0]["acc_mean"], members[0]["acc_sd"] or 0.0
                ax.axhline(m, color="black", linestyle="--", linewidth=1, label=f"{short[label]} (n={members[0]['n']})")
                ax.axhspan(m - sd, m + sd, color="black", alpha=0.08)
                continue
            shift = dodge * (i - (len(series) - 1) / 2)  # side by side where variants share an x
            colour, marker = styles[label]
            ax.errorbar([x_of(s) * math.exp(shift) if log_x else x_of(s) + shift for s in members], [s["acc_mean"] for s in members],
                        yerr=[s["acc_sd"] or 0.0 for s in members], fmt=marker + "-", linewidth=0.8, capsize=3,
                        markersize=6, color=colour, label=f"{short[label]} (n={'/'.join(str(s['n']) for s in members)})")
        if log_x and any(s["method"] != results.DENSE for members in series.values() for s in members):
            ax.set_xscale("log")
            ax.invert_xaxis()
            ticks = sorted({round(x_of(s), 3) for members in series.values() for s in members
                            if s["method"] != results.DENSE})
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.set_xlim(max(ticks) * 1.25, min(ticks) / 1.25)  # reversed; room for the dodge at a lone target
            ax.minorticks_off()
        network = "" if arch == DEFAULT_ARCH else f", {arch}"
        recipe = f"\n{shared}" if shared else ""
        ax.set(title=f"{dataset}{network}: test accuracy, mean ± sd over seeds{recipe}", ylabel="test accuracy (%)",
               xlabel=xlabel + ("\n(variants at the same x drawn side by side; " if dodge else "\n(")
               + "a line joins one variant's targets; dense: dashed line, ± sd band)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.text(0.5, 0.5, "no result records this", ha="center", transform=ax.transAxes)
    return fig


def _target_panels(summaries: list[dict]) -> list[float]:
    """The target sparsities that pruned groups ran at: one row of panels each in the curve plots."""
    return sorted({s["target_sparsity"] for s in summaries if s["method"] != results.DENSE}) or [0.0]


def plot_training_curves(summaries: list[dict], styles: dict):
    """Validation accuracy and measured sparsity over the epochs trained (mean ± sd over seeds), one row of
    panels per target sparsity (dense in every row)."""
    import matplotlib.pyplot as plt
    targets = _target_panels(summaries)
    fig, axes = plt.subplots(len(targets), 2, figsize=(14, 4.2 * len(targets)), squeeze=False)
    for (ax_acc, ax_sp), target in zip(axes, targets):
        for s in summaries:
            if s["method"] == results.DENSE or s["target_sparsity"] == target:
                histories = [r["history"] for r in s["runs"]]
                _band(ax_acc, histories, "val_accuracy", _series_name(s), styles[_label(s)], scale=1)
                _band(ax_sp, histories, "sparsity", _series_name(s), styles[_label(s)], scale=100)
        ax_acc.set(xlabel="epoch trained (all rounds)", ylabel="validation accuracy (%)",
                   title=f"target {100 * target:.1f}%: validation accuracy (mean ± sd)")
        ax_sp.set(xlabel="epoch trained (all rounds)", ylabel="measured sparsity (%)",
                  title=f"target {100 * target:.1f}%: sparsity during training")
        _finish_axes(ax_acc, ax_sp)
    return fig


def plot_mask_dynamics(summaries: list[dict], styles: dict):
    """Per pruning method: the normalised Hamming distance between the would-be final masks drawn at the end of
    consecutive epochs (mean ± sd over seeds), one panel per target; Early-Bird tickets (You et al. 2020) call a
    mask found when it stays below 0.1."""
    import matplotlib.pyplot as plt
    targets = _target_panels(summaries)
    fig, axes = plt.subplots(1, len(targets), figsize=(6.5 * len(targets), 4.8), squeeze=False, sharey=True)
    for ax, target in zip(axes[0], targets):
        for s in summaries:
            if s["method"] != results.DENSE and s["target_sparsity"] == target:
                _band(ax, [r["history"] for r in s["runs"]], "mask_distance", _series_name(s), styles[_label(s)],
                      scale=1)
        ax.axhline(0.1, color="grey", linestyle=":", linewidth=1, label="0.1 (Early-Bird threshold)")
        ax.set(xlabel="epoch trained (all rounds)", ylabel="distance to the previous epoch's mask",
               title=f"target {100 * target:.1f}%: would-be final mask,\nchange per epoch (mean ± sd)")
        _finish_axes(ax)
    return fig


def _series_name(s: dict) -> str:
    target = "" if s["method"] == results.DENSE else f" {100 * s['target_sparsity']:.1f}%"
    return f"{s['dataset']} {_label(s)}{target}"


def _finish_axes(*axes) -> None:
    import matplotlib.ticker
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


def _label(s: dict) -> str:
    """A series' name: the label, the network unless it is the default ResNet-18, and the config entries that
    tell groups apart."""
    network = "" if s["arch"] == DEFAULT_ARCH else f"{s['arch']} "
    return network + s["label"] + (f" ({_setting(s)})" if _setting(s) else "")


def _setting(s: dict) -> str:
    """The recipe entries and options that tell this group from others of its label."""
    return ", ".join(part for part in (s.get("recipe_title", ""), s["config"]) if part)


def _band(ax, histories: list[list[dict]], key: str, label: str, style: tuple[str, str], scale: float) -> None:
    """Mean line with a ± sd band over runs, epoch by epoch (epochs where every run has a value), in the
    variant's colour and marker."""
    length = min((len(h) for h in histories), default=0)
    epochs, means, sds = [], [], []
    for e in range(length):
        values = [h[e].get(key) for h in histories]
        if any(v is None for v in values):
            continue
        mean, sd = stats.mean_sd([scale * v for v in values], ddof=1)
        epochs.append(e + 1)
        means.append(mean)
        sds.append(sd or 0.0)
    if not epochs:
        return
    colour, marker = style
    ax.plot(epochs, means, label=label, color=colour, marker=marker or None, markersize=4,
            linestyle="--" if not marker else "-", markevery=max(1, len(epochs) // 10))
    ax.fill_between(epochs, [m - s for m, s in zip(means, sds)], [m + s for m, s in zip(means, sds)],
                    color=colour, alpha=0.12)
