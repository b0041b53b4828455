"""What a run leaves on record: its final result (results.py's schema) with provenance, and its mask dynamics.

The result describes the run completely: its config, every epoch's history row, every mask event, the
per-layer sparsity and MACs, training and inference cost (flops.py's rules), the early masks' overlap with the
final one, and where and with what it ran (device, precision, processes, versions, git commit). Names no
method; nothing happens at import time.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess

import torch

import pruning
from harness import devices, flops, results
from harness.method import current_mask


def scheduled_sparsity(state, r: int) -> float:
    """The sparsity of round ``r``'s last mask event so far (0 before any): what the masks should measure."""
    events = [e for e in state.mask_events if e["round"] == r]
    return events[-1]["sparsity"] if events else 0.0


EARLY_MASK_FRACTIONS = (0.1, 0.25, 0.5)  # of all epochs trained: where the would-be final mask is kept


def track_mask_dynamics(run, epochs_done: int, epochs_total: int) -> tuple[dict, float | None]:
    """At the end of an epoch, draw the mask the run's final target would give now (global magnitude among the
    active weights: :func:`pruning.magnitude_mask`); return the new dynamics state and the normalised Hamming
    distance to the mask drawn at the end of the previous epoch (None for the first epoch, or a dense run).

    The state keeps that mask (packed bits) and, at the first epoch end at or after 10%, 25% and 50% of all
    epochs trained, a copy, compared with the final mask at the end (:func:`mask_overlaps`). Early-Bird
    tickets (You et al. 2020) use this distance; it costs one ranking of the weights per epoch."""
    if not run.method.prunes:
        return {}, None
    old = run.state.dynamics
    now = pruning.magnitude_mask(run.params, run.method.target(), importance_scores=run.method.mask_scores(run))
    distance = None if "previous" not in old else pruning.mask_distance(
        now, pruning.unpack_mask(old["previous"], now.numel()).to(now.device))
    packed = pruning.pack_mask(now)
    early = dict(old.get("early", {}))
    for f in EARLY_MASK_FRACTIONS:
        if f"{f:g}" not in early and epochs_done >= f * epochs_total:
            early[f"{f:g}"] = {"epochs": epochs_done, "mask": packed}
    return {"previous": packed, "early": early}, distance


def mask_overlaps(run) -> dict[str, dict] | None:
    """For each kept early mask: after how many epochs it was drawn, and the fraction of the final mask's
    weights it contains (1.0: the final mask was already chosen then)."""
    early = run.state.dynamics.get("early")
    if not early:
        return None
    final = current_mask(run.params).cpu()
    return {f: {"epochs": e["epochs"], "overlap": pruning.mask_overlap(pruning.unpack_mask(e["mask"], final.numel()),
                                                                       final)} for f, e in early.items()}


def empty_layers(run) -> list[str]:
    """The prunable tensors with no active weight left: the network is cut there (extreme targets, global
    rankings). Said in the log as soon as it happens and in the result; never refused, since it is a finding."""
    names = {id(m): name for name, m in run.model.named_modules()}
    return [f"{names[id(m)]}.{n}".lstrip(".") for m, n in run.params
            if run.method.prunes and not bool(getattr(m, n + "_mask").any())]


def warn_empty_layers(run, when: str) -> None:
    """One log line each time the set of prunable tensors without any active weight grows."""
    empty = empty_layers(run)
    if len(empty) > run.state.empty_layers:
        print(f"warning: {len(empty)} prunable tensor(s) have no active weight left {when} ({', '.join(empty)}): "
              f"the network is cut there", flush=True)
    run.state.empty_layers = len(empty)


def final_result(run, test_loss: float, test_acc: float) -> dict:
    """Describe the run, with its final model's test loss and accuracy (evaluated once, by the harness): the
    result JSON (results.py)."""
    c, method, history = run.config, run.method, run.state.history
    last_round = [r for r in history if r["round"] == history[-1]["round"] and r["val_accuracy"] is not None]
    best = max(last_round, key=lambda r: r["val_accuracy"]) if last_round else None
    per_layer = [{**row, **macs} for row, macs in zip(pruning.sparsity_report(run.model, run.params),
                                                      flops.layer_macs(run.params, run.positions))]
    n_prunable = sum(row["total"] for row in per_layer)
    n_nonzero = sum(row["nonzero"] for row in per_layer)
    return results.check_result({
        "schema": results.SCHEMA, "script": c.script, "dataset": c.dataset, "method": c.method,
        "label": method.label(), "seed": c.seed, "target_sparsity": method.target(),
        "final_sparsity": (n_prunable - n_nonzero) / n_prunable,  # measured from the masks
        "test_accuracy": test_acc, "test_loss": test_loss,
        "best_val_accuracy": best["val_accuracy"] if best else None,  # of the final round; never used to select
        "best_val_epoch": best["epoch"] if best else None,
        "params_total": sum(p.numel() for p in run.model.parameters()), "params_prunable": n_prunable,
        "params_nonzero": n_nonzero, "per_layer": per_layer,
        "empty_layers": [row["name"] for row in per_layer if row["nonzero"] == 0],  # cut: no active weight left
        "epochs": c.epochs, "rounds": method.rounds(), "epochs_trained": len(history),  # the cost
        "history": history, "config": c.to_dict(), "wall_time_s": run.state.wall_time_s,
        "mask_events": run.state.mask_events,  # every mask change: round, step in the round, sparsity, kind
        "inference_macs": flops.inference_cost(per_layer),  # per image, conv and linear layers
        "training_cost": flops.training_cost(run.state.train_macs, run.macs[0], cycle_images(run)),
        "early_mask_overlap": mask_overlaps(run),  # would-be final masks at 10/25/50% of training vs the final
        "device": devices.describe_device(run.device), "precision": c.precision,
        "world_size": run.world.size, "backend": run.world.backend,
        "batchnorm": "per process" if run.world.size > 1 and c.no_sync_bn else "global batch",
        "mask_checks": run.state.mask_checks,  # per epoch: every rank's mask checksum (all equal)
        "losses": "train: with label smoothing; val/test: plain cross-entropy",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": _torchvision_version()},
        "git_commit": git_commit(),
    })


def cycle_images(run) -> int:
    """Training images one cycle's steps take (the dense cycle of the training cost): every epoch's, or a step
    budget's."""
    n, batch = run.data.train[1].shape[0], run.config.batch_size
    return sum(min(n, run.steps_in_epoch(e) * batch) for e in range(run.config.epochs))


def git_commit() -> str | None:
    """HEAD's commit; with uncommitted changes to tracked files, ``+dirty-`` and 16 hex digits of a SHA-256 of
    ``git diff HEAD``, so that two runs of different uncommitted sources never claim the same code."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
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


def _torchvision_version() -> str | None:
    try:
        import torchvision
        return torchvision.__version__
    except ImportError:
        return None
