"""The study's searcher: Optuna's TPE through Ray Tune's ``OptunaSearch``, with Optuna states
that say what happened (a trial stopped early by ASHA ends PRUNED; ``study.tracking`` marks its
MLflow run KILLED) and a resume that tolerates a trial Optuna already holds as ended."""

from __future__ import annotations

import logging

from optuna.exceptions import UpdateFinishedTrialError
from ray.tune.search.optuna import OptunaSearch

from trainables.tune_trainable import FINISHED


class StudySearch(OptunaSearch):
    """OptunaSearch that tells Optuna PRUNED for trials that ended without finishing.

    Ray's own rule: a completion without the metric and without an error is PRUNED. A trial
    that finished reports ``trial_finished``; anything else was stopped early.
    """

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if not error and result is not None and not result.get(FINISHED):
            result = None
        super().on_trial_complete(trial_id, result=result, error=error)

    def on_trial_result(self, trial_id: str, result: dict):
        # An objective that only the last result holds (linear_val_acc) has no intermediate
        # value to report; Ray's own method would raise on it.
        if isinstance(self.metric, str) and self.metric not in result:
            return
        try:
            super().on_trial_result(trial_id, result)
        except UpdateFinishedTrialError as e:
            # A trial that ended after Ray's last saved state (a killed driver) reports again
            # when resumed; its Optuna trial holds its end already.
            logging.getLogger("optuna").info("trial %s: %s", trial_id, e)
