"""The training methods, as a table: each method is one small object with the hooks the training loop calls.

The loop in experiment.py knows no method by name. For every run it asks the method how many training rounds
it has (one full schedule of ``epochs`` each), and calls

* ``start_round(run, r)`` before the first epoch of round ``r`` (prune at initialisation, rewind, ...), and
* ``start_epoch(run, r, epoch)`` at the start of every epoch (prune on a schedule, save a rewind point, ...),
  which returns the target sparsity of that epoch (for the history).

``run`` is the harness's :class:`experiment.Run`: the model, its prunable ``params``, the optimizer and LR
scheduler, the data, the config, and ``run.state["method"]``, a dict the method may fill with tensors that
are saved in every checkpoint (so a killed run resumes inside a round). Adding a method is one entry in
``METHODS`` plus its tests.
"""

from __future__ import annotations

import pruning
from config import METHOD_FIELDS, PAPER_RECIPES, Config


class Method:
    """The default hooks: one round, no pruning. Subclasses override what they need."""

    name = ""
    options: tuple[str, ...] = ()  # the METHOD fields of config.Config this method uses (its flags)
    prunes = True  # attach masks to the prunable weights at build time

    def defaults(self, config: Config) -> dict:
        """Values for this method's options that the user left at None."""
        return {}

    def label(self, config: Config) -> str:
        """The name of this variant in result folders and tables (the target sparsity is added to folders)."""
        return self.name

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


METHODS: dict[str, Method] = {m.name: m for m in (Progressive(), Dense())}


def resolve(config: Config) -> Config:
    """The config with the method's option defaults filled in and the options it does not use cleared."""
    method = METHODS[config.method]
    config = config.replace(**{name: None for name in METHOD_FIELDS - {"method"} - set(method.options)})
    if "target_sparsity" in method.options and config.target_sparsity is None:
        config = config.replace(target_sparsity=PAPER_RECIPES[config.dataset].target_sparsity)
    return config.replace(**method.defaults(config))
