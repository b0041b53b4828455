"""harness/data.py: loading from real on-disk formats, batched augmentation == torchvision per image, loader
determinism, subsets, and the ResNet-18."""

import os

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from harness import augment, data
from conftest import FASHION_MNIST_DIR, write_idx, write_mnist_idx_folder


def random_float_images(n=6, c=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, 32, 32), generator=gen, dtype=torch.uint8).float() / 255


# ---- loading ---------------------------------------------------------------------------------------------

def test_cifar10_pickles_load_through_torchvision(cifar10_root):
    splits = data.load_dataset("cifar10", cifar10_root, download=False)
    x, y = splits["train"]
    assert x.shape == (200, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert splits["test"][0].shape == (100, 3, 32, 32)
    # Pixel order: the pickle's rows are R plane, G plane, B plane; row `2 + 3c` of class c is bright.
    c = int(y[0])
    row = 2 + c * 28 // 10
    assert bool((x[0, :, row, :] == 230).all())


def test_cifar100_pickles_load_through_torchvision(cifar100_root):
    splits = data.load_dataset("cifar100", cifar100_root, download=False)
    x, y = splits["train"]
    assert x.shape == (300, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert sorted(y.unique().tolist()) == list(range(100))  # the 100 fine labels, not the 20 coarse ones
    assert splits["test"][0].shape == (100, 3, 32, 32)
    d = data.prepare_data("cifar100", cifar100_root, download=False, val_fraction=0.0, seed=0)
    assert d.num_classes == 100 and d.in_channels == 3 and d.train[0].shape[0] == 300
    assert isinstance(d.train_transform, augment.CifarTrainAugment)  # the CIFAR-10 recipe's augmentation


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_folder_gz_and_plain(tmp_path, gz):
    folder = write_mnist_idx_folder(str(tmp_path / "idx"), gz=gz)
    splits = data.load_dataset("mnist", folder, download=False)
    assert splits["train"][0].shape == (200, 1, 32, 32)  # resized from 28x28 at load
    assert splits["test"][1].shape == (100,) and set(splits["test"][1].tolist()) == set(range(10))


def test_mnist_torchvision_layout(tmp_path):
    root = tmp_path / "data"
    write_mnist_idx_folder(str(root / "MNIST" / "raw"), gz=False)  # torchvision's raw folder, unpacked
    splits = data.load_dataset("mnist", str(root), download=False)
    assert splits["train"][0].shape == (200, 1, 32, 32)


def test_resize_matches_torchvision():
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    ours = data.resize(images)
    assert (ours.int() - TF.resize(images, [32, 32]).int()).abs().max() <= 1  # uint8 rounding
    ours_float = torch.nn.functional.interpolate(images.float() / 255, size=32, mode="bilinear")
    assert torch.allclose(ours_float, TF.resize(images.float() / 255, [32, 32]), atol=1e-6)


def test_missing_data_offline_is_one_clear_error(tmp_path):
    with pytest.raises(data.DataError) as err:
        data.load_dataset("cifar10", str(tmp_path / "nothing"), download=False)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "nothing") in message and "--data-dir" in message


def test_bad_idx_files_are_refused(tmp_path):
    folder = write_mnist_idx_folder(str(tmp_path / "idx"), gz=False)
    with open(os.path.join(folder, "train-images-idx3-ubyte"), "wb") as f:
        f.write(b"not an idx file")
    with pytest.raises(data.DataError, match="bad magic"):
        data.load_dataset("mnist", folder, download=False)
    write_idx(os.path.join(folder, "train-images-idx3-ubyte"), np.zeros((199, 28, 28), np.uint8))
    with pytest.raises(data.DataError, match="199 images but"):
        data.load_dataset("mnist", folder, download=False)
    write_idx(os.path.join(folder, "train-images-idx3-ubyte"), np.zeros(200, np.uint8))  # a labels file in its place
    with pytest.raises(data.DataError, match=r"expected images \(N, H, W\) and labels \(N,\), got shapes \(200,\)"):
        data.load_dataset("mnist", folder, download=False)
    write_idx(os.path.join(folder, "train-images-idx3-ubyte"), np.zeros((200, 28, 28), np.uint8))
    write_idx(os.path.join(folder, "train-labels-idx1-ubyte"), np.full(200, 10, np.uint8))
    with pytest.raises(data.DataError, match="holds label 10; the dataset has 10 classes"):
        data.load_dataset("mnist", folder, download=False)
    with open(os.path.join(folder, "train-labels-idx1-ubyte"), "r+b") as f:
        f.truncate(100)  # cut short
    with pytest.raises(data.DataError, match="holds 92 bytes of data, its header says 200"):
        data.load_dataset("mnist", folder, download=False)


def test_idx_files_in_torchvisions_raw_folder_are_read_directly(tmp_path):
    write_mnist_idx_folder(str(tmp_path / "MNIST" / "raw"), gz=False)  # where fetch_mnist.py writes them
    splits = data.load_dataset("mnist", str(tmp_path), download=False)
    assert splits["train"][0].shape == (200, 1, 32, 32) and splits["test"][1].shape == (100,)


def test_unknown_dataset_is_refused():
    with pytest.raises(data.DataError, match="unknown dataset 'imagenet'"):
        data.load_dataset("imagenet", ".")


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR), reason=f"{FASHION_MNIST_DIR} absent (apt package dataset-fashion-mnist)")
def test_real_fashion_mnist_from_debian_package():
    splits = data.load_dataset("fashion-mnist", FASHION_MNIST_DIR, download=False)
    assert splits["train"][0].shape == (60000, 1, 32, 32) and splits["test"][0].shape == (10000, 1, 32, 32)
    assert torch.bincount(splits["train"][1]).tolist() == [6000] * 10


def test_prepare_data_splits_and_subsets(mnist_idx_dir):
    d = data.prepare_data("mnist", mnist_idx_dir, download=False, val_fraction=0.25, train_subset=100, seed=3)
    assert d.train[0].shape[0] == 75 and d.val[0].shape[0] == 25 and d.test[0].shape[0] == 100
    assert d.in_channels == 1
    same = data.prepare_data("mnist", mnist_idx_dir, download=False, val_fraction=0.25, train_subset=100, seed=3)
    assert torch.equal(d.val[0], same.val[0])
    none = data.prepare_data("mnist", mnist_idx_dir, download=False, val_fraction=0.0)
    assert none.val[0].shape[0] == 0 and none.train[0].shape[0] == 200


def test_validation_split_is_seeded_disjoint_and_complete():
    train, val = data.split_validation(1000, 0.11, seed=5)
    assert len(val) == 110 and len(train) == 890
    assert sorted(torch.cat([train, val]).tolist()) == list(range(1000))
    assert torch.equal(val, data.split_validation(1000, 0.11, seed=5)[1])
    assert not torch.equal(val, data.split_validation(1000, 0.11, seed=6)[1])
    with pytest.raises(data.DataError, match="val-fraction"):
        data.split_validation(10, 1.0, seed=0)


def test_subset_is_class_balanced_and_seeded():
    labels = torch.arange(1000) % 10
    labels = labels[torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
    idx = data.balanced_subset(labels, 53, seed=1)
    counts = torch.bincount(labels[idx], minlength=10).tolist()
    assert len(idx) == 53 and len(set(idx.tolist())) == 53 and max(counts) - min(counts) <= 1
    assert torch.equal(idx, data.balanced_subset(labels, 53, seed=1))
    assert not torch.equal(idx, data.balanced_subset(labels, 53, seed=2))
    with pytest.raises(data.DataError, match="train-subset"):
        data.balanced_subset(labels, 0, seed=1)


def test_synthetic_dataset_shapes():
    splits = data.synthetic_dataset("cifar10", train_size=64)
    assert splits["train"][0].shape == (64, 3, 32, 32) and splits["test"][0].shape == (10000, 3, 32, 32)


# ---- each batched op equals torchvision's on image i, for the same parameters -----------------------------

NO = torch.zeros(6, dtype=torch.bool)
ZERO = torch.zeros(6, dtype=torch.long)


def test_crop_matches_torchvision():
    x = random_float_images()
    top, left = torch.tensor([0, 1, 4, 8, 3, 7]), torch.tensor([8, 0, 4, 2, 5, 1])
    out = augment.crop_flip_rotate(x, top, left, NO, padding=4)
    for i in range(len(x)):
        assert torch.equal(out[i], TF.crop(TF.pad(x[i], [4]), int(top[i]), int(left[i]), 32, 32))


def test_hflip_matches_torchvision():
    x = random_float_images()
    flip = torch.tensor([True, False, True, True, False, False])
    out = augment.crop_flip_rotate(x, ZERO, ZERO, flip)
    for i in range(len(x)):
        assert torch.equal(out[i], TF.horizontal_flip(x[i]) if flip[i] else x[i])


def test_rotate_matches_torchvision_nearest_fill_0():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(64, 3, 32, 32, generator=gen)
    degrees = torch.cat([torch.tensor([-15.0, -7.3, 0.0, 3.3, 11.9, 15.0, 90.0, -45.0]),
                         torch.rand(56, generator=gen) * 30 - 15])
    out = augment.crop_flip_rotate(x, torch.zeros(64, dtype=torch.long), torch.zeros(64, dtype=torch.long),
                                torch.zeros(64, dtype=torch.bool), degrees)
    for i in range(len(x)):
        ref = TF.rotate(x[i], float(degrees[i]), interpolation=TF.InterpolationMode.NEAREST, fill=0)
        assert torch.equal(out[i], ref), f"angle {float(degrees[i])}"


def test_crop_flip_rotate_equals_the_three_torchvision_ops_in_sequence():
    x = random_float_images()
    top, left = torch.tensor([0, 8, 4, 2, 3, 7]), torch.tensor([8, 0, 4, 6, 5, 1])
    flip = torch.tensor([True, False, True, False, True, False])
    degrees = torch.tensor([-15.0, 14.2, 0.0, -3.3, 9.9, 15.0])
    out = augment.crop_flip_rotate(x, top, left, flip, degrees, padding=4)
    for i in range(len(x)):
        ref = TF.crop(TF.pad(x[i], [4]), int(top[i]), int(left[i]), 32, 32)
        ref = TF.horizontal_flip(ref) if flip[i] else ref
        ref = TF.rotate(ref, float(degrees[i]), interpolation=TF.InterpolationMode.NEAREST, fill=0)
        assert torch.equal(out[i], ref)


@pytest.mark.parametrize("ours, theirs, factors", [
    (augment.adjust_brightness, TF.adjust_brightness, [0.8, 0.9, 1.0, 1.1, 1.2, 1.17]),
    (augment.adjust_contrast, TF.adjust_contrast, [0.8, 0.9, 1.0, 1.1, 1.2, 0.83]),
    (augment.adjust_saturation, TF.adjust_saturation, [0.8, 0.9, 1.0, 1.1, 1.2, 0.95]),
    (augment.adjust_hue, TF.adjust_hue, [-0.1, -0.05, 0.0, 0.03, 0.1, 0.5]),
])
def test_color_ops_match_torchvision(ours, theirs, factors):
    x = random_float_images()
    x[0, :, :4, :4] = 0.5  # grey pixels: hue undefined, must stay grey
    out = ours(x, torch.tensor(factors))
    for i in range(len(x)):
        assert torch.allclose(out[i], theirs(x[i], factors[i]), atol=1e-5)


def test_color_jitter_applies_each_images_own_order():
    x = random_float_images()
    factors, order = augment.sample_jitter_params(len(x), torch.Generator().manual_seed(1))
    assert sorted(map(tuple, order.tolist())) != [tuple(range(4))] * len(x)  # orders do differ
    out = augment.color_jitter(x, factors, order)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in range(len(x)):
        ref = x[i]
        for op_id in order[i].tolist():
            ref = ops[op_id](ref, float(factors[i, op_id]))
        assert torch.allclose(out[i], ref, atol=1e-5)
    assert factors[:, :3].min() >= 0.8 and factors[:, :3].max() <= 1.2 and factors[:, 3].abs().max() <= 0.1


def test_erase_matches_torchvision():
    x = random_float_images()
    boxes = torch.tensor([[0, 0, 5, 7], [3, 4, 10, 2], [0, 0, 0, 0], [20, 20, 12, 12], [1, 2, 31, 31], [5, 5, 1, 1]])
    out = augment.erase(x, boxes)
    for i in range(len(x)):
        top, left, h, w = boxes[i].tolist()
        assert torch.equal(out[i], TF.erase(x[i], top, left, h, w, torch.tensor(0.0)) if h else x[i])


def test_erasing_boxes_follow_random_erasing():
    boxes = augment.sample_erasing_boxes(4000, 32, 32, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    erased = h > 0
    assert 0.45 < erased.float().mean() < 0.55  # p = 0.5
    assert bool(((top + h <= 32) & (left + w <= 32) & (h < 32) & (w < 32)).all())
    area = (h * w)[erased].float() / 1024
    assert area.min() >= 0.01 and area.max() <= 0.40  # scale (0.02, 0.33), up to rounding of h and w


def test_normalize_matches_torchvision():
    x = random_float_images()
    mean, std = data.DATASETS["cifar10"].mean, data.DATASETS["cifar10"].std
    assert torch.allclose(augment.normalize(x, mean, std), TF.normalize(x, list(mean), list(std)), atol=1e-6)


def test_train_transforms_shapes_and_flip_switch():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    out = augment.CifarTrainAugment((0.5,) * 3, (0.25,) * 3)(images, torch.Generator().manual_seed(0))
    assert out.shape == (8, 3, 32, 32) and out.dtype == torch.float32
    digits = torch.randint(0, 256, (64, 1, 32, 32), dtype=torch.uint8)
    plain = augment.DigitsTrainAugment((0.0,), (1.0,), hflip=False)(digits, torch.Generator().manual_seed(0))
    assert torch.allclose(plain, digits.float() / 255)
    flipped = augment.DigitsTrainAugment((0.0,), (1.0,), hflip=True)(digits, torch.Generator().manual_seed(0))
    assert not torch.allclose(flipped, plain)


# ---- iteration ---------------------------------------------------------------------------------------------

def batches_of(d, epoch, seed=7, batch_size=32):
    return list(data.iterate_batches(*d.train, batch_size, d.train_transform, data.epoch_generator(seed, epoch)))


def test_loader_is_deterministic_across_a_restart(cifar10_root):
    d = data.prepare_data("cifar10", cifar10_root, download=False, val_fraction=0.1)
    uninterrupted = [batches_of(d, e) for e in range(3)]
    resumed = batches_of(d, 2)  # a fresh process that starts at epoch 2
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(uninterrupted[2], resumed))
    assert not torch.equal(uninterrupted[0][0][0], uninterrupted[1][0][0])


def test_loader_covers_every_sample_once_without_dropping_the_last_batch(cifar10_root):
    d = data.prepare_data("cifar10", cifar10_root, download=False, val_fraction=0.1)
    batches = batches_of(d, 0, batch_size=32)
    sizes = [len(y) for _, y in batches]
    assert sizes == [32] * 5 + [20]  # 180 training images
    labels = torch.cat([y for _, y in batches])
    assert torch.equal(labels.sort().values, d.train[1].sort().values)
    evaluated = list(data.iterate_batches(*d.val, 8, d.eval_transform))
    assert torch.equal(torch.cat([y for _, y in evaluated]), d.val[1])  # in order, unaugmented
    assert torch.allclose(evaluated[0][0], d.eval_transform(d.val[0][:8]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augmentation_on_cuda_matches_cpu():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    aug = augment.CifarTrainAugment((0.5,) * 3, (0.25,) * 3)
    cpu = aug(images, torch.Generator().manual_seed(0))
    gpu = aug(images.cuda(), torch.Generator().manual_seed(0))
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-4)


@pytest.mark.parametrize("size", [28, 32])
def test_digits_flip_is_the_gather_it_replaced(size):
    # DigitsTrainAugment flips by torch.where; the results must be crop_flip_rotate's (which it was), bit for bit
    images = torch.randint(0, 256, (64, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    mean, std = data.DATASETS["mnist"].mean, data.DATASETS["mnist"].std
    out = augment.DigitsTrainAugment(mean, std)(images, torch.Generator().manual_seed(5))
    flips = torch.rand(64, generator=torch.Generator().manual_seed(5)) < 0.5
    zeros = torch.zeros(64, dtype=torch.long)
    ref = augment.normalize(augment.crop_flip_rotate(augment.to_float(images), zeros, zeros, flips), mean, std)
    assert 0 < int(flips.sum()) < 64 and torch.equal(out, ref)
