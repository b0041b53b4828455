"""Training harness shared by train_cifar10.py, train_mnist.py and train_dense.py.

One loop for every experiment: SGD with momentum, cosine annealing per epoch, cross-entropy with label
smoothing and, for the progressive method, pruning at the start of each epoch through pruning.py. Each run
writes one self-describing JSON result (written atomically), keeps a checkpoint every epoch so that
rerunning the same command resumes exactly, and evaluates the test set once, on the final model.
Nothing happens at import time; the scripts call ``main``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import torch
from torch import nn

import data
import pruning

SCHEMA = 1
# Flags that say where things are or how to run, not what is computed: a checkpoint or finished result made
# with other values of these is still the same experiment.
NON_RECIPE_FLAGS = {"out", "force", "data_dir", "no_download", "device", "compile"}


@dataclass(frozen=True)
class Recipe:
    """The paper's training recipe for one dataset; every field is a command-line default."""
    epochs: int
    batch_size: int
    target_sparsity: float
    lr: float = 0.1  # SGD, cosine-annealed to 0 over the epochs
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1


PAPER_RECIPES = {
    "cifar10": Recipe(epochs=200, batch_size=128, target_sparsity=0.796),
    "mnist": Recipe(epochs=30, batch_size=32, target_sparsity=0.744),
    "fashion-mnist": Recipe(epochs=30, batch_size=32, target_sparsity=0.744),
}


class UsageError(Exception):
    """Bad input; the message is one line for the user, and the run exits with code 2."""


class Diverged(Exception):
    """The training loss became NaN or inf."""


# ----------------------------------------------------------------------------------------------------------
# Command line

class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2, instead of usage + error
        raise UsageError(message)


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def _sparsity(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def build_parser(script: str, datasets: tuple[str, ...], method: str, description: str) -> argparse.ArgumentParser:
    """The flags every script shares; recipe flags default to None and are filled from the dataset's recipe."""
    p = _Parser(prog=script, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if len(datasets) > 1:
        p.add_argument("--dataset", choices=datasets, required=method == "dense",
                       default=None if method == "dense" else datasets[0], help="dataset to train on")
    p.add_argument("--seed", type=int, default=42, help="seed for init, data split, shuffling, augmentation")
    p.add_argument("--epochs", type=_positive(int), help="epochs (recipe default)")
    p.add_argument("--batch-size", type=_positive(int), help="training batch size (recipe default)")
    p.add_argument("--lr", type=_positive(float), help="initial SGD learning rate, cosine-annealed (0.1)")
    p.add_argument("--momentum", type=float, help="SGD momentum (0.9)")
    p.add_argument("--weight-decay", type=float, help="SGD weight decay (5e-4)")
    p.add_argument("--label-smoothing", type=float, help="cross-entropy label smoothing (0.1)")
    if method == "progressive":
        p.add_argument("--target-sparsity", type=_sparsity, help="sparsity at the last epoch (recipe default)")
        p.add_argument("--schedule", choices=("linear", "cubic"), default="linear",
                       help="sparsity schedule: the paper's linear ramp, or cubic (Zhu & Gupta 2017)")
    p.add_argument("--width", type=_positive(int), default=64, help="ResNet-18 base width (64; 8/16 for CPU)")
    p.add_argument("--data-dir", default="./data", help="dataset root, or a folder holding the 4 IDX files")
    p.add_argument("--no-download", action="store_true", help="never try to download the dataset")
    p.add_argument("--dummy", action="store_true", help="random data with the right shapes (smoke tests)")
    p.add_argument("--train-subset", type=_positive(int), help="use N class-balanced training images")
    p.add_argument("--val-fraction", type=float, default=0.11, help="held-out validation fraction (0.11)")
    p.add_argument("--no-hflip", action="store_true", help="(Fashion-)MNIST: do not flip images (paper flips)")
    p.add_argument("--eval-batch-size", type=_positive(int), default=1024, help="batch size for val/test")
    p.add_argument("--out", default="results", help="results folder (default results/)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 elsewhere")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA recommended)")
    p.add_argument("--force", action="store_true", help="rerun from scratch even if a result or checkpoint exists")
    return p


def resolve_config(args: argparse.Namespace, script: str, method: str, default_dataset: str) -> dict:
    """Fill recipe defaults from the dataset's paper recipe; the returned dict is the run's full config."""
    config = dict(vars(args))
    config.setdefault("dataset", default_dataset)
    recipe = PAPER_RECIPES[config["dataset"]]
    for name in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "label_smoothing"):
        if config.get(name) is None:
            config[name] = getattr(recipe, name)
    if method == "progressive" and config["target_sparsity"] is None:
        config["target_sparsity"] = recipe.target_sparsity
    if not 0.0 <= config["val_fraction"] < 1.0:
        raise UsageError(f"--val-fraction must be in [0, 1), got {config['val_fraction']}")
    config.update(script=script, method=method)
    return config


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but CUDA is not available on this machine")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps was asked for but MPS is not available on this machine")
    return torch.device(name)


# ----------------------------------------------------------------------------------------------------------
# Files: where a run lives, atomic writes, checkpoints

def run_paths(config: dict) -> dict[str, str]:
    """results/<dataset>/<method>[-<target>]/seed<seed>.{json,ckpt.pt,model.pt}"""
    group = "dense" if config["method"] == "dense" else f"progressive-{config['target_sparsity']:g}"
    folder = os.path.join(config["out"], config["dataset"], group)
    stem = os.path.join(folder, f"seed{config['seed']}")
    return {"folder": folder, "result": stem + ".json", "checkpoint": stem + ".ckpt.pt", "model": stem + ".model.pt"}


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


def write_json(path: str, obj: dict) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


def recipe_part(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in NON_RECIPE_FLAGS}


def config_difference(old: dict, new: dict) -> str:
    """'epochs 2 vs 200, width 8 vs 64' for the recipe flags that differ ('' if none)."""
    a, b = recipe_part(old), recipe_part(new)
    return ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))


def ensure_writable(folder: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UsageError(f"cannot write results to {folder}: {e.strerror or e}") from None


def load_checkpoint(path: str, config: dict) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a checkpoint, unpicklable...
        raise UsageError(f"checkpoint {path} is unreadable ({type(e).__name__}); delete it or pass --force "
                         f"to start over") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt:
        raise UsageError(f"checkpoint {path} is not one of this harness's checkpoints; delete it or pass --force")
    diff = config_difference(json.loads(ckpt["config"]), config)
    if diff:
        raise UsageError(f"checkpoint {path} is from a different config ({diff}); use another --out, or "
                         f"--force to start over")
    return ckpt


# ----------------------------------------------------------------------------------------------------------
# Training and evaluation

def autocast(device: torch.device, precision: str):
    enabled = precision == "bf16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def train_one_epoch(model, optimizer, criterion, d: data.Data, config: dict, epoch: int, device, precision) -> tuple[float, float]:
    """One pass over the training split; returns (mean loss, accuracy %). Raises Diverged on NaN/inf."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    gen = data.epoch_generator(config["seed"], epoch)
    for x, y in data.iterate_batches(*d.train, config["batch_size"], d.train_transform, gen,
                                     channels_last=device.type == "cuda"):
        with autocast(device, precision):
            logits = model(x)
            loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * y.shape[0]
        correct += (logits.argmax(1) == y).sum()
    n = d.train[1].shape[0]
    mean_loss = float(loss_sum) / n  # one sync per epoch, not per step
    if not math.isfinite(mean_loss):
        raise Diverged(f"training loss became {mean_loss} in epoch {epoch + 1}")
    return mean_loss, 100.0 * float(correct) / n


@torch.no_grad()
def evaluate(model, split: tuple[torch.Tensor, torch.Tensor], d: data.Data, batch_size: int, device, precision) -> tuple[float | None, float | None]:
    """(mean plain cross-entropy, accuracy %) on an unaugmented split; (None, None) if it is empty."""
    n = split[1].shape[0]
    if n == 0:
        return None, None
    model.eval()
    loss_sum, correct = 0.0, 0
    for x, y in data.iterate_batches(*split, batch_size, d.eval_transform, channels_last=device.type == "cuda"):
        with autocast(device, precision):
            logits = model(x).float()
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return loss_sum / n, 100.0 * correct / n


def log_epoch(row: dict, epochs: int, elapsed: float) -> None:
    done = row["epoch"] + 1
    eta = elapsed / done * (epochs - done)
    val = "val -" if row["val_loss"] is None else f"val {row['val_loss']:.4f}/{row['val_accuracy']:.2f}%"
    print(f"epoch {done:>3}/{epochs}  lr {row['lr']:.5f}  sparsity {100 * row['sparsity']:6.2f}%  "
          f"train {row['train_loss']:.4f}/{row['train_accuracy']:.2f}%  {val}  {row['seconds']:.1f}s  "
          f"ETA {eta / 60:.1f} min", flush=True)


def save_checkpoint(path: str, state: dict) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


# ----------------------------------------------------------------------------------------------------------
# The run

def git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def build_model(config: dict, in_channels: int, device: torch.device):
    """Seeded ResNet-18; for the progressive method, masks attached before any compile so hooks are traced."""
    torch.manual_seed(config["seed"])
    model = data.ResNet18(in_channels=in_channels, num_classes=data.NUM_CLASSES, width=config["width"]).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    params = pruning.prunable_parameters(model)
    if config["method"] == "progressive":
        pruning.attach_masks(params)
    return model, params


def train(config: dict) -> int:
    """Run (or resume, or skip) one experiment described by ``config``; returns the exit code."""
    paths = run_paths(config)
    ensure_writable(paths["folder"])
    if os.path.exists(paths["result"]) and not config["force"]:
        try:
            with open(paths["result"]) as f:
                finished = json.load(f)
        except (OSError, ValueError):
            raise UsageError(f"{paths['result']} exists but is not readable JSON; move it away or pass --force") from None
        diff = config_difference(finished.get("config", {}), config)
        if diff:
            raise UsageError(f"{paths['result']} holds a finished run with a different config ({diff}); "
                             f"use another --out, or --force to replace it")
        acc = finished.get("test_accuracy")
        acc_text = f"{acc:.2f}%" if isinstance(acc, (int, float)) else "unknown"
        print(f"{paths['result']} is finished (test accuracy {acc_text}); skipping. Pass --force to run it again.")
        return 0
    device = pick_device(config["device"])
    precision = ("bf16" if device.type == "cuda" else "fp32") if config["precision"] == "auto" else config["precision"]
    d = data.prepare_data(config["dataset"], config["data_dir"], download=not config["no_download"],
                          dummy=config["dummy"], val_fraction=config["val_fraction"],
                          train_subset=config["train_subset"], seed=config["seed"], device=device,
                          hflip_digits=not config["no_hflip"])
    model, params = build_model(config, d.in_channels, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"],
                                weight_decay=config["weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config["epochs"])
    criterion = nn.CrossEntropyLoss(label_smoothing=config["label_smoothing"])
    state = {"epoch": 0, "history": [], "wall_time_s": 0.0}
    if os.path.exists(paths["checkpoint"]) and not config["force"]:
        ckpt = load_checkpoint(paths["checkpoint"], config)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng_cpu"])
        state = {k: ckpt[k] for k in ("epoch", "history", "wall_time_s")}
        print(f"resuming {paths['checkpoint']} at epoch {state['epoch'] + 1}/{config['epochs']}")
    run_model = torch.compile(model) if config["compile"] else model
    print(f"{config['script']}: {config['dataset']}, {config['method']}, seed {config['seed']}, {device} {precision}, "
          f"{d.train[1].shape[0]} train / {d.val[1].shape[0]} val / {d.test[1].shape[0]} test images")
    try:
        run_epochs(run_model, model, params, optimizer, scheduler, criterion, d, config, state, paths, device, precision)
    except Diverged as e:
        print(f"error: {e}; stopped. The last good checkpoint ({paths['checkpoint']}) is kept.", file=sys.stderr)
        return 1
    write_result(model, run_model, params, d, config, state, paths, device, precision)
    return 0


def run_epochs(run_model, model, params, optimizer, scheduler, criterion, d, config, state, paths, device, precision) -> None:
    epochs = config["epochs"]
    for epoch in range(state["epoch"], epochs):
        start = time.perf_counter()
        sparsity = 0.0
        if config["method"] == "progressive":
            sparsity = pruning.sparsity_schedule(config["schedule"], epoch, epochs, config["target_sparsity"])
            pruning.global_magnitude_prune(params, sparsity, optimizer=optimizer)
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = train_one_epoch(run_model, optimizer, criterion, d, config, epoch, device, precision)
        scheduler.step()
        val_loss, val_acc = evaluate(run_model, d.val, d, config["eval_batch_size"], device, precision)
        seconds = time.perf_counter() - start
        row = {"epoch": epoch, "lr": lr, "sparsity": pruning.global_sparsity(params), "target_sparsity": sparsity,
               "train_loss": train_loss, "train_accuracy": train_acc, "val_loss": val_loss,
               "val_accuracy": val_acc, "seconds": seconds}
        state["history"].append(row)
        state["epoch"] = epoch + 1
        state["wall_time_s"] += seconds
        save_checkpoint(paths["checkpoint"], {
            "config": json.dumps(config), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng_cpu": torch.get_rng_state(), **state,
        })
        log_epoch(row, epochs, state["wall_time_s"])


def write_result(model, run_model, params, d, config, state, paths, device, precision) -> None:
    """Evaluate the test set once on the final model, write the JSON and the permanent model, drop the checkpoint."""
    test_loss, test_acc = evaluate(run_model, d.test, d, config["eval_batch_size"], device, precision)
    history = state["history"]
    with_val = [r for r in history if r["val_accuracy"] is not None]
    best = max(with_val, key=lambda r: r["val_accuracy"]) if with_val else None
    per_layer = pruning.sparsity_report(model, params)
    n_prunable = sum(row["total"] for row in per_layer)
    n_nonzero = sum(row["nonzero"] for row in per_layer)
    result = {
        "schema": SCHEMA, "script": config["script"], "dataset": config["dataset"], "method": config["method"],
        "seed": config["seed"], "target_sparsity": config.get("target_sparsity", 0.0),
        "final_sparsity": (n_prunable - n_nonzero) / n_prunable,  # measured from the masks
        "test_accuracy": test_acc, "test_loss": test_loss,
        "best_val_accuracy": best["val_accuracy"] if best else None,
        "best_val_epoch": best["epoch"] if best else None,
        "params_total": sum(p.numel() for p in model.parameters()), "params_prunable": n_prunable,
        "params_nonzero": n_nonzero,
        "per_layer": per_layer, "epochs": config["epochs"], "history": history,
        "config": config, "wall_time_s": state["wall_time_s"], "device": describe_device(device),
        "precision": precision, "losses": "train: with label smoothing; val/test: plain cross-entropy",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": _torchvision_version()},
        "git_commit": git_commit(),
    }
    if config["method"] == "progressive":
        pruning.make_pruning_permanent(params)
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(paths["model"], lambda f: torch.save(state_dict, f))
    write_json(paths["result"], result)
    os.remove(paths["checkpoint"])
    print(f"test accuracy {test_acc:.2f}% at sparsity {100 * result['final_sparsity']:.2f}% "
          f"({n_nonzero:,}/{n_prunable:,} prunable weights nonzero); wrote {paths['result']}")


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


def main(script: str, datasets: tuple[str, ...], method: str, description: str, argv: list[str] | None = None) -> int:
    """Parse flags, fill the recipe, run; bad input becomes one 'error:' line and exit code 2."""
    try:
        args = build_parser(script, datasets, method, description).parse_args(argv)
        config = resolve_config(args, script, method, datasets[0])
        return train(config)
    except (UsageError, data.DataError) as e:
        print(f"{script}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{script}: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
