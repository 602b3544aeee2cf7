"""The decoupled ResNet encoder: stems, split points (Table 3) and local projector heads.

The residual blocks are torchvision's own ``BasicBlock`` (ResNet-18) and ``Bottleneck``
(ResNet-50). The network is cut into K decoupled blocks f^k holding equal runs of consecutive
residual blocks, the stem with the first (Sec. 3.1, appendix); each f^k has a projector head g^k.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from trainables.errors import ConfigError
from trainables.specs import (  # noqa: F401 (their home is trainables.specs)
    ARCH_LAYERS,
    HEADS,
    STEMS,
    allowed_K,
    arch_layers,
    check_K,
    n_residual_blocks,
    residual_positions,
    split_points,
)


@dataclass(frozen=True)
class ArchSpec:
    block: type[nn.Module]
    layers: tuple[int, ...]  # residual blocks per ResNet layer


ARCHS = {
    "resnet18": ArchSpec(BasicBlock, ARCH_LAYERS["resnet18"]),
    "resnet50": ArchSpec(Bottleneck, ARCH_LAYERS["resnet50"]),
}
BASE_WIDTHS = (64, 128, 256, 512)
PROJ_DIM = 128


def _arch(arch: str) -> ArchSpec:
    arch_layers(arch)  # one error for an unknown name
    return ARCHS[arch]


def _stem(kind: str, in_channels: int, width: int) -> nn.Sequential:
    if kind == "small":
        conv = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
    elif kind == "stl10":
        conv = nn.Conv2d(in_channels, width, kernel_size=5, stride=2, padding=2, bias=False)
    else:
        raise ConfigError(f"stem={kind!r} is unknown; allowed: {', '.join(STEMS)}")
    # No max-pool on these small images (appendix).
    return nn.Sequential(conv, nn.BatchNorm2d(width), nn.ReLU(inplace=True))


def residual_blocks(arch: str, width: float, stem_width: int) -> list[nn.Module]:
    """The residual blocks of ``arch`` in order, with torchvision's downsample rule."""
    spec = _arch(arch)
    blocks: list[nn.Module] = []
    inplanes = stem_width
    for li, n in enumerate(spec.layers):
        planes = scaled(BASE_WIDTHS[li], width)
        for bi in range(n):
            stride = 2 if (li > 0 and bi == 0) else 1
            out = planes * spec.block.expansion
            downsample = None
            if stride != 1 or inplanes != out:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(out),
                )
            blocks.append(spec.block(inplanes, planes, stride=stride, downsample=downsample))
            inplanes = out
    return blocks


def scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class LocalHead(nn.Module):
    """g^k for k < K (appendix): 3x3 conv stride 2 keeping the channels, BN, ReLU, GAP, FC, ReLU,
    FC to 128."""

    def __init__(self, channels: int, out_dim: int = PROJ_DIM):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, channels),
            nn.ReLU(inplace=True),
            nn.Linear(channels, out_dim),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class MLPHead(nn.Module):
    """g^K: SimCLR's 2-layer MLP projection head on the pooled final representation."""

    def __init__(self, channels: int, out_dim: int = PROJ_DIM):
        super().__init__()
        self.net = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, channels),
            nn.ReLU(inplace=True),
            nn.Linear(channels, out_dim),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)




def make_head(design: str, channels: int, last: bool, out_dim: int = PROJ_DIM) -> nn.Module:
    """g^k of one block.

    - ``paper`` (the appendix): a 3x3 stride-2 conv keeping the channels, BN, ReLU, then the
      pooled 2-layer MLP, for every block but the last, which has SimCLR's MLP head alone.
    - ``mlp``: SimCLR's pooled 2-layer MLP for every block, no conv, as in much of the local
      learning literature that pools before projecting. On ResNet-50 / CIFAR-10 at K = 16 it
      costs a few M MACs a head against about 151 M for the paper's conv head.
    """
    if design not in HEADS:
        raise ConfigError(f"head={design!r} is unknown; allowed: {', '.join(HEADS)}")
    if design == "paper" and not last:
        return LocalHead(channels, out_dim)
    return MLPHead(channels, out_dim)


class DecoupledResNet(nn.Module):
    """A ResNet cut into K decoupled blocks ``blocks[k]`` (f^k) with heads ``heads[k]`` (g^k).

    ``forward`` returns the final representation h^K; training goes block by block (see
    ``trainables.trainer``) so that no gradient crosses a decoupling point.
    """

    def __init__(
        self,
        arch: str = "resnet18",
        K: int = 1,
        in_channels: int = 3,
        stem: str = "small",
        width: float = 1.0,
        proj_dim: int = PROJ_DIM,
        head: str = "paper",
    ):
        super().__init__()
        check_K(arch, K)
        if not width > 0:
            raise ConfigError(f"width={width} must be > 0")
        self.arch, self.K = arch, K
        self.split_points = split_points(arch, K)
        stem_width = scaled(BASE_WIDTHS[0], width)
        res = residual_blocks(arch, width, stem_width)
        per_block = len(res) // K
        groups = [res[k * per_block:(k + 1) * per_block] for k in range(K)]
        groups[0] = [_stem(stem, in_channels, stem_width), *groups[0]]
        self.blocks = nn.ModuleList(nn.Sequential(*g) for g in groups)
        self.channels = [_out_channels(g[-1]) for g in groups]
        self.head = head
        self.heads = nn.ModuleList(
            make_head(head, c, last=k == K - 1, out_dim=proj_dim)
            for k, c in enumerate(self.channels)
        )
        self.residuals_per_block = per_block

    @property
    def feature_dim(self) -> int:
        return self.channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def encoder(self) -> nn.Sequential:
        """The blocks f^1..f^K as one module (shared, not copied): what a trained run keeps.
        The heads g^k only serve training; at K = 16 on ResNet-50 they hold 165 M parameters
        against the encoder's 23.5 M."""
        return nn.Sequential(*self.blocks)

    def block_outputs(self, x: torch.Tensor, pool: bool = False) -> list[torch.Tensor]:
        """Every h^k, k = 1..K (for probes and spectra); with ``pool`` each is global-average
        pooled to [B, C_k] as soon as it is made, so only one feature map is held at a time."""
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x.mean(dim=(2, 3)) if pool else x)
        return outs


def _out_channels(block: nn.Module) -> int:
    if isinstance(block, Bottleneck):
        return block.bn3.num_features
    if isinstance(block, BasicBlock):
        return block.bn2.num_features
    return block[1].num_features  # a stem: conv, BN, ReLU
