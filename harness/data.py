"""Datasets shared by the training scripts: loading, subsets, the validation split, and seeded batches.

CIFAR-10, CIFAR-100, MNIST and Fashion-MNIST are each one entry of ``DATASETS``, loaded once into uint8
tensors (N, C, H, W) on the training device, and cut into batches by index on that device (no DataLoader
workers, no PIL). The paper's augmentation (augment.py) is applied to chunks of a shuffled epoch with per-image
random parameters from a seeded ``torch.Generator``. Throughput against torchvision's per-image pipeline:
docs/performance.md and benchmarks/bench_data.py.

A difference from the paper's notebooks, on purpose: the validation split is evaluated without augmentation
(the notebooks validated on augmented images).
"""

from __future__ import annotations

import gzip
import math
import os
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch.nn import functional as F

from harness import augment


class DataError(Exception):
    """Data cannot be found or read; the message is one line meant for the user."""


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: everything the harness needs to load it, feed it and size the network for it."""
    torchvision_class: str  # name in torchvision.datasets
    in_channels: int
    num_classes: int
    mean: tuple[float, ...]  # Normalize() statistics
    std: tuple[float, ...]
    stored_size: int  # as stored: 32 (CIFAR) or 28 (MNIST-style)
    augmentations: tuple[str, ...]  # what --augment may name for it (train_transform), the paper's first
    idx_folder: bool  # MNIST-style: may also be read from a bare folder holding the four IDX files
    train_size: int  # the real training set's size: --dummy's stand-in and --steps' epochs
    test_size: int


DATASETS = {  # mean/std: CIFAR-10 and MNIST from the paper's notebooks; CIFAR-100 the usual training-set values
    "cifar10": DatasetSpec("CIFAR10", 3, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 32,
                           ("cifar", "none"), False, 50000, 10000),
    "cifar100": DatasetSpec("CIFAR100", 3, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 32,
                            ("cifar", "none"), False, 50000, 10000),
    "mnist": DatasetSpec("MNIST", 1, 10, (0.1307,), (0.3081,), 28, ("flip", "none"), True, 60000, 10000),
    "fashion-mnist": DatasetSpec("FashionMNIST", 1, 10, (0.1307,), (0.3081,), 28, ("flip", "none"), True,
                                 60000, 10000),
}
INPUT_SIZE = 32  # the CNNs' input size: MNIST-style data is resized from 28x28 once, at load (the LeNets take 28)
IDX_FILES = {  # split -> (images, labels), as distributed by LeCun / Zalando and Debian's dataset packages
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# ----------------------------------------------------------------------------------------------------------
# Loading

def read_idx(path: str) -> torch.Tensor:
    """Read an MNIST-format IDX file (optionally gzipped) into a uint8 tensor of its stored shape."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = raw[4 + 4 * ndim:]
    if len(body) != math.prod(shape):
        raise DataError(f"{path} holds {len(body)} bytes of data, its header says {math.prod(shape)}")
    return torch.from_numpy(np.frombuffer(body, dtype=np.uint8).copy()).reshape(shape)


def find_idx_folder_files(folder: str) -> dict[str, tuple[str, str]] | None:
    """Paths of the four IDX files directly in ``folder`` (plain or .gz), or None if any is missing."""
    found = {}
    for split, names in IDX_FILES.items():
        paths = []
        for name in names:
            candidates = [os.path.join(folder, name + ext) for ext in ("", ".gz")]
            existing = [p for p in candidates if os.path.isfile(p)]
            if not existing:
                return None
            paths.append(existing[0])
        found[split] = tuple(paths)
    return found


def find_idx_files(name: str, data_dir: str) -> dict[str, tuple[str, str]] | None:
    """The four IDX files of an MNIST-style dataset in ``data_dir`` itself or in torchvision's raw folder under
    it (``data_dir/MNIST/raw``, where fetch_mnist.py writes them), or None."""
    for folder in (data_dir, os.path.join(data_dir, DATASETS[name].torchvision_class, "raw")):
        found = find_idx_folder_files(folder)
        if found:
            return found
    return None


def read_idx_split(images_path: str, labels_path: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One split's images (N, 1, H, W) uint8 and labels (N,) int64 from its two IDX files; DataError (one line)
    if they are not an image file and a label file of the same length with labels below ``num_classes``."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{images_path} / {labels_path}: expected images (N, H, W) and labels (N,), got shapes "
                        f"{tuple(images.shape)} and {tuple(labels.shape)}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels")
    if labels.numel() and int(labels.max()) >= num_classes:
        raise DataError(f"{labels_path} holds label {int(labels.max())}; the dataset has {num_classes} classes")
    return images.unsqueeze(1), labels.long()


def steps_per_epoch(name: str, train_subset: int | None, val_fraction: float, batch_size: int) -> int:
    """Training steps per epoch of the dataset at its real size (``DatasetSpec.train_size``), as
    :func:`prepare_data` splits it: a step budget (``--steps``) is turned into epochs with it."""
    n = train_subset or DATASETS[name].train_size
    return -(-(n - round(val_fraction * n)) // batch_size)


def resize(images: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Bilinear resize of uint8 (N, C, H, W) images to size x size, rounded back to uint8 (as PIL's Resize)."""
    if images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def load_torchvision_split(name: str, root: str, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One split through torchvision.datasets (its folder layout and checks), as uint8 NCHW and int64 labels."""
    import torchvision  # deferred: only this path needs it

    cls = getattr(torchvision.datasets, DATASETS[name].torchvision_class)
    try:
        ds = cls(root=root, train=train, download=download)
    except Exception as e:  # torchvision raises RuntimeError, URLError, OSError ... all mean "no data here"
        how = "could not be downloaded" if download else "downloading is off (--no-download)"
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise DataError(
            f"{name} not found under {os.path.abspath(root)} and {how} ({reason}). Put the data there in "
            f"torchvision's layout (or, for MNIST-style data, a folder with the four IDX files) and pass "
            f"--data-dir, or run once on a machine with internet access to download it."
        ) from None
    data = torch.as_tensor(np.asarray(ds.data))
    images = data.permute(0, 3, 1, 2) if data.ndim == 4 else data.unsqueeze(1)  # CIFAR is NHWC on disk
    return images.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)


def load_dataset(name: str, data_dir: str, download: bool = True,
                 input_size: int = INPUT_SIZE) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train and test splits as {"train": (images, labels), "test": (...)} on the CPU, images
    ``input_size`` x ``input_size`` uint8.

    MNIST-style datasets are read directly from ``data_dir`` when it holds the four IDX files (plain or
    gzipped, as Debian's dataset-fashion-mnist installs them); otherwise torchvision's layout under
    ``data_dir`` is used, downloading when allowed.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: choose from {', '.join(DATASETS)}")
    idx_files = find_idx_files(name, data_dir) if DATASETS[name].idx_folder else None
    splits = {}
    for split, train in (("train", True), ("test", False)):
        if idx_files:
            images, labels = read_idx_split(*idx_files[split], DATASETS[name].num_classes)
        else:
            images, labels = load_torchvision_split(name, data_dir, train, download)
        splits[split] = (resize(images, input_size), labels)
    return splits


def synthetic_dataset(name: str, seed: int = 0, train_size: int | None = None,
                      input_size: int = INPUT_SIZE) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Random uint8 images and labels with the dataset's shapes (like --dummy in PyTorch's ImageNet example)."""
    spec = DATASETS[name]
    gen = torch.Generator().manual_seed(seed)
    splits = {}
    for split, n in (("train", train_size or spec.train_size), ("test", spec.test_size)):
        images = torch.randint(0, 256, (n, spec.in_channels, input_size, input_size), generator=gen, dtype=torch.uint8)
        splits[split] = (images, torch.randint(0, spec.num_classes, (n,), generator=gen))
    return splits


def balanced_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of ``n`` samples, as equal per class as possible (the first n % classes classes get one more)."""
    classes = labels.unique()
    if not 0 < n <= labels.numel():
        raise DataError(f"--train-subset must be between 1 and {labels.numel()}, got {n}")
    gen = torch.Generator().manual_seed(seed)
    per_class = [n // len(classes) + (i < n % len(classes)) for i in range(len(classes))]
    chosen = []
    for c, k in zip(classes, per_class):
        members = torch.nonzero(labels == c).squeeze(1)
        if k > members.numel():
            raise DataError(f"--train-subset {n} needs {k} images of class {int(c)}, the data has {members.numel()}")
        chosen.append(members[torch.randperm(members.numel(), generator=gen)[:k]])
    return torch.cat(chosen).sort().values


def split_validation(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random (train_indices, val_indices) with round(val_fraction * n) validation samples."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = round(val_fraction * n)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


@dataclass
class Data:
    """The three splits as tensors on the training device, and how to turn uint8 batches into inputs."""
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    in_channels: int
    num_classes: int
    train_transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    eval_transform: Callable[[torch.Tensor], torch.Tensor]


def prepare_data(
    name: str,
    data_dir: str = "./data",
    *,
    download: bool = True,
    dummy: bool = False,
    val_fraction: float = 0.11,
    train_subset: int | None = None,
    seed: int = 42,
    device: torch.device | str = "cpu",
    augmentation: str | None = None,
    input_size: int = INPUT_SIZE,
) -> Data:
    """Load a dataset at ``input_size`` x ``input_size``, take the optional class-balanced subset, split off
    validation, move to ``device``; train through ``augmentation`` (None: the dataset's paper augmentation).

    ``train_subset`` draws that many images from the training set *before* the validation split.
    """
    spec = DATASETS[name]
    transform = train_transform(spec, augmentation or spec.augmentations[0])  # a bad --augment before any loading
    splits = synthetic_dataset(name, seed, input_size=input_size) if dummy else \
        load_dataset(name, data_dir, download, input_size)
    images, labels = splits["train"]
    if train_subset is not None:
        keep = balanced_subset(labels, train_subset, seed)
        images, labels = images[keep], labels[keep]
    train_idx, val_idx = split_validation(labels.numel(), val_fraction, seed)
    check_split("training", labels[train_idx])
    if val_fraction > 0:
        check_split("validation", labels[val_idx])
    on = lambda x: x.to(device)  # noqa: E731
    return Data(
        train=(on(images[train_idx]), on(labels[train_idx])),
        val=(on(images[val_idx]), on(labels[val_idx])),
        test=(on(splits["test"][0]), on(splits["test"][1])),
        in_channels=spec.in_channels,
        num_classes=spec.num_classes,
        train_transform=transform,
        eval_transform=lambda x: augment.normalize(augment.to_float(x), spec.mean, spec.std, inplace=True),
    )


def check_split(name: str, labels: torch.Tensor) -> None:
    """A split the run can learn from or be measured on: at least two images of at least two classes."""
    n_classes = int(labels.unique().numel())
    if n_classes < 2:
        raise DataError(f"the {name} split would hold {labels.numel()} image(s) of {n_classes} class(es): use a "
                        f"larger --train-subset or a smaller --val-fraction")


# ----------------------------------------------------------------------------------------------------------
# Iteration

def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator for one epoch's shuffle and augmentation: a pure function of (seed, epoch), so a resumed
    run draws exactly what an uninterrupted one would."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def iterate_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    transform: Callable[..., torch.Tensor],
    gen: torch.Generator | None = None,
    channels_last: bool = False,
    augment_chunk: int = 512,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches (inputs, labels) gathered by index from on-device tensors, drop_last=False.

    Training (``gen`` given): a seeded shuffle, and ``transform(x, gen)`` applied to chunks of about
    ``augment_chunk`` images (a multiple of the batch size) that are then cut into batches: per-image random
    parameters make this the same augmentation, with far fewer (slow, small) tensor ops per image on CPU.
    Evaluation (no ``gen``): in order, through ``transform(x)``.
    """
    n = labels.shape[0]
    if gen is None:
        for start in range(0, n, batch_size):
            yield _layout(transform(images[start:start + batch_size]), channels_last), labels[start:start + batch_size]
        return
    order = torch.randperm(n, generator=gen).to(images.device)
    chunk = batch_size * max(1, augment_chunk // batch_size)
    for chunk_start in range(0, n, chunk):
        idx = order[chunk_start:chunk_start + chunk]
        x, y = transform(images[idx], gen), labels[idx]
        for start in range(0, len(idx), batch_size):
            yield _layout(x[start:start + batch_size], channels_last), y[start:start + batch_size]


def _layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def augmentation_problem(spec: DatasetSpec, augmentation: str) -> str | None:
    """The one line that says ``--augment`` names an augmentation the dataset has not (None if it has it)."""
    if augmentation in spec.augmentations:
        return None
    name = next(k for k, v in DATASETS.items() if v is spec)
    return f"--augment {augmentation}: {name} has no such augmentation (it has: {', '.join(spec.augmentations)})"


def train_transform(spec: DatasetSpec, augmentation: str) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """The training transform of ``--augment`` for a dataset; DataError if the dataset has no such augmentation."""
    problem = augmentation_problem(spec, augmentation)
    if problem:
        raise DataError(problem)
    if spec.in_channels == 1:  # the digits: the paper's flip, or none (the flips are drawn either way)
        return augment.DigitsTrainAugment(spec.mean, spec.std, hflip=augmentation == "flip")
    if augmentation == "cifar":
        return augment.CifarTrainAugment(spec.mean, spec.std)
    return lambda x, gen: augment.normalize(augment.to_float(x), spec.mean, spec.std, inplace=True)
