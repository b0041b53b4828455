"""Shared fixtures: tiny datasets written in the real on-disk formats (CIFAR-10 pickles, MNIST IDX)."""

import gzip
import os
import pickle

import numpy as np
import pytest

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def class_patterned_images(n: int, channels: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, C, H, W) whose class is learnable (a bright band at a class-dependent row) + labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, channels, size, size), dtype=np.uint8)
    for i, c in enumerate(labels):
        row = 2 + int(c) * (size - 4) // 10
        images[i, :, row:row + 2, :] = 230
    return images, labels.astype(np.int64)


def write_idx(path: str, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (magic 0x0000 08 ndim, big-endian dims), gzipped if path ends .gz."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist_idx_folder(folder: str, n_train: int = 200, n_test: int = 100, gz: bool = True) -> str:
    """The four MNIST-format files directly in ``folder``, as Debian's package lays them out."""
    os.makedirs(folder, exist_ok=True)
    ext = ".gz" if gz else ""
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = class_patterned_images(n, 1, 28, seed)
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte{ext}"), images[:, 0])
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte{ext}"), labels)
    return folder


def write_cifar10_batches(root: str, n_per_batch: int = 40, n_test: int = 100) -> str:
    """CIFAR-10's python pickles (cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta) under root."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        n = n_test if name == "test_batch" else n_per_batch
        images, labels = class_patterned_images(n, 3, 32, seed=10 + i)
        entry = {"data": images.reshape(n, 3 * 32 * 32), "labels": labels.tolist(),
                 "batch_label": name, "filenames": [f"{name}_{j}.png" for j in range(n)]}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(entry, f)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return root


def write_cifar100_pickles(root: str, n_train: int = 300, n_test: int = 100) -> str:
    """CIFAR-100's python pickles (cifar-100-python/train, test, meta) under root, 100 fine classes."""
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    for name, n, seed in (("train", n_train, 20), ("test", n_test, 21)):
        images, _ = class_patterned_images(n, 3, 32, seed)
        fine = np.random.default_rng(seed).permutation(np.arange(n) % 100)
        entry = {"data": images.reshape(n, 3 * 32 * 32), "fine_labels": fine.tolist(),
                 "coarse_labels": (fine // 5).tolist(), "batch_label": name,
                 "filenames": [f"{name}_{j}.png" for j in range(n)]}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(entry, f)
    with open(os.path.join(folder, "meta"), "wb") as f:
        pickle.dump({"fine_label_names": [f"fine{i}" for i in range(100)],
                     "coarse_label_names": [f"coarse{i}" for i in range(20)]}, f)
    return root


@pytest.fixture
def spy(monkeypatch):
    """The one way tests record what the harness does: ``spy(owner, name, before, after=None)`` wraps
    ``owner.name`` (a function of a module, or a method of a class) for the test and returns the list it fills.
    Each call appends ``before(*args)`` (taken before the real call; None: nothing), or with ``after``,
    ``after(that, *args)`` once the real call returned."""
    def install(owner, name: str, before, after=None) -> list:
        seen, real = [], getattr(owner, name)

        def wrapper(*args, **kwargs):
            record = before(*args, **kwargs)
            if after is None and record is not None:
                seen.append(record)
            out = real(*args, **kwargs)
            if after is not None and record is not None:
                seen.append(after(record, *args, **kwargs))
            return out
        monkeypatch.setattr(owner, name, wrapper)
        return seen
    return install


@pytest.fixture
def cifar100_root(tmp_path, monkeypatch):
    """A tiny CIFAR-100 in torchvision's layout (MD5 check bypassed, as for cifar10_root)."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    return write_cifar100_pickles(str(tmp_path / "data100"))


@pytest.fixture
def cifar10_root(tmp_path, monkeypatch):
    """A tiny CIFAR-10 in torchvision's layout. torchvision checks each file's MD5 against the real
    dataset's; our files cannot match, so the check is bypassed here deliberately (and only here)."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    return write_cifar10_batches(str(tmp_path / "data"))


@pytest.fixture
def mnist_idx_dir(tmp_path):
    return write_mnist_idx_folder(str(tmp_path / "mnist-idx"))


@pytest.fixture(scope="session")
def mnist_data(tmp_path_factory):
    """The tiny MNIST-format folder, written once for every test that only reads it."""
    return write_mnist_idx_folder(str(tmp_path_factory.mktemp("mnist-idx")))
