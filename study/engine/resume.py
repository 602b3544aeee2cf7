"""How a stopped study is repaired before it resumes, so that the study it continues is the one
that would have run without the stop. Every repair says so in one console line.

Ray Tune saves its experiment state (the trial list), the search generator's state and the
searcher's pickle together into a staging folder, then copies them into the store file by file,
in no fixed order and not atomically: a driver killed in the middle leaves a cut file, or a
searcher one save newer or older than the trial list. So, at each of Ray's saves, once they
are whole in the staging folder and before the copy starts, ``SavedGenerations`` keeps them as
one generation (a folder written under a temporary name, then renamed); ``--resume`` puts the
newest generation back into the store before Ray reads it (``install_generation``).

Then, in order (``study.engine.lifecycle`` and ``study.engine.tuner``):
- each continued trial is pointed at its newest whole checkpoint (``study.records.ray_state``);
- a trial run that Ray's state does not hold (the driver was killed between the trial's start
  and Ray's next save) is closed as lost (``close_lost_runs``); its Optuna trial is closed by the
  restored searcher, which queues a point to evaluate again where it was one
  (``close_unknown_trials``, from ``study.engine.search.StudySearch.restore``);
- ASHA's rungs are rebuilt from every trial's monitor values in the store, in the order they
  arrived (``rung_events``), so that the decisions after the resume are those the study would
  have taken (``study.engine.search.StudyASHA.rebuild``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ray.tune import Callback

from study.engine.console import format_params, log
from study.records import trials as records
from study.records.store import Store

# Ray Tune 2.60's files of a save: TuneController.CKPT_FILE_TMPL, SearchGenerator's and
# Searcher's (a search), BasicVariantGenerator's (a grid or a re-run).
RAY_FILES = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl",
             "basic-variant-state-*.json")
KEEP = 2  # generations kept: the newest, and the one before while the newest is written
LOST = "the driver was killed before Ray Tune saved this trial's state; it was not resumed"


def generations_dir(store: Store, study: str) -> Path:
    """Where a study's generations live: beside Ray's experiment folder, never inside it (Ray
    copies every .json and .pkl of that folder back on a restore)."""
    return _generations_in(store.ray_dir, study)


def _generations_in(ray_dir, study: str) -> Path:
    return Path(ray_dir) / ".generations" / study


class SavedGenerations(Callback):
    """At each of Ray's saves, its files kept as one whole generation.

    Ray saves its callbacks' state right after it wrote the experiment state and the searcher
    into the staging folder, and before it copies them to the store: ``get_state`` is that
    moment. It returns None (nothing of its own to save)."""

    def __init__(self):
        self._staging: str | None = None
        self._folder: Path | None = None

    def __getstate__(self) -> dict:
        return {"_staging": None, "_folder": None}

    def on_step_begin(self, iteration, trials, **info):
        # Both from the run's own storage: a study resumed from a store that moved writes its
        # generations where the store is now. (Before its first trial Ray saves an empty
        # study: no generation of it is kept.)
        if self._staging is None and trials:
            storage = trials[0].storage
            self._staging = storage.experiment_driver_staging_path
            self._folder = _generations_in(storage.storage_fs_path, storage.experiment_dir_name)

    def get_state(self) -> None:
        if self._staging is not None:
            save_generation(Path(self._staging), self._folder)
        return None


def save_generation(staging: Path, folder: Path) -> int | None:
    """The newest of each of Ray's files in ``staging`` as generation N + 1; the number."""
    files = [f for f in (_newest(staging, p) for p in RAY_FILES) if f is not None]
    if not files:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    done = _generations(folder)
    number = int(done[-1].name.split("-")[1]) + 1 if done else 1
    part = folder / f".gen-{number:06d}.part"
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir()
    for f in files:
        shutil.copyfile(f, part / f.name)
    os.replace(part, folder / f"gen-{number:06d}")  # a folder's rename is atomic
    for old in done[:-(KEEP - 1)] if KEEP > 1 else done:
        shutil.rmtree(old, ignore_errors=True)
    return number


def install_generation(experiment_dir: Path, folder: Path) -> str | None:
    """Ray's files in the store replaced by the newest whole generation, where they differ;
    what was wrong, in one line, or None (no generation: a study saved before them, or
    stopped before Ray's first save; or the store already held it)."""
    done = _generations(folder)
    if not done or not experiment_dir.is_dir():
        return None
    newest = done[-1]
    wrong = []
    for pattern in RAY_FILES:
        ours, theirs = _newest(newest, pattern), _newest(experiment_dir, pattern)
        if ours is None:
            continue
        if theirs is None:
            wrong.append(f"no {_what(pattern)}")
        elif theirs.name != ours.name:
            wrong.append(f"the {_what(pattern)} from another save")
        elif theirs.read_bytes() != ours.read_bytes():
            wrong.append(f"the {_what(pattern)} cut short or from another save")
    if not wrong:
        return None
    for pattern in RAY_FILES:
        ours = _newest(newest, pattern)
        if ours is None:
            continue
        for f in experiment_dir.glob(pattern):
            f.unlink()
        part = experiment_dir / f".{ours.name}.part"
        shutil.copyfile(ours, part)
        os.replace(part, experiment_dir / ours.name)
    return (f"saved state: Ray's copy in the store had {', '.join(wrong)} (a driver killed "
            f"while Ray copied it); used generation {int(newest.name.split('-')[1])}, "
            f"its last whole save")


def keep_in_generation(experiment_dir: Path, folder: Path) -> None:
    """The store's trial list, repaired on resume (``study.records.ray_state.repair_checkpoints``), made the
    newest generation's too: a later ``--resume`` then finds the two alike, and says nothing."""
    done = _generations(folder)
    theirs = _newest(experiment_dir, RAY_FILES[0])
    if not done or theirs is None or not (done[-1] / theirs.name).exists():
        return
    part = done[-1] / f".{theirs.name}.part"
    shutil.copyfile(theirs, part)
    os.replace(part, done[-1] / theirs.name)


def _what(pattern: str) -> str:
    return {"experiment_state-*.json": "trial list", "search_gen_state-*.json":
            "search generator's state", "searcher-state-*.pkl": "searcher's file",
            "basic-variant-state-*.json": "grid generator's state"}[pattern]


def _newest(folder: Path, pattern: str) -> Path | None:
    files = sorted(folder.glob(pattern))  # Ray's own rule: the newest by name
    return files[-1] if files else None


def _generations(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("gen-*") if p.is_dir()) if folder.is_dir() else []


def close_lost_runs(store: Store, plan, keep: set[str] | None) -> int:
    """Close the trial runs a killed driver left that no Ray trial continues: KILLED, tagged
    ``lost``; how many. ``keep``: the trial ids Ray's saved state holds; a run of any other
    trial is lost, open or ended (a trial that started and ended between two of Ray's saves:
    the search makes it again). None: every trial has ended, as at the end of a study; the
    runs still open are lost."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.tracking_uri)
    if keep is None:
        runs = records.read_runs(store, plan.experiment_id, records.study_filter(
            plan.study, "attributes.status = 'RUNNING'"))
    else:
        runs = records.read_runs(store, plan.experiment_id, records.study_filter(plan.study))
    lost = [r for r in runs if records.is_trial_run(r) and records.LOST not in r.data.tags
            and (keep is None or r.data.tags[records.TRIAL_ID] not in keep)]
    for r in lost:
        client.set_tag(r.info.run_id, records.LOST, LOST)
        client.set_terminated(r.info.run_id, "KILLED")
    return len(lost)


def close_unknown_trials(study, known, name: str) -> int:
    """The trials of Optuna ``study`` that the restored searcher does not know (``known``: its
    trials), each asked for after Ray's last save by a driver killed before the next one: no
    Ray trial will report to it, and the search makes its trial again. Each ends FAIL, with
    the user attribute ``lost``, whether it was still RUNNING or had ended since (it started
    and ended between two of Ray's saves: then its value leaves TPE's history, so that the
    trial made again is drawn from the history it was drawn from). A point to evaluate among
    them is queued again. One line each; how many."""
    from optuna.trial import TrialState

    ids = {t._trial_id for t in known}
    backend = getattr(study._storage, "_backend", study._storage)  # past Optuna's cache
    where = name.split("/", 2)[2] if name.count("/") >= 2 else "the search"
    lost = [t for t in backend.get_all_trials(study._study_id, deepcopy=False)
            if t._trial_id not in ids and t.state in (TrialState.RUNNING, TrialState.COMPLETE,
                                                      TrialState.PRUNED)]
    for t in lost:
        if t.state == TrialState.RUNNING:
            backend.set_trial_user_attr(t._trial_id, records.LOST, LOST)
            backend.set_trial_state_values(t._trial_id, TrialState.FAIL)
        else:
            _forget_ended(backend, t._trial_id)
        fixed = t.system_attrs.get("fixed_params")
        if fixed:
            study.enqueue_trial(fixed)
            log(f"{where}: the point to evaluate {format_params(fixed)} is evaluated again: "
                f"its trial was lost with the driver")
        else:
            log(f"{where}: Optuna trial {t.number} closed (FAIL, lost): the driver was killed "
                f"before Ray saved its trial; the split's next trial takes its place")
    return len(lost)


def _forget_ended(backend, trial_id: int) -> None:
    """An ended Optuna trial made FAIL (``lost``), its values dropped. Optuna refuses to change
    an ended trial, so this writes its relational storage's rows (the study's own SQLite or
    PostgreSQL database)."""
    import json

    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    session = backend.scoped_session()
    try:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        trial.state = TrialState.FAIL
        session.query(models.TrialValueModel).filter_by(trial_id=trial_id).delete()
        session.add(models.TrialUserAttributeModel(trial_id=trial_id, key=records.LOST,
                                                   value_json=json.dumps(LOST)))
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


@dataclass(frozen=True)
class RungEvent:
    """One monitor value of one trial, as ASHA took it in."""

    time: int  # when the driver received it (ms): the order of arrival
    order: int  # the trial's place among the study's trials (ties of time)
    trial_id: str
    config: dict  # the parameters that choose the trial's brackets (its split)
    epoch: int
    value: float
    ended: bool  # the trial has ended: nothing of it is continued


def rung_events(store: Store, plan, metric: str, keys: list[str]) -> list[RungEvent]:
    """Every trial's monitor values in the store, in the order the driver received them; a
    trial that diverged adds the worst value it reported at its last epoch. Lost runs are no
    trial of the study."""
    from mlflow.tracking import MlflowClient

    from trainables.tune_trainable import WORST

    client = MlflowClient(store.tracking_uri)
    trials = records.read_trials(store, plan.dataset, plan.study)
    events = []
    for order, t in enumerate(trials):
        if records.LOST in t.tags:
            continue
        ended = t.status != "RUNNING"
        config = {k: t.params.get(k) for k in keys}
        for m in client.get_metric_history(t.run_id, metric):
            events.append(RungEvent(m.timestamp, order, t.trial_id, config, int(m.step),
                                    float(m.value), ended))
        if t.diverged:
            run = client.get_run(t.run_id)
            events.append(RungEvent(run.info.end_time or 0, order, t.trial_id, config,
                                    t.last_epoch, WORST, True))
    return sorted(events, key=lambda e: (e.time, e.order, e.epoch))


def rebuild_rungs(tuner, store: Store, plan) -> None:
    """The restored tuner's ASHA given back its rungs from the store, with one line."""
    local = getattr(tuner, "_local_tuner", None)  # none through a Ray client (ray://)
    if local is None:
        log("ASHA: its rungs cannot be rebuilt through a Ray client; it starts them afresh")
        return
    scheduler = local._tune_config.scheduler  # the pickled one, as it was built
    rebuild = getattr(scheduler, "rebuild", None)
    if rebuild is None:
        if scheduler is not None and type(scheduler).__name__ != "FIFOScheduler":
            log("ASHA: a study saved before its rungs could be rebuilt; it starts them afresh")
        return
    events = rung_events(store, plan, scheduler.metric, scheduler.keys)
    stopped = rebuild(events)
    trials = len({e.trial_id for e in events})
    line = f"ASHA: rungs rebuilt from {trials} trial(s) ({len(events)} monitor value(s))"
    if stopped:
        line += (f"; {', '.join(sorted(stopped))} stopped at its first result (ASHA had "
                 f"stopped it just before the driver was killed)")
    log(line)
