"""What a result file is: its schema, its required keys, how runs group, and reading one file, writing any file atomically. Torch-free.

record.py checks every result against this module before writing it; aggregate.py reads results only
through it. Files of older schemas are upgraded on reading, each missing field taken at the meaning it had
when the file was written, so results already on disk keep working. Names no method but the two references of
the comparison table.
"""

from __future__ import annotations

import json
import os
import tempfile

from harness.config import DEFAULT_WIDTH, FIELDS, RECIPE, RUN_FIELDS

SCHEMA = 3  # 3: "mask_events" (was "prune_events"), history "scheduled_sparsity" (was "target_sparsity")
READABLE_SCHEMAS = (1, 2, 3)
REQUIRED = ("schema", "dataset", "method", "label", "seed", "target_sparsity", "final_sparsity", "test_accuracy",
            "params_prunable", "params_nonzero", "epochs", "epochs_trained", "precision", "history", "config")
HISTORY_KEYS = ("round", "epoch", "lr", "sparsity", "scheduled_sparsity", "train_loss", "train_accuracy",
                "val_loss", "val_accuracy", "seconds")  # what the harness writes per epoch
READ_HISTORY_KEYS = ("round", "epoch", "sparsity", "val_accuracy")  # what a reader may rely on
# The reference groups of the comparison table: every method is compared with the dense run and with the
# paper's method of the same recipe (their names are the schema's, not aggregate.py's).
DENSE, PAPER_METHOD = "dense", "progressive"
# The seed is what a group averages over; a ticket's donor_id names the mask of its own seed's donor, so it
# changes with the seed as well (it still tells a finished run from another identity: config_difference), and
# its mask_from (a run field of the ticket's options) is that donor's path.
NOT_GROUPING = RUN_FIELDS | {"seed", "donor_id", "mask_from"}
# The recipe: the common fields that are neither the task nor run fields. Every other config entry is a
# method's option (the methods' Options dataclasses; read here without importing them, or torch).
RECIPE_FIELDS = frozenset(n for n, f in FIELDS.items() if f.metadata["role"] == RECIPE)


class ResultError(Exception):
    """A file that is not a usable result; one line naming the file and the problem."""


def check_result(result: dict, where: str = "result") -> dict:
    """Return ``result`` if it has this schema's shape, else raise ResultError naming what is wrong."""
    if not isinstance(result, dict):
        raise ResultError(f"{where}: not a result object")
    missing = [k for k in REQUIRED if k not in result]
    if missing:
        raise ResultError(f"{where}: missing key(s) {', '.join(missing)}")
    acc = result["test_accuracy"]
    if not isinstance(acc, (int, float)) or isinstance(acc, bool) or not isinstance(result["config"], dict):
        raise ResultError(f"{where}: test_accuracy must be a number and config an object")
    if not (0.0 <= acc <= 100.0):  # NaN and inf fail this too
        raise ResultError(f"{where}: test_accuracy {acc} is not a percentage in [0, 100]")
    bad_rows = [i for i, row in enumerate(result["history"]) if not set(READ_HISTORY_KEYS) <= set(row)]
    if bad_rows:
        raise ResultError(f"{where}: history row {bad_rows[0]} lacks one of {', '.join(READ_HISTORY_KEYS)}")
    return result


def upgrade(result: dict) -> dict:
    """A result as this version reads it: config fields added since it was written at their default (what runs
    did then); a schema-1 result (the first release: methods dense and progressive) or a schema-2 one in
    schema 3."""
    if not isinstance(result, dict) or not isinstance(result.get("config"), dict):
        return result
    if result.get("schema") == 1:
        result = upgrade_schema1(result)  # upgrades its config too
    else:
        result = {**result, "config": upgrade_config(result["config"], result.get("precision", "fp32"))}
    if result.get("schema") == 2:
        result = {**upgrade_state(result), "schema": SCHEMA}
    return result


def upgrade_state(state: dict) -> dict:
    """A result's or checkpoint's history and mask events under this schema's names (schema 2 called the
    events "prune_events" and each row's scheduled sparsity "target_sparsity")."""
    state = dict(state)
    if "prune_events" in state:
        state["mask_events"] = state.pop("prune_events")
    if "history" in state:
        state["history"] = [{"round": 0, **{("scheduled_sparsity" if k == "target_sparsity" else k): v  # 1st
                                            for k, v in row.items()}} for row in state["history"]]  # release: 1 round
    return state


def upgrade_schema1(result: dict) -> dict:
    """A schema-1 result (the first release: methods dense and progressive) in schema 2."""
    result = dict(result)
    # Then, config["precision"] was the flag ("auto"); the run used bf16 exactly when auto met CUDA.
    device = str(result.get("device", ""))
    precision = result.get("precision") or ("bf16" if device.startswith("cuda") else "fp32")
    config = upgrade_config(result.get("config") or {}, precision)
    label = result.get("method", "")
    if label != DENSE and config.get("schedule") not in (None, "linear"):
        label += f"-{config['schedule']}"
    epochs = result.get("epochs", config.get("epochs"))
    result.update(
        schema=2, config=config, precision=precision, label=label,
        epochs=epochs, epochs_trained=epochs,  # one cycle: every epoch was trained
        history=[{"round": 0, "target_sparsity": row.get("sparsity"), **row} for row in result.get("history", [])],
    )
    return result


# Recipe fields added since results were first written, at the value every run had before they existed
# (the paper's recipe: cosine annealing over an epoch budget); --augment replaced --no-hflip.
RECIPE_BEFORE = {"recipe": "paper", "lr_schedule": "cosine"}
AUGMENT_BEFORE = {"cifar10": "cifar", "cifar100": "cifar"}  # the digits: "flip", or "none" with --no-hflip


def upgrade_config(config: dict, precision: str) -> dict:
    """A config (of a result or a checkpoint) with the fields added since at what runs did then (their default,
    or :data:`RECIPE_BEFORE`; ``--no-hflip`` as ``--augment``) and the precision flag "auto" (schema 1)
    replaced by the precision the run used."""
    config = dict(config)
    if "augment" not in config:
        no_hflip = config.pop("no_hflip", False)
        config["augment"] = AUGMENT_BEFORE.get(config.get("dataset"), "none" if no_hflip else "flip")
    config = {**{name: f.default for name, f in FIELDS.items()}, **RECIPE_BEFORE, **config}
    if config["width"] is None and config["arch"] == "resnet18":  # every run was a ResNet-18 of default width 64
        config["width"] = DEFAULT_WIDTH                           # before --arch existed
    if config["precision"] == "auto":
        config["precision"] = precision
    return config


def read_result(path: str) -> dict:
    """One result file, upgraded to this schema and checked, with ``_path`` set; or ResultError."""
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise ResultError(f"{path}: cannot read ({e})") from None
    except ValueError as e:
        raise ResultError(f"{path}: not valid JSON ({e}); a partial or interrupted write?") from None
    if isinstance(result, dict) and result.get("schema") not in READABLE_SCHEMAS:
        raise ResultError(f"{path}: unknown schema version {result.get('schema')!r} (this version reads "
                          f"{', '.join(map(str, READABLE_SCHEMAS))})")
    result = check_result(upgrade(result), path)
    result["_path"] = path
    return result


def group_key(result: dict) -> tuple:
    """What a group of runs shares: the identity but the seed (task, recipe and options). An entry at None is
    left out, so that a result that lacks an option (of another method, or added since) and one that holds it
    at None group together."""
    config = {k: v for k, v in result["config"].items() if k not in NOT_GROUPING and v is not None}
    config.update(dataset=result["dataset"], method=result["method"], target_sparsity=result["target_sparsity"])
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in config.items()))


def recipe_key(result: dict) -> tuple:
    """What runs of different methods must share to be compared: the group key's dataset and recipe."""
    return tuple((k, v) for k, v in group_key(result) if k in RECIPE_FIELDS or k == "dataset")


def atomic_write(path: str, write) -> None:
    """Call ``write(file_object)`` on a temp file in the same folder, then rename it over ``path``."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared like any file
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
