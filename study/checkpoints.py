"""One checkpoint a trial on disk, without Ray Tune saving the whole study at every checkpoint.

Ray's own way, ``CheckpointConfig(num_to_keep=1)``, deletes a trial's previous checkpoint when
it registers the next, and then forces a save of the experiment state at once (so that the
state never names a deleted checkpoint). That state holds every trial of the study: measured
with ``study.bench --bookkeeping``, it is about 22 kB a trial, so a 1000-trial study wrote up to
22 MB at each of its checkpoints, several times a second, and the driver's time grew with the
square of the trials. Here Ray keeps every checkpoint (``num_to_keep=None``: no forced save, the
state is saved on Ray's own period) and this callback deletes the trial's previous ones as the
next arrives, trimming Ray's record of them to match, and marks the new one whole
(``study.state.REGISTERED``). A driver killed between a deletion and Ray's next save leaves a
state naming a deleted checkpoint: ``study.state.repair_checkpoints`` points that trial at its
newest whole one on disk on ``--resume``, as it did for Ray's own deletions.
"""

from __future__ import annotations

from ray.tune import Callback

from study.state import REGISTERED


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
