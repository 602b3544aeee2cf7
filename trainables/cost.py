"""Cost per decoupled block (Table 1): forward MACs of each block and its head, parameters.

MACs are counted by ``torch.utils.flop_counter`` on the real modules (2 FLOPs per MAC), so they
follow whatever the modules do; nothing here is a hand formula.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from trainables.models import DecoupledResNet, residual_positions


@dataclass
class BlockCost:
    index: int  # 1-based block k
    residual_blocks: list[tuple[int, int]]  # (layer, block) of the residual blocks it holds
    split_point: tuple[int, int] | None  # the decoupling point after it; None for the last
    output_shape: list[int]  # h^k per image, [C, H, W]
    macs: int  # forward MACs per image of f^k
    head_macs: int  # forward MACs per image of g^k
    params: int
    head_params: int

    def to_dict(self) -> dict:
        return asdict(self)


def forward_macs(module: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """MACs of one forward pass of ``module`` on ``x`` (per batch), and its output."""
    with FlopCounterMode(display=False) as counter:
        out = module(x)
    return counter.get_total_flops() // 2, out


@torch.no_grad()
def block_costs(model: DecoupledResNet, input_shape: tuple[int, int, int]) -> list[BlockCost]:
    """One ``BlockCost`` per block, measured on a single image of ``input_shape`` [C, H, W]."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    h = torch.zeros(1, *input_shape, device=device)
    positions = residual_positions(model.arch)
    per = model.residuals_per_block
    costs = []
    try:
        for k, (block, head) in enumerate(zip(model.blocks, model.heads)):
            macs, h = forward_macs(block, h)
            head_macs, _ = forward_macs(head, h)
            costs.append(BlockCost(
                index=k + 1,
                residual_blocks=positions[k * per:(k + 1) * per],
                split_point=model.split_points[k] if k < model.K - 1 else None,
                output_shape=list(h.shape[1:]),
                macs=macs,
                head_macs=head_macs,
                params=_count(block),
                head_params=_count(head),
            ))
    finally:
        model.train(was_training)
    return costs


def max_block_macs(costs: list[BlockCost]) -> int:
    """The slowest block's own MACs, heads excluded, as Table 1 counts them."""
    return max(c.macs for c in costs)


def max_block_head_macs(costs: list[BlockCost]) -> int:
    """The parallel cost of a training step: the slowest block together with its head."""
    return max(c.macs + c.head_macs for c in costs)


def cost_summary(costs: list[BlockCost]) -> dict[str, int]:
    """The cost metrics every run reports (and a study may minimise)."""
    return {
        "max_block_macs": max_block_macs(costs),
        "max_block_head_macs": max_block_head_macs(costs),
        "head_params": sum(c.head_params for c in costs),
        "encoder_params": sum(c.params for c in costs),
    }


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
