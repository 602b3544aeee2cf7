"""The study's early stopping: Ray Tune's ASHA, with rungs a resumed study rebuilds from the
store (``study.engine.resume``), and one ASHA bracket set per split of a stratified search
(``study.spaces.strata``)."""

from __future__ import annotations

import copy

from ray.tune.schedulers import AsyncHyperBandScheduler

from study.spaces.strata import of_config
from trainables.tune_trainable import REPLAY


class StudyASHA(AsyncHyperBandScheduler):
    """ASHA (one bracket) whose rungs a resumed study rebuilds (``rebuild``): Ray saves no
    scheduler, and ``Tuner.restore`` takes it as it was built, with empty rungs."""

    keys: list[str] = []  # what chooses a trial's brackets (StratifiedASHA: its split)

    def bracket(self, config: dict):
        return self._brackets[0]

    def rebuild(self, events) -> set[str]:
        """The rungs as the study left them: ``events`` (``study.engine.resume.rungs.RungEvent``, in
        the order they arrived) taken in as ASHA took them. The trials it stopped that Ray will
        continue (the driver was killed between the decision and Ray's save) are stopped at their
        first result; their ids."""
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
