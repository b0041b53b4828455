"""Multiply-accumulates (MACs) of a network's convolution and linear layers: dense, and at its masks.

Parameter sparsity is not compute: a weight of a late ResNet layer is used at 16 output positions, one of the
first at 1,024 (CIFAR shapes), so removing mostly late weights saves far less compute than parameters. Here a
layer's MACs per image are ``weights × output positions`` (dense) and ``nonzero weights × output positions``
(at its mask), the theoretical count of ShrinkBench and the RigL paper (Blalock et al. 2020; Evci et al.
2020); the dense count equals ``torch.utils.flop_counter.FlopCounterMode``'s FLOPs / 2 for convolution and
linear layers (tests). torch only; nothing happens at import time.
"""

from __future__ import annotations

import torch
from torch import nn


def output_positions(model: nn.Module, parameters: list, input_shape: tuple[int, ...]) -> list[int]:
    """For each ``(module, name)`` of ``parameters``: the output positions per image at which its weight is
    applied (``H_out * W_out`` for a Conv2d, 1 for a Linear on flat features), from one forward pass of a
    zero image of ``input_shape`` (C, H, W) in eval mode; the model's mode and statistics are left as they were.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.Flatten(), nn.LazyLinear(4))
        >>> params = [(net[0], "weight"), (net[2], "weight")]
        >>> output_positions(net, params, (3, 9, 9))
        [16, 1]
    """
    outputs = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, i=i: outputs.__setitem__(i, out.shape))
             for i, (m, _) in enumerate(parameters)]
    training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    positions = []
    for i, (m, _) in enumerate(parameters):
        shape = outputs[i]  # (1, channels, *spatial) for conv; (1, ..., features) for linear
        per_channel = shape[2:] if isinstance(m, nn.modules.conv._ConvNd) else shape[1:-1]
        positions.append(int(torch.tensor(per_channel, dtype=torch.int64).prod()) if len(per_channel) else 1)
    return positions


def layer_macs(parameters: list, positions: list[int]) -> list[dict]:
    """Per ``(module, name)``: dense MACs and MACs of its nonzero weights (its mask's ones when it has one), per
    image. Integers (exact at any size).

    Example:
        >>> conv = nn.Conv2d(1, 2, 3, bias=False); import pruning; _ = pruning.attach_masks([(conv, "weight")])
        >>> conv.weight_mask.view(-1)[:9] = 0
        >>> layer_macs([(conv, "weight")], [16])
        [{'macs_dense': 288, 'macs_nonzero': 144}]
    """
    rows = []
    for (m, n), pos in zip(parameters, positions):
        mask = getattr(m, n + "_mask", None)
        weight = getattr(m, n)
        nonzero = int(torch.count_nonzero(mask if mask is not None else weight))
        rows.append({"macs_dense": weight.numel() * pos, "macs_nonzero": nonzero * pos})
    return rows


def total_macs(parameters: list, positions: list[int]) -> tuple[int, int]:
    """(dense, nonzero) MACs per image, summed over the layers of :func:`layer_macs`."""
    rows = layer_macs(parameters, positions)
    return sum(r["macs_dense"] for r in rows), sum(r["macs_nonzero"] for r in rows)


# ----------------------------------------------------------------------------------------------------------
# The cost rules of a result (record.py)

def inference_cost(per_layer: list[dict]) -> dict:
    """Forward MACs per image of the final model: dense, at its masks, and the theoretical speedup.

    Example:
        >>> inference_cost([{"macs_dense": 100, "macs_nonzero": 25}, {"macs_dense": 50, "macs_nonzero": 25}])
        {'macs_dense': 150, 'macs_nonzero': 50, 'speedup': 3.0}
    """
    dense, nonzero = sum(r["macs_dense"] for r in per_layer), sum(r["macs_nonzero"] for r in per_layer)
    return {"macs_dense": dense, "macs_nonzero": nonzero, "speedup": dense / nonzero if nonzero else None}


TRAINING_COST_RULE = ("sum over training steps of (forward + backward = 3 x forward) MACs at that step's masks, "
                      "per image, conv and linear layers; RigL update steps and SNIP scoring batches dense; GraSP "
                      "scoring images dense, 9 x forward (gradient pass 3x, Hessian-gradient pass 6x)")


def step_macs(macs_per_image: int, images: int) -> int:
    """A training step's MACs under TRAINING_COST_RULE: forward + backward (2x forward), for ``images``."""
    return 3 * macs_per_image * images


def training_cost(train_macs: int, dense_macs_per_image: int, cycle_images: int) -> dict:
    """A run's training compute in MACs and as a multiple of one dense training cycle of the same data
    (``cycle_images``: the training images one cycle's steps take, every epoch's or a step budget's).

    Example:
        >>> training_cost(train_macs=600, dense_macs_per_image=10, cycle_images=10)["cycles"]
        2.0
    """
    dense_cycle = step_macs(dense_macs_per_image, cycle_images)
    return {"macs": train_macs, "dense_cycle_macs": dense_cycle, "cycles": train_macs / dense_cycle,
            "rule": TRAINING_COST_RULE}
