"""The training methods, as a table: each method is one small object with the hooks the training loop calls.

The loop in experiment.py knows no method by name. For every run it asks the method how many training rounds
it has (one full schedule of ``epochs`` each), and calls

* ``start_round(run, r)`` before the first epoch of round ``r`` (prune at initialisation, rewind, ...), and
* ``start_epoch(run, r, epoch)`` at the start of every epoch (prune on a schedule, save a rewind point, ...),
  which returns the target sparsity of that epoch (for the history).

``run`` is the harness's :class:`experiment.Run`: the model, its prunable ``params``, the optimizer and LR
scheduler, the data, the config, and ``run.state["method"]``, a dict the method may fill with tensors that
are saved in every checkpoint (so a killed run resumes inside a round). Before any of them, the harness calls
``validate(config, sizes)`` once the data and the network exist (a target that prunes every weight, more SNIP
batches than an epoch has, an IMP round that prunes nothing: one ``ConfigError`` line). A flag of an option
the method does not use, or derives itself (``derived``), is refused by :func:`check_options`. Adding a
method is one entry in ``METHODS`` plus its tests.
"""

from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass

import torch

import data
import distributed
import pruning
import results
from config import MAX_SEED, OPTION_FIELDS, PAPER_RECIPES, Config, ConfigError


@dataclass(frozen=True)
class Sizes:
    """What a method's checks may need beyond the config: counts known once the data and the model exist."""
    prunable: int  # prunable weights of the network
    train_batches: int  # training batches per epoch


class Method:
    """The default hooks: one round, no pruning. Subclasses override what they need."""

    name = ""
    options: tuple[str, ...] = ()  # the config.OPTION_FIELDS this method uses (its flags, and derived values)
    derived: tuple[str, ...] = ()  # the options it derives itself: never given on the command line
    prunes = True  # attach masks to the prunable weights at build time

    def defaults(self, config: Config) -> dict:
        """Values for this method's options that the user left at None."""
        return {}

    def validate(self, config: Config, sizes: Sizes) -> None:
        """Raise ConfigError (one line naming the flag) if ``config`` cannot run on a network and data of these
        sizes. The default: a pruning method's target must leave at least one weight (as the count rounds)."""
        if self.prunes and round(self.target(config) * sizes.prunable) >= sizes.prunable:
            raise ConfigError(f"--target-sparsity {self.target(config)} prunes all {sizes.prunable:,} prunable "
                              f"weights of this network: no weight would be left")

    def label(self, config: Config) -> str:
        """The name of this variant in tables and result folders."""
        return self.name

    def folder(self, config: Config) -> str:
        """The results folder of this variant: its label, and the target sparsity when it prunes."""
        return self.label(config) + (f"-{self.target(config):g}" if self.prunes else "")

    def target(self, config: Config) -> float:
        """The sparsity this run ends at (0 for dense)."""
        return config.target_sparsity

    def rounds(self, config: Config) -> int:
        return 1

    def start_round(self, run, r: int) -> None:
        pass

    def start_epoch(self, run, r: int, epoch: int) -> float:
        return 0.0


class Dense(Method):
    """The dense baseline: the same recipe with pruning off."""

    name = "dense"
    prunes = False

    def target(self, config: Config) -> float:
        return 0.0


class Progressive(Method):
    """The paper's method: at the start of every epoch, prune by global magnitude among the active weights up
    to the schedule's sparsity (linear from 0 at the first epoch to the target at the last). ``--schedule
    cubic`` is gradual magnitude pruning (GMP; Zhu & Gupta 2017, "To prune, or not to prune")."""

    name = "progressive"
    options = ("target_sparsity", "schedule")

    def defaults(self, config: Config) -> dict:
        return {"schedule": config.schedule or "linear"}

    def label(self, config: Config) -> str:
        return self.name if config.schedule == "linear" else f"{self.name}-{config.schedule}"

    def start_epoch(self, run, r: int, epoch: int) -> float:
        c = run.config
        sparsity = pruning.sparsity_schedule(c.schedule, epoch, c.epochs, c.target_sparsity)
        pruning.global_magnitude_prune(run.params, sparsity, optimizer=run.optimizer)
        return sparsity


class OneShot(Method):
    """Train, prune once, keep training (Han et al. 2015, "Learning both Weights and Connections for Efficient
    Neural Networks"), budget-matched: dense until the start of epoch ``--prune-epoch`` (default
    ``epochs // 2``), then pruned to the target in one step by global magnitude; the same LR schedule and
    total epochs as the progressive run."""

    name = "oneshot"
    options = ("target_sparsity", "prune_epoch")

    def defaults(self, config: Config) -> dict:
        return {"prune_epoch": config.epochs // 2 if config.prune_epoch is None else config.prune_epoch}

    def label(self, config: Config) -> str:
        return f"{self.name}-e{config.prune_epoch}"

    def start_epoch(self, run, r: int, epoch: int) -> float:
        if epoch < run.config.prune_epoch:
            return 0.0
        pruning.global_magnitude_prune(run.params, run.config.target_sparsity, optimizer=run.optimizer)
        return run.config.target_sparsity


class AtInitialisation(Method):
    """Prune to the target once, before any training, by this method's scores; then train all epochs with
    that fixed mask."""

    def scores(self, run) -> dict:
        raise NotImplementedError

    def start_round(self, run, r: int) -> None:
        pruning.global_magnitude_prune(run.params, run.config.target_sparsity, optimizer=run.optimizer,
                                       importance_scores=self.scores(run))

    def start_epoch(self, run, r: int, epoch: int) -> float:
        return run.config.target_sparsity


class Snip(AtInitialisation):
    """SNIP (Lee et al. 2019, "SNIP: Single-shot Network Pruning based on Connection Sensitivity"): at
    initialisation, score every prunable weight by ``|dL/dw * w|``, summed over ``--score-batches`` training
    batches (default 1, as the paper; the first batches of epoch 0, augmented as in training), and keep the
    highest scores. Seeded and deterministic; the network's state (BatchNorm statistics) is left untouched."""

    name = "snip"
    options = ("target_sparsity", "score_batches")

    def defaults(self, config: Config) -> dict:
        return {"score_batches": 1 if config.score_batches is None else config.score_batches}

    def validate(self, config: Config, sizes: Sizes) -> None:
        super().validate(config, sizes)
        if config.score_batches > sizes.train_batches:
            raise ConfigError(f"--score-batches {config.score_batches} is more than the {sizes.train_batches} "
                              f"training batches of an epoch")

    def scores(self, run) -> dict:
        c, d, model = run.config, run.data, run.model
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
        for score in scores.values():  # equal on every rank already (each scores the same batches); made certain
            distributed.all_reduce_sum(score, run.world).div_(run.world.size)
        return scores


class Random(AtInitialisation):
    """Random pruning at initialisation with seeded uniform scores, then training with the fixed mask: the
    sanity baseline every pruning method should beat (e.g. Liu et al. 2022, "The Unreasonable Effectiveness of
    Random Pruning")."""

    name = "random"
    options = ("target_sparsity",)

    def scores(self, run) -> dict:
        gen = torch.Generator().manual_seed(run.config.seed)
        return {(m, n): torch.rand(getattr(m, n + "_orig").shape, generator=gen).to(run.device) for m, n in run.params}


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
    options = ("target_sparsity", "rounds", "rewind_epoch")

    def defaults(self, config: Config) -> dict:
        rounds = config.rounds
        if rounds is None:  # smallest R with 0.8**R <= 1 - target (computed by counting: no log rounding)
            rounds = 1
            while 0.8 ** rounds > 1.0 - config.target_sparsity:
                rounds += 1
        return {"rounds": rounds, "rewind_epoch": config.rewind_epoch or 0}

    def label(self, config: Config) -> str:
        return f"{self.name}-r{config.rounds}" + (f"-rewind{config.rewind_epoch}" if config.rewind_epoch else "")

    def validate(self, config: Config, sizes: Sizes) -> None:
        super().validate(config, sizes)
        pruned = [round(self.round_sparsity(config, r) * sizes.prunable) for r in range(config.rounds + 1)]
        idle = next((r for r in range(1, len(pruned)) if pruned[r] <= pruned[r - 1]), None)
        if idle is not None:  # the same rounding as global_magnitude_prune: round(sparsity * n)
            raise ConfigError(f"--rounds {config.rounds}: round {idle} would prune no weight (target "
                              f"{config.target_sparsity} of {sizes.prunable:,} weights); use fewer rounds")

    def rounds(self, config: Config) -> int:
        return config.rounds + 1

    @staticmethod
    def round_sparsity(config: Config, r: int) -> float:
        if r == 0:
            return 0.0
        if r >= config.rounds:
            return config.target_sparsity  # exactly, no floating-point round trip
        return 1.0 - (1.0 - config.target_sparsity) ** (r / config.rounds)

    def start_round(self, run, r: int) -> None:
        if r == 0:
            return
        pruning.global_magnitude_prune(run.params, self.round_sparsity(run.config, r))
        rewind = run.state["method"]["rewind"]
        masks = {k: v for k, v in run.model.state_dict().items() if k.endswith("_mask")}
        run.model.load_state_dict({**rewind["model"], **masks})  # in place; the masks stay this round's
        run.optimizer.load_state_dict(rewind["optimizer"])
        run.scheduler.load_state_dict(rewind["scheduler"])
        pruning.zero_pruned_state(run.params, run.optimizer)

    def start_epoch(self, run, r: int, epoch: int) -> float:
        if r == 0 and epoch == run.config.rewind_epoch:
            run.state["method"]["rewind"] = {
                "model": {k: v.detach().clone() for k, v in run.model.state_dict().items() if not k.endswith("_mask")},
                "optimizer": copy.deepcopy(run.optimizer.state_dict()),
                "scheduler": copy.deepcopy(run.scheduler.state_dict()),
            }
        return self.round_sparsity(run.config, r) if r else 0.0


class Ticket(Method):
    """Is a pruned run's final mask a lottery ticket? (Frankle & Carbin 2019.) ``--mask-from`` names a finished
    pruned run (its result JSON or model file); its final mask is trained again for the full schedule, fixed,
    from ``--reinit donor`` (the donor run's own initialisation, recreated from its seed: the LTH test) or
    ``--reinit random`` (a fresh initialisation derived from ``--seed``, never the donor's: the control). A mask
    from another dataset or architecture is refused."""

    name = "ticket"
    options = ("mask_from", "reinit", "donor", "donor_id", "target_sparsity")
    derived = ("donor", "donor_id", "target_sparsity")  # read from the donor: part of the recipe, never a flag

    def defaults(self, config: Config) -> dict:
        donor = read_donor(config)
        return {"reinit": config.reinit or "donor", "donor": f"{donor['label']}-{donor['target_sparsity']:g}",
                "donor_id": f"seed{donor['seed']}-mask-{mask_hash(read_donor_weights(config, donor))}",
                "target_sparsity": donor["target_sparsity"]}

    def label(self, config: Config) -> str:
        return f"{self.name}-{config.reinit}-{config.donor}"

    def folder(self, config: Config) -> str:
        return self.label(config)  # the donor's target is already in the label

    def start_round(self, run, r: int) -> None:
        donor = read_donor(run.config)
        weights = read_donor_weights(run.config, donor)
        if mask_hash(weights) != run.config.donor_id.rsplit("-", 1)[-1]:
            raise ConfigError(f"--mask-from {run.config.mask_from}: its model file changed since this run started")
        names = {id(m): name for name, m in run.model.named_modules()}
        seed = donor["seed"] if run.config.reinit == "donor" else control_seed(run.config.seed, donor["seed"])
        initial, own = run.initial_weights(seed), run.model.state_dict()
        plain = lambda key: key[:-len("_orig")] if key.endswith("_orig") else key  # noqa: E731
        run.model.load_state_dict({k: own[k] if k.endswith("_mask") else initial[plain(k)] for k in own})
        with torch.no_grad():
            for m, n in run.params:
                key = f"{names[id(m)]}.{n}"
                mask = getattr(m, n + "_mask")
                if key not in weights or weights[key].shape != mask.shape:
                    raise ConfigError(f"--mask-from {run.config.mask_from}: {key} is missing or of another shape "
                                      f"in {donor['_model']}; masks only transfer between the same architecture")
                mask.copy_(weights[key] != 0)
        n_nonzero = sum(int(getattr(m, n + "_mask").sum()) for m, n in run.params)
        if n_nonzero != donor["params_nonzero"]:
            raise ConfigError(f"--mask-from {run.config.mask_from}: its model has {n_nonzero} nonzero prunable "
                              f"weights, its result says {donor['params_nonzero']}")
        pruning.zero_pruned_state(run.params, run.optimizer)

    def start_epoch(self, run, r: int, epoch: int) -> float:
        return run.config.target_sparsity


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


METHODS: dict[str, Method] = {m.name: m for m in (Progressive(), Dense(), OneShot(), Snip(), Random(),
                                                  IterativeMagnitude(), Ticket())}


def check_options(config: Config) -> None:
    """Raise ConfigError if an option was given that the chosen method does not use or derives itself (a
    silently dropped flag would run another experiment than the one asked for)."""
    method = METHODS[config.method]
    for name in sorted(OPTION_FIELDS):
        if getattr(config, name) is None or (name in method.options and name not in method.derived):
            continue
        owners = [m.name for m in METHODS.values() if name in m.options and name not in m.derived]
        raise ConfigError(f"--{name.replace('_', '-')} is not an option of {config.method}"
                          + (f" (it is one of {', '.join(owners)})" if owners else ""))


def resolve(config: Config) -> Config:
    """The config with the method's option defaults filled in and the options it does not use cleared."""
    method = METHODS[config.method]
    config = config.replace(**{name: None for name in OPTION_FIELDS - set(method.options)})
    if "target_sparsity" in method.options and config.target_sparsity is None:
        config = config.replace(target_sparsity=PAPER_RECIPES[config.dataset].target_sparsity)
    return config.replace(**method.defaults(config))
