"""``python -m study.train``: one decoupled SimCLR run, no Ray, progress per epoch.

With ``--json`` the last line on stdout is one JSON object: the final ``knn_val_acc`` and the
per-epoch ``history``. ``--checkpoint FILE`` saves after every epoch and resumes from FILE when
it exists.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from study._cli import log, parser, print_json, run, threshold_arg
from trainables.config import TrainConfig
from trainables.data import SPECS
from trainables.losses import SUBSAMPLE_MODES
from trainables.models import ARCHS
from trainables.train import Trainer

DEFAULTS = TrainConfig()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = parser("python -m study.train", __doc__)
    p.add_argument("--dataset", default=DEFAULTS.dataset, help=f"one of {', '.join(SPECS)}")
    p.add_argument("--arch", default=None, help=f"one of {', '.join(ARCHS)} (default: dataset's)")
    p.add_argument("--K", type=int, default=DEFAULTS.K, help="decoupled blocks (divides the net)")
    p.add_argument(
        "--threshold", type=threshold_arg, default=None,
        help="T of Eq. (5) in [-1, 1]; 'none' (default) is plain SimCLR, Eq. (1)",
    )
    p.add_argument("--subsample", default=DEFAULTS.subsample, help="/".join(SUBSAMPLE_MODES))
    p.add_argument("--tau", type=float, default=DEFAULTS.tau)
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--lr", type=float, default=DEFAULTS.lr)
    p.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay)
    p.add_argument(
        "--width", type=float, default=None, help="channel multiplier (default: dataset's)"
    )
    p.add_argument("--subset", type=int, default=None, help="use only this many train images")
    p.add_argument("--data-dir", default=DEFAULTS.data_dir)
    p.add_argument("--no-download", action="store_true", help="never try to download data")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--device", default=DEFAULTS.device, help="auto, cpu or cuda[:N]")
    p.add_argument("--checkpoint", type=Path, default=None, help="save here; resume if present")
    p.add_argument("--json", action="store_true", help="end with one JSON line on stdout")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        dataset=args.dataset, arch=args.arch, K=args.K, threshold=args.threshold,
        subsample=args.subsample, tau=args.tau, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, weight_decay=args.weight_decay, width=args.width, subset=args.subset,
        data_dir=args.data_dir, download=not args.no_download, seed=args.seed,
        device=args.device,
    )


def epoch_line(record: dict, epochs: int) -> str:
    def row(values: list[float]) -> str:
        return " ".join(f"{v:.3f}" for v in values)

    return (
        f"epoch {record['epoch']}/{epochs}  loss [{row(record['loss'])}]  "
        f"kept+ [{row(record['kept_pos'])}]  kept- [{row(record['kept_neg'])}]  "
        f"knn_val {record['knn_val_acc']:.3f}  "
        f"{record['epoch_seconds']:.1f} s  {record['images_per_s']:.0f} img/s"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = config_from_args(args)
    if args.checkpoint is not None and args.checkpoint.exists():
        trainer = Trainer.from_checkpoint(args.checkpoint, epochs=cfg.epochs, device=cfg.device)
        log(f"resumed {args.checkpoint} at epoch {trainer.epoch}")
    else:
        trainer = Trainer(cfg)
    c = trainer.cfg
    log(
        f"{c.dataset}: {c.arch} x{c.width} K={c.K} split after {trainer.model.split_points} "
        f"T={c.threshold} ({c.subsample}) tau={c.tau} on {trainer.device}, "
        f"{len(trainer.data.pretrain)} train images"
    )
    trainer.fit(
        on_epoch=lambda r: log(epoch_line(r, c.epochs)), checkpoint=args.checkpoint
    )
    final = trainer.history[-1]["knn_val_acc"] if trainer.history else None
    log(f"final kNN validation accuracy: {final:.4f}")
    if args.json:
        print_json({
            "config": c.to_dict(),
            "split_points": [list(p) for p in trainer.model.split_points],
            "knn_val_acc": final,
            "history": trainer.history,
        })
    return 0


if __name__ == "__main__":
    run(main)
