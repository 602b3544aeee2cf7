"""The Ray Tune trainable: the training core as a function trainable.

The trial process touches Ray only. Each epoch it reports the validation kNN accuracy (the study's
objective; never a test metric) with the epoch's metrics under ``METRICS``; at the last epoch it
runs the final evaluation, writes the report (arrays, plots, metrics.json, the encoder as a state
dict of the blocks, heads left out) into ``REPORT_DIR`` of its final checkpoint, and reports once
more with ``trial_finished``: a trial that ends without that key was stopped early. The driver
(``study.engine.tracking``) turns these results into MLflow runs, so a trial never opens the
tracking store: no SQLAlchemy start-up per trial and a single writer to a SQLite store.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from ray import tune

from trainables.config import TrainConfig
from trainables.cost import block_costs, cost_summary
from trainables.pipeline import PipelinedTrainer
from trainables.results import final_report
from trainables.specs import (  # noqa: F401 (their home is trainables.specs)
    CHECKPOINT_FILE,
    ENCODER_FILE,
    FINAL_FILE,
    REPORT_DIR,
)
from trainables.trainer import Trainer, resolve_device

OBJECTIVE = "knn_val_acc"
FINISHED = "trial_finished"
METRICS = "metrics"  # the result key holding the epoch's metrics, {name: value}, step = epoch
DATA = "data"  # the first result of a trial process: DataBundle.describe() of its data set
FINAL = "final"  # the result key holding the final evaluation's scalars (last epoch only)
# On the first result after a restore: every epoch the checkpoint holds, as [{"epoch": e,
# **metrics}]. A driver killed after a trial saved a checkpoint but before it logged that epoch
# (or while it held results back, ``study.engine.tracking``) logs what it lacks from here.
REPLAY = "replay"
WORST = 0.0  # what a diverged trial reports: finite, never NaN (Optuna would hang on NaN)
CUDA_CONTEXT_BYTES = 1 << 30  # a CUDA context plus cuDNN / cuBLAS workspaces, per process


@dataclass
class TrialSetup:
    """Everything a trial needs beyond its sampled parameters; plain data for Ray to ship."""

    base: dict  # TrainConfig fields fixed for the whole study; the trial's config overrides
    linear_epochs: int
    checkpoint_every: int
    cpus: float = 1.0
    gpu_fraction: float = 0.0
    fail_once_at_epoch: int | None = None  # test-only switch: raise once at this epoch
    fail_marker_dir: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def cap_gpu_memory(device: torch.device, share: float) -> None:
    """Fractional GPUs are only labels to Ray: cap a trial's CUDA memory to its share. A trial
    on the CPU, or holding whole GPUs, opens no CUDA context for it."""
    if device.type == "cuda" and 0 < share < 1:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(memory_fraction(share, total), device)


def memory_fraction(share: float, total_bytes: int) -> float:
    """The caching allocator's cap for a trial holding ``share`` of a GPU of ``total_bytes``.

    The cap does not count the process's CUDA context and library workspaces, so shares that add
    up to 1 would overfill the GPU: each trial leaves ``CUDA_CONTEXT_BYTES`` of its share free
    (at most half of it).
    """
    share = min(1.0, share)
    return max(share / 2, share - CUDA_CONTEXT_BYTES / total_bytes)


def trial_config(config: dict, base: dict) -> TrainConfig:
    """The TrainConfig of a trial: the study's base, overridden by what the trial sampled.

    A re-run of exported points samples {"point": {...}, "seed": s}; a search samples flat.
    """
    return TrainConfig(**{**base, **config.get("point", {}),
                          **{k: v for k, v in config.items() if k != "point"}})


def run_trial(config: dict, setup: dict) -> None:
    """Train one configuration, reporting every epoch; resumes from Tune's checkpoint."""
    s = TrialSetup(**setup)
    started = time.time()
    torch.set_num_threads(max(1, int(s.cpus)))
    cfg = trial_config(config, s.base)
    cap_gpu_memory(resolve_device(cfg.device), s.gpu_fraction)
    trial_id = tune.get_context().get_trial_id()

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            final = Path(d) / FINAL_FILE
            if final.exists():
                # Restored from its last checkpoint (the driver stopped before taking the
                # result in): report the finished result again, without loading anything.
                tune.report(json.loads(final.read_text()))
                return
            trainer = Trainer.from_checkpoint(Path(d) / CHECKPOINT_FILE)
        replay = [{"epoch": r["epoch"], **epoch_metrics(r)} for r in trainer.history]
    else:
        trainer = Trainer(cfg)
        replay = None

    # One stage is the trainer itself; more run its blocks at once, each stage with the share
    # of a core (or GPU) the trial's resources hold for it (study.engine.tuner).
    with PipelinedTrainer(trainer, trainer.cfg.stages, trainer.cfg.partition,
                          threads=max(1, int(s.cpus))) as pipeline:
        _train(trainer, pipeline, cfg, s, trial_id, started, replay)


def _train(trainer: Trainer, pipeline, cfg: TrainConfig, s: TrialSetup, trial_id: str,
           started: float, replay: list | None) -> None:
    """The epochs, each reported; checkpoints on the setup's cadence; the final report."""
    data = trainer.data.describe()
    # The run's costs, in every result: a multi-objective study may minimise them.
    spec = trainer.data.spec
    costs = {k: float(v) for k, v in cost_summary(
        block_costs(trainer.model, (spec.channels, spec.size, spec.size))).items()}
    while trainer.epoch < cfg.epochs:
        _maybe_fail(s, trial_id, trainer.epoch + 1)
        record = pipeline.train_epoch()
        result = {
            "epoch": record["epoch"],
            "diverged": not all(math.isfinite(v) for v in record["loss"]),
            METRICS: epoch_metrics(record),
            "step_seconds": record["step_seconds"],  # an objective a study may minimise
            **costs,
        }
        if record["knn_val_acc"] is not None:  # the monitor's epochs only (monitor_every)
            result[OBJECTIVE] = record["knn_val_acc"]
        if data is not None:
            result[DATA], data = data, None
        if replay is not None:
            result[REPLAY], replay = replay, None
        if result["diverged"]:
            result[OBJECTIVE] = result["linear_val_acc"] = WORST
            # The kNN of NaN features is noise, not a measurement: left out like the NaNs.
            result[METRICS].pop(OBJECTIVE, None)
            tune.report({**result, FINISHED: True})
            return
        last = trainer.epoch >= cfg.epochs
        if not (last or trainer.epoch % s.checkpoint_every == 0):
            tune.report(result)
            continue
        with tempfile.TemporaryDirectory() as d:
            trainer.save(Path(d) / CHECKPOINT_FILE)
            if last:
                result[FINAL] = _finish(trainer, s, started, Path(d) / REPORT_DIR)
                result["linear_val_acc"] = result[FINAL]["linear_val_acc"]  # an objective too
                result[FINISHED] = True
                (Path(d) / FINAL_FILE).write_text(json.dumps(result))
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))


def epoch_metrics(record: dict) -> dict[str, float]:
    """One epoch's record as flat metrics; per-block lists become ``<name>_block<k>``.

    Non-finite values are left out, never replaced: the trial's ``diverged`` flag says why.
    """
    out = {k: float(record[k]) for k in ("knn_val_acc", "images_per_s", "epoch_seconds",
                                         "step_seconds")
           if record.get(k) is not None}
    # CUDA only; pipelined epochs only (more than one stage)
    for key in ("peak_memory_bytes", "peak_step_memory_bytes", "pipeline_ideal",
                "pipeline_bubble"):
        if record.get(key) is not None:
            out[key] = float(record[key])
    for key in ("loss", "kept_pos", "kept_neg", "threshold"):
        out.update({f"{key}_block{k + 1}": float(v) for k, v in enumerate(record.get(key, []))
                    if v is not None})
    return {k: v for k, v in out.items() if math.isfinite(v)}


def _finish(trainer: Trainer, s: TrialSetup, started: float, out: Path) -> dict[str, float]:
    """Final evaluation: its files go to ``out``, its scalars are returned."""
    metrics, _ = final_report(trainer, s.linear_epochs, out_dir=out)
    # The weights as a state dict (milliseconds); the study logs the best one as an MLflow
    # model and registers it (``study.engine.finish``), which takes seconds.
    torch.save(trainer.model.encoder().state_dict(), out / ENCODER_FILE)  # no heads
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    for key in ("probe_val_acc", "probe_test_acc", "effective_rank"):
        scalars.update({f"{key}_block{k + 1}": v for k, v in enumerate(metrics[key])})
    scalars["wall_time_s"] = time.time() - started
    return {k: float(v) for k, v in scalars.items() if math.isfinite(v)}


def _maybe_fail(s: TrialSetup, trial_id: str, epoch: int) -> None:
    if s.fail_once_at_epoch != epoch or s.fail_marker_dir is None:
        return
    marker = Path(s.fail_marker_dir) / trial_id
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        raise RuntimeError(f"injected failure at epoch {epoch} (test switch)")
