"""What the driver adds to Ray Tune: an epoch line per trial, and Optuna states that say what
happened (a trial stopped early by ASHA ends PRUNED in Optuna; ``study.tracking`` marks its
MLflow run KILLED)."""

from __future__ import annotations

from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from study._cli import format_params, log
from trainables.tune_trainable import FINAL, FINISHED, OBJECTIVE


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
    """One line per trial and epoch, and one when a trial ends."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_trial_result(self, iteration, trials, trial, result, **info):
        params = format_params(dict(sorted(trial.config.items())))
        line = (f"[{trial.trial_id}] epoch {result.get('epoch')}/{self.epochs} "
                f"knn_val {result.get(OBJECTIVE, float('nan')):.4f}  {params}")
        final = result.get(FINAL, {})
        if "linear_val_acc" in final:
            line += (f"  linear val {final['linear_val_acc']:.4f} "
                     f"test {final.get('linear_test_acc', float('nan')):.4f}")
        log(line)

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        if result.get(FINISHED):
            log(f"[{trial.trial_id}] finished")
        else:
            log(f"[{trial.trial_id}] stopped early at epoch {result.get('epoch')}")

    def on_trial_error(self, iteration, trials, trial, **info):
        log(f"[{trial.trial_id}] failed; see {trial.error_file or 'the trial log under ray/'}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        log(f"[{trial.trial_id}] failed; Ray retries it from its last checkpoint")
