"""The training methods, as a table: each method is one small class with the hooks the training loop calls.

The loop in experiment.py knows no method by name. Every run makes one object of its method (:func:`create`),
asks it how many training rounds it has (one full schedule of ``epochs`` each), and calls

* ``start_round(run, r)`` before the first epoch of round ``r`` (prune at initialisation, rewind, ...),
* ``start_epoch(run, r, epoch)`` at the start of every epoch (save a rewind point, ...),
* ``start_step(run, step)`` before every training step's forward pass (prune on a step schedule), and
  ``after_backward(run, step)`` once the step's gradients exist, before ``optimizer.step()``; both optional.

``run`` is the harness's :class:`experiment.Run`, which offers what methods need: the model, its prunable
``params``, the optimizer and LR schedule, the data, ``run.prune(sparsity, step)`` (global magnitude pruning,
recorded as a pruning event and checked across processes), ``run.snapshot()`` / ``run.restore()`` and
``run.load_initial_weights(seed)``. What a method must remember across a kill is its ``state_dict()``, saved
in every checkpoint. Before any hook, the harness calls ``validate(sizes)`` once the data and the network
exist (a target that prunes every weight, more SNIP batches than an epoch has, an IMP round that prunes
nothing, a pruning window holding no step: one ``ConfigError`` line). A flag of an option the method does not
use, or derives itself (``derived``), is refused by :func:`check_options`. Adding a method is one class in
``METHODS`` plus its tests (and a ``config.Config`` field for each new option).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass

import torch

import data
import distributed
import pruning
import results
from config import MAX_ROUNDS, MAX_SEED, OPTION_FIELDS, PAPER_RECIPES, Config, ConfigError, require


@dataclass(frozen=True)
class Sizes:
    """What a method's checks may need beyond the config: counts known once the data and the model exist."""
    prunable: int  # prunable weights of the network
    train_batches: int  # training batches (= steps) per epoch


class Method:
    """The default hooks: one round, no pruning. Subclasses override what they need.

    One object per run (:func:`create`), made from the run's resolved config. What it must remember across a
    kill (IMP's rewind point) goes through ``state_dict`` / ``load_state_dict`` into every checkpoint: tensors
    and plain values only, so checkpoints load with ``weights_only=True``."""

    name = ""
    summary = ""  # one line for --help
    options: tuple[str, ...] = ()  # the config.OPTION_FIELDS this method uses (its flags, and derived values)
    derived: tuple[str, ...] = ()  # the options it derives itself: never given on the command line
    prunes = True  # attach masks to the prunable weights at build time
    # Per-step hooks, ``hook(run, step)`` with the step's index within the round (0-based). None: the method
    # has none, and the loop skips the call.
    start_step = None  # before the step's forward pass (prune on a step schedule)
    after_backward = None  # gradients present, before optimizer.step() (gradient-based mask updates)

    def __init__(self, config: Config) -> None:
        self.config = config

    @classmethod
    def check(cls, config: Config) -> None:
        """Raise ConfigError naming the flag if one of this method's own options is out of range (before any
        default is derived from it)."""

    @classmethod
    def defaults(cls, config: Config) -> dict:
        """Values for this method's options that the user left at None."""
        return {}

    def validate(self, sizes: Sizes) -> None:
        """Raise ConfigError (one line naming the flag) if the config cannot run on a network and data of these
        sizes. The default: a pruning method's target must leave at least one weight (as the count rounds)."""
        if self.prunes and round(self.target() * sizes.prunable) >= sizes.prunable:
            raise ConfigError(f"--target-sparsity {self.target()} prunes all {sizes.prunable:,} prunable "
                              f"weights of this network: no weight would be left")

    def label(self) -> str:
        """The name of this variant in tables and result folders: every option that changes results is in it."""
        return self.name

    def folder(self) -> str:
        """The results folder of this variant: its label, and the target sparsity when it prunes."""
        return self.label() + (f"-{self.target():g}" if self.prunes else "")

    def target(self) -> float:
        """The sparsity this run ends at (0 for dense)."""
        return self.config.target_sparsity

    def rounds(self) -> int:
        """Training cycles of ``epochs`` epochs each."""
        return 1

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


class Dense(Method):
    """The dense baseline: the same recipe with pruning off."""

    name = "dense"
    summary = "the same recipe with pruning off"
    prunes = False

    def target(self) -> float:
        return 0.0


class Scheduled(Method):
    """Pruning by global magnitude among the active weights at the steps of a schedule (``events``)."""

    _events: dict[int, float] | None = None

    @classmethod
    def check(cls, config: Config) -> None:
        c = config
        require([
            ("prune_epoch", c.prune_epoch is None or 0 <= c.prune_epoch < c.epochs,
             f"must be an epoch in [0, {c.epochs}), got {c.prune_epoch}"),
            ("prune_every", c.prune_every is None or c.prune_every >= 1, f"must be at least 1 step, got {c.prune_every}"),
            ("prune_start", c.prune_start is None or 0.0 <= c.prune_start < 1.0,
             f"must be in [0, 1), got {c.prune_start}"),
            ("prune_end", c.prune_end is None or 0.0 < c.prune_end < 1.0, f"must be in (0, 1), got {c.prune_end}"),
        ])
        if c.prune_start is not None and c.prune_end is not None and c.prune_end <= c.prune_start:
            raise ConfigError(f"--prune-end {c.prune_end} is not after --prune-start {c.prune_start}: the pruning "
                              f"window is empty")

    def events(self, steps_per_epoch: int) -> dict[int, float]:
        """Training step within the cycle -> sparsity to prune to before its forward pass."""
        raise NotImplementedError

    def validate(self, sizes: Sizes) -> None:
        super().validate(sizes)
        self.events(sizes.train_batches)  # a window holding no step is refused now, not mid-run

    def start_step(self, run, step: int) -> None:
        if self._events is None:
            self._events = self.events(run.steps_per_epoch())
        sparsity = self._events.get(step)
        if sparsity is not None:
            run.prune(sparsity, step)

    def step_of(self, fraction: float, flag: str, steps_per_epoch: int) -> int:
        """The training step at ``fraction`` of the cycle; one ConfigError line if it is not a training step."""
        steps = self.config.epochs * steps_per_epoch
        step = round(fraction * steps)
        if step >= steps:
            raise ConfigError(f"--{flag} {fraction} falls after the last of the {steps} training steps")
        return step


class Progressive(Scheduled):
    """The paper's method: prune by global magnitude among the active weights up to the schedule's sparsity,
    at the start of every epoch (linear from 0 at the first epoch to the target at the last). ``--schedule
    cubic`` is gradual magnitude pruning (GMP; Zhu & Gupta 2017, "To prune, or not to prune").

    At step granularity (``--prune-every N``, ``--prune-start F``, ``--prune-end F``, as GMP, SparseML and
    jaxpruner): events every N training steps from step ``F_start * T`` and exactly at ``F_end * T`` (of the
    ``T`` steps of the cycle), where the target is reached; none after, which leaves a recovery window. The
    defaults (N = the steps of an epoch, start 0, end at the start of the last epoch) are the paper's schedule,
    event for event (:func:`pruning.pruning_events`)."""

    name = "progressive"
    summary = "the paper's: prune by global magnitude on a schedule (linear / cubic; per epoch or every N steps)"
    options = ("target_sparsity", "schedule", "prune_every", "prune_start", "prune_end")

    @classmethod
    def defaults(cls, config: Config) -> dict:
        return {"schedule": config.schedule or "linear"}

    def label(self) -> str:
        c = self.config
        return "-".join([self.name] + ([c.schedule] if c.schedule != "linear" else [])
                        + ([f"every{c.prune_every}"] if c.prune_every is not None else [])
                        + ([f"start{c.prune_start:g}"] if c.prune_start is not None else [])
                        + ([f"end{c.prune_end:g}"] if c.prune_end is not None else []))

    def events(self, steps_per_epoch: int) -> dict[int, float]:
        c = self.config
        start = 0 if c.prune_start is None else self.step_of(c.prune_start, "prune-start", steps_per_epoch)
        end = (c.epochs - 1) * steps_per_epoch if c.prune_end is None else \
            self.step_of(c.prune_end, "prune-end", steps_per_epoch)
        if end <= start and (c.prune_start is not None or c.prune_end is not None):
            raise ConfigError(f"--prune-start/--prune-end: the pruning window (steps {start} to {end} of "
                              f"{c.epochs * steps_per_epoch}) holds no training step")
        return pruning.pruning_events(c.schedule, c.target_sparsity, start, end, c.prune_every or steps_per_epoch)


class OneShot(Scheduled):
    """Train, prune once, keep training (Han et al. 2015, "Learning both Weights and Connections for Efficient
    Neural Networks"), budget-matched: dense until the start of epoch ``--prune-epoch`` (default
    ``epochs // 2``), or until the training step at ``--prune-start F`` of the cycle, then pruned to the
    target in one step by global magnitude; the same LR schedule and total epochs as the progressive run."""

    name = "oneshot"
    summary = "train dense, prune once to the target at --prune-epoch (epochs // 2) or --prune-start, keep training"
    options = ("target_sparsity", "prune_epoch", "prune_start")

    @classmethod
    def defaults(cls, config: Config) -> dict:
        if config.prune_start is not None:
            if config.prune_epoch is not None:
                raise ConfigError("--prune-epoch and --prune-start both say when oneshot prunes; give one")
            return {}
        return {"prune_epoch": config.epochs // 2 if config.prune_epoch is None else config.prune_epoch}

    def label(self) -> str:
        c = self.config
        return f"{self.name}-e{c.prune_epoch}" if c.prune_start is None else f"{self.name}-at{c.prune_start:g}"

    def events(self, steps_per_epoch: int) -> dict[int, float]:
        c = self.config
        step = c.prune_epoch * steps_per_epoch if c.prune_start is None else \
            self.step_of(c.prune_start, "prune-start", steps_per_epoch)
        return {step: c.target_sparsity}


class AtInitialisation(Method):
    """Prune to the target once, before any training, by this method's scores, spread over the layers by
    ``--distribution`` (default ``global``: one ranking); then train all epochs with that fixed mask."""

    @classmethod
    def defaults(cls, config: Config) -> dict:
        # one global ranking is stored as None, as in results written before --distribution existed, so that
        # `--distribution global` and no flag are one experiment
        return {"distribution": None if config.distribution in (None, "global") else config.distribution}

    def label(self) -> str:
        return self.name + ("" if self.config.distribution is None else f"-{self.config.distribution}")

    def scores(self, run) -> dict:
        raise NotImplementedError

    def start_round(self, run, r: int) -> None:
        run.prune(self.config.target_sparsity, 0, importance_scores=self.scores(run),
                  distribution=self.config.distribution or "global")


class Snip(AtInitialisation):
    """SNIP (Lee et al. 2019, "SNIP: Single-shot Network Pruning based on Connection Sensitivity"): at
    initialisation, score every prunable weight by ``|dL/dw * w|``, summed over ``--score-batches`` training
    batches (default 1, as the paper; the first batches of epoch 0, augmented as in training), and keep the
    highest scores. Seeded and deterministic; the network's state (BatchNorm statistics) is left untouched."""

    name = "snip"
    summary = "prune at initialisation by |dL/dw * w| over --score-batches batches, train with the mask"
    options = ("target_sparsity", "score_batches", "distribution")

    @classmethod
    def check(cls, config: Config) -> None:
        require([("score_batches", config.score_batches is None or config.score_batches >= 1,
                  f"must be positive, got {config.score_batches}")])

    @classmethod
    def defaults(cls, config: Config) -> dict:
        return {**super().defaults(config),
                "score_batches": 1 if config.score_batches is None else config.score_batches}

    def label(self) -> str:
        batches = "" if self.config.score_batches == 1 else f"-b{self.config.score_batches}"
        return self.name + batches + ("" if self.config.distribution is None else f"-{self.config.distribution}")

    def validate(self, sizes: Sizes) -> None:
        super().validate(sizes)
        if self.config.score_batches > sizes.train_batches:
            raise ConfigError(f"--score-batches {self.config.score_batches} is more than the {sizes.train_batches} "
                              f"training batches of an epoch")

    def scores(self, run) -> dict:
        c, d, model = self.config, run.data, run.model
        buffers = {k: v.clone() for k, v in model.state_dict().items()}  # forward passes move BN statistics
        scores = {(m, n): torch.zeros_like(getattr(m, n + "_orig")) for m, n in run.params}
        batches = data.iterate_batches(*d.train, c.batch_size, d.train_transform, data.epoch_generator(c.seed, 0))
        model.train()
        for _, (x, y) in zip(range(c.score_batches), batches):
            model.zero_grad(set_to_none=True)
            run.criterion(model(x).float(), y).backward()
            for (m, n), score in scores.items():
                orig = getattr(m, n + "_orig")
                score.add_((orig.grad * orig).detach().abs())
        model.zero_grad(set_to_none=True)
        model.load_state_dict(buffers)
        run.add_train_macs(3 * run.macs[0] * sum(min(c.batch_size, d.train[1].shape[0] - i * c.batch_size)
                                                for i in range(c.score_batches)))  # dense scoring passes
        for score in scores.values():  # equal on every rank already (each scores the same batches); made certain
            distributed.all_reduce_sum(score, run.world).div_(run.world.size)
        return scores


class Random(AtInitialisation):
    """Random pruning at initialisation with seeded uniform scores, then training with the fixed mask: the
    sanity baseline every pruning method should beat (e.g. Liu et al. 2022, "The Unreasonable Effectiveness of
    Random Pruning")."""

    name = "random"
    summary = "prune at initialisation with seeded random scores, train with the fixed mask"
    options = ("target_sparsity", "distribution")

    def scores(self, run) -> dict:
        return random_scores(run.params, self.config.seed, run.device)


def random_scores(params: list, seed: int, device: torch.device) -> dict:
    """Seeded uniform scores for every prunable weight, drawn on the CPU (the same on every device and rank)."""
    gen = torch.Generator().manual_seed(seed)
    return {(m, n): torch.rand(getattr(m, n + "_orig").shape, generator=gen).to(device) for m, n in params}


class DynamicSparse(Method):
    """Dynamic sparse training: sparse from the first step at the target, the mask changed every
    ``--update-every ΔT`` steps until ``--update-end`` of the training steps. Shared by RigL and SET.

    Start: a seeded random mask at the target, spread over the layers by ``--distribution`` (default ``erk``,
    as the RigL paper). At step ``t = ΔT, 2ΔT, ... < T_end`` (after the backward pass, before the optimizer
    step), in every layer: drop the ``k = floor(f(t) * active)`` active weights of smallest magnitude, with
    ``f(t) = α / 2 * (1 + cos(π t / T_end))``, ``α = --drop-fraction``; then grow ``k`` of the weights inactive
    after the drop (as google-research/rigl: a weight just dropped may come back), by this method's
    ``grow_scores``, with the one ranking rule (:func:`pruning.select_smallest_active` on negated scores). Each
    layer's count, and so the sparsity, is exactly the target at every step. Dropped and grown weights and
    their momentum are set to 0, and this step's gradient is kept only for weights active both before and after
    the update, so a grown weight starts at exactly 0 and learns from the next step on (rigl-torch skips the
    optimizer step on update steps instead)."""

    options = ("target_sparsity", "distribution", "update_every", "update_end", "drop_fraction")
    DEFAULTS = {"distribution": "erk", "update_every": 100, "update_end": 0.75, "drop_fraction": 0.3}
    needs_dense_gradient = False  # RigL: keep d loss / d (mask * weight) on update steps

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.initial: torch.Tensor | None = None  # the initial mask, packed bits: for the mask turnover
        self.regrown = 0  # weights made active by updates since the last history row
        self._hooks: list = []

    @classmethod
    def check(cls, config: Config) -> None:
        c = config
        require([
            ("update_every", c.update_every is None or c.update_every >= 1, f"must be at least 1 step, got {c.update_every}"),
            ("update_end", c.update_end is None or 0.0 < c.update_end <= 1.0, f"must be in (0, 1], got {c.update_end}"),
            ("drop_fraction", c.drop_fraction is None or 0.0 < c.drop_fraction < 1.0,
             f"must be in (0, 1), got {c.drop_fraction}"),
        ])

    @classmethod
    def defaults(cls, config: Config) -> dict:
        return {k: v if getattr(config, k) is None else getattr(config, k) for k, v in cls.DEFAULTS.items()}

    def label(self) -> str:
        short = {"distribution": "", "update_every": "every", "update_end": "end", "drop_fraction": "drop"}
        return "-".join([self.name] + [f"{short[k]}{getattr(self.config, k):g}" if k != "distribution" else
                                       self.config.distribution for k, v in self.DEFAULTS.items()
                                       if getattr(self.config, k) != v])

    def end_step(self, steps_per_epoch: int) -> int:
        return round(self.config.update_end * self.config.epochs * steps_per_epoch)

    def validate(self, sizes: Sizes) -> None:
        super().validate(sizes)
        end = self.end_step(sizes.train_batches)
        if self.config.update_every >= end:
            raise ConfigError(f"--update-every {self.config.update_every}: no mask update falls before --update-end "
                              f"(step {end} of {self.config.epochs * sizes.train_batches})")
        if self.config.compile and self.needs_dense_gradient:
            raise ConfigError(f"--compile: {self.name} reads dense gradients through module hooks added on update "
                              f"steps, which a compiled model need not run; train without --compile")

    def is_update(self, run, step: int) -> bool:
        return step > 0 and step % self.config.update_every == 0 and step < self.end_step(run.steps_per_epoch())

    def start_round(self, run, r: int) -> None:
        run.prune(self.config.target_sparsity, 0, importance_scores=random_scores(run.params, self.config.seed,
                                                                                  run.device),
                  distribution=self.config.distribution)
        self.initial = pruning.pack_mask(current_mask(run.params))

    def start_step(self, run, step: int) -> None:
        if self.needs_dense_gradient and self.is_update(run, step):  # keep d loss / d (mask * weight) this step
            self._hooks = [m.register_forward_hook(lambda mod, args, out, n=n: getattr(mod, n).retain_grad())
                           for m, n in run.params]

    def after_backward(self, run, step: int) -> None:
        if not self.is_update(run, step):
            return
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if self.needs_dense_gradient:  # this step's backward computed the dense gradient: count it as dense
            run.add_train_macs(3 * (run.macs[0] - run.macs[1]) * run.step_images)
        fraction = self.config.drop_fraction / 2 * (1 + math.cos(math.pi * step / self.end_step(run.steps_per_epoch())))
        self.update_masks(run, step, fraction, self.grow_scores(run, step))
        run.record_event(step, self.config.target_sparsity)

    def grow_scores(self, run, step: int) -> list[torch.Tensor]:
        """Per prunable tensor, flattened: the higher, the sooner an inactive weight is grown."""
        raise NotImplementedError

    def update_masks(self, run, step: int, fraction: float, grow_scores: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for (m, n), score in zip(run.params, grow_scores):
                mask, orig = getattr(m, n + "_mask"), getattr(m, n + "_orig")
                active = mask.reshape(-1) != 0
                k = int(fraction * int(active.sum()))
                if k == 0:
                    continue
                kept = active & ~pruning.select_smallest_active(orig.detach().abs().reshape(-1), active, k)
                grown = pruning.select_smallest_active(-score, ~kept, k)
                self.regrown += int((grown & ~active).sum())
                mask.copy_((kept | grown).view_as(mask))
                changed = ~kept.view_as(mask)  # dropped or grown: weight, momentum and this step's gradient 0
                orig.masked_fill_(changed, 0.0)
                if orig.grad is not None:
                    orig.grad.masked_fill_(changed, 0.0)
                for value in run.optimizer.state.get(orig, {}).values():
                    if torch.is_tensor(value) and value.shape == orig.shape:
                        value.masked_fill_(changed, 0)
                setattr(m, n, orig * mask)

    def epoch_fields(self, run) -> dict:
        initial = pruning.unpack_mask(self.initial, sum(getattr(m, n).numel() for m, n in run.params))
        fields = {"regrown": self.regrown,
                  "init_mask_overlap": pruning.mask_overlap(initial, current_mask(run.params).cpu())}
        self.regrown = 0
        return fields

    def state_dict(self) -> dict:
        return {"initial": self.initial, "regrown": self.regrown}

    def load_state_dict(self, state: dict) -> None:
        self.initial, self.regrown = state.get("initial"), state.get("regrown", 0)


class RigL(DynamicSparse):
    """RigL (Evci et al. 2020, "Rigging the Lottery: Making All Tickets Winners"): grow the inactive weights of
    largest dense-gradient magnitude ``|d loss / d (mask * weight)|`` of the update step's batch (kept on update
    steps only; all-reduced over processes under torchrun before ranking)."""

    name = "rigl"
    summary = "dynamic sparse training: every --update-every steps drop smallest |w|, grow largest |dense grad|"
    needs_dense_gradient = True

    def grow_scores(self, run, step: int) -> list[torch.Tensor]:
        grads = [getattr(m, n).grad for m, n in run.params]
        if any(g is None for g in grads):
            raise RuntimeError("rigl: the dense gradient of a prunable weight was not kept on an update step")
        flat = torch.cat([g.detach().abs().reshape(-1).float() for g in grads])
        flat = distributed.all_reduce_sum(flat, run.world)
        return list(flat.split([g.numel() for g in grads]))


class SET(DynamicSparse):
    """SET (Mocanu et al. 2018, "Scalable training of artificial neural networks with adaptive sparse
    connectivity inspired by network science"): RigL's loop with the inactive weights grown uniformly at random
    (seeded by --seed and the step: the same on every process)."""

    name = "set"
    summary = "dynamic sparse training: every --update-every steps drop smallest |w|, grow at random"

    def grow_scores(self, run, step: int) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        return [torch.rand(getattr(m, n).numel(), generator=gen).to(run.device) for m, n in run.params]


def current_mask(params: list) -> torch.Tensor:
    """Every prunable tensor's mask, flattened and concatenated, as bool."""
    return torch.cat([getattr(m, n + "_mask").reshape(-1) != 0 for m, n in params])


class IterativeMagnitude(Method):
    """Iterative magnitude pruning with rewinding: lottery tickets (Frankle & Carbin 2019, "The Lottery Ticket
    Hypothesis"; rewinding: Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis").

    Round 0 trains the dense network for the full schedule. Each of the ``R = --rounds`` later rounds first
    prunes by global magnitude among the active weights to ``1 - (1 - target) ** (r / R)`` (round R ends exactly
    at the target), rewinds the surviving weights and every buffer to their values at the start of epoch
    ``--rewind-epoch`` of round 0 (0 = initialisation), resets the optimizer and LR schedule to that point, and
    trains again for the full schedule. Default R: the smallest R with 0.8**R <= 1 - target (20% of the
    remaining weights per round, as in the LTH papers). The rewind point is saved in every checkpoint."""

    name = "imp"
    summary = "lottery tickets: dense round 0, then --rounds rounds of prune + rewind to --rewind-epoch + retrain"
    options = ("target_sparsity", "rounds", "rewind_epoch")

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.rewind: dict | None = None  # run.snapshot() at the rewind epoch of round 0

    @classmethod
    def check(cls, config: Config) -> None:
        c = config
        require([("rounds", c.rounds is None or 1 <= c.rounds <= MAX_ROUNDS,
                  f"must be in [1, {MAX_ROUNDS}], got {c.rounds}"),
                 ("rewind_epoch", c.rewind_epoch is None or 0 <= c.rewind_epoch < c.epochs,
                  f"must be an epoch in [0, {c.epochs}), got {c.rewind_epoch}")])

    @classmethod
    def defaults(cls, config: Config) -> dict:
        rounds = config.rounds
        if rounds is None:  # smallest R with 0.8**R <= 1 - target (computed by counting: no log rounding)
            rounds = 1
            while 0.8 ** rounds > 1.0 - config.target_sparsity:
                rounds += 1
        return {"rounds": rounds, "rewind_epoch": config.rewind_epoch or 0}

    def label(self) -> str:
        c = self.config
        return f"{self.name}-r{c.rounds}" + (f"-rewind{c.rewind_epoch}" if c.rewind_epoch else "")

    def validate(self, sizes: Sizes) -> None:
        super().validate(sizes)
        c = self.config
        pruned = [round(self.round_sparsity(r) * sizes.prunable) for r in range(c.rounds + 1)]
        idle = next((r for r in range(1, len(pruned)) if pruned[r] <= pruned[r - 1]), None)
        if idle is not None:  # the same rounding as global_magnitude_prune: round(sparsity * n)
            raise ConfigError(f"--rounds {c.rounds}: round {idle} would prune no weight (target "
                              f"{c.target_sparsity} of {sizes.prunable:,} weights); use fewer rounds")

    def rounds(self) -> int:
        return self.config.rounds + 1

    def round_sparsity(self, r: int) -> float:
        c = self.config
        if r == 0:
            return 0.0
        if r >= c.rounds:
            return c.target_sparsity  # exactly, no floating-point round trip
        return 1.0 - (1.0 - c.target_sparsity) ** (r / c.rounds)

    def start_round(self, run, r: int) -> None:
        if r > 0:
            run.prune(self.round_sparsity(r), 0)
            run.restore(self.rewind, keep_masks=True)

    def start_epoch(self, run, r: int, epoch: int) -> None:
        if r == 0 and epoch == self.config.rewind_epoch:
            self.rewind = run.snapshot()

    def state_dict(self) -> dict:
        return {} if self.rewind is None else {"rewind": self.rewind}

    def load_state_dict(self, state: dict) -> None:
        self.rewind = state.get("rewind")


class Ticket(Method):
    """Is a pruned run's final mask a lottery ticket? (Frankle & Carbin 2019.) ``--mask-from`` names a finished
    pruned run (its result JSON or model file); its final mask is trained again for the full schedule, fixed,
    from ``--reinit donor`` (the donor run's own initialisation, recreated from its seed: the LTH test) or
    ``--reinit random`` (a fresh initialisation derived from ``--seed``, never the donor's: the control). A mask
    from another dataset or architecture is refused."""

    name = "ticket"
    summary = "retrain a finished pruned run's final mask (--mask-from) from --reinit donor | random"
    options = ("mask_from", "reinit", "donor", "donor_id", "target_sparsity")
    derived = ("donor", "donor_id", "target_sparsity")  # read from the donor: part of the experiment, never a flag

    @classmethod
    def defaults(cls, config: Config) -> dict:
        donor = read_donor(config)
        return {"reinit": config.reinit or "donor", "donor": f"{donor['label']}-{donor['target_sparsity']:g}",
                "donor_id": f"seed{donor['seed']}-mask-{mask_hash(read_donor_weights(config, donor))}",
                "target_sparsity": donor["target_sparsity"]}

    def label(self) -> str:
        return f"{self.name}-{self.config.reinit}-{self.config.donor}"

    def folder(self) -> str:
        return self.label()  # the donor's target is already in the label

    def start_round(self, run, r: int) -> None:
        c = self.config
        donor = read_donor(c)
        weights = read_donor_weights(c, donor)
        if mask_hash(weights) != c.donor_id.rsplit("-", 1)[-1]:
            raise ConfigError(f"--mask-from {c.mask_from}: its model file changed since this run started")
        seed = donor["seed"] if c.reinit == "donor" else control_seed(c.seed, donor["seed"])
        run.load_initial_weights(seed)
        names = {id(m): name for name, m in run.model.named_modules()}
        with torch.no_grad():
            for m, n in run.params:
                key = f"{names[id(m)]}.{n}"
                mask = getattr(m, n + "_mask")
                if key not in weights or weights[key].shape != mask.shape:
                    raise ConfigError(f"--mask-from {c.mask_from}: {key} is missing or of another shape "
                                      f"in {donor['_model']}; masks only transfer between the same architecture")
                mask.copy_(weights[key] != 0)
        n_nonzero = sum(int(getattr(m, n + "_mask").sum()) for m, n in run.params)
        if n_nonzero != donor["params_nonzero"]:
            raise ConfigError(f"--mask-from {c.mask_from}: its model has {n_nonzero} nonzero prunable "
                              f"weights, its result says {donor['params_nonzero']}")
        pruning.zero_pruned_state(run.params, run.optimizer)
        run.record_event(0, c.target_sparsity)


def control_seed(seed: int, donor_seed: int) -> int:
    """The initialisation seed of ``--reinit random``: derived from ``--seed`` and never the donor's. (A plain
    fresh initialisation from ``--seed`` would *be* the donor's whenever the seeds agree, as in a study that
    tests each seed's own mask, and the control would test nothing.)"""
    fresh = (seed + 0x9E3779B9) % MAX_SEED
    return fresh if fresh != donor_seed else (fresh + 1) % MAX_SEED


def read_donor_weights(config: Config, donor: dict) -> dict[str, torch.Tensor]:
    """The donor's final weights (its compact model file, integrity-checked), or one ConfigError line."""
    try:
        return pruning.expand_state_dict(torch.load(donor["_model"], map_location="cpu", weights_only=True))
    except Exception as e:  # truncated, corrupted, not a model file: torch and expand_state_dict say which
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(f"--mask-from {config.mask_from}: its model file {donor['_model']} is unreadable "
                          f"({reason})") from None


def mask_hash(weights: dict[str, torch.Tensor]) -> str:
    """16 hex digits of a SHA-256 over which entries of every weight matrix/kernel (floating, 2+ dims) are
    nonzero, in key order: equal exactly when two models have the same mask."""
    digest = hashlib.sha256()
    for key in sorted(weights):
        t = weights[key]
        if t.is_floating_point() and t.dim() >= 2:
            digest.update(key.encode() + str(list(t.shape)).encode())
            digest.update((t != 0).reshape(-1).numpy().tobytes())
    return digest.hexdigest()[:16]


def read_donor(config: Config) -> dict:
    """The donor's result (``_model``: its model file), checked to be a pruned run of this dataset and width."""
    path = config.mask_from
    if not path:
        raise ConfigError("--method ticket needs --mask-from: a finished pruned run's result JSON or model file")
    json_path = path[:-len(".model.pt")] + ".json" if path.endswith(".model.pt") else path
    try:
        donor = results.read_result(json_path)
    except results.ResultError as e:
        raise ConfigError(f"--mask-from: {e}") from None
    donor["_model"] = json_path[:-len(".json")] + ".model.pt"
    theirs = (donor["dataset"], donor["config"].get("width"))
    if theirs != (config.dataset, config.width) or not os.path.exists(donor["_model"]):
        reason = "its model file is missing" if theirs == (config.dataset, config.width) else \
            f"it is a {theirs[0]} run of width {theirs[1]}, this is {config.dataset} of width {config.width}"
        raise ConfigError(f"--mask-from {path}: {reason}; a mask only transfers to the same dataset and architecture")
    if donor["params_nonzero"] == donor["params_prunable"]:
        raise ConfigError(f"--mask-from {path} is a dense run: there is no mask to train")
    return donor


METHODS: dict[str, type[Method]] = {m.name: m for m in (Progressive, Dense, OneShot, Snip, Random,
                                                        IterativeMagnitude, Ticket, RigL, SET)}


def describe(names: tuple[str, ...]) -> str:
    """One help line per method: its name and summary."""
    return "\n".join(f"  {name:<12}{METHODS[name].summary}" for name in names)


def create(config: Config) -> Method:
    """The method object of one run, for its resolved config."""
    return METHODS[config.method](config)


def check_options(config: Config) -> None:
    """Raise ConfigError if an option was given that the chosen method does not use or derives itself (a
    silently dropped flag would run another experiment than the one asked for), or is out of range."""
    method = METHODS[config.method]
    for name in sorted(OPTION_FIELDS):
        if getattr(config, name) is None or (name in method.options and name not in method.derived):
            continue
        owners = [m.name for m in METHODS.values() if name in m.options and name not in m.derived]
        raise ConfigError(f"--{name.replace('_', '-')} is not an option of {config.method}"
                          + (f" (it is one of {', '.join(owners)})" if owners else ""))
    method.check(config)


def resolve(config: Config) -> Config:
    """The config with the method's option defaults filled in and the options it does not use cleared."""
    method = METHODS[config.method]
    config = config.replace(**{name: None for name in OPTION_FIELDS - set(method.options)})
    if "target_sparsity" in method.options and config.target_sparsity is None:
        config = config.replace(target_sparsity=PAPER_RECIPES[config.dataset].target_sparsity)
    return config.replace(**method.defaults(config))
