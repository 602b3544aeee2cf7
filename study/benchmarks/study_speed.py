"""What a Ray Tune trial adds to a run (``python -m study.bench``'s ``tune`` figures): the same
small run in a fresh process, directly and as a one-trial study run as a user runs it."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from study.engine.console import log


def bench_tune(quick: bool, repeats: int, epochs: int | None = None) -> dict:
    """One small run called directly against the same run as a Ray Tune trial (its wall time
    inside the trial: per-epoch reports, checkpoints and the final report included).

    The two alternate ``repeats`` times, one direct run then a one-trial study, so that drift in
    a shared machine's load falls on both; the medians are compared. Ray starts once, first."""
    from mlflow.tracking import MlflowClient

    from study.engine.cluster import init_ray
    from study.records.store import Store

    epochs = epochs or (8 if quick else 20)
    linear_epochs = 30
    # Both sides start cold in a fresh process, with the same modules imported and the same
    # threads, and both write the run's report (arrays, plots, metrics.json) as `study.train
    # --out` does: the difference is what the trial adds (Tune's reports and checkpoints).
    code = (
        "import tempfile, time, torch; import trainables.tune_trainable; "
        "from trainables.config import TrainConfig; from trainables.trainer import Trainer; "
        "from trainables.results import final_report; t = time.perf_counter(); "
        f"tr = Trainer(TrainConfig(dataset='digits', K=2, threshold=0.0, epochs={epochs}, "
        "batch_size=128, device='cpu')); tr.fit(); "
        "d = tempfile.TemporaryDirectory(); "
        f"final_report(tr, {linear_epochs}, out_dir=d.name); print(time.perf_counter() - t)"
    )
    start = time.perf_counter()
    started_ray = init_ray(None)
    ray_start_s = time.perf_counter() - start
    direct, trials = [], []
    try:
        with tempfile.TemporaryDirectory() as d:
            store = Store.at(os.path.join(d, "mlruns"))
            space = os.path.join(d, "space.yaml")
            with open(space, "w") as f:
                f.write(_BENCH_SPACE.format(epochs=epochs, linear_epochs=linear_epochs))
            from study.records.trials import is_trial_run, study_filter

            client = MlflowClient(store.tracking_uri)
            for r in range(repeats):
                out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                     text=True, check=True)
                direct.append(float(out.stdout.strip().splitlines()[-1]))
                # The study exactly as a user runs it, on the Ray already started here.
                subprocess.run([sys.executable, "-m", "study.tune", "--dataset", "digits",
                                "--space", space, "--budget", "smoke", "--gpus-per-trial", "0",
                                "--cpus-per-trial", str(torch.get_num_threads()),
                                "--store", str(store.root), "--study-name", f"bench{r}",
                                "--address", "auto"], capture_output=True, check=True)
                exp = client.get_experiment_by_name("digits")
                (run,) = [run for run in client.search_runs([exp.experiment_id],
                                                            study_filter(f"bench{r}"))
                          if is_trial_run(run)]
                trials.append(run.data.metrics["wall_time_s"])
            from study.records.footprint import study_footprint

            footprint = study_footprint(store, "bench0", "digits")  # what an ended study holds
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    direct_s, trial_s = statistics.median(direct), statistics.median(trials)
    log(f"  tune: direct {_seconds(direct)}, inside a trial {_seconds(trials)} "
        f"(Ray's start {ray_start_s:.1f} s, once); the ended one-trial study holds "
        f"{footprint['total'] / 1e6:.2f} MB")
    return {"direct_seconds": direct, "trial_seconds": trials, "ray_start_seconds": ray_start_s,
            "overhead": trial_s / direct_s, "study_footprint_bytes": footprint}


def _seconds(values: list[float]) -> str:
    samples = "/".join(f"{v:.1f}" for v in values)
    return f"median {statistics.median(values):.1f} s of {samples}"


_BENCH_SPACE = """
dataset: digits
model: {{arch: resnet18, width: 0.25}}
train: {{batch_size: 128, K: 2, threshold: 0.0, tau: 0.5, linear_epochs: {linear_epochs}}}
search:
  threshold: {{type: categorical, choices: [0.0]}}
  tau: {{type: categorical, choices: [0.5]}}
  K: {{type: categorical, choices: [2]}}
budgets:
  smoke: {{epochs: {epochs}, trials: 1, concurrency: 1, grace_period: {epochs}}}
"""
