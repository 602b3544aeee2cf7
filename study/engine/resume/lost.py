"""Trials a killed driver lost (started after Ray's last save): their MLflow runs closed as
lost, their Optuna trials closed and out of TPE's history, a lost point to evaluate queued
again."""

from __future__ import annotations

from study.engine.console import log
from study.records import trials as records
from study.records.params import format_params
from study.records.store import Store
from study.spaces.strata import optuna_study_names

LOST = "the driver was killed before Ray Tune saved this trial's state; it was not resumed"


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


def close_running_trials(store: Store, plan) -> int:
    """At the end of a search, its Optuna trials still RUNNING (a killed driver's, which no
    trial continued) end FAIL, tagged lost, so that the sampler and the report never wait on
    them; how many."""
    import optuna

    storage = optuna.storages.RDBStorage(store.optuna_url)
    failed = 0
    for name in optuna_study_names(plan):  # one, or one per stratum
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            continue
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for t in running:  # FAIL is Optuna's only end for a trial that never reported
            storage.set_trial_user_attr(t._trial_id, records.LOST, LOST)
            storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        failed += len(running)
    return failed
