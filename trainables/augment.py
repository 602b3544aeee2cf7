"""SimCLR's augmentation without blur (appendix), drawn per image on a batch tensor (kornia).

Random resized crop to the image size, horizontal flip (p=0.5), colour jitter (0.4, 0.4, 0.4, 0.1)
with p=0.8 and grayscale with p=0.2. For 1-channel images only the ops that apply: crop, flip,
brightness and contrast. The batch stays on its device; kornia draws every image's parameters
independently (``same_on_batch=False``) from torch's global RNG, so a seed fixes the views.
"""

from __future__ import annotations

import kornia.augmentation as KA
import torch
from torch import nn

CROP_SCALE = (0.08, 1.0)  # torchvision's / SimCLR's RandomResizedCrop default
JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
P_JITTER, P_GRAY, P_FLIP = 0.8, 0.2, 0.5


class SimCLRAugment(nn.Module):
    """Maps a uint8 or [0, 1] float batch [B, C, H, W] to normalised augmented views."""

    def __init__(
        self,
        size: tuple[int, int],
        channels: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        crop_scale: tuple[float, float] = CROP_SCALE,
    ):
        super().__init__()
        jitter = JITTER if channels == 3 else dict(brightness=0.4, contrast=0.4)
        ops: list[nn.Module] = [
            # "resample" crops the whole batch in one warp; "slice" loops over images.
            KA.RandomResizedCrop(size, scale=crop_scale, cropping_mode="resample"),
            KA.RandomHorizontalFlip(p=P_FLIP),
            KA.ColorJitter(**jitter, p=P_JITTER),
        ]
        if channels == 3:
            ops.append(KA.RandomGrayscale(p=P_GRAY))
        self.ops = nn.Sequential(*ops)
        self.normalize = Normalize(mean, std)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.ops(to_float(x)))


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
