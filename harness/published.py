"""The numbers other papers published, as data, beside ours: ``aggregate.py --published``. Torch-free.

docs/published.csv holds one row per published figure: its source and where in it, the setting it names
(dataset, network, method label, target sparsity) and what it says of the recipe (``recipe``: the name of
config.RECIPES that follows it, ``epochs`` / ``steps`` / ``batch_size`` / ``lr`` / ``width``; empty where the
source does not say). A group of our runs is set beside every row of the same dataset, network, label and target;
the recipe fields the row names and ours do not share are listed, so that a difference is never read as a
like-for-like one.
"""

from __future__ import annotations

import csv
import os

from harness.results import DENSE

DEFAULT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "published.csv")
COLUMNS = ("source", "where", "dataset", "arch", "label", "target_sparsity", "accuracy", "sd", "recipe", "epochs",
           "steps", "batch_size", "lr", "width", "note")
SETTING = ("recipe", "epochs", "steps", "batch_size", "lr", "width")  # what a row may say of how it was trained


class PublishedError(Exception):
    """A published-numbers file that cannot be used; one line naming the file and the problem."""


def load(path: str = DEFAULT) -> list[dict]:
    """The rows of a published-numbers CSV, accuracy, sd and target as floats (None where empty)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise PublishedError(f"{path}: cannot read ({e.strerror or e})") from None
    if not rows or set(COLUMNS) - set(rows[0]):
        raise PublishedError(f"{path}: expected the columns {', '.join(COLUMNS)}")
    for i, row in enumerate(rows, start=2):
        try:
            for key in ("accuracy", "sd", "target_sparsity"):
                row[key] = float(row[key]) if row[key] else None
        except ValueError:
            raise PublishedError(f"{path}, line {i}: {key} {row[key]!r} is not a number") from None
        if row["accuracy"] is None:
            raise PublishedError(f"{path}, line {i}: no accuracy")
    return rows


def matches(summary: dict, row: dict) -> bool:
    """Our group and a published figure are of the same dataset, network, method label and target."""
    same_target = row["target_sparsity"] is None if summary["method"] == DENSE else \
        row["target_sparsity"] is not None and abs(row["target_sparsity"] - summary["target_sparsity"]) < 1e-9
    return same_target and (summary["dataset"], summary["arch"], summary["label"]) == \
        (row["dataset"], row["arch"], row["label"])


def setting_differences(summary: dict, row: dict) -> str:
    """How our runs' recipe differs from what the row says of its own ('' if in nothing the row names)."""
    ours = summary["runs"][0]["config"]
    said = [f"{k} {ours.get(k)} vs {row[k]}" for k in SETTING if row[k] and str(ours.get(k)) != row[k]]
    if not (row["epochs"] or row["steps"]):
        said.append("budget: theirs not stated")
    if not row["recipe"]:
        said.append("recipe: theirs not stated")
    return "; ".join(said)


def comparison(summaries: list[dict], rows: list[dict]) -> list[dict]:
    """One row per (our group, matching published figure): ours, theirs, the difference, how the settings differ."""
    out = []
    for s in summaries:
        for row in rows:
            if matches(s, row):
                out.append({"recipe": s["recipe_title"], "dataset": s["dataset"], "arch": s["arch"], "label": s["label"], "method": s["method"],
                            "target_sparsity": s["target_sparsity"], "acc_mean": s["acc_mean"], "acc_sd": s["acc_sd"],
                            "n": s["n"], "published": row["accuracy"], "published_sd": row["sd"],
                            "delta_pp": s["acc_mean"] - row["accuracy"], "source": f"{row['source']}, {row['where']}",
                            "differs": setting_differences(s, row), "note": row["note"], "config": s["config"]})
    return out
