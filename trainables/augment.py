"""SimCLR's augmentation without blur (appendix), drawn per image on a batch tensor.

Random resized crop to the image size, horizontal flip (p=0.5), colour jitter (0.4, 0.4, 0.4, 0.1)
with p=0.8 and grayscale with p=0.2. For 1-channel images only the ops that apply: crop, flip,
brightness and contrast.

Every image gets its own crop box, flip, jitter factors and grayscale draw, sampled on the batch's
device by one ``torch.rand`` call; the views are made by one ``grid_sample`` and a few elementwise
ops. Nothing reads a value back to the host, so on a GPU the augmentation never stalls the
training step (kornia's ops did, about 16 times per step). Each op follows torchvision's
definition (``RandomResizedCrop``'s ten tries and fallback, bilinear resizing of the integer box,
``adjust_brightness`` / ``contrast`` / ``saturation`` / ``hue``); the tests check it against
torchvision image by image. As in kornia, the jitter's order is drawn once per batch, not per
image, from the module's own host generator ``rng`` (Python's ``random``, seeded at construction):
choosing which op runs next needs a host value, and reading one from a tensor would be a read.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

CROP_SCALE = (0.08, 1.0)  # torchvision's / SimCLR's RandomResizedCrop defaults
CROP_RATIO = (3 / 4, 4 / 3)
CROP_TRIES = 10
JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
P_JITTER, P_GRAY, P_FLIP = 0.8, 0.2, 0.5
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


@dataclass
class Views:
    """One batch's random draws, all on the batch's device except ``order``.

    ``boxes``: [B, 4] integer (top, left, height, width); ``flip``, ``jitter``, ``gray``: [B]
    booleans; ``factors``: [B, n_ops] jitter factors in ``ops`` order; ``order``: the op indices
    in the order they apply to this batch.
    """

    boxes: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    factors: torch.Tensor
    gray: torch.Tensor
    order: list[int]


class SimCLRAugment(nn.Module):
    """Maps a uint8 or [0, 1] float batch [B, C, H, W] to normalised augmented views."""

    def __init__(
        self,
        size: tuple[int, int],
        channels: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        crop_scale: tuple[float, float] = CROP_SCALE,
        crop_ratio: tuple[float, float] = CROP_RATIO,
        seed: int = 0,
    ):
        super().__init__()
        self.rng = random.Random(seed)  # the jitter order; the rest uses torch's generators
        self.size = tuple(size)
        self.crop_scale = crop_scale
        self.crop_ratio = crop_ratio
        # Saturation and hue need colour: a 1-channel image only gets brightness and contrast.
        names = ("brightness", "contrast", "saturation", "hue")[: 4 if channels == 3 else 2]
        self.ops = names
        # Factor ranges as torchvision's ColorJitter draws them: [1 - s, 1 + s], hue [-h, h].
        ranges = [
            (-JITTER[n], JITTER[n]) if n == "hue" else (max(0.0, 1 - JITTER[n]), 1 + JITTER[n])
            for n in names
        ]
        # Buffers follow the module to its device: no host-to-device copy per batch.
        self.register_buffer("factor_low", torch.tensor([r[0] for r in ranges]), persistent=False)
        self.register_buffer("factor_high", torch.tensor([r[1] for r in ranges]),
                             persistent=False)
        self.p_gray = P_GRAY if channels == 3 else 0.0
        self.normalize = Normalize(mean, std)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.sample(x.shape, x.device))

    def sample(self, shape: torch.Size | tuple[int, ...], device: torch.device) -> Views:
        """Draw every image's parameters at once, on ``device``."""
        n, _, in_h, in_w = shape
        n_ops = len(self.ops)
        u = torch.rand(n, 2 * CROP_TRIES + 5 + n_ops, device=device)
        u_scale, u_ratio = u[:, :CROP_TRIES], u[:, CROP_TRIES:2 * CROP_TRIES]
        u_top, u_left, u_flip, u_jitter, u_gray = u[:, 2 * CROP_TRIES:2 * CROP_TRIES + 5].T
        u_factors = u[:, 2 * CROP_TRIES + 5:]
        boxes = self._crop_boxes(u_scale, u_ratio, u_top, u_left, in_h, in_w)
        lows, highs = self.factor_low.to(device), self.factor_high.to(device)
        order = self.rng.sample(range(n_ops), n_ops)
        return Views(
            boxes=boxes,
            flip=u_flip < P_FLIP,
            jitter=u_jitter < P_JITTER,
            factors=lows + (highs - lows) * u_factors,
            gray=u_gray < self.p_gray,
            order=order,
        )

    def _crop_boxes(self, u_scale, u_ratio, u_top, u_left, in_h: int, in_w: int) -> torch.Tensor:
        """torchvision's RandomResizedCrop.get_params for every image: ten tries of (area,
        log-uniform aspect ratio); the first that fits wins, else the centre fallback."""
        area = in_h * in_w
        target = area * (self.crop_scale[0] + (self.crop_scale[1] - self.crop_scale[0]) * u_scale)
        lo, hi = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        aspect = torch.exp(lo + (hi - lo) * u_ratio)
        w = torch.sqrt(target * aspect).round()
        h = torch.sqrt(target / aspect).round()
        fits = (w > 0) & (w <= in_w) & (h > 0) & (h <= in_h)
        first = fits.float().argmax(1, keepdim=True)  # the first try that fits
        any_fit = fits.any(1)
        fb_h, fb_w = _fallback_size(in_h, in_w, self.crop_ratio)
        h = torch.where(any_fit, h.gather(1, first).squeeze(1), float(fb_h))
        w = torch.where(any_fit, w.gather(1, first).squeeze(1), float(fb_w))
        # randint(0, H - h + 1) as the floor of a uniform draw; the fallback is centred.
        top = torch.where(any_fit, (u_top * (in_h - h + 1)).floor(), float((in_h - fb_h) // 2))
        left = torch.where(any_fit, (u_left * (in_w - w + 1)).floor(), float((in_w - fb_w) // 2))
        return torch.stack([top, left, h, w], dim=1)

    def apply(self, x: torch.Tensor, v: Views) -> torch.Tensor:
        """The views of ``x`` under the draws ``v``: crop + flip, jitter, grayscale, normalise."""
        img = resized_crop(to_float(x), v.boxes, v.flip, self.size)
        jittered = img
        for j in v.order:
            jittered = _JITTER_OPS[self.ops[j]](jittered, v.factors[:, j].view(-1, 1, 1, 1))
        img = torch.where(v.jitter.view(-1, 1, 1, 1), jittered, img)
        if self.p_gray > 0:
            img = torch.where(v.gray.view(-1, 1, 1, 1), grayscale(img).expand_as(img), img)
        return self.normalize(img)


def _fallback_size(in_h: int, in_w: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's centre crop when no try fits: the whole image, aspect ratio clamped."""
    in_ratio = in_w / in_h
    if in_ratio < min(ratio):
        w = in_w
        return int(round(w / min(ratio))), w
    if in_ratio > max(ratio):
        h = in_h
        return h, int(round(h * max(ratio)))
    return in_h, in_w


def resized_crop(
    img: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """Crop each image to its integer box (top, left, h, w), resize bilinearly to ``size``
    (torchvision's crop then ``resize`` without antialias: half-pixel centres, edges clamped to
    the box) and mirror the images whose ``flip`` is set; one ``grid_sample`` for the batch."""
    n, _, in_h, in_w = img.shape
    out_h, out_w = size
    top, left, h, w = boxes.to(img.dtype).unbind(1)
    ys = _source_coords(top, h, out_h)
    xs = _source_coords(left, w, out_w)
    xs = torch.where(flip.view(-1, 1), xs.flip(1), xs)
    # Pixel coordinates to grid_sample's [-1, 1] (align_corners=False).
    gx = (2 * xs + 1) / in_w - 1
    gy = (2 * ys + 1) / in_h - 1
    grid = torch.stack([gx.unsqueeze(1).expand(n, out_h, out_w),
                        gy.unsqueeze(2).expand(n, out_h, out_w)], dim=-1)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _source_coords(start: torch.Tensor, length: torch.Tensor, out: int) -> torch.Tensor:
    """[B, out] source pixel coordinates of each output pixel inside [start, start + length)."""
    u = torch.arange(out, device=start.device, dtype=start.dtype) + 0.5
    src = start.unsqueeze(1) + u * (length / out).unsqueeze(1) - 0.5
    return torch.maximum(torch.minimum(src, (start + length - 1).unsqueeze(1)), start.unsqueeze(1))


def grayscale(img: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] luma of an RGB batch (torchvision's weights); a 1-channel batch as is."""
    if img.shape[1] == 1:
        return img
    r, g, b = img.unbind(1)
    wr, wg, wb = GRAY_WEIGHTS
    return (wr * r + wg * g + wb * b).unsqueeze(1)


def _blend(img: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * img + (1 - factor) * other).clamp(0, 1)


def adjust_brightness(img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (img * factor).clamp(0, 1)


def adjust_contrast(img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = grayscale(img).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(img, mean, factor)


def adjust_saturation(img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(img, grayscale(img), factor)


def adjust_hue(img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``factor`` turns (RGB -> HSV -> RGB, as torchvision)."""
    r, g, b = img.unbind(1)
    maxc, minc = img.amax(1), img.amin(1)
    chroma = maxc - minc
    flat = chroma == 0
    div = torch.where(flat, torch.ones_like(chroma), chroma)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    hue = torch.where(is_r, bc - gc, torch.where(is_g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(flat, torch.zeros_like(hue), hue)
    hue = torch.remainder(hue / 6.0 + factor.view(-1, 1, 1), 1.0)
    sat = chroma / torch.where(flat, torch.ones_like(maxc), maxc)
    # HSV -> RGB: channel n takes v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6 h) mod 6.
    n = torch.arange(5.0, 0.0, -2.0, device=img.device).view(1, 3, 1, 1)  # 5, 3, 1
    k = torch.remainder(n + 6.0 * hue.unsqueeze(1), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp(0, 1)
    v, s = maxc.unsqueeze(1), sat.unsqueeze(1)
    return (v - v * s * ramp).clamp(0, 1)


_JITTER_OPS = {
    "brightness": adjust_brightness,
    "contrast": adjust_contrast,
    "saturation": adjust_saturation,
    "hue": adjust_hue,
}


class Normalize(nn.Module):
    """Per-channel standardisation; the same for augmented and test images."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (to_float(x) - self.mean) / self.std


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
