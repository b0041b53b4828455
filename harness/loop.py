"""The training loop shared by every training script: the epochs, evaluation, the final result, and ``main``.

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
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

import pruning
from harness import config as cfg, data, devices, distributed, flops, methods, record, runfolder
from harness.config import Config
from harness.distributed import World
from harness.method import Method
from harness.run import Run, make_run
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
        run.state.train_macs += flops.step_macs(run.macs[1], y.shape[0])  # at this step's masks
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
    done = len(run.state.history)
    eta = run.state.wall_time_s / done * (rounds * epochs - done)
    round_text = f"round {row['round']}/{rounds - 1}  " if rounds > 1 else ""
    val = "val -" if row["val_loss"] is None else f"val {row['val_loss']:.4f}/{row['val_accuracy']:.2f}%"
    print(f"{round_text}epoch {row['epoch'] + 1:>3}/{epochs}  lr {row['lr']:.5f}  sparsity {100 * row['sparsity']:6.2f}%  "
          f"train {row['train_loss']:.4f}/{row['train_accuracy']:.2f}%  {val}  {row['seconds']:.1f}s  "
          f"ETA {eta / 60:.1f} min", flush=True)


# ----------------------------------------------------------------------------------------------------------
# The run

def run_epochs(run: Run) -> None:
    """Every round of the method, epoch by epoch from where the state says; a checkpoint after each epoch."""
    c, method = run.config, run.method
    rounds = method.rounds()
    while run.state.round < rounds:
        r = run.state.round
        if run.state.epoch == 0:
            method.start_round(run, r)
        for epoch in range(run.state.epoch, c.epochs):
            start = time.perf_counter()
            method.start_epoch(run, r, epoch)
            lr = run.optimizer.param_groups[0]["lr"]
            train_loss, train_acc = train_one_epoch(run, epoch)
            if c.lr_schedule == "cosine":
                run.scheduler.step()
            val_loss, val_acc = evaluate(run, run.data.val)
            state = run.state
            row = {"round": r, "epoch": epoch, "lr": lr, "sparsity": pruning.global_sparsity(run.params),
                   "scheduled_sparsity": record.scheduled_sparsity(state, r), "train_loss": train_loss,
                   "train_accuracy": train_acc, "val_loss": val_loss, "val_accuracy": val_acc}
            check_finite(run, row)
            # masks may have changed inside the epoch: every rank must agree before anything is saved
            checksums = distributed.check_masks(run.params, run.world, f"at the end of epoch {epoch + 1} of round {r}")
            dynamics, row["mask_distance"] = record.track_mask_dynamics(run, len(state.history) + 1, rounds * c.epochs)
            row.update(method.epoch_fields(run))
            row["seconds"] = time.perf_counter() - start
            last = epoch + 1 == c.epochs
            after = dataclasses.replace(
                state, round=r + last, epoch=0 if last else epoch + 1, wall_time_s=state.wall_time_s + row["seconds"],
                history=state.history + [row], dynamics=dynamics,
                mask_checks=state.mask_checks + [{"round": r, "epoch": epoch, "checksums": checksums}])
            if run.world.is_main:
                runfolder.save_checkpoint(run.paths["checkpoint"], {
                    "config": json.dumps(c.to_dict()), "model": run.model.state_dict(),
                    "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                    "rng_cpu": torch.get_rng_state(), "method": method.state_dict(), **after.as_checkpoint(),
                })
            run.state = after  # only now: run.state describes the last checkpoint written
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
    method = methods.create(config)  # the run's one method object
    paths = runfolder.run_paths(config, method.folder())
    with runfolder.claim_run_folder(paths, world):
        return train_holding_lock(config, method, device, paths, world)


def train_holding_lock(config: Config, method: Method, device: torch.device, paths: dict[str, str],
                       world: World) -> int:
    """train_process, once this process holds the run folder's lock: skip, or resume, or run from the start."""
    if runfolder.check_finished(paths, config):
        return 0
    run = make_run(config, method, device, paths, world)
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
        print(f"error: {e}; stopped. {runfolder.kept_checkpoint(run.paths['checkpoint'], len(run.state.history))}.",
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
