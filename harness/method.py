"""What a training method is: the hooks the harness calls, its options, and what it may ask of a run.

The harness (loop.py) knows no method by name. Every run makes one object of its method
(``methods.create``), asks it how many training rounds it has (one full schedule of ``epochs`` each), and calls

* ``start_round(run, r)`` before the first epoch of round ``r`` (prune at initialisation, rewind, ...),
* ``start_epoch(run, r, epoch)`` at the start of every epoch (save a rewind point, ...),
* ``start_step(run, step)`` before every training step's forward pass (prune on a step schedule), and
  ``after_backward(run, step)`` once the step's gradients exist, before ``optimizer.step()``; both optional.

``run`` is the harness's :class:`run.Run`, which offers what methods need: the model, its prunable ``params``,
the optimizer and LR schedule, the data, and the ways to change masks: ``run.prune(sparsity, step, scores,
distribution)`` (rank among the active weights and prune to a sparsity) and ``run.set_masks(step, masks, reset,
sparsity, event=...)`` (masks a method computed itself: regrowth, a donor's mask), each recording a mask event and
checking the masks across processes; and ``run.lift_masks()`` / ``run.lower_masks(saved)`` around one step whose
gradient must be the dense one (RigL). No method writes a mask buffer itself. Also ``run.snapshot()`` /
``run.restore(snapshot)`` and ``run.load_initial_weights(seed)``. What a method must remember across a kill is
its ``state_dict()``, saved in every checkpoint.

A method's options are its own frozen dataclass (``Options``, made of :func:`config.option` fields, each None
until ``defaults`` fills it); the command line is generated from them. ``check_options`` refuses bad values before any
default is derived; ``check_sizes(sizes)`` once the data and the network exist (a target that prunes every weight,
more SNIP batches than an epoch has, ...): one ``ConfigError`` line each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import pruning
from harness.config import Config, ConfigError, Options, option, option_fields, require, value_text


def distribution_option(default: str | None = None):
    """``--distribution``, the same flag for every method that spreads its target over the layers; in the label
    as its bare value (``random-erk``). ``default``: RigL's and SET's is ``erk``; at initialisation one global
    ranking is the default, stored as None."""
    return option("how the sparsity is spread over the layers: one global ranking, every layer at the target, or "
                  "Erdos-Renyi-Kernel" + ("" if default else " (default global)"), choices=pruning.DISTRIBUTIONS,
                  default=default, short="")


@dataclass(frozen=True)
class Sizes:
    """What a method's checks may need beyond the config: counts known once the data and the model exist."""
    prunable: int  # prunable weights of the network
    train_batches: int  # training batches (= steps) per epoch


@dataclass(frozen=True)
class PruningOptions(Options):
    """The option every pruning method has: where its sparsity ends."""
    target_sparsity: float = option("sparsity at the end of training (default: the paper's for the dataset, 0.796 "
                                    "CIFAR, 0.744 (Fashion-)MNIST)", float)


class Method:
    """The default hooks: one round, no pruning. Subclasses override what they need.

    One object per run (``methods.create``), made from the run's completed config. What it must remember across
    a kill (IMP's rewind point) goes through ``state_dict`` / ``load_state_dict`` into every checkpoint: tensors
    and plain values only, so checkpoints load with ``weights_only=True``."""

    name = ""
    summary = ""  # one line for --help
    Options: type[Options] = PruningOptions  # this method's options
    prunes = True  # attach masks to the prunable weights at build time
    reads_files = False  # its defaults read files (a ticket's donor): methods.complete(read_files=False) skips them
    # trains a finished run's final mask (the ticket): sweep.py names the donor's result with ``donor_flags`` and
    # the run's folder with ``folder_for`` before the donor exists, and starts the run once the donor finished
    needs_donor = False
    # Per-step hooks, ``hook(run, step)`` with the step's index within the round (0-based). None: the method
    # has none, and the loop skips the call.
    start_step = None  # before the step's forward pass (prune on a step schedule)
    after_backward = None  # gradients present, before optimizer.step() (gradient-based mask updates)

    def __init__(self, config: Config) -> None:
        self.config = config
        self.options = config.options

    @classmethod
    def check_options(cls, config: Config) -> None:
        """Raise ConfigError naming the flag if one of this method's options is out of range (before any
        default is derived from it). Subclasses call this first."""
        o = config.options
        if isinstance(o, PruningOptions):
            require([("target_sparsity", o.target_sparsity is None or 0.0 <= o.target_sparsity < 1.0,
                      f"must be in [0, 1), got {o.target_sparsity}")])

    @classmethod
    def defaults(cls, config: Config) -> dict:
        """Values for this method's options that the user left at None: each option's declared ``default``
        (``methods.complete`` has filled the target sparsity already: the paper's for the dataset). A method
        whose defaults derive from other values adds those to this."""
        o = config.options
        return {name: f.metadata["default"] for name, f in option_fields(cls.Options).items()
                if f.metadata["default"] is not None and getattr(o, name) is None}

    def check_sizes(self, sizes: Sizes) -> None:
        """Raise ConfigError (one line naming the flag) if the config cannot run on a network and data of these
        sizes. The default: a pruning method's target must leave at least one weight (as the count rounds)."""
        if self.prunes and round(self.target() * sizes.prunable) >= sizes.prunable:
            raise ConfigError(f"--target-sparsity {self.target()} prunes all {sizes.prunable:,} prunable "
                              f"weights of this network: no weight would be left")

    def label(self) -> str:
        """The name of this variant in tables and result folders, by one rule: the method's name, then, in the
        order the options are declared, each option that has a ``short`` form and is neither None nor at its
        default, as ``short`` + its value (``progressive-cubic-every50-end0.75``)."""
        parts = [self.name]
        for name, f in option_fields(self.Options).items():
            value, short = getattr(self.options, name), f.metadata["short"]
            if short is not None and value is not None and value != f.metadata["default"]:
                parts.append(short + value_text(value))
        return "-".join(parts)

    def folder(self) -> str:
        """The results folder of this variant: its label, and the target sparsity when it prunes."""
        return self.label() + (f"-{self.target():g}" if self.prunes else "")

    def cycle_steps(self, steps_per_epoch: int) -> int:
        """Training steps in one cycle: the step budget (``--steps``) or every step of every epoch."""
        return self.config.steps or self.config.epochs * steps_per_epoch

    def target(self) -> float:
        """The sparsity this run ends at (0 for dense)."""
        return self.options.target_sparsity

    def rounds(self) -> int:
        """Training cycles of ``epochs`` epochs each."""
        return 1

    def mask_scores(self, run) -> dict | None:
        """The scores this method would rank the active weights by now (None: ``|weight|``): the would-be final
        mask of the mask dynamics (``record.track_mask_dynamics``) is drawn with them."""
        return None

    def start_round(self, run, r: int) -> None:
        """Before the first epoch of round ``r`` (prune at initialisation, rewind, ...)."""

    def start_epoch(self, run, r: int, epoch: int) -> None:
        """At the start of every epoch, before its first step (save a rewind point, ...)."""

    def epoch_fields(self, run) -> dict:
        """Extra entries for this epoch's history row (plain values), asked once at the end of every epoch."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def current_mask(params: list) -> torch.Tensor:
    """Every prunable tensor's mask, flattened and concatenated, as bool."""
    return torch.cat([getattr(m, n + "_mask").reshape(-1) != 0 for m, n in params])


def random_scores(params: list, seed: int, device: torch.device) -> dict:
    """Seeded uniform scores for every prunable weight, drawn on the CPU (the same on every device and rank)."""
    gen = torch.Generator().manual_seed(seed)
    return {(m, n): torch.rand(getattr(m, n + "_orig").shape, generator=gen).to(device) for m, n in params}
