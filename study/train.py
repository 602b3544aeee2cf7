"""``python -m study.train``: one decoupled SimCLR run, no Ray, progress per epoch.

At the end: linear evaluation, a linear probe per block, spectra and effective rank per block, max
block MACs and (on CUDA) peak memory. With ``--json`` the last line on stdout is one JSON object
with all of these, the final ``knn_val_acc`` and the per-epoch ``history``. ``--checkpoint FILE``
saves after every epoch and resumes from FILE when it exists.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from study.engine.console import log, parser, print_json, run, threshold_arg
from study.records.exported import load_export
from trainables.config import TrainConfig
from trainables.paper import PROTOCOL
from trainables.specs import ARCH_LAYERS, SPECS, SUBSAMPLE_MODES

if TYPE_CHECKING:
    from trainables.pipeline import PipelinedTrainer

DEFAULTS = TrainConfig()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = parser("python -m study.train", __doc__)
    # Run settings appear in the namespace only when given, so that they override --config.
    run_flag = functools.partial(p.add_argument, default=argparse.SUPPRESS)
    run_flag("--dataset", help=f"one of {', '.join(SPECS)} (default: {DEFAULTS.dataset})")
    run_flag("--arch", help=f"one of {', '.join(ARCH_LAYERS)} (default: the dataset's)")
    run_flag("--K", type=int, help=f"decoupled blocks, divides the net (default: {DEFAULTS.K})")
    run_flag("--threshold", type=threshold_arg,
             help="T of Eq. (5) in [-1, 1]; 'none' (default) is plain SimCLR, Eq. (1)")
    run_flag("--threshold-slope", type=float,
             help="block k uses T + slope (k - 1) / (K - 1), clipped to [-1, 1] (default: 0)")
    run_flag("--subsample", help=f"{'/'.join(SUBSAMPLE_MODES)} (default: {DEFAULTS.subsample})")
    run_flag("--head", help="local projector heads: paper (default, the appendix's) or mlp")
    run_flag("--tau", type=float, help=f"temperature (default: {DEFAULTS.tau})")
    run_flag("--epochs", type=int, help=f"(default: {DEFAULTS.epochs})")
    run_flag("--batch-size", type=int, help=f"(default: {DEFAULTS.batch_size})")
    run_flag("--lr", type=float, help=f"Adam's learning rate (default: {DEFAULTS.lr})")
    run_flag("--weight-decay", type=float, help=f"(default: {DEFAULTS.weight_decay})")
    run_flag("--width", type=float, help="channel multiplier (default: the dataset's)")
    run_flag("--subset", type=int, help="use only this many train images")
    run_flag("--data-dir", help=f"(default: {DEFAULTS.data_dir})")
    run_flag("--seed", type=int, help=f"(default: {DEFAULTS.seed})")
    run_flag("--device", help="auto (default), cpu or cuda[:N]")
    run_flag("--precision", help="auto (default: bf16 on CUDA, fp32 elsewhere), bf16 or fp32")
    run_flag("--monitor-every", type=int,
             help="the kNN monitor every N epochs and at the last (default: every epoch)")
    run_flag("--monitor-images", type=int,
             help="the monitor's bank and queries: the first N of the train part and of the "
                  "validation split (default: all)")
    run_flag("--stages", type=int,
             help="train the K blocks in S processes at once, pipelined, with the same result "
                  "(default 1: one after another in this process); on CUDA one GPU each")
    run_flag("--partition", help="blocks per stage: auto (balanced on measured block times, "
                                 "default) or even")
    p.add_argument("--no-download", action="store_true", help="never try to download data")
    p.add_argument("--config", type=Path, default=None,
                   help="a study.export YAML: train its best configuration (flags override)")
    p.add_argument("--config-K", type=int, default=None,
                   help="with --config: the best configuration for this K instead")
    p.add_argument("--checkpoint", type=Path, default=None, help="save here; resume if present")
    p.add_argument("--linear-epochs", type=int, default=PROTOCOL.linear_epochs,
                   help="epochs of linear evaluation and of each probe (0: skip evaluation)")
    p.add_argument("--out", type=Path, default=None,
                   help="write spectra (.npy, PNG), plots and metrics.json here")
    p.add_argument("--json", action="store_true", help="end with one JSON line on stdout")
    return p.parse_args(argv)


RUN_FLAGS = {f.name for f in fields(TrainConfig)} - {"download"}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    base = load_export(args.config, args.config_K) if args.config is not None else {}
    given = {k: v for k, v in vars(args).items() if k in RUN_FLAGS}
    cfg = {**base, **given}
    if args.no_download:
        cfg["download"] = False
    return TrainConfig.from_dict(cfg)


def epoch_line(record: dict, epochs: int) -> str:
    def row(values: list[float]) -> str:
        return " ".join(f"{v:.3f}" for v in values)

    return (
        f"epoch {record['epoch']}/{epochs}  loss [{row(record['loss'])}]  "
        f"kept+ [{row(record['kept_pos'])}]  kept- [{row(record['kept_neg'])}]  "
        + (f"knn_val {record['knn_val_acc']:.3f}  " if record["knn_val_acc"] is not None else "")
        + f"{record['epoch_seconds']:.1f} s  {record['images_per_s']:.0f} img/s"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = config_from_args(args)
    # torch loads once the configuration holds: bad input is told in a second.
    from trainables.pipeline import PipelinedTrainer, check_stage_devices
    from trainables.results import final_report
    from trainables.trainer import Trainer

    if args.checkpoint is not None and args.checkpoint.exists():
        trainer = Trainer.from_checkpoint(args.checkpoint, epochs=cfg.epochs, device=cfg.device,
                                          stages=cfg.stages, partition=cfg.partition)
        log(f"resumed {args.checkpoint} at epoch {trainer.epoch}")
    else:
        check_stage_devices(cfg.K, cfg.stages, cfg.device)  # before the data are loaded
        trainer = Trainer(cfg)
    c = trainer.cfg
    log(
        f"{c.dataset}: {c.arch} x{c.width} K={c.K} split after {trainer.model.split_points} "
        f"T={c.threshold} ({c.subsample}) tau={c.tau} on {trainer.device}, "
        f"{len(trainer.data.pretrain)} train images"
    )
    on_epoch = lambda r: log(epoch_line(r, c.epochs))  # noqa: E731
    # As the trainable runs it (trainables.tune_trainable): one stage is the trainer itself.
    with PipelinedTrainer(trainer, c.stages, c.partition) as pipeline:
        if c.stages > 1:
            log(f"{c.stages} stages, {pipeline.describe()}")
        pipeline.fit(on_epoch=on_epoch, checkpoint=args.checkpoint)
        if pipeline.stats:  # measured where blocks ran at once
            log(pipeline_line(pipeline))
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


def pipeline_line(pipeline: PipelinedTrainer) -> str:
    """The last epoch's pipeline: its step, each stage's compute, the ideal and the bubble."""
    stats = pipeline.stats[-1]
    compute = " ".join(f"{1e3 * s.compute / stats.steps:.0f}" for s in stats.stages)
    return (f"pipeline: {1e3 * stats.seconds / stats.steps:.0f} ms a step; stages compute "
            f"[{compute}] ms a step; ideal speed-up {stats.ideal:.2f}x, bubble "
            f"{100 * stats.bubble:.0f}%")


def summary(m: dict) -> str:
    def row(values):
        return " ".join(f"{v:.3f}" for v in values)

    memory = "not measured (CPU)" if m["peak_memory_bytes"] is None else (
        f"{m['peak_memory_bytes'] / 2**30:.2f} GiB "
        f"(training steps {m['peak_step_memory_bytes'] / 2**30:.2f} GiB)"
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
