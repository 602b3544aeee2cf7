"""One checkpoint a trial on disk, without Ray Tune saving the whole study at every checkpoint.

Ray's own way, ``CheckpointConfig(num_to_keep=1)``, deletes a trial's previous checkpoint when it
registers the next, and then forces a save of the experiment state at once (so that the state never
names a deleted checkpoint). That state holds every trial of the study: measured with ``study.bench
--bookkeeping``, it is about 22 kB a trial, so a 1000-trial study wrote up to 22 MB at each of its
checkpoints, several times a second, and the driver's time grew with the square of the trials. Here
Ray keeps every checkpoint (``num_to_keep=None``: no forced save, the state is saved on Ray's own
period) and this callback deletes the trial's previous ones as the next arrives, trimming Ray's
record of them to match, and marks the new one whole (``study.records.ray_state.REGISTERED``). A
driver killed between a deletion and Ray's next save leaves a state naming a deleted checkpoint:
``study.engine.resume.checkpoint_repair`` points that trial at its newest whole one on disk on
``--resume``, as it did for Ray's own deletions.
"""

from __future__ import annotations

import json
from pathlib import Path

from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS

from study.records.ray_state import REGISTERED
from trainables.specs import FINAL_FILE


class LatestCheckpointOnly(Callback):
    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        # The trial has written it whole (its result came after the upload): say so, for
        # ``repair_checkpoints``. Called before Ray registers it: every one Ray holds is older.
        with checkpoint.filesystem.open_output_stream(f"{checkpoint.path}/{REGISTERED}"):
            pass
        manager = trial.run_metadata.checkpoint_manager
        for result in manager._checkpoint_results:
            old = result.checkpoint
            if old.path != checkpoint.path:
                delete_dir(old.filesystem, old.path)
        manager._checkpoint_results = []
        trial.invalidate_json_state()
        trial.run_metadata.invalidate_cache()


def delete_dir(filesystem, path: str) -> None:
    """Delete a checkpoint folder on whichever file system the study's storage uses; one
    already gone (a retried trial's, a repaired study's) is fine."""
    from pyarrow import fs

    if filesystem.get_file_info(path).type == fs.FileType.Directory:
        filesystem.delete_dir(path)


def retire_checkpoint(checkpoint, result: dict) -> None:
    """Empty an ended trial's Ray checkpoint, on whichever file system the study's storage
    uses, but for ``FINAL_FILE``, the result the trial ended with (a few kB), and the mark that
    the checkpoint is whole (``study.records.ray_state.REGISTERED``).

    Ray saves its experiment state every few seconds. A driver killed after a trial ended but
    before that save resumes the trial from this checkpoint: the trial then reports its end
    again from ``FINAL_FILE`` and trains nothing (``trainables.tune_trainable.run_trial``).
    """
    if checkpoint is None:
        return
    from pyarrow import fs

    final = f"{checkpoint.path}/{FINAL_FILE}"
    files = checkpoint.filesystem.get_file_info(fs.FileSelector(checkpoint.path))
    if not any(f.path == final for f in files):
        ended = {k: v for k, v in result.items() if k not in AUTO_RESULT_KEYS + RAY_KEYS}
        with checkpoint.filesystem.open_output_stream(final) as out:
            out.write(json.dumps(ended, default=str).encode())
    keep = (final, f"{checkpoint.path}/{REGISTERED}")
    for f in files:
        if f.path in keep:
            continue
        if f.type == fs.FileType.Directory:
            checkpoint.filesystem.delete_dir(f.path)
        else:
            checkpoint.filesystem.delete_file(f.path)


def sweep_checkpoints(experiment_dir: Path, continued: dict[str, str | None]) -> int:
    """What no trial needs any more, deleted from a local study folder: a continued trial's
    checkpoints but the one it continues from (``continued``: trial folder -> checkpoint
    folder, ``study.engine.resume.checkpoint_repair``); an ended trial's checkpoints but its last,
    emptied as ``retire_checkpoint`` empties it. A checkpoint a killed driver never deleted (a
    trial's older one, or one cut short) would otherwise stay for good: at ResNet-50 K = 16,
    2.3 GB. Bytes freed."""
    import shutil

    freed = 0
    for trial_dir in sorted(p for p in Path(experiment_dir).iterdir() if p.is_dir()):
        checkpoints = sorted(trial_dir.glob("checkpoint_*"))
        if not checkpoints:
            continue
        ended = trial_dir.name not in continued
        keep = checkpoints[-1].name if ended else continued[trial_dir.name]
        for c in checkpoints:
            if c.name != keep:
                freed += sum(f.stat().st_size for f in c.rglob("*") if f.is_file())
                shutil.rmtree(c, ignore_errors=True)
            elif ended:  # the last one, emptied but for the trial's end
                for f in sorted(c.rglob("*"), reverse=True):  # files before their folders
                    if f.parent == c and f.name in (FINAL_FILE, REGISTERED):
                        continue
                    if f.is_file():
                        freed += f.stat().st_size
                        f.unlink()
                    else:
                        f.rmdir()
    return freed


RAY_KEYS = ("done", "trial_id", "experiment_tag", "should_checkpoint")  # Ray fills them in
