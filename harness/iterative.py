"""Iterative magnitude pruning with rewinding (lottery tickets): several whole training cycles, each ending
pruned further, each starting again from the rewind point."""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import Config, ConfigError, option, require
from harness.method import Method, PruningOptions, Sizes

MAX_ROUNDS = 100  # more rounds than this is a typo (each round is a whole training cycle)


@dataclass(frozen=True)
class IterativeMagnitudeOptions(PruningOptions):
    rounds: int = option("pruning rounds after the dense round 0 (default: the smallest R with 0.8**R <= 1 - "
                         "target)", int, short="r")
    rewind_epoch: int = option("epoch of round 0 whose weights every later round rewinds to", int, default=0,
                               short="rewind")


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
    Options = IterativeMagnitudeOptions

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.rewind: dict | None = None  # run.snapshot() at the rewind epoch of round 0

    @classmethod
    def check_options(cls, config: Config) -> None:
        super().check_options(config)
        c, o = config, config.options
        require([("rounds", o.rounds is None or 1 <= o.rounds <= MAX_ROUNDS,
                  f"must be in [1, {MAX_ROUNDS}], got {o.rounds}"),
                 ("rewind_epoch", o.rewind_epoch is None or 0 <= o.rewind_epoch < c.epochs,
                  f"must be an epoch in [0, {c.epochs}), got {o.rewind_epoch}")])

    @classmethod
    def defaults(cls, config: Config) -> dict:
        o = config.options
        rounds = o.rounds
        if rounds is None:  # smallest R with 0.8**R <= 1 - target (computed by counting: no log rounding)
            rounds = 1
            while 0.8 ** rounds > 1.0 - o.target_sparsity:
                rounds += 1
        return {**super().defaults(config), "rounds": rounds}

    def check_sizes(self, sizes: Sizes) -> None:
        super().check_sizes(sizes)
        o = self.options
        pruned = [round(self.round_sparsity(r) * sizes.prunable) for r in range(o.rounds + 1)]
        idle = next((r for r in range(1, len(pruned)) if pruned[r] <= pruned[r - 1]), None)
        if idle is not None:  # the same rounding as global_magnitude_prune: round(sparsity * n)
            raise ConfigError(f"--rounds {o.rounds}: round {idle} would prune no weight (target "
                              f"{o.target_sparsity} of {sizes.prunable:,} weights); use fewer rounds")

    def rounds(self) -> int:
        return self.options.rounds + 1

    def round_sparsity(self, r: int) -> float:
        o = self.options
        if r == 0:
            return 0.0
        if r >= o.rounds:
            return o.target_sparsity  # exactly, no floating-point round trip
        return 1.0 - (1.0 - o.target_sparsity) ** (r / o.rounds)

    def start_round(self, run, r: int) -> None:
        if r > 0:
            run.prune(self.round_sparsity(r), 0)
            run.restore(self.rewind)

    def start_epoch(self, run, r: int, epoch: int) -> None:
        if r == 0 and epoch == self.options.rewind_epoch:
            self.rewind = run.snapshot()

    def state_dict(self) -> dict:
        return {} if self.rewind is None else {"rewind": self.rewind}

    def load_state_dict(self, state: dict) -> None:
        self.rewind = state.get("rewind")
