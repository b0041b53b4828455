"""A run's folder: its paths, atomic writes, the lock that holds it, checkpoints, and finished results.

results/<dataset>/<folder>/seed<seed>.{json,ckpt.pt,model.pt,lock}: one run per stem. Every file is written to
a temp file in the same folder and renamed over its path, so a kill never leaves a partial file where a reader
looks; a second process for the same run is refused while the first holds the lock; a finished result or a
checkpoint is only ever skipped or continued by a run of the same identity, and never overwritten by another.
Names no method; nothing happens at import time.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time

import torch

from harness import config as cfg, distributed, results
from harness.config import DEFAULT_ARCH, Config
from harness.distributed import World
from harness.results import atomic_write


class UsageError(Exception):
    """Bad input; the message is one line for the user, and the run exits with code 2."""


class WriteFailed(Exception):
    """A checkpoint, model or result could not be written (disk full, I/O error, ...); the run stops."""


def run_paths(config: Config, folder: str) -> dict[str, str]:
    """``config.out``/<dataset>/[<arch>-]``folder``/seed<seed>.{json,ckpt.pt,model.pt,lock}; ``folder`` is the
    method's (``Method.folder``: its label and target). The network is named unless it is the default
    ResNet-18 (whose runs kept their folders when ``--arch`` came)."""
    named = folder if config.arch == DEFAULT_ARCH else f"{config.arch}-{folder}"
    folder = os.path.join(config.out, config.dataset, named)
    stem = os.path.join(folder, f"seed{config.seed}")
    return {"folder": folder, "result": stem + ".json", "checkpoint": stem + ".ckpt.pt", "model": stem + ".model.pt",
            "lock": stem + ".lock"}


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
    diff = cfg.config_difference(saved, config.to_dict(), cfg.run_fields(config))
    if diff:
        raise UsageError(f"checkpoint {path} is from a different config ({diff}); use another --out, or "
                         f"--force to start over")
    return results.upgrade_state(ckpt)


def finished_result(path: str, config: Config) -> dict | None:
    """The finished result at ``path`` if there is one of this identity, None if there is none; a result of
    another identity (or an unreadable one) is refused with UsageError, never replaced."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            finished = results.upgrade(json.load(f))
    except (OSError, ValueError):
        raise UsageError(f"{path} exists but is not readable JSON; move it away or pass --force") from None
    diff = cfg.config_difference(finished.get("config", {}), config.to_dict(), cfg.run_fields(config))
    if diff:
        raise UsageError(f"{path} holds a finished run with a different config ({diff}); "
                         f"use another --out, or --force to replace it")
    return finished


def check_finished(paths: dict[str, str], config: Config) -> bool:
    """True if this run's result exists (same identity); a result of another identity is refused, never replaced."""
    finished = None if config.force else finished_result(paths["result"], config)
    if finished is None:
        return False
    acc = finished.get("test_accuracy")
    acc_text = f"{acc:.2f}%" if isinstance(acc, (int, float)) else "unknown"
    print(f"{paths['result']} is finished (test accuracy {acc_text}); skipping. Pass --force to run it again.")
    return True


def kept_checkpoint(path: str, epochs_done: int) -> str:
    """What a stopped run leaves to resume from, for its error line."""
    if not os.path.exists(path):
        return "no checkpoint was written"
    return f"the last good checkpoint ({path}, after {epochs_done} epochs) is intact"


def save_checkpoint(path: str, state: dict) -> None:
    write_file(path, lambda f: torch.save(state, f))
