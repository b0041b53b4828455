"""One run: the object the loop and the methods' hooks share (:class:`Run`), its resumable state
(:class:`RunState`), and how a config becomes a run (:func:`make_run`), resumed from its checkpoint if there is one.

Masks change only through a Run's own methods (see the comment above :meth:`Run.prune`). Nothing happens at
import time.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field

import torch
from torch import nn

import pruning
from harness import config as cfg, data, devices, distributed, flops, networks, runfolder
from harness.config import Config
from harness.distributed import World
from harness.method import Method, Sizes


@dataclass
class RunState:
    """What a run has done so far: saved in every checkpoint (its fields, at the checkpoint's top level) and
    read back when the run resumes."""
    round: int = 0  # the round being trained (IMP has several)
    epoch: int = 0  # the next epoch of that round
    history: list = field(default_factory=list)  # one row per finished epoch
    wall_time_s: float = 0.0
    mask_checks: list = field(default_factory=list)  # per epoch: every rank's mask checksum
    mask_events: list = field(default_factory=list)  # every mask change: round, step, sparsity, kind
    dynamics: dict = field(default_factory=dict)  # the mask-dynamics tracker's state (record.py)
    train_macs: int = 0  # training compute beyond the steps' passes, and the steps' (record.py)
    empty_layers: int = 0  # layers found with no active weight so far (warned about once)

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "RunState":
        """The state a checkpoint holds (a field it lacks: its default, as a fresh run's)."""
        fresh = cls()
        return cls(**{f.name: ckpt.get(f.name, getattr(fresh, f.name)) for f in dataclasses.fields(cls)})

    def as_checkpoint(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(kw_only=True)
class Run:
    """Everything the loop and the methods' hooks share for one run (built with keywords: :func:`make_run`)."""
    config: Config
    method: Method  # this run's method object (its hooks and state)
    model: nn.Module  # the network, with pruning's reparametrisation when the method prunes
    train_net: nn.Module  # what training calls: the model, compiled if asked, DDP-wrapped with several processes
    params: list  # the prunable (module, "weight") pairs
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    criterion: nn.Module
    data: data.Data
    device: torch.device
    paths: dict[str, str]
    world: World = World()
    eval_net: nn.Module | None = None  # what evaluation calls: the (compiled) model without the DDP wrapper
    positions: list[int] = field(default_factory=list)  # per prunable layer: output positions per image
    macs: tuple[int, int] = (0, 0)  # forward MACs per image: dense, and at the current masks
    step_images: int = 0  # images in the current training step (global batch)
    state: RunState = field(default_factory=RunState)

    def refresh_macs(self) -> None:
        """Recount the forward MACs per image at the current masks (after every mask change)."""
        dense, nonzero = flops.total_macs(self.params, self.positions)
        self.macs = (dense, nonzero if self.method.prunes else dense)

    def add_train_macs(self, macs: int) -> None:
        """Count training compute beyond the steps' forward and backward passes (scoring batches, dense
        gradients), in MACs."""
        self.state.train_macs += macs

    def steps_per_epoch(self) -> int:
        return -(-self.data.train[1].shape[0] // self.config.batch_size)

    def steps_in_epoch(self, epoch: int) -> int:
        """Training steps of ``epoch``: all of them, but in the last epoch of a step budget (``--steps``)."""
        per_epoch = self.steps_per_epoch()
        return min(per_epoch, self.method.cycle_steps(per_epoch) - epoch * per_epoch)

    # Masks change only through these methods (tests/test_layout.py holds every other module to it): prune()
    # ranks and set_masks() takes masks a method computed itself, each a recorded mask event; lift_masks() and
    # lower_masks() open every mask for one step's dense gradient and put the same masks back (no event: the
    # masks after the step are the ones before it). Resuming loads the masks a run's checkpoint holds (make_run).
    def prune(self, sparsity: float, step: int, scores: dict | None = None, distribution: str = "global") -> None:
        """Prune by magnitude (or ``scores``: the lowest go) among the active weights to ``sparsity``, ranked
        globally or per layer (``distribution``), with the optimizer state, and record the event."""
        if distribution == "global":
            pruning.global_magnitude_prune(self.params, sparsity, optimizer=self.optimizer, importance_scores=scores)
        else:
            pruning.layerwise_magnitude_prune(self.params, sparsity, distribution, self.optimizer, scores)
        self._record_event(step, sparsity, "prune")

    def set_masks(self, step: int, masks: list, reset: list | None = None, sparsity: float | None = None, *,
                  event: str) -> None:
        """Set each prunable tensor's mask to ``masks[i]`` (bool, its shape; None: unchanged), and set to 0 the
        weight, this step's gradient and the optimizer state at ``reset[i]`` (default: the masked entries), so
        that a pruned or regrown weight starts from exactly 0; record the event (``sparsity``: its target; ``event``:
        what it is, e.g. "update" or "load")."""
        changed, zeros = [], []
        with torch.no_grad():
            for i, ((m, n), mask) in enumerate(zip(self.params, masks)):
                if mask is None:
                    continue
                buffer = getattr(m, n + "_mask")
                mask = mask.to(buffer.device).view_as(buffer)
                buffer.copy_(mask)  # in place: every read of the weight and any compiled graph use this buffer
                changed.append((m, n))
                zeros.append(~mask if reset is None or reset[i] is None else reset[i].to(buffer.device).view_as(buffer))
        pruning.zero_pruned_state(changed, self.optimizer, entries=zeros)  # weights, gradients, optimizer state
        self._record_event(step, sparsity, event)

    def lift_masks(self) -> list[torch.Tensor]:
        """Set every mask to all ones, in place, and return the masks as they were, for :meth:`lower_masks` after
        the backward pass. A pruned weight is exactly 0, so the forward pass is the same bit for bit and only
        ``weight_orig``'s gradient changes: it becomes the dense one (RigL's growth score)."""
        saved = [getattr(m, n + "_mask").clone() for m, n in self.params]
        for m, n in self.params:
            getattr(m, n + "_mask").fill_(1)  # in place: every read of the weight and any compiled graph use it
        return saved

    def lower_masks(self, saved: list[torch.Tensor]) -> None:
        """Put back, in place, the masks :meth:`lift_masks` returned."""
        for (m, n), mask in zip(self.params, saved):
            getattr(m, n + "_mask").copy_(mask)

    def _record_event(self, step: int, sparsity: float | None, event: str) -> None:
        """Note a mask change (round, step within the round, target sparsity, kind) for the result; under
        torchrun, check right away that every rank has the same masks."""
        where = f"after the mask event at step {step} of round {self.state.round}"
        if self.world.size > 1:
            distributed.check_masks(self.params, self.world, where)
        self.state.mask_events.append({"round": self.state.round, "step": step, "sparsity": sparsity,
                                          "kind": event})  # the result's key (schema 3) stays "kind"
        self.refresh_macs()

    def snapshot(self) -> dict:
        """Copies of the weights, buffers and masks, the optimizer and the LR schedule: a rewind point."""
        return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "scheduler": copy.deepcopy(self.scheduler.state_dict())}

    def restore(self, snapshot: dict) -> None:
        """Go back to a :meth:`snapshot`'s weights, optimizer and LR schedule, in place, keeping the current masks
        (the weights and optimizer state they prune are zeroed): IMP's rewind."""
        masks = {k: v for k, v in self.model.state_dict().items() if k.endswith("_mask")}
        self.model.load_state_dict({**snapshot["model"], **masks})
        self.optimizer.load_state_dict(snapshot["optimizer"])
        self.scheduler.load_state_dict(snapshot["scheduler"])
        if self.method.prunes:
            pruning.zero_pruned_state(self.params, self.optimizer)

    def initial_weights(self, seed: int) -> dict[str, torch.Tensor]:
        """The state_dict a fresh model of this run's shape has when built with ``seed`` (the global RNG is
        left as it was)."""
        with torch.random.fork_rng(devices=[]):
            model, _ = build_model(self.config.replace(seed=seed), self.data, torch.device("cpu"), prunes=False)
        return model.state_dict()

    def load_initial_weights(self, seed: int) -> None:
        """Set every weight and buffer but the masks to a fresh model's, built with ``seed``, in place."""
        initial, own = self.initial_weights(seed), self.model.state_dict()
        plain = lambda key: key[:-len("_orig")] if key.endswith("_orig") else key  # noqa: E731
        self.model.load_state_dict({k: own[k] if k.endswith("_mask") else initial[plain(k)] for k in own})


def build_model(config: Config, d: data.Data, device: torch.device, prunes: bool, world: World = World()):
    """The seeded network of ``--arch``; masks attached (before any compile, so hooks are traced) when the method prunes;
    BatchNorm over the global batch when several processes train it (unless --no-sync-bn)."""
    torch.manual_seed(config.seed)
    model = networks.build_network(config.arch, d.in_channels, d.num_classes, config.width).to(device)
    if world.size > 1 and not config.no_sync_bn:
        model = distributed.global_batchnorm(model, device.type)
    if devices.channels_last(config, device):
        model = model.to(memory_format=torch.channels_last)
    params = pruning.prunable_parameters(model)
    if prunes:
        pruning.attach_masks(params)
    return model, params


def make_run(config: Config, method: Method, device: torch.device, paths: dict[str, str], world: World = World()) -> Run:
    """Data, model, optimizer, schedule and loss for ``config`` and its ``method`` object, resumed from the
    checkpoint if there is one."""
    d = data.prepare_data(config.dataset, config.data_dir, download=not config.no_download, dummy=config.dummy,
                          val_fraction=config.val_fraction, train_subset=config.train_subset, seed=config.seed,
                          device=device, augmentation=config.augment,
                          input_size=networks.ARCHITECTURES[config.arch].input_size)
    cfg.check_budget(config, -(-d.train[1].shape[0] // config.batch_size))
    model, params = build_model(config, d, device, method.prunes, world)
    method.check_sizes(Sizes(prunable=sum(getattr(m, n).numel() for m, n in params),
                                  train_batches=-(-d.train[1].shape[0] // config.batch_size)))
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.milestones(config), gamma=config.lr_decay) \
        if config.lr_schedule == "step" else torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    run = Run(config=config, method=method, model=model, train_net=model, params=params, optimizer=optimizer,
              scheduler=scheduler, criterion=criterion, data=d, device=device, paths=paths, world=world)
    if os.path.exists(paths["checkpoint"]) and not config.force:
        ckpt = runfolder.load_checkpoint(paths["checkpoint"], config)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng_cpu"])
        method.load_state_dict(ckpt.get("method", {}))
        run.state = RunState.from_checkpoint(ckpt)
        print(f"resuming {paths['checkpoint']} at round {run.state.round}, epoch {run.state.epoch + 1}")
    run.positions = flops.output_positions(model, params, tuple(d.train[0].shape[1:]))
    run.refresh_macs()
    run.eval_net = torch.compile(model) if config.compile else model
    run.train_net = run.eval_net
    if world.size > 1:  # buffers (masks, BN statistics) are equal by construction; only per-process BN syncs them
        run.train_net = nn.parallel.DistributedDataParallel(
            run.eval_net, device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=config.no_sync_bn)
    return run
