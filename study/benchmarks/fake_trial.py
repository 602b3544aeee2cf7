"""A trial that trains nothing, for the bookkeeping benchmark (``study.benchmarks.bookkeeping``).

``fake_trial`` reports what ``trainables.tune_trainable.run_trial`` reports (the same keys and
shapes: per-block losses, kept ratios and thresholds every epoch, the kNN monitor on its epochs,
the costs, the data set's description, checkpoints, a final report with spectra, metrics.json and
a real encoder's state dict, small), with plausible values drawn from the trial's parameters.
"""

from __future__ import annotations

import functools
import io
import json
import math
import random
import tempfile
import time
from pathlib import Path

DIVERGED_SHARE = 0.01  # of the trials: they end at a random epoch with a non-finite loss


def fake_trial(config: dict, setup: dict) -> None:
    """``run_trial``'s results without training; resumes from its own checkpoints."""
    from ray import tune

    from trainables.tune_trainable import (
        CHECKPOINT_FILE,
        DATA,
        ENCODER_FILE,
        FINAL,
        FINAL_FILE,
        FINISHED,
        METRICS,
        OBJECTIVE,
        REPLAY,
        REPORT_DIR,
        WORST,
        TrialSetup,
        trial_config,
    )

    s = TrialSetup(**setup)
    cfg = trial_config(config, s.base)
    started = time.time()
    epoch, history, replay = 0, [], None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            if (Path(d) / FINAL_FILE).exists():
                tune.report(json.loads((Path(d) / FINAL_FILE).read_text()))
                return
            saved = json.loads((Path(d) / CHECKPOINT_FILE).read_text())
        epoch, history = saved["epoch"], saved["history"]
        replay = [dict(r) for r in history]
    costs, encoder = _model(cfg.arch, cfg.K, cfg.width, cfg.dataset)
    quality = _quality(cfg.threshold, cfg.tau, cfg.K)
    rng = random.Random(f"{cfg.seed} {cfg.threshold} {cfg.tau} {cfg.K}")
    diverges_at = rng.randint(1, cfg.epochs) if rng.random() < DIVERGED_SHARE else None
    first = True
    while epoch < cfg.epochs:
        epoch += 1
        progress = 1 - math.exp(-3 * epoch / cfg.epochs)
        knn = min(0.99, max(0.0, quality * (0.5 + 0.5 * progress) + rng.gauss(0, 0.01)))
        record = {f"{name}_block{k + 1}": value for k in range(cfg.K) for name, value in (
            ("loss", 6.0 - 2.0 * progress + 0.1 * k), ("kept_pos", 0.9 - 0.02 * k),
            ("kept_neg", 0.5 - 0.01 * k), ("threshold", cfg.threshold or 0.0))}
        record.update(images_per_s=5000.0, epoch_seconds=0.5, step_seconds=0.05)
        monitored = epoch % cfg.monitor_every == 0 or epoch == cfg.epochs
        if monitored:
            record["knn_val_acc"] = knn
        history.append({"epoch": epoch, **record})
        result = {"epoch": epoch, "diverged": epoch == diverges_at, METRICS: record,
                  "step_seconds": 0.05, **costs}
        if monitored:
            result[OBJECTIVE] = knn
        if first:  # the first result of this trial process
            result[DATA] = {"name": cfg.dataset, "pretrain": 1000, "train": 1000, "val": 200,
                            "test": 500, "digest": "bookkeeping00000", "shape": [1, 28, 28]}
            if replay is not None:
                result[REPLAY] = replay
            first = False
        if result["diverged"]:
            record.pop("knn_val_acc", None)
            result[OBJECTIVE] = result["linear_val_acc"] = WORST
            tune.report({**result, FINISHED: True})
            return
        last = epoch == cfg.epochs
        if not (last or epoch % s.checkpoint_every == 0):
            tune.report(result)
            continue
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / CHECKPOINT_FILE).write_text(json.dumps({"epoch": epoch,
                                                               "history": history}))
            if last:
                out = Path(d) / REPORT_DIR
                result[FINAL] = _final(cfg, quality, costs, started, rng)
                _write_report(out, cfg, result[FINAL], history, rng)
                (out / ENCODER_FILE).write_bytes(encoder)
                result["linear_val_acc"] = result[FINAL]["linear_val_acc"]
                result[FINISHED] = True
                (Path(d) / FINAL_FILE).write_text(json.dumps(result))
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))


def _quality(threshold: float | None, tau: float, K: int) -> float:
    """A smooth accuracy surface with its best near the paper's point (T 0.3, tau 0.5)."""
    t = 0.0 if threshold is None else threshold
    return max(0.1, 0.85 - 0.3 * (t - 0.3) ** 2 - 0.1 * abs(math.log(tau / 0.5)) - 0.005 * K)


@functools.lru_cache(maxsize=8)
def _model(arch: str, K: int, width: float, dataset: str) -> tuple[dict, bytes]:
    """The real costs and encoder state dict of the trial's model, built once per process."""
    import torch

    from trainables.cost import block_costs, cost_summary
    from trainables.data import dataset_spec
    from trainables.models import DecoupledResNet

    spec = dataset_spec(dataset)
    model = DecoupledResNet(arch, K, spec.channels, spec.stem, width)
    costs = {k: float(v) for k, v in cost_summary(
        block_costs(model, (spec.channels, spec.size, spec.size))).items()}
    buffer = io.BytesIO()
    torch.save(model.encoder().state_dict(), buffer)
    return costs, buffer.getvalue()


def _final(cfg, quality: float, costs: dict, started: float, rng: random.Random) -> dict:
    linear = min(0.99, quality + rng.gauss(0, 0.01))
    out = {"linear_train_acc": min(1.0, linear + 0.05), "linear_val_acc": linear,
           "linear_test_acc": linear - 0.01, **costs, "wall_time_s": time.time() - started}
    for k in range(cfg.K):
        out[f"probe_val_acc_block{k + 1}"] = linear * (0.6 + 0.4 * (k + 1) / cfg.K)
        out[f"probe_test_acc_block{k + 1}"] = linear * (0.6 + 0.4 * (k + 1) / cfg.K) - 0.01
        out[f"effective_rank_block{k + 1}"] = 20.0 + 5 * k
    return out


def _write_report(out: Path, cfg, final: dict, history: list, rng: random.Random) -> None:
    import numpy as np

    (out / "spectra").mkdir(parents=True)
    for k in range(cfg.K):
        values = np.sort(np.abs(np.array([rng.gauss(0, 1) for _ in range(64)])))[::-1]
        np.save(out / "spectra" / f"block_{k + 1}.npy", values / values[0])
    (out / "metrics.json").write_text(json.dumps(
        {"config": cfg.to_dict(), **final, "history": history}))
