"""Where a run trains and in what precision: the device (CUDA: this process's own GPU under torchrun), the
memory layout, bf16 autocast, and the device's description for the result. Nothing happens at import time."""

from __future__ import annotations

import platform

import torch

from harness.config import Config
from harness.runfolder import UsageError


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


# ----------------------------------------------------------------------------------------------------------
# Training and evaluation

def autocast(device: torch.device, precision: str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"{device.type}: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
