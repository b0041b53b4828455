"""The training harness shared by every training script: the run, the loop, evaluation, and ``main``.

One loop for every method: SGD with momentum, the recipe's LR schedule (cosine annealing per epoch, or steps at
milestones), cross-entropy with label smoothing, for the recipe's epochs or step budget.
What a method does (prune on a schedule, prune once, rewind between rounds, ...) happens in its hooks (the
contract: method.py; the registry: methods.py); this file names no method. Each run keeps a checkpoint every
epoch in its folder (runfolder.py), so that rerunning the same command resumes exactly, evaluates the test set
once, on the final model, and writes one self-describing JSON result (record.py, results.py). Nothing happens
at import time; the scripts call ``main``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import torch
from torch import nn

import pruning
from harness import config as cfg, data, devices, distributed, flops, methods, networks, record, runfolder
from harness.config import Config
from harness.distributed import World
from harness.method import Method, Sizes
from harness.runfolder import UsageError, WriteFailed


class Diverged(Exception):
    """The loss, the validation loss or the weights became NaN or inf."""


@dataclass(frozen=True)
class Script:
    """What a training script declares: its datasets and methods (the first of each is the default)."""
    name: str
    datasets: tuple[str, ...]
    methods: tuple[str, ...]
    description: str
    dataset_required: bool = False  # no default dataset: --dataset must be given


@dataclass
class Run:
    """Everything the loop and the methods' hooks share for one run."""
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
    state: dict = field(default_factory=lambda: {"round": 0, "epoch": 0, "history": [], "wall_time_s": 0.0,
                                                  "mask_checks": [], "mask_events": [], "dynamics": {},
                                                  "train_macs": 0, "empty_layers": 0})

    def refresh_macs(self) -> None:
        """Recount the forward MACs per image at the current masks (after every mask change)."""
        dense, nonzero = flops.total_macs(self.params, self.positions)
        self.macs = (dense, nonzero if self.method.prunes else dense)

    def add_train_macs(self, macs: int) -> None:
        """Count training compute beyond the steps' forward and backward passes (scoring batches, dense
        gradients), in MACs."""
        self.state["train_macs"] += macs

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
        pruning.global_magnitude_prune(self.params, sparsity, optimizer=self.optimizer, importance_scores=scores,
                                       distribution=distribution)
        self._record_event(step, sparsity, "prune")

    def set_masks(self, step: int, masks: list, reset: list | None = None, sparsity: float | None = None, *,
                  kind: str) -> None:
        """Set each prunable tensor's mask to ``masks[i]`` (bool, its shape; None: unchanged), and set to 0 the
        weight, this step's gradient and the optimizer state at ``reset[i]`` (default: the masked entries), so
        that a pruned or regrown weight starts from exactly 0; record the event (``sparsity``: its target; ``kind``:
        what it is, e.g. "update" or "load")."""
        with torch.no_grad():
            for i, ((m, n), mask) in enumerate(zip(self.params, masks)):
                if mask is None:
                    continue
                buffer, orig = getattr(m, n + "_mask"), getattr(m, n + "_orig")
                mask = mask.to(buffer.device).view_as(buffer)
                buffer.copy_(mask)  # in place: every read of the weight and any compiled graph use this buffer
                zero = ~mask if reset is None or reset[i] is None else reset[i].to(buffer.device).view_as(buffer)
                orig.masked_fill_(zero, 0.0)
                if orig.grad is not None:
                    orig.grad.masked_fill_(zero, 0.0)
                for value in self.optimizer.state.get(orig, {}).values():
                    if torch.is_tensor(value) and value.shape == orig.shape:
                        value.masked_fill_(zero, 0)
        self._record_event(step, sparsity, kind)

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

    def _record_event(self, step: int, sparsity: float | None, kind: str) -> None:
        """Note a mask change (round, step within the round, target sparsity, kind) for the result; under
        torchrun, check right away that every rank has the same masks."""
        where = f"after the mask event at step {step} of round {self.state['round']}"
        if self.world.size > 1:
            distributed.check_masks(self.params, self.world, where)
        self.state["mask_events"].append({"round": self.state["round"], "step": step, "sparsity": sparsity,
                                          "kind": kind})
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


# ----------------------------------------------------------------------------------------------------------
# Training and evaluation

def forward_backward(run: Run, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training step up to the gradients, on this process's shard of the global batch ``x, y``; returns
    the shard's (mean loss, logits, labels), detached.

    With several processes, the shard's mean loss is scaled by shard / global batch * world size, so that
    DDP's average of the gradients is the global batch's gradient (for a plain run the factor is exactly 1).
    A rank whose shard is empty (a last global batch smaller than the world) joins the step's collectives with
    an empty batch: it adds nothing to the loss, the gradients or the global BatchNorm statistics."""
    lo, hi = distributed.shard(y.shape[0], run.world)
    weight = (hi - lo) * run.world.size / y.shape[0]
    x, y = x[lo:hi], y[lo:hi]
    with devices.autocast(run.device, run.config.precision):
        logits = run.train_net(x)
        loss = run.criterion(logits.float(), y) if hi > lo else logits.float().sum() * 0.0
    run.optimizer.zero_grad(set_to_none=True)
    (loss * weight if weight != 1 else loss).backward()
    return loss.detach(), logits.detach(), y


def train_one_epoch(run: Run, epoch: int) -> tuple[float, float]:
    """One pass over the training split, calling the method's per-step hooks; returns (mean loss, accuracy %).
    Raises Diverged on NaN/inf."""
    c, d, device, world = run.config, run.data, run.device, run.world
    run.train_net.train()
    sums = torch.zeros(2, device=device, dtype=torch.float64)  # loss sum, correct
    gen = data.epoch_generator(c.seed, epoch)
    batches = data.iterate_batches(*d.train, c.batch_size, d.train_transform, gen,
                                   channels_last=devices.channels_last(c, device))
    steps, last = run.steps_per_epoch(), run.steps_in_epoch(epoch)  # last < steps: a step budget's end
    start_step, after_backward = run.method.start_step, run.method.after_backward
    lr_per_step = c.lr_schedule == "step"  # milestones in steps; cosine is stepped once an epoch (run_epochs)
    for i, (x, y) in zip(range(last), progress(batches, run, last, f"epoch {epoch + 1}")):
        if start_step is not None:
            start_step(run, epoch * steps + i)
        run.step_images = y.shape[0]
        run.state["train_macs"] += flops.step_macs(run.macs[1], y.shape[0])  # at this step's masks
        loss, logits, y = forward_backward(run, x, y)
        if after_backward is not None:
            after_backward(run, epoch * steps + i)
        run.optimizer.step()
        if lr_per_step:
            run.scheduler.step()
        sums[0] += loss * y.shape[0]
        sums[1] += (logits.argmax(1) == y).sum()
    sums = distributed.all_reduce_sum(sums, world)  # one sync per epoch, not per step
    n = min(d.train[1].shape[0], last * c.batch_size)  # images trained on (every rank's)
    mean_loss = float(sums[0]) / n
    if not math.isfinite(mean_loss):
        raise Diverged(f"training loss became {mean_loss} in epoch {epoch + 1}")
    return mean_loss, 100.0 * float(sums[1]) / n


def progress(batches, run: Run, total: int, desc: str):
    """A tqdm bar over the batches when the output is a terminal (main process only); plain otherwise."""
    if not (run.world.is_main and sys.stdout.isatty()):
        return batches
    from tqdm import tqdm
    return tqdm(batches, total=total, desc=desc, leave=False, unit="batch", dynamic_ncols=True)


@torch.no_grad()
def evaluate(run: Run, split: tuple[torch.Tensor, torch.Tensor]) -> tuple[float | None, float | None]:
    """(mean plain cross-entropy, accuracy %) on an unaugmented split; (None, None) if it is empty. With several
    processes each evaluates its contiguous shard and the sums are added: every image counts exactly once."""
    n = split[1].shape[0]
    if n == 0:
        return None, None
    run.eval_net.eval()
    if run.config.no_sync_bn:
        distributed.broadcast_buffers(run.model, run.world)  # per-process BatchNorm statistics: rank 0's
    lo, hi = distributed.shard(n, run.world)
    sums = torch.zeros(2, dtype=torch.float64, device=run.device)  # loss sum, correct
    for x, y in data.iterate_batches(split[0][lo:hi], split[1][lo:hi], run.config.eval_batch_size,
                                     run.data.eval_transform, channels_last=devices.channels_last(run.config, run.device)):
        with devices.autocast(run.device, run.config.precision):
            logits = run.eval_net(x).float()  # no DDP wrapper: no collective per batch; shards may differ
        sums[0] += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        sums[1] += int((logits.argmax(1) == y).sum())
    sums = distributed.all_reduce_sum(sums, run.world)
    return float(sums[0]) / n, 100.0 * float(sums[1]) / n


def check_finite(run: Run, row: dict) -> None:
    """Raise Diverged if the validation loss or any weight is NaN/inf (never checkpoint such a model)."""
    where = f"in epoch {row['epoch'] + 1}" + (f" of round {row['round']}" if row["round"] else "")
    if row["val_loss"] is not None and not math.isfinite(row["val_loss"]):
        raise Diverged(f"validation loss became {row['val_loss']} {where}")
    if not bool(torch.stack([t.isfinite().all() for t in run.model.state_dict().values()
                             if t.is_floating_point()]).all()):
        raise Diverged(f"weights became non-finite {where}")


def log_epoch(row: dict, run: Run, rounds: int) -> None:
    epochs = run.config.epochs
    done = len(run.state["history"])
    eta = run.state["wall_time_s"] / done * (rounds * epochs - done)
    round_text = f"round {row['round']}/{rounds - 1}  " if rounds > 1 else ""
    val = "val -" if row["val_loss"] is None else f"val {row['val_loss']:.4f}/{row['val_accuracy']:.2f}%"
    print(f"{round_text}epoch {row['epoch'] + 1:>3}/{epochs}  lr {row['lr']:.5f}  sparsity {100 * row['sparsity']:6.2f}%  "
          f"train {row['train_loss']:.4f}/{row['train_accuracy']:.2f}%  {val}  {row['seconds']:.1f}s  "
          f"ETA {eta / 60:.1f} min", flush=True)


# ----------------------------------------------------------------------------------------------------------
# The run

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


def make_run(config: Config, device: torch.device, paths: dict[str, str], world: World = World()) -> Run:
    """Data, model, optimizer, schedule and loss for ``config``, resumed from the checkpoint if there is one."""
    d = data.prepare_data(config.dataset, config.data_dir, download=not config.no_download, dummy=config.dummy,
                          val_fraction=config.val_fraction, train_subset=config.train_subset, seed=config.seed,
                          device=device, augmentation=config.augment,
                          image_size=networks.ARCHITECTURES[config.arch].image_size)
    cfg.check_budget(config, -(-d.train[1].shape[0] // config.batch_size))
    method = methods.create(config)
    model, params = build_model(config, d, device, method.prunes, world)
    method.validate(Sizes(prunable=sum(getattr(m, n).numel() for m, n in params),
                                  train_batches=-(-d.train[1].shape[0] // config.batch_size)))
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.milestones(config), gamma=config.lr_decay) \
        if config.lr_schedule == "step" else torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    run = Run(config, method, model, model, params, optimizer, scheduler, criterion, d, device, paths, world)
    if os.path.exists(paths["checkpoint"]) and not config.force:
        ckpt = runfolder.load_checkpoint(paths["checkpoint"], config)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng_cpu"])
        method.load_state_dict(ckpt.get("method", {}))
        run.state = {k: ckpt.get(k, default) for k, default in run.state.items()}
        print(f"resuming {paths['checkpoint']} at round {run.state['round']}, epoch {run.state['epoch'] + 1}")
    run.positions = flops.output_positions(model, params, tuple(d.train[0].shape[1:]))
    run.refresh_macs()
    run.eval_net = torch.compile(model) if config.compile else model
    run.train_net = run.eval_net
    if world.size > 1:  # buffers (masks, BN statistics) are equal by construction; only per-process BN syncs them
        run.train_net = nn.parallel.DistributedDataParallel(
            run.eval_net, device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=config.no_sync_bn)
    return run


def run_epochs(run: Run) -> None:
    """Every round of the method, epoch by epoch from where the state says; a checkpoint after each epoch."""
    c, method, state = run.config, run.method, run.state
    rounds = method.rounds()
    while state["round"] < rounds:
        r = state["round"]
        if state["epoch"] == 0:
            method.start_round(run, r)
        for epoch in range(state["epoch"], c.epochs):
            start = time.perf_counter()
            method.start_epoch(run, r, epoch)
            lr = run.optimizer.param_groups[0]["lr"]
            train_loss, train_acc = train_one_epoch(run, epoch)
            if c.lr_schedule == "cosine":
                run.scheduler.step()
            val_loss, val_acc = evaluate(run, run.data.val)
            row = {"round": r, "epoch": epoch, "lr": lr, "sparsity": pruning.global_sparsity(run.params),
                   "scheduled_sparsity": record.scheduled_sparsity(state, r), "train_loss": train_loss,
                   "train_accuracy": train_acc, "val_loss": val_loss, "val_accuracy": val_acc}
            check_finite(run, row)
            # masks may have changed inside the epoch: every rank must agree before anything is saved
            checksums = distributed.check_masks(run.params, run.world, f"at the end of epoch {epoch + 1} of round {r}")
            dynamics, row["mask_distance"] = record.track_mask_dynamics(run, len(state["history"]) + 1, rounds * c.epochs)
            row.update(method.epoch_fields(run))
            row["seconds"] = time.perf_counter() - start
            last = epoch + 1 == c.epochs
            after = {**state, "round": r + last, "epoch": 0 if last else epoch + 1,
                     "wall_time_s": state["wall_time_s"] + row["seconds"], "history": state["history"] + [row],
                     "mask_checks": state["mask_checks"] + [{"round": r, "epoch": epoch, "checksums": checksums}],
                     "dynamics": dynamics}
            if run.world.is_main:
                runfolder.save_checkpoint(run.paths["checkpoint"], {
                    "config": json.dumps(c.to_dict()), "model": run.model.state_dict(),
                    "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                    "rng_cpu": torch.get_rng_state(), "method": method.state_dict(), **after,
                })
            state.update(after)  # only now: run.state describes the last checkpoint written
            distributed.barrier(run.world)  # no rank runs ahead of the checkpoint it would resume from
            log_epoch(row, run, rounds)
            record.warn_empty_layers(run, f"after epoch {epoch + 1}" + (f" of round {r}" if rounds > 1 else ""))


def save_final(run: Run, result: dict) -> None:
    """Rank 0: write the permanent model (compact) and the result JSON, then drop the checkpoint. A result of
    another identity that appeared meanwhile is never overwritten."""
    c = run.config
    if not c.force:
        try:
            runfolder.finished_result(run.paths["result"], c)
        except UsageError as e:
            raise WriteFailed(f"not writing this run's result: {e}") from None
    if run.method.prunes:
        pruning.make_pruning_permanent(run.params)
    compact = pruning.compact_state_dict(run.model.state_dict())  # pruned weights as bit mask + survivors
    runfolder.write_file(run.paths["model"], lambda f: torch.save(compact, f))
    runfolder.write_json(run.paths["result"], result)
    os.remove(run.paths["checkpoint"])
    print(f"test accuracy {result['test_accuracy']:.2f}% at sparsity {100 * result['final_sparsity']:.2f}% "
          f"({result['params_nonzero']:,}/{result['params_prunable']:,} prunable weights nonzero); "
          f"wrote {run.paths['result']}")


def train(config: Config) -> int:
    """Run (or resume, or skip) the one run described by ``config``; returns the exit code. Under torchrun,
    every process calls this; only rank 0 prints and writes."""
    world = distributed.init(devices.pick_device(config.device).type)
    if world.is_main:
        return train_process(config, world)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        return train_process(config, world)


def train_process(config: Config, world: World) -> int:
    """This process's part of one run: its device and precision, the checks that need them, then the run
    folder, held (locked) while the run lasts."""
    device = devices.pick_device(config.device, world.local_rank)
    config = devices.resolve_precision(config, device)
    if config.batch_size % world.size:
        raise UsageError(f"--batch-size {config.batch_size} (the global batch) is not divisible by the "
                         f"{world.size} processes")
    if config.compile and device.type == "cpu":
        raise UsageError("--compile is refused on the CPU: inductor lays convolutions out channels_last, and "
                         "oneDNN's channels_last convolutions corrupted the heap on the CPUs tried; use it on CUDA")
    paths = runfolder.run_paths(config, methods.create(config).folder())
    with runfolder.claim_run_folder(paths, world):
        return train_holding_lock(config, device, paths, world)


def train_holding_lock(config: Config, device: torch.device, paths: dict[str, str], world: World) -> int:
    """train_process, once this process holds the run folder's lock: skip, or resume, or run from the start."""
    if runfolder.check_finished(paths, config):
        return 0
    run = make_run(config, device, paths, world)
    d = run.data
    print(f"{config.script}: {config.dataset}, {run.method.label()}, seed {config.seed}, "
          f"{device} {config.precision}, {d.train[1].shape[0]} train / {d.val[1].shape[0]} val / "
          f"{d.test[1].shape[0]} test images" + (f", {world.size} processes ({world.backend})" if world.size > 1 else ""))
    try:
        run_epochs(run)
        result = record.final_result(run, *evaluate(run, run.data.test))  # the test set: once, the final model
        if world.is_main:
            save_final(run, result)
    except (Diverged, distributed.MaskMismatch, WriteFailed) as e:
        print(f"error: {e}; stopped. {runfolder.kept_checkpoint(run.paths['checkpoint'], len(run.state['history']))}.",
              file=sys.stderr)
        return 1
    return 0


def parse(script: Script, argv: list[str] | None, read_files: bool = True) -> Config:
    """The completed config of ``script`` run with ``argv`` (``methods.complete``), or ConfigError."""
    default_dataset = None if script.dataset_required else script.datasets[0]
    parsed = cfg.parse_config(argv, script.name, script.description, script.datasets,
                              methods.options_of(script.methods), default_dataset)
    return methods.complete(parsed, read_files)


def main(script: Script, argv: list[str] | None = None) -> int:
    """Parse flags, complete the config, run; bad input becomes one 'error:' line and exit code 2."""
    say = print if distributed.launched_rank() == 0 else (lambda *args, **kwargs: None)  # torchrun: rank 0 speaks
    try:
        return train(parse(script, argv))
    except (cfg.ConfigError, UsageError, data.DataError) as e:
        say(f"{script.name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        say(f"{script.name}: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()
