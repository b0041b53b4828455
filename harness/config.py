"""The configuration of one run: frozen dataclasses that generate the command line. Torch-free.

A run's config is the fields every run has (:class:`Config`) plus its method's **options**: a small frozen
dataclass that the method declares itself (``Method.Options`` in methods.py), held in ``Config.options``. Every
field, common or option, is made with :func:`setting`: a default, a help text, a role and how its flag parses.
Words, each with one meaning:

* the **recipe** (role ``recipe``): how the network is trained (epochs, learning rate, width, precision, ...).
  Runs of different methods are compared only when their recipes agree (``results.recipe_key``). Fields left
  at ``None`` take the named recipe's values for the dataset (``--recipe``: :data:`RECIPES`, the paper's by
  default); the filled values, the recipe's name included, are what a result records.
* the **task** (role ``task``): the dataset, the method and the seed.
* the **options** (role ``option``): a method's own settings (target sparsity, schedule, rounds, ...).
* the **identity**: task + recipe + options, everything but the run fields (:func:`identity`). A checkpoint or
  a finished result is only ever continued or skipped by a run of the same identity, and aggregate.py averages
  runs whose identities differ only in the seed.
* **run** fields (role ``run``): where and how a run is done (output folder, data folder, device, ...); an
  option may be one too (the ticket's ``mask_from``).

A result's JSON holds the config flat (:meth:`Config.to_dict`: the common fields, then the options). Nothing
happens at import time.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field

TASK, RECIPE, OPTION, RUN = "task", "recipe", "option", "run"
MAX_SEED = 2**32  # numpy and torch generators take seeds in [0, 2**32)
ARCHS = ("resnet18", "lenet300", "lenet5", "vgg-like", "vgg19")  # model.ARCHITECTURES (tests/test_models.py)
DEFAULT_ARCH, DEFAULT_WIDTH = "resnet18", 64  # of the networks --width scales
LR_SCHEDULES = ("cosine", "step")
AUGMENTATIONS = ("flip", "cifar", "none")
RECIPE_NAMES = ("paper", "snip")  # RECIPES' keys  # data.DATASETS[...].augmentations: which a dataset offers


class ConfigError(Exception):
    """A bad value; the message is one line for the user, and the run exits with code 2."""


def setting(default, help: str, role: str = RECIPE, type=None, choices=None, flag: bool = True,
            more: dict | None = None):
    """A field of Config or of a method's options: its default, help text, role, and how its flag parses
    (``flag=False``: derived by the method, never given on the command line); ``more``: further metadata."""
    return field(default=default, metadata={"help": help, "role": role, "type": type, "choices": choices,
                                            "flag": flag, **(more or {})})


def option(help: str, type=None, choices=None, *, default=None, short: str | None = None, flag: bool = True,
           role: str = OPTION):
    """A field of a method's options (:func:`setting` of role ``option``), None until the run's config is completed.

    Args:
        default: what a run gets when the flag is not given (``Method.defaults`` fills it; the help text says
            it); None: no constant default (the method derives one, or None is a value).
        short: how the option shows in the method's label, and so in its results folder: ``short`` and the
            value (``"every"`` -> ``every50``; ``""``: the bare value), left out while the value is ``default``
            or None (``Method.label``). None: never in the label.
    """
    return setting(None, help if default is None else f"{help} (default {value_text(default)})", role, type, choices,
                   flag, {"default": default, "short": short})


def value_text(value) -> str:
    """An option's value as labels and help texts write it: floats in the shortest form (0.75, 200), the rest as
    str."""
    return format(value, "g") if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Options:
    """A method's options: the base has none (dense). A method subclasses it with :func:`option` fields, each
    ``None`` until the method fills its default (``Method.defaults``)."""

    def replace(self, **changes) -> "Options":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Config:
    # -- the task
    dataset: str = setting(None, "dataset to train on", TASK)
    method: str = setting(None, "training method", TASK)
    seed: int = setting(42, "seed for init, data split, shuffling, augmentation; in [0, 2**32)", TASK, int)
    # -- the recipe
    recipe: str = setting(None, "named recipe that fills the recipe fields left unset: paper (the paper's, the "
                                "default) or snip (SNIP's published MNIST recipe; flags still override)",
                          choices=RECIPE_NAMES)
    epochs: int = setting(None, "epochs per training cycle (recipe default)", type=int)
    steps: int = setting(None, "training budget in steps instead of --epochs: the cycle stops after this many "
                               "steps, part-way through its last epoch (recipe default; snip: 30000)", type=int)
    batch_size: int = setting(None, "training batch size (recipe default)", type=int)
    lr: float = setting(None, "initial SGD learning rate (0.1)", type=float)
    lr_schedule: str = setting(None, "cosine: annealed to 0 over the epochs (paper); step: times --lr-decay at "
                                     "each of --lr-milestones (snip)", choices=LR_SCHEDULES)
    lr_milestones: str = setting(None, "step schedule: training steps at which the LR is multiplied by "
                                       "--lr-decay, comma-separated and increasing (snip: 25000)")
    lr_decay: float = setting(None, "step schedule: the LR's factor at each milestone (snip: 0.1)", type=float)
    momentum: float = setting(None, "SGD momentum (0.9)", type=float)
    weight_decay: float = setting(None, "SGD weight decay (5e-4)", type=float)
    label_smoothing: float = setting(None, "cross-entropy label smoothing, in [0, 1) (paper 0.1, snip 0)", type=float)
    augment: str = setting(None, "training augmentation: flip ((Fashion-)MNIST: left-right, the paper's), cifar "
                                 "(CIFAR: crop/flip/rotate/jitter/erase, the paper's) or none (snip)",
                           choices=AUGMENTATIONS)
    arch: str = setting(DEFAULT_ARCH, "network (lenet300 and lenet5: 1x28x28 images only)", choices=ARCHS)
    width: int = setting(None, "base channels of resnet18 / vgg-like / vgg19 (64; 8/16 for CPU)", type=int)
    train_subset: int = setting(None, "use N class-balanced training images", type=int)
    val_fraction: float = setting(None, "held-out validation fraction of the training images (paper 0.11, "
                                        "snip 0.1)", type=float)
    dummy: bool = setting(False, "random data with the right shapes (smoke tests)", type=bool)
    eval_batch_size: int = setting(1024, "batch size for validation and test", type=int)
    no_sync_bn: bool = setting(False, "multi-process runs: BatchNorm statistics per process, not over the global "
                                     "batch", type=bool)
    precision: str = setting("auto", "auto: bf16 autocast on CUDA, fp32 elsewhere (stored resolved)",
                            choices=("auto", "fp32", "bf16"))
    # -- where and how (never part of the identity)
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
    # -- the method's own options (its Options dataclass)
    options: Options = field(default_factory=Options, metadata={"role": OPTION})

    def to_dict(self) -> dict:
        """The flat dict a result's JSON holds: the common fields, then the method's options."""
        common = {name: getattr(self, name) for name in FIELDS}
        return {**common, **dataclasses.asdict(self.options)}

    def replace(self, **changes) -> "Config":
        """A copy with ``changes``; names of the method's options change the options."""
        own = {k: changes.pop(k) for k in list(changes) if k in option_fields(type(self.options))}
        config = dataclasses.replace(self, **changes)
        return dataclasses.replace(config, options=config.options.replace(**own)) if own else config


FIELDS = {f.name: f for f in dataclasses.fields(Config) if f.name != "options"}  # the common fields
RUN_FIELDS = frozenset(n for n, f in FIELDS.items() if f.metadata["role"] == RUN)


def option_fields(options: type[Options]) -> dict[str, dataclasses.Field]:
    """A method's option fields by name."""
    return {f.name: f for f in dataclasses.fields(options)}


def run_fields(config: Config) -> frozenset[str]:
    """The names of this config's run fields: the common ones and its method's options of role ``run``."""
    return RUN_FIELDS | {n for n, f in option_fields(type(config.options)).items() if f.metadata["role"] == RUN}


@dataclass(frozen=True)
class Recipe:
    """A named training recipe for one dataset: the values of the recipe fields left at None. Exactly one of
    ``epochs`` and ``steps`` is the budget; the LR schedule's milestones are training steps."""
    epochs: int | None
    batch_size: int
    augment: str  # data.DATASETS[dataset].augmentations
    steps: int | None = None
    lr: float = 0.1
    lr_schedule: str = "cosine"  # annealed to 0 over the epochs, stepped once an epoch
    lr_milestones: str | None = None  # step schedule only
    lr_decay: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    val_fraction: float = 0.11


# SNIP (Lee et al. 2019), section 5 / appendix: SGD momentum 0.9, batch 100, weight decay 5e-4, lr 0.1 times 0.1
# every 25k iterations, 10% of the training images held out, no augmentation or label smoothing. It states no
# total budget (its public code defaults to 10k iterations); 30,000 steps here (55.6 epochs of 54,000 images),
# so that the LR is decayed once, at 25,000, and LeNet-5-Caffe stays affordable on a CPU (docs/study.md).
SNIP_DIGITS = Recipe(epochs=None, steps=30_000, batch_size=100, augment="none", lr_schedule="step",
                     lr_milestones="25000", lr_decay=0.1, label_smoothing=0.0, val_fraction=0.1)
RECIPES = {  # recipe name -> dataset -> its Recipe
    "paper": {
        "cifar10": Recipe(epochs=200, batch_size=128, augment="cifar"),
        "cifar100": Recipe(epochs=200, batch_size=128, augment="cifar"),  # CIFAR-10's recipe, 100 classes
        "mnist": Recipe(epochs=30, batch_size=32, augment="flip"),
        "fashion-mnist": Recipe(epochs=30, batch_size=32, augment="flip"),
    },
    "snip": {"mnist": SNIP_DIGITS, "fashion-mnist": SNIP_DIGITS},  # SNIP's CIFAR recipe is not implemented
}
DEFAULT_RECIPE = "paper"
PAPER_RECIPES = RECIPES[DEFAULT_RECIPE]
# The paper's target sparsity per dataset: the default of a pruning method's --target-sparsity. The MNIST target:
# docs/methods.md, "The paper's runs", on 0.744 vs the notebooks' 0.74433.
PAPER_TARGETS = {"cifar10": 0.796, "cifar100": 0.796, "mnist": 0.744, "fashion-mnist": 0.744}


def identity(config: dict, run: frozenset[str] = RUN_FIELDS) -> dict:
    """The entries of a flat config dict that define what is computed: everything but the ``run`` fields."""
    return {k: v for k, v in config.items() if k not in run}


def config_difference(old: dict, new: dict, run: frozenset[str] = RUN_FIELDS) -> str:
    """'epochs 2 vs 200, width 8 vs 64' for the entries of the identity that differ ('' if none). An entry
    one dict lacks counts as None (an option of another method, or a field added since)."""
    a, b = identity(old, run), identity(new, run)
    return ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))


# ----------------------------------------------------------------------------------------------------------
# Command line

class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2, instead of usage + error
        raise ConfigError(message)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_flag(p: argparse.ArgumentParser, name: str, f: dataclasses.Field, help: str) -> None:
    meta = f.metadata
    if meta["type"] is bool:
        p.add_argument(_flag(name), action="store_true", default=None if meta["role"] == OPTION else False,
                       help=help)
    else:
        p.add_argument(_flag(name), type=meta["type"] or str, choices=meta["choices"], default=f.default,
                       help=help + ("" if f.default is None else f" (default {f.default})"))


def offered_options(methods: dict[str, type[Options]]) -> dict[str, list[tuple[str, dataclasses.Field]]]:
    """Option name -> (method, field) of every offered method that takes it as a flag."""
    offered: dict[str, list] = {}
    for method, options in methods.items():
        for name, f in option_fields(options).items():
            if f.metadata["flag"]:
                offered.setdefault(name, []).append((method, f))
    return offered


def build_parser(prog: str, description: str, datasets: tuple[str, ...], methods: dict[str, type[Options]],
                 default_dataset: str | None) -> argparse.ArgumentParser:
    """Flags for the common fields and for the options of the methods a script offers.

    Args:
        methods: method name -> its Options class (the first method is the default of a one-method script).
        default_dataset: the dataset when --dataset is not given (None: the flag is required).
    """
    p = _Parser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, f in FIELDS.items():
        if not f.metadata["flag"]:
            continue
        if name == "dataset":
            if len(datasets) > 1:
                p.add_argument(_flag(name), choices=datasets, required=default_dataset is None,
                               default=default_dataset, help=f.metadata["help"])
        elif name == "method":
            if len(methods) > 1:
                p.add_argument(_flag(name), choices=tuple(methods), required=True, help=f.metadata["help"])
        else:
            _add_flag(p, name, f, f.metadata["help"])
    for name, owners in offered_options(methods).items():
        by_help: dict[str, list[str]] = {}  # methods sharing a help text are named together
        for method, f in owners:
            by_help.setdefault(f.metadata["help"], []).append(method)
        help = next(iter(by_help)) if len(by_help) == 1 else \
            "; ".join(f"{', '.join(ms)}: {h}" for h, ms in by_help.items())
        _add_flag(p, name, owners[0][1], help)
    return p


def parse_config(argv: list[str] | None, prog: str, description: str, datasets: tuple[str, ...],
                 methods: dict[str, type[Options]], default_dataset: str | None) -> Config:
    """Parse the command line into a Config holding the chosen method's options (not completed: see
    ``methods.complete``). A flag of an option the chosen method does not take is one ConfigError line."""
    args = vars(build_parser(prog, description, datasets, methods, default_dataset).parse_args(argv))
    args.setdefault("dataset", datasets[0])
    args.setdefault("method", next(iter(methods)))
    offered = offered_options(methods)
    own = {n for n, f in option_fields(methods[args["method"]]).items() if f.metadata["flag"]}
    for name in sorted(offered):
        if args[name] is not None and name not in own:
            owners = ", ".join(m for m, _ in offered[name])
            raise ConfigError(f"{_flag(name)} is not an option of {args['method']} (it is one of {owners})")
    options = methods[args["method"]](**{name: args.pop(name) for name in own})
    for name in offered:
        args.pop(name, None)
    return Config(script=prog, options=options, **args)


def with_recipe_defaults(config: Config) -> Config:
    """Fill the recipe fields left at None from the named recipe (``--recipe``, default the paper's) for the
    dataset. The budget is filled only when neither ``--epochs`` nor ``--steps`` was given."""
    name = config.recipe or DEFAULT_RECIPE
    recipe = RECIPES[name].get(config.dataset)
    if recipe is None:
        raise ConfigError(f"--recipe {name} has no recipe for {config.dataset} (it has: "
                          f"{', '.join(RECIPES[name])})")
    budget_given = config.epochs is not None or config.steps is not None
    filled = {f.name: getattr(recipe, f.name) for f in dataclasses.fields(Recipe)
              if getattr(config, f.name) is None and not (budget_given and f.name in ("epochs", "steps"))}
    return config.replace(recipe=name, **filled)


def milestones(config: Config) -> list[int]:
    """The step schedule's milestones as ints ([] for cosine); ConfigError if they are not integers."""
    if config.lr_schedule != "step":
        return []
    try:
        return [int(m) for m in (config.lr_milestones or "").split(",") if m.strip()]
    except ValueError:
        raise ConfigError(f"--lr-milestones {config.lr_milestones!r}: not a comma-separated list of training "
                          f"steps") from None


# ----------------------------------------------------------------------------------------------------------
# Validation: every bad value is one line naming the flag

def require(checks: list[tuple[str, bool, str]]) -> None:
    """Raise ConfigError ``--<flag> <message>`` for the first ``(field, ok, message)`` that is not ok."""
    for name, ok, message in checks:
        if not ok:  # NaN fails every comparison, so it lands here too
            raise ConfigError(f"{_flag(name)} {message}")


def check_common(config: Config) -> Config:
    """Return ``config`` if every common value is usable, else raise ConfigError naming the first bad flag.
    The methods check their own options (``Method.check_options`` in methods.py)."""
    c = config
    checks = [
        ("seed", isinstance(c.seed, int) and 0 <= c.seed < MAX_SEED, f"must be in [0, 2**32), got {c.seed}"),
        ("epochs", c.epochs >= 1 if c.epochs is not None else c.steps is not None, f"must be positive, got {c.epochs}"),
        ("batch_size", c.batch_size >= 1, f"must be positive, got {c.batch_size}"),
        ("lr", finite(c.lr) and c.lr > 0, f"must be positive, got {c.lr}"),
        ("momentum", finite(c.momentum) and c.momentum >= 0, f"must be >= 0, got {c.momentum}"),
        ("weight_decay", finite(c.weight_decay) and c.weight_decay >= 0, f"must be >= 0, got {c.weight_decay}"),
        ("label_smoothing", 0.0 <= c.label_smoothing < 1.0, f"must be in [0, 1), got {c.label_smoothing}"),
        ("steps", c.steps is None or c.steps >= 1, f"must be positive, got {c.steps}"),
        ("lr_decay", c.lr_schedule != "step" or (finite(c.lr_decay) and c.lr_decay > 0),
         f"must be a positive factor with --lr-schedule step, got {c.lr_decay}"),
        ("lr_milestones", c.lr_schedule == "step" or c.lr_milestones is None,
         f"is for --lr-schedule step, not {c.lr_schedule}"),
        ("width", c.width is None or c.width >= 1, f"must be positive, got {c.width}"),
        ("train_subset", c.train_subset is None or c.train_subset >= 1, f"must be positive, got {c.train_subset}"),
        ("val_fraction", 0.0 <= c.val_fraction < 1.0, f"must be in [0, 1), got {c.val_fraction}"),
        ("eval_batch_size", c.eval_batch_size >= 1, f"must be positive, got {c.eval_batch_size}"),
    ]
    require(checks)
    steps = milestones(c)
    if c.lr_schedule == "step" and not (steps and steps[0] > 0 and all(a < b for a, b in zip(steps, steps[1:]))):
        raise ConfigError(f"--lr-milestones {c.lr_milestones!r}: the step schedule needs training steps that are "
                          f"positive and increasing")
    if c.train_subset is not None and c.val_fraction > 0 and round(c.val_fraction * c.train_subset) in (0, c.train_subset):
        raise ConfigError(f"--val-fraction {c.val_fraction} of --train-subset {c.train_subset} leaves an empty split")
    return config


def check_budget(config: Config, steps_per_epoch: int) -> None:
    """ConfigError (one line) if a step budget does not fit the data as loaded, or a step schedule's last
    milestone is not a step of the cycle."""
    if config.steps is not None and config.epochs != -(-config.steps // steps_per_epoch):
        raise ConfigError(f"--steps {config.steps}: the data has {steps_per_epoch} batches an epoch, not the "
                          f"real dataset's; give --epochs instead")
    total, steps = config.steps or config.epochs * steps_per_epoch, milestones(config)
    if steps and steps[-1] >= total:
        raise ConfigError(f"--lr-milestones {config.lr_milestones}: milestone {steps[-1]} is not before the end "
                          f"of training (step {total})")


def finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
