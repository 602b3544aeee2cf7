"""The study's searcher: Optuna's TPE through Ray Tune's ``OptunaSearch``, with Optuna states
that say what happened (a trial stopped early by ASHA ends PRUNED; ``study.engine.tracking`` marks its
MLflow run KILLED) and a resume that tolerates a trial Optuna already holds as ended and closes
the trials a killed driver lost (a lost point to evaluate is queued again); the searcher and
ASHA of a stratified search (``study.spaces.strata``): one of each per split; and ASHA whose rungs a
resumed study rebuilds from the store (``study.engine.resume``)."""

from __future__ import annotations

import copy
import logging
import pickle

from optuna.exceptions import UpdateFinishedTrialError
from ray.tune.schedulers import AsyncHyperBandScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from study.engine.resume import close_unknown_trials
from study.spaces.strata import of_config
from trainables.tune_trainable import FINISHED, REPLAY


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
    """One searcher (``study.engine.search.StudySearch``, its own Optuna study) per stratum, each given
    its share of the trials. A new trial goes to the stratum furthest behind its share, so that
    the strata advance together and a stopped study leaves each with its part."""

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


class StudyASHA(AsyncHyperBandScheduler):
    """ASHA (one bracket) whose rungs a resumed study rebuilds (``rebuild``): Ray saves no
    scheduler, and ``Tuner.restore`` takes it as it was built, with empty rungs."""

    keys: list[str] = []  # what chooses a trial's brackets (StratifiedASHA: its split)

    def bracket(self, config: dict):
        return self._brackets[0]

    def rebuild(self, events) -> set[str]:
        """The rungs as the study left them: ``events`` (``study.engine.resume.RungEvent``, in the
        order they arrived) taken in as ASHA took them. The trials it stopped that Ray will
        continue (the driver was killed between the decision and Ray's save) are stopped at
        their first result; their ids."""
        from ray.tune.schedulers import TrialScheduler

        self._stop_first = set()
        for e in events:
            if e.epoch >= self._max_t and not e.ended:
                continue  # taken in when the continued trial reports its end
            decision = self.bracket(e.config).on_result(_Seen(e.trial_id), e.epoch,
                                                        self._metric_op * e.value)
            if decision == TrialScheduler.STOP and not e.ended:
                self._stop_first.add(e.trial_id)
        return set(self._stop_first)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        from ray.tune.schedulers import TrialScheduler

        if trial.trial_id in getattr(self, "_stop_first", ()):
            self._stop_first.discard(trial.trial_id)
            return TrialScheduler.STOP
        # A trial restored from a checkpoint first replays the epochs it holds: a rung among
        # them that ASHA has not taken in (a killed driver's held-back value) is taken in at
        # its own epoch, not at the later one the trial reports now.
        bracket = self._trial_info.get(trial.trial_id)
        for r in result.get(REPLAY) or ():
            if bracket is None or self._metric not in r or r["epoch"] >= self._max_t:
                continue
            if bracket.on_result(trial, r["epoch"], self._metric_op * r[self._metric]) \
                    == TrialScheduler.STOP:
                return TrialScheduler.STOP
        return super().on_trial_result(tune_controller, trial, result)


class _Seen:
    """What a bracket needs of a trial: its id."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


class StratifiedASHA(StudyASHA):
    """ASHA whose brackets are per stratum: a trial's rung is only compared with the trials of
    its own split. Each stratum's bracket is a copy of the one ASHA makes, before any result."""

    def __init__(self, keys: list[str], **kwargs):
        super().__init__(**kwargs)
        self.keys = list(keys)
        self._pristine = copy.deepcopy(self._brackets)
        self.stratum_brackets: dict[tuple, list] = {}

    def bracket(self, config: dict):
        key = of_config(config, self.keys)
        if key not in self.stratum_brackets:
            self.stratum_brackets[key] = copy.deepcopy(self._pristine)
        # One bracket (ASHA's default, ``brackets=1``); several would be drawn as ASHA draws.
        return self.stratum_brackets[key][0]

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)  # checks metric and mode
        self._trial_info[trial.trial_id] = self.bracket(trial.config)

    def debug_string(self) -> str:
        return "\n".join(f"{key}: " + "; ".join(b.debug_str() for b in brackets)
                         for key, brackets in self.stratum_brackets.items())
