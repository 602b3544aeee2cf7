"""A study's trials as MLflow holds them: the one record of a trial, the one reader, the names.

Every command that reads a study back (the end-of-study summary, export, the Pareto front, the
report, ``--compare``) reads it here, in bulk (one paged ``search_runs``, no call per trial), and
takes its answer from here: one rule says which trials count (``TrialRecord.finished``), one
function names each split's best (``best_per_split``, by ``rank_key``: validation accuracy only,
linear evaluation then the kNN monitor, a missing value last) and one counts what became of each
split's trials (``split_counts``; a lost run is not one of the study's trials). Test accuracy is
carried along, never used to choose.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterable
from dataclasses import dataclass

from study.records.params import format_params, parse_param
from study.records.store import Store
from trainables.errors import ConfigError

# Tags of a study's runs (the parent's and each trial's), written once.
STUDY = "study"  # every run of a study: its name
TRIAL_ID = "trial_id"  # a trial's run: Ray Tune's trial id (the parent has none)
PARENT = "mlflow.parentRunId"
CELL = "cell"  # a grid cell or re-run point: what its seeds share
DIVERGED = "diverged"  # "true": a non-finite loss ended the trial
EARLY_STOPPED = "early_stopped"  # "true": ASHA stopped the trial
ERROR = "error"  # the trial failed for good; where Ray keeps its error
LOST = "lost"  # a run a killed driver left open, which no trial continued
WEIGHTS_KEPT = "weights_kept"  # "true" while the run holds its encoder's weights
ENCODER_STATE = "encoder_state"  # runs:/ URI of the encoder's state dict, or why it is gone
MODEL_URI = "model_uri"  # models:/ URI once the encoder was logged as an MLflow model
BEST_RUN = "best_run_id"  # on the parent: the study's best trial run
KIND = "kind"  # on the parent: "study"
STUDY_KIND = "study_kind"  # on the parent: search, grid, rerun or compare
GRID = "grid"  # on a grid study's parent: the grid's name

# Metrics a trial logs (per epoch: the first; at its end: the others).
KNN_VAL = "knn_val_acc"
LINEAR_VAL = "linear_val_acc"
LINEAR_TEST = "linear_test_acc"

SEARCH_PAGE = 10_000  # runs per search call; a larger study reads on, page after page


def study_filter(study: str, *clauses: str) -> str:
    """The MLflow filter of ``study``'s runs, and ``clauses`` (``attributes.status = '...'``)."""
    return " and ".join([f"tags.{STUDY} = '{study}'", *clauses])


@dataclass
class TrialRecord:
    """One trial's MLflow run, read back: its parameters (parsed), final metrics and tags."""

    trial_id: str
    run_id: str
    status: str  # MLflow's: RUNNING, FINISHED, KILLED, FAILED
    params: dict
    metrics: dict[str, float]
    tags: dict[str, str]
    last_epoch: int  # the last epoch any metric was logged at (0: none)
    artifact_uri: str = ""

    @property
    def state(self) -> str:
        """finished, stopped early, diverged, failed, running, or lost (a killed driver's)."""
        if self.lost:
            return "lost"
        if self.diverged:
            return "diverged"
        if self.early_stopped:
            return "stopped early"
        if self.status == "FINISHED" and LINEAR_VAL in self.metrics:
            return "finished"
        return "failed" if self.status == "FAILED" else "running"

    @property
    def finished(self) -> bool:
        """The rule for the answer, the one every reader chooses and counts by: the run ended
        normally (MLflow FINISHED), is not lost, was not stopped early, did not diverge, and
        was evaluated (it has ``linear_val_acc``). A run that fails any of these may still
        carry a linear evaluation (a lost run whose trial was replaced, an early-stopped one a
        resumed driver trained on); it is never the answer."""
        return self.state == "finished"

    @property
    def lost(self) -> bool:
        """A run a killed driver left open: its trial was replaced, so it is none of the
        study's trials (``counted``)."""
        return LOST in self.tags

    @property
    def diverged(self) -> bool:
        return self.tags.get(DIVERGED) == "true"

    @property
    def early_stopped(self) -> bool:
        return self.tags.get(EARLY_STOPPED) == "true"

    @property
    def K(self) -> int:
        return int(self.params.get("K", 1))

    @property
    def threshold(self) -> float | None:
        return self.params.get("threshold")

    @property
    def knn_val_acc(self) -> float | None:
        return self.metrics.get(KNN_VAL)

    @property
    def linear_val_acc(self) -> float | None:
        return self.metrics.get(LINEAR_VAL)

    @property
    def linear_test_acc(self) -> float | None:
        return self.metrics.get(LINEAR_TEST)

    @property
    def model_uri(self) -> str | None:
        """Where the encoder is: the logged MLflow model, else its state dict while kept."""
        if self.tags.get(MODEL_URI):
            return self.tags[MODEL_URI]
        return self.tags.get(ENCODER_STATE) if self.tags.get(WEIGHTS_KEPT) != "false" else None

    @property
    def cell(self) -> str:
        return self.tags.get(CELL) or format_params(
            {k: self.params.get(k) for k in ("K", "threshold", "subsample", "tau")})

    @property
    def epochs(self) -> int | None:
        """Epochs trained: all of them once finished, else the last epoch logged."""
        return self.params.get("epochs") if self.finished else self.last_epoch

    @property
    def last_block_rank(self) -> float | None:
        return self.metrics.get(f"effective_rank_block{self.K}")


def rank_key(t: TrialRecord) -> tuple[float, float]:
    """The study's ranking: validation only, linear evaluation then kNN, missing values last."""
    lin, knn = t.linear_val_acc, t.knn_val_acc
    return (lin if lin is not None else -math.inf, knn if knn is not None else -math.inf)


def ranked(trials: list[TrialRecord]) -> list[TrialRecord]:
    """Best first: the finished trials by ``rank_key``, then the others by ``rank_key`` (a run
    that does not count never stands above one that does, whatever it carries)."""
    return sorted(trials, key=lambda t: (t.finished, *rank_key(t)), reverse=True)


def candidates(trials: Iterable[TrialRecord]) -> list[TrialRecord]:
    """The trials the answer is chosen among, best first: the finished ones."""
    return [t for t in ranked(list(trials)) if t.finished]


def best_per_split(trials: Iterable[TrialRecord]) -> dict[int, TrialRecord]:
    """The answer: each split K's best finished trial (validation only, ``rank_key``), by K."""
    best: dict[int, TrialRecord] = {}
    for t in candidates(trials):  # best first
        best.setdefault(t.K, t)
    return dict(sorted(best.items()))


def counted(trials: Iterable[TrialRecord]) -> list[TrialRecord]:
    """The study's trials, for counting: every trial run but a lost one."""
    return [t for t in trials if not t.lost]


@dataclass(frozen=True)
class Counts:
    """What became of a set of trials: how many there are (lost runs left out), finished
    (``TrialRecord.finished``), stopped early and diverged; and the lost runs left out."""

    trials: int
    finished: int
    stopped_early: int
    diverged: int
    lost: int

    @classmethod
    def of(cls, trials: Iterable[TrialRecord]) -> Counts:
        runs = list(trials)
        states = [t.state for t in counted(runs)]
        return cls(len(states), states.count("finished"), states.count("stopped early"),
                   states.count("diverged"), len(runs) - len(states))

    @property
    def lost_text(self) -> str:
        """``1 lost run(s) left out``, or nothing."""
        return f"{self.lost} lost run(s) left out" if self.lost else ""


def split_counts(trials: Iterable[TrialRecord], splits: Iterable[int] = ()
                 ) -> dict[int, Counts]:
    """``Counts`` of each split K, by K: every K a run ran at, and ``splits`` (the study's
    own, where a K may have no trial yet)."""
    runs = list(trials)
    return {K: Counts.of(t for t in runs if t.K == K)
            for K in sorted(set(splits) | {t.K for t in runs})}


def read_runs(store: Store, experiment_id: str, filter_string: str) -> list:
    """Every MLflow run matching ``filter_string``, page after page (no silent cap)."""
    from mlflow.tracking import MlflowClient

    return search_all(MlflowClient(store.tracking_uri), experiment_id, filter_string)


def search_all(client, experiment_id: str, filter_string: str) -> list:
    """``read_runs`` through a client of the caller's (the driver's guarded one).

    Python's cyclic garbage collector is paused while the pages are read: a page of runs is
    tens of thousands of new objects (SQLAlchemy rows, MLflow entities), each allocation
    burst triggers a full scan of them, and that scan was more than half of the read
    (1.1 s against 0.5 s for 1000 runs on SQLite)."""
    runs, token = [], None
    collecting = gc.isenabled()
    gc.disable()
    try:
        while True:
            page = client.search_runs([experiment_id], filter_string=filter_string,
                                      max_results=SEARCH_PAGE, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs
    finally:
        if collecting:
            gc.enable()


def experiment_of(store: Store, dataset: str) -> str | None:
    """The MLflow experiment id of ``dataset`` in the store, None where there is none."""
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(store.tracking_uri).get_experiment_by_name(dataset)
    return exp.experiment_id if exp is not None else None


def is_trial_run(run) -> bool:
    """A trial's run, not the study's parent run."""
    return TRIAL_ID in run.data.tags


def read_trials(store: Store, dataset: str, study: str) -> list[TrialRecord]:
    """Every trial run of ``study`` (the parent run left out), in trial id order."""
    experiment_id = experiment_of(store, dataset)
    if experiment_id is None:
        return []
    trials = [to_record(r) for r in read_runs(store, experiment_id, study_filter(study))
              if is_trial_run(r)]
    return sorted(trials, key=lambda t: t.trial_id)


def to_record(run) -> TrialRecord:
    # The last epoch logged by any metric: a diverged trial's last epoch has no kNN value.
    last = max((m.step for m in run.data._metric_objs), default=0)
    return TrialRecord(
        trial_id=run.data.tags[TRIAL_ID], run_id=run.info.run_id, status=run.info.status,
        params={k: parse_param(v) for k, v in run.data.params.items()},
        metrics=dict(run.data.metrics), tags=dict(run.data.tags),
        last_epoch=int(last), artifact_uri=run.info.artifact_uri,
    )


def study_rows(store: Store, dataset: str, study: str) -> list[TrialRecord]:
    """Every trial run of ``study`` (one per trial), best first by validation accuracy; a
    clear error where the store has no experiment for ``dataset``."""
    if experiment_of(store, dataset) is None:
        raise ConfigError(f"no MLflow experiment {dataset!r} at {store.tracking_uri}")
    return ranked(read_trials(store, dataset, study))
