"""Training harness shared by every training script.

One loop for every method: SGD with momentum, cosine annealing per epoch, cross-entropy with label smoothing.
What a method does (prune on a schedule, prune once, rewind between rounds, ...) happens in its hooks, from
the table in methods.py; this file names no method. Each run writes one self-describing JSON result (schema:
results.py; written atomically), keeps a checkpoint every epoch so that rerunning the same command resumes
exactly, and evaluates the test set once, on the final model. Nothing happens at import time; the scripts
call ``main``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import torch
from torch import nn

import config as cfg
import data
import distributed
import flops
import methods
import pruning
import results
from config import Config
from distributed import World
from model import ResNet18


class UsageError(Exception):
    """Bad input; the message is one line for the user, and the run exits with code 2."""


class Diverged(Exception):
    """The loss, the validation loss or the weights became NaN or inf."""


class WriteFailed(Exception):
    """A checkpoint, model or result could not be written (disk full, I/O error, ...); the run stops."""


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
    method: methods.Method  # this run's method object (its hooks and state)
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
                                                  "mask_checks": [], "prune_events": [], "dynamics": {},
                                                  "train_macs": 0})

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

    def prune(self, sparsity: float, step: int, importance_scores: dict | None = None,
              distribution: str = "global") -> None:
        """Prune by magnitude (or ``importance_scores``) among the active weights to ``sparsity``, ranked
        globally or per layer (``distribution``), with the optimizer state, and record the event."""
        pruning.global_magnitude_prune(self.params, sparsity, optimizer=self.optimizer,
                                       importance_scores=importance_scores, distribution=distribution)
        self.record_event(step, sparsity)

    def record_event(self, step: int, sparsity: float) -> None:
        """Note a mask change (round, step within the round, target sparsity) for the result; under torchrun,
        check right away that every rank has the same masks."""
        where = f"after the pruning event at step {step} of round {self.state['round']}"
        if self.world.size > 1:
            distributed.check_masks(self.params, self.world, where)
        self.state["prune_events"].append({"round": self.state["round"], "step": step, "sparsity": sparsity})
        self.refresh_macs()

    def snapshot(self) -> dict:
        """Copies of the weights, buffers and masks, the optimizer and the LR schedule: a rewind point."""
        return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "scheduler": copy.deepcopy(self.scheduler.state_dict())}

    def restore(self, snapshot: dict, keep_masks: bool = True) -> None:
        """Go back to a :meth:`snapshot`, in place; with ``keep_masks`` the current masks stay (and the weights
        and optimizer state they prune are zeroed), else the snapshot's come back."""
        masks = {k: v for k, v in self.model.state_dict().items() if k.endswith("_mask")} if keep_masks else {}
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
# Devices and files

def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """The device to train on; under torchrun, CUDA means this process's own GPU (its local rank)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but CUDA is not available on this machine")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps was asked for but MPS is not available on this machine")
    return torch.device(name, local_rank) if name == "cuda" else torch.device(name)


def channels_last(config: Config, device: torch.device) -> bool:
    """Whether the model and its inputs use the channels_last memory layout: always on CUDA; on the CPU only
    with --channels-last, since oneDNN's channels_last convolution backward corrupted the heap (SIGSEGV,
    "free(): invalid next size") at widths 4/8 with odd batch sizes on the CPUs tried (README)."""
    return device.type == "cuda" or (device.type == "cpu" and config.channels_last)


def resolve_precision(config: Config, device: torch.device) -> Config:
    """Replace --precision auto by what it means on ``device`` (bf16 autocast on CUDA, fp32 elsewhere)."""
    if config.precision != "auto":
        return config
    return config.replace(precision="bf16" if device.type == "cuda" else "fp32")


def run_paths(config: Config) -> dict[str, str]:
    """results/<dataset>/<label>[-<target>]/seed<seed>.{json,ckpt.pt,model.pt,lock}"""
    folder = os.path.join(config.out, config.dataset, methods.create(config).folder())
    stem = os.path.join(folder, f"seed{config.seed}")
    return {"folder": folder, "result": stem + ".json", "checkpoint": stem + ".ckpt.pt", "model": stem + ".model.pt",
            "lock": stem + ".lock"}


def atomic_write(path: str, write) -> None:
    """Call ``write(file_object)`` on a temp file in the same folder, then rename it over ``path``."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared like any file
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_file(path: str, write) -> None:
    """atomic_write, with a failure (disk full, I/O error, ...) turned into one WriteFailed line."""
    try:
        atomic_write(path, write)
    except OSError as e:
        raise WriteFailed(f"could not write {path} ({e.strerror or e})") from None


def write_json(path: str, obj: dict) -> None:
    write_file(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


def ensure_writable(folder: str) -> list[str]:
    """Make ``folder`` (and its missing parents) and check that files can be written there; returns the
    folders made, outermost first."""
    made, parent = [], os.path.abspath(folder)
    while not os.path.isdir(parent) and parent != os.path.dirname(parent):
        made.insert(0, parent)
        parent = os.path.dirname(parent)
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        remove_empty_folders(made)
        raise UsageError(f"cannot write results to {folder}: {e.strerror or e}") from None
    return made


def remove_empty_folders(folders: list[str]) -> None:
    """Remove the folders that are empty, innermost first (os.rmdir never removes a folder with files)."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def acquire_lock(path: str) -> int:
    """An exclusive ``flock`` on ``path`` (created if needed), which names its holder; the open descriptor.

    The OS drops the lock when the process dies, even by kill -9, so a lock is never stale. Raises UsageError
    naming the holder if another process has it."""
    import fcntl  # POSIX only; imported here so that the module still imports elsewhere

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "a process that has not said who it is"
            os.close(fd)
            raise UsageError(f"{path}: another process is running this run ({holder}); wait for it or stop it") \
                from None
        with contextlib.suppress(OSError):  # its last holder may have removed the file meanwhile: then retry
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
    return fd


def release_lock(path: str, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)  # while still holding it, so that no other process can hold a lock on the old file
    os.close(fd)


def remove_stale_temp_files(paths: dict[str, str]) -> None:
    """Delete partial files that a killed earlier process of this run left (atomic_write's .tmp-*<name>)."""
    names = tuple(os.path.basename(paths[k]) for k in ("result", "checkpoint", "model"))
    for entry in os.scandir(paths["folder"]):
        if entry.name.startswith(".tmp-") and entry.name.endswith(names):
            with contextlib.suppress(OSError):
                os.remove(entry.path)


@contextlib.contextmanager
def claim_run_folder(paths: dict[str, str], world: World):
    """Hold this run's folder while the run lasts: rank 0 makes it, takes its lock (a second process for the
    same run is refused with one line naming the holder; under torchrun every rank stops) and removes stale
    temp files. On leaving, the lock is released and a folder made here is removed again if it is empty."""
    made, lock, error = [], None, None
    if world.is_main:
        try:
            made = ensure_writable(paths["folder"])
            lock = acquire_lock(paths["lock"])
            remove_stale_temp_files(paths)
        except UsageError as e:
            remove_empty_folders(made)
            error = str(e)
    error = distributed.broadcast_object(error, world)
    if error:
        raise UsageError(error)
    try:
        yield
    finally:
        if lock is not None:
            release_lock(paths["lock"], lock)
        remove_empty_folders(made)


def load_checkpoint(path: str, config: Config) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a checkpoint, unpicklable...
        raise UsageError(f"checkpoint {path} is unreadable ({type(e).__name__}); delete it or pass --force "
                         f"to start over") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt:
        raise UsageError(f"checkpoint {path} is not one of this harness's checkpoints; delete it or pass --force")
    saved = results.upgrade_config(json.loads(ckpt["config"]), config.precision)
    diff = cfg.config_difference(saved, config.to_dict())
    if diff:
        raise UsageError(f"checkpoint {path} is from a different config ({diff}); use another --out, or "
                         f"--force to start over")
    return ckpt


def finished_result(path: str, config: Config) -> dict | None:
    """The finished result at ``path`` if there is one of this experiment, None if there is none; a result of
    another experiment (or an unreadable one) is refused with UsageError, never replaced."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            finished = results.upgrade(json.load(f))
    except (OSError, ValueError):
        raise UsageError(f"{path} exists but is not readable JSON; move it away or pass --force") from None
    diff = cfg.config_difference(finished.get("config", {}), config.to_dict())
    if diff:
        raise UsageError(f"{path} holds a finished run with a different config ({diff}); "
                         f"use another --out, or --force to replace it")
    return finished


def check_finished(paths: dict[str, str], config: Config) -> bool:
    """True if this run's result exists (same experiment); a result of another experiment is refused, never replaced."""
    finished = None if config.force else finished_result(paths["result"], config)
    if finished is None:
        return False
    acc = finished.get("test_accuracy")
    acc_text = f"{acc:.2f}%" if isinstance(acc, (int, float)) else "unknown"
    print(f"{paths['result']} is finished (test accuracy {acc_text}); skipping. Pass --force to run it again.")
    return True


# ----------------------------------------------------------------------------------------------------------
# Training and evaluation

def autocast(device: torch.device, precision: str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


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
    with autocast(run.device, run.config.precision):
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
                                   channels_last=channels_last(c, device))
    steps = run.steps_per_epoch()
    start_step, after_backward = run.method.start_step, run.method.after_backward
    for i, (x, y) in enumerate(progress(batches, run, steps, f"epoch {epoch + 1}")):
        if start_step is not None:
            start_step(run, epoch * steps + i)
        run.step_images = y.shape[0]
        run.state["train_macs"] += 3 * run.macs[1] * y.shape[0]  # forward + backward (2x) at this step's masks
        loss, logits, y = forward_backward(run, x, y)
        if after_backward is not None:
            after_backward(run, epoch * steps + i)
        run.optimizer.step()
        sums[0] += loss * y.shape[0]
        sums[1] += (logits.argmax(1) == y).sum()
    sums = distributed.all_reduce_sum(sums, world)  # one sync per epoch, not per step
    n = d.train[1].shape[0]
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
                                     run.data.eval_transform, channels_last=channels_last(run.config, run.device)):
        with autocast(run.device, run.config.precision):
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


def save_checkpoint(path: str, state: dict) -> None:
    write_file(path, lambda f: torch.save(state, f))


# ----------------------------------------------------------------------------------------------------------
# The run

def build_model(config: Config, d: data.Data, device: torch.device, prunes: bool, world: World = World()):
    """Seeded ResNet-18; masks attached (before any compile, so hooks are traced) when the method prunes;
    BatchNorm over the global batch when several processes train it (unless --no-sync-bn)."""
    torch.manual_seed(config.seed)
    model = ResNet18(in_channels=d.in_channels, num_classes=d.num_classes, width=config.width).to(device)
    if world.size > 1 and not config.no_sync_bn:
        model = distributed.global_batchnorm(model, device.type)
    if channels_last(config, device):
        model = model.to(memory_format=torch.channels_last)
    params = pruning.prunable_parameters(model)
    if prunes:
        pruning.attach_masks(params)
    return model, params


def make_run(config: Config, device: torch.device, paths: dict[str, str], world: World = World()) -> Run:
    """Data, model, optimizer, schedule and loss for ``config``, resumed from the checkpoint if there is one."""
    d = data.prepare_data(config.dataset, config.data_dir, download=not config.no_download, dummy=config.dummy,
                          val_fraction=config.val_fraction, train_subset=config.train_subset, seed=config.seed,
                          device=device, hflip_digits=not config.no_hflip)
    method = methods.create(config)
    model, params = build_model(config, d, device, method.prunes, world)
    method.validate(methods.Sizes(prunable=sum(getattr(m, n).numel() for m, n in params),
                                  train_batches=-(-d.train[1].shape[0] // config.batch_size)))
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    run = Run(config, method, model, model, params, optimizer, scheduler, criterion, d, device, paths, world)
    if os.path.exists(paths["checkpoint"]) and not config.force:
        ckpt = load_checkpoint(paths["checkpoint"], config)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng_cpu"])
        method.load_state_dict(ckpt.get("method", {}))
        run.state = {k: ckpt.get(k, default) for k, default in run.state.items()}  # older ones: no rounds
        run.state["history"] = [{"round": 0, **row} for row in run.state["history"]]
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
            run.scheduler.step()
            val_loss, val_acc = evaluate(run, run.data.val)
            row = {"round": r, "epoch": epoch, "lr": lr, "sparsity": pruning.global_sparsity(run.params),
                   "target_sparsity": scheduled_sparsity(state, r), "train_loss": train_loss,
                   "train_accuracy": train_acc, "val_loss": val_loss, "val_accuracy": val_acc}
            check_finite(run, row)
            # masks may have changed inside the epoch: every rank must agree before anything is saved
            checksums = distributed.check_masks(run.params, run.world, f"at the end of epoch {epoch + 1} of round {r}")
            dynamics, row["mask_distance"] = track_mask_dynamics(run, len(state["history"]) + 1, rounds * c.epochs)
            row.update(method.epoch_fields(run))
            row["seconds"] = time.perf_counter() - start
            last = epoch + 1 == c.epochs
            after = {**state, "round": r + last, "epoch": 0 if last else epoch + 1,
                     "wall_time_s": state["wall_time_s"] + row["seconds"], "history": state["history"] + [row],
                     "mask_checks": state["mask_checks"] + [{"round": r, "epoch": epoch, "checksums": checksums}],
                     "dynamics": dynamics}
            if run.world.is_main:
                save_checkpoint(run.paths["checkpoint"], {
                    "config": json.dumps(c.to_dict()), "model": run.model.state_dict(),
                    "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                    "rng_cpu": torch.get_rng_state(), "method": method.state_dict(), **after,
                })
            state.update(after)  # only now: run.state describes the last checkpoint written
            distributed.barrier(run.world)  # no rank runs ahead of the checkpoint it would resume from
            log_epoch(row, run, rounds)


def scheduled_sparsity(state: dict, r: int) -> float:
    """The sparsity of round ``r``'s last pruning event so far (0 before any): what the masks should measure."""
    events = [e for e in state["prune_events"] if e["round"] == r]
    return events[-1]["sparsity"] if events else 0.0


EARLY_MASK_FRACTIONS = (0.1, 0.25, 0.5)  # of all epochs trained: where the would-be final mask is kept


def track_mask_dynamics(run: Run, epochs_done: int, epochs_total: int) -> tuple[dict, float | None]:
    """At the end of an epoch, draw the mask the run's final target would give now (global magnitude among the
    active weights: :func:`pruning.magnitude_mask`); return the new dynamics state and the normalised Hamming
    distance to the mask drawn at the end of the previous epoch (None for the first epoch, or a dense run).

    The state keeps that mask (packed bits) and, at the first epoch end at or after 10%, 25% and 50% of all
    epochs trained, a copy, compared with the final mask at the end (:func:`mask_overlaps`). Early-Bird
    tickets (You et al. 2020) use this distance; it costs one ranking of the weights per epoch."""
    if not run.method.prunes:
        return {}, None
    old = run.state["dynamics"]
    now = pruning.magnitude_mask(run.params, run.method.target())
    distance = None if "previous" not in old else pruning.mask_distance(
        now, pruning.unpack_mask(old["previous"], now.numel()).to(now.device))
    packed = pruning.pack_mask(now)
    early = dict(old.get("early", {}))
    for f in EARLY_MASK_FRACTIONS:
        if f"{f:g}" not in early and epochs_done >= f * epochs_total:
            early[f"{f:g}"] = {"epochs": epochs_done, "mask": packed}
    return {"previous": packed, "early": early}, distance


def mask_overlaps(run: Run) -> dict[str, dict] | None:
    """For each kept early mask: after how many epochs it was drawn, and the fraction of the final mask's
    weights it contains (1.0: the final mask was already chosen then)."""
    early = run.state["dynamics"].get("early")
    if not early:
        return None
    final = torch.cat([getattr(m, n + "_mask").reshape(-1) != 0 for m, n in run.params]).cpu()
    return {f: {"epochs": e["epochs"], "overlap": pruning.mask_overlap(pruning.unpack_mask(e["mask"], final.numel()),
                                                                       final)} for f, e in early.items()}


def final_result(run: Run) -> dict:
    """Evaluate the test set once, on the final model, and describe the run: the result JSON (results.py)."""
    c, method, history = run.config, run.method, run.state["history"]
    test_loss, test_acc = evaluate(run, run.data.test)
    last_round = [r for r in history if r["round"] == history[-1]["round"] and r["val_accuracy"] is not None]
    best = max(last_round, key=lambda r: r["val_accuracy"]) if last_round else None
    per_layer = [{**row, **macs} for row, macs in zip(pruning.sparsity_report(run.model, run.params),
                                                      flops.layer_macs(run.params, run.positions))]
    n_prunable = sum(row["total"] for row in per_layer)
    n_nonzero = sum(row["nonzero"] for row in per_layer)
    return results.check({
        "schema": results.SCHEMA, "script": c.script, "dataset": c.dataset, "method": c.method,
        "label": method.label(), "seed": c.seed, "target_sparsity": method.target(),
        "final_sparsity": (n_prunable - n_nonzero) / n_prunable,  # measured from the masks
        "test_accuracy": test_acc, "test_loss": test_loss,
        "best_val_accuracy": best["val_accuracy"] if best else None,  # of the final round; never used to select
        "best_val_epoch": best["epoch"] if best else None,
        "params_total": sum(p.numel() for p in run.model.parameters()), "params_prunable": n_prunable,
        "params_nonzero": n_nonzero, "per_layer": per_layer,
        "epochs": c.epochs, "rounds": method.rounds(), "epochs_trained": len(history),  # the cost
        "history": history, "config": c.to_dict(), "wall_time_s": run.state["wall_time_s"],
        "prune_events": run.state["prune_events"],  # every mask update: round, step within the round, sparsity
        "inference_macs": inference_cost(per_layer),  # per image, conv and linear layers
        "training_cost": training_cost(run),
        "early_mask_overlap": mask_overlaps(run),  # would-be final masks at 10/25/50% of training vs the final
        "device": describe_device(run.device), "precision": c.precision,
        "world_size": run.world.size, "backend": run.world.backend,
        "batchnorm": "per process" if run.world.size > 1 and c.no_sync_bn else "global batch",
        "mask_checks": run.state["mask_checks"],  # per epoch: every rank's mask checksum (all equal)
        "losses": "train: with label smoothing; val/test: plain cross-entropy",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": _torchvision_version()},
        "git_commit": git_commit(),
    })


def inference_cost(per_layer: list[dict]) -> dict:
    """Forward MACs per image of the final model: dense, at its masks, and the theoretical speedup."""
    dense, nonzero = sum(r["macs_dense"] for r in per_layer), sum(r["macs_nonzero"] for r in per_layer)
    return {"macs_dense": dense, "macs_nonzero": nonzero, "speedup": dense / nonzero if nonzero else None}


TRAINING_COST_RULE = ("sum over training steps of (forward + backward = 3 x forward) MACs at that step's masks, "
                      "per image, conv and linear layers; RigL update steps and SNIP scoring batches dense")


def training_cost(run: Run) -> dict:
    """The run's training compute in MACs and as a multiple of one dense training cycle of the same data."""
    dense_cycle = 3 * run.macs[0] * run.data.train[1].shape[0] * run.config.epochs
    return {"macs": run.state["train_macs"], "dense_cycle_macs": dense_cycle,
            "cycles": run.state["train_macs"] / dense_cycle, "rule": TRAINING_COST_RULE}


def save_final(run: Run, result: dict) -> None:
    """Rank 0: write the permanent model (compact) and the result JSON, then drop the checkpoint. A result of
    another experiment that appeared meanwhile is never overwritten."""
    c = run.config
    if not c.force:
        try:
            finished_result(run.paths["result"], c)
        except UsageError as e:
            raise WriteFailed(f"not writing this run's result: {e}") from None
    if run.method.prunes:
        pruning.make_pruning_permanent(run.params)
    compact = pruning.compact_state_dict(run.model.state_dict())  # pruned weights as bit mask + survivors
    write_file(run.paths["model"], lambda f: torch.save(compact, f))
    write_json(run.paths["result"], result)
    os.remove(run.paths["checkpoint"])
    print(f"test accuracy {result['test_accuracy']:.2f}% at sparsity {100 * result['final_sparsity']:.2f}% "
          f"({result['params_nonzero']:,}/{result['params_prunable']:,} prunable weights nonzero); "
          f"wrote {run.paths['result']}")


def train(config: Config) -> int:
    """Run (or resume, or skip) one experiment described by ``config``; returns the exit code. Under torchrun,
    every process calls this; only rank 0 prints and writes."""
    world = distributed.init(pick_device(config.device).type)
    if world.is_main:
        return train_process(config, world)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        return train_process(config, world)


def train_process(config: Config, world: World) -> int:
    """This process's part of one run: its device and precision, the checks that need them, then the run
    folder, held (locked) while the run lasts."""
    device = pick_device(config.device, world.local_rank)
    config = resolve_precision(config, device)
    if config.batch_size % world.size:
        raise UsageError(f"--batch-size {config.batch_size} (the global batch) is not divisible by the "
                         f"{world.size} processes")
    if config.compile and device.type == "cpu":
        raise UsageError("--compile is refused on the CPU: inductor lays convolutions out channels_last, and "
                         "oneDNN's channels_last convolutions corrupted the heap on the CPUs tried; use it on CUDA")
    paths = run_paths(config)
    with claim_run_folder(paths, world):
        return train_claimed(config, device, paths, world)


def train_claimed(config: Config, device: torch.device, paths: dict[str, str], world: World) -> int:
    """train_process, for a process holding the run folder's lock."""
    if check_finished(paths, config):
        return 0
    run = make_run(config, device, paths, world)
    d = run.data
    print(f"{config.script}: {config.dataset}, {run.method.label()}, seed {config.seed}, "
          f"{device} {config.precision}, {d.train[1].shape[0]} train / {d.val[1].shape[0]} val / "
          f"{d.test[1].shape[0]} test images" + (f", {world.size} processes ({world.backend})" if world.size > 1 else ""))
    try:
        run_epochs(run)
        result = final_result(run)
        if world.is_main:
            save_final(run, result)
    except (Diverged, distributed.MaskMismatch, WriteFailed) as e:
        print(f"error: {e}; stopped. {kept_checkpoint(run)}.", file=sys.stderr)
        return 1
    return 0


def kept_checkpoint(run: Run) -> str:
    """What a stopped run leaves to resume from, for its error line."""
    path = run.paths["checkpoint"]
    if not os.path.exists(path):
        return "no checkpoint was written"
    return f"the last good checkpoint ({path}, after {len(run.state['history'])} epochs) is intact"


def git_commit() -> str | None:
    """HEAD's commit; with uncommitted changes to tracked files, ``+dirty-`` and 16 hex digits of a SHA-256 of
    ``git diff HEAD``, so that two runs of different uncommitted sources never claim the same code."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=here, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    if not diff.stdout:
        return head.stdout.strip()
    return f"{head.stdout.strip()}+dirty-{hashlib.sha256(diff.stdout).hexdigest()[:16]}"


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"{device.type}: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _torchvision_version() -> str | None:
    try:
        import torchvision
        return torchvision.__version__
    except ImportError:
        return None


def main(script: Script, argv: list[str] | None = None) -> int:
    """Parse flags, fill the recipe, run; bad input becomes one 'error:' line and exit code 2."""
    say = print if distributed.launched_rank() == 0 else (lambda *args, **kwargs: None)  # torchrun: rank 0 speaks
    try:
        options = {name: methods.METHODS[name].options for name in script.methods}
        default_dataset = None if script.dataset_required else script.datasets[0]
        config = cfg.parse_config(argv, script.name, script.description, script.datasets, options, default_dataset)
        cfg.validate(config)  # before any default is derived from a value (imp's rounds from the target)
        methods.check_options(config)
        config = methods.resolve(config)
        return train(cfg.validate(config))
    except (cfg.ConfigError, UsageError, data.DataError) as e:
        say(f"{script.name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        say(f"{script.name}: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()
