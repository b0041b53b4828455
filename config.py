"""The configuration of one run: a frozen dataclass that generates the command line and validates itself.

Every field (made with :func:`setting`) has a default, a help text and a kind. Words, each with one meaning:

* the **recipe** (kind ``recipe``): how the network is trained (epochs, learning rate, width, precision, ...).
  Runs of different methods are compared only when their recipes agree (``results.recipe_key``). Fields left
  at ``None`` take the dataset's paper recipe (``PAPER_RECIPES``).
* the **method** and its **options** (kind ``method``): the training method and its own flags (target sparsity,
  schedule, rounds, ...): ``Method.options`` in methods.py.
* the **experiment**: recipe + method + options, everything but the run fields (:func:`experiment_part`). A
  checkpoint or finished result is only ever continued or skipped by a run of the same experiment, and
  aggregate.py averages only runs of the same experiment (all seeds).
* **run** fields (kind ``run``): where and how a run is done (output folder, data folder, device, ...).

Torch-free, so that results.py and aggregate.py can read configs without the training stack. Nothing happens
at import time.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field

RECIPE, METHOD, RUN = "recipe", "method", "run"
MAX_SEED = 2**32  # numpy and torch generators take seeds in [0, 2**32)
MAX_ROUNDS = 100  # imp: more rounds than this is a typo (each round is a whole training cycle)


class ConfigError(Exception):
    """A bad value; the message is one line for the user, and the run exits with code 2."""


def setting(default, help: str, kind: str = RECIPE, type=None, choices=None, flag: bool = True,
           method_option: bool | None = None):
    """A Config field: its default, its help text, its kind, how its flag parses (flag=False: derived, no flag),
    and whether it is a method's own option (a flag only of scripts offering a method that uses it; by default
    every METHOD field is)."""
    return field(default=default, metadata={"help": help, "kind": kind, "type": type, "choices": choices,
                                            "flag": flag, "option": kind == METHOD if method_option is None
                                            else method_option})


@dataclass(frozen=True)
class Config:
    # -- what is trained
    dataset: str = setting(None, "dataset to train on")
    method: str = setting(None, "training method", kind=METHOD, method_option=False)
    seed: int = setting(42, "seed for init, data split, shuffling, augmentation; in [0, 2**32)", type=int)
    epochs: int = setting(None, "epochs per training cycle (recipe default)", type=int)
    batch_size: int = setting(None, "training batch size (recipe default)", type=int)
    lr: float = setting(None, "initial SGD learning rate, cosine-annealed to 0 (0.1)", type=float)
    momentum: float = setting(None, "SGD momentum (0.9)", type=float)
    weight_decay: float = setting(None, "SGD weight decay (5e-4)", type=float)
    label_smoothing: float = setting(None, "cross-entropy label smoothing, in [0, 1) (0.1)", type=float)
    width: int = setting(64, "ResNet-18 base width (64; 8/16 for CPU)", type=int)
    train_subset: int = setting(None, "use N class-balanced training images", type=int)
    val_fraction: float = setting(0.11, "held-out validation fraction of the training images", type=float)
    no_hflip: bool = setting(False, "(Fashion-)MNIST: do not flip images (the paper flips)", type=bool)
    dummy: bool = setting(False, "random data with the right shapes (smoke tests)", type=bool)
    eval_batch_size: int = setting(1024, "batch size for validation and test", type=int)
    no_sync_bn: bool = setting(False, "multi-process runs: BatchNorm statistics per process, not over the global "
                                     "batch", type=bool)
    precision: str = setting("auto", "auto: bf16 autocast on CUDA, fp32 elsewhere (stored resolved)",
                            choices=("auto", "fp32", "bf16"))
    # -- the method's own options (None: not used by this method, or its default)
    target_sparsity: float = setting(None, "sparsity at the end of training (recipe default)", METHOD, float)
    schedule: str = setting(None, "sparsity schedule: the paper's linear ramp, or cubic (Zhu & Gupta 2017)",
                           METHOD, choices=("linear", "cubic"))
    prune_epoch: int = setting(None, "oneshot: epoch (0-based) at whose start the network is pruned (epochs // 2)",
                              METHOD, int)
    prune_every: int = setting(None, "progressive: training steps between pruning events (default: one event at "
                                    "the start of every epoch, the paper's)", METHOD, int)
    prune_start: float = setting(None, "progressive: first pruning event, as a fraction of the cycle's training "
                                      "steps (0); oneshot: the step at which it prunes, instead of --prune-epoch",
                                METHOD, float)
    prune_end: float = setting(None, "progressive: last pruning event (exactly at the target), as a fraction of the "
                                    "cycle's training steps (default: the start of the last epoch, the paper's)",
                              METHOD, float)
    score_batches: int = setting(None, "snip: training batches whose |grad * weight| is summed (1)", METHOD, int)
    distribution: str = setting(None, "random, snip, rigl, set: how the sparsity is spread over the layers: one "
                                      "global ranking, every layer at the target, or Erdos-Renyi-Kernel (default: "
                                      "global for random and snip, erk for rigl and set)", METHOD,
                                choices=("global", "uniform", "erk"))
    update_every: int = setting(None, "rigl, set: training steps between mask updates (100)", METHOD, int)
    update_end: float = setting(None, "rigl, set: no mask update from this fraction of the training steps on (0.75)",
                                METHOD, float)
    drop_fraction: float = setting(None, "rigl, set: fraction of each layer's active weights dropped and regrown at "
                                         "the first update, cosine-annealed to 0 at --update-end (0.3)", METHOD, float)
    rounds: int = setting(None, "imp: pruning rounds after the dense round 0 (smallest R with 0.8**R <= 1 - "
                               "target)", METHOD, int)
    rewind_epoch: int = setting(None, "imp: epoch of round 0 whose weights every later round rewinds to (0)",
                               METHOD, int)
    reinit: str = setting(None, "ticket: start from the donor run's initialisation (the LTH test), or a fresh one "
                               "from --seed (the control) (default donor)", METHOD, choices=("donor", "random"))
    donor: str = setting(None, "ticket: the donor run's method label and target, read from --mask-from", METHOD,
                        flag=False)
    donor_id: str = setting(None, "ticket: the donor's seed and a hash of its final mask (what the run trains)",
                           METHOD, flag=False)
    # -- where and how (never part of the recipe)
    mask_from: str = setting(None, "ticket: a finished pruned run (its result JSON or model file)", RUN,
                            method_option=True)
    data_dir: str = setting("./data", "dataset root, or a folder holding the 4 IDX files", RUN)
    no_download: bool = setting(False, "never try to download the dataset", RUN, bool)
    out: str = setting("results", "results folder", RUN)
    device: str = setting("auto", "device to train on", RUN, choices=("auto", "cpu", "cuda", "mps"))
    compile: bool = setting(False, "torch.compile the model (CUDA only: refused on the CPU, where inductor's "
                                  "channels_last convolutions can corrupt the heap)", RUN, bool)
    channels_last: bool = setting(False, "CPU: use the channels_last memory layout (CUDA always does; 1.1-1.3x "
                                        "faster on some CPUs, but oneDNN's channels_last convolutions crashed with "
                                        "heap corruption at widths 4/8 with odd batch sizes on the CPUs tried)",
                                 RUN, bool)
    force: bool = setting(False, "rerun from scratch even if a result or checkpoint exists", RUN, bool)
    script: str = setting(None, "the script that ran", RUN, flag=False)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
RUN_FIELDS = frozenset(n for n, f in FIELDS.items() if f.metadata["kind"] == RUN)
METHOD_FIELDS = frozenset(n for n, f in FIELDS.items() if f.metadata["kind"] == METHOD)
OPTION_FIELDS = frozenset(n for n, f in FIELDS.items() if f.metadata["option"])  # the methods' own options


@dataclass(frozen=True)
class Recipe:
    """The paper's training recipe for one dataset: the defaults of the recipe fields left at None."""
    epochs: int
    batch_size: int
    target_sparsity: float
    lr: float = 0.1  # SGD, cosine-annealed to 0 over the epochs
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1


PAPER_RECIPES = {  # the MNIST target: README, "The paper's experiments", on 0.744 vs the notebooks' 0.74433
    "cifar10": Recipe(epochs=200, batch_size=128, target_sparsity=0.796),
    "cifar100": Recipe(epochs=200, batch_size=128, target_sparsity=0.796),  # CIFAR-10's recipe, 100 classes
    "mnist": Recipe(epochs=30, batch_size=32, target_sparsity=0.744),
    "fashion-mnist": Recipe(epochs=30, batch_size=32, target_sparsity=0.744),
}


def experiment_part(config: dict) -> dict:
    """The entries of a config dict that define what is computed (everything but the run fields)."""
    return {k: v for k, v in config.items() if k not in RUN_FIELDS}


def config_difference(old: dict, new: dict) -> str:
    """'epochs 2 vs 200, width 8 vs 64' for the entries of the experiment that differ ('' if none)."""
    a, b = experiment_part(old), experiment_part(new)
    return ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))


# ----------------------------------------------------------------------------------------------------------
# Command line

class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2, instead of usage + error
        raise ConfigError(message)


def build_parser(prog: str, description: str, datasets: tuple[str, ...], methods: dict[str, tuple[str, ...]],
                 default_dataset: str | None) -> argparse.ArgumentParser:
    """Flags for the fields a script uses: the common ones, and the options of the methods it offers.

    Args:
        methods: method name -> names of the OPTION_FIELDS it uses (from the method table).
        default_dataset: the dataset when --dataset is not given (None: the flag is required).
    """
    p = _Parser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    used = {name for options in methods.values() for name in options}
    for name, f in FIELDS.items():
        meta = f.metadata
        if not meta["flag"] or (meta["option"] and name not in used):
            continue
        flag = "--" + name.replace("_", "-")
        if name == "dataset":
            if len(datasets) > 1:
                p.add_argument(flag, choices=datasets, required=default_dataset is None,
                               default=default_dataset, help=meta["help"])
        elif name == "method":
            if len(methods) > 1:
                p.add_argument(flag, choices=tuple(methods), required=True, help=meta["help"])
        elif meta["type"] is bool:
            p.add_argument(flag, action="store_true", help=meta["help"])
        else:
            p.add_argument(flag, type=meta["type"] or str, choices=meta["choices"], default=f.default,
                           help=meta["help"] + ("" if f.default is None else f" (default {f.default})"))
    return p


def parse_config(argv: list[str] | None, prog: str, description: str, datasets: tuple[str, ...],
                 methods: dict[str, tuple[str, ...]], default_dataset: str | None) -> Config:
    """Parse the command line into a Config with the recipe defaults of its dataset filled in (not validated)."""
    args = vars(build_parser(prog, description, datasets, methods, default_dataset).parse_args(argv))
    args.setdefault("dataset", datasets[0])
    args.setdefault("method", next(iter(methods)))
    return with_recipe_defaults(Config(script=prog, **args))


def with_recipe_defaults(config: Config) -> Config:
    """Fill the training fields left at None from the dataset's paper recipe (the target sparsity is the
    method's option: methods.resolve fills it, for methods that have one)."""
    recipe = PAPER_RECIPES[config.dataset]
    filled = {name: getattr(recipe, name) for name in ("epochs", "batch_size", "lr", "momentum", "weight_decay",
                                                       "label_smoothing") if getattr(config, name) is None}
    return config.replace(**filled)


# ----------------------------------------------------------------------------------------------------------
# Validation: every bad value is one line naming the flag

def require(checks: list[tuple[str, bool, str]]) -> None:
    """Raise ConfigError ``--<flag> <message>`` for the first ``(field, ok, message)`` that is not ok."""
    for name, ok, message in checks:
        if not ok:  # NaN fails every comparison, so it lands here too
            raise ConfigError(f"--{name.replace('_', '-')} {message}")


def validate(config: Config) -> Config:
    """Return ``config`` if every value is usable, else raise ConfigError naming the first bad flag. The
    methods check their own options (``Method.check`` in methods.py)."""
    c = config
    checks = [
        ("seed", isinstance(c.seed, int) and 0 <= c.seed < MAX_SEED, f"must be in [0, 2**32), got {c.seed}"),
        ("epochs", c.epochs >= 1, f"must be positive, got {c.epochs}"),
        ("batch_size", c.batch_size >= 1, f"must be positive, got {c.batch_size}"),
        ("lr", _finite(c.lr) and c.lr > 0, f"must be positive, got {c.lr}"),
        ("momentum", _finite(c.momentum) and c.momentum >= 0, f"must be >= 0, got {c.momentum}"),
        ("weight_decay", _finite(c.weight_decay) and c.weight_decay >= 0, f"must be >= 0, got {c.weight_decay}"),
        ("label_smoothing", 0.0 <= c.label_smoothing < 1.0, f"must be in [0, 1), got {c.label_smoothing}"),
        ("width", c.width >= 1, f"must be positive, got {c.width}"),
        ("train_subset", c.train_subset is None or c.train_subset >= 1, f"must be positive, got {c.train_subset}"),
        ("val_fraction", 0.0 <= c.val_fraction < 1.0, f"must be in [0, 1), got {c.val_fraction}"),
        ("eval_batch_size", c.eval_batch_size >= 1, f"must be positive, got {c.eval_batch_size}"),
        ("target_sparsity", c.target_sparsity is None or 0.0 <= c.target_sparsity < 1.0,
         f"must be in [0, 1), got {c.target_sparsity}"),
    ]
    require(checks)
    if c.train_subset is not None and c.val_fraction > 0 and round(c.val_fraction * c.train_subset) in (0, c.train_subset):
        raise ConfigError(f"--val-fraction {c.val_fraction} of --train-subset {c.train_subset} leaves an empty split")
    return config


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
