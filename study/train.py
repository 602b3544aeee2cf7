"""``python -m study.train``: one decoupled SimCLR run, no Ray, progress per epoch.

At the end: linear evaluation, a linear probe per block, spectra and effective rank per block, max
block MACs and (on CUDA) peak memory. With ``--json`` the last line on stdout is one JSON object
with all of these, the final ``knn_val_acc`` and the per-epoch ``history``. ``--checkpoint FILE``
saves after every epoch and resumes from FILE when it exists.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from study._cli import log, parser, print_json, run, threshold_arg
from trainables.config import TrainConfig
from trainables.data import SPECS
from trainables.evaluation import LINEAR_EPOCHS
from trainables.losses import SUBSAMPLE_MODES
from trainables.models import ARCHS
from trainables.report import final_report
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
    p.add_argument("--linear-epochs", type=int, default=LINEAR_EPOCHS,
                   help="epochs of linear evaluation and of each probe (0: skip evaluation)")
    p.add_argument("--out", type=Path, default=None,
                   help="write spectra (.npy, PNG), plots and metrics.json here")
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
    metrics = {}
    if args.linear_epochs > 0:
        metrics, _ = final_report(trainer, args.linear_epochs, args.out, log)
        log(summary(metrics))
    if args.json:
        print_json({
            "config": c.to_dict(),
            "split_points": [list(p) for p in trainer.model.split_points],
            "knn_val_acc": final,
            **metrics,
            "history": trainer.history,
        })
    return 0


def summary(m: dict) -> str:
    def row(values):
        return " ".join(f"{v:.3f}" for v in values)

    memory = "not measured (CPU)" if m["peak_memory_bytes"] is None else (
        f"{m['peak_memory_bytes'] / 2**30:.2f} GiB"
    )
    return (
        f"linear eval: train {m['linear_train_acc']:.4f}  val {m['linear_val_acc']:.4f}  "
        f"test {m['linear_test_acc']:.4f}\n"
        f"probes val [{row(m['probe_val_acc'])}]  test [{row(m['probe_test_acc'])}]\n"
        f"effective rank [{' '.join(f'{v:.1f}' for v in m['effective_rank'])}]\n"
        f"max block MACs {m['max_block_macs'] / 1e6:.1f} M  peak memory {memory}"
    )


if __name__ == "__main__":
    run(main)
