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

import copy
import json
import os
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


def repair_checkpoints(experiment_dir: Path) -> list[str]:
    """Point each trial Ray will continue at its newest checkpoint on disk; the trial ids
    changed.

    A trial keeps one checkpoint: the next one deletes the one before at once
    (``study.engine.checkpoints``), while Ray saves the experiment state that names it seconds later
    (on its own period, never forced). A driver killed in between leaves a state naming a
    deleted checkpoint (Ray's restore of that trial would fail for good), an older one, or none
    (a trial saved PENDING that has run since): the trial would train again what it had
    trained. Its newest whole checkpoint on disk is the one Ray would have saved: the trial
    continues from it (an ended trial's holds the result it ended with, ``FINAL_FILE``, and
    replays its end). Whole: registered by the driver (``REGISTERED``, kept when an ended
    trial's checkpoint is emptied), or the one the state names; a checkpoint the trial was
    still writing when the driver stopped (a full disk) is passed over, its ``FINAL_FILE``
    included.
    """
    from ray import cloudpickle

    files = sorted(Path(experiment_dir).glob(STATE_GLOB))
    if not files:
        return []
    data = json.loads(files[-1].read_text())
    changed = []
    for entry in data["trial_data"]:
        trial, runtime = json.loads(entry[0]), json.loads(entry[1])
        manager_json = runtime.get("checkpoint_manager")
        if trial.get("status") in ENDED or not isinstance(manager_json, dict):
            continue
        manager = cloudpickle.loads(bytes.fromhex(manager_json["value"]))
        storage = cloudpickle.loads(bytes.fromhex(trial["storage"]["value"]))
        if storage.trial_dir_name is None:  # saved PENDING before Ray first scheduled it
            continue
        latest = manager._latest_checkpoint_result
        # By name in the store as it is now (it may have moved since Ray saved its paths).
        named = (Path(experiment_dir) / storage.trial_dir_name / Path(latest.checkpoint.path).name
                 if latest is not None else None)
        on_disk = [d for d in sorted((Path(experiment_dir) / storage.trial_dir_name
                                      ).glob("checkpoint_*"))
                   if d == named or (d / REGISTERED).exists()]
        if on_disk and on_disk[-1] != named:
            from ray.train._internal.session import _TrainingResult
            from ray.tune import Checkpoint

            result = copy.copy(latest) if latest is not None else _TrainingResult(None, {})
            result.checkpoint = Checkpoint(str(on_disk[-1]), storage.storage_filesystem)
            manager._latest_checkpoint_result = result
            manager._checkpoint_results = [result]
            # The next checkpoint the trial saves gets a new name, past the one it resumes from.
            storage.current_checkpoint_index = int(on_disk[-1].name.split("_")[-1]) + 1
            trial["storage"]["value"] = cloudpickle.dumps(storage).hex()
        elif not on_disk and named is not None:
            manager._latest_checkpoint_result, manager._checkpoint_results = None, []
        else:
            continue
        manager_json["value"] = cloudpickle.dumps(manager).hex()
        entry[0], entry[1] = json.dumps(trial, indent=2), json.dumps(runtime, indent=2)
        changed.append(trial["trial_id"])
    if changed:
        part = files[-1].with_suffix(".part")
        part.write_text(json.dumps(data))
        os.replace(part, files[-1])
    return changed


def continued_checkpoints(experiment_dir: Path) -> dict[str, str | None]:
    """Each trial Ray will continue, by its folder's name: the checkpoint folder's name it
    continues from (None: from its start). Trials not named here have ended."""
    from ray import cloudpickle

    files = sorted(Path(experiment_dir).glob(STATE_GLOB))
    if not files:
        return {}
    out = {}
    for trial_json, runtime_json in json.loads(files[-1].read_text())["trial_data"]:
        trial, runtime = json.loads(trial_json), json.loads(runtime_json)
        if trial.get("status") in ENDED:
            continue
        storage = cloudpickle.loads(bytes.fromhex(trial["storage"]["value"]))
        if storage.trial_dir_name is None:  # saved PENDING before Ray first scheduled it
            continue
        manager_json = runtime.get("checkpoint_manager")
        latest = None
        if isinstance(manager_json, dict):
            latest = cloudpickle.loads(bytes.fromhex(manager_json["value"])
                                       )._latest_checkpoint_result
        out[storage.trial_dir_name] = (
            Path(latest.checkpoint.path).name if latest is not None else None)
    return out
