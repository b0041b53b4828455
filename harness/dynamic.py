"""Dynamic sparse training: RigL and SET, sparse from the first step, the mask changed during training."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import pruning
from harness.config import Config, ConfigError, option, require
from harness.method import Method, PruningOptions, Sizes, current_mask, distribution_option, random_scores



@dataclass(frozen=True)
class DynamicOptions(PruningOptions):
    distribution: str = distribution_option(default="erk")
    update_every: int = option("training steps between mask updates", int, default=100, short="every")
    update_end: float = option("no mask update from this fraction of the training steps on", float, default=0.75,
                               short="end")
    drop_fraction: float = option("fraction of each layer's active weights dropped and regrown at the first update, "
                                  "cosine-annealed to 0 at --update-end", float, default=0.3, short="drop")


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

    Options = DynamicOptions
    needs_dense_gradient = False  # RigL: keep d loss / d (mask * weight) on update steps

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.initial: torch.Tensor | None = None  # the initial mask, packed bits: for the mask turnover
        self.regrown = 0  # weights made active by updates since the last history row
        self._masks: list = []  # RigL: the masks, kept while an update step trains with every mask at 1

    @classmethod
    def check_options(cls, config: Config) -> None:
        super().check_options(config)
        o = config.options
        require([
            ("update_every", o.update_every is None or o.update_every >= 1, f"must be at least 1 step, got {o.update_every}"),
            ("update_end", o.update_end is None or 0.0 < o.update_end <= 1.0, f"must be in (0, 1], got {o.update_end}"),
            ("drop_fraction", o.drop_fraction is None or 0.0 < o.drop_fraction < 1.0,
             f"must be in (0, 1), got {o.drop_fraction}"),
        ])

    def end_step(self, steps_per_epoch: int) -> int:
        return round(self.options.update_end * self.cycle_steps(steps_per_epoch))

    def check_sizes(self, sizes: Sizes) -> None:
        super().check_sizes(sizes)
        end = self.end_step(sizes.train_batches)
        if self.options.update_every >= end:
            raise ConfigError(f"--update-every {self.options.update_every}: no mask update falls before --update-end "
                              f"(step {end} of {self.cycle_steps(sizes.train_batches)})")
        if self.config.compile and self.needs_dense_gradient:
            raise ConfigError(f"--compile: {self.name}'s dense-gradient update steps are not tested with a compiled "
                              f"model; train without --compile")

    def is_update(self, run, step: int) -> bool:
        return step > 0 and step % self.options.update_every == 0 and step < self.end_step(run.steps_per_epoch())

    def start_round(self, run, r: int) -> None:
        run.prune(self.options.target_sparsity, 0, scores=random_scores(run.params, self.config.seed, run.device),
                  distribution=self.options.distribution)
        self.initial = pruning.pack_mask(current_mask(run.params))

    def start_step(self, run, step: int) -> None:
        if self.needs_dense_gradient and self.is_update(run, step):
            # d loss / d (mask * weight) this step: with every mask open, weight_orig's gradient is the dense one
            self._masks = run.lift_masks()

    def after_backward(self, run, step: int) -> None:
        if not self.is_update(run, step):
            return
        if self._masks:
            run.lower_masks(self._masks)
        self._masks = []
        if self.needs_dense_gradient:  # this step's backward computed the dense gradient: count it as dense
            run.add_train_macs(3 * (run.macs[0] - run.macs[1]) * run.step_images)
        fraction = self.options.drop_fraction / 2 * (1 + math.cos(math.pi * step / self.end_step(run.steps_per_epoch())))
        masks, reset = self.drop_and_grow(run, fraction, self.grow_scores(run, step))
        run.set_masks(step, masks, reset, self.options.target_sparsity, event="update")

    def grow_scores(self, run, step: int) -> list[torch.Tensor]:
        """Per prunable tensor, flattened: the higher, the sooner an inactive weight is grown."""
        raise NotImplementedError

    def drop_and_grow(self, run, fraction: float, grow_scores: list[torch.Tensor]) -> tuple[list, list]:
        """Per layer, the new mask (None: unchanged) and the entries to reset to 0 (dropped or grown: their
        weight, momentum and this step's gradient), for ``run.set_masks``."""
        masks, reset = [], []
        with torch.no_grad():
            for (m, n), score in zip(run.params, grow_scores):
                mask, orig = getattr(m, n + "_mask"), getattr(m, n + "_orig")
                active = mask.reshape(-1) != 0
                k = int(fraction * int(active.sum()))
                if k == 0:
                    masks.append(None)
                    reset.append(None)
                    continue
                kept = active & ~pruning.select_smallest_active(orig.detach().abs().reshape(-1), active, k)
                grown = pruning.select_smallest_active(-score, ~kept, k)
                self.regrown += int((grown & ~active).sum())
                masks.append((kept | grown).view_as(mask))
                reset.append(~kept.view_as(mask))
        return masks, reset

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
    steps only, as weight_orig's gradient with every mask at 1; averaged over processes by DDP under torchrun)."""

    name = "rigl"
    summary = "dynamic sparse training: every --update-every steps drop smallest |w|, grow largest |dense grad|"
    needs_dense_gradient = True

    def grow_scores(self, run, step: int) -> list[torch.Tensor]:
        grads = [getattr(m, n + "_orig").grad for m, n in run.params]  # dense on update steps (start_step)
        if any(g is None for g in grads):
            raise RuntimeError("rigl: a prunable weight has no gradient on an update step")
        # under torchrun DDP has already averaged them over processes: the same ranking as their sum
        return [g.detach().abs().reshape(-1).float() for g in grads]


class SET(DynamicSparse):
    """SET (Mocanu et al. 2018, "Scalable training of artificial neural networks with adaptive sparse
    connectivity inspired by network science"): RigL's loop with the inactive weights grown uniformly at random
    (seeded by --seed and the step: the same on every process)."""

    name = "set"
    summary = "dynamic sparse training: every --update-every steps drop smallest |w|, grow at random"

    def grow_scores(self, run, step: int) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        return [torch.rand(getattr(m, n).numel(), generator=gen).to(run.device) for m, n in run.params]
