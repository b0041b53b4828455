"""The ticket test: train a finished pruned run's final mask again, from its initialisation or a fresh one.

Also the donor's files: its result (checked to be a pruned run of the same dataset and architecture), its
compact model file (integrity-checked) and a hash of its mask, which names what the ticket trains.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch

import pruning
from harness import results
from harness.config import MAX_SEED, RUN, Config, ConfigError, option
from harness.method import Method, PruningOptions


@dataclass(frozen=True)
class TicketOptions(PruningOptions):
    mask_from: str = option("a finished pruned run (its result JSON or model file)", role=RUN)
    reinit: str = option("start from the donor run's initialisation (the LTH test), or a fresh one from --seed "
                         "(the control)", choices=("donor", "random"), default="donor")
    # read from the donor: part of the identity, never a flag
    donor: str = option("the donor run's label and target, read from --mask-from", flag=False)
    donor_id: str = option("the donor's seed and a hash of its final mask (what the run trains)", flag=False)
    target_sparsity: float = option("the donor's final target", float, flag=False)


class Ticket(Method):
    """Is a pruned run's final mask a lottery ticket? (Frankle & Carbin 2019.) ``--mask-from`` names a finished
    pruned run (its result JSON or model file); its final mask is trained again for the full schedule, fixed,
    from ``--reinit donor`` (the donor run's own initialisation, recreated from its seed: the LTH test) or
    ``--reinit random`` (a fresh initialisation derived from ``--seed``, never the donor's: the control). A mask
    from another dataset or architecture is refused."""

    name = "ticket"
    summary = "retrain a finished pruned run's final mask (--mask-from) from --reinit donor | random"
    Options = TicketOptions
    reads_files = True
    needs_donor = True

    @classmethod
    def defaults(cls, config: Config) -> dict:
        donor = read_donor(config)
        return {**super().defaults(config),
                "donor": f"{donor['label']}-{donor['target_sparsity']:g}",
                "donor_id": f"seed{donor['seed']}-mask-{mask_hash(read_donor_weights(config, donor))}",
                "target_sparsity": donor["target_sparsity"]}

    @staticmethod
    def donor_flags(result: str) -> list[str]:
        return ["--mask-from", result]

    @staticmethod
    def folder_for(options: TicketOptions, donor_folder: str) -> str:
        """The folder of a ticket of the donor whose results folder is ``donor_folder`` (its label-target)."""
        return f"ticket-{options.reinit or 'donor'}-{donor_folder}"

    def label(self) -> str:  # by hand: it names the donor's folder, which sweep.py must know before the donor exists
        return self.folder_for(self.options, self.options.donor)

    def folder(self) -> str:
        return self.label()  # the donor's target is already in the label

    def start_round(self, run, r: int) -> None:
        c, o = self.config, self.options
        donor = read_donor(c)
        weights = read_donor_weights(c, donor)
        if mask_hash(weights) != o.donor_id.rsplit("-", 1)[-1]:
            raise ConfigError(f"--mask-from {o.mask_from}: its model file changed since this run started")
        run.load_initial_weights(donor["seed"] if o.reinit == "donor" else control_seed(c.seed, donor["seed"]))
        names = {id(m): name for name, m in run.model.named_modules()}
        masks = []
        for m, n in run.params:
            key, shape = f"{names[id(m)]}.{n}", getattr(m, n + "_mask").shape
            if key not in weights or weights[key].shape != shape:
                raise ConfigError(f"--mask-from {o.mask_from}: {key} is missing or of another shape in "
                                  f"{donor['_model']}; masks only transfer between the same architecture")
            masks.append(weights[key] != 0)
        n_nonzero = sum(int(mask.sum()) for mask in masks)
        if n_nonzero != donor["params_nonzero"]:
            raise ConfigError(f"--mask-from {o.mask_from}: its model has {n_nonzero} nonzero prunable "
                              f"weights, its result says {donor['params_nonzero']}")
        run.set_masks(0, masks, sparsity=o.target_sparsity, event="load")


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
        raise ConfigError(f"--mask-from {config.options.mask_from}: its model file {donor['_model']} is "
                          f"unreadable ({reason})") from None


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


def network(dataset: str, arch: str, width: int | None) -> str:
    """'fashion-mnist resnet18 width 8' (the LeNets have no width)."""
    return f"{dataset} {arch}" + ("" if width is None else f" width {width}")


def read_donor(config: Config) -> dict:
    """The donor's result (``_model``: its model file), checked to be a pruned run of this dataset, network
    and width."""
    path = config.options.mask_from
    if not path:
        raise ConfigError("--method ticket needs --mask-from: a finished pruned run's result JSON or model file")
    json_path = path[:-len(".model.pt")] + ".json" if path.endswith(".model.pt") else path
    try:
        donor = results.read_result(json_path)
    except results.ResultError as e:
        raise ConfigError(f"--mask-from: {e}") from None
    donor["_model"] = json_path[:-len(".json")] + ".model.pt"
    theirs = (donor["dataset"], donor["config"]["arch"], donor["config"].get("width"))
    ours = (config.dataset, config.arch, config.width)
    if theirs != ours or not os.path.exists(donor["_model"]):
        reason = "its model file is missing" if theirs == ours else \
            f"it is a run of {network(*theirs)}, this is {network(*ours)}"
        raise ConfigError(f"--mask-from {path}: {reason}; a mask only transfers to the same dataset and architecture")
    if donor["params_nonzero"] == donor["params_prunable"]:
        raise ConfigError(f"--mask-from {path} is a dense run: there is no mask to train")
    return donor
