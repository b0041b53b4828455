"""harness/networks.py: the CIFAR ResNet-18's size and shapes, and the paper notebooks' initialisation."""

import torch
from torch import nn

from harness.networks import ResNet18


def test_resnet18_parameter_count_and_shapes():
    assert sum(p.numel() for p in ResNet18().parameters()) == 11_173_962
    thin = ResNet18(in_channels=1, width=8)
    assert thin(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    assert thin.conv1.weight.shape == (8, 1, 3, 3) and thin.linear.weight.shape == (10, 64)
    assert ResNet18(num_classes=100, width=8)(torch.zeros(1, 3, 32, 32)).shape == (1, 100)


def test_initialisation_as_the_paper_notebooks():
    torch.manual_seed(0)
    net = ResNet18(width=16)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
        if isinstance(m, nn.Conv2d):  # Kaiming normal, fan_out: sd = sqrt(2 / (out_channels * kh * kw))
            fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
            if m.weight.numel() > 2000:
                assert abs(m.weight.std().item() / (2 / fan_out) ** 0.5 - 1) < 0.1
    assert torch.all(net.linear.bias == 0)  # the classifier bias starts at zero, not PyTorch's uniform default
