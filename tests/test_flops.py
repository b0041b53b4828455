"""MACs of dense and masked networks (harness/flops.py) against torch's FlopCounterMode, and the training and inference
costs every result records."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from harness import flops
import pruning
from harness.networks import ResNet18
from helpers import baseline, read_json, run


def counter_macs(model: nn.Module, input_shape) -> int:
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape))
    return counter.get_total_flops() // 2  # it counts FLOPs = 2 x MACs


@pytest.mark.parametrize("width, channels", [(8, 1), (64, 3)])
def test_dense_macs_equal_flop_counter_mode(width, channels):
    model = ResNet18(in_channels=channels, num_classes=10, width=width).eval()
    params = pruning.prunable_parameters(model)
    dense, _ = flops.total_macs(params, flops.output_positions(model, params, (channels, 32, 32)))
    assert dense == counter_macs(model, (channels, 32, 32))  # conv and linear are all it counts here
    if width == 64:
        assert 0.55e9 < dense < 0.56e9  # the CIFAR ResNet-18: about 0.56 G MACs per image


def test_nonzero_macs_are_exact_on_hand_made_masks():
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(3 * 5 * 5, 4))
    params = pruning.attach_masks([(net[0], "weight"), (net[2], "weight")])
    net[0].weight_mask.view(-1)[:20] = 0  # 34 of 54 conv weights left, each used at 25 positions
    net[2].weight_mask.view(-1)[::3] = 0  # 200 of 300 linear weights left, each used once
    positions = flops.output_positions(net, params, (2, 5, 5))
    assert positions == [25, 1]
    assert flops.layer_macs(params, positions) == [{"macs_dense": 54 * 25, "macs_nonzero": 34 * 25},
                                                    {"macs_dense": 300, "macs_nonzero": 200}]
    assert counter_macs(net, (2, 5, 5)) == 54 * 25 + 300  # dense, as FlopCounterMode sees it


def test_training_cost_dense_snip_and_imp(mnist_idx_dir, tmp_path):
    assert run(*baseline("dense", mnist_idx_dir, tmp_path)) == 0
    dense = read_json(tmp_path / "mnist" / "dense" / "seed42.json")
    assert dense["training_cost"]["cycles"] == 1.0 and dense["inference_macs"]["speedup"] == 1.0
    assert run(*baseline("snip", mnist_idx_dir, tmp_path, "--target-sparsity", "0.9")) == 0
    snip = read_json(tmp_path / "mnist" / "snip-0.9" / "seed42.json")
    d, z = snip["inference_macs"]["macs_dense"], snip["inference_macs"]["macs_nonzero"]
    assert d == dense["inference_macs"]["macs_dense"] and z == sum(r["macs_nonzero"] for r in snip["per_layer"])
    n, epochs = 180, 3  # training images, epochs; the mask is fixed from the first step; one 32-image scoring batch
    assert snip["training_cost"]["macs"] == 3 * z * n * epochs + 3 * d * 32  # the per-step sum, exactly
    assert snip["training_cost"]["cycles"] < 0.5
    assert run(*baseline("imp", mnist_idx_dir, tmp_path, "--rounds", "2", "--target-sparsity", "0.8",
                         "--epochs", "1")) == 0
    imp = read_json(tmp_path / "mnist" / "imp-r2-0.8" / "seed42.json")
    share = imp["inference_macs"]["macs_nonzero"] / imp["inference_macs"]["macs_dense"]
    assert 3 * share < imp["training_cost"]["cycles"] < 3  # R + 1 = 3 cycles, each at most dense
