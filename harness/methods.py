"""The training methods: dense, the paper's progressive pruning, oneshot, SNIP, random and GraSP here; IMP in
iterative.py; RigL and SET in dynamic.py; the ticket test in ticket.py. The registry (:data:`METHODS`) and the one
function that completes a config (:func:`complete`) are here too.

Each method is one class (the contract: method.py) holding its options as its own dataclass; adding one is a
class here and its name in ``METHODS`` (README, "Adding a method"; tests/test_methods.py runs that example).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import pruning
from harness import data, distributed, networks
from harness.config import DEFAULT_WIDTH, PAPER_TARGETS, Config, ConfigError, Options, finite, option, option_fields, require, check_common, \
    with_recipe_defaults
from harness.dynamic import SET, RigL
from harness.iterative import IterativeMagnitude
from harness.method import Method, PruningOptions, Sizes, distribution_option, random_scores
from harness.ticket import Ticket



class Dense(Method):
    """The dense baseline: the same recipe with pruning off."""

    name = "dense"
    summary = "the same recipe with pruning off"
    Options = Options  # none
    prunes = False

    def target(self) -> float:
        return 0.0


class Scheduled(Method):
    """Pruning by global magnitude among the active weights at the steps of a schedule (``events``)."""

    _events: dict[int, float] | None = None

    @classmethod
    def check_options(cls, config: Config) -> None:
        super().check_options(config)
        c, o = config, config.options
        start, end = getattr(o, "prune_start", None), getattr(o, "prune_end", None)
        epoch, every = getattr(o, "prune_epoch", None), getattr(o, "prune_every", None)
        require([
            ("prune_epoch", epoch is None or 0 <= epoch < c.epochs, f"must be an epoch in [0, {c.epochs}), got {epoch}"),
            ("prune_every", every is None or every >= 1, f"must be at least 1 step, got {every}"),
            ("prune_start", start is None or 0.0 <= start < 1.0, f"must be in [0, 1), got {start}"),
            ("prune_end", end is None or 0.0 < end < 1.0, f"must be in (0, 1), got {end}"),
        ])
        if start is not None and end is not None and end <= start:
            raise ConfigError(f"--prune-end {end} is not after --prune-start {start}: the pruning window is empty")

    def events(self, steps_per_epoch: int) -> dict[int, float]:
        """Training step within the cycle -> sparsity to prune to before its forward pass."""
        raise NotImplementedError

    def check_sizes(self, sizes: Sizes) -> None:
        super().check_sizes(sizes)
        self.events(sizes.train_batches)  # a window holding no step is refused now, not mid-run

    def start_step(self, run, step: int) -> None:
        if self._events is None:
            self._events = self.events(run.steps_per_epoch())
        sparsity = self._events.get(step)
        if sparsity is not None:
            run.prune(sparsity, step)

    def step_of(self, fraction: float, flag: str, steps_per_epoch: int) -> int:
        """The training step at ``fraction`` of the cycle; one ConfigError line if it is not a training step."""
        steps = self.cycle_steps(steps_per_epoch)
        step = round(fraction * steps)
        if step >= steps:
            raise ConfigError(f"--{flag} {fraction} falls after the last of the {steps} training steps")
        return step


@dataclass(frozen=True)
class ProgressiveOptions(PruningOptions):
    schedule: str = option("sparsity schedule: the paper's linear ramp, or cubic (Zhu & Gupta 2017)",
                           choices=("linear", "cubic"), default="linear", short="")
    prune_every: int = option("training steps between pruning events (default: one event at the start of every "
                              "epoch, the paper's)", int, short="every")
    prune_start: float = option("first pruning event, as a fraction of the cycle's training steps (default 0)", float,
                                short="start")
    prune_end: float = option("last pruning event (exactly at the target), as a fraction of the cycle's training "
                              "steps (default: the start of the last epoch, the paper's)", float, short="end")


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
    Options = ProgressiveOptions

    def events(self, steps_per_epoch: int) -> dict[int, float]:
        c, o = self.config, self.options
        start = 0 if o.prune_start is None else self.step_of(o.prune_start, "prune-start", steps_per_epoch)
        end = (c.epochs - 1) * steps_per_epoch if o.prune_end is None else \
            self.step_of(o.prune_end, "prune-end", steps_per_epoch)
        if end <= start and (o.prune_start is not None or o.prune_end is not None):
            raise ConfigError(f"--prune-start/--prune-end: the pruning window (steps {start} to {end} of "
                              f"{self.cycle_steps(steps_per_epoch)}) holds no training step")
        return pruning.pruning_events(o.schedule, o.target_sparsity, start, end, o.prune_every or steps_per_epoch)


@dataclass(frozen=True)
class OneShotOptions(PruningOptions):
    prune_epoch: int = option("epoch (0-based) at whose start the network is pruned (default epochs // 2)", int,
                              short="e")
    prune_start: float = option("the training step at which it prunes, as a fraction of the cycle's training steps, "
                                "instead of --prune-epoch", float, short="at")


class OneShot(Scheduled):
    """Train, prune once, keep training (Han et al. 2015, "Learning both Weights and Connections for Efficient
    Neural Networks"), budget-matched: dense until the start of epoch ``--prune-epoch`` (default
    ``epochs // 2``), or until the training step at ``--prune-start F`` of the cycle, then pruned to the
    target in one step by global magnitude; the same LR schedule and total epochs as the progressive run."""

    name = "oneshot"
    summary = "train dense, prune once to the target at --prune-epoch (epochs // 2) or --prune-start, keep training"
    Options = OneShotOptions

    @classmethod
    def defaults(cls, config: Config) -> dict:
        o = config.options
        if o.prune_start is not None:
            if o.prune_epoch is not None:
                raise ConfigError("--prune-epoch and --prune-start both say when oneshot prunes; give one")
            return {}
        return {"prune_epoch": config.epochs // 2 if o.prune_epoch is None else o.prune_epoch}

    def events(self, steps_per_epoch: int) -> dict[int, float]:
        o = self.options
        step = o.prune_epoch * steps_per_epoch if o.prune_start is None else \
            self.step_of(o.prune_start, "prune-start", steps_per_epoch)
        return {step: o.target_sparsity}


@dataclass(frozen=True)
class AtInitialisationOptions(PruningOptions):
    distribution: str = distribution_option()


class AtInitialisation(Method):
    """Prune to the target once, before any training, by this method's scores, spread over the layers by
    ``--distribution`` (default ``global``: one ranking); then train all epochs with that fixed mask."""

    Options = AtInitialisationOptions

    @classmethod
    def defaults(cls, config: Config) -> dict:
        # one global ranking is stored as None, as in results written before --distribution existed, so that
        # `--distribution global` and no flag are one identity
        d = config.options.distribution
        return {**super().defaults(config), "distribution": None if d in (None, "global") else d}

    def scores(self, run) -> dict:
        """``{(module, name): tensor shaped like the weight}``: the lowest are pruned."""
        raise NotImplementedError

    def ranking_scores(self, run) -> dict:
        """The scores the mask is chosen by: :meth:`scores`, as every process computed them."""
        return self.scores(run)

    def start_round(self, run, r: int) -> None:
        run.prune(self.options.target_sparsity, 0, scores=self.ranking_scores(run),
                  distribution=self.options.distribution or "global")


class ScoredOnData(AtInitialisation):
    """At initialisation, scored on ``--score-batches`` batches of training images (SNIP, GraSP). Every process
    scores the same images, so the scores agree across ranks already; they are averaged over the ranks anyway,
    so that the masks cannot differ."""

    @classmethod
    def check_options(cls, config: Config) -> None:
        super().check_options(config)
        batches = config.options.score_batches
        require([("score_batches", batches is None or batches >= 1, f"must be positive, got {batches}")])

    def check_sizes(self, sizes: Sizes) -> None:
        super().check_sizes(sizes)
        if self.options.score_batches > sizes.train_batches:
            raise ConfigError(f"--score-batches {self.options.score_batches} is more than the {sizes.train_batches} "
                              f"training batches of an epoch")

    def ranking_scores(self, run) -> dict:
        scores = self.scores(run)
        for score in scores.values():
            distributed.all_reduce_sum(score, run.world).div_(run.world.size)
        return scores


@dataclass(frozen=True)
class SnipOptions(PruningOptions):  # not AtInitialisationOptions: the label names the batches first
    score_batches: int = option("training batches whose |grad * weight| is summed", int, default=1, short="b")
    distribution: str = distribution_option()


class Snip(ScoredOnData):
    """SNIP (Lee et al. 2019, "SNIP: Single-shot Network Pruning based on Connection Sensitivity"): at
    initialisation, score every prunable weight by ``|dL/dw * w|``, summed over ``--score-batches`` training
    batches (default 1, as the paper; the first batches of epoch 0, augmented as in training), and keep the
    highest scores. Seeded and deterministic; the network's state (BatchNorm statistics) is left untouched."""

    name = "snip"
    summary = "prune at initialisation by |dL/dw * w| over --score-batches batches, train with the mask"
    Options = SnipOptions

    def scores(self, run) -> dict:
        c, d, model, n_batches = self.config, run.data, run.model, self.options.score_batches
        buffers = {k: v.clone() for k, v in model.state_dict().items()}  # forward passes move BN statistics
        scores = {(m, n): torch.zeros_like(getattr(m, n + "_orig")) for m, n in run.params}
        batches = data.iterate_batches(*d.train, c.batch_size, d.train_transform, data.epoch_generator(c.seed, 0))
        model.train()
        for _, (x, y) in zip(range(n_batches), batches):
            model.zero_grad(set_to_none=True)
            run.criterion(model(x).float(), y).backward()
            for (m, n), score in scores.items():
                orig = getattr(m, n + "_orig")
                score.add_((orig.grad * orig).detach().abs())
        model.zero_grad(set_to_none=True)
        model.load_state_dict(buffers)
        run.add_train_macs(3 * run.macs[0] * sum(min(c.batch_size, d.train[1].shape[0] - i * c.batch_size)
                                                for i in range(n_batches)))  # dense scoring passes
        return scores


class Random(AtInitialisation):
    """Random pruning at initialisation with seeded uniform scores, then training with the fixed mask: the
    sanity baseline every pruning method should beat (e.g. Liu et al. 2022, "The Unreasonable Effectiveness of
    Random Pruning")."""

    name = "random"
    summary = "prune at initialisation with seeded random scores, train with the fixed mask"

    def scores(self, run) -> dict:
        return random_scores(run.params, self.config.seed, run.device)


@dataclass(frozen=True)
class GraspOptions(PruningOptions):  # not AtInitialisationOptions: the label names batches and temperature first
    score_batches: int = option("batches of --batch-size class-balanced training images scored", int, default=1,
                                short="b")
    temperature: float = option("the logits are divided by this before the loss (as the GraSP code)", float,
                                default=200.0, short="t")
    distribution: str = distribution_option()


class Grasp(ScoredOnData):
    """GraSP (Wang, Zhang & Grosse 2020, "Picking Winning Tickets Before Training by Preserving Gradient Flow"),
    as their code computes it: at initialisation, on a class-balanced sample of ``--score-batches`` batches of
    training images (augmented as in training), with the logits divided by ``--temperature`` (200) and plain
    cross-entropy: the gradient ``g`` of the loss summed over the batches, then the Hessian-gradient product
    ``Hg`` by one Hessian-vector product per batch (:func:`hessian_gradient_product`). The weights of highest
    score ``-w * Hg`` are pruned (removing them reduces the gradient flow least), to the exact count; the
    network's state (BatchNorm statistics) is left as it was."""

    name = "grasp"
    summary = "prune at initialisation by GraSP's -w * Hg (gradient flow), train with the mask"
    Options = GraspOptions

    @classmethod
    def check_options(cls, config: Config) -> None:
        super().check_options(config)
        t = config.options.temperature
        require([("temperature", t is None or (finite(t) and t > 0), f"must be positive, got {t}")])

    def scores(self, run) -> dict:
        c, d, model, o = self.config, run.data, run.model, self.options
        labels = d.train[1]
        chosen = data.balanced_subset(labels.cpu(), min(o.score_batches * c.batch_size, labels.numel()), c.seed)
        chosen = chosen.to(labels.device)
        images = d.train_transform(d.train[0][chosen], data.epoch_generator(c.seed, 0))
        batches = [(images[i:i + c.batch_size], labels[chosen][i:i + c.batch_size])
                   for i in range(0, chosen.numel(), c.batch_size)]
        buffers = {k: v.clone() for k, v in model.state_dict().items()}  # forward passes move BN statistics
        model.train()
        origs = [getattr(m, n + "_orig") for m, n in run.params]
        loss = lambda logits, y: torch.nn.functional.cross_entropy(logits.float() / o.temperature, y)  # noqa: E731
        _, hg = hessian_gradient_product(model, origs, batches, loss)
        model.zero_grad(set_to_none=True)
        model.load_state_dict(buffers)
        run.add_train_macs(9 * run.macs[0] * chosen.numel())  # gradient pass 3x, Hessian-gradient pass 6x (dense)
        scores = {(m, n): orig.detach() * h for (m, n), orig, h in zip(run.params, origs, hg)}
        return scores  # w * Hg: run.prune removes the lowest, the highest -w * Hg


def hessian_gradient_product(model: torch.nn.Module, params: list, batches: list, loss) -> tuple[list, list]:
    """GraSP's two passes over ``batches``: the gradient ``g = sum_b d loss_b / d params`` (no graph), then
    ``Hg = sum_b d (g . d loss_b / d params) / d params`` (one Hessian-vector product per batch, by double
    backpropagation, ``g`` held fixed); returns (g, Hg), one tensor per parameter. ``loss(logits, y)``."""
    if len(batches) == 1:  # g from the graph the Hessian-vector product needs anyway: one forward pass less
        parts = torch.autograd.grad(loss(model(batches[0][0]), batches[0][1]), params, create_graph=True)
        grad = [part.detach() for part in parts]
        flow = sum((g * part).sum() for g, part in zip(grad, parts))
        return grad, list(torch.autograd.grad(flow, params))
    grad = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        for g, part in zip(grad, torch.autograd.grad(loss(model(x), y), params)):
            g.add_(part)
    hg = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        parts = torch.autograd.grad(loss(model(x), y), params, create_graph=True)
        flow = sum((g * part).sum() for g, part in zip(grad, parts))
        for h, part in zip(hg, torch.autograd.grad(flow, params)):
            h.add_(part)
    return grad, hg


# ----------------------------------------------------------------------------------------------------------
# The registry, and completing a config

METHODS: dict[str, type[Method]] = {m.name: m for m in (Progressive, Dense, OneShot, Snip, Random, Grasp,
                                                        IterativeMagnitude, Ticket, RigL, SET)}


def options_of(names: tuple[str, ...]) -> dict[str, type[Options]]:
    """Method name -> its Options class, for a script's parser (config.build_parser)."""
    return {name: METHODS[name].Options for name in names}


def describe(names: tuple[str, ...]) -> str:
    """One help line per method: its name and summary."""
    return "\n".join(f"  {name:<12}{METHODS[name].summary}" for name in names)


def create(config: Config) -> Method:
    """The method object of one run, for its completed config."""
    return METHODS[config.method](config)


def with_network(config: Config) -> Config:
    """``config`` with its network checked against the dataset's images and its width filled (64 where
    ``--width`` scales the network; None for the LeNets, whose size is fixed)."""
    spec = data.DATASETS[config.dataset]
    problem = networks.check_architecture(config.arch, spec.in_channels, spec.stored_size, config.width)
    if problem:
        raise ConfigError(problem)
    scalable = networks.ARCHITECTURES[config.arch].scalable
    return config.replace(width=DEFAULT_WIDTH) if scalable and config.width is None else config


def with_budget(config: Config) -> Config:
    """``config`` with its epochs derived from a step budget (``--steps``: the epochs its steps begin, the last
    one cut short), at the dataset's real size; and its augmentation one the dataset has."""
    problem = data.augmentation_problem(data.DATASETS[config.dataset], config.augment)
    if problem:
        raise ConfigError(problem)
    if config.steps is None:
        return config
    per_epoch = data.steps_per_epoch(config.dataset, config.train_subset, config.val_fraction, config.batch_size)
    epochs = -(-config.steps // per_epoch)
    if config.epochs not in (None, epochs):
        raise ConfigError(f"--epochs {config.epochs} and --steps {config.steps} disagree ({config.steps} steps are "
                          f"{epochs} epochs of {per_epoch}); give one")
    return config.replace(epochs=epochs)


def complete(config: Config, read_files: bool = True) -> Config:
    """The one way a parsed config becomes a run's config: the recipe defaults of its dataset, every common
    value checked, the method's options checked, the paper's target where a pruning method was given none, and
    the method's own defaults and derived values. ``read_files=False`` stops before defaults that read files
    (a ticket's donor, which a sweep may not have made yet)."""
    config = with_network(with_budget(check_common(with_recipe_defaults(config))))
    method = METHODS[config.method]
    if not isinstance(config.options, method.Options):
        raise ConfigError(f"--method {config.method}: its options are {method.Options.__name__}, "
                          f"not {type(config.options).__name__}")
    method.check_options(config)
    target = option_fields(method.Options).get("target_sparsity")
    if target is not None and target.metadata["flag"] and config.options.target_sparsity is None:
        config = config.replace(target_sparsity=PAPER_TARGETS[config.dataset])
    if not read_files and method.reads_files:
        return config
    return config.replace(**method.defaults(config))
