"""The Ray Tune trainable: the training core as a function trainable, tracked in MLflow.

The one module of ``trainables`` that touches Ray or MLflow. Each trial owns one nested MLflow
run (tags ``study`` and ``trial_id``); its id travels in the trial's checkpoints, so a retried or
resumed trial continues its own run. Per epoch the trial reports the validation kNN accuracy
(the study's objective; never a test metric). At the last epoch it first runs the final
evaluation and logs every result and artifact (the encoder as a state dict), then reports once
with ``trial_finished``: a trial that ends without that key was stopped early.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from ray import tune

from trainables.config import TrainConfig
from trainables.report import final_report
from trainables.train import Trainer

OBJECTIVE = "knn_val_acc"
FINISHED = "trial_finished"
WORST = 0.0  # what a diverged trial reports: finite, never NaN (Optuna would hang on NaN)
CHECKPOINT_FILE, META_FILE = "trainer.pt", "meta.json"
ENCODER_FILE = "encoder_state_dict.pt"


@dataclass
class TrialSetup:
    """Everything a trial needs beyond its sampled parameters; plain data for Ray to ship."""

    base: dict  # TrainConfig fields fixed for the whole study; the trial's config overrides
    linear_epochs: int
    checkpoint_every: int
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    study: str
    params: dict  # extra parameters logged with every trial (budget, git commit, ...)
    cpus: float = 1.0
    gpu_fraction: float = 0.0
    fail_once_at_epoch: int | None = None  # test-only switch: raise once at this epoch
    fail_marker_dir: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def run_trial(config: dict, setup: dict) -> None:
    """Train one configuration, reporting every epoch; resumes from Tune's checkpoint."""
    s = TrialSetup(**setup)
    started = time.time()
    torch.set_num_threads(max(1, int(s.cpus)))
    if s.gpu_fraction and torch.cuda.is_available():
        # Fractional GPUs are only labels to Ray: cap this trial's memory to its share.
        torch.cuda.set_per_process_memory_fraction(min(1.0, s.gpu_fraction))
    # A re-run of exported points samples {"point": {...}, "seed": s}; a search samples flat.
    cfg = TrainConfig(**{**s.base, **config.get("point", {}),
                         **{k: v for k, v in config.items() if k != "point"}})
    client = MlflowClient(s.tracking_uri)
    trial_id = tune.get_context().get_trial_id()

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            trainer = Trainer.from_checkpoint(Path(d) / CHECKPOINT_FILE)
            run_id = json.loads((Path(d) / META_FILE).read_text())["run_id"]
    else:
        trainer = Trainer(cfg)
        run_id = _trial_run(client, s, trial_id, cfg, config)

    while trainer.epoch < cfg.epochs:
        _maybe_fail(s, trial_id, trainer.epoch + 1)
        record = trainer.train_epoch()
        _log_epoch(client, run_id, record)
        result = {
            OBJECTIVE: record["knn_val_acc"],
            "epoch": record["epoch"],
            "mlflow_run_id": run_id,
            "diverged": not all(math.isfinite(v) for v in record["loss"]),
        }
        last = trainer.epoch >= cfg.epochs
        if result["diverged"]:
            result[OBJECTIVE] = WORST
            client.set_tag(run_id, "diverged", "true")
            client.set_terminated(run_id, "FAILED")
            tune.report({**result, FINISHED: True})
            return
        if last:
            result.update(_finish(client, run_id, trainer, s, started))
        if last or trainer.epoch % s.checkpoint_every == 0:
            with tempfile.TemporaryDirectory() as d:
                trainer.save(Path(d) / CHECKPOINT_FILE)
                (Path(d) / META_FILE).write_text(json.dumps({"run_id": run_id}))
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))
        else:
            tune.report(result)


def _trial_run(client: MlflowClient, s: TrialSetup, trial_id: str, cfg, config) -> str:
    """The trial's MLflow run: found again by its tags after a crash, else created."""
    found = client.search_runs(
        [s.experiment_id],
        filter_string=f"tags.study = '{s.study}' and tags.trial_id = '{trial_id}'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    shown = {k: getattr(cfg, k) for k in ("threshold", "tau", "K", "seed")}
    name = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in shown.items())
    run = client.create_run(
        s.experiment_id,
        run_name=f"{trial_id} {name}",
        tags={"mlflow.parentRunId": s.parent_run_id, "study": s.study, "trial_id": trial_id},
    )
    params = {**cfg.to_dict(), **s.params, "linear_epochs": s.linear_epochs,
              "gpu_fraction": s.gpu_fraction, "cpus": s.cpus}
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    return run.info.run_id


def _log_epoch(client: MlflowClient, run_id: str, record: dict) -> None:
    now, step = int(time.time() * 1000), record["epoch"]
    metrics = [Metric(k, float(record[k]), now, step)
               for k in ("knn_val_acc", "images_per_s", "epoch_seconds")]
    if record.get("peak_memory_bytes") is not None:
        metrics.append(Metric("peak_memory_bytes", float(record["peak_memory_bytes"]), now, step))
    for key in ("loss", "kept_pos", "kept_neg"):
        metrics += [Metric(f"{key}_block{k + 1}", float(v), now, step)
                    for k, v in enumerate(record[key])]
    client.log_batch(run_id, metrics=_finite(metrics))


def _finish(client: MlflowClient, run_id: str, trainer: Trainer, s: TrialSetup,
            started: float) -> dict:
    """Final evaluation, logged with its artifacts and the encoder; the run is then closed."""
    with tempfile.TemporaryDirectory() as out:
        metrics, _ = final_report(trainer, s.linear_epochs, out_dir=out)
        # The weights as a state dict (milliseconds); the study logs the best one as an MLflow
        # model and registers it (``study.summary``), which takes seconds.
        torch.save(trainer.model.state_dict(), Path(out) / ENCODER_FILE)
        client.log_artifacts(run_id, out)
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    for key in ("probe_val_acc", "probe_test_acc", "effective_rank"):
        scalars.update({f"{key}_block{k + 1}": v for k, v in enumerate(metrics[key])})
    scalars["wall_time_s"] = time.time() - started
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=_finite(
        [Metric(k, float(v), now, trainer.epoch) for k, v in scalars.items()]
    ))
    client.set_tag(run_id, "encoder_state", f"runs:/{run_id}/{ENCODER_FILE}")
    client.set_terminated(run_id, "FINISHED")
    return {**scalars, FINISHED: True}


def _finite(metrics: list[Metric]) -> list[Metric]:
    """Non-finite values are left out, never replaced: the run's ``diverged`` tag says why."""
    return [m for m in metrics if math.isfinite(m.value)]


def _maybe_fail(s: TrialSetup, trial_id: str, epoch: int) -> None:
    if s.fail_once_at_epoch != epoch or s.fail_marker_dir is None:
        return
    marker = Path(s.fail_marker_dir) / trial_id
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        raise RuntimeError(f"injected failure at epoch {epoch} (test switch)")
