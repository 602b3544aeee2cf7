"""MLflow tracking of a study's trials, done by the driver from Ray Tune's results.

One nested MLflow run per trial (tags ``study`` and ``trial_id``, child of the study's run),
found again by its tags when a study resumes. The trial processes never open the tracking store:
they report each epoch's metrics to Tune, and write the final report into their last checkpoint,
which this callback logs as the run's artifacts. One process writes to the store, so a SQLite
store has no concurrent writers however many trials run at once.

Epochs' metrics are held back for at most ``FLUSH_SECONDS`` and written together, one
``log_batch`` per run: a write per result (about 11 ms on SQLite) would cost the driver more
than Ray Tune's own handling of the result (``study.bench --bookkeeping``). A trial's run is
written out before it is closed, and everything at the end of ``Tuner.fit()`` (a stop
included). A driver killed while it held results back loses none: the trial resumes from a
checkpoint, and replays the epochs it holds (``REPLAY``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from study.engine.checkpoints import retire_checkpoint
from study.engine.faults import GuardedClient, stop_if_disk_full
from study.engine.interrupts import StudyStopped
from study.records.params import format_params
from study.records.trials import (
    CELL,
    DIVERGED,
    EARLY_STOPPED,
    ENCODER_STATE,
    ERROR,
    PARENT,
    SEARCH_PAGE,
    STUDY,
    TRIAL_ID,
    WEIGHTS_KEPT,
    is_trial_run,
    rank_key,
    search_all,
    study_filter,
    to_record,
)
from trainables.tune_trainable import (
    DATA,
    ENCODER_FILE,
    FINAL,
    FINISHED,
    METRICS,
    REPLAY,
    REPORT_DIR,
    TrialSetup,
    trial_config,
)

ENDED_RUNS = ("FINISHED", "KILLED")  # a trial run's status once its trial ended
STEP_METRIC = "epoch_seconds"  # logged at every epoch of every trial that did not diverge
BATCH = 1000  # MLflow's most metrics (and tags) in one log_batch
FLUSH_SECONDS = 1.0  # the longest an epoch's metrics wait in the driver before they are written


class MlflowTracking(Callback):
    """Creates, logs and closes each trial's MLflow run from Tune's callbacks in the driver."""

    keep_weights: int | str = "all"  # what a study pickled before the option had

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, study: str,
                 setup: TrialSetup, params: dict, keep_weights: int | str = "all"):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.study = study
        self.trial_setup = setup
        self.params = params  # logged with every trial (budget, git commit, ...)
        self.keep_weights = keep_weights  # the N best finished trials keep their encoder, or all
        self.runs: dict[str, str] = {}  # trial id -> MLflow run id
        self._client: GuardedClient | None = None
        self._logged: dict[str, int] = {}  # trial id -> last epoch logged, this process
        self._stop: StudyStopped | None = None  # raised in on_trial_complete, for Ray to let out
        self._pending: dict[str, list[Metric]] = {}  # run id -> metrics not written yet
        self._flushed = time.monotonic()
        self._stored: dict[str, str] | None = None  # trial id -> run id in the store, read once
        self._created: set[str] = set()  # runs made by this process: no earlier driver's

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks with the study (for --resume); a client is not data, and
        # the steps already logged are read again from MLflow by the resumed driver.
        return {**self.__dict__, "_client": None, "_logged": {}, "_stop": None, "_pending": {},
                "_stored": None, "_created": set()}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._logged, self._stop, self._pending = {}, None, {}
        self._flushed = time.monotonic()
        self._stored, self._created = None, set()

    def flush(self, run_id: str | None = None, tags: dict[str, str] | None = None) -> None:
        """Write the metrics held back: every run's, or one run's with ``tags`` in its last
        ``log_batch`` (a trial's end in one write)."""
        end = [RunTag(k, v) for k, v in (tags or {}).items()]
        assert run_id is not None or not end, "tags go to one run"
        for rid in [run_id] if run_id is not None else list(self._pending):
            metrics = self._pending.pop(rid, [])
            size = BATCH - len(end)  # room for the tags in MLflow's limit of one batch
            chunks = [metrics[i:i + size] for i in range(0, len(metrics), size)] or [[]]
            for chunk in chunks[:-1]:
                self.client.log_batch(rid, metrics=chunk)
            if chunks[-1] or end:
                self.client.log_batch(rid, metrics=chunks[-1], tags=end)
        if run_id is None:
            self._flushed = time.monotonic()

    def _flush_if_due(self) -> None:
        if self._pending and time.monotonic() - self._flushed >= FLUSH_SECONDS:
            self.flush()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = GuardedClient(MlflowClient(self.tracking_uri), self.tracking_uri)
        return self._client

    def last_logged_step(self, trial, run_id: str) -> int:
        """The last epoch this trial's run holds: a trial resumed from a checkpoint older than
        what was logged (a killed driver, ``checkpoint_every`` > 1) reports those epochs again,
        and each is logged once."""
        if trial.trial_id not in self._logged:
            history = self.client.get_metric_history(run_id, STEP_METRIC)
            self._logged[trial.trial_id] = max((m.step for m in history), default=0)
        return self._logged[trial.trial_id]

    def run_id(self, trial) -> str:
        """The trial's MLflow run: cached, else found by its tags (a resumed study: the
        study's runs are read once, in bulk, not searched for trial by trial), else new."""
        if trial.trial_id in self.runs:
            return self.runs[trial.trial_id]
        if self._stored is None:
            self._stored = {r.data.tags[TRIAL_ID]: r.info.run_id
                            for r in search_all(self.client, self.experiment_id,
                                                study_filter(self.study))
                            if is_trial_run(r)}
        run_id = self._stored.get(trial.trial_id)
        if run_id is None:
            run_id = self._create_run(trial)
            self._created.add(run_id)
            self._logged[trial.trial_id] = 0
        self.runs[trial.trial_id] = run_id
        return run_id

    def _create_run(self, trial) -> str:
        cfg = trial_config(trial.config, self.trial_setup.base)
        tags = {PARENT: self.parent_run_id, STUDY: self.study, TRIAL_ID: trial.trial_id}
        point = trial.config.get("point")
        if point is not None:
            # A grid cell or a re-run point: what its seeds share (the report groups on it).
            cell = {k: point[k] for k in ("K", "threshold", "subsample", "tau", "lr",
                                          "weight_decay") if k in point}
            tags[CELL] = format_params(cell)
        shown = {k: getattr(cfg, k) for k in ("threshold", "tau", "K")}
        if point is not None and "subsample" in point:
            shown["subsample"] = cfg.subsample
        shown["seed"] = cfg.seed
        run = self.client.create_run(
            self.experiment_id, run_name=f"{trial.trial_id} {format_params(shown)}", tags=tags,
        )
        s = self.trial_setup
        params = {**cfg.to_dict(), **self.params, "linear_epochs": s.linear_epochs,
                  "gpu_fraction": s.gpu_fraction, "cpus": s.cpus}
        self.client.log_batch(run.info.run_id,
                              params=[Param(k, str(v)) for k, v in params.items()])
        return run.info.run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        run_id = self.run_id(trial)
        if run_id in self._created:
            return  # new here: nothing an earlier driver closed
        run = self.client.get_run(run_id)
        if run.info.status == "FAILED" and ERROR in run.data.tags:
            # A run closed FAILED whose trial Ray starts again: open again.
            self.client.delete_tag(run_id, ERROR)
            self.client.update_run(run_id, status="RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id, now = self.run_id(trial), int(time.time() * 1000)
        step = int(result.get("epoch", 0))
        last = self.last_logged_step(trial, run_id)
        # A restored trial replays the epochs its checkpoint holds: those a killed driver had
        # not logged yet go in now, so that no epoch is missing from the run's curves.
        metrics = [Metric(k, v, now, r["epoch"]) for r in result.get(REPLAY, [])
                   if last < r["epoch"] < step for k, v in r.items() if k != "epoch"]
        if step <= last:
            return  # logged before the driver stopped; the trial resumed from an older state
        metrics += [Metric(k, v, now, step) for k, v in result.get(METRICS, {}).items()]
        metrics += [Metric(k, v, now, step) for k, v in result.get(FINAL, {}).items()]
        self._pending.setdefault(run_id, []).extend(metrics)
        self._logged[trial.trial_id] = step
        if DATA in result:
            self._log_dataset(run_id, result[DATA])
        if result.get("diverged"):
            self.flush(run_id, {DIVERGED: "true"})
            self.client.set_terminated(run_id, "FAILED")
        self._flush_if_due()

    def on_step_end(self, iteration, trials, **info):
        self._flush_if_due()

    def on_experiment_end(self, trials, **info):
        self.flush()

    def _log_dataset(self, run_id: str, data: dict) -> None:
        """The run's data set as an MLflow dataset input: the runs table's Dataset column."""
        sizes = {k: data[k] for k in ("pretrain", "train", "val", "test")}
        dataset = Dataset(
            name=data["name"], digest=data["digest"], source_type="local",
            source=json.dumps({"data_dir": self.trial_setup.base.get("data_dir"),
                               "subset": self.trial_setup.base.get("subset")}),
            schema=json.dumps({"images": f"uint8 {data['shape']}", "labels": "int64"}),
            profile=json.dumps(sizes),
        )
        inputs = [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])]
        try:
            self.client.log_inputs(run_id, datasets=inputs)
        except MlflowException as e:
            # MLflow makes a data set's row on first use, not atomically: two drivers on one
            # server logging the same data set at once meet a unique key (PostgreSQL's
            # UniqueViolation, SQLite's UNIQUE constraint). The row is there now: once more.
            if "unique" not in str(e).lower():
                raise
            self.client.log_inputs(run_id, datasets=inputs)

    def on_trial_complete(self, iteration, trials, trial, **info):
        # Ray turns an exception raised here into a failure of the trial (and retries it):
        # a stop is kept and raised again from on_trial_recover / on_trial_error, which Ray lets
        # through to the driver.
        try:
            self._complete(trial)
        except StudyStopped as e:
            self._stop = e
            raise

    def _complete(self, trial) -> None:
        # The held-back epochs and the end's tags in one write (a finished trial's files between
        # them), then the run closed.
        result, run_id = trial.last_result or {}, self.run_id(trial)
        if run_id not in self._created and self.client.get_run(run_id).info.status in ENDED_RUNS:
            self.flush(run_id)  # ended before the driver stopped; Ray's state had not caught up
        elif result.get("diverged"):
            self.flush(run_id)
        elif not result.get(FINISHED):
            self.flush(run_id, {EARLY_STOPPED: "true"})
            self.client.set_terminated(run_id, "KILLED")
        else:
            self.flush(run_id)  # the last epochs and final accuracies before the files
            with trial.checkpoint.as_directory() as d:
                self.client.log_artifacts(run_id, str(Path(d) / REPORT_DIR))
            self.flush(run_id, {ENCODER_STATE: f"runs:/{run_id}/{ENCODER_FILE}",
                                WEIGHTS_KEPT: "true"})
            self.client.set_terminated(run_id, "FINISHED")
            self.drop_weights_beyond_best()
        # An ended trial never trains again, and what it made is in MLflow now: its checkpoint
        # (about 2.3 GB at K = 16 on ResNet-50) only held the disk. A failed trial keeps its own,
        # for Ray's retry.
        retire_checkpoint(trial.checkpoint, result)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._raise_stop()
        stop_if_disk_full(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._raise_stop()
        stop_if_disk_full(trial)
        run_id = self.run_id(trial)
        self.flush(run_id, {ERROR: str(trial.error_file or "see Ray's trial log")})
        self.client.set_terminated(run_id, "FAILED")

    def _raise_stop(self) -> None:
        stop, self._stop = self._stop, None
        if stop is not None:
            raise stop

    def drop_weights_beyond_best(self) -> None:
        """Delete the encoder of every finished trial outside the ``keep_weights`` best (by
        validation accuracy, as the study ranks); its run's ``weights_kept`` tag says so.

        At ResNet-50 an encoder is about 94 MB: a 40-trial study keeps 3, not 40."""
        if self.keep_weights == "all":
            return
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        kept = self.client.search_runs(
            [self.experiment_id],
            filter_string=study_filter(self.study, f"tags.{WEIGHTS_KEPT} = 'true'"),
            max_results=SEARCH_PAGE,
        )
        kept.sort(key=lambda r: rank_key(to_record(r)), reverse=True)
        for r in kept[int(self.keep_weights):]:
            # Through a server, an mlflow-artifacts: URI resolves against the tracking URI
            # given here (MLflow's default would be the process's, a local SQLite).
            get_artifact_repository(r.info.artifact_uri, tracking_uri=self.tracking_uri
                                    ).delete_artifacts(ENCODER_FILE)
            self.client.set_tag(r.info.run_id, WEIGHTS_KEPT, "false")
            self.client.set_tag(r.info.run_id, ENCODER_STATE,
                                f"deleted: not among the {self.keep_weights} best trials")
