"""One run on several processes, started by ``torchrun``: the process group, shards, reductions, mask checks.

``torchrun --standalone --nproc_per_node N train_cifar10.py ...`` starts N copies of a script with
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` set; :func:`init` joins them (NCCL on CUDA, one GPU per local
rank; Gloo on the CPU). A plain ``python train_cifar10.py`` is world size 1 and touches none of this.
Every rank draws the same per-epoch order and augmentation and trains on its contiguous shard of each global
batch, so a run's data does not depend on N. Masks are identical on every rank by construction (the same
weights, ranked the same way) and :func:`check_masks` proves it after every pruning event. Nothing happens at
import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


class MaskMismatch(Exception):
    """Ranks hold different masks; the run must stop."""


@dataclass(frozen=True)
class World:
    """This process's place in the job (a plain run: rank 0 of 1, backend "none")."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device_type: str) -> World:
    """Join the process group torchrun set up; NCCL for CUDA, Gloo otherwise. World size 1: nothing to join."""
    if not launched_by_torchrun():
        return World()
    backend = "nccl" if device_type == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return World(dist.get_rank(), dist.get_world_size(), local_rank, backend)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(n: int, world: World) -> tuple[int, int]:
    """[lo, hi) of this rank's contiguous share of n items, as even as possible (the first n % size get one more)."""
    base, extra = divmod(n, world.size)
    lo = world.rank * base + min(world.rank, extra)
    return lo, lo + base + (world.rank < extra)


def all_reduce_sum(values: torch.Tensor, world: World) -> torch.Tensor:
    """The elementwise sum over ranks (in place; a plain run returns ``values`` unchanged)."""
    if world.size > 1:
        dist.all_reduce(values)
    return values


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def broadcast_buffers(model: nn.Module, world: World) -> None:
    """Rank 0's floating buffers other than masks (BatchNorm statistics) on every rank."""
    if world.size > 1:
        for name, buf in model.named_buffers():
            if buf.is_floating_point() and not name.endswith("_mask"):
                dist.broadcast(buf, 0)


def mask_checksum(params: list) -> int:
    """A position-weighted integer checksum of every mask (equal masks give equal sums; a moved entry does not)."""
    total = 0
    for module, name in params:
        mask = getattr(module, name + "_mask", None)
        if mask is None:
            continue
        idx = torch.arange(1, mask.numel() + 1, device=mask.device, dtype=torch.int64)
        total += int(((idx * 2654435761) % 2147483647 * (mask.reshape(-1) != 0)).sum())
    return total


def check_masks(params: list, world: World, where: str) -> list[int]:
    """Every rank's mask checksum (gathered); raises MaskMismatch on every rank if they are not all equal."""
    mine = mask_checksum(params)
    if world.size == 1:
        return [mine]
    gathered = [None] * world.size
    dist.all_gather_object(gathered, mine)
    if len(set(gathered)) > 1:
        raise MaskMismatch(f"the ranks' masks differ {where} (checksums {gathered}); stopping")
    return gathered


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) with a gradient: the gradient of a sum over ranks is the sum over ranks of gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch over all ranks, for the CPU (torch's
    SyncBatchNorm needs a GPU). Two differentiable all-reduces per layer (sum, then squared deviations), so the
    gradient is that of the global batch, as with SyncBatchNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _SumOverRanks.apply
        count = all_reduce(x.new_tensor([x.numel() / x.shape[1]]))
        mean = all_reduce(x.sum((0, 2, 3))) / count
        centred = x - mean.view(1, -1, 1, 1)
        var = all_reduce(centred.square().sum((0, 2, 3))) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * count / (count - 1).clamp_min(1), m)
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        return out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1) if self.affine else out


def global_batchnorm(model: nn.Module, device_type: str) -> nn.Module:
    """BatchNorm over the global batch: torch's SyncBatchNorm on CUDA, GlobalBatchNorm2d elsewhere."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                            child.track_running_stats, device=child.weight.device)
            replacement.load_state_dict(child.state_dict())
            setattr(model, name, replacement)
        else:
            global_batchnorm(child, device_type)
    return model


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 for a plain run), readable before the group is joined."""
    return int(os.environ.get("RANK", "0"))


def broadcast_object(obj, world: World):
    """Rank 0's ``obj`` (any picklable value) on every rank; a plain run returns ``obj``."""
    if world.size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
