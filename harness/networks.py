"""The networks (``--arch``): ResNet-18, CIFAR variant (3x3 stride-1 stem, no max-pool), as in the paper's
notebooks; and the baselines' own networks: SNIP's LeNet-300-100, LeNet-5-Caffe and VGG-like, GraSP's VGG-19.

Nothing but the networks: the training harness (loop.py) builds one with the dataset's channels and
classes and a seeded generator (:func:`build_network`), and pruning.py finds its Conv/Linear weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:  # 1x1-conv projection when the shape changes
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs: BasicBlock [2, 2, 2, 2], widths w, 2w, 4w, 8w, global average pool, linear.

    Args:
        in_channels: 3 for CIFAR, 1 for (Fashion-)MNIST.
        num_classes: size of the classifier.
        width: base channels (64 in the paper; 8 or 16 make a thin network for CPU experiments).

    Example:
        >>> sum(p.numel() for p in ResNet18().parameters())
        11173962
        >>> ResNet18(in_channels=1, num_classes=100, width=8).linear.out_features
        100
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, in_planes = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = width * 2**i
            layers.append(nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(in_planes, num_classes)
        init_weights(self, linear="kaiming_out")  # as the paper's notebooks (PyTorch's default would draw the
        # classifier bias uniformly)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


# ----------------------------------------------------------------------------------------------------------
# The baselines' networks (SNIP: LeNet-300-100, LeNet-5-Caffe, VGG-like; GraSP: VGG-19)

class LeNet300(nn.Module):
    """LeNet-300-100 (SNIP's): 784-300-100-classes, fully connected, ReLU, on 28x28 one-channel images.

    Example:
        >>> sum(m.weight.numel() for m in LeNet300().modules() if isinstance(m, nn.Linear))
        266200
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_channels * 28 * 28, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        init_weights(self, linear="xavier")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


class LeNet5(nn.Module):
    """LeNet-5-Caffe (SNIP's): conv 20@5x5, max-pool 2, conv 50@5x5, max-pool 2, fc 500, ReLU, fc classes.

    As Caffe's LeNet (and SNIP's description), the convolutions have no nonlinearity of their own.

    Example:
        >>> sum(m.weight.numel() for m in LeNet5().modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        430500
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)  # 28 -> 24 -> 12 -> 8 -> 4
        self.fc2 = nn.Linear(500, num_classes)
        init_weights(self, linear="xavier", conv="xavier")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv2(F.max_pool2d(self.conv1(x), 2)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


VGG_LIKE = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")  # VGG-16
VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)


def vgg_features(cfg: tuple, in_channels: int, width: int) -> nn.Sequential:
    """3x3 convolutions (channels scaled by width / 64), each followed by BatchNorm and ReLU; "M": max-pool 2."""
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            out = v * width // 64
            layers += [nn.Conv2d(in_channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            in_channels = out
    return nn.Sequential(*layers)


class VGGLike(nn.Module):
    """SNIP's VGG-like (Zagoruyko's CIFAR VGG-16 with batch norm), classifier 512 -> 512 -> classes (no dropout).

    Example:
        >>> sum(m.weight.numel() for m in VGGLike().modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        14977728
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.features = vgg_features(VGG_LIKE, in_channels, width)
        hidden = 8 * width
        self.classifier = nn.Sequential(nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden),
                                        nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))
        init_weights(self, linear="normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))  # 32x32 -> 1x1 after five pools


class VGG19Net(nn.Module):
    """GraSP's VGG-19 for CIFAR: BN + ReLU after every conv, no pool after the last stage, a 2x2 average pool,
    one linear classifier.

    Example:
        >>> sum(m.weight.numel() for m in VGG19Net().modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        20024000
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.features = vgg_features(VGG19, in_channels, width)
        self.classifier = nn.Linear(8 * width, num_classes)
        init_weights(self, linear="normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.avg_pool2d(self.features(x), 2).flatten(1))  # 32x32 -> 2x2 -> 1x1


def init_weights(model: nn.Module, linear: str, conv: str = "kaiming_out") -> None:
    """Initialise conv and linear weights: "kaiming_out" (Kaiming normal, fan_out, ReLU gain: the ResNet and
    VGG convolutions, as the paper's notebooks and GraSP's code), "normal" (N(0, 0.01): the VGG classifiers,
    as GraSP's code) or "xavier" (Glorot normal: the LeNets, as Caffe's LeNet; LeNet-5-Caffe has no
    nonlinearity between its convolutions, and a ReLU gain there blew up training at lr 0.02 to 0.1).
    Biases zero, BatchNorm to identity."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            how = conv if isinstance(m, nn.Conv2d) else linear
            if how == "normal":
                nn.init.normal_(m.weight, 0.0, 0.01)
            elif how == "xavier":
                nn.init.xavier_normal_(m.weight)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@dataclass(frozen=True)
class Architecture:
    """One ``--arch``: how to build it and the inputs it is defined for."""
    build: Callable[..., nn.Module]  # (in_channels, num_classes[, width])
    input_size: int  # inputs are fed at input_size x input_size (MNIST's 28x28 is resized to 32 for the CNNs)
    channels: tuple[int, ...]  # input channels it is defined for
    scalable: bool  # --width scales its channels (default 64)


ARCHITECTURES = {  # the names are config.ARCHS (torch-free): tests/test_models.py checks they agree
    "resnet18": Architecture(ResNet18, 32, (1, 3), True),
    "lenet300": Architecture(LeNet300, 28, (1,), False),
    "lenet5": Architecture(LeNet5, 28, (1,), False),
    "vgg-like": Architecture(VGGLike, 32, (1, 3), True),
    "vgg19": Architecture(VGG19Net, 32, (1, 3), True),
}


def build_network(arch: str, in_channels: int, num_classes: int, width: int | None) -> nn.Module:
    """The network ``arch`` for the data's channels and classes (``width`` for the scalable ones)."""
    a = ARCHITECTURES[arch]
    return a.build(in_channels, num_classes, width) if a.scalable else a.build(in_channels, num_classes)


def check_architecture(arch: str, in_channels: int, native_size: int, width: int | None) -> str | None:
    """Why ``arch`` cannot train on data of ``in_channels`` x ``native_size``² with ``width`` (None if it can)."""
    a = ARCHITECTURES[arch]
    if in_channels not in a.channels or (not a.scalable and native_size != a.input_size):
        return (f"--arch {arch} is defined for {'/'.join(map(str, a.channels))}-channel {a.input_size}x{a.input_size} "
                f"images; this dataset has {in_channels}x{native_size}x{native_size}")
    if not a.scalable and width is not None:
        return f"--width has no meaning for --arch {arch} (a network of fixed size); leave it out"
    return None
