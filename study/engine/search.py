"""The study's searcher: Optuna's TPE through Ray Tune's ``OptunaSearch``, with Optuna states
that say what happened (a trial stopped early by ASHA ends PRUNED; ``study.engine.tracking``
marks its MLflow run KILLED) and a resume that tolerates a trial Optuna already holds as ended
and closes the trials a killed driver lost (a lost point to evaluate is queued again); a
stratified search (``study.spaces.strata``) has one per split. Its early stopping is in
``study.engine.scheduler``."""

from __future__ import annotations

import logging
import pickle

from optuna.exceptions import UpdateFinishedTrialError
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from study.engine.resume.lost import close_unknown_trials
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

    def restore(self, checkpoint_path: str):
        """Ray's saved searcher, and the Optuna trials it does not know closed: each was asked
        for after Ray's last save, by a driver killed before the next one, and no Ray trial
        will ever report to it. A point to evaluate among them (the paper's point) is queued
        again, so that it is the next trial here, as it would have been."""
        super().restore(checkpoint_path)
        close_unknown_trials(self._ot_study, self._ot_trials.values(), self._study_name)


class StratifiedSearch(Searcher):
    """One searcher (``study.engine.search.StudySearch``, its own Optuna study) per stratum, each
    given its share of the trials. A new trial goes to the stratum furthest behind its share, so
    that the strata advance together and a stopped study leaves each with its part."""

    def __init__(self, searchers: list, strata: list[dict], shares: list[int], metric, mode):
        super().__init__(metric=metric, mode=mode)
        self.searchers = searchers
        self.strata = strata
        self.shares = shares
        self.assigned = [0] * len(strata)
        self.trial_stratum: dict[str, int] = {}

    def suggest(self, trial_id: str):
        """The next trial of the stratum furthest behind its share. A stratum whose searcher
        has nothing now (None) is passed over this time; one that has finished is closed."""
        waiting = False
        open_ = [i for i in range(len(self.strata)) if self.assigned[i] < self.shares[i]]
        for i in sorted(open_, key=lambda j: (self.assigned[j] / self.shares[j], j)):
            config = self.searchers[i].suggest(trial_id)
            if config == Searcher.FINISHED:
                self.shares[i] = self.assigned[i]
                continue
            if config is None:
                waiting = True
                continue
            self.assigned[i] += 1
            self.trial_stratum[trial_id] = i
            return {**self.strata[i], **config}
        return None if waiting else Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        i = self.trial_stratum.get(trial_id)
        if i is not None:
            self.searchers[i].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        i = self.trial_stratum.get(trial_id)
        if i is not None:
            self.searchers[i].on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        """Every split's searcher as Ray saved it, each with the Optuna trials it does not know
        closed (``StudySearch.restore``)."""
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
        for s in self.searchers:
            close_unknown_trials(s._ot_study, s._ot_trials.values(), s._study_name)
