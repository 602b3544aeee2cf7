"""Where a study stands, read from Ray Tune's saved experiment state (the file ``--resume``
restores), never from counts of results: an interrupted trial is not an ended trial.

A study is complete when the saved state holds every trial of the plan and each one has ended:
TERMINATED (finished or stopped early) or ERROR. A trial saved PENDING, RUNNING or PAUSED is one
that Ray will continue on ``--resume``. A trial that fails with retries left is saved PENDING
(Ray's ``_try_recover``); one saved ERROR stays so on ``--resume`` (``resume_errored=False``),
even where it failed before its retries were spent (a trial that fails while PENDING, on its
actor's start or its checkpoint's restore, goes straight to ERROR).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from trainables.errors import ConfigError

STATE_GLOB = "experiment_state-*.json"  # Ray Tune's TuneController.CKPT_FILE_TMPL
# Written into a checkpoint when the driver registers it (study.engine.checkpoints): the trial had
# finished writing it. A checkpoint without it may be cut short (a driver killed, a full disk).
REGISTERED = ".registered"
ENDED = ("TERMINATED", "ERROR")


@dataclass(frozen=True)
class SavedTrial:
    trial_id: str
    status: str  # Ray's: PENDING, RUNNING, PAUSED, TERMINATED, ERROR
    num_failures: int
    max_failures: int

    @property
    def ended(self) -> bool:
        """TERMINATED or ERROR: nothing Ray continues on ``--resume``."""
        return self.status in ENDED


@dataclass(frozen=True)
class StudyState:
    planned: int  # the plan's trials
    trials: tuple[SavedTrial, ...]  # what Ray's latest saved state holds

    @property
    def ended(self) -> list[SavedTrial]:
        return [t for t in self.trials if t.ended]

    @property
    def resumable(self) -> list[SavedTrial]:
        """Trials Ray will continue (or retry) on ``--resume``."""
        return [t for t in self.trials if not t.ended]

    @property
    def complete(self) -> bool:
        return len(self.trials) >= self.planned and not self.resumable

    def describe(self) -> str:
        """``2 of 4 trials ended (2 TERMINATED); 2 to continue (2 RUNNING)``."""
        ended = Counter(t.status for t in self.ended)
        left = Counter(t.status for t in self.resumable)
        text = f"{len(self.ended)} of {self.planned} trials ended"
        if ended:
            text += f" ({', '.join(f'{n} {s}' for s, n in sorted(ended.items()))})"
        if left:
            text += f"; {sum(left.values())} to continue " \
                    f"({', '.join(f'{n} {s}' for s, n in sorted(left.items()))})"
        not_started = self.planned - len(self.trials)
        if not_started > 0:
            text += f"; {not_started} not started"
        return text


def saved_state(experiment_dir: Path, planned: int) -> StudyState | None:
    """The study's state in Ray Tune's newest saved experiment state; None before Ray saved one
    (a study stopped before its first trial was scheduled)."""
    files = sorted(Path(experiment_dir).glob(STATE_GLOB))  # Ray restores the newest by name
    if not files:
        return None
    try:
        data = json.loads(files[-1].read_text())
    except ValueError:
        raise ConfigError(f"Ray Tune's saved state {files[-1]} is cut short (a full disk while "
                          f"Ray wrote it?): the study cannot be resumed from it") from None
    trials = []
    for trial_json, runtime_json in data["trial_data"]:
        trial, runtime = json.loads(trial_json), json.loads(runtime_json)
        trials.append(SavedTrial(
            trial_id=trial["trial_id"], status=trial["status"],
            num_failures=int(runtime.get("num_failures", 0)),
            max_failures=int(trial.get("max_failures", 0)),
        ))
    return StudyState(planned, tuple(trials))
