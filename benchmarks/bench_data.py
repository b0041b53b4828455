"""Images per second of the paper's CIFAR-10 train augmentation: harness/data.py's batched ops vs torchvision's
per-image transforms (PIL, as in the paper's notebooks) in a DataLoader with one worker per core.

    python benchmarks/bench_data.py [--images 10000] [--batch-size 128] [--device cpu|cuda]

Synthetic CIFAR-shaped images; the work per image is the same as on real data.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import augment, data  # noqa: E402

SPEC = data.DATASETS["cifar10"]


class PilImages(torch.utils.data.Dataset):
    """uint8 NHWC array served as PIL images through a per-image transform, like torchvision's CIFAR10."""

    def __init__(self, images: np.ndarray, transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), 0


def paper_transform() -> T.Compose:
    return T.Compose([
        T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.RandomRotation(15),
        T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1),
        T.ToTensor(), T.RandomErasing(), T.Normalize(SPEC.mean, SPEC.std),
    ])


def torchvision_rate(images: np.ndarray, batch_size: int, workers: int) -> float:
    loader = torch.utils.data.DataLoader(PilImages(images, paper_transform()), batch_size=batch_size,
                                         shuffle=True, num_workers=workers, persistent_workers=False)
    t0 = time.perf_counter()
    n = sum(x.shape[0] for x, _ in loader)
    return n / (time.perf_counter() - t0)


def batched_rate(images: torch.Tensor, batch_size: int, device: torch.device) -> float:
    x = images.to(device)
    y = torch.zeros(len(x), dtype=torch.long, device=device)
    transform = augment.CifarTrainAugment(SPEC.mean, SPEC.std)
    for _ in data.iterate_batches(x[:batch_size], y[:batch_size], batch_size, transform, torch.Generator()):
        pass  # warm-up (CUDA context, kernels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = 0
    for xb, _ in data.iterate_batches(x, y, batch_size, transform, data.epoch_generator(0, 0)):
        n += xb.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10000, help="images per measurement")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu", help="device for the batched pipeline")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each; the median is shown")
    args = parser.parse_args()
    workers = os.cpu_count() or 1
    images = data.synthetic_dataset("cifar10", seed=0, train_size=args.images)["train"][0]
    median = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
    tv = median([torchvision_rate(images.permute(0, 2, 3, 1).numpy(), args.batch_size, workers)
                 for _ in range(args.repeats)])
    ours = median([batched_rate(images, args.batch_size, torch.device(args.device)) for _ in range(args.repeats)])
    print(f"{args.images} CIFAR-shaped images, batch {args.batch_size}, torch {torch.__version__}, "
          f"median of {args.repeats}")
    print(f"  torchvision per-image (PIL), DataLoader, {workers} workers : {tv:10.0f} images/s")
    print(f"  harness/data.py batched, {args.device}, {torch.get_num_threads()} threads{'':17s}: {ours:10.0f} images/s")
    print(f"  ratio: {ours / tv:.1f}x  (target: >= 10x on CPU)")


if __name__ == "__main__":
    main()
