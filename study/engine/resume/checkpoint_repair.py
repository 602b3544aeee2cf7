"""Each continued trial pointed at its newest whole checkpoint on disk (``repair_checkpoints``),
and which checkpoint each continues from (``continued_checkpoints``), read from Ray Tune's saved
trial list: both decode the same entries (``_continued``)."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path

from study.records.ray_state import ENDED, REGISTERED, STATE_GLOB


def _continued(data: dict) -> Iterator[tuple[list, dict, dict, object]]:
    """Each trial of Ray's saved trial list that Ray will continue (not ended, scheduled once):
    its entry, its trial and runtime JSON, and its decoded storage context."""
    from ray import cloudpickle

    for entry in data["trial_data"]:
        trial, runtime = json.loads(entry[0]), json.loads(entry[1])
        if trial.get("status") in ENDED:
            continue
        storage = cloudpickle.loads(bytes.fromhex(trial["storage"]["value"]))
        if storage.trial_dir_name is None:  # saved PENDING before Ray first scheduled it
            continue
        yield entry, trial, runtime, storage


def _latest_state(experiment_dir: Path) -> Path | None:
    files = sorted(Path(experiment_dir).glob(STATE_GLOB))
    return files[-1] if files else None


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

    state_file = _latest_state(experiment_dir)
    if state_file is None:
        return []
    data = json.loads(state_file.read_text())
    changed = []
    for entry, trial, runtime, storage in _continued(data):
        manager_json = runtime.get("checkpoint_manager")
        if not isinstance(manager_json, dict):
            continue
        manager = cloudpickle.loads(bytes.fromhex(manager_json["value"]))
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
        part = state_file.with_suffix(".part")
        part.write_text(json.dumps(data))
        os.replace(part, state_file)
    return changed


def continued_checkpoints(experiment_dir: Path) -> dict[str, str | None]:
    """Each trial Ray will continue, by its folder's name: the checkpoint folder's name it
    continues from (None: from its start). Trials not named here have ended."""
    from ray import cloudpickle

    state_file = _latest_state(experiment_dir)
    if state_file is None:
        return {}
    out = {}
    for _, _, runtime, storage in _continued(json.loads(state_file.read_text())):
        manager_json = runtime.get("checkpoint_manager")
        latest = None
        if isinstance(manager_json, dict):
            latest = cloudpickle.loads(bytes.fromhex(manager_json["value"])
                                       )._latest_checkpoint_result
        out[storage.trial_dir_name] = (
            Path(latest.checkpoint.path).name if latest is not None else None)
    return out
