"""What the driver adds to Ray Tune: an epoch line per trial, and Optuna states that say what
happened (a trial stopped early by ASHA ends PRUNED in Optuna and KILLED in MLflow)."""

from __future__ import annotations

from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from study._cli import log
from trainables.tune_trainable import FINISHED, OBJECTIVE


class StudySearch(OptunaSearch):
    """OptunaSearch that tells Optuna PRUNED for trials that ended without finishing.

    Ray's own rule: a completion without the metric and without an error is PRUNED. A trial
    that finished reports ``trial_finished``; anything else was stopped early.
    """

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if not error and result is not None and not result.get(FINISHED):
            result = None
        super().on_trial_complete(trial_id, result=result, error=error)


class Progress(Callback):
    """One line per trial and epoch, and the MLflow status of trials stopped early."""

    def __init__(self, tracking_uri: str, epochs: int):
        self.tracking_uri = tracking_uri
        self.epochs = epochs

    def on_trial_result(self, iteration, trials, trial, result, **info):
        params = " ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in sorted(trial.config.items())
        )
        line = (f"[{trial.trial_id}] epoch {result.get('epoch')}/{self.epochs} "
                f"knn_val {result.get(OBJECTIVE, float('nan')):.4f}  {params}")
        if result.get(FINISHED) and "linear_val_acc" in result:
            line += (f"  linear val {result['linear_val_acc']:.4f} "
                     f"test {result['linear_test_acc']:.4f}")
        log(line)

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        if result.get(FINISHED):
            log(f"[{trial.trial_id}] finished")
            return
        log(f"[{trial.trial_id}] stopped early at epoch {result.get('epoch')}")
        run_id = result.get("mlflow_run_id")
        if run_id:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(self.tracking_uri)
            client.set_tag(run_id, "early_stopped", "true")
            client.set_terminated(run_id, "KILLED")

    def on_trial_error(self, iteration, trials, trial, **info):
        log(f"[{trial.trial_id}] failed; Ray retries it from its last checkpoint if it can")
