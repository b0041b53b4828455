"""harness/networks.py, the networks of --arch: the CIFAR ResNet-18's size, shapes and the paper notebooks'
initialisation; the baselines' exact sizes, their input conventions, and a run of each kind named by its network
(folder, result, table)."""

import pytest
import torch
from torch import nn

import aggregate
from harness import config, networks
from harness.networks import ResNet18
import pruning
from helpers import read_json, run, tiny


def test_the_torch_free_names_are_the_networks():
    assert config.ARCHS == tuple(networks.ARCHITECTURES) and config.DEFAULT_ARCH in config.ARCHS


@pytest.mark.parametrize("arch, channels, prunable", [
    ("lenet300", 1, 266_200),      # SNIP's LeNet-300-100: 784-300-100-10
    ("lenet5", 1, 430_500),        # LeNet-5-Caffe on 28x28
    ("vgg-like", 3, 14_977_728),   # SNIP's VGG-like on CIFAR-10, width 64
    ("vgg19", 3, 20_024_000),      # GraSP's VGG-19 on CIFAR-10, width 64
])
def test_the_baselines_networks_have_their_papers_sizes(arch, channels, prunable):
    net = networks.build_network(arch, channels, 10, None if arch.startswith("lenet") else 64)
    assert sum(getattr(m, n).numel() for m, n in pruning.prunable_parameters(net)) == prunable


@pytest.mark.parametrize("arch", list(networks.ARCHITECTURES))
def test_each_network_takes_its_own_input_size(arch):
    a = networks.ARCHITECTURES[arch]
    net = networks.build_network(arch, 1, 7, 4 if a.scalable else None).eval()
    assert net(torch.zeros(2, 1, a.input_size, a.input_size)).shape == (2, 7)


def test_which_data_a_network_is_defined_for():
    assert networks.check_architecture("lenet300", 1, 28, None) is None
    assert "defined for 1-channel 28x28" in networks.check_architecture("lenet5", 3, 32, None)
    assert "--width has no meaning" in networks.check_architecture("lenet300", 1, 28, 8)
    assert networks.check_architecture("vgg19", 1, 28, 8) is None  # MNIST is resized to 32 for the CNNs


def without_width(flags: list[str]) -> list[str]:
    i = flags.index("--width")
    return flags[:i] + flags[i + 2:]


def test_a_lenet_trains_on_28x28_images_and_its_network_names_its_folder_and_row(mnist_data, tmp_path):
    flags = without_width(tiny(mnist_data, tmp_path, epochs=2))
    assert run("--dataset", "mnist", "--method", "progressive", "--arch", "lenet300", "--target-sparsity", "0.5",
               *flags) == 0
    assert run("--dataset", "mnist", "--method", "dense", "--arch", "vgg19", "--width", "4", *flags) == 0
    assert run("--dataset", "mnist", "--method", "dense", *tiny(mnist_data, tmp_path, epochs=2)) == 0
    lenet = read_json(tmp_path / "mnist" / "lenet300-progressive-0.5" / "seed42.json")
    assert (lenet["config"]["arch"], lenet["config"]["width"]) == ("lenet300", None)
    assert (lenet["params_prunable"], lenet["params_nonzero"]) == (266_200, 133_100)  # 784 inputs: no resize
    assert read_json(tmp_path / "mnist" / "vgg19-dense" / "seed42.json")["config"]["width"] == 4
    rows = aggregate.build_tables(aggregate.load_results([str(tmp_path)], strict=True), 1)[1]["main"]
    assert sorted((r["arch"], r["label"]) for r in rows) == [
        ("lenet300", "progressive"), ("resnet18", "dense"), ("vgg19", "dense")]


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
