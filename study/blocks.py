"""``python -m study.blocks``: the decoupled blocks of a network, their split points and cost.

One row per block: the residual blocks it holds, the decoupling point after it (Table 3), its
output shape, forward MACs per image of the block and of its head, and parameters; then the
largest block's MACs (Table 1's measure), the largest block plus its head (what a parallel
training step costs), and the parameters of the encoder and of the heads.
"""

from __future__ import annotations

import argparse

from study.engine.console import parser, print_json, run
from study.records.formatting import si
from trainables.cost import block_costs, cost_summary
from trainables.data import SPECS, dataset_spec
from trainables.models import ARCHS, HEADS, DecoupledResNet


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = parser("python -m study.blocks", __doc__)
    p.add_argument("--dataset", default="cifar10", help=f"one of {', '.join(SPECS)}")
    p.add_argument("--arch", default=None, help=f"one of {', '.join(ARCHS)} (default: dataset's)")
    p.add_argument("--K", type=int, default=4, help="number of decoupled blocks")
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    p.add_argument("--head", default="paper", choices=HEADS,
                   help="local projector heads (default: paper, the appendix's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def blocks_table(dataset: str, arch: str | None, K: int, width: float = 1.0,
                 head: str = "paper") -> dict:
    spec = dataset_spec(dataset)
    arch = arch or spec.arch
    model = DecoupledResNet(arch, K, spec.channels, spec.stem, width, head=head)
    costs = block_costs(model, (spec.channels, spec.size, spec.size))
    return {
        "dataset": dataset,
        "arch": arch,
        "K": K,
        "width": width,
        "head": head,
        "input_shape": [spec.channels, spec.size, spec.size],
        "split_points": [list(p) for p in model.split_points],
        "blocks": [c.to_dict() for c in costs],
        **cost_summary(costs),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    table = blocks_table(args.dataset, args.arch, args.K, args.width, args.head)
    if args.json:
        print_json(table)
        return 0
    print(f"{table['arch']} on {args.dataset} {tuple(table['input_shape'])}, K={args.K}, "
          f"{args.head} heads")
    header = f"{'k':>3}  {'residual blocks':<22} {'split after':<12} {'output':<14}"
    print(header + f" {'MACs':>9} {'head MACs':>10} {'params':>9}")
    for b in table["blocks"]:
        held = f"({b['residual_blocks'][0][0]},{b['residual_blocks'][0][1]})"
        if len(b["residual_blocks"]) > 1:
            held += f"..({b['residual_blocks'][-1][0]},{b['residual_blocks'][-1][1]})"
        split = "-" if b["split_point"] is None else "({},{})".format(*b["split_point"])
        shape = "x".join(map(str, b["output_shape"]))
        print(
            f"{b['index']:>3}  {held:<22} {split:<12} {shape:<14} {si(b['macs']):>9} "
            f"{si(b['head_macs']):>10} {si(b['params']):>9}"
        )
    print(f"max block MACs (heads excluded, as Table 1): {si(table['max_block_macs'])}")
    print(f"max block + head MACs (a training step's parallel cost): "
          f"{si(table['max_block_head_macs'])}")
    print(f"parameters: encoder {si(table['encoder_params'])}, heads "
          f"{si(table['head_params'])}")
    return 0


if __name__ == "__main__":
    run(main)
