"""The paper's training augmentation as batched tensor ops with per-image random parameters.

Each op takes float images (B, C, H, W) in [0, 1] and per-image parameters, and matches
``torchvision.transforms.v2.functional`` on a single image (tests/test_data.py); random parameters come from a
``torch.Generator`` on the CPU, so a seed gives the same batch on any device, while the pixels are processed
on the batch's device.

A difference from the paper's notebooks, on purpose: the ops run on float images in [0, 1] (the notebooks ran
the same ops on PIL uint8 images, rounding between ops).
"""

from __future__ import annotations

import math

import torch



def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0)


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], inplace: bool = False) -> torch.Tensor:
    mean_t = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x.sub_(mean_t) if inplace else x - mean_t).div_(std_t)


def crop_flip_rotate(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
                     degrees: torch.Tensor | None = None, padding: int = 0) -> torch.Tensor:
    """RandomCrop(padding) -> RandomHorizontalFlip -> RandomRotation(nearest, fill 0) with per-image
    parameters, as one gather: all three only move pixels, so each output pixel is traced back to one source
    pixel of the zero-padded input (or to nothing, giving 0).

    Args:
        x: (B, C, H, W) float images.
        top, left: (B,) crop offsets in the padded image, in [0, 2 * padding].
        flip: (B,) bool, mirror left-right after cropping.
        degrees: (B,) counter-clockwise rotation about the centre, or None for no rotation.
        padding: zero padding on each side before cropping.
    """
    b, c, h, w = x.shape
    dev = x.device
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=dev)
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=dev)
    grid_y, grid_x = (t.reshape(1, h * w) for t in torch.meshgrid(ys, xs, indexing="ij"))  # pixel centres
    if degrees is None:
        col, row, inside = grid_x + (w - 1) * 0.5, grid_y + (h - 1) * 0.5, None
    else:
        # The inverse rotation, in pixel units about the centre, normalised to [-1, 1] and rounded to the
        # nearest pixel exactly as grid_sample(mode="nearest", align_corners=False) does (torchvision's rotate).
        theta = torch.deg2rad(degrees.double())
        cos, sin = (t.float().to(dev).view(b, 1) for t in (torch.cos(theta), torch.sin(theta)))
        col = ((grid_x * cos - grid_y * sin) / (0.5 * w) + 1.0).mul_(w).sub_(1.0).div_(2.0).round_()
        row = ((grid_x * sin + grid_y * cos) / (0.5 * h) + 1.0).mul_(h).sub_(1.0).div_(2.0).round_()
        col, row, inside = _clamp_to_image(col, row, h, w)  # outside the crop: 0
    col = col + flip.to(col.dtype).view(b, 1) * (w - 1 - 2 * col)  # mirror the crop's columns
    # Back to the unpadded input: pixels that fall in the zero padding are masked instead of gathered.
    col = col + (left.to(col.dtype).view(b, 1) - padding)
    row = row + (top.to(row.dtype).view(b, 1) - padding)
    if padding:
        col, row, in_image = _clamp_to_image(col, row, h, w)
        inside = in_image if inside is None else inside & in_image
    index = (row * w + col).long().view(b, 1, h * w).expand(b, c, h * w)
    out = x.reshape(b, c, h * w).gather(2, index).view(b, c, h, w)
    return out if inside is None else out.mul_(inside.to(x.dtype).view(b, 1, h, w))


def _clamp_to_image(col: torch.Tensor, row: torch.Tensor, h: int, w: int):
    """Pixel coordinates clamped into the H x W image, and whether they were inside it already."""
    col_in, row_in = col.clamp(0.0, w - 1.0), row.clamp(0.0, h - 1.0)
    return col_in, row_in, (col == col_in) & (row == row_in)


def _blend_(x: torch.Tensor, other: torch.Tensor | float, factor: torch.Tensor) -> torch.Tensor:
    """In place: clamp(f * x + (1 - f) * other, 0, 1) per image, computed as x + (1 - f) * (other - x), so
    f = 1 leaves x exactly as it was."""
    other = torch.as_tensor(other, dtype=x.dtype, device=x.device).expand_as(x)
    return x.lerp_(other, (1.0 - factor.to(x.dtype)).view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def _blend(x: torch.Tensor, other: torch.Tensor | float, factor: torch.Tensor) -> torch.Tensor:
    return _blend_(x.clone(), other, factor)


LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma weights, as PIL and torchvision


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (r * LUMA[0]).add_(g, alpha=LUMA[1]).add_(b, alpha=LUMA[2]).unsqueeze(1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, 0.0, factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, _grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, _grayscale(x), factor)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` (fraction of a turn, per image) in HSV space; saturation and value are kept.

    Float arithmetic only, mostly in place: boolean masks, torch.where, integer remainders and fresh
    image-sized allocations are each several times slower than an in-place float op on CPU.
    """
    r, g, b = x.unbind(1)
    v = x.amax(1)
    delta = x.amin(1).neg_().add_(v)  # = v * s
    # Which channel holds the max picks the sector offset (0, 2, 4) and numerator; ties go r, then g, as in
    # torchvision. As floats: v >= every channel, so sign(v - c) is 0 exactly when c is the max.
    s_r = torch.sub(v, r).sign_()
    s_g = torch.sub(v, g).sign_()
    is_b = s_r * s_g  # neither r nor g is the max
    is_g = s_r - is_b  # r is not, g is
    is_r = s_r.neg_().add_(1.0)
    numerator = torch.sub(g, b).mul_(is_r)  # 0 for grey pixels: hue 0 as in torchvision, and no 0/0
    numerator.addcmul_(torch.sub(b, r), is_g).addcmul_(torch.sub(r, g), is_b)
    h6 = numerator.div_(delta.clamp_min(1e-12)).add_(is_g, alpha=2.0).add_(is_b, alpha=4.0)
    h6.add_(6.0 * shift.view(-1, 1, 1))  # hue in sixths of a turn, shifted
    # HSV -> RGB in closed form: channel n (r=5, g=3, b=1) is v - v*s*clamp(min(k, 4 - k), 0, 1), k=(n+h6)%6.
    k = torch.tensor([5.0, 3.0, 1.0], device=x.device).view(1, 3, 1, 1) + h6.unsqueeze(1)
    k.sub_(torch.div(k, 6.0).floor_().mul_(6.0))
    ramp = torch.minimum(k, torch.rsub(k, 4.0), out=k).clamp_(0.0, 1.0)
    return ramp.mul_(delta.unsqueeze(1)).neg_().add_(v.unsqueeze(1))


def sample_jitter_params(b: int, gen: torch.Generator, brightness: float = 0.2, contrast: float = 0.2,
                         saturation: float = 0.2, hue: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """ColorJitter's per-image parameters: factors (B, 4) for brightness, contrast, saturation, hue, and the
    order (B, 4) in which each image gets the four ops (a random permutation per image, as torchvision)."""
    factors = torch.stack([
        _uniform(b, 1 - brightness, 1 + brightness, gen), _uniform(b, 1 - contrast, 1 + contrast, gen),
        _uniform(b, 1 - saturation, 1 + saturation, gen), _uniform(b, -hue, hue, gen),
    ], dim=1)
    order = torch.argsort(torch.rand(b, 4, generator=gen), dim=1)
    return factors, order


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Apply the four jitter ops to each image in its own order, slot by slot over the whole batch.

    Brightness, contrast and saturation are each a blend ``clamp(f * x + (1 - f) * other)`` with other = 0,
    the image's mean grey, or the pixel's grey; so each slot is one blend with per-image f and other, and
    f = 1 (an exact identity) for images whose slot holds hue. Hue, the costly op, runs only on those images.
    """
    b = x.shape[0]
    factors, order = factors.to(x.device), order.to(x.device)
    # Per (image, slot) blend parameters, computed once for all four slots.
    f = torch.where(order < 3, factors.gather(1, order.clamp_max(2)), 1.0).to(x.dtype)
    use_gray, use_mean = (order == 2).to(x.dtype), (order == 1).to(x.dtype)
    x = x.clone()  # then every blend and hue shift below works in place
    for slot in range(4):
        gray = _grayscale(x)
        mean = gray.mean(dim=(1, 2, 3), keepdim=True)
        other = gray.mul_(use_gray[:, slot].view(b, 1, 1, 1)).add_(mean * use_mean[:, slot].view(b, 1, 1, 1))
        _blend_(x, other, f[:, slot])
        idx = torch.nonzero(order[:, slot] == 3).squeeze(1)
        if idx.numel():
            x[idx] = adjust_hue(x[idx], factors[idx, 3])
    return x


def erase(x: torch.Tensor, boxes: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Zero the box (top, left, height, width) of each image; a box of height 0 erases nothing."""
    _, _, h, w = x.shape
    top, left, bh, bw = (v.view(-1, 1).to(x.device) for v in boxes.unbind(1))
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = ((rows >= top) & (rows < top + bh)).to(x.dtype)  # (B, H): small, so bool ops are cheap here
    in_cols = ((cols >= left) & (cols < left + bw)).to(x.dtype)
    keep = (1.0 - in_rows.unsqueeze(2) * in_cols.unsqueeze(1)).unsqueeze(1)
    return x.mul_(keep) if inplace else x * keep


def sample_erasing_boxes(b: int, h: int, w: int, gen: torch.Generator, p: float = 0.5,
                         scale: tuple[float, float] = (0.02, 0.33), ratio: tuple[float, float] = (0.3, 3.3),
                         attempts: int = 10) -> torch.Tensor:
    """RandomErasing's boxes, (B, 4) int64 (top, left, height, width); height 0 where nothing is erased.

    As torchvision: with probability p, up to 10 attempts of area ~ U(scale) * H * W and log-uniform aspect
    ratio; the first box that fits strictly inside the image is used, else nothing is erased.
    """
    area = h * w * _uniform(b * attempts, *scale, gen).view(b, attempts)
    aspect = torch.exp(_uniform(b * attempts, math.log(ratio[0]), math.log(ratio[1]), gen)).view(b, attempts)
    bh = torch.sqrt(area * aspect).round().long()
    bw = torch.sqrt(area / aspect).round().long()
    fits = (bh < h) & (bw < w)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.zeros(b, dtype=torch.long))
    bh, bw = bh.gather(1, first.view(-1, 1)).squeeze(1), bw.gather(1, first.view(-1, 1)).squeeze(1)
    apply = (torch.rand(b, generator=gen) < p) & fits.any(1)
    top = (torch.rand(b, generator=gen) * (h - bh + 1)).long().clamp_max(h - 1)
    left = (torch.rand(b, generator=gen) * (w - bw + 1)).long().clamp_max(w - 1)
    return torch.stack([top, left, bh * apply, bw * apply], dim=1)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


class CifarTrainAugment:
    """The paper's CIFAR-10 train transform, batched: RandomCrop(32, 4) -> HFlip -> Rotation(15) -> ColorJitter
    (0.2, 0.2, 0.2, 0.1) -> to [0, 1] -> RandomErasing() -> Normalize. Random parameters come from ``gen`` on
    the CPU (so a given seed gives the same batch on any device); the pixels are processed on x's device."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], padding: int = 4, degrees: float = 15.0):
        self.mean, self.std, self.padding, self.degrees = mean, std, padding, degrees

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, _, h, w = images.shape
        dev = images.device
        x = to_float(images)  # exact for uint8: crop/flip/rotate(nearest) move pixels, they do not mix them
        top = torch.randint(0, 2 * self.padding + 1, (b,), generator=gen).to(dev)
        left = torch.randint(0, 2 * self.padding + 1, (b,), generator=gen).to(dev)
        flip = (torch.rand(b, generator=gen) < 0.5).to(dev)
        degrees = _uniform(b, -self.degrees, self.degrees, gen)
        x = crop_flip_rotate(x, top, left, flip, degrees, self.padding)
        x = color_jitter(x, *sample_jitter_params(b, gen))
        x = erase(x, sample_erasing_boxes(b, h, w, gen), inplace=True)  # x is this call's own tensor here
        return normalize(x, self.mean, self.std, inplace=True)


class DigitsTrainAugment:
    """The paper's (Fashion-)MNIST train transform, batched: (Resize 32 for the CNNs, done at load) -> HFlip ->
    Normalize.

    The paper flips digits left-right; ``hflip=False`` turns that off."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], hflip: bool = True):
        self.mean, self.std, self.hflip = mean, std, hflip

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = to_float(images)
        flips = torch.rand(images.shape[0], generator=gen) < 0.5  # drawn either way: same stream for both
        if self.hflip:  # a flip alone: where() of the mirrored batch, exactly crop_flip_rotate's pixels, 3x cheaper
            x = torch.where(flips.to(images.device).view(-1, 1, 1, 1), x.flip(-1), x)
        return normalize(x, self.mean, self.std, inplace=True)  # x is this call's own tensor
